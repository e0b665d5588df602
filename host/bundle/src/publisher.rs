//! The control plane's side: the current state, the changes that led to
//! it, and the bundle each gateway needs.
//!
//! A gateway says which state it holds (revision, snapshot digest, module
//! digest). If the publisher still holds the changes since that state, the
//! gateway gets a delta: those changes folded into one, and the module
//! only if the gateway runs another. Otherwise, or if the delta would be
//! larger than half the snapshot, it gets the full bundle. Bundles are
//! built once per state and base and shared by every gateway that asks.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use keyscope_policy::Snapshot;
use keyscope_policy::kept::SnapshotChanges;

use crate::error::Result;
use crate::format::{Base, Kind, Manifest, ModulePart, Part, seal, sha256_hex, snapshot_digest};
use crate::keys::key_id;

/// The most changes kept to build deltas from, by count and by rows; a
/// gateway further behind gets the full bundle.
const MAX_STEPS: usize = 1024;
const MAX_STEP_ROWS: usize = 250_000;

/// The state a gateway says it holds.
#[derive(Debug, Clone, Copy)]
pub struct Have<'a> {
    /// Its revision.
    pub revision: u64,
    /// Its snapshot's digest (hex).
    pub snapshot: &'a str,
    /// Its module's digest (hex).
    pub module: &'a str,
}

/// A bundle, built.
#[derive(Debug, Clone)]
pub struct Built {
    /// Full or delta.
    pub kind: Kind,
    /// The bytes to send.
    pub bytes: Arc<[u8]>,
    /// Why a gateway that said what it holds got the full bundle.
    pub why_full: Option<&'static str>,
}

/// A snapshot to publish: its bytes, or the decoded snapshot a store
/// keeps up to date. A decoded one is encoded only when a full bundle is
/// first asked for, so a change costs the control plane what it changes,
/// not an encoding of the whole world.
#[derive(Debug, Clone)]
pub enum PublishedSnapshot {
    /// Encoded: a full bundle's, or one read from a file.
    Bytes(Arc<[u8]>),
    /// Decoded, as a store's builder keeps it.
    Decoded(Box<Snapshot>),
}

impl From<Arc<[u8]>> for PublishedSnapshot {
    fn from(bytes: Arc<[u8]>) -> Self {
        Self::Bytes(bytes)
    }
}

impl From<Snapshot> for PublishedSnapshot {
    fn from(snapshot: Snapshot) -> Self {
        Self::Decoded(Box::new(snapshot))
    }
}

impl PublishedSnapshot {
    /// The digest, in hex.
    fn sha256(&self) -> String {
        match self {
            Self::Bytes(bytes) => snapshot_digest(bytes),
            Self::Decoded(snapshot) => snapshot.info().digest_hex(),
        }
    }

    /// The length of its bytes.
    fn len(&self) -> usize {
        match self {
            Self::Bytes(bytes) => bytes.len(),
            Self::Decoded(snapshot) => snapshot.encoded_len(),
        }
    }

    /// Its bytes: encoded the first time they are asked for, then kept.
    fn bytes(&mut self) -> Result<Arc<[u8]>> {
        let bytes: Arc<[u8]> = match self {
            Self::Bytes(bytes) => return Ok(Arc::clone(bytes)),
            Self::Decoded(snapshot) => Arc::from(snapshot.to_bytes()?),
        };
        *self = Self::Bytes(Arc::clone(&bytes));
        Ok(bytes)
    }
}

struct State {
    /// The signature's version and expiry: see [`Manifest::version`].
    version: u64,
    expires_at_ms: u64,
    revision: u64,
    snapshot: PublishedSnapshot,
    snapshot_sha256: String,
    module: Arc<[u8]>,
    module_sha256: String,
    published_at_ms: u64,
}

struct Step {
    base: Base,
    changes: SnapshotChanges,
}

/// Builds signed bundles of the current state for a fleet.
pub struct Publisher {
    key: SigningKey,
    signer: String,
    /// How long a signature stays good.
    ttl_ms: u64,
    state: State,
    steps: VecDeque<Step>,
    step_rows: usize,
    full: Option<Built>,
    deltas: HashMap<(u64, bool), Built>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("signer", &self.signer)
            .field("revision", &self.state.revision)
            .field("steps", &self.steps.len())
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Publishes `snapshot` at `revision`, decided by `module`, signed by
    /// `key` with signatures good for `ttl`.
    ///
    /// Versions are the publication's time in milliseconds, one more than
    /// the last if that is not later: they grow with every publication,
    /// across restarts too (as long as the clock does not go back by more
    /// than a restart takes), with no state to keep.
    pub fn new(
        key: SigningKey,
        revision: u64,
        snapshot: impl Into<PublishedSnapshot>,
        module: Arc<[u8]>,
        ttl: std::time::Duration,
    ) -> Self {
        let snapshot = snapshot.into();
        let signer = key_id(&key.verifying_key());
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let now = now_ms();
        Self {
            key,
            signer,
            ttl_ms,
            state: State {
                version: now,
                expires_at_ms: now.saturating_add(ttl_ms),
                revision,
                snapshot_sha256: snapshot.sha256(),
                snapshot,
                module_sha256: sha256_hex(&module),
                module,
                published_at_ms: now_ms(),
            },
            steps: VecDeque::new(),
            step_rows: 0,
            full: None,
            deltas: HashMap::new(),
        }
    }

    /// The revision published.
    pub fn revision(&self) -> u64 {
        self.state.revision
    }

    /// The snapshot published, encoded if it was not yet.
    pub fn snapshot(&mut self) -> Result<Arc<[u8]>> {
        self.state.snapshot.bytes()
    }

    /// Whether the published snapshot has been encoded.
    #[cfg(test)]
    pub(crate) fn encoded(&self) -> bool {
        matches!(self.state.snapshot, PublishedSnapshot::Bytes(_))
    }

    /// The published snapshot's digest, in hex.
    pub fn snapshot_sha256(&self) -> &str {
        &self.state.snapshot_sha256
    }

    /// The version published.
    pub fn version(&self) -> u64 {
        self.state.version
    }

    /// When the published signature expires (ms since the Unix epoch).
    pub fn expires_at_ms(&self) -> u64 {
        self.state.expires_at_ms
    }

    /// The tag of the published state, whatever its signature.
    pub fn state_tag(&self) -> String {
        crate::format::state_tag(
            self.state.revision,
            &self.state.snapshot_sha256,
            &self.state.module_sha256,
        )
    }

    /// The entity tag of the published bundle: a gateway that holds it
    /// gets 304.
    pub fn etag(&self) -> String {
        crate::format::etag(self.state.version, &self.state_tag())
    }

    /// Signs the same state again, at a new version, if less than half of
    /// the signature's time is left at `now_ms`; returns whether it did.
    /// An honest control plane does this well before the expiry, so a
    /// gateway whose bundle expires is one that stopped hearing from it.
    pub fn resign_if_due(&mut self, now_ms: u64) -> bool {
        if self.state.expires_at_ms.saturating_sub(now_ms) > self.ttl_ms / 2 {
            return false;
        }
        self.new_version();
        true
    }

    /// A new version and expiry, for a new state or a new signature.
    fn new_version(&mut self) {
        let now = now_ms();
        self.state.version = self.state.version.saturating_add(1).max(now);
        self.state.expires_at_ms = now.saturating_add(self.ttl_ms);
        self.forget_built();
    }

    /// Moves on to `snapshot` at `revision`, which `changes` brought the
    /// published snapshot to; `None` if they are not known (deltas then
    /// start again from here).
    pub fn advance(
        &mut self,
        revision: u64,
        snapshot: impl Into<PublishedSnapshot>,
        changes: Option<SnapshotChanges>,
    ) {
        let snapshot = snapshot.into();
        let sha256 = snapshot.sha256();
        if revision == self.state.revision && sha256 == self.state.snapshot_sha256 {
            return;
        }
        match changes {
            Some(changes) if revision > self.state.revision => {
                self.step_rows += changes.rows();
                self.steps.push_back(Step {
                    base: Base {
                        revision: self.state.revision,
                        sha256: self.state.snapshot_sha256.clone(),
                    },
                    changes,
                });
                while self.steps.len() > MAX_STEPS || self.step_rows > MAX_STEP_ROWS {
                    match self.steps.pop_front() {
                        Some(step) => self.step_rows -= step.changes.rows(),
                        None => break,
                    }
                }
            }
            _ => {
                self.steps.clear();
                self.step_rows = 0;
            }
        }
        self.state.revision = revision;
        self.state.snapshot = snapshot;
        self.state.snapshot_sha256 = sha256;
        self.state.published_at_ms = now_ms();
        self.new_version();
    }

    /// Publishes `module` with the current snapshot.
    pub fn set_module(&mut self, module: Arc<[u8]>) {
        let sha256 = sha256_hex(&module);
        if sha256 == self.state.module_sha256 {
            return;
        }
        self.state.module = module;
        self.state.module_sha256 = sha256;
        self.state.published_at_ms = now_ms();
        self.new_version();
    }

    fn forget_built(&mut self) {
        self.full = None;
        self.deltas.clear();
    }

    /// The bundle that brings a gateway holding `have` (nothing, if
    /// `None`) to the published state. It fails only if a decoded snapshot
    /// cannot be encoded for a full bundle.
    pub fn bundle(&mut self, have: Option<Have<'_>>) -> Result<Built> {
        let Some(have) = have else {
            return self.full();
        };
        match self.delta(have) {
            Ok(built) => Ok(built),
            Err(why) => Ok(Built {
                why_full: Some(why),
                ..self.full()?
            }),
        }
    }

    /// The full bundle, with the module.
    pub fn full(&mut self) -> Result<Built> {
        if let Some(full) = &self.full {
            return Ok(full.clone());
        }
        let snapshot = self.state.snapshot.bytes()?;
        let manifest = self.manifest(Kind::Full, None, None, true);
        let bytes = seal(&manifest, &self.key, &[&snapshot, &self.state.module]);
        let built = Built {
            kind: Kind::Full,
            bytes: Arc::from(bytes),
            why_full: None,
        };
        self.full = Some(built.clone());
        Ok(built)
    }

    fn delta(&mut self, have: Have<'_>) -> Result<Built, &'static str> {
        let from = if have.revision == self.state.revision {
            if have.snapshot != self.state.snapshot_sha256 {
                return Err("another snapshot at the published revision");
            }
            self.steps.len()
        } else {
            self.steps
                .iter()
                .position(|step| {
                    step.base.revision == have.revision && step.base.sha256 == have.snapshot
                })
                .ok_or("no changes held from that state")?
        };
        let with_module = have.module != self.state.module_sha256;
        if let Some(built) = self.deltas.get(&(have.revision, with_module)) {
            return Ok(built.clone());
        }
        let mut changes = SnapshotChanges::default();
        for step in self.steps.range(from..) {
            changes.then(step.changes.clone());
        }
        let delta = crate::format::encode_delta(&changes);
        if delta.len() > self.state.snapshot.len() / 2 {
            return Err("the delta is larger than half the snapshot");
        }
        let base = Base {
            revision: have.revision,
            sha256: have.snapshot.to_owned(),
        };
        let part = Part {
            sha256: sha256_hex(&delta),
            bytes: delta.len() as u64,
        };
        let manifest = self.manifest(Kind::Delta, Some(base), Some(part), with_module);
        let module: &[u8] = if with_module { &self.state.module } else { &[] };
        let bytes = seal(&manifest, &self.key, &[&delta, module]);
        let built = Built {
            kind: Kind::Delta,
            bytes: Arc::from(bytes),
            why_full: None,
        };
        self.deltas
            .insert((have.revision, with_module), built.clone());
        Ok(built)
    }

    fn manifest(
        &self,
        kind: Kind,
        base: Option<Base>,
        delta: Option<Part>,
        with_module: bool,
    ) -> Manifest {
        Manifest {
            kind,
            version: self.state.version,
            expires_at_ms: self.state.expires_at_ms,
            revision: self.state.revision,
            published_at_ms: self.state.published_at_ms,
            signer: self.signer.clone(),
            snapshot: Part {
                sha256: self.state.snapshot_sha256.clone(),
                bytes: self.state.snapshot.len() as u64,
            },
            base,
            delta,
            module: ModulePart {
                sha256: self.state.module_sha256.clone(),
                bytes: self.state.module.len() as u64,
                included: with_module,
            },
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
