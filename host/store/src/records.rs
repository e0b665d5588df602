//! What the store holds, as its users see it: scopes, keys (never their
//! secrets), limits, and how a scope is named.

use std::fmt;
use std::str::FromStr;

use keyscope_keys::KeySecret;
use keyscope_policy::{AgentsLevel, RuntimeSet};
use serde::Serialize;

use crate::error::{Result, StoreError};

/// A scope: what the keys linked to it may do in one application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scope {
    /// Its id.
    pub id: u64,
    /// The application it belongs to.
    pub app: String,
    /// Its name, unique within the app.
    pub name: String,
    /// Its Agents level.
    #[serde(serialize_with = "serialize_display")]
    pub agents: AgentsLevel,
    /// Its runtime permissions.
    #[serde(serialize_with = "serialize_runtime")]
    pub runtime: RuntimeSet,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
}

impl Scope {
    /// `APP/NAME`, the human way to name a scope.
    pub fn path(&self) -> String {
        format!("{}/{}", self.app, self.name)
    }
}

/// An API key as listed: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    /// Its id.
    pub id: u64,
    /// Its name, unique among the scope's live keys.
    pub name: String,
    /// The scope it belongs to.
    pub scope_id: u64,
    /// The first characters of the key, for telling keys apart.
    pub prefix: String,
    /// When it was created.
    pub created_at: String,
    /// When it was revoked; `None` while it is valid.
    pub revoked_at: Option<String>,
    /// The last moment it is valid, as `created_at` is written; `None`:
    /// until revoked.
    pub expires_at: Option<String>,
    /// The same, in milliseconds since the Unix epoch.
    #[serde(skip)]
    pub not_after_ms: Option<u64>,
    /// When it was rotated, if it was: it stays valid until `expires_at`.
    pub rotated_at: Option<String>,
    /// The key that replaced it in a rotation.
    pub successor_id: Option<u64>,
    /// When a decision last presented it; `None`: never (as far as the
    /// store was told).
    pub last_used_at: Option<String>,
    /// How many decisions presented it.
    pub uses: u64,
    /// Its status when it was read.
    pub status: KeyStatus,
}

/// Where a key stands: what `key list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyStatus {
    /// Valid, with no end but revocation.
    Active,
    /// Valid until its `expires_at` (a rotation's grace, or a lifetime).
    Expiring,
    /// Past its `expires_at`: denied as expired.
    Expired,
    /// Revoked: denied.
    Revoked,
}

impl KeyStatus {
    /// The status of a key revoked or not, with a not-after or none, at
    /// `now_ms`.
    pub fn at(revoked: bool, not_after_ms: Option<u64>, now_ms: u64) -> Self {
        match not_after_ms {
            _ if revoked => Self::Revoked,
            Some(deadline) if now_ms > deadline => Self::Expired,
            Some(_) => Self::Expiring,
            None => Self::Active,
        }
    }

    /// `active`, `expiring`, `expired` or `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expiring => "expiring",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

/// What a named credential opens: the admin API, or the fleet's bundles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// An admin token: the admin API and the console.
    Admin,
    /// A fleet token: one gateway's bundle polls, and nothing else.
    Fleet,
}

impl TokenKind {
    /// As stored: `admin` or `fleet`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Fleet => "fleet",
        }
    }

    /// As said to people: `admin token` or `fleet token`.
    pub fn noun(self) -> &'static str {
        match self {
            Self::Admin => "admin token",
            Self::Fleet => "fleet token",
        }
    }

    /// As an audit target's prefix: `admin-token` or `fleet-token`.
    pub(crate) fn target(self) -> &'static str {
        match self {
            Self::Admin => "admin-token",
            Self::Fleet => "fleet-token",
        }
    }

    /// From its stored form.
    pub(crate) fn parse(stored: &str) -> Option<Self> {
        match stored {
            "admin" => Some(Self::Admin),
            "fleet" => Some(Self::Fleet),
            _ => None,
        }
    }
}

/// A named credential as listed: never the token. An admin token's name is
/// the actor its changes are audited under (`admin:NAME`); a fleet token's
/// is the id of the one gateway it lets poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Token {
    /// Its id.
    pub id: u64,
    /// What it opens.
    pub kind: TokenKind,
    /// Its name, unique among the live tokens of its kind.
    pub name: String,
    /// When it was created.
    pub created_at: String,
    /// When it was revoked; `None` while it is valid.
    pub revoked_at: Option<String>,
    /// An admin token's role and apps; `None` for a fleet token.
    #[serde(flatten)]
    pub role: Option<crate::Role>,
    /// The SHA-256 of the token, compared in constant time by the server.
    #[serde(skip)]
    pub digest: [u8; 32],
}

/// A console session as the store keeps it, by the SHA-256 of its id
/// (the id itself is only in the browser's cookie). Every control plane
/// sharing the store knows it; signing out deletes it, and revoking the
/// admin token it was opened with deletes it too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// The admin token it was opened with, as its digest; `None` for a
    /// session opened through the identity provider.
    pub token: Option<[u8; 32]>,
    /// Its changes' actor: `admin:NAME` or `oidc:SUBJECT (EMAIL)`.
    pub actor: String,
    /// What it may do.
    pub role: crate::Role,
    /// When it was opened, in ms since the Unix epoch.
    pub started_ms: u64,
    /// When it ends at the latest, whatever its use.
    pub ends_ms: u64,
}

impl ConsoleSession {
    /// A use counts toward keeping a session open only this long after the
    /// last one counted: a busy session is written at most once a second.
    pub const USE_EVERY_MS: u64 = 1_000;

    /// Whether the session, last used at `last_seen_ms`, is open at
    /// `now_ms`: before its end, and used within `idle_ms`.
    pub fn open_at(&self, last_seen_ms: u64, now_ms: u64, idle_ms: u64) -> bool {
        now_ms < self.ends_ms && now_ms < last_seen_ms.saturating_add(idle_ms)
    }
}

/// How long a new key stays valid, besides revocation. A lifetime counts
/// from one clock reading, the one the key's `created_at` records: a key
/// that lives `For(d)` from `t` is valid for requests stamped `t` up to,
/// not including, `t + d`, so its not-after (the last valid millisecond,
/// which the policy includes) is `t + d - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lifetime {
    /// Valid until revoked.
    #[default]
    Unlimited,
    /// Valid through this millisecond since the Unix epoch, which must be
    /// later than the moment the key is created.
    Until(u64),
    /// Valid for this many milliseconds from its creation.
    For(std::num::NonZeroU64),
}

impl Lifetime {
    /// This lifetime, ending no later than the last deadline a key may have
    /// (9999-12-31T23:59:59.999Z) when it starts at `now_ms`.
    pub(crate) fn capped(self, now_ms: u64) -> Self {
        let last = LAST_NOT_AFTER_MS;
        match self {
            Self::Until(at) if at > last => Self::Until(last),
            Self::For(ms) if now_ms.saturating_add(ms.get() - 1) > last => Self::Until(last),
            other => other,
        }
    }
}

/// The latest not-after a key may have, 9999-12-31T23:59:59.999Z: the last
/// moment an RFC 3339 time can show.
pub(crate) const LAST_NOT_AFTER_MS: u64 = 253_402_300_799_999;

/// The longest grace a rotation may give the old key: 7 days.
pub const MAX_ROTATION_GRACE_MS: u64 = 7 * 24 * 3_600_000;

/// A key just created: the only time its secret exists outside the caller.
#[derive(Debug)]
pub struct NewKey {
    /// The stored record.
    pub key: ApiKey,
    /// The raw key, to show once.
    pub secret: KeySecret,
}

impl NewKey {
    /// What its user is shown, this once, and the only place a raw key is
    /// ever serialised: `{"id","name","scope_id","key","created_at"}`, as
    /// `keyscope --json key create` prints it and the admin API answers.
    pub fn shown(&self) -> ShownKey<'_> {
        ShownKey {
            id: self.key.id,
            name: &self.key.name,
            scope_id: self.key.scope_id,
            key: self.secret.expose(),
            created_at: &self.key.created_at,
            expires_at: self.key.expires_at.as_deref(),
        }
    }
}

/// A new key as shown to its user ([`NewKey::shown`]).
#[derive(Debug, Serialize)]
pub struct ShownKey<'a> {
    /// Its id.
    pub id: u64,
    /// Its name.
    pub name: &'a str,
    /// Its scope.
    pub scope_id: u64,
    /// The raw key.
    pub key: &'a str,
    /// When it was created.
    pub created_at: &'a str,
    /// When it stops working, if it does before it is revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<&'a str>,
}

/// Names a scope: by id (`12`) or by `APP/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeRef {
    /// By id.
    Id(u64),
    /// By application and name.
    Path {
        /// The application.
        app: String,
        /// The scope name.
        name: String,
    },
}

impl FromStr for ScopeRef {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self> {
        if let Some((app, name)) = s.split_once('/') {
            return Ok(Self::Path {
                app: app.to_owned(),
                name: name.to_owned(),
            });
        }
        s.parse()
            .map(Self::Id)
            .map_err(|_| StoreError::invalid("scope", s, "expected a scope id or APP/NAME"))
    }
}

impl fmt::Display for ScopeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => write!(f, "{id}"),
            Self::Path { app, name } => write!(f, "{app}/{name}"),
        }
    }
}

/// Changes to a scope; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ScopeUpdate {
    /// A new name.
    pub name: Option<String>,
    /// A new Agents level.
    pub agents: Option<AgentsLevel>,
    /// A new set of runtime permissions (replaces the old set).
    pub runtime: Option<RuntimeSet>,
}

/// How many scopes an app and keys a scope may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Quotas {
    /// Live scopes per application.
    pub scopes_per_app: u32,
    /// Live keys per scope, counting rotated keys still in their grace.
    pub keys_per_scope: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            scopes_per_app: 20,
            keys_per_scope: 40,
        }
    }
}

fn serialize_display<S: serde::Serializer, T: fmt::Display>(
    value: &T,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

fn serialize_runtime<S: serde::Serializer>(
    runtime: &RuntimeSet,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.collect_seq(runtime.iter().map(|permission| permission.as_str()))
}
