//! The snapshot: the immutable key/scope/catalogue data a policy decides on.
//!
//! # Format (version 1)
//!
//! ```text
//! offset  size  field
//! 0       8     magic, b"KEYSCOPE"
//! 8       2     format version, little-endian u16
//! 10      2     reserved, zero
//! 12      4     body length N, little-endian u32
//! 16      N     body: `SnapshotData`, postcard-encoded
//! 16+N    32    SHA-256 of bytes 0..16+N (the snapshot's digest)
//! ```
//!
//! The host encodes ([`SnapshotData::encode`]); the policy decodes once per
//! load ([`Snapshot::decode`]) into lookup structures that make a decision a
//! binary search over key digests plus a few comparisons.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::model::{AgentsLevel, KeyDigest, Requirement, RuntimePermission, RuntimeSet};

/// The eight bytes every snapshot starts with.
pub const MAGIC: [u8; 8] = *b"KEYSCOPE";
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u16 = 1;

const HEADER_LEN: usize = 16;
const TRAILER_LEN: usize = 32;

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
    /// names, unique scope ids, unique key digests and ids, and every live key
    /// pointing at a live scope.
    pub fn validate(&self) -> Result<(), LoadError> {
        let malformed = |why: String| Err(LoadError::Malformed(why));
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

    /// Encodes the snapshot: header, postcard body, SHA-256 trailer.
    pub fn encode(&self) -> Result<Vec<u8>, LoadError> {
        self.validate()?;
        let mut bytes = vec![0; HEADER_LEN];
        bytes = postcard::to_extend(self, bytes)
            .map_err(|e| LoadError::Malformed(format!("cannot encode: {e}")))?;
        let body_len = u32::try_from(bytes.len() - HEADER_LEN)
            .map_err(|_| LoadError::Malformed("snapshot larger than 4 GiB".to_owned()))?;
        bytes[..8].copy_from_slice(&MAGIC);
        bytes[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes[12..16].copy_from_slice(&body_len.to_le_bytes());
        let digest = Sha256::digest(&bytes);
        bytes.extend_from_slice(&digest);
        Ok(bytes)
    }

    /// Decodes and validates snapshot bytes.
    pub fn decode(bytes: &[u8]) -> Result<(Self, SnapshotInfo), LoadError> {
        if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
            return Err(LoadError::BadMagic);
        }
        let header = bytes.get(..HEADER_LEN).ok_or(LoadError::Truncated)?;
        let version = u16::from_le_bytes([header[8], header[9]]);
        if version != FORMAT_VERSION {
            return Err(LoadError::UnsupportedVersion(version));
        }
        if header[10..12] != [0, 0] {
            return Err(LoadError::Malformed(
                "reserved header bytes are set".to_owned(),
            ));
        }
        let body_len = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
        let body_end = usize::try_from(body_len)
            .ok()
            .and_then(|len| len.checked_add(HEADER_LEN))
            .ok_or(LoadError::Truncated)?;
        let expected_len = body_end + TRAILER_LEN;
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
        let (data, rest): (SnapshotData, _) =
            postcard::take_from_bytes(&bytes[HEADER_LEN..body_end])
                .map_err(|e| LoadError::Malformed(format!("body does not decode: {e}")))?;
        if !rest.is_empty() {
            return Err(LoadError::Malformed(format!(
                "{} stray bytes after the body",
                rest.len()
            )));
        }
        data.validate()?;
        let count = |n: usize| {
            u32::try_from(n).map_err(|_| LoadError::Malformed("too many entries".to_owned()))
        };
        let info = SnapshotInfo {
            format_version: version,
            digest,
            scopes: count(data.scopes.len())?,
            keys: count(data.keys.len())?,
            operations: count(data.operations.len())?,
        };
        Ok((data, info))
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
    /// Index of its scope in [`Snapshot`]'s scope table; `None` once revoked.
    scope: Option<u32>,
}

impl KeyRecord {
    /// Whether the key has been revoked.
    pub fn is_revoked(&self) -> bool {
        self.scope.is_none()
    }
}

/// A decoded snapshot, indexed for lookups.
#[derive(Debug, Clone)]
pub struct Snapshot {
    info: SnapshotInfo,
    /// The catalogue, sorted by name.
    operations: Vec<(Box<str>, Requirement)>,
    scopes: Vec<ScopeGrant>,
    /// Key digests as big-endian words, sorted; `records[i]` describes
    /// `digests[i]`. Words order like the bytes, compare in four steps, and
    /// the first word alone almost always finds the key.
    digests: Vec<[u64; 4]>,
    records: Vec<KeyRecord>,
}

impl Snapshot {
    /// Decodes, validates and indexes snapshot bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, LoadError> {
        let (data, info) = SnapshotData::decode(bytes)?;
        Ok(Self::index(data, info))
    }

    fn index(data: SnapshotData, info: SnapshotInfo) -> Self {
        let scope_index: BTreeMap<u64, u32> = data
            .scopes
            .iter()
            .zip(0..)
            .map(|(scope, index)| (scope.id, index))
            .collect();
        let mut keys = data.keys;
        keys.sort_unstable_by_key(|key| key.digest);
        let records = keys
            .iter()
            .map(|key| KeyRecord {
                id: key.id,
                scope_id: key.scope_id,
                scope: if key.revoked {
                    None
                } else {
                    scope_index.get(&key.scope_id).copied()
                },
            })
            .collect();
        let mut operations: Vec<(Box<str>, Requirement)> = data
            .operations
            .into_iter()
            .map(|op| (op.name.into_boxed_str(), op.requires))
            .collect();
        operations.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Self {
            info,
            operations,
            scopes: data
                .scopes
                .into_iter()
                .map(|scope| ScopeGrant {
                    id: scope.id,
                    app: scope.app,
                    agents: scope.agents,
                    runtime: scope.runtime,
                })
                .collect(),
            digests: keys.iter().map(|key| key.digest.words()).collect(),
            records,
        }
    }

    /// What was loaded.
    pub fn info(&self) -> &SnapshotInfo {
        &self.info
    }

    /// The key with this digest: a binary search on the first word, then the
    /// full digest compared in constant time.
    pub fn key(&self, digest: &KeyDigest) -> Option<&KeyRecord> {
        let words = digest.words();
        let start = self.digests.partition_point(|d| d[0] < words[0]);
        self.digests[start..]
            .iter()
            .take_while(|d| d[0] == words[0])
            .position(|d| bool::from(d[..].ct_eq(&words[..])))
            .and_then(|offset| self.records.get(start + offset))
    }

    /// The scope a live key belongs to; `None` for a revoked key.
    pub fn scope_of(&self, key: &KeyRecord) -> Option<&ScopeGrant> {
        key.scope
            .and_then(|index| self.scopes.get(usize::try_from(index).ok()?))
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
        }
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let data = sample();
        let bytes = data.encode().unwrap();
        let (decoded, info) = SnapshotData::decode(&bytes).unwrap();
        assert_eq!(decoded, data);
        assert_eq!(info.format_version, FORMAT_VERSION);
        assert_eq!((info.scopes, info.keys, info.operations), (1, 2, 9));
        assert_eq!(&info.digest[..], &bytes[bytes.len() - 32..]);
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
        wrong_version[8] = 2;
        assert_eq!(
            SnapshotData::decode(&wrong_version).unwrap_err(),
            LoadError::UnsupportedVersion(2)
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
        assert!(snapshot.scope_of(revoked).is_none());
    }
}
