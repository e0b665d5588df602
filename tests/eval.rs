//! `keyscope eval` on HTTP requests and at a chosen time: it routes as the
//! network doors do and agrees with them, while the doors judge every
//! request at their own clock, whatever the caller says.

use serde_json::{Value, json};

use crate::support::{Sandbox, Server, http_client};

/// `eval --json --method M --path P` with `key` on stdin, plus `extra`.
fn eval_http(s: &Sandbox, key: &str, method: &str, path: &str, extra: &[&str]) -> (i32, Value) {
    let mut args = vec![
        "eval",
        "--json",
        "--key-stdin",
        "--method",
        method,
        "--path",
        path,
    ];
    args.extend_from_slice(extra);
    let output = s
        .keyscope(args)
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

/// nginx's `auth_request` door: the status, and the decision as it tells
/// it: the reason (the deny's body), and on an allow the key's and scope's
/// ids (the headers for the upstream).
fn auth(server: &Server, key: &str, method: &str, uri: &str) -> (u16, Value) {
    let response = http_client()
        .get(server.url("/auth"))
        .config()
        .http_status_as_error(false)
        .build()
        .header("X-Original-Method", method)
        .header("X-Original-URI", uri)
        .header("X-Api-Key", key)
        .call()
        .unwrap();
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let (key_id, scope_id) = (header("x-keyscope-key-id"), header("x-keyscope-scope-id"));
    let reason = if status == 200 {
        json!("allowed")
    } else {
        let body: Value = response.into_body().read_json().unwrap();
        body["reason"].clone()
    };
    let told = json!({ "reason": reason, "key_id": key_id, "scope_id": scope_id });
    (status, told)
}

/// A concrete path for a route pattern: `{app}` is `app`, any other
/// parameter a word.
fn concrete(pattern: &str, app: &str) -> String {
    pattern
        .split('/')
        .map(|segment| match segment {
            "{app}" => app,
            s if s.starts_with('{') => "x1",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn eval_by_method_and_path_agrees_with_auth_on_every_route() {
    let s = Sandbox::new();
    s.scope("acme", "editor", "edit", "run,session-create");
    s.scope("acme", "viewer", "view", "");
    let (_, editor) = s.key("acme/editor", "e");
    let (_, viewer) = s.key("acme/viewer", "v");
    let (revoked_id, revoked) = s.key("acme/viewer", "gone");
    s.keyscope(["key", "revoke", &revoked_id.to_string()])
        .assert()
        .success();
    // A custom route beside the default table.
    s.keyscope([
        "route",
        "set",
        "PUT",
        "/custom/{app}/agents/{id}/rename",
        "agents.update",
    ])
    .assert()
    .success();
    let routes = s.json(["route", "list"]);
    let routes = routes.as_array().unwrap();
    assert!(routes.len() > 10, "{routes:?}");
    let server = s.serve(&[]);
    let mut agreed = 0;
    for route in routes {
        let (method, pattern, op) = (
            route["method"].as_str().unwrap(),
            route["pattern"].as_str().unwrap(),
            route["op"].as_str().unwrap(),
        );
        for app in ["acme", "globex"] {
            let path = format!("{}?q=1", concrete(pattern, app));
            for key in [&editor, &viewer, &revoked] {
                let (code, eval) = eval_http(&s, key, method, &path, &[]);
                let (status, door) = auth(&server, key, method, &path);
                let context = format!("{method} {path}: eval {eval}, /auth {status} {door}");
                assert_eq!(eval["allow"], status == 200, "{context}");
                assert_eq!(code, if status == 200 { 0 } else { 1 }, "{context}");
                assert_eq!(eval["reason"], door["reason"], "{context}");
                if status == 200 {
                    let id = |v: &Value| v.as_u64().map(|id| id.to_string());
                    assert_eq!(
                        id(&eval["key_id"]).as_deref(),
                        door["key_id"].as_str(),
                        "{context}"
                    );
                    assert_eq!(
                        id(&eval["scope_id"]).as_deref(),
                        door["scope_id"].as_str(),
                        "{context}"
                    );
                }
                // The route it decided on: /v1/check names it too.
                let check = server.check(&json!({"key": key, "method": method, "path": path}));
                assert_eq!(check["reason"], eval["reason"], "{context}: {check}");
                assert_eq!(check["app"], eval["app"], "{context}: {check}");
                assert_eq!(check["op"], eval["op"], "{context}: {check}");
                if key == &revoked {
                    assert_eq!(eval["reason"], "revoked-key", "{context}");
                }
                assert_eq!(eval["app"], app, "{context}");
                assert_eq!(eval["op"], op, "{context}");
                agreed += 1;
            }
        }
    }
    assert_eq!(agreed, routes.len() * 6);
    // No route: a deny with no app or operation, as /auth and /v1/check say.
    let (code, eval) = eval_http(&s, &editor, "GET", "/not/an/api", &[]);
    assert_eq!(
        (code, eval["reason"].as_str()),
        (1, Some("unknown-operation"))
    );
    assert!(
        eval.get("app").is_none() && eval.get("op").is_none(),
        "{eval}"
    );
    assert_eq!(auth(&server, &editor, "GET", "/not/an/api").0, 403);
}

#[test]
fn eval_at_judges_a_key_exactly_at_before_and_after_its_not_after() {
    let s = Sandbox::new();
    s.scope("acme", "viewer", "view", "");
    let key = s.json([
        "key",
        "create",
        "--scope",
        "acme/viewer",
        "--name",
        "k",
        "--expires-in",
        "30d",
    ]);
    let secret = key["key"].as_str().unwrap();
    let not_after = key["expires_at"].as_str().unwrap();
    let ms = keyscope_store::audit::parse_timestamp(not_after).unwrap();
    let stamp = keyscope_store::audit::timestamp;
    let path = "/api/v2/apps/acme/agents";
    for (at, reason) in [
        (stamp(ms - 1), "allowed"),
        (not_after.to_owned(), "allowed"),
        (stamp(ms + 1), "expired-key"),
        // The same moments in another offset.
        ("2020-01-01T09:00:00+09:00".to_owned(), "allowed"),
        ("+29d".to_owned(), "allowed"),
        ("+31d".to_owned(), "expired-key"),
        ("-1h".to_owned(), "allowed"),
    ] {
        let (code, decision) = eval_http(&s, secret, "GET", path, &["--at", &at]);
        assert_eq!(decision["reason"], reason, "at {at}: {decision}");
        assert_eq!(code, if reason == "allowed" { 0 } else { 1 }, "at {at}");
        // By app and operation, the same.
        let output = s
            .keyscope([
                "eval",
                "--json",
                "--key-stdin",
                "--app",
                "acme",
                "--op",
                "agents.list",
            ])
            .args(["--at", &at])
            .write_stdin(format!("{secret}\n"))
            .output()
            .unwrap();
        let by_op: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(by_op["reason"], reason, "at {at}: {by_op}");
    }
    // A batch: each line at its own time, or --at's, in order.
    let lines = [
        json!({"key": secret, "method": "GET", "path": path, "at": stamp(ms)}),
        json!({"key": secret, "method": "GET", "path": path, "at": stamp(ms + 1)}),
        json!({"key": secret, "app": "acme", "op": "agents.get", "at": stamp(ms + 1)}),
        json!({"key": secret, "app": "acme", "op": "agents.get"}),
        json!({"key": secret, "method": "GET", "path": "/api/v2/apps/acme/agents/7"}),
    ]
    .map(|line| line.to_string())
    .join("\n");
    let output = s
        .keyscope(["eval", "--batch", "-", "--at", &stamp(ms - 5)])
        .write_stdin(lines)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let decisions: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let reasons: Vec<&str> = decisions
        .iter()
        .map(|d| d["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "allowed",
            "expired-key",
            "expired-key",
            "allowed",
            "allowed"
        ]
    );
    assert_eq!(decisions[0]["op"], "agents.list");
    assert_eq!(decisions[4]["op"], "agents.get");
    assert!(decisions[3].get("op").is_none(), "{}", decisions[3]);
    // A bad time names itself and the line, never the key.
    let pasted = [secret.to_owned(), format!("+1{secret}")];
    for (bad, why) in [
        ("yesterday", "neither an RFC 3339 time"),
        ("2027-01-01T00:00:00", "neither an RFC 3339 time"),
        ("+5y", "unknown unit"),
        // A key pasted where the time goes is not echoed.
        (pasted[0].as_str(), "neither an RFC 3339 time"),
        (pasted[1].as_str(), "unknown unit"),
    ] {
        let line = json!({"key": secret, "app": "acme", "op": "agents.get", "at": bad});
        let output = s
            .keyscope(["eval", "--batch", "-"])
            .write_stdin(line.to_string())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("batch line 1"), "{stderr}");
        assert!(stderr.contains("neither an RFC 3339 time"), "{stderr}");
        assert!(!stderr.contains(&secret[3..20]), "{stderr}");
        // On the command line, the value is the user's own argument.
        s.keyscope(["eval", "--app", "acme", "--op", "agents.get", "--at", bad])
            .assert()
            .code(2)
            .stderr(predicates::str::contains(why));
    }
}

/// No caller of a network door chooses the time its request is judged at:
/// `/v1/check` refuses a time in its body (400, an unknown field), and
/// `/auth` ignores every header that might carry one.
#[test]
fn a_network_door_judges_every_request_at_its_own_clock() {
    let s = Sandbox::new();
    s.scope("acme", "viewer", "view", "");
    let key = s.json([
        "key",
        "create",
        "--scope",
        "acme/viewer",
        "--name",
        "k",
        "--expires-in",
        "1h",
    ]);
    let secret = key["key"].as_str().unwrap();
    let server = s.serve(&[]);
    let later = "2099-01-01T00:00:00.000Z";
    for field in ["at", "now", "time"] {
        let response = http_client()
            .post(server.url("/v1/check"))
            .config()
            .http_status_as_error(false)
            .build()
            .send_json(json!({"key": secret, "app": "acme", "op": "agents.list", field: later}))
            .unwrap();
        assert_eq!(response.status(), 400, "{field}");
        let body = response.into_body().read_to_string().unwrap();
        // The field is not echoed (a body's text is the caller's), only
        // refused.
        assert!(body.contains("an unknown field"), "{field}: {body}");
        assert!(!body.contains(secret), "{body}");
    }
    // The same request, without a time: the server's clock allows it.
    let allowed = server.check(&json!({"key": secret, "app": "acme", "op": "agents.list"}));
    assert_eq!(allowed["reason"], "allowed", "{allowed}");
    // /auth: times in headers change nothing.
    let response = http_client()
        .get(server.url("/auth"))
        .header("X-Original-Method", "GET")
        .header("X-Original-URI", "/api/v2/apps/acme/agents")
        .header("X-Api-Key", secret)
        .header("Date", "Fri, 01 Jan 2099 00:00:00 GMT")
        .header("X-Keyscope-At", later)
        .header("X-Request-Time", later)
        .call()
        .unwrap();
    assert_eq!(response.status(), 200);
    // While the CLI, asked at that time, says it is expired.
    let (_, decision) = eval_http(
        &s,
        secret,
        "GET",
        "/api/v2/apps/acme/agents",
        &["--at", later],
    );
    assert_eq!(decision["reason"], "expired-key", "{decision}");
}
