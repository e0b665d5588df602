//! A snapshot kept encoded, so that a change is applied to it rather than
//! the whole snapshot encoded again: what a server does on every change to
//! its store, at a million keys.
//!
//! [`KeptSnapshot`] holds the key records already sorted by digest. A
//! change replaces the records of the keys it names (a binary search each)
//! or merges new ones in (one pass), renumbers slots only if the slot table
//! moved, re-encodes the small sections, and hashes the result. The bytes
//! are exactly [`SnapshotData::encode`]'s for the changed contents (a test
//! holds it to that on random change sequences).

use crate::routes::RouteEntry;
use crate::snapshot::{
    KeyEntry, LoadError, OperationEntry, RECORD_LEN, ScopeEntry, SnapshotData, encode_head, finish,
    key_record, live_key_in_live_scope, named_scopes, record_order, slot_ids, slot_of,
    sort_records, validate_catalogue_and_scopes,
};

/// A snapshot's contents with its key records encoded and in order.
#[derive(Debug, Clone)]
pub struct KeptSnapshot {
    operations: Vec<OperationEntry>,
    /// Live scopes, by id.
    scopes: Vec<ScopeEntry>,
    routes: Vec<RouteEntry>,
    /// Scope ids keys name, sorted: keys are never removed, so this only
    /// grows.
    named: Vec<u64>,
    /// The slot table `records` are numbered by.
    slot_ids: Vec<u64>,
    /// Key records, by digest.
    records: Vec<[u8; RECORD_LEN]>,
}

/// Changes to apply to a [`KeptSnapshot`]. A fleet's delta bundles carry
/// these (serialised), so a gateway applies a change as its control plane
/// did.
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

impl KeptSnapshot {
    /// Checks and encodes `data`; the kept snapshot and its bytes.
    pub fn new(data: SnapshotData) -> Result<(Self, Vec<u8>), LoadError> {
        data.validate()?;
        let SnapshotData {
            operations,
            mut scopes,
            keys,
            routes,
        } = data;
        scopes.sort_unstable_by_key(|scope| scope.id);
        let named = named_scopes(keys.iter().map(|key| key.scope_id));
        let live: Vec<&ScopeEntry> = scopes.iter().collect();
        let slot_ids = slot_ids(&live, &named);
        let mut records: Vec<[u8; RECORD_LEN]> = keys
            .iter()
            .map(|key| key_record(key, slot_of(&slot_ids, key.scope_id)))
            .collect();
        sort_records(&mut records);
        let kept = Self {
            operations,
            scopes,
            routes,
            named,
            slot_ids,
            records,
        };
        let bytes = kept.bytes()?;
        Ok((kept, bytes))
    }

    /// How many keys it holds.
    pub fn keys(&self) -> usize {
        self.records.len()
    }

    /// Applies `changes` and returns the new snapshot's bytes. If the
    /// changed contents would not make a valid snapshot, nothing changes
    /// and the error says why.
    pub fn apply(&mut self, changes: SnapshotChanges) -> Result<Vec<u8>, LoadError> {
        // The small parts first, on copies: every check happens before the
        // records are touched.
        let mut scopes = self.scopes.clone();
        for (id, scope) in changes.scopes {
            if let Some(scope) = scope.as_ref().filter(|scope| scope.id != id) {
                return Err(LoadError::Malformed(format!(
                    "a change to scope {id} carries scope {}",
                    scope.id
                )));
            }
            match (scopes.binary_search_by_key(&id, |s| s.id), scope) {
                (Ok(i), Some(scope)) => scopes[i] = scope,
                (Err(i), Some(scope)) => scopes.insert(i, scope),
                (Ok(i), None) => {
                    scopes.remove(i);
                }
                (Err(_), None) => {}
            }
        }
        let (operations, routes) = changes
            .catalogue
            .unwrap_or_else(|| (self.operations.clone(), self.routes.clone()));
        let scope_ids = validate_catalogue_and_scopes(&operations, &routes, &scopes)?;
        let mut named = self.named.clone();
        named.extend(changes.keys.iter().map(|key| key.scope_id));
        let named = named_scopes(named.into_iter());
        let live: Vec<&ScopeEntry> = scopes.iter().collect();
        let slot_ids = slot_ids(&live, &named);
        let head = encode_head(&operations, &live, &routes, &slot_ids)?;
        let mut updates: Vec<[u8; RECORD_LEN]> = Vec::with_capacity(changes.keys.len());
        for key in &changes.keys {
            live_key_in_live_scope(key, &scope_ids)?;
            updates.push(key_record(key, slot_of(&slot_ids, key.scope_id)));
        }
        sort_records(&mut updates);
        if let Some(pair) = updates
            .windows(2)
            .find(|pair| pair[0][..32] == pair[1][..32])
        {
            return Err(LoadError::Malformed(format!(
                "key {} has the digest of another key",
                id_of(&pair[1])
            )));
        }
        for update in &updates {
            if let Ok(i) = self.records.binary_search_by(|r| record_order(r, update))
                && self.records[i][32..40] != update[32..40]
            {
                return Err(LoadError::Malformed(format!(
                    "key {} has the digest of another key",
                    id_of(update)
                )));
            }
        }

        // Nothing can fail from here on.
        if slot_ids != self.slot_ids {
            renumber(&mut self.records, &self.slot_ids, &slot_ids);
        }
        let mut new = Vec::new();
        for update in updates {
            match self.records.binary_search_by(|r| record_order(r, &update)) {
                Ok(i) => self.records[i] = update,
                Err(_) => new.push(update),
            }
        }
        if !new.is_empty() {
            self.records = merge(std::mem::take(&mut self.records), new);
        }
        drop(live);
        self.operations = operations;
        self.scopes = scopes;
        self.routes = routes;
        self.named = named;
        self.slot_ids = slot_ids;
        finish(head, &self.records)
    }

    fn bytes(&self) -> Result<Vec<u8>, LoadError> {
        let live: Vec<&ScopeEntry> = self.scopes.iter().collect();
        let head = encode_head(&self.operations, &live, &self.routes, &self.slot_ids)?;
        finish(head, &self.records)
    }
}

/// A record's key id.
fn id_of(record: &[u8; RECORD_LEN]) -> u64 {
    let mut id = [0u8; 8];
    id.copy_from_slice(&record[32..40]);
    u64::from_le_bytes(id)
}

/// Renumbers every record's slot from the `old` slot table to the `new`
/// one. Every slot a record uses is in both: records only name scopes that
/// keys name, and those stay in the table.
fn renumber(records: &mut [[u8; RECORD_LEN]], old: &[u64], new: &[u64]) {
    let map: Vec<u32> = old.iter().map(|id| slot_of(new, *id)).collect();
    for record in records {
        let mut slot = [0u8; 4];
        slot.copy_from_slice(&record[48..52]);
        let slot = u32::from_le_bytes(slot) as usize;
        if let Some(to) = map.get(slot) {
            record[48..52].copy_from_slice(&to.to_le_bytes());
        }
    }
}

/// Merges sorted `new` records (none already present) into sorted `old`.
fn merge(old: Vec<[u8; RECORD_LEN]>, mut new: Vec<[u8; RECORD_LEN]>) -> Vec<[u8; RECORD_LEN]> {
    sort_records(&mut new);
    let mut merged = Vec::with_capacity(old.len() + new.len());
    let mut new = new.into_iter().peekable();
    for record in old {
        while let Some(next) = new.next_if(|n| record_order(n, &record).is_lt()) {
            merged.push(next);
        }
        merged.push(record);
    }
    merged.extend(new);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AgentsLevel, KeyDigest, RuntimeSet};
    use crate::routes::default_routes;
    use crate::snapshot::default_operations;

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
    fn applied_changes_encode_as_the_whole_does() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut data = SnapshotData {
            operations: default_operations(),
            scopes: (1..=5).map(|id| scope(id, &mut rng)).collect(),
            keys: Vec::new(),
            routes: default_routes(),
        };
        data.keys = (1..=50).map(|id| key(id, 1 + id % 5, &mut rng)).collect();
        let (mut kept, bytes) = KeptSnapshot::new(data.clone()).unwrap();
        assert_eq!(bytes, data.encode().unwrap());
        // A second copy takes the same changes folded into one every few
        // rounds, as a delta bundle carries them.
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
            let applied = kept.apply(changes).unwrap();
            assert_eq!(applied, whole, "round {round}");
            if round % 7 == 6 {
                let caught_up = behind.apply(std::mem::take(&mut folded)).unwrap();
                assert_eq!(caught_up, whole, "folded up to round {round}");
            }
        }
        assert!(kept.keys() > 50);
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
        let (mut kept, before) = KeptSnapshot::new(data.clone()).unwrap();
        let orphan = SnapshotChanges {
            keys: vec![key(2, 9, &mut rng)],
            ..SnapshotChanges::default()
        };
        assert!(kept.apply(orphan).is_err(), "a live key of no scope");
        let twin = SnapshotChanges {
            keys: vec![KeyEntry {
                id: 3,
                ..data.keys[0].clone()
            }],
            ..SnapshotChanges::default()
        };
        assert!(kept.apply(twin).is_err(), "a second key with one digest");
        let misfiled = SnapshotChanges {
            scopes: vec![(2, Some(scope(1, &mut rng)))],
            ..SnapshotChanges::default()
        };
        let refused = kept.apply(misfiled).unwrap_err();
        assert!(
            format!("{refused:?}").contains("scope 2 carries scope 1"),
            "{refused:?}"
        );
        assert_eq!(kept.apply(SnapshotChanges::default()).unwrap(), before);
    }
}
