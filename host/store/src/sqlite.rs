//! The embedded store: SQLite, one transaction per change.
//!
//! Keys are stored only as their SHA-256 and a short display prefix.
//! Revoking a key or deleting a scope leaves a tombstone, so decisions can
//! say "revoked" and the audit trail survives.

use std::path::{Path, PathBuf};

use keyscope_keys::KeySecret;
use keyscope_policy::snapshot::{KeyEntry, OperationEntry, ScopeEntry, SnapshotData};
use keyscope_policy::{AgentsLevel, KeyDigest, Requirement, RouteEntry, RuntimeSet};
use rusqlite::{Connection, OptionalExtension as _, Row, Transaction, TransactionBehavior, params};

use crate::error::{Result, StoreError as Error};
use crate::fault;
use crate::records::{ApiKey, NewKey, Quotas, Scope, ScopeRef, ScopeUpdate};
use crate::schema;
use crate::store::Store;

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// An open store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens the store at `path`, creating it if it does not exist. A file
    /// that is not a keyscope store is refused and left untouched.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        let conn = schema::open(&path)?;
        Ok(Self { conn, path })
    }

    /// Opens an existing store; unlike [`Store::open`], never creates one.
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::NoStore(path.to_owned()));
        }
        Self::open(path)
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SQLite's `data_version` for this connection: it changes when another
    /// connection (in this process or another) commits a change.
    pub fn data_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA data_version", [], |row| row.get(0))?)
    }

    fn write(&mut self) -> Result<Transaction<'_>> {
        Ok(self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?)
    }
}

impl Store for SqliteStore {
    fn create_scope(
        &mut self,
        app: &str,
        name: &str,
        agents: AgentsLevel,
        runtime: RuntimeSet,
    ) -> Result<Scope> {
        check_name("app", app)?;
        check_name("scope name", name)?;
        let tx = self.write()?;
        let quotas = read_quotas(&tx)?;
        let count: u32 = tx.query_row(
            "SELECT count(*) FROM scopes WHERE app = ?1 AND deleted_at IS NULL",
            [app],
            |row| row.get(0),
        )?;
        if count >= quotas.scopes_per_app {
            return Err(Error::ScopeLimit {
                app: app.to_owned(),
                limit: quotas.scopes_per_app,
            });
        }
        if find_scope(&tx, &scope_path(app, name))?.is_some() {
            return Err(Error::DuplicateScope {
                app: app.to_owned(),
                name: name.to_owned(),
            });
        }
        tx.execute(
            &format!(
                "INSERT INTO scopes (app, name, agents, runtime, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, {NOW}, {NOW})"
            ),
            params![app, name, agents.as_str(), runtime.bits()],
        )?;
        let id = last_id(&tx)?;
        let scope = get_scope(&tx, &ScopeRef::Id(id))?;
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
        let tx = self.write()?;
        let current = get_scope(&tx, scope)?;
        if let Some(name) = &update.name {
            check_name("scope name", name)?;
            if *name != current.name && find_scope(&tx, &scope_path(&current.app, name))?.is_some()
            {
                return Err(Error::DuplicateScope {
                    app: current.app,
                    name: name.clone(),
                });
            }
        }
        tx.execute(
            &format!(
                "UPDATE scopes SET name = ?2, agents = ?3, runtime = ?4, updated_at = {NOW} \
                 WHERE id = ?1"
            ),
            params![
                current.id,
                update.name.as_deref().unwrap_or(&current.name),
                update.agents.unwrap_or(current.agents).as_str(),
                update.runtime.unwrap_or(current.runtime).bits(),
            ],
        )?;
        let scope = get_scope(&tx, &ScopeRef::Id(current.id))?;
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
        let tx = self.write()?;
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
        tx.execute(
            &format!(
                "UPDATE keys SET revoked_at = {NOW} WHERE scope_id = ?1 AND revoked_at IS NULL"
            ),
            [current.id],
        )?;
        tx.execute(
            &format!("UPDATE scopes SET deleted_at = {NOW} WHERE id = ?1"),
            [current.id],
        )?;
        let revoked = live
            .iter()
            .map(|key| get_key(&tx, key.id))
            .collect::<Result<Vec<_>>>()?;
        tx.commit()?;
        Ok((current, revoked))
    }

    fn create_key_delivered<T, E>(
        &mut self,
        scope: &ScopeRef,
        name: &str,
        not_after: Option<u64>,
        deliver: impl FnOnce(&NewKey) -> std::result::Result<T, E>,
    ) -> Result<std::result::Result<(T, NewKey), E>> {
        check_name("key name", name)?;
        let not_after = not_after.map(check_not_after).transpose()?;
        fault::pause(fault::Pause::BeforeTransaction);
        let tx = self.write()?;
        let scope = get_scope(&tx, scope)?;
        let quotas = read_quotas(&tx)?;
        let (live, same_name): (u32, u32) = tx.query_row(
            "SELECT count(*), count(*) FILTER (WHERE name = ?2) FROM keys \
             WHERE scope_id = ?1 AND revoked_at IS NULL",
            params![scope.id, name],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        if same_name > 0 {
            return Err(Error::DuplicateKey {
                scope: scope.path(),
                name: name.to_owned(),
            });
        }
        if live >= quotas.keys_per_scope {
            return Err(Error::KeyLimit {
                scope: scope.path(),
                limit: quotas.keys_per_scope,
            });
        }
        let secret = KeySecret::generate();
        tx.execute(
            &format!(
                "INSERT INTO keys (scope_id, name, digest, prefix, created_at, not_after_ms) \
                 VALUES (?1, ?2, ?3, ?4, {NOW}, ?5)"
            ),
            params![
                scope.id,
                name,
                &secret.digest().0[..],
                secret.display_prefix(),
                not_after
            ],
        )?;
        let key = get_key(&tx, last_id(&tx)?)?;
        let created = NewKey { key, secret };
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
        let tx = self.write()?;
        tx.execute(
            &format!("UPDATE keys SET revoked_at = {NOW} WHERE id = ?1 AND revoked_at IS NULL"),
            [id_sql],
        )?;
        let key = get_key(&tx, id)?;
        tx.commit()?;
        Ok(key)
    }

    fn quotas(&self) -> Result<Quotas> {
        read_quotas(&self.conn)
    }

    fn set_quotas(&mut self, quotas: Quotas) -> Result<Quotas> {
        for (what, value) in [
            ("scopes per app", quotas.scopes_per_app),
            ("keys per scope", quotas.keys_per_scope),
        ] {
            if value == 0 {
                return Err(Error::invalid(
                    "limit",
                    &format!("{what} = 0"),
                    "a limit must be at least 1",
                ));
            }
        }
        let tx = self.write()?;
        let mut upsert = tx.prepare(
            "INSERT INTO settings (name, value) VALUES (?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )?;
        upsert.execute(params!["scopes_per_app", quotas.scopes_per_app])?;
        upsert.execute(params!["keys_per_scope", quotas.keys_per_scope])?;
        drop(upsert);
        let quotas = read_quotas(&tx)?;
        tx.commit()?;
        Ok(quotas)
    }

    fn operations(&self) -> Result<Vec<OperationEntry>> {
        read_operations(&self.conn)
    }

    fn set_operation(&mut self, name: &str, requires: Requirement) -> Result<OperationEntry> {
        check_name("operation", name)?;
        let tx = self.write()?;
        tx.execute(
            "INSERT INTO operations (name, requires) VALUES (?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET requires = excluded.requires",
            params![name, requires.to_string()],
        )?;
        tx.commit()?;
        Ok(OperationEntry {
            name: name.to_owned(),
            requires,
        })
    }

    fn remove_operation(&mut self, name: &str) -> Result<()> {
        let tx = self.write()?;
        let routed: Vec<String> = read_routes(&tx)?
            .into_iter()
            .filter(|route| route.op == name)
            .map(|route| format!("`{} {}`", route.method, route.pattern))
            .collect();
        if !routed.is_empty() {
            return Err(Error::invalid(
                "operation",
                name,
                format!(
                    "routes still name it ({}); remove them first with `keyscope route remove`",
                    routed.join(", ")
                ),
            ));
        }
        if tx.execute("DELETE FROM operations WHERE name = ?1", [name])? == 0 {
            return Err(Error::invalid(
                "operation",
                name,
                "it is not in the catalogue",
            ));
        }
        tx.commit()?;
        Ok(())
    }

    fn snapshot_data(&mut self) -> Result<SnapshotData> {
        if fault::store_read_fails() {
            return Err(Error::Injected("store-read"));
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)?;
        let operations = read_operations(&tx)?;
        let routes = read_routes(&tx)?;
        let scopes = list_scopes_for_snapshot(&tx)?;
        let mut stmt = tx.prepare(
            "SELECT k.digest, k.id, k.scope_id, \
                    k.revoked_at IS NOT NULL OR s.deleted_at IS NOT NULL, k.not_after_ms \
             FROM keys k JOIN scopes s ON s.id = k.scope_id ORDER BY k.id",
        )?;
        let keys = stmt
            .query_map([], |row| {
                let digest: Vec<u8> = row.get(0)?;
                Ok((digest, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?))
            })?
            .map(|row| {
                let (digest, id, scope_id, revoked, not_after) = row?;
                let digest =
                    <[u8; 32]>::try_from(digest.as_slice()).map_err(|_| Error::NotAStore {
                        path: self.path.clone(),
                        why: format!("key {id} has a digest that is not 32 bytes"),
                    })?;
                Ok(KeyEntry {
                    digest: KeyDigest(digest),
                    id,
                    scope_id,
                    revoked,
                    not_after,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        drop(stmt);
        tx.commit()?;
        Ok(SnapshotData {
            operations,
            scopes,
            keys,
            routes,
        })
    }

    fn admin_token_digest(&self) -> Result<Option<[u8; 32]>> {
        let digest: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT digest FROM admin_token WHERE id = 1", [], |row| {
                row.get(0)
            })
            .optional()?;
        digest
            .map(|digest| {
                <[u8; 32]>::try_from(digest.as_slice()).map_err(|_| Error::NotAStore {
                    path: self.path.clone(),
                    why: "the admin token digest is not 32 bytes".to_owned(),
                })
            })
            .transpose()
    }

    fn set_admin_token_digest(&mut self, digest: &[u8; 32]) -> Result<()> {
        let tx = self.write()?;
        tx.execute(
            &format!(
                "INSERT INTO admin_token (id, digest, created_at) VALUES (1, ?1, {NOW}) \
                 ON CONFLICT (id) DO UPDATE SET digest = excluded.digest, \
                 created_at = excluded.created_at"
            ),
            [digest.as_slice()],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn routes(&self) -> Result<Vec<RouteEntry>> {
        read_routes(&self.conn)
    }

    fn set_route(&mut self, method: &str, pattern: &str, op: &str) -> Result<RouteEntry> {
        let route = RouteEntry {
            method: method.to_owned(),
            pattern: pattern.to_owned(),
            op: op.to_owned(),
        };
        keyscope_policy::routes::check(&route)
            .map_err(|e| Error::invalid("route", &e.route, e.why))?;
        let tx = self.write()?;
        if read_operations(&tx)?.iter().all(|entry| entry.name != op) {
            return Err(Error::invalid(
                "operation",
                op,
                "it is not in the catalogue; add it with `keyscope op set`",
            ));
        }
        tx.execute(
            "INSERT INTO routes (method, pattern, op) VALUES (?1, ?2, ?3) \
             ON CONFLICT (method, pattern) DO UPDATE SET op = excluded.op",
            params![method, pattern, op],
        )?;
        tx.commit()?;
        Ok(route)
    }

    fn remove_route(&mut self, method: &str, pattern: &str) -> Result<()> {
        let tx = self.write()?;
        let removed = tx.execute(
            "DELETE FROM routes WHERE method = ?1 AND pattern = ?2",
            params![method, pattern],
        )?;
        if removed == 0 {
            return Err(Error::invalid(
                "route",
                &format!("{method} {pattern}"),
                "it is not in the route table",
            ));
        }
        tx.commit()?;
        Ok(())
    }
}

/// A not-after for a new key: in the future, and storable.
fn check_not_after(not_after: u64) -> Result<i64> {
    let stored = i64::try_from(not_after).map_err(|_| {
        Error::invalid("not-after", &not_after.to_string(), "too far in the future")
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    if not_after <= now {
        return Err(Error::invalid(
            "not-after",
            &not_after.to_string(),
            "it is not in the future, so the key would be expired already",
        ));
    }
    Ok(stored)
}

const SCOPE_COLUMNS: &str = "SELECT id, app, name, agents, runtime, created_at FROM scopes";
const KEY_COLUMNS: &str = "SELECT id, name, scope_id, prefix, created_at, revoked_at, \
     strftime('%Y-%m-%dT%H:%M:%fZ', not_after_ms / 1000.0, 'unixepoch'), not_after_ms FROM keys";

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
        runtime: match RuntimeSet::from_bits(runtime) {
            Some(runtime) => runtime,
            None => {
                return Ok(Err(Error::invalid(
                    "stored runtime permissions",
                    &runtime.to_string(),
                    "unknown permission bits",
                )));
            }
        },
        created_at: row.get(5)?,
    }))
}

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<ApiKey> {
    Ok(ApiKey {
        id: row.get(0)?,
        name: row.get(1)?,
        scope_id: row.get(2)?,
        prefix: row.get(3)?,
        created_at: row.get(4)?,
        revoked_at: row.get(5)?,
        expires_at: row.get(6)?,
        not_after_ms: row.get(7)?,
    })
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

/// Apps, scope names and key names: 1 to 64 characters from
/// `[A-Za-z0-9._-]`, starting with a letter or digit. No `/`, so `APP/NAME`
/// is unambiguous.
fn check_name(what: &'static str, value: &str) -> Result<()> {
    let first_ok = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if first_ok && rest_ok && value.len() <= 64 {
        Ok(())
    } else {
        Err(Error::invalid(
            what,
            value,
            "use 1 to 64 characters from [A-Za-z0-9._-], starting with a letter or digit",
        ))
    }
}
