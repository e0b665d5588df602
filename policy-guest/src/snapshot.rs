//! The snapshot: the key/scope/catalogue data a policy decides on.
//!
//! # Format (version 5)
//!
//! Every integer is little-endian; every string is UTF-8 behind a `u16`
//! byte length. `conformance/CONTRACT.md` §4 specifies the format byte for
//! byte and is the reference; this is a summary.
//!
//! ```text
//! header   8   magic, b"KEYSCOPE"
//!          2   format version (5)
//!          2   reserved, zero
//!          4   body length N
//! body     N   five sections, each a u32 count and its entries:
//!   apps        name; strictly ascending (byte order). An app's id is its index.
//!   operations  name, u8 kind (0 agents, 1 runtime), u8 level or permission;
//!               strictly ascending by name. An operation's id is its index.
//!   scopes      16 bytes each: u64 id, u32 app id, u8 agents level,
//!               u8 runtime bits, 2 reserved zero bytes; strictly ascending by id.
//!   routes      u8 method code, u8 zero, u32 operation id, pattern; in
//!               matching order.
//!   keys        64 bytes each: 32 SHA-256 of the raw key, u64 key id,
//!               u64 not-after (ms since the Unix epoch; u64::MAX: never),
//!               u64 scope id, u32 flags (bit 0: revoked), 4 reserved zero
//!               bytes; strictly ascending by digest.
//! trailer  32  the digest: SHA-256 of 0x02, the header, the SHA-256 of the
//!              first four sections, and the root of the key pages' tree
//! ```
//!
//! The key records are split into pages by the leading bits of their
//! digest, with a Merkle tree over the pages ([`crate::pages`]), so a delta
//! ([`crate::delta`]) that changes a few keys rehashes a few pages, not the
//! snapshot. A loaded snapshot decides straight from its own bytes: a load
//! copies no record. The host encodes ([`SnapshotData::encode`]); the policy
//! loads with [`Snapshot::from_vec`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::model::{
    AgentsLevel, KeyDigest, Method, Millis, Request, Requirement, ResolvedRequest,
    RuntimePermission, RuntimeSet,
};
use crate::pages::{KeyTable, RECORD_LEN, Record, TableError, gallop};
use crate::routes::{RouteEntry, RouteMatch, RouteTable};

/// The eight bytes every snapshot starts with.
pub const MAGIC: [u8; 8] = *b"KEYSCOPE";
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u16 = 5;

pub(crate) const HEADER_LEN: usize = 16;
pub(crate) const TRAILER_LEN: usize = 32;
const REVOKED: u32 = 1;
/// The not-after of a key that never expires.
const NEVER: Millis = Millis::MAX;

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
    /// The last moment the key is valid; `None`: until revoked.
    pub not_after: Option<Millis>,
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

/// The operations of the platform's public API, and what each requires.
///
/// The platform does not document a permission for its run-status,
/// session-read and attachment-delete routes; keyscope asks for the
/// permission of the action they follow: a run's status needs `run`, reading
/// sessions needs `session-create`, deleting an attachment needs
/// `document-upload`.
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
        ("runs.status", Requirement::Runtime(Run)),
        ("sessions.create", Requirement::Runtime(SessionCreate)),
        ("sessions.get", Requirement::Runtime(SessionCreate)),
        ("sessions.list", Requirement::Runtime(SessionCreate)),
        ("sessions.terminate", Requirement::Runtime(SessionTerminate)),
        ("documents.upload", Requirement::Runtime(DocumentUpload)),
        ("documents.delete", Requirement::Runtime(DocumentUpload)),
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
    /// The bytes do not start with [`MAGIC`] (fewer than eight bytes
    /// included).
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

fn malformed<T>(why: impl Into<String>) -> Result<T, LoadError> {
    Err(LoadError::Malformed(why.into()))
}

/// Summary of a loaded snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The format version read.
    pub format_version: u16,
    /// SHA-256 of the snapshot (its trailer).
    pub digest: [u8; 32],
    /// Entries of the app table.
    pub apps: u32,
    /// Live scopes: scope slots that are not a deleted scope's.
    pub scopes: u32,
    /// Key records, revoked and expired ones included.
    pub keys: u32,
    /// Entries of the operation catalogue.
    pub operations: u32,
    /// Entries of the route table.
    pub routes: u32,
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

pub(crate) fn requirement_code(requirement: Requirement) -> [u8; 2] {
    match requirement {
        Requirement::Agents(level) => [0, level as u8],
        Requirement::Runtime(permission) => [1, permission as u8],
    }
}

pub(crate) fn requirement_of(kind: u8, value: u8) -> Option<Requirement> {
    match kind {
        0 => AgentsLevel::ALL
            .get(usize::from(value))
            .map(|&level| Requirement::Agents(level)),
        1 => RuntimePermission::ALL
            .get(usize::from(value))
            .map(|&permission| Requirement::Runtime(permission)),
        _ => None,
    }
}

/// Appends a string behind its `u16` length.
pub(crate) fn put_str(bytes: &mut Vec<u8>, what: &str, text: &str) -> Result<(), LoadError> {
    let len = u16::try_from(text.len())
        .map_err(|_| LoadError::Malformed(format!("{what} longer than 65535 bytes")))?;
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(text.as_bytes());
    Ok(())
}

pub(crate) fn put_count(bytes: &mut Vec<u8>, count: usize) -> Result<(), LoadError> {
    let count = u32::try_from(count)
        .map_err(|_| LoadError::Malformed("more than 2^32 entries".to_owned()))?;
    bytes.extend_from_slice(&count.to_le_bytes());
    Ok(())
}

impl SnapshotData {
    /// Checks the invariants a decodable snapshot must hold: unique, non-empty
    /// operation names, unique scope ids and non-empty apps, unique key
    /// digests and ids, every live key pointing at a live scope, and routes
    /// well-formed and naming catalogued operations.
    pub fn validate(&self) -> Result<(), LoadError> {
        let scope_ids =
            validate_catalogue_and_scopes(&self.operations, &self.routes, &self.scopes)?;
        validate_keys(&self.keys, &scope_ids)
    }

    /// Encodes the snapshot (see the module docs for the layout). The
    /// encoding is canonical: the same contents give the same bytes.
    pub fn encode(&self) -> Result<Vec<u8>, LoadError> {
        Snapshot::from_data(self)?.to_bytes()
    }

    /// Decodes and checks snapshot bytes back into their contents, in
    /// canonical order: operations by name, scopes by id, keys by digest.
    pub fn decode(bytes: &[u8]) -> Result<(Self, SnapshotInfo), LoadError> {
        let view = Snapshot::decode(bytes)?;
        Ok((view.data(), view.info.clone()))
    }
}

/// What a scope grants, as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopeGrant {
    /// The scope's id.
    pub id: u64,
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
    /// The last moment it is valid ([`Millis::MAX`]: never expires).
    pub not_after: Millis,
    /// Index of its scope's slot; `None` once revoked.
    scope: Option<usize>,
}

impl KeyRecord {
    /// Whether the key has been revoked.
    pub fn is_revoked(&self) -> bool {
        self.scope.is_none()
    }

    /// Whether the key is past its not-after at `now`.
    pub fn is_expired(&self, now: Millis) -> bool {
        now > self.not_after
    }
}

/// A live scope as the snapshot holds it.
#[derive(Debug, Clone)]
pub(crate) struct ScopeSlot {
    pub(crate) grant: ScopeGrant,
    /// The app's id.
    pub(crate) app: u32,
    /// How many live (not revoked) keys name it: a scope with live keys
    /// cannot be deleted.
    pub(crate) live: u32,
}

/// A key record's fields.
pub(crate) struct RawRecord {
    pub(crate) digest: [u8; 32],
    pub(crate) id: u64,
    pub(crate) not_after: Millis,
    pub(crate) scope_id: u64,
    pub(crate) flags: u32,
    pub(crate) reserved: u32,
}

impl RawRecord {
    pub(crate) fn read(record: &Record) -> Self {
        let mut digest = [0; 32];
        digest.copy_from_slice(&record[..32]);
        Self {
            digest,
            id: le_u64(record, 32),
            not_after: le_u64(record, 40),
            scope_id: le_u64(record, 48),
            flags: le_u32(record, 56),
            reserved: le_u32(record, 60),
        }
    }

    pub(crate) fn revoked(&self) -> bool {
        self.flags & REVOKED != 0
    }
}

/// A checked snapshot, decided on in place.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub(crate) info: SnapshotInfo,
    /// The first word of the digest: what a resolved request names.
    stamp: u64,
    /// The app table, sorted; an app's id is its index.
    pub(crate) apps: Vec<Box<str>>,
    /// The catalogue, sorted by name; an operation's id is its index.
    pub(crate) operations: Vec<(Box<str>, Requirement)>,
    /// The live scopes, by id.
    pub(crate) scopes: Vec<ScopeSlot>,
    pub(crate) routes: RouteTable,
    /// The length of the first four sections, and their SHA-256.
    pub(crate) head_len: usize,
    pub(crate) head_digest: [u8; 32],
    pub(crate) keys: KeyTable,
}

/// The digest of a snapshot whose header is `header`, whose first four
/// sections hash to `head_digest` and whose key pages' tree has `root`.
pub(crate) fn seal(header: &[u8; HEADER_LEN], head_digest: &[u8; 32], root: &[u8; 32]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update([2u8]);
    hash.update(header);
    hash.update(head_digest);
    hash.update(root);
    hash.finalize().into()
}

/// The header of a snapshot of `head_len` bytes of sections and `keys`
/// key records.
pub(crate) fn header(head_len: usize, keys: usize) -> Result<[u8; HEADER_LEN], LoadError> {
    let body = head_len
        .checked_add(4)
        .and_then(|n| n.checked_add(keys.checked_mul(RECORD_LEN)?))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| LoadError::Malformed("snapshot larger than 4 GiB".to_owned()))?;
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(&MAGIC);
    header[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&body.to_le_bytes());
    Ok(header)
}

/// The contents of the first four sections, decoded and checked.
pub(crate) struct Head {
    pub(crate) apps: Vec<Box<str>>,
    pub(crate) operations: Vec<(Box<str>, Requirement)>,
    pub(crate) scopes: Vec<ScopeSlot>,
    pub(crate) routes: RouteTable,
}

impl Head {
    /// The contents of `entries`, in canonical order, checked as a snapshot's
    /// load would: the apps are the live scopes' own.
    pub(crate) fn from_entries(
        operations: &[OperationEntry],
        scopes: &[ScopeEntry],
        routes: &[RouteEntry],
    ) -> Result<Self, LoadError> {
        validate_catalogue_and_scopes(operations, routes, scopes)?;
        let apps: BTreeSet<&str> = scopes.iter().map(|s| s.app.as_str()).collect();
        let app_id: BTreeMap<&str, u32> = apps.iter().copied().zip(0..).collect();
        let mut ops: Vec<(Box<str>, Requirement)> = operations
            .iter()
            .map(|op| (Box::from(op.name.as_str()), op.requires))
            .collect();
        ops.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<&str> = ops.iter().map(|(name, _)| name.as_ref()).collect();
        let routes =
            RouteTable::parse(routes, |op| names.binary_search(&op).ok().map(|i| i as u32))
                .map_err(|e| LoadError::Malformed(e.to_string()))?;
        let mut slots: Vec<ScopeSlot> = scopes
            .iter()
            .map(|scope| ScopeSlot {
                grant: ScopeGrant {
                    id: scope.id,
                    agents: scope.agents,
                    runtime: scope.runtime,
                },
                app: app_id[scope.app.as_str()],
                live: 0,
            })
            .collect();
        slots.sort_unstable_by_key(|slot| slot.grant.id);
        Ok(Self {
            apps: apps.into_iter().map(Box::from).collect(),
            operations: ops,
            scopes: slots,
            routes,
        })
    }

    /// The sections' bytes, as §4 lays them out.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, LoadError> {
        let mut bytes = Vec::with_capacity(1024 + self.scopes.len() * 16);
        put_count(&mut bytes, self.apps.len())?;
        for app in &self.apps {
            put_str(&mut bytes, "an app", app)?;
        }
        put_count(&mut bytes, self.operations.len())?;
        for (name, requires) in &self.operations {
            put_str(&mut bytes, "an operation name", name)?;
            bytes.extend_from_slice(&requirement_code(*requires));
        }
        put_count(&mut bytes, self.scopes.len())?;
        for slot in &self.scopes {
            bytes.extend_from_slice(&slot.grant.id.to_le_bytes());
            bytes.extend_from_slice(&slot.app.to_le_bytes());
            bytes.extend_from_slice(&[slot.grant.agents as u8, slot.grant.runtime.bits(), 0, 0]);
        }
        put_count(&mut bytes, self.routes.len())?;
        for route in self.routes.entries() {
            let method = route
                .method
                .parse::<Method>()
                .map_err(|e| LoadError::Malformed(e.to_string()))?;
            let op = self
                .operations
                .binary_search_by(|(name, _)| name.as_ref().cmp(route.op.as_str()))
                .map_err(|_| LoadError::Malformed(format!("route to unknown `{}`", route.op)))?;
            bytes.extend_from_slice(&[method.code(), 0]);
            bytes.extend_from_slice(&(op as u32).to_le_bytes());
            put_str(&mut bytes, "a route pattern", &route.pattern)?;
        }
        Ok(bytes)
    }
}

/// The index of the scope `id` in `scopes` (ascending by id): a guess by
/// interpolation (a store hands out ids in order, so they are dense), then
/// a gallop.
pub(crate) fn scope_index(scopes: &[ScopeSlot], id: u64) -> Option<usize> {
    let (first, last) = (scopes.first()?.grant.id, scopes.last()?.grant.id);
    if id < first || id > last {
        return None;
    }
    // Ids with no gaps before this one: it is where it would be.
    let dense = (id - first) as usize;
    if scopes.get(dense).is_some_and(|slot| slot.grant.id == id) {
        return Some(dense);
    }
    let span = (last - first).max(1) as f64;
    let guess = ((id - first) as f64 / span * (scopes.len() - 1) as f64) as usize;
    let (at, _) = gallop(guess, scopes.len(), |i| scopes[i].grant.id < id);
    scopes
        .get(at)
        .filter(|slot| slot.grant.id == id)
        .map(|_| at)
}

/// The length of the first four sections of `body`, read by their counts
/// and lengths alone, and the key count: every read bounds-checked.
fn frame(body: &[u8]) -> Result<(usize, usize), LoadError> {
    let mut reader = Reader {
        body,
        at: 0,
        section: "apps",
    };
    let strings = |reader: &mut Reader<'_>, section: &'static str, after: usize| {
        let count = reader.count(section)?;
        for _ in 0..count {
            let len = usize::from(reader.u16()?);
            reader.take(len + after)?;
        }
        Ok::<(), LoadError>(())
    };
    strings(&mut reader, "apps", 0)?;
    strings(&mut reader, "operations", 2)?;
    let count = reader.count("scopes")?;
    reader.take(count.saturating_mul(16))?;
    let count = reader.count("routes")?;
    for _ in 0..count {
        reader.take(6)?;
        let len = usize::from(reader.u16()?);
        reader.take(len)?;
    }
    let head_len = reader.at;
    let key_count = reader.count("keys")?;
    let table = body.len() - reader.at;
    if table < key_count.saturating_mul(RECORD_LEN) {
        return malformed("the keys section runs past the body");
    }
    if table > key_count * RECORD_LEN {
        return malformed(format!(
            "{} bytes after the key table",
            table - key_count * RECORD_LEN
        ));
    }
    Ok((head_len, key_count))
}

/// Decodes and checks the first four sections (§4, load check 8).
fn read_head(head: &[u8]) -> Result<Head, LoadError> {
    let mut body = Reader {
        body: head,
        at: 0,
        section: "apps",
    };
    let count = body.count("apps")?;
    let apps = (0..count)
        .map(|i| body.str("the name", i).map(Box::from))
        .collect::<Result<Vec<Box<str>>, _>>()?;
    ascending("apps", &apps)?;

    let count = body.count("operations")?;
    let mut operations = Vec::new();
    for i in 0..count {
        let name: Box<str> = body.str("the name", i)?.into();
        let (kind, value) = (body.u8()?, body.u8()?);
        let Some(requires) = requirement_of(kind, value) else {
            return malformed(format!(
                "operation {i}: requirement ({kind}, {value}) is not one of the contract's"
            ));
        };
        operations.push((name, requires));
    }
    let names: Vec<&str> = operations.iter().map(|(name, _)| name.as_ref()).collect();
    ascending("operations", &names)?;

    let count = body.count("scopes")?;
    let mut scopes: Vec<ScopeSlot> = Vec::new();
    for i in 0..count {
        let id = body.u64()?;
        let app = body.u32()?;
        let fields = body.take(4)?;
        let bad = |why: &str| malformed(format!("scope {i} (scope {id}): {why}"));
        let (Some(&agents), Some(runtime)) = (
            AgentsLevel::ALL.get(usize::from(fields[0])),
            RuntimeSet::from_bits(fields[1]),
        ) else {
            return bad("unknown agents level or runtime bits");
        };
        if fields[2..] != [0, 0] {
            return bad("reserved bytes are not zero");
        }
        if app as usize >= apps.len() {
            return bad("its app id is out of range");
        }
        if scopes.last().is_some_and(|last| last.grant.id >= id) {
            return bad("scope ids are not strictly ascending");
        }
        scopes.push(ScopeSlot {
            grant: ScopeGrant {
                id,
                agents,
                runtime,
            },
            app,
            live: 0,
        });
    }

    // The apps are the live scopes' own: one that no scope has would make
    // the encoding ambiguous, and a delta's result would not say it.
    let mut used = vec![false; apps.len()];
    for slot in &scopes {
        used[slot.app as usize] = true;
    }
    if let Some(unused) = used.iter().position(|used| !used) {
        return malformed(format!(
            "app {unused} (`{}`) has no live scope: the apps are the live scopes' own",
            apps[unused]
        ));
    }

    let count = body.count("routes")?;
    let mut entries = Vec::new();
    for i in 0..count {
        let (code, zero) = (body.u8()?, body.u8()?);
        let op = body.u32()?;
        let pattern = body.str("the pattern", i)?;
        let (Some(method), 0) = (Method::from_code(code), zero) else {
            return malformed(format!(
                "route {i}: unknown method code {code}, or a nonzero reserved byte"
            ));
        };
        let Some((op, _)) = operations.get(op as usize) else {
            return malformed(format!("route {i}: operation id {op} is out of range"));
        };
        entries.push(RouteEntry {
            method: method.as_str().to_owned(),
            pattern: pattern.to_owned(),
            op: op.to_string(),
        });
    }
    let op_id = |name: &str| names.binary_search(&name).ok().map(|i| i as u32);
    let routes =
        RouteTable::parse(&entries, op_id).map_err(|e| LoadError::Malformed(e.to_string()))?;
    Ok(Head {
        apps,
        operations,
        scopes,
        routes,
    })
}

/// The digest `bytes` should carry in its trailer, read from its header,
/// its first four sections and its key records, with the checks that come
/// before it (§4, load checks 1 to 7).
pub fn compute_digest(bytes: &[u8]) -> Result<[u8; 32], LoadError> {
    let (head_len, key_count, _) = check_frame(bytes)?;
    let keys_at = HEADER_LEN + head_len + 4;
    let root = KeyTable::root_of(bytes, keys_at, key_count).map_err(table_error)?;
    let header: [u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().unwrap_or([0; HEADER_LEN]);
    let head_digest: [u8; 32] = Sha256::digest(&bytes[HEADER_LEN..HEADER_LEN + head_len]).into();
    Ok(seal(&header, &head_digest, &root))
}

/// Load checks 1 to 6: the header, the length, the sections' framing.
/// Returns the head's length, the key count and the body's end.
fn check_frame(bytes: &[u8]) -> Result<(usize, usize, usize), LoadError> {
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(LoadError::BadMagic);
    }
    let header = bytes.get(..HEADER_LEN).ok_or(LoadError::Truncated)?;
    let version = u16::from_le_bytes([header[8], header[9]]);
    if version != FORMAT_VERSION {
        return Err(LoadError::UnsupportedVersion(version));
    }
    if header[10..12] != [0, 0] {
        return malformed("the reserved header bytes are not zero");
    }
    let body_len = le_u32(header, 12) as usize;
    // Checked: on wasm32 a body length near 4 GiB would wrap `usize`
    // (found by fuzzing: fuzz/corpus/snapshot_decode/regression-wrapping-length).
    let body_end = body_len
        .checked_add(HEADER_LEN)
        .ok_or(LoadError::Truncated)?;
    let expected_len = body_end
        .checked_add(TRAILER_LEN)
        .ok_or(LoadError::Truncated)?;
    if bytes.len() < expected_len {
        return Err(LoadError::Truncated);
    }
    if bytes.len() > expected_len {
        return malformed(format!(
            "{} bytes after the trailer",
            bytes.len() - expected_len
        ));
    }
    let (head_len, key_count) = frame(&bytes[HEADER_LEN..body_end])?;
    Ok((head_len, key_count, body_end))
}

pub(crate) fn table_error(error: TableError) -> LoadError {
    match error {
        TableError::NotAscending(i) => LoadError::Malformed(format!(
            "key record {i}: the key table is not sorted by digest, or repeats one"
        )),
        TableError::TooMany => LoadError::Malformed("more than 2^32 key records".to_owned()),
    }
}

impl Snapshot {
    /// Checks and indexes a copy of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, LoadError> {
        Self::from_vec(bytes.to_vec())
    }

    /// Checks snapshot bytes and keeps them: the key records stay where
    /// they are. The checks run in the order `conformance/CONTRACT.md`
    /// gives, so a snapshot with several faults is refused for the first.
    pub fn from_vec(bytes: Vec<u8>) -> Result<Self, LoadError> {
        let (head_len, key_count, body_end) = check_frame(&bytes)?;
        let header: [u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().unwrap_or([0; HEADER_LEN]);
        let head_digest: [u8; 32] =
            Sha256::digest(&bytes[HEADER_LEN..HEADER_LEN + head_len]).into();
        let mut trailer = [0u8; 32];
        trailer.copy_from_slice(&bytes[body_end..]);
        let keys_at = HEADER_LEN + head_len + 4;
        let keys = KeyTable::in_bytes(bytes, keys_at, key_count).map_err(table_error)?;
        let digest = seal(&header, &head_digest, &keys.root());
        if !bool::from(digest.ct_eq(&trailer)) {
            return Err(LoadError::DigestMismatch);
        }
        let head = read_head(&keys.base()[HEADER_LEN..HEADER_LEN + head_len])?;
        let mut snapshot = Self::assemble(head, head_len, head_digest, keys, digest)?;
        snapshot.count_live_keys()?;
        Ok(snapshot)
    }

    /// Builds the snapshot of `data` (checked as [`SnapshotData::validate`]).
    pub fn from_data(data: &SnapshotData) -> Result<Self, LoadError> {
        data.validate()?;
        let head = Head::from_entries(&data.operations, &data.scopes, &data.routes)?;
        let mut records: Vec<Record> = data.keys.iter().map(key_record).collect();
        records.sort_unstable_by(|a, b| a[..32].cmp(&b[..32]));
        let keys = KeyTable::new(records).map_err(table_error)?;
        let mut snapshot = Self::with_head(head, keys)?;
        snapshot.count_live_keys()?;
        Ok(snapshot)
    }

    /// A snapshot of `head` and `keys`: encodes the head to hash it.
    pub(crate) fn with_head(head: Head, keys: KeyTable) -> Result<Self, LoadError> {
        let head_bytes = head.encode()?;
        let head_digest: [u8; 32] = Sha256::digest(&head_bytes).into();
        let digest = seal(
            &header(head_bytes.len(), keys.len())?,
            &head_digest,
            &keys.root(),
        );
        Self::assemble(head, head_bytes.len(), head_digest, keys, digest)
    }

    fn assemble(
        head: Head,
        head_len: usize,
        head_digest: [u8; 32],
        keys: KeyTable,
        digest: [u8; 32],
    ) -> Result<Self, LoadError> {
        let count = |n: usize| {
            u32::try_from(n).map_err(|_| LoadError::Malformed("too many entries".to_owned()))
        };
        let info = SnapshotInfo {
            format_version: FORMAT_VERSION,
            digest,
            apps: count(head.apps.len())?,
            scopes: count(head.scopes.len())?,
            keys: count(keys.len())?,
            operations: count(head.operations.len())?,
            routes: count(head.routes.len())?,
        };
        Ok(Self {
            stamp: KeyDigest(digest).prefix(),
            info,
            apps: head.apps,
            operations: head.operations,
            scopes: head.scopes,
            routes: head.routes,
            head_len,
            head_digest,
            keys,
        })
    }

    /// One pass over the key records (§4, load checks 9 and 10): known
    /// flags, zero reserved bytes, every live key in a live scope (counted
    /// there); then key ids unique (found by fuzzing:
    /// fuzz/corpus/snapshot_decode/regression-duplicate-key-id).
    fn count_live_keys(&mut self) -> Result<(), LoadError> {
        let mut ids = Vec::with_capacity(self.keys.len());
        for (i, record) in self.keys.records().enumerate() {
            let raw = RawRecord::read(record);
            let bad = |why: &str| malformed(format!("key record {i} (key {}): {why}", raw.id));
            if raw.flags & !REVOKED != 0 || raw.reserved != 0 {
                return bad("unknown flags, or nonzero reserved bytes");
            }
            if !raw.revoked() {
                match scope_index(&self.scopes, raw.scope_id) {
                    Some(slot) => self.scopes[slot].live += 1,
                    None => {
                        return bad(&format!(
                            "a live key of scope {}, which is not in the snapshot",
                            raw.scope_id
                        ));
                    }
                }
            }
            ids.push(raw.id);
        }
        ids.sort_unstable();
        match ids.windows(2).find(|pair| pair[0] == pair[1]) {
            Some(pair) => malformed(format!("key {} appears twice", pair[0])),
            None => Ok(()),
        }
    }

    /// How long [`Snapshot::to_bytes`] is, without encoding it.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.head_len + 4 + self.keys.len() * RECORD_LEN + TRAILER_LEN
    }

    /// The snapshot's bytes, as §4 lays them out.
    pub fn to_bytes(&self) -> Result<Vec<u8>, LoadError> {
        let head = Head {
            apps: self.apps.clone(),
            operations: self.operations.clone(),
            scopes: self.scopes.clone(),
            routes: self.routes.clone(),
        }
        .encode()?;
        let mut bytes = Vec::with_capacity(
            HEADER_LEN + head.len() + 4 + self.keys.len() * RECORD_LEN + TRAILER_LEN,
        );
        bytes.extend_from_slice(&header(head.len(), self.keys.len())?);
        bytes.extend_from_slice(&head);
        put_count(&mut bytes, self.keys.len())?;
        for record in self.keys.records() {
            bytes.extend_from_slice(record);
        }
        bytes.extend_from_slice(&self.info.digest);
        debug_assert_eq!(bytes.len(), self.encoded_len());
        Ok(bytes)
    }

    /// The contents, in canonical order: operations by name, scopes by id,
    /// keys by digest.
    pub fn data(&self) -> SnapshotData {
        SnapshotData {
            operations: self.operation_entries(),
            scopes: self.scope_entries(),
            keys: self
                .keys
                .records()
                .map(|record| key_entry(&RawRecord::read(record)))
                .collect(),
            routes: self.routes.entries().to_vec(),
        }
    }

    /// The live scopes as entries, with their apps' names.
    pub(crate) fn scope_entries(&self) -> Vec<ScopeEntry> {
        self.scopes
            .iter()
            .map(|slot| ScopeEntry {
                id: slot.grant.id,
                app: self.apps[slot.app as usize].to_string(),
                agents: slot.grant.agents,
                runtime: slot.grant.runtime,
            })
            .collect()
    }

    /// The catalogue as entries.
    pub(crate) fn operation_entries(&self) -> Vec<OperationEntry> {
        self.operations
            .iter()
            .map(|(name, requires)| OperationEntry {
                name: name.to_string(),
                requires: *requires,
            })
            .collect()
    }

    pub(crate) fn set_info(&mut self, info: SnapshotInfo) {
        self.stamp = KeyDigest(info.digest).prefix();
        self.info = info;
    }

    /// What was loaded.
    pub fn info(&self) -> &SnapshotInfo {
        &self.info
    }

    /// The first word of the snapshot's digest (big-endian): the stamp a
    /// [`ResolvedRequest`] carries to say which snapshot its ids are from.
    pub fn stamp(&self) -> u64 {
        self.stamp
    }

    /// The app table; an app's id is its index.
    pub fn apps(&self) -> impl ExactSizeIterator<Item = &str> {
        self.apps.iter().map(AsRef::as_ref)
    }

    /// The catalogue's names; an operation's id is its index.
    pub fn operation_names(&self) -> impl ExactSizeIterator<Item = &str> {
        self.operations.iter().map(|(name, _)| name.as_ref())
    }

    /// The id of the app named `app`, if any scope's app is named so.
    pub fn app_id(&self, app: &str) -> Option<u32> {
        self.apps
            .binary_search_by(|name| name.as_ref().cmp(app))
            .ok()
            .map(|i| i as u32)
    }

    /// The id of the operation named `op`, if it is catalogued.
    pub fn op_id(&self, op: &str) -> Option<u32> {
        self.operations
            .binary_search_by(|(name, _)| name.as_ref().cmp(op))
            .ok()
            .map(|i| i as u32)
    }

    /// `request` with its names resolved to this snapshot's ids.
    pub fn resolve(&self, request: &Request<'_>) -> ResolvedRequest {
        ResolvedRequest {
            credential: request.credential,
            snapshot: self.stamp,
            app: self.app_id(request.app),
            op: self.op_id(request.op),
            now: request.now,
        }
    }

    /// The route `method` and `path` match in the snapshot's route table.
    pub fn route<'p>(&self, method: Method, path: &'p str) -> Option<RouteMatch<'p>> {
        self.routes.route(method, path)
    }

    /// The key with this digest: its page, an interpolation search on the
    /// first eight bytes, then the full digest compared in constant time.
    /// No allocation.
    pub fn key(&self, digest: &KeyDigest) -> Option<KeyRecord> {
        self.find_key(digest).0
    }

    /// [`Snapshot::key`], and how many records the search read.
    pub fn find_key(&self, digest: &KeyDigest) -> (Option<KeyRecord>, u32) {
        // Compared as four words: four constant-time steps, not 32.
        let wanted = digest.words();
        let (found, probes) = self.keys.find(&digest.0, |record| {
            let mut digest = [0; 32];
            digest.copy_from_slice(&record[..32]);
            bool::from(KeyDigest(digest).words()[..].ct_eq(&wanted[..]))
        });
        let key = found.map(|record| {
            let raw = RawRecord::read(record);
            KeyRecord {
                id: raw.id,
                scope_id: raw.scope_id,
                not_after: raw.not_after,
                scope: if raw.revoked() {
                    None
                } else {
                    scope_index(&self.scopes, raw.scope_id)
                },
            }
        });
        (key, probes)
    }

    /// The scope a live key belongs to, with its app's id; `None` for a
    /// revoked key.
    pub fn scope_of(&self, key: &KeyRecord) -> Option<(ScopeGrant, u32)> {
        let slot = self.scopes.get(key.scope?)?;
        Some((slot.grant, slot.app))
    }

    /// The name of the app with this id.
    pub fn app_name(&self, app: u32) -> Option<&str> {
        self.apps.get(app as usize).map(AsRef::as_ref)
    }

    /// What the operation with this id requires; `None` if there is none.
    pub fn requirement(&self, op: u32) -> Option<Requirement> {
        self.operations
            .get(op as usize)
            .map(|(_, requires)| *requires)
    }
}

/// A key's record.
pub(crate) fn key_record(key: &KeyEntry) -> Record {
    let mut record = [0u8; RECORD_LEN];
    record[..32].copy_from_slice(&key.digest.0);
    record[32..40].copy_from_slice(&key.id.to_le_bytes());
    record[40..48].copy_from_slice(&key.not_after.unwrap_or(NEVER).to_le_bytes());
    record[48..56].copy_from_slice(&key.scope_id.to_le_bytes());
    let flags = if key.revoked { REVOKED } else { 0 };
    record[56..60].copy_from_slice(&flags.to_le_bytes());
    record
}

/// A record's key.
pub(crate) fn key_entry(raw: &RawRecord) -> KeyEntry {
    KeyEntry {
        digest: KeyDigest(raw.digest),
        id: raw.id,
        scope_id: raw.scope_id,
        revoked: raw.revoked(),
        not_after: (raw.not_after != NEVER).then_some(raw.not_after),
    }
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Reads the body's sections front to back; every read is bounds-checked
/// and a short read names the section it was in.
pub(crate) struct Reader<'b> {
    pub(crate) body: &'b [u8],
    pub(crate) at: usize,
    pub(crate) section: &'static str,
}

impl<'b> Reader<'b> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'b [u8], LoadError> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.body.len());
        let Some(end) = end else {
            return malformed(format!("the {} section runs past the body", self.section));
        };
        let bytes = &self.body[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, LoadError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, LoadError> {
        let bytes = self.take(2)?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, LoadError> {
        Ok(le_u32(self.take(4)?, 0))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, LoadError> {
        Ok(le_u64(self.take(8)?, 0))
    }

    /// A section's count, starting the section.
    pub(crate) fn count(&mut self, section: &'static str) -> Result<usize, LoadError> {
        self.section = section;
        Ok(self.u32()? as usize)
    }

    pub(crate) fn str(&mut self, what: &str, index: usize) -> Result<&'b str, LoadError> {
        let len = usize::from(self.u16()?);
        let bytes = self.take(len)?;
        let text = std::str::from_utf8(bytes).map_err(|_| {
            LoadError::Malformed(format!("{} {index}: {what} is not UTF-8", self.section))
        })?;
        if text.is_empty() {
            return malformed(format!("{} {index}: {what} is empty", self.section));
        }
        Ok(text)
    }
}

/// Checks that names are strictly ascending, so also unique.
fn ascending(section: &str, names: &[impl AsRef<str>]) -> Result<(), LoadError> {
    match names
        .windows(2)
        .position(|pair| pair[0].as_ref() >= pair[1].as_ref())
    {
        Some(i) => malformed(format!(
            "{section} {}: `{}` is not after `{}` (the {section} must be strictly ascending)",
            i + 1,
            names[i + 1].as_ref(),
            names[i].as_ref()
        )),
        None => Ok(()),
    }
}

/// Checks the catalogue, the routes and the scopes; the scope ids, sorted.
pub(crate) fn validate_catalogue_and_scopes(
    operations: &[OperationEntry],
    routes: &[RouteEntry],
    scopes: &[ScopeEntry],
) -> Result<Vec<u64>, LoadError> {
    let mut names = BTreeSet::new();
    for op in operations {
        if op.name.is_empty() {
            return malformed("an operation has an empty name");
        }
        if !names.insert(op.name.as_str()) {
            return malformed(format!("operation `{}` appears twice", op.name));
        }
    }
    RouteTable::parse(routes, |op| names.contains(op).then_some(0))
        .map_err(|e| LoadError::Malformed(e.to_string()))?;
    let mut scope_ids = BTreeSet::new();
    for scope in scopes {
        if scope.app.is_empty() {
            return malformed(format!("scope {} has an empty app", scope.id));
        }
        if !scope_ids.insert(scope.id) {
            return malformed(format!("scope {} appears twice", scope.id));
        }
    }
    Ok(scope_ids.into_iter().collect())
}

/// Checks the keys: unique digests and ids, every live key in a live scope
/// (`scope_ids`, sorted). Sorted copies rather than sets: a million keys
/// are checked in a few sorts instead of two million tree inserts.
fn validate_keys(keys: &[KeyEntry], scope_ids: &[u64]) -> Result<(), LoadError> {
    let mut digests: Vec<&[u8; 32]> = keys.iter().map(|key| &key.digest.0).collect();
    digests.sort_unstable();
    if let Some(twice) = digests.windows(2).find(|pair| pair[0] == pair[1]) {
        let second = keys
            .iter()
            .filter(|key| key.digest.0 == *twice[0])
            .nth(1)
            .map_or(0, |key| key.id);
        return malformed(format!("key {second} has the digest of another key"));
    }
    let mut ids: Vec<u64> = keys.iter().map(|key| key.id).collect();
    ids.sort_unstable();
    if let Some(twice) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
        return malformed(format!("key {} appears twice", twice[0]));
    }
    keys.iter()
        .try_for_each(|key| live_key_in_live_scope(key, scope_ids))
}

/// A live key must belong to a live scope (`scope_ids`, sorted).
pub(crate) fn live_key_in_live_scope(key: &KeyEntry, scope_ids: &[u64]) -> Result<(), LoadError> {
    if !key.revoked && scope_ids.binary_search(&key.scope_id).is_err() {
        return malformed(format!(
            "live key {} belongs to scope {}, which is not in the snapshot",
            key.id, key.scope_id
        ));
    }
    Ok(())
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
                    not_after: Some(1_767_225_600_000),
                },
                KeyEntry {
                    digest: KeyDigest([3; 32]),
                    id: 11,
                    scope_id: 99,
                    revoked: true,
                    not_after: None,
                },
            ],
            routes: crate::routes::default_routes(),
        }
    }

    /// Recomputes the trailer after a test edits the bytes.
    fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
        if let Ok(digest) = compute_digest(&bytes) {
            let body_end = bytes.len() - TRAILER_LEN;
            bytes[body_end..].copy_from_slice(&digest);
        }
        bytes
    }

    /// The offset of the key count in `sample()`'s encoding.
    fn keys_section(bytes: &[u8]) -> usize {
        let snapshot = Snapshot::decode(bytes).unwrap();
        bytes.len() - TRAILER_LEN - snapshot.keys.len() * RECORD_LEN - 4
    }

    fn refused(bytes: Vec<u8>) -> String {
        match Snapshot::decode(&reseal(bytes)) {
            Err(LoadError::Malformed(why)) => why,
            other => panic!("expected a malformed snapshot, got {other:?}"),
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
        assert_eq!(
            (
                info.apps,
                info.scopes,
                info.keys,
                info.operations,
                info.routes
            ),
            (1, 1, 2, 13, 14)
        );
        assert_eq!(&info.digest[..], &bytes[bytes.len() - 32..]);
        assert_eq!(
            decoded.encode().unwrap(),
            bytes,
            "the encoding is canonical"
        );
    }

    #[test]
    fn a_revoked_key_names_its_deleted_scope_which_grants_nothing() {
        let bytes = sample().encode().unwrap();
        let snapshot = Snapshot::decode(&bytes).unwrap();
        // Only the live scope has an entry; the revoked key names scope 99.
        assert_eq!(snapshot.scopes.len(), 1);
        assert_eq!(snapshot.scopes[0].live, 1);
        let revoked = snapshot.key(&KeyDigest([3; 32])).unwrap();
        assert_eq!((revoked.id, revoked.scope_id), (11, 99));
        assert!(snapshot.scope_of(&revoked).is_none());
    }

    #[test]
    fn the_layout_is_as_documented() {
        let data = SnapshotData {
            operations: vec![OperationEntry {
                name: "x".to_owned(),
                requires: Requirement::Runtime(RuntimePermission::SessionTerminate),
            }],
            scopes: vec![ScopeEntry {
                id: 5,
                app: "ab".to_owned(),
                agents: AgentsLevel::Edit,
                runtime: RuntimeSet::from_bits(0b1001).unwrap(),
            }],
            keys: vec![KeyEntry {
                digest: KeyDigest([0xaa; 32]),
                id: 9,
                scope_id: 5,
                revoked: false,
                not_after: None,
            }],
            routes: vec![RouteEntry {
                method: "PATCH".to_owned(),
                pattern: "/{app}".to_owned(),
                op: "x".to_owned(),
            }],
        };
        let bytes = data.encode().unwrap();
        let mut expected: Vec<u8> = b"KEYSCOPE\x05\x00\x00\x00".to_vec();
        let body_len = bytes.len() - 16 - 32;
        expected.extend_from_slice(&(body_len as u32).to_le_bytes());
        expected.extend_from_slice(&[1, 0, 0, 0, 2, 0, b'a', b'b']); // apps
        expected.extend_from_slice(&[1, 0, 0, 0, 1, 0, b'x', 1, 2]); // operations
        expected.extend_from_slice(&[1, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 9, 0, 0]);
        expected.extend_from_slice(&[1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 6, 0]); // routes
        expected.extend_from_slice(b"/{app}");
        let head = expected[16..].to_vec();
        expected.extend_from_slice(&[1, 0, 0, 0]); // keys
        let record_at = expected.len();
        expected.extend_from_slice(&[0xaa; 32]);
        expected.extend_from_slice(&[9, 0, 0, 0, 0, 0, 0, 0]); // id
        expected.extend_from_slice(&[0xff; 8]); // not-after: never
        expected.extend_from_slice(&[5, 0, 0, 0, 0, 0, 0, 0]); // scope id
        expected.extend_from_slice(&[0; 8]); // flags, reserved
        assert_eq!(body_len, expected.len() - 16);
        // One record: one page (0 page bits), whose leaf is the root.
        let leaf = Sha256::digest([&[0u8][..], &expected[record_at..]].concat());
        let sealed =
            Sha256::digest([&[2u8][..], &expected[..16], &Sha256::digest(&head), &leaf].concat());
        expected.extend_from_slice(&sealed);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn a_repeated_key_id_is_refused_at_load() {
        let mut data = sample();
        data.keys[1].scope_id = 1;
        data.keys[1].revoked = false;
        let mut bytes = data.encode().unwrap();
        let keys_at = keys_section(&bytes) + 4;
        let first_id: [u8; 8] = bytes[keys_at + 32..keys_at + 40].try_into().unwrap();
        let second = keys_at + RECORD_LEN;
        bytes[second + 32..second + 40].copy_from_slice(&first_id);
        assert!(refused(bytes).contains("appears twice"));
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
    fn every_flipped_body_bit_is_refused_and_the_digest_catches_what_framing_cannot() {
        let bytes = sample().encode().unwrap();
        let keys_at = keys_section(&bytes) + 4;
        for i in 16..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[i] ^= 0x01;
            let error = SnapshotData::decode(&corrupt).unwrap_err();
            // A key record's fields after its digest, a scope's bytes, the
            // trailer: the framing and the order still hold, the digest not.
            let in_record_tail = i >= keys_at && (i - keys_at) % RECORD_LEN >= 32;
            if in_record_tail || i >= bytes.len() - TRAILER_LEN {
                assert_eq!(error, LoadError::DigestMismatch, "byte {i}");
            } else {
                assert!(
                    matches!(error, LoadError::DigestMismatch | LoadError::Malformed(_)),
                    "byte {i}: {error:?}"
                );
            }
        }
    }

    #[test]
    fn header_problems_are_named() {
        let bytes = sample().encode().unwrap();
        let mut wrong_version = bytes.clone();
        wrong_version[8] = 3;
        assert_eq!(
            SnapshotData::decode(&wrong_version).unwrap_err(),
            LoadError::UnsupportedVersion(3)
        );
        assert_eq!(
            SnapshotData::decode(b"PK\x03\x04 not a snapshot").unwrap_err(),
            LoadError::BadMagic
        );
        let mut reserved = bytes.clone();
        reserved[10] = 1;
        assert!(refused(reserved).contains("reserved header"));
        let mut longer = bytes;
        longer.push(0);
        assert_eq!(
            SnapshotData::decode(&longer).unwrap_err(),
            LoadError::Malformed("1 bytes after the trailer".to_owned())
        );
    }

    #[test]
    fn body_problems_are_named() {
        let bytes = sample().encode().unwrap();
        let keys = keys_section(&bytes);
        let record = keys + 4;
        // The sample's first key record is key 11's ([3; 32] sorts first).
        type Edit<'a> = &'a dyn Fn(&mut Vec<u8>);
        let edits: [(Edit<'_>, &str); 6] = [
            (&|b| b[record + 56] = 2, "unknown flags"),
            (&|b| b[record + 60] = 1, "nonzero reserved bytes"),
            (
                &|b| b[record + 56] = 0,
                "a live key of scope 99, which is not",
            ),
            (&|b| b[record] = 0xff, "not sorted by digest"),
            (&|b| b[keys] = 3, "runs past the body"),
            (
                &|b| {
                    let end = b.len() - TRAILER_LEN;
                    b.insert(end, 0);
                    let len = le_u32(b, 12) + 1;
                    b[12..16].copy_from_slice(&len.to_le_bytes());
                },
                "1 bytes after the key table",
            ),
        ];
        for (edit, why) in edits {
            let mut corrupt = bytes.clone();
            edit(&mut corrupt);
            let error = refused(corrupt);
            assert!(error.contains(why), "{error} (expected `{why}`)");
        }
        // An empty snapshot's body is five zero counts; one app whose length
        // (the catalogue's count, made 255) runs past the end.
        let mut empty = SnapshotData::default().encode().unwrap();
        assert_eq!(empty.len(), 16 + 20 + 32);
        empty[16] = 1;
        empty[20] = 0xff;
        assert!(refused(empty).contains("the apps section runs past the body"));
    }

    #[test]
    fn catalogue_and_scope_problems_are_named() {
        let refuse = |data: SnapshotData, edit: &dyn Fn(&mut Vec<u8>), why: &str| {
            let mut bytes = data.encode().unwrap();
            edit(&mut bytes);
            let error = refused(bytes);
            assert!(error.contains(why), "{error} (expected `{why}`)");
        };
        let one_scope = |app: &str| SnapshotData {
            scopes: vec![
                ScopeEntry {
                    id: 1,
                    app: app.to_owned(),
                    agents: AgentsLevel::None,
                    runtime: RuntimeSet::EMPTY,
                },
                ScopeEntry {
                    id: 2,
                    app: "b".to_owned(),
                    agents: AgentsLevel::None,
                    runtime: RuntimeSet::EMPTY,
                },
            ],
            ..SnapshotData::default()
        };
        // apps `a`, `b` at 20 and 23: make the first `b` too.
        refuse(one_scope("a"), &|b| b[22] = b'b', "strictly ascending");
        refuse(one_scope("a"), &|b| b[22] = 0xff, "not UTF-8");
        let scopes_at = 20 + 3 + 3 + 4; // apps, then an empty catalogue
        refuse(
            one_scope("a"),
            &|b| b[scopes_at + 4 + 12] = 4,
            "unknown agents level",
        );
        refuse(
            one_scope("a"),
            &|b| b[scopes_at + 4 + 14] = 1,
            "reserved bytes",
        );
        refuse(
            one_scope("a"),
            &|b| b[scopes_at + 4 + 8] = 9,
            "app id is out of range",
        );
        refuse(
            one_scope("a"),
            &|b| b[scopes_at + 4 + 16] = 1,
            "strictly ascending",
        );
        // Both scopes in app 0: app 1 (`b`) has none.
        refuse(
            one_scope("a"),
            &|b| b[scopes_at + 4 + 16 + 8] = 0,
            "app 1 (`b`) has no live scope",
        );
        let ops = SnapshotData {
            operations: default_operations(),
            ..SnapshotData::default()
        };
        // No apps: the catalogue's first entry (`agents.create`) is at 24.
        refuse(ops.clone(), &|b| b[24 + 2 + 13] = 2, "requirement (2, 3)");
        refuse(ops, &|b| b[24 + 2 + 7] = b'z', "strictly ascending");
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

        let mut data = sample();
        data.routes[0].op = "agents.fly".to_owned();
        let err = data.encode().unwrap_err().to_string();
        assert!(err.contains("not in the catalogue"), "{err}");
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
            not_after: None,
        });
        let snapshot = Snapshot::decode(&data.encode().unwrap()).unwrap();
        let ten = snapshot.key(&KeyDigest([7; 32])).unwrap();
        assert_eq!((ten.id, ten.not_after), (10, 1_767_225_600_000));
        let twelve = snapshot.key(&KeyDigest(near)).unwrap();
        assert_eq!((twelve.id, twelve.not_after), (12, Millis::MAX));
        let mut other = [7; 32];
        other[31] = 9;
        assert!(snapshot.key(&KeyDigest(other)).is_none());
        let revoked = snapshot.key(&KeyDigest([3; 32])).unwrap();
        assert!(revoked.is_revoked());
        assert!(snapshot.scope_of(&revoked).is_none());
    }

    #[test]
    fn names_resolve_to_the_ids_the_tables_give() {
        let snapshot = Snapshot::decode(&sample().encode().unwrap()).unwrap();
        assert_eq!(snapshot.apps().collect::<Vec<_>>(), ["acme"]);
        assert_eq!(snapshot.app_id("acme"), Some(0));
        assert_eq!(snapshot.app_id("globex"), None);
        let names: Vec<&str> = snapshot.operation_names().collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        for (name, id) in names.iter().zip(0..) {
            assert_eq!(snapshot.op_id(name), Some(id));
        }
        assert_eq!(snapshot.op_id("agents.fly"), None);
        assert_eq!(snapshot.stamp(), KeyDigest(snapshot.info().digest).prefix());
    }
}
