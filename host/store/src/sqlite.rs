//! The embedded store: SQLite, one transaction per change.
//!
//! Keys are stored only as their SHA-256 and a short display prefix.
//! Revoking a key or deleting a scope leaves a tombstone, so decisions can
//! say "revoked" and the audit trail survives.

use std::path::{Path, PathBuf};

use keyscope_keys::KeySecret;
use keyscope_keys::usage::KeyUse;
use keyscope_policy::snapshot::{KeyEntry, OperationEntry, ScopeEntry, SnapshotData};
use keyscope_policy::{AgentsLevel, Requirement, RouteEntry, RuntimeSet};
use rusqlite::{Connection, OptionalExtension as _, Row, Transaction, TransactionBehavior, params};

use crate::audit::{self, AuditEntry, AuditEvent, AuditTrail, Hash, Head};
use crate::changes::{Changes, Revisioned, ScopeChange};
use crate::dump::{Dump, KeyRow, RouteRow, ScopeRow, TokenRow};
use crate::error::{Result, StoreError as Error};
use crate::records::{
    ApiKey, ConsoleSession, KeyStatus, Lifetime, NewKey, Quotas, Scope, ScopeRef, ScopeUpdate,
    Token, TokenKind,
};
use crate::roles::Role;
use crate::store::Store;
use crate::{checks, fault, schema};

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// An open store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// Who changes are audited as.
    actor: String,
}

impl SqliteStore {
    /// Opens the store at `path`, creating it if it does not exist. A file
    /// that is not a keyscope store is refused and left untouched.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        let conn = schema::open(&path)?;
        Ok(Self {
            conn,
            path,
            actor: audit::os_user(),
        })
    }

    /// Opens an existing store; unlike [`Store::open`], never creates one.
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::NoStore(path.display().to_string()));
        }
        Self::open(path)
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A write transaction (it holds SQLite's write lock), and the actor
    /// its audit entries name.
    fn write(&mut self) -> Result<(Transaction<'_>, &str)> {
        let Self { conn, actor, .. } = self;
        Ok((
            conn.transaction_with_behavior(TransactionBehavior::Immediate)?,
            actor.as_str(),
        ))
    }
}

impl SqliteStore {
    fn new_token(
        &mut self,
        kind: TokenKind,
        name: &str,
        role: Option<&Role>,
        digest: &[u8; 32],
    ) -> Result<Token> {
        checks::name(checks::token_name(kind), name)?;
        let path = self.path.clone();
        let (tx, actor) = self.write()?;
        if live_token(&tx, kind, name, &path)?.is_some() {
            return Err(Error::DuplicateToken {
                kind,
                name: name.to_owned(),
            });
        }
        let token = insert_token(&tx, kind, name, role, digest, &path)?;
        append(&tx, actor, AuditEvent::token_created(&token))?;
        tx.commit()?;
        Ok(token)
    }
}

impl Store for SqliteStore {
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
        let (tx, actor) = self.write()?;
        let quotas = read_quotas(&tx)?;
        let count: u32 = tx.query_row(
            "SELECT count(*) FROM scopes WHERE app = ?1 AND deleted_at IS NULL",
            [app],
            |row| row.get(0),
        )?;
        checks::room_for_scope(app, count, &quotas)?;
        if find_scope(&tx, &scope_path(app, name))?.is_some() {
            return Err(Error::DuplicateScope {
                app: app.to_owned(),
                name: name.to_owned(),
            });
        }
        let rev = bump(&tx, false)?;
        tx.execute(
            &format!(
                "INSERT INTO scopes (app, name, agents, runtime, created_at, updated_at, rev) \
                 VALUES (?1, ?2, ?3, ?4, {NOW}, {NOW}, ?5)"
            ),
            params![app, name, agents.as_str(), runtime.bits(), rev],
        )?;
        let id = last_id(&tx)?;
        let scope = get_scope(&tx, &ScopeRef::Id(id))?;
        append(&tx, actor, AuditEvent::scope_created(&scope))?;
        tx.commit()?;
        Ok(scope)
    }

    fn list_scopes(&self, app: Option<&str>) -> Result<Vec<Scope>> {
        let mut stmt = self.conn.prepare(&format!(
            "{SCOPE_COLUMNS} WHERE deleted_at IS NULL AND (?1 IS NULL OR app = ?1) \
             ORDER BY app, name"
        ))?;
        let scopes = stmt
            .query_map([app], scope_from_row)?
            .collect::<rusqlite::Result<Result<Vec<_>>>>()??;
        Ok(scopes)
    }

    fn scope(&self, scope: &ScopeRef) -> Result<Scope> {
        get_scope(&self.conn, scope)
    }

    fn update_scope(&mut self, scope: &ScopeRef, update: &ScopeUpdate) -> Result<Scope> {
        let (tx, actor) = self.write()?;
        let current = get_scope(&tx, scope)?;
        if let Some(name) = &update.name {
            checks::name("scope name", name)?;
            if *name != current.name && find_scope(&tx, &scope_path(&current.app, name))?.is_some()
            {
                return Err(Error::DuplicateScope {
                    app: current.app,
                    name: name.clone(),
                });
            }
        }
        let rev = bump(&tx, false)?;
        tx.execute(
            &format!(
                "UPDATE scopes SET name = ?2, agents = ?3, runtime = ?4, updated_at = {NOW}, \
                 rev = ?5 WHERE id = ?1"
            ),
            params![
                current.id,
                update.name.as_deref().unwrap_or(&current.name),
                update.agents.unwrap_or(current.agents).as_str(),
                update.runtime.unwrap_or(current.runtime).bits(),
                rev,
            ],
        )?;
        let scope = get_scope(&tx, &ScopeRef::Id(current.id))?;
        append(&tx, actor, AuditEvent::scope_updated(&current, &scope))?;
        fault::pause(fault::Pause::InTransaction);
        tx.commit()?;
        fault::pause(fault::Pause::Committed);
        Ok(scope)
    }

    fn delete_scope(
        &mut self,
        scope: &ScopeRef,
        revoke_keys: bool,
    ) -> Result<(Scope, Vec<ApiKey>)> {
        let (tx, actor) = self.write()?;
        let current = get_scope(&tx, scope)?;
        let live: Vec<ApiKey> = list_keys(&tx, Some(current.id))?
            .into_iter()
            .filter(|key| key.revoked_at.is_none())
            .collect();
        if !live.is_empty() && !revoke_keys {
            return Err(Error::ScopeHasLiveKeys {
                scope: current.path(),
                count: live.len() as u64,
            });
        }
        let rev = bump(&tx, false)?;
        tx.execute(
            &format!(
                "UPDATE keys SET revoked_at = {NOW}, rev = ?2 \
                 WHERE scope_id = ?1 AND revoked_at IS NULL"
            ),
            params![current.id, rev],
        )?;
        tx.execute(
            &format!("UPDATE scopes SET deleted_at = {NOW}, rev = ?2 WHERE id = ?1"),
            params![current.id, rev],
        )?;
        let revoked = live
            .iter()
            .map(|key| get_key(&tx, key.id))
            .collect::<Result<Vec<_>>>()?;
        append(&tx, actor, AuditEvent::scope_deleted(&current, &revoked))?;
        tx.commit()?;
        Ok((current, revoked))
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
        let (tx, actor) = self.write()?;
        let created = insert_key(&tx, scope, name, lifetime, audit::now_ms())?;
        append(&tx, actor, AuditEvent::key_created(&created.key))?;
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
    }

    fn list_keys(&self, scope: Option<&ScopeRef>) -> Result<Vec<ApiKey>> {
        let scope_id = scope
            .map(|scope| self.scope(scope))
            .transpose()?
            .map(|s| s.id);
        list_keys(&self.conn, scope_id)
    }

    fn revoke_key(&mut self, id: u64) -> Result<ApiKey> {
        let Some(id_sql) = sql_id(id) else {
            return Err(Error::KeyNotFound(id));
        };
        let (tx, actor) = self.write()?;
        let live: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM keys WHERE id = ?1 AND revoked_at IS NULL)",
            [id_sql],
            |row| row.get(0),
        )?;
        if live {
            let before = get_key(&tx, id)?;
            let rev = bump(&tx, false)?;
            tx.execute(
                &format!("UPDATE keys SET revoked_at = {NOW}, rev = ?2 WHERE id = ?1"),
                params![id_sql, rev],
            )?;
            let after = get_key(&tx, id)?;
            append(&tx, actor, AuditEvent::key_revoked(&before, &after))?;
        }
        let key = get_key(&tx, id)?;
        tx.commit()?;
        Ok(key)
    }

    fn quotas(&self) -> Result<Quotas> {
        read_quotas(&self.conn)
    }

    fn set_quotas(&mut self, quotas: Quotas) -> Result<Quotas> {
        checks::quotas(&quotas)?;
        let (tx, actor) = self.write()?;
        let before = read_quotas(&tx)?;
        let mut upsert = tx.prepare(
            "INSERT INTO settings (name, value) VALUES (?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )?;
        upsert.execute(params!["scopes_per_app", quotas.scopes_per_app])?;
        upsert.execute(params!["keys_per_scope", quotas.keys_per_scope])?;
        drop(upsert);
        let quotas = read_quotas(&tx)?;
        append(&tx, actor, AuditEvent::limits_set(&before, &quotas))?;
        tx.commit()?;
        Ok(quotas)
    }

    fn operations(&self) -> Result<Vec<OperationEntry>> {
        read_operations(&self.conn)
    }

    fn set_operation(&mut self, name: &str, requires: Requirement) -> Result<OperationEntry> {
        checks::name("operation", name)?;
        let (tx, actor) = self.write()?;
        let before = read_operations(&tx)?.into_iter().find(|op| op.name == name);
        bump(&tx, true)?;
        tx.execute(
            "INSERT INTO operations (name, requires) VALUES (?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET requires = excluded.requires",
            params![name, requires.to_string()],
        )?;
        let entry = OperationEntry {
            name: name.to_owned(),
            requires,
        };
        append(
            &tx,
            actor,
            AuditEvent::operation_set(before.as_ref(), &entry),
        )?;
        tx.commit()?;
        Ok(entry)
    }

    fn remove_operation(&mut self, name: &str) -> Result<()> {
        let (tx, actor) = self.write()?;
        checks::unrouted(name, &read_routes(&tx)?)?;
        let Some(before) = read_operations(&tx)?.into_iter().find(|op| op.name == name) else {
            return Err(checks::no_operation(name));
        };
        tx.execute("DELETE FROM operations WHERE name = ?1", [name])?;
        bump(&tx, true)?;
        append(&tx, actor, AuditEvent::operation_removed(&before))?;
        tx.commit()?;
        Ok(())
    }

    fn snapshot_data(&mut self) -> Result<Revisioned<SnapshotData>> {
        if fault::store_read_fails() {
            return Err(Error::Injected("store-read"));
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)?;
        let (revision, _) = read_revision(&tx)?;
        let data = SnapshotData {
            operations: read_operations(&tx)?,
            scopes: list_scopes_for_snapshot(&tx)?,
            keys: snapshot_keys(&tx, ALL, &self.path)?,
            routes: read_routes(&tx)?,
        };
        tx.commit()?;
        Ok(Revisioned { revision, data })
    }

    fn revision(&mut self) -> Result<u64> {
        Ok(read_revision(&self.conn)?.0)
    }

    fn changes_since(&mut self, revision: u64) -> Result<Changes> {
        if fault::store_read_fails() {
            return Err(Error::Injected("store-read"));
        }
        let since = i64::try_from(revision).unwrap_or(i64::MAX);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)?;
        let (now, catalogue) = read_revision(&tx)?;
        let mut stmt = tx.prepare(
            "SELECT id, app, agents, runtime, deleted_at IS NOT NULL \
             FROM scopes INDEXED BY scopes_rev WHERE rev > ?1 ORDER BY id",
        )?;
        let scopes = stmt
            .query_map([since], |row| {
                Ok((
                    row.get::<_, u64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, u8>(3)?,
                    row.get::<_, bool>(4)?,
                ))
            })?
            .map(|row| {
                let (id, app, agents, runtime, deleted) = row?;
                scope_change(id, app, &agents, runtime, deleted)
            })
            .collect::<Result<Vec<_>>>()?;
        drop(stmt);
        let keys = snapshot_keys(&tx, since, &self.path)?;
        let catalogue = if catalogue > revision {
            Some((read_operations(&tx)?, read_routes(&tx)?))
        } else {
            None
        };
        tx.commit()?;
        Ok(Changes {
            revision: now,
            scopes,
            keys,
            catalogue,
        })
    }

    fn dump(&mut self) -> Result<Dump> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)?;
        let dump = dump(&tx, &self.path)?;
        tx.commit()?;
        Ok(dump)
    }

    fn restore(&mut self, dump: &Dump, progress: &mut dyn FnMut(u64)) -> Result<()> {
        let (tx, _) = self.write()?;
        restore(&tx, dump, progress)?;
        tx.commit()?;
        Ok(())
    }

    fn tokens(&self, kind: TokenKind) -> Result<Vec<Token>> {
        let mut stmt = self
            .conn
            .prepare(&format!("{TOKEN_COLUMNS} WHERE kind = ?1 ORDER BY id"))?;
        let rows = stmt
            .query_map([kind.as_str()], token_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|row| row.map_err(|why| Error::not_a_store(self.path.display(), why)))
            .collect()
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
        let (tx, _) = self.write()?;
        tx.execute(
            "DELETE FROM console_sessions WHERE ends_ms <= ?1 OR last_seen_ms <= ?1 - ?2",
            params![signed(now_ms), signed(idle_ms)],
        )?;
        tx.execute(
            "DELETE FROM console_sessions WHERE digest IN (SELECT digest FROM console_sessions \
             ORDER BY started_ms DESC LIMIT -1 OFFSET ?1)",
            [signed(crate::MAX_SESSIONS - 1)],
        )?;
        tx.execute(
            "INSERT INTO console_sessions (digest, token, actor, role, started_ms, last_seen_ms, \
             ends_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
            params![
                digest.as_slice(),
                session.token.as_ref().map(<[u8; 32]>::as_slice),
                session.actor,
                session.role.to_string(),
                signed(session.started_ms),
                signed(session.ends_ms),
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn session(
        &mut self,
        digest: &[u8; 32],
        now_ms: u64,
        idle_ms: u64,
    ) -> Result<Option<ConsoleSession>> {
        // Read first, without the write lock: a page view writes only to
        // count a use (at most once a second) or forget an ended session,
        // and either write may fail (a full disk) without opening anything:
        // an uncounted use only brings the idle end nearer.
        let row = self
            .conn
            .query_row(
                "SELECT token, actor, role, started_ms, last_seen_ms, ends_ms \
                 FROM console_sessions WHERE digest = ?1",
                [digest.as_slice()],
                |row| {
                    Ok((
                        row.get::<_, Option<Vec<u8>>>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)?,
                        row.get::<_, i64>(4)?,
                        row.get::<_, i64>(5)?,
                    ))
                },
            )
            .optional()?;
        let Some((token, actor, role, started, last_seen, ends)) = row else {
            return Ok(None);
        };
        let session = crate::copy::session(token.as_deref(), actor, &role, started, ends)
            .map_err(|why| Error::not_a_store(self.path.display(), why))?;
        let last_seen = u64::try_from(last_seen).unwrap_or(0);
        if !session.open_at(last_seen, now_ms, idle_ms) {
            let _ = self.conn.execute(
                "DELETE FROM console_sessions WHERE digest = ?1",
                [digest.as_slice()],
            );
            return Ok(None);
        }
        if now_ms.saturating_sub(last_seen) >= ConsoleSession::USE_EVERY_MS {
            let _ = self.conn.execute(
                "UPDATE console_sessions SET last_seen_ms = max(last_seen_ms, ?2) \
                 WHERE digest = ?1",
                params![digest.as_slice(), signed(now_ms)],
            );
        }
        Ok(Some(session))
    }

    fn key_app(&self, id: u64) -> Result<String> {
        let Some(id_sql) = sql_id(id) else {
            return Err(Error::KeyNotFound(id));
        };
        self.conn
            .query_row(
                "SELECT s.app FROM keys k JOIN scopes s ON s.id = k.scope_id WHERE k.id = ?1",
                [id_sql],
                |row| row.get(0),
            )
            .optional()?
            .ok_or(Error::KeyNotFound(id))
    }

    fn end_session(&mut self, digest: &[u8; 32]) -> Result<()> {
        self.conn.execute(
            "DELETE FROM console_sessions WHERE digest = ?1",
            [digest.as_slice()],
        )?;
        Ok(())
    }

    fn install_admin_token(&mut self, name: &str, digest: &[u8; 32]) -> Result<bool> {
        let kind = TokenKind::Admin;
        checks::name(checks::token_name(kind), name)?;
        let path = self.path.clone();
        let (tx, actor) = self.write()?;
        let before = live_token(&tx, kind, name, &path)?;
        if before.as_ref().is_some_and(|token| token.digest == *digest) {
            return Ok(false);
        }
        if let Some(before) = &before {
            tx.execute(
                &format!("UPDATE admin_tokens SET revoked_at = {NOW} WHERE id = ?1"),
                [before.id],
            )?;
        }
        let token = insert_token(&tx, kind, name, Some(&Role::Admin), digest, &path)?;
        append(
            &tx,
            actor,
            AuditEvent::token_installed(before.as_ref(), &token),
        )?;
        tx.commit()?;
        Ok(true)
    }

    fn revoke_token(&mut self, kind: TokenKind, name: &str) -> Result<Token> {
        let path = self.path.clone();
        let (tx, actor) = self.write()?;
        let Some(before) = live_token(&tx, kind, name, &path)? else {
            return Err(Error::TokenNotFound {
                kind,
                name: crate::error::printable(name),
            });
        };
        tx.execute(
            &format!("UPDATE admin_tokens SET revoked_at = {NOW} WHERE id = ?1"),
            [before.id],
        )?;
        let after = tx
            .query_row(
                &format!("{TOKEN_COLUMNS} WHERE id = ?1"),
                [before.id],
                token_from_row,
            )?
            .map_err(|why| Error::not_a_store(path.display(), why))?;
        append(&tx, actor, AuditEvent::token_revoked(&before, &after))?;
        tx.commit()?;
        Ok(after)
    }

    fn rotate_key_delivered<T, E>(
        &mut self,
        id: u64,
        grace_ms: u64,
        deliver: impl FnOnce(&ApiKey, &NewKey) -> std::result::Result<T, E>,
    ) -> Result<std::result::Result<(T, ApiKey, NewKey), E>> {
        checks::grace(grace_ms)?;
        fault::pause(fault::Pause::BeforeTransaction);
        let (tx, actor) = self.write()?;
        let old = get_key(&tx, id)?;
        // One clock reading: the rotation's time, the old key's deadline
        // and the new key's creation and expiry all count from it.
        let now = audit::now_ms();
        let deadline = checks::rotatable(&old, grace_ms, now)?;
        let rev = bump(&tx, false)?;
        tx.execute(
            "UPDATE keys SET rotated_at = ?4, not_after_ms = ?2, rev = ?3 WHERE id = ?1",
            params![sql_id(id), deadline, rev, audit::timestamp(now)],
        )?;
        let scope = ScopeRef::Id(old.scope_id);
        let lifetime = checks::successor_lifetime(&old, now);
        let created = insert_key(&tx, &scope, &old.name, lifetime, now)?;
        tx.execute(
            "UPDATE keys SET successor_id = ?2 WHERE id = ?1",
            params![sql_id(id), sql_id(created.key.id)],
        )?;
        let rotated = get_key(&tx, id)?;
        append(
            &tx,
            actor,
            AuditEvent::key_rotated(&old, &rotated, &created.key),
        )?;
        fault::pause(fault::Pause::InTransaction);
        let delivered = match deliver(&rotated, &created) {
            Ok(delivered) => delivered,
            // Dropping the transaction rolls the rotation back.
            Err(error) => return Ok(Err(error)),
        };
        tx.commit()?;
        Ok(Ok((delivered, rotated, created)))
    }

    fn record_usage(&mut self, uses: &[KeyUse]) -> Result<u64> {
        let (tx, _) = self.write()?;
        let mut update = tx.prepare(
            // Saturates at i64::MAX: past it, SQLite would store a REAL.
            "UPDATE keys SET uses = CASE WHEN uses > 9223372036854775807 - ?2 \
                     THEN 9223372036854775807 ELSE uses + ?2 END, \
                 last_used_ms = max(coalesce(last_used_ms, 0), ?3) WHERE id = ?1",
        )?;
        let mut updated = 0;
        for use_ in uses {
            // An id beyond i64::MAX names no key; a count or time beyond
            // it saturates, as the sum does.
            let Some(id) = sql_id(use_.key_id) else {
                continue;
            };
            let (count, at) = (signed(use_.uses), signed(use_.last_used_ms));
            updated += update.execute(params![id, count, at])? as u64;
        }
        drop(update);
        tx.commit()?;
        Ok(updated)
    }

    fn repair_usage(&mut self) -> Result<u64> {
        let (tx, _) = self.write()?;
        // A count that once overflowed into a REAL, or anything else that
        // is not a whole number in range: saturated, as an addition now is.
        let repaired = tx.execute(
            "UPDATE keys SET uses = CAST(max(0, min(uses, 9223372036854775807)) AS INTEGER) \
             WHERE typeof(uses) <> 'integer' OR uses < 0",
            [],
        )?;
        tx.commit()?;
        Ok(repaired as u64)
    }

    fn record_event(&mut self, event: AuditEvent) -> Result<()> {
        let (tx, actor) = self.write()?;
        append(&tx, actor, event)?;
        tx.commit()?;
        Ok(())
    }

    fn audit_trail(&mut self, since: Option<&str>) -> Result<AuditTrail> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)?;
        let trail = read_audit(&tx, since, &path)?;
        tx.commit()?;
        Ok(trail)
    }

    fn routes(&self) -> Result<Vec<RouteEntry>> {
        read_routes(&self.conn)
    }

    fn set_route(&mut self, method: &str, pattern: &str, op: &str) -> Result<RouteEntry> {
        let route = checks::route(method, pattern, op)?;
        let (tx, actor) = self.write()?;
        if read_operations(&tx)?.iter().all(|entry| entry.name != op) {
            return Err(checks::uncatalogued(op));
        }
        let before = read_routes(&tx)?
            .into_iter()
            .find(|r| r.method == method && r.pattern == pattern);
        bump(&tx, true)?;
        tx.execute(
            "INSERT INTO routes (method, pattern, op) VALUES (?1, ?2, ?3) \
             ON CONFLICT (method, pattern) DO UPDATE SET op = excluded.op",
            params![method, pattern, op],
        )?;
        append(&tx, actor, AuditEvent::route_set(before.as_ref(), &route))?;
        tx.commit()?;
        Ok(route)
    }

    fn remove_route(&mut self, method: &str, pattern: &str) -> Result<()> {
        let (tx, actor) = self.write()?;
        let before = read_routes(&tx)?
            .into_iter()
            .find(|r| r.method == method && r.pattern == pattern);
        let removed = tx.execute(
            "DELETE FROM routes WHERE method = ?1 AND pattern = ?2",
            params![method, pattern],
        )?;
        if removed == 0 {
            return Err(checks::no_route(method, pattern));
        }
        bump(&tx, true)?;
        append(
            &tx,
            actor,
            AuditEvent::route_removed(method, pattern, before.as_ref()),
        )?;
        tx.commit()?;
        Ok(())
    }
}

const SCOPE_COLUMNS: &str = "SELECT id, app, name, agents, runtime, created_at FROM scopes";
const KEY_COLUMNS: &str = "SELECT id, name, scope_id, prefix, created_at, revoked_at, \
     strftime('%Y-%m-%dT%H:%M:%fZ', not_after_ms / 1000.0, 'unixepoch'), not_after_ms, \
     rotated_at, successor_id, \
     strftime('%Y-%m-%dT%H:%M:%fZ', last_used_ms / 1000.0, 'unixepoch'), \
     CAST(max(0, min(uses, 9223372036854775807)) AS INTEGER) FROM keys";
/// Every token, of either kind, is a row of `admin_tokens` (the table
/// predates fleet tokens).
const TOKEN_COLUMNS: &str =
    "SELECT id, name, created_at, revoked_at, digest, kind, role FROM admin_tokens";

fn scope_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Scope>> {
    let agents: String = row.get(3)?;
    let runtime: u8 = row.get(4)?;
    Ok(Ok(Scope {
        id: row.get(0)?,
        app: row.get(1)?,
        name: row.get(2)?,
        agents: match agents.parse() {
            Ok(agents) => agents,
            Err(e) => return Ok(Err(Error::from(e))),
        },
        runtime: match crate::copy::runtime(runtime) {
            Ok(runtime) => runtime,
            Err(e) => return Ok(Err(e)),
        },
        created_at: row.get(5)?,
    }))
}

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<ApiKey> {
    let revoked_at: Option<String> = row.get(5)?;
    let not_after_ms: Option<u64> = row.get(7)?;
    Ok(ApiKey {
        id: row.get(0)?,
        name: row.get(1)?,
        scope_id: row.get(2)?,
        prefix: row.get(3)?,
        created_at: row.get(4)?,
        status: KeyStatus::at(revoked_at.is_some(), not_after_ms, audit::now_ms()),
        revoked_at,
        expires_at: row.get(6)?,
        not_after_ms,
        rotated_at: row.get(8)?,
        successor_id: row.get(9)?,
        last_used_at: row.get(10)?,
        uses: row.get(11)?,
    })
}

fn token_from_row(row: &Row<'_>) -> rusqlite::Result<std::result::Result<Token, String>> {
    let digest: Vec<u8> = row.get(4)?;
    let Ok(digest) = <[u8; 32]>::try_from(digest.as_slice()) else {
        return Ok(Err("a token digest is not 32 bytes".to_owned()));
    };
    let kind: String = row.get(5)?;
    let Some(kind) = TokenKind::parse(&kind) else {
        return Ok(Err("a token's kind is neither admin nor fleet".to_owned()));
    };
    let role = match crate::copy::token_role(kind, row.get::<_, Option<String>>(6)?.as_deref()) {
        Ok(role) => role,
        Err(why) => return Ok(Err(why)),
    };
    Ok(Ok(Token {
        id: row.get(0)?,
        kind,
        name: row.get(1)?,
        created_at: row.get(2)?,
        revoked_at: row.get(3)?,
        role,
        digest,
    }))
}

/// The live token of `kind` named `name`.
fn live_token(
    conn: &Connection,
    kind: TokenKind,
    name: &str,
    path: &Path,
) -> Result<Option<Token>> {
    conn.query_row(
        &format!("{TOKEN_COLUMNS} WHERE kind = ?1 AND name = ?2 AND revoked_at IS NULL"),
        [kind.as_str(), name],
        token_from_row,
    )
    .optional()?
    .transpose()
    .map_err(|why| Error::not_a_store(path.display(), why))
}

/// Inserts a live token; a digest used before (even revoked, even of the
/// other kind) is refused, so that a revoked token can never come back.
fn insert_token(
    conn: &Connection,
    kind: TokenKind,
    name: &str,
    role: Option<&Role>,
    digest: &[u8; 32],
    path: &Path,
) -> Result<Token> {
    let used: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM admin_tokens WHERE digest = ?1)",
        [digest.as_slice()],
        |row| row.get(0),
    )?;
    if used {
        return Err(checks::token_reused());
    }
    conn.execute(
        &format!(
            "INSERT INTO admin_tokens (kind, name, digest, role, created_at) \
             VALUES (?1, ?2, ?3, ?4, {NOW})"
        ),
        params![
            kind.as_str(),
            name,
            digest.as_slice(),
            role.map(Role::to_string)
        ],
    )?;
    live_token(conn, kind, name, path)?.ok_or_else(|| Error::TokenNotFound {
        kind,
        name: name.to_owned(),
    })
}

/// Checks the limits and inserts a new key, in a write transaction.
fn insert_key(
    tx: &Connection,
    scope: &ScopeRef,
    name: &str,
    lifetime: Lifetime,
    now_ms: u64,
) -> Result<NewKey> {
    let not_after = checks::not_after(lifetime, now_ms)?;
    let scope = get_scope(tx, scope)?;
    let quotas = read_quotas(tx)?;
    let (live, same_name): (u32, u32) = tx.query_row(
        "SELECT count(*), count(*) FILTER (WHERE name = ?2 AND rotated_at IS NULL) FROM keys \
         WHERE scope_id = ?1 AND revoked_at IS NULL \
           AND (rotated_at IS NULL OR not_after_ms >= ?3)",
        params![scope.id, name, signed(now_ms)],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    checks::room_for_key(&scope, name, live, same_name, &quotas)?;
    let secret = KeySecret::generate();
    let rev = bump(tx, false)?;
    tx.execute(
        "INSERT INTO keys (scope_id, name, digest, prefix, created_at, not_after_ms, rev) \
             VALUES (?1, ?2, ?3, ?4, ?7, ?5, ?6)",
        params![
            scope.id,
            name,
            &secret.digest().0[..],
            secret.display_prefix(),
            not_after,
            rev,
            audit::timestamp(now_ms)
        ],
    )?;
    let key = get_key(tx, last_id(tx)?)?;
    Ok(NewKey { key, secret })
}

/// Appends `event` to the audit trail, as `actor`, in this transaction.
fn append(conn: &Connection, actor: &str, event: AuditEvent) -> Result<()> {
    let head = read_head(conn)?;
    let entry = audit::seal(head, audit::timestamp(audit::now_ms()), actor, event);
    let seq = sql_id(entry.seq).ok_or_else(|| Error::invalid("audit entry", "", "out of range"))?;
    conn.execute(
        "INSERT INTO audit (seq, at, actor, action, target, before, after, prev, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            seq,
            entry.at,
            entry.actor,
            entry.action,
            entry.target,
            entry.before,
            entry.after,
            &entry.prev.0[..],
            &entry.hash.0[..]
        ],
    )?;
    conn.execute(
        "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?1, ?2) \
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        params![seq, &entry.hash.0[..]],
    )?;
    Ok(())
}

/// The audit trail's head, if it has one. A head that does not read as one
/// is returned as hash zero, for `verify` to name.
fn read_head(conn: &Connection) -> Result<Option<Head>> {
    Ok(conn
        .query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |row| {
            let hash: Vec<u8> = row.get(1)?;
            Ok((
                row.get::<_, u64>(0)?,
                Hash::from_slice(&hash).unwrap_or(Hash::GENESIS),
            ))
        })
        .optional()?)
}

fn read_audit(conn: &Connection, since: Option<&str>, path: &Path) -> Result<AuditTrail> {
    let mut stmt = conn.prepare(
        "SELECT seq, at, actor, action, target, before, after, prev, hash FROM audit \
         WHERE ?1 IS NULL OR at >= ?1 ORDER BY seq",
    )?;
    let entries = stmt
        .query_map([since], |row| {
            let prev: Vec<u8> = row.get(7)?;
            let hash: Vec<u8> = row.get(8)?;
            Ok((
                AuditEntry {
                    seq: row.get(0)?,
                    at: row.get(1)?,
                    actor: row.get(2)?,
                    action: row.get(3)?,
                    target: row.get(4)?,
                    before: row.get(5)?,
                    after: row.get(6)?,
                    prev: Hash::GENESIS,
                    hash: Hash::GENESIS,
                },
                prev,
                hash,
            ))
        })?
        .map(|row| {
            let (mut entry, prev, hash) = row?;
            let bad = || Error::not_a_store(path.display(), "an audit hash is not 32 bytes");
            entry.prev = Hash::from_slice(&prev).ok_or_else(bad)?;
            entry.hash = Hash::from_slice(&hash).ok_or_else(bad)?;
            Ok(entry)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(AuditTrail {
        entries,
        head: read_head(conn)?,
    })
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn find_scope(conn: &Connection, scope: &ScopeRef) -> Result<Option<Scope>> {
    let found = match scope {
        ScopeRef::Id(id) if sql_id(*id).is_none() => None,
        ScopeRef::Id(id) => conn
            .query_row(
                &format!("{SCOPE_COLUMNS} WHERE id = ?1 AND deleted_at IS NULL"),
                [id],
                scope_from_row,
            )
            .optional()?,
        ScopeRef::Path { app, name } => conn
            .query_row(
                &format!("{SCOPE_COLUMNS} WHERE app = ?1 AND name = ?2 AND deleted_at IS NULL"),
                [app, name],
                scope_from_row,
            )
            .optional()?,
    };
    found.transpose()
}

fn get_scope(conn: &Connection, scope: &ScopeRef) -> Result<Scope> {
    find_scope(conn, scope)?
        .ok_or_else(|| Error::ScopeNotFound(crate::error::printable(&scope.to_string())))
}

/// An id as SQLite stores it; an id beyond `i64::MAX` names nothing.
fn sql_id(id: u64) -> Option<i64> {
    i64::try_from(id).ok()
}

fn get_key(conn: &Connection, id: u64) -> Result<ApiKey> {
    let Some(id_sql) = sql_id(id) else {
        return Err(Error::KeyNotFound(id));
    };
    conn.query_row(
        &format!("{KEY_COLUMNS} WHERE id = ?1"),
        [id_sql],
        key_from_row,
    )
    .optional()?
    .ok_or(Error::KeyNotFound(id))
}

fn list_keys(conn: &Connection, scope_id: Option<u64>) -> Result<Vec<ApiKey>> {
    let mut stmt = conn.prepare(&format!(
        "{KEY_COLUMNS} WHERE ?1 IS NULL OR scope_id = ?1 ORDER BY id"
    ))?;
    let keys = stmt
        .query_map([scope_id], key_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(keys)
}

fn list_scopes_for_snapshot(conn: &Connection) -> Result<Vec<ScopeEntry>> {
    let mut stmt = conn.prepare(&format!(
        "{SCOPE_COLUMNS} WHERE deleted_at IS NULL ORDER BY id"
    ))?;
    let scopes = stmt
        .query_map([], scope_from_row)?
        .collect::<rusqlite::Result<Result<Vec<_>>>>()??;
    Ok(scopes
        .into_iter()
        .map(|scope| ScopeEntry {
            id: scope.id,
            app: scope.app,
            agents: scope.agents,
            runtime: scope.runtime,
        })
        .collect())
}

fn read_operations(conn: &Connection) -> Result<Vec<OperationEntry>> {
    let mut stmt = conn.prepare("SELECT name, requires FROM operations ORDER BY name")?;
    let rows = stmt
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(name, requires)| {
            Ok(OperationEntry {
                name,
                requires: requires.parse()?,
            })
        })
        .collect()
}

fn read_routes(conn: &Connection) -> Result<Vec<RouteEntry>> {
    let mut stmt = conn.prepare("SELECT method, pattern, op FROM routes ORDER BY position")?;
    let routes = stmt
        .query_map([], |row| {
            Ok(RouteEntry {
                method: row.get(0)?,
                pattern: row.get(1)?,
                op: row.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(routes)
}

fn read_quotas(conn: &Connection) -> Result<Quotas> {
    let get = |name: &str| -> Result<Option<u32>> {
        Ok(conn
            .query_row(
                "SELECT value FROM settings WHERE name = ?1",
                [name],
                |row| row.get(0),
            )
            .optional()?)
    };
    let defaults = Quotas::default();
    Ok(Quotas {
        scopes_per_app: get("scopes_per_app")?.unwrap_or(defaults.scopes_per_app),
        keys_per_scope: get("keys_per_scope")?.unwrap_or(defaults.keys_per_scope),
    })
}

fn last_id(conn: &Connection) -> Result<u64> {
    u64::try_from(conn.last_insert_rowid()).map_err(|_| {
        Error::Sqlite(rusqlite::Error::IntegralValueOutOfRange(
            0,
            conn.last_insert_rowid(),
        ))
    })
}

fn scope_path(app: &str, name: &str) -> ScopeRef {
    ScopeRef::Path {
        app: app.to_owned(),
        name: name.to_owned(),
    }
}

/// Takes the next revision for a change in this transaction; with
/// `catalogue`, the change is to the operations or routes.
fn bump(tx: &Connection, catalogue: bool) -> Result<i64> {
    let sql = if catalogue {
        "UPDATE revision SET revision = revision + 1, catalogue = revision + 1 WHERE id = 1 \
         RETURNING revision"
    } else {
        "UPDATE revision SET revision = revision + 1 WHERE id = 1 RETURNING revision"
    };
    Ok(tx.query_row(sql, [], |row| row.get(0))?)
}

/// The store's revision, and that of its last catalogue or route change.
fn read_revision(conn: &Connection) -> Result<(u64, u64)> {
    Ok(conn.query_row(
        "SELECT revision, catalogue FROM revision WHERE id = 1",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?)
}

/// `since` for every row: rows from before revisions carry revision 0.
const ALL: i64 = -1;

/// Every key changed after revision `since` ([`ALL`]: every key), in the
/// state a snapshot gives it, by id.
fn snapshot_keys(conn: &Connection, since: i64, path: &Path) -> Result<Vec<KeyEntry>> {
    // Every key in id order; or the few changed since a revision, found by
    // their revision's index (an id-order scan would read them all) and
    // put in id order here.
    let mut stmt = conn.prepare(if since == ALL {
        "SELECT k.digest, k.id, k.scope_id, \
                k.revoked_at IS NOT NULL OR s.deleted_at IS NOT NULL, k.not_after_ms \
         FROM keys k JOIN scopes s ON s.id = k.scope_id WHERE k.rev > ?1 ORDER BY k.id"
    } else {
        "SELECT k.digest, k.id, k.scope_id, \
                k.revoked_at IS NOT NULL OR s.deleted_at IS NOT NULL, k.not_after_ms \
         FROM keys k INDEXED BY keys_rev JOIN scopes s ON s.id = k.scope_id WHERE k.rev > ?1"
    })?;
    let mut keys = stmt
        .query_map([since], |row| {
            let digest: Vec<u8> = row.get(0)?;
            Ok((digest, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?))
        })?
        .map(|row| {
            let (digest, id, scope_id, revoked, not_after) = row?;
            crate::copy::key_entry(&digest, id, scope_id, revoked, not_after)
                .map_err(|why| Error::not_a_store(path.display(), why))
        })
        .collect::<Result<Vec<_>>>()?;
    keys.sort_unstable_by_key(|key| key.id);
    Ok(keys)
}

/// A scope as a change carries it.
fn scope_change(
    id: u64,
    app: String,
    agents: &str,
    runtime: u8,
    deleted: bool,
) -> Result<ScopeChange> {
    if deleted {
        return Ok(ScopeChange::Deleted(id));
    }
    Ok(ScopeChange::Live(ScopeEntry {
        id,
        app,
        agents: agents.parse()?,
        runtime: crate::copy::runtime(runtime)?,
    }))
}

/// The whole store, rows as they are.
fn dump(conn: &Connection, path: &Path) -> Result<Dump> {
    let (revision, catalogue_revision) = read_revision(conn)?;
    let scopes = conn
        .prepare(
            "SELECT id, app, name, agents, runtime, created_at, updated_at, deleted_at, rev \
             FROM scopes ORDER BY id",
        )?
        .query_map([], |row| {
            Ok(ScopeRow {
                id: row.get(0)?,
                app: row.get(1)?,
                name: row.get(2)?,
                agents: row.get(3)?,
                runtime: row.get(4)?,
                created_at: row.get(5)?,
                updated_at: row.get(6)?,
                deleted_at: row.get(7)?,
                rev: row.get(8)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let keys = conn
        .prepare(
            "SELECT id, scope_id, name, digest, prefix, created_at, revoked_at, not_after_ms, rev, \
                    rotated_at, successor_id, last_used_ms, \
                    CAST(max(0, min(uses, 9223372036854775807)) AS INTEGER) \
             FROM keys ORDER BY id",
        )?
        .query_map([], |row| {
            Ok(KeyRow {
                id: row.get(0)?,
                scope_id: row.get(1)?,
                name: row.get(2)?,
                digest: row.get(3)?,
                prefix: row.get(4)?,
                created_at: row.get(5)?,
                revoked_at: row.get(6)?,
                not_after_ms: row.get(7)?,
                rev: row.get(8)?,
                rotated_at: row.get(9)?,
                successor_id: row.get(10)?,
                last_used_ms: row.get(11)?,
                uses: row.get(12)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let operations = conn
        .prepare("SELECT name, requires FROM operations ORDER BY name")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let routes = conn
        .prepare("SELECT position, method, pattern, op FROM routes ORDER BY position")?
        .query_map([], |row| {
            Ok(RouteRow {
                position: row.get(0)?,
                method: row.get(1)?,
                pattern: row.get(2)?,
                op: row.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let settings = conn
        .prepare("SELECT name, value FROM settings ORDER BY name")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let tokens = conn
        .prepare(
            "SELECT id, kind, name, digest, created_at, revoked_at, role FROM admin_tokens \
             ORDER BY id",
        )?
        .query_map([], |row| {
            Ok(TokenRow {
                id: row.get(0)?,
                kind: row.get(1)?,
                name: row.get(2)?,
                digest: row.get(3)?,
                created_at: row.get(4)?,
                revoked_at: row.get(5)?,
                role: row.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let AuditTrail {
        entries: audit,
        head: audit_head,
    } = read_audit(conn, None, path)?;
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

/// Writes `dump` into this (empty) store, replacing its catalogue and routes.
fn restore(conn: &Connection, dump: &Dump, progress: &mut dyn FnMut(u64)) -> Result<()> {
    let held: i64 = conn.query_row(
        "SELECT (SELECT count(*) FROM scopes) + (SELECT count(*) FROM keys)",
        [],
        |row| row.get(0),
    )?;
    crate::copy::check_empty(held)?;
    conn.execute_batch("DELETE FROM routes; DELETE FROM operations; DELETE FROM settings;")?;
    let mut insert = conn.prepare(
        "INSERT INTO scopes (id, app, name, agents, runtime, created_at, updated_at, deleted_at, rev) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for s in &dump.scopes {
        insert.execute(params![
            s.id,
            s.app,
            s.name,
            s.agents,
            s.runtime,
            s.created_at,
            s.updated_at,
            s.deleted_at,
            s.rev
        ])?;
        progress(1);
    }
    let mut insert = conn.prepare(
        "INSERT INTO keys (id, scope_id, name, digest, prefix, created_at, revoked_at, not_after_ms, rev, \
                           rotated_at, successor_id, last_used_ms, uses) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    for k in &dump.keys {
        insert.execute(params![
            k.id,
            k.scope_id,
            k.name,
            k.digest,
            k.prefix,
            k.created_at,
            k.revoked_at,
            k.not_after_ms,
            k.rev,
            k.rotated_at,
            k.successor_id,
            k.last_used_ms,
            k.uses
        ])?;
        progress(1);
    }
    let mut insert = conn.prepare("INSERT INTO operations (name, requires) VALUES (?1, ?2)")?;
    for (name, requires) in &dump.operations {
        insert.execute(params![name, requires])?;
        progress(1);
    }
    let mut insert =
        conn.prepare("INSERT INTO routes (position, method, pattern, op) VALUES (?1, ?2, ?3, ?4)")?;
    for r in &dump.routes {
        insert.execute(params![r.position, r.method, r.pattern, r.op])?;
        progress(1);
    }
    let mut insert = conn.prepare("INSERT INTO settings (name, value) VALUES (?1, ?2)")?;
    for (name, value) in &dump.settings {
        insert.execute(params![name, value])?;
    }
    conn.execute_batch("DELETE FROM admin_tokens; DELETE FROM audit; DELETE FROM audit_head;")?;
    let mut insert = conn.prepare(
        "INSERT INTO admin_tokens (id, kind, name, digest, created_at, revoked_at, role) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for t in &dump.tokens {
        insert.execute(params![
            t.id,
            t.kind,
            t.name,
            t.digest,
            t.created_at,
            t.revoked_at,
            t.role
        ])?;
    }
    let mut insert = conn.prepare(
        "INSERT INTO audit (seq, at, actor, action, target, before, after, prev, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for e in &dump.audit {
        insert.execute(params![
            sql_id(e.seq),
            e.at,
            e.actor,
            e.action,
            e.target,
            e.before,
            e.after,
            &e.prev.0[..],
            &e.hash.0[..]
        ])?;
        progress(1);
    }
    if let Some((seq, hash)) = dump.audit_head {
        conn.execute(
            "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?1, ?2)",
            params![sql_id(seq), &hash.0[..]],
        )?;
    }
    conn.execute(
        "UPDATE revision SET revision = ?1, catalogue = ?2 WHERE id = 1",
        params![dump.revision, dump.catalogue_revision],
    )?;
    Ok(())
}
