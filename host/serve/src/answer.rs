//! The answer to a proxy, built once from a decision: its HTTP status, the
//! headers to set, and the body. The HTTP doors (`/auth`, Envoy's HTTP
//! ext_authz) and the gRPC door only render it.

use keyscope_policy::{Decision, Reason};
use serde::Serialize;

use super::config::HeaderConfig;

/// The HTTP status a decision maps to: 200 allows; 401 for a credential
/// problem (the caller must authenticate); 403 for one of permission; 503
/// when the server cannot decide (it still denies).
pub fn status(reason: Reason) -> u16 {
    match reason {
        Reason::Allowed => 200,
        Reason::MissingKey
        | Reason::MalformedKey
        | Reason::UnknownKey
        | Reason::RevokedKey
        | Reason::ExpiredKey => 401,
        Reason::WrongApp | Reason::InsufficientPermission | Reason::UnknownOperation => 403,
        Reason::NoSnapshot | Reason::PolicyError => 503,
    }
}

/// `WWW-Authenticate` for a 401 (RFC 6750): no error code when no key was
/// presented, `invalid_token` otherwise.
fn www_authenticate(reason: Reason) -> &'static str {
    match reason {
        Reason::MissingKey => "Bearer realm=\"keyscope\"",
        _ => "Bearer realm=\"keyscope\", error=\"invalid_token\"",
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

/// What to answer a proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyAnswer {
    /// 200 to let the request through; 401, 403 or 503 to deny it.
    pub status: u16,
    /// The decision's reason, for a door that can say it beside the status
    /// (gRPC's status message).
    pub reason: &'static str,
    /// Headers to set. On an allow, the key's and the scope's ids, for the
    /// upstream (they overwrite any the client sent); on a deny, the
    /// content type and, for a 401, `WWW-Authenticate`.
    pub headers: Vec<(String, String)>,
    /// On a deny, `{"error","reason","required"}`.
    pub body: Option<String>,
}

impl ProxyAnswer {
    /// The answer to `decision`, with the id headers named by `names`.
    pub fn of(decision: &Decision, names: &HeaderConfig) -> Self {
        let status = status(decision.reason);
        if decision.allow {
            let headers = [
                (&names.key_id, decision.key_id),
                (&names.scope_id, decision.scope_id),
            ]
            .into_iter()
            .filter_map(|(name, id)| Some((name.clone(), id?.to_string())))
            .collect();
            return Self {
                status,
                reason: decision.reason.as_str(),
                headers,
                body: None,
            };
        }
        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        if status == 401 {
            headers.push((
                "www-authenticate".to_owned(),
                www_authenticate(decision.reason).to_owned(),
            ));
        }
        let body = DenialBody {
            error: match status {
                401 => "unauthorized",
                403 => "forbidden",
                _ => "unavailable",
            },
            reason: decision.reason.as_str(),
            required: decision.required.map(|required| required.to_string()),
        };
        Self {
            status,
            reason: decision.reason.as_str(),
            headers,
            // Three short strings: encoding cannot fail.
            body: Some(serde_json::to_string(&body).unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allow_carries_the_ids_and_a_deny_the_reason() {
        let names = HeaderConfig::default();
        let allow = Decision {
            allow: true,
            reason: Reason::Allowed,
            key_id: Some(7),
            scope_id: Some(3),
            required: None,
        };
        let answer = ProxyAnswer::of(&allow, &names);
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.headers,
            [
                ("x-keyscope-key-id".to_owned(), "7".to_owned()),
                ("x-keyscope-scope-id".to_owned(), "3".to_owned())
            ]
        );
        assert_eq!(answer.body, None);
        let answer = ProxyAnswer::of(&Decision::deny(Reason::RevokedKey), &names);
        assert_eq!(answer.status, 401);
        assert!(
            answer
                .headers
                .iter()
                .any(|(name, _)| name == "www-authenticate")
        );
        assert_eq!(
            answer.body.as_deref(),
            Some(r#"{"error":"unauthorized","reason":"revoked-key"}"#)
        );
        let answer = ProxyAnswer::of(&Decision::deny(Reason::NoSnapshot), &names);
        assert_eq!(answer.status, 503);
        assert!(
            !answer
                .headers
                .iter()
                .any(|(name, _)| name == "www-authenticate")
        );
    }
}
