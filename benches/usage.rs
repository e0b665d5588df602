//! What a control plane spends on a gateway's usage report: parsing and
//! checking it, then adding it to the tally, for 1,000 keys reported (four
//! polls of 250 entries).
//!
//! `cargo bench -p keyscope-benches --bench usage`

#![allow(clippy::unwrap_used, reason = "a bench that cannot set up should stop")]

use criterion::{Criterion, criterion_group, criterion_main};
use keyscope_keys::usage::{KeyUse, UsageTally};

fn usage(c: &mut Criterion) {
    let reports: Vec<String> = (0..4u64)
        .map(|poll| {
            let uses: Vec<KeyUse> = (0..250u64)
                .map(|i| KeyUse {
                    key_id: poll * 250 + i + 1,
                    uses: 17,
                    last_used_ms: 1_765_000_000_000 + i,
                })
                .collect();
            KeyUse::report(&uses)
        })
        .collect();
    let tally = UsageTally::default();
    c.bench_function(
        "usage: 1,000 keys reported (4 polls): parse, check, tally",
        |b| {
            b.iter(|| {
                for report in &reports {
                    let parsed = KeyUse::parse_report(report).unwrap();
                    let dropped = tally.merge_report(&parsed, 1_766_000_000_000, 1_000_256);
                    assert_eq!(dropped, 0);
                }
            });
        },
    );
}

criterion_group!(benches, usage);
criterion_main!(benches);
