//! The admin console: the product's own flow in a browser, served at `/` on
//! the admin listener beside the admin API (whose paths, `/admin/*` and
//! `/v1/bundle`, it leaves alone).
//!
//! Three things to know:
//! - Pages are rendered on the server (maud) and every action is a plain
//!   form, so all of it works without JavaScript; the one script, embedded
//!   like the style sheet, only adds the copy button.
//! - Signing in with a named admin token opens a [`session`]: an HttpOnly,
//!   SameSite=Strict cookie. Every page and form needs one; every form
//!   carries the session's CSRF token, checked in one place
//!   ([`require_session`]) before any handler runs.
//! - Changes go through the same store access as the admin API
//!   ([`Admin::write`]), so they are audited under the token's name and live
//!   before the next page is drawn.

mod keys;
mod layout;
mod live;
mod oidc;
mod scope_form;
mod scopes;
mod session;
mod sign_in;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest as _, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use keyscope_serve::AdminMount;
use keyscope_serve::surface::{Access, Admin, GATEWAY_HAS_NO_STORE, Need};
use session::{Sessions, SignedIn};

/// The console's state: the admin doors' shared state, and the sessions.
#[derive(Clone)]
pub(crate) struct Console {
    admin: Admin,
    sessions: Arc<Sessions>,
    /// Whether cookies are marked `Secure` (sent over HTTPS only).
    secure_cookies: bool,
    /// Sign-in through the company's OpenID provider, if configured.
    oidc: Option<Arc<oidc::Provider>>,
}

/// The session cookie's name.
const SESSION_COOKIE: &str = "keyscope_session";

/// The most bytes of a console form.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// Every response's Content-Security-Policy: nothing inline, nothing from
/// elsewhere, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's router. It owns every path of the admin listener but the
/// admin API's (`/admin`, `/admin/*` and `/v1/bundle`, which the server
/// routes to the API): an unknown one gets a page in words, and a path
/// with a trailing slash is redirected without it. Neither needs a
/// credential, so neither is a failed authentication.
pub fn router(mount: AdminMount) -> Router<()> {
    let AdminMount {
        admin,
        lifetimes,
        secure_cookies,
        limits,
        oidc,
    } = mount;
    let limits = &limits;
    let console = Console {
        admin,
        sessions: Arc::new(Sessions::new(lifetimes)),
        secure_cookies,
        oidc: oidc.map(|oidc| Arc::new(oidc::Provider::new(oidc))),
    };
    let signed_in = Router::new()
        .route("/", get(scopes::apps))
        .route("/apps", get(scopes::pick_app))
        .route("/apps/{app}", get(scopes::list).post(scopes::create))
        .route("/apps/{app}/new", get(scopes::new_form))
        .route(
            "/apps/{app}/scopes/{id}",
            get(scopes::edit_form).post(scopes::update),
        )
        .route(
            "/apps/{app}/scopes/{id}/delete",
            get(scopes::delete_form).post(scopes::delete),
        )
        .route(
            "/apps/{app}/scopes/{id}/keys",
            get(keys::list).post(keys::create),
        )
        .route("/apps/{app}/scopes/{id}/keys/new", get(keys::new_form))
        .route(
            "/keys/{id}/revoke",
            get(keys::revoke_form).post(keys::revoke),
        )
        .route(
            "/keys/{id}/rotate",
            get(keys::rotate_form).post(keys::rotate),
        )
        .route("/audit", get(live::audit))
        .route("/policy", get(live::policy))
        .route("/fleet", get(live::fleet))
        .route("/try", get(live::try_form).post(live::try_request))
        .route("/sign-out", post(sign_in::sign_out))
        .route_layer(middleware::from_fn_with_state(
            console.clone(),
            require_session,
        ));
    Router::new()
        .merge(signed_in)
        .route("/sign-in", get(sign_in::form).post(sign_in::sign_in))
        .route("/sign-in/oidc", get(oidc::start))
        .route("/sign-in/oidc/callback", get(oidc::callback))
        .route("/assets/console.css", get(layout::style_sheet))
        .route("/assets/console.js", get(layout::script))
        .route("/assets/icon.svg", get(layout::icon))
        .route("/favicon.ico", get(layout::icon))
        .route_layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout(),
        ))
        .route_layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .fallback(not_found)
        .layer(middleware::map_response(security_headers))
        .with_state(console)
}

/// A path the console does not know: without its trailing slash if it has
/// one (`/apps/` is `/apps`), else a 404 page that leads home.
async fn not_found(uri: axum::http::Uri) -> Response {
    let path = uri.path();
    let trimmed = path.trim_end_matches('/');
    // Only a plain path of this console: never `//host` or `/\host`,
    // which a browser would follow off it.
    let plain = trimmed.starts_with('/')
        && !trimmed.starts_with("//")
        && trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._~-".contains(&b));
    if trimmed.len() < path.len() && plain {
        let target = match uri.query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_owned(),
        };
        return Redirect::permanent(&target).into_response();
    }
    let body = maud::html! {
        p { "There is no page at this address. It may have been mistyped, or the page moved." }
        p { a href="/" { "Go to the console's home page" } }
    };
    (
        StatusCode::NOT_FOUND,
        layout::page("Page not found", layout::Nav::None, None, body),
    )
        .into_response()
}

/// The headers every console response carries.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not `no-referrer`: with it, browsers send `Origin: null` on the
    // console's own forms, and the origin check refuses them.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    // Pages hold what only a signed-in admin may see, one of them a key
    // shown once: never stored by the browser or a proxy.
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The value of cookie `name` in a request.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value for this console: HttpOnly, SameSite as `same_site`
/// says (`Strict`, or `Lax` with any more attributes), and Secure when
/// served over HTTPS. `None` deletes the cookie.
fn set_cookie(
    console: &Console,
    name: &str,
    path: &str,
    value: Option<&str>,
    same_site: &str,
) -> HeaderValue {
    let secure = if console.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let text = match value {
        Some(value) => {
            format!("{name}={value}; Path={path}; HttpOnly; SameSite={same_site}{secure}")
        }
        None => format!("{name}=; Path={path}; Max-Age=0; HttpOnly; SameSite={same_site}{secure}"),
    };
    // Names and values are ours: ASCII letters, digits and `_`.
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Why a request was sent to the sign-in page.
fn to_sign_in(why: &str) -> Response {
    Redirect::to(&format!("/sign-in?why={why}")).into_response()
}

/// Every page and form behind sign-in passes here first: the session must
/// be open and its admin token still live; a form must come from this
/// console (`Origin`) and carry the session's CSRF token.
async fn require_session(State(console): State<Console>, request: Request, next: Next) -> Response {
    let Some(id) = cookie(request.headers(), SESSION_COOKIE).map(str::to_owned) else {
        return Redirect::to("/sign-in").into_response();
    };
    let read_only = matches!(*request.method(), Method::GET | Method::HEAD);
    let signed_in = match console
        .sessions
        .find(&console.admin, &id, now_ms(), read_only)
        .await
    {
        Ok(Some(signed_in)) => signed_in,
        Ok(None) => return to_sign_in("expired"),
        Err(error) => {
            let mut error = PageError::from(error);
            if !read_only {
                error.message = format!(
                    "{}, so nothing was changed.",
                    error.message.trim_end_matches('.')
                );
            }
            return error.page(None);
        }
    };
    // A token's session: the token is looked up at every request, so a
    // revoked one ends its sessions at once, on every control plane. While
    // the database is out of reach, pages that change nothing are checked
    // against the tokens last read.
    if let Some(token) = signed_in.token {
        let identified = {
            let admin = console.admin.clone();
            tokio::task::spawn_blocking(move || admin.identify(&token, read_only)).await
        };
        match identified {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => {
                let _ = console.sessions.end(&console.admin, &id).await;
                return to_sign_in("revoked");
            }
            Ok(Err(error)) => {
                return PageError::from(Access::Store(error)).page(Some(&signed_in));
            }
            Err(_) => return PageError::from(Access::Failed).page(Some(&signed_in)),
        }
    }
    let request = if read_only {
        request
    } else {
        match checked_form(request, &signed_in).await {
            Ok(request) => request,
            Err(refused) => return refused.page(Some(&signed_in)),
        }
    };
    let mut request = request;
    request.extensions_mut().insert(signed_in.clone());
    let mut response = next.run(request).await;
    if let Some(error) = response.extensions_mut().remove::<PageError>() {
        return error.page(Some(&signed_in));
    }
    let status = response.status();
    let html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/html"));
    if (status.is_client_error() || status.is_server_error()) && !html {
        return framework_error(status).page(Some(&signed_in));
    }
    response
}

/// The field every form carries.
#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

/// Checks that a form comes from this console and this session; the
/// request again, its body read.
async fn checked_form(request: Request, signed_in: &SignedIn) -> Result<Request, PageError> {
    let forged = || {
        PageError::new(
            StatusCode::FORBIDDEN,
            "This form did not come from this console session (its CSRF token is missing or \
             wrong), so nothing was changed. Open the page again and resubmit.",
        )
    };
    if !same_origin(request.headers()) {
        return Err(forged());
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| PageError::new(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large."))?;
    let form = axum::Form::<CsrfField>::from_request(
        Request::from_parts(parts.clone(), axum::body::Body::from(bytes.clone())),
        &(),
    )
    .await
    .map_err(|_| forged())?;
    if !signed_in.csrf_matches(&form.0.csrf) {
        return Err(forged());
    }
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

/// Whether a form's `Origin` (sent by every current browser on a POST),
/// when present, is this server.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest);
    matches!((origin_host, host), (Some(o), Some(h)) if o == h)
}

/// A console page's answer; errors use `?` and are shown in words.
type Page = Result<Response, PageError>;

/// An error shown on a page, in words, with its status. A handler returns
/// it; [`require_session`] draws the page around it.
#[derive(Debug, Clone)]
pub(crate) struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// The error page.
    fn page(self, signed_in: Option<&SignedIn>) -> Response {
        let body = layout::error_box(&self.message);
        (
            self.status,
            layout::page("Something went wrong", layout::Nav::None, signed_in, body),
        )
            .into_response()
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// The words for an error the framework answered itself (a path or form
/// that does not parse), which may quote the request.
fn framework_error(status: StatusCode) -> PageError {
    let message = match status {
        StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => "There is no such page.",
        StatusCode::METHOD_NOT_ALLOWED => "This page does not take that kind of request.",
        StatusCode::PAYLOAD_TOO_LARGE => "The form is too large.",
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            "The form is incomplete or malformed, so nothing was changed."
        }
        _ => "The request failed; nothing was changed.",
    };
    PageError::new(status, message)
}

impl From<Access> for PageError {
    fn from(access: Access) -> Self {
        match access {
            Access::Forbidden(why) => Self::new(StatusCode::FORBIDDEN, sentence(&why)),
            Access::Hidden(why) => Self::new(StatusCode::NOT_FOUND, sentence(&why)),
            Access::Gateway => Self::new(StatusCode::CONFLICT, GATEWAY_HAS_NO_STORE),
            Access::Store(error) => Self::new(
                keyscope_serve::surface::status_of(&error),
                sentence(&error.to_string()),
            ),
            Access::Failed => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The request failed; nothing was changed.",
            ),
        }
    }
}

impl From<keyscope_store::StoreError> for PageError {
    fn from(error: keyscope_store::StoreError) -> Self {
        Access::Store(error).into()
    }
}

/// An error message as a sentence in plain words: capitalised, with a
/// full stop, and without the CLI's Markdown. A quoted name (`acme`) is
/// written as it is, since names hold no spaces; a quoted command
/// (`keyscope limits set ...`) in quotation marks.
fn sentence(message: &str) -> String {
    let mut plain = String::with_capacity(message.len());
    for (i, part) in message.split('`').enumerate() {
        match i % 2 {
            1 if part.contains(' ') => {
                plain.push('\u{201c}');
                plain.push_str(part);
                plain.push('\u{201d}');
            }
            _ => plain.push_str(part),
        }
    }
    let mut chars = plain.chars();
    let mut text: String = chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default();
    if !text.ends_with('.') {
        text.push('.');
    }
    text
}

impl Console {
    /// Reads the store as the session's admin, once the gate let them read
    /// what `need` touches.
    async fn read<T: Send + 'static>(
        &self,
        signed_in: &SignedIn,
        need: Need,
        get: impl FnOnce(&mut keyscope_store::AnyStore) -> keyscope_store::Result<T> + Send + 'static,
    ) -> Result<T, PageError> {
        Ok(self.admin.read(&signed_in.actor, need, get).await?)
    }

    /// Reads for a page (`to` is `None`), or what change `to` (a form's
    /// post) will touch: then gated, and a refusal audited, as the change.
    async fn read_for<T: Send + 'static>(
        &self,
        signed_in: &SignedIn,
        need: Need,
        to: Option<&'static str>,
        get: impl FnOnce(&mut keyscope_store::AnyStore) -> keyscope_store::Result<T> + Send + 'static,
    ) -> Result<T, PageError> {
        Ok(match to {
            Some(what) => {
                self.admin
                    .read_to_change(&signed_in.actor, need, what, get)
                    .await?
            }
            None => self.admin.read(&signed_in.actor, need, get).await?,
        })
    }

    /// Makes change `what` as the session's admin, once the gate let them
    /// change what `need` touches; live before this returns.
    async fn change<T: Send + 'static>(
        &self,
        signed_in: &SignedIn,
        need: Need,
        what: &'static str,
        apply: impl FnOnce(&mut keyscope_store::AnyStore) -> keyscope_store::Result<T> + Send + 'static,
    ) -> Result<T, PageError> {
        let (value, live) = self
            .admin
            .write(&signed_in.actor, need, what, move |store| {
                apply(store).map_err(PageError::from)
            })
            .await?;
        live.map_err(not_live)?;
        Ok(value)
    }
}

impl Console {
    /// Whether the session's role may change `app`'s scopes and keys: the
    /// forms that change them are refused, as their posts would be.
    fn may_change(&self, signed_in: &SignedIn, app: &str) -> Result<(), PageError> {
        Ok(self
            .admin
            .may(&signed_in.actor, keyscope_store::roles::Action::Change, app)?)
    }
}

/// Opens a session for `actor` for the browser of `headers`, ending the
/// session it held, if any: signing in over a session replaces it.
async fn open_session(
    console: &Console,
    headers: &HeaderMap,
    actor: &keyscope_serve::surface::Actor,
    token: Option<[u8; 32]>,
    ends_ms: Option<u64>,
) -> Result<zeroize::Zeroizing<String>, PageError> {
    if let Some(old) = cookie(headers, SESSION_COOKIE) {
        console.sessions.end(&console.admin, old).await?;
    }
    Ok(console
        .sessions
        .start(&console.admin, actor, token, ends_ms, now_ms())
        .await?)
}

/// Now, in ms since the Unix epoch.
fn now_ms() -> u64 {
    keyscope_runtime::time::now_ms()
}

/// A change saved in the store that the live policy does not hold yet.
fn not_live(why: String) -> PageError {
    PageError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "The change is saved, but not live yet: {why}. The server retries; check again \
             shortly."
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_reads_as_a_sentence_in_plain_words() {
        assert_eq!(
            sentence("app `acme` already has a scope named `support-bot`"),
            "App acme already has a scope named support-bot."
        );
        assert_eq!(
            sentence(
                "scope `acme/bot` already has 5 live keys; raise it with \
                 `keyscope limits set --keys-per-scope N`"
            ),
            "Scope acme/bot already has 5 live keys; raise it with \
             \u{201c}keyscope limits set --keys-per-scope N\u{201d}."
        );
        assert_eq!(sentence("done."), "Done.");
    }
}
