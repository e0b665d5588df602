//! The store's errors: what a change or a read refused, and why.

use std::path::PathBuf;

/// Everything the store can refuse or fail at. Messages name the offending
/// input in backticks (control characters escaped) and say what would be
/// accepted.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store's schema is older than this build's, and the role it was
    /// opened with may not migrate it.
    #[error(
        "store `{store}` is at schema version {found} and this keyscope needs {needed}, but this role may not change the schema: run `keyscope store migrate` as a role that owns it, then try again"
    )]
    SchemaTooOld {
        /// The store, as it may be shown.
        store: String,
        /// Its schema version.
        found: i64,
        /// This build's.
        needed: i64,
    },
    /// The store file exists but is not a keyscope store.
    #[error("`{store}` is not a keyscope store: {why}")]
    NotAStore {
        /// The file or database, as it may be shown.
        store: String,
        /// What gave it away.
        why: String,
    },
    /// There is no store file where one was expected.
    #[error(
        "no store at `{0}`: a command that adds to a store creates it (such as `keyscope scope create`, `keyscope admin token create` or `keyscope store migrate`); or point --store (or $KEYSCOPE_STORE) at one"
    )]
    NoStore(String),
    /// The store was written by a newer keyscope.
    #[error(
        "store `{store}` has schema version {found}, newer than this keyscope understands ({supported}); upgrade keyscope"
    )]
    StoreTooNew {
        /// The file or database, as it may be shown.
        store: String,
        /// Its schema version.
        found: i64,
        /// The newest this build understands.
        supported: i64,
    },
    /// SQLite failed.
    #[error("store: {0}")]
    Sqlite(#[source] rusqlite::Error),
    /// PostgreSQL refused a statement or a connection.
    #[error("store: {}", describe(.0))]
    Postgres(#[source] postgres::Error),
    /// The database cannot be reached (down, restarting, or the network):
    /// nothing was changed. A server keeps deciding on its last snapshot.
    #[error("store `{store}` is unavailable: {why}; nothing was changed, try again")]
    Unavailable {
        /// The database, as it may be shown.
        store: String,
        /// What the connection said.
        why: String,
    },
    /// `store copy` refuses a destination that already holds data.
    #[error(
        "the destination store already holds {0} scope(s) and key(s); copy into a new, empty store"
    )]
    DestinationNotEmpty(u64),
    /// No scope matches the given id or `APP/NAME`.
    #[error("no scope `{0}`")]
    ScopeNotFound(String),
    /// No key has this id.
    #[error("no key with id `{0}`")]
    KeyNotFound(u64),
    /// A rotation asked of a key that is no longer live.
    #[error("key {id} cannot be rotated: {why}")]
    NotRotatable {
        /// The key.
        id: u64,
        /// Why: revoked, expired, or already rotated (and to which key).
        why: String,
    },
    /// No live token of this kind has this name.
    #[error("no live {} named `{name}`", kind.noun())]
    TokenNotFound {
        /// Admin or fleet.
        kind: crate::TokenKind,
        /// The name asked for, printable.
        name: String,
    },
    /// A token whose digest was stored before (and maybe revoked), of
    /// either kind.
    #[error(
        "this token was used before, and may have been revoked: a revoked token never comes back; make a new one"
    )]
    TokenReused,
    /// A role that is not one of the four, or not given its apps.
    #[error("invalid role: {0}")]
    InvalidRole(String),
    /// A live token of this kind already has this name.
    #[error("a live {} is already named `{name}`; revoke it first, or choose another name", kind.noun())]
    DuplicateToken {
        /// Admin or fleet.
        kind: crate::TokenKind,
        /// The name.
        name: String,
    },
    /// The app already has a scope of this name.
    #[error("app `{app}` already has a scope named `{name}`")]
    DuplicateScope {
        /// The app.
        app: String,
        /// The name.
        name: String,
    },
    /// The scope already has a live key of this name.
    #[error("scope `{scope}` already has a live key named `{name}`")]
    DuplicateKey {
        /// The scope, as `APP/NAME`.
        scope: String,
        /// The name.
        name: String,
    },
    /// The app has reached its scope limit.
    #[error(
        "app `{app}` already has {limit} scopes, its limit; delete one, or raise it with `keyscope limits set --scopes-per-app N`"
    )]
    ScopeLimit {
        /// The app.
        app: String,
        /// The limit in force.
        limit: u32,
    },
    /// The scope has reached its key limit.
    #[error(
        "scope `{scope}` already has {limit} live keys, its limit (keys in a rotation's grace count); revoke one, or raise it with `keyscope limits set --keys-per-scope N`"
    )]
    KeyLimit {
        /// The scope, as `APP/NAME`.
        scope: String,
        /// The limit in force.
        limit: u32,
    },
    /// A scope cannot be deleted while keys can still use it.
    #[error(
        "scope `{scope}` still has {count} live key(s); revoke them first, or pass --revoke-keys"
    )]
    ScopeHasLiveKeys {
        /// The scope, as `APP/NAME`.
        scope: String,
        /// How many live keys.
        count: u64,
    },
    /// A name or id given by the user is not acceptable.
    #[error("invalid {what} `{value}`: {why}")]
    Invalid {
        /// What was given (`app`, `scope name`, ...).
        what: &'static str,
        /// The offending input, made printable.
        value: String,
        /// What is accepted.
        why: String,
    },
    /// A level, permission or requirement name is not one of the accepted ones.
    #[error(transparent)]
    UnknownName(#[from] keyscope_policy::UnknownName),
    /// What the store holds does not make a valid snapshot.
    #[error("the store's contents do not make a snapshot: {0}")]
    Snapshot(#[from] keyscope_policy::LoadError),
    /// A fault injected by a test (feature `fault-injection`).
    #[error("injected fault at `{0}`")]
    Injected(&'static str),
    /// Reading or creating the store file failed.
    #[error("`{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl From<postgres::Error> for StoreError {
    fn from(error: postgres::Error) -> Self {
        Self::Postgres(error)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Sqlite(error)
    }
}

impl StoreError {
    /// A stable, machine-readable name for what kind of failure this is.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotAStore { .. }
            | Self::SchemaTooOld { .. }
            | Self::NoStore(_)
            | Self::StoreTooNew { .. }
            | Self::Sqlite(_)
            | Self::Postgres(_)
            | Self::DestinationNotEmpty(_)
            | Self::Snapshot(_)
            | Self::Injected(_) => "store",
            Self::Io { .. } => "io",
            Self::Unavailable { .. } => "unavailable",
            Self::ScopeNotFound(_) | Self::KeyNotFound(_) | Self::TokenNotFound { .. } => {
                "not-found"
            }
            Self::DuplicateScope { .. }
            | Self::DuplicateKey { .. }
            | Self::ScopeLimit { .. }
            | Self::KeyLimit { .. }
            | Self::ScopeHasLiveKeys { .. }
            | Self::NotRotatable { .. }
            | Self::DuplicateToken { .. }
            | Self::TokenReused => "conflict",
            Self::Invalid { .. } | Self::UnknownName(_) | Self::InvalidRole(_) => "invalid-input",
        }
    }

    /// A [`StoreError::NotAStore`] for the store shown as `store`.
    pub(crate) fn not_a_store(store: impl std::fmt::Display, why: impl Into<String>) -> Self {
        Self::NotAStore {
            store: store.to_string(),
            why: why.into(),
        }
    }

    /// An [`StoreError::Invalid`] that shows `value` safely.
    pub fn invalid(what: &'static str, value: &str, why: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            value: printable(value),
            why: why.into(),
        }
    }
}

/// A PostgreSQL error with its causes: the client's own text is only its
/// kind ("db error"), the server's message is its source. Neither holds the
/// password.
pub(crate) fn describe(error: &postgres::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        source = cause.source();
    }
    text
}

/// `text` as it may be shown: control characters escaped (`\u{1b}`), and at
/// most 80 characters, so that user input cannot drive a terminal or forge a
/// log line.
pub fn printable(text: &str) -> String {
    const MAX: usize = 80;
    let mut shown = String::with_capacity(text.len().min(MAX + 3));
    for (i, c) in text.chars().enumerate() {
        if i == MAX {
            shown.push('…');
            break;
        }
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
