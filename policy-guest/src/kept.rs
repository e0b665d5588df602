//! The changes a store makes to a snapshot's contents, as a fleet's delta
//! bundles carry them. [`crate::delta`] turns them into the contract's
//! binary delta.

use crate::routes::RouteEntry;
use crate::snapshot::{KeyEntry, OperationEntry, ScopeEntry};

/// A store's changes to a snapshot's contents. A fleet's delta bundles
/// carry these (as JSON); a host turns them into a contract delta
/// ([`crate::snapshot::Snapshot::delta_for`]) for its policy instances.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotChanges {
    /// Scopes by id: `Some` to create or replace, `None` to delete.
    pub scopes: Vec<(u64, Option<ScopeEntry>)>,
    /// Keys in their new state, created or changed (matched by digest).
    pub keys: Vec<KeyEntry>,
    /// The whole catalogue and route table, if either changed.
    pub catalogue: Option<(Vec<OperationEntry>, Vec<RouteEntry>)>,
}

impl SnapshotChanges {
    /// How many rows these changes carry.
    pub fn rows(&self) -> usize {
        self.scopes.len()
            + self.keys.len()
            + self
                .catalogue
                .as_ref()
                .map_or(0, |(ops, routes)| ops.len() + routes.len())
    }

    /// Folds `later` (the changes after these) into these: the result
    /// brings a snapshot to the same state as applying both in turn. A key
    /// changed twice is carried once, in its later state.
    pub fn then(&mut self, later: SnapshotChanges) {
        self.scopes.extend(later.scopes);
        if !later.keys.is_empty() {
            let mut keys = std::mem::take(&mut self.keys);
            keys.extend(later.keys);
            // Stable, so the later of two states of one key stays last.
            keys.sort_by_key(|key| key.digest);
            let mut kept: Vec<KeyEntry> = Vec::with_capacity(keys.len());
            for key in keys {
                match kept.last_mut() {
                    Some(last) if last.digest == key.digest => *last = key,
                    _ => kept.push(key),
                }
            }
            self.keys = kept;
        }
        if later.catalogue.is_some() {
            self.catalogue = later.catalogue;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::DeltaError;
    use crate::model::{AgentsLevel, KeyDigest, RuntimeSet};
    use crate::routes::default_routes;
    use crate::snapshot::{Snapshot, SnapshotData, default_operations};

    /// A small deterministic generator: the test needs variety, not
    /// cryptographic randomness.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn scope(id: u64, rng: &mut Rng) -> ScopeEntry {
        ScopeEntry {
            id,
            app: format!("app{}", rng.below(3)),
            agents: [
                AgentsLevel::None,
                AgentsLevel::View,
                AgentsLevel::Edit,
                AgentsLevel::Full,
            ][rng.below(4) as usize],
            runtime: RuntimeSet::from_bits(rng.below(16) as u8).unwrap_or(RuntimeSet::EMPTY),
        }
    }

    fn key(id: u64, scope_id: u64, rng: &mut Rng) -> KeyEntry {
        let mut digest = [0u8; 32];
        for chunk in digest.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes());
        }
        KeyEntry {
            digest: KeyDigest(digest),
            id,
            scope_id,
            revoked: false,
            not_after: (rng.below(4) == 0).then(|| rng.below(1 << 40)),
        }
    }

    #[test]
    fn deltas_give_the_bytes_root_and_decisions_of_a_whole_rebuild() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut data = SnapshotData {
            operations: default_operations(),
            scopes: (1..=5).map(|id| scope(id, &mut rng)).collect(),
            keys: Vec::new(),
            routes: default_routes(),
        };
        data.keys = (1..=50).map(|id| key(id, 1 + id % 5, &mut rng)).collect();
        // The host's copy makes each delta; a second copy, loaded from the
        // bytes as a policy instance would, applies them; a third takes the
        // changes folded into one every few rounds, as a delta bundle
        // carries them.
        let mut kept = Snapshot::from_data(&data).unwrap();
        let mut loaded = Snapshot::decode(&data.encode().unwrap()).unwrap();
        let mut behind = kept.clone();
        let mut folded = SnapshotChanges::default();
        let (mut next_scope, mut next_key) = (6, 51);
        for round in 0..200 {
            let mut changes = SnapshotChanges::default();
            let mut deleted = Vec::new();
            for _ in 0..=rng.below(4) {
                match rng.below(6) {
                    // A new scope, with the highest id.
                    0 => {
                        let s = scope(next_scope, &mut rng);
                        next_scope += 1;
                        changes.scopes.push((s.id, Some(s)));
                    }
                    // A scope changed.
                    1 if !data.scopes.is_empty() => {
                        let i = rng.below(data.scopes.len() as u64) as usize;
                        if !deleted.contains(&data.scopes[i].id) {
                            let s = scope(data.scopes[i].id, &mut rng);
                            changes.scopes.push((s.id, Some(s)));
                        }
                    }
                    // A scope deleted, its keys revoked with it.
                    2 if data.scopes.len() > 1 => {
                        let i = rng.below(data.scopes.len() as u64) as usize;
                        let id = data.scopes[i].id;
                        changes.scopes.retain(|(s, _)| *s != id);
                        changes.scopes.push((id, None));
                        deleted.push(id);
                        for k in changes.keys.iter_mut().filter(|k| k.scope_id == id) {
                            k.revoked = true;
                        }
                        for k in data.keys.iter().filter(|k| k.scope_id == id && !k.revoked) {
                            changes.keys.push(KeyEntry {
                                revoked: true,
                                ..k.clone()
                            });
                        }
                    }
                    // A key revoked.
                    3 if !data.keys.is_empty() => {
                        let i = rng.below(data.keys.len() as u64) as usize;
                        changes.keys.push(KeyEntry {
                            revoked: true,
                            ..data.keys[i].clone()
                        });
                    }
                    // A catalogue change.
                    4 => {
                        let mut routes = default_routes();
                        routes.truncate(rng.below(routes.len() as u64) as usize);
                        changes.catalogue = Some((default_operations(), routes));
                    }
                    // New keys in live scopes.
                    _ if !data.scopes.is_empty() => {
                        for _ in 0..=rng.below(3) {
                            let i = rng.below(data.scopes.len() as u64) as usize;
                            if !deleted.contains(&data.scopes[i].id) {
                                changes
                                    .keys
                                    .push(key(next_key, data.scopes[i].id, &mut rng));
                                next_key += 1;
                            }
                        }
                    }
                    _ => {}
                }
            }
            // Later changes to the same row win, as in one revision.
            changes.scopes.reverse();
            changes.scopes.sort_by_key(|(id, _)| *id);
            changes.scopes.dedup_by_key(|(id, _)| *id);
            changes.keys.reverse();
            changes.keys.sort_by_key(|k| k.id);
            changes.keys.dedup_by_key(|k| k.id);
            // The reference: the contents changed, encoded whole.
            for (id, s) in &changes.scopes {
                data.scopes.retain(|x| x.id != *id);
                if let Some(s) = s {
                    data.scopes.push(s.clone());
                }
            }
            for k in &changes.keys {
                data.keys.retain(|x| x.id != k.id);
                data.keys.push(k.clone());
            }
            if let Some((ops, routes)) = &changes.catalogue {
                data.operations = ops.clone();
                data.routes = routes.clone();
            }
            let whole = data.encode().unwrap();
            folded.then(changes.clone());
            let delta = kept.delta_for(&changes).unwrap();
            kept.commit(delta.plan).unwrap();
            assert_eq!(kept.to_bytes().unwrap(), whole, "round {round}");
            let info = loaded.apply_delta(&delta.bytes).unwrap().clone();
            assert_eq!(info, *Snapshot::decode(&whole).unwrap().info());
            assert_eq!(loaded.to_bytes().unwrap(), whole);
            // Applied again: not its base (unless it changed nothing).
            if delta.bytes[16..48] != delta.bytes[48..80] {
                assert_eq!(
                    loaded.apply_delta(&delta.bytes).unwrap_err(),
                    DeltaError::BaseMismatch
                );
            }
            if round % 7 == 6 {
                let caught_up = behind.delta_for(&std::mem::take(&mut folded)).unwrap();
                behind.commit(caught_up.plan).unwrap();
                assert_eq!(
                    behind.to_bytes().unwrap(),
                    whole,
                    "folded up to round {round}"
                );
            }
            // The same decisions as the snapshot built whole.
            let rebuilt = Snapshot::decode(&whole).unwrap();
            for key in &data.keys {
                assert_eq!(loaded.key(&key.digest), rebuilt.key(&key.digest));
                let (a, b) = (
                    loaded.key(&key.digest).unwrap(),
                    rebuilt.key(&key.digest).unwrap(),
                );
                assert_eq!(loaded.scope_of(&a), rebuilt.scope_of(&b));
            }
        }
        assert!(kept.info().keys > 50);
    }

    #[test]
    fn a_change_that_breaks_the_snapshot_changes_nothing() {
        let mut rng = Rng(7);
        let data = SnapshotData {
            operations: default_operations(),
            scopes: vec![scope(1, &mut rng)],
            keys: vec![key(1, 1, &mut rng)],
            routes: default_routes(),
        };
        let kept = Snapshot::from_data(&data).unwrap();
        let before = kept.to_bytes().unwrap();
        let orphan = SnapshotChanges {
            keys: vec![key(2, 9, &mut rng)],
            ..SnapshotChanges::default()
        };
        assert!(kept.delta_for(&orphan).is_err(), "a live key of no scope");
        let twin = SnapshotChanges {
            keys: vec![KeyEntry {
                id: 3,
                ..data.keys[0].clone()
            }],
            ..SnapshotChanges::default()
        };
        assert!(
            kept.delta_for(&twin).is_err(),
            "a second key with one digest"
        );
        let orphaned = SnapshotChanges {
            scopes: vec![(1, None)],
            ..SnapshotChanges::default()
        };
        let refused = kept.delta_for(&orphaned).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("scope 1 is deleted while 1 live keys"),
            "{refused}"
        );
        let misfiled = SnapshotChanges {
            scopes: vec![(2, Some(scope(1, &mut rng)))],
            ..SnapshotChanges::default()
        };
        let refused = kept.delta_for(&misfiled).unwrap_err();
        assert!(
            format!("{refused:?}").contains("scope 2 carries scope 1"),
            "{refused:?}"
        );
        assert_eq!(kept.to_bytes().unwrap(), before);
        let empty = kept.delta_for(&SnapshotChanges::default()).unwrap();
        assert_eq!(empty.plan.info().digest, kept.info().digest);
    }
}
