//! The admin API's errors, in one shape: `{"error": {"kind", "message"}}`,
//! its own and the framework's alike, and never quoting the request.

use axum::Json;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyscope_store::StoreError;

use super::Fields;

/// An error answer of the admin API, in its one shape:
/// `{"error": {"kind": "...", "message": "..."}}`.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({
                "error": { "kind": self.kind, "message": self.message }
            })),
        )
            .into_response()
    }
}

/// Rewrites an error the framework made itself (an extractor's rejection, a
/// timeout, an oversized body) into the one shape, with a message of our
/// own: the framework's text may quote the request.
pub(super) async fn uniform_errors(response: Response) -> Response {
    let status = response.status();
    let ours = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if ours || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (kind, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("too-large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported-media-type",
            "the request body must be JSON, with Content-Type: application/json",
        ),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "the request took too long"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method-not-allowed",
            "this admin route does not take that method",
        ),
        StatusCode::NOT_FOUND => ("not-found", "no such admin route"),
        status if status.is_server_error() => ("internal", "the request failed"),
        _ => ("invalid-input", "the request is malformed"),
    };
    let mut uniform = ApiError::new(status, kind, message).into_response();
    if let Some(allow) = response.headers().get(header::ALLOW) {
        uniform.headers_mut().insert(header::ALLOW, allow.clone());
    }
    uniform
}

/// A JSON request body, refused with an error that names no input.
pub(super) struct Body<T>(pub(super) T);

impl<T: serde::de::DeserializeOwned + Fields, S: Send + Sync> axum::extract::FromRequest<S>
    for Body<T>
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            // Read first (within the body limit), then refuse: a connection
            // closed with request bytes still unread is reset by the kernel,
            // and the reset can destroy this answer on its way to the client.
            let _ = axum::body::Bytes::from_request(request, state).await;
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "the request body must be JSON, with Content-Type: application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                let status = rejection.status();
                let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "too-large"
                } else {
                    "invalid-input"
                };
                ApiError::new(status, kind, "the request body could not be read in full")
            })?;
        keyscope_runtime::json_input::parse(&bytes, T::FIELDS)
            .map(Body)
            .map_err(|error| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid-input", error.to_string())
            })
    }
}

/// A store error, as an HTTP status that says whose fault it is.
fn store_error(err: &StoreError) -> ApiError {
    ApiError::new(status_of(err), err.kind(), err.to_string())
}

/// The HTTP status of a store error: whose fault it is. Every admin door
/// answers with it.
pub fn status_of(err: &StoreError) -> StatusCode {
    match err {
        StoreError::ScopeNotFound(_)
        | StoreError::KeyNotFound(_)
        | StoreError::TokenNotFound { .. } => StatusCode::NOT_FOUND,
        StoreError::DuplicateScope { .. }
        | StoreError::NotRotatable { .. }
        | StoreError::DuplicateToken { .. }
        | StoreError::TokenReused
        | StoreError::DuplicateKey { .. }
        | StoreError::ScopeLimit { .. }
        | StoreError::KeyLimit { .. }
        | StoreError::ScopeHasLiveKeys { .. } => StatusCode::CONFLICT,
        StoreError::Invalid { .. } | StoreError::UnknownName(_) | StoreError::InvalidRole(_) => {
            StatusCode::BAD_REQUEST
        }
        // The database is out of reach: nothing changed, try again later.
        StoreError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        // The server's own store failed: not the caller's fault.
        StoreError::NotAStore { .. }
        | StoreError::NoStore(_)
        | StoreError::StoreTooNew { .. }
        | StoreError::SchemaTooOld { .. }
        | StoreError::Sqlite(_)
        | StoreError::Postgres(_)
        | StoreError::DestinationNotEmpty(_)
        | StoreError::Snapshot(_)
        | StoreError::Injected(_)
        | StoreError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<super::Access> for ApiError {
    fn from(access: super::Access) -> Self {
        match access {
            super::Access::Forbidden(why) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", why),
            super::Access::Hidden(why) => ApiError::new(StatusCode::NOT_FOUND, "not-found", why),
            super::Access::Gateway => super::gateway(),
            super::Access::Store(error) => store_error(&error),
            super::Access::Failed => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the request failed",
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        store_error(&error)
    }
}

impl From<keyscope_policy::UnknownName> for ApiError {
    fn from(error: keyscope_policy::UnknownName) -> Self {
        store_error(&error.into())
    }
}
