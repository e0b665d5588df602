//! From a revocation's commit to the first deny by a second `keyscope
//! serve` process, on a PostgreSQL store of a million keys: the way a
//! revocation made by an admin anywhere reaches a gateway.
//!
//! `cargo build --release -p keyscope && cargo run --release -p
//! keyscope-benches --bin revocation-latency [KEYS] [REVOCATIONS]`
//!
//! It starts its own PostgreSQL cluster (Debian's `postgresql`) and the
//! release `keyscope` binary, both on loopback, and prints p50, p99 and
//! the largest latency.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark that cannot set up should stop loudly"
)]

use std::time::{Duration, Instant};

use keyscope_benches::{filled_with_probes, pg, revoked, start};
use keyscope_store::{Location, Store as _};

fn main() {
    let mut args = std::env::args().skip(1);
    let keys: u64 = args.next().map_or(1_000_000, |a| a.parse().unwrap());
    let revocations: usize = args.next().map_or(50, |a| a.parse().unwrap());
    let url = pg::shared().database();
    let location: Location = url
        .replacen(pg::USER, &format!("{}:{}", pg::USER, pg::PASSWORD), 1)
        .parse()
        .unwrap();
    let (mut store, probes) = filled_with_probes(&location, keys, revocations);

    let (mut server, listening) = start(
        &["--store", &url, "serve", "--listen", "127.0.0.1:0"],
        &[("PGPASSWORD", pg::PASSWORD)],
    );
    let http = listening["http"].as_str().unwrap().to_owned();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let denied = |key: &str| revoked(&agent, &http, key);
    let mut latencies = Vec::new();
    // Revocations at a random phase of the server's 100 ms poll: right after
    // a deny, the next commit would always land just after a poll.
    let mut phase = 0x2545_f491_4f6c_dd1d_u64;
    for probe in &probes {
        let key = probe.secret.expose();
        assert!(!denied(key));
        phase ^= phase << 13;
        phase ^= phase >> 7;
        phase ^= phase << 17;
        std::thread::sleep(Duration::from_millis(phase % 100));
        store.revoke_key(probe.key.id).unwrap();
        let committed = Instant::now();
        while !denied(key) {
            assert!(
                committed.elapsed() < Duration::from_secs(60),
                "never denied"
            );
        }
        latencies.push(committed.elapsed());
    }
    let _ = server.kill();
    let _ = server.wait();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "{keys} keys, {} revocations, commit to a second process's deny: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        at(0.5),
        at(0.99),
        latencies.last().unwrap()
    );
}
