//! Envoy's ext_authz over gRPC: `envoy.service.auth.v3.Authorization/Check`.

use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, HeaderAppendAction, HttpStatusCode,
};
use envoy_types::ext_authz::v3::{
    CheckResponseExt as _, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use tonic::{Request, Response, Status};

use super::answer::ProxyAnswer;
use super::authz::{Authorizer, Target};
use super::metrics::Front;

/// The ext_authz service.
#[derive(Debug, Clone)]
pub struct ExtAuthz {
    authorizer: Arc<Authorizer>,
}

impl ExtAuthz {
    pub fn new(authorizer: Arc<Authorizer>) -> Self {
        Self { authorizer }
    }
}

/// Every value of a request header, by lower-case name, without
/// allocating. Envoy sends either raw headers (`header_map`, one entry per
/// copy) or `headers` (a map in which repeated headers are joined with `,`);
/// the raw form wins when sent.
fn header_values<'a>(http: &'a HttpRequest, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
    let raw = http
        .header_map
        .as_ref()
        .filter(|map| !map.headers.is_empty());
    let from_raw = raw
        .into_iter()
        .flat_map(|map| map.headers.iter())
        .filter(move |h| h.key.eq_ignore_ascii_case(name))
        .map(|h| {
            if h.raw_value.is_empty() {
                h.value.as_bytes()
            } else {
                h.raw_value.as_slice()
            }
        });
    let from_map = raw
        .is_none()
        .then_some(&http.headers)
        .into_iter()
        .flat_map(|headers| headers.iter())
        .filter(move |(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_bytes());
    from_raw.chain(from_map)
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let request = request.into_inner();
        let Some(http) = request
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
        else {
            return Err(Status::invalid_argument(
                "the check request has no attributes.request.http",
            ));
        };
        if http.method.is_empty() || http.path.is_empty() {
            return Err(Status::invalid_argument(
                "attributes.request.http needs a method and a path",
            ));
        }
        let names = self.authorizer.headers();
        let credential = keyscope_keys::credential_from_headers(
            header_values(http, &names.api_key),
            header_values(http, "authorization"),
        );
        let outcome = self.authorizer.decide(
            Front::Grpc,
            credential,
            Target::Http {
                method: &http.method,
                path: &http.path,
            },
        );
        Ok(Response::new(render(ProxyAnswer::of(
            &outcome.decision,
            names,
        ))))
    }
}

/// A proxy answer as Envoy's `CheckResponse`: OK with the headers to add
/// (overwriting, so a caller cannot smuggle its own ids in), or a denied
/// response with its status, headers and body.
fn render(answer: ProxyAnswer) -> CheckResponse {
    let overwrite = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
    if answer.status == 200 {
        let mut ok = OkHttpResponseBuilder::new();
        for (name, value) in answer.headers {
            ok.add_header(name, value, overwrite, false);
        }
        let mut response = CheckResponse::with_status(Status::ok(answer.reason));
        response.set_http_response(ok);
        return response;
    }
    let mut denied = DeniedHttpResponseBuilder::new();
    denied.set_http_status(
        HttpStatusCode::try_from(i32::from(answer.status)).unwrap_or(HttpStatusCode::Forbidden),
    );
    for (name, value) in answer.headers {
        denied.add_header(name, value, overwrite, false);
    }
    if let Some(body) = answer.body {
        denied.set_body(body);
    }
    let status = match answer.status {
        401 => Status::unauthenticated(answer.reason),
        503 => Status::unavailable(answer.reason),
        _ => Status::permission_denied(answer.reason),
    };
    let mut response = CheckResponse::with_status(status);
    response.set_http_response(denied);
    response
}
