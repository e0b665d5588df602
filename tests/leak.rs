//! The secret-leak scan: a full flow (keys created by the CLI and the admin
//! API, decisions through the CLI, /v1/check, nginx-style /auth and gRPC,
//! failed requests, decision logs, a snapshot export, a shutdown), then every
//! byte the system wrote, on disk and on its outputs, is searched for every
//! raw key and for every key's body without its prefix. Only the one-time
//! creation output may hold a key.

use std::io::Read as _;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use serde_json::{Value, json};

use crate::support::{Sandbox, http_client};

/// Every place a secret must not be: (where, bytes).
type Outputs = Vec<(String, Vec<u8>)>;

fn findings(outputs: &Outputs, secrets: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for (place, bytes) in outputs {
        for secret in secrets {
            for needle in [secret.as_str(), &secret[3..]] {
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    found.push(format!("{place} holds `{}…`", &needle[..8]));
                }
            }
        }
    }
    found
}

/// Runs the CLI; keeps its stderr among the outputs, returns its stdout.
fn cli(sandbox: &Sandbox, outputs: &mut Outputs, args: &[&str], stdin: Option<&str>) -> Vec<u8> {
    let mut command = sandbox.keyscope(args);
    if let Some(stdin) = stdin {
        command.write_stdin(stdin.to_owned());
    }
    let output = command.output().unwrap();
    outputs.push((format!("stderr of {args:?}"), output.stderr));
    output.stdout
}

#[test]
fn no_key_leaks_into_any_file_or_output() {
    let sandbox = Sandbox::new();
    let mut outputs: Outputs = Vec::new();
    let o = &mut outputs;
    cli(
        &sandbox,
        o,
        &[
            "scope", "create", "--app", "acme", "--name", "viewer", "--agents", "view",
        ],
        None,
    );
    cli(
        &sandbox,
        o,
        &[
            "scope", "create", "--app", "globex", "--name", "ops", "--agents", "full",
        ],
        None,
    );
    // The one-time creation output is the only place a key may appear: it
    // is not kept among the outputs.
    let mut secrets = Vec::new();
    for (scope, name) in [
        ("acme/viewer", "a"),
        ("acme/viewer", "b"),
        ("globex/ops", "c"),
    ] {
        let created = cli(
            &sandbox,
            o,
            &["--json", "key", "create", "--scope", scope, "--name", name],
            None,
        );
        let created: Value = serde_json::from_slice(&created).unwrap();
        secrets.push(created["key"].as_str().unwrap().to_owned());
    }
    let key_list = cli(&sandbox, o, &["--json", "key", "list"], None);
    o.push(("key list".to_owned(), key_list));
    // Decisions through the CLI, allowed and denied, and a revocation.
    for (key, op) in [
        (&secrets[0], "agents.get"),
        (&secrets[0], "agents.delete"),
        (&secrets[2], "agents.get"),
    ] {
        let decision = cli(
            &sandbox,
            o,
            &["--json", "eval", "--app", "acme", "--op", op, "--key-stdin"],
            Some(key),
        );
        o.push((format!("eval {op}"), decision));
    }
    let revoked = cli(&sandbox, o, &["--json", "key", "revoke", "2"], None);
    o.push(("key revoke".to_owned(), revoked));
    let snapshot = sandbox.path("export.snap");
    cli(
        &sandbox,
        o,
        &["snapshot", "export", "-o", snapshot.to_str().unwrap()],
        None,
    );

    // The server: an admin-made key, every front door, failing requests.
    let mut server = sandbox.serve(&[]);
    let http = http_client();
    let created: Value = http
        .post(server.admin_url("/admin/keys"))
        .header("authorization", &format!("Bearer {}", server.admin_token))
        .send_json(json!({ "scope": "acme/viewer", "name": "admin-made" }))
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    secrets.push(created["key"].as_str().unwrap().to_owned());
    // A near miss: one character off, so malformed (its checksum fails).
    let mut near_miss = secrets[0].clone();
    let swapped = if &near_miss[10..11] == "a" { "b" } else { "a" };
    near_miss.replace_range(10..11, swapped);
    let requests = [
        ("GET", "/api/v2/apps/acme/agents"),
        ("DELETE", "/api/v2/apps/acme/agents/x"),
        ("GET", "/nowhere"),
    ];
    for key in secrets.iter().chain([&near_miss]) {
        for (method, path) in requests {
            let mut response = http
                .get(server.url("/auth"))
                .header("X-Original-Method", method)
                .header("X-Original-URI", path)
                .header("x-api-key", key)
                .call()
                .unwrap();
            let head = format!("{:?}", response.headers());
            let body = response.body_mut().read_to_vec().unwrap();
            outputs.push((format!("/auth {method} {path} headers"), head.into_bytes()));
            outputs.push((format!("/auth {method} {path} body"), body));
        }
        let body = http
            .post(server.url("/v1/check"))
            .send_json(json!({ "key": key, "method": "GET", "path": "/api/v2/apps/acme/agents" }))
            .unwrap()
            .body_mut()
            .read_to_vec()
            .unwrap();
        outputs.push(("/v1/check body".to_owned(), body));
    }
    let bad = http
        .post(server.url("/v1/check"))
        .send(format!(r#"{{"key":"{}","app":"acme"}}"#, secrets[0]))
        .unwrap()
        .body_mut()
        .read_to_vec()
        .unwrap();
    outputs.push(("/v1/check bad request".to_owned(), bad));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut grpc = rt
        .block_on(AuthorizationClient::connect(format!(
            "http://{}",
            server.grpc
        )))
        .unwrap();
    for key in &secrets {
        let request = crate::serve::check_request(
            "DELETE",
            "/api/v2/apps/acme/agents/x",
            &[("x-api-key", key)],
        );
        let response = rt.block_on(grpc.check(request)).unwrap();
        outputs.push((
            "gRPC response".to_owned(),
            format!("{response:?}").into_bytes(),
        ));
    }
    let metrics = http
        .get(server.url("/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_vec()
        .unwrap();
    outputs.push(("/metrics".to_owned(), metrics));
    let status = http
        .get(server.admin_url("/admin/status"))
        .header("authorization", &format!("Bearer {}", server.admin_token))
        .call()
        .unwrap()
        .body_mut()
        .read_to_vec()
        .unwrap();
    outputs.push(("/admin/status".to_owned(), status));
    drop(grpc);
    drop(rt);
    assert!(server.stop().success());
    let mut stdout = Vec::new();
    server.stdout.read_to_end(&mut stdout).unwrap();
    outputs.push(("serve stdout".to_owned(), stdout));

    // Every file the system wrote: the store with its WAL and shared memory,
    // the snapshot, the decision log, the server's stderr.
    for entry in std::fs::read_dir(sandbox.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|name| name == "admin-token") {
            continue; // the test's own input
        }
        outputs.push((path.display().to_string(), std::fs::read(&path).unwrap()));
    }
    let scanned = outputs.len();
    assert!(sandbox.path("decisions.jsonl").exists());
    let found = findings(&outputs, &secrets);
    assert!(found.is_empty(), "{found:#?}");
    // The scan does find a key where there is one: in its creation output.
    let creation: Outputs = vec![("creation".to_owned(), created.to_string().into_bytes())];
    assert_eq!(findings(&creation, &secrets).len(), 2);
    eprintln!(
        "leak scan: {} keys, {scanned} files and outputs, 0 findings",
        secrets.len()
    );
}
