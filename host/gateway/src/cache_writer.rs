//! Writing the bundle cache off the poll path.
//!
//! The cache holds the whole snapshot, so writing it (encoding, writing,
//! syncing) is linear in the world: seconds at ten million keys. The poll
//! that made a bundle live must not wait for it, or the next revocation
//! would. A thread of its own writes the newest state queued; a state
//! still waiting when a newer one comes is dropped for it.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use keyscope_bundle::CacheImage;

#[derive(Default)]
struct Queue {
    /// The newest state not yet written.
    next: Option<CacheImage>,
    /// Whether a write is under way.
    writing: bool,
    /// The revision of the last state written.
    written: Option<u64>,
    /// The writer is dropped: write what is queued, then end.
    closing: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, queue: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        self.changed
            .wait(queue)
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The cache file's writer thread.
pub(crate) struct CacheWriter {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CacheWriter {
    /// Starts the thread that writes `path`, which holds revision
    /// `written` already, if any.
    pub(crate) fn start(path: PathBuf, written: Option<u64>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                written,
                ..Queue::default()
            }),
            changed: Condvar::new(),
        });
        let writer = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("keyscope-bundle-cache".to_owned())
            .spawn(move || write_queued(&writer, &path))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues `image` to be written, in place of any older one waiting.
    pub(crate) fn queue(&self, image: CacheImage) {
        self.shared.queue().next = Some(image);
        self.shared.changed.notify_all();
    }

    /// Waits until everything queued so far is written (or failed, which
    /// is logged), for at most `patience`: a write stuck on a dead disk
    /// must not hold a stopping process forever. Returns the revision the
    /// cache last got.
    pub(crate) fn flush(&self, patience: Duration) -> Option<u64> {
        let deadline = Instant::now() + patience;
        let mut queue = self.shared.queue();
        while queue.next.is_some() || queue.writing {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                tracing::error!(
                    patience_s = patience.as_secs(),
                    "gateway: the bundle cache write did not finish in time"
                );
                break;
            };
            queue = self
                .shared
                .changed
                .wait_timeout(queue, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        queue.written
    }
}

impl Drop for CacheWriter {
    /// Writes what is queued, then ends the thread.
    fn drop(&mut self) {
        self.shared.queue().closing = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_queued(shared: &Shared, path: &std::path::Path) {
    let mut queue = shared.queue();
    loop {
        let Some(image) = queue.next.take() else {
            if queue.closing {
                return;
            }
            queue = shared.wait(queue);
            continue;
        };
        queue.writing = true;
        drop(queue);
        // A panic in the write must not leave `writing` set for ever.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| image.write(path)));
        let written = match outcome {
            Ok(Ok(())) => Some(image.revision()),
            Ok(Err(error)) => {
                tracing::error!(%error, "gateway: the bundle is live but could not be cached");
                None
            }
            Err(_) => {
                tracing::error!("gateway: writing the bundle cache panicked");
                None
            }
        };
        queue = shared.queue();
        queue.writing = false;
        if written.is_some() {
            queue.written = written;
        }
        shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use ed25519_dalek::SigningKey;
    use keyscope_bundle::{Follower, Layout, Publisher};
    use keyscope_policy::snapshot::{SnapshotData, default_operations};

    use super::CacheWriter;

    /// The cache images of a follower that took revisions `1..=count`.
    fn images(count: u64) -> (SigningKey, Vec<keyscope_bundle::CacheImage>) {
        let key = SigningKey::from_bytes(&[7; 32]);
        let snapshot = |revision: u64| {
            let data = SnapshotData {
                operations: default_operations()
                    .into_iter()
                    .take(revision as usize)
                    .collect(),
                ..SnapshotData::default()
            };
            Arc::<[u8]>::from(data.encode().unwrap())
        };
        let module: Arc<[u8]> = Arc::from(&b"a module"[..]);
        let ttl = std::time::Duration::from_secs(3600);
        let mut publisher = Publisher::new(key.clone(), 1, snapshot(1), module, ttl);
        let mut follower = Follower::new([key.verifying_key()]);
        let mut images = Vec::new();
        for revision in 1..=count {
            if revision > 1 {
                publisher.advance(revision, snapshot(revision), None);
            }
            let bundle = publisher.bundle(None).unwrap();
            let now = keyscope_runtime::time::now_ms();
            let candidate = follower
                .prepare(&bundle.bytes, Layout::Served, now)
                .unwrap()
                .unwrap();
            follower.commit(candidate);
            images.push(follower.cache_image().unwrap());
        }
        (key, images)
    }

    #[test]
    fn the_cache_ends_at_the_newest_state_queued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        let (key, images) = images(4);
        let writer = CacheWriter::start(path.clone(), None).unwrap();
        for image in images {
            writer.queue(image);
        }
        assert_eq!(writer.flush(Duration::from_secs(60)), Some(4));
        let cached = keyscope_bundle::cache::read(&path, &[key.verifying_key()][..])
            .unwrap()
            .unwrap();
        let follower = Follower::new([key.verifying_key()]);
        let candidate = follower
            .prepare(&cached, Layout::Cache, keyscope_runtime::time::now_ms())
            .unwrap()
            .unwrap();
        assert_eq!(candidate.manifest.revision, 4);
    }

    #[test]
    fn a_dropped_writer_writes_what_is_queued_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        let (key, mut images) = images(2);
        let writer = CacheWriter::start(path.clone(), None).unwrap();
        writer.queue(images.pop().unwrap());
        drop(writer);
        let cached = keyscope_bundle::cache::read(&path, &[key.verifying_key()][..]).unwrap();
        assert!(cached.is_some(), "written before the thread ended");
    }

    #[test]
    fn a_failed_write_is_not_reported_as_written() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: the rename fails.
        let path = dir.path().join("cache");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), b"x").unwrap();
        let (_, mut images) = images(1);
        let writer = CacheWriter::start(path, None).unwrap();
        writer.queue(images.pop().unwrap());
        assert_eq!(writer.flush(Duration::from_secs(60)), None);
    }
}
