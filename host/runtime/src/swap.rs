//! The live policy: the current generation (a component and a snapshot),
//! replaced atomically, and only after the new one proved itself.
//!
//! A swap runs these steps in order, and publishes only if all pass:
//!
//! 1. **compile** the component (or take it from the cache, by digest);
//! 2. **validate** it: a component of the `keyscope:policy/decide@0.2.0`
//!    interface that imports nothing;
//! 3. **instantiate** it, with the limits every call runs under;
//! 4. **load-snapshot** into that instance;
//! 5. **self-test**: the golden cases that ship with keyscope (for a new
//!    module) and the user's cases, each through a fresh instance.
//!
//! A failure at any step leaves the current generation serving and returns
//! [`SwapError::Refused`] naming the step. [`Worker`]s each hold an instance
//! of a generation; they notice a new one at the start of their next request,
//! so a request runs entirely on the generation it started with.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use keyscope_policy::{Decision, HttpRequest, Reason, Request, SnapshotInfo};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::cases::CaseFile;
use crate::error::{Error, Result};

/// A swap's result.
type Swapped<T> = std::result::Result<T, SwapError>;
use crate::policy::{
    EMBEDDED_POLICY, Limits, MatchedRoute, PolicyComponent, PolicyEngine, PolicyInstance,
    RoutedDecision,
};

/// How many compiled components are kept for fast swaps back.
const CACHE_CAPACITY: usize = 8;

/// The steps of a swap, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwapStep {
    /// Compiling the component.
    Compile,
    /// Checking its world, version and imports.
    Validate,
    /// Instantiating it.
    Instantiate,
    /// Loading the snapshot.
    LoadSnapshot,
    /// Running the self-test cases.
    SelfTest,
}

impl fmt::Display for SwapStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Compile => "compile",
            Self::Validate => "validate",
            Self::Instantiate => "instantiate",
            Self::LoadSnapshot => "load-snapshot",
            Self::SelfTest => "self-test",
        })
    }
}

/// Why a swap, a check or a first generation was refused. In a swap, the
/// current generation keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// A step failed.
    #[error("refused at step `{step}`: {source}")]
    Refused {
        /// The step that failed.
        step: SwapStep,
        /// Why.
        #[source]
        source: Error,
    },
    /// The engine itself could not start.
    #[error(transparent)]
    Engine(Error),
}

impl SwapError {
    /// The step that failed, if a step did.
    pub fn step(&self) -> Option<SwapStep> {
        match self {
            Self::Refused { step, .. } => Some(*step),
            Self::Engine(_) => None,
        }
    }
}

fn at(step: SwapStep) -> impl FnOnce(Error) -> SwapError {
    move |source| SwapError::Refused { step, source }
}

/// What must hold before a generation goes live.
#[derive(Debug, Clone)]
pub struct SelfTest {
    /// Run keyscope's golden cases through every new module. A platform
    /// whose own module decides differently on purpose turns this off and
    /// brings its own cases.
    pub golden: bool,
    /// The user's cases, run on every swap.
    pub cases: Vec<CaseFile>,
}

impl Default for SelfTest {
    fn default() -> Self {
        Self {
            golden: true,
            cases: Vec::new(),
        }
    }
}

impl SelfTest {
    /// Runs the cases through `component`; how many held.
    pub fn run(
        &self,
        component: &PolicyComponent,
        limits: &Limits,
        module_is_new: bool,
    ) -> Result<usize> {
        let golden = if self.golden && module_is_new {
            CaseFile::golden()?
        } else {
            Vec::new()
        };
        golden
            .iter()
            .chain(&self.cases)
            .map(|file| file.check(component, limits))
            .sum()
    }
}

/// One published generation: a component and a snapshot, loaded together.
#[derive(Debug)]
pub struct Generation {
    /// 1 for the first, then one more for each swap.
    pub number: u64,
    /// The component.
    pub component: PolicyComponent,
    /// The snapshot bytes.
    pub snapshot: Arc<[u8]>,
    /// The snapshot as the component described it.
    pub snapshot_info: SnapshotInfo,
    /// When it went live, in milliseconds since the Unix epoch.
    pub loaded_at_ms: u64,
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
}

#[derive(Default)]
struct SwapState {
    cache: HashMap<String, PolicyComponent>,
    /// Digests in the cache, oldest first.
    cache_order: VecDeque<String>,
    history: VecDeque<SwapRecord>,
}

/// The live policy. Share it in an `Arc`; give each thread a [`Worker`].
pub struct LivePolicy {
    engine: PolicyEngine,
    limits: Limits,
    self_test: SelfTest,
    history_len: usize,
    current: ArcSwap<Generation>,
    /// Serialises swaps; readers never take it.
    swapping: Mutex<SwapState>,
    stats: Stats,
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
}

impl Default for LiveOptions {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            self_test: SelfTest::default(),
            history_len: 32,
        }
    }
}

impl LivePolicy {
    /// Starts with `module` (the embedded component if `None`) and
    /// `snapshot`, after the same checks as any swap.
    pub fn new(module: Option<&[u8]>, snapshot: &[u8], options: LiveOptions) -> Swapped<Self> {
        let engine = PolicyEngine::new().map_err(SwapError::Engine)?;
        let module = module.unwrap_or(EMBEDDED_POLICY);
        let mut state = SwapState::default();
        let component = compile(&engine, &mut state, module)?;
        let snapshot: Arc<[u8]> = Arc::from(snapshot);
        let snapshot_info = prove(
            &component,
            &snapshot,
            &options.self_test,
            &options.limits,
            true,
        )?;
        let first = Generation {
            number: 1,
            component,
            snapshot,
            snapshot_info,
            loaded_at_ms: now_ms(),
        };
        state
            .history
            .push_back(record(Some(&first), "module+snapshot", "live".to_owned()));
        Ok(Self {
            engine,
            limits: options.limits,
            self_test: options.self_test,
            history_len: options.history_len.max(1),
            current: ArcSwap::from_pointee(first),
            swapping: Mutex::new(state),
            stats: Stats::default(),
        })
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

    /// A worker for one thread.
    pub fn worker(self: &Arc<Self>) -> Worker {
        Worker {
            live: Arc::clone(self),
            serving: None,
        }
    }

    /// Publishes a generation without the self-test: only for proving that
    /// a runaway module forced live is still contained.
    #[doc(hidden)]
    pub fn force_publish_untested(&self, module: &[u8]) -> Swapped<Arc<Generation>> {
        let mut state = self.state();
        let component = compile(&self.engine, &mut state, module)?;
        let current = self.current.load_full();
        let generation = Arc::new(Generation {
            number: current.number + 1,
            component,
            snapshot: Arc::clone(&current.snapshot),
            snapshot_info: current.snapshot_info.clone(),
            loaded_at_ms: now_ms(),
        });
        self.current.store(Arc::clone(&generation));
        Ok(generation)
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
            let (component, module_is_new) = match module {
                Some(bytes) => {
                    let component = compile(&self.engine, &mut state, bytes)?;
                    let is_new = component.info().digest != current.component.info().digest;
                    (component, is_new)
                }
                None => (current.component.clone(), false),
            };
            let snapshot: Arc<[u8]> = match snapshot {
                Some(bytes) => Arc::from(bytes),
                None => Arc::clone(&current.snapshot),
            };
            let info = prove(
                &component,
                &snapshot,
                &self.self_test,
                &self.limits,
                module_is_new,
            )?;
            Ok(Generation {
                number: current.number + 1,
                component,
                snapshot,
                snapshot_info: info,
                loaded_at_ms: now_ms(),
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

/// Compiles and validates a module, or takes it from the cache.
fn compile(
    engine: &PolicyEngine,
    state: &mut SwapState,
    module: &[u8],
) -> Swapped<PolicyComponent> {
    let digest = digest_hex(module);
    if let Some(component) = state.cache.get(&digest) {
        return Ok(component.clone());
    }
    let component = PolicyComponent::from_bytes(engine, module).map_err(|error| {
        let step = match error {
            Error::NotAComponent(_) => SwapStep::Compile,
            _ => SwapStep::Validate,
        };
        at(step)(error)
    })?;
    if state.cache_order.len() >= CACHE_CAPACITY
        && let Some(oldest) = state.cache_order.pop_front()
    {
        state.cache.remove(&oldest);
    }
    state.cache_order.push_back(digest.clone());
    state.cache.insert(digest, component.clone());
    Ok(component)
}

/// Steps 3 to 5: instantiate, load the snapshot, run the self-test.
fn prove(
    component: &PolicyComponent,
    snapshot: &Arc<[u8]>,
    self_test: &SelfTest,
    limits: &Limits,
    module_is_new: bool,
) -> Swapped<SnapshotInfo> {
    let (info, _) = prove_steps(component, Some(snapshot), self_test, limits, module_is_new)?;
    info.ok_or_else(|| {
        at(SwapStep::LoadSnapshot)(Error::PolicyFailed(
            "the snapshot was not loaded".to_owned(),
        ))
    })
}

fn prove_steps(
    component: &PolicyComponent,
    snapshot: Option<&Arc<[u8]>>,
    self_test: &SelfTest,
    limits: &Limits,
    module_is_new: bool,
) -> Swapped<(Option<SnapshotInfo>, usize)> {
    let mut probe = component
        .instantiate(limits.clone())
        .map_err(at(SwapStep::Instantiate))?;
    let info = snapshot
        .map(|snapshot| probe.load_shared_snapshot(Arc::clone(snapshot)))
        .transpose()
        .map_err(at(SwapStep::LoadSnapshot))?;
    let cases = self_test
        .run(component, limits, module_is_new)
        .map_err(at(SwapStep::SelfTest))?;
    Ok((info, cases))
}

/// What `keyscope policy check` found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The module.
    pub policy: crate::policy::PolicyInfo,
    /// The snapshot it loaded, if one was given.
    pub snapshot_digest: Option<String>,
    /// How many self-test cases held.
    pub cases: usize,
}

/// Runs every step of a swap on `module` (and `snapshot`, if given) without
/// going live, like `opa test`.
pub fn check(
    module: &[u8],
    snapshot: Option<&[u8]>,
    self_test: &SelfTest,
    limits: &Limits,
) -> Swapped<CheckReport> {
    let engine = PolicyEngine::new().map_err(SwapError::Engine)?;
    let component = compile(&engine, &mut SwapState::default(), module)?;
    let snapshot: Option<Arc<[u8]>> = snapshot.map(Arc::from);
    let (info, cases) = prove_steps(&component, snapshot.as_ref(), self_test, limits, true)?;
    Ok(CheckReport {
        policy: component.info().clone(),
        snapshot_digest: info.map(|info| info.digest_hex()),
        cases,
    })
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

fn digest_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a worker decided, the one shape every evaluation returns: the
/// decision, the route that named the operation (for an HTTP request that
/// matched one), and the generation that decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The decision.
    pub decision: Decision,
    /// For an HTTP request, the route it matched, if any.
    pub route: Option<MatchedRoute>,
    /// The generation it ran on; 0 before any is live.
    pub generation: u64,
}

impl Outcome {
    /// A deny with `reason`, taken by no generation: before the first one is
    /// live.
    pub fn unserved(reason: Reason) -> Self {
        Self {
            decision: Decision::deny(reason),
            route: None,
            generation: 0,
        }
    }
}

/// What a worker decided for a batch: the decisions in order, all on one
/// generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// The decisions, in the order of the requests.
    pub decisions: Vec<Decision>,
    /// The generation they ran on.
    pub generation: u64,
}

/// One thread's handle on the live policy: an instance of a generation,
/// refreshed when a newer one is published.
pub struct Worker {
    live: Arc<LivePolicy>,
    serving: Option<(Arc<Generation>, PolicyInstance)>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("generation", &self.serving.as_ref().map(|(g, _)| g.number))
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// The generation this worker's instance serves, once it has served one.
    pub fn generation(&self) -> Option<&Generation> {
        self.serving
            .as_ref()
            .map(|(generation, _)| generation.as_ref())
    }

    /// Decides one request on the current generation. Fails closed: if the
    /// worker cannot get an instance of it, or the policy fails, the answer
    /// is a deny with [`Reason::PolicyError`].
    pub fn evaluate(&mut self, request: &Request<'_>) -> Outcome {
        let (decision, generation) = match self.instance() {
            Ok((instance, generation)) => (instance.evaluate(request), generation),
            Err(generation) => (Decision::deny(Reason::PolicyError), generation),
        };
        self.count(decision.reason == Reason::PolicyError, 1);
        Outcome {
            decision,
            route: None,
            generation,
        }
    }

    /// Decides many requests on one generation, in one call.
    pub fn evaluate_batch(&mut self, requests: &[Request<'_>]) -> BatchOutcome {
        let (decisions, generation) = match self.instance() {
            Ok((instance, generation)) => (instance.evaluate_batch(requests), generation),
            Err(generation) => (
                vec![Decision::deny(Reason::PolicyError); requests.len()],
                generation,
            ),
        };
        let failed = decisions
            .first()
            .is_some_and(|d| d.reason == Reason::PolicyError);
        self.count(failed, decisions.len());
        BatchOutcome {
            decisions,
            generation,
        }
    }

    /// Routes and decides an HTTP request on the current generation; fails
    /// closed as [`Worker::evaluate`] does.
    pub fn evaluate_http(&mut self, request: &HttpRequest<'_>) -> Outcome {
        let (routed, generation) = match self.instance() {
            Ok((instance, generation)) => (instance.evaluate_http(request), generation),
            Err(generation) => (RoutedDecision::deny(Reason::PolicyError), generation),
        };
        self.count(routed.decision.reason == Reason::PolicyError, 1);
        Outcome {
            decision: routed.decision,
            route: routed.route,
            generation,
        }
    }

    fn count(&self, failed: bool, decisions: usize) {
        if failed {
            let stats = &self.live.stats;
            stats
                .policy_errors
                .fetch_add(decisions as u64, Ordering::Relaxed);
            stats.instances_replaced.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The instance of the current generation, and that generation's number.
    /// On the hot path this is one atomic load and a comparison; only when a
    /// newer generation was published is the instance rebuilt or reloaded.
    /// On failure, the number of the generation it could not serve.
    fn instance(&mut self) -> std::result::Result<(&mut PolicyInstance, u64), u64> {
        let current = self.live.current.load();
        let number = current.number;
        let fresh = matches!(&self.serving, Some((serving, _)) if serving.number == number);
        if !fresh {
            let generation = arc_swap::Guard::into_inner(current);
            let reuse = self.serving.take().and_then(|(old, instance)| {
                (old.component.info().digest == generation.component.info().digest)
                    .then_some(instance)
            });
            let instance = match reuse {
                Some(instance) => Ok(instance),
                None => generation.component.instantiate(self.live.limits.clone()),
            };
            let loaded = instance.and_then(|mut instance| {
                instance.load_shared_snapshot(Arc::clone(&generation.snapshot))?;
                Ok(instance)
            });
            match loaded {
                Ok(instance) => self.serving = Some((generation, instance)),
                Err(_) => return Err(number),
            }
        }
        match &mut self.serving {
            Some((_, instance)) => Ok((instance, number)),
            None => Err(number),
        }
    }
}
