//! The gateway's side: which bundles it accepts, and the state it holds.
//!
//! [`Follower::prepare`] checks a bundle against the held state without
//! changing it: signature and digests ([`open`]), no rollback, a delta's
//! base is the held state, and a delta applied to the held snapshot gives
//! exactly the signed resulting digest. The caller then swaps the result
//! into its live policy (which may still refuse the module) and only then
//! [`Follower::commit`]s it, so a refused bundle leaves nothing changed.

use std::path::Path;
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use keyscope_policy::Snapshot;
use keyscope_policy::delta::DeltaPlan;

use crate::error::{BundleError, Result};
use crate::format::{Layout, Manifest, open};

/// A gateway's accepted state.
#[derive(Debug)]
struct Held {
    manifest: Manifest,
    /// The bundle's magic, manifest and signature, for the cache.
    signed: Vec<u8>,
    kept: Snapshot,
    module: Arc<[u8]>,
}

/// A bundle that passed every check, not yet live.
#[derive(Debug)]
pub struct Candidate {
    /// Its manifest.
    pub manifest: Manifest,
    /// The resulting snapshot of a full bundle (or a cache); empty for a
    /// delta ([`Candidate::delta`]) and a [`Candidate::renews`].
    pub snapshot: Vec<u8>,
    /// A delta bundle's changes as a contract delta, from the held
    /// snapshot to the signed result: what the policy instances apply.
    pub delta: Option<Vec<u8>>,
    /// The module, if it differs from the held one (or none is held).
    pub module: Option<Arc<[u8]>>,
    signed: Vec<u8>,
    /// `None` for a renewal: the held state stays.
    next: Option<Next>,
}

/// The state a candidate brings.
#[derive(Debug)]
enum Next {
    Full(Snapshot),
    Delta(DeltaPlan),
}

impl Candidate {
    /// Whether it only re-signs the held state, at a newer version and
    /// expiry: nothing to swap, only to hold and cache.
    pub fn renews(&self) -> bool {
        self.next.is_none()
    }
}

/// Follows a control plane's bundles, trusting one key, or two while its
/// signing key is rotated.
#[derive(Debug)]
pub struct Follower {
    trusted: Vec<VerifyingKey>,
    held: Option<Held>,
}

impl Follower {
    /// Trusts bundles signed by any of `trusted`; holds nothing yet.
    pub fn new(trusted: impl Into<Vec<VerifyingKey>>) -> Self {
        Self {
            trusted: trusted.into(),
            held: None,
        }
    }

    /// The manifest of the state held, if any.
    pub fn held(&self) -> Option<&Manifest> {
        self.held.as_ref().map(|held| &held.manifest)
    }

    /// Checks `bytes` (a served bundle or a cache, as `layout` says)
    /// against the held state at `now_ms`: the state it brings (or a new
    /// signature of the held one), or `None` if it is the bundle held.
    ///
    /// Refused: a served bundle whose signature expired, a version older
    /// than the one held, and another state at the held version (TUF's
    /// rollback and mix-and-match). A module change moves the version as a
    /// data change does, so an older module is a rollback too.
    ///
    /// A cache is the gateway's own last good state: past its expiry it is
    /// still taken, so that a gateway restarted through a long outage of
    /// its control plane serves what it held (fail static), and says it is
    /// stale.
    pub fn prepare(&self, bytes: &[u8], layout: Layout, now_ms: u64) -> Result<Option<Candidate>> {
        let opened = open(bytes, self.trusted.as_slice(), layout)?;
        let manifest = opened.manifest;
        if layout == Layout::Served && manifest.expires_at_ms <= now_ms {
            return Err(BundleError::Expired {
                expired_at_ms: manifest.expires_at_ms,
                ago_s: (now_ms - manifest.expires_at_ms) / 1000,
            });
        }
        if let Some(held) = &self.held {
            let h = &held.manifest;
            let same_state = manifest.same_state(h);
            if manifest.version == h.version && same_state {
                return Ok(None);
            }
            if manifest.version <= h.version || manifest.revision < h.revision {
                return Err(BundleError::Rollback {
                    offered: manifest.version,
                    offered_revision: manifest.revision,
                    held: h.version,
                    held_revision: h.revision,
                });
            }
            if same_state {
                return Ok(Some(Candidate {
                    manifest,
                    snapshot: Vec::new(),
                    delta: None,
                    module: None,
                    signed: opened.signed.to_vec(),
                    next: None,
                }));
            }
        }
        let (next, snapshot, delta) = match (opened.snapshot, opened.delta) {
            (Some(snapshot), _) => {
                let kept = Snapshot::decode(snapshot)?;
                let encoded = kept.to_bytes()?;
                if encoded != snapshot {
                    return Err(BundleError::Malformed(
                        "the snapshot is not in keyscope's canonical encoding, so deltas could \
                         not apply to it"
                            .into(),
                    ));
                }
                (Next::Full(kept), encoded, None)
            }
            (None, Some(changes)) => {
                let base = manifest
                    .base
                    .as_ref()
                    .ok_or_else(|| BundleError::Malformed("a delta without its base".into()))?;
                let held = self
                    .held
                    .as_ref()
                    .filter(|held| {
                        held.manifest.revision == base.revision
                            && held.manifest.snapshot.sha256 == base.sha256
                    })
                    .ok_or_else(|| BundleError::WrongBase {
                        base: base.revision,
                        base_digest: short(&base.sha256),
                        held: self.held().map_or(0, |m| m.revision),
                        held_digest: self
                            .held()
                            .map_or_else(|| "nothing".to_owned(), |m| short(&m.snapshot.sha256)),
                    })?;
                // Planned on the held snapshot: only the pages it touches
                // are hashed, and nothing changes until it is committed.
                let delta = held.kept.delta_for(&changes)?;
                let found = hex::encode(delta.plan.info().digest);
                if found != manifest.snapshot.sha256 {
                    return Err(BundleError::DeltaMismatch {
                        found: short(&found),
                        signed: short(&manifest.snapshot.sha256),
                    });
                }
                (Next::Delta(delta.plan), Vec::new(), Some(delta.bytes))
            }
            (None, None) => return Err(BundleError::Malformed("no snapshot and no delta".into())),
        };
        let module = match opened.module {
            Some(module) => Some(Arc::from(module)),
            None if self
                .held
                .as_ref()
                .is_some_and(|held| held.manifest.module.sha256 == manifest.module.sha256) =>
            {
                None
            }
            None => {
                return Err(BundleError::Malformed(
                    "the bundle names a module it does not carry, and another is held".into(),
                ));
            }
        };
        Ok(Some(Candidate {
            manifest,
            snapshot,
            delta,
            module,
            signed: opened.signed.to_vec(),
            next: Some(next),
        }))
    }

    /// The whole snapshot `candidate` brings: a full bundle's own, or the
    /// held one with the delta applied (a copy: for a policy that will not
    /// take the delta, and for a module swap).
    pub fn snapshot_of(&self, candidate: &Candidate) -> Result<Vec<u8>> {
        match (&candidate.delta, &self.held) {
            (Some(delta), Some(held)) => {
                let mut next = held.kept.clone();
                next.apply_delta(delta)
                    .map_err(|e| BundleError::Malformed(e.to_string()))?;
                Ok(next.to_bytes()?)
            }
            _ => Ok(candidate.snapshot.clone()),
        }
    }

    /// The held snapshot's bytes, if one is held.
    pub fn held_snapshot(&self) -> Result<Option<Vec<u8>>> {
        self.held
            .as_ref()
            .map(|held| held.kept.to_bytes().map_err(BundleError::from))
            .transpose()
    }

    /// Holds `candidate`, which is now live. Returns the module now held.
    pub fn commit(&mut self, candidate: Candidate) -> Arc<[u8]> {
        let (kept, held_module) = match (candidate.next, self.held.take()) {
            (Some(Next::Full(kept)), held) => (kept, held.map(|held| held.module)),
            (Some(Next::Delta(plan)), Some(mut held)) => {
                // prepare() planned it on this very snapshot.
                if held.kept.commit(plan).is_err() {
                    self.held = Some(held);
                    return Arc::from(Vec::new());
                }
                (held.kept, Some(held.module))
            }
            // A renewal keeps the held state.
            (None, Some(held)) => (held.kept, Some(held.module)),
            // prepare() renews only a held state, and deltas only apply to one.
            (_, None) => return Arc::from(Vec::new()),
        };
        // prepare() refuses a bundle without a module when none is held.
        let module = candidate
            .module
            .or(held_module)
            .unwrap_or_else(|| Arc::from(Vec::new()));
        self.held = Some(Held {
            manifest: candidate.manifest,
            signed: candidate.signed,
            kept,
            module: Arc::clone(&module),
        });
        module
    }

    /// Writes the held state to `path` as a cache that verifies as the
    /// bundle did: see [`CacheImage::write`].
    pub fn write_cache(&self, path: &Path) -> Result<()> {
        self.cache_image().map_or(Ok(()), |image| image.write(path))
    }

    /// The held state as a cache will hold it, to write later or
    /// elsewhere: a copy that shares the held snapshot's records.
    pub fn cache_image(&self) -> Option<CacheImage> {
        self.held.as_ref().map(|held| CacheImage {
            revision: held.manifest.revision,
            signed: held.signed.clone(),
            kept: held.kept.clone(),
            module: Arc::clone(&held.module),
        })
    }
}

/// A held state to write as the bundle cache ([`Follower::cache_image`]).
#[derive(Debug, Clone)]
pub struct CacheImage {
    revision: u64,
    signed: Vec<u8>,
    kept: Snapshot,
    module: Arc<[u8]>,
}

impl CacheImage {
    /// The revision it holds.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Writes it to `path` as a cache that verifies as the bundle did: the
    /// signed manifest, the snapshot and the module. The snapshot is
    /// encoded here, which is linear in the world. Atomic: a temporary
    /// file, fsync, rename, fsync of the directory.
    pub fn write(&self, path: &Path) -> Result<()> {
        let snapshot = self.kept.to_bytes()?;
        crate::cache::write_atomically(path, &[&self.signed, &snapshot, &self.module])
    }
}

fn short(hex: &str) -> String {
    hex.get(..16).unwrap_or(hex).to_owned()
}
