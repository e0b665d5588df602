//! `keyscope store copy`: a whole store, row for row, from one backend to
//! another: ids, tombstones, the catalogue, routes, limits, the admin
//! token's digest and the change revision, so that every issued key keeps
//! working and the copy builds the same snapshot.
//!
//! The source is read in one transaction and the destination written in
//! one: a copy is whole or not at all, and the source may stay in use.

use keyscope_policy::snapshot::KeyEntry;
use keyscope_policy::{KeyDigest, RuntimeSet};

use crate::error::{Result, StoreError};
use crate::store::Store;

/// A scope row, tombstone included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRow {
    /// Its id.
    pub id: i64,
    /// Its app.
    pub app: String,
    /// Its name.
    pub name: String,
    /// Its Agents level, as stored.
    pub agents: String,
    /// Its runtime permission bits.
    pub runtime: u8,
    /// When it was created.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// When it was deleted.
    pub deleted_at: Option<String>,
    /// The revision of its last change.
    pub rev: i64,
}

/// A key row: its digest, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// Its id.
    pub id: i64,
    /// Its scope.
    pub scope_id: i64,
    /// Its name.
    pub name: String,
    /// The SHA-256 of the key.
    pub digest: Vec<u8>,
    /// Its display prefix.
    pub prefix: String,
    /// When it was created.
    pub created_at: String,
    /// When it was revoked.
    pub revoked_at: Option<String>,
    /// Its not-after, ms since the Unix epoch.
    pub not_after_ms: Option<i64>,
    /// The revision of its last change.
    pub rev: i64,
}

/// A route row, with its place in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRow {
    /// Its place: routes match in this order.
    pub position: i64,
    /// The method.
    pub method: String,
    /// The pattern.
    pub pattern: String,
    /// The operation.
    pub op: String,
}

/// Everything a store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dump {
    /// The change revision.
    pub revision: u64,
    /// The revision of the last catalogue or route change.
    pub catalogue_revision: u64,
    /// Scopes, by id.
    pub scopes: Vec<ScopeRow>,
    /// Keys, by id.
    pub keys: Vec<KeyRow>,
    /// Operations and what they require, as stored.
    pub operations: Vec<(String, String)>,
    /// Routes, in matching order.
    pub routes: Vec<RouteRow>,
    /// Named settings (the limits).
    pub settings: Vec<(String, i64)>,
    /// The admin token's digest and when it was set.
    pub admin_token: Option<(Vec<u8>, String)>,
}

impl Dump {
    /// How many rows a restore writes, for a progress bar.
    pub fn rows(&self) -> u64 {
        (self.scopes.len() + self.keys.len() + self.operations.len() + self.routes.len()) as u64
    }
}

/// Copies the whole of `from` into `to`, which must hold no scope and no
/// key. `progress` is told how many rows are to be written, then each row
/// written.
pub fn copy(
    from: &mut impl Store,
    to: &mut impl Store,
    total: impl FnOnce(u64),
    progress: &mut dyn FnMut(u64),
) -> Result<Dump> {
    let dump = from.dump()?;
    total(dump.rows());
    to.restore(&dump, progress)?;
    Ok(dump)
}

/// Refuses to restore into a store that holds `held` scopes and keys.
pub(crate) fn check_empty(held: i64) -> Result<()> {
    if held == 0 {
        Ok(())
    } else {
        Err(StoreError::DestinationNotEmpty(
            u64::try_from(held).unwrap_or(0),
        ))
    }
}

/// A key as a snapshot holds it, from its stored columns; the error says
/// what is wrong with the row.
pub(crate) fn key_entry(
    digest: &[u8],
    id: u64,
    scope_id: u64,
    revoked: bool,
    not_after: Option<u64>,
) -> std::result::Result<KeyEntry, String> {
    let digest = <[u8; 32]>::try_from(digest)
        .map_err(|_| format!("key {id} has a digest that is not 32 bytes"))?;
    Ok(KeyEntry {
        digest: KeyDigest(digest),
        id,
        scope_id,
        revoked,
        not_after,
    })
}

/// Stored runtime permission bits.
pub(crate) fn runtime(bits: u8) -> Result<RuntimeSet> {
    RuntimeSet::from_bits(bits).ok_or_else(|| {
        StoreError::invalid(
            "stored runtime permissions",
            &bits.to_string(),
            "unknown permission bits",
        )
    })
}
