//! Building a snapshot, loading it into the component, and applying one
//! change to it as a contract delta, by size: what a change costs before
//! and after contract 0.4.
//!
//! `cargo bench -p keyscope-benches --bench snapshot` (1k, 1M and 10M keys;
//! `KEYSCOPE_BENCH_MAX_KEYS=1000000` stops at a million).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark that cannot set up should stop loudly"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use keyscope_benches::world;
use keyscope_policy::Snapshot;
use keyscope_policy::kept::SnapshotChanges;
use keyscope_policy::snapshot::KeyEntry;
use keyscope_runtime::{Limits, PolicyComponent, PolicyEngine};

/// Room for ten million keys (640 MB) in one instance, and time to load them.
fn limits() -> Limits {
    Limits {
        max_memory: 3 << 30,
        load_timeout: Duration::from_secs(600),
        ..Limits::default()
    }
}

fn snapshot(c: &mut Criterion) {
    let engine = PolicyEngine::new().unwrap();
    let component = PolicyComponent::embedded(&engine).unwrap();
    let max: u64 = std::env::var("KEYSCOPE_BENCH_MAX_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    for keys in [1_000u64, 1_000_000, 10_000_000]
        .into_iter()
        .filter(|&k| k <= max)
    {
        let world = world(keys);
        let started = Instant::now();
        let bytes = world.data.encode().unwrap();
        eprintln!("{keys} keys: built whole in {:?}", started.elapsed());
        if keys < 10_000_000 {
            group.bench_function(format!("build {keys} keys"), |b| {
                b.iter(|| world.data.encode().unwrap())
            });
        }
        let mut instance = component.instantiate(limits()).unwrap();
        let started = Instant::now();
        instance.load_snapshot(&bytes).unwrap();
        eprintln!(
            "{keys} keys: {} bytes; a full load took {:?}, peak guest memory {:.1} MiB",
            bytes.len(),
            started.elapsed(),
            instance.peak_memory() as f64 / f64::from(1 << 20)
        );
        group.bench_function(format!("load {keys} keys into the component"), |b| {
            b.iter(|| instance.load_snapshot(&bytes).unwrap())
        });

        // One revocation and its undoing, as contract deltas, planned on
        // the host's copy: applying both returns to the loaded state, so
        // the loop can run them again and again.
        let mut native = Snapshot::from_data(&world.data).unwrap();
        let held = world
            .data
            .keys
            .iter()
            .find(|key| !key.revoked)
            .unwrap()
            .clone();
        let change = |revoked: bool| SnapshotChanges {
            keys: vec![KeyEntry {
                revoked,
                ..held.clone()
            }],
            ..SnapshotChanges::default()
        };
        group.bench_function(format!("plan a revocation natively at {keys} keys"), |b| {
            b.iter(|| native.delta_for(&change(true)).unwrap())
        });
        let revoke = native.delta_for(&change(true)).unwrap();
        native.commit(revoke.plan).unwrap();
        let undo = native.delta_for(&change(false)).unwrap();
        native.commit(undo.plan).unwrap();
        let (revoke, undo): (Arc<[u8]>, Arc<[u8]>) = (revoke.bytes.into(), undo.bytes.into());
        group.bench_function(
            format!("apply a revocation delta in the component at {keys} keys"),
            |b| {
                b.iter_custom(|iterations| {
                    // A fresh chain each batch, so the replay list stays short.
                    instance.load_snapshot(&bytes).unwrap();
                    let started = Instant::now();
                    for _ in 0..iterations {
                        instance.apply_delta(Arc::clone(&revoke)).unwrap();
                        instance.apply_delta(Arc::clone(&undo)).unwrap();
                    }
                    started.elapsed() / 2
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
