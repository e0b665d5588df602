//! `keyscope serve` as a proxy sees it: the real binary on loopback, asked
//! over real sockets by a tonic gRPC client and an HTTP client.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::HeaderMap as EnvoyHeaderMap;
use envoy_types::pb::envoy::config::core::v3::HeaderValue as EnvoyHeader;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use serde_json::{Value, json};

use crate::support::{Sandbox, Server, World, http_client};

const AGENT: &str = "/api/v2/apps/acme/agents/a1";
const AGENTS: &str = "/api/v2/apps/acme/agents";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub(crate) fn check_request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.to_owned(),
                    path: path.to_owned(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    ..HttpRequest::default()
                }),
                ..Request::default()
            }),
            ..AttributeContext::default()
        }),
    }
}

/// (rpc code, HTTP status Envoy would send, headers, body).
fn unpack(response: CheckResponse) -> (i32, u16, HashMap<String, String>, String) {
    let code = response.status.map_or(-1, |s| s.code);
    match response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            let headers = ok
                .headers
                .into_iter()
                .filter_map(|h| h.header)
                .map(|h| (h.key, h.value))
                .collect();
            (code, 200, headers, String::new())
        }
        Some(HttpResponse::DeniedResponse(denied)) => {
            let headers = denied
                .headers
                .into_iter()
                .filter_map(|h| h.header)
                .map(|h| (h.key, h.value))
                .collect();
            let status = denied.status.map_or(0, |s| u16::try_from(s.code).unwrap());
            (code, status, headers, denied.body)
        }
        _ => panic!("no http_response in the check response"),
    }
}

/// Method, path, headers, the HTTP status expected and the reason.
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16, &'a str);

#[test]
fn grpc_check_answers_every_reason_with_status_headers_and_body() {
    let world = World::new();
    let server = world.sandbox.serve(&[]);
    let rt = runtime();
    let mut client = rt
        .block_on(AuthorizationClient::connect(format!(
            "http://{}",
            server.grpc
        )))
        .unwrap();
    let mut ask = |method: &str, path: &str, headers: &[(&str, &str)]| {
        let response = rt
            .block_on(client.check(check_request(method, path, headers)))
            .unwrap()
            .into_inner();
        unpack(response)
    };
    let bearer = format!("Bearer {}", world.editor);
    let cases: Vec<Case<'_>> = vec![
        (
            "GET",
            AGENT,
            vec![("x-api-key", &world.editor)],
            200,
            "allowed",
        ),
        (
            "PATCH",
            AGENT,
            vec![("authorization", &bearer)],
            200,
            "allowed",
        ),
        (
            "POST",
            "/api/v2/apps/acme/environments/prod/runs/execute?x=1",
            vec![("x-api-key", &world.editor)],
            200,
            "allowed",
        ),
        ("GET", AGENT, vec![], 401, "missing-key"),
        (
            "GET",
            AGENT,
            vec![("x-api-key", "ks_not-a-key")],
            401,
            "malformed-key",
        ),
        (
            "GET",
            AGENT,
            vec![("x-api-key", "ks_0000000000000000000000000000000000000A")],
            401,
            "malformed-key",
        ),
        (
            "GET",
            AGENT,
            vec![("x-api-key", &world.revoked)],
            401,
            "revoked-key",
        ),
        (
            "GET",
            AGENT,
            vec![("x-api-key", &world.other_app)],
            403,
            "wrong-app",
        ),
        (
            "DELETE",
            AGENT,
            vec![("x-api-key", &world.viewer)],
            403,
            "insufficient-permission",
        ),
        (
            "GET",
            "/api/v2/apps/acme/secrets",
            vec![("x-api-key", &world.viewer)],
            403,
            "unknown-operation",
        ),
        (
            "GET",
            "/api/v2/apps/acme/agents/../../globex/agents",
            vec![("x-api-key", &world.editor)],
            403,
            "unknown-operation",
        ),
    ];
    for (method, path, headers, status, reason) in cases {
        let (code, http_status, got_headers, body) = ask(method, path, &headers);
        let what = format!("{method} {path} {headers:?}");
        assert_eq!(http_status, status, "{what}");
        if status == 200 {
            assert_eq!(code, 0, "{what}");
            assert!(got_headers.contains_key("x-keyscope-key-id"), "{what}");
            assert!(got_headers.contains_key("x-keyscope-scope-id"), "{what}");
            continue;
        }
        assert_ne!(code, 0, "{what}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["reason"], reason, "{what}");
        for (_, value) in &headers {
            assert!(
                !body
                    .to_string()
                    .contains(value.trim_start_matches("Bearer ")),
                "{what}: the body holds the key"
            );
        }
        assert_eq!(
            got_headers.contains_key("www-authenticate"),
            status == 401,
            "{what}"
        );
        if reason == "insufficient-permission" {
            assert_eq!(body["required"], "agents:full");
        }
    }
    // The key's ids are those of the store.
    let (_, _, headers, _) = ask("GET", AGENT, &[("x-api-key", &world.viewer)]);
    assert_eq!(headers["x-keyscope-key-id"], "2");
    assert_eq!(headers["x-keyscope-scope-id"], "2");
    // Envoy's raw header map works too.
    let mut raw = check_request("GET", AGENTS, &[]);
    if let Some(http) = raw
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.header_map = Some(EnvoyHeaderMap {
            headers: vec![EnvoyHeader {
                key: "x-api-key".to_owned(),
                raw_value: world.viewer.as_bytes().to_vec(),
                ..EnvoyHeader::default()
            }],
        });
    }
    let response = rt.block_on(client.check(raw)).unwrap().into_inner();
    assert_eq!(unpack(response).1, 200);
    // A request without its HTTP attributes is refused by name.
    let status = rt
        .block_on(client.check(CheckRequest { attributes: None }))
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("attributes.request.http"));
}

#[test]
fn the_http_front_doors_agree_with_grpc() {
    let world = World::new();
    let server = world.sandbox.serve(&[]);
    let http = http_client();
    // nginx auth_request.
    let nginx = |method: &str, uri: &str, key: Option<&str>| {
        let mut request = http
            .get(server.url("/auth"))
            .header("X-Original-Method", method)
            .header("X-Original-URI", uri);
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        request.call().unwrap()
    };
    let response = nginx("GET", AGENT, Some(&world.viewer));
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-keyscope-key-id"], "2");
    assert_eq!(nginx("PUT", AGENT, Some(&world.viewer)).status(), 403);
    let mut missing = nginx("GET", AGENT, None);
    assert_eq!(missing.status(), 401);
    assert!(missing.headers().contains_key("www-authenticate"));
    let body: Value = missing.body_mut().read_json().unwrap();
    assert_eq!(
        body,
        json!({ "error": "unauthorized", "reason": "missing-key" })
    );
    // Envoy's HTTP ext_authz: the original request under the prefix.
    let envoy = http
        .delete(server.url(&format!("/ext_authz{AGENT}")))
        .header("authorization", &format!("Bearer {}", world.viewer))
        .call()
        .unwrap();
    assert_eq!(envoy.status(), 403);
    let envoy = http
        .get(server.url(&format!("/ext_authz{AGENTS}?page=2")))
        .header("x-api-key", &world.editor)
        .call()
        .unwrap();
    assert_eq!(envoy.status(), 200);
    // /v1/check, by operation and by route.
    let check = |body: Value| -> Value {
        http.post(server.url("/v1/check"))
            .send_json(body)
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap()
    };
    let by_op = check(json!({ "key": world.editor, "app": "acme", "op": "agents.update" }));
    assert_eq!(by_op["allow"], true);
    assert_eq!(by_op["reason"], "allowed");
    let by_route = check(json!({ "key": world.viewer, "method": "DELETE", "path": AGENT }));
    assert_eq!(by_route["reason"], "insufficient-permission");
    assert_eq!(by_route["required"], "agents:full");
    assert_eq!(by_route["op"], "agents.delete");
    assert_eq!(by_route["app"], "acme");
    let revoked = check(json!({ "key": world.revoked, "app": "acme", "op": "agents.get" }));
    assert_eq!(revoked["reason"], "revoked-key");
    // Operations surface.
    assert_eq!(
        http.get(server.url("/healthz")).call().unwrap().status(),
        200
    );
    let ready: Value = http
        .get(server.url("/readyz"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(ready["ready"], true);
    let metrics = http
        .get(server.url("/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    for needle in [
        "keyscope_decisions_total{front=\"nginx\",reason=\"allowed\"} 1",
        "keyscope_decisions_total{front=\"check\",reason=\"revoked-key\"} 1",
        "keyscope_decision_duration_seconds_bucket",
        "keyscope_generation 1",
        "keyscope_generation_info{module=\"",
        "keyscope_policy_errors_total 0",
    ] {
        assert!(metrics.contains(needle), "no `{needle}` in\n{metrics}");
    }
}

#[test]
fn the_admin_api_needs_its_token_and_its_own_listener() {
    let world = World::new();
    let server = world.sandbox.serve(&[]);
    let http = http_client();
    let status = |response: ureq::http::Response<ureq::Body>| response.status().as_u16();
    assert_eq!(
        status(http.get(server.admin_url("/admin/status")).call().unwrap()),
        401
    );
    let wrong = http
        .get(server.admin_url("/admin/scopes"))
        .header(
            "authorization",
            "Bearer ksadmin_wrong-token-0123456789abcdef",
        )
        .call()
        .unwrap();
    assert_eq!(status(wrong), 401);
    let key_as_token = http
        .get(server.admin_url("/admin/scopes"))
        .header("authorization", &format!("Bearer {}", world.editor))
        .call()
        .unwrap();
    assert_eq!(status(key_as_token), 401);
    // The public listener has no admin routes, token or not.
    let public = http
        .get(server.url("/admin/status"))
        .header("authorization", &format!("Bearer {}", server.admin_token))
        .call()
        .unwrap();
    assert_eq!(status(public), 404);
    // The token is stored hashed, never as text.
    let store = std::fs::read(world.sandbox.store()).unwrap();
    let token = server.admin_token.as_bytes();
    assert!(!store.windows(token.len()).any(|w| w == token));
}

#[test]
fn admin_changes_take_effect_before_the_response() {
    let world = World::new();
    let server = world.sandbox.serve(&[]);
    let http = http_client();
    let bearer = format!("Bearer {}", server.admin_token);
    let admin = |method: &str, path: &str, body: Option<Value>| -> (u16, Value) {
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(server.admin_url(path))
            .header("authorization", &bearer)
            .header("content-type", "application/json")
            .body(body.map(|b| b.to_string()).unwrap_or_default())
            .unwrap();
        let mut response = http.run(request).unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.body_mut().read_json().unwrap_or(Value::Null),
        )
    };
    let allowed = |key: &str, op: &str| -> bool {
        http.post(server.url("/v1/check"))
            .send_json(json!({ "key": key, "app": "umbrella", "op": op }))
            .unwrap()
            .body_mut()
            .read_json::<Value>()
            .unwrap()["allow"]
            == true
    };
    let (code, scope) = admin(
        "POST",
        "/admin/scopes",
        Some(json!({ "app": "umbrella", "name": "ops", "agents": "view" })),
    );
    assert_eq!(code, 201, "{scope}");
    let scope_id = scope["id"].as_u64().unwrap();
    let (code, created) = admin(
        "POST",
        "/admin/keys",
        Some(json!({ "scope": "umbrella/ops", "name": "bot" })),
    );
    assert_eq!(code, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    // No wait: the change is live when the response arrives.
    assert!(allowed(&key, "agents.get"));
    assert!(!allowed(&key, "agents.update"));
    let (code, updated) = admin(
        "PATCH",
        &format!("/admin/scopes/{scope_id}"),
        Some(json!({ "agents": "edit" })),
    );
    assert_eq!((code, updated["agents"].as_str()), (200, Some("edit")));
    assert!(allowed(&key, "agents.update"));
    let (code, listed) = admin("GET", "/admin/keys?scope=umbrella/ops", None);
    assert_eq!(code, 200);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(
        !listed.to_string().contains(&key),
        "a key list holds the secret"
    );
    let key_id = created["id"].as_u64().unwrap();
    let (code, revoked) = admin("POST", &format!("/admin/keys/{key_id}/revoke"), None);
    assert_eq!(code, 200, "{revoked}");
    assert!(revoked["revoked_at"].is_string());
    assert!(!allowed(&key, "agents.get"));
    // Errors say whose fault they are.
    assert_eq!(admin("GET", "/admin/scopes/999", None).0, 404);
    assert_eq!(
        admin(
            "POST",
            "/admin/scopes",
            Some(json!({ "app": "umbrella", "name": "ops" }))
        )
        .0,
        409
    );
    let (code, bad) = admin(
        "POST",
        "/admin/scopes",
        Some(json!({ "app": "umbrella", "name": "x", "agents": "admin" })),
    );
    assert_eq!(code, 400);
    assert!(bad["error"]["message"].as_str().unwrap().contains("admin"));
    let (code, deleted) = admin("DELETE", &format!("/admin/scopes/{scope_id}"), None);
    assert_eq!(code, 200, "{deleted}");
    let (code, scopes) = admin("GET", "/admin/scopes?app=umbrella", None);
    assert_eq!((code, scopes), (200, json!([])));
}

/// Polls `/auth` until `key` is denied; how long that took.
fn time_until_denied(server: &Server, key: &str) -> Duration {
    let http = http_client();
    let started = Instant::now();
    loop {
        let status = http
            .get(server.url("/auth"))
            .header("X-Original-Method", "GET")
            .header("X-Original-URI", AGENTS)
            .header("x-api-key", key)
            .call()
            .unwrap()
            .status();
        if status == 401 {
            return started.elapsed();
        }
        assert!(started.elapsed() < FRESHNESS_DEADLINE, "never denied");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// How long the freshness tests wait before they fail: a bound that only a
/// broken watcher misses, never a loaded machine. The figure itself (under
/// a second, one poll) is printed, and measured by `benches/serve/run.sh`.
pub(crate) const FRESHNESS_DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn a_cli_revocation_in_another_process_is_denied_by_the_next_poll() {
    let world = World::new();
    let server = world.sandbox.serve(&[]);
    for round in 0..5 {
        let (id, key) = world
            .sandbox
            .key("acme/viewer", &format!("short-lived-{round}"));
        // The new key is served once the watcher has seen it.
        let http = http_client();
        let started = Instant::now();
        while http
            .post(server.url("/v1/check"))
            .send_json(json!({ "key": key, "app": "acme", "op": "agents.get" }))
            .unwrap()
            .body_mut()
            .read_json::<Value>()
            .unwrap()["allow"]
            != true
        {
            assert!(
                started.elapsed() < FRESHNESS_DEADLINE,
                "a new key never served"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        world
            .sandbox
            .keyscope(["key", "revoke", &id.to_string()])
            .assert()
            .success();
        let took = time_until_denied(&server, &key);
        eprintln!("round {round}: a CLI revocation was denied after {took:?}");
    }
}

/// Sends raw bytes on a fresh connection; what came back before it closed.
fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn bad_and_slow_clients_get_a_clear_answer_and_others_are_still_served() {
    let world = World::new();
    let config = world.sandbox.path("serve.toml");
    std::fs::write(
        &config,
        "[limits]\nheader_timeout_ms = 300\nmax_body_bytes = 1024\nmax_header_bytes = 8192\n",
    )
    .unwrap();
    let server = world.sandbox.serve(&["--config", config.to_str().unwrap()]);
    let http = http_client();
    let served = || {
        http.get(server.url("/auth"))
            .header("X-Original-Method", "GET")
            .header("X-Original-URI", AGENTS)
            .header("x-api-key", &world.viewer)
            .call()
            .unwrap()
            .status()
            == 200
    };
    // A slow client: half a request line, then silence.
    let mut slow = TcpStream::connect(server.http).unwrap();
    slow.write_all(b"GET /auth HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert!(served(), "a slow client held up another");
    // Cut off by the server (end of stream), not by our own read timeout.
    slow.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut answer = Vec::new();
    slow.read_to_end(&mut answer)
        .expect("the slow client was not cut off");

    let check = |body: &str| {
        let mut response = http
            .post(server.url("/v1/check"))
            .header("content-type", "application/json")
            .send(body)
            .unwrap();
        (
            response.status().as_u16(),
            response.body_mut().read_to_string().unwrap(),
        )
    };
    let (code, body) = check("{\"key\": ");
    assert_eq!(code, 400);
    assert!(
        body.contains("expected {\\\"key\\\",\\\"app\\\",\\\"op\\\"}"),
        "{body}"
    );
    let (code, body) = check(r#"{"app":"acme","op":"agents.get","path":"/x"}"#);
    assert_eq!(code, 400);
    assert!(body.contains("not a mix"), "{body}");
    let (code, _) = check(r#"{"app":"acme","op":"agents.get","nonsense":1}"#);
    assert_eq!(code, 400);
    let (code, _) = check(&format!(r#"{{"app":"{}","op":"x"}}"#, "a".repeat(4096)));
    assert_eq!(code, 413);
    // nginx mode without the original request.
    let response = http.get(server.url("/auth")).call().unwrap();
    assert_eq!(response.status(), 400);
    // Two copies of the original request's URI: a client's own passed
    // through, refused rather than one picked.
    let answer = raw_exchange(
        server.http,
        b"GET /auth HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Original-Method: GET\r\n\
          X-Original-URI: /api/v2/apps/acme/agents\r\nX-Original-URI: /api/v2/apps/globex/agents\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("must come once each"), "{answer}");
    // Oversized headers, and bytes that are not HTTP.
    let huge = format!(
        "GET /auth HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let answer = raw_exchange(server.http, huge.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // At most 100 header fields, however small (hyper's limit, which the
    // README names): 100 pass, 101 are a 431.
    let fields = |n: usize| {
        let mut request = String::from("GET /auth HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        for i in 0..n - 2 {
            request.push_str(&format!("x-h{i}: 1\r\n"));
        }
        request + "\r\n"
    };
    let answer = raw_exchange(server.http, fields(100).as_bytes());
    assert!(answer.starts_with("HTTP/1.1 400"), "100 fields: {answer}");
    let answer = raw_exchange(server.http, fields(101).as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431"), "101 fields: {answer}");
    let answer = raw_exchange(server.http, b"\x16\x03\x01 not http at all\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // gRPC: garbage on the wire, and a message larger than allowed.
    let _ = raw_exchange(
        server.grpc,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\ngarbage garbage",
    );
    let rt = runtime();
    let mut client = rt
        .block_on(AuthorizationClient::connect(format!(
            "http://{}",
            server.grpc
        )))
        .unwrap();
    let big = "x".repeat(256 * 1024);
    let status = rt
        .block_on(client.check(check_request("GET", AGENTS, &[("x-big", &big)])))
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status}");
    let ok = rt
        .block_on(client.check(check_request(
            "GET",
            AGENTS,
            &[("x-api-key", &world.viewer)],
        )))
        .unwrap()
        .into_inner();
    assert_eq!(unpack(ok).1, 200);
    assert!(served());
}

#[test]
fn bad_configuration_is_refused_by_name() {
    let world = World::new();
    let run = |args: &[&str]| {
        let output = world.sandbox.keyscope(args).output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let config = world.sandbox.path("bad.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nmystery = 1\n").unwrap();
    let (code, stderr) = run(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("bad.toml") && stderr.contains("mystery"),
        "{stderr}"
    );
    std::fs::write(&config, "[headers]\napi_key = \"X Key\"\n").unwrap();
    let (code, stderr) = run(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("headers.api_key `X Key`"), "{stderr}");
    let (code, stderr) = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--policy",
        "/nonexistent.wasm",
    ]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("/nonexistent.wasm"), "{stderr}");
    let missing = Sandbox::new();
    let output = missing
        .keyscope(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no store at"));
}

#[test]
fn shutdown_drains_and_the_decision_log_never_holds_a_key() {
    let world = World::new();
    let mut server = world.sandbox.serve(&[]);
    let http = http_client();
    let keys = [
        &world.editor,
        &world.viewer,
        &world.revoked,
        &world.other_app,
    ];
    let mut decided = 0;
    for key in keys {
        for (method, path) in [("GET", AGENT), ("DELETE", AGENT), ("GET", "/nowhere")] {
            http.get(server.url("/auth"))
                .header("X-Original-Method", method)
                .header("X-Original-URI", path)
                .header("x-api-key", key.as_str())
                .call()
                .unwrap();
            decided += 1;
        }
    }
    // A request in flight when SIGTERM arrives is answered before the exit.
    let body = format!(
        r#"{{"key":"{}","app":"acme","op":"agents.get"}}"#,
        world.viewer
    );
    let mut in_flight = TcpStream::connect(server.http).unwrap();
    in_flight
        .write_all(
            format!(
                "POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{}",
                body.len(),
                &body[..10]
            )
            .as_bytes(),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    server.signal("TERM");
    std::thread::sleep(Duration::from_millis(200));
    in_flight.write_all(&body.as_bytes()[10..]).unwrap();
    in_flight
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    let _ = in_flight.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""allow":true"#), "{answer}");
    decided += 1;
    let status = server.stop();
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(world.sandbox.path("decisions.jsonl")).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), decided, "every decision is logged by shutdown");
    let allowed = &lines[0];
    assert_eq!(allowed["reason"], "allowed");
    assert_eq!(allowed["app"], "acme");
    assert_eq!(allowed["op"], "agents.get");
    assert_eq!(allowed["generation"], 1);
    assert!(allowed["key_id"].is_u64() && allowed["latency_us"].is_u64());
    for key in keys {
        assert!(!log.contains(key.as_str()), "the decision log holds a key");
        assert!(
            !log.contains(&key[3..]),
            "the decision log holds a key's body"
        );
    }
}

#[test]
fn module_swaps_by_sighup_and_admin_under_traffic_fail_no_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let world = World::new();
    let policy = world.sandbox.path("policy.wasm");
    let twin = crate::swap::twin_module();
    let embedded = keyscope_runtime::EMBEDDED_POLICY;
    std::fs::write(&policy, embedded).unwrap();
    let server = world.sandbox.serve(&["--policy", policy.to_str().unwrap()]);
    let stop = AtomicBool::new(false);
    let (served, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let http = http_client();
    let bearer = format!("Bearer {}", server.admin_token);
    let status = || -> Value {
        http.get(server.admin_url("/admin/status"))
            .header("authorization", &bearer)
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap()
    };
    let reload = || {
        let mut response = http
            .post(server.admin_url("/admin/policy"))
            .header("authorization", &bearer)
            .send("")
            .unwrap();
        (
            response.status().as_u16(),
            response.body_mut().read_json::<Value>().unwrap(),
        )
    };
    std::thread::scope(|threads| {
        for _ in 0..3 {
            threads.spawn(|| {
                let http = http_client();
                while !stop.load(Ordering::Relaxed) {
                    let url = server.url(&format!("/ext_authz{AGENT}"));
                    let allowed = http.get(&url).header("x-api-key", &world.editor).call();
                    let denied = http.delete(&url).header("x-api-key", &world.viewer).call();
                    for (response, expected) in [(allowed, 200), (denied, 403)] {
                        if response.is_ok_and(|r| r.status() == expected) {
                            served.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        // Stops the traffic however this thread ends, a failed assertion too.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        let generation = |status: &Value| status["generation"].as_u64().unwrap();
        let mut last = generation(&status());
        for round in 0..20 {
            let bytes: &[u8] = if round % 2 == 0 { &twin } else { embedded };
            std::fs::write(&policy, bytes).unwrap();
            if round % 4 < 2 {
                server.signal("HUP");
                let started = Instant::now();
                while generation(&status()) == last {
                    assert!(started.elapsed() < FRESHNESS_DEADLINE, "SIGHUP did nothing");
                    std::thread::sleep(Duration::from_millis(5));
                }
            } else {
                let (code, body) = reload();
                assert_eq!(code, 200, "{body}");
            }
            let now = status();
            assert_eq!(generation(&now), last + 1);
            let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
            assert_eq!(now["module"]["digest"], digest.as_str());
            last = generation(&now);
        }
        // A bad module is refused, says why, and the last good one serves on.
        std::fs::write(&policy, b"(module)").unwrap();
        let (code, body) = reload();
        assert_eq!(code, 422);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("refused at step `compile`"),
            "{body}"
        );
        std::fs::write(&policy, crate::support::policy_fixture("imports-wasi")).unwrap();
        server.signal("HUP");
        let started = Instant::now();
        let refusal = loop {
            let now = status();
            let history = now["history"].as_array().unwrap().clone();
            if let Some(last_swap) = history.last()
                && last_swap["generation"].is_null()
                && last_swap["outcome"].as_str().unwrap().contains("wasi")
            {
                break last_swap.clone();
            }
            assert!(
                started.elapsed() < FRESHNESS_DEADLINE,
                "no refusal in {now}"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(
            refusal["outcome"]
                .as_str()
                .unwrap()
                .contains("refused at step `validate`"),
            "{refusal}"
        );
        assert_eq!(generation(&status()), last);
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
    });
    let (served, failed) = (served.into_inner(), failed.into_inner());
    assert_eq!(failed, 0, "{failed} requests failed during the swaps");
    assert!(served > 100, "only {served} requests were made");
    let metrics = http
        .get(server.url("/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        metrics.contains("keyscope_swaps_refused_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keyscope_policy_errors_total 0"),
        "{metrics}"
    );
}

#[test]
fn a_client_that_ignores_shutdown_holds_the_server_no_longer_than_the_drain_timeout() {
    let world = World::new();
    let config = world.sandbox.path("serve.toml");
    std::fs::write(&config, "[limits]\ndrain_timeout_ms = 500\n").unwrap();
    let mut server = world.sandbox.serve(&["--config", config.to_str().unwrap()]);
    // A gRPC client whose runtime is parked: it never answers the GOAWAY.
    let rt = runtime();
    let mut client = rt
        .block_on(AuthorizationClient::connect(format!(
            "http://{}",
            server.grpc
        )))
        .unwrap();
    let response = rt
        .block_on(client.check(check_request(
            "GET",
            AGENTS,
            &[("x-api-key", &world.viewer)],
        )))
        .unwrap()
        .into_inner();
    assert_eq!(unpack(response).1, 200);
    // Without the drain bound the server would wait for this client
    // forever; `stop` gives up (and fails the test) after 20 s.
    let started = Instant::now();
    let status = server.stop();
    assert!(status.success(), "{status}");
    eprintln!(
        "stopped in {:?} with a 500 ms drain timeout",
        started.elapsed()
    );
    drop(client);
}

#[test]
fn a_module_reload_keeps_every_change_since_the_server_started() {
    // Found by review: a module reload went live on the snapshot of the
    // last full load, and a key revoked since was allowed again.
    let world = World::new();
    let policy = world.sandbox.path("policy.wasm");
    std::fs::write(&policy, keyscope_runtime::EMBEDDED_POLICY).unwrap();
    let server = world.sandbox.serve(&["--policy", policy.to_str().unwrap()]);
    let http = http_client();
    let check = |key: &str| -> Value {
        http.post(server.url("/v1/check"))
            .send_json(json!({ "key": key, "app": "acme", "op": "agents.get" }))
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap()
    };
    let status = || -> Value {
        http.get(server.admin_url("/admin/status"))
            .header("authorization", &format!("Bearer {}", server.admin_token))
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap()
    };
    // Changes after the start reach the server as deltas.
    let (revoked_id, revoked) = world.sandbox.key("acme/viewer", "revoked-later");
    let (_, created) = world.sandbox.key("acme/viewer", "created-later");
    crate::support::wait_until(30, "the new keys served", || {
        check(&created)["allow"] == true && check(&revoked)["allow"] == true
    });
    world
        .sandbox
        .keyscope(["key", "revoke", &revoked_id.to_string()])
        .assert()
        .success();
    crate::support::wait_until(30, "the revocation served", || {
        check(&revoked)["reason"] == "revoked-key"
    });
    assert!(status()["stats"]["deltas_applied"].as_u64().unwrap() >= 1);
    // The module is reloaded, by SIGHUP then by the admin API.
    for round in 0..2 {
        let before = status()["generation"].as_u64().unwrap();
        if round == 0 {
            server.signal("HUP");
        } else {
            let response = http
                .post(server.admin_url("/admin/policy"))
                .header("authorization", &format!("Bearer {}", server.admin_token))
                .send("")
                .unwrap();
            assert_eq!(response.status(), 200);
        }
        crate::support::wait_until(30, "the reload", || {
            status()["generation"].as_u64().unwrap() > before
        });
        assert_eq!(check(&revoked)["reason"], "revoked-key", "round {round}");
        assert_eq!(check(&created)["allow"], true, "round {round}");
    }
}
