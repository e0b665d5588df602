//! The admin API, on a listener of its own: scopes and keys as the CLI
//! manages them (the same JSON), the live policy's status, and module
//! reloads. Every request needs `Authorization: Bearer <admin token>`; the
//! store keeps only the token's SHA-256, compared in constant time.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::distr::{Alphanumeric, SampleString as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::authz::Authorizer;
use super::config::RequestLimits;
use super::refresh::{Refresher, ReloadError};
use keyscope_policy::{AgentsLevel, RuntimeSet};
use keyscope_store::{ScopeRef, ScopeUpdate, SqliteStore as Store, Store as _, StoreError};

/// A new admin token: `ksadmin_` and 40 characters from the CSPRNG.
pub fn generate_token() -> Zeroizing<String> {
    let mut token = Zeroizing::new(String::from("ksadmin_"));
    token.push_str(&Alphanumeric.sample_string(&mut rand::rng(), 40));
    token
}

/// The SHA-256 of a token, as stored.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(Clone)]
struct Admin {
    store: Arc<Mutex<Store>>,
    refresher: Arc<Refresher>,
    authorizer: Arc<Authorizer>,
    token: [u8; 32],
    failures: Arc<FailedLogins>,
}

/// The admin router. Every request, to any path, is authenticated first:
/// a known route and an unknown one get the same 401 without a token.
pub fn router(
    store: Store,
    refresher: Arc<Refresher>,
    authorizer: Arc<Authorizer>,
    token: [u8; 32],
    limits: &RequestLimits,
) -> Router {
    let admin = Admin {
        store: Arc::new(Mutex::new(store)),
        refresher,
        authorizer,
        token,
        failures: Arc::new(FailedLogins::default()),
    };
    Router::new()
        .route("/admin/status", get(status))
        .route("/admin/policy", post(reload_policy))
        .route("/admin/scopes", get(list_scopes).post(create_scope))
        .route(
            "/admin/scopes/{scope}",
            get(show_scope).patch(update_scope).delete(delete_scope),
        )
        .route("/admin/keys", get(list_keys).post(create_key))
        .route("/admin/keys/{id}/revoke", post(revoke_key))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such admin route")
        })
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(admin.clone(), authenticate))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout(),
        ))
        // Outermost, so that every error, a timeout's too, has the one shape.
        .layer(middleware::map_response(uniform_errors))
        .with_state(admin)
}

/// Failed authentications per client address: a token bucket of
/// [`FailedLogins::BURST`] failures, refilled one per
/// [`FailedLogins::REFILL`]. A client with none left gets 429 without its
/// token being looked at.
#[derive(Default)]
struct FailedLogins {
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl FailedLogins {
    const BURST: f64 = 10.0;
    const REFILL: Duration = Duration::from_secs(6);
    /// Past this many addresses, full buckets are forgotten.
    const MAX_TRACKED: usize = 10_000;

    /// Whether `peer` may try now.
    fn may_try(&self, peer: IpAddr) -> bool {
        let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        buckets
            .get(&peer)
            .is_none_or(|&(left, at)| Self::refilled(left, at) >= 1.0)
    }

    /// Counts a failure of `peer`.
    fn failed(&self, peer: IpAddr) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= Self::MAX_TRACKED {
            buckets.retain(|_, &mut (left, at)| Self::refilled(left, at) < Self::BURST);
        }
        let (left, at) = buckets
            .get(&peer)
            .copied()
            .unwrap_or((Self::BURST, Instant::now()));
        let left = Self::refilled(left, at);
        buckets.insert(peer, ((left - 1.0).max(0.0), Instant::now()));
    }

    fn refilled(left: f64, at: Instant) -> f64 {
        (left + at.elapsed().as_secs_f64() / Self::REFILL.as_secs_f64()).min(Self::BURST)
    }
}

async fn authenticate(
    State(admin): State<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if !admin.failures.may_try(peer.ip()) {
        admin.authorizer.metrics().admin_auth_failed();
        tracing::warn!(peer = %peer.ip(), "admin API: too many failed authentications; refused");
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "too many failed authentications from this address; try again later",
        )
        .into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(FailedLogins::REFILL.as_secs()),
        );
        return response;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token_digest(token.trim()));
    let valid = presented.is_some_and(|digest| bool::from(digest.ct_eq(&admin.token)));
    if valid {
        return next.run(request).await;
    }
    admin.failures.failed(peer.ip());
    admin.authorizer.metrics().admin_auth_failed();
    // The log names the client and the path, never what it presented.
    tracing::warn!(
        peer = %peer.ip(),
        path = %keyscope_store::printable(request.uri().path()),
        token = if presented.is_some() { "wrong" } else { "missing" },
        "admin API: authentication failed"
    );
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        if presented.is_some() {
            "the admin token is not valid"
        } else {
            "the admin API needs Authorization: Bearer <admin token>"
        },
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"keyscope-admin\""),
    );
    response
}

/// An error answer of the admin API, in its one shape:
/// `{"error": {"kind": "...", "message": "..."}}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
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
async fn uniform_errors(response: Response) -> Response {
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
struct Body<T>(T);

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
    let status = match err {
        StoreError::ScopeNotFound(_) | StoreError::KeyNotFound(_) => StatusCode::NOT_FOUND,
        StoreError::DuplicateScope { .. }
        | StoreError::DuplicateKey { .. }
        | StoreError::ScopeLimit { .. }
        | StoreError::KeyLimit { .. }
        | StoreError::ScopeHasLiveKeys { .. } => StatusCode::CONFLICT,
        StoreError::Invalid { .. } | StoreError::UnknownName(_) => StatusCode::BAD_REQUEST,
        // The server's own store failed: not the caller's fault.
        StoreError::NotAStore { .. }
        | StoreError::NoStore(_)
        | StoreError::StoreTooNew { .. }
        | StoreError::Sqlite(_)
        | StoreError::Snapshot(_)
        | StoreError::Injected(_)
        | StoreError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, err.kind(), err.to_string())
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

/// A handler's answer; errors use `?`.
type Handled = Result<Response, ApiError>;

/// The fields a request body may hold, for error messages.
trait Fields {
    const FIELDS: &'static str;
}

/// Runs a store change off the executor, then rebuilds the snapshot so the
/// change is live before the response is sent. `apply` builds the response
/// too, so a response that cannot be built can refuse the change.
async fn change(
    admin: Admin,
    apply: impl FnOnce(&mut Store) -> Handled + Send + 'static,
) -> Response {
    let result = tokio::task::spawn_blocking(move || {
        let response = {
            let mut store = admin.store.lock().unwrap_or_else(PoisonError::into_inner);
            apply(&mut store)?
        };
        // Committed: a failed rebuild is retried by the store watcher.
        let live = admin.refresher.refresh().map(drop);
        Ok::<_, ApiError>((response, live))
    })
    .await;
    match result {
        Ok(Ok((response, Ok(())))) => response,
        Ok(Ok((_, Err(err)))) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-live",
            format!("the change is saved but not live yet (the watcher retries): {err}"),
        )
        .into_response(),
        Ok(Err(err)) => err.into_response(),
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the change failed",
        )
        .into_response(),
    }
}

/// Reads the store off the executor.
async fn read<T: Serialize + Send + 'static>(
    admin: Admin,
    get: impl FnOnce(&Store) -> keyscope_store::Result<T> + Send + 'static,
) -> Handled {
    let result = tokio::task::spawn_blocking(move || {
        let store = admin.store.lock().unwrap_or_else(PoisonError::into_inner);
        get(&store)
    })
    .await;
    match result {
        Ok(Ok(value)) => Ok(Json(value).into_response()),
        Ok(Err(err)) => Err(err.into()),
        Err(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the read failed",
        )),
    }
}

/// Parses an optional level or permission set given as text.
fn parsed<T: std::str::FromStr<Err = keyscope_policy::UnknownName>>(
    text: Option<&str>,
) -> Result<Option<T>, ApiError> {
    Ok(text.map(str::parse).transpose()?)
}

/// A scope named in a path or a query: an id or `APP/NAME`.
fn scope_ref(text: &str) -> Result<ScopeRef, ApiError> {
    Ok(text.parse::<ScopeRef>()?)
}

#[derive(Deserialize)]
struct AppFilter {
    app: Option<String>,
}

async fn list_scopes(State(admin): State<Admin>, Query(filter): Query<AppFilter>) -> Handled {
    read(admin, move |store| store.list_scopes(filter.app.as_deref())).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewScope {
    app: String,
    name: String,
    #[serde(default)]
    agents: Option<String>,
    #[serde(default)]
    runtime: Option<String>,
}

impl Fields for NewScope {
    const FIELDS: &'static str = r#"{"app","name","agents","runtime"}"#;
}

async fn create_scope(State(admin): State<Admin>, Body(new): Body<NewScope>) -> Handled {
    let agents: Option<AgentsLevel> = parsed(new.agents.as_deref())?;
    let runtime: Option<RuntimeSet> = parsed(new.runtime.as_deref())?;
    Ok(change(admin, move |store| {
        let scope = store.create_scope(
            &new.app,
            &new.name,
            agents.unwrap_or(AgentsLevel::None),
            runtime.unwrap_or(RuntimeSet::EMPTY),
        )?;
        Ok((StatusCode::CREATED, Json(scope)).into_response())
    })
    .await)
}

async fn show_scope(State(admin): State<Admin>, Path(scope): Path<String>) -> Handled {
    let scope = scope_ref(&scope)?;
    read(admin, move |store| store.scope(&scope)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeChange {
    name: Option<String>,
    agents: Option<String>,
    runtime: Option<String>,
}

impl Fields for ScopeChange {
    const FIELDS: &'static str = r#"{"name","agents","runtime"}"#;
}

async fn update_scope(
    State(admin): State<Admin>,
    Path(scope): Path<String>,
    Body(update): Body<ScopeChange>,
) -> Handled {
    let scope = scope_ref(&scope)?;
    let agents: Option<AgentsLevel> = parsed(update.agents.as_deref())?;
    let runtime: Option<RuntimeSet> = parsed(update.runtime.as_deref())?;
    if update.name.is_none() && agents.is_none() && runtime.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid-input",
            "nothing to change; give \"name\", \"agents\" or \"runtime\"",
        ));
    }
    let update = ScopeUpdate {
        name: update.name,
        agents,
        runtime,
    };
    Ok(change(admin, move |store| {
        Ok(Json(store.update_scope(&scope, &update)?).into_response())
    })
    .await)
}

#[derive(Deserialize)]
struct DeleteOptions {
    #[serde(default)]
    revoke_keys: bool,
}

#[derive(Serialize)]
struct Deleted {
    deleted: keyscope_store::Scope,
    revoked_keys: Vec<u64>,
}

async fn delete_scope(
    State(admin): State<Admin>,
    Path(scope): Path<String>,
    Query(options): Query<DeleteOptions>,
) -> Handled {
    let scope = scope_ref(&scope)?;
    Ok(change(admin, move |store| {
        let (deleted, revoked) = store.delete_scope(&scope, options.revoke_keys)?;
        Ok(Json(Deleted {
            deleted,
            revoked_keys: revoked.iter().map(|key| key.id).collect(),
        })
        .into_response())
    })
    .await)
}

#[derive(Deserialize)]
struct ScopeFilter {
    scope: Option<String>,
}

async fn list_keys(State(admin): State<Admin>, Query(filter): Query<ScopeFilter>) -> Handled {
    let scope = filter.scope.as_deref().map(scope_ref).transpose()?;
    read(admin, move |store| store.list_keys(scope.as_ref())).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKeyRequest {
    scope: String,
    name: String,
}

impl Fields for NewKeyRequest {
    const FIELDS: &'static str = r#"{"scope","name"}"#;
}

/// As `keyscope --json key create` prints it: the secret, this once.
#[derive(Serialize)]
struct CreatedKey<'a> {
    id: u64,
    name: &'a str,
    scope_id: u64,
    key: &'a str,
    created_at: &'a str,
}

async fn create_key(State(admin): State<Admin>, Body(new): Body<NewKeyRequest>) -> Handled {
    let scope = scope_ref(&new.scope)?;
    Ok(change(admin, move |store| {
        // The response is built before the key is committed: a key whose
        // secret could not be put in the response is rolled back.
        let built = store.create_key_delivered(&scope, &new.name, |created| {
            serde_json::to_vec(&CreatedKey {
                id: created.key.id,
                name: &created.key.name,
                scope_id: created.key.scope_id,
                key: created.secret.expose(),
                created_at: &created.key.created_at,
            })
            .map(Zeroizing::new)
        })?;
        let (body, _) = built.map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the key's response could not be built; the key was not created",
            )
        })?;
        Ok((
            StatusCode::CREATED,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_vec(),
        )
            .into_response())
    })
    .await)
}

async fn revoke_key(State(admin): State<Admin>, Path(id): Path<String>) -> Handled {
    let id: u64 = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "no such key: a key id is a number",
        )
    })?;
    Ok(change(admin, move |store| {
        Ok(Json(store.revoke_key(id)?).into_response())
    })
    .await)
}

/// The live policy: what serves, what was refused, and the counters.
async fn status(State(admin): State<Admin>) -> Response {
    Json(status_json(&admin.refresher)).into_response()
}

/// The status document, also logged on SIGHUP.
pub fn status_json(refresher: &Refresher) -> serde_json::Value {
    use std::sync::atomic::Ordering::Relaxed;
    let live = refresher.live();
    let current = live.current();
    let stats = live.stats();
    serde_json::json!({
        "generation": current.number,
        "module": current.component.info(),
        "snapshot": {
            "digest": current.snapshot_info.digest_hex(),
            "scopes": current.snapshot_info.scopes,
            "keys": current.snapshot_info.keys,
            "operations": current.snapshot_info.operations,
        },
        "loaded_at_ms": current.loaded_at_ms,
        "stats": {
            "swaps_published": stats.swaps_published.load(Relaxed),
            "swaps_refused": stats.swaps_refused.load(Relaxed),
            "policy_errors": stats.policy_errors.load(Relaxed),
            "instances_replaced": stats.instances_replaced.load(Relaxed),
        },
        "history": live.history(),
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReloadRequest {
    path: Option<PathBuf>,
}

async fn reload_policy(State(admin): State<Admin>, body: axum::body::Bytes) -> Handled {
    let request: ReloadRequest = if body.is_empty() {
        ReloadRequest::default()
    } else {
        keyscope_runtime::json_input::parse(&body, r#"{"path": FILE} or no body"#)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid-input", e.to_string()))?
    };
    let refresher = Arc::clone(&admin.refresher);
    let result =
        tokio::task::spawn_blocking(move || refresher.reload_module(request.path.as_deref())).await;
    match result {
        Ok(Ok(generation)) => Ok(Json(serde_json::json!({
            "generation": generation.number,
            "module": generation.component.info(),
        }))
        .into_response()),
        Ok(Err(err)) => Err(match err {
            ReloadError::NoPolicyFile => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid-input", err.to_string())
            }
            ReloadError::Read(_) | ReloadError::Refused(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "policy-refused",
                err.to_string(),
            ),
        }),
        Err(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the reload failed",
        )),
    }
}
