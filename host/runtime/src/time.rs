//! The host's clock. The policy has none: every request carries the time a
//! host read here, and a key's not-after is judged against it.

use std::time::{SystemTime, UNIX_EPOCH};

use keyscope_policy::Millis;

/// Now, in milliseconds since the Unix epoch. A clock set before 1970 reads
/// as 0 (every not-after still in the future: a key is never expired early
/// by a broken clock, only late, as by a slow one).
pub fn now_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
        Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
    })
}
