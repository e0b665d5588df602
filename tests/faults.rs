//! Fault injection: every step a decision or a swap depends on is made to
//! fail (host/src/fault.rs, armed per thread), and every decision taken
//! through a fault must be a deny; a swap through one must leave the
//! generation as it was. The decision log's failure is real: /dev/full.

use std::sync::Arc;

use keyscope_runtime::fault::{self, Fault};
use keyscope_runtime::{
    AgentsLevel, HttpRequest, KeySecret, LiveOptions, LivePolicy, Reason, Request, RuntimeSet,
    SwapError, SwapStep, keys,
};
use keyscope_serve::{RefreshError, Refresher};
use keyscope_store::{SqliteStore as Store, Store as _, StoreError};
use serde_json::{Value, json};

use crate::support::{Sandbox, http_client};

/// Disarms this thread's faults even when an assertion fails.
struct Disarm;

impl Drop for Disarm {
    fn drop(&mut self) {
        fault::disarm();
    }
}

/// A store with a key that may view agents in `acme`.
fn world() -> (tempfile::TempDir, Store, KeySecret, u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("keyscope.db")).unwrap();
    store
        .create_scope("acme", "viewer", AgentsLevel::View, RuntimeSet::EMPTY)
        .unwrap();
    let created = store
        .create_key(&"acme/viewer".parse().unwrap(), "k")
        .unwrap();
    let id = created.key.id;
    (dir, store, created.secret, id)
}

fn live(store: &mut Store) -> Arc<LivePolicy> {
    let snapshot = keyscope_store::snapshot::build(store).unwrap();
    Arc::new(LivePolicy::new(None, &snapshot, LiveOptions::default()).unwrap())
}

/// Asks, three ways, what the key may do: `agents.get` (allowed when no
/// fault is in the way) and `agents.delete` (never allowed).
fn ask_all(worker: &mut keyscope_runtime::Worker, key: &KeySecret) -> Vec<(bool, bool)> {
    let credential = keys::credential(Some(key.expose()));
    let get = Request {
        credential,
        app: "acme",
        op: "agents.get",
        now: keyscope_runtime::cases::CASE_NOW,
    };
    let delete = Request {
        op: "agents.delete",
        ..get
    };
    let mut answers = Vec::new();
    for request in [get, delete] {
        let decision = worker.evaluate(&request).decision;
        answers.push((decision.allow, request.op == "agents.get"));
        assert!(decision.allow || decision.reason != Reason::Allowed);
    }
    let batch = worker.evaluate_batch(&[get, delete]).decisions;
    answers.extend(batch.iter().zip([true, false]).map(|(d, ok)| (d.allow, ok)));
    let http = worker.evaluate_http(&HttpRequest {
        credential,
        method: keyscope_runtime::Method::Get,
        path: "/api/v2/apps/acme/agents/a1",
        now: keyscope_runtime::cases::CASE_NOW,
    });
    answers.push((http.decision.allow, true));
    answers
}

#[test]
fn every_fault_on_the_decision_path_denies() {
    let _disarm = Disarm;
    let (_dir, mut store, key, _) = world();
    let policy = live(&mut store);
    // The first worker serves with the instance that proved the generation;
    // take it, so that every worker below instantiates and loads its own.
    assert!(ask_all(&mut policy.worker(), &key)[0].0);
    let (mut injected, mut decisions, mut wrong_allows) = (0, 0, 0);
    for fault in [Fault::Instantiate, Fault::LoadSnapshot, Fault::EvaluateTrap] {
        let before = fault::injected(fault);
        fault::arm(fault, u32::MAX);
        // A new worker must instantiate and load: each decision meets the fault.
        let mut worker = policy.worker();
        for _ in 0..50 {
            for (allowed, _) in ask_all(&mut worker, &key) {
                decisions += 1;
                wrong_allows += usize::from(allowed);
            }
        }
        fault::disarm();
        injected += fault::injected(fault) - before;
        // Without the fault the same worker recovers, and is right again.
        for (allowed, should) in ask_all(&mut worker, &key) {
            assert_eq!(allowed, should, "after {fault:?}");
        }
    }
    // One trap in the middle of serving: that decision denies, the next are right.
    let mut worker = policy.worker();
    assert!(ask_all(&mut worker, &key)[0].0);
    fault::arm(Fault::EvaluateTrap, 1);
    let answers = ask_all(&mut worker, &key);
    assert_eq!(answers[0], (false, true), "the trapped decision is a deny");
    assert!(
        answers[1..]
            .iter()
            .all(|(allowed, should)| allowed == should)
    );
    assert_eq!(
        wrong_allows, 0,
        "{wrong_allows} of {decisions} decisions allowed through a fault"
    );
    // Four calls per round (two single, one batch, one HTTP), each meeting the fault.
    assert_eq!(injected, 3 * 50 * 4, "faults injected");
    eprintln!("decision path: {injected} faults injected, {decisions} decisions, 0 wrong allows");
}

#[test]
fn a_fault_in_any_swap_step_leaves_the_generation_unchanged() {
    let _disarm = Disarm;
    let twin = crate::swap::twin_module();
    let mut refused = 0;
    for fault in [
        Fault::Compile,
        Fault::Instantiate,
        Fault::LoadSnapshot,
        Fault::EvaluateTrap,
    ] {
        let (_dir, mut store, key, key_id) = world();
        let policy = live(&mut store);
        store.revoke_key(key_id).unwrap();
        let revoking = keyscope_store::snapshot::build(&mut store).unwrap();
        let expected_step = match fault {
            Fault::Compile => SwapStep::Compile,
            Fault::Instantiate => SwapStep::Instantiate,
            _ => SwapStep::LoadSnapshot,
        };
        for kind in ["module", "module+snapshot", "snapshot"] {
            if fault == Fault::Compile && kind == "snapshot" {
                continue; // a snapshot swap compiles nothing
            }
            let attempt = || match kind {
                "module" => policy.swap_module(&twin),
                "snapshot" => policy.swap_snapshot(&revoking),
                _ => policy.swap(&twin, &revoking),
            };
            fault::arm(fault, 1);
            let error = attempt().unwrap_err();
            fault::disarm();
            match &error {
                SwapError::Refused { step, .. } => {
                    assert_eq!(*step, expected_step, "{fault:?} {kind}");
                }
                other => panic!("{fault:?} {kind}: {other}"),
            }
            assert!(error.to_string().contains("injected fault"), "{error}");
            assert_eq!(policy.current().number, 1, "{fault:?} {kind} published");
            refused += 1;
            // The unchanged generation still decides as before, on a clean thread.
            let policy = Arc::clone(&policy);
            let key = key.clone();
            let answers = std::thread::spawn(move || ask_all(&mut policy.worker(), &key))
                .join()
                .unwrap();
            assert!(answers.iter().all(|(allowed, should)| allowed == should));
        }
        // Without the fault, the same swap goes through.
        policy.swap(&twin, &revoking).unwrap();
        assert_eq!(policy.current().number, 2);
    }
    eprintln!("swaps: {refused} faults injected, {refused} swaps refused, 0 published");
}

#[test]
fn a_store_read_fault_during_a_rebuild_keeps_the_last_generation() {
    let _disarm = Disarm;
    let (dir, mut store, key, key_id) = world();
    let policy = live(&mut store);
    let location = keyscope_store::Location::Sqlite(dir.path().join("keyscope.db"));
    let mut watched = keyscope_store::AnyStore::open_existing(&location).unwrap();
    let (builder, _) = keyscope_store::snapshot::Builder::new(&mut watched).unwrap();
    let refresher = Refresher::new(
        Arc::clone(&policy),
        watched,
        builder,
        location.to_string(),
        None,
        None,
        keyscope_runtime::files::MAX_POLICY_BYTES,
    );
    store.revoke_key(key_id).unwrap();
    for _ in 0..10 {
        keyscope_store::fault::arm_store_read(1);
        let error = refresher.refresh().unwrap_err();
        assert!(
            matches!(
                error,
                RefreshError::Store(StoreError::Injected("store-read"))
            ),
            "{error}"
        );
        assert_eq!(policy.current().number, 1);
        let freshness = refresher.freshness().unwrap();
        assert!(freshness.staleness.stale && freshness.staleness.stale_since_ms.is_some());
    }
    keyscope_store::fault::arm_store_read(0);
    // The change was not lost: the next poll picks it up.
    let generation = refresher.refresh().unwrap().unwrap();
    assert_eq!(generation.number, 2);
    assert!(!refresher.freshness().unwrap().staleness.stale);
    let answers = ask_all(&mut policy.worker(), &key);
    assert!(
        answers.iter().all(|(allowed, _)| !allowed),
        "a revoked key is allowed"
    );
}

#[test]
fn a_decision_log_that_cannot_be_written_changes_no_decision() {
    let sandbox = Sandbox::new();
    sandbox.scope("acme", "viewer", "view", "");
    let (_, key) = sandbox.key("acme/viewer", "k");
    let server = sandbox.serve(&["--decision-log", "/dev/full"]);
    let http = http_client();
    let mut wrong = 0;
    for round in 0..200 {
        let op = if round % 2 == 0 {
            "agents.get"
        } else {
            "agents.delete"
        };
        let decision: Value = http
            .post(server.url("/v1/check"))
            .send_json(json!({ "key": key, "app": "acme", "op": op }))
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        wrong += usize::from(decision["allow"] != (op == "agents.get"));
    }
    assert_eq!(wrong, 0);
    let stderr = std::fs::read_to_string(sandbox.path("serve.stderr")).unwrap();
    assert!(
        stderr.contains("the decision log cannot be written"),
        "{stderr}"
    );
}

#[test]
fn the_first_worker_of_a_generation_serves_with_the_instance_that_proved_it() {
    let _disarm = Disarm;
    let (_dir, mut store, key, key_id) = world();
    let policy = live(&mut store);
    store.revoke_key(key_id).unwrap();
    let revoking = keyscope_store::snapshot::build(&mut store).unwrap();
    let generation = policy.swap_snapshot(&revoking).unwrap();
    // With instantiating and loading both made to fail, the first worker
    // still serves the new generation: it loads nothing itself.
    fault::arm(Fault::Instantiate, u32::MAX);
    fault::arm(Fault::LoadSnapshot, u32::MAX);
    let mut first = policy.worker();
    let answers = ask_all(&mut first, &key);
    assert!(
        answers.iter().all(|(allowed, _)| !allowed),
        "the key is revoked"
    );
    assert_eq!(first.generation().unwrap().number, generation.number);
    // The instance is taken once: a second worker must make its own, and
    // meets the faults (a deny, never an allow).
    let mut second = policy.worker();
    let before = policy
        .stats()
        .policy_errors
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        ask_all(&mut second, &key)
            .iter()
            .all(|(allowed, _)| !allowed)
    );
    assert!(
        policy
            .stats()
            .policy_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            > before,
        "the second worker met the faults"
    );
}
