//! Hot swap under load, and a sandbox that contains hostile modules.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keyscope_policy::snapshot::{KeyEntry, ScopeEntry, SnapshotData, default_operations};
use keyscope_runtime::EMBEDDED_POLICY;
use keyscope_runtime::{
    AgentsLevel, KeySecret, LiveOptions, LivePolicy, Reason, Request, RuntimeSet, SwapError,
    SwapStep, keys,
};
use keyscope_test_artifacts as hostile;

use crate::support::policy_fixture;

/// The embedded module with a custom section appended: another digest, the
/// same behaviour. Swapping between the two is a real module swap.
pub(crate) fn twin_module() -> Vec<u8> {
    use wasm_encoder::Encode as _;
    let mut contents = Vec::new();
    "keyscope-test-twin".encode(&mut contents);
    contents.extend_from_slice(b"same logic, other digest");
    let mut bytes = EMBEDDED_POLICY.to_vec();
    bytes.push(0); // a custom section
    contents.len().encode(&mut bytes);
    bytes.extend_from_slice(&contents);
    bytes
}

/// Sets the flag when dropped, so that a failing swapper still stops the
/// threads that run until it is set.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A world with one key; `revoked` or `agents` change what it may do.
struct World {
    key: KeySecret,
}

impl World {
    fn new() -> Self {
        Self {
            key: KeySecret::generate(),
        }
    }

    fn snapshot(&self, agents: AgentsLevel, revoked: bool) -> Vec<u8> {
        SnapshotData {
            operations: default_operations(),
            scopes: vec![ScopeEntry {
                id: 1,
                app: "acme".to_owned(),
                agents,
                runtime: RuntimeSet::EMPTY,
            }],
            keys: vec![KeyEntry {
                digest: self.key.digest(),
                id: 1,
                scope_id: 1,
                revoked,
                not_after: None,
            }],
            routes: keyscope_policy::routes::default_routes(),
        }
        .encode()
        .unwrap()
    }

    fn request(&self, op: &'static str) -> Request<'_> {
        Request {
            credential: keys::credential(Some(self.key.expose())),
            app: "acme",
            op,
            now: keyscope_runtime::cases::CASE_NOW,
        }
    }
}

fn live(snapshot: &[u8]) -> Arc<LivePolicy> {
    Arc::new(LivePolicy::new(None, snapshot, LiveOptions::default()).unwrap())
}

#[test]
fn decisions_stay_correct_for_their_generation_while_everything_swaps() {
    let world = World::new();
    let editor = world.snapshot(AgentsLevel::Edit, false);
    let viewer = world.snapshot(AgentsLevel::View, false);
    let revoked = world.snapshot(AgentsLevel::Edit, true);
    let twin = twin_module();
    // This test checks which generation answered what, not deadlines: a
    // call's 100 ms deadline could pass while a busy machine has the thread
    // descheduled, and that deny is another test's business (faults.rs).
    let options = LiveOptions {
        limits: keyscope_runtime::Limits {
            evaluate_timeout: std::time::Duration::from_secs(60),
            ..keyscope_runtime::Limits::default()
        },
        ..LiveOptions::default()
    };
    let policy = Arc::new(LivePolicy::new(None, &editor, options).unwrap());
    // What each snapshot must answer, by the snapshot's digest.
    let expected: HashMap<[u8; 32], [Reason; 2]> = [
        (&editor, [Reason::Allowed, Reason::Allowed]),
        (&viewer, [Reason::Allowed, Reason::InsufficientPermission]),
        (&revoked, [Reason::RevokedKey, Reason::RevokedKey]),
    ]
    .into_iter()
    .map(|(bytes, reasons)| (SnapshotData::decode(bytes).unwrap().1.digest, reasons))
    .collect();
    let snapshots = [&editor, &viewer, &revoked];
    let stop = AtomicBool::new(false);

    let (swaps, workers) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let policy = Arc::clone(&policy);
                let (world, stop, expected) = (&world, &stop, &expected);
                scope.spawn(move || {
                    let mut worker = policy.worker();
                    let (mut decisions, mut generations) = (0u64, BTreeSet::new());
                    while !stop.load(Ordering::Relaxed) {
                        for (i, op) in ["agents.get", "agents.update"].into_iter().enumerate() {
                            let evaluated = worker.evaluate(&world.request(op));
                            // The answer must be the one of the snapshot of
                            // the very generation that took it.
                            let generation = worker.generation().unwrap();
                            assert_eq!(generation.number, evaluated.generation);
                            let want = expected[&generation.snapshot_info.digest][i];
                            assert_eq!(
                                evaluated.decision.reason, want,
                                "generation {} answered {op} wrongly",
                                generation.number
                            );
                            decisions += 1;
                            generations.insert(generation.number);
                        }
                    }
                    (decisions, generations.len())
                })
            })
            .collect();
        let _stop = StopOnDrop(&stop);
        let mut swaps = (0, 0);
        for round in 0..100 {
            let module: &[u8] = if round % 2 == 0 {
                &twin
            } else {
                EMBEDDED_POLICY
            };
            policy.swap_module(module).unwrap();
            swaps.0 += 1;
            policy.swap_snapshot(snapshots[round % 3]).unwrap();
            swaps.1 += 1;
        }
        stop.store(true, Ordering::Relaxed);
        let workers: Vec<(u64, usize)> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        (swaps, workers)
    });

    assert_eq!(swaps, (100, 100));
    for (decisions, generations) in workers {
        assert!(decisions > 200, "a worker took only {decisions} decisions");
        assert!(
            generations > 10,
            "a worker saw only {generations} generations"
        );
    }
    assert_eq!(policy.stats().policy_errors.load(Ordering::Relaxed), 0);
    assert_eq!(policy.current().number, 1 + 200);
}

#[test]
fn a_revocation_denies_every_request_that_starts_after_the_swap_returns() {
    let world = World::new();
    let live_key = world.snapshot(AgentsLevel::View, false);
    let revoked = world.snapshot(AgentsLevel::View, true);
    let policy = live(&live_key);
    let mut worker = policy.worker();
    for _ in 0..100 {
        policy.swap_snapshot(&live_key).unwrap();
        assert!(worker.evaluate(&world.request("agents.get")).decision.allow);
        policy.swap_snapshot(&revoked).unwrap();
        let evaluated = worker.evaluate(&world.request("agents.get"));
        assert_eq!(evaluated.decision.reason, Reason::RevokedKey);
        assert_eq!(evaluated.generation, policy.current().number);
    }
}

#[test]
fn hostile_modules_are_refused_while_the_old_generation_keeps_serving() {
    let world = World::new();
    let snapshot = world.snapshot(AgentsLevel::View, false);
    let policy = live(&snapshot);
    let cases: Vec<(&str, Vec<u8>, SwapStep)> = vec![
        ("loops forever", hostile::LOOP.to_vec(), SwapStep::SelfTest),
        ("grows memory", hostile::GROW.to_vec(), SwapStep::SelfTest),
        ("traps", hostile::TRAP.to_vec(), SwapStep::SelfTest),
        (
            "allows everything",
            hostile::ALLOW_ALL.to_vec(),
            SwapStep::SelfTest,
        ),
        (
            "reads an older snapshot format",
            hostile::OLD_READER.to_vec(),
            SwapStep::LoadSnapshot,
        ),
        (
            "imports WASI",
            policy_fixture("imports-wasi"),
            SwapStep::Validate,
        ),
        (
            "exports another world",
            policy_fixture("other-world"),
            SwapStep::Validate,
        ),
        (
            "exports an older interface version",
            policy_fixture("older-interface"),
            SwapStep::Validate,
        ),
        (
            "is a core module",
            policy_fixture("core-module"),
            SwapStep::Compile,
        ),
        ("is not Wasm", b"MZ\x90\x00".to_vec(), SwapStep::Compile),
    ];
    let before = policy.current().number;
    for (what, module, step) in cases {
        let (stop, ready) = (AtomicBool::new(false), AtomicBool::new(false));
        let served = std::thread::scope(|scope| {
            let _stop = StopOnDrop(&stop);
            let during = scope.spawn(|| {
                let mut worker = policy.worker();
                let mut served = 0;
                while !stop.load(Ordering::Relaxed) {
                    ready.store(true, Ordering::Relaxed);
                    let evaluated = worker.evaluate(&world.request("agents.get"));
                    assert_eq!(evaluated.decision.reason, Reason::Allowed, "during: {what}");
                    served += 1;
                }
                served
            });
            while !ready.load(Ordering::Relaxed) {
                std::thread::yield_now();
            }
            let error = policy.swap_module(&module).unwrap_err();
            stop.store(true, Ordering::Relaxed);
            match &error {
                SwapError::Refused { step: got, .. } => assert_eq!(*got, step, "{what}: {error}"),
                other => panic!("{what}: not a refused swap: {other}"),
            }
            during.join().unwrap()
        });
        assert!(served > 0, "{what}: nothing was served during the swap");
        let mut worker = policy.worker();
        assert!(
            worker.evaluate(&world.request("agents.get")).decision.allow,
            "after: {what}"
        );
        assert_eq!(policy.current().number, before, "{what} went live");
    }
    let history = policy.history();
    let refused = history.iter().filter(|r| r.generation.is_none()).count();
    assert_eq!(refused, 10);
    assert!(
        history
            .iter()
            .any(|r| r.outcome.contains("refused at step `self-test`"))
    );
    assert_eq!(policy.stats().swaps_refused.load(Ordering::Relaxed), 10);
}

#[test]
fn a_module_whose_snapshot_format_is_newer_than_it_reads_is_refused_at_load() {
    let world = World::new();
    let policy = live(&world.snapshot(AgentsLevel::View, false));
    let error = policy.swap_module(hostile::OLD_READER).unwrap_err();
    assert!(
        error.to_string().contains(&format!(
            "refused at step `load-snapshot`: unsupported snapshot format version {}",
            keyscope_policy::snapshot::FORMAT_VERSION
        )),
        "{error}"
    );
}

#[test]
fn a_runaway_module_forced_live_is_denied_within_a_bound() {
    let world = World::new();
    let policy = live(&world.snapshot(AgentsLevel::View, false));
    let mut worker = policy.worker();
    for (name, module) in [
        ("loop", hostile::LOOP),
        ("grow", hostile::GROW),
        ("trap", hostile::TRAP),
    ] {
        policy.force_publish_untested(module).unwrap();
        for _ in 0..3 {
            let started = Instant::now();
            let evaluated = worker.evaluate(&world.request("agents.get"));
            let took = started.elapsed();
            assert_eq!(evaluated.decision.reason, Reason::PolicyError, "{name}");
            assert!(!evaluated.decision.allow);
            // Bounded, not fast: unbounded, `loop` would never return. The
            // bound itself (the epoch deadline) is measured by `keyscope bench`.
            assert!(took < Duration::from_secs(30), "{name} took {took:?}");
        }
    }
    assert_eq!(policy.stats().policy_errors.load(Ordering::Relaxed), 9);
    // The process is healthy: a good module goes live and serves.
    policy.swap_module(EMBEDDED_POLICY).unwrap();
    assert!(worker.evaluate(&world.request("agents.get")).decision.allow);
}

#[test]
fn a_failed_first_generation_is_an_error() {
    let world = World::new();
    let snapshot = world.snapshot(AgentsLevel::View, false);
    let error =
        LivePolicy::new(Some(hostile::ALLOW_ALL), &snapshot, LiveOptions::default()).unwrap_err();
    assert!(
        matches!(
            error,
            SwapError::Refused {
                step: SwapStep::SelfTest,
                ..
            }
        ),
        "{error}"
    );
    let error = LivePolicy::new(None, b"not a snapshot", LiveOptions::default()).unwrap_err();
    assert!(
        matches!(
            error,
            SwapError::Refused {
                step: SwapStep::LoadSnapshot,
                ..
            }
        ),
        "{error}"
    );
}
