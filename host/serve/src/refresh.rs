//! Freshness: the server's snapshot follows the store, and its module
//! follows its file.
//!
//! A thread polls SQLite's `data_version`, which changes whenever another
//! connection (the CLI in another process, or the admin API) commits. On a
//! change it rebuilds the snapshot and swaps it in. Rebuilds are serialised,
//! and each reads the store as of when it starts, so the last swap always
//! holds every change committed before it began: a revocation never goes
//! back to live.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use keyscope_runtime::SwapError;
use keyscope_runtime::swap::{Generation, LivePolicy};
use keyscope_store::SqliteStore as Store;
use keyscope_store::StoreError;

struct Watched {
    store: Store,
    data_version: Option<i64>,
}

/// Rebuilds and swaps snapshots and modules for a live policy.
pub struct Refresher {
    live: Arc<LivePolicy>,
    watched: Mutex<Watched>,
    policy: Option<PathBuf>,
    max_policy_bytes: u64,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Refresher {
    /// Watches `store` for `live`; `policy` is the module file to reload,
    /// read only if it is a regular file of at most `max_policy_bytes`.
    pub fn new(
        live: Arc<LivePolicy>,
        store: Store,
        policy: Option<PathBuf>,
        max_policy_bytes: u64,
    ) -> Result<Self, StoreError> {
        let data_version = Some(store.data_version()?);
        Ok(Self {
            live,
            watched: Mutex::new(Watched {
                store,
                data_version,
            }),
            policy,
            max_policy_bytes,
        })
    }

    /// The live policy.
    pub fn live(&self) -> &Arc<LivePolicy> {
        &self.live
    }

    /// Rebuilds the snapshot if the store changed since the last rebuild;
    /// the new generation, if one was published.
    pub fn refresh_if_changed(&self) -> Result<Option<Arc<Generation>>> {
        self.rebuild(false)
    }

    /// Rebuilds the snapshot now, as after a change made through this
    /// server; the new generation, if the snapshot differs.
    pub fn refresh(&self) -> Result<Option<Arc<Generation>>> {
        self.rebuild(true)
    }

    fn rebuild(&self, always: bool) -> Result<Option<Arc<Generation>>> {
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        let version = watched.store.data_version()?;
        if !always && watched.data_version == Some(version) {
            return Ok(None);
        }
        let bytes = keyscope_store::snapshot::build(&mut watched.store)?;
        // The trailer is the snapshot's digest: skip a swap that changes nothing.
        let current = self.live.current();
        let generation = if bytes.ends_with(&current.snapshot_info.digest) {
            None
        } else {
            Some(self.live.swap_snapshot(&bytes)?)
        };
        watched.data_version = Some(version);
        Ok(generation)
    }

    /// Reloads the module from `path`, or from the configured file.
    pub fn reload_module(
        &self,
        path: Option<&Path>,
    ) -> std::result::Result<Arc<Generation>, ReloadError> {
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
        Ok(self.live.swap_module(&bytes)?)
    }

    /// Polls the store every `interval` on a thread of its own, until the
    /// returned handle is dropped.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> std::io::Result<Watcher> {
        let (stop, stopped) = mpsc::channel::<()>();
        let refresher = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("keyscope-store-watch".to_owned())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    match refresher.refresh_if_changed() {
                        Ok(Some(generation)) => tracing::info!(
                            generation = generation.number,
                            snapshot = %generation.snapshot_info.digest_hex(),
                            "store changed: snapshot swapped"
                        ),
                        Ok(None) => {}
                        // The last good generation keeps serving.
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

/// Why a module reload failed; the current generation keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
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
