//! `/metrics`, in the Prometheus text format.

use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use keyscope_runtime::swap::LivePolicy;

/// Which door a decision came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Front {
    /// Envoy ext_authz over gRPC.
    Grpc,
    /// Envoy ext_authz over HTTP.
    Envoy,
    /// nginx `auth_request`.
    Nginx,
    /// `POST /v1/check`.
    Check,
    /// The console's "try a request" panel: a trial, not a use of the key.
    Console,
}

impl Front {
    /// Whether a decision here is a use of its key (a trial is not).
    pub fn counts_as_use(self) -> bool {
        !matches!(self, Self::Console)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::Envoy => "envoy-http",
            Self::Nginx => "nginx",
            Self::Check => "check",
            Self::Console => "console",
        }
    }
}

type Labels = [(&'static str, &'static str); 2];

/// The server's metrics. Decisions are counted as they happen; the live
/// policy's counters are copied in at each scrape.
pub struct Metrics {
    registry: Registry,
    decisions: Family<Labels, Counter>,
    latency: Family<[(&'static str, &'static str); 1], Histogram>,
    log_dropped: Counter,
    swaps_published: Counter,
    swaps_refused: Counter,
    deltas_applied: Counter,
    deltas_refused: Counter,
    policy_errors: Counter,
    admin_auth_failures: Counter,
    generation: Gauge,
    generation_info: Family<Vec<(&'static str, String)>, Gauge>,
    usage: crate::usage::UsageCounters,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("keyscope");
        let decisions = Family::<Labels, Counter>::default();
        registry.register(
            "decisions",
            "Decisions, by front door and reason",
            decisions.clone(),
        );
        // 1 µs to about 16 ms.
        let latency =
            Family::<[(&'static str, &'static str); 1], Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1e-6, 2.0, 15))
            });
        registry.register(
            "decision_duration_seconds",
            "Time to decide, from the parsed request to the decision",
            latency.clone(),
        );
        let log_dropped = Counter::default();
        registry.register(
            "decision_log_dropped",
            "Decision log lines dropped because the writer fell behind",
            log_dropped.clone(),
        );
        let swaps_published = Counter::default();
        registry.register(
            "swaps_published",
            "Generations published",
            swaps_published.clone(),
        );
        let swaps_refused = Counter::default();
        registry.register(
            "swaps_refused",
            "Swaps refused at a step",
            swaps_refused.clone(),
        );
        let deltas_applied = Counter::default();
        registry.register(
            "deltas_applied",
            "Changes published as contract deltas, applied in place by each instance",
            deltas_applied.clone(),
        );
        let deltas_refused = Counter::default();
        registry.register(
            "deltas_refused",
            "Deltas refused (a gap, a mismatch, a module that would not take one), each loaded whole instead",
            deltas_refused.clone(),
        );
        let policy_errors = Counter::default();
        registry.register(
            "policy_errors",
            "Decisions denied because the policy failed",
            policy_errors.clone(),
        );
        let admin_auth_failures = Counter::default();
        registry.register(
            "admin_auth_failures",
            "Admin API requests refused for a missing or wrong token, or rate limited",
            admin_auth_failures.clone(),
        );
        let generation = Gauge::default();
        registry.register(
            "generation",
            "The live generation's number",
            generation.clone(),
        );
        let generation_info = Family::<Vec<(&'static str, String)>, Gauge>::default();
        registry.register(
            "generation_info",
            "The live generation's module and snapshot digests",
            generation_info.clone(),
        );
        let usage = crate::usage::UsageCounters::default();
        registry.register(
            "usage_writes",
            "Store transactions that wrote key usage (at most one per interval)",
            usage.writes.clone(),
        );
        registry.register(
            "usage_keys_written",
            "Key usage rows updated by those writes",
            usage.keys.clone(),
        );
        registry.register(
            "usage_write_failures",
            "Key usage writes that failed; their figures were kept for the next",
            usage.failures.clone(),
        );
        Self {
            usage,
            registry,
            decisions,
            latency,
            log_dropped,
            swaps_published,
            swaps_refused,
            deltas_applied,
            deltas_refused,
            policy_errors,
            admin_auth_failures,
            generation,
            generation_info,
        }
    }

    /// Counts one decision.
    pub fn decided(&self, front: Front, reason: &'static str, took: Duration) {
        self.decisions
            .get_or_create(&[("front", front.as_str()), ("reason", reason)])
            .inc();
        self.latency
            .get_or_create(&[("front", front.as_str())])
            .observe(took.as_secs_f64());
    }

    /// The usage writer's counters.
    pub fn usage(&self) -> crate::usage::UsageCounters {
        self.usage.clone()
    }

    /// Counts a decision log line that could not be queued.
    pub fn log_dropped(&self) {
        self.log_dropped.inc();
    }

    /// Counts an admin request refused at authentication.
    pub fn admin_auth_failed(&self) {
        self.admin_auth_failures.inc();
    }

    /// The text exposition, with the live policy's state as of now.
    pub fn render(&self, live: Option<&LivePolicy>) -> String {
        if let Some(live) = live {
            let stats = live.stats();
            let catch_up = |counter: &Counter, total: u64| {
                counter.inc_by(total.saturating_sub(counter.get()));
            };
            catch_up(
                &self.swaps_published,
                stats.swaps_published.load(Ordering::Relaxed),
            );
            catch_up(
                &self.swaps_refused,
                stats.swaps_refused.load(Ordering::Relaxed),
            );
            catch_up(
                &self.deltas_applied,
                stats.deltas_applied.load(Ordering::Relaxed),
            );
            catch_up(
                &self.deltas_refused,
                stats.deltas_refused.load(Ordering::Relaxed),
            );
            catch_up(
                &self.policy_errors,
                stats.policy_errors.load(Ordering::Relaxed),
            );
            let current = live.current();
            self.generation
                .set(i64::try_from(current.number).unwrap_or(i64::MAX));
            self.generation_info.clear();
            self.generation_info
                .get_or_create(&vec![
                    ("module", current.component.info().digest.clone()),
                    ("snapshot", current.snapshot_info.digest_hex()),
                ])
                .set(1);
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}
