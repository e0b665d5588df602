//! The admin API, on a listener of its own: scopes and keys as the CLI
//! manages them (the same JSON), the live policy's status, and module
//! reloads. Every request needs `Authorization: Bearer <admin token>`; the
//! store keeps only the token's SHA-256, compared in constant time.
//!
//! [`Admin`] is the state both admin doors share, this API and the console
//! (`crate::console`) on the same listener: store reads, audited changes
//! made live before the answer, and the admin token check.

mod auth;
mod errors;
mod fleet;
mod gate;

pub(crate) use fleet::long_poll_max;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use axum::{Extension, Json, Router};
use keyscope_policy::{AgentsLevel, RuntimeSet};
use keyscope_store::{AnyStore as Store, Lifetime, ScopeRef, ScopeUpdate, Store as _};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use self::auth::Actor;
use self::auth::{FailedLogins, authenticate};
pub use self::errors::status_of;
use self::errors::{ApiError, Body, uniform_errors};
pub use self::gate::Need;
use crate::authz::Authorizer;
use crate::bundles::Bundles;
use crate::config::RequestLimits;
use crate::refresh::{Refresher, ReloadError};
pub use keyscope_keys::admin_token::{digest as token_digest, generate as generate_token};
use keyscope_store::roles::Action;

/// What every admin door (the API, the console) works on.
#[derive(Clone)]
pub struct Admin {
    /// `None` on a gateway, which follows bundles and holds no store.
    store: Option<Arc<Mutex<Store>>>,
    refresher: Arc<Refresher>,
    authorizer: Arc<Authorizer>,
    /// A gateway's one admin token; a server with a store checks its named
    /// tokens instead.
    gateway_token: Option<[u8; 32]>,
    /// The named tokens as last read, for read-only requests while the
    /// database is out of reach.
    known_tokens: Arc<Mutex<Vec<keyscope_store::Token>>>,
    failures: Arc<FailedLogins>,
    /// Whose forwarding headers name the client, for `failures`.
    proxies: Arc<crate::client::TrustedProxies>,
    /// On a control plane: its bundles and fleet.
    bundles: Option<Arc<Bundles>>,
    /// The longest a bundle poll may wait: within the idle timeout.
    long_poll_max: std::time::Duration,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("gateway", &self.store.is_none())
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// The admin doors' state. `store` is `None` on a gateway.
    pub(crate) fn new(
        store: Option<Store>,
        refresher: Arc<Refresher>,
        authorizer: Arc<Authorizer>,
        gateway_token: Option<[u8; 32]>,
        known_tokens: Vec<keyscope_store::Token>,
        proxies: crate::client::TrustedProxies,
        limits: &RequestLimits,
    ) -> Self {
        Admin {
            store: store.map(|store| Arc::new(Mutex::new(store))),
            bundles: refresher.bundles().cloned(),
            refresher,
            authorizer,
            gateway_token,
            known_tokens: Arc::new(Mutex::new(known_tokens)),
            failures: Arc::new(FailedLogins::default()),
            proxies: Arc::new(proxies),
            // A waiting poll sends nothing: it must answer before the idle
            // timeout closes its connection.
            long_poll_max: fleet::long_poll_max(limits.idle_timeout()),
        }
    }
}

/// The admin API's router: `/admin`, every path under it, and
/// `/v1/bundle`. Every request to them is authenticated first: a known
/// route and an unknown one get the same 401 without a token.
/// `GET /v1/bundle` also takes fleet tokens, and only it does.
pub(crate) fn router(admin: Admin, limits: &RequestLimits) -> Router {
    let timeout = |after| {
        tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, after)
    };
    let long_poll_max = admin.long_poll_max;
    Router::new()
        .route("/admin/fleet", get(fleet::fleet))
        .route("/admin/fleet/{id}", delete(fleet::forget))
        .route("/admin/status", get(status))
        .route("/admin/policy", post(reload_policy))
        .route("/admin/scopes", get(list_scopes).post(create_scope))
        .route(
            "/admin/scopes/{scope}",
            get(show_scope).patch(update_scope).delete(delete_scope),
        )
        .route("/admin/keys", get(list_keys).post(create_key))
        .route("/admin/keys/{id}/revoke", post(revoke_key))
        .route("/admin/keys/{id}/rotate", post(rotate_key))
        .route("/admin/audit", get(audit_trail))
        .route("/admin/tokens", get(list_tokens))
        .route_layer(timeout(limits.request_timeout()))
        // A bundle poll may wait for a newer state: its deadline is the
        // longest wait plus the request timeout.
        .route(
            "/v1/bundle",
            get(fleet::bundle).layer(timeout(long_poll_max + limits.request_timeout())),
        )
        // Every path under `/admin` is the API's, known or not; the rest
        // are the console's (merged beside this router).
        .route("/admin", any(no_such_route))
        .route("/admin/{*rest}", any(no_such_route))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(admin.clone(), authenticate))
        // Outermost, so that every error, a timeout's too, has the one shape.
        .layer(middleware::map_response(uniform_errors))
        .with_state(admin)
}

async fn no_such_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such admin route")
}

/// A handler's answer; errors use `?`.
type Handled = Result<Response, ApiError>;

/// The fields a request body may hold, for error messages.
trait Fields {
    const FIELDS: &'static str;
}

/// Runs a store change off the executor, once the gate let `actor` make
/// change `what` to what `need` touches, then rebuilds the snapshot so the
/// change is live before the response is sent. `apply` builds the response
/// too, so a response that cannot be built can refuse the change.
async fn change(
    admin: Admin,
    actor: Actor,
    need: Need,
    what: &'static str,
    apply: impl FnOnce(&mut Store) -> Handled + Send + 'static,
) -> Response {
    match admin.write(&actor, need, what, apply).await {
        Ok((response, Ok(()))) => response,
        Ok((_, Err(err))) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-live",
            format!("the change is saved but not live yet (the watcher retries): {err}"),
        )
        .into_response(),
        Err(err) => err.into_response(),
    }
}

/// Reads the store off the executor, as JSON, once the gate let `actor`
/// read what `need` touches.
async fn read<T: Serialize + Send + 'static>(
    admin: Admin,
    actor: &Actor,
    need: Need,
    get: impl FnOnce(&mut Store) -> keyscope_store::Result<T> + Send + 'static,
) -> Handled {
    Ok(Json(admin.read(actor, need, get).await?).into_response())
}

/// The audit trail as one admin may read it.
#[derive(Debug)]
pub struct AuditView {
    /// The entries they may read, in order.
    pub entries: Vec<keyscope_store::audit::AuditEntry>,
    /// Whether the whole trail verifies.
    pub verified: Result<u64, keyscope_store::audit::ChainBreak>,
    /// How many entries the whole trail holds.
    pub total: usize,
}

/// Why a request could not use the store.
#[derive(Debug)]
pub enum Access {
    /// The admin's role does not allow it: 403, with why in words.
    Forbidden(String),
    /// The admin's role has no part in the app it names: 404, as if the
    /// app did not exist.
    Hidden(String),
    /// A gateway holds no store.
    Gateway,
    /// The store refused or failed.
    Store(keyscope_store::StoreError),
    /// The blocking task failed.
    Failed,
}

impl From<keyscope_store::StoreError> for Access {
    fn from(error: keyscope_store::StoreError) -> Self {
        Self::Store(error)
    }
}

impl Admin {
    /// Runs `get` on the store off the executor, once the gate let `actor`
    /// read what `need` touches. A list (`Need::Listing`) is the caller's
    /// to filter by the actor's role.
    pub async fn read<T: Send + 'static>(
        &self,
        actor: &Actor,
        need: Need,
        get: impl FnOnce(&mut Store) -> keyscope_store::Result<T> + Send + 'static,
    ) -> Result<T, Access> {
        self.read_as(actor, Action::Read, need, "read", get).await
    }

    /// As [`Admin::read`], for the read that prepares change `what` (a
    /// form's post reads what it changes first): gated, and a refusal
    /// audited, as the change itself would be.
    pub async fn read_to_change<T: Send + 'static>(
        &self,
        actor: &Actor,
        need: Need,
        what: &'static str,
        get: impl FnOnce(&mut Store) -> keyscope_store::Result<T> + Send + 'static,
    ) -> Result<T, Access> {
        self.read_as(actor, Action::Change, need, what, get).await
    }

    async fn read_as<T: Send + 'static>(
        &self,
        actor: &Actor,
        action: Action,
        need: Need,
        what: &'static str,
        get: impl FnOnce(&mut Store) -> keyscope_store::Result<T> + Send + 'static,
    ) -> Result<T, Access> {
        let admin = self.clone();
        let actor = actor.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = admin.locked_store()?;
            gate::gate(Some(&mut store), &actor, action, &need, what)?;
            Ok(get(&mut store)?)
        })
        .await
        .unwrap_or(Err(Access::Failed))
    }

    /// The audit trail as `actor` may read it (an app role: its apps'
    /// entries), and whether the whole trail verifies.
    pub async fn audit_trail(&self, actor: &Actor) -> Result<AuditView, Access> {
        let role = actor.role.clone();
        self.read(actor, Need::Listing, move |store| {
            let whole = store.audit_trail(None)?;
            let verified = keyscope_store::audit::verify(&whole);
            let total = whole.entries.len();
            let live = if role.apps().is_some() {
                store.list_scopes(None)?
            } else {
                Vec::new()
            };
            let visible = keyscope_store::audit::visible_to(&role, &whole.entries, |id| {
                live.iter().find(|s| s.id == id).map(|s| s.app.clone())
            });
            let entries = whole
                .entries
                .into_iter()
                .zip(visible)
                .filter_map(|(entry, visible)| visible.then_some(entry))
                .collect();
            Ok(AuditView {
                entries,
                verified,
                total,
            })
        })
        .await
    }

    /// Whether `actor` may take `action` on `app`'s scopes and keys, as the
    /// gate would answer it, without recording anything: for pages that
    /// offer a change (a form) rather than make it.
    pub fn may(&self, actor: &Actor, action: Action, app: &str) -> Result<(), Access> {
        gate::gate(None, actor, action, &Need::App(app.to_owned()), "")
    }

    /// Whether `actor` may take `action` on what is not in the store (the
    /// status, a policy swap, the fleet): platform-wide state. A refused
    /// change (`what`) is audited where there is a store.
    pub async fn allow(
        &self,
        actor: &Actor,
        action: Action,
        what: &'static str,
    ) -> Result<(), Access> {
        if actor.role == keyscope_store::Role::Admin {
            return Ok(());
        }
        let admin = self.clone();
        let actor = actor.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = admin
                .store
                .as_ref()
                .map(|store| store.lock().unwrap_or_else(PoisonError::into_inner));
            gate::gate(store.as_deref_mut(), &actor, action, &Need::Platform, what)
        })
        .await
        .unwrap_or(Err(Access::Failed))
    }

    /// Runs the change `apply` as `actor` off the executor, once the gate
    /// let `actor` make change `what` (`key.revoke`) to what `need`
    /// touches, then rebuilds the snapshot so that it is live when this
    /// returns. The second value says why a saved change is not live yet
    /// (the watcher retries).
    pub async fn write<T: Send + 'static, E: From<Access> + Send + 'static>(
        &self,
        actor: &Actor,
        need: Need,
        what: &'static str,
        apply: impl FnOnce(&mut Store) -> Result<T, E> + Send + 'static,
    ) -> Result<(T, Result<(), String>), E> {
        let admin = self.clone();
        let actor = actor.clone();
        tokio::task::spawn_blocking(move || {
            let value = {
                let mut store = admin.locked_store()?;
                gate::gate(Some(&mut store), &actor, Action::Change, &need, what)?;
                store.set_actor(&actor.name);
                apply(&mut store)?
            };
            // Committed: a failed rebuild is retried by the store watcher.
            let live = admin
                .refresher
                .refresh()
                .map(drop)
                .map_err(|e| e.to_string());
            Ok((value, live))
        })
        .await
        .unwrap_or(Err(E::from(Access::Failed)))
    }

    /// Keeps a new console session in the store under `digest` (the
    /// SHA-256 of its id): every control plane sharing the store knows it.
    /// [`Access::Gateway`] on a gateway, which has no store.
    pub async fn open_session(
        &self,
        digest: [u8; 32],
        session: keyscope_store::ConsoleSession,
        now_ms: u64,
        idle_ms: u64,
    ) -> Result<(), Access> {
        self.with_store(move |store| store.open_session(&digest, &session, now_ms, idle_ms))
            .await
    }

    /// The open console session kept under `digest`, counting a use.
    pub async fn session(
        &self,
        digest: [u8; 32],
        now_ms: u64,
        idle_ms: u64,
    ) -> Result<Option<keyscope_store::ConsoleSession>, Access> {
        self.with_store(move |store| store.session(&digest, now_ms, idle_ms))
            .await
    }

    /// Ends the console session kept under `digest`, everywhere.
    pub async fn end_session(&self, digest: [u8; 32]) -> Result<(), Access> {
        self.with_store(move |store| store.end_session(&digest))
            .await
    }

    /// Runs `f` on the store off the executor, past the gate: for what is
    /// not an admin's action (sessions).
    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> keyscope_store::Result<T> + Send + 'static,
    ) -> Result<T, Access> {
        let admin = self.clone();
        tokio::task::spawn_blocking(move || Ok(f(&mut *admin.locked_store()?)?))
            .await
            .unwrap_or(Err(Access::Failed))
    }

    fn locked_store(&self) -> Result<std::sync::MutexGuard<'_, Store>, Access> {
        Ok(self
            .store
            .as_ref()
            .ok_or(Access::Gateway)?
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
    }

    /// The live policy.
    pub fn refresher(&self) -> &Arc<Refresher> {
        &self.refresher
    }

    /// The decision core.
    pub fn authorizer(&self) -> &Arc<Authorizer> {
        &self.authorizer
    }

    /// On a control plane: its bundles and fleet.
    pub fn bundles(&self) -> Option<&Arc<Bundles>> {
        self.bundles.as_ref()
    }
}

/// What a gateway answers to a store route: it holds no store.
fn gateway() -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "gateway", GATEWAY_HAS_NO_STORE)
}

/// Why a gateway refuses what needs a store, in words.
pub const GATEWAY_HAS_NO_STORE: &str = "this server is a gateway that follows signed \
     bundles and holds no store: change scopes and keys on its control plane";

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

async fn list_scopes(
    State(admin): State<Admin>,
    Extension(actor): Extension<Actor>,
    Query(filter): Query<AppFilter>,
) -> Handled {
    let need = filter.app.clone().map_or(Need::Listing, Need::App);
    let role = actor.role.clone();
    read(admin, &actor, need, move |store| {
        let mut scopes = store.list_scopes(filter.app.as_deref())?;
        scopes.retain(|scope| role.sees(&scope.app));
        Ok(scopes)
    })
    .await
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

async fn create_scope(
    State(admin): State<Admin>,
    Extension(actor): Extension<Actor>,
    Body(new): Body<NewScope>,
) -> Handled {
    let agents: Option<AgentsLevel> = parsed(new.agents.as_deref())?;
    let runtime: Option<RuntimeSet> = parsed(new.runtime.as_deref())?;
    let need = Need::App(new.app.clone());
    Ok(change(admin, actor, need, "scope.create", move |store| {
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

async fn show_scope(
    State(admin): State<Admin>,
    Extension(actor): Extension<Actor>,
    Path(scope): Path<String>,
) -> Handled {
    let scope = scope_ref(&scope)?;
    read(admin, &actor, Need::Scope(scope.clone()), move |store| {
        store.scope(&scope)
    })
    .await
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
    Extension(actor): Extension<Actor>,
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
    Ok(change(
        admin,
        actor,
        Need::Scope(scope.clone()),
        "scope.update",
        move |store| Ok(Json(store.update_scope(&scope, &update)?).into_response()),
    )
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
    Extension(actor): Extension<Actor>,
    Path(scope): Path<String>,
    Query(options): Query<DeleteOptions>,
) -> Handled {
    let scope = scope_ref(&scope)?;
    let need = Need::Scope(scope.clone());
    Ok(change(admin, actor, need, "scope.delete", move |store| {
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

async fn list_keys(
    State(admin): State<Admin>,
    Extension(actor): Extension<Actor>,
    Query(filter): Query<ScopeFilter>,
) -> Handled {
    let scope = filter.scope.as_deref().map(scope_ref).transpose()?;
    let need = scope.clone().map_or(Need::Listing, Need::Scope);
    let role = actor.role.clone();
    read(admin, &actor, need, move |store| {
        let mut keys = store.list_keys(scope.as_ref())?;
        if role.apps().is_some() {
            // Only the keys of this role's apps' scopes, live or deleted.
            let mut apps = std::collections::HashMap::new();
            let mut visible = Vec::with_capacity(keys.len());
            for key in keys {
                let app = match apps.get(&key.scope_id) {
                    Some(app) => app,
                    None => apps.entry(key.scope_id).or_insert(store.key_app(key.id)?),
                };
                if role.sees(app) {
                    visible.push(key);
                }
            }
            keys = visible;
        }
        Ok(keys)
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKeyRequest {
    scope: String,
    name: String,
    /// The last moment the key is valid, in ms since the Unix epoch.
    #[serde(default)]
    not_after_ms: Option<u64>,
}

impl Fields for NewKeyRequest {
    const FIELDS: &'static str = r#"{"scope","name","not_after_ms"?}"#;
}

async fn create_key(
    State(admin): State<Admin>,
    Extension(actor): Extension<Actor>,
    Body(new): Body<NewKeyRequest>,
) -> Handled {
    let scope = scope_ref(&new.scope)?;
    let need = Need::Scope(scope.clone());
    Ok(change(admin, actor, need, "key.create", move |store| {
        // The response is built before the key is committed: a key whose
        // secret could not be put in the response is rolled back.
        let lifetime = new
            .not_after_ms
            .map_or(Lifetime::Unlimited, Lifetime::Until);
        let built = store.create_key_delivered(&scope, &new.name, lifetime, |created| {
            serde_json::to_vec(&created.shown()).map(Zeroizing::new)
        })?;
        let (body, _) = built.map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the key's response could not be built; the key was not created",
            )
        })?;
        Ok(created_with_secret(&body))
    })
    .await)
}

/// A key id from a path.
fn key_id(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "no such key: a key id is a number",
        )
    })
}

/// A 201 whose JSON body holds a secret shown this once: built before the
/// change commits, so a body that could not be built refuses the change.
fn created_with_secret(body: &[u8]) -> Response {
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_vec(),
    )
        .into_response()
}

async fn revoke_key(
    State(admin): State<Admin>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Handled {
    let id = key_id(&id)?;
    Ok(
        change(admin, actor, Need::Key(id), "key.revoke", move |store| {
            Ok(Json(store.revoke_key(id)?).into_response())
        })
        .await,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    /// How long the old key stays valid: `0`, `90s`, `15m`, `24h`, `7d`.
    grace: String,
}

impl Fields for RotateRequest {
    const FIELDS: &'static str = r#"{"grace": "0" | "90s" | "15m" | "1h" | "24h" | "7d"}"#;
}

#[derive(Serialize)]
struct Rotated<'a> {
    /// The old key, valid until its `expires_at`.
    old: &'a keyscope_store::ApiKey,
    /// The new key, with its secret: shown this once.
    new: keyscope_store::ShownKey<'a>,
}

async fn rotate_key(
    State(admin): State<Admin>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Body(request): Body<RotateRequest>,
) -> Handled {
    let id = key_id(&id)?;
    let grace_ms = keyscope_runtime::time::parse_duration_ms(&request.grace).map_err(|why| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid-input",
            format!("grace: {why}"),
        )
    })?;
    Ok(
        change(admin, actor, Need::Key(id), "key.rotate", move |store| {
            // As for a new key: the response, secret and all, is built before
            // the rotation commits.
            let built = store.rotate_key_delivered(id, grace_ms, |old, new| {
                serde_json::to_vec(&Rotated {
                    old,
                    new: new.shown(),
                })
                .map(Zeroizing::new)
            })?;
            let (body, _, _) = built.map_err(|_| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the rotation's response could not be built; the key was not rotated",
                )
            })?;
            Ok(created_with_secret(&body))
        })
        .await,
    )
}

/// The live policy: what serves, what was refused, and the counters.
async fn status(State(admin): State<Admin>, Extension(actor): Extension<Actor>) -> Handled {
    admin.allow(&actor, Action::Read, "status").await?;
    Ok(Json(status_json(&admin.refresher)).into_response())
}

/// The status document, also logged on SIGHUP.
pub fn status_json(refresher: &Refresher) -> serde_json::Value {
    use std::sync::atomic::Ordering::Relaxed;
    let live = refresher.live();
    let current = live.current();
    let stats = live.stats();
    let (source, source_status) = refresher.source_status();
    let mut status = serde_json::json!({
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
            "deltas_applied": stats.deltas_applied.load(Relaxed),
            "deltas_refused": stats.deltas_refused.load(Relaxed),
            "policy_errors": stats.policy_errors.load(Relaxed),
            "instances_replaced": stats.instances_replaced.load(Relaxed),
        },
        "history": live.history(),
    });
    status[source] = source_status;
    status
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReloadRequest {
    path: Option<PathBuf>,
}

async fn reload_policy(
    State(admin): State<Admin>,
    Extension(actor): Extension<Actor>,
    body: axum::body::Bytes,
) -> Handled {
    admin.allow(&actor, Action::Change, "policy.swap").await?;
    let request: ReloadRequest = if body.is_empty() {
        ReloadRequest::default()
    } else {
        keyscope_runtime::json_input::parse(&body, r#"{"path": FILE} or no body"#)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid-input", e.to_string()))?
    };
    let refresher = Arc::clone(&admin.refresher);
    let result = tokio::task::spawn_blocking(move || {
        refresher.reload_module(request.path.as_deref(), &actor.name)
    })
    .await;
    match result {
        Ok(Ok(generation)) => Ok(Json(serde_json::json!({
            "generation": generation.number,
            "module": generation.component.info(),
        }))
        .into_response()),
        Ok(Err(err)) => Err(match err {
            ReloadError::Gateway => gateway(),
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// Entries at or after this time (RFC 3339, as the trail writes it).
    since: Option<String>,
}

/// The audit trail, or its entries since a time, and whether the whole
/// trail verifies.
async fn audit_trail(
    State(admin): State<Admin>,
    Extension(actor): Extension<Actor>,
    Query(query): Query<AuditQuery>,
) -> Handled {
    let view = admin.audit_trail(&actor).await?;
    let since = query.since.unwrap_or_default();
    let entries: Vec<_> = view
        .entries
        .into_iter()
        .filter(|entry| entry.at >= since)
        .collect();
    Ok(Json(serde_json::json!({
        "verified": view.verified.is_ok(),
        "break": view.verified.err().map(|e| e.to_string()),
        "entries": entries,
    }))
    .into_response())
}

/// The named admin tokens (never a token).
async fn list_tokens(State(admin): State<Admin>, Extension(actor): Extension<Actor>) -> Handled {
    read(admin, &actor, Need::Platform, |store| {
        store.tokens(keyscope_store::TokenKind::Admin)
    })
    .await
}
