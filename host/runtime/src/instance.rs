//! One running policy instance with, once loaded, a snapshot.
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
use std::sync::Arc;
use std::time::Duration;

use keyscope_policy::{Decision, HttpRequest, Reason, Request, ResolvedRequest, SnapshotInfo};
use wasmtime::{Store, StoreLimitsBuilder};

use crate::bindings::{self, Policy};
use crate::catalogue::Catalogue;
use crate::component::PolicyComponent;
use crate::engine::{HostState, Limits};
use crate::error::{Error, Result};
use crate::fault::{self, Fault};

impl PolicyComponent {
    /// Starts an instance with no snapshot loaded.
    pub fn instantiate(&self, limits: Limits) -> Result<PolicyInstance> {
        let running = self.start(&limits)?;
        Ok(PolicyInstance::new(self.clone(), limits, running))
    }

    /// A new store and instance, under `limits`.
    pub(crate) fn start(&self, limits: &Limits) -> Result<(Store<HostState>, Policy)> {
        if fault::hit(Fault::Instantiate) {
            return Err(Error::Injected(Fault::Instantiate));
        }
        let mut store = Store::new(
            self.engine().engine(),
            HostState::new(
                StoreLimitsBuilder::new()
                    .memory_size(limits.max_memory)
                    .memories(1)
                    .tables(4)
                    .table_elements(65_536)
                    .instances(8)
                    .trap_on_grow_failure(true)
                    .build(),
            ),
        );
        store.limiter(|state| state);
        store.set_epoch_deadline(Limits::ticks(limits.load_timeout));
        let policy = self
            .pre()
            .instantiate(&mut store)
            .map_err(|e| Error::wasm(Error::PolicyFailed, &e))?;
        Ok((store, policy))
    }
}

/// A running policy instance with, once loaded, a snapshot.
pub struct PolicyInstance {
    component: PolicyComponent,
    limits: Limits,
    /// `None` after a failure until the instance is rebuilt.
    running: Option<(Store<HostState>, Policy)>,
    /// The last snapshot loaded, and the deltas applied to it since, to
    /// reload into a rebuilt instance.
    snapshot: Option<Arc<[u8]>>,
    deltas: Vec<Arc<[u8]>>,
    /// The names of the loaded snapshot's ids.
    catalogue: Catalogue,
    /// An HTTP request whose path buffer is reused from call to call, so
    /// that lowering a request allocates nothing on the host.
    http_scratch: bindings::HttpRequest,
}

fn empty_http_request() -> bindings::HttpRequest {
    bindings::HttpRequest {
        credential: bindings::Credential::Missing,
        method: bindings::Method::Other,
        path: String::new(),
        now: 0,
    }
}

/// The app and operation a route named. (The guest's `RouteMatch` borrows
/// the path and gives the operation's id; this one owns the names.)
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
    /// An instance of `component`, just started, with no snapshot loaded.
    pub(crate) fn new(
        component: PolicyComponent,
        limits: Limits,
        running: (Store<HostState>, Policy),
    ) -> Self {
        Self {
            component,
            limits,
            running: Some(running),
            snapshot: None,
            deltas: Vec::new(),
            catalogue: Catalogue::default(),
            http_scratch: empty_http_request(),
        }
    }

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
        let info: SnapshotInfo = self
            .call(self.limits.load_timeout, |policy, store| {
                policy
                    .keyscope_policy_decide()
                    .call_load_snapshot(store, &bytes)
            })?
            .map_err(keyscope_policy::LoadError::from)?
            .into();
        self.snapshot = Some(bytes);
        self.deltas.clear();
        self.read_names(&info)?;
        Ok(info)
    }

    /// Applies a delta to the loaded snapshot (contract 0.4's
    /// `apply-delta`). If the policy refuses it, the snapshot stays as it
    /// was and the error says why ([`Error::Delta`]).
    pub fn apply_delta(&mut self, delta: Arc<[u8]>) -> Result<SnapshotInfo> {
        if fault::hit(Fault::LoadSnapshot) {
            return Err(Error::Injected(Fault::LoadSnapshot));
        }
        let info: SnapshotInfo = self
            .call(self.limits.load_timeout, |policy, store| {
                policy
                    .keyscope_policy_decide()
                    .call_apply_delta(store, &delta)
            })?
            .map_err(keyscope_policy::delta::DeltaError::from)?
            .into();
        self.deltas.push(delta);
        self.read_names(&info)?;
        Ok(info)
    }

    /// How many deltas were applied since the last full load.
    pub fn deltas_applied(&self) -> usize {
        self.deltas.len()
    }

    fn read_names(&mut self, info: &SnapshotInfo) -> Result<()> {
        // Until the names are read, every request is for another snapshot,
        // so a failure here fails closed.
        self.catalogue = Catalogue::default();
        let names = self.call(self.limits.load_timeout, |policy, store| {
            policy.keyscope_policy_decide().call_names(store)
        })?;
        self.catalogue = Catalogue::new(&info.digest, names);
        Ok(())
    }

    /// The names of the loaded snapshot's ids.
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
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
        let resolved = self.catalogue.resolve(request);
        self.try_evaluate_resolved(&resolved)
    }

    /// Decides a request already resolved to the loaded snapshot's ids
    /// ([`PolicyInstance::catalogue`]). Fails closed.
    pub fn evaluate_resolved(&mut self, request: &ResolvedRequest) -> Decision {
        self.try_evaluate_resolved(request)
            .unwrap_or(Decision::deny(Reason::PolicyError))
    }

    fn try_evaluate_resolved(&mut self, request: &ResolvedRequest) -> Result<Decision> {
        let lowered = bindings::Request::from(request);
        self.call(self.limits.evaluate_timeout, |policy, store| {
            policy
                .keyscope_policy_decide()
                .call_evaluate(store, lowered)
        })
        .map(Decision::from)
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
        let path = request.path;
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
        // Fail closed: a route must name a place in the path and a
        // catalogued operation.
        let start = route.app_offset as usize;
        let app = start
            .checked_add(route.app_length as usize)
            .and_then(|end| path.get(start..end));
        let op = self.catalogue.operation(route.op);
        let (Some(app), Some(op)) = (app, op) else {
            return Err(Error::PolicyFailed(format!(
                "the policy matched a route outside the path or the catalogue \
                 (app at {start}+{}, operation {})",
                route.app_length, route.op
            )));
        };
        Ok(RoutedDecision {
            route: Some(MatchedRoute {
                app: app.to_owned(),
                op: op.to_owned(),
            }),
            decision,
        })
    }

    /// Decides many requests in one call; the answers come back in order.
    /// Fails closed: if the policy fails, every request is denied.
    pub fn evaluate_batch(&mut self, requests: &[Request<'_>]) -> Vec<Decision> {
        let lowered: Vec<bindings::Request> = requests
            .iter()
            .map(|request| bindings::Request::from(&self.catalogue.resolve(request)))
            .collect();
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
            for delta in &self.deltas {
                policy
                    .keyscope_policy_decide()
                    .call_apply_delta(&mut store, delta)
                    .map_err(|e| Error::wasm(Error::PolicyFailed, &e))?
                    .map_err(keyscope_policy::delta::DeltaError::from)?;
            }
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
            apps: info.apps,
            scopes: info.scopes,
            keys: info.keys,
            operations: info.operations,
            routes: info.routes,
        }
    }
}
