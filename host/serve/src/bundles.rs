//! The control plane's bundles: a [`Publisher`] kept at the live snapshot
//! and module, a signal long polls wait on, and the fleet as its polls
//! report it.
//!
//! Bundles are served at `GET /v1/bundle` on the admin listener, to each
//! gateway's fleet token, the deprecated shared one, or an admin token
//! ([`FleetCredentials`]); `/admin/fleet` lists the fleet, to the admin
//! token only (`admin::fleet`).

use std::sync::{Arc, Mutex, PoisonError};

use keyscope_bundle::{Built, Have, PublishedSnapshot, Publisher};
use keyscope_policy::kept::SnapshotChanges;
use keyscope_runtime::swap::Generation;
use keyscope_runtime::time::now_ms;
use tokio::sync::watch;

pub use crate::fleet_credentials::{Credential, FleetCredentials, Poller};
pub use crate::fleet_view::Seen;
use crate::fleet_view::{FleetView, gateway_name};

/// The published state's signal: its entity tag, and whether the server
/// is stopping (long polls then answer at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The bundle's entity tag: its version and state.
    pub etag: String,
    /// The state's tag, whatever its signature.
    pub state_tag: String,
    pub version: u64,
    pub revision: u64,
    pub stopping: bool,
}

impl Published {
    /// Whether a gateway that holds `state_tag` at `version` holds this
    /// state, at least as newly signed. A newer version of the same state
    /// (another control plane of the fleet signed later) is held too: it
    /// must not get an older signature, which it would refuse, at once and
    /// again.
    pub fn held_by(&self, state_tag: &str, version: u64) -> bool {
        self.state_tag == state_tag && version >= self.version
    }
}

/// A control plane's bundles and fleet.
pub struct Bundles {
    publisher: Mutex<Publisher>,
    published: watch::Sender<Published>,
    fleet: Mutex<FleetView>,
    credentials: FleetCredentials,
}

impl std::fmt::Debug for Bundles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundles").finish_non_exhaustive()
    }
}

impl Bundles {
    /// Publishes `generation` at `revision`, signed by `key`; gateways
    /// present their own fleet tokens ([`Bundles::credentials`]) or the
    /// shared token whose digest is `shared_token`.
    pub fn new(
        key: ed25519_dalek::SigningKey,
        revision: u64,
        generation: &Generation,
        shared_token: Option<[u8; 32]>,
        ttl: std::time::Duration,
        long_poll: std::time::Duration,
    ) -> Self {
        let publisher = Publisher::new(
            key,
            revision,
            Arc::clone(&generation.snapshot),
            Arc::clone(&generation.module),
            ttl,
        );
        let published = Published {
            etag: publisher.etag(),
            state_tag: publisher.state_tag(),
            version: publisher.version(),
            revision,
            stopping: false,
        };
        Self {
            publisher: Mutex::new(publisher),
            published: watch::channel(published).0,
            fleet: Mutex::new(FleetView::new(long_poll)),
            credentials: FleetCredentials::new(shared_token),
        }
    }

    /// Who may poll: the fleet tokens as last read, and the shared one.
    pub fn credentials(&self) -> &FleetCredentials {
        &self.credentials
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
        snapshot: impl Into<PublishedSnapshot>,
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

    /// Signs the published state again if its signature is past half its
    /// life. The store's refresh calls this after each good read, so a
    /// control plane that cannot read its store stops vouching for its
    /// state, and its gateways say they are stale once it expires.
    pub fn resign_if_due(&self) {
        let mut publisher = self.publisher();
        if publisher.resign_if_due(now_ms()) {
            tracing::debug!(
                version = publisher.version(),
                expires_at_ms = publisher.expires_at_ms(),
                "bundles: the published state signed anew"
            );
            self.signal(&publisher);
        }
    }

    fn signal(&self, publisher: &Publisher) {
        let etag = publisher.etag();
        let state_tag = publisher.state_tag();
        let version = publisher.version();
        let revision = publisher.revision();
        self.published.send_if_modified(|published| {
            let changed = published.etag != etag;
            published.etag = etag;
            published.state_tag = state_tag;
            published.version = version;
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
    pub fn bundle(&self, have: Option<Have<'_>>) -> keyscope_bundle::Result<Built> {
        self.publisher().bundle(have)
    }

    fn view(&self) -> std::sync::MutexGuard<'_, FleetView> {
        self.fleet.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes a gateway's poll: O(log n).
    pub fn seen(&self, id: String, seen: Seen) {
        self.view().seen(id, seen, now_ms());
    }

    /// Forgets a gateway; whether the view held it.
    pub fn forget(&self, id: &str) -> bool {
        self.view().forget(id)
    }

    /// The fleet view: every gateway, and whether it holds the published
    /// state.
    pub fn fleet(&self) -> serde_json::Value {
        let published = self.published.borrow().clone();
        let now = now_ms();
        let mut listed = self.view().list(now);
        // Rows the shared token wrote under a name that has since got a
        // token of its own are that gateway's to write: dropped.
        listed.retain(|(id, seen, _)| {
            let taken = seen.credential == Credential::Shared
                && self.credentials.has_token(gateway_name(id));
            if taken {
                self.forget(id);
            }
            !taken
        });
        let gateways: Vec<serde_json::Value> = listed
            .iter()
            .map(|(id, seen, gone)| {
                // Current: it decides on the published state, however long
                // ago its signature of it was made.
                let current = published.state_tag
                    == keyscope_bundle::format::state_tag(
                        seen.revision,
                        &seen.snapshot,
                        &seen.module,
                    );
                // A gateway whose own token was revoked since it polled.
                let credential = match seen.credential {
                    Credential::Named if !self.credentials.has_live(gateway_name(id)) => "revoked",
                    Credential::Named => "named",
                    Credential::Shared => "shared",
                    Credential::Admin => "admin",
                };
                serde_json::json!({
                    "id": id,
                    "credential": credential,
                    "version": seen.version,
                    "revision": seen.revision,
                    "snapshot": seen.snapshot,
                    "module": seen.module,
                    "current": current,
                    "gone": gone,
                    "last_seen_ms": seen.last_seen_ms,
                    "seen_ago_ms": now.saturating_sub(seen.last_seen_ms),
                    "address": seen.address,
                })
            })
            .collect();
        // A gone gateway, or one whose token was revoked, is shown, but
        // does not hold the fleet back.
        let behind = gateways
            .iter()
            .filter(|g| g["current"] != true && g["gone"] != true && g["credential"] != "revoked")
            .count();
        let shared = gateways
            .iter()
            .filter(|g| g["credential"] == "shared" && g["gone"] != true)
            .count();
        let mut warnings = Vec::new();
        if self.credentials.has_shared() {
            warnings.push(format!(
                "the shared fleet token (--fleet-token-file) is deprecated, and {shared} \
                 gateway(s) poll with it: give each gateway a token of its own \
                 (keyscope fleet token create --gateway NAME), then stop the control plane \
                 accepting the shared one"
            ));
        }
        serde_json::json!({
            "version": published.version,
            "revision": published.revision,
            "etag": published.etag,
            "gateways": gateways,
            "behind": behind,
            "shared_token": self.credentials.has_shared(),
            "warnings": warnings,
        })
    }
}
