//! Fixtures shared by the benches: a synthetic store-shaped world.

use keyscope::{AgentsLevel, KeyDigest, KeySecret, RuntimeSet};
use keyscope_policy::snapshot::{KeyEntry, ScopeEntry, SnapshotData, default_operations};
use sha2::{Digest as _, Sha256};

/// Scopes in the synthetic world.
pub const SCOPES: u64 = 20;
/// The scope of the key we hold: agents `full`, runtime `run` and
/// `session-create`.
pub const HELD_SCOPE: u64 = 3;

/// A world of `SCOPES` scopes in app `acme` and some keys, one of which
/// (`held`, key id 1) we hold the secret of.
#[derive(Debug)]
pub struct World {
    /// The snapshot's contents.
    pub data: SnapshotData,
    /// The raw key of key 1.
    pub held: KeySecret,
}

/// The scope of a key id, as the world assigns them.
pub fn scope_of(id: u64) -> u64 {
    1 + id % SCOPES
}

/// The level of a scope id.
pub fn agents_of(scope: u64) -> AgentsLevel {
    AgentsLevel::ALL[(scope % 4) as usize]
}

/// The runtime bits of a scope id.
pub fn runtime_of(scope: u64) -> RuntimeSet {
    RuntimeSet::from_bits((scope % 16) as u8).unwrap_or_default()
}

/// Builds a world with `keys` keys (one in ten revoked); the other keys'
/// digests are derived from their ids, so large worlds build quickly.
pub fn world(keys: u64) -> World {
    let held = KeySecret::generate();
    let scopes = (1..=SCOPES)
        .map(|id| ScopeEntry {
            id,
            app: "acme".to_owned(),
            agents: agents_of(id),
            runtime: runtime_of(id),
        })
        .collect();
    let mut entries: Vec<KeyEntry> = (2..=keys.max(1))
        .map(|id| KeyEntry {
            digest: KeyDigest(Sha256::digest(id.to_le_bytes()).into()),
            id,
            scope_id: scope_of(id),
            revoked: id % 10 == 0,
        })
        .collect();
    entries.push(KeyEntry {
        digest: held.digest(),
        id: 1,
        scope_id: HELD_SCOPE,
        revoked: false,
    });
    World {
        data: SnapshotData {
            operations: default_operations(),
            scopes,
            keys: entries,
        },
        held,
    }
}
