//! The store's contract: what the CLI, the admin API and the snapshot
//! builder need of a store, whatever keeps the data. SQLite
//! ([`crate::SqliteStore`]) is the embedded implementation, PostgreSQL
//! ([`crate::PostgresStore`]) the shared one; [`crate::AnyStore`] is
//! either, as `--store` names it.
//!
//! Every change is one transaction: it is whole or not at all. Names are
//! unique among the live, per-app and per-scope limits hold, and revocation
//! and deletion leave tombstones.

use keyscope_policy::snapshot::{OperationEntry, SnapshotData};
use keyscope_policy::{AgentsLevel, Requirement, RouteEntry, RuntimeSet};

use keyscope_keys::usage::KeyUse;

use crate::Role;
use crate::audit::{AuditEvent, AuditTrail};
use crate::changes::{Changes, Revisioned};
use crate::dump::Dump;
use crate::error::Result;
use crate::records::{
    ApiKey, ConsoleSession, Lifetime, NewKey, Quotas, Scope, ScopeRef, ScopeUpdate, Token,
    TokenKind,
};

/// The most console sessions a store keeps; past it, the oldest end.
pub const MAX_SESSIONS: u64 = 10_000;

/// A store of scopes, keys, limits, the operation catalogue and the route
/// table.
pub trait Store {
    /// Who the changes made from now on are audited as: `os:NAME` (the
    /// default, [`crate::audit::os_user`]) or `admin:NAME`.
    fn set_actor(&mut self, actor: &str);

    /// Creates a scope.
    fn create_scope(
        &mut self,
        app: &str,
        name: &str,
        agents: AgentsLevel,
        runtime: RuntimeSet,
    ) -> Result<Scope>;

    /// Live scopes, of one app or of all, ordered by app then name.
    fn list_scopes(&self, app: Option<&str>) -> Result<Vec<Scope>>;

    /// One live scope.
    fn scope(&self, scope: &ScopeRef) -> Result<Scope>;

    /// Changes a scope. The change is visible to the next decision.
    fn update_scope(&mut self, scope: &ScopeRef, update: &ScopeUpdate) -> Result<Scope>;

    /// Deletes a scope. Refuses while it has live keys, unless `revoke_keys`,
    /// which revokes them in the same transaction. Returns the deleted scope
    /// and the keys revoked.
    fn delete_scope(&mut self, scope: &ScopeRef, revoke_keys: bool)
    -> Result<(Scope, Vec<ApiKey>)>;

    /// Issues a key for a scope, valid until revoked. The returned secret
    /// exists nowhere else.
    fn create_key(&mut self, scope: &ScopeRef, name: &str) -> Result<NewKey> {
        self.create_key_delivered(scope, name, Lifetime::Unlimited, |_| {
            Ok::<_, std::convert::Infallible>(())
        })?
        .map(|((), key)| key)
        .map_err(|never| match never {})
    }

    /// Issues a key for a scope, valid for `lifetime` from the one clock
    /// reading its `created_at` records (or until revoked), and hands it
    /// to `deliver` (which shows the secret to its user) before the key is
    /// committed. If `deliver` fails, the key is rolled back: no key is ever
    /// live whose secret nobody got. A store error is the outer `Err`; a
    /// failed delivery the inner one.
    fn create_key_delivered<T, E>(
        &mut self,
        scope: &ScopeRef,
        name: &str,
        lifetime: Lifetime,
        deliver: impl FnOnce(&NewKey) -> std::result::Result<T, E>,
    ) -> Result<std::result::Result<(T, NewKey), E>>;

    /// Keys, live and revoked, of one scope or of all, by id.
    fn list_keys(&self, scope: Option<&ScopeRef>) -> Result<Vec<ApiKey>>;

    /// The app of key `id`'s scope (live or deleted): whose key it is.
    fn key_app(&self, id: u64) -> Result<String>;

    /// Revokes a key. Revoking a revoked key changes nothing and returns it
    /// with its original revocation time.
    fn revoke_key(&mut self, id: u64) -> Result<ApiKey>;

    /// The limits in force.
    fn quotas(&self) -> Result<Quotas>;

    /// Changes the limits. Existing scopes and keys over a lowered limit stay;
    /// only new ones are refused.
    fn set_quotas(&mut self, quotas: Quotas) -> Result<Quotas>;

    /// The operation catalogue, by name.
    fn operations(&self) -> Result<Vec<OperationEntry>>;

    /// Adds an operation to the catalogue or changes what it requires.
    fn set_operation(&mut self, name: &str, requires: Requirement) -> Result<OperationEntry>;

    /// Removes an operation from the catalogue; it is denied from then on.
    fn remove_operation(&mut self, name: &str) -> Result<()>;

    /// Everything a snapshot holds, read in one transaction so that it is
    /// consistent: the catalogue, the live scopes, and every key, with the
    /// revision they are at.
    fn snapshot_data(&mut self) -> Result<Revisioned<SnapshotData>>;

    /// The store's change revision: it grows with every committed change to
    /// what a snapshot holds ([`crate::changes`]).
    fn revision(&mut self) -> Result<u64>;

    /// What changed after `revision`, read in one transaction.
    fn changes_since(&mut self, revision: u64) -> Result<Changes>;

    /// Every row, read in one transaction, for `store copy`.
    fn dump(&mut self) -> Result<Dump>;

    /// Writes `dump` into this store in one transaction. Refused unless the
    /// store holds no scope and no key; its catalogue, routes, limits and
    /// admin token are replaced. `progress` is told of each row written.
    fn restore(&mut self, dump: &Dump, progress: &mut dyn FnMut(u64)) -> Result<()>;

    /// Tokens of one kind, live and revoked, by id.
    fn tokens(&self, kind: TokenKind) -> Result<Vec<Token>>;

    /// Adds a named token, given as its SHA-256 (the caller shows the token
    /// once); an admin token gets the role `admin`. Refused if a live token
    /// of its kind has the name, or if the digest was ever stored, of
    /// either kind.
    fn create_token(&mut self, kind: TokenKind, name: &str, digest: &[u8; 32]) -> Result<Token> {
        match kind {
            TokenKind::Admin => self.create_admin_token(name, &Role::Admin, digest),
            TokenKind::Fleet => self.create_fleet_token(name, digest),
        }
    }

    /// Adds a named admin token with `role`, as [`Store::create_token`].
    fn create_admin_token(&mut self, name: &str, role: &Role, digest: &[u8; 32]) -> Result<Token>;

    /// Adds a named fleet token, as [`Store::create_token`].
    fn create_fleet_token(&mut self, name: &str, digest: &[u8; 32]) -> Result<Token>;

    /// Keeps a new console session under `digest` (the SHA-256 of its id),
    /// and forgets sessions that ended (past `ends_ms`, or idle `idle_ms`
    /// at `now_ms`). Past [`MAX_SESSIONS`], the oldest end.
    fn open_session(
        &mut self,
        digest: &[u8; 32],
        session: &ConsoleSession,
        now_ms: u64,
        idle_ms: u64,
    ) -> Result<()>;

    /// The open session kept under `digest`, counting this as a use; a
    /// session that ended (at `ends_ms`, or idle `idle_ms`) is forgotten.
    fn session(
        &mut self,
        digest: &[u8; 32],
        now_ms: u64,
        idle_ms: u64,
    ) -> Result<Option<ConsoleSession>>;

    /// Ends the session kept under `digest` (signing out), everywhere.
    fn end_session(&mut self, digest: &[u8; 32]) -> Result<()>;

    /// Makes `digest` the live admin token named `name`, revoking any other
    /// of that name: `keyscope serve --admin-token-file`. Returns whether
    /// anything changed.
    fn install_admin_token(&mut self, name: &str, digest: &[u8; 32]) -> Result<bool>;

    /// Revokes the live token of `kind` named `name`: it is refused from its
    /// next request (an admin token) or the control plane's next read of
    /// the store (a fleet token).
    fn revoke_token(&mut self, kind: TokenKind, name: &str) -> Result<Token>;

    /// Replaces a key: issues a new one with the same scope, name and
    /// lifetime, hands the old key (as it now is) and the new one to
    /// `deliver` before committing (as [`Store::create_key_delivered`] does), and leaves the old one valid
    /// for `grace_ms` more (0: no more), after which it is denied as
    /// expired. Refused for a revoked, expired or already rotated key, and
    /// for a grace over [`crate::MAX_ROTATION_GRACE_MS`]. Returns the old
    /// key as it now is beside the new one.
    #[allow(clippy::type_complexity)]
    fn rotate_key_delivered<T, E>(
        &mut self,
        id: u64,
        grace_ms: u64,
        deliver: impl FnOnce(&ApiKey, &NewKey) -> std::result::Result<T, E>,
    ) -> Result<std::result::Result<(T, ApiKey, NewKey), E>>;

    /// Adds counted uses to the keys' figures, in one transaction. Not a
    /// change to what a snapshot holds (no revision) and not audited.
    /// Returns how many keys it updated.
    fn record_usage(&mut self, uses: &[KeyUse]) -> Result<u64>;

    /// Repairs usage counts that an older keyscope let a hostile report
    /// push out of range (SQLite turned an overflowing count into a REAL);
    /// returns how many keys it repaired. `keyscope store migrate` runs it.
    fn repair_usage(&mut self) -> Result<u64>;

    /// Appends an event that is not a store change (a policy swap) to the
    /// audit trail.
    fn record_event(&mut self, event: AuditEvent) -> Result<()>;

    /// The audit trail from `since` (a timestamp as the trail writes them;
    /// `None`: all of it), with its head, read in one transaction.
    fn audit_trail(&mut self, since: Option<&str>) -> Result<AuditTrail>;

    /// The route table, in matching order.
    fn routes(&self) -> Result<Vec<RouteEntry>>;

    /// Adds a route at the end of the table, or points an existing one (same
    /// method and pattern) at another operation.
    fn set_route(&mut self, method: &str, pattern: &str, op: &str) -> Result<RouteEntry>;

    /// Removes a route; requests it matched are denied from then on.
    fn remove_route(&mut self, method: &str, pattern: &str) -> Result<()>;
}
