//! Building a snapshot, and loading it into the component, by size.
//!
//! `cargo bench -p keyscope-benches --bench snapshot`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark that cannot set up should stop loudly"
)]

use criterion::{Criterion, criterion_group, criterion_main};
use keyscope_benches::world;
use keyscope_runtime::{Limits, PolicyComponent, PolicyEngine};

fn snapshot(c: &mut Criterion) {
    let engine = PolicyEngine::new().unwrap();
    let component = PolicyComponent::embedded(&engine).unwrap();
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    for keys in [1_000u64, 100_000, 1_000_000] {
        let world = world(keys);
        group.bench_function(format!("build {keys} keys"), |b| {
            b.iter(|| world.data.encode().unwrap())
        });
        let bytes = world.data.encode().unwrap();
        let mut instance = component.instantiate(Limits::default()).unwrap();
        group.bench_function(format!("load {keys} keys into the component"), |b| {
            b.iter(|| instance.load_snapshot(&bytes).unwrap())
        });
        eprintln!(
            "{keys} keys: {} bytes, peak guest memory {:.1} MiB",
            bytes.len(),
            instance.peak_memory() as f64 / f64::from(1 << 20)
        );
    }
    group.finish();
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
