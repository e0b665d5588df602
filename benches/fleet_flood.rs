//! A control plane under a fleet-token holder's flood, as release
//! `keyscope` processes on loopback: `/v1/check` latency and the control
//! plane's memory with no pollers, then with pollers cycling through
//! GATEWAY_IDS distinct gateway ids, each poll carrying a full usage
//! report of real keys, in one run. Bounded in count: POLLS polls and
//! CHECKS checks a phase, on 127.0.0.1 only.
//!
//! `cargo build --release -p keyscope && cargo run --release -p
//! keyscope-benches --bin fleet-flood [KEYS] [GATEWAY_IDS] [POLLS] [CHECKS]`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark that cannot set up should stop loudly"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keyscope_benches::filled_with_probes;
use keyscope_store::Location;

const TOKEN: &str = "ksfleet_bench-token-0123456789";

fn main() {
    let mut args = std::env::args().skip(1);
    let mut arg = |default: u64| args.next().map_or(default, |a| a.parse().unwrap());
    let keys = arg(1000);
    let gateway_ids = arg(10_000);
    let polls = arg(40_000);
    let checks = arg(20_000) as usize;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keyscope.db");
    let (_store, probes) = filled_with_probes(&Location::Sqlite(db.clone()), keys, 1);
    let probe = probes[0].secret.expose().to_owned();
    let (mut control_plane, listening, public_file) =
        keyscope_benches::control_plane(dir.path(), &db, TOKEN);
    let http = listening["http"].as_str().unwrap().to_owned();
    let admin = listening["admin"].as_str().unwrap().to_owned();
    let pid = control_plane.id();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();

    // The state a gateway holds, for its polls to be recorded.
    let bundle_url = format!("http://{admin}/v1/bundle");
    let full = agent
        .get(&bundle_url)
        .header("authorization", format!("Bearer {TOKEN}"))
        .call()
        .unwrap()
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .unwrap();
    let public = keyscope_bundle::keys::read_public_key(&public_file).unwrap();
    let held = keyscope_bundle::format::open(&full, &public, keyscope_bundle::Layout::Served)
        .unwrap()
        .manifest;
    let have = format!(
        "version={}&revision={}&snapshot={}&module={}",
        held.version, held.revision, held.snapshot.sha256, held.module.sha256
    );
    // A full report of real keys (ids 1..=256), as an honest gateway sends.
    let report: String = (1..=256u64)
        .map(|id| format!("{id}=3@{}", keyscope_runtime::time::now_ms()))
        .collect::<Vec<_>>()
        .join(",");

    let check = |agent: &ureq::Agent| {
        let started = Instant::now();
        let body: serde_json::Value = agent
            .post(format!("http://{http}/v1/check"))
            .send_json(serde_json::json!({ "key": probe, "app": "bench", "op": "agents.list" }))
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        assert!(body.get("allow").is_some(), "{body}");
        started.elapsed()
    };
    let phase = |name: &str, agent: &ureq::Agent| {
        let mut latencies: Vec<Duration> = (0..checks).map(|_| check(agent)).collect();
        latencies.sort_unstable();
        let at =
            |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        println!(
            "{name}: /v1/check p50 {:?}, p99 {:?}, max {:?} over {checks}; control plane RSS {} kB",
            at(0.50),
            at(0.99),
            latencies[latencies.len() - 1],
            rss_kb(pid)
        );
    };

    for _ in 0..1000 {
        check(&agent);
    }
    phase("no pollers", &agent);

    // Pollers: 4 connections, cycling through the ids, each poll 304 at
    // once (wait=0) with a full report.
    let done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let pollers: Vec<_> = (0..4u64)
        .map(|lane| {
            let (done, sent) = (Arc::clone(&done), Arc::clone(&sent));
            let (url, have, report) = (bundle_url.clone(), have.clone(), report.clone());
            std::thread::spawn(move || {
                let agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .new_agent();
                let mut i = lane;
                while !done.load(Ordering::Relaxed) && sent.fetch_add(1, Ordering::Relaxed) < polls
                {
                    let status = agent
                        .get(format!(
                            "{url}?gateway=flood-{}&{have}&wait=0",
                            i % gateway_ids
                        ))
                        .header("authorization", format!("Bearer {TOKEN}"))
                        .header("keyscope-usage", &report)
                        .call()
                        .unwrap()
                        .status();
                    assert_eq!(status, 304);
                    i += 4;
                }
            })
        })
        .collect();
    // Once every id has polled at least once.
    while sent.load(Ordering::Relaxed) < gateway_ids.min(polls) {
        std::thread::sleep(Duration::from_millis(50));
    }
    phase(&format!("{gateway_ids} gateway ids polling"), &agent);
    done.store(true, Ordering::Relaxed);
    for poller in pollers {
        poller.join().unwrap();
    }
    let fleet: serde_json::Value = agent
        .get(format!("http://{admin}/admin/fleet"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .call()
        .unwrap()
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_json()
        .unwrap();
    println!(
        "{} polls sent; the fleet view holds {} gateways; control plane RSS {} kB",
        sent.load(Ordering::Relaxed).min(polls),
        fleet["gateways"].as_array().map_or(0, Vec::len),
        rss_kb(pid)
    );
    let _ = control_plane.kill();
    let _ = control_plane.wait();
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .unwrap()
}
