//! Whether a source of state, a store or a bundle server, could be read.

use keyscope_runtime::time::now_ms;
use serde::Serialize;

/// Whether a source of state (a store, a bundle server) could be read:
/// when it last was, and since when it has not been. The state held
/// serves on either way, but may miss changes made meanwhile.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Staleness {
    /// When the source last answered (ms since the Unix epoch).
    pub checked_at_ms: u64,
    /// Whether it failed since.
    pub stale: bool,
    /// Since when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_since_ms: Option<u64>,
    /// Why, from the last failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Staleness {
    /// The source answered just now.
    pub fn checked(&mut self) {
        *self = Self {
            checked_at_ms: now_ms(),
            ..Self::default()
        };
    }

    /// The source failed; whether this begins an outage.
    pub fn failed(&mut self, error: &impl std::fmt::Display) -> bool {
        let began = !self.stale;
        self.stale = true;
        self.stale_since_ms.get_or_insert_with(now_ms);
        self.error = Some(error.to_string());
        began
    }
}
