//! keyscope inside nginx, both ways it goes there, each from its documented
//! configuration run as it is (only its ports and the module's path
//! changed), by a real nginx with two worker processes each deciding with
//! libkeyscope:
//! - the Lua handler (docs/nginx-embedded.conf): Debian's Lua module and
//!   LuaJIT's FFI;
//! - the native module (docs/nginx-module.conf): ngx_http_keyscope_module,
//!   built here by integrations/nginx-module/build.sh against Debian's
//!   nginx-dev.
//!
//! Every behaviour is tested on both, and the two are asked the same
//! requests and must answer alike. nginx, `libnginx-mod-http-lua` and
//! `nginx-dev` come from Debian (`.ci/run` installs them). libkeyscope.so
//! is built beside this test binary: the test crate depends on
//! `keyscope-embed`.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use keyscope_runtime::EMBEDDED_POLICY;
use keyscope_test_artifacts as hostile;
use serde_json::Value;

use crate::nginx::upstream;
use crate::support::{Sandbox, fixtures, http_client, wait_until};

/// The two ways keyscope runs inside nginx's workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integration {
    /// integrations/nginx/keyscope.lua, through the Lua module.
    Lua,
    /// ngx_http_keyscope_module.
    Module,
}

impl Integration {
    /// Its documented configuration, with the module built here.
    fn documented_conf(self) -> String {
        match self {
            Self::Lua => {
                std::fs::read_to_string(fixtures().join("../../docs/nginx-embedded.conf")).unwrap()
            }
            Self::Module => {
                let conf = std::fs::read_to_string(fixtures().join("../../docs/nginx-module.conf"))
                    .unwrap();
                let installed = "/usr/lib/nginx/modules/ngx_http_keyscope_module.so";
                assert!(conf.contains(installed));
                conf.replace(installed, module().to_str().unwrap())
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Lua => "nginx-lua",
            Self::Module => "nginx-module",
        }
    }
}

/// ngx_http_keyscope_module.so, built once per test run with the one
/// documented command, against this build's libkeyscope.so.
pub fn module() -> &'static Path {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let lib_dir = library().parent().unwrap().to_owned();
        let out = lib_dir.join("nginx-module");
        let output = Command::new("bash")
            .arg(fixtures().join("../../integrations/nginx-module/build.sh"))
            .arg(&out)
            .env("KEYSCOPE_LIB_DIR", &lib_dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "integrations/nginx-module/build.sh failed (apt-get install nginx-dev): {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        out.join("ngx_http_keyscope_module.so")
    })
}

/// libkeyscope.so from this build: next to the test binary's deps.
fn library() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    [deps.join("libkeyscope.so"), deps.join("../libkeyscope.so")]
        .into_iter()
        .find(|path| path.exists())
        .expect("libkeyscope.so is built with the tests (keyscope-embed is a dev-dependency)")
}

fn nginx_binary() -> &'static str {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .expect("nginx is not installed: `apt-get install nginx libnginx-mod-http-lua` (.ci/run does this)")
}

/// An nginx prefix: the library, the Lua module and `keyscope.toml`.
struct Prefix {
    dir: PathBuf,
    integration: Integration,
}

impl Prefix {
    fn new(sandbox: &Sandbox, integration: Integration, config: &str) -> Self {
        let dir = sandbox.path(integration.name());
        for sub in ["logs", "temp"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::os::unix::fs::symlink(library(), dir.join("libkeyscope.so")).unwrap();
        std::os::unix::fs::symlink(
            fixtures().join("../../integrations/nginx/keyscope.lua"),
            dir.join("keyscope.lua"),
        )
        .unwrap();
        std::fs::write(dir.join("keyscope.toml"), config).unwrap();
        Self { dir, integration }
    }

    /// Its integration's documented configuration.
    fn conf(&self) -> String {
        self.integration.documented_conf()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.path("logs/error.log")).unwrap_or_default()
    }

    /// Writes a file as `keyscope snapshot export` does: whole, by rename.
    fn replace(&self, name: &str, bytes: &[u8]) {
        let temporary = self.path(&format!(".{name}.new"));
        std::fs::write(&temporary, bytes).unwrap();
        std::fs::rename(&temporary, self.path(name)).unwrap();
    }
}

/// nginx, master and two workers, on the documented configuration.
struct Nginx {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers, then itself.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Starts nginx on `conf` in `prefix`; waits until both workers answer with
/// their handle's status.
fn start(prefix: &Prefix, conf: &str, upstream: SocketAddr) -> Nginx {
    start_as(prefix, conf, upstream, "root")
}

/// As [`start`], the workers running as `user` when the test runs as root
/// (else as the test's own user).
fn start_as(prefix: &Prefix, conf: &str, upstream: SocketAddr, user: &str) -> Nginx {
    let addr = free_port();
    assert!(conf.contains("127.0.0.1:8080") && conf.contains("127.0.0.1:9000"));
    let conf = conf
        .replace("127.0.0.1:8080", &addr.to_string())
        .replace("127.0.0.1:9000", &upstream.to_string());
    std::fs::write(prefix.path("nginx.conf"), conf).unwrap();
    let mut globals = "daemon off;".to_owned();
    // As root, nginx runs its workers as `nobody`, who cannot read the
    // test's private directories; a real install gives its files to the
    // workers' user instead.
    if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
        globals.push_str(&format!(" user {user};"));
    }
    // Without cargo's LD_LIBRARY_PATH: the module finds libkeyscope.so
    // beside itself, as it would installed.
    let child = Command::new(nginx_binary())
        .env_remove("LD_LIBRARY_PATH")
        .arg("-p")
        .arg(format!("{}/", prefix.dir.display()))
        .arg("-c")
        .arg(prefix.path("nginx.conf"))
        .args(["-g", &globals])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let nginx = Nginx { child, addr };
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "nginx did not start: {}",
            prefix.error_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    workers(&nginx);
    nginx
}

/// One request on a connection of its own (so that both workers are
/// asked): the status code, the headers in lower case, and the body.
fn ask_raw(addr: SocketAddr, head: &str) -> (u16, BTreeMap<String, String>, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "{head}Host: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    // Chunked bodies: the JSON is the one chunk.
    let body = if body.contains("\r\n") {
        body.lines().nth(1).unwrap_or_default().to_owned()
    } else {
        body.to_owned()
    };
    (status, headers, body)
}

fn ask(addr: SocketAddr, method: &str, path: &str, key: Option<&str>) -> u16 {
    let key = key
        .map(|key| format!("x-api-key: {key}\r\n"))
        .unwrap_or_default();
    ask_raw(addr, &format!("{method} {path} HTTP/1.1\r\n{key}")).0
}

/// Each worker's status, by pid: asked on fresh connections until both
/// workers answered (reuseport spreads connections over them).
fn workers(nginx: &Nginx) -> BTreeMap<u64, Value> {
    let mut seen = BTreeMap::new();
    wait_until(30, "both nginx workers answering with their status", || {
        let (status, _, body) = ask_raw(nginx.addr, "GET /_keyscope/status HTTP/1.1\r\n");
        if let (200 | 503, Ok(value)) = (status, serde_json::from_str::<Value>(&body)) {
            seen.insert(value["pid"].as_u64().unwrap(), value["status"].clone());
        }
        seen.len() == 2
    });
    seen
}

/// Waits until both workers report what `condition` looks for.
fn until_both(nginx: &Nginx, what: &str, mut condition: impl FnMut(&Value) -> bool) {
    wait_until(30, what, || workers(nginx).values().all(&mut condition));
}

/// A store whose one key is `acme/viewer`'s `viewer` (returned), and a
/// prefix of `integration` configured with `config`, the store's snapshot
/// exported into it.
fn viewer_world(integration: Integration, config: &str) -> (Sandbox, String, Prefix) {
    let sandbox = Sandbox::new();
    sandbox.scope("acme", "viewer", "view", "");
    let (_, key) = sandbox.key("acme/viewer", "viewer");
    let prefix = Prefix::new(&sandbox, integration, config);
    export(&sandbox, &prefix);
    (sandbox, key, prefix)
}

fn export(sandbox: &Sandbox, prefix: &Prefix) {
    sandbox
        .keyscope(["snapshot", "export", "-o"])
        .arg(prefix.path("snapshot.ks"))
        .assert()
        .success();
}

/// Requests with `key` in two lanes until stopped, counting those not
/// answered 200: one lane on a kept-alive connection (when `kept_alive`;
/// else on fresh ones too), the other each on a new connection.
struct Traffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    lanes: Vec<std::thread::JoinHandle<()>>,
}

impl Traffic {
    const PATH: &str = "/api/v2/apps/acme/agents";

    fn start(addr: SocketAddr, key: &str, kept_alive: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let lanes = (0..2)
            .map(|lane| {
                let (stop, sent, failed, key) = (
                    Arc::clone(&stop),
                    Arc::clone(&sent),
                    Arc::clone(&failed),
                    key.to_owned(),
                );
                let url = format!("http://{addr}{}", Self::PATH);
                std::thread::spawn(move || {
                    let http = http_client();
                    while !stop.load(Ordering::Relaxed) {
                        let status = if kept_alive && lane == 0 {
                            http.get(&url)
                                .header("x-api-key", &key)
                                .call()
                                .map_or(0, |response| response.status().as_u16())
                        } else {
                            ask(addr, "GET", Self::PATH, Some(&key))
                        };
                        sent.fetch_add(1, Ordering::Relaxed);
                        if status != 200 {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            sent,
            failed,
            lanes,
        }
    }

    /// Waits until 20 more requests were sent.
    fn wait_for_more(&self, what: &str) {
        let at = self.sent.load(Ordering::Relaxed);
        wait_until(30, what, || self.sent.load(Ordering::Relaxed) > at + 20);
    }

    /// Stops; how many were sent, and how many failed.
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for lane in self.lanes {
            lane.join().unwrap();
        }
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

fn no_key_in(text: &str, keys: &[&String], what: &str) {
    for key in keys {
        assert!(!text.contains(key.as_str()), "a raw key in {what}");
    }
}

#[test]
fn lua_lets_through_only_what_keyscope_allows_in_both_workers() {
    embedded_nginx_lets_through_only_what_keyscope_allows_in_both_workers(Integration::Lua);
}

#[test]
fn module_lets_through_only_what_keyscope_allows_in_both_workers() {
    embedded_nginx_lets_through_only_what_keyscope_allows_in_both_workers(Integration::Module);
}

fn embedded_nginx_lets_through_only_what_keyscope_allows_in_both_workers(integration: Integration) {
    let sandbox = Sandbox::new();
    let viewer_scope = sandbox.scope("acme", "viewer", "view", "run");
    sandbox.scope("globex", "editor", "edit", "");
    let runner_scope = sandbox.scope(
        "acme",
        "runner",
        "none",
        "run,session-create,document-upload",
    );
    let (viewer_id, viewer) = sandbox.key("acme/viewer", "viewer");
    let (revoked_id, revoked) = sandbox.key("acme/viewer", "revoked");
    sandbox
        .keyscope(["key", "revoke", &revoked_id.to_string()])
        .assert()
        .success();
    let (_, other_app) = sandbox.key("globex/editor", "other");
    let (runner_id, runner) = sandbox.key("acme/runner", "runner");
    let prefix = Prefix::new(&sandbox, integration, "snapshot = \"snapshot.ks\"\n");
    export(&sandbox, &prefix);
    let (upstream, seen) = upstream();
    let nginx = start(&prefix, &prefix.conf(), upstream);

    // Two worker processes, each with its own handle on generation 1.
    let statuses = workers(&nginx);
    assert_eq!(statuses.len(), 2);
    for status in statuses.values() {
        assert_eq!(status["source"], "snapshot-file", "{status}");
        assert_eq!(status["generation"], 1, "{status}");
        assert_eq!(status["keys"], 4, "{status}");
    }

    const ENV: &str = "/api/v2/apps/acme/environments/prod";
    let cases: Vec<(&str, String, Option<&String>, u16)> = vec![
        ("GET", "/api/v2/apps/acme/agents".into(), Some(&viewer), 200),
        (
            "GET",
            "/api/v2/apps/acme/agents/a1?full=1".into(),
            Some(&viewer),
            200,
        ),
        ("POST", format!("{ENV}/runs/execute"), Some(&viewer), 200),
        ("GET", "/api/v2/apps/acme/agents".into(), None, 401),
        (
            "GET",
            "/api/v2/apps/acme/agents".into(),
            Some(&revoked),
            401,
        ),
        (
            "GET",
            "/api/v2/apps/acme/agents".into(),
            Some(&other_app),
            403,
        ),
        (
            "DELETE",
            "/api/v2/apps/acme/agents/a1".into(),
            Some(&viewer),
            403,
        ),
        ("POST", format!("{ENV}/sessions"), Some(&viewer), 403),
        (
            "GET",
            "/api/v2/apps/acme/secrets".into(),
            Some(&viewer),
            403,
        ),
        // The platform's remaining runtime routes.
        (
            "POST",
            format!("{ENV}/runs/r-42/status"),
            Some(&runner),
            200,
        ),
        (
            "GET",
            format!("{ENV}/sessions?sessionId=s-1"),
            Some(&runner),
            200,
        ),
        ("GET", format!("{ENV}/sessions/list"), Some(&runner), 200),
        (
            "DELETE",
            format!("{ENV}/attachments/file-7"),
            Some(&runner),
            200,
        ),
        (
            "DELETE",
            format!("{ENV}/attachments/file-7"),
            Some(&viewer),
            403,
        ),
    ];
    let mut allowed = Vec::new();
    for (method, path, key, status) in &cases {
        assert_eq!(
            ask(nginx.addr, method, path, key.map(String::as_str)),
            *status,
            "{method} {path}"
        );
        if *status == 200 {
            allowed.push(format!("{method} {path} HTTP/1.1"));
        }
    }

    // A deny is answered by the worker: status, challenge, JSON reason.
    let (status, headers, body) = ask_raw(
        nginx.addr,
        &format!("GET /api/v2/apps/acme/agents HTTP/1.1\r\nx-api-key: {revoked}\r\n"),
    );
    assert_eq!(status, 401);
    assert_eq!(
        headers["www-authenticate"],
        "Bearer realm=\"keyscope\", error=\"invalid_token\""
    );
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body, r#"{"error":"unauthorized","reason":"revoked-key"}"#);
    let (status, headers, body) = ask_raw(nginx.addr, "GET /api/v2/apps/acme/agents HTTP/1.1\r\n");
    assert_eq!(
        (status, headers["www-authenticate"].as_str()),
        (401, "Bearer realm=\"keyscope\"")
    );
    assert_eq!(body, r#"{"error":"unauthorized","reason":"missing-key"}"#);
    let (status, _, body) = ask_raw(
        nginx.addr,
        &format!("DELETE /api/v2/apps/acme/agents/a1 HTTP/1.1\r\nx-api-key: {viewer}\r\n"),
    );
    assert_eq!(status, 403);
    assert_eq!(
        body,
        r#"{"error":"forbidden","reason":"insufficient-permission","required":"agents:full"}"#
    );

    // `Authorization: Bearer` carries a key too; a client's own id headers
    // are replaced by the real ones.
    let (status, _, _) = ask_raw(
        nginx.addr,
        &format!(
            "GET /api/v2/apps/acme/agents HTTP/1.1\r\nAuthorization: Bearer {viewer}\r\n\
             X-Keyscope-Key-Id: 999\r\nX-Keyscope-Scope-Id: 999\r\n"
        ),
    );
    assert_eq!(status, 200);
    allowed.push("GET /api/v2/apps/acme/agents HTTP/1.1".to_owned());
    // A user's JWT beside the API key is the upstream's business.
    let (status, _, _) = ask_raw(
        nginx.addr,
        &format!(
            "GET /api/v2/apps/acme/agents HTTP/1.1\r\nx-api-key: {runner}\r\n\
             Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig\r\n"
        ),
    );
    assert_eq!(status, 403, "runner has Agents none");

    // Ambiguous: two copies of the key header (either order), the key
    // header beside a Bearer keyscope key, two Bearer tokens, and a copy
    // hidden past nginx's default limit of 100 headers.
    let filler: String = (0..120).map(|i| format!("x-filler-{i}: {i}\r\n")).collect();
    for head in [
        format!("x-api-key: {viewer}\r\nx-api-key: {revoked}\r\n"),
        format!("x-api-key: {revoked}\r\nx-api-key: {viewer}\r\n"),
        format!("x-api-key: {viewer}\r\nAuthorization: Bearer {other_app}\r\n"),
        format!("Authorization: Bearer {viewer}\r\nAuthorization: Bearer {runner}\r\n"),
        format!("x-api-key: {viewer}\r\n{filler}x-api-key: {revoked}\r\n"),
    ] {
        let (status, _, body) = ask_raw(
            nginx.addr,
            &format!("GET /api/v2/apps/acme/agents HTTP/1.1\r\n{head}"),
        );
        if status == 400 {
            // nginx itself refuses a second `Authorization` header.
            assert!(head.matches("Authorization").count() == 2, "{head}");
            continue;
        }
        assert_eq!(status, 401, "{head}");
        assert!(body.contains("malformed-key"), "{body}");
    }

    // The upstream saw exactly the allowed requests, with their ids.
    let seen = seen.lock().unwrap().clone();
    let lines: Vec<&str> = seen.iter().map(|(line, _, _)| line.as_str()).collect();
    assert_eq!(lines, allowed);
    for (line, key_id, scope_id) in &seen {
        let ids = (
            key_id.as_deref().unwrap().parse::<u64>().unwrap(),
            scope_id.as_deref().unwrap().parse::<u64>().unwrap(),
        );
        assert!(
            ids == (viewer_id, viewer_scope) || ids == (runner_id, runner_scope),
            "{line}: {ids:?}"
        );
    }
    assert!(
        seen.iter()
            .all(|(_, key_id, _)| key_id.as_deref() != Some("999")),
        "a client's own id header reached the upstream"
    );

    // Both workers decided, and neither recorded an error.
    let statuses = workers(&nginx);
    for status in statuses.values() {
        assert!(status["decisions"].as_u64().unwrap() > 0, "{status}");
        assert_eq!(status["errors"], 0, "{status}");
        assert_eq!(status["policy_errors"], 0, "{status}");
    }
    // Nothing the workers or the library wrote holds a key.
    let keys = [&viewer, &revoked, &other_app, &runner];
    no_key_in(&prefix.error_log(), &keys, "nginx's error log");
    no_key_in(
        &serde_json::to_string(&statuses).unwrap(),
        &keys,
        "the library's status",
    );
    assert!(prefix.error_log().contains("keyscope: generation 1 live"));
}

#[test]
fn lua_a_revocation_reaches_both_workers_through_the_rewritten_snapshot_file() {
    a_revocation_reaches_both_workers_through_the_rewritten_snapshot_file(Integration::Lua);
}

#[test]
fn module_a_revocation_reaches_both_workers_through_the_rewritten_snapshot_file() {
    a_revocation_reaches_both_workers_through_the_rewritten_snapshot_file(Integration::Module);
}

fn a_revocation_reaches_both_workers_through_the_rewritten_snapshot_file(integration: Integration) {
    let sandbox = Sandbox::new();
    sandbox.scope("acme", "viewer", "view", "");
    let (key_id, key) = sandbox.key("acme/viewer", "viewer");
    let (_, other) = sandbox.key("acme/viewer", "other");
    let prefix = Prefix::new(&sandbox, integration, "snapshot = \"snapshot.ks\"\n");
    export(&sandbox, &prefix);
    let (upstream, _) = upstream();
    let nginx = start(&prefix, &prefix.conf(), upstream);
    let path = "/api/v2/apps/acme/agents";
    assert_eq!(ask(nginx.addr, "GET", path, Some(&key)), 200);

    sandbox
        .keyscope(["key", "revoke", &key_id.to_string()])
        .assert()
        .success();
    export(&sandbox, &prefix);
    let exported = Instant::now();
    // Every worker swaps the new file in: each reports a second generation
    // with the new snapshot, and then every connection is denied.
    until_both(&nginx, "both workers on the new snapshot", |status| {
        status["generation"] == 2
    });
    let took = exported.elapsed();
    for _ in 0..16 {
        assert_eq!(ask(nginx.addr, "GET", path, Some(&key)), 401);
        assert_eq!(ask(nginx.addr, "GET", path, Some(&other)), 200);
    }
    eprintln!("embedded: both workers on the revoked snapshot {took:?} after the export");
    let statuses = workers(&nginx);
    let digests: Vec<&Value> = statuses.values().map(|s| &s["snapshot_digest"]).collect();
    assert_eq!(digests[0], digests[1]);
}

#[test]
fn lua_a_revocation_reaches_both_workers_through_the_fleets_bundle_url() {
    a_revocation_reaches_both_workers_through_the_fleets_bundle_url(Integration::Lua);
}

#[test]
fn module_a_revocation_reaches_both_workers_through_the_fleets_bundle_url() {
    a_revocation_reaches_both_workers_through_the_fleets_bundle_url(Integration::Module);
}

fn a_revocation_reaches_both_workers_through_the_fleets_bundle_url(integration: Integration) {
    let fleet = crate::fleet::Fleet::new();
    fleet.sandbox.scope("acme", "viewer", "view", "");
    let (key_id, key) = fleet.sandbox.key("acme/viewer", "viewer");
    let control_plane = fleet.control_plane(&["--usage-flush-ms", "200"]);
    let prefix = Prefix::new(
        &fleet.sandbox,
        integration,
        &format!(
            "bundle_url = \"{}\"\nbundle_public_key = \"{}\"\nfleet_token_file = \"{}\"\n\
             gateway_id = \"nginx-edge\"\nbundle_cache = \"cache\"\n",
            control_plane.admin_url("/v1/bundle"),
            fleet.public_key.display(),
            fleet.own_token("nginx-edge").0.display()
        ),
    );
    std::fs::create_dir_all(prefix.path("cache")).unwrap();
    let (upstream, _) = upstream();
    let nginx = start(&prefix, &prefix.conf(), upstream);
    let path = "/api/v2/apps/acme/agents";
    until_both(&nginx, "both workers holding a bundle", |status| {
        status["source"] == "bundle" && status["snapshot_revision"].is_u64()
    });
    assert_eq!(ask(nginx.addr, "GET", path, Some(&key)), 200);

    fleet
        .sandbox
        .keyscope(["key", "revoke", &key_id.to_string()])
        .assert()
        .success();
    let revoked = Instant::now();
    let before: u64 = workers(&nginx)
        .values()
        .map(|status| status["snapshot_revision"].as_u64().unwrap())
        .max()
        .unwrap();
    until_both(
        &nginx,
        "both workers on the revocation's bundle",
        |status| {
            status["bundle"]["last_bundle"]["kind"] == "delta"
                || status["snapshot_revision"].as_u64().unwrap() > before
        },
    );
    let took = revoked.elapsed();
    wait_until(30, "the revoked key denied on every connection", || {
        (0..16).all(|_| ask(nginx.addr, "GET", path, Some(&key)) == 401)
    });
    eprintln!("embedded: both workers on the revocation's bundle {took:?} after the CLI exited");
    // The control plane sees each worker as a gateway of its fleet, both
    // under the host's one token: `nginx-edge:pidPID`.
    let mut last = Value::Null;
    wait_until(30, "both workers in the fleet view", || {
        let (_, body) = crate::fleet::fleet_status(&fleet, &control_plane);
        last = body;
        last["gateways"].as_array().is_some_and(|gateways| {
            gateways.len() == 2
                && gateways.iter().all(|g| {
                    g["current"] == true
                        && g["credential"] == "named"
                        && g["id"].as_str().unwrap().starts_with("nginx-edge:pid")
                })
        })
    });
    // The allowed request's use went back to the control plane in the
    // poll that followed the revocation's bundle.
    wait_until(60, "the workers' key use in the store", || {
        let keys = fleet.sandbox.json(["key", "list"]);
        keys[0]["uses"].as_u64().unwrap() >= 1 && keys[0]["last_used_at"].is_string()
    });
    no_key_in(&prefix.error_log(), &[&key], "nginx's error log");
}

/// A valid component with different bytes: the embedded one and a custom
/// section saying `n`.
fn variant(n: u8) -> Vec<u8> {
    let mut module = EMBEDDED_POLICY.to_vec();
    let name = b"keyscope-test-variant";
    let payload_len = 1 + name.len() + 1;
    module.push(0);
    module.push(u8::try_from(payload_len).unwrap());
    module.push(u8::try_from(name.len()).unwrap());
    module.extend_from_slice(name);
    module.push(n);
    module
}

#[test]
fn lua_twenty_module_swaps_under_traffic_fail_no_request_and_a_bad_module_is_refused() {
    twenty_module_swaps_under_traffic_fail_no_request_and_a_bad_module_is_refused(Integration::Lua);
}

#[test]
fn module_twenty_module_swaps_under_traffic_fail_no_request_and_a_bad_module_is_refused() {
    twenty_module_swaps_under_traffic_fail_no_request_and_a_bad_module_is_refused(
        Integration::Module,
    );
}

fn twenty_module_swaps_under_traffic_fail_no_request_and_a_bad_module_is_refused(
    integration: Integration,
) {
    let (_sandbox, key, prefix) = viewer_world(
        integration,
        "snapshot = \"snapshot.ks\"\npolicy = \"policy.wasm\"\n",
    );
    prefix.replace("policy.wasm", &variant(0));
    let (upstream, _) = upstream();
    let nginx = start(&prefix, &prefix.conf(), upstream);

    // Traffic on kept-alive connections and on fresh ones, all the while.
    let traffic = Traffic::start(nginx.addr, &key, true);

    for swap in 1..=20u8 {
        let module = variant(swap % 2);
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&module));
        let generation = u64::from(swap) + 1;
        prefix.replace("policy.wasm", &module);
        until_both(&nginx, &format!("swap {swap} in both workers"), |status| {
            status["generation"] == generation && status["module_digest"] == digest.as_str()
        });
    }
    // A module that is not a component: refused by both, the old one serves.
    prefix.replace("policy.wasm", b"\0asm not a component");
    until_both(&nginx, "the bad module refused by both workers", |status| {
        status["swaps_refused"] == 1
            && status["generation"] == 21
            && status["last_error"]
                .as_str()
                .is_some_and(|error| error.contains("not swapped"))
    });
    traffic.wait_for_more("traffic after the refusal");
    let (sent, failed) = traffic.stop();
    eprintln!("embedded: 20 module swaps and a refusal under {sent} requests, {failed} failed");
    assert!(sent > 40, "{sent}");
    assert_eq!(failed, 0);
    // Each worker says so in nginx's error log, on its next status look.
    wait_until(30, "the workers' reports in nginx's error log", || {
        let log = prefix.error_log();
        log.contains("keyscope: generation 21 live") && log.contains("not swapped")
    });
    no_key_in(&prefix.error_log(), &[&key], "nginx's error log");
}

#[test]
fn lua_a_hostile_module_forced_live_denies_everything_and_the_workers_live_on() {
    a_hostile_module_forced_live_denies_everything_and_the_workers_live_on(Integration::Lua);
}

#[test]
fn module_a_hostile_module_forced_live_denies_everything_and_the_workers_live_on() {
    a_hostile_module_forced_live_denies_everything_and_the_workers_live_on(Integration::Module);
}

fn a_hostile_module_forced_live_denies_everything_and_the_workers_live_on(
    integration: Integration,
) {
    let (_sandbox, key, prefix) = viewer_world(
        integration,
        "snapshot = \"snapshot.ks\"\npolicy = \"policy.wasm\"\nforce_untested_policy = true\n",
    );
    prefix.replace("policy.wasm", hostile::LOOP);
    let (upstream, seen) = upstream();
    let nginx = start(&prefix, &prefix.conf(), upstream);
    let pids: Vec<u64> = workers(&nginx).into_keys().collect();

    for _ in 0..8 {
        let (status, _, body) = ask_raw(
            nginx.addr,
            &format!("GET /api/v2/apps/acme/agents HTTP/1.1\r\nx-api-key: {key}\r\n"),
        );
        assert_eq!(status, 503);
        assert_eq!(body, r#"{"error":"unavailable","reason":"policy-error"}"#);
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "a request reached the upstream"
    );
    // The same two workers, each saying why it denies.
    let statuses = workers(&nginx);
    assert_eq!(statuses.keys().copied().collect::<Vec<_>>(), pids);
    let statuses: Vec<&Value> = statuses.values().collect();
    assert!(
        statuses.iter().any(|status| status["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("policy-error")),
        "{statuses:?}: {}",
        prefix.error_log()
    );
    // A good module forced in: the same workers allow again.
    prefix.replace("policy.wasm", EMBEDDED_POLICY);
    until_both(&nginx, "the good module in both workers", |status| {
        status["generation"] == 3
    });
    assert_eq!(
        ask(nginx.addr, "GET", "/api/v2/apps/acme/agents", Some(&key)),
        200
    );
    assert_eq!(workers(&nginx).into_keys().collect::<Vec<_>>(), pids);
    let log = prefix.error_log();
    assert!(!log.contains("exited on signal"), "{log}");
    no_key_in(&log, &[&key], "nginx's error log");
}

#[test]
fn lua_a_bad_configuration_denies_with_503_and_opening_before_the_fork_is_refused() {
    a_bad_configuration_denies_with_503_and_opening_before_the_fork_is_refused(Integration::Lua);
}

#[test]
fn module_a_bad_configuration_denies_with_503_and_opening_before_the_fork_is_refused() {
    a_bad_configuration_denies_with_503_and_opening_before_the_fork_is_refused(Integration::Module);
}

fn a_bad_configuration_denies_with_503_and_opening_before_the_fork_is_refused(
    integration: Integration,
) {
    let sandbox = Sandbox::new();
    let prefix = Prefix::new(
        &sandbox,
        integration,
        "snapshot = \"snapshot.ks\"\nsnapshots = 1\n",
    );
    let (upstream, seen) = upstream();
    let nginx = start(&prefix, &prefix.conf(), upstream);
    for status in workers(&nginx).values() {
        assert!(status.is_null(), "{status}");
    }
    let (status, _, body) = ask_raw(nginx.addr, "GET /api/v2/apps/acme/agents HTTP/1.1\r\n");
    assert_eq!(status, 503);
    assert!(body.contains("policy-error"), "{body}");
    assert!(seen.lock().unwrap().is_empty());
    let log = prefix.error_log();
    assert!(log.contains("unknown field `snapshots`"), "{log}");
    assert!(log.contains("every request is denied"), "{log}");
    drop(nginx);

    let (conf, refusal) = match integration {
        // init_by_lua runs in the master, before the fork: refused loudly,
        // and nginx does not start.
        Integration::Lua => (
            prefix
                .conf()
                .replace("init_worker_by_lua_block", "init_by_lua_block"),
            "keyscope.init runs in init_worker_by_lua*, not in phase `init`",
        ),
        // The module opens in each worker only; what it cannot do without
        // is a configuration error nginx names before it starts.
        Integration::Module => (
            prefix.conf().replace("keyscope_config keyscope.toml;", ""),
            "\"keyscope on\" needs \"keyscope_config\"",
        ),
    };
    let conf = conf.replace("127.0.0.1:8080", &free_port().to_string());
    std::fs::write(prefix.path("nginx.conf"), conf).unwrap();
    let mut child = Command::new(nginx_binary())
        .env_remove("LD_LIBRARY_PATH")
        .arg("-p")
        .arg(format!("{}/", prefix.dir.display()))
        .arg("-c")
        .arg(prefix.path("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut exited = None;
    wait_until(30, "nginx refusing to start", || {
        exited = child.try_wait().unwrap();
        exited.is_some()
    });
    assert!(!exited.unwrap().success());
    let mut said = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    said.push_str(&prefix.error_log());
    assert!(said.contains(refusal), "{said}");

    // A configuration file that is not there: every request denied, and
    // the error log and the status say which file.
    std::fs::remove_file(prefix.path("keyscope.toml")).unwrap();
    let nginx = start(&prefix, &prefix.conf(), upstream);
    let (status, _, body) = ask_raw(nginx.addr, "GET /api/v2/apps/acme/agents HTTP/1.1\r\n");
    assert_eq!(
        (status, body.contains("policy-error")),
        (503, true),
        "{body}"
    );
    let log = prefix.error_log();
    assert!(
        log.contains("keyscope.toml") && log.contains("every request is denied"),
        "{log}"
    );
    assert!(seen.lock().unwrap().is_empty());
}

/// The uids of `master`'s children: nginx's workers.
fn worker_uids(master: u32) -> Vec<u32> {
    let mut uids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|rest| rest.split_whitespace().next().unwrap_or("").to_owned())
        };
        if field("PPid:").as_deref() == Some(&master.to_string()) {
            uids.push(field("Uid:").unwrap().parse().unwrap());
        }
    }
    uids
}

#[test]
fn lua_workers_as_nobody_read_what_root_exports_and_say_stale_when_they_cannot() {
    workers_as_nobody_read_what_root_exports_and_say_stale_when_they_cannot(Integration::Lua);
}

#[test]
fn module_workers_as_nobody_read_what_root_exports_and_say_stale_when_they_cannot() {
    workers_as_nobody_read_what_root_exports_and_say_stale_when_they_cannot(Integration::Module);
}

fn workers_as_nobody_read_what_root_exports_and_say_stale_when_they_cannot(
    integration: Integration,
) {
    use std::os::unix::fs::PermissionsExt as _;
    let sandbox = Sandbox::new();
    sandbox.scope("acme", "viewer", "view", "");
    let (first_id, first) = sandbox.key("acme/viewer", "first");
    let (_, second) = sandbox.key("acme/viewer", "second");
    let prefix = Prefix::new(
        &sandbox,
        integration,
        "snapshot = \"snapshot.ks\"\nwatch_interval_ms = 50\nmax_stale_s = 1\n",
    );
    // A deployment's directories: the workers' user can reach them.
    for dir in [sandbox.dir.path(), &prefix.dir] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // Exported by root (the test's user), for the workers to read: a new
    // file is 0644 (a snapshot holds no secret, only SHA-256 digests).
    export(&sandbox, &prefix);
    let snapshot = prefix.path("snapshot.ks");
    let mode = || std::fs::metadata(&snapshot).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(), 0o644);
    let (upstream, _) = upstream();
    let nginx = start_as(&prefix, &prefix.conf(), upstream, "nobody nogroup");
    if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
        let uids = worker_uids(nginx.child.id());
        assert_eq!(uids, [65534, 65534], "the workers run as nobody");
    }
    let path = "/api/v2/apps/acme/agents";
    assert_eq!(ask(nginx.addr, "GET", path, Some(&first)), 200);
    // Re-exported after a revocation: the file keeps its mode, and both
    // workers deny the key within their poll.
    sandbox
        .keyscope(["key", "revoke", &first_id.to_string()])
        .assert()
        .success();
    export(&sandbox, &prefix);
    assert_eq!(mode(), 0o644);
    wait_until(30, "the revoked key denied on every connection", || {
        (0..16).all(|_| ask(nginx.addr, "GET", path, Some(&first)) == 401)
    });
    assert_eq!(ask(nginx.addr, "GET", path, Some(&second)), 200);
    until_both(&nginx, "both workers fresh", |status| {
        status["stale"] == false
    });
    // The file made unreadable to the workers: stale, and why, on both; the
    // last good snapshot keeps serving. Readable again: fresh.
    std::fs::set_permissions(&snapshot, std::fs::Permissions::from_mode(0o000)).unwrap();
    until_both(
        &nginx,
        "both workers saying the snapshot is stale",
        |status| {
            status["stale"] == true
                && status["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("snapshot") && e.contains("ermission"))
        },
    );
    // Stale past `max_stale_s`: every request denied, 503, rather than
    // decided on a snapshot that may miss a revocation.
    wait_until(30, "both workers failing closed", || {
        (0..16).all(|_| ask(nginx.addr, "GET", path, Some(&second)) == 503)
    });
    std::fs::set_permissions(&snapshot, std::fs::Permissions::from_mode(0o640)).unwrap();
    // An operator's own mode (here 0640) is kept by the next export.
    export(&sandbox, &prefix);
    assert_eq!(mode(), 0o640);
    std::fs::set_permissions(&snapshot, std::fs::Permissions::from_mode(0o644)).unwrap();
    until_both(&nginx, "both workers fresh again", |status| {
        status["stale"] == false
    });
    wait_until(30, "decisions resuming", || {
        (0..16).all(|_| ask(nginx.addr, "GET", path, Some(&second)) == 200)
    });
}

/// The Lua handler and the native module, on one store, asked the same
/// requests: the same status, challenge, content type and body for each,
/// and the same requests reach their upstreams with the same ids.
#[test]
fn the_module_and_the_lua_handler_agree_request_by_request() {
    let sandbox = Sandbox::new();
    sandbox.scope("acme", "viewer", "view", "run");
    sandbox.scope(
        "acme",
        "runner",
        "none",
        "run,session-create,session-terminate",
    );
    sandbox.scope("globex", "editor", "edit", "document-upload");
    let (_, viewer) = sandbox.key("acme/viewer", "viewer");
    let (_, runner) = sandbox.key("acme/runner", "runner");
    let (_, editor) = sandbox.key("globex/editor", "editor");
    let (revoked_id, revoked) = sandbox.key("acme/viewer", "revoked");
    sandbox
        .keyscope(["key", "revoke", &revoked_id.to_string()])
        .assert()
        .success();
    let both: Vec<_> = [Integration::Lua, Integration::Module]
        .into_iter()
        .map(|integration| {
            let prefix = Prefix::new(&sandbox, integration, "snapshot = \"snapshot.ks\"\n");
            export(&sandbox, &prefix);
            let (upstream, seen) = upstream();
            let nginx = start(&prefix, &prefix.conf(), upstream);
            (prefix, nginx, seen)
        })
        .collect();

    let routes = sandbox.json(["route", "list"]);
    let mut heads = Vec::new();
    for route in routes.as_array().unwrap() {
        let method = route["method"].as_str().unwrap();
        let pattern = route["pattern"].as_str().unwrap();
        for app in ["acme", "globex", "initech"] {
            let path: String = pattern
                .split('/')
                .map(|segment| match segment {
                    "{app}" => app,
                    s if s.starts_with('{') => "x-1",
                    s => s,
                })
                .collect::<Vec<_>>()
                .join("/");
            for credential in [
                String::new(),
                format!("x-api-key: {viewer}\r\n"),
                format!("x-api-key: {runner}\r\n"),
                format!("Authorization: Bearer {editor}\r\n"),
                format!("x-api-key: {revoked}\r\n"),
                "x-api-key: ks_not-a-key\r\n".to_owned(),
                format!("x-api-key: {viewer}\r\nx-api-key: {runner}\r\n"),
                format!("X-API-KEY: {runner}\r\nAuthorization: Bearer {runner}\r\n"),
            ] {
                heads.push(format!("{method} {path}?q=1 HTTP/1.1\r\n{credential}"));
            }
        }
    }
    heads.push(format!(
        "PATCH /api/v2/apps/acme/agents HTTP/1.1\r\nx-api-key: {viewer}\r\n"
    ));
    heads.push(format!(
        "GET /elsewhere HTTP/1.1\r\nx-api-key: {viewer}\r\n"
    ));
    heads.push(format!(
        "GET /api/v2/apps/acme/agents HTTP/1.1\r\nx-api-key: {viewer}\r\n\
         X-Keyscope-Key-Id: 999\r\nX-Keyscope-Scope-Id: 999\r\n"
    ));
    let mut allowed = 0;
    for head in &heads {
        let answers: Vec<_> = both
            .iter()
            .map(|(_, nginx, _)| {
                let (status, headers, body) = ask_raw(nginx.addr, head);
                let header = |name: &str| headers.get(name).cloned().unwrap_or_default();
                (
                    status,
                    header("www-authenticate"),
                    header("content-type"),
                    header("cache-control"),
                    body,
                )
            })
            .collect();
        assert_eq!(answers[0], answers[1], "{head}");
        assert!(
            [200, 401, 403].contains(&answers[0].0),
            "{head}: {answers:?}"
        );
        allowed += usize::from(answers[0].0 == 200);
    }
    assert!(
        allowed > 10 && allowed < heads.len() / 2,
        "{allowed} of {}",
        heads.len()
    );
    let seen: Vec<_> = both
        .iter()
        .map(|(_, _, seen)| seen.lock().unwrap().clone())
        .collect();
    assert_eq!(seen[0].len(), allowed);
    assert_eq!(
        seen[0], seen[1],
        "the upstreams saw different requests or ids"
    );
    assert!(
        seen[0]
            .iter()
            .all(|(_, key_id, _)| key_id.as_deref() != Some("999"))
    );
    for (prefix, _, _) in &both {
        let keys = [&viewer, &runner, &editor, &revoked];
        no_key_in(&prefix.error_log(), &keys, "nginx's error log");
        let access = std::fs::read_to_string(prefix.path("logs/access.log")).unwrap_or_default();
        no_key_in(&access, &keys, "nginx's access log");
    }
    // The module's variables, in the documented log format.
    let access = std::fs::read_to_string(both[1].0.path("logs/access.log")).unwrap();
    assert!(
        access.contains("keyscope=allowed key=") && access.contains("keyscope=revoked-key key=-"),
        "{access}"
    );
}

/// `nginx -s reload` under traffic: new workers open their own handles,
/// the old ones close theirs and exit, and no request fails. The master
/// never opens one: it runs one thread, no policy engine.
#[test]
fn module_reload_under_traffic_fails_no_request_and_the_master_never_decides() {
    let (_sandbox, key, prefix) = viewer_world(Integration::Module, "snapshot = \"snapshot.ks\"\n");
    let (upstream, _) = upstream();
    let nginx = start(&prefix, &prefix.conf(), upstream);
    let threads = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|tasks| tasks.count())
            .unwrap_or(0)
    };
    assert_eq!(threads(nginx.child.id()), 1, "the master runs one thread");
    let mut before: Vec<u64> = workers(&nginx).into_keys().collect();

    // Each request on a connection of its own: what is counted is a failed
    // decision, not a kept-alive connection a reload closes.
    let traffic = Traffic::start(nginx.addr, &key, false);
    for reload in 1..=3 {
        traffic.wait_for_more("traffic before the reload");
        let status = Command::new(nginx_binary())
            .arg("-p")
            .arg(format!("{}/", prefix.dir.display()))
            .arg("-c")
            .arg(prefix.path("nginx.conf"))
            .args(["-s", "reload"])
            .status()
            .unwrap();
        assert!(status.success());
        // New workers, each with its handle; the old ones gone.
        let mut now = Vec::new();
        wait_until(30, &format!("reload {reload}: two new workers"), || {
            now = worker_pids(nginx.child.id());
            now.len() == 2 && now.iter().all(|pid| !before.contains(pid))
        });
        until_both(&nginx, "the new workers deciding", |status| {
            status["generation"] == 1
        });
        assert_eq!(threads(nginx.child.id()), 1, "the master runs one thread");
        before = now;
    }
    traffic.wait_for_more("traffic after the reloads");
    let (sent, failed) = traffic.stop();
    eprintln!("module: 3 reloads under {sent} requests, {failed} failed");
    assert_eq!(failed, 0);
    let log = prefix.error_log();
    assert!(!log.contains("exited on signal"), "{log}");
    no_key_in(&log, &[&key], "nginx's error log");
}

/// The pids of `master`'s children: nginx's workers (and, briefly after a
/// reload, the ones shutting down).
fn worker_pids(master: u32) -> Vec<u64> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let ppid = status
            .lines()
            .find_map(|line| line.strip_prefix("PPid:"))
            .map(str::trim);
        if ppid == Some(&master.to_string())
            && let Ok(pid) = entry.file_name().to_string_lossy().parse()
        {
            pids.push(pid);
        }
    }
    pids
}

/// What an attacker tried against the module: a configuration error full
/// of control bytes shown at the status location (it overflowed a buffer),
/// subrequests into a `keyscope on` location (nginx runs no access handler
/// for them), id headers spelt with underscores, and a fragment in the
/// target. Each is refused, and no worker dies.
#[test]
fn module_subrequests_underscores_and_odd_errors_fail_closed() {
    let (_sandbox, key, prefix) = viewer_world(Integration::Module, "snapshot = \"snapshot.ks\"\n");
    let (upstream, seen) = upstream();
    // The documented configuration, plus what an operator might add.
    let conf = prefix.conf().replacen(
        "    server {\n",
        "    underscores_in_headers on;\n\n    server {\n\
         \x20       location /prot/ { auth_request /_check; proxy_pass http://platform_api; }\n\
         \x20       location = /_check { internal; keyscope on; proxy_pass http://platform_api; }\n",
        1,
    );
    let nginx = start(&prefix, &conf, upstream);

    // A subrequest to a keyscope location is denied: auth_request fails
    // closed, and nothing reaches the upstream.
    let (status, _, _) = ask_raw(nginx.addr, "GET /prot/secret HTTP/1.1\r\n");
    assert_eq!(status, 403);
    assert!(
        seen.lock().unwrap().is_empty(),
        "{:?}",
        seen.lock().unwrap()
    );
    assert!(
        prefix
            .error_log()
            .contains("a subrequest to \"/_check\" is denied")
    );

    // Id headers in any spelling carry keyscope's ids, never the client's.
    let (status, _, _) = ask_raw(
        nginx.addr,
        &format!(
            "GET /api/v2/apps/acme/agents HTTP/1.1\r\nx-api-key: {key}\r\n\
             X_Keyscope_Key_Id: 999\r\nx_keyscope_scope_id: 998\r\n"
        ),
    );
    assert_eq!(status, 200);
    let (_, key_id, scope_id) = seen.lock().unwrap().last().cloned().unwrap();
    assert!(
        !key_id.as_deref().unwrap().contains("999")
            && !scope_id.as_deref().unwrap().contains("998"),
        "{key_id:?} {scope_id:?}"
    );
    // A second key under an underscore spelling is a second key.
    let (status, _, body) = ask_raw(
        nginx.addr,
        &format!(
            "GET /api/v2/apps/acme/agents HTTP/1.1\r\nx-api-key: {key}\r\nx_api_key: {key}x\r\n"
        ),
    );
    assert_eq!(
        (status, body.contains("malformed-key")),
        (401, true),
        "{body}"
    );
    // A fragment is never part of a request: no route.
    let (status, _, _) = ask_raw(
        nginx.addr,
        &format!(
            "GET /api/v2/apps/acme/agents#/../../globex/agents HTTP/1.1\r\nx-api-key: {key}\r\n"
        ),
    );
    assert_eq!(status, 403);
    drop(nginx);

    // An error full of control bytes, at the status location: escaped
    // JSON, 503, and the workers live on; the log holds no control byte.
    std::fs::write(
        prefix.path("keyscope.toml"),
        format!("snapshot = \"{}\"\n", "\\u0001".repeat(1000)),
    )
    .unwrap();
    let nginx = start(&prefix, &prefix.conf(), upstream);
    for _ in 0..6 {
        let (status, _, body) = ask_raw(nginx.addr, "GET /_keyscope/status HTTP/1.1\r\n");
        assert_eq!(status, 503, "{body}");
        let value: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["open"], false, "{value}");
    }
    let log = prefix.error_log();
    assert!(!log.contains("exited on signal"), "{log}");
    assert!(!log.contains('\u{1}'), "a control byte in the error log");
}
