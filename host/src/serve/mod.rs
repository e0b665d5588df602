//! `keyscope serve`: the front doors for Envoy, nginx and direct callers, in
//! one process on tokio.
//!
//! - HTTP (`listen`): `POST /v1/check`, nginx `auth_request` at `/auth`,
//!   Envoy's HTTP ext_authz under `envoy_path_prefix`, and `/healthz`,
//!   `/readyz`, `/metrics`.
//! - gRPC (`grpc_listen`): Envoy's `envoy.service.auth.v3.Authorization`.
//! - Admin (`admin.listen`, off by default): scopes, keys, status, reloads.
//!
//! The listeners open first; `/readyz` says 503, and every decision is a
//! `no-snapshot` deny, until the first generation is live. The snapshot
//! then follows the store ([`refresh`]); SIGHUP and `POST /admin/policy`
//! reload the module. SIGTERM or SIGINT stop accepting, drain the requests
//! in flight and flush the decision log.

mod admin;
mod authz;
mod config;
mod decision_log;
mod grpc;
mod http;
mod metrics;
mod refresh;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use zeroize::Zeroizing;

pub use authz::{credential, status};
pub use config::{AdminConfig, HeaderConfig, RequestLimits, ServeConfig};
pub use decision_log::DecisionRecord;
pub use refresh::{Refresher, ReloadError};

use self::authz::Authorizer;
use self::decision_log::DecisionLog;
use self::metrics::Metrics;
use crate::store::Store;
use crate::swap::{LiveOptions, LivePolicy};

/// Why the server could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration file does not parse.
    #[error("config `{path}`: {why}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A configuration value is not acceptable.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file or thread operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store, the module or the snapshot was refused.
    #[error(transparent)]
    Keyscope(#[from] crate::Error),
}

/// What the server tells its caller as it starts.
#[derive(Debug)]
pub enum Event {
    /// The listeners are bound (port 0 is resolved here).
    Listening {
        /// The HTTP listener.
        http: SocketAddr,
        /// The gRPC listener, if on.
        grpc: Option<SocketAddr>,
        /// The admin listener, if on.
        admin: Option<SocketAddr>,
    },
    /// A new admin token was generated; show it once.
    AdminToken(Zeroizing<String>),
    /// The first generation is live.
    Ready {
        /// Its number.
        generation: u64,
    },
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

fn local(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, ServeError> {
    listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Runs the server until SIGTERM or SIGINT.
pub async fn run(config: ServeConfig, on_event: impl Fn(Event)) -> Result<(), ServeError> {
    config.validate()?;
    let http_listener = bind(config.listen).await?;
    let grpc_listener = match config.grpc_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let admin_listener = match config.admin.listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    on_event(Event::Listening {
        http: local(&http_listener, config.listen)?,
        grpc: grpc_listener
            .as_ref()
            .zip(config.grpc_listen)
            .map(|(l, addr)| local(l, addr))
            .transpose()?,
        admin: admin_listener
            .as_ref()
            .zip(config.admin.listen)
            .map(|(l, addr)| local(l, addr))
            .transpose()?,
    });

    let (log, log_writer) = match &config.decision_log {
        Some(path) => {
            let (log, writer) = DecisionLog::start(path)?;
            (log, Some(writer))
        }
        None => (DecisionLog::off(), None),
    };
    let authorizer = Arc::new(Authorizer::new(Metrics::new(), log, config.headers.clone()));
    let (stop, stopped) = watch::channel(false);
    let limits = config.limits.clone();
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(http::serve(
        http_listener,
        http::router(Arc::clone(&authorizer), &config.envoy_path_prefix, &limits),
        limits.clone(),
        stopped.clone(),
    ));
    if let Some(listener) = grpc_listener {
        let service = AuthorizationServer::new(grpc::ExtAuthz::new(Arc::clone(&authorizer)))
            .max_decoding_message_size(limits.max_header_bytes.max(4096) * 4);
        let mut stopped = stopped.clone();
        let server = tonic::transport::Server::builder()
            .timeout(limits.request_timeout())
            .http2_max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .add_service(service)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                },
            );
        servers.spawn(async move {
            if let Err(error) = server.await {
                tracing::error!(%error, "the gRPC server failed");
            }
        });
    }

    // Go live: the first generation, then the store watcher.
    let started = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || start_live(&config)).await
    };
    let (refresher, admin_store, token) = match started {
        Ok(Ok(started)) => started,
        Ok(Err(error)) => {
            let _ = stop.send(true);
            return Err(error);
        }
        Err(join) => {
            let _ = stop.send(true);
            return Err(ServeError::Io {
                what: "starting the live policy".to_owned(),
                source: std::io::Error::other(join.to_string()),
            });
        }
    };
    authorizer.set_live(Arc::clone(refresher.live()));
    let _watcher = refresher
        .watch(config.poll_interval())
        .map_err(|source| ServeError::Io {
            what: "starting the store watcher".to_owned(),
            source,
        })?;
    if let (Some(listener), Some(store)) = (admin_listener, admin_store) {
        if config
            .admin
            .listen
            .is_some_and(|addr| !addr.ip().is_loopback())
        {
            tracing::warn!(
                "the admin API listens beyond loopback; put it behind TLS or a private network"
            );
        }
        let (digest, shown) = token;
        if let Some(token) = shown {
            on_event(Event::AdminToken(token));
        }
        servers.spawn(http::serve(
            listener,
            admin::router(store, Arc::clone(&refresher), digest, &limits),
            limits.clone(),
            stopped.clone(),
        ));
    }
    on_event(Event::Ready {
        generation: refresher.live().current().number,
    });
    tracing::info!(
        generation = refresher.live().current().number,
        "live: serving decisions"
    );

    signals(&refresher).await?;
    tracing::info!("shutting down: draining requests in flight");
    let _ = stop.send(true);
    // Each server drains for up to the drain timeout; a client that ignores
    // the HTTP/2 GOAWAY must not hold the process beyond it.
    let drained = tokio::time::timeout(limits.drain_timeout(), async {
        while servers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("drain timeout: closing the connections still open");
        servers.abort_all();
        while servers.join_next().await.is_some() {}
    }
    drop(authorizer);
    if let Some(writer) = log_writer {
        writer.finish();
    }
    Ok(())
}

type Started = (
    Arc<Refresher>,
    Option<Store>,
    ([u8; 32], Option<Zeroizing<String>>),
);

/// Opens the store, builds the first generation, and sets up the admin token.
fn start_live(config: &ServeConfig) -> Result<Started, ServeError> {
    let mut store = Store::open_existing(&config.store)?;
    let snapshot = crate::snapshot::build(&mut store)?;
    let module = config
        .policy
        .as_ref()
        .map(|path| {
            std::fs::read(path).map_err(|source| ServeError::Io {
                what: format!("reading policy `{}`", path.display()),
                source,
            })
        })
        .transpose()?;
    let live = Arc::new(LivePolicy::new(
        module.as_deref(),
        &snapshot,
        LiveOptions::default(),
    )?);
    let refresher = Arc::new(Refresher::new(live, store, config.policy.clone())?);
    if config.admin.listen.is_none() {
        return Ok((refresher, None, ([0; 32], None)));
    }
    let mut admin_store = Store::open_existing(&config.store)?;
    let token = admin_token(&mut admin_store, config.admin.token_file.as_deref())?;
    Ok((refresher, Some(admin_store), token))
}

/// The admin token's digest: from the token file, else the stored one, else
/// a new token (returned to be shown once).
fn admin_token(
    store: &mut Store,
    file: Option<&std::path::Path>,
) -> Result<([u8; 32], Option<Zeroizing<String>>), ServeError> {
    if let Some(path) = file {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| ServeError::Io {
                    what: format!("reading admin token file `{}`", path.display()),
                    source,
                })?,
            );
        let token = text.trim();
        if token.len() < 16 {
            return Err(ServeError::Invalid(format!(
                "the admin token in `{}` is shorter than 16 characters",
                path.display()
            )));
        }
        let digest = admin::token_digest(token);
        store.set_admin_token_digest(&digest)?;
        return Ok((digest, None));
    }
    if let Some(digest) = store.admin_token_digest()? {
        return Ok((digest, None));
    }
    let token = admin::generate_token();
    let digest = admin::token_digest(&token);
    store.set_admin_token_digest(&digest)?;
    Ok((digest, Some(token)))
}

/// Waits for SIGTERM or SIGINT; on SIGHUP reloads the module from its file
/// and rebuilds the snapshot.
async fn signals(refresher: &Arc<Refresher>) -> Result<(), ServeError> {
    let install = |kind: SignalKind| {
        signal(kind).map_err(|source| ServeError::Io {
            what: "installing a signal handler".to_owned(),
            source,
        })
    };
    let mut hangup = install(SignalKind::hangup())?;
    let mut terminate = install(SignalKind::terminate())?;
    let mut interrupt = install(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                let refresher = Arc::clone(refresher);
                let reloaded = tokio::task::spawn_blocking(move || {
                    let module = refresher.reload_module(None);
                    let snapshot = refresher.refresh();
                    (module, snapshot)
                })
                .await;
                match reloaded {
                    Ok((Ok(generation), _)) => tracing::info!(
                        generation = generation.number,
                        module = %generation.component.info().digest,
                        "SIGHUP: module reloaded"
                    ),
                    Ok((Err(ReloadError::NoPolicyFile), _)) => {
                        tracing::info!("SIGHUP: no policy file to reload; snapshot refreshed");
                    }
                    Ok((Err(error), _)) => {
                        tracing::error!(%error, "SIGHUP: module refused; the current one keeps serving");
                    }
                    Err(error) => tracing::error!(%error, "SIGHUP: reload failed"),
                }
            }
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
        }
    }
}
