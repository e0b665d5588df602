//! Opening a store file: recognising it, creating it, migrating its schema.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use keyscope_policy::routes::default_routes;
use keyscope_policy::snapshot::default_operations;
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};

use crate::error::{Result, StoreError as Error};

/// `PRAGMA application_id` of a keyscope store: "KSCP".
const APPLICATION_ID: i64 = 0x4b53_4350;

/// How long a writer waits for another process's transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Schema migrations; entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE scopes (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        app        TEXT NOT NULL,
        name       TEXT NOT NULL,
        agents     TEXT NOT NULL CHECK (agents IN ('none', 'view', 'edit', 'full')),
        runtime    INTEGER NOT NULL CHECK (runtime BETWEEN 0 AND 15),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        deleted_at TEXT
    );
    CREATE UNIQUE INDEX scopes_live_name ON scopes (app, name) WHERE deleted_at IS NULL;

    CREATE TABLE keys (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        scope_id   INTEGER NOT NULL REFERENCES scopes (id),
        name       TEXT NOT NULL,
        digest     BLOB NOT NULL UNIQUE CHECK (length(digest) = 32),
        prefix     TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE UNIQUE INDEX keys_live_name ON keys (scope_id, name) WHERE revoked_at IS NULL;

    CREATE TABLE operations (
        name     TEXT PRIMARY KEY,
        requires TEXT NOT NULL
    );

    CREATE TABLE settings (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
"#,
    r#"
    CREATE TABLE routes (
        position INTEGER PRIMARY KEY AUTOINCREMENT,
        method   TEXT NOT NULL,
        pattern  TEXT NOT NULL,
        op       TEXT NOT NULL,
        UNIQUE (method, pattern)
    );

    CREATE TABLE admin_token (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        digest     BLOB NOT NULL CHECK (length(digest) = 32),
        created_at TEXT NOT NULL
    );
"#,
    r#"
    ALTER TABLE keys ADD COLUMN not_after_ms INTEGER
        CHECK (not_after_ms IS NULL OR not_after_ms >= 0);
    -- Snapshot format 4 names a route's operation by its catalogue id, so a
    -- route to an operation no longer catalogued (which could only deny) goes.
    DELETE FROM routes WHERE op NOT IN (SELECT name FROM operations);
"#,
    // Change revisions (`crate::changes`): a row's `rev` is the revision of
    // its last change; rows from before start at 0, as does the store.
    r#"
    ALTER TABLE scopes ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE keys ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX scopes_rev ON scopes (rev);
    CREATE INDEX keys_rev ON keys (rev);
    CREATE TABLE revision (
        id        INTEGER PRIMARY KEY CHECK (id = 1),
        revision  INTEGER NOT NULL,
        catalogue INTEGER NOT NULL
    );
    INSERT INTO revision (id, revision, catalogue) VALUES (1, 0, 0);
"#,
    // Key lifecycle (rotation, last use), named admin tokens (the single
    // token becomes the one named `admin`), and the audit trail
    // (`crate::audit`).
    r#"
    ALTER TABLE keys ADD COLUMN rotated_at TEXT;
    ALTER TABLE keys ADD COLUMN successor_id INTEGER;
    ALTER TABLE keys ADD COLUMN last_used_ms INTEGER CHECK (last_used_ms IS NULL OR last_used_ms >= 0);
    ALTER TABLE keys ADD COLUMN uses INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0);
    -- A rotated key in its grace keeps its name while its successor takes it.
    DROP INDEX keys_live_name;
    CREATE UNIQUE INDEX keys_live_name ON keys (scope_id, name)
        WHERE revoked_at IS NULL AND rotated_at IS NULL;

    CREATE TABLE admin_tokens (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        name       TEXT NOT NULL,
        digest     BLOB NOT NULL UNIQUE CHECK (length(digest) = 32),
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE UNIQUE INDEX admin_tokens_live_name ON admin_tokens (name) WHERE revoked_at IS NULL;
    INSERT INTO admin_tokens (name, digest, created_at)
        SELECT 'admin', digest, created_at FROM admin_token;
    DROP TABLE admin_token;

    CREATE TABLE audit (
        seq    INTEGER PRIMARY KEY,
        at     TEXT NOT NULL,
        actor  TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        before TEXT,
        after  TEXT,
        prev   BLOB NOT NULL,
        hash   BLOB NOT NULL
    );
    CREATE INDEX audit_at ON audit (at);
    CREATE TABLE audit_head (
        id   INTEGER PRIMARY KEY CHECK (id = 1),
        seq  INTEGER NOT NULL,
        hash BLOB NOT NULL
    );
"#,
    FLEET_TOKENS,
    // Admin roles, and console sessions kept in the store (as the SHA-256
    // of their ids) so that every control plane sharing it knows them.
    ROLES_AND_SESSIONS,
];

/// Fleet tokens: one credential per gateway, beside the admin tokens in the
/// same table, so that no digest is ever taken by both kinds. The same SQL
/// on both backends (`crate::pg_schema` takes it too).
pub(crate) const FLEET_TOKENS: &str = r#"
    ALTER TABLE admin_tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'admin'
        CHECK (kind IN ('admin', 'fleet'));
    DROP INDEX admin_tokens_live_name;
    CREATE UNIQUE INDEX admin_tokens_live_name ON admin_tokens (kind, name)
        WHERE revoked_at IS NULL;
"#;

/// Admin roles and console sessions, the same SQL on both backends:
/// SQLite gives `BYTEA` columns no conversion (a BLOB stays a BLOB) and
/// `BIGINT` ones integer affinity.
pub(crate) const ROLES_AND_SESSIONS: &str = r#"
    ALTER TABLE admin_tokens ADD COLUMN role TEXT;
    UPDATE admin_tokens SET role = 'admin' WHERE kind = 'admin';
    CREATE TABLE console_sessions (
        digest       BYTEA PRIMARY KEY CHECK (length(digest) = 32),
        token        BYTEA CHECK (token IS NULL OR length(token) = 32),
        actor        TEXT NOT NULL,
        role         TEXT NOT NULL,
        started_ms   BIGINT NOT NULL,
        last_seen_ms BIGINT NOT NULL,
        ends_ms      BIGINT NOT NULL
    );
    CREATE INDEX console_sessions_token ON console_sessions (token);
"#;

/// The default operations schema 3 added (the platform's run-status,
/// session-read and attachment-delete routes); an older store gets them and
/// their routes when it is migrated, unless it already has those names.
const ADDED_IN_3: [&str; 4] = [
    "runs.status",
    "sessions.get",
    "sessions.list",
    "documents.delete",
];

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Opens (creating if needed) the store at `path`. A file that is not a
/// keyscope store is refused before anything is written to it.
pub(crate) fn open(path: &Path) -> Result<Connection> {
    check_file(path)?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let not_a_store = |why: String| Error::not_a_store(path.display(), why);
    // Reading the header is the first access; SQLite refuses a file that is
    // not a database here without writing to it.
    let (application_id, tables): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT application_id FROM pragma_application_id), \
                    (SELECT count(*) FROM sqlite_master)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(|e| not_a_store(e.to_string()))?;
    match application_id {
        APPLICATION_ID => {}
        0 if tables == 0 => {}
        0 => {
            return Err(not_a_store(
                "it is an SQLite database of another application".to_owned(),
            ));
        }
        other => {
            return Err(not_a_store(format!(
                "it is an SQLite database with application id {other:#x}"
            )));
        }
    }
    migrate(conn, path)
}

/// Refuses, without opening it as a database, a path that is not a regular
/// file (a device, a FIFO, a directory: SQLite would put its journal beside
/// it), and a file that is neither empty nor an SQLite database. A new store
/// is created here, readable and writable by its owner only; SQLite gives
/// its journal files the same mode.
fn check_file(path: &Path) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => {
            return Err(Error::not_a_store(
                path.display(),
                "it is not a regular file",
            ));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::OpenOptionsExt as _;
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                // Created empty: checked (and so remembered) below.
                Ok(_) => {}
                // A symbolic link to a missing file: not followed into a
                // new file somewhere else.
                Err(e)
                    if e.kind() == std::io::ErrorKind::AlreadyExists
                        && std::fs::symlink_metadata(path)
                            .is_ok_and(|meta| meta.file_type().is_symlink())
                        && std::fs::metadata(path).is_err() =>
                {
                    return Err(Error::not_a_store(
                        path.display(),
                        "it is a symbolic link to a file that does not exist",
                    ));
                }
                // Another process created it meanwhile: check theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return check_file(path);
                }
                Err(source) => return Err(io(source)),
            }
        }
        Err(source) => return Err(io(source)),
    }
    // POSIX record locks belong to a process and a file: closing *any*
    // descriptor of a database file drops every lock the process holds on
    // it, SQLite's included. Another process closing the database would
    // then think itself its last user and delete the WAL under this
    // process's live connections, which would never see another change (a
    // revocation, say). So this process reads a file's header once, before
    // any connection to that file exists, under this lock; a later open of
    // the same file skips it.
    static CHECKED: Mutex<BTreeSet<(u64, u64)>> = Mutex::new(BTreeSet::new());
    let mut checked = CHECKED.lock().unwrap_or_else(PoisonError::into_inner);
    let meta = std::fs::metadata(path).map_err(io)?;
    let inode = (meta.dev(), meta.ino());
    if checked.contains(&inode) {
        return Ok(());
    }
    let mut file = File::open(path).map_err(io)?;
    let mut header = Vec::with_capacity(SQLITE_HEADER.len());
    file.by_ref()
        .take(SQLITE_HEADER.len() as u64)
        .read_to_end(&mut header)
        .map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
    drop(file);
    if header.is_empty() || header == SQLITE_HEADER {
        // An empty file becomes this process's database once opened.
        checked.insert(inode);
        Ok(())
    } else {
        Err(Error::not_a_store(
            path.display(),
            "it is not an SQLite database",
        ))
    }
}

fn migrate(mut conn: Connection, path: &Path) -> Result<Connection> {
    {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(Error::StoreTooNew {
                store: path.display().to_string(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < SCHEMA_VERSION {
            let start = usize::try_from(version).unwrap_or(0);
            for migration in &MIGRATIONS[start..] {
                tx.execute_batch(migration)?;
            }
            if version == 0 {
                let mut insert =
                    tx.prepare("INSERT INTO operations (name, requires) VALUES (?1, ?2)")?;
                for op in default_operations() {
                    insert.execute(params![op.name, op.requires.to_string()])?;
                }
                drop(insert);
                tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            }
            if (1..3).contains(&version) {
                let mut insert = tx
                    .prepare("INSERT OR IGNORE INTO operations (name, requires) VALUES (?1, ?2)")?;
                for op in default_operations() {
                    if ADDED_IN_3.contains(&op.name.as_str()) {
                        insert.execute(params![op.name, op.requires.to_string()])?;
                    }
                }
            }
            if version < 3 {
                let mut insert = tx.prepare(
                    "INSERT OR IGNORE INTO routes (method, pattern, op) VALUES (?1, ?2, ?3)",
                )?;
                for route in default_routes() {
                    if version < 2 || ADDED_IN_3.contains(&route.op.as_str()) {
                        insert.execute(params![route.method, route.pattern, route.op])?;
                    }
                }
            }
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        tx.commit()?;
    }
    // WAL lets readers (evaluations, a server's snapshot rebuild) run while a
    // writer commits; FULL sync makes an acknowledged key survive a crash.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store as schema 2 left it: the nine operations and ten routes of
    /// that release, and a route whose operation was since removed.
    fn schema_2_store(path: &Path) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        for op in default_operations() {
            if !ADDED_IN_3.contains(&op.name.as_str()) {
                conn.execute(
                    "INSERT INTO operations (name, requires) VALUES (?1, ?2)",
                    params![op.name, op.requires.to_string()],
                )
                .unwrap();
            }
        }
        for route in default_routes() {
            if !ADDED_IN_3.contains(&route.op.as_str()) {
                conn.execute(
                    "INSERT INTO routes (method, pattern, op) VALUES (?1, ?2, ?3)",
                    params![route.method, route.pattern, route.op],
                )
                .unwrap();
            }
        }
        conn.execute(
            "INSERT INTO routes (method, pattern, op) VALUES ('GET', '/{app}/gone', 'gone.op')",
            [],
        )
        .unwrap();
        conn.execute_batch(
            "INSERT INTO scopes (app, name, agents, runtime, created_at, updated_at) \
                 VALUES ('acme', 's', 'view', 0, 'then', 'then');
             INSERT INTO keys (scope_id, name, digest, prefix, created_at) \
                 VALUES (1, 'k', zeroblob(32), 'ks_old', 'then');
             INSERT INTO admin_token (id, digest, created_at) VALUES (1, randomblob(32), 'then');",
        )
        .unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
    }

    #[test]
    fn a_schema_2_store_gains_not_after_and_the_new_routes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        schema_2_store(&path);
        let conn = open(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |row| row.get(0)).unwrap() };
        assert_eq!(count("SELECT count(*) FROM operations"), 13);
        assert_eq!(count("SELECT count(*) FROM routes"), 14);
        assert_eq!(
            count("SELECT count(*) FROM routes WHERE op = 'gone.op'"),
            0,
            "a route to an operation no longer catalogued is gone"
        );
        assert_eq!(
            count("SELECT count(*) FROM pragma_table_info('keys') WHERE name = 'not_after_ms'"),
            1
        );
        drop(conn);
        // Rows from before revisions are in the snapshot, and a builder
        // starting there sees later changes.
        let mut store = crate::SqliteStore::open(&path).unwrap();
        use crate::Store as _;
        let held = store.snapshot_data().unwrap();
        assert_eq!((held.revision, held.data.keys.len()), (0, 1));
        store.revoke_key(1).unwrap();
        let changes = store.changes_since(0).unwrap();
        assert_eq!((changes.revision, changes.keys.len()), (1, 1));
        assert!(changes.keys[0].revoked);
        // The one admin token of old is the live token named `admin`, and
        // the trail starts with the first change after the migration.
        let tokens = store.tokens(crate::TokenKind::Admin).unwrap();
        assert_eq!(tokens.len(), 1);
        assert_eq!(
            (tokens[0].name.as_str(), tokens[0].revoked_at.as_deref()),
            ("admin", None)
        );
        let trail = store.audit_trail(None).unwrap();
        assert_eq!(crate::audit::verify(&trail), Ok(1));
        assert_eq!(trail.entries[0].action, "key.revoke");
    }
}
