//! The shared store: PostgreSQL, one database that many keyscope processes
//! on many machines use at once.
//!
//! Every write takes the revision row's lock first (`SELECT ... FOR
//! UPDATE`), so writers are serialised as SQLite serialises them: a limit
//! counted inside the transaction holds when it commits, and revisions
//! commit in order. The unique indexes back the name rules up. A statement
//! that PostgreSQL still refuses as a serialization failure or deadlock is
//! retried, before anything was shown to anyone.
//!
//! The connection is made on first use and made again after it broke: a
//! server outlives a database restart. While the database is unreachable,
//! every call fails with [`StoreError::Unavailable`] and changes nothing.

use std::cell::RefCell;

use keyscope_keys::KeySecret;
use keyscope_keys::usage::KeyUse;
use keyscope_policy::snapshot::{KeyEntry, OperationEntry, ScopeEntry, SnapshotData};
use keyscope_policy::{AgentsLevel, Requirement, RouteEntry, RuntimeSet};
use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, GenericClient, IsolationLevel, Row, Transaction};

use crate::audit::{self, AuditEntry, AuditEvent, AuditTrail, Hash, Head};
use crate::changes::{Changes, Revisioned, ScopeChange};
use crate::dump::{Dump, KeyRow, RouteRow, ScopeRow, TokenRow};
use crate::error::{Result, StoreError as Error};
use crate::location::PostgresUrl;
use crate::pg_schema::classify;
use crate::records::{
    ApiKey, ConsoleSession, KeyStatus, Lifetime, NewKey, Quotas, Scope, ScopeRef, ScopeUpdate,
    Token, TokenKind,
};
use crate::roles::Role;
use crate::store::Store;
use crate::{checks, fault, pg_schema};

const NOW: &str =
    r#"to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"#;

const SCOPE_COLUMNS: &str = "SELECT id, app, name, agents, runtime, created_at FROM scopes";
const KEY_COLUMNS: &str = r#"SELECT id, name, scope_id, prefix, created_at, revoked_at,
     to_char(to_timestamp(not_after_ms / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
     not_after_ms, rotated_at, successor_id,
     to_char(to_timestamp(last_used_ms / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
     uses FROM keys"#;
/// Every token, of either kind, is a row of `admin_tokens` (the table
/// predates fleet tokens).
const TOKEN_COLUMNS: &str =
    "SELECT id, name, created_at, revoked_at, digest, kind, role FROM admin_tokens";

/// How often a write refused as a serialization failure is tried again.
const RETRIES: u32 = 8;

/// A store in a PostgreSQL database.
pub struct PostgresStore {
    url: PostgresUrl,
    /// The connection; `None` until first used and after it broke.
    client: RefCell<Option<Client>>,
    /// Who changes are audited as.
    actor: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The synchronous client closes its connection by blocking on its own
/// runtime, which panics on a thread that drives an async runtime (a
/// server's last handle may be dropped there). So the connection is closed
/// on a thread of its own.
impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(client) = self.client.get_mut().take() {
            let closed = std::thread::Builder::new()
                .name("keyscope-pg-close".to_owned())
                .spawn(move || drop(client));
            if let Ok(closing) = closed {
                let _ = closing.join();
            }
        }
    }
}

impl PostgresStore {
    fn new_token(
        &mut self,
        kind: TokenKind,
        name: &str,
        role: Option<&Role>,
        digest: &[u8; 32],
    ) -> Result<Token> {
        checks::name(checks::token_name(kind), name)?;
        self.write(|tx| {
            if live_token(tx, kind, name, &self.url)?.is_some() {
                return Err(Error::DuplicateToken {
                    kind,
                    name: name.to_owned(),
                });
            }
            let token = insert_token(tx, kind, name, role, digest, &self.url)?;
            append(tx, &self.actor, AuditEvent::token_created(&token))?;
            Ok(token)
        })
    }

    /// Connects to the database at `url` and creates or migrates the
    /// store's schema there.
    pub fn open(url: &PostgresUrl) -> Result<Self> {
        let mut client = pg_schema::connect(url)?;
        pg_schema::migrate(&mut client, url).map_err(|e| classify(url, e))?;
        Ok(Self::with_client(url, client))
    }

    /// Connects to an existing store; never creates one.
    pub fn open_existing(url: &PostgresUrl) -> Result<Self> {
        let mut client = pg_schema::connect(url)?;
        if !pg_schema::exists(&mut client).map_err(|e| classify(url, e.into()))? {
            return Err(Error::NoStore(url.to_string()));
        }
        // Only read if it is at this build's schema (a role that may only
        // read opens it); an older one is migrated.
        pg_schema::migrate(&mut client, url).map_err(|e| classify(url, e))?;
        Ok(Self::with_client(url, client))
    }

    fn with_client(url: &PostgresUrl, client: Client) -> Self {
        Self {
            url: url.clone(),
            client: RefCell::new(Some(client)),
            actor: audit::os_user(),
        }
    }

    /// Runs `f` on the connection, connecting first if there is none or it
    /// broke. An error that says the database is out of reach drops the
    /// connection and comes back as [`Error::Unavailable`].
    fn with<T>(&self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let mut slot = self.client.borrow_mut();
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = None;
            *slot = Some(pg_schema::connect(&self.url)?);
        }
        let Some(client) = slot.as_mut() else {
            return Err(Error::Unavailable {
                store: self.url.to_string(),
                why: "no connection".to_owned(),
            });
        };
        let result = f(client).map_err(|e| classify(&self.url, e));
        if matches!(result, Err(Error::Unavailable { .. })) {
            *slot = None;
        }
        result
    }

    /// Runs `f` in a write transaction holding the store's write lock,
    /// retrying serialization failures, and commits.
    fn write<T>(&self, mut f: impl FnMut(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        self.with(|client| {
            let mut attempt = 0;
            loop {
                let mut tx = begin_write(client)?;
                match f(&mut tx).and_then(|value| {
                    tx.commit()?;
                    Ok(value)
                }) {
                    Err(error) if retryable(&error) && attempt < RETRIES => attempt += 1,
                    done => return done,
                }
            }
        })
    }

    /// Runs `f` in a read-only repeatable-read transaction: one consistent
    /// view of the store.
    fn read_consistent<T>(&self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        self.with(|client| {
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let value = f(&mut tx)?;
            tx.commit()?;
            Ok(value)
        })
    }
}

/// Begins a write: the revision row's lock is the store's write lock.
fn begin_write(client: &mut Client) -> Result<Transaction<'_>> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT 1 FROM revision WHERE id = 1 FOR UPDATE", &[])?;
    Ok(tx)
}

/// A serialization failure or deadlock: the transaction may simply be run
/// again.
fn retryable(error: &Error) -> bool {
    let Error::Postgres(error) = error else {
        return false;
    };
    matches!(
        error.code(),
        Some(code) if *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
    )
}

impl Store for PostgresStore {
    fn set_actor(&mut self, actor: &str) {
        actor.clone_into(&mut self.actor);
    }

    fn create_scope(
        &mut self,
        app: &str,
        name: &str,
        agents: AgentsLevel,
        runtime: RuntimeSet,
    ) -> Result<Scope> {
        checks::name("app", app)?;
        checks::name("scope name", name)?;
        self.write(|tx| {
            let quotas = read_quotas(tx)?;
            let live: i64 = tx
                .query_one(
                    "SELECT count(*) FROM scopes WHERE app = $1 AND deleted_at IS NULL",
                    &[&app],
                )?
                .get(0);
            checks::room_for_scope(app, count(live), &quotas)?;
            if find_scope(tx, &scope_path(app, name))?.is_some() {
                return Err(Error::DuplicateScope {
                    app: app.to_owned(),
                    name: name.to_owned(),
                });
            }
            let rev = bump(tx, false)?;
            let id: i64 = tx
                .query_one(
                    &format!(
                        "INSERT INTO scopes (app, name, agents, runtime, created_at, updated_at, rev) \
                         VALUES ($1, $2, $3, $4, {NOW}, {NOW}, $5) RETURNING id"
                    ),
                    &[&app, &name, &agents.as_str(), &i32::from(runtime.bits()), &rev],
                )?
                .get(0);
            let scope = get_scope(tx, &ScopeRef::Id(unsigned(id)))?;
            append(
                tx,
                &self.actor,
                AuditEvent::scope_created(&scope),
            )?;
            Ok(scope)
        })
    }

    fn list_scopes(&self, app: Option<&str>) -> Result<Vec<Scope>> {
        self.with(|client| {
            client
                .query(
                    &format!(
                        "{SCOPE_COLUMNS} WHERE deleted_at IS NULL AND ($1::text IS NULL OR app = $1) \
                         ORDER BY app, name"
                    ),
                    &[&app],
                )?
                .iter()
                .map(scope_from_row)
                .collect()
        })
    }

    fn scope(&self, scope: &ScopeRef) -> Result<Scope> {
        self.with(|client| get_scope(client, scope))
    }

    fn update_scope(&mut self, scope: &ScopeRef, update: &ScopeUpdate) -> Result<Scope> {
        self.write(|tx| {
            let current = get_scope(tx, scope)?;
            if let Some(name) = &update.name {
                checks::name("scope name", name)?;
                if *name != current.name
                    && find_scope(tx, &scope_path(&current.app, name))?.is_some()
                {
                    return Err(Error::DuplicateScope {
                        app: current.app,
                        name: name.clone(),
                    });
                }
            }
            let rev = bump(tx, false)?;
            tx.execute(
                &format!(
                    "UPDATE scopes SET name = $2, agents = $3, runtime = $4, updated_at = {NOW}, \
                     rev = $5 WHERE id = $1"
                ),
                &[
                    &signed(current.id),
                    &update.name.as_deref().unwrap_or(&current.name),
                    &update.agents.unwrap_or(current.agents).as_str(),
                    &i32::from(update.runtime.unwrap_or(current.runtime).bits()),
                    &rev,
                ],
            )?;
            let scope = get_scope(tx, &ScopeRef::Id(current.id))?;
            append(tx, &self.actor, AuditEvent::scope_updated(&current, &scope))?;
            fault::pause(fault::Pause::InTransaction);
            Ok(scope)
        })
    }

    fn delete_scope(
        &mut self,
        scope: &ScopeRef,
        revoke_keys: bool,
    ) -> Result<(Scope, Vec<ApiKey>)> {
        self.write(|tx| {
            let current = get_scope(tx, scope)?;
            let live: Vec<ApiKey> = list_keys(tx, Some(current.id))?
                .into_iter()
                .filter(|key| key.revoked_at.is_none())
                .collect();
            if !live.is_empty() && !revoke_keys {
                return Err(Error::ScopeHasLiveKeys {
                    scope: current.path(),
                    count: live.len() as u64,
                });
            }
            let rev = bump(tx, false)?;
            tx.execute(
                &format!(
                    "UPDATE keys SET revoked_at = {NOW}, rev = $2 \
                     WHERE scope_id = $1 AND revoked_at IS NULL"
                ),
                &[&signed(current.id), &rev],
            )?;
            tx.execute(
                &format!("UPDATE scopes SET deleted_at = {NOW}, rev = $2 WHERE id = $1"),
                &[&signed(current.id), &rev],
            )?;
            let revoked = live
                .iter()
                .map(|key| get_key(tx, key.id))
                .collect::<Result<Vec<_>>>()?;
            append(
                tx,
                &self.actor,
                AuditEvent::scope_deleted(&current, &revoked),
            )?;
            Ok((current.clone(), revoked))
        })
    }

    fn create_key_delivered<T, E>(
        &mut self,
        scope: &ScopeRef,
        name: &str,
        lifetime: Lifetime,
        deliver: impl FnOnce(&NewKey) -> std::result::Result<T, E>,
    ) -> Result<std::result::Result<(T, NewKey), E>> {
        checks::name("key name", name)?;
        fault::pause(fault::Pause::BeforeTransaction);
        let actor = self.actor.clone();
        self.with(|client| {
            // Retried only up to the insert: once the secret is shown, the
            // transaction commits or the key is gone.
            let mut attempt = 0;
            let (tx, created) = loop {
                let mut tx = begin_write(client)?;
                let inserted = insert_key(&mut tx, scope, name, lifetime, audit::now_ms())
                    .and_then(|created| {
                        append(&mut tx, &actor, AuditEvent::key_created(&created.key))?;
                        Ok(created)
                    });
                match inserted {
                    Ok(created) => break (tx, created),
                    Err(error) if retryable(&error) && attempt < RETRIES => {
                        drop(tx);
                        attempt += 1;
                    }
                    Err(error) => return Err(error),
                }
            };
            fault::pause(fault::Pause::InTransaction);
            let delivered = match deliver(&created) {
                Ok(delivered) => delivered,
                // Dropping the transaction rolls the key back.
                Err(error) => return Ok(Err(error)),
            };
            fault::pause(fault::Pause::Delivered);
            tx.commit()?;
            fault::pause(fault::Pause::Committed);
            Ok(Ok((delivered, created)))
        })
    }

    fn list_keys(&self, scope: Option<&ScopeRef>) -> Result<Vec<ApiKey>> {
        self.with(|client| {
            let scope_id = scope
                .map(|s| get_scope(client, s))
                .transpose()?
                .map(|s| s.id);
            list_keys(client, scope_id)
        })
    }

    fn revoke_key(&mut self, id: u64) -> Result<ApiKey> {
        let Ok(id_sql) = i64::try_from(id) else {
            return Err(Error::KeyNotFound(id));
        };
        self.write(|tx| {
            let live = tx
                .query_opt(
                    "SELECT 1 FROM keys WHERE id = $1 AND revoked_at IS NULL",
                    &[&id_sql],
                )?
                .is_some();
            if live {
                let before = get_key(tx, id)?;
                let rev = bump(tx, false)?;
                tx.execute(
                    &format!("UPDATE keys SET revoked_at = {NOW}, rev = $2 WHERE id = $1"),
                    &[&id_sql, &rev],
                )?;
                let after = get_key(tx, id)?;
                append(tx, &self.actor, AuditEvent::key_revoked(&before, &after))?;
            }
            get_key(tx, id)
        })
    }

    fn quotas(&self) -> Result<Quotas> {
        self.with(read_quotas)
    }

    fn set_quotas(&mut self, quotas: Quotas) -> Result<Quotas> {
        checks::quotas(&quotas)?;
        self.write(|tx| {
            let before = read_quotas(tx)?;
            for (name, value) in [
                ("scopes_per_app", quotas.scopes_per_app),
                ("keys_per_scope", quotas.keys_per_scope),
            ] {
                tx.execute(
                    "INSERT INTO settings (name, value) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    &[&name, &i64::from(value)],
                )?;
            }
            let after = read_quotas(tx)?;
            append(tx, &self.actor, AuditEvent::limits_set(&before, &after))?;
            Ok(after)
        })
    }

    fn operations(&self) -> Result<Vec<OperationEntry>> {
        self.with(read_operations)
    }

    fn set_operation(&mut self, name: &str, requires: Requirement) -> Result<OperationEntry> {
        checks::name("operation", name)?;
        self.write(|tx| {
            let before = read_operations(tx)?.into_iter().find(|op| op.name == name);
            bump(tx, true)?;
            tx.execute(
                "INSERT INTO operations (name, requires) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET requires = excluded.requires",
                &[&name, &requires.to_string()],
            )?;
            let entry = OperationEntry {
                name: name.to_owned(),
                requires,
            };
            append(
                tx,
                &self.actor,
                AuditEvent::operation_set(before.as_ref(), &entry),
            )?;
            Ok(entry)
        })
    }

    fn remove_operation(&mut self, name: &str) -> Result<()> {
        self.write(|tx| {
            checks::unrouted(name, &read_routes(tx)?)?;
            let Some(before) = read_operations(tx)?.into_iter().find(|op| op.name == name) else {
                return Err(checks::no_operation(name));
            };
            tx.execute("DELETE FROM operations WHERE name = $1", &[&name])?;
            bump(tx, true)?;
            append(tx, &self.actor, AuditEvent::operation_removed(&before))?;
            Ok(())
        })
    }

    fn snapshot_data(&mut self) -> Result<Revisioned<SnapshotData>> {
        if fault::store_read_fails() {
            return Err(Error::Injected("store-read"));
        }
        let url = self.url.clone();
        self.read_consistent(|tx| {
            let SmallTables {
                revision,
                operations,
                scopes,
                routes,
            } = small_tables(tx, &url)?;
            let data = SnapshotData {
                operations,
                scopes,
                keys: snapshot_keys(tx, -1, &url)?,
                routes,
            };
            Ok(Revisioned { revision, data })
        })
    }

    fn revision(&mut self) -> Result<u64> {
        self.with(|client| Ok(read_revision(client)?.0))
    }

    fn changes_since(&mut self, revision: u64) -> Result<Changes> {
        if fault::store_read_fails() {
            return Err(Error::Injected("store-read"));
        }
        let since = i64::try_from(revision).unwrap_or(i64::MAX);
        let url = self.url.clone();
        self.read_consistent(|tx| {
            let (now, catalogue) = read_revision(tx)?;
            let scopes = tx
                .query(
                    "SELECT id, app, agents, runtime, deleted_at IS NOT NULL FROM scopes \
                     WHERE rev > $1 ORDER BY id",
                    &[&since],
                )?
                .iter()
                .map(|row| {
                    let id = unsigned(row.get(0));
                    if row.get(4) {
                        return Ok(ScopeChange::Deleted(id));
                    }
                    Ok(ScopeChange::Live(ScopeEntry {
                        id,
                        app: row.get(1),
                        agents: row.get::<_, &str>(2).parse()?,
                        runtime: runtime(row.get(3))?,
                    }))
                })
                .collect::<Result<Vec<_>>>()?;
            let keys = snapshot_keys(tx, since, &url)?;
            let catalogue = if catalogue > revision {
                Some((read_operations(tx)?, read_routes(tx)?))
            } else {
                None
            };
            Ok(Changes {
                revision: now,
                scopes,
                keys,
                catalogue,
            })
        })
    }

    fn dump(&mut self) -> Result<Dump> {
        let url = self.url.clone();
        self.read_consistent(|tx| dump(tx, &url))
    }

    fn restore(&mut self, dump: &Dump, progress: &mut dyn FnMut(u64)) -> Result<()> {
        self.with(|client| {
            let mut tx = begin_write(client)?;
            restore(&mut tx, dump, progress)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn tokens(&self, kind: TokenKind) -> Result<Vec<Token>> {
        let url = self.url.clone();
        self.with(|client| {
            client
                .query(
                    &format!("{TOKEN_COLUMNS} WHERE kind = $1 ORDER BY id"),
                    &[&kind.as_str()],
                )?
                .iter()
                .map(|row| token_from_row(row, &url))
                .collect()
        })
    }

    fn create_admin_token(&mut self, name: &str, role: &Role, digest: &[u8; 32]) -> Result<Token> {
        self.new_token(TokenKind::Admin, name, Some(role), digest)
    }

    fn create_fleet_token(&mut self, name: &str, digest: &[u8; 32]) -> Result<Token> {
        self.new_token(TokenKind::Fleet, name, None, digest)
    }

    fn open_session(
        &mut self,
        digest: &[u8; 32],
        session: &ConsoleSession,
        now_ms: u64,
        idle_ms: u64,
    ) -> Result<()> {
        self.with(|client| {
            let mut tx = client.transaction()?;
            tx.execute(
                "DELETE FROM console_sessions WHERE ends_ms <= $1 OR last_seen_ms <= $1 - $2",
                &[&signed(now_ms), &signed(idle_ms)],
            )?;
            tx.execute(
                "DELETE FROM console_sessions WHERE digest IN (SELECT digest FROM \
                 console_sessions ORDER BY started_ms DESC OFFSET $1)",
                &[&signed(crate::MAX_SESSIONS - 1)],
            )?;
            tx.execute(
                "INSERT INTO console_sessions (digest, token, actor, role, started_ms, \
                 last_seen_ms, ends_ms) VALUES ($1, $2, $3, $4, $5, $5, $6)",
                &[
                    &digest.as_slice(),
                    &session.token.as_ref().map(<[u8; 32]>::as_slice),
                    &session.actor,
                    &session.role.to_string(),
                    &signed(session.started_ms),
                    &signed(session.ends_ms),
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    fn session(
        &mut self,
        digest: &[u8; 32],
        now_ms: u64,
        idle_ms: u64,
    ) -> Result<Option<ConsoleSession>> {
        let url = self.url.clone();
        self.with(|client| {
            // As on SQLite: read, then count the use or forget an ended
            // session, best effort (a role that may only read still finds
            // its sessions until they go idle).
            let Some(row) = client.query_opt(
                "SELECT token, actor, role, started_ms, last_seen_ms, ends_ms \
                 FROM console_sessions WHERE digest = $1",
                &[&digest.as_slice()],
            )?
            else {
                return Ok(None);
            };
            let session =
                crate::copy::session(row.get(0), row.get(1), row.get(2), row.get(3), row.get(5))
                    .map_err(|why| Error::not_a_store(&url, why))?;
            let last_seen = unsigned(row.get(4));
            if !session.open_at(last_seen, now_ms, idle_ms) {
                let _ = client.execute(
                    "DELETE FROM console_sessions WHERE digest = $1",
                    &[&digest.as_slice()],
                );
                return Ok(None);
            }
            if now_ms.saturating_sub(last_seen) >= ConsoleSession::USE_EVERY_MS {
                let _ = client.execute(
                    "UPDATE console_sessions SET last_seen_ms = GREATEST(last_seen_ms, $2) \
                     WHERE digest = $1",
                    &[&digest.as_slice(), &signed(now_ms)],
                );
            }
            Ok(Some(session))
        })
    }

    fn key_app(&self, id: u64) -> Result<String> {
        let Ok(id_sql) = i64::try_from(id) else {
            return Err(Error::KeyNotFound(id));
        };
        self.with(|client| {
            client
                .query_opt(
                    "SELECT s.app FROM keys k JOIN scopes s ON s.id = k.scope_id WHERE k.id = $1",
                    &[&id_sql],
                )?
                .map(|row| row.get(0))
                .ok_or(Error::KeyNotFound(id))
        })
    }

    fn end_session(&mut self, digest: &[u8; 32]) -> Result<()> {
        self.with(|client| {
            client.execute(
                "DELETE FROM console_sessions WHERE digest = $1",
                &[&digest.as_slice()],
            )?;
            Ok(())
        })
    }

    fn install_admin_token(&mut self, name: &str, digest: &[u8; 32]) -> Result<bool> {
        let kind = TokenKind::Admin;
        checks::name(checks::token_name(kind), name)?;
        self.write(|tx| {
            let before = live_token(tx, kind, name, &self.url)?;
            if before.as_ref().is_some_and(|token| token.digest == *digest) {
                return Ok(false);
            }
            if let Some(before) = &before {
                tx.execute(
                    &format!("UPDATE admin_tokens SET revoked_at = {NOW} WHERE id = $1"),
                    &[&signed(before.id)],
                )?;
            }
            let token = insert_token(tx, kind, name, Some(&Role::Admin), digest, &self.url)?;
            append(
                tx,
                &self.actor,
                AuditEvent::token_installed(before.as_ref(), &token),
            )?;
            Ok(true)
        })
    }

    fn revoke_token(&mut self, kind: TokenKind, name: &str) -> Result<Token> {
        self.write(|tx| {
            let Some(before) = live_token(tx, kind, name, &self.url)? else {
                return Err(Error::TokenNotFound {
                    kind,
                    name: crate::error::printable(name),
                });
            };
            let row = tx.query_one(
                &format!(
                    "UPDATE admin_tokens SET revoked_at = {NOW} WHERE id = $1 \
                     RETURNING id, name, created_at, revoked_at, digest, kind, role"
                ),
                &[&signed(before.id)],
            )?;
            let after = token_from_row(&row, &self.url)?;
            append(tx, &self.actor, AuditEvent::token_revoked(&before, &after))?;
            Ok(after)
        })
    }

    fn rotate_key_delivered<T, E>(
        &mut self,
        id: u64,
        grace_ms: u64,
        deliver: impl FnOnce(&ApiKey, &NewKey) -> std::result::Result<T, E>,
    ) -> Result<std::result::Result<(T, ApiKey, NewKey), E>> {
        checks::grace(grace_ms)?;
        fault::pause(fault::Pause::BeforeTransaction);
        let actor = self.actor.clone();
        self.with(|client| {
            // Retried only up to the insert, as a new key is.
            let mut attempt = 0;
            let (tx, rotated, created) = loop {
                let mut tx = begin_write(client)?;
                match rotate(&mut tx, id, grace_ms, &actor) {
                    Ok((rotated, created)) => break (tx, rotated, created),
                    Err(error) if retryable(&error) && attempt < RETRIES => {
                        drop(tx);
                        attempt += 1;
                    }
                    Err(error) => return Err(error),
                }
            };
            fault::pause(fault::Pause::InTransaction);
            let delivered = match deliver(&rotated, &created) {
                Ok(delivered) => delivered,
                // Dropping the transaction rolls the rotation back.
                Err(error) => return Ok(Err(error)),
            };
            tx.commit()?;
            Ok(Ok((delivered, rotated, created)))
        })
    }

    fn record_usage(&mut self, uses: &[KeyUse]) -> Result<u64> {
        let ids: Vec<i64> = uses.iter().map(|u| signed(u.key_id)).collect();
        let counts: Vec<i64> = uses.iter().map(|u| signed(u.uses)).collect();
        let ats: Vec<i64> = uses.iter().map(|u| signed(u.last_used_ms)).collect();
        // One statement, not under the write lock: it changes nothing a
        // snapshot holds.
        self.with(|client| {
            Ok(client.execute(
                // Saturates at i64::MAX rather than fail the whole batch.
                "UPDATE keys k SET uses = CASE WHEN k.uses > 9223372036854775807 - u.n \
                         THEN 9223372036854775807 ELSE k.uses + u.n END, \
                     last_used_ms = GREATEST(coalesce(k.last_used_ms, 0), u.at) \
                 FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS u(id, n, at) \
                 WHERE k.id = u.id",
                &[&ids, &counts, &ats],
            )?)
        })
    }

    fn repair_usage(&mut self) -> Result<u64> {
        // BIGINT cannot hold a REAL; a negative count is all there is to fix.
        self.with(|client| Ok(client.execute("UPDATE keys SET uses = 0 WHERE uses < 0", &[])?))
    }

    fn record_event(&mut self, event: AuditEvent) -> Result<()> {
        self.write(|tx| append(tx, &self.actor, event.clone()))
    }

    fn audit_trail(&mut self, since: Option<&str>) -> Result<AuditTrail> {
        let url = self.url.clone();
        self.read_consistent(|tx| read_audit(tx, since, &url))
    }

    fn routes(&self) -> Result<Vec<RouteEntry>> {
        self.with(read_routes)
    }

    fn set_route(&mut self, method: &str, pattern: &str, op: &str) -> Result<RouteEntry> {
        let route = checks::route(method, pattern, op)?;
        self.write(|tx| {
            if read_operations(tx)?.iter().all(|entry| entry.name != op) {
                return Err(checks::uncatalogued(op));
            }
            let before = read_routes(tx)?
                .into_iter()
                .find(|r| r.method == method && r.pattern == pattern);
            bump(tx, true)?;
            tx.execute(
                "INSERT INTO routes (method, pattern, op) VALUES ($1, $2, $3) \
                 ON CONFLICT (method, pattern) DO UPDATE SET op = excluded.op",
                &[&method, &pattern, &op],
            )?;
            append(
                tx,
                &self.actor,
                AuditEvent::route_set(before.as_ref(), &route),
            )?;
            Ok(route.clone())
        })
    }

    fn remove_route(&mut self, method: &str, pattern: &str) -> Result<()> {
        self.write(|tx| {
            let before = read_routes(tx)?
                .into_iter()
                .find(|r| r.method == method && r.pattern == pattern);
            let removed = tx.execute(
                "DELETE FROM routes WHERE method = $1 AND pattern = $2",
                &[&method, &pattern],
            )?;
            if removed == 0 {
                return Err(checks::no_route(method, pattern));
            }
            bump(tx, true)?;
            append(
                tx,
                &self.actor,
                AuditEvent::route_removed(method, pattern, before.as_ref()),
            )?;
            Ok(())
        })
    }
}

/// Checks the limits and inserts a new key, in a write transaction.
fn insert_key(
    tx: &mut Transaction<'_>,
    scope: &ScopeRef,
    name: &str,
    lifetime: Lifetime,
    now_ms: u64,
) -> Result<NewKey> {
    let not_after = checks::not_after(lifetime, now_ms)?;
    let scope = get_scope(tx, scope)?;
    let quotas = read_quotas(tx)?;
    let row = tx.query_one(
        "SELECT count(*), count(*) FILTER (WHERE name = $2 AND rotated_at IS NULL) FROM keys \
         WHERE scope_id = $1 AND revoked_at IS NULL \
           AND (rotated_at IS NULL OR not_after_ms >= $3)",
        &[&signed(scope.id), &name, &signed(now_ms)],
    )?;
    checks::room_for_key(&scope, name, count(row.get(0)), count(row.get(1)), &quotas)?;
    let secret = KeySecret::generate();
    let rev = bump(tx, false)?;
    let id: i64 = tx
        .query_one(
            "INSERT INTO keys (scope_id, name, digest, prefix, created_at, not_after_ms, rev) \
                 VALUES ($1, $2, $3, $4, $7, $5, $6) RETURNING id",
            &[
                &signed(scope.id),
                &name,
                &&secret.digest().0[..],
                &secret.display_prefix(),
                &not_after,
                &rev,
                &audit::timestamp(now_ms),
            ],
        )?
        .get(0);
    let key = get_key(tx, unsigned(id))?;
    Ok(NewKey { key, secret })
}

/// Takes the next revision for a change in this transaction; with
/// `catalogue`, the change is to the operations or routes.
fn bump(tx: &mut Transaction<'_>, catalogue: bool) -> Result<i64> {
    let sql = if catalogue {
        "UPDATE revision SET revision = revision + 1, catalogue = revision + 1 WHERE id = 1 \
         RETURNING revision"
    } else {
        "UPDATE revision SET revision = revision + 1 WHERE id = 1 RETURNING revision"
    };
    Ok(tx.query_one(sql, &[])?.get(0))
}

fn read_revision(client: &mut impl GenericClient) -> Result<(u64, u64)> {
    let row = client.query_one("SELECT revision, catalogue FROM revision WHERE id = 1", &[])?;
    Ok((unsigned(row.get(0)), unsigned(row.get(1))))
}

/// Every key changed after revision `since` (-1: every key), in the state
/// a snapshot gives it, by id; streamed, not collected as rows first.
fn snapshot_keys(
    client: &mut impl GenericClient,
    since: i64,
    url: &PostgresUrl,
) -> Result<Vec<KeyEntry>> {
    use postgres::fallible_iterator::FallibleIterator as _;
    let mut rows = client.query_raw(
        "SELECT k.digest, k.id, k.scope_id, \
                k.revoked_at IS NOT NULL OR s.deleted_at IS NOT NULL, k.not_after_ms \
         FROM keys k JOIN scopes s ON s.id = k.scope_id WHERE k.rev > $1",
        [&since as &(dyn ToSql + Sync)],
    )?;
    let mut keys = Vec::new();
    while let Some(row) = rows.next()? {
        let key = crate::copy::key_entry(
            row.get(0),
            unsigned(row.get(1)),
            unsigned(row.get(2)),
            row.get(3),
            row.get::<_, Option<i64>>(4).map(unsigned),
        )
        .map_err(|why| Error::not_a_store(url, why))?;
        keys.push(key);
    }
    // In id order, sorted here: the changed few come by their revision's
    // index, not in id order.
    keys.sort_unstable_by_key(|key| key.id);
    Ok(keys)
}

/// What a snapshot holds besides the keys.
struct SmallTables {
    revision: u64,
    operations: Vec<OperationEntry>,
    scopes: Vec<ScopeEntry>,
    routes: Vec<RouteEntry>,
}

/// The revision, the catalogue, the live scopes and the routes, in one
/// round trip (the simple protocol takes several statements at once and
/// answers in text); a small store's snapshot is mostly round trips.
fn small_tables(tx: &mut Transaction<'_>, url: &PostgresUrl) -> Result<SmallTables> {
    use postgres::SimpleQueryMessage;
    let messages = tx.simple_query(
        "SELECT revision FROM revision WHERE id = 1;
         SELECT name, requires FROM operations ORDER BY name;
         SELECT id, app, agents, runtime FROM scopes WHERE deleted_at IS NULL ORDER BY id;
         SELECT method, pattern, op FROM routes ORDER BY position;",
    )?;
    let mut results: Vec<Vec<Vec<String>>> = vec![Vec::new()];
    for message in messages {
        match message {
            SimpleQueryMessage::Row(row) => {
                let fields = (0..row.len())
                    .map(|i| row.get(i).unwrap_or_default().to_owned())
                    .collect();
                if let Some(result) = results.last_mut() {
                    result.push(fields);
                }
            }
            SimpleQueryMessage::CommandComplete(_) => results.push(Vec::new()),
            _ => {}
        }
    }
    let bad = |what: &str| Error::not_a_store(url, format!("{what} is not a number"));
    let number = |text: &str, what: &str| text.parse::<u64>().map_err(|_| bad(what));
    let [revision, operations, scopes, routes, ..] = results.as_slice() else {
        return Err(Error::not_a_store(url, "a table of the store is missing"));
    };
    let revision = match revision.first().and_then(|row| row.first()) {
        Some(text) => number(text, "the revision")?,
        None => return Err(Error::not_a_store(url, "it has no revision row")),
    };
    let operations = operations
        .iter()
        .map(|row| {
            Ok(OperationEntry {
                name: row[0].clone(),
                requires: row[1].parse()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let scopes = scopes
        .iter()
        .map(|row| {
            Ok(ScopeEntry {
                id: number(&row[0], "a scope id")?,
                app: row[1].clone(),
                agents: row[2].parse()?,
                runtime: runtime(
                    i32::try_from(number(&row[3], "a scope's runtime")?).unwrap_or(i32::MAX),
                )?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let routes = routes
        .iter()
        .map(|row| RouteEntry {
            method: row[0].clone(),
            pattern: row[1].clone(),
            op: row[2].clone(),
        })
        .collect();
    Ok(SmallTables {
        revision,
        operations,
        scopes,
        routes,
    })
}

fn scope_from_row(row: &Row) -> Result<Scope> {
    Ok(Scope {
        id: unsigned(row.get(0)),
        app: row.get(1),
        name: row.get(2),
        agents: row.get::<_, &str>(3).parse()?,
        runtime: runtime(row.get(4))?,
        created_at: row.get(5),
    })
}

fn key_from_row(row: &Row) -> ApiKey {
    let revoked_at: Option<String> = row.get(5);
    let not_after_ms = row.get::<_, Option<i64>>(7).map(unsigned);
    ApiKey {
        id: unsigned(row.get(0)),
        name: row.get(1),
        scope_id: unsigned(row.get(2)),
        prefix: row.get(3),
        created_at: row.get(4),
        status: KeyStatus::at(revoked_at.is_some(), not_after_ms, audit::now_ms()),
        revoked_at,
        expires_at: row.get(6),
        not_after_ms,
        rotated_at: row.get(8),
        successor_id: row.get::<_, Option<i64>>(9).map(unsigned),
        last_used_at: row.get(10),
        uses: unsigned(row.get(11)),
    }
}

fn token_from_row(row: &Row, url: &PostgresUrl) -> Result<Token> {
    let digest = <[u8; 32]>::try_from(row.get::<_, &[u8]>(4))
        .map_err(|_| Error::not_a_store(url, "a token digest is not 32 bytes"))?;
    let kind = TokenKind::parse(row.get(5))
        .ok_or_else(|| Error::not_a_store(url, "a token's kind is neither admin nor fleet"))?;
    let role =
        crate::copy::token_role(kind, row.get(6)).map_err(|why| Error::not_a_store(url, why))?;
    Ok(Token {
        id: unsigned(row.get(0)),
        kind,
        name: row.get(1),
        created_at: row.get(2),
        revoked_at: row.get(3),
        role,
        digest,
    })
}

/// The live token of `kind` named `name`.
fn live_token(
    client: &mut impl GenericClient,
    kind: TokenKind,
    name: &str,
    url: &PostgresUrl,
) -> Result<Option<Token>> {
    client
        .query_opt(
            &format!("{TOKEN_COLUMNS} WHERE kind = $1 AND name = $2 AND revoked_at IS NULL"),
            &[&kind.as_str(), &name],
        )?
        .map(|row| token_from_row(&row, url))
        .transpose()
}

/// Inserts a live token; a digest used before (even revoked, even of the
/// other kind) is refused, so that a revoked token can never come back.
fn insert_token(
    tx: &mut Transaction<'_>,
    kind: TokenKind,
    name: &str,
    role: Option<&Role>,
    digest: &[u8; 32],
    url: &PostgresUrl,
) -> Result<Token> {
    let digest = digest.as_slice();
    if tx
        .query_opt("SELECT 1 FROM admin_tokens WHERE digest = $1", &[&digest])?
        .is_some()
    {
        return Err(checks::token_reused());
    }
    let row = tx.query_one(
        &format!(
            "INSERT INTO admin_tokens (kind, name, digest, role, created_at) \
             VALUES ($1, $2, $3, $4, {NOW}) \
             RETURNING id, name, created_at, revoked_at, digest, kind, role"
        ),
        &[&kind.as_str(), &name, &digest, &role.map(Role::to_string)],
    )?;
    token_from_row(&row, url)
}

/// Marks key `id` rotated and issues its successor, in a write transaction.
fn rotate(
    tx: &mut Transaction<'_>,
    id: u64,
    grace_ms: u64,
    actor: &str,
) -> Result<(ApiKey, NewKey)> {
    let old = get_key(tx, id)?;
    // One clock reading: the rotation's time, the old key's deadline and
    // the new key's creation and expiry all count from it.
    let now = audit::now_ms();
    let deadline = checks::rotatable(&old, grace_ms, now)?;
    let rev = bump(tx, false)?;
    tx.execute(
        "UPDATE keys SET rotated_at = $4, not_after_ms = $2, rev = $3 WHERE id = $1",
        &[&signed(id), &deadline, &rev, &audit::timestamp(now)],
    )?;
    let scope = ScopeRef::Id(old.scope_id);
    let lifetime = checks::successor_lifetime(&old, now);
    let created = insert_key(tx, &scope, &old.name, lifetime, now)?;
    tx.execute(
        "UPDATE keys SET successor_id = $2 WHERE id = $1",
        &[&signed(id), &signed(created.key.id)],
    )?;
    let rotated = get_key(tx, id)?;
    append(
        tx,
        actor,
        AuditEvent::key_rotated(&old, &rotated, &created.key),
    )?;
    Ok((rotated, created))
}

/// Appends `event` to the audit trail, as `actor`, in this write
/// transaction (whose revision lock serialises appends).
fn append(tx: &mut Transaction<'_>, actor: &str, event: AuditEvent) -> Result<()> {
    let head = read_head(tx)?;
    let entry = audit::seal(head, audit::timestamp(audit::now_ms()), actor, event);
    tx.execute(
        "INSERT INTO audit (seq, at, actor, action, target, before, after, prev, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &signed(entry.seq),
            &entry.at,
            &entry.actor,
            &entry.action,
            &entry.target,
            &entry.before,
            &entry.after,
            &&entry.prev.0[..],
            &&entry.hash.0[..],
        ],
    )?;
    tx.execute(
        "INSERT INTO audit_head (id, seq, hash) VALUES (1, $1, $2) \
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        &[&signed(entry.seq), &&entry.hash.0[..]],
    )?;
    Ok(())
}

/// The audit trail's head; a hash that is not 32 bytes reads as zero, for
/// `verify` to name.
fn read_head(client: &mut impl GenericClient) -> Result<Option<Head>> {
    Ok(client
        .query_opt("SELECT seq, hash FROM audit_head WHERE id = 1", &[])?
        .map(|row| {
            (
                unsigned(row.get(0)),
                Hash::from_slice(row.get(1)).unwrap_or(Hash::GENESIS),
            )
        }))
}

fn read_audit(
    client: &mut impl GenericClient,
    since: Option<&str>,
    url: &PostgresUrl,
) -> Result<AuditTrail> {
    let entries = client
        .query(
            "SELECT seq, at, actor, action, target, before, after, prev, hash FROM audit \
             WHERE $1::text IS NULL OR at >= $1 ORDER BY seq",
            &[&since],
        )?
        .iter()
        .map(|row| {
            let bad = || Error::not_a_store(url, "an audit hash is not 32 bytes");
            Ok(AuditEntry {
                seq: unsigned(row.get(0)),
                at: row.get(1),
                actor: row.get(2),
                action: row.get(3),
                target: row.get(4),
                before: row.get(5),
                after: row.get(6),
                prev: Hash::from_slice(row.get(7)).ok_or_else(bad)?,
                hash: Hash::from_slice(row.get(8)).ok_or_else(bad)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(AuditTrail {
        entries,
        head: read_head(client)?,
    })
}

fn find_scope(client: &mut impl GenericClient, scope: &ScopeRef) -> Result<Option<Scope>> {
    let row = match scope {
        ScopeRef::Id(id) => match i64::try_from(*id) {
            Ok(id) => client.query_opt(
                &format!("{SCOPE_COLUMNS} WHERE id = $1 AND deleted_at IS NULL"),
                &[&id],
            )?,
            Err(_) => None,
        },
        ScopeRef::Path { app, name } => client.query_opt(
            &format!("{SCOPE_COLUMNS} WHERE app = $1 AND name = $2 AND deleted_at IS NULL"),
            &[app, name],
        )?,
    };
    row.as_ref().map(scope_from_row).transpose()
}

fn get_scope(client: &mut impl GenericClient, scope: &ScopeRef) -> Result<Scope> {
    find_scope(client, scope)?
        .ok_or_else(|| Error::ScopeNotFound(crate::error::printable(&scope.to_string())))
}

fn get_key(client: &mut impl GenericClient, id: u64) -> Result<ApiKey> {
    let Ok(id_sql) = i64::try_from(id) else {
        return Err(Error::KeyNotFound(id));
    };
    client
        .query_opt(&format!("{KEY_COLUMNS} WHERE id = $1"), &[&id_sql])?
        .as_ref()
        .map(key_from_row)
        .ok_or(Error::KeyNotFound(id))
}

fn list_keys(client: &mut impl GenericClient, scope_id: Option<u64>) -> Result<Vec<ApiKey>> {
    let scope_id = scope_id.map(signed);
    Ok(client
        .query(
            &format!("{KEY_COLUMNS} WHERE $1::bigint IS NULL OR scope_id = $1 ORDER BY id"),
            &[&scope_id],
        )?
        .iter()
        .map(key_from_row)
        .collect())
}

fn read_operations(client: &mut impl GenericClient) -> Result<Vec<OperationEntry>> {
    client
        .query("SELECT name, requires FROM operations ORDER BY name", &[])?
        .iter()
        .map(|row| {
            Ok(OperationEntry {
                name: row.get(0),
                requires: row.get::<_, &str>(1).parse()?,
            })
        })
        .collect()
}

fn read_routes(client: &mut impl GenericClient) -> Result<Vec<RouteEntry>> {
    Ok(client
        .query(
            "SELECT method, pattern, op FROM routes ORDER BY position",
            &[],
        )?
        .iter()
        .map(|row| RouteEntry {
            method: row.get(0),
            pattern: row.get(1),
            op: row.get(2),
        })
        .collect())
}

fn read_quotas(client: &mut impl GenericClient) -> Result<Quotas> {
    let mut quotas = Quotas::default();
    for row in client.query(
        "SELECT name, value FROM settings WHERE name IN ('scopes_per_app', 'keys_per_scope')",
        &[],
    )? {
        let value = u32::try_from(row.get::<_, i64>(1)).unwrap_or(u32::MAX);
        match row.get::<_, &str>(0) {
            "scopes_per_app" => quotas.scopes_per_app = value,
            _ => quotas.keys_per_scope = value,
        }
    }
    Ok(quotas)
}

fn dump(tx: &mut Transaction<'_>, url: &PostgresUrl) -> Result<Dump> {
    let (revision, catalogue_revision) = read_revision(tx)?;
    let scopes = tx
        .query(
            "SELECT id, app, name, agents, runtime, created_at, updated_at, deleted_at, rev \
             FROM scopes ORDER BY id",
            &[],
        )?
        .iter()
        .map(|row| ScopeRow {
            id: row.get(0),
            app: row.get(1),
            name: row.get(2),
            agents: row.get(3),
            runtime: u8::try_from(row.get::<_, i32>(4)).unwrap_or(u8::MAX),
            created_at: row.get(5),
            updated_at: row.get(6),
            deleted_at: row.get(7),
            rev: row.get(8),
        })
        .collect();
    let keys = tx
        .query(
            "SELECT id, scope_id, name, digest, prefix, created_at, revoked_at, not_after_ms, rev, \
                    rotated_at, successor_id, last_used_ms, uses \
             FROM keys ORDER BY id",
            &[],
        )?
        .iter()
        .map(|row| KeyRow {
            id: row.get(0),
            scope_id: row.get(1),
            name: row.get(2),
            digest: row.get(3),
            prefix: row.get(4),
            created_at: row.get(5),
            revoked_at: row.get(6),
            not_after_ms: row.get(7),
            rev: row.get(8),
            rotated_at: row.get(9),
            successor_id: row.get(10),
            last_used_ms: row.get(11),
            uses: row.get(12),
        })
        .collect();
    let operations = tx
        .query("SELECT name, requires FROM operations ORDER BY name", &[])?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let routes = tx
        .query(
            "SELECT position, method, pattern, op FROM routes ORDER BY position",
            &[],
        )?
        .iter()
        .map(|row| RouteRow {
            position: row.get(0),
            method: row.get(1),
            pattern: row.get(2),
            op: row.get(3),
        })
        .collect();
    let settings = tx
        .query("SELECT name, value FROM settings ORDER BY name", &[])?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let tokens = tx
        .query(
            "SELECT id, kind, name, digest, created_at, revoked_at, role FROM admin_tokens \
             ORDER BY id",
            &[],
        )?
        .iter()
        .map(|row| TokenRow {
            id: row.get(0),
            kind: row.get(1),
            name: row.get(2),
            digest: row.get(3),
            created_at: row.get(4),
            revoked_at: row.get(5),
            role: row.get(6),
        })
        .collect();
    let AuditTrail {
        entries: audit,
        head: audit_head,
    } = read_audit(tx, None, url)?;
    Ok(Dump {
        revision,
        catalogue_revision,
        scopes,
        keys,
        operations,
        routes,
        settings,
        tokens,
        audit,
        audit_head,
    })
}

fn restore(tx: &mut Transaction<'_>, dump: &Dump, progress: &mut dyn FnMut(u64)) -> Result<()> {
    let held: i64 = tx
        .query_one(
            "SELECT (SELECT count(*) FROM scopes) + (SELECT count(*) FROM keys)",
            &[],
        )?
        .get(0);
    crate::copy::check_empty(held)?;
    tx.batch_execute("DELETE FROM routes; DELETE FROM operations; DELETE FROM settings;")?;
    let insert = tx.prepare(
        "INSERT INTO scopes (id, app, name, agents, runtime, created_at, updated_at, deleted_at, rev) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )?;
    for s in &dump.scopes {
        tx.execute(
            &insert,
            &[
                &s.id,
                &s.app,
                &s.name,
                &s.agents,
                &i32::from(s.runtime),
                &s.created_at,
                &s.updated_at,
                &s.deleted_at,
                &s.rev,
            ],
        )?;
        progress(1);
    }
    let insert = tx.prepare(
        "INSERT INTO keys (id, scope_id, name, digest, prefix, created_at, revoked_at, not_after_ms, rev, \
                           rotated_at, successor_id, last_used_ms, uses) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )?;
    for k in &dump.keys {
        tx.execute(
            &insert,
            &[
                &k.id,
                &k.scope_id,
                &k.name,
                &k.digest,
                &k.prefix,
                &k.created_at,
                &k.revoked_at,
                &k.not_after_ms,
                &k.rev,
                &k.rotated_at,
                &k.successor_id,
                &k.last_used_ms,
                &k.uses,
            ],
        )?;
        progress(1);
    }
    for (name, requires) in &dump.operations {
        tx.execute(
            "INSERT INTO operations (name, requires) VALUES ($1, $2)",
            &[name, requires],
        )?;
        progress(1);
    }
    for r in &dump.routes {
        tx.execute(
            "INSERT INTO routes (position, method, pattern, op) VALUES ($1, $2, $3, $4)",
            &[&r.position, &r.method, &r.pattern, &r.op],
        )?;
        progress(1);
    }
    for (name, value) in &dump.settings {
        tx.execute(
            "INSERT INTO settings (name, value) VALUES ($1, $2)",
            &[name, value],
        )?;
    }
    tx.batch_execute("DELETE FROM admin_tokens; DELETE FROM audit; DELETE FROM audit_head;")?;
    for t in &dump.tokens {
        tx.execute(
            "INSERT INTO admin_tokens (id, kind, name, digest, created_at, revoked_at, role) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &t.id,
                &t.kind,
                &t.name,
                &t.digest,
                &t.created_at,
                &t.revoked_at,
                &t.role,
            ],
        )?;
    }
    let insert = tx.prepare(
        "INSERT INTO audit (seq, at, actor, action, target, before, after, prev, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )?;
    for e in &dump.audit {
        tx.execute(
            &insert,
            &[
                &signed(e.seq),
                &e.at,
                &e.actor,
                &e.action,
                &e.target,
                &e.before,
                &e.after,
                &&e.prev.0[..],
                &&e.hash.0[..],
            ],
        )?;
        progress(1);
    }
    if let Some((seq, hash)) = dump.audit_head {
        tx.execute(
            "INSERT INTO audit_head (id, seq, hash) VALUES (1, $1, $2)",
            &[&signed(seq), &&hash.0[..]],
        )?;
    }
    // The identities continue after the copied ids.
    tx.batch_execute(
        "SELECT setval(pg_get_serial_sequence('scopes', 'id'), coalesce(max(id), 0) + 1, false) FROM scopes;
         SELECT setval(pg_get_serial_sequence('keys', 'id'), coalesce(max(id), 0) + 1, false) FROM keys;
         SELECT setval(pg_get_serial_sequence('routes', 'position'), coalesce(max(position), 0) + 1, false) FROM routes;
         SELECT setval(pg_get_serial_sequence('admin_tokens', 'id'), coalesce(max(id), 0) + 1, false) FROM admin_tokens;",
    )?;
    tx.execute(
        "UPDATE revision SET revision = $1, catalogue = $2 WHERE id = 1",
        &[&signed(dump.revision), &signed(dump.catalogue_revision)],
    )?;
    Ok(())
}

/// Stored runtime permission bits.
fn runtime(bits: i32) -> Result<RuntimeSet> {
    crate::copy::runtime(u8::try_from(bits).unwrap_or(u8::MAX))
}

/// An id or revision as PostgreSQL stores it (`BIGINT`, never negative
/// here: identities and revisions start at 1, the checks refuse less).
fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn count(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

fn scope_path(app: &str, name: &str) -> ScopeRef {
    ScopeRef::Path {
        app: app.to_owned(),
        name: name.to_owned(),
    }
}
