//! API keys: generation, format, checksum and hashing.
//!
//! A key looks like `ks_` + 32 base62 characters from the OS-seeded CSPRNG
//! (about 190 bits) + a 6-character base62 CRC32 of everything before it,
//! after GitHub's token format: a recognisable prefix for secret scanners and
//! a checksum that catches typos offline, without a store lookup.
//!
//! Only [`KeySecret::digest`] (SHA-256) is ever stored or shown to a policy.
//! [`credential_from_headers`] is the one rule, shared by every front door
//! and the embedded library, for which header copy carries the key.

pub mod admin_token;
pub mod usage;

use std::fmt;

use keyscope_policy::{Credential, KeyDigest};
use rand::Rng as _;
use rand::distr::Alphanumeric;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// What every key starts with.
pub const KEY_PREFIX: &str = "ks_";
const RANDOM_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
/// The length of every key.
pub const KEY_LEN: usize = KEY_PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;
/// How much of a key is kept for display (`ks_AbC123`): enough to tell keys
/// apart in a list, far too little to matter for guessing.
pub const DISPLAY_PREFIX_LEN: usize = KEY_PREFIX.len() + 6;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a presented key is malformed. Never carries the key itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedKey {
    /// It does not start with `ks_`.
    #[error("the key does not start with `{KEY_PREFIX}`")]
    Prefix,
    /// It has the wrong length.
    #[error("the key is {0} characters long; keys are {KEY_LEN}")]
    Length(usize),
    /// It holds a character outside `[0-9A-Za-z]` after the prefix.
    #[error("the key holds a character outside [0-9A-Za-z]")]
    Character,
    /// Its checksum does not match: most likely a typo.
    #[error("the key's checksum does not match (a typo?)")]
    Checksum,
}

/// A raw API key. Zeroized on drop; `Debug` and `Display` show only its
/// display prefix, so a secret cannot leak through a log line by accident.
#[derive(Clone)]
pub struct KeySecret(Zeroizing<String>);

impl KeySecret {
    /// Generates a new key from the thread-local CSPRNG (ChaCha, seeded and
    /// periodically reseeded from the OS).
    pub fn generate() -> Self {
        let mut key = Zeroizing::new(String::with_capacity(KEY_LEN));
        key.push_str(KEY_PREFIX);
        key.extend(
            rand::rng()
                .sample_iter(Alphanumeric)
                .take(RANDOM_LEN)
                .map(char::from),
        );
        let checksum = checksum(&key);
        key.push_str(&checksum);
        Self(key)
    }

    /// Parses a presented key, checking its format and checksum.
    pub fn parse(presented: &str) -> Result<Self, MalformedKey> {
        check_format(presented)?;
        Ok(Self(Zeroizing::new(presented.to_owned())))
    }

    /// The raw key. Only for the one-time display at creation.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// SHA-256 of the raw key: what the store keeps and the policy sees.
    pub fn digest(&self) -> KeyDigest {
        digest(&self.0)
    }

    /// The short prefix kept for display (`ks_AbC123`).
    pub fn display_prefix(&self) -> &str {
        &self.0[..DISPLAY_PREFIX_LEN]
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeySecret({}…)", self.display_prefix())
    }
}

/// Checks a presented key's prefix, length, alphabet and checksum.
pub fn check_format(presented: &str) -> Result<(), MalformedKey> {
    let body = presented
        .strip_prefix(KEY_PREFIX)
        .ok_or(MalformedKey::Prefix)?;
    if presented.len() != KEY_LEN {
        return Err(MalformedKey::Length(presented.chars().count()));
    }
    if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(MalformedKey::Character);
    }
    let (unchecked, sum) = presented.split_at(KEY_LEN - CHECKSUM_LEN);
    if checksum(unchecked) != sum {
        return Err(MalformedKey::Checksum);
    }
    Ok(())
}

/// The credential state of a presented key, as the policy receives it:
/// missing, malformed, or its SHA-256. The raw key goes no further.
pub fn credential(presented: Option<&str>) -> Credential {
    match presented {
        None => Credential::Missing,
        Some("") => Credential::Missing,
        Some(key) => match check_format(key) {
            Ok(()) => Credential::Digest(digest(key)),
            Err(_) => Credential::Malformed,
        },
    }
}

/// The credential a request presents, from every copy of the API key header
/// and of `Authorization` it carries.
///
/// One credential, or none, or the request is ambiguous and the answer is
/// [`Credential::Malformed`]: an upstream that reads another copy than the
/// one checked would act on a key that was never checked. Ambiguous means
/// any of:
/// - the API key header more than once, or one copy holding a
///   comma-joined list (Envoy joins repeated headers that way);
/// - the API key header beside a `Bearer` token that is itself a keyscope
///   key (it starts with `ks_`);
/// - no API key header, and more than one `Bearer` token.
///
/// A `Bearer` token that is not a keyscope key (a user's JWT for the
/// upstream) beside the API key header is the upstream's business: the API
/// key decides. Without the API key header, a lone `Bearer` token is the
/// credential; a header that is not text is malformed; another
/// authorization scheme presents no key.
pub fn credential_from_headers<'a>(
    api_keys: impl IntoIterator<Item = &'a [u8]>,
    authorizations: impl IntoIterator<Item = &'a [u8]>,
) -> Credential {
    let mut api_keys = api_keys.into_iter();
    let api_key = api_keys.next();
    if api_keys.next().is_some() || api_key.is_some_and(|value| value.contains(&b',')) {
        return Credential::Malformed;
    }
    let mut bearers = authorizations.into_iter().filter_map(bearer_token);
    if let Some(value) = api_key {
        if bearers.any(|token| token.starts_with(KEY_PREFIX.as_bytes())) {
            return Credential::Malformed;
        }
        return text_credential(value);
    }
    match (bearers.next(), bearers.next()) {
        (None, _) => Credential::Missing,
        (Some(token), None) => text_credential(token),
        (Some(_), Some(_)) => Credential::Malformed,
    }
}

/// The token of an `Authorization: Bearer` value, if it is one.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    let head = value.get(..SCHEME.len())?;
    head.eq_ignore_ascii_case(SCHEME)
        .then(|| value[SCHEME.len()..].trim_ascii())
}

/// A presented key, as text: a value that is not UTF-8 is malformed.
fn text_credential(value: &[u8]) -> Credential {
    match std::str::from_utf8(value) {
        Ok(key) => credential(Some(key)),
        Err(_) => Credential::Malformed,
    }
}

/// Whether a request presents any credential keyscope would read: the API
/// key header, or a `Bearer` token that is a keyscope key. `/v1/check` uses
/// it to refuse a key in the body beside one in the headers.
pub fn presents_key<'a>(
    api_keys: impl IntoIterator<Item = &'a [u8]>,
    authorizations: impl IntoIterator<Item = &'a [u8]>,
) -> bool {
    api_keys.into_iter().next().is_some()
        || authorizations
            .into_iter()
            .filter_map(bearer_token)
            .any(|token| token.starts_with(KEY_PREFIX.as_bytes()))
}

fn digest(key: &str) -> KeyDigest {
    KeyDigest(Sha256::digest(key.as_bytes()).into())
}

/// CRC32 of `text`, as six base62 digits, most significant first.
fn checksum(text: &str) -> String {
    let mut value = crc32fast::hash(text.as_bytes());
    let mut digits = [b'0'; CHECKSUM_LEN];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    digits.iter().copied().map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let a = KeySecret::generate();
        let b = KeySecret::generate();
        assert_eq!(a.expose().len(), KEY_LEN);
        assert!(a.expose().starts_with(KEY_PREFIX));
        assert_eq!(check_format(a.expose()), Ok(()));
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn every_single_character_typo_is_caught() {
        let key = KeySecret::generate();
        let original = key.expose().as_bytes().to_vec();
        for i in KEY_PREFIX.len()..KEY_LEN {
            for &c in BASE62 {
                if c == original[i] {
                    continue;
                }
                let mut typo = original.clone();
                typo[i] = c;
                let typo = String::from_utf8(typo).unwrap();
                assert_eq!(check_format(&typo), Err(MalformedKey::Checksum), "{i}");
            }
        }
    }

    #[test]
    fn format_problems_are_named() {
        let key = KeySecret::generate();
        let raw = key.expose();
        assert_eq!(check_format("sk_live_abc"), Err(MalformedKey::Prefix));
        assert_eq!(check_format(&raw[..20]), Err(MalformedKey::Length(20)));
        let mut bad = raw.to_owned();
        bad.replace_range(5..6, "-");
        assert_eq!(check_format(&bad), Err(MalformedKey::Character));
        assert!(KeySecret::parse(raw).is_ok());
    }

    #[test]
    fn credential_states() {
        let key = KeySecret::generate();
        assert_eq!(credential(None), Credential::Missing);
        assert_eq!(credential(Some("")), Credential::Missing);
        assert_eq!(credential(Some("ks_nope")), Credential::Malformed);
        assert_eq!(
            credential(Some(key.expose())),
            Credential::Digest(key.digest())
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = KeySecret::generate();
        let shown = format!("{key:?}");
        assert!(shown.contains(key.display_prefix()));
        assert!(!shown.contains(&key.expose()[DISPLAY_PREFIX_LEN..]));
    }
}
