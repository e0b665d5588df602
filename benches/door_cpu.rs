//! The CPU a running `keyscope serve` spends per decision at each front
//! door, at a fixed request rate: `/v1/check` (HTTP/1.1, keep-alive) and the
//! Envoy ext_authz gRPC service. The server's CPU time is read from
//! `/proc/PID/task/*/schedstat` (nanoseconds, every thread) before and after
//! each run, so the figure is the server's own work, not the client's; what
//! the server spends idle over the same time is measured first and taken
//! off.
//!
//! `door-cpu PID HTTP_ADDR GRPC_ADDR KEY [RATE] [SECONDS]`; see
//! benches/serve/cpu.sh, which runs it against two builds side by side.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a load generator that cannot go on should stop loudly"
)]

use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Connections per door; the rate is shared among them.
const CONNECTIONS: u64 = 4;

/// CPU time of every thread of `pid`, in nanoseconds.
fn cpu_ns(pid: &str) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|task| {
            let stat = std::fs::read_to_string(task.unwrap().path().join("schedstat")).unwrap();
            stat.split_whitespace()
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

/// One keep-alive HTTP/1.1 exchange: sends `request`, reads the answer's
/// head and its `Content-Length` body; returns the status line.
async fn exchange(stream: &mut TcpStream, request: &[u8], buffer: &mut Vec<u8>) -> String {
    stream.write_all(request).await.unwrap();
    buffer.clear();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the server closed the connection");
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the server closed the connection mid-body");
        buffer.extend_from_slice(&chunk[..n]);
    }
    head.lines().next().unwrap_or_default().to_owned()
}

/// Runs `CONNECTIONS` callers, each pacing itself; returns the calls made.
async fn paced<F, Fut>(call: F) -> u64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = u64> + Send + 'static,
{
    let tasks: Vec<_> = (0..CONNECTIONS).map(|_| tokio::spawn(call())).collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    total
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [pid, http_addr, grpc_addr, key, rest @ ..] = args.as_slice() else {
        eprintln!("usage: door-cpu PID HTTP_ADDR GRPC_ADDR KEY [RATE] [SECONDS]");
        std::process::exit(2);
    };
    let rate: u64 = rest.first().map_or(2_000, |r| r.parse().unwrap());
    let seconds: u64 = rest.get(1).map_or(10, |s| s.parse().unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let period = Duration::from_secs(1) * CONNECTIONS as u32 / rate as u32;
    let ticks = rate / CONNECTIONS * seconds;

    let body = format!(r#"{{"key":"{key}","app":"acme","op":"agents.get"}}"#);
    let http_request = format!(
        "POST /v1/check HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    let grpc_request = keyscope_benches::check_request(key);

    runtime.block_on(async {
        // What the server spends with no request at all (its epoch ticker,
        // its store poller), subtracted from each door's figure.
        let before = cpu_ns(pid);
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let idle = cpu_ns(pid) - before;
        println!(
            "idle             server CPU {:>8.2} ms in {seconds} s, subtracted below",
            idle as f64 / 1e6
        );
        let before = cpu_ns(pid);
        let http_addr = http_addr.clone();
        let decisions = paced(|| {
            let http_addr = http_addr.clone();
            let request = http_request.clone();
            async move {
                let mut stream = TcpStream::connect(&http_addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let mut interval = tokio::time::interval(period);
                let mut buffer = Vec::new();
                for _ in 0..ticks {
                    interval.tick().await;
                    let status = exchange(&mut stream, &request, &mut buffer).await;
                    assert!(status.contains(" 200 "), "/v1/check answered {status}");
                }
                ticks
            }
        })
        .await;
        report(
            "/v1/check",
            rate,
            decisions,
            (cpu_ns(pid) - before).saturating_sub(idle),
        );

        let before = cpu_ns(pid);
        let grpc_addr = grpc_addr.clone();
        let decisions = paced(|| {
            let grpc_addr = grpc_addr.clone();
            let request = grpc_request.clone();
            async move {
                let mut client = AuthorizationClient::connect(format!("http://{grpc_addr}"))
                    .await
                    .unwrap();
                let mut interval = tokio::time::interval(period);
                for _ in 0..ticks {
                    interval.tick().await;
                    let response = client.check(request.clone()).await.unwrap().into_inner();
                    let code = response.status.map_or(0, |s| s.code);
                    assert_eq!(code, 0, "ext_authz denied the bench key");
                }
                ticks
            }
        })
        .await;
        report(
            "grpc ext_authz",
            rate,
            decisions,
            (cpu_ns(pid) - before).saturating_sub(idle),
        );
    });
}

fn report(door: &str, rate: u64, decisions: u64, cpu: u64) {
    println!(
        "{door:<16} {rate:>6} req/s  {decisions:>7} decisions  server CPU {:>8.2} ms  {:>6.2} µs per decision",
        cpu as f64 / 1e6,
        cpu as f64 / 1e3 / decisions as f64
    );
}
