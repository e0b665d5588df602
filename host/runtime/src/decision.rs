//! The decision as the CLI and the servers print it.

use keyscope_policy::Decision;
use serde::Serialize;

/// `{"allow","reason","key_id","scope_id","required"}`, the decision JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionJson {
    /// Whether the request may proceed.
    pub allow: bool,
    /// Why (`allowed`, `revoked-key`, ...).
    pub reason: &'static str,
    /// The key's id, when known.
    pub key_id: Option<u64>,
    /// The key's scope id, when known.
    pub scope_id: Option<u64>,
    /// What was required, when denied for permission (`agents:edit`).
    pub required: Option<String>,
}

impl From<&Decision> for DecisionJson {
    fn from(decision: &Decision) -> Self {
        Self {
            allow: decision.allow,
            reason: decision.reason.as_str(),
            key_id: decision.key_id,
            scope_id: decision.scope_id,
            required: decision.required.map(|required| required.to_string()),
        }
    }
}
