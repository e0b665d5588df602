//! Decision logs: one JSON line per decision, written by a thread of its
//! own. A decision only queues its record; when the queue is full the record
//! is dropped and counted, so logging never blocks a decision. A record never
//! holds a key, only the ids the policy returned.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
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
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| ServeError::Io {
                    what: format!("opening decision log `{}`", path.display()),
                    source,
                })?;
            Box::new(file)
        };
        let (queue, records) = mpsc::sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("keyscope-decision-log".to_owned())
            .spawn(move || write_all(records, BufWriter::with_capacity(64 * 1024, out)))
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

/// Writes records as they come, flushing whenever the queue runs dry, so a
/// burst becomes one write and a quiet server's log is never stale.
fn write_all(records: Receiver<DecisionRecord>, mut out: BufWriter<Box<dyn Write + Send>>) {
    let mut failed = false;
    while let Ok(first) = records.recv() {
        let was_failing = failed;
        let mut next = Some(first);
        while let Some(record) = next {
            if !failed {
                failed = write_line(&mut out, &record).is_err();
            }
            next = records.try_recv().ok();
        }
        if !failed {
            failed = out.flush().is_err();
        }
        if failed && !was_failing {
            tracing::error!("the decision log cannot be written; dropping its records");
        }
    }
    let _ = out.flush();
}

fn write_line(out: &mut impl Write, record: &DecisionRecord) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, record)?;
    out.write_all(b"\n")
}
