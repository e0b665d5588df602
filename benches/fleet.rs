//! A fleet at scale, as release `keyscope` processes on loopback: a
//! control plane publishing bundles of a store of KEYS keys, and GATEWAYS
//! gateways following it.
//!
//! `cargo build --release -p keyscope && cargo run --release -p
//! keyscope-benches --bin fleet-bench [KEYS] [GATEWAYS] [REVOCATIONS] [IDLE_POLLS]`
//!
//! It prints:
//! 1. the full bundle: its size, its download (first, built and signed;
//!    then cached), its verification and decoding, and its load into a
//!    live policy;
//! 2. per revocation: the bytes each gateway received, and the time from
//!    the commit to a deny on every gateway (p50, p99, max);
//! 3. the control plane's memory and CPU with IDLE_POLLS long polls
//!    waiting, from a load generator here, bounded in count and time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark that cannot set up should stop loudly"
)]

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use keyscope_benches::{filled_with_probes, revoked, start};
use keyscope_bundle::{Follower, Layout};
use keyscope_runtime::swap::{LiveOptions, LivePolicy};
use keyscope_store::{Location, Store as _};
use serde_json::Value;

const TOKEN: &str = "ksfleet_bench-token-0123456789";

fn main() {
    let mut args = std::env::args().skip(1);
    let mut arg = |default: u64| args.next().map_or(default, |a| a.parse().unwrap());
    let keys = arg(1_000_000);
    let gateways = arg(3) as usize;
    let revocations = arg(20) as usize;
    let idle_polls = arg(1000) as usize;

    let dir = tempfile::tempdir().unwrap();
    let location = Location::Sqlite(dir.path().join("keyscope.db"));
    let (mut store, probes) = filled_with_probes(&location, keys, revocations);
    let (mut control_plane, listening, public_file) =
        keyscope_benches::control_plane(dir.path(), &dir.path().join("keyscope.db"), TOKEN);
    let public = keyscope_bundle::keys::read_public_key(&public_file).unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let admin = listening["admin"].as_str().unwrap().to_owned();
    let bundle_url = format!("http://{admin}/v1/bundle");
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .new_agent();

    // 1. The full bundle.
    let download = || {
        let started = Instant::now();
        let bytes = agent
            .get(&bundle_url)
            .header("authorization", format!("Bearer {TOKEN}"))
            .call()
            .unwrap()
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .unwrap();
        (bytes, started.elapsed())
    };
    let (_, first) = download();
    let (full, cached) = download();
    let started = Instant::now();
    let candidate = Follower::new([public])
        .prepare(&full, Layout::Served, keyscope_runtime::time::now_ms())
        .unwrap()
        .unwrap();
    let verified = started.elapsed();
    let started = Instant::now();
    let live = LivePolicy::new(
        candidate.module.as_deref(),
        &candidate.snapshot,
        LiveOptions {
            limits: keyscope_benches::roomy_limits(),
            ..LiveOptions::default()
        },
    )
    .unwrap();
    let loaded = started.elapsed();
    drop((live, candidate));
    println!(
        "{keys} keys: full bundle {} bytes; download {first:?} (built and signed), {cached:?} \
         (cached); verify and decode {verified:?}; load {loaded:?}",
        full.len()
    );

    // 2. Revocations reaching every gateway.
    let mut fleet: Vec<(Child, String)> = Vec::new();
    for n in 0..gateways {
        let started = Instant::now();
        let (child, listening) = start(
            &[
                "serve",
                "--config",
                &path(&keyscope_benches::roomy_config(dir.path())),
                "--listen",
                "127.0.0.1:0",
                "--bundle-url",
                &bundle_url,
                "--bundle-public-key",
                &path(&public_file),
                "--fleet-token-file",
                &path(&dir.path().join("token")),
                "--bundle-cache",
                &path(&dir.path().join(format!("cache-{n}"))),
                "--gateway-id",
                &format!("bench-{n}"),
            ],
            &[],
        );
        println!(
            "gateway {n}: ready with the full bundle in {:?}",
            started.elapsed()
        );
        fleet.push((child, listening["http"].as_str().unwrap().to_owned()));
    }
    let denied = |http: &str, key: &str| revoked(&agent, http, key);
    let mut latencies = Vec::new();
    let mut largest = 0u64;
    let mut phase = 0x2545_f491_4f6c_dd1d_u64;
    for probe in &probes {
        let key = probe.secret.expose();
        for (_, http) in &fleet {
            assert!(!denied(http, key));
        }
        // At a random phase of the control plane's 100 ms store poll.
        phase ^= phase << 13;
        phase ^= phase >> 7;
        phase ^= phase << 17;
        std::thread::sleep(Duration::from_millis(phase % 100));
        store.revoke_key(probe.key.id).unwrap();
        let committed = Instant::now();
        for (_, http) in &fleet {
            while !denied(http, key) {
                assert!(
                    committed.elapsed() < Duration::from_secs(60),
                    "never denied"
                );
            }
        }
        latencies.push(committed.elapsed());
        for (_, http) in &fleet {
            let ready: Value = agent
                .get(&format!("http://{http}/readyz"))
                .call()
                .unwrap()
                .body_mut()
                .read_json()
                .unwrap();
            let last = &ready["bundle"]["last_bundle"];
            assert_eq!(last["kind"], "delta", "{ready}");
            largest = largest.max(last["bytes"].as_u64().unwrap());
        }
    }
    println!("in order: {latencies:?}");
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "{revocations} revocations, {gateways} gateways: at most {largest} bytes per gateway per \
         revocation; commit to a deny on every gateway p50 {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        latencies.last().unwrap()
    );
    for (mut child, _) in fleet {
        let _ = child.kill();
        let _ = child.wait();
    }

    // 3. Idle long polls on the control plane.
    let held = keyscope_bundle::format::open(&download().0, &public, Layout::Served)
        .unwrap()
        .manifest;
    let pid = control_plane.id();
    let quiet = measure(pid, Duration::from_secs(10));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let query = format!(
        "/v1/bundle?revision={}&snapshot={}&module={}&wait=25",
        held.revision, held.snapshot.sha256, held.module.sha256
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let polls: Vec<_> = (0..idle_polls)
        .map(|n| {
            runtime.spawn(idle_poll(
                admin.clone(),
                format!("{query}&gateway=idle-{n}"),
                deadline,
            ))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(10));
    let waiting = measure(pid, Duration::from_secs(20));
    let answered: u64 = runtime.block_on(async {
        let mut answered = 0;
        for poll in polls {
            answered += poll.await.unwrap();
        }
        answered
    });
    println!(
        "control plane: {} KiB and {:.2}% of a core with no polls; {} KiB and {:.2}% of a core with \
         {idle_polls} long polls waiting ({answered} answers in 40 s)",
        quiet.0, quiet.1, waiting.0, waiting.1
    );
    let _ = control_plane.kill();
    let _ = control_plane.wait();
}

/// A process's resident memory (KiB) and its CPU use over `window`, as a
/// percentage of one core.
fn measure(pid: u32, window: Duration) -> (u64, f64) {
    let ticks = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = stat.rsplit_once(')').unwrap().1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime: fields 14 and 15, 12 and 13 after the name.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let hz: f64 = String::from_utf8(
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    let before = ticks();
    std::thread::sleep(window);
    let used = (ticks() - before) as f64 / hz;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .unwrap();
    (rss, 100.0 * used / window.as_secs_f64())
}

/// One gateway's long polls on one connection until `deadline`; how many
/// answers it got.
async fn idle_poll(admin: String, query: String, deadline: tokio::time::Instant) -> u64 {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
    let stream = tokio::net::TcpStream::connect(&admin).await.unwrap();
    let mut stream = tokio::io::BufReader::new(stream);
    let request =
        format!("GET {query} HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    let mut answers = 0;
    while tokio::time::Instant::now() < deadline {
        stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .unwrap();
        let answer = tokio::time::timeout_at(deadline, async {
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                stream.read_line(&mut line).await.unwrap();
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            stream.read_exact(&mut body).await.unwrap();
        })
        .await;
        if answer.is_err() {
            break;
        }
        answers += 1;
    }
    answers
}
