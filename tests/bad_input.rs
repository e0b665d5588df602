//! Bad input gets a clear error naming the problem and exit 2, and loses
//! nothing.

use predicates::str::contains;

use crate::support::{Sandbox, policy_fixture};

fn sandbox_with_snapshot() -> (Sandbox, String, Vec<u8>) {
    let s = Sandbox::new();
    s.scope("acme", "viewer", "view", "");
    let (_, key) = s.key("acme/viewer", "k");
    s.keyscope(["snapshot", "export", "-o"])
        .arg(s.path("good.snap"))
        .assert()
        .success();
    let bytes = std::fs::read(s.path("good.snap")).unwrap();
    (s, key, bytes)
}

#[test]
fn an_exported_snapshot_decides_like_the_store() {
    let (s, key, _) = sandbox_with_snapshot();
    s.keyscope(["eval", "--app", "acme", "--op", "agents.get", "--snapshot"])
        .arg(s.path("good.snap"))
        .env("KEYSCOPE_API_KEY", &key)
        .assert()
        .code(0);
    // Through stdout too, byte for byte.
    let out = s.keyscope(["snapshot", "export"]).assert().success();
    assert_eq!(
        out.get_output().stdout,
        std::fs::read(s.path("good.snap")).unwrap()
    );
}

#[test]
fn corrupted_or_truncated_snapshots_are_refused() {
    let (s, key, good) = sandbox_with_snapshot();
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("flipped.snap", flipped, "corrupted snapshot"),
        (
            "truncated.snap",
            good[..good.len() - 10].to_vec(),
            "truncated snapshot",
        ),
        ("empty.snap", Vec::new(), "not a keyscope snapshot"),
        (
            "text.snap",
            b"{\"keys\": []}".to_vec(),
            "not a keyscope snapshot",
        ),
    ];
    for (name, bytes, message) in cases {
        let path = s.path(name);
        std::fs::write(&path, bytes).unwrap();
        s.keyscope(["eval", "--app", "acme", "--op", "agents.get", "--snapshot"])
            .arg(&path)
            .env("KEYSCOPE_API_KEY", &key)
            .assert()
            .code(2)
            .stdout("")
            .stderr(contains(message))
            .stderr(contains(name));
    }
    let mut newer = good;
    newer[8] = 9;
    std::fs::write(s.path("newer.snap"), newer).unwrap();
    s.keyscope(["eval", "--app", "acme", "--op", "agents.get", "--snapshot"])
        .arg(s.path("newer.snap"))
        .assert()
        .code(2)
        .stderr(contains("unsupported snapshot format version 9"));
}

#[test]
fn a_policy_that_is_not_a_keyscope_component_is_refused() {
    let s = Sandbox::new();
    s.scope("acme", "viewer", "view", "");
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "notes.txt",
            b"hello".to_vec(),
            "not a WebAssembly component",
        ),
        (
            "core.wasm",
            policy_fixture("core-module"),
            "it is a core Wasm module",
        ),
        (
            "other-world.wasm",
            policy_fixture("other-world"),
            "does not implement the `keyscope:policy/policy` world",
        ),
        (
            "imports.wasm",
            policy_fixture("imports-wasi"),
            "imports `wasi:random/random@0.2.0`",
        ),
    ];
    for (name, bytes, message) in cases {
        let path = s.path(name);
        std::fs::write(&path, bytes).unwrap();
        for args in [
            &["eval", "--app", "acme", "--op", "agents.get", "--policy"][..],
            &["policy", "info", "--policy"],
        ] {
            s.keyscope(args)
                .arg(&path)
                .assert()
                .code(2)
                .stdout("")
                .stderr(contains(message));
        }
    }
    s.keyscope(["eval", "--app", "acme", "--op", "agents.get", "--policy"])
        .arg(s.path("missing.wasm"))
        .assert()
        .code(2)
        .stderr(contains("missing.wasm"));
}

#[test]
fn a_file_that_is_not_a_keyscope_store_is_refused_and_left_untouched() {
    let s = Sandbox::new();
    let path = s.path("notes.db");
    let text = b"these are my notes, not a database\n".repeat(100);
    std::fs::write(&path, &text).unwrap();
    for args in [
        &["scope", "create", "--app", "acme", "--name", "x"][..],
        &["scope", "list"],
        &["limits", "set", "--keys-per-scope", "3"],
    ] {
        assert_cmd::Command::new(env!("CARGO_BIN_EXE_keyscope"))
            .arg("--store")
            .arg(&path)
            .args(args)
            .assert()
            .code(2)
            .stderr(contains(
                "is not a keyscope store: it is not an SQLite database",
            ));
    }
    assert_eq!(std::fs::read(&path).unwrap(), text);

    // An SQLite database of some other application.
    let other = s.path("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    let before = std::fs::read(&other).unwrap();
    assert_cmd::Command::new(env!("CARGO_BIN_EXE_keyscope"))
        .arg("--store")
        .arg(&other)
        .args(["scope", "create", "--app", "acme", "--name", "x"])
        .assert()
        .code(2)
        .stderr(contains("an SQLite database of another application"));
    assert_eq!(std::fs::read(&other).unwrap(), before);
    let entries = std::fs::read_dir(s.dir.path()).unwrap().count();
    assert_eq!(entries, 2, "no journal or WAL files may be left behind");
}

/// A store is a plain path: no SQLite URI or in-memory database around the
/// store's checks, no dangling link followed, no key pasted as a name, no
/// deadline past what a time can show; and a refused command that would
/// have created the store leaves no file.
#[test]
fn store_paths_names_and_deadlines_are_refused_in_words_and_leave_nothing() {
    let s = Sandbox::new();
    let keyscope = |store: &str, args: &[&str]| {
        assert_cmd::Command::new(env!("CARGO_BIN_EXE_keyscope"))
            .current_dir(s.dir.path())
            .arg("--store")
            .arg(store)
            .args(args)
            .assert()
    };
    let create = ["scope", "create", "--app", "acme", "--name", "x"];
    for store in [":memory:", "file:u.db?mode=rwc", "FILE:x.db"] {
        keyscope(store, &create)
            .code(2)
            .stderr(contains("SQLite URIs (file:…) and :memory: are not stores"));
    }
    std::os::unix::fs::symlink("missing.db", s.path("link.db")).unwrap();
    keyscope("link.db", &create)
        .code(2)
        .stderr(contains("a symbolic link to a file that does not exist"));
    for args in [
        &["admin", "token", "create", "--name", "bad name"][..],
        &["scope", "create", "--app", "bad app", "--name", "x"],
        &["route", "set", "GET", "no-slash", "agents.list"],
        &["limits", "set", "--scopes-per-app", "0"],
        &["limits", "set"],
    ] {
        keyscope("new.db", args).code(2);
        assert!(!s.path("new.db").exists(), "{args:?} left a store");
    }
    let entries: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["link.db"], "stray files");

    // Names shaped like keyscope's secrets, and deadlines past year 9999.
    s.scope("acme", "viewer", "view", "");
    let (_, key) = s.key("acme/viewer", "k");
    let store = s.store();
    let store = store.to_str().unwrap();
    for args in [
        &[
            "key",
            "create",
            "--scope",
            "acme/viewer",
            "--name",
            key.as_str(),
        ][..],
        &["scope", "create", "--app", key.as_str(), "--name", "x"],
        &["admin", "token", "create", "--name", "ksadmin_x"],
    ] {
        let output = keyscope(store, args).code(2);
        let stderr = String::from_utf8_lossy(&output.get_output().stderr).into_owned();
        assert!(stderr.contains("looks like a secret"), "{stderr}");
        assert!(!stderr.contains(&key[3..]), "{stderr}");
    }
    keyscope(
        store,
        &[
            "key",
            "create",
            "--scope",
            "acme/viewer",
            "--name",
            "far",
            "--expires-in",
            "100000000d",
        ],
    )
    .code(2)
    .stderr(contains("at most 9999-12-31T23:59:59.999Z"));
    let trail = s.json(["audit", "list"]);
    assert!(!trail.to_string().contains(&key[3..]), "{trail}");
}

#[test]
fn a_store_from_a_newer_keyscope_is_refused() {
    let s = Sandbox::new();
    s.scope("acme", "viewer", "view", "");
    rusqlite::Connection::open(s.store())
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    s.keyscope(["scope", "list"])
        .assert()
        .code(2)
        .stderr(contains(
            "schema version 99, newer than this keyscope understands (7)",
        ));
}

#[test]
fn a_malformed_key_is_a_deny_not_an_error() {
    let s = Sandbox::new();
    s.scope("acme", "viewer", "view", "");
    let (_, key) = s.key("acme/viewer", "k");
    let mut typo = key.clone().into_bytes();
    typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
    for bad in [
        String::from_utf8(typo).unwrap(),
        "ks_".to_owned(),
        "hunter2".to_owned(),
    ] {
        let (code, decision) = s.eval(&bad, "acme", "agents.get");
        assert_eq!(code, 1);
        assert_eq!(decision["reason"], "malformed-key");
        assert_eq!(decision["key_id"], serde_json::Value::Null);
    }
}

#[test]
fn bad_flags_are_usage_errors() {
    let s = Sandbox::new();
    s.keyscope(["key", "revoke", "seven"]).assert().code(2);
    s.keyscope(["scope", "show", "not a scope"])
        .assert()
        .code(2)
        .stderr(contains("no store"));
    s.scope("acme", "viewer", "view", "");
    s.keyscope(["scope", "show", "seven"])
        .assert()
        .code(2)
        .stderr(contains(
            "invalid scope `seven`: expected a scope id or APP/NAME",
        ));
    s.keyscope(["scope", "create", "--app", "ac/me", "--name", "x"])
        .assert()
        .code(2)
        .stderr(contains("invalid app `ac/me`"));
    s.keyscope(["scope", "update", "acme/viewer"])
        .assert()
        .code(2)
        .stderr(contains("nothing to change"));
}
