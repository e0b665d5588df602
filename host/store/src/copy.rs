//! `keyscope store copy`: a whole store, row for row, from one backend to
//! another: ids, tombstones, the catalogue, routes, limits, the admin
//! token's digest and the change revision, so that every issued key keeps
//! working and the copy builds the same snapshot.
//!
//! The source is read in one transaction and the destination written in
//! one: a copy is whole or not at all, and the source may stay in use.

use keyscope_policy::snapshot::KeyEntry;
use keyscope_policy::{KeyDigest, RuntimeSet};

pub use crate::dump::{Dump, KeyRow, RouteRow, ScopeRow};
use crate::error::{Result, StoreError};
use crate::store::Store;

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

/// A token's stored role: an admin token's must parse; a fleet token has
/// none.
pub(crate) fn token_role(
    kind: crate::TokenKind,
    stored: Option<&str>,
) -> std::result::Result<Option<crate::Role>, String> {
    match (kind, stored) {
        (crate::TokenKind::Fleet, _) => Ok(None),
        (crate::TokenKind::Admin, Some(role)) => role
            .parse()
            .map(Some)
            .map_err(|_| "an admin token's role is not one keyscope knows".to_owned()),
        (crate::TokenKind::Admin, None) => Err("an admin token has no role".to_owned()),
    }
}

/// A console session from its stored columns.
pub(crate) fn session(
    token: Option<&[u8]>,
    actor: String,
    role: &str,
    started_ms: i64,
    ends_ms: i64,
) -> std::result::Result<crate::ConsoleSession, String> {
    let token = token
        .map(<[u8; 32]>::try_from)
        .transpose()
        .map_err(|_| "a console session's token digest is not 32 bytes".to_owned())?;
    let role = role
        .parse()
        .map_err(|_| "a console session's role is not one keyscope knows".to_owned())?;
    Ok(crate::ConsoleSession {
        token,
        actor,
        role,
        started_ms: u64::try_from(started_ms).unwrap_or(0),
        ends_ms: u64::try_from(ends_ms).unwrap_or(0),
    })
}
