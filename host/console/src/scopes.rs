//! Apps and their API scopes: pick an app, list its scopes (each with its
//! Options: Manage Keys, Edit, Delete), create, edit and delete them.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use keyscope_policy::AgentsLevel;
use keyscope_store::{Scope, ScopeRef, ScopeUpdate, Store as _, StoreError};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Nav, csrf, done_box, error_box, when};
use super::scope_form::{ScopeForm, agents_label, runtime_summary, scope_form};
use super::session::SignedIn;
use super::{Console, Need, Page, PageError};

/// The path of an app's scopes list.
pub(super) fn app_path(app: &str) -> String {
    format!("/apps/{}", encode(app))
}

/// The path of a scope's page, under its app.
pub(super) fn scope_path(scope: &Scope) -> String {
    format!("{}/scopes/{}", app_path(&scope.app), scope.id)
}

/// Percent-encodes a path segment (app names are free text).
pub(super) fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The apps page: the apps that have scopes, and a field for any other.
pub(super) async fn apps(
    State(console): State<Console>,
    Extension(signed_in): Extension<SignedIn>,
) -> Page {
    let scopes = console
        .read(&signed_in, Need::Listing, |store| store.list_scopes(None))
        .await?;
    let role = &signed_in.actor.role;
    // Each app this admin sees with its number of scopes, in name order;
    // an app role's apps all, scopes or not.
    let mut apps = std::collections::BTreeMap::<String, usize>::new();
    for app in role.apps().into_iter().flatten() {
        apps.insert(app.clone(), 0);
    }
    for scope in scopes.into_iter().filter(|scope| role.sees(&scope.app)) {
        *apps.entry(scope.app).or_default() += 1;
    }
    let body = html! {
        p { "Pick the application whose API scopes and keys you want to " @if role.apps().is_some() && !apps.keys().any(|app| role.changes(app)) { "read" } @else { "manage" } "." }
        @if apps.is_empty() {
            p { "No application has a scope yet. Name one below to create its first scope." }
        } @else {
            ul.apps {
                @for (app, count) in &apps {
                    li {
                        a href=(app_path(app)) { (app) }
                        " "
                        span.muted { (count) @if *count == 1 { " scope" } @else { " scopes" } }
                    }
                }
            }
        }
        // Any other app: for roles over every app.
        @if role.apps().is_none() {
            form.inline method="get" action="/apps" {
                label for="app" { "Application" }
                input #app type="text" name="app" required autocomplete="off" spellcheck="false";
                button type="submit" { "Open" }
            }
        }
    };
    Ok(layout::page("Applications", Nav::Apps, Some(&signed_in), body).into_response())
}

#[derive(Deserialize)]
pub(super) struct AppQuery {
    #[serde(default)]
    app: String,
}

/// The app field of the apps page.
pub(super) async fn pick_app(Query(query): Query<AppQuery>) -> Page {
    let app = query.app.trim();
    if app.is_empty() {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "Name an application to open.",
        ));
    }
    // Never a redirect to a URL holding what was typed, unless it is a name
    // (a pasted secret would stay in the browser's history).
    if keyscope_store::check_name("app", app).is_err() {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "An application's name is 1 to 64 characters from A–Z, a–z, 0–9, dot, \
             underscore and hyphen, starting with a letter or digit.",
        ));
    }
    Ok(Redirect::to(&app_path(app)).into_response())
}

/// An app named in a path: a name, or no such page (the path's text is
/// never shown).
fn app_in_path(app: &str) -> Result<(), PageError> {
    keyscope_store::check_name("app", app)
        .map_err(|_| PageError::new(StatusCode::NOT_FOUND, "There is no such page."))
}

#[derive(Deserialize, Default)]
pub(super) struct Notice {
    /// What was just done, from a redirect after a change.
    done: Option<String>,
}

/// The notice a redirect after a change asks for, from a fixed list (never
/// text from the URL).
pub(super) fn notice(notice: &Notice) -> Option<&'static str> {
    Some(match notice.done.as_deref()? {
        "created" => "The scope was created.",
        "updated" => "The scope was saved. The next decision uses it.",
        "deleted" => "The scope was deleted.",
        "revoked" => "The key was revoked. It is denied from the next request on.",
        _ => return None,
    })
}

/// An app's scopes, each with its Options.
pub(super) async fn list(
    State(console): State<Console>,
    Extension(signed_in): Extension<SignedIn>,
    Path(app): Path<String>,
    Query(done): Query<Notice>,
) -> Page {
    app_in_path(&app)?;
    let scopes = {
        let app = app.clone();
        console
            .read(&signed_in, Need::App(app.clone()), move |store| {
                store.list_scopes(Some(&app))
            })
            .await?
    };
    let changes = signed_in.actor.role.changes(&app);
    let body = html! {
        @if let Some(notice) = notice(&done) { (done_box(notice)) }
        @if changes {
            p.actions { a.button href={(app_path(&app)) "/new"} { "Create API scope" } }
        }
        @if scopes.is_empty() {
            p { "This application has no API scopes yet." }
        } @else {
            table.scopes {
                caption { "API scopes of " (app) }
                thead { tr {
                    th scope="col" { "Name" }
                    th scope="col" { "Agents" }
                    th scope="col" { "Runtime permissions" }
                    th scope="col" { "Created" }
                    th scope="col" { span.visually-hidden { "Options" } }
                } }
                tbody {
                    @for scope in &scopes {
                        tr {
                            th scope="row" { (scope.name) }
                            td { (agents_label(scope.agents)) }
                            td { (runtime_summary(scope.runtime)) }
                            td { (when(&scope.created_at)) }
                            td {
                                details.menu {
                                    summary aria-label={"Options for " (scope.name)} { "Options" }
                                    ul {
                                        @if changes {
                                            li { a href={(scope_path(scope)) "/keys"} { "Manage Keys" } }
                                            li { a href=(scope_path(scope)) { "Edit" } }
                                            li { a href={(scope_path(scope)) "/delete"} { "Delete" } }
                                        } @else {
                                            li { a href={(scope_path(scope)) "/keys"} { "View Keys" } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let title = format!("API scopes · {app}");
    Ok(layout::page(&title, Nav::Apps, Some(&signed_in), body).into_response())
}

pub(super) async fn new_form(
    State(console): State<Console>,
    Extension(signed_in): Extension<SignedIn>,
    Path(app): Path<String>,
) -> Page {
    app_in_path(&app)?;
    console.may_change(&signed_in, &app)?;
    let form = ScopeForm::blank();
    let body = scope_form(&signed_in, &app_path(&app), &form, None, "Create");
    let title = format!("New API scope · {app}");
    Ok(layout::page(&title, Nav::Apps, Some(&signed_in), body).into_response())
}

/// Where a scope form is shown and posted, and its button.
struct FormPage {
    title: String,
    action: String,
    submit: &'static str,
}

impl FormPage {
    /// The form again with the error in words, the admin's input kept.
    fn refused(&self, signed_in: &SignedIn, form: &ScopeForm, error: PageError) -> Page {
        let body = scope_form(
            signed_in,
            &self.action,
            form,
            Some(&error.message),
            self.submit,
        );
        let page = layout::page(&self.title, Nav::Apps, Some(signed_in), body);
        Ok((error.status, page).into_response())
    }
}

/// A form's name and level, or the form's own error in words.
fn parsed(form: &ScopeForm) -> Result<(String, AgentsLevel), PageError> {
    form.parsed()
        .map_err(|why| PageError::new(StatusCode::BAD_REQUEST, why))
}

pub(super) async fn create(
    State(console): State<Console>,
    Extension(signed_in): Extension<SignedIn>,
    Path(app): Path<String>,
    axum::Form(form): axum::Form<ScopeForm>,
) -> Page {
    let page = FormPage {
        title: format!("New API scope · {app}"),
        action: app_path(&app),
        submit: "Create",
    };
    let created = match parsed(&form) {
        Ok((name, agents)) => {
            let runtime = form.runtime();
            console
                .change(
                    &signed_in,
                    Need::App(app.clone()),
                    "scope.create",
                    move |store| store.create_scope(&app, &name, agents, runtime),
                )
                .await
                .map(drop)
        }
        Err(error) => Err(error),
    };
    match created {
        Ok(()) => Ok(Redirect::to(&format!("{}?done=created", page.action)).into_response()),
        Err(error) => page.refused(&signed_in, &form, error),
    }
}

/// A scope of `app`, or a 404 in words.
async fn scope_of(
    console: &Console,
    signed_in: &SignedIn,
    app: &str,
    id: u64,
    to: Option<&'static str>,
) -> Result<Scope, PageError> {
    let scope = console
        .read_for(signed_in, Need::Scope(ScopeRef::Id(id)), to, move |store| {
            store.scope(&ScopeRef::Id(id))
        })
        .await?;
    if scope.app != app {
        return Err(StoreError::ScopeNotFound(format!("{app}/{id}")).into());
    }
    Ok(scope)
}

pub(super) async fn edit_form(
    State(console): State<Console>,
    Extension(signed_in): Extension<SignedIn>,
    Path((app, id)): Path<(String, u64)>,
    Query(done): Query<Notice>,
) -> Page {
    let scope = scope_of(&console, &signed_in, &app, id, None).await?;
    console.may_change(&signed_in, &app)?;
    let title = format!("Edit API scope · {}", scope.name);
    let body = html! {
        @if let Some(notice) = notice(&done) { (done_box(notice)) }
        (scope_form(&signed_in, &scope_path(&scope), &ScopeForm::of(&scope), None, "Save"))
        p { a href={(scope_path(&scope)) "/keys"} { "Manage this scope's keys" } }
    };
    Ok(layout::page(&title, Nav::Apps, Some(&signed_in), body).into_response())
}

pub(super) async fn update(
    State(console): State<Console>,
    Extension(signed_in): Extension<SignedIn>,
    Path((app, id)): Path<(String, u64)>,
    axum::Form(form): axum::Form<ScopeForm>,
) -> Page {
    let scope = scope_of(&console, &signed_in, &app, id, Some("scope.update")).await?;
    let page = FormPage {
        title: format!("Edit API scope · {}", scope.name),
        action: scope_path(&scope),
        submit: "Save",
    };
    let saved = match parsed(&form) {
        Ok((name, agents)) => {
            let update = ScopeUpdate {
                name: Some(name),
                agents: Some(agents),
                runtime: Some(form.runtime()),
            };
            console
                .change(
                    &signed_in,
                    Need::Scope(ScopeRef::Id(id)),
                    "scope.update",
                    move |store| store.update_scope(&ScopeRef::Id(id), &update),
                )
                .await
                .map(drop)
        }
        Err(error) => Err(error),
    };
    match saved {
        Ok(()) => Ok(Redirect::to(&format!("{}?done=updated", page.action)).into_response()),
        Err(error) => page.refused(&signed_in, &form, error),
    }
}

pub(super) async fn delete_form(
    State(console): State<Console>,
    Extension(signed_in): Extension<SignedIn>,
    Path((app, id)): Path<(String, u64)>,
) -> Page {
    let scope = scope_of(&console, &signed_in, &app, id, None).await?;
    console.may_change(&signed_in, &app)?;
    let live = live_keys(&console, &signed_in, id).await?;
    Ok(delete_page(&signed_in, &scope, live, None).into_response())
}

/// How many keys of a scope are not revoked.
async fn live_keys(console: &Console, signed_in: &SignedIn, id: u64) -> Result<usize, PageError> {
    let scope = ScopeRef::Id(id);
    Ok(console
        .read(signed_in, Need::Scope(scope.clone()), move |store| {
            store.list_keys(Some(&scope))
        })
        .await?
        .iter()
        .filter(|key| key.revoked_at.is_none())
        .count())
}

fn delete_page(signed_in: &SignedIn, scope: &Scope, live: usize, error: Option<&str>) -> Markup {
    let title = format!("Delete API scope · {}", scope.name);
    let body = html! {
        @if let Some(error) = error { (error_box(error)) }
        p { "Deleting " strong { (scope.name) } " cannot be undone." }
        form.delete method="post" action={(scope_path(scope)) "/delete"} {
            (csrf(signed_in))
            @if live > 0 {
                div.choice {
                    input #revoke-keys type="checkbox" name="revoke_keys" value="true"
                        aria-describedby="revoke-keys-hint";
                    label for="revoke-keys" { "Also revoke its " (live) @if live == 1 { " live key" } @else { " live keys" } }
                    span.hint #revoke-keys-hint {
                        "A scope with live keys is only deleted with its keys revoked. \
                         They are denied from the next request on."
                    }
                }
            } @else {
                p { "It has no live keys." }
            }
            p.actions {
                button.danger type="submit" { "Delete scope" }
                " "
                a href=(app_path(&scope.app)) { "Cancel" }
            }
        }
    };
    layout::page(&title, Nav::Apps, Some(signed_in), body)
}

#[derive(Deserialize)]
pub(super) struct DeleteForm {
    #[serde(default)]
    revoke_keys: Option<String>,
}

pub(super) async fn delete(
    State(console): State<Console>,
    Extension(signed_in): Extension<SignedIn>,
    Path((app, id)): Path<(String, u64)>,
    axum::Form(form): axum::Form<DeleteForm>,
) -> Page {
    let scope = scope_of(&console, &signed_in, &app, id, Some("scope.delete")).await?;
    let revoke = form.revoke_keys.is_some();
    let live = live_keys(&console, &signed_in, id).await?;
    if live > 0 && !revoke {
        let why = format!(
            "The scope still has {live} live {}. Tick “Also revoke” to delete it with them \
             revoked, or revoke them first.",
            if live == 1 { "key" } else { "keys" }
        );
        let page = delete_page(&signed_in, &scope, live, Some(&why));
        return Ok((StatusCode::CONFLICT, page).into_response());
    }
    let deleted = console
        .change(
            &signed_in,
            Need::Scope(ScopeRef::Id(id)),
            "scope.delete",
            move |store| store.delete_scope(&ScopeRef::Id(id), revoke),
        )
        .await;
    match deleted {
        Ok(_) => Ok(Redirect::to(&format!("{}?done=deleted", app_path(&app))).into_response()),
        Err(error) => {
            let live = live_keys(&console, &signed_in, id).await.unwrap_or(live);
            Ok((
                error.status,
                delete_page(&signed_in, &scope, live, Some(&error.message)),
            )
                .into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_are_encoded_in_paths() {
        assert_eq!(app_path("billing"), "/apps/billing");
        assert_eq!(app_path("a b/c?d"), "/apps/a%20b%2Fc%3Fd");
        assert_eq!(app_path("é"), "/apps/%C3%A9");
    }
}
