//! A gRPC load generator for `keyscope serve`: N concurrent callers of
//! `envoy.service.auth.v3.Authorization/Check` over one HTTP/2 connection
//! each, for S seconds; prints checks per second and the latency quantiles.
//!
//! `grpc-load ADDR KEY [CONCURRENCY] [SECONDS]`; see benches/serve/run.sh.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a load generator that cannot go on should stop loudly"
)]

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, key, rest @ ..] = args.as_slice() else {
        eprintln!("usage: grpc-load ADDR KEY [CONCURRENCY] [SECONDS]");
        std::process::exit(2);
    };
    let concurrency: usize = rest.first().map_or(32, |c| c.parse().unwrap());
    let seconds: u64 = rest.get(1).map_or(10, |s| s.parse().unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (count, mut latencies, denied) = runtime.block_on(async {
        let request = keyscope_benches::check_request(key);
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let mut client = AuthorizationClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            let request = request.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut denied = 0u64;
                while Instant::now() < deadline {
                    let started = Instant::now();
                    let response = client.check(request.clone()).await.unwrap().into_inner();
                    latencies.push(started.elapsed());
                    if response.status.map_or(-1, |s| s.code) != 0 {
                        denied += 1;
                    }
                }
                (latencies, denied)
            }));
        }
        let mut all = Vec::new();
        let mut denied = 0;
        for task in tasks {
            let (latencies, d) = task.await.unwrap();
            all.extend(latencies);
            denied += d;
        }
        (all.len(), all, denied)
    });
    latencies.sort_unstable();
    let quantile =
        |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "grpc: {} checks in {seconds} s, {:.0}/s, p50 {:?}, p99 {:?}, {denied} denied, concurrency {concurrency}",
        count,
        count as f64 / seconds as f64,
        quantile(0.50),
        quantile(0.99),
    );
}
