//! The store: a full snapshot build (read every row, encode) from SQLite
//! and from PostgreSQL at 1k, 100k and 1M keys, and the incremental
//! rebuild after one revocation beside the full one.
//!
//! `cargo bench -p keyscope-benches --bench store` (PostgreSQL from
//! Debian's `postgresql` package: the bench starts its own cluster).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark that cannot set up should stop loudly"
)]

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use keyscope_benches::{fill, pg};
use keyscope_store::snapshot::Builder;
use keyscope_store::{AnyStore, Location, Quotas, ScopeRef, Store as _};

fn stores(keys: u64, dir: &tempfile::TempDir) -> [(&'static str, Location); 2] {
    let sqlite = Location::Sqlite(dir.path().join(format!("{keys}.db")));
    let url =
        pg::shared()
            .database()
            .replacen(pg::USER, &format!("{}:{}", pg::USER, pg::PASSWORD), 1);
    [("sqlite", sqlite), ("postgres", url.parse().unwrap())]
}

fn store(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("store");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for keys in [1_000u64, 100_000, 1_000_000] {
        for (backend, location) in stores(keys, &dir) {
            drop(AnyStore::open(&location).unwrap());
            fill(&location, keys);
            let mut store = AnyStore::open_existing(&location).unwrap();
            group.bench_function(
                BenchmarkId::new(format!("full build, {backend}"), keys),
                |b| b.iter(|| keyscope_store::snapshot::build(&mut store).unwrap()),
            );
            // One key changed (revoked, or issued: each iteration needs a
            // change of its own), then the builder's update: the rows
            // changed since its revision, planned as a delta on the kept
            // snapshot and committed (nothing is encoded whole).
            store
                .set_quotas(Quotas {
                    scopes_per_app: 20,
                    keys_per_scope: u32::MAX,
                })
                .unwrap();
            let (mut builder, _) = Builder::new(&mut store).unwrap();
            let mut issued: Option<u64> = None;
            group.bench_function(
                BenchmarkId::new(format!("incremental after 1 key change, {backend}"), keys),
                |b| {
                    b.iter_custom(|iterations| {
                        let mut spent = Duration::ZERO;
                        for _ in 0..iterations {
                            match issued.take() {
                                Some(id) => drop(store.revoke_key(id).unwrap()),
                                None => {
                                    let name = format!("bench-{}", builder.revision());
                                    let key = store.create_key(&ScopeRef::Id(1), &name).unwrap();
                                    issued = Some(key.key.id);
                                }
                            }
                            let start = Instant::now();
                            let update = builder.update(&mut store).unwrap().unwrap();
                            spent += start.elapsed();
                            assert_eq!(update.rows, 1);
                        }
                        spent
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, store);
criterion_main!(benches);
