//! The admin API, on a listener of its own: scopes and keys as the CLI
//! manages them (the same JSON), the live policy's status, and module
//! reloads. Every request needs `Authorization: Bearer <admin token>`; the
//! store keeps only the token's SHA-256, compared in constant time.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
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

use super::config::RequestLimits;
use super::refresh::{Refresher, ReloadError};
use crate::error::Error;
use crate::store::{ScopeRef, ScopeUpdate, Store};
use crate::{AgentsLevel, RuntimeSet};

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
    token: [u8; 32],
}

/// The admin router.
pub fn router(
    store: Store,
    refresher: Arc<Refresher>,
    token: [u8; 32],
    limits: &RequestLimits,
) -> Router {
    let admin = Admin {
        store: Arc::new(Mutex::new(store)),
        refresher,
        token,
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
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .route_layer(middleware::from_fn_with_state(admin.clone(), authenticate))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout(),
        ))
        .with_state(admin)
}

async fn authenticate(State(admin): State<Admin>, request: Request, next: Next) -> Response {
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
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        if presented.is_some() {
            "the admin token is not valid"
        } else {
            "the admin API needs Authorization: Bearer <admin token>"
        },
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"keyscope-admin\""),
    );
    response
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// A store error, as an HTTP status that says whose fault it is.
fn store_error(err: &Error) -> Response {
    let status = match err {
        Error::ScopeNotFound(_) | Error::KeyNotFound(_) => StatusCode::NOT_FOUND,
        Error::DuplicateScope { .. }
        | Error::DuplicateKey { .. }
        | Error::ScopeLimit { .. }
        | Error::KeyLimit { .. }
        | Error::ScopeHasLiveKeys { .. } => StatusCode::CONFLICT,
        Error::Invalid { .. } | Error::UnknownName(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, &err.to_string())
}

/// Runs a store change off the executor, then rebuilds the snapshot so the
/// change is live before the response is sent.
async fn change<T: Serialize + Send + 'static>(
    admin: Admin,
    status: StatusCode,
    apply: impl FnOnce(&mut Store) -> crate::Result<T> + Send + 'static,
) -> Response {
    let result = tokio::task::spawn_blocking(move || {
        let value = {
            let mut store = admin.store.lock().unwrap_or_else(PoisonError::into_inner);
            apply(&mut store)?
        };
        // Committed: a failed rebuild is retried by the store watcher.
        let live = admin.refresher.refresh().map(drop);
        Ok::<_, Error>((value, live))
    })
    .await;
    match result {
        Ok(Ok((value, Ok(())))) => (status, Json(value)).into_response(),
        Ok(Ok((_, Err(err)))) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the change is saved but not live yet (the watcher retries): {err}"),
        ),
        Ok(Err(err)) => store_error(&err),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the change failed"),
    }
}

/// Reads the store off the executor.
async fn read<T: Serialize + Send + 'static>(
    admin: Admin,
    get: impl FnOnce(&Store) -> crate::Result<T> + Send + 'static,
) -> Response {
    let result = tokio::task::spawn_blocking(move || {
        let store = admin.store.lock().unwrap_or_else(PoisonError::into_inner);
        get(&store)
    })
    .await;
    match result {
        Ok(Ok(value)) => Json(value).into_response(),
        Ok(Err(err)) => store_error(&err),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the read failed"),
    }
}

/// A store error as a handler's `Err`, so handlers can use `?`.
struct Refused(Error);

impl From<Error> for Refused {
    fn from(error: Error) -> Self {
        Self(error)
    }
}

impl From<keyscope_policy::UnknownName> for Refused {
    fn from(error: keyscope_policy::UnknownName) -> Self {
        Self(error.into())
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        store_error(&self.0)
    }
}

type Handled = Result<Response, Refused>;

/// Parses an optional level or permission set given as text.
fn parsed<T: std::str::FromStr<Err = keyscope_policy::UnknownName>>(
    text: Option<&str>,
) -> Result<Option<T>, Refused> {
    Ok(text.map(str::parse).transpose()?)
}

#[derive(Deserialize)]
struct AppFilter {
    app: Option<String>,
}

async fn list_scopes(State(admin): State<Admin>, Query(filter): Query<AppFilter>) -> Response {
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

async fn create_scope(State(admin): State<Admin>, Json(new): Json<NewScope>) -> Handled {
    let agents: Option<AgentsLevel> = parsed(new.agents.as_deref())?;
    let runtime: Option<RuntimeSet> = parsed(new.runtime.as_deref())?;
    Ok(change(admin, StatusCode::CREATED, move |store| {
        store.create_scope(
            &new.app,
            &new.name,
            agents.unwrap_or(AgentsLevel::None),
            runtime.unwrap_or(RuntimeSet::EMPTY),
        )
    })
    .await)
}

async fn show_scope(State(admin): State<Admin>, Path(scope): Path<String>) -> Handled {
    let scope: ScopeRef = scope.parse()?;
    Ok(read(admin, move |store| store.scope(&scope)).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeChange {
    name: Option<String>,
    agents: Option<String>,
    runtime: Option<String>,
}

async fn update_scope(
    State(admin): State<Admin>,
    Path(scope): Path<String>,
    Json(update): Json<ScopeChange>,
) -> Handled {
    let scope: ScopeRef = scope.parse()?;
    let agents: Option<AgentsLevel> = parsed(update.agents.as_deref())?;
    let runtime: Option<RuntimeSet> = parsed(update.runtime.as_deref())?;
    if update.name.is_none() && agents.is_none() && runtime.is_none() {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            "nothing to change; give \"name\", \"agents\" or \"runtime\"",
        ));
    }
    let update = ScopeUpdate {
        name: update.name,
        agents,
        runtime,
    };
    Ok(change(admin, StatusCode::OK, move |store| {
        store.update_scope(&scope, &update)
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
    deleted: crate::Scope,
    revoked_keys: Vec<u64>,
}

async fn delete_scope(
    State(admin): State<Admin>,
    Path(scope): Path<String>,
    Query(options): Query<DeleteOptions>,
) -> Handled {
    let scope: ScopeRef = scope.parse()?;
    Ok(change(admin, StatusCode::OK, move |store| {
        let (deleted, revoked) = store.delete_scope(&scope, options.revoke_keys)?;
        Ok(Deleted {
            deleted,
            revoked_keys: revoked.iter().map(|key| key.id).collect(),
        })
    })
    .await)
}

#[derive(Deserialize)]
struct ScopeFilter {
    scope: Option<String>,
}

async fn list_keys(State(admin): State<Admin>, Query(filter): Query<ScopeFilter>) -> Handled {
    let scope: Option<ScopeRef> = filter.scope.as_deref().map(str::parse).transpose()?;
    Ok(read(admin, move |store| store.list_keys(scope.as_ref())).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKeyRequest {
    scope: String,
    name: String,
}

/// As `keyscope --json key create` prints it: the secret, this once.
#[derive(Serialize)]
struct CreatedKey {
    id: u64,
    name: String,
    scope_id: u64,
    key: Zeroizing<String>,
    created_at: String,
}

async fn create_key(State(admin): State<Admin>, Json(new): Json<NewKeyRequest>) -> Handled {
    let scope: ScopeRef = new.scope.parse()?;
    Ok(change(admin, StatusCode::CREATED, move |store| {
        let created = store.create_key(&scope, &new.name)?;
        Ok(CreatedKey {
            id: created.key.id,
            name: created.key.name,
            scope_id: created.key.scope_id,
            key: Zeroizing::new(created.secret.expose().to_owned()),
            created_at: created.key.created_at,
        })
    })
    .await)
}

async fn revoke_key(State(admin): State<Admin>, Path(id): Path<u64>) -> Response {
    change(admin, StatusCode::OK, move |store| store.revoke_key(id)).await
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

async fn reload_policy(State(admin): State<Admin>, body: axum::body::Bytes) -> Response {
    let request: ReloadRequest = if body.is_empty() {
        ReloadRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("expected {{\"path\": FILE}} or no body: {e}"),
                );
            }
        }
    };
    let refresher = Arc::clone(&admin.refresher);
    let result =
        tokio::task::spawn_blocking(move || refresher.reload_module(request.path.as_deref())).await;
    match result {
        Ok(Ok(generation)) => Json(serde_json::json!({
            "generation": generation.number,
            "module": generation.component.info(),
        }))
        .into_response(),
        Ok(Err(err)) => {
            let status = match err {
                ReloadError::NoPolicyFile => StatusCode::BAD_REQUEST,
                ReloadError::Read { .. } | ReloadError::Refused(_) => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
            };
            error(status, &err.to_string())
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the reload failed"),
    }
}
