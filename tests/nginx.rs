//! A real nginx on loopback, with `auth_request` to `keyscope serve` in
//! front of a tiny upstream that records what reaches it.
//!
//! nginx comes from the Debian package (`.ci/run` installs it). Without it
//! these tests fail and say so.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{Sandbox, Server, http_client};

/// The nginx site keyscope documents (see docs/nginx.conf), written for a
/// test: one process, everything under `dir`.
fn nginx_conf(
    dir: &Path,
    listen: SocketAddr,
    keyscope: SocketAddr,
    upstream: SocketAddr,
) -> String {
    let site = std::fs::read_to_string(crate::support::fixtures().join("../../docs/nginx.conf"))
        .unwrap()
        .replace("127.0.0.1:8080", &keyscope.to_string())
        .replace("127.0.0.1:9000", &upstream.to_string())
        .replace("listen 80;", &format!("listen {listen};"));
    let dir = dir.display();
    format!(
        "daemon off;\nmaster_process off;\npid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log warn;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
           fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
         {site}\n}}\n"
    )
}

/// What the upstream saw: request lines, and the key id and scope id
/// headers of each (every copy, joined by `,`).
pub(crate) type Seen = Arc<Mutex<Vec<(String, Option<String>, Option<String>)>>>;

/// A minimal HTTP/1 upstream: answers 200 and records each request.
pub(crate) fn upstream() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let (mut key_id, mut scope_id) = (None, None);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                // Every copy, under any spelling an upstream might read as
                // the header (`_` for `-`, as CGI names do), joined by `,`.
                if let Some((name, value)) = line.split_once(':') {
                    let name = name.to_ascii_lowercase().replace('_', "-");
                    let slot = match name.as_str() {
                        "x-keyscope-key-id" => &mut key_id,
                        "x-keyscope-scope-id" => &mut scope_id,
                        _ => continue,
                    };
                    let value = value.trim();
                    *slot = Some(match slot.take() {
                        Some(before) => format!("{before},{value}"),
                        None => value.to_owned(),
                    });
                }
            }
            record
                .lock()
                .unwrap()
                .push((request_line.trim().to_owned(), key_id, scope_id));
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nupstream",
            );
        }
    });
    (addr, seen)
}

struct Nginx {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_nginx(sandbox: &Sandbox, server: &Server, upstream: SocketAddr) -> Nginx {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .expect("nginx is not installed: `apt-get install nginx` (.ci/run does this)");
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let conf = sandbox.path("nginx.conf");
    std::fs::write(
        &conf,
        nginx_conf(sandbox.dir.path(), addr, server.http, upstream),
    )
    .unwrap();
    let child = Command::new(nginx)
        .arg("-p")
        .arg(sandbox.dir.path())
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        let log = std::fs::read_to_string(sandbox.path("nginx-error.log")).unwrap_or_default();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nginx did not start: {log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Nginx { child, addr }
}

#[test]
fn nginx_auth_request_lets_through_only_what_keyscope_allows() {
    let sandbox = Sandbox::new();
    sandbox.scope("acme", "viewer", "view", "run");
    sandbox.scope("globex", "editor", "edit", "");
    let (_, viewer) = sandbox.key("acme/viewer", "viewer");
    let (revoked_id, revoked) = sandbox.key("acme/viewer", "revoked");
    sandbox
        .keyscope(["key", "revoke", &revoked_id.to_string()])
        .assert()
        .success();
    let (_, other_app) = sandbox.key("globex/editor", "other");
    let server = sandbox.serve(&[]);
    let (upstream, seen) = upstream();
    let nginx = start_nginx(&sandbox, &server, upstream);
    let http = http_client();
    let ask = |method: &str, path: &str, key: Option<&str>| -> u16 {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", nginx.addr));
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        http.run(request.body(String::new()).unwrap())
            .unwrap()
            .status()
            .as_u16()
    };
    let cases = [
        ("GET", "/api/v2/apps/acme/agents", Some(&viewer), 200),
        (
            "GET",
            "/api/v2/apps/acme/agents/a1?full=1",
            Some(&viewer),
            200,
        ),
        (
            "POST",
            "/api/v2/apps/acme/environments/prod/runs/execute",
            Some(&viewer),
            200,
        ),
        ("GET", "/api/v2/apps/acme/agents", None, 401),
        ("GET", "/api/v2/apps/acme/agents", Some(&revoked), 401),
        ("GET", "/api/v2/apps/acme/agents", Some(&other_app), 403),
        ("DELETE", "/api/v2/apps/acme/agents/a1", Some(&viewer), 403),
        (
            "POST",
            "/api/v2/apps/acme/environments/prod/sessions",
            Some(&viewer),
            403,
        ),
        ("GET", "/api/v2/apps/acme/secrets", Some(&viewer), 403),
    ];
    let mut allowed = Vec::new();
    for (method, path, key, status) in cases {
        assert_eq!(
            ask(method, path, key.map(String::as_str)),
            status,
            "{method} {path}"
        );
        if status == 200 {
            allowed.push(format!("{method} {path} HTTP/1.1"));
        }
    }
    // Two copies of the key header, a live key and a revoked one in either
    // order: nginx passes both to keyscope, which denies them as malformed
    // whichever comes first, so the upstream never sees either.
    for (first, second) in [(&viewer, &revoked), (&revoked, &viewer)] {
        let mut stream = std::net::TcpStream::connect(nginx.addr).unwrap();
        write!(
            stream,
            "GET /api/v2/apps/acme/agents HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             x-api-key: {first}\r\nx-api-key: {second}\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    // The upstream saw exactly the allowed requests, each with the key id.
    let seen = seen.lock().unwrap().clone();
    let lines: Vec<&str> = seen.iter().map(|(line, _, _)| line.as_str()).collect();
    assert_eq!(lines, allowed);
    assert!(
        seen.iter()
            .all(|(_, key_id, _)| key_id.as_deref() == Some("1")),
        "{seen:?}"
    );
}

#[test]
fn a_cli_revocation_is_denied_through_nginx_by_the_next_poll() {
    let sandbox = Sandbox::new();
    sandbox.scope("acme", "viewer", "view", "");
    let (key_id, key) = sandbox.key("acme/viewer", "viewer");
    let server = sandbox.serve(&[]);
    let (upstream, seen) = upstream();
    let nginx = start_nginx(&sandbox, &server, upstream);
    let http = http_client();
    let url = format!("http://{}/api/v2/apps/acme/agents", nginx.addr);
    let status = || -> u16 {
        http.get(&url)
            .header("x-api-key", &key)
            .call()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(status(), 200);
    sandbox
        .keyscope(["key", "revoke", &key_id.to_string()])
        .assert()
        .success();
    let returned = Instant::now();
    while status() != 401 {
        assert!(
            returned.elapsed() < crate::serve::FRESHNESS_DEADLINE,
            "still allowed long after `keyscope key revoke` returned"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "denied through nginx {:?} after the revocation",
        returned.elapsed()
    );
    let before = seen.lock().unwrap().len();
    assert_eq!(status(), 401);
    assert_eq!(
        seen.lock().unwrap().len(),
        before,
        "a denied request reached the upstream"
    );
}

#[test]
fn the_platforms_remaining_runtime_routes_go_through_nginx() {
    let sandbox = Sandbox::new();
    sandbox.scope(
        "acme",
        "runner",
        "none",
        "run,session-create,document-upload",
    );
    sandbox.scope("acme", "terminator", "full", "session-terminate");
    let (_, runner) = sandbox.key("acme/runner", "runner");
    let (_, terminator) = sandbox.key("acme/terminator", "terminator");
    let server = sandbox.serve(&[]);
    let (upstream, seen) = upstream();
    let nginx = start_nginx(&sandbox, &server, upstream);
    let http = http_client();
    let ask = |method: &str, path: &str, key: &str| -> u16 {
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", nginx.addr))
            .header("x-api-key", key);
        http.run(request.body(String::new()).unwrap())
            .unwrap()
            .status()
            .as_u16()
    };
    const ENV: &str = "/api/v2/apps/acme/environments/prod";
    let routes = [
        ("POST", format!("{ENV}/runs/r-42/status")),
        ("GET", format!("{ENV}/sessions?sessionId=s-1")),
        ("GET", format!("{ENV}/sessions?sessionReference=ref-1")),
        ("GET", format!("{ENV}/sessions/list")),
        ("DELETE", format!("{ENV}/attachments/file-7")),
    ];
    let mut allowed = Vec::new();
    for (method, path) in &routes {
        // run, session-create and document-upload grant them ...
        assert_eq!(ask(method, path, &runner), 200, "{method} {path}");
        allowed.push(format!("{method} {path} HTTP/1.1"));
        // ... and Agents `full` with session-terminate does not.
        assert_eq!(ask(method, path, &terminator), 403, "{method} {path}");
    }
    let seen = seen.lock().unwrap().clone();
    let lines: Vec<&str> = seen.iter().map(|(line, _, _)| line.as_str()).collect();
    assert_eq!(
        lines, allowed,
        "the upstream saw exactly the allowed requests"
    );
}
