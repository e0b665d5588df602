//! What a proxy answers for a decision: its HTTP status, the
//! `WWW-Authenticate` challenge of a 401, and the small JSON body of a
//! deny. Built here once; `keyscope serve`'s doors (HTTP, gRPC) and the
//! embedded library (`libkeyscope`) only render it.

use keyscope_policy::{Decision, Reason};
use serde::Serialize;

/// The HTTP status a decision maps to: 200 allows; 401 for a credential
/// problem (the caller must authenticate); 403 for one of permission; 503
/// when the decision could not be made (it still denies).
pub fn status(reason: Reason) -> u16 {
    match reason {
        Reason::Allowed => 200,
        Reason::MissingKey
        | Reason::MalformedKey
        | Reason::UnknownKey
        | Reason::RevokedKey
        | Reason::ExpiredKey => 401,
        Reason::WrongApp | Reason::InsufficientPermission | Reason::UnknownOperation => 403,
        Reason::NoSnapshot | Reason::PolicyError | Reason::StalePolicy => 503,
    }
}

/// `WWW-Authenticate` for a 401 (RFC 6750): no error code when no key was
/// presented, `invalid_token` otherwise; `None` for any other status.
pub fn www_authenticate(reason: Reason) -> Option<&'static str> {
    match (status(reason), reason) {
        (401, Reason::MissingKey) => Some("Bearer realm=\"keyscope\""),
        (401, _) => Some("Bearer realm=\"keyscope\", error=\"invalid_token\""),
        _ => None,
    }
}

/// The small JSON body of a denied request: the reason, never the key.
#[derive(Debug, Serialize)]
struct DenialBody {
    /// `unauthorized`, `forbidden` or `unavailable`.
    error: &'static str,
    /// The decision's reason.
    reason: &'static str,
    /// What was required, when denied for permission.
    #[serde(skip_serializing_if = "Option::is_none")]
    required: Option<String>,
}

/// The body of a denied request, `{"error","reason","required"}`; `None`
/// for an allow.
pub fn denial_body(decision: &Decision) -> Option<String> {
    if decision.allow {
        return None;
    }
    let body = DenialBody {
        error: match status(decision.reason) {
            401 => "unauthorized",
            403 => "forbidden",
            _ => "unavailable",
        },
        reason: decision.reason.as_str(),
        required: decision.required.map(|required| required.to_string()),
    };
    // Three short strings: encoding cannot fail.
    Some(serde_json::to_string(&body).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deny_says_its_reason_and_a_401_challenges() {
        let revoked = Decision::deny(Reason::RevokedKey);
        assert_eq!(status(revoked.reason), 401);
        assert_eq!(
            denial_body(&revoked).as_deref(),
            Some(r#"{"error":"unauthorized","reason":"revoked-key"}"#)
        );
        assert_eq!(
            www_authenticate(Reason::RevokedKey),
            Some("Bearer realm=\"keyscope\", error=\"invalid_token\"")
        );
        assert_eq!(
            www_authenticate(Reason::MissingKey),
            Some("Bearer realm=\"keyscope\"")
        );
        assert_eq!(www_authenticate(Reason::WrongApp), None);
        assert_eq!(www_authenticate(Reason::PolicyError), None);
        assert_eq!(status(Reason::PolicyError), 503);
    }
}
