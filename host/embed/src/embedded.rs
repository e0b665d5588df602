//! The handle, in safe Rust: the live policy, a pool of workers, and the
//! feed that keeps it fresh (a watched snapshot file, or a fleet's bundles)
//! on a thread of its own. The C ABI ([`crate::ffi`]) only converts.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keyscope_gateway::{BundleStatus, Gateway, GatewayConfig, Staleness};
use keyscope_policy::{HttpRequest, Method};
use keyscope_runtime::swap::{Generation, LiveOptions, LivePolicy, Outcome, Worker};
use keyscope_runtime::time::now_ms;
use serde::Serialize;

use crate::config::{DataSource, EmbedConfig};
use crate::error::EmbedError;

/// The shortest fleet token accepted, as `keyscope serve` has it.
const MIN_TOKEN_LEN: usize = 16;

/// An open handle: decides on the live generation, which its feed swaps.
pub struct Embedded {
    live: Arc<LivePolicy>,
    /// Idle workers; a call takes one and puts it back, so calls from
    /// several threads each get their own instance.
    workers: Mutex<Vec<Worker>>,
    feed: Feed,
    errors: Arc<Mutex<Errors>>,
    /// The deadline of one decision, for the words of a policy error.
    evaluate_timeout: Duration,
    /// Decisions taken through this handle.
    decisions: AtomicU64,
    /// Dropping it stops the feed's thread.
    _stop: Sender<()>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

/// Where new state comes from.
enum Feed {
    Files(Arc<FileFeed>),
    Bundle(Arc<Gateway>),
}

impl Drop for Embedded {
    /// A handle closes with its bundle cache holding what was live: the
    /// next one starts from it.
    fn drop(&mut self) {
        if let Feed::Bundle(gateway) = &self.feed {
            gateway.flush_cache(std::time::Duration::from_secs(10));
        }
    }
}

/// Errors since the handle opened: how many, and the last one's words.
#[derive(Debug, Default)]
struct Errors {
    count: u64,
    last: Option<String>,
    /// The policy-error count already reported, so that a run of them is
    /// said once per status read rather than once per decision.
    policy_errors_seen: u64,
}

impl Errors {
    fn record(&mut self, message: String) {
        self.count += 1;
        self.last = Some(message);
    }
}

/// What the status call reports.
#[derive(Debug, Clone, Serialize)]
pub struct EmbedStatus {
    /// `snapshot-file` or `bundle`.
    pub source: &'static str,
    /// The generation serving.
    pub generation: u64,
    /// When it went live (ms since the Unix epoch).
    pub loaded_at_ms: u64,
    /// The module's SHA-256.
    pub module_digest: String,
    /// The snapshot's SHA-256 (its trailer).
    pub snapshot_digest: String,
    /// Key records in the snapshot.
    pub keys: u32,
    /// The control plane's revision of the state, from a bundle; a
    /// snapshot file carries none.
    pub snapshot_revision: Option<u64>,
    /// How old the data is: from its bundle's publication, or from the
    /// snapshot file's last write.
    pub snapshot_age_ms: Option<u64>,
    /// Decisions taken through this handle.
    pub decisions: u64,
    /// Generations published since open.
    pub swaps: u64,
    /// Swaps refused since open; the last good state kept serving.
    pub swaps_refused: u64,
    /// Decisions denied with `policy-error`.
    pub policy_errors: u64,
    /// Whether the source could be read at its last look.
    #[serde(flatten)]
    pub staleness: Staleness,
    /// Errors recorded since open.
    pub errors: u64,
    /// The last one, in words.
    pub last_error: Option<String>,
    /// The bundle follower's own status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle: Option<BundleStatus>,
}

impl EmbedStatus {
    /// The status of a handle used in a child forked after its open:
    /// nothing it serves can be vouched for, and `why` says so.
    pub(crate) fn forked(why: String) -> Self {
        let mut staleness = Staleness::default();
        staleness.failed(&why);
        Self {
            source: "forked",
            generation: 0,
            loaded_at_ms: 0,
            module_digest: String::new(),
            snapshot_digest: String::new(),
            keys: 0,
            snapshot_revision: None,
            snapshot_age_ms: None,
            decisions: 0,
            swaps: 0,
            swaps_refused: 0,
            policy_errors: 0,
            staleness,
            errors: 1,
            last_error: Some(why),
            bundle: None,
        }
    }
}

impl Embedded {
    /// Opens a handle from a configuration file.
    pub fn open_file(path: &Path) -> Result<Self, EmbedError> {
        Self::open(EmbedConfig::load(path)?)
    }

    /// Opens a handle: the first generation is proved as every swap is, and
    /// the feed's thread starts.
    pub fn open(config: EmbedConfig) -> Result<Self, EmbedError> {
        let evaluate_timeout = config.limits.evaluate_timeout;
        let options = LiveOptions {
            limits: config.limits.clone(),
            max_stale: config.max_stale,
            ..LiveOptions::default()
        };
        let errors = Arc::new(Mutex::new(Errors::default()));
        let (stop, stopped) = mpsc::channel::<()>();
        let (live, feed) = match config.source {
            DataSource::Files {
                snapshot,
                policy,
                interval,
            } => {
                let feed = Arc::new(FileFeed::new(
                    snapshot,
                    policy,
                    config.force_untested_policy,
                ));
                let live = Arc::new(feed.first(options)?);
                let (thread_feed, thread_live, thread_errors) =
                    (Arc::clone(&feed), Arc::clone(&live), Arc::clone(&errors));
                std::thread::Builder::new()
                    .name("keyscope-watch".to_owned())
                    .spawn(move || {
                        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                            if let Err(error) = thread_feed.look(&thread_live) {
                                lock(&thread_errors).record(error);
                            }
                        }
                    })
                    .map_err(EmbedError::Thread)?;
                (live, Feed::Files(feed))
            }
            DataSource::Bundle {
                url,
                public_key,
                next_public_key,
                ca,
                token,
                cache,
                gateway_id,
                wait,
                interval,
            } => {
                let token_file = token;
                let token = token_file
                    .as_deref()
                    .map(|path| {
                        keyscope_runtime::files::read_token(path, "fleet token", MIN_TOKEN_LEN)
                    })
                    .transpose()?;
                // A gateway's own token names it: its control plane refuses
                // polls under any id but that name's.
                if let (Some(path), Some(token), None) = (&token_file, &token, &gateway_id)
                    && token.starts_with(keyscope_keys::admin_token::FLEET_PREFIX)
                {
                    return Err(EmbedError::Config {
                        path: path.clone(),
                        why: "the fleet token is a gateway's own (ksfleet_...): set `gateway_id` \
                              to the name it was created with (keyscope fleet token list)"
                            .to_owned(),
                    });
                }
                let gateway = Gateway::start(
                    GatewayConfig {
                        url,
                        trusted: std::iter::once(public_key)
                            .chain(next_public_key)
                            .map(|path| keyscope_bundle::keys::read_public_key(&path))
                            .collect::<Result<_, _>>()?,
                        token,
                        ca: ca
                            .as_deref()
                            .map(|path| keyscope_runtime::files::read_regular(path, 1024 * 1024))
                            .transpose()?,
                        cache: cache.map(|dir| dir.join("bundle.cache")),
                        id: poll_id(gateway_id.as_deref()),
                        wait,
                        interval,
                    },
                    // Bundle deltas are proved on an instance of their own.
                    LiveOptions {
                        deltas: true,
                        ..options
                    },
                )?;
                let live = Arc::clone(gateway.live());
                // The gateway polls until `stop` is dropped.
                let gateway_stop = gateway.watch().map_err(EmbedError::Thread)?;
                std::thread::Builder::new()
                    .name("keyscope-stop".to_owned())
                    .spawn(move || {
                        let _ = stopped.recv();
                        drop(gateway_stop);
                    })
                    .map_err(EmbedError::Thread)?;
                (live, Feed::Bundle(gateway))
            }
        };
        Ok(Self {
            live,
            workers: Mutex::new(Vec::new()),
            feed,
            errors,
            evaluate_timeout,
            decisions: AtomicU64::new(0),
            _stop: stop,
        })
    }

    /// Decides one HTTP request from every copy of its API key header and
    /// of `Authorization` (the one ambiguity rule of every front door), its
    /// method and its path with the query. Fails closed: any failure is a
    /// deny with `policy-error`.
    pub fn decide<'a>(
        &self,
        api_keys: impl IntoIterator<Item = &'a [u8]>,
        authorizations: impl IntoIterator<Item = &'a [u8]>,
        method: &[u8],
        path: &[u8],
    ) -> Outcome {
        let credential = keyscope_keys::credential_from_headers(api_keys, authorizations);
        let path = as_text(path);
        let method = Method::parse(&String::from_utf8_lossy(method));
        let mut worker = lock(&self.workers)
            .pop()
            .unwrap_or_else(|| self.live.worker());
        let now = now_ms();
        let outcome = worker.evaluate_http(&HttpRequest {
            credential,
            method,
            path: &path,
            now,
        });
        lock(&self.workers).push(worker);
        self.decisions.fetch_add(1, Ordering::Relaxed);
        // Following a control plane, key uses go back to it on the next
        // poll; a snapshot file has nowhere to send them.
        if let (Feed::Bundle(gateway), Some(key_id)) = (&self.feed, outcome.decision.key_id) {
            gateway.usage().record(key_id, now);
        }
        outcome
    }

    /// Records an error the caller met (a bad argument, a misuse), for the
    /// status call.
    pub fn record_error(&self, message: String) {
        lock(&self.errors).record(message);
    }

    /// The live policy.
    pub fn live(&self) -> &Arc<LivePolicy> {
        &self.live
    }

    /// The handle's status, now.
    pub fn status(&self) -> EmbedStatus {
        let current = self.live.current();
        let stats = self.live.stats();
        let policy_errors = stats.policy_errors.load(Ordering::Relaxed);
        let mut errors = lock(&self.errors);
        if policy_errors > errors.policy_errors_seen {
            let new = policy_errors - errors.policy_errors_seen;
            errors.policy_errors_seen = policy_errors;
            errors.record(format!(
                "{new} decision(s) denied with policy-error: the module of generation {} \
                 (sha256 {}) trapped, ran past its {} ms deadline or out of memory, \
                 or could not be instantiated",
                current.number,
                current.component.info().digest,
                self.evaluate_timeout.as_millis(),
            ));
        }
        let (source, staleness, revision, age, bundle) = match &self.feed {
            Feed::Files(feed) => {
                let state = lock(&feed.state);
                (
                    "snapshot-file",
                    state.staleness.clone(),
                    None,
                    state.written_at_ms.map(|at| now_ms().saturating_sub(at)),
                    None,
                )
            }
            Feed::Bundle(gateway) => {
                let status = gateway.status();
                if let Some(error) = &status.staleness.error
                    && errors.last.as_deref() != Some(error)
                    && status.staleness.stale
                {
                    errors.record(error.clone());
                }
                (
                    "bundle",
                    status.staleness.clone(),
                    status.revision,
                    status.age_ms,
                    Some(status),
                )
            }
        };
        EmbedStatus {
            source,
            generation: current.number,
            loaded_at_ms: current.loaded_at_ms,
            module_digest: current.component.info().digest.clone(),
            snapshot_digest: current.snapshot_info.digest_hex(),
            keys: current.snapshot_info.keys,
            snapshot_revision: revision,
            snapshot_age_ms: age,
            decisions: self.decisions.load(Ordering::Relaxed),
            swaps: stats.swaps_published.load(Ordering::Relaxed),
            swaps_refused: stats.swaps_refused.load(Ordering::Relaxed),
            policy_errors,
            staleness,
            errors: errors.count,
            last_error: errors.last.clone(),
            bundle,
        }
    }
}

/// A path as text: a byte that is not UTF-8 is percent-encoded, as the
/// URI it came from means, so it can never split or join a segment.
fn as_text(path: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(path) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => {
            let mut text = String::with_capacity(path.len() * 3);
            for chunk in path.utf8_chunks() {
                text.push_str(chunk.valid());
                for byte in chunk.invalid() {
                    text.push_str(&format!("%{byte:02X}"));
                }
            }
            Cow::Owned(text)
        }
    }
}

/// The id this process reports to a control plane: the configured id (a
/// gateway's own fleet token's name) or the host name, and the pid, since
/// each nginx worker follows bundles on its own: `edge-1:pid4242`.
fn poll_id(configured: Option<&str>) -> String {
    let host;
    let name = match configured {
        Some(name) => name,
        None => {
            host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            let host = host.trim();
            if host.is_empty() { "embedded" } else { host }
        }
    };
    format!("{name}:pid{}", std::process::id())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A file as last seen: a change to any of these is a new file to read.
/// `keyscope snapshot export` replaces the file by rename, so the inode
/// changes; an in-place write changes the size or the times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    device: u64,
    inode: u64,
    size: u64,
    modified_ns: i128,
    changed_ns: i128,
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(path)?;
        Ok(Self {
            device: meta.dev(),
            inode: meta.ino(),
            size: meta.size(),
            modified_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            changed_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        })
    }

    fn modified_ms(self) -> Option<u64> {
        u64::try_from(self.modified_ns / 1_000_000).ok()
    }
}

/// A snapshot file and an optional module file, looked at on a timer.
struct FileFeed {
    snapshot: PathBuf,
    policy: Option<PathBuf>,
    force_untested: bool,
    state: Mutex<FileState>,
}

#[derive(Default)]
struct FileState {
    snapshot_seen: Option<Stamp>,
    policy_seen: Option<Stamp>,
    /// When the snapshot file serving was written.
    written_at_ms: Option<u64>,
    /// Why the files as last seen are not the ones serving: stale until
    /// they change again and load.
    refused: Option<String>,
    staleness: Staleness,
}

impl FileFeed {
    fn new(snapshot: PathBuf, policy: Option<PathBuf>, force_untested: bool) -> Self {
        Self {
            snapshot,
            policy,
            force_untested,
            state: Mutex::new(FileState::default()),
        }
    }

    /// The first generation, from the files as they are.
    fn first(&self, options: LiveOptions) -> Result<LivePolicy, EmbedError> {
        let mut state = lock(&self.state);
        let snapshot_seen = Stamp::of(&self.snapshot).ok();
        let snapshot = keyscope_runtime::files::read_snapshot(&self.snapshot)?;
        let policy_seen = self.policy.as_deref().and_then(|path| Stamp::of(path).ok());
        let module = self
            .policy
            .as_deref()
            .map(|path| {
                keyscope_runtime::files::read_regular(
                    path,
                    keyscope_runtime::files::MAX_POLICY_BYTES,
                )
            })
            .transpose()?;
        let live = if self.force_untested {
            let live = LivePolicy::new(None, &snapshot, options)?;
            if let Some(module) = &module {
                live.force_publish_untested(module)?;
            }
            live
        } else {
            LivePolicy::new(module.as_deref(), &snapshot, options)?
        };
        *state = FileState {
            snapshot_seen,
            policy_seen,
            written_at_ms: snapshot_seen.and_then(Stamp::modified_ms),
            refused: None,
            staleness: Staleness::default(),
        };
        state.staleness.checked();
        Ok(live)
    }

    /// Looks at the files; swaps in what changed. A file that cannot be
    /// read or is refused leaves the last good generation serving.
    fn look(&self, live: &LivePolicy) -> Result<(), String> {
        let mut state = lock(&self.state);
        let outcome = self.look_inner(live, &mut state);
        match &outcome {
            Ok(Looked::Unchanged) if state.refused.is_some() => {
                // The newest files were refused and have not changed since:
                // still stale, for the same reason.
                return Ok(());
            }
            Ok(_) => {
                state.refused = None;
                state.staleness.checked();
                live.mark_fresh();
            }
            Err(error) => {
                state.refused = Some(error.clone());
                state.staleness.failed(error);
                live.mark_stale(
                    state
                        .staleness
                        .stale_since_ms
                        .unwrap_or_else(keyscope_runtime::time::now_ms),
                );
            }
        }
        outcome.map(|_| ())
    }

    fn look_inner(&self, live: &LivePolicy, state: &mut FileState) -> Result<Looked, String> {
        let snapshot_now = Stamp::of(&self.snapshot)
            .map_err(|error| format!("snapshot `{}`: {error}", self.snapshot.display()))?;
        let policy_now = match &self.policy {
            None => None,
            Some(path) => Some(
                Stamp::of(path).map_err(|error| format!("policy `{}`: {error}", path.display()))?,
            ),
        };
        let snapshot_changed = state.snapshot_seen != Some(snapshot_now);
        let policy_changed = policy_now.is_some() && state.policy_seen != policy_now;
        if !snapshot_changed && !policy_changed {
            return Ok(Looked::Unchanged);
        }
        // Seen, whatever comes of it: a refused file is not retried until
        // it changes again.
        state.snapshot_seen = Some(snapshot_now);
        state.policy_seen = policy_now;
        let snapshot = snapshot_changed
            .then(|| keyscope_runtime::files::read_snapshot(&self.snapshot))
            .transpose()
            .map_err(|error| format!("snapshot not swapped: {error}"))?;
        let module = match (&self.policy, policy_changed) {
            (Some(path), true) => Some(
                keyscope_runtime::files::read_regular(
                    path,
                    keyscope_runtime::files::MAX_POLICY_BYTES,
                )
                .map_err(|error| format!("module not swapped: {error}"))?,
            ),
            _ => None,
        };
        let swapped: Result<Arc<Generation>, _> = match (module, snapshot) {
            (Some(module), _) if self.force_untested => live.force_publish_untested(&module),
            (Some(module), Some(snapshot)) => live.swap(&module, &snapshot),
            (Some(module), None) => live.swap_module(&module),
            (None, Some(snapshot)) => live.swap_snapshot(&snapshot),
            (None, None) => return Ok(Looked::Unchanged),
        };
        swapped
            .map_err(|error| format!("not swapped; the last good state keeps serving: {error}"))?;
        if snapshot_changed {
            state.written_at_ms = snapshot_now.modified_ms();
        }
        Ok(Looked::Swapped)
    }
}

/// What a look at the files found.
enum Looked {
    /// Nothing changed since the last look.
    Unchanged,
    /// A change, now serving.
    Swapped,
}
