//! Shared helpers: running the binary against a temporary store.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tempfile::TempDir;

/// A temporary directory with a store path in it, or a PostgreSQL
/// database of its own.
pub struct Sandbox {
    pub dir: TempDir,
    /// The PostgreSQL URL (no password), if the store is there.
    postgres: Option<String>,
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            postgres: None,
        }
    }

    /// A sandbox whose store is a new database on `cluster`.
    pub fn on_postgres(cluster: &crate::pg::Cluster) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            postgres: Some(cluster.database()),
        }
    }

    /// A sandbox whose store is the PostgreSQL database at `url` (its
    /// password, if any, in the URL).
    pub fn on_postgres_url(url: String) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            postgres: Some(url),
        }
    }

    /// The SQLite store's file (a PostgreSQL sandbox has none).
    pub fn store(&self) -> PathBuf {
        assert!(
            self.postgres.is_none(),
            "a PostgreSQL sandbox has no store file"
        );
        self.dir.path().join("keyscope.db")
    }

    /// The `--store` argument: the file, or the database URL.
    pub fn store_arg(&self) -> std::ffi::OsString {
        match &self.postgres {
            Some(url) => url.into(),
            None => self.store().into_os_string(),
        }
    }

    /// The environment a keyscope process needs for this store: the
    /// database password, as a deployment passes it.
    fn store_env(&self, command: &mut std::process::Command) {
        command.env_remove("PGPASSWORD").env_remove("PGPASSFILE");
        if self.postgres.is_some() {
            command.env("PGPASSWORD", crate::pg::PASSWORD);
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `keyscope --store <sandbox store> ARGS...`, with no key in the
    /// environment.
    pub fn keyscope<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut std_cmd = std::process::Command::new(env!("CARGO_BIN_EXE_keyscope"));
        self.store_env(&mut std_cmd);
        std_cmd
            .env_remove("KEYSCOPE_API_KEY")
            .env_remove("KEYSCOPE_STORE")
            .arg("--store")
            .arg(self.store_arg())
            .args(args);
        Command::from_std(std_cmd)
    }

    /// Runs a command that must succeed and returns its stdout as JSON.
    pub fn json<I, S>(&self, args: I) -> serde_json::Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let output = self.keyscope(args).arg("--json").assert().success();
        serde_json::from_slice(&output.get_output().stdout).unwrap()
    }

    /// Creates a scope; returns its id.
    pub fn scope(&self, app: &str, name: &str, agents: &str, runtime: &str) -> u64 {
        let scope = self.json([
            "scope",
            "create",
            "--app",
            app,
            "--name",
            name,
            "--agents",
            agents,
            "--runtime",
            runtime,
        ]);
        scope["id"].as_u64().unwrap()
    }

    /// Issues a key; returns (id, secret).
    pub fn key(&self, scope: &str, name: &str) -> (u64, String) {
        let key = self.json(["key", "create", "--scope", scope, "--name", name]);
        (
            key["id"].as_u64().unwrap(),
            key["key"].as_str().unwrap().to_owned(),
        )
    }

    /// Evaluates through the binary with the key on stdin; returns the exit
    /// code and the decision JSON.
    pub fn eval(&self, key: &str, app: &str, op: &str) -> (i32, serde_json::Value) {
        let output = self
            .keyscope(["eval", "--json", "--key-stdin", "--app", app, "--op", op])
            .write_stdin(format!("{key}\n"))
            .output()
            .unwrap();
        let decision = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "eval printed no decision ({e}); stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output.status.code().unwrap(), decision)
    }
}

/// A store with an editor key, a viewer key, a revoked key and a key of
/// another app.
pub struct World {
    pub sandbox: Sandbox,
    pub editor: String,
    pub viewer: String,
    pub revoked: String,
    pub other_app: String,
}

impl World {
    pub fn new() -> Self {
        let sandbox = Sandbox::new();
        sandbox.scope("acme", "editor", "edit", "run");
        sandbox.scope("acme", "viewer", "view", "");
        sandbox.scope("globex", "editor", "edit", "");
        let (_, editor) = sandbox.key("acme/editor", "editor");
        let (_, viewer) = sandbox.key("acme/viewer", "viewer");
        let (revoked_id, revoked) = sandbox.key("acme/editor", "gone");
        sandbox
            .keyscope(["key", "revoke", &revoked_id.to_string()])
            .assert()
            .success();
        let (_, other_app) = sandbox.key("globex/editor", "other");
        Self {
            sandbox,
            editor,
            viewer,
            revoked,
            other_app,
        }
    }
}

/// The repository's `tests/fixtures` directory.
pub fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
}

/// A policy fixture from `fixtures/policies/NAME.wat`, as Wasm bytes.
pub fn policy_fixture(name: &str) -> Vec<u8> {
    wat::parse_file(fixtures().join("policies").join(format!("{name}.wat"))).unwrap()
}

/// A `keyscope serve` process on loopback, on ports the kernel picked. It is
/// stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Server {
    pub child: std::process::Child,
    pub http: std::net::SocketAddr,
    pub grpc: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
    pub admin_token: String,
    /// The rest of the server's stdout; held open, so the server never
    /// writes to a closed pipe.
    pub stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Sandbox {
    /// Starts `keyscope serve` on this sandbox's store with an admin token
    /// file and a decision log in the sandbox, plus `extra` flags; returns
    /// once it says it is ready.
    pub fn serve(&self, extra: &[&str]) -> Server {
        self.serve_under(None, extra)
    }

    /// As [`Sandbox::serve`], returning once it listens, before it says
    /// `ready`: a gateway that has no verified state yet.
    pub fn serve_listening(&self, extra: &[&str]) -> Server {
        self.serve_until(None, "listening", extra)
    }

    /// As [`Sandbox::serve`], run by `sh -c` after `shell` (such as
    /// `ulimit -n 256`) when given.
    pub fn serve_under(&self, shell: Option<&str>, extra: &[&str]) -> Server {
        self.serve_until(shell, "ready", extra)
    }

    fn serve_until(&self, shell: Option<&str>, until: &str, extra: &[&str]) -> Server {
        use std::io::BufRead as _;
        let admin_token = "ksadmin_test-token-0123456789abcdef".to_owned();
        std::fs::write(self.path("admin-token"), &admin_token).unwrap();
        // The server refuses a token file that group or others can read.
        std::fs::set_permissions(
            self.path("admin-token"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let mut command = match shell {
            None => std::process::Command::new(env!("CARGO_BIN_EXE_keyscope")),
            Some(shell) => {
                let mut command = std::process::Command::new("sh");
                command
                    .arg("-c")
                    .arg(format!("{shell} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_keyscope"));
                command
            }
        };
        self.store_env(&mut command);
        let mut child = command
            .env_remove("KEYSCOPE_STORE")
            .env("KEYSCOPE_LOG", "warn")
            .arg("--store")
            .arg(self.store_arg())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
                "--poll-ms",
                "20",
                "--admin-token-file",
            ])
            .arg(self.path("admin-token"))
            .args(if extra.contains(&"--admin-listen") {
                &[][..]
            } else {
                &["--admin-listen", "127.0.0.1:0"][..]
            })
            .args(if extra.contains(&"--decision-log") {
                Vec::new()
            } else {
                vec![
                    "--decision-log".into(),
                    self.path("decisions.jsonl").into_os_string(),
                ]
            })
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(self.path("serve.stderr")).unwrap())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let mut addresses = None;
        loop {
            line.clear();
            if stdout.read_line(&mut line).unwrap() == 0 {
                let stderr = std::fs::read_to_string(self.path("serve.stderr")).unwrap();
                panic!("keyscope serve exited before it was ready: {stderr}");
            }
            let event: serde_json::Value = serde_json::from_str(&line).unwrap();
            match event["event"].as_str() {
                Some("listening") => {
                    addresses = Some(event);
                    if until == "listening" {
                        break;
                    }
                }
                Some("ready") => break,
                _ => {}
            }
        }
        let addresses = addresses.unwrap();
        let addr = |name: &str| addresses[name].as_str().unwrap().parse().unwrap();
        Server {
            http: addr("http"),
            grpc: addr("grpc"),
            admin: addr("admin"),
            child,
            admin_token,
            stdout,
        }
    }
}

impl Server {
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Stops the server with SIGTERM; its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        if let Some(status) = self.child.try_wait().unwrap() {
            return status;
        }
        // It may exit between the check and the signal: ignore a failed kill.
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not stop"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// `POST /v1/check` with `body`; the decision.
    pub fn check(&self, body: &serde_json::Value) -> serde_json::Value {
        http_client()
            .post(self.url("/v1/check"))
            .send_json(body)
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap()
    }

    /// An admin API call with the server's token; the status and the JSON
    /// body (null if there is none).
    pub fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        self.admin_as(&self.admin_token, method, path, body)
    }

    /// An admin API call with `token`.
    pub fn admin_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(self.admin_url(path))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(body.map(|b| b.to_string()).unwrap_or_default())
            .unwrap();
        let mut response = http_client().run(request).unwrap();
        let status = response.status().as_u16();
        (
            status,
            response
                .body_mut()
                .read_json()
                .unwrap_or(serde_json::Value::Null),
        )
    }

    /// `GET /readyz`.
    pub fn ready(&self) -> serde_json::Value {
        http_client()
            .get(self.url("/readyz"))
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap()
    }
}

/// Polls `condition` until it holds, for up to `seconds`; how long it took.
pub fn wait_until(
    seconds: u64,
    what: &str,
    mut condition: impl FnMut() -> bool,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    let deadline = start + std::time::Duration::from_secs(seconds);
    loop {
        if condition() {
            return start.elapsed();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {seconds} s"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An HTTP client that returns 4xx and 5xx as responses, not errors.
pub fn http_client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .build()
        .into()
}
