//! A real PostgreSQL for the tests: a throwaway cluster (initdb, pg_ctl) in
//! a temp dir on a free loopback port, run as the `postgres` user when the
//! tests run as root (PostgreSQL refuses root). Debian's `postgresql`
//! package provides it; `.ci/run` installs it.
//!
//! One cluster serves the whole test binary ([`shared`]), each test in a
//! database of its own ([`Cluster::database`]); a watchdog stops it and
//! removes its directory when the test process exits, however it exits. A
//! test that stops and starts PostgreSQL owns a cluster of its own
//! ([`Cluster::start`]), stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The superuser the tests connect as, and its password (host connections
/// need it: scram-sha-256).
pub const USER: &str = "keyscope";
pub const PASSWORD: &str = "pg-test-password-7f3a";

/// A running (or stopped) throwaway cluster.
#[derive(Debug)]
pub struct Cluster {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    /// Stopped and removed on drop (a [`Cluster::start`]ed one); the shared
    /// one is left to its watchdog.
    owned: bool,
}

/// The cluster this test binary shares.
pub fn shared() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    SHARED.get_or_init(|| {
        let mut cluster = Cluster::start();
        cluster.owned = false;
        cluster.watch(std::process::id());
        cluster
    })
}

fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed: `apt-get install postgresql` (.ci/run does this); \
             the PostgreSQL store tests need its initdb and pg_ctl"
        )
    })
}

fn running_as_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        let output = Command::new("id").arg("-u").output().unwrap();
        String::from_utf8_lossy(&output.stdout).trim() == "0"
    })
}

/// A free loopback port.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// Creates and starts a new cluster.
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("keyscope-pg-")
            .tempdir()
            .unwrap()
            .keep();
        let cluster = Self {
            port: free_port(),
            dir,
            bin,
            owned: true,
        };
        std::fs::write(cluster.dir.join("pwfile"), PASSWORD).unwrap();
        if running_as_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&cluster.dir)
                .status()
                .unwrap();
            assert!(status.success(), "chown of the cluster dir failed");
        }
        let initdb = cluster
            .command("initdb")
            .arg("-D")
            .arg(cluster.data())
            .args([
                "-U",
                USER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
            ])
            .arg(format!("--pwfile={}", cluster.dir.join("pwfile").display()))
            .output()
            .unwrap();
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        cluster.start_server();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A PostgreSQL program, as the `postgres` user when we are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        };
        command.stdin(Stdio::null());
        command
    }

    /// Starts the server; returns once it accepts connections.
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
            self.port,
            self.dir.display()
        );
        let output = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-o", &options, "-l"])
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "120", "start"])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }

    /// Stops the server (fast: connections are closed at once).
    pub fn stop_server(&self) {
        let output = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "120", "stop"])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Turns TLS on with a certificate for 127.0.0.1 signed by a CA of its
    /// own, and refuses unencrypted host connections from then on. Returns
    /// the CA's certificate (PEM).
    pub fn require_tls(&self) -> PathBuf {
        let dir = self.dir.join("tls");
        std::fs::create_dir_all(&dir).unwrap();
        certificates(&dir);
        for file in ["server.crt", "server.key"] {
            std::fs::copy(dir.join(file), self.data().join(file)).unwrap();
            std::fs::set_permissions(
                self.data().join(file),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .unwrap();
        }
        std::fs::write(
            self.data().join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        let conf = self.data().join("postgresql.auto.conf");
        let mut auto = std::fs::read_to_string(&conf).unwrap();
        auto.push_str("ssl = on\n");
        std::fs::write(&conf, auto).unwrap();
        if running_as_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(self.data())
                .status()
                .unwrap();
            assert!(status.success());
        }
        self.stop_server();
        self.start_server();
        dir.join("ca.crt")
    }

    /// A watchdog that stops this cluster and removes its directory once
    /// process `pid` is gone.
    fn watch(&self, pid: u32) {
        let stop = format!(
            "{} -D {} -m immediate stop",
            self.bin.join("pg_ctl").display(),
            self.data().display()
        );
        let stop = if running_as_root() {
            format!("runuser -u postgres -- {stop}")
        } else {
            stop
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {}",
            self.dir.display()
        );
        // Never waited for: it outlives this process by design, and init
        // reaps it.
        #[allow(
            clippy::zombie_processes,
            reason = "the watchdog must outlive the test process"
        )]
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
    }

    /// A superuser connection to database `db`.
    pub fn connect(&self, db: &str) -> postgres::Client {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user(USER)
            .password(PASSWORD)
            .dbname(db)
            .connect(postgres::NoTls)
            .unwrap()
    }

    /// A new, empty database; its URL, without the password (tests pass
    /// it in `$PGPASSWORD`, as a deployment would).
    pub fn database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.connect("postgres")
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        self.url(&name)
    }

    /// The URL of database `db`, without the password.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Makes a test CA (`ca.crt`) and a server certificate for 127.0.0.1
/// signed by it (`server.crt`, `server.key`) in `dir`, with openssl.
pub fn certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl is not installed: `apt-get install openssl`");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "2",
                "-subj",
                "/CN=keyscope test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        ]
        .concat(),
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    ]);
}
