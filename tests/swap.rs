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
    // A deadline no busy machine misses for the good module's decisions;
    // the looping one is stopped by it all the same, only later.
    let options = LiveOptions {
        limits: keyscope_runtime::Limits {
            evaluate_timeout: Duration::from_secs(5),
            ..keyscope_runtime::Limits::default()
        },
        ..LiveOptions::default()
    };
    let policy = Arc::new(LivePolicy::new(None, &snapshot, options).unwrap());
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

/// A world of scopes and keys that changes step by step, as a store does:
/// its host's copy plans each change as a contract delta.
struct Changing {
    held: keyscope_policy::Snapshot,
    data: SnapshotData,
    next_key: u64,
    next_scope: u64,
    seed: u64,
}

impl Changing {
    fn new() -> Self {
        let scopes = (1..=5)
            .map(|id| ScopeEntry {
                id,
                app: ["acme", "globex"][id as usize % 2].to_owned(),
                agents: AgentsLevel::ALL[id as usize % 4],
                runtime: RuntimeSet::EMPTY,
            })
            .collect();
        let keys = (1..=200).map(|id| Self::key(id, 1 + id % 5)).collect();
        let data = SnapshotData {
            operations: default_operations(),
            scopes,
            keys,
            routes: keyscope_policy::routes::default_routes(),
        };
        Self {
            held: keyscope_policy::Snapshot::from_data(&data).unwrap(),
            data,
            next_key: 201,
            next_scope: 6,
            seed: 0x2545_f491_4f6c_dd1d,
        }
    }

    fn key(id: u64, scope_id: u64) -> KeyEntry {
        use sha2::Digest as _;
        KeyEntry {
            digest: keyscope_policy::KeyDigest(sha2::Sha256::digest(id.to_le_bytes()).into()),
            id,
            scope_id,
            revoked: false,
            not_after: None,
        }
    }

    fn random(&mut self, below: u64) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed % below
    }

    /// One change: a key revoked, a key created, a scope edited, or a new
    /// scope with a key. Returns the delta and the whole snapshot after it.
    fn step(&mut self) -> (Vec<u8>, Vec<u8>) {
        let mut changes = keyscope_policy::kept::SnapshotChanges::default();
        match self.random(4) {
            0 => {
                let i = self.random(self.data.keys.len() as u64) as usize;
                changes.keys.push(KeyEntry {
                    revoked: true,
                    ..self.data.keys[i].clone()
                });
            }
            1 => {
                let i = self.random(self.data.scopes.len() as u64) as usize;
                let scope = self.data.scopes[i].id;
                changes.keys.push(Self::key(self.next_key, scope));
                self.next_key += 1;
            }
            2 => {
                let i = self.random(self.data.scopes.len() as u64) as usize;
                let mut scope = self.data.scopes[i].clone();
                scope.agents = AgentsLevel::ALL[self.random(4) as usize];
                changes.scopes.push((scope.id, Some(scope)));
            }
            _ => {
                let scope = ScopeEntry {
                    id: self.next_scope,
                    app: format!("app{}", self.next_scope),
                    agents: AgentsLevel::Full,
                    runtime: RuntimeSet::EMPTY,
                };
                self.next_scope += 1;
                changes.keys.push(Self::key(self.next_key, scope.id));
                self.next_key += 1;
                changes.scopes.push((scope.id, Some(scope)));
            }
        }
        for (id, scope) in &changes.scopes {
            self.data.scopes.retain(|s| s.id != *id);
            self.data.scopes.extend(scope.clone());
        }
        for key in &changes.keys {
            self.data.keys.retain(|k| k.digest != key.digest);
            self.data.keys.push(key.clone());
        }
        let delta = self.held.delta_for(&changes).unwrap();
        self.held.commit(delta.plan).unwrap();
        let whole = self.data.encode().unwrap();
        assert_eq!(
            self.held.to_bytes().unwrap(),
            whole,
            "the delta's result is the rebuild"
        );
        (delta.bytes, whole)
    }

    /// Every key of the world decides through `worker` as the native rules
    /// decide on the snapshot built whole.
    fn agrees(&self, worker: &mut keyscope_runtime::Worker, whole: &[u8]) {
        let rebuilt = keyscope_policy::Snapshot::decode(whole).unwrap();
        for key in &self.data.keys {
            for app in ["acme", "globex", "app7"] {
                let request = keyscope_policy::Request {
                    credential: keyscope_policy::Credential::Digest(key.digest),
                    app,
                    op: "agents.update",
                    now: keyscope_runtime::cases::CASE_NOW,
                };
                let expected =
                    keyscope_policy::rules::decide(Some(&rebuilt), &rebuilt.resolve(&request));
                let got = worker.evaluate(&request).decision;
                assert_eq!(got, expected, "key {} in {app}", key.id);
            }
        }
    }
}

#[test]
fn deltas_take_every_worker_to_the_state_a_rebuild_gives() {
    let mut world = Changing::new();
    let policy = live(&world.data.encode().unwrap());
    let (mut eager, mut lagging) = (policy.worker(), policy.worker());
    for step in 1..=40 {
        let (delta, whole) = world.step();
        let generation = policy
            .swap_delta(&delta, || panic!("the delta applies"))
            .unwrap();
        assert_eq!(generation.deltas.len(), step);
        assert_eq!(
            generation.snapshot_info.digest[..],
            whole[whole.len() - 32..]
        );
        world.agrees(&mut eager, &whole);
        // The other worker catches up seven deltas at a time.
        if step % 7 == 0 {
            world.agrees(&mut lagging, &whole);
        }
    }
    let stats = policy.stats();
    assert_eq!(stats.deltas_applied.load(Ordering::Relaxed), 40);
    assert_eq!(stats.deltas_refused.load(Ordering::Relaxed), 0);
}

#[test]
fn the_prover_warms_after_a_full_load_and_follows_the_deltas() {
    let mut world = Changing::new();
    let policy = Arc::new(
        LivePolicy::new(
            None,
            &world.data.encode().unwrap(),
            LiveOptions {
                deltas: true,
                ..LiveOptions::default()
            },
        )
        .unwrap(),
    );
    // Warmed on a thread of its own: polled, with a generous deadline.
    let started = std::time::Instant::now();
    while !policy.prover_ready() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the prover never warmed"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    for _ in 0..3 {
        let (delta, _) = world.step();
        policy
            .swap_delta(&delta, || panic!("the delta applies"))
            .unwrap();
        assert!(policy.prover_ready(), "the prover proved it and holds it");
    }
    // A delta refused, and its whole state refused too (found by review):
    // the prover was spent and no thread warms another, so readiness must
    // not wait for one. The next delta builds its own.
    let before = policy.current().number;
    assert!(policy.swap_delta(b"not a delta", Vec::new).is_err());
    assert_eq!(
        policy.current().number,
        before,
        "the last good state serves"
    );
    assert!(policy.prover_ready());
    let (delta, _) = world.step();
    policy
        .swap_delta(&delta, || panic!("the delta applies"))
        .unwrap();
    assert!(policy.prover_ready());
    // Without deltas there is no prover to wait for.
    assert!(live(&world.data.encode().unwrap()).prover_ready());
}

#[test]
fn a_module_swap_keeps_the_deltas_applied_since_the_last_full_load() {
    // Found by review: a module alone (SIGHUP, the admin reload) went live
    // on the last full snapshot, and every key revoked since came back.
    let mut world = Changing::new();
    let policy = live(&world.data.encode().unwrap());
    let mut worker = policy.worker();
    let mut whole = Vec::new();
    for _ in 0..12 {
        let (delta, after) = world.step();
        policy
            .swap_delta(&delta, || panic!("the delta applies"))
            .unwrap();
        whole = after;
    }
    assert!(
        world.data.keys.iter().any(|key| key.revoked),
        "the steps revoked a key"
    );
    for module in [EMBEDDED_POLICY.to_vec(), twin_module()] {
        let generation = policy.swap_module(&module).unwrap();
        assert_eq!(generation.deltas.len(), 12, "the deltas are kept");
        assert_eq!(
            generation.snapshot_info.digest[..],
            whole[whole.len() - 32..],
            "the new module decides on the current state"
        );
        world.agrees(&mut worker, &whole);
        // A worker that starts now loads the full snapshot and the deltas.
        world.agrees(&mut policy.worker(), &whole);
    }
}

#[test]
fn a_gap_or_a_mismatch_loads_whole_is_counted_and_decides_right() {
    let mut world = Changing::new();
    let policy = live(&world.data.encode().unwrap());
    let mut worker = policy.worker();
    // A gap: the second change's delta, the first never applied.
    let (_, _) = world.step();
    let (second, whole) = world.step();
    let generation = policy.swap_delta(&second, || whole.clone()).unwrap();
    assert!(generation.deltas.is_empty(), "loaded whole");
    assert_eq!(
        generation.snapshot_info.digest[..],
        whole[whole.len() - 32..]
    );
    world.agrees(&mut worker, &whole);
    // A mismatch: the next delta with its result digest altered.
    let (mut third, whole) = world.step();
    third[keyscope_policy::delta::DELTA_HEADER_LEN - 1] ^= 1;
    policy.swap_delta(&third, || whole.clone()).unwrap();
    world.agrees(&mut worker, &whole);
    let stats = policy.stats();
    assert_eq!(stats.deltas_refused.load(Ordering::Relaxed), 2);
    assert_eq!(stats.deltas_applied.load(Ordering::Relaxed), 0);
    let refused: Vec<_> = policy
        .history()
        .into_iter()
        .filter(|record| record.kind == "delta")
        .map(|record| record.outcome)
        .collect();
    assert!(
        refused[0].contains("another snapshot than the one loaded"),
        "{refused:?}"
    );
    assert!(
        refused[1].contains("does not have the digest it names"),
        "{refused:?}"
    );
    // And the chain starts again from the whole snapshot.
    let (fourth, whole) = world.step();
    assert_eq!(
        policy
            .swap_delta(&fourth, || panic!("applies"))
            .unwrap()
            .deltas
            .len(),
        1
    );
    world.agrees(&mut worker, &whole);
}
