//! Loading, validating and running a policy component.
//!
//! [`PolicyEngine`] owns the wasmtime engine and its epoch ticker.
//! [`PolicyComponent`] is a compiled, validated component: it imports nothing
//! and exports the `keyscope:policy` world, checked once at load and kept as a
//! pre-instantiated [`PolicyPre`]. [`PolicyInstance`] is one running instance
//! with a snapshot loaded.
//!
//! # Why an instance is reused rather than a `Store` per evaluation
//!
//! The snapshot is parsed once per `load-snapshot` into lookup structures that
//! live in the instance's memory; that is what makes `evaluate` a lookup and a
//! comparison. A fresh `Store` per evaluation would have to reload the
//! snapshot each time. So each worker holds one instance, every call is
//! bounded (epoch deadline, memory cap), and an instance that traps is thrown
//! away and rebuilt from the `PolicyPre` with the last snapshot.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use keyscope_policy::{Decision, HttpRequest, Reason, Request, SnapshotInfo};
use sha2::{Digest as _, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder};

use crate::bindings::{self, DECIDE_INTERFACE, Policy, PolicyPre};
use crate::error::{Error, Result};
use crate::fault::{self, Fault};

/// The component built from `policy-guest/` and embedded at build time.
pub static EMBEDDED_POLICY: &[u8] = include_bytes!(env!("KEYSCOPE_POLICY_COMPONENT"));

/// How often the epoch ticker advances; deadlines are multiples of this.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Bounds on every call into a policy instance.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock bound on one `evaluate` or `evaluate-batch` call.
    pub evaluate_timeout: Duration,
    /// Wall-clock bound on one `load-snapshot` call.
    pub load_timeout: Duration,
    /// Cap on the instance's linear memory, in bytes.
    pub max_memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            evaluate_timeout: Duration::from_millis(100),
            load_timeout: Duration::from_secs(10),
            max_memory: 256 << 20,
        }
    }
}

impl Limits {
    fn ticks(timeout: Duration) -> u64 {
        let ticks = timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos());
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
    }
}

/// A wasmtime engine configured for policies, with a thread that advances
/// its epoch so that every call can be given a deadline. Cheap to clone; the
/// ticker stops when the last clone (and every component made from it) is
/// dropped.
#[derive(Clone)]
pub struct PolicyEngine {
    engine: Engine,
    _ticker: Arc<EpochTicker>,
}

impl fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyEngine").finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// Creates the engine and starts its epoch ticker.
    pub fn new() -> Result<Self> {
        Self::with_config(Config::new())
    }

    /// An engine with wasmtime's pooling allocator, for `slots` live instances
    /// at once of at most `max_memory` bytes each: instantiation then takes
    /// pre-reserved memory instead of mapping it.
    pub fn pooling(slots: u32, max_memory: usize) -> Result<Self> {
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(slots)
            .total_memories(slots)
            .total_tables(slots)
            .max_memory_size(max_memory)
            // Reset a slot by zeroing what the last instance touched rather
            // than returning it to the kernel: no page faults or TLB
            // shootdowns on the next instantiation.
            .linear_memory_keep_resident(256 << 10)
            .table_keep_resident(64 << 10);
        let mut config = Config::new();
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        Self::with_config(config)
    }

    fn with_config(mut config: Config) -> Result<Self> {
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| Error::wasm(Error::Engine, &e))?;
        let ticker = EpochTicker::start(engine.clone())?;
        Ok(Self {
            engine,
            _ticker: Arc::new(ticker),
        })
    }

    /// The underlying wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("keyscope-epoch".to_owned())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| Error::Engine(format!("cannot start the epoch ticker: {e}")))?
        };
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The ticker only sleeps and increments; it cannot panic.
            let _ = thread.join();
        }
    }
}

/// What `keyscope policy info` shows about a component.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicyInfo {
    /// Size of the component in bytes.
    pub size: usize,
    /// Lowercase hex SHA-256 of the component bytes.
    pub digest: String,
    /// The world it implements.
    pub world: &'static str,
    /// The versioned interface it exports.
    pub interface: &'static str,
    /// Exported names with their kind.
    pub exports: Vec<String>,
    /// Imported names; always empty for a component that loaded.
    pub imports: Vec<String>,
}

/// A compiled, validated policy component, ready to instantiate.
#[derive(Clone)]
pub struct PolicyComponent {
    engine: PolicyEngine,
    pre: PolicyPre<HostState>,
    info: Arc<PolicyInfo>,
}

impl fmt::Debug for PolicyComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyComponent")
            .field("digest", &self.info.digest)
            .finish_non_exhaustive()
    }
}

impl PolicyComponent {
    /// The component embedded in this binary.
    pub fn embedded(engine: &PolicyEngine) -> Result<Self> {
        Self::from_bytes(engine, EMBEDDED_POLICY)
    }

    /// Reads (a regular file, up to [`crate::files::MAX_POLICY_BYTES`]) and
    /// validates a component file.
    pub fn from_file(engine: &PolicyEngine, path: &Path) -> Result<Self> {
        let bytes = crate::files::read_regular(path, crate::files::MAX_POLICY_BYTES)?;
        Self::from_bytes(engine, &bytes)
    }

    /// Compiles and validates component bytes: a component, importing
    /// nothing, exporting the `keyscope:policy` world.
    pub fn from_bytes(policy_engine: &PolicyEngine, bytes: &[u8]) -> Result<Self> {
        if fault::hit(Fault::Compile) {
            return Err(Error::NotAComponent(
                Error::Injected(Fault::Compile).to_string(),
            ));
        }
        let engine = policy_engine.engine();
        if !wasmparser::Parser::is_component(bytes) {
            let what = if wasmparser::Parser::is_core_wasm(bytes) {
                "it is a core Wasm module; encode it with `wasm-tools component new`"
            } else {
                "it does not start with the Wasm component header"
            };
            return Err(Error::NotAComponent(what.to_owned()));
        }
        let component =
            Component::new(engine, bytes).map_err(|e| Error::wasm(Error::NotAComponent, &e))?;
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        if !imports.is_empty() {
            let names = imports
                .iter()
                .map(|name| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::PolicyImports(names));
        }
        let exports: Vec<String> = ty
            .exports(engine)
            .map(|(name, item)| match item.ty {
                ComponentItem::ComponentInstance(instance) => {
                    let funcs: Vec<&str> = instance
                        .exports(engine)
                        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentFunc(_)))
                        .map(|(func, _)| func)
                        .collect();
                    format!("{name} ({})", funcs.join(", "))
                }
                ComponentItem::ComponentFunc(_) => format!("{name} (func)"),
                _ => format!("{name} (other)"),
            })
            .collect();
        if ty.get_export(engine, DECIDE_INTERFACE).is_none() {
            let found = ty
                .exports(engine)
                .map(|(name, _)| format!("`{name}`"))
                .collect::<Vec<_>>();
            let found = if found.is_empty() {
                "nothing".to_owned()
            } else {
                found.join(", ")
            };
            return Err(Error::WrongWorld(format!(
                "it must export `{DECIDE_INTERFACE}`; it exports {found}"
            )));
        }
        let linker = Linker::<HostState>::new(engine);
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| Error::wasm(Error::WrongWorld, &e))?;
        let pre = PolicyPre::new(instance_pre).map_err(|e| Error::wasm(Error::WrongWorld, &e))?;
        let info = PolicyInfo {
            size: bytes.len(),
            digest: hex::encode(Sha256::digest(bytes)),
            world: "keyscope:policy/policy@0.2.0",
            interface: DECIDE_INTERFACE,
            exports,
            imports,
        };
        Ok(Self {
            engine: policy_engine.clone(),
            pre,
            info: Arc::new(info),
        })
    }

    /// What the component is.
    pub fn info(&self) -> &PolicyInfo {
        &self.info
    }

    /// Starts an instance with no snapshot loaded.
    pub fn instantiate(&self, limits: Limits) -> Result<PolicyInstance> {
        let (store, policy) = self.start(&limits)?;
        Ok(PolicyInstance {
            component: self.clone(),
            limits,
            running: Some((store, policy)),
            snapshot: None,
            scratch: empty_request(),
            http_scratch: empty_http_request(),
        })
    }

    fn start(&self, limits: &Limits) -> Result<(Store<HostState>, Policy)> {
        if fault::hit(Fault::Instantiate) {
            return Err(Error::Injected(Fault::Instantiate));
        }
        let mut store = Store::new(
            self.engine.engine(),
            HostState {
                limits: StoreLimitsBuilder::new()
                    .memory_size(limits.max_memory)
                    .memories(1)
                    .tables(4)
                    .table_elements(65_536)
                    .instances(8)
                    .trap_on_grow_failure(true)
                    .build(),
                peak_memory: 0,
            },
        );
        store.limiter(|state| state);
        store.set_epoch_deadline(Limits::ticks(limits.load_timeout));
        let policy = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| Error::wasm(Error::PolicyFailed, &e))?;
        Ok((store, policy))
    }
}

/// Per-store host state: only the resource limits. The policy imports
/// nothing, so there is nothing else for it to reach.
struct HostState {
    limits: StoreLimits,
    /// The largest linear memory granted, in bytes.
    peak_memory: usize,
}

/// The caps of [`StoreLimits`], plus a record of the peak memory granted.
impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let granted = self.limits.memory_growing(current, desired, maximum)?;
        if granted {
            self.peak_memory = self.peak_memory.max(desired);
        }
        Ok(granted)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// A running policy instance with, once loaded, a snapshot.
pub struct PolicyInstance {
    component: PolicyComponent,
    limits: Limits,
    /// `None` after a failure until the instance is rebuilt.
    running: Option<(Store<HostState>, Policy)>,
    /// The last snapshot loaded, to reload into a rebuilt instance.
    snapshot: Option<Arc<[u8]>>,
    /// A request whose strings are reused from call to call, so that lowering
    /// a request allocates nothing on the host.
    scratch: bindings::Request,
    /// The same, for HTTP requests.
    http_scratch: bindings::HttpRequest,
}

fn empty_request() -> bindings::Request {
    bindings::Request {
        credential: bindings::Credential::Missing,
        app: String::new(),
        op: String::new(),
    }
}

fn empty_http_request() -> bindings::HttpRequest {
    bindings::HttpRequest {
        credential: bindings::Credential::Missing,
        method: String::new(),
        path: String::new(),
    }
}

/// The app and operation a route named. (The guest's `RouteMatch` borrows
/// from its table and the path; this one owns its strings.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedRoute {
    /// The app, from the path.
    pub app: String,
    /// The operation.
    pub op: String,
}

/// A decision on an HTTP request, with the route it matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedDecision {
    /// `None` when no route matched.
    pub route: Option<MatchedRoute>,
    /// The decision.
    pub decision: Decision,
}

impl RoutedDecision {
    /// A deny with `reason` and no route: what every failure comes to.
    pub fn deny(reason: Reason) -> Self {
        Self {
            route: None,
            decision: Decision::deny(reason),
        }
    }
}

impl fmt::Debug for PolicyInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyInstance")
            .field("component", &self.component)
            .field("running", &self.running.is_some())
            .finish_non_exhaustive()
    }
}

impl PolicyInstance {
    /// Loads a snapshot. If the policy refuses it, the previous snapshot
    /// stays loaded and the error says why.
    pub fn load_snapshot(&mut self, bytes: &[u8]) -> Result<SnapshotInfo> {
        self.load_shared_snapshot(Arc::from(bytes))
    }

    /// [`PolicyInstance::load_snapshot`] without copying bytes already shared.
    pub fn load_shared_snapshot(&mut self, bytes: Arc<[u8]>) -> Result<SnapshotInfo> {
        if fault::hit(Fault::LoadSnapshot) {
            return Err(Error::Injected(Fault::LoadSnapshot));
        }
        let info = self
            .call(self.limits.load_timeout, |policy, store| {
                policy
                    .keyscope_policy_decide()
                    .call_load_snapshot(store, &bytes)
            })?
            .map_err(keyscope_policy::LoadError::from)?;
        self.snapshot = Some(bytes);
        Ok(info.into())
    }

    /// The largest linear memory this instance has been granted, in bytes.
    pub fn peak_memory(&self) -> usize {
        self.running
            .as_ref()
            .map_or(0, |(store, _)| store.data().peak_memory)
    }

    /// Decides one request. Fails closed: any failure of the policy is a
    /// deny with [`Reason::PolicyError`].
    pub fn evaluate(&mut self, request: &Request<'_>) -> Decision {
        self.try_evaluate(request)
            .unwrap_or(Decision::deny(Reason::PolicyError))
    }

    /// Decides one request, or says why the policy failed.
    pub fn try_evaluate(&mut self, request: &Request<'_>) -> Result<Decision> {
        let mut scratch = std::mem::replace(&mut self.scratch, empty_request());
        scratch.set(request);
        let decision = self.call(self.limits.evaluate_timeout, |policy, store| {
            policy
                .keyscope_policy_decide()
                .call_evaluate(store, &scratch)
        });
        self.scratch = scratch;
        decision.map(Decision::from)
    }

    /// Routes and decides an HTTP request. Fails closed: any failure of the
    /// policy is a deny with [`Reason::PolicyError`].
    pub fn evaluate_http(&mut self, request: &HttpRequest<'_>) -> RoutedDecision {
        self.try_evaluate_http(request)
            .unwrap_or(RoutedDecision::deny(Reason::PolicyError))
    }

    /// Routes and decides an HTTP request, or says why the policy failed.
    pub fn try_evaluate_http(&mut self, request: &HttpRequest<'_>) -> Result<RoutedDecision> {
        let mut scratch = std::mem::replace(&mut self.http_scratch, empty_http_request());
        scratch.set(request);
        let routed = self.call(self.limits.evaluate_timeout, |policy, store| {
            policy
                .keyscope_policy_decide()
                .call_evaluate_http(store, &scratch)
        });
        self.http_scratch = scratch;
        let routed = routed?;
        let decision = Decision::from(routed.decision);
        let Some(route) = routed.route else {
            // Fail closed: an allow must name what it allowed.
            if decision.allow {
                return Err(Error::PolicyFailed(
                    "the policy allowed a request that matched no route".to_owned(),
                ));
            }
            return Ok(RoutedDecision {
                route: None,
                decision,
            });
        };
        Ok(RoutedDecision {
            route: Some(MatchedRoute {
                app: route.app,
                op: route.op,
            }),
            decision,
        })
    }

    /// Decides many requests in one call; the answers come back in order.
    /// Fails closed: if the policy fails, every request is denied.
    pub fn evaluate_batch(&mut self, requests: &[Request<'_>]) -> Vec<Decision> {
        let lowered: Vec<bindings::Request> = requests.iter().map(Into::into).collect();
        match self.call(self.limits.evaluate_timeout, |policy, store| {
            policy
                .keyscope_policy_decide()
                .call_evaluate_batch(store, &lowered)
        }) {
            Ok(decisions) if decisions.len() == requests.len() => {
                decisions.into_iter().map(Decision::from).collect()
            }
            _ => vec![Decision::deny(Reason::PolicyError); requests.len()],
        }
    }

    /// Runs `f` with a deadline. On a trap, timeout or memory exhaustion the
    /// instance is discarded and rebuilt (with the last snapshot) on the next
    /// call; the error is returned.
    fn call<T>(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(&Policy, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> Result<T> {
        if self.running.is_none() {
            self.restart()?;
        }
        let Some((store, policy)) = self.running.as_mut() else {
            return Err(Error::PolicyFailed(
                "the instance is not running".to_owned(),
            ));
        };
        store.set_epoch_deadline(Limits::ticks(timeout));
        if fault::hit(Fault::EvaluateTrap) {
            // As a trap would: the instance is gone, rebuilt on the next call.
            self.running = None;
            return Err(Error::Injected(Fault::EvaluateTrap));
        }
        match f(policy, store) {
            Ok(value) => Ok(value),
            Err(error) => {
                self.running = None;
                Err(Error::PolicyFailed(describe_failure(
                    &error,
                    timeout,
                    self.limits.max_memory,
                )))
            }
        }
    }

    fn restart(&mut self) -> Result<()> {
        let (mut store, policy) = self.component.start(&self.limits)?;
        if let Some(snapshot) = &self.snapshot {
            store.set_epoch_deadline(Limits::ticks(self.limits.load_timeout));
            policy
                .keyscope_policy_decide()
                .call_load_snapshot(&mut store, snapshot)
                .map_err(|e| Error::wasm(Error::PolicyFailed, &e))?
                .map_err(keyscope_policy::LoadError::from)?;
        }
        self.running = Some((store, policy));
        Ok(())
    }
}

/// A failure inside the policy, said plainly: a timeout, the memory cap, or
/// the trap, with wasmtime's full report after it.
fn describe_failure(error: &wasmtime::Error, timeout: Duration, max_memory: usize) -> String {
    let summary = match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => format!("timed out after {timeout:?}"),
        Some(trap) => format!("trapped: {trap}"),
        // StoreLimits refusing a `memory.grow`, with trap_on_grow_failure.
        None if format!("{error:#}").contains("growing memory") => {
            format!("hit its memory cap of {} MiB", max_memory >> 20)
        }
        None => return format!("{error:#}"),
    };
    format!("{summary}; {error:#}")
}

impl From<bindings::SnapshotInfo> for SnapshotInfo {
    fn from(info: bindings::SnapshotInfo) -> Self {
        let (a, b, c, d) = info.digest;
        Self {
            format_version: info.format_version,
            digest: keyscope_policy::KeyDigest::from_words([a, b, c, d]).0,
            scopes: info.scopes,
            keys: info.keys,
            operations: info.operations,
        }
    }
}
