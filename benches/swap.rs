//! Swap latency (cold compile against the cache, by module and snapshot
//! size) and decision throughput while swapping once a second.
//!
//! `cargo bench -p keyscope-benches --bench swap`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark that cannot set up should stop loudly"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use keyscope_benches::{World, world};
use keyscope_runtime::EMBEDDED_POLICY;
use keyscope_runtime::{KeySecret, LiveOptions, LivePolicy, Request, keys};
use wasm_encoder::Encode as _;

/// The embedded module with a custom section of `padding` bytes tagged
/// `tag`: the same code under another digest (and size).
fn variant(tag: u64, padding: usize) -> Vec<u8> {
    let mut contents = Vec::new();
    "keyscope-bench".encode(&mut contents);
    contents.extend_from_slice(&tag.to_le_bytes());
    contents.resize(contents.len() + padding, 0);
    let mut bytes = EMBEDDED_POLICY.to_vec();
    bytes.push(0);
    contents.len().encode(&mut bytes);
    bytes.extend_from_slice(&contents);
    bytes
}

/// A synthetic world of `keys` keys, encoded twice: with the held key live,
/// and with it revoked. Returns both and the held key.
fn snapshots(keys: u64) -> (Vec<u8>, Vec<u8>, KeySecret) {
    let World { mut data, held } = world(keys);
    let live = data.encode().unwrap();
    for key in &mut data.keys {
        key.revoked |= key.id == 1;
    }
    (live, data.encode().unwrap(), held)
}

fn swap_latency(c: &mut Criterion) {
    let (small, _, _) = snapshots(1_000);
    let policy = LivePolicy::new(None, &small, LiveOptions::default()).unwrap();
    let mut group = c.benchmark_group("swap-module");
    group.sample_size(10);
    let size = format!("{} KiB", EMBEDDED_POLICY.len() >> 10);
    for (label, padding) in [(size.as_str(), 0), ("+1 MiB", 1 << 20)] {
        let mut tag = 0;
        group.bench_function(format!("cold compile, {label}"), |b| {
            b.iter_batched(
                || {
                    tag += 1;
                    variant(tag, padding)
                },
                |module| policy.swap_module(&module).unwrap(),
                BatchSize::PerIteration,
            )
        });
        let (a, b2) = (variant(u64::MAX, padding), variant(u64::MAX - 1, padding));
        policy.swap_module(&a).unwrap();
        policy.swap_module(&b2).unwrap();
        let mut flip = false;
        group.bench_function(format!("cached, {label}"), |b| {
            b.iter(|| {
                flip = !flip;
                policy.swap_module(if flip { &a } else { &b2 }).unwrap()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("swap-snapshot");
    group.sample_size(10);
    for keys in [1_000u64, 100_000] {
        let (x, y, _) = snapshots(keys);
        let mut flip = false;
        group.bench_function(format!("{keys} keys"), |b| {
            b.iter(|| {
                flip = !flip;
                policy.swap_snapshot(if flip { &x } else { &y }).unwrap()
            })
        });
    }
    group.finish();
}

fn throughput_while_swapping(c: &mut Criterion) {
    let (x, y, held) = snapshots(1_000);
    let policy = Arc::new(LivePolicy::new(None, &x, LiveOptions::default()).unwrap());
    let request = Request {
        credential: keys::credential(Some(held.expose())),
        app: "acme",
        op: "agents.update",
        now: keyscope_runtime::bench::NOW,
    };
    let mut group = c.benchmark_group("evaluate-live");
    group.throughput(Throughput::Elements(1));
    let mut worker = policy.worker();
    group.bench_function("no swaps", |b| {
        b.iter(|| worker.evaluate(black_box(&request)))
    });
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (policy, stop) = (Arc::clone(&policy), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut flip = false;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                flip = !flip;
                policy.swap_snapshot(if flip { &y } else { &x }).unwrap();
            }
        })
    };
    group.bench_function("one snapshot swap a second", |b| {
        b.iter(|| worker.evaluate(black_box(&request)))
    });
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    // Again, so that the order of the runs does not decide the comparison.
    group.bench_function("no swaps, after", |b| {
        b.iter(|| worker.evaluate(black_box(&request)))
    });
    group.finish();
}

criterion_group!(benches, swap_latency, throughput_while_swapping);
criterion_main!(benches);
