//! Admin and fleet tokens: the credentials of the admin API and of the
//! fleet's bundle polls. Like keys, they come from the CSPRNG, are shown
//! once and stored only as their SHA-256.

use rand::distr::{Alphanumeric, SampleString as _};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// What an admin token starts with.
pub const ADMIN_PREFIX: &str = "ksadmin_";

/// What a fleet token (one gateway's credential) starts with.
pub const FLEET_PREFIX: &str = "ksfleet_";

/// A new token: `prefix` and 40 characters from the CSPRNG (about 238
/// bits).
pub fn generate(prefix: &str) -> Zeroizing<String> {
    let mut token = Zeroizing::new(String::from(prefix));
    token.push_str(&Alphanumeric.sample_string(&mut rand::rng(), 40));
    token
}

/// The SHA-256 of a token, as stored and compared.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}
