//! Apps and their API scopes: pick an app, list its scopes (each with its
//! Options: Manage Keys, Edit, Delete), create, edit and delete them.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use keyscope_policy::{AgentsLevel, RuntimePermission, RuntimeSet};
use keyscope_store::{Scope, ScopeRef, ScopeUpdate, Store as _, StoreError};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Nav, csrf, done_box, error_box, when};
use super::session::SignedIn;
use super::{Console, Page, PageError};

/// What each Agents level allows, in the product's words.
pub(super) fn agents_description(level: AgentsLevel) -> &'static str {
    match level {
        AgentsLevel::None => "No access.",
        AgentsLevel::View => "View the list of agents and an agent's details.",
        AgentsLevel::Edit => "Also edit and update existing agents.",
        AgentsLevel::Full => "Full administrative access, including creating and deleting agents.",
    }
}

fn agents_label(level: AgentsLevel) -> &'static str {
    match level {
        AgentsLevel::None => "None",
        AgentsLevel::View => "View",
        AgentsLevel::Edit => "Edit",
        AgentsLevel::Full => "Full",
    }
}

/// Each runtime permission's label and what it allows.
fn runtime_text(permission: RuntimePermission) -> (&'static str, &'static str) {
    match permission {
        RuntimePermission::Run => (
            "Run",
            "Execute an agent run. It may also create the session it runs in, so Run needs no \
             Session create as well.",
        ),
        RuntimePermission::SessionCreate => ("Session create", "Create a session."),
        RuntimePermission::SessionTerminate => ("Session terminate", "Terminate a session."),
        RuntimePermission::DocumentUpload => ("Document upload", "Upload documents to a session."),
    }
}

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
    let scopes = console.admin.read(|store| store.list_scopes(None)).await?;
    let mut apps: Vec<(String, usize)> = Vec::new();
    for scope in &scopes {
        match apps.last_mut() {
            Some((app, count)) if *app == scope.app => *count += 1,
            _ => apps.push((scope.app.clone(), 1)),
        }
    }
    apps.sort();
    apps.dedup_by(|b, a| {
        a.0 == b.0 && {
            a.1 += b.1;
            true
        }
    });
    let body = html! {
        p { "Pick the application whose API scopes and keys you want to manage." }
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
        form.inline method="get" action="/apps" {
            label for="app" { "Application" }
            input #app type="text" name="app" required autocomplete="off" spellcheck="false";
            button type="submit" { "Open" }
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
    Ok(Redirect::to(&app_path(app)).into_response())
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
    let scopes = {
        let app = app.clone();
        console
            .admin
            .read(move |store| store.list_scopes(Some(&app)))
            .await?
    };
    let body = html! {
        @if let Some(notice) = notice(&done) { (done_box(notice)) }
        p.actions { a.button href={(app_path(&app)) "/new"} { "Create API scope" } }
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
                                        li { a href={(scope_path(scope)) "/keys"} { "Manage Keys" } }
                                        li { a href=(scope_path(scope)) { "Edit" } }
                                        li { a href={(scope_path(scope)) "/delete"} { "Delete" } }
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

fn runtime_summary(runtime: RuntimeSet) -> String {
    let names: Vec<&str> = runtime.iter().map(|p| runtime_text(p).0).collect();
    if names.is_empty() {
        "None".to_owned()
    } else {
        names.join(", ")
    }
}

/// A scope form as submitted.
#[derive(Deserialize, Default)]
pub(super) struct ScopeForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    agents: String,
    #[serde(default)]
    run: Option<String>,
    #[serde(default, rename = "session-create")]
    session_create: Option<String>,
    #[serde(default, rename = "session-terminate")]
    session_terminate: Option<String>,
    #[serde(default, rename = "document-upload")]
    document_upload: Option<String>,
}

impl ScopeForm {
    fn of(scope: &Scope) -> Self {
        let has = |p| scope.runtime.contains(p).then(|| "on".to_owned());
        Self {
            name: scope.name.clone(),
            agents: scope.agents.as_str().to_owned(),
            run: has(RuntimePermission::Run),
            session_create: has(RuntimePermission::SessionCreate),
            session_terminate: has(RuntimePermission::SessionTerminate),
            document_upload: has(RuntimePermission::DocumentUpload),
        }
    }

    fn runtime(&self) -> RuntimeSet {
        [
            (RuntimePermission::Run, &self.run),
            (RuntimePermission::SessionCreate, &self.session_create),
            (RuntimePermission::SessionTerminate, &self.session_terminate),
            (RuntimePermission::DocumentUpload, &self.document_upload),
        ]
        .into_iter()
        .filter(|(_, on)| on.is_some())
        .map(|(permission, _)| permission)
        .collect()
    }

    fn checked(&self, permission: RuntimePermission) -> bool {
        self.runtime().contains(permission)
    }

    /// The name and level, checked; an error in words.
    fn parsed(&self) -> Result<(String, AgentsLevel), String> {
        let name = self.name.trim();
        if name.is_empty() {
            return Err("Give the scope a name.".to_owned());
        }
        let agents = self
            .agents
            .parse()
            .map_err(|_| "Choose an Agents level: None, View, Edit or Full.".to_owned())?;
        Ok((name.to_owned(), agents))
    }
}

/// The create and edit form. `action` is where it posts.
fn scope_form(
    signed_in: &SignedIn,
    action: &str,
    form: &ScopeForm,
    error: Option<&str>,
    submit: &str,
) -> Markup {
    html! {
        @if let Some(error) = error { (error_box(error)) }
        form.scope method="post" action=(action) {
            (csrf(signed_in))
            p.field {
                label for="name" { "Name" }
                input #name type="text" name="name" value=(form.name) required maxlength="200"
                    autocomplete="off";
            }
            fieldset {
                legend { "Agents" }
                p.hint { "Levels are cumulative: each includes the ones before it." }
                @for level in AgentsLevel::ALL {
                    @let id = format!("agents-{}", level.as_str());
                    div.choice {
                        input id=(id) type="radio" name="agents" value=(level.as_str())
                            checked[form.agents == level.as_str()]
                            aria-describedby={(id) "-hint"};
                        label for=(id) { (agents_label(level)) }
                        span.hint id={(id) "-hint"} { (agents_description(level)) }
                    }
                }
            }
            fieldset {
                legend { "Runtime permissions" }
                @for permission in RuntimePermission::ALL {
                    @let id = format!("runtime-{}", permission.as_str());
                    @let (label, description) = runtime_text(permission);
                    div.choice {
                        input id=(id) type="checkbox" name=(permission.as_str())
                            checked[form.checked(permission)]
                            aria-describedby={(id) "-hint"};
                        label for=(id) { (label) }
                        span.hint id={(id) "-hint"} { (description) }
                    }
                }
            }
            p.actions { button type="submit" { (submit) } }
        }
    }
}

pub(super) async fn new_form(
    Extension(signed_in): Extension<SignedIn>,
    Path(app): Path<String>,
) -> Page {
    let form = ScopeForm {
        agents: "none".to_owned(),
        ..ScopeForm::default()
    };
    let body = scope_form(&signed_in, &app_path(&app), &form, None, "Create");
    let title = format!("New API scope · {app}");
    Ok(layout::page(&title, Nav::Apps, Some(&signed_in), body).into_response())
}

/// Shows the form again with the error, and the admin's input kept.
fn refused(
    signed_in: &SignedIn,
    status: StatusCode,
    title: &str,
    action: &str,
    form: &ScopeForm,
    error: &str,
    submit: &str,
) -> Page {
    let body = scope_form(signed_in, action, form, Some(error), submit);
    Ok((
        status,
        layout::page(title, Nav::Apps, Some(signed_in), body),
    )
        .into_response())
}

/// The words and status of a store refusal, for a form.
fn form_error(error: PageError) -> (StatusCode, String) {
    (error.status, error.message)
}

pub(super) async fn create(
    State(console): State<Console>,
    Extension(signed_in): Extension<SignedIn>,
    Path(app): Path<String>,
    axum::Form(form): axum::Form<ScopeForm>,
) -> Page {
    let title = format!("New API scope · {app}");
    let action = app_path(&app);
    let (name, agents) = match form.parsed() {
        Ok(parsed) => parsed,
        Err(why) => {
            return refused(
                &signed_in,
                StatusCode::BAD_REQUEST,
                &title,
                &action,
                &form,
                &why,
                "Create",
            );
        }
    };
    let runtime = form.runtime();
    let created = {
        let app = app.clone();
        console
            .change(&signed_in, move |store| {
                store.create_scope(&app, &name, agents, runtime)
            })
            .await
    };
    match created {
        Ok(_) => Ok(Redirect::to(&format!("{action}?done=created")).into_response()),
        Err(error) => {
            let (status, why) = form_error(error);
            refused(&signed_in, status, &title, &action, &form, &why, "Create")
        }
    }
}

/// A scope of `app`, or a 404 in words.
async fn scope_of(console: &Console, app: &str, id: u64) -> Result<Scope, PageError> {
    let scope = console
        .admin
        .read(move |store| store.scope(&ScopeRef::Id(id)))
        .await
        .map_err(PageError::from)?;
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
    let scope = scope_of(&console, &app, id).await?;
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
    let scope = scope_of(&console, &app, id).await?;
    let title = format!("Edit API scope · {}", scope.name);
    let action = scope_path(&scope);
    let (name, agents) = match form.parsed() {
        Ok(parsed) => parsed,
        Err(why) => {
            return refused(
                &signed_in,
                StatusCode::BAD_REQUEST,
                &title,
                &action,
                &form,
                &why,
                "Save",
            );
        }
    };
    let update = ScopeUpdate {
        name: Some(name),
        agents: Some(agents),
        runtime: Some(form.runtime()),
    };
    let saved = console
        .change(&signed_in, move |store| {
            store.update_scope(&ScopeRef::Id(id), &update)
        })
        .await;
    match saved {
        Ok(_) => Ok(Redirect::to(&format!("{action}?done=updated")).into_response()),
        Err(error) => {
            let (status, why) = form_error(error);
            refused(&signed_in, status, &title, &action, &form, &why, "Save")
        }
    }
}

pub(super) async fn delete_form(
    State(console): State<Console>,
    Extension(signed_in): Extension<SignedIn>,
    Path((app, id)): Path<(String, u64)>,
) -> Page {
    let scope = scope_of(&console, &app, id).await?;
    let live = live_keys(&console, id).await?;
    Ok(delete_page(&signed_in, &scope, live, None).into_response())
}

/// How many keys of a scope are not revoked.
async fn live_keys(console: &Console, id: u64) -> Result<usize, PageError> {
    Ok(console
        .admin
        .read(move |store| store.list_keys(Some(&ScopeRef::Id(id))))
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
    let scope = scope_of(&console, &app, id).await?;
    let revoke = form.revoke_keys.is_some();
    let live = live_keys(&console, id).await?;
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
        .change(&signed_in, move |store| {
            store.delete_scope(&ScopeRef::Id(id), revoke)
        })
        .await;
    match deleted {
        Ok(_) => Ok(Redirect::to(&format!("{}?done=deleted", app_path(&app))).into_response()),
        Err(error) => {
            let live = live_keys(&console, id).await.unwrap_or(live);
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

    #[test]
    fn a_scope_form_reads_its_checkboxes() {
        let form = ScopeForm {
            name: " support ".into(),
            agents: "edit".into(),
            run: Some("on".into()),
            document_upload: Some("on".into()),
            ..ScopeForm::default()
        };
        assert_eq!(form.runtime().to_string(), "run,document-upload");
        assert_eq!(
            form.parsed().ok(),
            Some(("support".to_owned(), AgentsLevel::Edit))
        );
        let bad = ScopeForm {
            name: "x".into(),
            agents: "admin".into(),
            ..ScopeForm::default()
        };
        assert!(
            bad.parsed()
                .unwrap_err()
                .contains("None, View, Edit or Full")
        );
    }
}
