//! Last-used figures: decisions count key uses in memory
//! ([`keyscope_keys::usage::UsageTally`]); a thread of its own writes them
//! to the store once per interval, in one transaction, so a key costs at
//! most one write per interval and no decision ever waits on the store.
//! Figures whose write failed (the database down) are kept for the next
//! one; a final write runs at shutdown.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use keyscope_keys::usage::UsageTally;
use keyscope_store::{AnyStore as Store, Store as _};
use prometheus_client::metrics::counter::Counter;

/// What the writer counts, shared with `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct UsageCounters {
    /// Store transactions that wrote usage.
    pub writes: Counter,
    /// Keys updated by them.
    pub keys: Counter,
    /// Writes that failed (their figures were kept).
    pub failures: Counter,
}

/// The writer thread; dropping it writes what is pending and stops it.
#[derive(Debug)]
pub struct UsageWriter {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl UsageWriter {
    /// Writes `tally` to `store` every `interval`.
    pub fn start(
        mut store: Store,
        tally: Arc<UsageTally>,
        interval: Duration,
        counters: UsageCounters,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("keyscope-usage".to_owned())
            .spawn(move || {
                loop {
                    let stopping = !matches!(
                        stopped.recv_timeout(interval),
                        Err(RecvTimeoutError::Timeout)
                    );
                    write(&mut store, &tally, &counters);
                    if stopping {
                        break;
                    }
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for UsageWriter {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One write of everything pending.
fn write(store: &mut Store, tally: &UsageTally, counters: &UsageCounters) {
    let uses = tally.drain();
    if uses.is_empty() {
        return;
    }
    match store.record_usage(&uses) {
        Ok(updated) => {
            counters.writes.inc();
            counters.keys.inc_by(updated);
        }
        Err(error) => {
            counters.failures.inc();
            tracing::warn!(%error, keys = uses.len(), "key usage not written; kept for the next write");
            tally.merge(uses);
        }
    }
}
