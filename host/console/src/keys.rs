//! Manage Keys: a scope's keys with their status and last use; a new key,
//! shown exactly once; revoking (after a confirmation) and rotating (with a
//! grace period).

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use keyscope_store::{ApiKey, KeyStatus, NewKey, Scope, ScopeRef, Store as _};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Nav, csrf, done_box, error_box, when};
use super::scopes::{Notice, notice, scope_path};
use super::session::SignedIn;
use super::{Console, Need, Page, PageError, not_live};

/// A scope of `app` with its keys, newest first.
async fn scope_keys(
    console: &Console,
    signed_in: &SignedIn,
    app: &str,
    id: u64,
    to: Option<&'static str>,
) -> Result<(Scope, Vec<ApiKey>), PageError> {
    let (scope, mut keys) = console
        .read_for(signed_in, Need::Scope(ScopeRef::Id(id)), to, move |store| {
            let scope = store.scope(&ScopeRef::Id(id))?;
            let keys = store.list_keys(Some(&ScopeRef::Id(id)))?;
            Ok((scope, keys))
        })
        .await?;
    if scope.app != app {
        return Err(keyscope_store::StoreError::ScopeNotFound(format!("{app}/{id}")).into());
    }
    keys.sort_by_key(|key| std::cmp::Reverse(key.id));
    Ok((scope, keys))
}

/// A key's status in words; a rotated key names the key that replaced
/// it, and a successor the key it replaced (`predecessor`), by the ids
/// the table's first column shows.
fn status(key: &ApiKey, predecessor: Option<u64>) -> Markup {
    html! {
        @match (key.status, key.successor_id) {
            (KeyStatus::Expiring, Some(successor)) => {
                "Replaced by #" (successor) " · valid until "
                @if let Some(at) = &key.expires_at { (when(at)) }
            }
            (KeyStatus::Active, _) => { "Active" }
            (KeyStatus::Expiring, None) => {
                "Expires " @if let Some(at) = &key.expires_at { (when(at)) }
            }
            (KeyStatus::Expired, _) => { "Expired" }
            (KeyStatus::Revoked, _) => { "Revoked" }
        }
        @if let (KeyStatus::Expired | KeyStatus::Revoked, Some(successor)) = (key.status, key.successor_id) {
            " · replaced by #" (successor)
        }
        @if let Some(predecessor) = predecessor { " · replaces #" (predecessor) }
    }
}

fn live(key: &ApiKey) -> bool {
    matches!(key.status, KeyStatus::Active | KeyStatus::Expiring) && key.successor_id.is_none()
}

pub(super) async fn list(
    State(console): State<Console>,
    Extension(signed_in): Extension<SignedIn>,
    Path((app, id)): Path<(String, u64)>,
    Query(done): Query<Notice>,
) -> Page {
    let (scope, keys) = scope_keys(&console, &signed_in, &app, id, None).await?;
    let title = format!("API keys · {}", scope.name);
    let changes = signed_in.actor.role.changes(&scope.app);
    let body = html! {
        @if let Some(notice) = notice(&done) { (done_box(notice)) }
        p { "Keys of the API scope " strong { (scope.name) } " of " (scope.app) ". "
            @if changes { a href=(scope_path(&scope)) { "Edit the scope" } } }
        @if changes {
            p.actions { a.button href={(scope_path(&scope)) "/keys/new"} { "New API Key" } }
        }
        @if keys.is_empty() {
            p { "This scope has no keys yet." }
        } @else {
            table.keys {
                caption { "API keys of " (scope.name) }
                thead { tr {
                    th scope="col" { "ID" }
                    th scope="col" { "Name" }
                    th scope="col" { "Prefix" }
                    th scope="col" { "Created" }
                    th scope="col" { "Last used" }
                    th scope="col" { "Status" }
                    th scope="col" { span.visually-hidden { "Actions" } }
                } }
                tbody {
                    @for key in &keys {
                        tr id={"key-" (key.id)} {
                            td { "#" (key.id) }
                            th scope="row" { (key.name) }
                            td { code { (key.prefix) "…" } }
                            td { (when(&key.created_at)) }
                            td {
                                @match &key.last_used_at {
                                    Some(at) => { (when(at)) " (" (key.uses) @if key.uses == 1 { " use" } @else { " uses" } ")" }
                                    None => { "Never used" }
                                }
                            }
                            td { (status(key, keys.iter().find(|k| k.successor_id == Some(key.id)).map(|k| k.id))) }
                            td.row-actions {
                                @if changes && live(key) {
                                    a href={"/keys/" (key.id) "/rotate"} aria-label={"Rotate " (key.name)} { "Rotate" }
                                    " "
                                    a href={"/keys/" (key.id) "/revoke"} aria-label={"Revoke " (key.name)} { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(&title, Nav::Apps, Some(&signed_in), body).into_response())
}

/// The New API Key form.
fn new_key_page(signed_in: &SignedIn, scope: &Scope, name: &str, error: Option<&str>) -> Markup {
    let title = format!("New API Key · {}", scope.name);
    let body = html! {
        @if let Some(error) = error { (error_box(error)) }
        form.new-key method="post" action={(scope_path(scope)) "/keys"} {
            (csrf(signed_in))
            p.field {
                label for="key-name" { "Key name" }
                input #key-name type="text" name="name" value=(name) required maxlength="200"
                    autocomplete="off" aria-describedby="key-name-hint";
                span.hint #key-name-hint { "Say who or what will use it, for example the service's name." }
            }
            p.actions {
                button type="submit" { "Create" }
                " "
                a href={(scope_path(scope)) "/keys"} { "Cancel" }
            }
        }
    };
    layout::page(&title, Nav::Apps, Some(signed_in), body)
}

pub(super) async fn new_form(
    State(console): State<Console>,
    Extension(signed_in): Extension<SignedIn>,
    Path((app, id)): Path<(String, u64)>,
) -> Page {
    let (scope, _) = scope_keys(&console, &signed_in, &app, id, None).await?;
    console.may_change(&signed_in, &scope.app)?;
    Ok(new_key_page(&signed_in, &scope, "", None).into_response())
}

#[derive(Deserialize)]
pub(super) struct NewKeyForm {
    #[serde(default)]
    name: String,
}

pub(super) async fn create(
    State(console): State<Console>,
    Extension(signed_in): Extension<SignedIn>,
    Path((app, id)): Path<(String, u64)>,
    axum::Form(form): axum::Form<NewKeyForm>,
) -> Page {
    let (scope, _) = scope_keys(&console, &signed_in, &app, id, Some("key.create")).await?;
    let name = form.name.trim().to_owned();
    if name.is_empty() {
        let page = new_key_page(&signed_in, &scope, "", Some("Give the key a name."));
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    }
    let created = console
        .admin
        .write(
            &signed_in.actor,
            Need::Scope(ScopeRef::Id(id)),
            "key.create",
            {
                let name = name.clone();
                move |store| {
                    store
                        .create_key(&ScopeRef::Id(id), &name)
                        .map_err(PageError::from)
                }
            },
        )
        .await;
    match created {
        Ok((new, live)) => Ok(shown_once(&signed_in, &scope, &new, None, live)),
        Err(error) => {
            let page = new_key_page(&signed_in, &scope, &name, Some(&error.message));
            Ok((error.status, page).into_response())
        }
    }
}

/// The page that shows a new key, this once. It is the answer to the form
/// that made the key, never a page of its own: no URL leads back to it,
/// and no browser or proxy keeps it (`Cache-Control: no-store`).
fn shown_once(
    signed_in: &SignedIn,
    scope: &Scope,
    new: &NewKey,
    old: Option<&ApiKey>,
    live: Result<(), String>,
) -> Response {
    let title = format!("API key “{}” created", new.key.name);
    let body = html! {
        @if let Err(why) = live { (error_box(&not_live(why).message)) }
        div.once role="alert" {
            strong { "Copy this key now. It will not be shown again." }
            " keyscope keeps only its SHA-256: nobody can read it back, not even an admin. \
              If it is lost, rotate or revoke it and create another."
        }
        p.field {
            label for="new-key" { "API key " (new.key.name) }
            output #new-key.secret { (new.secret.expose()) }
        }
        p.actions {
            button.copy type="button" data-copy="new-key" hidden { "Copy" }
            " "
            span #copy-status role="status" {}
        }
        @if let Some(old) = old {
            p {
                "The key it replaces, " strong { (old.name) } " (" code { (old.prefix) "…" } "), "
                @match &old.expires_at {
                    Some(at) => { "stays valid until " (when(at)) "." }
                    None => { "stays valid." }
                }
            }
        }
        p { a.button href={(scope_path(scope)) "/keys"} { "Done" } }
    };
    (
        StatusCode::CREATED,
        layout::page(&title, Nav::Apps, Some(signed_in), body),
    )
        .into_response()
}

/// A live key and its scope, for the revoke and rotate pages.
async fn key_and_scope(
    console: &Console,
    signed_in: &SignedIn,
    id: u64,
    to: Option<&'static str>,
) -> Result<(ApiKey, Scope), PageError> {
    console
        .read_for(signed_in, Need::Key(id), to, move |store| {
            let key = store
                .list_keys(None)?
                .into_iter()
                .find(|key| key.id == id)
                .ok_or(keyscope_store::StoreError::KeyNotFound(id))?;
            let scope = store.scope(&ScopeRef::Id(key.scope_id))?;
            Ok((key, scope))
        })
        .await
}

pub(super) async fn revoke_form(
    State(console): State<Console>,
    Extension(signed_in): Extension<SignedIn>,
    Path(id): Path<u64>,
) -> Page {
    let (key, scope) = key_and_scope(&console, &signed_in, id, None).await?;
    console.may_change(&signed_in, &scope.app)?;
    let title = format!("Revoke API key · {}", key.name);
    let body = html! {
        p {
            "Revoke " strong { (key.name) } " (" code { (key.prefix) "…" } ") of the scope "
            (scope.name) "? Every request with it is denied from the next one on. \
            This cannot be undone."
        }
        form.revoke method="post" action={"/keys/" (key.id) "/revoke"} {
            (csrf(&signed_in))
            p.actions {
                button.danger type="submit" { "Revoke key" }
                " "
                a href={(scope_path(&scope)) "/keys"} { "Cancel" }
            }
        }
    };
    Ok(layout::page(&title, Nav::Apps, Some(&signed_in), body).into_response())
}

pub(super) async fn revoke(
    State(console): State<Console>,
    Extension(signed_in): Extension<SignedIn>,
    Path(id): Path<u64>,
) -> Page {
    let (_, scope) = key_and_scope(&console, &signed_in, id, Some("key.revoke")).await?;
    console
        .change(&signed_in, Need::Key(id), "key.revoke", move |store| {
            store.revoke_key(id)
        })
        .await?;
    Ok(Redirect::to(&format!("{}/keys?done=revoked", scope_path(&scope))).into_response())
}

/// The grace periods a rotation offers: how long the old key stays valid.
const GRACES: [(&str, &str); 5] = [
    ("0", "None: the old key stops at once"),
    ("15m", "15 minutes"),
    ("1h", "1 hour"),
    ("24h", "24 hours"),
    ("7d", "7 days (the longest)"),
];

pub(super) async fn rotate_form(
    State(console): State<Console>,
    Extension(signed_in): Extension<SignedIn>,
    Path(id): Path<u64>,
) -> Page {
    let (key, scope) = key_and_scope(&console, &signed_in, id, None).await?;
    console.may_change(&signed_in, &scope.app)?;
    Ok(rotate_page(&signed_in, &key, &scope, None).into_response())
}

fn rotate_page(signed_in: &SignedIn, key: &ApiKey, scope: &Scope, error: Option<&str>) -> Markup {
    let title = format!("Rotate API key · {}", key.name);
    let body = html! {
        @if let Some(error) = error { (error_box(error)) }
        p {
            "Rotating " strong { (key.name) } " (" code { (key.prefix) "…" } ") issues a new key \
            for the same scope, shown once. The old key keeps working for the grace period, \
            so its users can switch without downtime."
        }
        form.rotate method="post" action={"/keys/" (key.id) "/rotate"} {
            (csrf(signed_in))
            fieldset {
                legend { "Grace period" }
                @for (value, label) in GRACES {
                    @let id = format!("grace-{value}");
                    div.choice {
                        input id=(id) type="radio" name="grace" value=(value) checked[value == "24h"];
                        label for=(id) { (label) }
                    }
                }
            }
            p.actions {
                button type="submit" { "Rotate key" }
                " "
                a href={(scope_path(scope)) "/keys"} { "Cancel" }
            }
        }
    };
    layout::page(&title, Nav::Apps, Some(signed_in), body)
}

#[derive(Deserialize)]
pub(super) struct RotateForm {
    #[serde(default)]
    grace: String,
}

pub(super) async fn rotate(
    State(console): State<Console>,
    Extension(signed_in): Extension<SignedIn>,
    Path(id): Path<u64>,
    axum::Form(form): axum::Form<RotateForm>,
) -> Page {
    let (key, scope) = key_and_scope(&console, &signed_in, id, Some("key.rotate")).await?;
    let grace_ms = match keyscope_runtime::time::parse_duration_ms(&form.grace) {
        Ok(ms) if GRACES.iter().any(|(value, _)| *value == form.grace) => ms,
        _ => {
            let page = rotate_page(&signed_in, &key, &scope, Some("Choose a grace period."));
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
    };
    let rotated =
        console
            .admin
            .write(
                &signed_in.actor,
                Need::Key(id),
                "key.rotate",
                move |store| {
                    store
                        .rotate_key_delivered(id, grace_ms, |_, _| {
                            Ok::<_, std::convert::Infallible>(())
                        })
                        .map_err(PageError::from)
                },
            )
            .await;
    match rotated {
        Ok((Ok(((), old, new)), live)) => {
            Ok(shown_once(&signed_in, &scope, &new, Some(&old), live))
        }
        Ok((Err(never), _)) => match never {},
        Err(error) => {
            let page = rotate_page(&signed_in, &key, &scope, Some(&error.message));
            Ok((error.status, page).into_response())
        }
    }
}
