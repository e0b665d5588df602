//! keyscope's store: scopes, keys (as their SHA-256 only), limits, the
//! operation catalogue and the route table, and the snapshot built from
//! them.
//!
//! - [`Store`]: the contract every backend keeps.
//! - [`SqliteStore`]: the embedded store, one SQLite file, one transaction
//!   per change; a new key is committed only once its secret was delivered
//!   ([`SqliteStore::create_key_delivered`]).
//! - [`snapshot::build`]: the snapshot the policy component decides on.
//! - [`StoreError`]: what a change or a read refused, by cause.
//!
//! No WebAssembly here: the store knows the snapshot format
//! (`keyscope-policy`) and the key format (`keyscope-keys`), nothing of
//! how a policy runs.

mod error;
pub mod fault;
mod records;
mod schema;
pub mod snapshot;
mod sqlite;
mod store;

pub use error::{Result, StoreError, printable};
pub use records::{ApiKey, NewKey, Quotas, Scope, ScopeRef, ScopeUpdate, ShownKey};
pub use sqlite::SqliteStore;
pub use store::Store;
