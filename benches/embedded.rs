//! The embedded library's decision, side by side in one run: a worker's
//! `evaluate_http` (the component), `Embedded::decide` (what the C ABI
//! calls: headers to credential, a worker from the pool), and the C entry
//! point `keyscope_decide` itself, as nginx's Lua module calls it.
//!
//! Beside them, what counting a key's use costs a decision
//! (`UsageTally::record`, the last-used figures), alone and with a second
//! thread counting at the same time.
//!
//! `cargo bench -p keyscope-benches --bench embedded`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark that cannot set up should stop loudly"
)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keyscope::ffi::{keyscope_bytes, keyscope_decide, keyscope_decision, keyscope_request};
use keyscope::{DataSource, EmbedConfig, Embedded};
use keyscope_benches::world;
use keyscope_runtime::{HttpRequest, Limits, Method, keys};

const PATH: &[u8] = b"/api/v2/apps/acme/agents/a1";

fn bytes(value: &[u8]) -> keyscope_bytes {
    keyscope_bytes {
        ptr: value.as_ptr(),
        len: value.len(),
    }
}

fn embedded(c: &mut Criterion) {
    let mut world = world(1_000);
    // Decided at the real time: the held key must not expire.
    let held = world.held.digest();
    for key in &mut world.data.keys {
        if key.digest == held {
            key.not_after = None;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("snapshot.ks");
    std::fs::write(&snapshot, world.data.encode().unwrap()).unwrap();
    let handle = Embedded::open(EmbedConfig {
        source: DataSource::Files {
            snapshot,
            policy: None,
            interval: std::time::Duration::from_secs(60),
        },
        limits: Limits::default(),
        max_stale: None,
        force_untested_policy: false,
    })
    .unwrap();
    let key = world.held.expose().as_bytes().to_vec();
    let mut group = c.benchmark_group("embedded");

    let mut worker = handle.live().worker();
    group.bench_function("worker evaluate_http (component)", |b| {
        b.iter(|| {
            let outcome = worker.evaluate_http(&HttpRequest {
                credential: keys::credential(Some(world.held.expose())),
                method: Method::Get,
                path: "/api/v2/apps/acme/agents/a1",
                now: keyscope_runtime::time::now_ms(),
            });
            assert!(outcome.decision.allow);
            black_box(outcome)
        });
    });
    group.bench_function("Embedded::decide (headers in)", |b| {
        b.iter(|| {
            let outcome = handle.decide([key.as_slice()], [], b"GET", PATH);
            assert!(outcome.decision.allow);
            black_box(outcome)
        });
    });
    let copies = [bytes(&key)];
    let request = keyscope_request {
        api_keys: copies.as_ptr(),
        api_keys_len: 1,
        authorizations: std::ptr::null(),
        authorizations_len: 0,
        method: bytes(b"GET"),
        path: bytes(PATH),
    };
    let config = dir.path().join("keyscope.toml");
    std::fs::write(&config, "snapshot = \"snapshot.ks\"\n").unwrap();
    let config = std::ffi::CString::new(config.to_str().unwrap()).unwrap();
    #[allow(unsafe_code)]
    // SAFETY: a NUL-terminated path, no error buffer.
    let ffi_handle =
        unsafe { keyscope::ffi::keyscope_open(config.as_ptr(), std::ptr::null_mut(), 0) };
    assert!(!ffi_handle.is_null());
    #[allow(unsafe_code)]
    // SAFETY: an open handle, a request lending live buffers, a zeroed out.
    let mut out: keyscope_decision = unsafe { std::mem::zeroed() };
    group.bench_function("keyscope_decide (C ABI)", |b| {
        b.iter(|| {
            #[allow(unsafe_code)]
            // SAFETY: as above.
            let code = unsafe { keyscope_decide(ffi_handle, &request, &mut out) };
            assert_eq!((code, out.allow), (0, 1));
        });
    });
    group.finish();
    #[allow(unsafe_code)]
    // SAFETY: opened above, closed once, no call in flight.
    unsafe {
        keyscope::ffi::keyscope_close(ffi_handle);
    }
}

/// The last-used tally on the decision path: a decision, the same decision
/// followed by its count, and a count alone and under contention.
fn usage(c: &mut Criterion) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use keyscope_keys::usage::UsageTally;

    let mut world = world(1_000);
    let held = world.held.digest();
    for key in &mut world.data.keys {
        if key.digest == held {
            key.not_after = None;
        }
    }
    let mut group = c.benchmark_group("usage");
    let live = Arc::new(
        keyscope_runtime::swap::LivePolicy::new(
            None,
            &world.data.encode().unwrap(),
            keyscope_runtime::swap::LiveOptions::default(),
        )
        .unwrap(),
    );
    let mut worker = live.worker();
    let tally = Arc::new(UsageTally::default());
    let now = keyscope_runtime::time::now_ms();
    let mut decide = |count: bool| {
        let outcome = worker.evaluate_http(&HttpRequest {
            credential: keys::credential(Some(world.held.expose())),
            method: Method::Get,
            path: "/api/v2/apps/acme/agents/a1",
            now,
        });
        assert!(outcome.decision.allow);
        if count {
            tally.record(outcome.decision.key_id.unwrap(), now);
        }
        black_box(outcome)
    };
    group.bench_function("decision", |b| b.iter(|| decide(false)));
    group.bench_function("decision + UsageTally::record", |b| b.iter(|| decide(true)));
    group.bench_function("UsageTally::record alone", |b| {
        b.iter(|| tally.record(black_box(7), now));
    });
    group.bench_function("UsageTally::record, another thread counting", |b| {
        b.iter_custom(|iters| {
            let stop = Arc::new(AtomicBool::new(false));
            let other = {
                let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        tally.record(8, now);
                    }
                })
            };
            let started = std::time::Instant::now();
            for _ in 0..iters {
                tally.record(black_box(7), now);
            }
            let took = started.elapsed();
            stop.store(true, Ordering::Relaxed);
            other.join().unwrap();
            took
        });
    });
    group.finish();
}

criterion_group!(benches, embedded, usage);
criterion_main!(benches);
