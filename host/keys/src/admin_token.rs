//! Admin tokens: the credentials of the admin API. Like keys, they come
//! from the CSPRNG, are shown once and stored only as their SHA-256.

use rand::distr::{Alphanumeric, SampleString as _};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// A new admin token: `ksadmin_` and 40 characters from the CSPRNG (about
/// 238 bits).
pub fn generate() -> Zeroizing<String> {
    let mut token = Zeroizing::new(String::from("ksadmin_"));
    token.push_str(&Alphanumeric.sample_string(&mut rand::rng(), 40));
    token
}

/// The SHA-256 of a token, as stored and compared.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}
