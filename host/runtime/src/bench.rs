//! A quick, self-contained measurement of the decision paths on this
//! machine (`keyscope bench`), and the synthetic world it and the criterion
//! benches decide in.

use std::time::{Duration, Instant};

use keyscope_keys::{self as keys, KeySecret};
use keyscope_policy::snapshot::{KeyEntry, ScopeEntry, SnapshotData, default_operations};
use keyscope_policy::{AgentsLevel, KeyDigest, Millis, Request, RuntimeSet, Snapshot, rules};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::component::PolicyComponent;
use crate::engine::Limits;
use crate::error::Result;

/// Scopes in the synthetic world, all in app `acme`.
pub const SCOPES: u64 = 20;
/// The scope of the held key: agents `full`, runtime `run,session-create`.
pub const HELD_SCOPE: u64 = 3;
/// The time the benchmarks ask at; one key in seven expires an hour later.
pub const NOW: Millis = 1_767_225_600_000;

/// A synthetic, store-shaped world: `SCOPES` scopes and `keys` keys (one in
/// ten revoked), of which the caller holds key 1. The other digests are
/// derived from their ids, so a million keys build quickly.
pub fn synthetic_world(keys: u64) -> (SnapshotData, KeySecret) {
    let held = KeySecret::generate();
    let scopes = (1..=SCOPES)
        .map(|id| ScopeEntry {
            id,
            app: "acme".to_owned(),
            agents: AgentsLevel::ALL[(id % 4) as usize],
            runtime: RuntimeSet::from_bits((id % 16) as u8).unwrap_or_default(),
        })
        .collect();
    let mut entries: Vec<KeyEntry> = (2..=keys.max(1))
        .map(|id| KeyEntry {
            digest: KeyDigest(Sha256::digest(id.to_le_bytes()).into()),
            id,
            scope_id: 1 + id % SCOPES,
            revoked: id % 10 == 0,
            not_after: (id % 7 == 0).then_some(NOW + 3_600_000),
        })
        .collect();
    entries.push(KeyEntry {
        digest: held.digest(),
        id: 1,
        scope_id: HELD_SCOPE,
        revoked: false,
        not_after: Some(NOW + 3_600_000),
    });
    let data = SnapshotData {
        operations: default_operations(),
        scopes,
        keys: entries,
        routes: keyscope_policy::routes::default_routes(),
    };
    (data, held)
}

/// One measured path.
#[derive(Debug, Clone, Serialize)]
pub struct PathFigures {
    /// What was measured.
    pub path: &'static str,
    /// Decisions per second over the whole run.
    pub decisions_per_second: f64,
    /// Median time per decision over samples, in nanoseconds.
    pub median_ns: f64,
    /// 99th percentile time per decision over samples, in nanoseconds.
    pub p99_ns: f64,
}

/// Measures, side by side: the native rules and the component (reused
/// instance) on the same resolved request; the native host path and the
/// component's (raw key, SHA-256, names resolved, decided); and
/// `evaluate-batch` (256 per call). Each runs for about `each`.
pub fn run(component: &PolicyComponent, keys: u64, each: Duration) -> Result<Vec<PathFigures>> {
    let (data, held) = synthetic_world(keys);
    let bytes = data.encode()?;
    let native = Snapshot::decode(&bytes)?;
    let mut instance = component.instantiate(Limits::default())?;
    instance.load_snapshot(&bytes)?;
    let raw = held.expose().to_owned();
    let request = Request {
        credential: keys::credential(Some(&raw)),
        app: "acme",
        op: "agents.update",
        now: NOW,
    };
    let resolved = native.resolve(&request);
    debug_assert_eq!(resolved, instance.catalogue().resolve(&request));
    let batch = vec![request; 256];
    Ok(vec![
        measure("native rules", each, 256, || {
            std::hint::black_box(rules::decide(
                Some(&native),
                std::hint::black_box(&resolved),
            ));
        }),
        measure("component", each, 256, || {
            std::hint::black_box(instance.evaluate_resolved(std::hint::black_box(&resolved)));
        }),
        measure("native host path (raw key)", each, 256, || {
            let credential = keys::credential(Some(std::hint::black_box(&raw)));
            let request = native.resolve(&Request {
                credential,
                ..request
            });
            std::hint::black_box(rules::decide(Some(&native), &request));
        }),
        measure("host path (raw key)", each, 256, || {
            let credential = keys::credential(Some(std::hint::black_box(&raw)));
            std::hint::black_box(instance.evaluate(&Request {
                credential,
                ..request
            }));
        }),
        measure_batch("batch of 256", each, || {
            std::hint::black_box(instance.evaluate_batch(&batch));
        }),
    ])
}

/// Samples of `per_sample` calls; each sample gives a time per decision.
fn measure(
    path: &'static str,
    each: Duration,
    per_sample: u32,
    mut decide: impl FnMut(),
) -> PathFigures {
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < each || samples.len() < 10 {
        let sample = Instant::now();
        for _ in 0..per_sample {
            decide();
        }
        samples.push(sample.elapsed().as_nanos() as f64 / f64::from(per_sample));
    }
    figures(path, samples, started.elapsed(), u64::from(per_sample))
}

/// Samples of one batch call of 256 decisions.
fn measure_batch(path: &'static str, each: Duration, mut decide: impl FnMut()) -> PathFigures {
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < each || samples.len() < 10 {
        let sample = Instant::now();
        decide();
        samples.push(sample.elapsed().as_nanos() as f64 / 256.0);
    }
    figures(path, samples, started.elapsed(), 256)
}

fn figures(
    path: &'static str,
    mut samples: Vec<f64>,
    total: Duration,
    per_sample: u64,
) -> PathFigures {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let decisions = samples.len() as f64 * per_sample as f64;
    PathFigures {
        path,
        decisions_per_second: decisions / total.as_secs_f64(),
        median_ns: at(0.5),
        p99_ns: at(0.99),
    }
}
