//! The published state: the live generation, replaced atomically, the
//! history of swaps and the counters.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use keyscope_policy::SnapshotInfo;
use serde::Serialize;

use super::pipeline::{
    ComponentCache, SelfTest, SwapError, SwapStep, Swapped, at, compile, digest_hex, prove,
};
use crate::component::{EMBEDDED_POLICY, PolicyComponent};
use crate::engine::{Limits, PolicyEngine};
use crate::instance::PolicyInstance;
use crate::time::now_ms;

/// One published generation: a component and a snapshot, loaded together.
#[derive(Debug)]
pub struct Generation {
    /// 1 for the first, then one more for each swap.
    pub number: u64,
    /// The component.
    pub component: PolicyComponent,
    /// The component's bytes, as loaded: what a control plane publishes
    /// to its fleet.
    pub module: Arc<[u8]>,
    /// The snapshot bytes of the last full load.
    pub snapshot: Arc<[u8]>,
    /// The contract deltas applied to `snapshot` since, in order: the
    /// generation's state is `snapshot` with these applied.
    pub deltas: Vec<Arc<[u8]>>,
    /// The snapshot as the component described it.
    pub snapshot_info: SnapshotInfo,
    /// When it went live, in milliseconds since the Unix epoch.
    pub loaded_at_ms: u64,
    /// The instance that proved it (instantiated, the snapshot loaded), for
    /// the first worker that serves it: at a million keys, loading the
    /// snapshot is most of a swap's cost, and this saves one load.
    proved: Mutex<Option<PolicyInstance>>,
}

impl Generation {
    /// The instance that proved this generation, once: the first worker to
    /// ask serves with it.
    pub(super) fn take_proved(&self) -> Option<PolicyInstance> {
        self.proved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// One line of the swap history.
#[derive(Debug, Clone, Serialize)]
pub struct SwapRecord {
    /// The generation published, or `None` when refused.
    pub generation: Option<u64>,
    /// `module`, `snapshot` or `module+snapshot`.
    pub kind: &'static str,
    /// The module's SHA-256 (hex).
    pub module_digest: String,
    /// The snapshot's SHA-256 (hex), when it got that far.
    pub snapshot_digest: Option<String>,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `live`, or why it was refused.
    pub outcome: String,
}

/// Counters, for status output and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Swaps published.
    pub swaps_published: AtomicU64,
    /// Swaps refused.
    pub swaps_refused: AtomicU64,
    /// Decisions denied because the policy failed (trap, timeout, memory).
    pub policy_errors: AtomicU64,
    /// Worker instances thrown away after a failure.
    pub instances_replaced: AtomicU64,
    /// Changes published as deltas.
    pub deltas_applied: AtomicU64,
    /// Deltas refused (a gap, a mismatch, a module that would not take
    /// one, a full chain), each followed by a full load.
    pub deltas_refused: AtomicU64,
}

/// How many deltas a generation may chain onto its last full snapshot
/// before the next change loads whole: each worker replays the chain when
/// it restarts after a failure.
pub const MAX_DELTAS: usize = 256;

#[derive(Default)]
struct SwapState {
    cache: ComponentCache,
    history: VecDeque<SwapRecord>,
}

/// An instance holding a generation's state, by number, that proves each
/// delta before it is published.
type Prover = Arc<Mutex<Option<(u64, PolicyInstance)>>>;

/// The generation the prover should be warmed for, and a lock that lets
/// one warming load run at a time: swaps in quick succession at ten
/// million keys must not start a 640 MB load each.
#[derive(Default)]
struct Warming {
    wanted: AtomicU64,
    loading: Mutex<()>,
    /// The newest generation whose warming failed (its first delta then
    /// builds the prover itself).
    gave_up: AtomicU64,
}

/// The live policy. Share it in an `Arc`; give each thread a [`Worker`].
pub struct LivePolicy {
    engine: PolicyEngine,
    pub(super) limits: Limits,
    self_test: SelfTest,
    history_len: usize,
    pub(super) current: ArcSwap<Generation>,
    /// Serialises swaps; readers never take it.
    swapping: Mutex<SwapState>,
    pub(super) stats: Stats,
    prover: Prover,
    warming: Arc<Warming>,
    /// Whether to keep the prover warm ([`LiveOptions::deltas`]).
    deltas: bool,
    /// How old the decision data may grow before decisions fail closed.
    pub(super) stale: StaleGuard,
}

/// `max_stale`: an operator's choice to deny (`stale-policy`) rather than
/// decide on data older than a bound. Fed by whatever follows the source
/// (a store's refresh, a gateway's polls and its bundle's expiry, the
/// embedded library's file watcher); read with three relaxed loads by
/// every decision.
#[derive(Debug, Default)]
pub(super) struct StaleGuard {
    /// The bound in ms; 0: off (fail static, the default).
    max_ms: AtomicU64,
    /// Since when the source could not be read; 0: it could.
    since_ms: AtomicU64,
    /// When the data's signature expires (a bundle); 0: never.
    expires_at_ms: AtomicU64,
}

impl StaleGuard {
    /// Whether decisions at `now_ms` must be denied.
    pub(super) fn too_stale(&self, now_ms: u64) -> bool {
        let max = self.max_ms.load(Ordering::Relaxed);
        if max == 0 {
            return false;
        }
        let since = self.since_ms.load(Ordering::Relaxed);
        let expires = self.expires_at_ms.load(Ordering::Relaxed);
        let stale_since = match (since, expires) {
            (0, 0) => return false,
            (0, expires) if now_ms < expires => return false,
            (0, expires) => expires,
            (since, expires) if expires != 0 && expires <= now_ms => since.min(expires),
            (since, _) => since,
        };
        now_ms.saturating_sub(stale_since) > max
    }
}

impl fmt::Debug for LivePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LivePolicy")
            .field("generation", &self.current.load().number)
            .finish_non_exhaustive()
    }
}

/// Options for a [`LivePolicy`].
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Bounds on every call.
    pub limits: Limits,
    /// What a new generation must pass.
    pub self_test: SelfTest,
    /// How many swaps the history keeps.
    pub history_len: usize,
    /// Whether changes will come as deltas ([`LivePolicy::swap_delta`]):
    /// then an instance that proves them is kept loaded with the current
    /// state, built in the background after each full load. It holds one
    /// more copy of the snapshot.
    pub deltas: bool,
    /// Deny every decision (`stale-policy`) once the data is older than
    /// this ([`LivePolicy::set_max_stale`]); `None`: fail static.
    pub max_stale: Option<std::time::Duration>,
}

impl Default for LiveOptions {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            self_test: SelfTest::default(),
            history_len: 32,
            deltas: false,
            max_stale: None,
        }
    }
}

impl LivePolicy {
    /// Starts with `module` (the embedded component if `None`) and
    /// `snapshot`, after the same checks as any swap.
    pub fn new(module: Option<&[u8]>, snapshot: &[u8], options: LiveOptions) -> Swapped<Self> {
        let max_stale = options.max_stale;
        let live = Self::new_inner(module, snapshot, options)?;
        live.set_max_stale(max_stale);
        Ok(live)
    }

    fn new_inner(module: Option<&[u8]>, snapshot: &[u8], options: LiveOptions) -> Swapped<Self> {
        let engine = PolicyEngine::new().map_err(SwapError::Engine)?;
        let module = module.unwrap_or(EMBEDDED_POLICY);
        let mut state = SwapState::default();
        let component = compile(&engine, &mut state.cache, module)?;
        let snapshot: Arc<[u8]> = Arc::from(snapshot);
        let (snapshot_info, proved) = prove(
            &component,
            &snapshot,
            &options.self_test,
            &options.limits,
            true,
        )?;
        let first = Generation {
            number: 1,
            component,
            module: Arc::from(module),
            snapshot,
            deltas: Vec::new(),
            snapshot_info,
            loaded_at_ms: now_ms(),
            proved: Mutex::new(Some(proved)),
        };
        state
            .history
            .push_back(record(Some(&first), "module+snapshot", "live".to_owned()));
        let live = Self {
            engine,
            limits: options.limits,
            self_test: options.self_test,
            history_len: options.history_len.max(1),
            current: ArcSwap::from_pointee(first),
            swapping: Mutex::new(state),
            stats: Stats::default(),
            prover: Prover::default(),
            warming: Arc::default(),
            deltas: options.deltas,
            stale: StaleGuard::default(),
        };
        live.warm_prover(&live.current());
        Ok(live)
    }

    /// Whether the next delta is proved at the cost of the delta: deltas
    /// are off, or the prover holds the live generation.
    /// It never blocks: a prover being built under the lock is not ready
    /// yet.
    pub fn prover_ready(&self) -> bool {
        let number = self.current.load().number;
        !self.deltas
            || self.warming.gave_up.load(Ordering::Relaxed) >= number
            || match self.prover.try_lock() {
                Ok(slot) => slot.as_ref().is_some_and(|(held, _)| *held == number),
                Err(std::sync::TryLockError::Poisoned(slot)) => slot
                    .into_inner()
                    .as_ref()
                    .is_some_and(|(held, _)| *held == number),
                Err(std::sync::TryLockError::WouldBlock) => false,
            }
    }

    /// With [`LiveOptions::deltas`], loads `generation` into a new prover
    /// in the background, so that the first delta after a full load is
    /// proved at the cost of the delta, not of a load.
    fn warm_prover(&self, generation: &Arc<Generation>) {
        if !self.deltas {
            return;
        }
        let generation_number = generation.number;
        let (slot, warming, generation, limits) = (
            Arc::clone(&self.prover),
            Arc::clone(&self.warming),
            Arc::clone(generation),
            self.limits.clone(),
        );
        warming
            .wanted
            .fetch_max(generation.number, Ordering::Relaxed);
        let warm = move || {
            let _one_at_a_time = warming
                .loading
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // A newer full load was published meanwhile (it warms its
            // own), or a delta built this prover itself and moved on.
            let held = slot
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .map(|(number, _)| *number);
            if warming.wanted.load(Ordering::Relaxed) != generation.number
                || held.is_some_and(|number| number >= generation.number)
            {
                return;
            }
            let loaded = generation
                .component
                .instantiate(limits)
                .and_then(|mut instance| {
                    instance.load_shared_snapshot(Arc::clone(&generation.snapshot))?;
                    for delta in &generation.deltas {
                        instance.apply_delta(Arc::clone(delta))?;
                    }
                    Ok(instance)
                });
            let Ok(instance) = loaded else {
                warming
                    .gave_up
                    .fetch_max(generation.number, Ordering::Relaxed);
                return;
            };
            let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
            if slot
                .as_ref()
                .is_none_or(|(number, _)| *number < generation.number)
            {
                *slot = Some((generation.number, instance));
            }
        };
        // Without a thread, the first delta builds its prover itself.
        if std::thread::Builder::new()
            .name("keyscope-prover".to_owned())
            .spawn(warm)
            .is_err()
        {
            self.warming
                .gave_up
                .fetch_max(generation_number, Ordering::Relaxed);
        }
    }

    /// Denies every decision (`stale-policy`, 503) once the data is older
    /// than `max_stale`: its source unreadable (or its signature expired)
    /// for longer. `None`: decide on the last good data however old (fail
    /// static, the default).
    pub fn set_max_stale(&self, max_stale: Option<std::time::Duration>) {
        let ms = max_stale.map_or(0, |max| {
            u64::try_from(max.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        self.stale.max_ms.store(ms, Ordering::Relaxed);
    }

    /// The source could not be read (or verified, or loaded) since
    /// `since_ms`.
    pub fn mark_stale(&self, since_ms: u64) {
        let _ = self.stale.since_ms.compare_exchange(
            0,
            since_ms.max(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// The source was read good just now.
    pub fn mark_fresh(&self) {
        self.stale.since_ms.store(0, Ordering::Relaxed);
    }

    /// The data's signature expires at `expires_at_ms` (0: never).
    pub fn set_expiry(&self, expires_at_ms: u64) {
        self.stale
            .expires_at_ms
            .store(expires_at_ms, Ordering::Relaxed);
    }

    /// Whether a decision at `now_ms` is denied as `stale-policy`.
    pub fn too_stale(&self, now_ms: u64) -> bool {
        self.stale.too_stale(now_ms)
    }

    /// The generation serving now.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Swaps in a new module, keeping the snapshot.
    pub fn swap_module(&self, module: &[u8]) -> Swapped<Arc<Generation>> {
        self.swap_inner(Some(module), None)
    }

    /// Swaps in a new snapshot, keeping the module.
    pub fn swap_snapshot(&self, snapshot: &[u8]) -> Swapped<Arc<Generation>> {
        self.swap_inner(None, Some(snapshot))
    }

    /// Swaps module and snapshot together.
    pub fn swap(&self, module: &[u8], snapshot: &[u8]) -> Swapped<Arc<Generation>> {
        self.swap_inner(Some(module), Some(snapshot))
    }

    /// Records a swap refused before it could start, because its module
    /// could not be read: counted and kept in the history like any other.
    pub fn refuse_unread(&self, why: &str) {
        let mut state = self.state();
        self.stats.swaps_refused.fetch_add(1, Ordering::Relaxed);
        push_history(
            &mut state,
            self.history_len,
            SwapRecord {
                generation: None,
                kind: "module",
                module_digest: String::new(),
                snapshot_digest: None,
                at_ms: now_ms(),
                outcome: format!("refused at step `read`: {why}"),
            },
        );
    }

    /// The last swaps, oldest first.
    pub fn history(&self) -> Vec<SwapRecord> {
        self.state().history.iter().cloned().collect()
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Publishes a generation without the self-test: only for proving that
    /// a runaway module forced live is still contained.
    #[doc(hidden)]
    pub fn force_publish_untested(&self, module: &[u8]) -> Swapped<Arc<Generation>> {
        let mut state = self.state();
        let component = compile(&self.engine, &mut state.cache, module)?;
        let current = self.current.load_full();
        let generation = Arc::new(Generation {
            number: current.number + 1,
            component,
            module: Arc::from(module),
            snapshot: Arc::clone(&current.snapshot),
            deltas: current.deltas.clone(),
            snapshot_info: current.snapshot_info.clone(),
            loaded_at_ms: now_ms(),
            proved: Mutex::new(None),
        });
        self.current.store(Arc::clone(&generation));
        self.warm_prover(&generation);
        Ok(generation)
    }

    /// Publishes a change as a contract delta (`apply-delta`): proved on
    /// an instance that holds the current state, then applied by each
    /// worker to the instance it holds, so a change costs what it changes.
    /// If the delta is refused (a gap, a mismatch, a module that will not
    /// take it, a full chain), the refusal is counted and `whole`, the
    /// same state in full, is swapped in as [`LivePolicy::swap_snapshot`]
    /// does.
    pub fn swap_delta(
        &self,
        delta: &[u8],
        whole: impl FnOnce() -> Vec<u8>,
    ) -> Swapped<Arc<Generation>> {
        let mut state = self.state();
        let current = self.current.load_full();
        let attempt = (|| -> crate::Result<Generation> {
            if current.deltas.len() >= MAX_DELTAS {
                return Err(crate::Error::Delta(
                    keyscope_policy::delta::DeltaError::Malformed(format!(
                        "{MAX_DELTAS} deltas since the last full load"
                    )),
                ));
            }
            let delta: Arc<[u8]> = Arc::from(delta);
            let mut slot = self.prover.lock().unwrap_or_else(PoisonError::into_inner);
            if slot
                .as_ref()
                .is_none_or(|(number, _)| *number != current.number)
            {
                // A prover may be warming for this very generation: wait
                // for it rather than load the snapshot a second time beside
                // it (seconds at ten million keys, on the same cores).
                drop(slot);
                let _warmed = self
                    .warming
                    .loading
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                slot = self.prover.lock().unwrap_or_else(PoisonError::into_inner);
            }
            let mut prover = match slot.take() {
                Some((number, instance)) if number == current.number => instance,
                _ => {
                    let mut instance = current.component.instantiate(self.limits.clone())?;
                    instance.load_shared_snapshot(Arc::clone(&current.snapshot))?;
                    for earlier in &current.deltas {
                        instance.apply_delta(Arc::clone(earlier))?;
                    }
                    instance
                }
            };
            let info = prover.apply_delta(Arc::clone(&delta))?;
            *slot = Some((current.number + 1, prover));
            drop(slot);
            // A warming still queued for an older generation is not wanted.
            self.warming
                .wanted
                .fetch_max(current.number + 1, Ordering::Relaxed);
            let mut deltas = current.deltas.clone();
            deltas.push(delta);
            Ok(Generation {
                number: current.number + 1,
                component: current.component.clone(),
                module: Arc::clone(&current.module),
                snapshot: Arc::clone(&current.snapshot),
                deltas,
                snapshot_info: info,
                loaded_at_ms: now_ms(),
                proved: Mutex::new(None),
            })
        })();
        match attempt {
            Ok(generation) => {
                let generation = Arc::new(generation);
                self.current.store(Arc::clone(&generation));
                self.stats.swaps_published.fetch_add(1, Ordering::Relaxed);
                self.stats.deltas_applied.fetch_add(1, Ordering::Relaxed);
                push_history(
                    &mut state,
                    self.history_len,
                    record(Some(&generation), "delta", "live".to_owned()),
                );
                Ok(generation)
            }
            Err(error) => {
                self.stats.deltas_refused.fetch_add(1, Ordering::Relaxed);
                // The prover was spent on it: the next delta builds its own,
                // and readiness must not wait for one no thread is warming.
                self.warming
                    .gave_up
                    .fetch_max(current.number, Ordering::Relaxed);
                push_history(
                    &mut state,
                    self.history_len,
                    SwapRecord {
                        generation: None,
                        kind: "delta",
                        module_digest: current.component.info().digest.clone(),
                        snapshot_digest: None,
                        at_ms: now_ms(),
                        outcome: format!("refused, loading whole instead: {error}"),
                    },
                );
                drop(state);
                self.swap_snapshot(&whole())
            }
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SwapState> {
        self.swapping.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn swap_inner(
        &self,
        module: Option<&[u8]>,
        snapshot: Option<&[u8]>,
    ) -> Swapped<Arc<Generation>> {
        let mut state = self.state();
        let current = self.current.load_full();
        let kind = match (module, snapshot) {
            (Some(_), Some(_)) => "module+snapshot",
            (Some(_), None) => "module",
            _ => "snapshot",
        };
        let attempt = (|| -> Swapped<Generation> {
            let (component, module_bytes, module_is_new) = match module {
                Some(bytes) => {
                    let component = compile(&self.engine, &mut state.cache, bytes)?;
                    let is_new = component.info().digest != current.component.info().digest;
                    let bytes = if is_new {
                        Arc::from(bytes)
                    } else {
                        Arc::clone(&current.module)
                    };
                    (component, bytes, is_new)
                }
                None => (
                    current.component.clone(),
                    Arc::clone(&current.module),
                    false,
                ),
            };
            // A new module alone decides on the current state: the last
            // full snapshot and every delta applied since, replayed on the
            // instance that proves it. Dropping them would bring back
            // every key revoked since that load.
            let (snapshot, deltas): (Arc<[u8]>, Vec<Arc<[u8]>>) = match snapshot {
                Some(bytes) => (Arc::from(bytes), Vec::new()),
                None => (Arc::clone(&current.snapshot), current.deltas.clone()),
            };
            let (mut info, mut proved) = prove(
                &component,
                &snapshot,
                &self.self_test,
                &self.limits,
                module_is_new,
            )?;
            for delta in &deltas {
                info = proved
                    .apply_delta(Arc::clone(delta))
                    .map_err(at(SwapStep::LoadSnapshot))?;
            }
            Ok(Generation {
                number: current.number + 1,
                component,
                module: module_bytes,
                snapshot,
                deltas,
                snapshot_info: info,
                loaded_at_ms: now_ms(),
                proved: Mutex::new(Some(proved)),
            })
        })();
        let outcome = match attempt {
            Ok(generation) => {
                let generation = Arc::new(generation);
                self.current.store(Arc::clone(&generation));
                self.stats.swaps_published.fetch_add(1, Ordering::Relaxed);
                push_history(
                    &mut state,
                    self.history_len,
                    record(Some(&generation), kind, "live".to_owned()),
                );
                self.warm_prover(&generation);
                Ok(generation)
            }
            Err(error) => {
                self.stats.swaps_refused.fetch_add(1, Ordering::Relaxed);
                let digest =
                    module.map_or_else(|| current.component.info().digest.clone(), digest_hex);
                push_history(
                    &mut state,
                    self.history_len,
                    SwapRecord {
                        generation: None,
                        kind,
                        module_digest: digest,
                        snapshot_digest: snapshot.map(digest_hex),
                        at_ms: now_ms(),
                        outcome: error.to_string(),
                    },
                );
                Err(error)
            }
        };
        drop(state);
        outcome
    }
}

fn push_history(state: &mut SwapState, len: usize, record: SwapRecord) {
    if state.history.len() >= len {
        state.history.pop_front();
    }
    state.history.push_back(record);
}

fn record(generation: Option<&Generation>, kind: &'static str, outcome: String) -> SwapRecord {
    SwapRecord {
        generation: generation.map(|g| g.number),
        kind,
        module_digest: generation
            .map(|g| g.component.info().digest.clone())
            .unwrap_or_default(),
        snapshot_digest: generation.map(|g| g.snapshot_info.digest_hex()),
        at_ms: now_ms(),
        outcome,
    }
}

#[cfg(test)]
mod stale_tests {
    use super::*;

    fn guard(max_ms: u64, since_ms: u64, expires_at_ms: u64) -> StaleGuard {
        StaleGuard {
            max_ms: AtomicU64::new(max_ms),
            since_ms: AtomicU64::new(since_ms),
            expires_at_ms: AtomicU64::new(expires_at_ms),
        }
    }

    #[test]
    fn stale_past_the_bound_from_an_outage_or_an_expiry_and_never_when_off() {
        // Off: however old.
        assert!(!guard(0, 1, 1).too_stale(u64::MAX));
        // Fresh, no expiry.
        assert!(!guard(1000, 0, 0).too_stale(50_000));
        // An outage since 10 s: stale past 11 s, not before.
        assert!(!guard(1000, 10_000, 0).too_stale(11_000));
        assert!(guard(1000, 10_000, 0).too_stale(11_001));
        // An expiry: counts from when it passed.
        assert!(!guard(1000, 0, 20_000).too_stale(19_000));
        assert!(!guard(1000, 0, 20_000).too_stale(21_000));
        assert!(guard(1000, 0, 20_000).too_stale(21_001));
        // Both: the earlier.
        assert!(guard(1000, 30_000, 20_000).too_stale(21_001));
        assert!(guard(1000, 10_000, 20_000).too_stale(11_001));
    }
}
