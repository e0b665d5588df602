//! A quick, self-contained measurement of the decision paths on this
//! machine (`keyscope bench`), and the synthetic world it and the criterion
//! benches decide in.

use std::time::{Duration, Instant};

use keyscope_keys::{self as keys, KeySecret};
use keyscope_policy::snapshot::{KeyEntry, ScopeEntry, SnapshotData, default_operations};
use keyscope_policy::{
    AgentsLevel, Credential, HttpRequest, KeyDigest, Method, Millis, Request, RuntimeSet, Snapshot,
    rules,
};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::component::{FLOOR_POLICY, PolicyComponent};
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

/// What a run measured: every path, and the work the component adds
/// beyond the floor, against the native rules.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// Every path measured, in order.
    pub paths: Vec<PathFigures>,
    /// Medians less the floor's, and their ratio to native; `None` when
    /// the policy was prebuilt and no floor was built with it.
    pub against_floor: Option<AgainstFloor>,
    /// Key records read to find a key: the page's interpolation search on
    /// average over every key of the world (up to 100 000 of them), and
    /// what a binary search over all the keys reads.
    pub records_read: RecordsRead,
}

/// Records a lookup reads.
#[derive(Debug, Clone, Serialize)]
pub struct RecordsRead {
    /// The interpolation search within the key's page, on average.
    pub interpolation: f64,
    /// A binary search over every key: the ceiling of log2(keys + 1).
    pub binary_search: f64,
}

/// The medians, less what wasmtime alone costs a call of the same shape.
#[derive(Debug, Clone, Serialize)]
pub struct AgainstFloor {
    /// A call into the floor component (it decides nothing), in ns.
    pub floor_ns: f64,
    /// The component's median less the floor's, in ns.
    pub component_less_floor_ns: f64,
    /// That, over the native rules' median.
    pub component_less_floor_vs_native: f64,
    /// The component's host path less the floor, in ns.
    pub host_path_less_floor_ns: f64,
    /// That, over the native host path's median.
    pub host_path_less_floor_vs_native: f64,
    /// A batch's time per decision less the floor batch's, in ns.
    pub batch_less_floor_ns: f64,
    /// That, over the native rules' median.
    pub batch_less_floor_vs_native: f64,
    /// A call of `evaluate-http`'s shape into the floor (the path lowered
    /// into the guest, the routed answer lifted back), in ns.
    pub http_floor_ns: f64,
    /// The component's HTTP path less that floor, in ns.
    pub http_path_less_floor_ns: f64,
    /// That, over the native HTTP path's median.
    pub http_path_less_floor_vs_native: f64,
}

/// The request the HTTP rows decide: a route of the default table, with
/// the app in the path, as a proxy would pass it on.
const HTTP_PATH: &str = "/api/v2/apps/acme/agents/a1";

/// How many keys of the world the decision paths go through in turn: one
/// key alone would measure where that key happens to sit in its page (one
/// record read or four), not a lookup.
const ROUND: usize = 1024;
const _: () = assert!(ROUND.is_power_of_two());

/// Measures, side by side: the native rules, the floor (an empty call of
/// the same shape into the same engine) and the component (reused
/// instance) on the same resolved requests, [`ROUND`] keys of the world in
/// turn; the native host path and the component's (one raw key, SHA-256,
/// names resolved, decided); and `evaluate-batch` (256 of those keys per
/// call), the floor's and the component's. Each runs for about `each`.
pub fn run(component: &PolicyComponent, keys: u64, each: Duration) -> Result<Figures> {
    let (data, held) = synthetic_world(keys);
    let bytes = data.encode()?;
    let native = Snapshot::decode(&bytes)?;
    // Room for ten million keys (640 MB) and the time to load them.
    let limits = Limits {
        max_memory: (bytes.len() * 2).max(Limits::default().max_memory),
        load_timeout: std::time::Duration::from_secs(600),
        ..Limits::default()
    };
    let mut instance = component.instantiate(limits.clone())?;
    instance.load_snapshot(&bytes)?;
    let mut floor = if FLOOR_POLICY.is_empty() {
        None
    } else {
        let floor = PolicyComponent::from_bytes(component.engine(), FLOOR_POLICY)?;
        // It reads no snapshot; a small one keeps its memory small.
        let mut floor = floor.instantiate(limits)?;
        floor.load_snapshot(&synthetic_world(1).0.encode()?)?;
        Some(floor)
    };
    let raw = held.expose().to_owned();
    let request = Request {
        credential: keys::credential(Some(&raw)),
        app: "acme",
        op: "agents.update",
        now: NOW,
    };
    debug_assert_eq!(
        native.resolve(&request),
        instance.catalogue().resolve(&request)
    );
    // Keys drawn from the whole world by a fixed xorshift: live, revoked
    // and expiring ones, in every scope, as they come. (An even stride
    // would not do: at ten million keys it is a multiple of 7 and 5 mod
    // 10, and skips every revoked and expiring key.)
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let round: Vec<Request<'_>> = (0..ROUND)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let key = &data.keys[(seed % data.keys.len() as u64) as usize];
            Request {
                credential: Credential::Digest(key.digest),
                ..request
            }
        })
        .collect();
    let resolved: Vec<_> = round.iter().map(|r| native.resolve(r)).collect();
    let batch: Vec<Request<'_>> = round.iter().copied().take(256).collect();
    let mut turn = 0usize;
    // ROUND is a power of two: the next key by a mask, not a division.
    let mut next = move || {
        turn = (turn + 1) & (ROUND - 1);
        resolved[turn]
    };
    let mut paths = vec![measure("native rules", each, 256, || {
        std::hint::black_box(rules::decide(Some(&native), std::hint::black_box(&next())));
    })];
    if let Some(floor) = &mut floor {
        paths.push(measure("floor (empty call)", each, 256, || {
            std::hint::black_box(floor.evaluate_resolved(std::hint::black_box(&next())));
        }));
    }
    paths.extend([
        measure("component", each, 256, || {
            std::hint::black_box(instance.evaluate_resolved(std::hint::black_box(&next())));
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
    ]);
    let http = |credential| HttpRequest {
        credential,
        method: Method::Put,
        path: std::hint::black_box(HTTP_PATH),
        now: NOW,
    };
    paths.push(measure("native http path (raw key)", each, 256, || {
        let credential = keys::credential(Some(std::hint::black_box(&raw)));
        std::hint::black_box(rules::decide_http(Some(&native), &http(credential)));
    }));
    if let Some(floor) = &mut floor {
        paths.push(measure(
            "floor http (empty call, a path)",
            each,
            256,
            || {
                let credential = keys::credential(Some(std::hint::black_box(&raw)));
                std::hint::black_box(floor.evaluate_http(&http(credential)));
            },
        ));
    }
    paths.push(measure("http path (raw key)", each, 256, || {
        let credential = keys::credential(Some(std::hint::black_box(&raw)));
        std::hint::black_box(instance.evaluate_http(&http(credential)));
    }));
    if let Some(floor) = &mut floor {
        paths.push(measure_batch("floor batch of 256", each, || {
            std::hint::black_box(floor.evaluate_batch(&batch));
        }));
    }
    paths.push(measure_batch("batch of 256", each, || {
        std::hint::black_box(instance.evaluate_batch(&batch));
    }));
    let median = |path: &str| {
        paths
            .iter()
            .find(|figures| figures.path == path)
            .map(|figures| figures.median_ns)
    };
    let against_floor = (|| {
        let (floor, native_rules) = (median("floor (empty call)")?, median("native rules")?);
        let component = median("component")? - floor;
        let host = median("host path (raw key)")? - floor;
        let batch = median("batch of 256")? - median("floor batch of 256")?;
        let http_floor = median("floor http (empty call, a path)")?;
        let http = median("http path (raw key)")? - http_floor;
        Some(AgainstFloor {
            floor_ns: floor,
            component_less_floor_ns: component,
            component_less_floor_vs_native: component / native_rules,
            host_path_less_floor_ns: host,
            host_path_less_floor_vs_native: host / median("native host path (raw key)")?,
            batch_less_floor_ns: batch,
            batch_less_floor_vs_native: batch / native_rules,
            http_floor_ns: http_floor,
            http_path_less_floor_ns: http,
            http_path_less_floor_vs_native: http / median("native http path (raw key)")?,
        })
    })();
    let sample: Vec<&KeyDigest> = data
        .keys
        .iter()
        .step_by((data.keys.len() / 100_000).max(1))
        .map(|key| &key.digest)
        .collect();
    let read: u64 = sample
        .iter()
        .map(|digest| u64::from(native.find_key(digest).1))
        .sum();
    let records_read = RecordsRead {
        interpolation: read as f64 / sample.len().max(1) as f64,
        binary_search: (data.keys.len() as f64 + 1.0).log2().ceil(),
    };
    Ok(Figures {
        paths,
        against_floor,
        records_read,
    })
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
