//! The decision core every front door shares: the credential from the
//! request's headers, a worker of the live policy, the metrics and the
//! decision log. Evaluation is synchronous and takes well under a
//! microsecond, so it runs on the executor's thread (see the README).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use keyscope_keys::usage::UsageTally;
use keyscope_policy::{Credential, HttpRequest, Method, Reason, Request};
use keyscope_runtime::swap::{LivePolicy, Outcome, Worker};
use keyscope_runtime::time::now_ms;

use super::config::HeaderConfig;
use super::decision_log::{DecisionLog, DecisionRecord};
use super::metrics::{Front, Metrics};

/// What is being asked.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// An HTTP request, routed inside the policy.
    Http {
        /// The method.
        method: &'a str,
        /// The path, with its query.
        path: &'a str,
    },
    /// An app and an operation, named directly.
    Op {
        /// The app.
        app: &'a str,
        /// The operation.
        op: &'a str,
    },
}

impl Target<'_> {
    /// The app and operation decided on: named, or from the route matched.
    pub fn decided_on<'o>(&'o self, outcome: &'o Outcome) -> Option<(&'o str, &'o str)> {
        match self {
            Target::Op { app, op } => Some((app, op)),
            Target::Http { .. } => outcome
                .route
                .as_ref()
                .map(|route| (route.app.as_str(), route.op.as_str())),
        }
    }
}

/// The shared decision core.
pub struct Authorizer {
    live: OnceLock<Arc<LivePolicy>>,
    /// Idle workers; a request takes one and puts it back.
    workers: Mutex<Vec<Worker>>,
    metrics: Metrics,
    log: DecisionLog,
    headers: HeaderConfig,
    /// Key uses, written back in batches.
    usage: Arc<UsageTally>,
    /// Whether uses are counted at all (`--usage off`: not).
    counting: bool,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("live", &self.live.get())
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    pub fn new(
        metrics: Metrics,
        log: DecisionLog,
        headers: HeaderConfig,
        usage: Arc<UsageTally>,
        counting: bool,
    ) -> Self {
        Self {
            live: OnceLock::new(),
            workers: Mutex::new(Vec::new()),
            metrics,
            log,
            headers,
            usage,
            counting,
        }
    }

    /// Key uses not yet written back.
    pub fn usage(&self) -> &Arc<UsageTally> {
        &self.usage
    }

    /// Goes live; until then every decision is `no-snapshot`.
    pub fn set_live(&self, live: Arc<LivePolicy>) {
        let _ = self.live.set(live);
    }

    /// The live policy, once there is one.
    pub fn live(&self) -> Option<&Arc<LivePolicy>> {
        self.live.get()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn headers(&self) -> &HeaderConfig {
        &self.headers
    }

    /// Decides, counts and logs one request. Fails closed: with no live
    /// policy, or a failing one, the answer is a deny.
    pub fn decide(&self, front: Front, credential: Credential, target: Target<'_>) -> Outcome {
        let started = Instant::now();
        let now = now_ms();
        let outcome = match self.live.get() {
            None => Outcome::unserved(Reason::NoSnapshot),
            Some(live) => {
                let mut worker = self.take_worker(live);
                let outcome = match target {
                    Target::Op { app, op } => worker.evaluate(&Request {
                        credential,
                        app,
                        op,
                        now,
                    }),
                    Target::Http { method, path } => worker.evaluate_http(&HttpRequest {
                        credential,
                        method: Method::parse(method),
                        path,
                        now,
                    }),
                };
                self.put_worker(worker);
                outcome
            }
        };
        let took = started.elapsed();
        if let Some(key_id) = outcome
            .decision
            .key_id
            .filter(|_| self.counting && front.counts_as_use())
        {
            self.usage.record(key_id, now);
        }
        self.metrics
            .decided(front, outcome.decision.reason.as_str(), took);
        if self.log.is_on() && !self.log.record(record(front, target, &outcome, took)) {
            self.metrics.log_dropped();
        }
        outcome
    }

    fn take_worker(&self, live: &Arc<LivePolicy>) -> Worker {
        self.workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_else(|| live.worker())
    }

    fn put_worker(&self, worker: Worker) {
        self.workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(worker);
    }
}

/// The decision log's line for a decision.
fn record(front: Front, target: Target<'_>, outcome: &Outcome, took: Duration) -> DecisionRecord {
    let (app, op) = target
        .decided_on(outcome)
        .map(|(app, op)| (app.to_owned(), op.to_owned()))
        .unzip();
    let method = match target {
        Target::Op { .. } => None,
        Target::Http { method, .. } => Some(method.to_owned()),
    };
    let decision = &outcome.decision;
    DecisionRecord {
        time_ms: now_ms(),
        generation: outcome.generation,
        front: front.as_str(),
        key_id: decision.key_id,
        scope_id: decision.scope_id,
        app,
        op,
        method,
        allow: decision.allow,
        reason: decision.reason.as_str(),
        latency_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
    }
}
