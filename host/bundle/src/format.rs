//! The bundle file: a signed manifest, then the parts it names.
//!
//! ```text
//! "KSBUNDLE" | format (1 byte) | manifest length (u32 LE) | manifest (JSON)
//!            | Ed25519 signature (64 bytes) | parts
//! ```
//!
//! The signature covers a fixed context string and the manifest's exact
//! bytes; the manifest names each part's SHA-256 and length, so the parts
//! are covered through it. The parts, in order:
//!
//! - a **full** bundle: the snapshot, then the module if included;
//! - a **delta**: the changes since the base (JSON), then the module if
//!   included;
//! - a gateway's **cache**: the resulting snapshot, then the module,
//!   under the manifest of the last bundle it accepted, full or delta.
//!
//! The snapshot's digest is its own trailer (the SHA-256 of everything
//! before it), the digest every other part of keyscope shows.

use ed25519_dalek::{Signature, Signer as _, SigningKey};
use keyscope_policy::kept::SnapshotChanges;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{BundleError, Result};
use crate::keys::Trust;

const MAGIC: &[u8; 8] = b"KSBUNDLE";
/// Format 2 added the manifest's `version` and `expires_at_ms`.
const FORMAT: u8 = 2;
/// Signatures are over this and the manifest: a signature made for
/// anything else (or for another format) never verifies as a bundle's.
const CONTEXT: &[u8] = b"keyscope-bundle/2\n";
const SIGNATURE_LEN: usize = 64;
/// Manifests are a few hundred bytes.
const MAX_MANIFEST: usize = 64 * 1024;
const SNAPSHOT_TRAILER: usize = 32;

/// A full bundle or a delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The whole snapshot.
    Full,
    /// The changes since a base revision.
    Delta,
}

/// A part's digest and length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// Lowercase hex SHA-256 (for a snapshot, its trailer).
    pub sha256: String,
    /// Its length in bytes.
    pub bytes: u64,
}

/// The policy module a bundle's state is decided by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModulePart {
    /// Lowercase hex SHA-256 of the component.
    pub sha256: String,
    /// Its length in bytes.
    pub bytes: u64,
    /// Whether the bundle carries it (a delta leaves out a module the
    /// gateway already runs).
    pub included: bool,
}

/// The state a delta applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    /// Its revision.
    pub revision: u64,
    /// Its snapshot's digest.
    pub sha256: String,
}

/// What a bundle holds, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Full or delta.
    pub kind: Kind,
    /// Grows with every bundle its signer publishes: a change of data or
    /// of module, or a re-signature of the same state before it expires.
    /// A gateway accepts nothing older than what it holds (TUF's rollback
    /// protection).
    pub version: u64,
    /// When this signature stops being good (ms since the Unix epoch): a
    /// gateway refuses the bundle from then on, and one that holds nothing
    /// newer says it is stale (TUF's freeze protection). The control plane
    /// re-signs its state well before.
    pub expires_at_ms: u64,
    /// The store revision of the resulting state.
    pub revision: u64,
    /// When the control plane first published this revision (ms since the
    /// Unix epoch): how old a gateway's state is.
    pub published_at_ms: u64,
    /// The id of the signing key ([`crate::keys::key_id`]).
    pub signer: String,
    /// The resulting snapshot.
    pub snapshot: Part,
    /// A delta's base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Base>,
    /// A delta's changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<Part>,
    /// The module.
    pub module: ModulePart,
}

impl Manifest {
    /// The HTTP entity tag of this bundle: its version and the state it
    /// brings a gateway to.
    pub fn etag(&self) -> String {
        etag(
            self.version,
            &state_tag(self.revision, &self.snapshot.sha256, &self.module.sha256),
        )
    }

    /// Whether it brings the same state (revision, snapshot, module) as
    /// `other`, however signed.
    pub fn same_state(&self, other: &Manifest) -> bool {
        self.revision == other.revision
            && self.snapshot.sha256 == other.snapshot.sha256
            && self.module.sha256 == other.module.sha256
    }
}

/// A state's tag: its revision and the first 16 hex digits of its snapshot
/// and module digests.
pub fn state_tag(revision: u64, snapshot_sha256: &str, module_sha256: &str) -> String {
    let short = |hex: &str| hex.get(..16).unwrap_or(hex).to_owned();
    format!(
        "{revision}-{}-{}",
        short(snapshot_sha256),
        short(module_sha256)
    )
}

/// A bundle's HTTP entity tag: `"VERSION-REVISION-SNAPSHOT16-MODULE16"`.
pub fn etag(version: u64, state_tag: &str) -> String {
    format!("\"{version}-{state_tag}\"")
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A snapshot's digest: its trailer, in hex.
pub fn snapshot_digest(snapshot: &[u8]) -> String {
    hex::encode(&snapshot[snapshot.len().saturating_sub(SNAPSHOT_TRAILER)..])
}

/// Signs `manifest` and frames it with `parts`, in order.
pub fn seal(manifest: &Manifest, key: &SigningKey, parts: &[&[u8]]) -> Vec<u8> {
    // Serialising a struct of strings and numbers cannot fail.
    let json = serde_json::to_vec(manifest).unwrap_or_default();
    let signature = key.sign(&signed_bytes(&json));
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(8 + 1 + 4 + json.len() + SIGNATURE_LEN + len);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&signature.to_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

fn signed_bytes(manifest: &[u8]) -> Vec<u8> {
    let mut signed = Vec::with_capacity(CONTEXT.len() + manifest.len());
    signed.extend_from_slice(CONTEXT);
    signed.extend_from_slice(manifest);
    signed
}

/// What a verified bundle carries.
#[derive(Debug)]
pub struct Opened<'a> {
    /// The magic, manifest and signature as received: a gateway's cache
    /// keeps them, so that its cache verifies as the bundle did.
    pub signed: &'a [u8],
    /// Its manifest, whose signature verified.
    pub manifest: Manifest,
    /// A full bundle's (or a cache's) snapshot, its digest checked.
    pub snapshot: Option<&'a [u8]>,
    /// A delta's changes, their digest checked.
    pub delta: Option<SnapshotChanges>,
    /// The module, if included, its digest checked.
    pub module: Option<&'a [u8]>,
}

/// How the parts after the manifest are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// As served: a full snapshot or a delta, as the manifest's kind says.
    Served,
    /// A gateway's cache: the resulting snapshot and the module, whatever
    /// the manifest's kind.
    Cache,
}

/// The bytes before a bundle's manifest: the magic, the format and the
/// manifest's length.
const PREAMBLE: usize = MAGIC.len() + 1 + 4;

/// The length of a bundle's signed head (preamble, manifest, signature),
/// from its preamble: the magic, format and manifest length are checked.
fn head_len(preamble: &[u8]) -> Result<usize> {
    let Some(rest) = preamble.strip_prefix(MAGIC.as_slice()) else {
        return Err(BundleError::Unsigned(
            "it does not start with a bundle's signed manifest".into(),
        ));
    };
    let malformed = |why: &str| BundleError::Malformed(why.to_owned());
    let (&format, rest) = rest.split_first().ok_or_else(|| malformed("truncated"))?;
    if format != FORMAT {
        return Err(BundleError::Malformed(format!(
            "format {format}; this keyscope reads format {FORMAT}"
        )));
    }
    let len = rest
        .first_chunk::<4>()
        .ok_or_else(|| malformed("truncated"))?;
    let len = u32::from_le_bytes(*len) as usize;
    if len > MAX_MANIFEST {
        return Err(malformed("the manifest is larger than 64 KiB"));
    }
    Ok(PREAMBLE + len + SIGNATURE_LEN)
}

/// Reads a bundle (or a gateway's cache) from `reader` as it arrives, and
/// refuses it as early as it can: the framing in its first 13 bytes, then
/// the manifest's signer and signature, and only then the parts, exactly
/// as long as the signed manifest says and at most `max_bytes` in all. A
/// server or file that sends anything else costs at most the 64 KiB of a
/// manifest, never the memory of what it sends. The bytes returned still
/// go through [`open`], which checks every digest.
pub fn read_bounded(
    reader: &mut impl std::io::Read,
    trusted: &(impl Trust + ?Sized),
    layout: Layout,
    max_bytes: u64,
) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = vec![0; PREAMBLE];
    reader.read_exact(&mut bytes).map_err(truncated)?;
    let head = head_len(&bytes)?;
    bytes.resize(head, 0);
    reader
        .read_exact(&mut bytes[PREAMBLE..])
        .map_err(truncated)?;
    let (manifest, _) = verify_head(&bytes, trusted)?;
    let parts = parts_len(&manifest, layout)?;
    let total = parts.saturating_add(head as u64);
    if total > max_bytes {
        return Err(BundleError::TooLarge {
            found: total,
            limit: max_bytes,
        });
    }
    // Within the cap, which the caller chose to fit in memory.
    let parts = usize::try_from(parts).map_err(|_| BundleError::TooLarge {
        found: total,
        limit: max_bytes,
    })?;
    bytes.resize(head + parts, 0);
    reader.read_exact(&mut bytes[head..]).map_err(truncated)?;
    // Nothing may follow the parts the manifest names.
    let mut extra = [0u8; 1];
    match reader.by_ref().take(1).read(&mut extra) {
        Ok(0) => Ok(bytes),
        Ok(_) => Err(BundleError::Tampered("length")),
        Err(error) => Err(BundleError::Read(error)),
    }
}

fn truncated(error: std::io::Error) -> BundleError {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        BundleError::Malformed("truncated".into())
    } else {
        BundleError::Read(error)
    }
}

/// Checks the head's signer and signature; returns the manifest, now the
/// control plane's word, and the head's length.
fn verify_head(bytes: &[u8], trusted: &(impl Trust + ?Sized)) -> Result<(Manifest, usize)> {
    let head = head_len(bytes)?;
    let json = bytes
        .get(PREAMBLE..head - SIGNATURE_LEN)
        .ok_or_else(|| BundleError::Malformed("truncated in the manifest".into()))?;
    let signature = bytes
        .get(head - SIGNATURE_LEN..head)
        .ok_or_else(|| BundleError::Unsigned("it has no signature".into()))?;
    if signature.iter().all(|&b| b == 0) {
        return Err(BundleError::Unsigned("its signature is empty".into()));
    }
    let manifest: Manifest = serde_json::from_slice(json)
        .map_err(|e| BundleError::Malformed(format!("manifest: {e}")))?;
    let Some(signer) = trusted.key(&manifest.signer) else {
        return Err(BundleError::OtherSigner {
            found: manifest
                .signer
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(32)
                .collect(),
            trusted: trusted.ids(),
        });
    };
    let signature = Signature::from_slice(signature).map_err(|_| BundleError::BadSignature)?;
    signer
        .verify_strict(&signed_bytes(json), &signature)
        .map_err(|_| BundleError::BadSignature)?;
    Ok((manifest, head))
}

/// The first part's declaration: a delta's changes, or the snapshot.
fn first_part(manifest: &Manifest, layout: Layout) -> Result<&Part> {
    match (layout, manifest.kind) {
        (Layout::Served, Kind::Delta) => manifest
            .delta
            .as_ref()
            .ok_or_else(|| BundleError::Malformed("a delta without its changes".into())),
        _ => Ok(&manifest.snapshot),
    }
}

/// The length of the parts a signed manifest declares.
fn parts_len(manifest: &Manifest, layout: Layout) -> Result<u64> {
    let module_len = if manifest.module.included || layout == Layout::Cache {
        manifest.module.bytes
    } else {
        0
    };
    first_part(manifest, layout)?
        .bytes
        .checked_add(module_len)
        .ok_or(BundleError::Tampered("length"))
}

/// Verifies `bytes` against the `trusted` key and returns its parts.
/// Every check happens here: framing, signer, signature, and each part's
/// digest.
pub fn open<'a>(
    bytes: &'a [u8],
    trusted: &(impl Trust + ?Sized),
    layout: Layout,
) -> Result<Opened<'a>> {
    let (manifest, head) = verify_head(bytes, trusted)?;
    let parts = &bytes[head..];
    // Signed: from here on the manifest is the control plane's word.
    let first = first_part(&manifest, layout)?;
    if manifest.kind == Kind::Delta && manifest.base.is_none() {
        return Err(BundleError::Malformed("a delta without its base".into()));
    }
    if parts_len(&manifest, layout)? != parts.len() as u64 {
        return Err(BundleError::Tampered("length"));
    }
    let module_len = parts.len() as u64 - first.bytes;
    let (first_bytes, module) = parts.split_at(first.bytes as usize);
    let signed = &bytes[..bytes.len() - parts.len()];
    let mut opened = Opened {
        signed,
        snapshot: None,
        delta: None,
        module: None,
        manifest: manifest.clone(),
    };
    if std::ptr::eq(first, &manifest.snapshot) {
        // The trailer is the digest §4 defines, recomputed from the bytes.
        let trailer = &first_bytes[first_bytes.len().saturating_sub(SNAPSHOT_TRAILER)..];
        let sealed = keyscope_policy::snapshot::compute_digest(first_bytes)
            .map_err(|_| BundleError::Tampered("snapshot"))?;
        if hex::encode(trailer) != first.sha256 || sealed[..] != *trailer {
            return Err(BundleError::Tampered("snapshot"));
        }
        opened.snapshot = Some(first_bytes);
    } else {
        if sha256_hex(first_bytes) != first.sha256 {
            return Err(BundleError::Tampered("delta"));
        }
        let changes = serde_json::from_slice(first_bytes)
            .map_err(|e| BundleError::Malformed(format!("delta: {e}")))?;
        opened.delta = Some(changes);
    }
    if module_len > 0 {
        if sha256_hex(module) != manifest.module.sha256 {
            return Err(BundleError::Tampered("module"));
        }
        opened.module = Some(module);
    }
    Ok(opened)
}

/// Serialises a delta's changes.
pub fn encode_delta(changes: &SnapshotChanges) -> Vec<u8> {
    // Plain data: serialising cannot fail.
    serde_json::to_vec(changes).unwrap_or_default()
}
