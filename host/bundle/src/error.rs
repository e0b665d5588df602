//! Why a bundle, a key file or a cache was refused.

use std::path::PathBuf;

use keyscope_policy::snapshot::LoadError;

/// Why a bundle, a key file or a cache was refused. A gateway counts
/// refusals by [`BundleError::kind`] and keeps serving what it held.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Not a keyscope bundle at all, or no signature: a raw snapshot, an
    /// HTML error page, a bundle whose signature was stripped.
    #[error("not a signed keyscope bundle: {0}")]
    Unsigned(String),
    /// The framing or the manifest is wrong.
    #[error("malformed bundle: {0}")]
    Malformed(String),
    /// Signed by a key other than those trusted.
    #[error("the bundle is signed by key {found}, not by the trusted key {trusted}")]
    OtherSigner {
        /// The signer the manifest names.
        found: String,
        /// The trusted keys' ids.
        trusted: String,
    },
    /// The signature does not verify over the manifest: the manifest was
    /// changed after signing, or its signer was forged.
    #[error("the bundle's signature does not verify: its manifest was changed after signing")]
    BadSignature,
    /// A part's bytes do not have the digest its signed manifest names.
    #[error("the bundle's {0} does not match its signed digest: its bytes were changed")]
    Tampered(&'static str),
    /// Not newer than the bundle held: a replay or a rollback, of data or
    /// of module.
    #[error(
        "rollback refused: the bundle is version {offered} (revision {offered_revision}), not newer than version {held} (revision {held_revision}) held"
    )]
    Rollback {
        /// The bundle's version.
        offered: u64,
        /// Its revision.
        offered_revision: u64,
        /// The version held.
        held: u64,
        /// Its revision.
        held_revision: u64,
    },
    /// Its signature expired: an old bundle replayed, or a control plane
    /// that stopped re-signing.
    #[error("the bundle expired at {expired_at_ms} ms since the Unix epoch ({ago_s} s ago)")]
    Expired {
        /// When it expired.
        expired_at_ms: u64,
        /// How long ago, when it was offered.
        ago_s: u64,
    },
    /// A delta from a state other than the one held.
    #[error(
        "the delta applies to revision {base} ({base_digest}), but revision {held} ({held_digest}) is held"
    )]
    WrongBase {
        /// The delta's base revision.
        base: u64,
        /// Its base snapshot's digest.
        base_digest: String,
        /// The revision held.
        held: u64,
        /// The held snapshot's digest.
        held_digest: String,
    },
    /// A delta applied to the held snapshot does not give the signed
    /// resulting snapshot.
    #[error("the delta's result {found} does not match its signed digest {signed}")]
    DeltaMismatch {
        /// The digest of what applying the delta gave.
        found: String,
        /// The digest the manifest names.
        signed: String,
    },
    /// The snapshot, or a delta applied to it, is not a valid snapshot.
    #[error("the bundle's snapshot: {0}")]
    Snapshot(#[from] LoadError),
    /// A key file or public key is unusable.
    #[error("key `{path}`: {why}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Larger than the reader's cap: refused before it was read whole.
    #[error("the bundle is {found} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Its size, as declared (a `Content-Length`, a file's length, or
        /// its signed manifest's).
        found: u64,
        /// The cap.
        limit: u64,
    },
    /// The stream broke off before the bundle's end.
    #[error("reading the bundle: {0}")]
    Read(#[source] std::io::Error),
    /// A file could not be read or written.
    #[error("{what} `{path}`: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl BundleError {
    /// A short, stable name for counting refusals (`/metrics`,
    /// `/admin/status`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unsigned(_) => "unsigned",
            Self::Malformed(_) => "malformed",
            Self::OtherSigner { .. } => "other-signer",
            Self::BadSignature => "bad-signature",
            Self::Tampered(_) => "tampered",
            Self::Rollback { .. } => "rollback",
            Self::Expired { .. } => "expired",
            Self::WrongBase { .. } => "wrong-base",
            Self::DeltaMismatch { .. } => "delta-mismatch",
            Self::Snapshot(_) => "bad-snapshot",
            Self::TooLarge { .. } => "too-large",
            Self::Key { .. } | Self::Io { .. } | Self::Read(_) => "io",
        }
    }
}

/// The crate's result type.
pub type Result<T, E = BundleError> = std::result::Result<T, E>;
