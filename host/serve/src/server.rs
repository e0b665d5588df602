//! The server as a value: [`Server::bind`] validates the configuration,
//! loads everything that can be refused and binds the listeners;
//! [`Server::run`] serves until SIGTERM or SIGINT, then drains.

use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use keyscope_runtime::swap::LivePolicy;
use keyscope_store::snapshot::Builder;
use keyscope_store::{AnyStore as Store, Store as _};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio_stream::StreamExt as _;
use zeroize::Zeroizing;

use crate::authz::Authorizer;
use crate::bundles::Bundles;
use crate::config::ServeConfig;
use crate::decision_log::{DecisionLog, LogWriter};
use crate::metrics::Metrics;
use crate::refresh::{Refresher, ReloadError};
use crate::usage::UsageWriter;
use crate::{ServeError, admin, conn, grpc, http};
use keyscope_gateway::{Gateway, GatewayConfig};

/// The listeners' addresses, with port 0 resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The HTTP listener.
    pub http: SocketAddr,
    /// The gRPC listener, if on.
    pub grpc: Option<SocketAddr>,
    /// The admin listener, if on.
    pub admin: Option<SocketAddr>,
}

/// A loaded, bound server, not yet serving.
pub struct Server {
    config: ServeConfig,
    refresher: Arc<Refresher>,
    admin: Option<AdminStarted>,
    /// The usage writer's own store connection; `None` on a gateway.
    usage_store: Option<Store>,
    log: DecisionLog,
    log_writer: Option<LogWriter>,
    http: TcpListener,
    grpc: Option<TcpListener>,
    admin_listener: Option<TcpListener>,
    /// Pages mounted on the admin listener beside the admin API.
    admin_pages: Option<AdminPages>,
    /// `[console.oidc]`, checked: for the pages.
    oidc: Option<Oidc>,
    addresses: Addresses,
    signals: Signals,
}

/// What pages on the admin listener are given: the admin doors' shared
/// state (its store access, sign-in and decision path) and the settings
/// that are theirs.
pub struct AdminMount {
    /// The admin doors' state.
    pub admin: admin::Admin,
    /// How long a signed-in session lasts.
    pub lifetimes: crate::ConsoleLifetimes,
    /// Whether cookies are marked `Secure`.
    pub secure_cookies: bool,
    /// The server's request limits.
    pub limits: crate::RequestLimits,
    /// Sign-in through an OpenID provider, checked at start.
    pub oidc: Option<Oidc>,
}

/// `[console.oidc]` checked at start: the client secret read, every
/// group's role parsed.
pub struct Oidc {
    /// The settings as configured.
    pub config: crate::OidcConfig,
    /// The client secret.
    pub client_secret: Zeroizing<String>,
    /// Each group and the role it holds.
    pub roles: Vec<(String, keyscope_store::Role)>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.config.issuer)
            .field("client_id", &self.config.client_id)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

impl Oidc {
    /// Reads the secret and parses the roles of `config`.
    pub fn load(config: &crate::OidcConfig) -> Result<Self, ServeError> {
        let invalid = |why: String| ServeError::Invalid(format!("[console.oidc] {why}"));
        let client_secret = keyscope_runtime::files::read_token(
            &config.client_secret_file,
            "OpenID client secret",
            1,
        )?;
        let mut roles = Vec::new();
        for (group, role) in &config.roles {
            let role: keyscope_store::Role = role
                .parse()
                .map_err(|error| invalid(format!("roles.\"{group}\": {error}")))?;
            roles.push((group.clone(), role));
        }
        if roles.is_empty() {
            return Err(invalid(
                "roles is empty: map at least one group to a role, or nobody can sign in".into(),
            ));
        }
        for (what, url) in [
            ("issuer", &config.issuer),
            ("redirect_url", &config.redirect_url),
        ] {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(invalid(format!("{what} is not an http(s) URL")));
            }
        }
        Ok(Self {
            config: config.clone(),
            client_secret,
            roles,
        })
    }
}

impl std::fmt::Debug for AdminMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminMount")
            .field("lifetimes", &self.lifetimes)
            .field("secure_cookies", &self.secure_cookies)
            .finish_non_exhaustive()
    }
}

/// Builds the pages mounted beside the admin API (the console): every path
/// of the admin listener that the API does not own is theirs.
pub type AdminPages = Box<dyn FnOnce(AdminMount) -> axum::Router + Send>;

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Validates `config`, then loads everything that can be refused (the
    /// store, the module, the first generation, the admin token, the
    /// decision log), and only then binds the listeners: a bad file never
    /// leaves a server that listened and then exited.
    pub async fn bind(config: ServeConfig) -> Result<Self, ServeError> {
        config.validate()?;
        let oidc = config.console.oidc.as_ref().map(Oidc::load).transpose()?;
        let started = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || start_live(&config))
                .await
                .map_err(|join| ServeError::Io {
                    what: "starting the live policy".to_owned(),
                    source: std::io::Error::other(join.to_string()),
                })??
        };
        let (log, log_writer) = match &config.decision_log {
            Some(path) => {
                let (log, writer) = DecisionLog::start(path)?;
                (log, Some(writer))
            }
            None => (DecisionLog::off(), None),
        };
        let http = bind(config.listen).await?;
        let grpc = match config.grpc_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let admin_listener = match (config.admin.listen, &started.admin) {
            (Some(addr), Some(_)) => Some(bind(addr).await?),
            _ => None,
        };
        let addresses = Addresses {
            http: local(&http)?,
            grpc: grpc.as_ref().map(local).transpose()?,
            admin: admin_listener.as_ref().map(local).transpose()?,
        };
        // Installed before anyone can be told the server is up: a SIGTERM
        // sent as soon as it says so is a shutdown, not a kill.
        let signals = Signals::install()?;
        Ok(Self {
            config,
            refresher: started.refresher,
            admin: started.admin,
            usage_store: started.usage_store,
            log,
            log_writer,
            http,
            grpc,
            admin_listener,
            admin_pages: None,
            oidc,
            addresses,
            signals,
        })
    }

    /// Where it listens.
    pub fn addresses(&self) -> Addresses {
        self.addresses
    }

    /// The live generation's number.
    pub fn generation(&self) -> u64 {
        self.refresher.live().current().number
    }

    /// Resolves once a verified state is being served, with its
    /// generation: at once on a server with a store; on a gateway, once its
    /// first bundle (or its cache) is live. Until then `/readyz` says 503,
    /// and the gateway denies every key.
    pub fn ready(&self) -> impl std::future::Future<Output = u64> + Send + 'static {
        let refresher = Arc::clone(&self.refresher);
        async move {
            // A gateway's follower thread takes its bundle; this only looks.
            while !refresher.ready() {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            refresher.live().current().number
        }
    }

    /// The admin token, if it was generated at this start: to be shown
    /// once, and only the first time this is called.
    pub fn take_new_admin_token(&mut self) -> Option<Zeroizing<String>> {
        self.admin
            .as_mut()
            .and_then(|admin| admin.token.shown.take())
    }

    /// Mounts `pages` (the console) on the admin listener, beside the
    /// admin API, which keeps its own paths. Without pages, the listener
    /// serves the API alone.
    pub fn mount_admin_pages(&mut self, pages: AdminPages) {
        self.admin_pages = Some(pages);
    }

    /// Serves until SIGTERM or SIGINT, then stops accepting, drains the
    /// requests in flight (for up to the drain timeout) and flushes the
    /// decision log. SIGHUP reloads the module and refreshes the snapshot.
    pub async fn run(self) -> Result<(), ServeError> {
        let Self {
            config,
            refresher,
            admin: admin_started,
            usage_store,
            log,
            log_writer,
            http: http_listener,
            grpc: grpc_listener,
            admin_listener,
            admin_pages,
            mut oidc,
            addresses: _,
            signals,
        } = self;
        let limits = config.limits.clone();
        let listeners =
            1 + usize::from(grpc_listener.is_some()) + usize::from(admin_listener.is_some());
        let accept = conn::AcceptLimits {
            max_connections: limits.connections_per_listener(listeners, conn::descriptor_limit()),
            idle_timeout: limits.idle_timeout(),
        };
        tracing::info!(
            per_listener = accept.max_connections,
            idle_timeout_ms = limits.idle_timeout_ms,
            "connection limits"
        );
        let authorizer = Arc::new(Authorizer::new(
            Metrics::new(),
            log,
            config.headers.clone(),
            Arc::clone(refresher.usage()),
            config.usage,
        ));
        // Written at shutdown too, when this is dropped.
        let _usage_writer = match usage_store {
            Some(store) => Some(
                UsageWriter::start(
                    store,
                    Arc::clone(refresher.usage()),
                    config.usage_interval(),
                    authorizer.metrics().usage(),
                )
                .map_err(|source| ServeError::Io {
                    what: "starting the usage writer".to_owned(),
                    source,
                })?,
            ),
            None => None,
        };
        authorizer.set_live(Arc::clone(refresher.live()));
        let _watcher =
            refresher
                .watch(config.poll_interval())
                .map_err(|source| ServeError::Io {
                    what: "starting the store watcher".to_owned(),
                    source,
                })?;
        let (stop, stopped) = watch::channel(false);
        let mut servers = tokio::task::JoinSet::new();
        servers.spawn(http::serve(
            http_listener,
            http::router(
                Arc::clone(&authorizer),
                Arc::clone(&refresher),
                &config.envoy_path_prefix,
                &limits,
            ),
            limits.clone(),
            accept,
            stopped.clone(),
        ));
        if let Some(listener) = grpc_listener {
            let service = AuthorizationServer::new(grpc::ExtAuthz::new(Arc::clone(&authorizer)))
                .max_decoding_message_size(limits.max_header_bytes.max(4096) * 4);
            let incoming = tokio_stream::wrappers::ReceiverStream::new(conn::accept(
                listener,
                accept,
                stopped.clone(),
            ))
            .map(Ok::<_, std::io::Error>);
            let mut stopped = stopped.clone();
            let server = tonic::transport::Server::builder()
                .timeout(limits.request_timeout())
                .http2_keepalive_interval(Some(limits.grpc_keepalive()))
                .http2_keepalive_timeout(Some(limits.idle_timeout()))
                .http2_max_header_list_size(
                    u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX),
                )
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                });
            servers.spawn(async move {
                if let Err(error) = server.await {
                    tracing::error!(%error, "the gRPC server failed");
                }
            });
        }
        if let (Some(listener), Some(AdminStarted { store, token })) =
            (admin_listener, admin_started)
        {
            if config
                .admin
                .listen
                .is_some_and(|addr| !addr.ip().is_loopback())
            {
                tracing::warn!(
                    "the admin API listens beyond loopback; put it behind TLS or a private network"
                );
            }
            let admin = admin::Admin::new(
                store,
                Arc::clone(&refresher),
                Arc::clone(&authorizer),
                token.digest,
                token.known,
                {
                    let proxies = config.admin.trusted_proxies()?;
                    if proxies.trusts_everyone() {
                        tracing::warn!(
                            "admin.trusted_proxies trusts every address (a /0): any client can \
                             name itself in the forwarding header and dodge the limit on \
                             failed authentications; list only your proxies"
                        );
                    }
                    proxies
                },
                &limits,
            );
            // The admin API at its own paths; every other path is the
            // mounted pages' (the console's), which answer an unknown one
            // with a page.
            let mut router = admin::router(admin.clone(), &limits);
            if let Some(pages) = admin_pages {
                router = router.merge(pages(AdminMount {
                    admin,
                    lifetimes: config.admin.console_lifetimes(),
                    secure_cookies: config.admin.secure_cookies(),
                    limits: limits.clone(),
                    oidc: oidc.take(),
                }));
            }
            servers.spawn(http::serve(
                listener,
                router,
                limits.clone(),
                accept,
                stopped.clone(),
            ));
        }
        tracing::info!(
            generation = refresher.live().current().number,
            "live: serving decisions"
        );

        signals.wait(&refresher).await;
        tracing::info!("shutting down: draining requests in flight");
        let _ = stop.send(true);
        if let Some(bundles) = refresher.bundles() {
            bundles.stopping();
        }
        // Each server drains for up to the drain timeout; a client that
        // ignores the HTTP/2 GOAWAY must not hold the process beyond it.
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
        // A restart starts from the cache: it must hold what was live.
        let refresher = Arc::clone(&refresher);
        let patience = limits.drain_timeout();
        let _ = tokio::task::spawn_blocking(move || refresher.flush_cache(patience)).await;
        Ok(())
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

fn local(listener: &TcpListener) -> Result<SocketAddr, ServeError> {
    listener.local_addr().map_err(|source| ServeError::Io {
        what: "reading a listener's address".to_owned(),
        source,
    })
}

/// What [`start_live`] loaded.
struct Started {
    refresher: Arc<Refresher>,
    /// With the admin API on: its own store connection and its token.
    admin: Option<AdminStarted>,
    /// A connection for the usage writer; `None` on a gateway.
    usage_store: Option<Store>,
}

struct AdminStarted {
    /// `None` on a gateway.
    store: Option<Store>,
    token: AdminToken,
}

/// A gateway's admin token digest (a server with a store checks the
/// store's named tokens instead), and the token itself when it was just
/// made (to be shown once).
struct AdminToken {
    digest: Option<[u8; 32]>,
    shown: Option<Zeroizing<String>>,
    /// The store's named tokens as read at the start: the admin API checks
    /// read-only requests against them if the database is out of reach
    /// from the start.
    known: Vec<keyscope_store::Token>,
}

/// The name `--admin-token-file` and a generated first token take: the one
/// admin token of stores from before named tokens.
pub(crate) const FIRST_ADMIN_TOKEN: &str = "admin";

/// Opens the store, builds the first generation, and sets up the admin
/// token and, on a control plane, its bundles. A gateway opens no store.
fn start_live(config: &ServeConfig) -> Result<Started, ServeError> {
    if let Some(url) = &config.bundles.url {
        return start_gateway(config, url);
    }
    let mut store = Store::open_existing(&config.store)?;
    let (builder, snapshot) = Builder::new(&mut store)?;
    let module = config
        .policy
        .as_deref()
        .map(|path| keyscope_runtime::files::read_regular(path, config.limits.max_policy_bytes))
        .transpose()?;
    let live = Arc::new(LivePolicy::new(
        module.as_deref(),
        &snapshot,
        config.live_options(),
    )?);
    let bundles = match &config.bundles.signing_key {
        Some(key) => {
            let key = keyscope_bundle::keys::read_signing_key(key)?;
            let shared = config
                .bundles
                .fleet_token_file
                .as_deref()
                .map(|file| read_token_file(file, "fleet token"))
                .transpose()?;
            if shared.is_some() {
                tracing::warn!(
                    "the shared fleet token (--fleet-token-file) is deprecated: give each \
                     gateway a token of its own (keyscope fleet token create --gateway NAME)"
                );
            }
            tracing::info!(
                signer = %keyscope_bundle::keys::key_id(&key.verifying_key()),
                "publishing signed bundles at /v1/bundle on the admin listener"
            );
            let bundles = Bundles::new(
                key,
                builder.revision(),
                &live.current(),
                shared.map(|token| admin::token_digest(&token)),
                std::time::Duration::from_secs(config.bundles.ttl_s),
                admin::long_poll_max(config.limits.idle_timeout()),
            );
            // Gateways' own tokens, before the first poll can arrive; the
            // refresh loop reads them again with every read of the store.
            bundles
                .credentials()
                .set(&store.tokens(keyscope_store::TokenKind::Fleet)?);
            Some(Arc::new(bundles))
        }
        None => None,
    };
    let refresher = Arc::new(Refresher::new(
        live,
        store,
        builder,
        config.store.to_string(),
        bundles,
        config.policy.clone(),
        config.limits.max_policy_bytes,
    ));
    let admin = match config.admin.listen {
        None => None,
        Some(_) => {
            let mut store = Store::open_existing(&config.store)?;
            let token = admin_token(Some(&mut store), config.admin.token_file.as_deref())?;
            Some(AdminStarted {
                store: Some(store),
                token,
            })
        }
    };
    Ok(Started {
        refresher,
        admin,
        usage_store: config
            .usage
            .then(|| Store::open_existing(&config.store))
            .transpose()?,
    })
}

/// A gateway: its cache or an empty snapshot, then the bundle server.
fn start_gateway(config: &ServeConfig, url: &str) -> Result<Started, ServeError> {
    let bundles = &config.bundles;
    let mut trusted = vec![
        bundles
            .public_key
            .as_deref()
            .map(keyscope_bundle::keys::read_public_key)
            .transpose()?
            .ok_or_else(|| ServeError::Invalid("a gateway needs --bundle-public-key".to_owned()))?,
    ];
    if let Some(next) = &bundles.next_public_key {
        let next = keyscope_bundle::keys::read_public_key(next)?;
        if next == trusted[0] {
            return Err(ServeError::Invalid(
                "--bundle-next-public-key is the same key as --bundle-public-key".to_owned(),
            ));
        }
        trusted.push(next);
    }
    let token = bundles
        .fleet_token_file
        .as_deref()
        .map(|path| read_token_file(path, "fleet token"))
        .transpose()?;
    let ca = bundles
        .ca
        .as_deref()
        .map(|path| keyscope_runtime::files::read_regular(path, 1024 * 1024))
        .transpose()?;
    let cache = match &bundles.cache {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| ServeError::Io {
                what: format!("creating the bundle cache `{}`", dir.display()),
                source,
            })?;
            Some(dir.join("bundle.cache"))
        }
        None => None,
    };
    // A gateway's own token names it: its control plane refuses a poll
    // under any other id, so the id must be given, not made up.
    if bundles.gateway_id.is_none()
        && token
            .as_deref()
            .is_some_and(|token| token.starts_with(keyscope_keys::admin_token::FLEET_PREFIX))
    {
        return Err(ServeError::Invalid(
            "the fleet token is a gateway's own (ksfleet_...): start the gateway with \
             --gateway-id NAME, the name it was created with (keyscope fleet token list)"
                .to_owned(),
        ));
    }
    let id = bundles
        .gateway_id
        .clone()
        .unwrap_or_else(|| keyscope_gateway::default_id("gateway", bundles.cache.as_deref()));
    let gateway = Gateway::start(
        GatewayConfig {
            url: url.to_owned(),
            trusted,
            token,
            ca,
            cache,
            id,
            wait: std::time::Duration::from_secs(bundles.wait_s),
            interval: std::time::Duration::from_millis(bundles.interval_ms),
        },
        config.live_options(),
    )?;
    let refresher = Arc::new(Refresher::gateway(gateway));
    let admin = match config.admin.listen {
        None => None,
        Some(_) => Some(AdminStarted {
            store: None,
            token: admin_token(None, config.admin.token_file.as_deref())?,
        }),
    };
    Ok(Started {
        refresher,
        admin,
        usage_store: None,
    })
}

/// The shortest admin token a token file may hold.
pub(crate) const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// Reads a token file: readable by its owner only, as ssh requires of a
/// private key, UTF-8, and at least [`MIN_ADMIN_TOKEN_LEN`] characters.
fn read_token_file(path: &std::path::Path, what: &str) -> Result<Zeroizing<String>, ServeError> {
    Ok(keyscope_runtime::files::read_token(
        path,
        what,
        MIN_ADMIN_TOKEN_LEN,
    )?)
}

/// The admin token. With a store: `--admin-token-file` becomes the live
/// token named `admin` (replacing an older one of that name); with no file,
/// any live named token will do, and a store with none gets a new one,
/// shown once. A gateway, with no store, takes its file or makes a new
/// token at each start.
fn admin_token(
    store: Option<&mut Store>,
    file: Option<&std::path::Path>,
) -> Result<AdminToken, ServeError> {
    if let Some(path) = file {
        let token = read_token_file(path, "admin token")?;
        let digest = admin::token_digest(&token);
        return Ok(match store {
            Some(store) => {
                store.install_admin_token(FIRST_ADMIN_TOKEN, &digest)?;
                AdminToken {
                    digest: None,
                    shown: None,
                    known: store.tokens(keyscope_store::TokenKind::Admin)?,
                }
            }
            None => AdminToken {
                digest: Some(digest),
                shown: None,
                known: Vec::new(),
            },
        });
    }
    let token = admin::generate_token(keyscope_keys::admin_token::ADMIN_PREFIX);
    let digest = admin::token_digest(&token);
    match store {
        Some(store) => {
            let known = store.tokens(keyscope_store::TokenKind::Admin)?;
            if known.iter().any(|t| t.revoked_at.is_none()) {
                return Ok(AdminToken {
                    digest: None,
                    shown: None,
                    known,
                });
            }
            store.create_token(keyscope_store::TokenKind::Admin, FIRST_ADMIN_TOKEN, &digest)?;
            Ok(AdminToken {
                digest: None,
                shown: Some(token),
                known: store.tokens(keyscope_store::TokenKind::Admin)?,
            })
        }
        None => Ok(AdminToken {
            digest: Some(digest),
            shown: Some(token),
            known: Vec::new(),
        }),
    }
}

/// The signals the server answers, installed at bind.
struct Signals {
    hangup: Signal,
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    fn install() -> Result<Self, ServeError> {
        let install = |kind: SignalKind| {
            signal(kind).map_err(|source| ServeError::Io {
                what: "installing a signal handler".to_owned(),
                source,
            })
        };
        Ok(Self {
            hangup: install(SignalKind::hangup())?,
            terminate: install(SignalKind::terminate())?,
            interrupt: install(SignalKind::interrupt())?,
        })
    }

    /// Waits for SIGTERM or SIGINT; on SIGHUP reloads the module from its
    /// file and brings the snapshot up to the store.
    async fn wait(self, refresher: &Arc<Refresher>) {
        let Self {
            mut hangup,
            mut terminate,
            mut interrupt,
        } = self;
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    let refresher = Arc::clone(refresher);
                    let reloaded = tokio::task::spawn_blocking(move || {
                        let actor = keyscope_store::audit::os_user();
                        let module = refresher.reload_module(None, &actor);
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
                _ = terminate.recv() => return,
                _ = interrupt.recv() => return,
            }
        }
    }
}
