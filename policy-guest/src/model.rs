//! The domain vocabulary shared by the policy and its hosts: levels,
//! permissions, requirements, credentials and decisions.
//!
//! These are plain Rust types. The WIT glue on each side converts to and from
//! them, so the rules and the snapshot format never depend on generated code.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Error for a name that is not one of a fixed set of accepted values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    /// What kind of name it was (`agents level`, `runtime permission`, ...).
    pub kind: &'static str,
    /// The offending input.
    pub value: String,
    /// The names that would have been accepted.
    pub accepted: &'static [&'static str],
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown {} `{}`; expected one of: {}",
            self.kind,
            self.value,
            self.accepted.join(", ")
        )
    }
}

impl std::error::Error for UnknownName {}

/// Level of access to the Agents component. Levels are cumulative:
/// `None < View < Edit < Full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AgentsLevel {
    /// No access.
    None,
    /// List agents and get one agent.
    View,
    /// Also update existing agents.
    Edit,
    /// Also create and delete agents.
    Full,
}

impl AgentsLevel {
    /// Every level, lowest first.
    pub const ALL: [AgentsLevel; 4] = [Self::None, Self::View, Self::Edit, Self::Full];
    const NAMES: &'static [&'static str] = &["none", "view", "edit", "full"];

    /// The level's name as used in the CLI, JSON and the store.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl fmt::Display for AgentsLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AgentsLevel {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|level| level.as_str() == s)
            .ok_or_else(|| UnknownName {
                kind: "agents level",
                value: s.to_owned(),
                accepted: Self::NAMES,
            })
    }
}

/// A runtime permission a scope may grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RuntimePermission {
    /// Execute an agent run. It creates the session if needed, so it never
    /// also needs [`RuntimePermission::SessionCreate`].
    Run,
    /// Create a session.
    SessionCreate,
    /// Terminate a session.
    SessionTerminate,
    /// Upload documents to sessions.
    DocumentUpload,
}

impl RuntimePermission {
    /// Every permission, in canonical order.
    pub const ALL: [RuntimePermission; 4] = [
        Self::Run,
        Self::SessionCreate,
        Self::SessionTerminate,
        Self::DocumentUpload,
    ];
    const NAMES: &'static [&'static str] = &[
        "run",
        "session-create",
        "session-terminate",
        "document-upload",
    ];

    /// The permission's name as used in the CLI, JSON and the store.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for RuntimePermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RuntimePermission {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|permission| permission.as_str() == s)
            .ok_or_else(|| UnknownName {
                kind: "runtime permission",
                value: s.to_owned(),
                accepted: Self::NAMES,
            })
    }
}

/// A set of runtime permissions, stored as a bit set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RuntimeSet(u8);

impl RuntimeSet {
    /// The empty set.
    pub const EMPTY: RuntimeSet = RuntimeSet(0);
    const VALID_BITS: u8 = 0b1111;

    /// Builds a set from its raw bits; `None` if an unknown bit is set.
    pub fn from_bits(bits: u8) -> Option<Self> {
        (bits & !Self::VALID_BITS == 0).then_some(Self(bits))
    }

    /// The raw bits, as stored.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Whether the set holds `permission`.
    pub fn contains(self, permission: RuntimePermission) -> bool {
        self.0 & permission.bit() != 0
    }

    /// The set with `permission` added.
    #[must_use]
    pub fn with(self, permission: RuntimePermission) -> Self {
        Self(self.0 | permission.bit())
    }

    /// The permissions in the set, in canonical order.
    pub fn iter(self) -> impl Iterator<Item = RuntimePermission> {
        RuntimePermission::ALL
            .into_iter()
            .filter(move |permission| self.contains(*permission))
    }
}

impl FromIterator<RuntimePermission> for RuntimeSet {
    fn from_iter<I: IntoIterator<Item = RuntimePermission>>(iter: I) -> Self {
        iter.into_iter().fold(Self::EMPTY, Self::with)
    }
}

impl fmt::Display for RuntimeSet {
    /// Comma-separated names, as the CLI's `--runtime` takes them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, permission) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(permission.as_str())?;
        }
        Ok(())
    }
}

impl FromStr for RuntimeSet {
    type Err = UnknownName;

    /// Parses a comma-separated list; an empty string is the empty set.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(RuntimePermission::from_str)
            .collect()
    }
}

/// What an operation requires of a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Requirement {
    /// At least this Agents level.
    Agents(AgentsLevel),
    /// This runtime permission.
    Runtime(RuntimePermission),
}

impl fmt::Display for Requirement {
    /// `agents:edit`, `runtime:run`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Agents(level) => write!(f, "agents:{level}"),
            Self::Runtime(permission) => write!(f, "runtime:{permission}"),
        }
    }
}

impl FromStr for Requirement {
    type Err = UnknownName;

    /// Parses `agents:LEVEL` or `runtime:PERMISSION`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("agents", level)) => level.parse().map(Self::Agents),
            Some(("runtime", permission)) => permission.parse().map(Self::Runtime),
            _ => Err(UnknownName {
                kind: "requirement",
                value: s.to_owned(),
                accepted: &["agents:LEVEL", "runtime:PERMISSION"],
            }),
        }
    }
}

/// The SHA-256 of a raw API key. Only this ever reaches the policy.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    /// The first eight bytes as a big-endian integer: the lookup prefix.
    pub fn prefix(&self) -> u64 {
        self.words()[0]
    }

    /// The digest as four big-endian words, the shape the WIT carries.
    pub fn words(&self) -> [u64; 4] {
        let mut words = [0; 4];
        for (word, chunk) in words.iter_mut().zip(self.0.chunks_exact(8)) {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(chunk);
            *word = u64::from_be_bytes(bytes);
        }
        words
    }

    /// The inverse of [`KeyDigest::words`].
    pub fn from_words(words: [u64; 4]) -> Self {
        let mut bytes = [0; 32];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        Self(bytes)
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDigest({:016x}..)", self.prefix())
    }
}

/// The state of the credential a caller presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// No key was presented.
    Missing,
    /// A key was presented but its format or checksum is wrong.
    Malformed,
    /// A well-formed key, by its SHA-256.
    Digest(KeyDigest),
}

/// Milliseconds since the Unix epoch (UTC): the request's time and a key's
/// not-after. The policy has no clock; the host passes the time in.
pub type Millis = u64;

/// One authorization question, by name: what hosts and users ask. A host
/// resolves the names to the loaded snapshot's ids ([`ResolvedRequest`])
/// before it asks the policy.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The caller's credential.
    pub credential: Credential,
    /// The application addressed.
    pub app: &'a str,
    /// The operation name (`agents.get`).
    pub op: &'a str,
    /// The time of the request.
    pub now: Millis,
}

/// One authorization question with its names resolved to the ids of one
/// snapshot: what the policy decides, with no string in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedRequest {
    /// The caller's credential.
    pub credential: Credential,
    /// The snapshot the ids were read from: the first word of its digest
    /// ([`crate::snapshot::Snapshot::stamp`]).
    pub snapshot: u64,
    /// The app's id in that snapshot; `None` for an app it does not name.
    pub app: Option<u32>,
    /// The operation's id in that snapshot; `None` for one not catalogued.
    pub op: Option<u32>,
    /// The time of the request.
    pub now: Millis,
}

/// An HTTP method. Routes name one of the first nine; any other method a
/// client sends is [`Method::Other`] and matches no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `CONNECT`
    Connect,
    /// `OPTIONS`
    Options,
    /// `TRACE`
    Trace,
    /// `PATCH`
    Patch,
    /// Any other method.
    Other,
}

impl Method {
    /// The nine methods a route may name, in code order.
    pub const ROUTABLE: [Method; 9] = [
        Self::Get,
        Self::Head,
        Self::Post,
        Self::Put,
        Self::Delete,
        Self::Connect,
        Self::Options,
        Self::Trace,
        Self::Patch,
    ];
    const NAMES: &'static [&'static str] = &[
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];

    /// The method a client sent: an exact, case-sensitive match of a
    /// routable name (RFC 9110 methods are case-sensitive), else
    /// [`Method::Other`].
    pub fn parse(method: &str) -> Self {
        Self::ROUTABLE
            .into_iter()
            .find(|known| known.as_str() == method)
            .unwrap_or(Self::Other)
    }

    /// The method's name; `OTHER` for [`Method::Other`].
    pub fn as_str(self) -> &'static str {
        Self::NAMES.get(self as usize).copied().unwrap_or("OTHER")
    }

    /// The method's code in the snapshot's route table (0 to 8).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The routable method with this code.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ROUTABLE.get(usize::from(code)).copied()
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Method {
    type Err = UnknownName;

    /// A method a route may name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match Self::parse(s) {
            Self::Other => Err(UnknownName {
                kind: "HTTP method",
                value: s.to_owned(),
                accepted: Self::NAMES,
            }),
            method => Ok(method),
        }
    }
}

/// A request as a proxy sees it: the route table names its app and
/// operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpRequest<'a> {
    /// The presented credential.
    pub credential: Credential,
    /// The HTTP method.
    pub method: Method,
    /// The request path, with or without its query (`/api/v2/apps/acme/agents`).
    pub path: &'a str,
    /// The time of the request.
    pub now: Millis,
}

/// Why a decision came out as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The scope grants what the operation requires.
    Allowed,
    /// No key was presented.
    MissingKey,
    /// The key's format or checksum is wrong.
    MalformedKey,
    /// No key with this digest exists.
    UnknownKey,
    /// The key was revoked.
    RevokedKey,
    /// The key is past its not-after time.
    ExpiredKey,
    /// The key's scope belongs to another application.
    WrongApp,
    /// The scope does not grant what the operation requires.
    InsufficientPermission,
    /// The operation is not in the catalogue.
    UnknownOperation,
    /// No snapshot has been loaded.
    NoSnapshot,
    /// The policy failed (a trap, a timeout, a broken module); set by hosts.
    PolicyError,
    /// The host's decision data is older than its `max_stale` allows (an
    /// operator's choice to fail closed); set by hosts only, never by the
    /// component, so it is not in the WIT.
    StalePolicy,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 12] = [
        Self::Allowed,
        Self::MissingKey,
        Self::MalformedKey,
        Self::UnknownKey,
        Self::RevokedKey,
        Self::ExpiredKey,
        Self::WrongApp,
        Self::InsufficientPermission,
        Self::UnknownOperation,
        Self::NoSnapshot,
        Self::PolicyError,
        Self::StalePolicy,
    ];
    const NAMES: &'static [&'static str] = &[
        "allowed",
        "missing-key",
        "malformed-key",
        "unknown-key",
        "revoked-key",
        "expired-key",
        "wrong-app",
        "insufficient-permission",
        "unknown-operation",
        "no-snapshot",
        "policy-error",
        "stale-policy",
    ];

    /// The reason's name, as in the WIT (but `stale-policy`, the host's
    /// own) and the decision JSON.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Reason {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|reason| reason.as_str() == s)
            .ok_or_else(|| UnknownName {
                kind: "reason",
                value: s.to_owned(),
                accepted: Self::NAMES,
            })
    }
}

/// Allow or deny, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decision {
    /// Whether the request may proceed; true exactly when `reason` is
    /// [`Reason::Allowed`].
    pub allow: bool,
    /// Why.
    pub reason: Reason,
    /// The key's id, when the key is known.
    pub key_id: Option<u64>,
    /// The key's scope id, when the key is known.
    pub scope_id: Option<u64>,
    /// What the operation required, when denied for permission.
    pub required: Option<Requirement>,
}

impl Decision {
    /// A deny that knows nothing about the key.
    pub const fn deny(reason: Reason) -> Self {
        Self {
            allow: false,
            reason,
            key_id: None,
            scope_id: None,
            required: None,
        }
    }
}
