//! A gateway (`keyscope serve --bundle-url URL --bundle-public-key FILE`,
//! or the embedded library with `bundle_url`). It holds no store and no database credentials. It follows signed
//! bundles from a control plane (long polls, deltas) or from any static
//! HTTP server (a file polled with `If-None-Match`), and decides on the
//! last one it accepted.
//!
//! Every bundle goes through [`Follower::prepare`] (signature, digests,
//! no rollback, a delta's exact result), then through the live policy's
//! swap (which still proves the module and snapshot), and only then is it
//! held and written to the cache. A refused bundle is counted by kind and
//! changes nothing: the last good state keeps serving.
//!
//! At start the gateway loads its cache, which verifies as the bundle did.
//! With no cache and no control plane it serves an empty snapshot, which
//! denies every key, and `/readyz` says it is not ready.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use keyscope_bundle::{BundleError, Follower, Layout};
use keyscope_keys::usage::{KeyUse, MAX_REPORT, UsageTally};
use keyscope_policy::snapshot::{SnapshotData, default_operations};
use keyscope_runtime::SwapError;
use keyscope_runtime::swap::{Generation, LiveOptions, LivePolicy};
use keyscope_runtime::time::now_ms;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::cache_writer::CacheWriter;
use crate::staleness::Staleness;

/// The poll's header that carries a usage report
/// ([`keyscope_keys::usage::KeyUse::report`]).
pub const USAGE_HEADER: &str = "keyscope-usage";

/// The largest bundle a gateway downloads.
const MAX_BUNDLE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// How a gateway follows its bundles.
#[derive(Debug)]
pub struct GatewayConfig {
    /// The bundle URL: a control plane's `/v1/bundle`, or a static file.
    pub url: String,
    /// The keys whose bundles it accepts: the control plane's, and while
    /// its signing key is rotated, the next one too.
    pub trusted: Vec<VerifyingKey>,
    /// The fleet token it presents, if any.
    pub token: Option<Zeroizing<String>>,
    /// PEM certificates of the CAs to trust for `https://`, instead of
    /// the webpki roots.
    pub ca: Option<Vec<u8>>,
    /// The cache file of the last good bundle.
    pub cache: Option<PathBuf>,
    /// Its id in the control plane's fleet view.
    pub id: String,
    /// How long a long poll may wait.
    pub wait: Duration,
    /// The pause between polls of a server that does not long-poll, and
    /// after a failure.
    pub interval: Duration,
}

/// What `/readyz` and `/admin/status` say of a gateway's bundles.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BundleStatus {
    /// The bundle URL, without its query.
    pub url: String,
    /// This gateway's id.
    pub gateway: String,
    /// The revision served; `None` until a bundle was accepted.
    pub revision: Option<u64>,
    /// The version of the newest bundle verified (a new signature of the
    /// same state moves it too).
    pub version: Option<u64>,
    /// When that bundle's signature expires: past it, the gateway is
    /// stale, whatever its server answers.
    pub expires_at_ms: Option<u64>,
    /// When the control plane published it.
    pub published_at_ms: Option<u64>,
    /// How old it is, from then.
    pub age_ms: Option<u64>,
    /// Whether it came from the cache, with no bundle accepted since.
    pub from_cache: bool,
    /// Whether the bundle server answered the last poll with a bundle
    /// accepted or nothing new (a refused bundle is stale too).
    #[serde(flatten)]
    pub staleness: Staleness,
    /// Bundles refused, by kind.
    pub refused: BTreeMap<&'static str, u64>,
    /// The last bundle accepted from the server: full or delta, and its
    /// size on the wire.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_bundle: Option<LastBundle>,
}

impl BundleStatus {
    /// Notes the bundle now held.
    fn held(&mut self, manifest: &keyscope_bundle::Manifest) {
        self.revision = Some(manifest.revision);
        self.version = Some(manifest.version);
        self.expires_at_ms = Some(manifest.expires_at_ms);
        self.published_at_ms = Some(manifest.published_at_ms);
    }
}

/// The last bundle a gateway accepted from its server.
#[derive(Debug, Clone, Serialize)]
pub struct LastBundle {
    /// `full` or `delta`.
    pub kind: &'static str,
    /// Its size in bytes.
    pub bytes: usize,
}

/// Why a poll did not bring a new state.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The bundle server could not be reached or read.
    #[error("bundle server: {0}")]
    Transport(String),
    /// It answered with an error status, and maybe said why.
    #[error("bundle server answered HTTP {status}{}", why.as_deref().map(|why| format!(": {why}")).unwrap_or_default())]
    Status {
        /// The status.
        status: u16,
        /// The `error.message` of a keyscope control plane's answer,
        /// printable and short: a hostile server's words go no further
        /// than a status line.
        why: Option<String>,
    },
    /// The bundle was refused before it went live.
    #[error("bundle refused: {0}")]
    Refused(#[from] BundleError),
    /// The live policy refused its module or snapshot.
    #[error("bundle refused by the live policy: {0}")]
    Swap(#[from] SwapError),
}

/// The reason a keyscope control plane gives for a refused poll: the
/// `error.message` of its JSON answer, read from at most 4 KiB, at most
/// 200 characters of printable ASCII, and never the gateway's own token
/// (a hostile server could echo it back, into the public `/readyz`).
fn why_refused(
    response: &mut ureq::http::Response<ureq::Body>,
    token: Option<&str>,
) -> Option<String> {
    let body = response
        .body_mut()
        .with_config()
        .limit(4096)
        .read_to_vec()
        .ok()?;
    let answer: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let mut message = answer["error"]["message"].as_str()?.to_owned();
    if let Some(token) = token.filter(|token| !token.is_empty()) {
        message = message.replace(token, "[its fleet token]");
    }
    Some(
        message
            .chars()
            .take(200)
            .map(|c| {
                if c == ' ' || c.is_ascii_graphic() {
                    c
                } else {
                    '?'
                }
            })
            .collect(),
    )
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Its id breaks the rule every control plane checks.
    #[error(transparent)]
    BadId(#[from] crate::BadGatewayId),
    /// Its CA file holds no certificate.
    #[error("the bundle CA file holds no PEM certificate")]
    NoCertificate,
    /// Even the empty starting state was refused.
    #[error("the empty starting snapshot was refused: {0}")]
    Empty(String),
    /// The live policy could not start.
    #[error(transparent)]
    Swap(#[from] SwapError),
    /// The cache writer's thread could not start.
    #[error("starting the bundle cache writer: {0}")]
    CacheWriter(#[source] std::io::Error),
}

impl PollError {
    fn kind(&self) -> Option<&'static str> {
        match self {
            Self::Refused(error) => Some(error.kind()),
            Self::Swap(_) => Some("swap"),
            Self::Transport(_) | Self::Status { .. } => None,
        }
    }
}

/// A gateway's bundle follower and its status.
pub struct Gateway {
    config: GatewayConfig,
    agent: ureq::Agent,
    live: Arc<LivePolicy>,
    follower: Mutex<Follower>,
    /// The entity tag of the last bundle accepted from the URL.
    etag: Mutex<Option<String>>,
    status: Mutex<BundleStatus>,
    usage: Arc<UsageTally>,
    /// Writes the cache file, if there is one, off the poll path.
    cache: Option<CacheWriter>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("url", &self.config.url)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Starts from the cache if it verifies, else from an empty snapshot
    /// that denies every key; then polls once without waiting.
    pub fn start(config: GatewayConfig, options: LiveOptions) -> Result<Arc<Self>, StartError> {
        // Checked here, not first by the control plane: a gateway it would
        // refuse must not start, say `ready` and deny every key.
        crate::check_id(&config.id)?;
        let mut follower = Follower::new(config.trusted.clone());
        let mut status = BundleStatus {
            url: shown_url(&config.url),
            gateway: config.id.clone(),
            ..BundleStatus::default()
        };
        let cached = config
            .cache
            .as_deref()
            .map(|path| -> Result<_, PollError> {
                let Some(bytes) = keyscope_bundle::cache::read(path, config.trusted.as_slice())?
                else {
                    return Ok(None);
                };
                let Some(candidate) = follower.prepare(&bytes, Layout::Cache, now_ms())? else {
                    return Ok(None);
                };
                let live = LivePolicy::new(
                    candidate.module.as_deref(),
                    &candidate.snapshot,
                    options.clone(),
                )?;
                status.held(&candidate.manifest);
                status.from_cache = true;
                follower.commit(candidate);
                Ok(Some(live))
            })
            .transpose();
        let live = match cached {
            Ok(Some(Some(live))) => {
                tracing::info!(
                    revision = status.revision,
                    "gateway: started from the bundle cache"
                );
                live
            }
            other => {
                if let Err(error) = other {
                    tracing::warn!(%error, "gateway: the bundle cache was refused; starting empty");
                    count(&mut status, &error);
                }
                let empty = SnapshotData {
                    operations: default_operations(),
                    routes: keyscope_policy::routes::default_routes(),
                    ..SnapshotData::default()
                }
                .encode()
                .map_err(|e| StartError::Empty(e.to_string()))?;
                LivePolicy::new(None, &empty, options)?
            }
        };
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(pem) = &config.ca {
            let certificates = ureq::tls::parse_pem(pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(certificate)) => Some(certificate),
                    _ => None,
                })
                .collect::<Vec<_>>();
            if certificates.is_empty() {
                return Err(StartError::NoCertificate);
            }
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(certificates)));
        }
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .tls_config(tls.build())
                .http_status_as_error(false)
                .timeout_connect(Some(Duration::from_secs(5)))
                .timeout_global(Some(config.wait + Duration::from_secs(60)))
                .user_agent("keyscope-gateway")
                .build(),
        );
        // A cache past its expiry still serves (fail static), and counts
        // toward `max_stale` from then.
        live.set_expiry(status.expires_at_ms.unwrap_or(0));
        // The cache it started from is written already.
        let cached_revision = status.revision.filter(|_| status.from_cache);
        let cache = config
            .cache
            .clone()
            .map(|path| CacheWriter::start(path, cached_revision))
            .transpose()
            .map_err(StartError::CacheWriter)?;
        let gateway = Arc::new(Self {
            config,
            agent,
            live: Arc::new(live),
            follower: Mutex::new(follower),
            etag: Mutex::new(None),
            status: Mutex::new(status),
            usage: Arc::new(UsageTally::default()),
            cache,
        });
        if let Err(error) = gateway.poll(Duration::ZERO) {
            tracing::warn!(%error, "gateway: the first poll failed; serving what it holds");
        }
        Ok(gateway)
    }

    /// The live policy it feeds.
    pub fn live(&self) -> &Arc<LivePolicy> {
        &self.live
    }

    /// Key uses counted by whoever decides on [`Gateway::live`], reported
    /// to the control plane on the next poll (at most
    /// [`keyscope_keys::usage::MAX_REPORT`] keys a poll).
    pub fn usage(&self) -> &Arc<UsageTally> {
        &self.usage
    }

    /// Whether it holds an accepted bundle (from the cache or a server).
    pub fn holds_bundle(&self) -> bool {
        self.status().revision.is_some()
    }

    /// Its status, with the age computed now.
    pub fn status(&self) -> BundleStatus {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let now = now_ms();
        status.age_ms = status.published_at_ms.map(|at| now.saturating_sub(at));
        // Derived here, where it is read: a bundle whose signature ran out
        // makes the gateway stale, however its server answers (304s
        // forever, or nothing newer than an old bundle).
        if let Some(expired) = status.expires_at_ms.filter(|&at| at <= now) {
            status.staleness.stale = true;
            status.staleness.stale_since_ms = Some(
                status
                    .staleness
                    .stale_since_ms
                    .map_or(expired, |since| since.min(expired)),
            );
            status.staleness.error = Some(format!(
                "the newest verified bundle expired {} s ago, and its server has sent no newer \
                 signature: a freeze, or a control plane that cannot read its store",
                (now - expired) / 1000
            ));
        }
        status
    }

    fn update(&self, change: impl FnOnce(&mut BundleStatus)) {
        change(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// One poll: waits up to `wait` on a control plane that long-polls.
    /// Returns whether the server long-polls (and may be polled again at
    /// once).
    pub fn poll(&self, wait: Duration) -> Result<bool, PollError> {
        let outcome = self.poll_inner(wait);
        match &outcome {
            Ok(_) => {
                self.update(|status| status.staleness.checked());
                self.live.mark_fresh();
            }
            Err(error) => {
                self.update(|status| {
                    let refused = error.kind().is_some();
                    if refused {
                        // The server answered; its bundle did not pass.
                        status.staleness.checked_at_ms = now_ms();
                    }
                    // Said once per outage; every refusal is said.
                    if status.staleness.failed(error) || refused {
                        tracing::warn!(%error, "gateway: the last good bundle keeps serving");
                    }
                    count(status, error);
                    self.live
                        .mark_stale(status.staleness.stale_since_ms.unwrap_or_else(now_ms));
                });
            }
        }
        outcome
    }

    fn poll_inner(&self, wait: Duration) -> Result<bool, PollError> {
        let held = self
            .follower
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .held()
            .cloned();
        let mut request = self
            .agent
            .get(&self.config.url)
            .query("gateway", &self.config.id)
            .query("wait", wait.as_secs().to_string());
        if let Some(held) = &held {
            request = request
                .query("version", held.version.to_string())
                .query("revision", held.revision.to_string())
                .query("snapshot", &held.snapshot.sha256)
                .query("module", &held.module.sha256);
        }
        let etag = self
            .etag
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(etag) = etag {
            request = request.header("if-none-match", etag);
        }
        if let Some(token) = &self.config.token {
            request = request.header("authorization", format!("Bearer {}", token.as_str()));
        }
        let report = self.usage.drain_at_most(MAX_REPORT);
        if !report.is_empty() {
            request = request.header(USAGE_HEADER, KeyUse::report(&report));
        }
        // A report the control plane did not take is kept for the next poll.
        let unreported = |report: Vec<KeyUse>| self.usage.merge(report);
        let mut response = match request.call() {
            Ok(response) => response,
            Err(error) => {
                unreported(report);
                return Err(PollError::Transport(error.to_string()));
            }
        };
        if !matches!(response.status().as_u16(), 200 | 304) {
            unreported(report);
        }
        let long_poll = response.headers().contains_key("keyscope-long-poll");
        let etag = response
            .headers()
            .get("etag")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        match response.status().as_u16() {
            304 => return Ok(long_poll),
            200 => {}
            status => {
                return Err(PollError::Status {
                    status,
                    why: why_refused(
                        &mut response,
                        self.config.token.as_deref().map(|t| t.as_str()),
                    ),
                });
            }
        }
        // Bounded before it is read: a declared length over the cap is
        // refused unread, and the body is read no further than its signed
        // manifest declares (format::read_bounded).
        let declared = response
            .headers()
            .get("content-length")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if let Some(found) = declared.filter(|&length| length > MAX_BUNDLE_BYTES) {
            return Err(PollError::Refused(BundleError::TooLarge {
                found,
                limit: MAX_BUNDLE_BYTES,
            }));
        }
        let bytes = keyscope_bundle::format::read_bounded(
            &mut response
                .body_mut()
                .with_config()
                .limit(MAX_BUNDLE_BYTES)
                .reader(),
            self.config.trusted.as_slice(),
            Layout::Served,
            MAX_BUNDLE_BYTES,
        )?;
        self.accept(&bytes)?;
        *self.etag.lock().unwrap_or_else(PoisonError::into_inner) = etag;
        Ok(long_poll)
    }

    /// Checks a served bundle, swaps it in, says so, then holds and caches
    /// it.
    fn accept(&self, bytes: &[u8]) -> Result<Option<Arc<Generation>>, PollError> {
        let started = std::time::Instant::now();
        let mut follower = self.follower.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(candidate) = follower.prepare(bytes, Layout::Served, now_ms())? else {
            return Ok(None);
        };
        if candidate.renews() {
            // The held state, signed anew: nothing to swap.
            let manifest = candidate.manifest.clone();
            self.update(|status| {
                status.held(&manifest);
                status.from_cache = false;
            });
            self.live.set_expiry(manifest.expires_at_ms);
            follower.commit(candidate);
            self.queue_cache(&follower);
            tracing::debug!(
                version = manifest.version,
                expires_at_ms = manifest.expires_at_ms,
                "gateway: bundle renewed"
            );
            return Ok(None);
        }
        let prepared = started.elapsed();
        let current = self.live.current();
        let generation = match (&candidate.module, &candidate.delta) {
            (Some(module), _)
                if candidate.manifest.module.sha256 != current.component.info().digest =>
            {
                self.live.swap(module, &follower.snapshot_of(&candidate)?)?
            }
            // Each worker applies the delta to the snapshot it holds; the
            // whole snapshot only if the policy will not take it.
            (_, Some(delta)) => self.live.swap_delta(delta, || {
                follower.snapshot_of(&candidate).unwrap_or_default()
            })?,
            (_, None) => self.live.swap_snapshot(&candidate.snapshot)?,
        };
        // Live: the status says so before anything slower happens.
        let manifest = &candidate.manifest;
        let kind = match manifest.kind {
            keyscope_bundle::Kind::Full => "full",
            keyscope_bundle::Kind::Delta => "delta",
        };
        self.live.set_expiry(manifest.expires_at_ms);
        self.update(|status| {
            status.held(manifest);
            status.from_cache = false;
            status.last_bundle = Some(LastBundle {
                kind,
                bytes: bytes.len(),
            });
        });
        tracing::info!(
            generation = generation.number,
            kind,
            bytes = bytes.len(),
            revision = manifest.revision,
            snapshot = %generation.snapshot_info.digest_hex(),
            checked_ms = prepared.as_millis() as u64,
            live_ms = started.elapsed().as_millis() as u64,
            "gateway: bundle accepted"
        );
        follower.commit(candidate);
        self.queue_cache(&follower);
        Ok(Some(generation))
    }

    /// Queues the held state for the cache file, if there is one. It is
    /// written on the cache writer's thread: a new state is live before
    /// its cache is written, and a restart in between starts from the
    /// cache before it, then polls.
    fn queue_cache(&self, follower: &Follower) {
        if let (Some(cache), Some(image)) = (&self.cache, follower.cache_image()) {
            cache.queue(image);
        }
    }

    /// Waits, for at most `patience`, until the cache file holds the
    /// state live now (a failed write is logged); the revision it last
    /// got. A server calls this as it stops, so a restart starts from what
    /// was live.
    pub fn flush_cache(&self, patience: Duration) -> Option<u64> {
        let cache = self.cache.as_ref()?;
        // A bundle being accepted is live before it is queued: taking the
        // follower waits for it to be queued too.
        let held = self
            .follower
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .held()
            .map(|manifest| manifest.revision);
        let written = cache.flush(patience);
        if let Some(held) = held
            && written.is_none_or(|written| written < held)
        {
            tracing::warn!(
                held,
                written,
                "gateway: the bundle cache is behind the state live; a restart starts \
                 from the older one, then polls"
            );
        }
        written
    }

    /// Polls on a thread of its own until the handle is dropped. The thread
    /// is not joined: a long poll in flight ends with the process.
    pub fn watch(self: &Arc<Self>) -> std::io::Result<Sender<()>> {
        let (stop, stopped) = mpsc::channel::<()>();
        let gateway = Arc::clone(self);
        std::thread::Builder::new()
            .name("keyscope-bundle-poll".to_owned())
            .spawn(move || {
                loop {
                    let again_at_once = matches!(gateway.poll(gateway.config.wait), Ok(true));
                    let pause = if again_at_once {
                        Duration::ZERO
                    } else {
                        gateway.config.interval
                    };
                    if let Err(RecvTimeoutError::Disconnected) = stopped.recv_timeout(pause) {
                        return;
                    }
                }
            })?;
        Ok(stop)
    }
}

fn count(status: &mut BundleStatus, error: &PollError) {
    if let Some(kind) = error.kind() {
        *status.refused.entry(kind).or_default() += 1;
    }
}

/// A URL as it may be shown: no user info, no query.
fn shown_url(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}{path}")
}
