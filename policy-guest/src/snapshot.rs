//! The snapshot: the immutable key/scope/catalogue data a policy decides on.
//!
//! # Format (version 3)
//!
//! ```text
//! offset  size  field
//! 0       8     magic, b"KEYSCOPE"
//! 8       2     format version, little-endian u16
//! 10      2     reserved, zero
//! 12      4     body length N, little-endian u32
//! 16      N     body:
//!                 4        meta length M, little-endian u32
//!                 M        meta: catalogue, scope slots and route table,
//!                          postcard-encoded
//!                 4        key count K, little-endian u32
//!                 48 * K   key records, sorted by digest, strictly ascending:
//!                            0..32   SHA-256 of the raw key
//!                            32..40  key id, little-endian u64
//!                            40..44  scope slot (index into the meta's scopes)
//!                            44..48  flags: bit 0 = revoked; others zero
//! 16+N    32    SHA-256 of bytes 0..16+N (the snapshot's digest)
//! ```
//!
//! The key table is fixed-size and sorted, so the policy decides straight
//! from the snapshot bytes it was given: loading checks them in one pass and
//! copies nothing, and a lookup is a binary search with no allocation. A
//! million keys take 48 MB. The host encodes ([`SnapshotData::encode`]); the
//! policy loads with [`Snapshot::from_vec`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::model::{AgentsLevel, KeyDigest, Requirement, RuntimePermission, RuntimeSet};
use crate::routes::{RouteEntry, RouteMatch, RouteTable};

/// The eight bytes every snapshot starts with.
pub const MAGIC: [u8; 8] = *b"KEYSCOPE";
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u16 = 3;

const HEADER_LEN: usize = 16;
const TRAILER_LEN: usize = 32;
const RECORD_LEN: usize = 48;
const REVOKED: u32 = 1;

/// The small part of the body: the catalogue and the scopes keys point at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    operations: Vec<OperationEntry>,
    /// Live scopes, then deleted ones that revoked keys still name.
    scopes: Vec<Slot>,
    /// HTTP routes to operations, in matching order.
    routes: Vec<RouteEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Slot {
    id: u64,
    app: String,
    agents: AgentsLevel,
    runtime: RuntimeSet,
    live: bool,
}

/// One entry of the operation catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationEntry {
    /// The operation's name (`agents.get`).
    pub name: String,
    /// What a scope must grant to perform it.
    pub requires: Requirement,
}

/// What a scope grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeEntry {
    /// The scope's id in the store.
    pub id: u64,
    /// The application the scope belongs to.
    pub app: String,
    /// Its Agents level.
    pub agents: AgentsLevel,
    /// Its runtime permissions.
    pub runtime: RuntimeSet,
}

/// A key, by digest. Revoked keys stay as tombstones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    /// SHA-256 of the raw key.
    pub digest: KeyDigest,
    /// The key's id in the store.
    pub id: u64,
    /// The id of the scope it belongs to.
    pub scope_id: u64,
    /// Whether it has been revoked.
    pub revoked: bool,
}

/// The contents of a snapshot, as the host builds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotData {
    /// Operation name to requirement.
    pub operations: Vec<OperationEntry>,
    /// Live scopes.
    pub scopes: Vec<ScopeEntry>,
    /// Every key, live or revoked.
    pub keys: Vec<KeyEntry>,
    /// HTTP routes to operations, in matching order.
    pub routes: Vec<RouteEntry>,
}

/// The nine operations of the platform's public API, and what each requires.
pub fn default_operations() -> Vec<OperationEntry> {
    use AgentsLevel::{Edit, Full, View};
    use RuntimePermission::{DocumentUpload, Run, SessionCreate, SessionTerminate};
    [
        ("agents.list", Requirement::Agents(View)),
        ("agents.get", Requirement::Agents(View)),
        ("agents.update", Requirement::Agents(Edit)),
        ("agents.create", Requirement::Agents(Full)),
        ("agents.delete", Requirement::Agents(Full)),
        ("runs.execute", Requirement::Runtime(Run)),
        ("sessions.create", Requirement::Runtime(SessionCreate)),
        ("sessions.terminate", Requirement::Runtime(SessionTerminate)),
        ("documents.upload", Requirement::Runtime(DocumentUpload)),
    ]
    .into_iter()
    .map(|(name, requires)| OperationEntry {
        name: name.to_owned(),
        requires,
    })
    .collect()
}

/// Why a snapshot was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// The bytes do not start with [`MAGIC`].
    BadMagic,
    /// A format version this crate does not read.
    UnsupportedVersion(u16),
    /// Fewer bytes than the header announces.
    Truncated,
    /// The trailer digest does not match the contents.
    DigestMismatch,
    /// The body does not decode, or breaks an invariant.
    Malformed(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic => f.write_str("not a keyscope snapshot (bad magic)"),
            Self::UnsupportedVersion(version) => write!(
                f,
                "unsupported snapshot format version {version}: the policy does not read it"
            ),
            Self::Truncated => f.write_str("truncated snapshot"),
            Self::DigestMismatch => {
                f.write_str("corrupted snapshot: its digest does not match its contents")
            }
            Self::Malformed(why) => write!(f, "malformed snapshot: {why}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// Summary of a loaded snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The format version read.
    pub format_version: u16,
    /// SHA-256 of the snapshot (its trailer).
    pub digest: [u8; 32],
    /// Number of live scopes.
    pub scopes: u32,
    /// Number of keys, revoked included.
    pub keys: u32,
    /// Number of catalogue operations.
    pub operations: u32,
}

impl SnapshotInfo {
    /// The digest in lowercase hex.
    pub fn digest_hex(&self) -> String {
        hex(&self.digest)
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]])
        .map(char::from)
        .collect()
}

impl SnapshotData {
    /// Checks the invariants a decodable snapshot must hold: unique operation
    /// names, unique scope ids, unique key digests and ids, every live key
    /// pointing at a live scope, and well-formed routes.
    pub fn validate(&self) -> Result<(), LoadError> {
        let malformed = |why: String| Err(LoadError::Malformed(why));
        RouteTable::parse(&self.routes).map_err(|e| LoadError::Malformed(e.to_string()))?;
        let mut names = std::collections::BTreeSet::new();
        for op in &self.operations {
            if !names.insert(op.name.as_str()) {
                return malformed(format!("operation `{}` appears twice", op.name));
            }
        }
        let mut scope_ids = std::collections::BTreeSet::new();
        for scope in &self.scopes {
            if !scope_ids.insert(scope.id) {
                return malformed(format!("scope {} appears twice", scope.id));
            }
        }
        let mut digests = std::collections::BTreeSet::new();
        let mut key_ids = std::collections::BTreeSet::new();
        for key in &self.keys {
            if !digests.insert(key.digest) {
                return malformed(format!("key {} has the digest of another key", key.id));
            }
            if !key_ids.insert(key.id) {
                return malformed(format!("key {} appears twice", key.id));
            }
            if !key.revoked && !scope_ids.contains(&key.scope_id) {
                return malformed(format!(
                    "live key {} belongs to scope {}, which is not in the snapshot",
                    key.id, key.scope_id
                ));
            }
        }
        Ok(())
    }

    /// Encodes the snapshot (see the module docs for the layout).
    pub fn encode(&self) -> Result<Vec<u8>, LoadError> {
        self.validate()?;
        let too_large = || LoadError::Malformed("snapshot larger than 4 GiB".to_owned());
        let mut slots: Vec<Slot> = self
            .scopes
            .iter()
            .map(|scope| Slot {
                id: scope.id,
                app: scope.app.clone(),
                agents: scope.agents,
                runtime: scope.runtime,
                live: true,
            })
            .collect();
        let mut slot_of: BTreeMap<u64, u32> = BTreeMap::new();
        for (slot, index) in slots.iter().zip(0u32..) {
            slot_of.insert(slot.id, index);
        }
        let mut records = Vec::with_capacity(self.keys.len());
        for key in &self.keys {
            let slot = match slot_of.get(&key.scope_id) {
                Some(&slot) => slot,
                // A tombstone of a deleted scope: keep its id, grant nothing.
                None => {
                    let slot = u32::try_from(slots.len()).map_err(|_| too_large())?;
                    slots.push(Slot {
                        id: key.scope_id,
                        app: String::new(),
                        agents: AgentsLevel::None,
                        runtime: RuntimeSet::EMPTY,
                        live: false,
                    });
                    slot_of.insert(key.scope_id, slot);
                    slot
                }
            };
            let mut record = [0u8; RECORD_LEN];
            record[..32].copy_from_slice(&key.digest.0);
            record[32..40].copy_from_slice(&key.id.to_le_bytes());
            record[40..44].copy_from_slice(&slot.to_le_bytes());
            let flags = if key.revoked { REVOKED } else { 0 };
            record[44..48].copy_from_slice(&flags.to_le_bytes());
            records.push(record);
        }
        records.sort_unstable_by(|a, b| a[..32].cmp(&b[..32]));
        let meta = postcard::to_allocvec(&Meta {
            operations: self.operations.clone(),
            scopes: slots,
            routes: self.routes.clone(),
        })
        .map_err(|e| LoadError::Malformed(format!("cannot encode: {e}")))?;
        let mut bytes = Vec::with_capacity(
            HEADER_LEN + 8 + meta.len() + records.len() * RECORD_LEN + TRAILER_LEN,
        );
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // reserved, body length
        let meta_len = u32::try_from(meta.len()).map_err(|_| too_large())?;
        bytes.extend_from_slice(&meta_len.to_le_bytes());
        bytes.extend_from_slice(&meta);
        let key_count = u32::try_from(records.len()).map_err(|_| too_large())?;
        bytes.extend_from_slice(&key_count.to_le_bytes());
        for record in &records {
            bytes.extend_from_slice(record);
        }
        let body_len = u32::try_from(bytes.len() - HEADER_LEN).map_err(|_| too_large())?;
        bytes[12..16].copy_from_slice(&body_len.to_le_bytes());
        let digest = Sha256::digest(&bytes);
        bytes.extend_from_slice(&digest);
        Ok(bytes)
    }

    /// Decodes and checks snapshot bytes back into their contents.
    pub fn decode(bytes: &[u8]) -> Result<(Self, SnapshotInfo), LoadError> {
        let view = Snapshot::decode(bytes)?;
        let mut operations: Vec<OperationEntry> = view
            .operations
            .iter()
            .map(|(name, requires)| OperationEntry {
                name: name.to_string(),
                requires: *requires,
            })
            .collect();
        operations.sort_by(|a, b| a.name.cmp(&b.name));
        let scopes = view
            .scopes
            .iter()
            .filter(|scope| scope.live)
            .map(|scope| ScopeEntry {
                id: scope.grant.id,
                app: scope.grant.app.clone(),
                agents: scope.grant.agents,
                runtime: scope.grant.runtime,
            })
            .collect();
        let keys = (0..view.key_count)
            .map(|i| {
                let record = view.record(i);
                KeyEntry {
                    digest: KeyDigest(record.digest),
                    id: record.id,
                    scope_id: view.scopes[record.slot].grant.id,
                    revoked: record.revoked,
                }
            })
            .collect();
        let info = view.info.clone();
        Ok((
            Self {
                operations,
                scopes,
                keys,
                routes: view.routes.entries().to_vec(),
            },
            info,
        ))
    }
}

/// A scope as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeGrant {
    /// The scope's id.
    pub id: u64,
    /// Its application.
    pub app: String,
    /// Its Agents level.
    pub agents: AgentsLevel,
    /// Its runtime permissions.
    pub runtime: RuntimeSet,
}

impl ScopeGrant {
    /// Whether the scope grants `requirement`.
    pub fn grants(&self, requirement: Requirement) -> bool {
        match requirement {
            Requirement::Agents(level) => self.agents >= level,
            Requirement::Runtime(permission) => self.runtime.contains(permission),
        }
    }
}

/// A key as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRecord {
    /// The key's id.
    pub id: u64,
    /// Its scope's id.
    pub scope_id: u64,
    /// Index of its scope's slot; `None` once revoked.
    scope: Option<usize>,
}

impl KeyRecord {
    /// Whether the key has been revoked.
    pub fn is_revoked(&self) -> bool {
        self.scope.is_none()
    }
}

#[derive(Debug, Clone)]
struct ScopeSlot {
    grant: ScopeGrant,
    live: bool,
}

/// One key record, read from the table.
struct RawRecord {
    digest: [u8; 32],
    id: u64,
    slot: usize,
    revoked: bool,
}

/// A checked snapshot, decided on in place: the key table is the snapshot's
/// own bytes.
#[derive(Debug, Clone)]
pub struct Snapshot {
    info: SnapshotInfo,
    /// The catalogue, sorted by name.
    operations: Vec<(Box<str>, Requirement)>,
    scopes: Vec<ScopeSlot>,
    routes: RouteTable,
    bytes: Vec<u8>,
    /// Offset of the first key record in `bytes`.
    keys_at: usize,
    key_count: usize,
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let mut word = [0; 4];
    word.copy_from_slice(bytes.get(at..at + 4)?);
    Some(u32::from_le_bytes(word))
}

impl Snapshot {
    /// Checks and indexes a copy of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, LoadError> {
        Self::from_vec(bytes.to_vec())
    }

    /// Checks snapshot bytes and keeps them as the index: one pass, no copy.
    pub fn from_vec(bytes: Vec<u8>) -> Result<Self, LoadError> {
        let malformed = |why: &str| LoadError::Malformed(why.to_owned());
        if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
            return Err(LoadError::BadMagic);
        }
        let header = bytes.get(..HEADER_LEN).ok_or(LoadError::Truncated)?;
        let version = u16::from_le_bytes([header[8], header[9]]);
        if version != FORMAT_VERSION {
            return Err(LoadError::UnsupportedVersion(version));
        }
        if header[10..12] != [0, 0] {
            return Err(malformed("reserved header bytes are set"));
        }
        let body_len = le_u32(header, 12).ok_or(LoadError::Truncated)?;
        let body_end = usize::try_from(body_len)
            .ok()
            .and_then(|len| len.checked_add(HEADER_LEN))
            .ok_or(LoadError::Truncated)?;
        // Checked: on wasm32 a body length near 4 GiB would wrap `usize`
        // (found by fuzzing: fuzz/corpus/snapshot_decode/regression-wrapping-length).
        let expected_len = body_end
            .checked_add(TRAILER_LEN)
            .ok_or(LoadError::Truncated)?;
        if bytes.len() < expected_len {
            return Err(LoadError::Truncated);
        }
        if bytes.len() > expected_len {
            return Err(LoadError::Malformed(format!(
                "{} bytes after the end of the snapshot",
                bytes.len() - expected_len
            )));
        }
        let digest: [u8; 32] = Sha256::digest(&bytes[..body_end]).into();
        if !bool::from(digest.ct_eq(&bytes[body_end..])) {
            return Err(LoadError::DigestMismatch);
        }

        let body = &bytes[HEADER_LEN..body_end];
        let meta_len = le_u32(body, 0).ok_or_else(|| malformed("no meta length"))? as usize;
        let meta_bytes = (4usize)
            .checked_add(meta_len)
            .and_then(|meta_end| body.get(4..meta_end))
            .ok_or_else(|| malformed("the meta runs past the body"))?;
        let (meta, rest): (Meta, _) = postcard::take_from_bytes(meta_bytes)
            .map_err(|e| LoadError::Malformed(format!("the meta does not decode: {e}")))?;
        if !rest.is_empty() {
            return Err(malformed("stray bytes after the meta"));
        }
        let key_count =
            le_u32(body, 4 + meta_len).ok_or_else(|| malformed("no key count"))? as usize;
        let keys_in_body = 8 + meta_len;
        if body.len() - keys_in_body != key_count.saturating_mul(RECORD_LEN) {
            return Err(malformed("the key table does not match the key count"));
        }

        let mut names = std::collections::BTreeSet::new();
        for op in &meta.operations {
            if !names.insert(op.name.as_str()) {
                return Err(LoadError::Malformed(format!(
                    "operation `{}` appears twice",
                    op.name
                )));
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        for slot in &meta.scopes {
            if !ids.insert(slot.id) {
                return Err(LoadError::Malformed(format!(
                    "scope {} appears twice",
                    slot.id
                )));
            }
        }
        let mut operations: Vec<(Box<str>, Requirement)> = meta
            .operations
            .into_iter()
            .map(|op| (op.name.into_boxed_str(), op.requires))
            .collect();
        operations.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let scopes: Vec<ScopeSlot> = meta
            .scopes
            .into_iter()
            .map(|slot| ScopeSlot {
                grant: ScopeGrant {
                    id: slot.id,
                    app: slot.app,
                    agents: slot.agents,
                    runtime: slot.runtime,
                },
                live: slot.live,
            })
            .collect();
        let routes =
            RouteTable::parse(&meta.routes).map_err(|e| LoadError::Malformed(e.to_string()))?;
        let live_scopes = scopes.iter().filter(|scope| scope.live).count();
        let count = |n: usize| {
            u32::try_from(n).map_err(|_| LoadError::Malformed("too many entries".to_owned()))
        };
        let snapshot = Self {
            info: SnapshotInfo {
                format_version: version,
                digest,
                scopes: count(live_scopes)?,
                keys: count(key_count)?,
                operations: count(operations.len())?,
            },
            operations,
            scopes,
            routes,
            keys_at: HEADER_LEN + keys_in_body,
            key_count,
            bytes,
        };
        snapshot.check_keys()?;
        Ok(snapshot)
    }

    /// One pass over the key table: known flags, slots in range, live keys
    /// in live scopes, digests strictly ascending (so also unique); then key
    /// ids unique, as the encoder requires (found by fuzzing:
    /// fuzz/corpus/snapshot_decode/regression-duplicate-key-id).
    fn check_keys(&self) -> Result<(), LoadError> {
        let mut ids = Vec::with_capacity(self.key_count);
        let mut previous: Option<&[u8]> = None;
        for i in 0..self.key_count {
            let at = self.keys_at + i * RECORD_LEN;
            let record = &self.bytes[at..at + RECORD_LEN];
            let raw = self.record(i);
            let bad = |why: &str| Err(LoadError::Malformed(format!("key {}: {why}", raw.id)));
            let flags = le_u32(record, 44).unwrap_or(u32::MAX);
            if flags & !REVOKED != 0 {
                return bad("unknown flags");
            }
            match self.scopes.get(raw.slot) {
                None => return bad("its scope slot is out of range"),
                Some(scope) if !scope.live && !raw.revoked => {
                    return bad("a live key of a deleted scope");
                }
                Some(_) => {}
            }
            if previous.is_some_and(|previous| previous >= &record[..32]) {
                return bad("the key table is not sorted by digest, or repeats one");
            }
            previous = Some(&record[..32]);
            ids.push(raw.id);
        }
        ids.sort_unstable();
        match ids.windows(2).find(|pair| pair[0] == pair[1]) {
            Some(pair) => Err(LoadError::Malformed(format!(
                "key {} appears twice",
                pair[0]
            ))),
            None => Ok(()),
        }
    }

    fn record(&self, i: usize) -> RawRecord {
        let at = self.keys_at + i * RECORD_LEN;
        let record = &self.bytes[at..at + RECORD_LEN];
        let mut digest = [0; 32];
        digest.copy_from_slice(&record[..32]);
        let mut id = [0; 8];
        id.copy_from_slice(&record[32..40]);
        RawRecord {
            digest,
            id: u64::from_le_bytes(id),
            slot: le_u32(record, 40).map_or(usize::MAX, |slot| slot as usize),
            revoked: le_u32(record, 44).is_some_and(|flags| flags & REVOKED != 0),
        }
    }

    /// The first eight bytes of the i-th digest, big-endian: the search key.
    fn prefix(&self, i: usize) -> u64 {
        let at = self.keys_at + i * RECORD_LEN;
        let mut word = [0; 8];
        word.copy_from_slice(&self.bytes[at..at + 8]);
        u64::from_be_bytes(word)
    }

    /// What was loaded.
    pub fn info(&self) -> &SnapshotInfo {
        &self.info
    }

    /// The route `method` and `path` match in the snapshot's route table.
    pub fn route<'s, 'p>(&'s self, method: &str, path: &'p str) -> Option<RouteMatch<'s, 'p>> {
        self.routes.route(method, path)
    }

    /// The key with this digest: a binary search on the first eight bytes,
    /// then the full digest compared in constant time. No allocation.
    pub fn key(&self, digest: &KeyDigest) -> Option<KeyRecord> {
        let words = digest.words();
        let (mut low, mut high) = (0, self.key_count);
        while low < high {
            let middle = low + (high - low) / 2;
            if self.prefix(middle) < words[0] {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        (low..self.key_count)
            .take_while(|&i| self.prefix(i) == words[0])
            .map(|i| self.record(i))
            .find(|record| bool::from(KeyDigest(record.digest).words()[..].ct_eq(&words[..])))
            .map(|record| KeyRecord {
                id: record.id,
                scope_id: self.scopes.get(record.slot).map_or(0, |s| s.grant.id),
                scope: (!record.revoked).then_some(record.slot),
            })
    }

    /// The scope a live key belongs to; `None` for a revoked key.
    pub fn scope_of(&self, key: &KeyRecord) -> Option<&ScopeGrant> {
        key.scope
            .and_then(|slot| self.scopes.get(slot))
            .map(|scope| &scope.grant)
    }

    /// What the named operation requires; `None` if it is not catalogued.
    pub fn requirement(&self, op: &str) -> Option<Requirement> {
        self.operations
            .binary_search_by(|(name, _)| name.as_ref().cmp(op))
            .ok()
            .map(|index| self.operations[index].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SnapshotData {
        SnapshotData {
            operations: default_operations(),
            scopes: vec![ScopeEntry {
                id: 1,
                app: "acme".to_owned(),
                agents: AgentsLevel::View,
                runtime: RuntimeSet::EMPTY.with(RuntimePermission::Run),
            }],
            keys: vec![
                KeyEntry {
                    digest: KeyDigest([7; 32]),
                    id: 10,
                    scope_id: 1,
                    revoked: false,
                },
                KeyEntry {
                    digest: KeyDigest([3; 32]),
                    id: 11,
                    scope_id: 99,
                    revoked: true,
                },
            ],
            routes: crate::routes::default_routes(),
        }
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let mut data = sample();
        let bytes = data.encode().unwrap();
        let (decoded, info) = SnapshotData::decode(&bytes).unwrap();
        // Decoding gives the canonical order: operations by name, keys by digest.
        data.operations.sort_by(|a, b| a.name.cmp(&b.name));
        data.keys.sort_by_key(|key| key.digest);
        assert_eq!(decoded, data);
        assert_eq!(info.format_version, FORMAT_VERSION);
        assert_eq!((info.scopes, info.keys, info.operations), (1, 2, 9));
        assert_eq!(&info.digest[..], &bytes[bytes.len() - 32..]);
    }

    #[test]
    fn a_repeated_key_id_is_refused_at_load() {
        let mut data = sample();
        data.keys[1].scope_id = 1;
        data.keys[1].revoked = false;
        let mut bytes = data.encode().unwrap();
        let meta_len = le_u32(&bytes, HEADER_LEN).unwrap() as usize;
        let keys_at = HEADER_LEN + 8 + meta_len;
        let first_id: [u8; 8] = bytes[keys_at + 32..keys_at + 40].try_into().unwrap();
        let second = keys_at + RECORD_LEN;
        bytes[second + 32..second + 40].copy_from_slice(&first_id);
        let body_end = bytes.len() - TRAILER_LEN;
        let digest = Sha256::digest(&bytes[..body_end]);
        bytes[body_end..].copy_from_slice(&digest);
        let error = Snapshot::decode(&bytes).unwrap_err();
        assert!(
            matches!(&error, LoadError::Malformed(why) if why.contains("appears twice")),
            "{error}"
        );
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = sample().encode().unwrap();
        for len in 0..bytes.len() {
            let err = SnapshotData::decode(&bytes[..len]).unwrap_err();
            let expected = if len < MAGIC.len() {
                LoadError::BadMagic
            } else {
                LoadError::Truncated
            };
            assert_eq!(err, expected, "at length {len}");
        }
    }

    #[test]
    fn every_flipped_body_bit_is_caught_by_the_digest() {
        let bytes = sample().encode().unwrap();
        for i in 16..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[i] ^= 0x01;
            assert_eq!(
                SnapshotData::decode(&corrupt).unwrap_err(),
                LoadError::DigestMismatch,
                "byte {i}"
            );
        }
    }

    #[test]
    fn header_problems_are_named() {
        let bytes = sample().encode().unwrap();
        let mut wrong_version = bytes.clone();
        wrong_version[8] = 9;
        assert_eq!(
            SnapshotData::decode(&wrong_version).unwrap_err(),
            LoadError::UnsupportedVersion(9)
        );
        assert_eq!(
            SnapshotData::decode(b"PK\x03\x04 not a snapshot").unwrap_err(),
            LoadError::BadMagic
        );
        let mut longer = bytes;
        longer.push(0);
        assert!(matches!(
            SnapshotData::decode(&longer).unwrap_err(),
            LoadError::Malformed(_)
        ));
    }

    #[test]
    fn invariants_are_checked_before_encoding() {
        let mut data = sample();
        data.keys[1].digest = data.keys[0].digest;
        assert!(matches!(data.encode(), Err(LoadError::Malformed(_))));

        let mut data = sample();
        data.keys[0].scope_id = 42;
        let err = data.encode().unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed snapshot: live key 10 belongs to scope 42, which is not in the snapshot"
        );

        let mut data = sample();
        data.operations.push(data.operations[0].clone());
        assert!(matches!(data.encode(), Err(LoadError::Malformed(_))));
    }

    #[test]
    fn keys_are_found_by_digest_and_only_by_the_full_digest() {
        let mut data = sample();
        // Same 8-byte prefix as key 10, different tail.
        let mut near = [7; 32];
        near[31] = 8;
        data.keys.push(KeyEntry {
            digest: KeyDigest(near),
            id: 12,
            scope_id: 1,
            revoked: false,
        });
        let snapshot = Snapshot::decode(&data.encode().unwrap()).unwrap();
        assert_eq!(snapshot.key(&KeyDigest([7; 32])).map(|k| k.id), Some(10));
        assert_eq!(snapshot.key(&KeyDigest(near)).map(|k| k.id), Some(12));
        let mut other = [7; 32];
        other[31] = 9;
        assert!(snapshot.key(&KeyDigest(other)).is_none());
        let revoked = snapshot.key(&KeyDigest([3; 32])).unwrap();
        assert!(revoked.is_revoked());
        assert!(snapshot.scope_of(&revoked).is_none());
    }
}
