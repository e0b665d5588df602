//! Native rules against the component, on the same snapshot and requests.
//!
//! `cargo bench -p keyscope --bench evaluate`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark that cannot set up should stop loudly"
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyscope::{KeySecret, Limits, PolicyComponent, PolicyEngine, Request, RuntimeSet, keys};
use keyscope_policy::snapshot::{KeyEntry, ScopeEntry, SnapshotData, default_operations};
use keyscope_policy::{AgentsLevel, Snapshot, rules};

const SCOPES: u64 = 20;
const KEYS: u64 = 1_000;

/// A store-sized snapshot: 20 scopes, 1000 keys, one of which we hold.
fn snapshot() -> (Vec<u8>, KeySecret) {
    let held = KeySecret::generate();
    let scopes = (1..=SCOPES)
        .map(|id| ScopeEntry {
            id,
            app: "acme".to_owned(),
            agents: AgentsLevel::ALL[(id % 4) as usize],
            runtime: RuntimeSet::from_bits((id % 16) as u8).unwrap(),
        })
        .collect();
    let mut keys: Vec<KeyEntry> = (2..=KEYS)
        .map(|id| KeyEntry {
            digest: KeySecret::generate().digest(),
            id,
            scope_id: 1 + id % SCOPES,
            revoked: id % 10 == 0,
        })
        .collect();
    keys.push(KeyEntry {
        digest: held.digest(),
        id: 1,
        scope_id: 3, // agents: full
        revoked: false,
    });
    let data = SnapshotData {
        operations: default_operations(),
        scopes,
        keys,
    };
    (data.encode().unwrap(), held)
}

fn evaluate(c: &mut Criterion) {
    let (bytes, held) = snapshot();
    let native = Snapshot::decode(&bytes).unwrap();
    let engine = PolicyEngine::new().unwrap();
    let component = PolicyComponent::embedded(&engine).unwrap();
    let mut instance = component.instantiate(Limits::default()).unwrap();
    instance.load_snapshot(&bytes).unwrap();
    let request = Request {
        credential: keys::credential(Some(held.expose())),
        app: "acme",
        op: "agents.update",
    };
    assert!(rules::decide(Some(&native), &request).allow);
    assert!(instance.evaluate(&request).allow);

    let mut group = c.benchmark_group("evaluate");
    group.throughput(Throughput::Elements(1));
    group.bench_function("native rules", |b| {
        b.iter(|| rules::decide(Some(black_box(&native)), black_box(&request)))
    });
    group.bench_function("component, reused instance", |b| {
        b.iter(|| instance.evaluate(black_box(&request)))
    });
    group.bench_function("host path: raw key, sha-256, component", |b| {
        b.iter(|| {
            let request = Request {
                credential: keys::credential(Some(black_box(held.expose()))),
                app: "acme",
                op: "agents.update",
            };
            instance.evaluate(&request)
        })
    });
    group.finish();

    let mut group = c.benchmark_group("evaluate-batch");
    for size in [1usize, 16, 256, 4096] {
        let requests = vec![request; size];
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(format!("{size} per call"), |b| {
            b.iter(|| instance.evaluate_batch(black_box(&requests)))
        });
    }
    group.finish();
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
