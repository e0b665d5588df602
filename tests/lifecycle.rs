//! A key's life after its creation, the way an admin and a platform live it:
//! rotation with a grace through `keyscope serve` (also with the database
//! stopped, and on a gateway whose control plane is gone), last-used
//! figures after real traffic with a count of store writes, named admin
//! tokens revoked under a running server, and the audit trail verified and
//! then tampered with in SQL on both backends.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::pg::{self, Cluster};
use crate::support::{Sandbox, Server, http_client, wait_until};

/// How long a rotated key's grace lasts in these tests: long enough that an
/// answer comes back inside it on a busy machine (the test says so if not).
const GRACE: Duration = Duration::from_secs(8);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn decide(server: &Server, key: &str) -> Value {
    server.check(&json!({ "key": key, "app": "acme", "op": "agents.list" }))
}

/// Rotates `key_id` by the CLI with [`GRACE`]: the new key's secret, and
/// the window the old key's deadline falls in.
fn rotate(sandbox: &Sandbox, key_id: u64) -> (String, u64, u64) {
    let before = now_ms();
    let rotated = sandbox.json([
        "key",
        "rotate",
        &key_id.to_string(),
        "--grace",
        &format!("{}s", GRACE.as_secs()),
    ]);
    let after = now_ms();
    assert_eq!(rotated["old"]["id"], key_id, "{rotated}");
    assert_eq!(rotated["old"]["status"], "expiring", "{rotated}");
    assert_eq!(rotated["new"]["name"], rotated["old"]["name"], "{rotated}");
    let grace = GRACE.as_millis() as u64;
    (
        rotated["new"]["key"].as_str().unwrap().to_owned(),
        before + grace,
        after + grace,
    )
}

/// Asks about the old and the new key until the old one is denied as
/// expired, checking each answer against the time it was asked: both
/// allowed while the grace surely lasted, the old one expired from the
/// moment it surely ended (no later), the new one allowed throughout.
/// Returns how many answers came inside the grace.
fn watch_grace(server: &Server, old: &str, new: &str, earliest: u64, latest: u64) -> usize {
    let deadline = Instant::now() + GRACE + Duration::from_secs(60);
    let mut inside = 0;
    loop {
        assert!(Instant::now() < deadline, "the old key never expired");
        let asked = now_ms();
        let old_answer = decide(server, old);
        let answered = now_ms();
        let new_answer = decide(server, new);
        assert_eq!(new_answer["reason"], "allowed", "the new key: {new_answer}");
        let reason = old_answer["reason"].as_str().unwrap();
        if answered < earliest {
            assert_eq!(reason, "allowed", "inside the grace: {old_answer}");
            inside += 1;
        }
        if asked > latest {
            // The request's own time turns it away: within a second of the
            // deadline means at once, whatever the store is doing.
            assert_eq!(reason, "expired-key", "after the grace: {old_answer}");
        }
        if reason == "expired-key" {
            assert!(answered > earliest, "expired early: {old_answer}");
            eprintln!(
                "old key allowed {inside} times inside its grace; denied as expired {} ms after \
                 the latest its deadline could be",
                answered.saturating_sub(latest)
            );
            return inside;
        }
        assert_eq!(reason, "allowed", "{old_answer}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_rotated_key_is_allowed_beside_its_successor_until_its_grace_ends() {
    let s = Sandbox::new();
    s.scope("acme", "viewer", "view", "");
    let (old_id, old_key) = s.key("acme/viewer", "ci");
    let server = s.serve(&[]);
    assert_eq!(decide(&server, &old_key)["reason"], "allowed");

    let (new_key, earliest, latest) = rotate(&s, old_id);
    // The rotation is a store change: serve picks the new key up at its next
    // poll (the old key's new deadline with it).
    wait_until(30, "the new key reaching serve", || {
        decide(&server, &new_key)["reason"] == "allowed"
    });
    let listed = String::from_utf8(s.keyscope(["key", "list"]).output().unwrap().stdout).unwrap();
    assert!(listed.contains("expiring "), "{listed}");
    assert!(
        listed.contains(&format!("(rotated to {})", old_id + 1)),
        "{listed}"
    );
    assert!(listed.contains("active"), "{listed}");

    let inside = watch_grace(&server, &old_key, &new_key, earliest, latest);
    assert!(inside > 0, "no answer came back inside the grace");
    let keys = s.json(["key", "list"]);
    assert_eq!(keys[0]["status"], "expired", "{keys}");
    assert_eq!(keys[1]["status"], "active", "{keys}");
    // The same status through the admin API.
    let (_, listed) = server.admin("GET", "/admin/keys", None);
    assert_eq!(listed[0]["status"], "expired", "{listed}");

    // What cannot be rotated is refused, in words.
    for (id, grace, why) in [
        (old_id, "0", "already rotated to key 2"),
        (old_id + 1, "8d", "at most 7 days"),
        (old_id + 1, "soon", "unknown unit `soon`"),
        (99, "1m", "no key with id `99`"),
    ] {
        s.keyscope(["key", "rotate", &id.to_string(), "--grace", grace])
            .assert()
            .code(2)
            .stderr(predicates::str::contains(why));
    }
    s.keyscope(["key", "revoke", &(old_id + 1).to_string()])
        .assert()
        .success();
    s.keyscope(["key", "rotate", &(old_id + 1).to_string(), "--grace", "1m"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("it was revoked at"));

    // Through the admin API, grace 0: the old key is denied at once.
    let (_, third) = s.key("acme/viewer", "ops");
    let third_id = s.json(["key", "list"]).as_array().unwrap().len() as u64;
    let (status, body) = server.admin(
        "POST",
        &format!("/admin/keys/{third_id}/rotate"),
        Some(json!({ "grace": "0" })),
    );
    assert_eq!(status, 201, "{body}");
    let successor = body["new"]["key"].as_str().unwrap();
    assert_eq!(decide(&server, &third)["reason"], "expired-key");
    assert_eq!(decide(&server, successor)["reason"], "allowed");
    let (status, body) = server.admin(
        "POST",
        &format!("/admin/keys/{third_id}/rotate"),
        Some(json!({ "grace": "1h" })),
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already rotated"),
        "{body}"
    );
    // No secret anywhere in the audit trail.
    let trail = String::from_utf8(
        s.keyscope(["--json", "audit", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for secret in [&old_key, &new_key, &third, &successor.to_owned()] {
        assert!(!trail.contains(secret.as_str()), "a key in the audit trail");
    }
    assert!(trail.contains("\"key.rotate\""), "{trail}");
}

#[test]
fn a_rotated_key_expires_on_time_with_the_database_stopped() {
    let cluster = Cluster::start();
    let s = Sandbox::on_postgres(&cluster);
    s.scope("acme", "viewer", "view", "");
    let (old_id, old_key) = s.key("acme/viewer", "ci");
    let server = s.serve(&[]);
    let (new_key, earliest, latest) = rotate(&s, old_id);
    wait_until(30, "the new key reaching serve", || {
        decide(&server, &new_key)["reason"] == "allowed"
    });
    cluster.stop_server();
    wait_until(30, "/readyz reporting the store stale", || {
        server.ready()["store"]["stale"] == true
    });
    let inside = watch_grace(&server, &old_key, &new_key, earliest, latest);
    assert!(inside > 0, "no answer came back inside the grace");
    assert_eq!(server.ready()["store"]["stale"], true, "still no database");
}

#[test]
fn a_rotated_key_expires_on_time_on_a_gateway_whose_control_plane_is_gone() {
    let fleet = crate::fleet::Fleet::new();
    fleet.sandbox.scope("acme", "viewer", "view", "");
    let (old_id, old_key) = fleet.sandbox.key("acme/viewer", "ci");
    let mut control_plane = fleet.control_plane(&[]);
    let url = control_plane.admin_url("/v1/bundle");
    let cache = fleet.sandbox.path("cache");
    let (_gateway_sandbox, gateway) = fleet.gateway(&url, "gw-1", &cache, &[]);
    let (new_key, earliest, latest) = rotate(&fleet.sandbox, old_id);
    wait_until(30, "the rotation's bundle reaching the gateway", || {
        decide(&gateway, &new_key)["reason"] == "allowed"
    });
    control_plane.stop();
    let inside = watch_grace(&gateway, &old_key, &new_key, earliest, latest);
    assert!(inside > 0, "no answer came back inside the grace");
}

/// `keyscope_usage_writes_total` from `/metrics`.
fn usage_writes(server: &Server) -> u64 {
    let text = http_client()
        .get(server.url("/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("keyscope_usage_writes_total "))
        .unwrap_or_else(|| panic!("no usage writes counter in {text}"))
        .parse()
        .unwrap()
}

#[test]
fn last_used_appears_after_traffic_and_ten_thousand_requests_cost_a_handful_of_writes() {
    const REQUESTS: u64 = 10_000;
    let s = Sandbox::new();
    s.scope("acme", "viewer", "view", "");
    let (busy_id, busy) = s.key("acme/viewer", "busy");
    s.key("acme/viewer", "idle");
    let interval = Duration::from_secs(2);
    let server = s.serve(&["--usage-flush-ms", "2000"]);
    let listed = String::from_utf8(s.keyscope(["key", "list"]).output().unwrap().stdout).unwrap();
    assert_eq!(listed.matches("never used").count(), 2, "{listed}");

    let started = Instant::now();
    let sent_before = now_ms();
    // Two clients on kept-alive connections, as a busy platform sends.
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let url = server.url("/v1/check");
            let busy = busy.clone();
            std::thread::spawn(move || {
                let client = http_client();
                for _ in 0..REQUESTS / 2 {
                    let body: Value = client
                        .post(&url)
                        .send_json(json!({ "key": busy, "app": "acme", "op": "agents.list" }))
                        .unwrap()
                        .body_mut()
                        .read_json()
                        .unwrap();
                    assert_eq!(body["allow"], true, "{body}");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let sent_after = now_ms();
    wait_until(60, "the uses reaching the store", || {
        s.json(["key", "list"])[0]["uses"] == REQUESTS
    });
    let elapsed = started.elapsed();
    let writes = usage_writes(&server);
    eprintln!("{REQUESTS} requests in {elapsed:?}: {writes} usage writes");
    // At most one write per interval (plus the one in flight at each end),
    // never one per request.
    let bound = elapsed.as_secs_f64() / interval.as_secs_f64() + 2.0;
    assert!(
        (writes as f64) <= bound,
        "{writes} writes in {elapsed:?} at one per {interval:?}"
    );
    assert!((1..REQUESTS / 100).contains(&writes), "{writes}");

    let keys = s.json(["key", "list"]);
    let last_used = keys[0]["last_used_at"].as_str().unwrap();
    assert!(
        last_used >= keyscope_store::audit::timestamp(sent_before).as_str()
            && last_used <= keyscope_store::audit::timestamp(sent_after).as_str(),
        "{last_used} outside the traffic"
    );
    assert_eq!(keys[1]["last_used_at"], Value::Null, "{keys}");
    assert_eq!(keys[1]["uses"], 0);
    let (_, listed) = server.admin("GET", "/admin/keys", None);
    assert_eq!(listed[0]["id"], busy_id);
    assert_eq!(listed[0]["uses"], REQUESTS, "{listed}");
    let listed = String::from_utf8(s.keyscope(["key", "list"]).output().unwrap().stdout).unwrap();
    assert!(
        listed.contains(&format!("last used {last_used} ({REQUESTS} uses)")),
        "{listed}"
    );
    assert!(listed.contains("never used"), "{listed}");

    // Uses counted just before a shutdown are written by it.
    assert_eq!(decide(&server, &busy)["allow"], true);
    let mut server = server;
    assert!(server.stop().success());
    assert_eq!(s.json(["key", "list"])[0]["uses"], REQUESTS + 1);
}

#[test]
fn a_gateway_reports_its_uses_to_the_control_plane_on_its_poll() {
    let fleet = crate::fleet::Fleet::new();
    fleet.sandbox.scope("acme", "viewer", "view", "");
    let (_, key) = fleet.sandbox.key("acme/viewer", "edge");
    let control_plane = fleet.control_plane(&["--usage-flush-ms", "200"]);
    let url = control_plane.admin_url("/v1/bundle");
    let cache = fleet.sandbox.path("cache");
    let (gateway_sandbox, gateway) = fleet.gateway(&url, "gw-1", &cache, &[]);
    for _ in 0..25 {
        assert_eq!(decide(&gateway, &key)["allow"], true);
    }
    // Any change ends the gateway's long poll; its next poll carries the
    // report.
    fleet.sandbox.scope("acme", "other", "none", "");
    let took = wait_until(60, "the gateway's uses reaching the store", || {
        fleet.sandbox.json(["key", "list"])[0]["uses"] == 25
    });
    eprintln!("gateway uses in the store {took:?} after the change");
    assert!(
        !gateway_sandbox.store().exists(),
        "the gateway opened no store"
    );
    // A malformed report is refused whole and named.
    let (_, token) = fleet.own_token("gw-1");
    let response = http_client()
        .get(&url)
        .header("authorization", format!("Bearer {token}"))
        .header("keyscope-usage", "1=5@1,x=1@1")
        .call()
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(fleet.sandbox.json(["key", "list"])[0]["uses"], 25);
}

#[test]
fn a_hostile_usage_report_cannot_make_a_key_unrevocable() {
    let fleet = crate::fleet::Fleet::new();
    fleet.sandbox.scope("acme", "viewer", "view", "");
    let (key_id, key) = fleet.sandbox.key("acme/viewer", "edge");
    let control_plane = fleet.control_plane(&["--usage-flush-ms", "100"]);
    let url = control_plane.admin_url("/v1/bundle");
    let cache = fleet.sandbox.path("cache");
    let (_gateway_sandbox, gateway) = fleet.gateway(&url, "gw-1", &cache, &[]);
    assert_eq!(decide(&gateway, &key)["allow"], true);
    let (_, token) = fleet.own_token("gw-1");
    let poll = |report: &str| {
        http_client()
            .get(&url)
            .header("authorization", format!("Bearer {token}"))
            .header("keyscope-usage", report)
            .call()
            .unwrap()
            .status()
            .as_u16()
    };
    // The overflow once made SQLite store a REAL, after which neither
    // `key revoke` nor `key list` worked: refused whole now.
    assert_eq!(poll(&format!("{key_id}=9223372036854775807@1")), 400);
    // The most an entry may carry, many times over, dated far ahead; and
    // forged ids, a report's worth at a time.
    let most = format!("{key_id}={}@{}", 1u64 << 32, u64::MAX);
    for _ in 0..20 {
        assert_eq!(poll(&most), 200);
    }
    for round in 0..20u64 {
        let forged: Vec<String> = (0..256)
            .map(|i| format!("{}=1@1", 1_000_000 + round * 256 + i))
            .collect();
        assert_eq!(poll(&forged.join(",")), 200);
    }
    wait_until(60, "the reported uses reaching the store", || {
        fleet.sandbox.json(["key", "list"])[0]["uses"]
            .as_u64()
            .is_some_and(|uses| uses >= 20 * (1u64 << 32))
    });
    let listed = fleet.sandbox.json(["key", "list"]);
    let last_used = listed[0]["last_used_at"].as_str().unwrap();
    assert!(
        last_used <= keyscope_store::audit::timestamp(now_ms()).as_str(),
        "a use dated ahead of the control plane's clock: {last_used}"
    );
    // The key stays revocable, and every gateway denies it after.
    let revoked = fleet
        .sandbox
        .keyscope(["key", "revoke", &key_id.to_string()])
        .output()
        .unwrap();
    assert!(revoked.status.success(), "{revoked:?}");
    wait_until(60, "the gateway denying the revoked key", || {
        decide(&gateway, &key)["allow"] == false
    });
    let (status, keys) = control_plane.admin("GET", "/admin/keys", None);
    assert_eq!(status, 200, "{keys}");
}

#[test]
fn a_revoked_admin_token_is_refused_at_once_and_its_changes_name_it() {
    let s = Sandbox::new();
    s.scope("acme", "seed", "none", "");
    let server = s.serve(&[]);
    let alice = s.json(["admin", "token", "create", "--name", "alice"]);
    let token = alice["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("ksadmin_"), "{alice}");
    // Shown once: the list never holds it.
    let listed = String::from_utf8(
        s.keyscope(["--json", "admin", "token", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(!listed.contains(&token), "{listed}");
    assert!(
        listed.contains("\"alice\"") && listed.contains("\"admin\""),
        "{listed}"
    );
    s.keyscope(["admin", "token", "create", "--name", "alice"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("already named `alice`"));

    let (status, scope) = server.admin_as(
        &token,
        "POST",
        "/admin/scopes",
        Some(json!({ "app": "acme", "name": "by-alice", "agents": "view" })),
    );
    assert_eq!(status, 201, "{scope}");
    let (status, _) = server.admin_as(&token, "GET", "/admin/tokens", None);
    assert_eq!(status, 200);

    s.keyscope(["admin", "token", "revoke", "alice"])
        .assert()
        .success();
    let (status, body) = server.admin_as(&token, "GET", "/admin/scopes", None);
    assert_eq!(status, 401, "a revoked token on its next request: {body}");
    // The server's own token still works.
    assert_eq!(server.admin("GET", "/admin/scopes", None).0, 200);
    s.keyscope(["admin", "token", "revoke", "alice"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "no live admin token named `alice`",
        ));

    let trail = s.json(["audit", "list"]);
    let entries = trail.as_array().unwrap();
    let actor_of = |action: &str| -> Vec<String> {
        entries
            .iter()
            .filter(|e| e["action"] == action)
            .map(|e| e["actor"].as_str().unwrap().to_owned())
            .collect()
    };
    let creators = actor_of("scope.create");
    assert!(
        creators[0].starts_with("os:"),
        "the CLI's seed: {creators:?}"
    );
    assert_eq!(creators[1], "admin:alice");
    let os = actor_of("admin-token.create");
    assert!(os.len() == 1 && os[0].starts_with("os:"), "{os:?}");
    assert_eq!(actor_of("admin-token.revoke").len(), 1);
    let created = entries
        .iter()
        .filter(|e| e["action"] == "scope.create")
        .nth(1)
        .unwrap();
    assert_eq!(created["after"]["name"], "by-alice", "{created}");
    assert_eq!(created["before"], Value::Null);
    assert!(!serde_json::to_string(&trail).unwrap().contains(&token));
    // The same trail through the admin API, verified, and from a time on.
    let (status, body) = server.admin("GET", "/admin/audit", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["verified"], true, "{body}");
    assert_eq!(body["entries"].as_array().unwrap().len(), entries.len());
    let since = entries.last().unwrap()["at"].as_str().unwrap();
    let (_, recent) = server.admin("GET", &format!("/admin/audit?since={since}"), None);
    assert_eq!(
        recent["entries"][0]["action"], "admin-token.revoke",
        "{recent}"
    );
    // The server's own token, revoked, does not come back at a restart.
    let mut server = server;
    assert!(server.stop().success());
    s.keyscope(["admin", "token", "revoke", "admin"])
        .assert()
        .success();
    s.keyscope([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ])
    .arg("--admin-token-file")
    .arg(s.path("admin-token"))
    .assert()
    .code(2)
    .stderr(predicates::str::contains(
        "a revoked token never comes back",
    ));
}

/// A scripted series of changes by the CLI and one module swap by the
/// admin API: every kind of change the trail records.
fn scripted_changes(s: &Sandbox) {
    s.scope("acme", "viewer", "view", "");
    s.keyscope(["scope", "update", "acme/viewer", "--agents", "edit"])
        .assert()
        .success();
    let (key_id, _) = s.key("acme/viewer", "k");
    s.keyscope(["key", "rotate", &key_id.to_string(), "--grace", "1m"])
        .assert()
        .success();
    s.keyscope(["key", "revoke", &key_id.to_string()])
        .assert()
        .success();
    s.keyscope(["limits", "set", "--keys-per-scope", "30"])
        .assert()
        .success();
    s.keyscope(["op", "set", "reports.read", "agents:view"])
        .assert()
        .success();
    s.keyscope([
        "route",
        "set",
        "GET",
        "/api/v2/apps/{app}/reports",
        "reports.read",
    ])
    .assert()
    .success();
    s.keyscope(["route", "remove", "GET", "/api/v2/apps/{app}/reports"])
        .assert()
        .success();
    s.keyscope(["admin", "token", "create", "--name", "bob"])
        .assert()
        .success();
    s.keyscope(["admin", "token", "revoke", "bob"])
        .assert()
        .success();
    let policy = s.path("policy.wasm");
    std::fs::write(&policy, keyscope_runtime::EMBEDDED_POLICY).unwrap();
    let mut server = s.serve(&["--policy", policy.to_str().unwrap()]);
    let (status, body) = server.admin("POST", "/admin/policy", None);
    assert_eq!(status, 200, "{body}");
    assert!(server.stop().success());
}

fn verify(s: &Sandbox) -> (i32, Value) {
    let output = s.keyscope(["--json", "audit", "verify"]).output().unwrap();
    (
        output.status.code().unwrap(),
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null),
    )
}

/// Runs `sql` on the sandbox's store, SQLite or PostgreSQL.
fn tamper(s: &Sandbox, cluster: Option<&Cluster>, sql: &str) {
    match cluster {
        None => rusqlite::Connection::open(s.store())
            .unwrap()
            .execute_batch(sql)
            .unwrap(),
        Some(cluster) => {
            let url = s.store_arg().into_string().unwrap();
            let db = url.rsplit('/').next().unwrap();
            let mut client = cluster.connect(db);
            client
                .batch_execute(&format!("SET search_path TO keyscope; {sql}"))
                .unwrap();
        }
    }
}

fn the_audit_trail_verifies_and_names_the_first_tampered_entry(cluster: Option<&Cluster>) {
    let fresh = || {
        let s = match cluster {
            None => Sandbox::new(),
            Some(cluster) => Sandbox::on_postgres(cluster),
        };
        scripted_changes(&s);
        s
    };
    let s = fresh();
    let (code, verified) = verify(&s);
    assert_eq!(code, 0, "{verified}");
    let count = verified["entries"].as_u64().unwrap();
    assert!(count >= 13, "{verified}");
    let trail = s.json(["audit", "list"]);
    let actions: Vec<&str> = trail
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "scope.create",
        "scope.update",
        "key.create",
        "key.rotate",
        "key.revoke",
        "limits.set",
        "operation.set",
        "route.set",
        "route.remove",
        "admin-token.create",
        "admin-token.revoke",
        "admin-token.install",
        "policy.swap",
    ] {
        assert!(actions.contains(&action), "no {action} in {actions:?}");
    }
    let since = trail[5]["at"].as_str().unwrap();
    let recent = s.json(["audit", "list", "--since", since]);
    assert!(recent.as_array().unwrap().len() <= trail.as_array().unwrap().len() - 5);
    assert!(recent[0]["at"].as_str().unwrap() >= since);
    s.keyscope(["audit", "list", "--since", "yesterday"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("RFC 3339"));

    // An edit.
    tamper(
        &s,
        cluster,
        "UPDATE audit SET actor = 'os:mallory' WHERE seq = 4",
    );
    let (code, broken) = verify(&s);
    assert_eq!((code, broken["entry"].as_u64()), (1, Some(4)), "{broken}");
    assert!(
        broken["error"].as_str().unwrap().contains("edited"),
        "{broken}"
    );
    s.keyscope(["audit", "verify"])
        .assert()
        .code(1)
        .stdout(predicates::str::contains("audit entry 4"));

    // A removal, in the middle and at the end.
    let s = fresh();
    tamper(&s, cluster, "DELETE FROM audit WHERE seq = 6");
    assert_eq!(verify(&s).1["entry"], 6);
    let s = fresh();
    tamper(
        &s,
        cluster,
        "DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit)",
    );
    assert_eq!(verify(&s).1["entry"].as_u64(), Some(count));

    // Two entries swapped.
    let s = fresh();
    tamper(
        &s,
        cluster,
        "UPDATE audit SET seq = -3 WHERE seq = 3; UPDATE audit SET seq = 3 WHERE seq = 7; \
         UPDATE audit SET seq = 7 WHERE seq = -3;",
    );
    assert_eq!(verify(&s).1["entry"], 3);
}

#[test]
fn the_audit_trail_verifies_and_names_the_first_tampered_entry_on_sqlite() {
    the_audit_trail_verifies_and_names_the_first_tampered_entry(None);
}

#[test]
fn the_audit_trail_verifies_and_names_the_first_tampered_entry_on_postgres() {
    the_audit_trail_verifies_and_names_the_first_tampered_entry(Some(pg::shared()));
}
