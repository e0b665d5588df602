//! A key's not-after, set by the CLI and judged against each request's time,
//! through the CLI and through `keyscope serve`. No snapshot is published at
//! the deadline: the request's time alone turns the key away.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::support::{Sandbox, http_client};

/// How long the test keys live. Long enough that the first answer comes back
/// before the deadline even on a busy machine; the test says so if not.
const LIFETIME: Duration = Duration::from_secs(8);
/// How long after the deadline an answer may still take to say `expired-key`.
const GRACE: Duration = Duration::from_secs(60);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A key that expires `LIFETIME` from now, and the window its not-after
/// falls in (the clock read before and after the CLI made it).
fn expiring_key(s: &Sandbox, name: &str) -> (String, u64, u64) {
    let before = now_ms();
    let key = s.json([
        "key",
        "create",
        "--scope",
        "acme/viewer",
        "--name",
        name,
        "--expires-in",
        "8s",
    ]);
    let after = now_ms();
    let lifetime = LIFETIME.as_millis() as u64;
    let secret = key["key"].as_str().unwrap().to_owned();
    assert!(key["expires_at"].is_string(), "{key}");
    (secret, before + lifetime, after + lifetime)
}

/// Asks `ask` until it says `expired-key`, checking every answer against the
/// time it was asked: allowed while the key was surely valid, expired once it
/// surely was not. Returns how many answers came before the deadline.
fn watch_expiry(earliest: u64, latest: u64, mut ask: impl FnMut() -> Value) -> usize {
    let deadline = Instant::now() + LIFETIME + GRACE;
    let mut before = 0;
    loop {
        let asked = now_ms();
        let decision = ask();
        let answered = now_ms();
        let reason = decision["reason"].as_str().unwrap().to_owned();
        if answered < earliest {
            assert_eq!(reason, "allowed", "before the not-after: {decision}");
            before += 1;
        }
        if asked > latest {
            assert_eq!(reason, "expired-key", "after the not-after: {decision}");
        }
        match reason.as_str() {
            "expired-key" => {
                assert!(answered > earliest, "expired early: {decision}");
                assert_eq!(decision["allow"], false);
                assert!(decision["key_id"].is_u64(), "{decision}");
                return before;
            }
            "allowed" => {}
            other => panic!("unexpected reason `{other}`: {decision}"),
        }
        assert!(Instant::now() < deadline, "the key never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_expiring_key_is_allowed_before_its_not_after_and_expired_after_it() {
    let s = Sandbox::new();
    s.scope("acme", "viewer", "view", "");
    let (cli_key, earliest, latest) = expiring_key(&s, "cli");
    let listed = s.keyscope(["key", "list"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("expiring "),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );
    let before = watch_expiry(earliest, latest, || {
        s.eval(&cli_key, "acme", "agents.get").1
    });
    assert!(before > 0, "no answer came back before the deadline");
    let listed = s.keyscope(["key", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains("expired "));

    // Through serve: /v1/check by operation and by route, with no change to
    // the store at the deadline.
    let (serve_key, earliest, latest) = expiring_key(&s, "serve");
    let server = s.serve(&[]);
    let http = http_client();
    let check = |body: Value| -> Value {
        http.post(server.url("/v1/check"))
            .send_json(body)
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap()
    };
    let generation = check(json!({"key": serve_key, "app": "acme", "op": "agents.list"}));
    let before = watch_expiry(earliest, latest, || {
        check(json!({"key": serve_key, "app": "acme", "op": "agents.list"}))
    });
    assert!(before > 0, "no answer came back before the deadline");
    let by_route = check(json!({
        "key": serve_key,
        "method": "GET",
        "path": "/api/v2/apps/acme/agents",
    }));
    assert_eq!(by_route["reason"], "expired-key");
    assert_eq!(
        by_route["generation"], generation["generation"],
        "no new snapshot was needed"
    );
    // The proxy doors answer 401, as for any key that is no longer valid.
    let status = http
        .get(server.url("/auth"))
        .header("x-api-key", &serve_key)
        .header("X-Original-Method", "GET")
        .header("X-Original-URI", "/api/v2/apps/acme/agents")
        .call()
        .unwrap()
        .status();
    assert_eq!(status, 401);
}

#[test]
fn a_not_after_in_the_past_or_unparsable_is_refused() {
    let s = Sandbox::new();
    s.scope("acme", "viewer", "view", "");
    for (bad, why) in [
        ("0s", "expires at once"),
        ("10", "has no unit"),
        ("5y", "unknown unit `y`"),
        ("99999999999999999d", "too long"),
    ] {
        s.keyscope([
            "key",
            "create",
            "--scope",
            "acme/viewer",
            "--name",
            "k",
            "--expires-in",
            bad,
        ])
        .assert()
        .code(2)
        .stderr(predicates::str::contains(why));
    }
    assert_eq!(s.json(["key", "list"]).as_array().unwrap().len(), 0);
}

/// `created_at` and `expires_at` as milliseconds.
fn stamps(key: &Value) -> (u64, u64) {
    let ms = |field: &str| {
        keyscope_store::audit::parse_timestamp(key[field].as_str().unwrap())
            .unwrap_or_else(|| panic!("{field}: {key}"))
    };
    (ms("created_at"), ms("expires_at"))
}

/// A lifetime counts from the clock reading the key's creation is stamped
/// with, so even the shortest is never refused as already past, and a key
/// made `--expires-in D` is valid for exactly D: through `created + D - 1`.
#[test]
fn a_lifetime_counts_from_the_one_clock_reading_its_creation_is_stamped_with() {
    let s = Sandbox::new();
    s.scope("acme", "viewer", "view", "");
    for (i, (lifetime, ms)) in [
        ("1ms", 1),
        ("2ms", 2),
        ("90s", 90_000),
        ("30d", 2_592_000_000),
    ]
    .into_iter()
    .cycle()
    .take(24)
    .enumerate()
    {
        let key = s.json([
            "key",
            "create",
            "--scope",
            "acme/viewer",
            "--name",
            &format!("k{i}"),
            "--expires-in",
            lifetime,
        ]);
        let (created, not_after) = stamps(&key);
        assert_eq!(not_after, created + ms - 1, "{lifetime}: {key}");
        s.keyscope(["key", "revoke", &key["id"].to_string()])
            .assert()
            .success();
    }
}

/// `--grace 0`: the old key is denied for every request stamped at or
/// after the rotation's millisecond, and allowed just before it.
#[test]
fn grace_zero_denies_the_old_key_from_the_rotation_millisecond_on() {
    let s = Sandbox::new();
    s.scope("acme", "viewer", "view", "");
    let (id, old) = s.key("acme/viewer", "k");
    let rotated = s.json(["key", "rotate", &id.to_string(), "--grace", "0"]);
    let rotated_at =
        keyscope_store::audit::parse_timestamp(rotated["old"]["rotated_at"].as_str().unwrap())
            .unwrap();
    let (_, old_not_after) = stamps(&rotated["old"]);
    assert_eq!(old_not_after, rotated_at - 1, "{rotated}");
    let new = rotated["new"]["key"].as_str().unwrap();
    let (new_created, _) = stamps(&json!({
        "created_at": rotated["new"]["created_at"],
        "expires_at": rotated["new"]["created_at"],
    }));
    assert_eq!(new_created, rotated_at, "one clock reading: {rotated}");
    let stamp = keyscope_store::audit::timestamp;
    for (key, at, reason) in [
        (old.as_str(), rotated_at - 1, "allowed"),
        (old.as_str(), rotated_at, "expired-key"),
        (old.as_str(), rotated_at + 1, "expired-key"),
        (new, rotated_at, "allowed"),
    ] {
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
            .args(["--at", &stamp(at)])
            .write_stdin(format!("{key}\n"))
            .output()
            .unwrap();
        let decision: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(decision["reason"], reason, "at {}: {decision}", stamp(at));
    }
    let listed = s.json(["key", "list"]);
    assert_eq!(listed[0]["status"], "expired", "{listed}");
}

/// A key made with a lifetime is replaced by one with the same lifetime,
/// counted from the rotation; the old key keeps the grace (or its own
/// deadline, if sooner); a key valid until revoked is replaced by one.
#[test]
fn a_successor_lives_as_long_as_its_predecessor_counted_from_the_rotation() {
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
    let (created, not_after) = stamps(&key);
    let rotated = s.json(["key", "rotate", &key["id"].to_string(), "--grace", "1h"]);
    let (old_created, old_not_after) = stamps(&rotated["old"]);
    let (new_created, new_not_after) = stamps(&rotated["new"]);
    let rotated_at =
        keyscope_store::audit::parse_timestamp(rotated["old"]["rotated_at"].as_str().unwrap())
            .unwrap();
    assert_eq!(old_created, created);
    assert_eq!(new_created, rotated_at);
    assert_eq!(old_not_after, rotated_at + 3_600_000 - 1, "{rotated}");
    assert_eq!(
        new_not_after - new_created,
        not_after - created,
        "{rotated}"
    );
    assert!(new_not_after > not_after, "{rotated}");
    // Rotating the successor again: the same lifetime again.
    let again = s.json([
        "key",
        "rotate",
        &rotated["new"]["id"].to_string(),
        "--grace",
        "0",
    ]);
    let (c, n) = stamps(&again["new"]);
    assert_eq!(n - c, not_after - created, "{again}");
    // A grace past the key's own deadline ends at that deadline.
    let short = s.json([
        "key",
        "create",
        "--scope",
        "acme/viewer",
        "--name",
        "short",
        "--expires-in",
        "10m",
    ]);
    let (_, short_not_after) = stamps(&short);
    let rotated = s.json(["key", "rotate", &short["id"].to_string(), "--grace", "1h"]);
    assert_eq!(stamps(&rotated["old"]).1, short_not_after, "{rotated}");
    // Valid until revoked stays so.
    let (id, _) = s.key("acme/viewer", "forever");
    let rotated = s.json(["key", "rotate", &id.to_string(), "--grace", "1m"]);
    assert!(rotated["new"]["expires_at"].is_null(), "{rotated}");
}
