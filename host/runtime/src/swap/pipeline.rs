//! The swap pipeline: the steps a module and a snapshot must pass before
//! they go live, the error that names the step that failed, and
//! `keyscope policy check`, which runs them without going live.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use keyscope_policy::SnapshotInfo;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::cases::CaseFile;
use crate::component::PolicyComponent;
use crate::engine::{Limits, PolicyEngine};
use crate::error::{Error, Result};
use crate::instance::PolicyInstance;

/// A swap's result.
pub(super) type Swapped<T> = std::result::Result<T, SwapError>;

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

pub(super) fn at(step: SwapStep) -> impl FnOnce(Error) -> SwapError {
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

/// Compiled components by the SHA-256 of their bytes, so that a swap back
/// skips compilation; the oldest goes first.
#[derive(Default)]
pub(super) struct ComponentCache {
    by_digest: HashMap<String, PolicyComponent>,
    /// Digests in the cache, oldest first.
    order: VecDeque<String>,
}

/// Steps 1 and 2: compiles and validates a module, or takes it from the
/// cache.
pub(super) fn compile(
    engine: &PolicyEngine,
    cache: &mut ComponentCache,
    module: &[u8],
) -> Swapped<PolicyComponent> {
    let digest = digest_hex(module);
    if let Some(component) = cache.by_digest.get(&digest) {
        return Ok(component.clone());
    }
    let component = PolicyComponent::from_bytes(engine, module).map_err(|error| {
        let step = match error {
            Error::NotAComponent(_) => SwapStep::Compile,
            _ => SwapStep::Validate,
        };
        at(step)(error)
    })?;
    if cache.order.len() >= CACHE_CAPACITY
        && let Some(oldest) = cache.order.pop_front()
    {
        cache.by_digest.remove(&oldest);
    }
    cache.order.push_back(digest.clone());
    cache.by_digest.insert(digest, component.clone());
    Ok(component)
}

/// Steps 3 to 5: instantiate, load the snapshot, run the self-test. The
/// snapshot as the component described it, and the instance that loaded
/// it, ready to serve.
pub(super) fn prove(
    component: &PolicyComponent,
    snapshot: &Arc<[u8]>,
    self_test: &SelfTest,
    limits: &Limits,
    module_is_new: bool,
) -> Swapped<(SnapshotInfo, PolicyInstance)> {
    let (info, _, probe) =
        prove_steps(component, Some(snapshot), self_test, limits, module_is_new)?;
    match info {
        Some(info) => Ok((info, probe)),
        None => Err(at(SwapStep::LoadSnapshot)(Error::PolicyFailed(
            "the snapshot was not loaded".to_owned(),
        ))),
    }
}

fn prove_steps(
    component: &PolicyComponent,
    snapshot: Option<&Arc<[u8]>>,
    self_test: &SelfTest,
    limits: &Limits,
    module_is_new: bool,
) -> Swapped<(Option<SnapshotInfo>, usize, PolicyInstance)> {
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
    Ok((info, cases, probe))
}

/// What `keyscope policy check` found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The module.
    pub policy: crate::component::PolicyInfo,
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
    let component = compile(&engine, &mut ComponentCache::default(), module)?;
    let snapshot: Option<Arc<[u8]>> = snapshot.map(Arc::from);
    let (info, cases, _) = prove_steps(&component, snapshot.as_ref(), self_test, limits, true)?;
    Ok(CheckReport {
        policy: component.info().clone(),
        snapshot_digest: info.map(|info| info.digest_hex()),
        cases,
    })
}

/// The SHA-256 of module or snapshot bytes, in hex.
pub(super) fn digest_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
