//! keyscope as a hostile or careless user tries it: idle connections,
//! duplicate credentials, odd path segments, undeliverable secrets, special
//! files, keys where field names go, and bad flags and files. One test per
//! defect that issue 11 names; each failed before its fix.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::serve::check_request;
use crate::support::{Sandbox, Server, World, http_client};

const AGENT: &str = "/api/v2/apps/acme/agents/a1";

/// Sends raw HTTP/1.1 bytes; the status and the body.
fn raw(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned());
    (status, body)
}

/// `/auth` as nginx asks it, with `headers` given as raw lines.
fn nginx_auth(server: &Server, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = format!(
        "GET /auth HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Original-Method: GET\r\n\
         X-Original-URI: {AGENT}\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    raw(server.http, &request)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One gRPC check; its rpc status code (0 is OK) and its denial body.
fn grpc_check(
    server: &Server,
    request: envoy_types::pb::envoy::service::auth::v3::CheckRequest,
) -> (i32, String) {
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    runtime().block_on(async {
        let mut client = AuthorizationClient::connect(format!("http://{}", server.grpc))
            .await
            .unwrap();
        let response = client.check(request).await.unwrap().into_inner();
        let body = match response.http_response {
            Some(HttpResponse::DeniedResponse(denied)) => denied.body,
            _ => String::new(),
        };
        (response.status.map_or(-1, |s| s.code), body)
    })
}

#[test]
fn idle_grpc_connections_cannot_starve_the_http_door() {
    let world = World::new();
    let config = world.sandbox.path("serve.toml");
    std::fs::write(
        &config,
        "[limits]\nidle_timeout_ms = 1500\ngrpc_keepalive_ms = 500\n",
    )
    .unwrap();
    let server = world.sandbox.serve_under(
        Some("ulimit -n 256"),
        &["--config", config.to_str().unwrap()],
    );
    // More idle sockets than the server has descriptors.
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(server.grpc).unwrap())
        .collect();
    let http = http_client();
    for _ in 0..5 {
        let mut response = http
            .post(server.url("/v1/check"))
            .header("content-type", "application/json")
            .send(json!({ "key": world.editor, "app": "acme", "op": "agents.get" }).to_string())
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value =
            serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(body["allow"], true);
    }
    // The idle ones are closed by the server, so a real gRPC client gets in
    // while the test still holds all 300 open on its side.
    let (code, _) = grpc_check(
        &server,
        check_request("GET", AGENT, &[("x-api-key", &world.editor)]),
    );
    assert_eq!(code, 0);
    // The server may say its HTTP/2 settings, then closes the connection.
    let mut first = &idle[0];
    first
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut said = Vec::new();
    first
        .read_to_end(&mut said)
        .expect("an idle gRPC connection is closed by the server");
    let stderr = std::fs::read_to_string(world.sandbox.path("serve.stderr")).unwrap();
    assert!(!stderr.contains("accept failed"), "{stderr}");
    drop(idle);
}

#[test]
fn more_than_one_credential_is_malformed_at_every_door() {
    let world = World::new();
    let server = world.sandbox.serve(&[]);
    let (editor, other, revoked) = (&world.editor, &world.viewer, &world.revoked);
    let bearer = |key: &str| format!("Bearer {key}");
    let jwt = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJl";
    let joined = format!("{editor}, {revoked}");
    let ambiguous: Vec<Vec<(&str, String)>> = vec![
        vec![
            ("x-api-key", editor.clone()),
            ("x-api-key", revoked.clone()),
        ],
        vec![
            ("x-api-key", revoked.clone()),
            ("x-api-key", editor.clone()),
        ],
        vec![("x-api-key", joined.clone())],
        vec![
            ("x-api-key", editor.clone()),
            ("authorization", bearer(other)),
        ],
        vec![
            ("x-api-key", editor.clone()),
            ("authorization", bearer(revoked)),
        ],
        vec![
            ("authorization", bearer(editor)),
            ("authorization", bearer(other)),
        ],
    ];
    for headers in &ambiguous {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let (status, body) = nginx_auth(&server, &headers);
        assert_eq!(status, 401, "{headers:?}");
        assert!(body.contains("malformed-key"), "{headers:?}: {body}");
        // Envoy's HTTP ext_authz door.
        let mut request =
            format!("GET /ext_authz{AGENT} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        for (name, value) in &headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        let (status, body) = raw(server.http, &format!("{request}\r\n"));
        assert_eq!(status, 401, "envoy {headers:?}");
        assert!(body.contains("malformed-key"), "{body}");
    }
    // A JWT for the upstream beside the API key is the upstream's business.
    let (status, _) = nginx_auth(&server, &[("x-api-key", editor), ("authorization", jwt)]);
    assert_eq!(status, 200);
    // One key in the body of /v1/check and another in its headers.
    let body = json!({ "key": editor, "app": "acme", "op": "agents.get" }).to_string();
    let (status, answer) = raw(
        server.http,
        &format!(
            "POST /v1/check HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-api-key: {revoked}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 200);
    assert!(answer.contains("\"reason\":\"malformed-key\""), "{answer}");

    // gRPC: Envoy joins repeated headers with `,` in `headers`, and sends
    // one entry per copy in `header_map`.
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    let unauthenticated = 16;
    let (code, body) = grpc_check(
        &server,
        check_request("GET", AGENT, &[("x-api-key", &joined)]),
    );
    assert_eq!(code, unauthenticated);
    assert!(body.contains("malformed-key"), "{body}");
    let (code, _) = grpc_check(
        &server,
        check_request(
            "GET",
            AGENT,
            &[("x-api-key", editor), ("authorization", &bearer(other))],
        ),
    );
    assert_eq!(code, unauthenticated);
    let mut raw_copies = check_request("GET", AGENT, &[]);
    let http = raw_copies
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .unwrap();
    http.header_map = Some(HeaderMap {
        headers: [editor, revoked]
            .iter()
            .map(|key| HeaderValue {
                key: "x-api-key".to_owned(),
                raw_value: key.as_bytes().to_vec(),
                ..HeaderValue::default()
            })
            .collect(),
    });
    let (code, body) = grpc_check(&server, raw_copies);
    assert_eq!(code, unauthenticated);
    assert!(body.contains("malformed-key"), "{body}");
    let (code, _) = grpc_check(
        &server,
        check_request(
            "GET",
            AGENT,
            &[("x-api-key", editor), ("authorization", jwt)],
        ),
    );
    assert_eq!(code, 0);
}

#[test]
fn placeholders_refuse_backslashes_path_parameters_and_white_space() {
    let world = World::new();
    let server = world.sandbox.serve(&[]);
    let http = http_client();
    for path in [
        "/api/v2/apps/acme/agents/x\\..\\..\\..\\other\\agents\\5",
        "/api/v2/apps/acme/agents/..;",
        "/api/v2/apps/acme/agents/a;x=1",
        "/api/v2/apps/acme/agents/a b",
        "/api/v2/apps/acme/agents/a\tb",
    ] {
        let mut response = http
            .post(server.url("/v1/check"))
            .header("content-type", "application/json")
            .send(json!({ "key": world.editor, "method": "PUT", "path": path }).to_string())
            .unwrap();
        let body: Value =
            serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(body["allow"], false, "{path}");
        assert_eq!(body["reason"], "unknown-operation", "{path}");
    }
    let (code, _) = grpc_check(
        &server,
        check_request(
            "PUT",
            "/api/v2/apps/acme/agents/..;",
            &[("x-api-key", &world.editor)],
        ),
    );
    assert_eq!(code, 7, "PERMISSION_DENIED");
}

/// Runs `keyscope key create` for `name` with stdout set up by `stdout`; the
/// exit code and stderr.
fn create_key_into(sandbox: &Sandbox, name: &str, json: bool, stdout: Stdio) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyscope"));
    command
        .env_remove("KEYSCOPE_STORE")
        .arg("--store")
        .arg(sandbox.store())
        .args(["key", "create", "--scope", "acme/editor", "--name", name])
        .args(json.then_some("--json"))
        .stdout(stdout)
        .stderr(Stdio::piped());
    let output = command.output().unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn key_names(sandbox: &Sandbox) -> Vec<String> {
    let keys = sandbox.json(["key", "list"]);
    keys.as_array()
        .unwrap()
        .iter()
        .map(|key| key["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn no_key_is_left_live_when_its_secret_cannot_be_delivered() {
    let world = World::new();
    let sandbox = &world.sandbox;
    // A pipe whose reader is already gone.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let (code, stderr) = create_key_into(sandbox, "piped", false, writer.into());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("could not be delivered"), "{stderr}");
    // A full disk.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let (code, stderr) = create_key_into(sandbox, "full", true, full.into());
    assert_eq!(code, 2, "{stderr}");
    let error: Value = serde_json::from_str(stderr.trim()).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not created"),
        "{stderr}"
    );
    // Nowhere at all: /dev/null, and a closed stdout (which the process
    // sees as /dev/null).
    let (code, stderr) = create_key_into(sandbox, "null", false, Stdio::null());
    assert_eq!(code, 2, "{stderr}");
    let output = Command::new("sh")
        .arg("-c")
        .arg("exec \"$0\" \"$@\" >&-")
        .arg(env!("CARGO_BIN_EXE_keyscope"))
        .arg("--store")
        .arg(sandbox.store())
        .args([
            "key",
            "create",
            "--scope",
            "acme/editor",
            "--name",
            "closed",
        ])
        .env_remove("KEYSCOPE_STORE")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let names = key_names(sandbox);
    for name in ["piped", "full", "null", "closed"] {
        assert!(
            !names.iter().any(|n| n == name),
            "`{name}` was left: {names:?}"
        );
    }
    // And a key that is delivered is kept.
    let (code, stderr) = create_key_into(sandbox, "seen", true, Stdio::piped());
    assert_eq!(code, 0, "{stderr}");
    assert!(key_names(sandbox).iter().any(|n| n == "seen"));
}

#[test]
fn output_files_never_replace_a_symlink_fifo_or_directory() {
    let sandbox = Sandbox::new();
    sandbox.scope("acme", "editor", "edit", "run");
    let target = sandbox.path("target");
    std::fs::write(&target, b"keep me").unwrap();
    let link = sandbox.path("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let fifo = sandbox.path("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let dir = sandbox.path("dir");
    std::fs::create_dir(&dir).unwrap();
    for (path, what) in [
        (&link, "symbolic link"),
        (&fifo, "FIFO"),
        (&dir, "directory"),
    ] {
        for args in [["snapshot", "export", "-o"], ["policy", "export", "-o"]] {
            let output = sandbox.keyscope(args).arg(path).output().unwrap();
            assert_eq!(output.status.code(), Some(2), "{args:?} {what}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains(what), "{stderr}");
        }
    }
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    // A regular file is replaced, `-` is stdout.
    sandbox
        .keyscope(["snapshot", "export", "-o"])
        .arg(&target)
        .assert()
        .success();
    assert_ne!(std::fs::read(&target).unwrap(), b"keep me");
    let output = sandbox
        .keyscope(["policy", "export", "-o", "-"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(output.stdout.starts_with(b"\0asm"));
    // A replaced file keeps its permission bits, never setuid or setgid,
    // and (for root, who can) its owner and group.
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o6750)).unwrap();
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    if root {
        std::os::unix::fs::chown(&target, Some(65534), Some(65534)).unwrap();
    }
    sandbox
        .keyscope(["snapshot", "export", "-o"])
        .arg(&target)
        .assert()
        .success();
    let meta = std::fs::metadata(&target).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o750);
    if root {
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    }
}

#[test]
fn policy_files_are_read_only_when_regular_and_within_the_cap() {
    let world = World::new();
    let sandbox = &world.sandbox;
    let config = sandbox.path("serve.toml");
    std::fs::write(&config, "[limits]\nmax_policy_bytes = 4096\n").unwrap();
    let fifo = sandbox.path("fifo.wasm");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let big = sandbox.path("big.wasm");
    std::fs::write(&big, vec![0u8; 5000]).unwrap();
    let server = sandbox.serve(&["--config", config.to_str().unwrap()]);
    let http = http_client();
    let reload = |path: &str| {
        let mut response = http
            .post(server.admin_url("/admin/policy"))
            .header("authorization", &format!("Bearer {}", server.admin_token))
            .header("content-type", "application/json")
            .send(json!({ "path": path }).to_string())
            .unwrap();
        let body: Value =
            serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        (response.status().as_u16(), body)
    };
    for (path, why) in [
        ("/dev/zero", "not a regular file"),
        (fifo.to_str().unwrap(), "not a regular file"),
        (big.to_str().unwrap(), "limit of 4096"),
        ("/nonexistent/policy.wasm", "No such file"),
    ] {
        let (code, body) = reload(path);
        assert_eq!(code, 422, "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{path}: {message}");
    }
    let mut response = http
        .get(server.admin_url("/admin/status"))
        .header("authorization", &format!("Bearer {}", server.admin_token))
        .call()
        .unwrap();
    let status: Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(status["stats"]["swaps_refused"], 4, "{status}");
    let refusals = status["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|record| {
            record["outcome"]
                .as_str()
                .unwrap()
                .starts_with("refused at step `read`")
        })
        .count();
    assert_eq!(refusals, 4, "{status}");
    // At start, a special file is refused by name.
    let output = sandbox
        .keyscope(["serve", "--listen", "127.0.0.1:0", "--policy", "/dev/zero"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a regular file"));
}

#[test]
fn a_key_used_as_a_field_name_is_never_echoed() {
    let world = World::new();
    let key = &world.editor;
    let sandbox = &world.sandbox;
    let output = sandbox
        .keyscope(["eval", "--batch", "-"])
        .write_stdin(format!(
            "{{\"{key}\": 1, \"app\": \"acme\", \"op\": \"agents.get\"}}\n"
        ))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("batch line 1"), "{stderr}");
    assert!(!stderr.contains(&key[3..]), "{stderr}");
    let server = sandbox.serve(&[]);
    let http = http_client();
    let mut response = http
        .post(server.url("/v1/check"))
        .header("content-type", "application/json")
        .send(format!("{{\"{key}\": 1}}"))
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = response.body_mut().read_to_string().unwrap();
    assert!(!body.contains(&key[3..]), "{body}");
    let mut response = http
        .post(server.admin_url("/admin/scopes"))
        .header("authorization", &format!("Bearer {}", server.admin_token))
        .header("content-type", "application/json")
        .send(format!(
            "{{\"app\": \"acme\", \"name\": \"n\", \"{key}\": 1}}"
        ))
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = response.body_mut().read_to_string().unwrap();
    assert!(!body.contains(&key[3..]), "{body}");
}

#[test]
fn serve_loads_everything_before_it_says_listening() {
    let world = World::new();
    let sandbox = &world.sandbox;
    let loose = sandbox.path("loose-token");
    std::fs::write(&loose, "ksadmin_a-perfectly-long-token-0123").unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let short = sandbox.path("short-token");
    std::fs::write(&short, "short").unwrap();
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
    let junk = sandbox.path("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let config = sandbox.path("brace.toml");
    std::fs::write(&config, "envoy_path_prefix = \"/x{\"\n").unwrap();
    let zero = sandbox.path("zero.toml");
    std::fs::write(&zero, "[limits]\nmax_body_bytes = 0\n").unwrap();
    let huge = sandbox.path("huge.toml");
    std::fs::write(&huge, "[limits]\nmax_policy_memory_mib = 5000\n").unwrap();
    let admin = ["--admin-listen", "127.0.0.1:0", "--admin-token-file"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            [&admin[..], &[loose.to_str().unwrap()]].concat(),
            "open to group or others",
        ),
        (
            [&admin[..], &[short.to_str().unwrap()]].concat(),
            "shorter than 16 characters",
        ),
        (
            vec!["--policy", junk.to_str().unwrap()],
            "not a WebAssembly component",
        ),
        (
            vec!["--config", config.to_str().unwrap()],
            "envoy_path_prefix `/x{`",
        ),
        (
            vec!["--config", zero.to_str().unwrap()],
            "limits.max_body_bytes must be at least 1",
        ),
        (
            vec!["--config", huge.to_str().unwrap()],
            "limits.max_policy_memory_mib is 5000; a 32-bit policy cannot grow past 4096",
        ),
    ];
    for (args, why) in cases {
        let output = sandbox
            .keyscope(["serve", "--listen", "127.0.0.1:0"])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            output.stdout.is_empty(),
            "{args:?}: said {:?}",
            output.stdout
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
}

#[test]
fn ids_beyond_i64_are_simply_not_found() {
    let world = World::new();
    let sandbox = &world.sandbox;
    for id in ["9223372036854775808", "18446744073709551615"] {
        let output = sandbox.keyscope(["key", "revoke", id]).output().unwrap();
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr.trim(),
            format!("keyscope: error: no key with id `{id}`")
        );
        let output = sandbox.keyscope(["scope", "show", id]).output().unwrap();
        assert_eq!(output.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&output.stderr).contains("no scope"));
    }
    let server = sandbox.serve(&[]);
    let http = http_client();
    let bearer = format!("Bearer {}", server.admin_token);
    for (method, path) in [
        ("POST", "/admin/keys/9223372036854775808/revoke"),
        ("POST", "/admin/keys/99999999999999999999999/revoke"),
        ("GET", "/admin/scopes/9223372036854775808"),
    ] {
        let mut response = http
            .run(
                ureq::http::Request::builder()
                    .method(method)
                    .uri(server.admin_url(path))
                    .header("authorization", &bearer)
                    .body(())
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: Value =
            serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(body["error"]["kind"], "not-found", "{path}: {body}");
    }
}

#[test]
fn the_admin_api_refuses_alike_logs_counts_and_rate_limits_failures() {
    let world = World::new();
    let server = world.sandbox.serve(&[]);
    let http = http_client();
    let get = |path: &str, token: Option<&str>| {
        let mut request = http.get(server.admin_url(path));
        if let Some(token) = token {
            request = request.header("authorization", &format!("Bearer {token}"));
        }
        let mut response = request.call().unwrap();
        (
            response.status().as_u16(),
            response.body_mut().read_to_string().unwrap(),
        )
    };
    // A known route of the API and an unknown one: the same 401.
    let known = get("/admin/status", None);
    assert_eq!(known.0, 401);
    for path in ["/admin/nonexistent", "/admin/keys/1/nothing", "/admin"] {
        assert_eq!(get(path, None), known, "{path}");
    }
    // Every other path is the console's: a page in words, which needs no
    // credential, so it is no failed authentication however often.
    for _ in 0..20 {
        let (code, page) = get("/nothing-here", None);
        assert_eq!(code, 404);
        assert!(page.contains("Page not found"), "{page}");
    }
    // A trailing slash is redirected away (never off this console), and a
    // console page carries its CSP.
    let browser: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    for (path, expected) in [
        ("/apps/", Some("/apps")),
        ("/audit/?x=1", Some("/audit?x=1")),
        ("//evil.example/", None),
        ("/nothing-here/", Some("/nothing-here")),
    ] {
        let response = browser.get(server.admin_url(path)).call().unwrap();
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        match expected {
            Some(target) => {
                assert_eq!(response.status(), 308, "{path}");
                assert_eq!(location.as_deref(), Some(target), "{path}");
            }
            None => {
                assert_eq!(response.status(), 404, "{path}");
                assert_eq!(location, None, "{path}");
            }
        }
        assert!(
            response.headers().get("content-security-policy").is_some(),
            "{path}"
        );
    }
    let wrong = "ksadmin_wrong-token-0000000000000000";
    // Ten failures in all (four above, six here), then 429 for a wrong
    // token, while the valid one still gets in: only failures are limited.
    for _ in 0..6 {
        assert_eq!(get("/admin/status", Some(wrong)).0, 401);
    }
    let (code, body) = get("/admin/status", Some(wrong));
    assert_eq!(code, 429, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["kind"], "rate-limited");
    let (code, body) = get("/admin/status", Some(&server.admin_token));
    assert_eq!(code, 200, "{body}");
    // Counted in a metric; logged without the token.
    let metrics = http
        .get(server.url("/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let failures: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("keyscope_admin_auth_failures_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(failures, 11, "{metrics}");
    let stderr = std::fs::read_to_string(world.sandbox.path("serve.stderr")).unwrap();
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(!stderr.contains("wrong-token"), "{stderr}");
}

#[test]
fn files_keyscope_creates_are_readable_by_their_owner_only() {
    let world = World::new();
    let sandbox = &world.sandbox;
    let server = sandbox.serve(&[]);
    let response = http_client()
        .post(server.url("/v1/check"))
        .header("content-type", "application/json")
        .send(json!({ "key": world.editor, "app": "acme", "op": "agents.get" }).to_string())
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut server = server;
    server.stop();
    for name in [
        "keyscope.db",
        "keyscope.db-wal",
        "keyscope.db-shm",
        "decisions.jsonl",
    ] {
        let path = sandbox.path(name);
        if name.ends_with("-wal") || name.ends_with("-shm") {
            // SQLite removes these on a clean close; check them if present.
            if !path.exists() {
                continue;
            }
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}: {mode:o}");
    }
    // A device as the store is refused, and no journal lands beside it.
    let output = Command::new(env!("CARGO_BIN_EXE_keyscope"))
        .args(["--store", "/dev/null", "scope", "list"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a regular file"));
    for stray in ["/dev/null-journal", "/dev/null-wal", "/dev/null-shm"] {
        assert!(!std::path::Path::new(stray).exists(), "{stray}");
    }
}

#[test]
fn errors_have_one_json_shape_and_say_each_cause_once() {
    let world = World::new();
    let sandbox = &world.sandbox;
    let output = sandbox
        .keyscope(["--json", "scope", "show", "nope/nope"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let error: Value = serde_json::from_slice(&output.stderr).unwrap();
    assert_eq!(error["error"]["kind"], "not-found", "{error}");
    assert_eq!(error["error"]["message"], "no scope `nope/nope`");
    let output = sandbox
        .keyscope(["--json", "scope", "frobnicate"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let error: Value = serde_json::from_slice(&output.stderr).unwrap();
    assert_eq!(error["error"]["kind"], "usage", "{error}");
    // A name with control characters is refused, and not echoed raw.
    let output = sandbox
        .keyscope(["scope", "create", "--app", "a\u{1b}[31mred", "--name", "x"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
    assert!(stderr.contains("\\u{1b}[31mred"), "{stderr}");

    // The admin API: errors of its own and of the framework, one shape.
    let server = sandbox.serve(&[]);
    let http = http_client();
    let bearer = format!("Bearer {}", server.admin_token);
    // One byte over the 16 KiB body limit: the server reads it all before it
    // refuses, so it never resets a client still sending.
    let body = format!("{{\"app\":\"{}\"}}", "a".repeat(16 * 1024 - 9));
    assert_eq!(body.len(), 16 * 1024 + 1);
    let (status, answer) = raw(
        server.admin,
        &format!(
            "POST /admin/scopes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             authorization: {bearer}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 413, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["error"]["kind"], "too-large", "{answer}");
    let cases: [(&str, Option<&str>, &str, u16, &str); 3] = [
        ("/admin/scopes", None, "{}", 415, "unsupported-media-type"),
        (
            "/admin/scopes",
            Some("application/json"),
            "{",
            400,
            "invalid-input",
        ),
        (
            "/admin/scopes",
            Some("application/json"),
            "{\"app\":1}",
            400,
            "invalid-input",
        ),
    ];
    for (path, content_type, body, status, kind) in cases {
        let mut request = http
            .post(server.admin_url(path))
            .header("authorization", &bearer);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let mut response = request.send(body).unwrap();
        assert_eq!(response.status(), status, "{body:.40}");
        let answer: Value =
            serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(answer["error"]["kind"], kind, "{answer}");
        assert!(answer["error"]["message"].is_string(), "{answer}");
    }
    let mut response = http
        .delete(server.admin_url("/admin/status"))
        .header("authorization", &bearer)
        .call()
        .unwrap();
    assert_eq!(response.status(), 405);
    let answer: Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(answer["error"]["kind"], "method-not-allowed", "{answer}");
}

/// Whether `key` may list acme's agents, by `/v1/check`.
fn allows(server: &Server, key: &str) -> bool {
    server.check(&json!({ "key": key, "app": "acme", "op": "agents.list" }))["allow"] == true
}

#[test]
fn an_outside_reader_of_the_sqlite_store_never_hides_a_revocation_from_serve() {
    // POSIX locks: had serve ever closed a descriptor of its database (it
    // once read the header again on each open), it would have lost its
    // locks; the next outside process to close the database would then
    // delete the WAL under serve, which would never see another change.
    let s = Sandbox::new();
    s.scope("acme", "viewer", "view", "");
    let (id, key) = s.key("acme/viewer", "k");
    let server = s.serve(&[]);
    assert!(allows(&server, &key));
    // An operator's read-only query, from another program.
    let status = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             c.execute('SELECT count(*) FROM keys').fetchone()\n\
             c.close()",
        ])
        .arg(s.store())
        .status()
        .unwrap();
    assert!(status.success());
    s.keyscope(["key", "revoke", &id.to_string()])
        .assert()
        .success();
    crate::support::wait_until(30, "serve denying the revoked key", || {
        !allows(&server, &key)
    });
    let (_, fresh) = s.key("acme/viewer", "fresh");
    crate::support::wait_until(30, "serve allowing a key made after", || {
        allows(&server, &fresh)
    });
}
