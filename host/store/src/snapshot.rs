//! Building the immutable snapshot the policy decides on, from the store:
//! whole ([`build`]) or, for a server that keeps one up to date, by applying
//! the changes since the one it holds ([`Builder`]).

use keyscope_policy::Snapshot;
use keyscope_policy::kept::SnapshotChanges;

use crate::changes::{Changes, ScopeChange};
use crate::error::Result;
use crate::store::Store;

/// Reads the store in one transaction and encodes its snapshot.
pub fn build(store: &mut impl Store) -> Result<Vec<u8>> {
    Ok(store.snapshot_data()?.data.encode()?)
}

/// Keeps a snapshot up to date with a store: it reads only the rows
/// changed since the revision it holds and applies them to the snapshot it
/// keeps decoded ([`Snapshot`]) as a contract delta, so neither the store
/// nor the snapshot is gone through whole again.
#[derive(Debug)]
pub struct Builder {
    revision: u64,
    kept: Snapshot,
}

/// What [`Builder::update`] found.
#[derive(Debug)]
pub struct Update {
    /// The revision the snapshot is now at.
    pub revision: u64,
    /// How many changed rows were applied.
    pub rows: usize,
    /// The new snapshot's digest. The snapshot itself is
    /// [`Builder::snapshot`]: encoding it is linear in the world, so it is
    /// left to whoever needs it whole.
    pub digest: [u8; 32],
    /// The contract delta from the snapshot held before to this one: what
    /// the policy instances apply.
    pub delta: Vec<u8>,
    /// The changes applied: what a control plane sends its gateways as a
    /// delta.
    pub changes: SnapshotChanges,
}

impl Builder {
    /// Reads the whole store once; returns the builder and the snapshot.
    pub fn new(store: &mut impl Store) -> Result<(Self, Vec<u8>)> {
        let held = store.snapshot_data()?;
        let kept = Snapshot::from_data(&held.data)?;
        let snapshot = kept.to_bytes()?;
        Ok((
            Self {
                revision: held.revision,
                kept,
            },
            snapshot,
        ))
    }

    /// The snapshot held, decoded. A clone shares its key records.
    pub fn snapshot(&self) -> &Snapshot {
        &self.kept
    }

    /// The revision of the snapshot held.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The snapshot at the store's current revision, if that moved on: the
    /// rows changed since the held one, applied to it. Nothing is changed
    /// if reading or planning fails.
    pub fn update(&mut self, store: &mut impl Store) -> Result<Option<Update>> {
        if store.revision()? == self.revision {
            return Ok(None);
        }
        let changes = store.changes_since(self.revision)?;
        if changes.revision == self.revision {
            return Ok(None);
        }
        let revision = changes.revision;
        let rows = changes.len();
        let changes = snapshot_changes(changes);
        let delta = self.kept.delta_for(&changes)?;
        self.kept
            .commit(delta.plan)
            .map_err(|e| keyscope_policy::LoadError::Malformed(e.to_string()))?;
        self.revision = revision;
        Ok(Some(Update {
            revision,
            rows,
            digest: self.kept.info().digest,
            delta: delta.bytes,
            changes,
        }))
    }
}

/// A store's changes as the kept snapshot takes them.
fn snapshot_changes(changes: Changes) -> SnapshotChanges {
    SnapshotChanges {
        scopes: changes
            .scopes
            .into_iter()
            .map(|change| match change {
                ScopeChange::Live(scope) => (scope.id, Some(scope)),
                ScopeChange::Deleted(id) => (id, None),
            })
            .collect(),
        keys: changes.keys,
        catalogue: changes.catalogue,
    }
}
