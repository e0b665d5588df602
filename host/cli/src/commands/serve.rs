//! `keyscope serve`: the authorization server for Envoy, nginx and direct
//! callers. Settings come from `--config FILE` (TOML), then these flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use keyscope_serve::{Addresses, ServeConfig, Server};
use keyscope_store::Location;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML configuration file; flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The HTTP listener (/v1/check, /auth, ext_authz, /healthz, /readyz, /metrics).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The gRPC listener for Envoy's ext_authz.
    #[arg(long, value_name = "ADDR")]
    grpc_listen: Option<SocketAddr>,
    /// The admin API's listener (off unless given).
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
    /// A file holding the admin token (its SHA-256 is stored).
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// The policy component to serve, reloaded on SIGHUP (default: embedded).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Decision logs as JSON lines to FILE, or - for stdout.
    #[arg(long, value_name = "FILE|-")]
    decision_log: Option<PathBuf>,
    /// How often to check the store for changes, in milliseconds.
    #[arg(long, value_name = "MS")]
    poll_ms: Option<u64>,
    /// How often counted key uses are written to the store, in
    /// milliseconds (default 10000): at most one write per key per interval.
    #[arg(long, value_name = "MS")]
    usage_flush_ms: Option<u64>,
    /// Count key uses and write them to the store (`on`, the default), or
    /// not (`off`: nothing is written, so a read-only database role serves).
    #[arg(long, value_name = "on|off", value_parser = ["on", "off"])]
    usage: Option<String>,
    /// Deny every decision (`stale-policy`, 503) once the data is older
    /// than SECONDS: the store or bundle server unreadable, or the held
    /// bundle expired, for longer. Default: fail static (decide on the
    /// last good data however old).
    #[arg(long, value_name = "SECONDS")]
    max_stale: Option<u64>,
    /// Async worker threads (default: one per core).
    #[arg(long, value_name = "N")]
    workers: Option<std::num::NonZeroUsize>,
    /// Control plane: sign bundles with this key and serve them to gateways
    /// at GET /v1/bundle on the admin listener.
    #[arg(long, value_name = "FILE")]
    bundle_signing_key: Option<PathBuf>,
    /// Gateway: the fleet token to present, its own (`keyscope fleet token
    /// create`) or the shared one. Control plane: a shared token to accept
    /// besides each gateway's own (deprecated). A file readable by its
    /// owner only.
    #[arg(long, value_name = "FILE")]
    fleet_token_file: Option<PathBuf>,
    /// Gateway: follow signed bundles from URL instead of a store.
    #[arg(long, value_name = "URL")]
    bundle_url: Option<String>,
    /// Gateway: the public key bundles must be signed by.
    #[arg(long, value_name = "FILE")]
    bundle_public_key: Option<PathBuf>,
    /// Gateway: while the control plane's signing key is rotated, the next
    /// key's public key, trusted as well (docs/fleet.md).
    #[arg(long, value_name = "FILE")]
    bundle_next_public_key: Option<PathBuf>,
    /// Gateway: trust the CAs in this PEM file for an https:// bundle URL,
    /// instead of the webpki roots.
    #[arg(long, value_name = "FILE")]
    bundle_ca: Option<PathBuf>,
    /// Gateway: keep the last good bundle in DIR, to start from it when the
    /// bundle server is down.
    #[arg(long, value_name = "DIR")]
    bundle_cache: Option<PathBuf>,
    /// Control plane: how long a bundle's signature stays good, in seconds
    /// (default 3600); it is signed anew at half of it.
    #[arg(long, value_name = "SECONDS")]
    bundle_ttl: Option<u64>,
    /// Gateway: its id in the control plane's fleet view, 1 to 128 of
    /// A-Z a-z 0-9 . _ : - (default: HOSTNAME-RANDOM, kept in the bundle
    /// cache directory).
    #[arg(long, value_name = "ID")]
    gateway_id: Option<String>,
}

pub fn run(args: ServeArgs, store: &Location) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => ServeConfig::from_file(path)?,
        None => ServeConfig::default(),
    };
    store.clone_into(&mut config.store);
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    config.grpc_listen = args.grpc_listen.or(config.grpc_listen);
    config.admin.listen = args.admin_listen.or(config.admin.listen);
    config.admin.token_file = args.admin_token_file.or(config.admin.token_file);
    config.policy = args.policy.or(config.policy);
    config.decision_log = args.decision_log.or(config.decision_log);
    if let Some(poll_ms) = args.poll_ms {
        config.poll_ms = poll_ms;
    }
    if let Some(ms) = args.usage_flush_ms {
        config.usage_flush_ms = ms;
    }
    if let Some(usage) = args.usage {
        config.usage = usage == "on";
    }
    config.max_stale_s = args.max_stale.or(config.max_stale_s);
    config.workers = args.workers.or(config.workers);
    let bundles = &mut config.bundles;
    bundles.signing_key = args.bundle_signing_key.or(bundles.signing_key.take());
    bundles.fleet_token_file = args.fleet_token_file.or(bundles.fleet_token_file.take());
    bundles.url = args.bundle_url.or(bundles.url.take());
    bundles.public_key = args.bundle_public_key.or(bundles.public_key.take());
    bundles.next_public_key = args
        .bundle_next_public_key
        .or(bundles.next_public_key.take());
    bundles.cache = args.bundle_cache.or(bundles.cache.take());
    bundles.ca = args.bundle_ca.or(bundles.ca.take());
    bundles.gateway_id = args.gateway_id.or(bundles.gateway_id.take());
    if let Some(ttl) = args.bundle_ttl {
        bundles.ttl_s = ttl;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEYSCOPE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = config.workers {
        runtime.worker_threads(workers.get());
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        // Validates and loads everything, then binds; only then is
        // `listening` said.
        let mut server = Server::bind(config).await?;
        server.mount_admin_pages(Box::new(keyscope_console::router));
        let Addresses { http, grpc, admin } = server.addresses();
        say(serde_json::json!({
            "event": "listening", "http": http, "grpc": grpc, "admin": admin,
        }));
        if let Some(token) = server.take_new_admin_token() {
            eprintln!(
                "keyscope: new admin token, shown only this once (the store keeps its SHA-256):\n{}",
                token.as_str()
            );
        }
        // `ready` once a verified state serves and the instance that proves
        // deltas holds it: a gateway says it when its first bundle (or
        // cache) is live, not before.
        let ready = server.ready();
        tokio::spawn(async move {
            let generation = ready.await;
            say(serde_json::json!({ "event": "ready", "generation": generation }));
        });
        server.run().await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Listening and ready events go to stdout as JSON lines, for scripts and
/// tests.
fn say(line: serde_json::Value) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}
