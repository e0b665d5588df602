//! Crash safety of the store: `keyscope key create` and `scope update` are
//! held at named points of their write path (`$KEYSCOPE_PAUSE_AT`, a fault
//! point of test builds) and killed there with SIGKILL, every time, however
//! busy the machine. After every kill the store must open, pass SQLite's
//! integrity check, hold no half-made scope or key, hold every key whose
//! command succeeded, and hold no key whose secret was never shown.

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Command, Stdio};

use keyscope_runtime::KeySecret;
use keyscope_store::{SqliteStore as Store, Store as _};

use crate::support::Sandbox;

/// Where a command can be held, in the order it passes them.
const KEY_POINTS: [&str; 4] = [
    "before-transaction",
    "in-transaction",
    "delivered",
    "committed",
];
const UPDATE_POINTS: [&str; 2] = ["in-transaction", "committed"];

/// A finished or killed command: its exit (None when killed) and stdout.
struct Run {
    exit: Option<i32>,
    stdout: String,
}

/// Runs `args` held at `pause` (and killed there), or to the end.
fn run(sandbox: &Sandbox, args: &[&str], pause: Option<&str>) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyscope"));
    command
        .env_remove("KEYSCOPE_STORE")
        .arg("--store")
        .arg(sandbox.store())
        .arg("--json")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(point) = pause {
        command.env("KEYSCOPE_PAUSE_AT", point);
    }
    let mut child = command.spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    if let Some(point) = pause {
        // Wait for the process to say it is held there; then kill it.
        let expected = format!("keyscope: paused at {point}");
        let mut line = String::new();
        loop {
            line.clear();
            let read = stderr.read_line(&mut line).unwrap();
            assert!(read > 0, "{args:?} ended before pausing at `{point}`");
            if line.trim_end() == expected {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
    }
    let status = child.wait().unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    Run {
        exit: status.code(),
        stdout,
    }
}

#[test]
fn kill_dash_nine_never_corrupts_the_store_or_loses_an_acknowledged_key() {
    const ROUNDS: usize = 6;
    let sandbox = Sandbox::new();
    sandbox.scope("acme", "bots", "view", "run");
    sandbox
        .keyscope(["limits", "set", "--keys-per-scope", "100000"])
        .assert()
        .success();
    // Every secret shown on stdout, and those whose command succeeded.
    let mut shown: Vec<String> = Vec::new();
    let mut acknowledged: Vec<String> = Vec::new();
    let mut kills = 0;
    let mut level = "view";
    for round in 0..ROUNDS {
        let key_runs = KEY_POINTS.iter().map(Some).chain([None]);
        for (i, pause) in key_runs.enumerate() {
            let name = format!("k{round}-{i}");
            let args = ["key", "create", "--scope", "acme/bots", "--name", &name];
            let run = run(&sandbox, &args, pause.copied());
            kills += usize::from(pause.is_some());
            let printed = serde_json::from_str::<serde_json::Value>(&run.stdout).ok();
            let secret = printed.as_ref().and_then(|p| p["key"].as_str());
            // Nothing is shown before the key exists in the transaction;
            // it is shown before the commit.
            let shown_expected = matches!(pause, Some(&"delivered" | &"committed") | None);
            assert_eq!(
                secret.is_some(),
                shown_expected,
                "{pause:?}: {}",
                run.stdout
            );
            if let Some(secret) = secret {
                shown.push(secret.to_owned());
                if run.exit == Some(0) {
                    acknowledged.push(secret.to_owned());
                }
            }
            let stored = whole_store(&sandbox, &format!("round {round}, {pause:?}"));
            let is_stored = |secret: &str| {
                let digest = KeySecret::parse(secret).unwrap().digest();
                stored.iter().any(|(d, revoked)| *d == digest && !revoked)
            };
            // Killed after the commit: stored. Killed before it: not.
            if let Some(secret) = secret {
                assert_eq!(
                    is_stored(secret),
                    matches!(pause, Some(&"committed") | None),
                    "round {round}, {pause:?}"
                );
            }
            for secret in &acknowledged {
                assert!(
                    is_stored(secret),
                    "round {round}: an acknowledged key is lost"
                );
            }
            // No key is in the store whose secret was never shown.
            assert_eq!(
                stored.len(),
                shown.iter().filter(|secret| is_stored(secret)).count(),
                "round {round}, {pause:?}: a key nobody saw"
            );
        }
        for point in UPDATE_POINTS {
            let next =
                ["none", "view", "edit", "full"][(round + usize::from(point == "committed")) % 4];
            let args = ["scope", "update", "acme/bots", "--agents", next];
            run(&sandbox, &args, Some(point));
            kills += 1;
            whole_store(&sandbox, &format!("round {round}, update {point}"));
            if point == "committed" {
                level = next;
            }
            let scope = Store::open_existing(sandbox.store())
                .unwrap()
                .scope(&"acme/bots".parse().unwrap())
                .unwrap();
            assert_eq!(
                scope.agents.to_string(),
                level,
                "round {round}, update {point}"
            );
        }
    }
    assert_eq!(acknowledged.len(), ROUNDS);
    eprintln!(
        "crash loop: {kills} kills at {} named points, 0 corrupted stores, {} keys shown, \
         {} acknowledged, 0 lost, 0 unseen",
        KEY_POINTS.len() + UPDATE_POINTS.len(),
        shown.len(),
        acknowledged.len()
    );
}

/// Checks that the store opens and is whole; its keys as (digest, revoked).
fn whole_store(sandbox: &Sandbox, at: &str) -> Vec<(keyscope_runtime::KeyDigest, bool)> {
    let conn = rusqlite::Connection::open(sandbox.store()).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok", "{at}");
    let orphans: i64 = conn
        .query_row(
            "SELECT count(*) FROM keys k LEFT JOIN scopes s ON s.id = k.scope_id \
             WHERE s.id IS NULL OR length(k.digest) != 32 OR k.prefix = ''",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0, "{at}: a half-made key");
    drop(conn);
    let mut store = Store::open_existing(sandbox.store()).unwrap();
    let data = store.snapshot_data().unwrap().data;
    data.validate().unwrap();
    assert_eq!(data.scopes.len(), 1, "{at}");
    data.keys
        .iter()
        .map(|entry| (entry.digest, entry.revoked))
        .collect()
}
