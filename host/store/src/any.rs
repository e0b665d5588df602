//! Either backend, as a [`Location`] names it: what the CLI and the server
//! hold, so that neither knows which database is behind `--store`.

use keyscope_policy::snapshot::{OperationEntry, SnapshotData};
use keyscope_policy::{AgentsLevel, Requirement, RouteEntry, RuntimeSet};

use keyscope_keys::usage::KeyUse;

use crate::audit::{AuditEvent, AuditTrail};
use crate::changes::{Changes, Revisioned};
use crate::dump::Dump;
use crate::error::Result;
use crate::location::Location;
use crate::pg::PostgresStore;
use crate::records::{
    ApiKey, ConsoleSession, Lifetime, NewKey, Quotas, Scope, ScopeRef, ScopeUpdate, Token,
    TokenKind,
};
use crate::roles::Role;
use crate::sqlite::SqliteStore;
use crate::store::Store;

/// An open store of either backend.
#[derive(Debug)]
pub enum AnyStore {
    /// An SQLite file.
    Sqlite(SqliteStore),
    /// A PostgreSQL database (boxed: its URL and connection make it the
    /// larger by far).
    Postgres(Box<PostgresStore>),
}

impl AnyStore {
    /// Opens the store at `location`, creating it (the file, or the schema
    /// in the database) if there is none, and migrating an older one.
    pub fn open(location: &Location) -> Result<Self> {
        Ok(match location {
            Location::Sqlite(path) => Self::Sqlite(SqliteStore::open(path)?),
            Location::Postgres(url) => Self::Postgres(Box::new(PostgresStore::open(url)?)),
        })
    }

    /// Opens an existing store; never creates one.
    pub fn open_existing(location: &Location) -> Result<Self> {
        Ok(match location {
            Location::Sqlite(path) => Self::Sqlite(SqliteStore::open_existing(path)?),
            Location::Postgres(url) => Self::Postgres(Box::new(PostgresStore::open_existing(url)?)),
        })
    }
}

/// Calls the same method on whichever backend this is.
macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($store) => $call,
            AnyStore::Postgres($store) => $call,
        }
    };
}

impl Store for AnyStore {
    fn set_actor(&mut self, actor: &str) {
        dispatch!(self, s => s.set_actor(actor))
    }

    fn create_scope(
        &mut self,
        app: &str,
        name: &str,
        agents: AgentsLevel,
        runtime: RuntimeSet,
    ) -> Result<Scope> {
        dispatch!(self, s => s.create_scope(app, name, agents, runtime))
    }

    fn list_scopes(&self, app: Option<&str>) -> Result<Vec<Scope>> {
        dispatch!(self, s => s.list_scopes(app))
    }

    fn scope(&self, scope: &ScopeRef) -> Result<Scope> {
        dispatch!(self, s => s.scope(scope))
    }

    fn update_scope(&mut self, scope: &ScopeRef, update: &ScopeUpdate) -> Result<Scope> {
        dispatch!(self, s => s.update_scope(scope, update))
    }

    fn delete_scope(
        &mut self,
        scope: &ScopeRef,
        revoke_keys: bool,
    ) -> Result<(Scope, Vec<ApiKey>)> {
        dispatch!(self, s => s.delete_scope(scope, revoke_keys))
    }

    fn create_key_delivered<T, E>(
        &mut self,
        scope: &ScopeRef,
        name: &str,
        lifetime: Lifetime,
        deliver: impl FnOnce(&NewKey) -> std::result::Result<T, E>,
    ) -> Result<std::result::Result<(T, NewKey), E>> {
        dispatch!(self, s => s.create_key_delivered(scope, name, lifetime, deliver))
    }

    fn list_keys(&self, scope: Option<&ScopeRef>) -> Result<Vec<ApiKey>> {
        dispatch!(self, s => s.list_keys(scope))
    }

    fn revoke_key(&mut self, id: u64) -> Result<ApiKey> {
        dispatch!(self, s => s.revoke_key(id))
    }

    fn quotas(&self) -> Result<Quotas> {
        dispatch!(self, s => s.quotas())
    }

    fn set_quotas(&mut self, quotas: Quotas) -> Result<Quotas> {
        dispatch!(self, s => s.set_quotas(quotas))
    }

    fn operations(&self) -> Result<Vec<OperationEntry>> {
        dispatch!(self, s => s.operations())
    }

    fn set_operation(&mut self, name: &str, requires: Requirement) -> Result<OperationEntry> {
        dispatch!(self, s => s.set_operation(name, requires))
    }

    fn remove_operation(&mut self, name: &str) -> Result<()> {
        dispatch!(self, s => s.remove_operation(name))
    }

    fn snapshot_data(&mut self) -> Result<Revisioned<SnapshotData>> {
        dispatch!(self, s => s.snapshot_data())
    }

    fn revision(&mut self) -> Result<u64> {
        dispatch!(self, s => s.revision())
    }

    fn changes_since(&mut self, revision: u64) -> Result<Changes> {
        dispatch!(self, s => s.changes_since(revision))
    }

    fn dump(&mut self) -> Result<Dump> {
        dispatch!(self, s => s.dump())
    }

    fn restore(&mut self, dump: &Dump, progress: &mut dyn FnMut(u64)) -> Result<()> {
        dispatch!(self, s => s.restore(dump, progress))
    }

    fn tokens(&self, kind: TokenKind) -> Result<Vec<Token>> {
        dispatch!(self, s => s.tokens(kind))
    }

    fn create_admin_token(&mut self, name: &str, role: &Role, digest: &[u8; 32]) -> Result<Token> {
        dispatch!(self, s => s.create_admin_token(name, role, digest))
    }

    fn create_fleet_token(&mut self, name: &str, digest: &[u8; 32]) -> Result<Token> {
        dispatch!(self, s => s.create_fleet_token(name, digest))
    }

    fn open_session(
        &mut self,
        digest: &[u8; 32],
        session: &ConsoleSession,
        now_ms: u64,
        idle_ms: u64,
    ) -> Result<()> {
        dispatch!(self, s => s.open_session(digest, session, now_ms, idle_ms))
    }

    fn session(
        &mut self,
        digest: &[u8; 32],
        now_ms: u64,
        idle_ms: u64,
    ) -> Result<Option<ConsoleSession>> {
        dispatch!(self, s => s.session(digest, now_ms, idle_ms))
    }

    fn key_app(&self, id: u64) -> Result<String> {
        dispatch!(self, s => s.key_app(id))
    }

    fn end_session(&mut self, digest: &[u8; 32]) -> Result<()> {
        dispatch!(self, s => s.end_session(digest))
    }

    fn install_admin_token(&mut self, name: &str, digest: &[u8; 32]) -> Result<bool> {
        dispatch!(self, s => s.install_admin_token(name, digest))
    }

    fn revoke_token(&mut self, kind: TokenKind, name: &str) -> Result<Token> {
        dispatch!(self, s => s.revoke_token(kind, name))
    }

    fn rotate_key_delivered<T, E>(
        &mut self,
        id: u64,
        grace_ms: u64,
        deliver: impl FnOnce(&ApiKey, &NewKey) -> std::result::Result<T, E>,
    ) -> Result<std::result::Result<(T, ApiKey, NewKey), E>> {
        dispatch!(self, s => s.rotate_key_delivered(id, grace_ms, deliver))
    }

    fn record_usage(&mut self, uses: &[KeyUse]) -> Result<u64> {
        dispatch!(self, s => s.record_usage(uses))
    }

    fn repair_usage(&mut self) -> Result<u64> {
        dispatch!(self, s => s.repair_usage())
    }

    fn record_event(&mut self, event: AuditEvent) -> Result<()> {
        dispatch!(self, s => s.record_event(event))
    }

    fn audit_trail(&mut self, since: Option<&str>) -> Result<AuditTrail> {
        dispatch!(self, s => s.audit_trail(since))
    }

    fn routes(&self) -> Result<Vec<RouteEntry>> {
        dispatch!(self, s => s.routes())
    }

    fn set_route(&mut self, method: &str, pattern: &str, op: &str) -> Result<RouteEntry> {
        dispatch!(self, s => s.set_route(method, pattern, op))
    }

    fn remove_route(&mut self, method: &str, pattern: &str) -> Result<()> {
        dispatch!(self, s => s.remove_route(method, pattern))
    }
}
