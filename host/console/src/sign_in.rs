//! Signing in with a named admin token, and out.
//!
//! The sign-in form has no session to tie a CSRF token to, so it uses a
//! double-submit token: a random value in a short-lived cookie that the
//! form repeats. A page of another site can neither read the cookie nor
//! make the browser send it (SameSite=Strict).

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::layout::{self, Nav, done_box, error_box};
use super::session::{SignedIn, random_secret};
use super::{Console, SESSION_COOKIE, cookie, now_ms, same_origin, set_cookie};

/// The sign-in form's double-submit cookie.
const SIGN_IN_COOKIE: &str = "keyscope_sign_in";

#[derive(Deserialize, Default)]
pub(super) struct Why {
    #[serde(default)]
    why: String,
}

/// The sign-in page; a browser already signed in goes on to the console.
pub(super) async fn form(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(why): Query<Why>,
) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE)
        && let Ok(Some(_)) = console
            .sessions
            .find(&console.admin, id, now_ms(), true)
            .await
    {
        return Redirect::to("/").into_response();
    }
    let notice = match why.why.as_str() {
        "signed-out" => Some(done_box("You are signed out.")),
        "expired" => Some(error_box("Your session has ended. Sign in again.")),
        "revoked" => Some(error_box(
            "The admin token of your session was revoked, so the session ended.",
        )),
        _ => None,
    };
    sign_in_page(&console, StatusCode::OK, notice)
}

pub(super) fn sign_in_page(
    console: &Console,
    status: StatusCode,
    notice: Option<maud::Markup>,
) -> Response {
    let check = random_secret();
    let body = html! {
        @if let Some(notice) = notice { (notice) }
        @if let Some(provider) = &console.oidc {
            p.actions { a.button href="/sign-in/oidc" { "Sign in with " (provider.name()) } }
            p { "Or sign in with a named admin token, made with " code { "keyscope admin token create --name NAME" } "." }
        } @else {
            p { "Sign in with a named admin token, made with " code { "keyscope admin token create --name NAME" } "." }
        }
        form.sign-in method="post" action="/sign-in" {
            input type="hidden" name="check" value=(*check);
            p.field {
                label for="token" { "Admin token" }
                input #token type="password" name="token" required autocomplete="current-password"
                    spellcheck="false" autofocus;
            }
            p.actions { button type="submit" { "Sign in" } }
        }
    };
    let mut response = (
        status,
        layout::page("Sign in to keyscope", Nav::None, None, body),
    )
        .into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(console, SIGN_IN_COOKIE, "/sign-in", Some(&check), "Strict"),
    );
    response
}

#[derive(Deserialize)]
pub(super) struct SignInForm {
    #[serde(default)]
    token: Zeroizing<String>,
    #[serde(default)]
    check: String,
}

pub(super) async fn sign_in(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<SignInForm>,
) -> Response {
    let client = console.admin.client(peer.ip(), &headers);
    let checked = cookie(&headers, SIGN_IN_COOKIE).is_some_and(|expected| {
        !form.check.is_empty() && bool::from(expected.as_bytes().ct_eq(form.check.as_bytes()))
    });
    if !checked || !same_origin(&headers) {
        let notice =
            error_box("The sign-in form expired or did not come from this console. Try again.");
        return sign_in_page(&console, StatusCode::FORBIDDEN, Some(notice));
    }
    let digest = keyscope_keys::admin_token::digest(form.token.trim());
    let identified = {
        let admin = console.admin.clone();
        // Signing in opens a session that can change things: the store
        // must answer (fail closed).
        tokio::task::spawn_blocking(move || admin.identify(&digest, false)).await
    };
    let actor = match identified {
        Ok(Ok(Some(actor))) => actor,
        // The token is checked first: a valid one signs in whatever this
        // client's failures; only failures are limited.
        Ok(Ok(None)) if !console.admin.may_try(client) => {
            let notice = error_box(
                "Too many failed sign-ins from this address. Wait a minute, then try again.",
            );
            let mut response = sign_in_page(&console, StatusCode::TOO_MANY_REQUESTS, Some(notice));
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("6"));
            return response;
        }
        Ok(Ok(None)) => {
            console.admin.failed(client);
            tracing::warn!(client = %client, "console: sign-in with a wrong admin token");
            let notice = error_box("That admin token is not valid.");
            return sign_in_page(&console, StatusCode::UNAUTHORIZED, Some(notice));
        }
        Ok(Err(error)) => {
            let error = super::PageError::from(error);
            return sign_in_page(&console, error.status, Some(error_box(&error.message)));
        }
        Err(_) => {
            let notice = error_box("The admin token could not be checked. Try again.");
            return sign_in_page(&console, StatusCode::INTERNAL_SERVER_ERROR, Some(notice));
        }
    };
    let id = match super::open_session(&console, &headers, &actor, Some(digest), None).await {
        Ok(id) => id,
        Err(error) => {
            return sign_in_page(&console, error.status, Some(error_box(&error.message)));
        }
    };
    tracing::info!(actor = %actor.name, role = %actor.role, "console: signed in");
    let mut response = Redirect::to("/").into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(&console, SESSION_COOKIE, "/", Some(&id), "Strict"),
    );
    headers.append(
        header::SET_COOKIE,
        set_cookie(&console, SIGN_IN_COOKIE, "/sign-in", None, "Strict"),
    );
    response
}

pub(super) async fn sign_out(
    State(console): State<Console>,
    Extension(signed_in): Extension<SignedIn>,
    headers: HeaderMap,
) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE)
        && let Err(error) = console.sessions.end(&console.admin, id).await
    {
        // Not signed out everywhere: say so rather than pretend.
        return super::PageError::from(error).page(Some(&signed_in));
    }
    tracing::info!(actor = %signed_in.actor.name, "console: signed out");
    let mut response = Redirect::to("/sign-in?why=signed-out").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&console, SESSION_COOKIE, "/", None, "Strict"),
    );
    response
}
