//! The control plane's bundles: a [`Publisher`] kept at the live snapshot
//! and module, a signal long polls wait on, and the fleet as its polls
//! report it.
//!
//! Bundles are served at `GET /v1/bundle` on the admin listener, to the
//! fleet token (or the admin token); `/admin/fleet` lists the fleet, to
//! the admin token only (`admin::fleet`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use keyscope_bundle::{Built, Have, Publisher};
use keyscope_policy::kept::SnapshotChanges;
use keyscope_runtime::swap::Generation;
use keyscope_runtime::time::now_ms;
use serde::Serialize;
use tokio::sync::watch;

/// How many gateways the fleet view remembers; past it, the longest
/// unseen is forgotten.
const MAX_FLEET: usize = 100_000;

/// A gateway, as its last poll described it.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    /// The revision it held.
    pub revision: u64,
    /// Its snapshot's digest.
    pub snapshot: String,
    /// Its module's digest.
    pub module: String,
    /// When it polled last (ms since the Unix epoch).
    pub last_seen_ms: u64,
    /// From where.
    pub address: IpAddr,
}

/// The published state's signal: its entity tag, and whether the server
/// is stopping (long polls then answer at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub etag: String,
    pub revision: u64,
    pub stopping: bool,
}

/// A control plane's bundles and fleet.
pub struct Bundles {
    publisher: Mutex<Publisher>,
    published: watch::Sender<Published>,
    fleet: Mutex<BTreeMap<String, Seen>>,
    /// SHA-256 of the fleet token.
    pub(crate) fleet_token: [u8; 32],
}

impl std::fmt::Debug for Bundles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundles").finish_non_exhaustive()
    }
}

impl Bundles {
    /// Publishes `generation` at `revision`, signed by `key`; gateways
    /// present the token whose digest is `fleet_token`.
    pub fn new(
        key: ed25519_dalek::SigningKey,
        revision: u64,
        generation: &Generation,
        fleet_token: [u8; 32],
    ) -> Self {
        let publisher = Publisher::new(
            key,
            revision,
            Arc::clone(&generation.snapshot),
            Arc::clone(&generation.module),
        );
        let published = Published {
            etag: publisher.etag(),
            revision,
            stopping: false,
        };
        Self {
            publisher: Mutex::new(publisher),
            published: watch::channel(published).0,
            fleet: Mutex::new(BTreeMap::new()),
            fleet_token,
        }
    }

    fn publisher(&self) -> std::sync::MutexGuard<'_, Publisher> {
        self.publisher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The snapshot moved to `revision`, through `changes` if known,
    /// decided by `module`.
    pub fn advance(
        &self,
        revision: u64,
        snapshot: Arc<[u8]>,
        module: Arc<[u8]>,
        changes: Option<SnapshotChanges>,
    ) {
        let mut publisher = self.publisher();
        publisher.advance(revision, snapshot, changes);
        publisher.set_module(module);
        self.signal(&publisher);
    }

    /// The module moved on.
    pub fn module(&self, generation: &Generation) {
        let mut publisher = self.publisher();
        publisher.set_module(Arc::clone(&generation.module));
        self.signal(&publisher);
    }

    fn signal(&self, publisher: &Publisher) {
        let etag = publisher.etag();
        let revision = publisher.revision();
        self.published.send_if_modified(|published| {
            let changed = published.etag != etag;
            published.etag = etag;
            published.revision = revision;
            changed
        });
    }

    /// Wakes every long poll: the server is stopping.
    pub fn stopping(&self) {
        self.published
            .send_modify(|published| published.stopping = true);
    }

    /// The published state's signal.
    pub fn published(&self) -> watch::Receiver<Published> {
        self.published.subscribe()
    }

    /// The bundle that brings `have` to the published state.
    pub fn bundle(&self, have: Option<Have<'_>>) -> Built {
        self.publisher().bundle(have)
    }

    /// Notes a gateway's poll.
    pub fn seen(&self, id: String, seen: Seen) {
        let mut fleet = self.fleet.lock().unwrap_or_else(PoisonError::into_inner);
        if fleet.len() >= MAX_FLEET
            && !fleet.contains_key(&id)
            && let Some(oldest) = fleet
                .iter()
                .min_by_key(|(_, seen)| seen.last_seen_ms)
                .map(|(id, _)| id.clone())
        {
            fleet.remove(&oldest);
        }
        fleet.insert(id, seen);
    }

    /// The fleet view: every gateway, and whether it holds the published
    /// state.
    pub fn fleet(&self) -> serde_json::Value {
        let published = self.published.borrow().clone();
        let fleet = self.fleet.lock().unwrap_or_else(PoisonError::into_inner);
        let now = now_ms();
        let gateways: Vec<serde_json::Value> = fleet
            .iter()
            .map(|(id, seen)| {
                let current =
                    keyscope_bundle::format::etag(seen.revision, &seen.snapshot, &seen.module)
                        == published.etag;
                serde_json::json!({
                    "id": id,
                    "revision": seen.revision,
                    "snapshot": seen.snapshot,
                    "module": seen.module,
                    "current": current,
                    "last_seen_ms": seen.last_seen_ms,
                    "seen_ago_ms": now.saturating_sub(seen.last_seen_ms),
                    "address": seen.address,
                })
            })
            .collect();
        let behind = gateways
            .iter()
            .filter(|g| g["current"] != serde_json::Value::Bool(true))
            .count();
        serde_json::json!({
            "revision": published.revision,
            "etag": published.etag,
            "gateways": gateways,
            "behind": behind,
        })
    }
}
