//! keyscope's store: scopes, keys (as their SHA-256 only), limits, the
//! operation catalogue and the route table, their change revisions, and
//! the snapshot built from them.
//!
//! - [`Store`]: the contract every backend keeps.
//! - [`SqliteStore`]: the embedded store, one SQLite file.
//! - [`PostgresStore`]: the shared store, one PostgreSQL database that many
//!   processes on many machines use at once.
//! - [`AnyStore`]: either, as a [`Location`] (`--store`) names it.
//! - [`audit`]: the hash-chained trail of every change, and its check.
//! - [`changes`]: change revisions, and the rows changed since one.
//! - [`snapshot`]: the snapshot the policy component decides on, built
//!   whole or kept up to date from the changes.
//! - [`copy`]: a whole store from one backend to another.
//! - [`StoreError`]: what a change or a read refused, by cause.
//!
//! Every change is one transaction, and writers are serialised (SQLite's
//! write lock; PostgreSQL's lock on the revision row), so limits and unique
//! names hold across processes. A new key is committed only once its secret
//! was delivered ([`Store::create_key_delivered`]).
//!
//! No WebAssembly here: the store knows the snapshot format
//! (`keyscope-policy`) and the key format (`keyscope-keys`), nothing of
//! how a policy runs.

mod any;
pub mod audit;
pub mod changes;
mod checks;
pub mod copy;
mod dump;
mod error;
mod events;
pub mod fault;
mod location;
mod pg;
mod pg_schema;
mod records;
pub mod roles;
mod schema;
pub mod snapshot;
mod sqlite;
mod store;

pub use any::AnyStore;
pub use error::{Result, StoreError, printable};
pub use location::{Location, PostgresUrl};
pub use pg::PostgresStore;
pub use records::{
    ApiKey, ConsoleSession, KeyStatus, Lifetime, MAX_ROTATION_GRACE_MS, NewKey, Quotas, Scope,
    ScopeRef, ScopeUpdate, ShownKey, Token, TokenKind,
};
pub use roles::Role;
pub use sqlite::SqliteStore;

/// Checks a name (an app, a scope, a key, a token) by the one rule every
/// backend applies: 1 to 64 characters from `[A-Za-z0-9._-]`, starting
/// with a letter or digit, and not shaped like one of keyscope's secrets.
/// The error never quotes a secret-shaped value.
pub fn check_name(what: &'static str, value: &str) -> Result<()> {
    checks::name(what, value)
}
pub use store::{MAX_SESSIONS, Store};
