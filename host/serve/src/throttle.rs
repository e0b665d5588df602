//! Log lines a client can cause, at most one per interval: a flood of
//! forged reports or refused polls must not flood the log too.

use std::sync::atomic::{AtomicU64, Ordering};

use keyscope_runtime::time::now_ms;

/// Counts events and lets one log line through per [`Throttle::INTERVAL_MS`].
#[derive(Debug)]
pub(crate) struct Throttle {
    since: AtomicU64,
    last_ms: AtomicU64,
}

impl Throttle {
    const INTERVAL_MS: u64 = 10_000;

    pub(crate) const fn new() -> Self {
        Self {
            since: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Counts `events`; the count since the last line if one may be
    /// logged now.
    pub(crate) fn tick(&self, events: u64) -> Option<u64> {
        self.since.fetch_add(events, Ordering::Relaxed);
        let now = now_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        (now.saturating_sub(last) >= Self::INTERVAL_MS
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok())
        .then(|| self.since.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_since() {
        let throttle = Throttle::new();
        assert_eq!(throttle.tick(3), Some(3));
        assert_eq!(throttle.tick(2), None);
        assert_eq!(throttle.tick(1), None);
        throttle.last_ms.store(0, Ordering::Relaxed);
        assert_eq!(throttle.tick(1), Some(4));
    }
}
