//! Decision logs: one JSON line per decision, written by a thread of its
//! own. A decision only queues its record; when the queue is full the record
//! is dropped and counted, so logging never blocks a decision. A record never
//! holds a key, only the ids the policy returned.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

use serde::Serialize;

use super::ServeError;

/// How many records may wait for the writer.
const QUEUE: usize = 64 * 1024;

/// One decision, as logged.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionRecord {
    /// When, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The generation that decided.
    pub generation: u64,
    /// Which door the request came through.
    pub front: &'static str,
    /// The key's id, when the key is known.
    pub key_id: Option<u64>,
    /// Its scope's id.
    pub scope_id: Option<u64>,
    /// The app addressed, when known.
    pub app: Option<String>,
    /// The operation, when known.
    pub op: Option<String>,
    /// The HTTP method, for proxy requests.
    pub method: Option<String>,
    /// Whether it was allowed.
    pub allow: bool,
    /// Why.
    pub reason: &'static str,
    /// Time to decide, in microseconds.
    pub latency_us: u64,
}

/// The sending side; cheap to clone.
#[derive(Debug, Clone)]
pub struct DecisionLog {
    queue: Option<SyncSender<DecisionRecord>>,
}

/// The writer thread; joined on shutdown, after the last sender is gone.
#[derive(Debug)]
pub struct LogWriter {
    thread: Option<JoinHandle<()>>,
}

impl DecisionLog {
    /// A log that writes nothing.
    pub fn off() -> Self {
        Self { queue: None }
    }

    /// Starts a writer to `path` (appending), or to stdout for `-`.
    pub fn start(path: &Path) -> Result<(Self, LogWriter), ServeError> {
        let out: Box<dyn Write + Send> = if path == Path::new("-") {
            Box::new(std::io::stdout())
        } else {
            // Readable by the owner only: decisions name keys and apps.
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(|source| ServeError::Io {
                    what: format!("opening decision log `{}`", path.display()),
                    source,
                })?;
            Box::new(file)
        };
        Self::start_with(out)
    }

    /// Starts a writer to `out`.
    fn start_with(out: Box<dyn Write + Send>) -> Result<(Self, LogWriter), ServeError> {
        let (queue, records) = mpsc::sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("keyscope-decision-log".to_owned())
            .spawn(move || write_all(records, out))
            .map_err(|source| ServeError::Io {
                what: "starting the decision log writer".to_owned(),
                source,
            })?;
        Ok((
            Self { queue: Some(queue) },
            LogWriter {
                thread: Some(thread),
            },
        ))
    }

    /// Whether records are wanted at all.
    pub fn is_on(&self) -> bool {
        self.queue.is_some()
    }

    /// Queues a record; false if it had to be dropped.
    pub fn record(&self, record: DecisionRecord) -> bool {
        match &self.queue {
            None => true,
            Some(queue) => match queue.try_send(record) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            },
        }
    }
}

impl LogWriter {
    /// Waits (up to two seconds) for the writer to drain the queue, which
    /// it does once every [`DecisionLog`] is dropped.
    pub fn finish(mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        if let Some(thread) = self.thread.take() {
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                tracing::warn!("the decision log writer did not finish in time");
            }
        }
    }
}

/// Writes records as they come: everything queued becomes one write, so a
/// burst is one system call and a quiet server's log is never stale. A
/// failed write drops its batch and is said once; every later batch tries
/// again, so the log resumes when the disk does.
fn write_all(records: Receiver<DecisionRecord>, mut out: Box<dyn Write + Send>) {
    let mut failing = false;
    let mut batch = Vec::with_capacity(64 * 1024);
    while let Ok(first) = records.recv() {
        batch.clear();
        if failing {
            // End whatever line a failed write may have left half-written.
            batch.push(b'\n');
        }
        let mut next = Some(first);
        while let Some(record) = next {
            if serde_json::to_writer(&mut batch, &record).is_ok() {
                batch.push(b'\n');
            }
            next = records.try_recv().ok();
        }
        let written = out.write_all(&batch).and_then(|()| out.flush());
        match (written, failing) {
            (Err(error), false) => {
                tracing::error!(%error, "the decision log cannot be written; dropping its records");
                failing = true;
            }
            (Ok(()), true) => {
                tracing::info!("the decision log is written again");
                failing = false;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer that fails its first `failures` writes, like a full disk.
    struct Flaky {
        failures: usize,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Flaky {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if self.failures > 0 {
                self.failures -= 1;
                return Err(std::io::Error::other("no space left on device"));
            }
            self.written.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn record(generation: u64) -> DecisionRecord {
        DecisionRecord {
            time_ms: 0,
            generation,
            front: "check",
            key_id: Some(1),
            scope_id: Some(1),
            app: Some("acme".to_owned()),
            op: Some("agents.get".to_owned()),
            method: None,
            allow: true,
            reason: "allowed",
            latency_us: 1,
        }
    }

    #[test]
    fn the_log_resumes_after_failed_writes() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let out = Flaky {
            failures: 1,
            written: Arc::clone(&written),
        };
        let (log, writer) = DecisionLog::start_with(Box::new(out)).unwrap();
        assert!(log.record(record(1)));
        // Let the first (failing) batch go before the next is queued.
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(log.record(record(2)));
        drop(log);
        writer.finish();
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().filter(|line| !line.is_empty()).collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert!(lines[0].contains("\"generation\":2"), "{text}");
    }
}
