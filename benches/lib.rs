//! Fixtures shared by the benches: the synthetic world of `keyscope bench`.

use keyscope_policy::SnapshotData;
use keyscope_runtime::KeySecret;

pub use keyscope_runtime::bench::{HELD_SCOPE, SCOPES};

/// A synthetic world and the key we hold in it.
#[derive(Debug)]
pub struct World {
    /// The snapshot's contents.
    pub data: SnapshotData,
    /// The raw key of key 1.
    pub held: KeySecret,
}

/// See [`keyscope_runtime::bench::synthetic_world`].
pub fn world(keys: u64) -> World {
    let (data, held) = keyscope_runtime::bench::synthetic_world(keys);
    World { data, held }
}

/// The ext_authz check the serve load generators send: `GET` of one agent
/// of `acme`, with `key` in `x-api-key`.
pub fn check_request(key: &str) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".to_owned(),
                    path: "/api/v2/apps/acme/agents/a1".to_owned(),
                    headers: [("x-api-key".to_owned(), key.to_owned())].into(),
                    ..HttpRequest::default()
                }),
                ..Request::default()
            }),
            ..AttributeContext::default()
        }),
    }
}
