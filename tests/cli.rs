//! The CLI through its binary: the seed's flow, exit codes, secrets, names
//! and limits.

use predicates::prelude::*;
use predicates::str::contains;

use crate::support::Sandbox;

#[test]
fn the_seed_flow_end_to_end() {
    let s = Sandbox::new();
    // 1. A scope for an app.
    let scope = s.scope("acme", "support-bot", "view", "run");
    let shown = s.json(["scope", "show", "acme/support-bot"]);
    assert_eq!(shown["id"], scope);
    assert_eq!(shown["agents"], "view");
    assert_eq!(shown["runtime"], serde_json::json!(["run"]));
    // 2. Named keys linked to it.
    let (web_id, web) = s.key("acme/support-bot", "web");
    let (cli_id, cli) = s.key(&scope.to_string(), "cli");
    assert_ne!(web, cli);
    // 3. Requests as the platform would send them.
    assert_eq!(s.eval(&web, "acme", "agents.list").0, 0);
    assert_eq!(s.eval(&web, "acme", "runs.execute").0, 0);
    let (code, decision) = s.eval(&web, "acme", "agents.update");
    assert_eq!(code, 1);
    assert_eq!(
        decision,
        serde_json::json!({"allow": false, "reason": "insufficient-permission",
                           "key_id": web_id, "scope_id": scope, "required": "agents:edit"})
    );
    // 4. A scope edit changes the very next decision.
    s.keyscope(["scope", "update", "acme/support-bot", "--agents", "edit"])
        .assert()
        .success()
        .stdout(contains("agents: edit"));
    let (code, decision) = s.eval(&web, "acme", "agents.update");
    assert_eq!((code, decision["reason"].as_str()), (0, Some("allowed")));
    // 5. A revoked key is denied on the next eval; the other key is not.
    let revoked = s.json(["key", "revoke", &web_id.to_string()]);
    assert!(revoked["revoked_at"].is_string());
    let (code, decision) = s.eval(&web, "acme", "agents.list");
    assert_eq!(code, 1);
    assert_eq!(decision["reason"], "revoked-key");
    assert_eq!(decision["key_id"], web_id);
    let (code, decision) = s.eval(&cli, "acme", "agents.list");
    assert_eq!((code, &decision["key_id"]), (0, &serde_json::json!(cli_id)));
}

#[test]
fn a_scope_edit_can_take_permissions_away_at_once() {
    let s = Sandbox::new();
    s.scope(
        "acme",
        "ops",
        "full",
        "run,session-create,session-terminate",
    );
    let (_, key) = s.key("acme/ops", "k");
    assert_eq!(s.eval(&key, "acme", "sessions.terminate").0, 0);
    s.keyscope(["scope", "update", "acme/ops", "--runtime", ""])
        .assert()
        .success();
    let (code, decision) = s.eval(&key, "acme", "sessions.terminate");
    assert_eq!(code, 1);
    assert_eq!(decision["required"], "runtime:session-terminate");
    s.keyscope(["scope", "update", "acme/ops", "--name", "operators"])
        .assert()
        .success();
    assert_eq!(
        s.eval(&key, "acme", "agents.delete").0,
        0,
        "a rename keeps keys"
    );
}

#[test]
fn exit_codes_are_0_for_allow_1_for_deny_2_for_errors() {
    let s = Sandbox::new();
    s.scope("acme", "viewer", "view", "");
    let (_, key) = s.key("acme/viewer", "k");
    let eval = |op: &str| {
        s.keyscope(["eval", "--app", "acme", "--op", op])
            .env("KEYSCOPE_API_KEY", &key)
            .assert()
    };
    eval("agents.get")
        .code(0)
        .stdout(contains("allow: allowed"));
    eval("agents.create").code(1).stdout(contains(
        "deny: insufficient-permission (requires agents:full)",
    ));
    // Errors: unknown scope, bad flag value, missing store, clap usage.
    s.keyscope(["scope", "show", "acme/nope"])
        .assert()
        .code(2)
        .stderr(contains("no scope `acme/nope`"));
    s.keyscope([
        "scope", "create", "--app", "acme", "--name", "x", "--agents", "admin",
    ])
    .assert()
    .code(2)
    .stderr(contains(
        "unknown agents level `admin`; expected one of: none, view, edit, full",
    ));
    s.keyscope([
        "scope",
        "create",
        "--app",
        "acme",
        "--name",
        "x",
        "--runtime",
        "run,fly",
    ])
    .assert()
    .code(2)
    .stderr(contains(
        "expected one of: run, session-create, session-terminate, document-upload",
    ));
    s.keyscope(["key", "revoke", "999"])
        .assert()
        .code(2)
        .stderr(contains("no key with id `999`"));
    s.keyscope(["eval", "--app", "acme"]).assert().code(2);
    let fresh = Sandbox::new();
    fresh
        .keyscope(["scope", "list"])
        .assert()
        .code(2)
        .stderr(contains("no store at"));
    assert!(
        !fresh.store().exists(),
        "a read command must not create a store"
    );
}

/// One rule for a missing store: a command that adds to it creates it (the
/// console's docs start with `admin token create`); a command that needs
/// what a store holds refuses, and leaves no file behind.
#[test]
fn a_command_that_adds_creates_a_missing_store_and_others_refuse_it() {
    for refused in [
        &["key", "create", "--scope", "acme/viewer", "--name", "k"][..],
        &["key", "revoke", "1"],
        &["key", "rotate", "1", "--grace", "0"],
        &["scope", "delete", "acme/viewer"],
        &["route", "remove", "GET", "/x"],
        &["admin", "token", "revoke", "alice"],
        &["audit", "verify"],
    ] {
        let fresh = Sandbox::new();
        fresh
            .keyscope(refused)
            .assert()
            .code(2)
            .stderr(contains("no store at"))
            .stderr(contains("admin token create"));
        assert!(!fresh.store().exists(), "{refused:?} made a store");
    }
    for adds in [
        &["admin", "token", "create", "--name", "alice"][..],
        &["fleet", "token", "create", "--gateway", "edge-1"],
        &["scope", "create", "--app", "acme", "--name", "viewer"],
        &[
            "route",
            "set",
            "GET",
            "/api/v2/apps/{app}/agents",
            "agents.list",
        ],
        &["limits", "set", "--keys-per-scope", "5"],
    ] {
        let fresh = Sandbox::new();
        fresh.keyscope(adds).assert().success();
        assert!(fresh.store().exists(), "{adds:?} made no store");
        fresh.keyscope(["audit", "verify"]).assert().success();
    }
}

#[test]
fn a_missing_key_is_a_deny_not_an_error() {
    let s = Sandbox::new();
    s.scope("acme", "viewer", "view", "");
    s.keyscope(["eval", "--json", "--app", "acme", "--op", "agents.get"])
        .assert()
        .code(1)
        .stdout(contains(r#""reason":"missing-key""#));
}

#[test]
fn secrets_never_reach_the_key_list_the_store_file_or_the_snapshot() {
    let s = Sandbox::new();
    s.scope("acme", "viewer", "view", "run");
    let secrets: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|name| s.key("acme/viewer", name).1)
        .collect();
    s.keyscope(["key", "revoke", "2"]).assert().success();
    let mut written: Vec<(String, Vec<u8>)> = Vec::new();
    for args in [
        &["key", "list"][..],
        &["key", "list", "--json"],
        &["key", "list", "--scope", "acme/viewer"],
        &["scope", "list", "--json"],
    ] {
        let out = s.keyscope(args).assert().success().get_output().clone();
        written.push((format!("{args:?} stdout"), out.stdout));
        written.push((format!("{args:?} stderr"), out.stderr));
    }
    s.keyscope(["snapshot", "export", "-o"])
        .arg(s.path("snap.bin"))
        .assert()
        .success();
    for entry in std::fs::read_dir(s.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        written.push((path.display().to_string(), std::fs::read(&path).unwrap()));
    }
    assert!(
        written
            .iter()
            .any(|(name, _)| name.ends_with("keyscope.db"))
    );
    for secret in &secrets {
        let body = &secret[3..];
        for (name, bytes) in &written {
            for needle in [secret.as_str(), body] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "a secret leaked into {name}"
                );
            }
        }
    }
    // What is shown instead: a short prefix.
    let keys = s.json(["key", "list"]);
    assert_eq!(keys[0]["prefix"].as_str().unwrap(), &secrets[0][..9]);
    assert!(keys[0].get("key").is_none());
}

#[test]
fn duplicate_names_are_refused_and_change_nothing() {
    let s = Sandbox::new();
    s.scope("acme", "viewer", "view", "");
    s.scope("globex", "viewer", "view", ""); // same name, other app: fine
    s.keyscope(["scope", "create", "--app", "acme", "--name", "viewer"])
        .assert()
        .code(2)
        .stderr(contains("app `acme` already has a scope named `viewer`"));
    s.scope("acme", "editor", "edit", "");
    s.keyscope(["scope", "update", "acme/editor", "--name", "viewer"])
        .assert()
        .code(2)
        .stderr(contains("already has a scope named `viewer`"));
    let (id, _) = s.key("acme/viewer", "ci");
    s.keyscope(["key", "create", "--scope", "acme/viewer", "--name", "ci"])
        .assert()
        .code(2)
        .stderr(contains(
            "scope `acme/viewer` already has a live key named `ci`",
        ));
    // A revoked key's name may be reused: that is how keys are rotated.
    s.keyscope(["key", "revoke", &id.to_string()])
        .assert()
        .success();
    s.key("acme/viewer", "ci");
    assert_eq!(s.json(["scope", "list"]).as_array().unwrap().len(), 3);
    assert_eq!(s.json(["key", "list"]).as_array().unwrap().len(), 2);
}

#[test]
fn default_limits_are_20_scopes_per_app_and_40_keys_per_scope() {
    let s = Sandbox::new();
    s.keyscope(["store", "migrate"]).assert().success();
    let limits = s.json(["limits", "show"]);
    assert_eq!(
        limits,
        serde_json::json!({"scopes_per_app": 20, "keys_per_scope": 40})
    );
    // `limits set` with nothing to set is refused, not an audited no-op.
    s.keyscope(["limits", "set"])
        .assert()
        .code(2)
        .stderr(contains(
            "give --scopes-per-app N, --keys-per-scope N, or both",
        ));
    for i in 0..20 {
        s.scope("acme", &format!("s{i}"), "none", "");
    }
    s.keyscope(["scope", "create", "--app", "acme", "--name", "one-more"])
        .assert()
        .code(2)
        .stderr(contains("app `acme` already has 20 scopes, its limit"));
    s.scope("globex", "s0", "none", ""); // the limit is per app
    for i in 0..40 {
        s.key("acme/s0", &format!("k{i}"));
    }
    s.keyscope(["key", "create", "--scope", "acme/s0", "--name", "one-more"])
        .assert()
        .code(2)
        .stderr(contains(
            "scope `acme/s0` already has 40 live keys, its limit",
        ));
}

#[test]
fn limits_are_configurable() {
    let s = Sandbox::new();
    s.keyscope([
        "limits",
        "set",
        "--scopes-per-app",
        "1",
        "--keys-per-scope",
        "1",
    ])
    .assert()
    .success()
    .stdout(contains("scopes per app: 1"));
    s.scope("acme", "only", "view", "");
    s.keyscope(["scope", "create", "--app", "acme", "--name", "second"])
        .assert()
        .code(2)
        .stderr(contains("already has 1 scopes"));
    let (id, _) = s.key("acme/only", "first");
    s.keyscope(["key", "create", "--scope", "acme/only", "--name", "second"])
        .assert()
        .code(2);
    // Revoked keys do not count against the limit.
    s.keyscope(["key", "revoke", &id.to_string()])
        .assert()
        .success();
    s.key("acme/only", "second");
    s.keyscope(["limits", "set", "--keys-per-scope", "0"])
        .assert()
        .code(2)
        .stderr(contains("a limit must be at least 1"));
}

#[test]
fn deleting_a_scope_refuses_while_keys_are_live() {
    let s = Sandbox::new();
    s.scope("acme", "temp", "full", "");
    let (_, key) = s.key("acme/temp", "k");
    s.keyscope(["scope", "delete", "acme/temp"])
        .assert()
        .code(2)
        .stderr(contains("still has 1 live key(s)"));
    assert_eq!(s.eval(&key, "acme", "agents.get").0, 0);
    let deleted = s.json(["scope", "delete", "acme/temp", "--revoke-keys"]);
    assert_eq!(deleted["revoked_keys"], serde_json::json!([1]));
    let (code, decision) = s.eval(&key, "acme", "agents.get");
    assert_eq!(
        (code, decision["reason"].as_str()),
        (1, Some("revoked-key"))
    );
    // The tombstone survives; the name is free again.
    assert!(s.json(["key", "list"])[0]["revoked_at"].is_string());
    s.scope("acme", "temp", "view", "");
}

#[test]
fn batch_eval_answers_each_line_in_order() {
    let s = Sandbox::new();
    s.scope("acme", "viewer", "view", "");
    let (_, key) = s.key("acme/viewer", "k");
    let input = format!(
        "{{\"key\":\"{key}\",\"app\":\"acme\",\"op\":\"agents.get\"}}\n\
         {{\"key\":\"{key}\",\"app\":\"acme\",\"op\":\"agents.delete\"}}\n\
         \n\
         {{\"app\":\"acme\",\"op\":\"agents.get\"}}\n\
         {{\"key\":\"ks_nope\",\"app\":\"acme\",\"op\":\"agents.get\"}}\n"
    );
    let out = s
        .keyscope(["eval", "--batch", "-"])
        .write_stdin(input.clone())
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let reasons: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["reason"].to_string())
        .collect();
    assert_eq!(
        reasons,
        [
            "\"allowed\"",
            "\"insufficient-permission\"",
            "\"missing-key\"",
            "\"malformed-key\""
        ]
    );
    std::fs::write(s.path("batch.jsonl"), input.lines().next().unwrap()).unwrap();
    s.keyscope(["eval", "--batch"])
        .arg(s.path("batch.jsonl"))
        .assert()
        .code(0);
    // A bad line is an error naming the line, and nothing is decided.
    s.keyscope(["eval", "--batch", "-"])
        .write_stdin(format!(
            "{}\n{{\"app\":\"acme\"}}\n",
            input.lines().next().unwrap()
        ))
        .assert()
        .code(2)
        .stdout(predicate::str::is_empty())
        .stderr(contains("batch line 2"));
}

#[test]
fn the_operation_catalogue_is_data_in_the_store() {
    let s = Sandbox::new();
    s.scope("acme", "editor", "edit", "");
    let (_, key) = s.key("acme/editor", "k");
    assert_eq!(
        s.eval(&key, "acme", "agents.publish").1["reason"],
        "unknown-operation"
    );
    s.keyscope(["op", "set", "agents.publish", "agents:edit"])
        .assert()
        .success();
    assert_eq!(s.eval(&key, "acme", "agents.publish").0, 0);
    // A routed operation stays until its routes go.
    s.keyscope(["op", "remove", "agents.update"])
        .assert()
        .code(2)
        .stderr(contains(
            "routes still name it (`PUT /api/v2/apps/{app}/agents/{id}`, \
             `PATCH /api/v2/apps/{app}/agents/{id}`)",
        ));
    for method in ["PUT", "PATCH"] {
        s.keyscope(["route", "remove", method, "/api/v2/apps/{app}/agents/{id}"])
            .assert()
            .success();
    }
    s.keyscope(["op", "remove", "agents.update"])
        .assert()
        .success();
    assert_eq!(
        s.eval(&key, "acme", "agents.update").1["reason"],
        "unknown-operation"
    );
    s.keyscope(["op", "set", "x", "agents:admin"])
        .assert()
        .code(2)
        .stderr(contains("unknown agents level `admin`"));
    let ops = s.json(["op", "list"]);
    assert_eq!(ops.as_array().unwrap().len(), 13);
}

#[test]
fn the_route_table_is_data_in_the_store() {
    let s = Sandbox::new();
    s.scope("acme", "editor", "edit", "");
    let routes = s.json(["route", "list"]);
    let routes = routes.as_array().unwrap();
    assert_eq!(routes.len(), 14);
    assert_eq!(
        routes[0]["pattern"],
        "/api/v2/apps/{app}/environments/{env}/runs/execute"
    );
    let versions = "/api/v2/apps/{app}/agents/{id}/versions";
    s.keyscope(["route", "set", "GET", versions, "agents.get"])
        .assert()
        .success();
    assert_eq!(s.json(["route", "list"]).as_array().unwrap().len(), 15);
    s.keyscope(["route", "set", "GET", "/agents/{id}", "agents.get"])
        .assert()
        .code(2)
        .stderr(contains("must name `{app}` exactly once"));
    s.keyscope(["route", "set", "GET", "/{app}/x", "agents.fly"])
        .assert()
        .code(2)
        .stderr(contains("`agents.fly`: it is not in the catalogue"));
    s.keyscope(["route", "remove", "GET", versions])
        .assert()
        .success();
    s.keyscope(["route", "remove", "GET", versions])
        .assert()
        .code(2)
        .stderr(contains("not in the route table"));
}

#[test]
fn concurrent_invocations_are_safe() {
    let s = Sandbox::new();
    s.scope("acme", "busy", "view", "");
    let children: Vec<_> = (0..8)
        .map(|i| {
            std::process::Command::new(env!("CARGO_BIN_EXE_keyscope"))
                .arg("--store")
                .arg(s.store())
                .args(["--json", "key", "create", "--scope", "acme/busy", "--name"])
                .arg(format!("k{i}"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut secrets = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        secrets.push(created["key"].as_str().unwrap().to_owned());
    }
    assert_eq!(s.json(["key", "list"]).as_array().unwrap().len(), 8);
    for secret in secrets {
        assert_eq!(s.eval(&secret, "acme", "agents.get").0, 0);
    }
}

#[test]
fn policy_info_shows_no_imports() {
    let s = Sandbox::new();
    let info = s.json(["policy", "info"]);
    assert_eq!(info["imports"], serde_json::json!([]));
    assert_eq!(info["world"], "keyscope:policy/policy@0.4.0");
    assert_eq!(info["digest"].as_str().unwrap().len(), 64);
    s.keyscope(["policy", "info"])
        .assert()
        .success()
        .stdout(contains("imports    none"));
}

#[test]
fn the_demo_runs_the_whole_flow() {
    let s = Sandbox::new();
    let out = s
        .keyscope(["demo"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    for expected in [
        "deny: insufficient-permission (requires agents:edit)",
        "deny: wrong-app",
        "deny: revoked-key",
        "deny: malformed-key",
        "deny: unknown-key",
        "deny: missing-key",
        "$ keyscope key rotate 2 --grace 24h",
        "the audit trail verifies: 6 entries, by os:",
    ] {
        assert!(text.contains(expected), "the demo never shows `{expected}`");
    }
    assert!(
        !s.store().exists(),
        "the demo must use its own temporary store"
    );
}

#[test]
fn policy_check_runs_every_step_without_going_live() {
    let s = Sandbox::new();
    let good = s.path("good.wasm");
    std::fs::write(&good, keyscope_runtime::EMBEDDED_POLICY).unwrap();
    s.keyscope(["policy", "check"])
        .arg(&good)
        .assert()
        .code(0)
        .stdout(contains("passes 89 self-test case(s)"));
    let allow_all = s.path("allow-all.wasm");
    std::fs::write(&allow_all, keyscope_test_artifacts::ALLOW_ALL).unwrap();
    s.keyscope(["policy", "check"])
        .arg(&allow_all)
        .assert()
        .code(1)
        .stdout(contains("refused at step `self-test`"));
    // The user's own cases count, and can fail a module the golden cases pass.
    let mine = s.path("mine.json");
    let mut cases: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/golden/custom-catalogue.json")).unwrap();
    s.keyscope(["policy", "check", "--no-golden", "--cases"])
        .arg(&mine)
        .arg(&good)
        .assert()
        .code(2)
        .stderr(contains("mine.json"));
    std::fs::write(&mine, cases.to_string()).unwrap();
    s.keyscope(["policy", "check", "--json", "--no-golden", "--cases"])
        .arg(&mine)
        .arg(&good)
        .assert()
        .code(0)
        .stdout(contains(r#""cases":4"#));
    cases["cases"][0]["expect"]["allow"] = false.into();
    std::fs::write(&mine, cases.to_string()).unwrap();
    s.keyscope(["policy", "check", "--cases"])
        .arg(&mine)
        .arg(&good)
        .assert()
        .code(1)
        .stdout(contains(
            "a platform-defined operation is decided without a new module",
        ));
}

#[test]
fn bench_measures_every_path() {
    let s = Sandbox::new();
    let figures = s.json(["bench", "--keys", "100", "--seconds", "0.02"]);
    let paths: Vec<&str> = figures["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "native rules",
            "floor (empty call)",
            "component",
            "native host path (raw key)",
            "host path (raw key)",
            "native http path (raw key)",
            "floor http (empty call, a path)",
            "http path (raw key)",
            "floor batch of 256",
            "batch of 256"
        ]
    );
    let against = &figures["against_floor"];
    for field in [
        "floor_ns",
        "component_less_floor_ns",
        "component_less_floor_vs_native",
        "host_path_less_floor_ns",
        "host_path_less_floor_vs_native",
        "batch_less_floor_ns",
        "batch_less_floor_vs_native",
        "http_floor_ns",
        "http_path_less_floor_ns",
        "http_path_less_floor_vs_native",
    ] {
        assert!(against[field].as_f64().is_some(), "{field}: {against}");
    }
    assert!(against["floor_ns"].as_f64().unwrap() > 0.0);
    let read = &figures["records_read"];
    assert!(read["interpolation"].as_f64().unwrap() >= 1.0, "{read}");
    assert_eq!(read["binary_search"], 7.0, "100 keys: 7 reads");
    for f in figures["paths"].as_array().unwrap() {
        assert!(f["decisions_per_second"].as_f64().unwrap() > 0.0);
        assert!(f["median_ns"].as_f64().unwrap() <= f["p99_ns"].as_f64().unwrap());
    }
    s.keyscope(["bench", "--seconds=-1"])
        .assert()
        .code(2)
        .stderr(contains("--seconds must be a positive number"));
}
