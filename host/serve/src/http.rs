//! The public HTTP listener: `/v1/check`, nginx `auth_request` (`/auth`),
//! Envoy's HTTP ext_authz (`{envoy_path_prefix}/...`), and the operations
//! surface (`/healthz`, `/readyz`, `/metrics`).
//!
//! Connections are served by hyper directly, so that the limits that guard
//! against slow and oversized clients are hyper's own: a deadline on the
//! request headers, a cap on their size (431), a cap on bodies (413) and a
//! deadline on the whole request (408).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use keyscope_policy::Credential;
use keyscope_runtime::decision::DecisionJson;
use keyscope_runtime::swap::Outcome;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::timeout::TimeoutLayer;
use zeroize::Zeroizing;

use super::answer::ProxyAnswer;
use super::authz::{Authorizer, Target};
use super::config::RequestLimits;
use super::conn::{self, AcceptLimits};
use super::metrics::Front;
use super::refresh::Refresher;

/// The public router.
pub fn router(
    authorizer: Arc<Authorizer>,
    refresher: Arc<Refresher>,
    envoy_prefix: &str,
    limits: &RequestLimits,
) -> Router {
    Router::new()
        .route("/v1/check", post(check))
        .route("/auth", any(nginx))
        .route(&format!("{envoy_prefix}/{{*path}}"), {
            let prefix: Arc<str> = Arc::from(envoy_prefix);
            any(
                move |State(authorizer): State<Arc<Authorizer>>, request: Request| {
                    envoy(authorizer, Arc::clone(&prefix), request)
                },
            )
        })
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move |State(authorizer): State<Arc<Authorizer>>| {
                ready(authorizer, Arc::clone(&refresher))
            }),
        )
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout(),
        ))
        .with_state(authorizer)
}

/// Serves `router` on the connections `listener` accepts (capped, with an
/// idle timeout: [`conn`]) until `shutdown` turns true, then stops
/// accepting and waits up to the drain timeout for requests in flight. Each
/// request carries its client's address as `ConnectInfo`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: RequestLimits,
    accept: AcceptLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout())
        .max_buf_size(limits.max_header_bytes.max(8192));
    let mut connections = conn::accept(listener, accept, shutdown.clone());
    loop {
        let connection = tokio::select! {
            connection = connections.recv() => match connection {
                Some(connection) => connection,
                None => break,
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let peer = ConnectInfo(connection.peer());
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(peer);
                request
            },
        ));
        let connection = http.serve_connection(TokioIo::new(connection), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(connections);
    if tokio::time::timeout(limits.drain_timeout(), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout: closing connections still in flight");
    }
}

/// The credential of a request, from every copy of the configured header
/// and of `Authorization` ([`keyscope_keys::credential_from_headers`]).
fn credential_of(authorizer: &Authorizer, headers: &HeaderMap) -> Credential {
    let (api_keys, authorizations) = credential_headers(authorizer, headers);
    keyscope_keys::credential_from_headers(api_keys, authorizations)
}

/// Every copy of the API key header, and of `Authorization`.
fn credential_headers<'h>(
    authorizer: &Authorizer,
    headers: &'h HeaderMap,
) -> (
    impl Iterator<Item = &'h [u8]> + use<'h>,
    impl Iterator<Item = &'h [u8]> + use<'h>,
) {
    (
        headers
            .get_all(authorizer.headers().api_key.as_str())
            .into_iter()
            .map(HeaderValue::as_bytes),
        headers
            .get_all(header::AUTHORIZATION)
            .into_iter()
            .map(HeaderValue::as_bytes),
    )
}

impl IntoResponse for ProxyAnswer {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::FORBIDDEN);
        let mut response = match self.body {
            Some(body) => (status, body).into_response(),
            None => status.into_response(),
        };
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) = (
                header::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(name, value);
            }
        }
        response
    }
}

/// The answer to a proxy, rendered as an HTTP response.
fn proxy_response(authorizer: &Authorizer, outcome: &Outcome) -> Response {
    ProxyAnswer::of(&outcome.decision, authorizer.headers()).into_response()
}

fn bad_request(why: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "error": "bad-request", "message": why }).to_string(),
    )
        .into_response()
}

/// nginx `auth_request`: the original request is in `X-Original-Method` and
/// `X-Original-URI`.
async fn nginx(State(authorizer): State<Arc<Authorizer>>, headers: HeaderMap) -> Response {
    // One copy of each, as nginx's `proxy_set_header` sends: a second one
    // is a client's own, passed through a misconfigured proxy.
    if ["x-original-method", "x-original-uri"]
        .iter()
        .any(|name| headers.get_all(*name).iter().count() > 1)
    {
        return bad_request(
            "X-Original-Method and X-Original-URI must come once each; set them with \
             proxy_set_header, which replaces a client's own",
        );
    }
    let original = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(method), Some(uri)) = (original("x-original-method"), original("x-original-uri"))
    else {
        return bad_request(
            "nginx auth_request needs X-Original-Method and X-Original-URI \
             (proxy_set_header X-Original-URI $request_uri; \
             proxy_set_header X-Original-Method $request_method;)",
        );
    };
    let credential = credential_of(&authorizer, &headers);
    let outcome = authorizer.decide(Front::Nginx, credential, Target::Http { method, path: uri });
    proxy_response(&authorizer, &outcome)
}

/// Envoy's HTTP ext_authz: the original method, and the original path after
/// the configured prefix.
async fn envoy(authorizer: Arc<Authorizer>, prefix: Arc<str>, request: Request) -> Response {
    let path_and_query = request.uri().path_and_query().map_or("", |pq| pq.as_str());
    let Some(path) = path_and_query
        .strip_prefix(&*prefix)
        .filter(|rest| rest.starts_with('/'))
    else {
        return bad_request("the path is outside the ext_authz prefix");
    };
    let credential = credential_of(&authorizer, request.headers());
    let outcome = authorizer.decide(
        Front::Envoy,
        credential,
        Target::Http {
            method: request.method().as_str(),
            path,
        },
    );
    proxy_response(&authorizer, &outcome)
}

/// `POST /v1/check`: `{key, app, op}` or `{key, method, path}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckRequest {
    key: Option<Zeroizing<String>>,
    app: Option<String>,
    op: Option<String>,
    method: Option<String>,
    path: Option<String>,
}

#[derive(Serialize)]
struct CheckResponse {
    #[serde(flatten)]
    decision: DecisionJson,
    /// The app and operation decided on.
    app: Option<String>,
    op: Option<String>,
    /// The generation that decided.
    generation: u64,
}

async fn check(
    State(authorizer): State<Arc<Authorizer>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let request: CheckRequest = match keyscope_runtime::json_input::parse(
        &body,
        r#"{"key","app","op"} or {"key","method","path"}"#,
    ) {
        Ok(request) => request,
        Err(error) => return bad_request(&error.to_string()),
    };
    let (api_keys, authorizations) = credential_headers(&authorizer, &headers);
    let credential = match &request.key {
        // A key in the body and another in the headers: two credentials.
        Some(_) if keyscope_keys::presents_key(api_keys, authorizations) => Credential::Malformed,
        Some(key) => keyscope_keys::credential(Some(key)),
        None => credential_of(&authorizer, &headers),
    };
    let target = match (&request.app, &request.op, &request.method, &request.path) {
        (Some(app), Some(op), None, None) => Target::Op { app, op },
        (None, None, Some(method), Some(path)) => Target::Http { method, path },
        _ => {
            return bad_request(
                "give either \"app\" and \"op\", or \"method\" and \"path\", not a mix",
            );
        }
    };
    let outcome = authorizer.decide(Front::Check, credential, target);
    let (app, op) = target
        .decided_on(&outcome)
        .map(|(app, op)| (app.to_owned(), op.to_owned()))
        .unzip();
    let body = CheckResponse {
        decision: DecisionJson::from(&outcome.decision),
        app,
        op,
        generation: outcome.generation,
    };
    axum::Json(body).into_response()
}

/// Ready while a generation serves, stale snapshot or not (fail static:
/// the last good state keeps deciding); the body says whether the store
/// (or a gateway's bundle server) could be read, and since when it could
/// not. A gateway that holds no bundle yet is not ready.
async fn ready(authorizer: Arc<Authorizer>, refresher: Arc<Refresher>) -> Response {
    match authorizer.live() {
        Some(live) => {
            let generation = live.current();
            let ready = refresher.ready();
            let (source, mut status) = refresher.source_status();
            // The public listener says whether and since when the store is
            // out of reach, never what it said (a database's error text
            // can name hosts and users) nor where it is: that detail is on
            // the admin listener's `/admin/status`.
            if source == "store"
                && let Some(status) = status.as_object_mut()
            {
                status.remove("error");
                status.remove("store");
            }
            let mut body = serde_json::json!({
                "ready": ready,
                "generation": generation.number,
                "module": generation.component.info().digest,
                "snapshot": generation.snapshot_info.digest_hex(),
            });
            body[source] = status;
            // A gateway with no bundle yet denies every key: not ready.
            let code = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (code, axum::Json(body)).into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "ready": false })),
        )
            .into_response(),
    }
}

async fn metrics(State(authorizer): State<Arc<Authorizer>>) -> Response {
    let text = authorizer
        .metrics()
        .render(authorizer.live().map(AsRef::as_ref));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        Body::from(text),
    )
        .into_response()
}
