//! A worker: one thread's instance of the live generation, and the one
//! outcome shape every evaluation returns.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use keyscope_policy::{Decision, HttpRequest, Reason, Request};

use super::live::{Generation, LivePolicy};
use crate::instance::{MatchedRoute, PolicyInstance, RoutedDecision};

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

impl LivePolicy {
    /// A worker for one thread.
    pub fn worker(self: &Arc<Self>) -> Worker {
        Worker {
            live: Arc::clone(self),
            serving: None,
        }
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
        if self.live.too_stale(request.now) {
            return self.stale_outcome();
        }
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
        if requests
            .first()
            .is_some_and(|request| self.live.too_stale(request.now))
        {
            return BatchOutcome {
                decisions: vec![Decision::deny(Reason::StalePolicy); requests.len()],
                generation: self.live.current.load().number,
            };
        }
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
        if self.live.too_stale(request.now) {
            return self.stale_outcome();
        }
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

    /// A deny because the data is older than `max_stale` allows: the
    /// policy is not asked.
    fn stale_outcome(&self) -> Outcome {
        Outcome {
            decision: Decision::deny(Reason::StalePolicy),
            route: None,
            generation: self.live.current.load().number,
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
            if let Some(proved) = generation.take_proved() {
                self.serving = Some((generation, proved));
                return match &mut self.serving {
                    Some((_, instance)) => Ok((instance, number)),
                    None => Err(number),
                };
            }
            let reuse = self.serving.take().and_then(|(old, instance)| {
                (old.component.info().digest == generation.component.info().digest)
                    .then_some((old, instance))
            });
            let loaded = match reuse {
                // The same full snapshot, and deltas past the ones applied:
                // apply only those. If one is refused, load whole.
                Some((old, mut instance)) if catches_up(&old, &generation) => {
                    let applied = generation.deltas[old.deltas.len()..]
                        .iter()
                        .try_for_each(|delta| instance.apply_delta(Arc::clone(delta)).map(drop));
                    match applied {
                        Ok(()) => Ok(instance),
                        Err(_) => load_whole(instance, &generation),
                    }
                }
                Some((_, instance)) => load_whole(instance, &generation),
                None => generation
                    .component
                    .instantiate(self.live.limits.clone())
                    .and_then(|instance| load_whole(instance, &generation)),
            };
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

/// Whether an instance serving `old` reaches `new` by applying deltas: the
/// same full snapshot, and `old`'s deltas the first of `new`'s.
fn catches_up(old: &Generation, new: &Generation) -> bool {
    Arc::ptr_eq(&old.snapshot, &new.snapshot)
        && old.deltas.len() <= new.deltas.len()
        && old
            .deltas
            .iter()
            .zip(&new.deltas)
            .all(|(a, b)| Arc::ptr_eq(a, b))
}

/// Loads `generation`'s full snapshot into `instance`, then its deltas.
fn load_whole(
    mut instance: PolicyInstance,
    generation: &Generation,
) -> crate::Result<PolicyInstance> {
    instance.load_shared_snapshot(Arc::clone(&generation.snapshot))?;
    for delta in &generation.deltas {
        instance.apply_delta(Arc::clone(delta))?;
    }
    Ok(instance)
}
