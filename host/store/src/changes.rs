//! Change revisions: every change to what a snapshot holds commits under a
//! new, higher revision, so that a builder holding the snapshot of revision
//! R can ask for the rows changed since R and apply them, instead of
//! reading the whole store again.
//!
//! Writers take the revision first, under the store's write lock, so
//! revisions commit in order: a reader that has seen revision R has seen
//! every change up to R, and none is committed later with a lower one.
//! Scopes and keys carry the revision of their last change; deletions are
//! tombstones, so they show up as changes too. The operation catalogue
//! and the route table are small and come whole when either changed.

use keyscope_policy::RouteEntry;
use keyscope_policy::snapshot::{KeyEntry, OperationEntry, ScopeEntry, SnapshotData};

/// A store's state as of one revision.
#[derive(Debug, Clone)]
pub struct Revisioned<T> {
    /// The revision: the number of changes to the snapshot's contents ever
    /// committed to this store.
    pub revision: u64,
    /// The state.
    pub data: T,
}

/// A scope as a change carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeChange {
    /// Created or changed: its new state.
    Live(ScopeEntry),
    /// Deleted.
    Deleted(u64),
}

/// What changed after one revision, up to [`Changes::revision`].
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// The revision these changes bring a snapshot to.
    pub revision: u64,
    /// Scopes created, changed or deleted, by id.
    pub scopes: Vec<ScopeChange>,
    /// Keys created or revoked (or of a deleted scope), by id, in their new
    /// state.
    pub keys: Vec<KeyEntry>,
    /// The whole catalogue and route table, if either changed.
    pub catalogue: Option<(Vec<OperationEntry>, Vec<RouteEntry>)>,
}

impl Changes {
    /// How many rows these changes carry.
    pub fn len(&self) -> usize {
        self.scopes.len()
            + self.keys.len()
            + self
                .catalogue
                .as_ref()
                .map_or(0, |(ops, routes)| ops.len() + routes.len())
    }

    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Brings `data` (a snapshot's contents, scopes and keys ordered by id,
    /// as the store reads them) up to these changes.
    pub fn apply(self, data: &mut SnapshotData) {
        for change in self.scopes {
            let id = match &change {
                ScopeChange::Live(scope) => scope.id,
                ScopeChange::Deleted(id) => *id,
            };
            let at = data.scopes.binary_search_by_key(&id, |scope| scope.id);
            match (change, at) {
                (ScopeChange::Live(scope), Ok(i)) => data.scopes[i] = scope,
                (ScopeChange::Live(scope), Err(i)) => data.scopes.insert(i, scope),
                (ScopeChange::Deleted(_), Ok(i)) => {
                    data.scopes.remove(i);
                }
                (ScopeChange::Deleted(_), Err(_)) => {}
            }
        }
        // New keys have the highest ids: appending is the common case.
        for key in self.keys {
            match data.keys.binary_search_by_key(&key.id, |k| k.id) {
                Ok(i) => data.keys[i] = key,
                Err(i) => data.keys.insert(i, key),
            }
        }
        if let Some((operations, routes)) = self.catalogue {
            data.operations = operations;
            data.routes = routes;
        }
    }
}

#[cfg(test)]
mod tests {
    use keyscope_policy::{AgentsLevel, KeyDigest, RuntimeSet};

    use super::*;

    fn scope(id: u64, agents: AgentsLevel) -> ScopeEntry {
        ScopeEntry {
            id,
            app: "acme".to_owned(),
            agents,
            runtime: RuntimeSet::EMPTY,
        }
    }

    fn key(id: u64, revoked: bool) -> KeyEntry {
        KeyEntry {
            digest: KeyDigest([id as u8; 32]),
            id,
            scope_id: 1,
            revoked,
            not_after: None,
        }
    }

    #[test]
    fn changes_upsert_and_delete_in_id_order() {
        let mut data = SnapshotData {
            operations: Vec::new(),
            scopes: vec![scope(1, AgentsLevel::View), scope(3, AgentsLevel::View)],
            keys: vec![key(1, false), key(4, false)],
            routes: Vec::new(),
        };
        Changes {
            revision: 9,
            scopes: vec![
                ScopeChange::Live(scope(2, AgentsLevel::Full)),
                ScopeChange::Live(scope(3, AgentsLevel::Edit)),
                ScopeChange::Deleted(1),
                ScopeChange::Deleted(7),
            ],
            keys: vec![key(1, true), key(2, false), key(5, false)],
            catalogue: None,
        }
        .apply(&mut data);
        assert_eq!(
            data.scopes,
            vec![scope(2, AgentsLevel::Full), scope(3, AgentsLevel::Edit)]
        );
        let keys: Vec<(u64, bool)> = data.keys.iter().map(|k| (k.id, k.revoked)).collect();
        assert_eq!(keys, [(1, true), (2, false), (4, false), (5, false)]);
    }
}
