//! The answer to a proxy, built once from a decision: its HTTP status, the
//! headers to set, and the body. Their rules are the runtime's
//! [`keyscope_runtime::answer`], shared with the embedded library. The HTTP
//! doors (`/auth`, Envoy's HTTP ext_authz) and the gRPC door only render it.

use keyscope_policy::Decision;
pub use keyscope_runtime::answer::status;
use keyscope_runtime::answer::{denial_body, www_authenticate};

use super::config::HeaderConfig;

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
        if let Some(challenge) = www_authenticate(decision.reason) {
            headers.push(("www-authenticate".to_owned(), challenge.to_owned()));
        }
        Self {
            status,
            reason: decision.reason.as_str(),
            headers,
            body: denial_body(decision),
        }
    }
}

#[cfg(test)]
mod tests {
    use keyscope_policy::Reason;

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
