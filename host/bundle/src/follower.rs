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

use crate::error::{BundleError, Result};
use crate::format::{Layout, Manifest, open, snapshot_digest};

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
    /// The resulting snapshot; empty for a [`Candidate::renews`].
    pub snapshot: Vec<u8>,
    /// The module, if it differs from the held one (or none is held).
    pub module: Option<Arc<[u8]>>,
    signed: Vec<u8>,
    /// `None` for a renewal: the held state stays.
    kept: Option<Snapshot>,
}

impl Candidate {
    /// Whether it only re-signs the held state, at a newer version and
    /// expiry: nothing to swap, only to hold and cache.
    pub fn renews(&self) -> bool {
        self.kept.is_none()
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
                    module: None,
                    signed: opened.signed.to_vec(),
                    kept: None,
                }));
            }
        }
        let (kept, snapshot) = match (opened.snapshot, opened.delta) {
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
                (kept, encoded)
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
                let mut kept = held.kept.clone();
                let delta = kept.delta_for(&changes)?;
                kept.commit(delta.plan)
                    .map_err(|e| BundleError::Malformed(e.to_string()))?;
                let snapshot = kept.to_bytes()?;
                let found = snapshot_digest(&snapshot);
                if found != manifest.snapshot.sha256 {
                    return Err(BundleError::DeltaMismatch {
                        found: short(&found),
                        signed: short(&manifest.snapshot.sha256),
                    });
                }
                (kept, snapshot)
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
            module,
            signed: opened.signed.to_vec(),
            kept: Some(kept),
        }))
    }

    /// Holds `candidate`, which is now live. Returns the module now held.
    pub fn commit(&mut self, candidate: Candidate) -> Arc<[u8]> {
        let (kept, held_module) = match (candidate.kept, self.held.take()) {
            (Some(kept), held) => (kept, held.map(|held| held.module)),
            // A renewal keeps the held state.
            (None, Some(held)) => (held.kept, Some(held.module)),
            // prepare() renews only a held state.
            (None, None) => return Arc::from(Vec::new()),
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
    /// bundle did: the signed manifest, `snapshot` (the live one) and the
    /// module. Atomic: a temporary file, fsync, rename, fsync of the
    /// directory.
    pub fn write_cache(&self, path: &Path, snapshot: &[u8]) -> Result<()> {
        let Some(held) = &self.held else {
            return Ok(());
        };
        crate::cache::write_atomically(path, &[&held.signed, snapshot, &held.module])
    }
}

fn short(hex: &str) -> String {
    hex.get(..16).unwrap_or(hex).to_owned()
}
