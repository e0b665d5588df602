//! A store's every row, as `store copy` carries it from one backend to
//! another: the data only, read and written by each backend
//! ([`crate::Store::dump`], [`crate::Store::restore`]).

/// A scope row, tombstone included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRow {
    /// Its id.
    pub id: i64,
    /// Its app.
    pub app: String,
    /// Its name.
    pub name: String,
    /// Its Agents level, as stored.
    pub agents: String,
    /// Its runtime permission bits.
    pub runtime: u8,
    /// When it was created.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// When it was deleted.
    pub deleted_at: Option<String>,
    /// The revision of its last change.
    pub rev: i64,
}

/// A key row: its digest, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// Its id.
    pub id: i64,
    /// Its scope.
    pub scope_id: i64,
    /// Its name.
    pub name: String,
    /// The SHA-256 of the key.
    pub digest: Vec<u8>,
    /// Its display prefix.
    pub prefix: String,
    /// When it was created.
    pub created_at: String,
    /// When it was revoked.
    pub revoked_at: Option<String>,
    /// Its not-after, ms since the Unix epoch.
    pub not_after_ms: Option<i64>,
    /// The revision of its last change.
    pub rev: i64,
    /// When it was rotated.
    pub rotated_at: Option<String>,
    /// The key that replaced it.
    pub successor_id: Option<i64>,
    /// When it was last used, ms since the Unix epoch.
    pub last_used_ms: Option<i64>,
    /// How often it was used.
    pub uses: i64,
}

/// A token row (admin or fleet): its digest, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Its id.
    pub id: i64,
    /// `admin` or `fleet`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// The SHA-256 of the token.
    pub digest: Vec<u8>,
    /// When it was created.
    pub created_at: String,
    /// When it was revoked.
    pub revoked_at: Option<String>,
    /// An admin token's role, as stored (`app-admin:acme`); `None` for a
    /// fleet token.
    pub role: Option<String>,
}

/// A route row, with its place in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRow {
    /// Its place: routes match in this order.
    pub position: i64,
    /// The method.
    pub method: String,
    /// The pattern.
    pub pattern: String,
    /// The operation.
    pub op: String,
}

/// Everything a store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dump {
    /// The change revision.
    pub revision: u64,
    /// The revision of the last catalogue or route change.
    pub catalogue_revision: u64,
    /// Scopes, by id.
    pub scopes: Vec<ScopeRow>,
    /// Keys, by id.
    pub keys: Vec<KeyRow>,
    /// Operations and what they require, as stored.
    pub operations: Vec<(String, String)>,
    /// Routes, in matching order.
    pub routes: Vec<RouteRow>,
    /// Named settings (the limits).
    pub settings: Vec<(String, i64)>,
    /// Admin and fleet tokens, live and revoked, by id.
    pub tokens: Vec<TokenRow>,
    /// The audit trail, entries as written (their hashes verify in any
    /// backend).
    pub audit: Vec<crate::audit::AuditEntry>,
    /// The trail's head.
    pub audit_head: Option<crate::audit::Head>,
}

impl Dump {
    /// How many rows a restore writes, for a progress bar.
    pub fn rows(&self) -> u64 {
        (self.scopes.len()
            + self.keys.len()
            + self.operations.len()
            + self.routes.len()
            + self.audit.len()) as u64
    }
}
