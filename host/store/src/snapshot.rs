//! Building the immutable snapshot the policy decides on, from the store:
//! whole ([`build`]) or, for a server that keeps one up to date, by applying
//! the changes since the one it holds ([`Builder`]).

use keyscope_policy::snapshot::SnapshotData;

use crate::changes::Revisioned;
use crate::error::Result;
use crate::store::Store;

/// Reads the store in one transaction and encodes its snapshot.
pub fn build(store: &mut impl Store) -> Result<Vec<u8>> {
    Ok(store.snapshot_data()?.data.encode()?)
}

/// Keeps a snapshot's contents up to date with a store, reading only the
/// rows changed since the revision it holds.
#[derive(Debug)]
pub struct Builder {
    held: Revisioned<SnapshotData>,
}

/// What [`Builder::update`] found.
#[derive(Debug)]
pub struct Update {
    /// The revision the snapshot is now at.
    pub revision: u64,
    /// How many changed rows were applied.
    pub rows: usize,
    /// The new snapshot.
    pub snapshot: Vec<u8>,
}

impl Builder {
    /// Reads the whole store once; returns the builder and the snapshot.
    pub fn new(store: &mut impl Store) -> Result<(Self, Vec<u8>)> {
        let held = store.snapshot_data()?;
        let snapshot = held.data.encode()?;
        Ok((Self { held }, snapshot))
    }

    /// The revision of the snapshot held.
    pub fn revision(&self) -> u64 {
        self.held.revision
    }

    /// The snapshot at the store's current revision, if that moved on: the
    /// rows changed since the held one, applied to it. Nothing is changed
    /// if reading or encoding fails.
    pub fn update(&mut self, store: &mut impl Store) -> Result<Option<Update>> {
        if store.revision()? == self.held.revision {
            return Ok(None);
        }
        let changes = store.changes_since(self.held.revision)?;
        if changes.revision == self.held.revision {
            return Ok(None);
        }
        let revision = changes.revision;
        let rows = changes.len();
        let mut data = self.held.data.clone();
        changes.apply(&mut data);
        let snapshot = data.encode()?;
        self.held = Revisioned { revision, data };
        Ok(Some(Update {
            revision,
            rows,
            snapshot,
        }))
    }
}
