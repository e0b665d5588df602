//! Crash safety of the store: `keyscope key create` and `scope update` are
//! killed with SIGKILL at random moments, and after every kill the store
//! must open, pass SQLite's integrity check, hold every key whose secret was
//! printed, and hold no half-made scope or key.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use keyscope::{KeySecret, Store};
use rand::Rng as _;

use crate::support::Sandbox;

#[test]
fn kill_dash_nine_never_corrupts_the_store_or_loses_an_acknowledged_key() {
    const KILLS: usize = 120;
    let sandbox = Sandbox::new();
    sandbox.scope("acme", "bots", "view", "run");
    sandbox
        .keyscope(["limits", "set", "--keys-per-scope", "100000"])
        .assert()
        .success();
    // Kill within 1.5 times what a whole run takes here, so that most kills
    // land mid-run, and some runs finish, however fast or loaded the machine.
    let run_time = (0..3)
        .map(|i| {
            let started = std::time::Instant::now();
            sandbox
                .keyscope(["key", "create", "--scope", "acme/bots", "--name"])
                .arg(format!("timing-{i}"))
                .assert()
                .success();
            started.elapsed()
        })
        .max()
        .unwrap();
    let mut rng = rand::rng();
    let mut acknowledged: Vec<String> = Vec::new();
    let mut killed_mid_run = 0;
    // The scope's level may be any of these: the last acknowledged update's,
    // or that of a later update killed before it was acknowledged.
    let mut possible_levels = vec!["view"];
    for round in 0..KILLS {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keyscope"));
        command
            .env_remove("KEYSCOPE_STORE")
            .arg("--store")
            .arg(sandbox.store())
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let level = ["none", "view", "edit", "full"][round % 4];
        let updating = round % 3 == 2;
        if updating {
            command.args(["scope", "update", "acme/bots", "--agents", level]);
        } else {
            command.args(["key", "create", "--scope", "acme/bots", "--name"]);
            command.arg(format!("k{round}"));
        }
        let mut child = command.spawn().unwrap();
        std::thread::sleep(rng.random_range(Duration::ZERO..run_time * 3 / 2));
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        let mut stdout = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        // What the process printed was acknowledged to its user.
        let printed = serde_json::from_str::<serde_json::Value>(&stdout).ok();
        if let Some(key) = printed.as_ref().and_then(|p| p["key"].as_str()) {
            acknowledged.push(key.to_owned());
        }
        if updating {
            if printed.is_some_and(|p| p["agents"] == level) {
                possible_levels = vec![level];
            } else {
                possible_levels.push(level);
            }
        }

        // After every kill: the store opens and is whole.
        let conn = rusqlite::Connection::open(sandbox.store()).unwrap();
        let integrity: String = conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap();
        assert_eq!(integrity, "ok", "round {round}");
        let orphans: i64 = conn
            .query_row(
                "SELECT count(*) FROM keys k LEFT JOIN scopes s ON s.id = k.scope_id \
                 WHERE s.id IS NULL OR length(k.digest) != 32 OR k.prefix = ''",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(orphans, 0, "round {round}: a half-made key");
        drop(conn);
        let mut store = Store::open_existing(sandbox.store()).unwrap();
        let data = store.snapshot_data().unwrap();
        data.validate().unwrap();
        assert_eq!(data.scopes.len(), 1, "round {round}");
        for key in &acknowledged {
            let digest = KeySecret::parse(key).unwrap().digest();
            let found = data.keys.iter().find(|entry| entry.digest == digest);
            assert!(
                found.is_some_and(|entry| !entry.revoked),
                "round {round}: an acknowledged key is lost"
            );
        }
        let scope = store.scope(&"acme/bots".parse().unwrap()).unwrap();
        let agents = scope.agents.to_string();
        assert!(
            possible_levels.contains(&agents.as_str()),
            "round {round}: the scope is at `{agents}`, not one of {possible_levels:?}"
        );
    }
    // The kills must have landed mid-run often enough to mean something.
    assert!(
        killed_mid_run >= KILLS / 4,
        "only {killed_mid_run} kills landed mid-run"
    );
    // And some must have finished, or "no acknowledged key lost" says nothing.
    assert!(
        acknowledged.len() >= 5,
        "only {} keys were acknowledged",
        acknowledged.len()
    );
    eprintln!(
        "crash loop: {KILLS} kills, {killed_mid_run} mid-run, 0 corrupted stores, \
         {} acknowledged keys, 0 lost",
        acknowledged.len()
    );
}
