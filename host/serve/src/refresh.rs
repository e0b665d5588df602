//! Freshness: the server's snapshot follows the store, and its module
//! follows its file.
//!
//! A thread polls the store's change revision, which grows with every
//! change committed by any process (the CLI elsewhere, another server's
//! admin API, this one's). On a change it reads only the rows changed
//! since the revision it holds ([`keyscope_store::snapshot::Builder`]),
//! applies them to its copy, and swaps the new snapshot in. Rebuilds are
//! serialised, and each reads one consistent view of the store, so the last
//! swap always holds every change committed before it began: a revocation
//! never goes back to live.
//!
//! When the store cannot be read (a database restarting, a network gone),
//! the last snapshot keeps serving, [`Freshness`] says since when it is
//! stale, and the next poll tries again, reconnecting by itself.
//!
//! A control plane also publishes each new state to its fleet
//! ([`Bundles`]). A gateway has no store: its state comes from signed
//! bundles ([`Gateway`]), and this only reports on them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use keyscope_keys::usage::UsageTally;
use keyscope_runtime::SwapError;
use keyscope_runtime::swap::{Generation, LivePolicy};
use keyscope_store::audit::AuditEvent;
use keyscope_store::snapshot::Builder;
use keyscope_store::{AnyStore as Store, Store as _, StoreError, TokenKind};
use serde::Serialize;

use crate::bundles::Bundles;
use keyscope_gateway::Gateway;
use keyscope_gateway::Staleness;

struct Watched {
    store: Store,
    builder: Builder,
}

/// Whether the snapshot is known to hold the store's latest state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Freshness {
    /// The store, as it may be shown (never a password).
    pub store: String,
    /// The store revision the live snapshot was built at.
    pub revision: u64,
    /// Whether the store could be read.
    #[serde(flatten)]
    pub staleness: Staleness,
}

/// Rebuilds and swaps snapshots and modules for a live policy.
pub struct Refresher {
    live: Arc<LivePolicy>,
    source: Source,
    /// Key uses counted by the decisions on `live`.
    usage: Arc<UsageTally>,
    policy: Option<PathBuf>,
    max_policy_bytes: u64,
    /// Whether the prover has held the live state once (see `ready`).
    warmed: AtomicBool,
}

/// Where the live state comes from.
enum Source {
    /// A store, read here; with bundles, published to a fleet too.
    Store {
        watched: Box<Mutex<Watched>>,
        freshness: Mutex<Freshness>,
        bundles: Option<Arc<Bundles>>,
    },
    /// Signed bundles, which the gateway follows.
    Gateway(Arc<Gateway>),
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Refresher {
    /// Watches `store` for `live`, whose snapshot `builder` built, and
    /// publishes each new state to `bundles` if given; `policy` is the
    /// module file to reload, read only if it is a regular file of at most
    /// `max_policy_bytes`.
    pub fn new(
        live: Arc<LivePolicy>,
        store: Store,
        builder: Builder,
        shown: String,
        bundles: Option<Arc<Bundles>>,
        policy: Option<PathBuf>,
        max_policy_bytes: u64,
    ) -> Self {
        let mut freshness = Freshness {
            store: shown,
            revision: builder.revision(),
            ..Freshness::default()
        };
        freshness.staleness.checked();
        Self {
            live,
            source: Source::Store {
                watched: Box::new(Mutex::new(Watched { store, builder })),
                freshness: Mutex::new(freshness),
                bundles,
            },
            usage: Arc::new(UsageTally::default()),
            policy,
            max_policy_bytes,
            warmed: AtomicBool::new(false),
        }
    }

    /// Reports on `gateway`, whose bundles feed its live policy.
    pub fn gateway(gateway: Arc<Gateway>) -> Self {
        Self {
            live: Arc::clone(gateway.live()),
            usage: Arc::clone(gateway.usage()),
            source: Source::Gateway(gateway),
            policy: None,
            max_policy_bytes: 0,
            warmed: AtomicBool::new(false),
        }
    }

    /// The live policy.
    pub fn live(&self) -> &Arc<LivePolicy> {
        &self.live
    }

    /// Where decisions count key uses: written to the store by the usage
    /// writer, or (on a gateway) reported to the control plane on its polls.
    pub fn usage(&self) -> &Arc<UsageTally> {
        &self.usage
    }

    /// A control plane's bundles.
    pub fn bundles(&self) -> Option<&Arc<Bundles>> {
        match &self.source {
            Source::Store { bundles, .. } => bundles.as_ref(),
            Source::Gateway(_) => None,
        }
    }

    /// On a gateway, waits (for at most `patience`) until its bundle cache
    /// holds what is live.
    pub fn flush_cache(&self, patience: Duration) {
        if let Source::Gateway(gateway) = &self.source
            && let Some(revision) = gateway.flush_cache(patience)
        {
            tracing::debug!(revision, "gateway: the bundle cache is written");
        }
    }

    /// Whether the live state came from its source (always for a store; a
    /// gateway once it accepted a bundle or loaded its cache) and, the first
    /// time, whether the instance that proves deltas holds it too. Until
    /// then the first change would wait for a whole load (seconds at ten
    /// million keys). Once ready it stays so: a later full load rewarms
    /// the prover on every gateway at once, and a fleet must not all say
    /// 503 together for it.
    pub fn ready(&self) -> bool {
        let holds = match &self.source {
            Source::Store { .. } => true,
            Source::Gateway(gateway) => gateway.holds_bundle(),
        };
        if !holds {
            return false;
        }
        if self.warmed.load(Ordering::Relaxed) {
            return true;
        }
        let warm = self.live.prover_ready();
        if warm {
            self.warmed.store(true, Ordering::Relaxed);
        }
        warm
    }

    /// Whether the live snapshot is known to hold the store's latest
    /// state; `None` on a gateway.
    pub fn freshness(&self) -> Option<Freshness> {
        match &self.source {
            Source::Store { freshness, .. } => Some(
                freshness
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
            ),
            Source::Gateway(_) => None,
        }
    }

    /// Where the live state comes from and whether it is current, for
    /// `/readyz` and `/admin/status`: `"store"` or `"bundle"`, and its
    /// status.
    pub fn source_status(&self) -> (&'static str, serde_json::Value) {
        match &self.source {
            Source::Store { freshness, .. } => {
                let freshness = freshness
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                ("store", serde_json::to_value(freshness).unwrap_or_default())
            }
            Source::Gateway(gateway) => (
                "bundle",
                serde_json::to_value(gateway.status()).unwrap_or_default(),
            ),
        }
    }

    /// Brings the snapshot up to the store's revision, if it moved on: the
    /// new generation, if one was published. A failed read leaves the
    /// current generation serving and marks it stale. A gateway's bundles
    /// arrive by its own polls: nothing to do here.
    pub fn refresh(&self) -> Result<Option<Arc<Generation>>> {
        let Source::Store {
            watched,
            freshness,
            bundles,
        } = &self.source
        else {
            return Ok(None);
        };
        let mut watched = watched.lock().unwrap_or_else(PoisonError::into_inner);
        let Watched { store, builder } = &mut *watched;
        let update = match builder.update(store) {
            Ok(update) => update,
            Err(error) => {
                let since = mark_stale(freshness, &error);
                self.live.mark_stale(since);
                return Err(error.into());
            }
        };
        let generation = match update {
            None => None,
            Some(update) => {
                let current = self.live.current();
                // Gateways prove every bundle before it goes live, so the
                // fleet is told first: their swaps run beside this one.
                if let Some(bundles) = bundles {
                    bundles.advance(
                        update.revision,
                        builder.snapshot().clone(),
                        Arc::clone(&current.module),
                        Some(update.changes),
                    );
                }
                // Skip a swap that changes nothing.
                if update.digest == current.snapshot_info.digest {
                    None
                } else {
                    // The workers apply the delta to the snapshot they
                    // hold; the snapshot is encoded whole only if that is
                    // refused. It cannot fail to encode (it was planned),
                    // and if it did, the empty snapshot would be refused
                    // and the current one keep serving.
                    let whole = || builder.snapshot().to_bytes().unwrap_or_default();
                    Some(self.live.swap_delta(&update.delta, whole)?)
                }
            }
        };
        let mut freshness = freshness.lock().unwrap_or_else(PoisonError::into_inner);
        freshness.revision = builder.revision();
        freshness.staleness.checked();
        drop(freshness);
        self.live.mark_fresh();
        if let Some(bundles) = bundles {
            // The gateways' tokens, so that a revoked one is refused from
            // now on. Unreadable, the last read keep serving (fail static).
            match store.tokens(TokenKind::Fleet) {
                Ok(tokens) => bundles.credentials().set(&tokens),
                Err(error) => {
                    tracing::warn!(%error, "the fleet tokens could not be read; the last read serve");
                }
            }
            // The state was read good just now: it may be vouched for again.
            bundles.resign_if_due();
        }
        Ok(generation)
    }

    /// Reloads the module from `path`, or from the configured file, and
    /// appends the swap (or its refusal) to the store's audit trail as
    /// `actor`.
    pub fn reload_module(
        &self,
        path: Option<&Path>,
        actor: &str,
    ) -> std::result::Result<Arc<Generation>, ReloadError> {
        let before = self.live.current();
        let reloaded = self.reload_inner(path);
        let module = |generation: &Generation| {
            serde_json::json!({
                "generation": generation.number,
                "module": generation.component.info().digest,
            })
        };
        let event = match &reloaded {
            Ok(generation) => AuditEvent::new("policy.swap", "policy")
                .before(&module(&before))
                .after(&module(generation)),
            Err(ReloadError::Gateway | ReloadError::NoPolicyFile) => return reloaded,
            Err(error) => AuditEvent::new("policy.refuse", "policy")
                .before(&module(&before))
                .after(&serde_json::json!({ "refused": error.to_string() })),
        };
        if let Source::Store { watched, .. } = &self.source {
            let mut watched = watched.lock().unwrap_or_else(PoisonError::into_inner);
            watched.store.set_actor(actor);
            if let Err(error) = watched.store.record_event(event) {
                tracing::error!(%error, "the module reload is not in the audit trail");
            }
        }
        reloaded
    }

    fn reload_inner(
        &self,
        path: Option<&Path>,
    ) -> std::result::Result<Arc<Generation>, ReloadError> {
        if let Source::Gateway(_) = self.source {
            return Err(ReloadError::Gateway);
        }
        let path = path
            .or(self.policy.as_deref())
            .ok_or(ReloadError::NoPolicyFile)?;
        let bytes = match keyscope_runtime::files::read_regular(path, self.max_policy_bytes) {
            Ok(bytes) => bytes,
            Err(source) => {
                // Refused like any other swap: counted, and in the history.
                let error = ReloadError::Read(source);
                self.live.refuse_unread(&error.to_string());
                return Err(error);
            }
        };
        let generation = self.live.swap_module(&bytes)?;
        if let Some(bundles) = self.bundles() {
            bundles.module(&generation);
        }
        Ok(generation)
    }

    /// Polls the store every `interval` on a thread of its own, until the
    /// returned handle is dropped.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> std::io::Result<Watcher> {
        if let Source::Gateway(gateway) = &self.source {
            return Ok(Watcher {
                stop: Some(gateway.watch()?),
                thread: None,
            });
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let refresher = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("keyscope-store-watch".to_owned())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    match refresher.refresh() {
                        Ok(Some(generation)) => tracing::info!(
                            generation = generation.number,
                            snapshot = %generation.snapshot_info.digest_hex(),
                            "store changed: snapshot swapped"
                        ),
                        Ok(None) => {}
                        // The last good generation keeps serving.
                        Err(RefreshError::Store(_)) => {}
                        Err(error) => tracing::error!(%error, "store changed: rebuild failed"),
                    }
                }
            })?;
        Ok(Watcher {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// Marks the store unreadable; since when.
fn mark_stale(freshness: &Mutex<Freshness>, error: &StoreError) -> u64 {
    let mut freshness = freshness.lock().unwrap_or_else(PoisonError::into_inner);
    if freshness.staleness.failed(error) {
        tracing::warn!(%error, "the store cannot be read: the last snapshot keeps serving");
    }
    freshness
        .staleness
        .stale_since_ms
        .unwrap_or_else(keyscope_runtime::time::now_ms)
}

/// Why a module reload failed; the current generation keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A gateway's module comes from its bundles.
    #[error("this server is a gateway: its module comes from its signed bundles")]
    Gateway,
    /// No file was given and none is configured.
    #[error("no policy file to reload: start with --policy FILE, or name one")]
    NoPolicyFile,
    /// The file could not be read, or is not a regular file within the
    /// size limit.
    #[error("policy file: {0}")]
    Read(#[source] keyscope_runtime::Error),
    /// The module was refused at a step of the swap.
    #[error(transparent)]
    Refused(#[from] SwapError),
}

/// Why a snapshot rebuild failed; the current generation keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The new snapshot was refused.
    #[error(transparent)]
    Swap(#[from] SwapError),
}

type Result<T, E = RefreshError> = std::result::Result<T, E>;

/// The polling thread; stops when dropped.
#[derive(Debug)]
pub struct Watcher {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
