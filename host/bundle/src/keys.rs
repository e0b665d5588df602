//! Signing keys: an Ed25519 key pair per control plane (or per team that
//! builds static bundles). The private key lives in a file only its owner
//! can read; gateways are given the public key.
//!
//! Files are one line of text, so they can be pasted into a secret store:
//! `keyscope-bundle-signing-key ed25519:<64 hex digits>` for the private
//! key (its 32-byte seed), `ed25519:<64 hex digits>` for the public key.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::error::{BundleError, Result};

const PRIVATE_TAG: &str = "keyscope-bundle-signing-key ed25519:";
const PUBLIC_TAG: &str = "ed25519:";
/// Key files are a line; anything longer is not one.
const MAX_KEY_FILE: u64 = 4096;

/// A public key as text: `ed25519:<hex>`.
pub fn public_key_text(key: &VerifyingKey) -> String {
    format!("{PUBLIC_TAG}{}", hex::encode(key.as_bytes()))
}

/// A public key's short id, as manifests name their signer: the first 8
/// bytes of its SHA-256, in hex.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// The keys a follower trusts: one, or two while the control plane's
/// signing key is rotated (the old and the next; docs/fleet.md). A bundle
/// names its signer's [`key_id`], and is verified by that key alone.
pub trait Trust {
    /// The trusted key whose id is `id`.
    fn key(&self, id: &str) -> Option<&VerifyingKey>;
    /// The trusted keys' ids, as refusals name them.
    fn ids(&self) -> String;
}

impl Trust for VerifyingKey {
    fn key(&self, id: &str) -> Option<&VerifyingKey> {
        (key_id(self) == id).then_some(self)
    }

    fn ids(&self) -> String {
        key_id(self)
    }
}

impl Trust for [VerifyingKey] {
    fn key(&self, id: &str) -> Option<&VerifyingKey> {
        self.iter().find(|key| key_id(key) == id)
    }

    fn ids(&self) -> String {
        self.iter().map(key_id).collect::<Vec<_>>().join(" or ")
    }
}

/// Makes a key pair from the CSPRNG and writes the private key to `path`,
/// which must not exist yet, readable by its owner only. Returns the
/// public key.
pub fn generate(path: &Path) -> Result<VerifyingKey> {
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(seed.as_mut());
    let key = SigningKey::from_bytes(&seed);
    let line = Zeroizing::new(format!("{PRIVATE_TAG}{}\n", hex::encode(seed.as_ref())));
    let io = |source| BundleError::Io {
        what: "writing the signing key",
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(line.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(key.verifying_key())
}

/// Reads a private key file; refuses one that group or others can read.
pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    let bad = |why: String| BundleError::Key {
        path: path.to_owned(),
        why,
    };
    let io = |source| BundleError::Io {
        what: "reading the signing key",
        path: path.to_owned(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(bad(format!(
            "the signing key is open to group or others (mode {:04o}); run `chmod 600 {}`",
            mode & 0o7777,
            path.display()
        )));
    }
    let text = Zeroizing::new(read_line(path)?);
    let hex = text.trim().strip_prefix(PRIVATE_TAG).ok_or_else(|| {
        bad("not a keyscope signing key (made by `keyscope bundle keygen`)".into())
    })?;
    let mut seed = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hex, seed.as_mut())
        .map_err(|_| bad("the key is not 64 hex digits".into()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Reads a public key file (`ed25519:<hex>`, as `keyscope bundle keygen`
/// prints it).
pub fn read_public_key(path: &Path) -> Result<VerifyingKey> {
    let text = read_line(path)?;
    parse_public_key(text.trim()).map_err(|why| BundleError::Key {
        path: path.to_owned(),
        why,
    })
}

/// Parses `ed25519:<hex>`.
pub fn parse_public_key(text: &str) -> std::result::Result<VerifyingKey, String> {
    let hex = text.strip_prefix(PUBLIC_TAG).ok_or_else(|| {
        if text.starts_with(PRIVATE_TAG) {
            "this is a private signing key; gateways need the public key".to_owned()
        } else {
            format!("a public key is `{PUBLIC_TAG}` and 64 hex digits")
        }
    })?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex, &mut bytes)
        .map_err(|_| "the public key is not 64 hex digits".to_owned())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "not a valid Ed25519 public key".to_owned())
}

fn read_line(path: &Path) -> Result<String> {
    use std::io::Read as _;
    let io = |source| BundleError::Io {
        what: "reading the key",
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE)
        .read_to_string(&mut text)
        .map_err(|_| BundleError::Key {
            path: path.to_owned(),
            why: "not a text file".into(),
        })?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_generated_key_reads_back_and_its_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        let public = generate(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let key = read_signing_key(&path).unwrap();
        assert_eq!(key.verifying_key(), public);
        assert_eq!(parse_public_key(&public_key_text(&public)).unwrap(), public);
        // Never overwritten.
        assert!(generate(&path).is_err());
        // Refused once others can read it.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = read_signing_key(&path).unwrap_err().to_string();
        assert!(error.contains("chmod 600"), "{error}");
    }

    #[test]
    fn a_private_key_is_not_taken_for_a_public_one() {
        let error = parse_public_key("keyscope-bundle-signing-key ed25519:00").unwrap_err();
        assert!(error.contains("private"), "{error}");
        assert!(parse_public_key("ed25519:zz").is_err());
    }
}
