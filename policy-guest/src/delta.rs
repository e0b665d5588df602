//! Deltas: the changes that take one snapshot to the next, applied to the
//! snapshot a policy holds (`conformance/CONTRACT.md` §4, "Deltas").
//!
//! ```text
//! header   8   magic, b"KEYDELTA"
//!          2   format version (5: the snapshot format it patches)
//!          2   reserved, zero
//!          4   body length N
//!          32  base: the digest of the snapshot it applies to
//!          32  result: the digest of the snapshot it makes
//! body     N   scopes: u32 count; each u64 id, u8 0 (delete) or 1 (put),
//!                  and for a put u8 agents level, u8 runtime bits, app name
//!              catalogue: u8 0 (unchanged) or 1, then an operations and a
//!                  routes section, as a snapshot's
//!              keys: u32 count; 64-byte key records, strictly ascending
//!                  by digest, each replacing the record of its digest or
//!                  added
//! ```
//!
//! [`Snapshot::plan_delta`] checks a delta and computes the result's digest
//! from the pages and tree path it touches; nothing changes unless the
//! digest is the delta's `result`. A host makes a delta from a store's
//! changes with [`Snapshot::delta_for`].

use std::collections::BTreeMap;
use std::fmt;

use crate::kept::SnapshotChanges;
use crate::model::{AgentsLevel, Method, RuntimeSet};
use crate::pages::{RECORD_LEN, Record, TablePlan};
use crate::routes::RouteEntry;
use crate::snapshot::{
    HEADER_LEN, Head, LoadError, OperationEntry, RawRecord, Reader, ScopeEntry, Snapshot,
    SnapshotInfo, header, key_record, put_count, put_str, requirement_code, requirement_of,
    scope_index, seal,
};

/// The eight bytes every delta starts with.
pub const DELTA_MAGIC: [u8; 8] = *b"KEYDELTA";
/// A delta's fixed part: the header, the base and the result.
pub const DELTA_HEADER_LEN: usize = HEADER_LEN + 64;

/// Why a delta was refused. The held snapshot is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaError {
    /// No snapshot is loaded to apply it to.
    NoSnapshot,
    /// The bytes do not start with [`DELTA_MAGIC`].
    BadMagic,
    /// A format version this crate does not read.
    UnsupportedVersion(u16),
    /// Fewer bytes than the header announces.
    Truncated,
    /// The delta applies to another snapshot than the one held: a gap, a
    /// delta out of order, or one applied already.
    BaseMismatch,
    /// The result's digest is not the one the delta names.
    DigestMismatch,
    /// The body does not decode, or its result breaks an invariant.
    Malformed(String),
}

impl fmt::Display for DeltaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSnapshot => f.write_str("no snapshot is loaded to apply the delta to"),
            Self::BadMagic => f.write_str("not a keyscope delta (bad magic)"),
            Self::UnsupportedVersion(version) => write!(
                f,
                "unsupported delta format version {version}: the policy does not read it"
            ),
            Self::Truncated => f.write_str("truncated delta"),
            Self::BaseMismatch => {
                f.write_str("the delta applies to another snapshot than the one loaded")
            }
            Self::DigestMismatch => {
                f.write_str("the delta's result does not have the digest it names")
            }
            Self::Malformed(why) => write!(f, "malformed delta: {why}"),
        }
    }
}

impl std::error::Error for DeltaError {}

impl DeltaError {
    /// The WIT variant's name (`base-mismatch`), as the suite writes it.
    pub fn tag(&self) -> &'static str {
        match self {
            Self::NoSnapshot => "no-snapshot",
            Self::BadMagic => "bad-magic",
            Self::UnsupportedVersion(_) => "unsupported-version",
            Self::Truncated => "truncated",
            Self::BaseMismatch => "base-mismatch",
            Self::DigestMismatch => "digest-mismatch",
            Self::Malformed(_) => "malformed",
        }
    }
}

impl From<LoadError> for DeltaError {
    fn from(error: LoadError) -> Self {
        match error {
            LoadError::Malformed(why) => Self::Malformed(why),
            other => Self::Malformed(other.to_string()),
        }
    }
}

fn malformed<T>(why: impl Into<String>) -> Result<T, DeltaError> {
    Err(DeltaError::Malformed(why.into()))
}

/// A delta's body, decoded.
struct Body {
    scopes: Vec<(u64, Option<ScopeEntry>)>,
    catalogue: Option<(Vec<OperationEntry>, Vec<RouteEntry>)>,
    keys: Vec<Record>,
}

/// A checked delta, its result hashed, not yet applied.
#[derive(Debug)]
pub struct DeltaPlan {
    base: [u8; 32],
    head: Option<(Head, usize, [u8; 32])>,
    /// Live-key counts to move, by scope index in the result's scopes.
    live: BTreeMap<usize, i64>,
    table: TablePlan,
    info: SnapshotInfo,
}

impl fmt::Debug for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Head")
            .field("apps", &self.apps.len())
            .field("scopes", &self.scopes.len())
            .finish_non_exhaustive()
    }
}

impl DeltaPlan {
    /// What the snapshot will be.
    pub fn info(&self) -> &SnapshotInfo {
        &self.info
    }
}

/// A planned delta and its bytes: what a host sends its policy instances.
#[derive(Debug)]
pub struct Delta {
    /// The delta's bytes.
    pub bytes: Vec<u8>,
    /// The plan, to commit to the host's own copy.
    pub plan: DeltaPlan,
}

impl Snapshot {
    /// Checks `delta` against this snapshot and computes its result,
    /// changing nothing.
    pub fn plan_delta(&self, delta: &[u8]) -> Result<DeltaPlan, DeltaError> {
        let (base, result, body) = read(delta)?;
        if base != self.info.digest {
            return Err(DeltaError::BaseMismatch);
        }
        let plan = self.plan_body(base, body)?;
        if plan.info.digest != result {
            return Err(DeltaError::DigestMismatch);
        }
        Ok(plan)
    }

    /// What applying `delta` would give, whatever result digest it names:
    /// for a tool that writes a delta by hand, and for the fuzzer.
    pub fn predict(&self, delta: &[u8]) -> Result<SnapshotInfo, DeltaError> {
        let (base, _, body) = read(delta)?;
        if base != self.info.digest {
            return Err(DeltaError::BaseMismatch);
        }
        Ok(self.plan_body(base, body)?.info)
    }

    /// Applies `delta`: [`Snapshot::plan_delta`], then [`Snapshot::commit`].
    pub fn apply_delta(&mut self, delta: &[u8]) -> Result<&SnapshotInfo, DeltaError> {
        let plan = self.plan_delta(delta)?;
        self.commit(plan)?;
        Ok(&self.info)
    }

    /// Applies a plan made on this snapshot as it is now.
    pub fn commit(&mut self, plan: DeltaPlan) -> Result<(), DeltaError> {
        if plan.base != self.info.digest {
            return Err(DeltaError::BaseMismatch);
        }
        if let Some((head, head_len, head_digest)) = plan.head {
            self.apps = head.apps;
            self.operations = head.operations;
            self.scopes = head.scopes;
            self.routes = head.routes;
            self.head_len = head_len;
            self.head_digest = head_digest;
        }
        for (slot, moved) in plan.live {
            let live = &mut self.scopes[slot].live;
            *live = (i64::from(*live) + moved).clamp(0, i64::from(u32::MAX)) as u32;
        }
        self.keys.commit(plan.table);
        self.set_info(plan.info);
        Ok(())
    }

    /// The delta that brings this snapshot to these `changes`, planned:
    /// the delta's bytes name this snapshot as its base and the planned
    /// result's digest as its result.
    pub fn delta_for(&self, changes: &SnapshotChanges) -> Result<Delta, LoadError> {
        let mut bytes = encode(&self.info.digest, &[0; 32], changes)?;
        let (base, _, body) = read(&bytes).map_err(to_load_error)?;
        let plan = self.plan_body(base, body).map_err(to_load_error)?;
        bytes[HEADER_LEN + 32..DELTA_HEADER_LEN].copy_from_slice(&plan.info.digest);
        Ok(Delta { bytes, plan })
    }

    fn plan_body(&self, base: [u8; 32], body: Body) -> Result<DeltaPlan, DeltaError> {
        let head = if body.scopes.is_empty() && body.catalogue.is_none() {
            None
        } else {
            let mut scopes = self.scope_entries();
            for (id, scope) in body.scopes {
                match (scopes.binary_search_by_key(&id, |s| s.id), scope) {
                    (Ok(i), Some(scope)) => scopes[i] = scope,
                    (Err(i), Some(scope)) => scopes.insert(i, scope),
                    (Ok(i), None) => {
                        scopes.remove(i);
                    }
                    (Err(_), None) => {}
                }
            }
            let (operations, routes) = match body.catalogue {
                Some(catalogue) => catalogue,
                None => (self.operation_entries(), self.routes.entries().to_vec()),
            };
            let mut head = Head::from_entries(&operations, &scopes, &routes)?;
            // Carry the live-key counts over, by scope id.
            for slot in &mut head.scopes {
                if let Some(i) = scope_index(&self.scopes, slot.grant.id) {
                    slot.live = self.scopes[i].live;
                }
            }
            let bytes = head.encode()?;
            let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&bytes).into();
            Some((head, bytes.len(), digest))
        };
        let after = head
            .as_ref()
            .map_or(&self.scopes, |(head, _, _)| &head.scopes);
        // The live keys of scopes the delta deletes, which its keys must
        // revoke (or move) to the last.
        let mut gone: BTreeMap<u64, i64> = self
            .scopes
            .iter()
            .filter(|slot| slot.live > 0 && scope_index(after, slot.grant.id).is_none())
            .map(|slot| (slot.grant.id, i64::from(slot.live)))
            .collect();

        let (table, replaced) = self
            .keys
            .plan(&body.keys)
            .map_err(crate::snapshot::table_error)?;
        let mut live: BTreeMap<usize, i64> = BTreeMap::new();
        for (update, old) in body.keys.iter().zip(&replaced) {
            let new = RawRecord::read(update);
            if let Some(old) = old.as_ref().map(RawRecord::read) {
                if old.id != new.id {
                    return malformed(format!("key {} has the digest of another key", new.id));
                }
                if !old.revoked() {
                    match scope_index(after, old.scope_id) {
                        Some(i) => *live.entry(i).or_default() -= 1,
                        None => {
                            if let Some(n) = gone.get_mut(&old.scope_id) {
                                *n -= 1;
                            }
                        }
                    }
                }
            }
            if !new.revoked() {
                let Some(i) = scope_index(after, new.scope_id) else {
                    return malformed(format!(
                        "live key {} belongs to scope {}, which is not in the snapshot",
                        new.id, new.scope_id
                    ));
                };
                *live.entry(i).or_default() += 1;
            }
        }
        if let Some((id, n)) = gone.iter().find(|(_, n)| **n > 0) {
            return malformed(format!(
                "scope {id} is deleted while {n} live keys still belong to it"
            ));
        }

        let (head_len, head_digest) = head
            .as_ref()
            .map_or((self.head_len, self.head_digest), |(_, len, digest)| {
                (*len, *digest)
            });
        let digest = seal(
            &header(head_len, table.count())?,
            &head_digest,
            &table.root(),
        );
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let info = SnapshotInfo {
            digest,
            apps: head
                .as_ref()
                .map_or(self.info.apps, |(h, _, _)| count(h.apps.len())),
            scopes: count(after.len()),
            keys: count(table.count()),
            operations: head
                .as_ref()
                .map_or(self.info.operations, |(h, _, _)| count(h.operations.len())),
            routes: head
                .as_ref()
                .map_or(self.info.routes, |(h, _, _)| count(h.routes.len())),
            ..self.info.clone()
        };
        Ok(DeltaPlan {
            base,
            head,
            live,
            table,
            info,
        })
    }
}

fn to_load_error(error: DeltaError) -> LoadError {
    match error {
        DeltaError::Malformed(why) => LoadError::Malformed(why),
        other => LoadError::Malformed(other.to_string()),
    }
}

/// Encodes `changes` as a delta from `base` to `result`.
pub fn encode(
    base: &[u8; 32],
    result: &[u8; 32],
    changes: &SnapshotChanges,
) -> Result<Vec<u8>, LoadError> {
    let bad = |why: String| LoadError::Malformed(why);
    let mut body = Vec::new();
    put_count(&mut body, changes.scopes.len())?;
    for (id, scope) in &changes.scopes {
        body.extend_from_slice(&id.to_le_bytes());
        match scope {
            None => body.push(0),
            Some(scope) if scope.id != *id => {
                return Err(bad(format!(
                    "a change to scope {id} carries scope {}",
                    scope.id
                )));
            }
            Some(scope) => {
                body.extend_from_slice(&[1, scope.agents as u8, scope.runtime.bits()]);
                put_str(&mut body, "an app", &scope.app)?;
            }
        }
    }
    match &changes.catalogue {
        None => body.push(0),
        Some((operations, routes)) => {
            body.push(1);
            let mut operations: Vec<&OperationEntry> = operations.iter().collect();
            operations.sort_by(|a, b| a.name.cmp(&b.name));
            put_count(&mut body, operations.len())?;
            for op in &operations {
                put_str(&mut body, "an operation name", &op.name)?;
                body.extend_from_slice(&requirement_code(op.requires));
            }
            put_count(&mut body, routes.len())?;
            for route in routes {
                let method = route
                    .method
                    .parse::<Method>()
                    .map_err(|e| bad(e.to_string()))?;
                if method == Method::Other {
                    return Err(bad(format!(
                        "a route's method `{}` is not one of §4's",
                        route.method
                    )));
                }
                let op = operations
                    .iter()
                    .position(|op| op.name == route.op)
                    .ok_or_else(|| {
                        bad(format!(
                            "route {} {} names `{}`, which is not catalogued",
                            route.method, route.pattern, route.op
                        ))
                    })?;
                body.extend_from_slice(&[method.code(), 0]);
                body.extend_from_slice(&(op as u32).to_le_bytes());
                put_str(&mut body, "a route pattern", &route.pattern)?;
            }
        }
    }
    let mut keys: Vec<Record> = changes.keys.iter().map(key_record).collect();
    keys.sort_unstable_by(|a, b| a[..32].cmp(&b[..32]));
    if let Some(pair) = keys.windows(2).find(|pair| pair[0][..32] == pair[1][..32]) {
        return Err(bad(format!(
            "key {} has the digest of another key",
            RawRecord::read(&pair[1]).id
        )));
    }
    put_count(&mut body, keys.len())?;
    for key in &keys {
        body.extend_from_slice(key);
    }
    let body_len = u32::try_from(body.len()).map_err(|_| bad("a delta over 4 GiB".to_owned()))?;
    let mut bytes = Vec::with_capacity(DELTA_HEADER_LEN + body.len());
    bytes.extend_from_slice(&DELTA_MAGIC);
    bytes.extend_from_slice(&crate::snapshot::FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&[0, 0]);
    bytes.extend_from_slice(&body_len.to_le_bytes());
    bytes.extend_from_slice(base);
    bytes.extend_from_slice(result);
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

/// Reads a delta's header and body: the base, the result, the changes.
fn read(bytes: &[u8]) -> Result<([u8; 32], [u8; 32], Body), DeltaError> {
    if bytes.len() < DELTA_MAGIC.len() || bytes[..DELTA_MAGIC.len()] != DELTA_MAGIC {
        return Err(DeltaError::BadMagic);
    }
    if bytes.len() < DELTA_HEADER_LEN {
        return Err(DeltaError::Truncated);
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != crate::snapshot::FORMAT_VERSION {
        return Err(DeltaError::UnsupportedVersion(version));
    }
    if bytes[10..12] != [0, 0] {
        return malformed("the reserved header bytes are not zero");
    }
    let body_len = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
    let end = body_len
        .checked_add(DELTA_HEADER_LEN)
        .ok_or(DeltaError::Truncated)?;
    if bytes.len() < end {
        return Err(DeltaError::Truncated);
    }
    if bytes.len() > end {
        return malformed(format!("{} bytes after the body", bytes.len() - end));
    }
    let mut base = [0u8; 32];
    base.copy_from_slice(&bytes[HEADER_LEN..HEADER_LEN + 32]);
    let mut result = [0u8; 32];
    result.copy_from_slice(&bytes[HEADER_LEN + 32..DELTA_HEADER_LEN]);
    let mut reader = Reader {
        body: &bytes[DELTA_HEADER_LEN..],
        at: 0,
        section: "scope changes",
    };

    let count = reader.count("scope changes")?;
    let mut scopes = Vec::new();
    for i in 0..count {
        let id = reader.u64()?;
        match reader.u8()? {
            0 => scopes.push((id, None)),
            1 => {
                let (agents, runtime) = (reader.u8()?, reader.u8()?);
                let (Some(&agents), Some(runtime)) = (
                    AgentsLevel::ALL.get(usize::from(agents)),
                    RuntimeSet::from_bits(runtime),
                ) else {
                    return malformed(format!(
                        "scope change {i} (scope {id}): unknown agents level or runtime bits"
                    ));
                };
                let app = reader.str("the app", i)?.to_owned();
                scopes.push((
                    id,
                    Some(ScopeEntry {
                        id,
                        app,
                        agents,
                        runtime,
                    }),
                ));
            }
            kind => {
                return malformed(format!(
                    "scope change {i} (scope {id}): kind {kind} is neither 0 (delete) nor 1 (put)"
                ));
            }
        }
    }

    reader.section = "catalogue";
    let catalogue = match reader.u8()? {
        0 => None,
        1 => {
            let count = reader.count("operations")?;
            let mut operations: Vec<OperationEntry> = Vec::new();
            for i in 0..count {
                let name = reader.str("the name", i)?.to_owned();
                let (kind, value) = (reader.u8()?, reader.u8()?);
                let Some(requires) = requirement_of(kind, value) else {
                    return malformed(format!(
                        "operation {i}: requirement ({kind}, {value}) is not one of the contract's"
                    ));
                };
                if operations.last().is_some_and(|last| last.name >= name) {
                    return malformed(format!(
                        "operation {i}: `{name}` is not after `{}` (the operations must be \
                         strictly ascending)",
                        operations[i - 1].name
                    ));
                }
                operations.push(OperationEntry { name, requires });
            }
            let count = reader.count("routes")?;
            let mut routes = Vec::new();
            for i in 0..count {
                let (code, zero) = (reader.u8()?, reader.u8()?);
                let op = reader.u32()?;
                let pattern = reader.str("the pattern", i)?.to_owned();
                let (Some(method), 0) = (Method::from_code(code), zero) else {
                    return malformed(format!(
                        "route {i}: unknown method code {code}, or a nonzero reserved byte"
                    ));
                };
                let Some(op) = operations.get(op as usize) else {
                    return malformed(format!("route {i}: operation id {op} is out of range"));
                };
                routes.push(RouteEntry {
                    method: method.as_str().to_owned(),
                    pattern,
                    op: op.name.clone(),
                });
            }
            Some((operations, routes))
        }
        flag => return malformed(format!("catalogue flag {flag} is neither 0 nor 1")),
    };

    let count = reader.count("keys")?;
    let rest = reader.body.len() - reader.at;
    if rest != count.saturating_mul(RECORD_LEN) {
        return if rest < count.saturating_mul(RECORD_LEN) {
            malformed("the keys section runs past the body")
        } else {
            malformed(format!(
                "{} bytes after the key records",
                rest - count * RECORD_LEN
            ))
        };
    }
    let (records, _) = reader.body[reader.at..].as_chunks::<RECORD_LEN>();
    for (i, record) in records.iter().enumerate() {
        let raw = RawRecord::read(record);
        if raw.flags & !1 != 0 || raw.reserved != 0 {
            return malformed(format!(
                "key record {i} (key {}): unknown flags, or nonzero reserved bytes",
                raw.id
            ));
        }
        if i > 0 && records[i - 1][..32] >= record[..32] {
            return malformed(format!(
                "key record {i} (key {}): the records are not sorted by digest, or repeat one",
                raw.id
            ));
        }
    }
    Ok((
        base,
        result,
        Body {
            scopes,
            catalogue,
            keys: records.to_vec(),
        },
    ))
}
