//! What the server holds and has done: the audit trail, the live policy,
//! the fleet, and a panel that asks the live policy about a request.

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use keyscope_policy::{Decision, Reason};
use maud::{Markup, html};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::layout::{self, Nav, csrf, error_box, when, when_ms};
use super::session::SignedIn;
use super::{Console, Page, PageError};
use keyscope_serve::surface::Target;
use keyscope_serve::surface::{Action, Front};

/// The most entries the audit page shows, newest first.
const AUDIT_PAGE: usize = 500;

#[derive(Deserialize, Default)]
pub(super) struct AuditQuery {
    #[serde(default)]
    since: String,
}

pub(super) async fn audit(
    State(console): State<Console>,
    Extension(signed_in): Extension<SignedIn>,
    Query(query): Query<AuditQuery>,
) -> Page {
    let since = query.since.trim().to_owned();
    if !since.is_empty() && !looks_like_time(&since) {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "Give “since” as a date, such as 2026-11-27, or a time, such as \
             2026-11-27T13:00:00Z.",
        ));
    }
    let trail = console.admin.audit_trail(&signed_in.actor).await?;
    let verified = &trail.verified;
    let entries: Vec<_> = trail
        .entries
        .iter()
        .rev()
        .filter(|entry| entry.at.as_str() >= since.as_str())
        .take(AUDIT_PAGE)
        .collect();
    let body = html! {
        @match &verified {
            // An app role is told neither how many entries the whole
            // trail holds nor how many are other apps'.
            Ok(_) if signed_in.actor.role.apps().is_some() => p.done role="status" {
                "The trail verifies: every entry is intact and in order."
            },
            Ok(_) => p.done role="status" {
                "The trail verifies: all " (trail.total) " entries are intact and in order."
            },
            Err(broken) => (error_box(&format!("The trail does not verify: {broken}."))),
        }
        form.inline method="get" action="/audit" {
            label for="since" { "Since" }
            input #since type="text" name="since" value=(since) placeholder="2026-11-27"
                aria-describedby="since-hint";
            button type="submit" { "Filter" }
            span.hint #since-hint { "A date or an RFC 3339 time, in UTC." }
        }
        @if entries.is_empty() {
            p { "No entries." }
        } @else {
            table.audit {
                caption { "Changes, newest first" }
                thead { tr {
                    th scope="col" { "#" }
                    th scope="col" { "When" }
                    th scope="col" { "Who" }
                    th scope="col" { "What" }
                    th scope="col" { "Target" }
                    th scope="col" { "Details" }
                } }
                tbody {
                    @for entry in &entries {
                        tr {
                            td { (entry.seq) }
                            td { (when(&entry.at)) }
                            td { (entry.actor) }
                            td { code { (entry.action) } }
                            td { (target_words(entry)) }
                            td {
                                @if entry.before.is_some() || entry.after.is_some() {
                                    details {
                                        summary { "Before and after" }
                                        @if let Some(before) = &entry.before { p { "Before:" } pre { (before) } }
                                        @if let Some(after) = &entry.after { p { "After:" } pre { (after) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page("Audit trail", Nav::Audit, Some(&signed_in), body).into_response())
}

/// An audit entry's target in words: a scope or key by its name, with its
/// id beside it (`scope acme/support-bot · #1`, `key ci · #2`), from the
/// record the entry holds; any other target as the trail writes it.
fn target_words(entry: &keyscope_store::audit::AuditEntry) -> String {
    let record = entry
        .before
        .as_deref()
        .or(entry.after.as_deref())
        .and_then(|json| serde_json::from_str::<serde_json::Value>(json).ok());
    let field = |name: &str| {
        record
            .as_ref()
            .and_then(|record| record.get(name)?.as_str().map(str::to_owned))
    };
    match (entry.target.split_once(':'), field("name")) {
        (Some(("scope", id)), Some(name)) => match field("app") {
            Some(app) => format!("scope {app}/{name} · #{id}"),
            None => format!("scope {name} · #{id}"),
        },
        (Some(("key", id)), Some(name)) => format!("key {name} · #{id}"),
        _ => entry.target.clone(),
    }
}

/// A date or RFC 3339 time prefix: digits, `-`, `:`, `T`, `.`, `Z`.
fn looks_like_time(text: &str) -> bool {
    text.len() >= 4
        && text.len() <= 40
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || "-:T.Z".contains(c))
}

pub(super) async fn policy(
    State(console): State<Console>,
    Extension(signed_in): Extension<SignedIn>,
) -> Page {
    use std::sync::atomic::Ordering::Relaxed;
    console
        .admin
        .allow(&signed_in.actor, Action::Read, "status")
        .await?;
    let live = console.admin.refresher().live();
    let current = live.current();
    let info = current.component.info();
    let stats = live.stats();
    let history = live.history();
    let body = html! {
        dl.facts {
            dt { "Generation" } dd { (current.number) }
            dt { "Live since" } dd { (when_ms(current.loaded_at_ms)) }
            dt { "Module digest (SHA-256)" } dd { code.digest { (info.digest) } }
            dt { "Module" } dd { (info.interface) ", " (info.size) " bytes, importing "
                @if info.imports.is_empty() { "nothing" } @else { (info.imports.join(", ")) } }
            dt { "Snapshot digest (SHA-256)" } dd { code.digest { (current.snapshot_info.digest_hex()) } }
            dt { "Snapshot" } dd {
                (current.snapshot_info.scopes) " scopes, " (current.snapshot_info.keys) " keys, "
                (current.snapshot_info.operations) " operations"
            }
            dt { "Swaps" } dd {
                (stats.swaps_published.load(Relaxed)) " published, "
                (stats.swaps_refused.load(Relaxed)) " refused"
            }
            dt { "Policy errors" } dd { (stats.policy_errors.load(Relaxed)) " (each one denied)" }
        }
        h2 { "Swap history" }
        @if history.is_empty() {
            p { "No swaps yet." }
        } @else {
            table.history {
                caption { "Swaps, newest first" }
                thead { tr {
                    th scope="col" { "When" }
                    th scope="col" { "Generation" }
                    th scope="col" { "What" }
                    th scope="col" { "Module" }
                    th scope="col" { "Snapshot" }
                    th scope="col" { "Outcome" }
                } }
                tbody {
                    @for swap in history.iter().rev() {
                        tr {
                            td { (when_ms(swap.at_ms)) }
                            td { @if let Some(generation) = swap.generation { (generation) } @else { "—" } }
                            td { (swap.kind) }
                            td { code { (short(&swap.module_digest)) } }
                            td { @if let Some(digest) = &swap.snapshot_digest { code { (short(digest)) } } @else { "—" } }
                            td { (swap.outcome) }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page("Live policy", Nav::Policy, Some(&signed_in), body).into_response())
}

/// The first 12 hex digits of a digest.
fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

pub(super) async fn fleet(
    State(console): State<Console>,
    Extension(signed_in): Extension<SignedIn>,
) -> Page {
    console
        .admin
        .allow(&signed_in.actor, Action::Read, "fleet")
        .await?;
    let body = match console.admin.bundles() {
        None => html! {
            p {
                "Bundles are off on this server, so it has no fleet. A control plane started with \
                 a signing key publishes signed bundles that gateways follow; see docs/fleet.md."
            }
        },
        Some(bundles) => fleet_table(&bundles.fleet()),
    };
    Ok(layout::page("Fleet", Nav::Fleet, Some(&signed_in), body).into_response())
}

fn fleet_table(fleet: &serde_json::Value) -> Markup {
    let gateways = fleet["gateways"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    html! {
        p { "Published revision " strong { (fleet["revision"]) } ". "
            (gateways.len()) " gateways, " (fleet["behind"]) " behind." }
        @if !gateways.is_empty() {
            table.fleet {
                caption { "Gateways" }
                thead { tr {
                    th scope="col" { "Gateway" }
                    th scope="col" { "Address" }
                    th scope="col" { "Revision" }
                    th scope="col" { "Up to date" }
                    th scope="col" { "Last seen" }
                } }
                tbody {
                    @for gateway in gateways {
                        tr {
                            th scope="row" { (gateway["id"].as_str().unwrap_or("?")) }
                            td { (gateway["address"].as_str().unwrap_or("")) }
                            td { (gateway["revision"]) }
                            td { @if gateway["current"] == true { "Yes" } @else { strong { "No" } } }
                            td { @if let Some(ms) = gateway["last_seen_ms"].as_u64() { (when_ms(ms)) } }
                        }
                    }
                }
            }
        }
    }
}

/// The try form, as submitted. The key is a secret: it comes in a POST body
/// only, and is never shown back.
#[derive(Deserialize, Default)]
pub(super) struct TryForm {
    #[serde(default)]
    key: Zeroizing<String>,
    #[serde(default)]
    app: String,
    #[serde(default)]
    op: String,
    #[serde(default)]
    method: String,
    #[serde(default)]
    path: String,
}

fn try_page(signed_in: &SignedIn, form: &TryForm, result: Option<Markup>) -> Markup {
    let body = html! {
        p { "Ask the live policy what it would decide for a key, without calling the platform. \
             A trial is not counted as the key's use." }
        @if let Some(result) = result { (result) }
        form.try method="post" action="/try" {
            (csrf(signed_in))
            p.field {
                label for="try-key" { "API key" }
                input #try-key type="password" name="key" autocomplete="off" spellcheck="false"
                    aria-describedby="try-key-hint";
                span.hint #try-key-hint { "Sent in the form's body only, and never shown back." }
            }
            fieldset {
                legend { "An app and an operation" }
                p.field { label for="try-app" { "App" }
                    input #try-app type="text" name="app" value=(form.app) autocomplete="off"; }
                p.field { label for="try-op" { "Operation" }
                    input #try-op type="text" name="op" value=(form.op) placeholder="agents.list"
                        autocomplete="off"; }
            }
            fieldset {
                legend { "Or a method and a path" }
                p.field { label for="try-method" { "Method" }
                    input #try-method type="text" name="method" value=(form.method) placeholder="GET"
                        autocomplete="off"; }
                p.field { label for="try-path" { "Path" }
                    input #try-path type="text" name="path" value=(form.path)
                        placeholder="/v1/apps/billing/agents" autocomplete="off"; }
            }
            p.actions { button type="submit" { "Decide" } }
        }
    };
    layout::page("Try a request", Nav::Try, Some(signed_in), body)
}

pub(super) async fn try_form(Extension(signed_in): Extension<SignedIn>) -> Page {
    Ok(try_page(&signed_in, &TryForm::default(), None).into_response())
}

pub(super) async fn try_request(
    State(console): State<Console>,
    Extension(signed_in): Extension<SignedIn>,
    axum::Form(form): axum::Form<TryForm>,
) -> Page {
    let filled = |text: &str| !text.trim().is_empty();
    let target = match (
        filled(&form.app) && filled(&form.op),
        filled(&form.method) && filled(&form.path),
    ) {
        (true, false) => Target::Op {
            app: form.app.trim(),
            op: form.op.trim(),
        },
        (false, true) => Target::Http {
            method: form.method.trim(),
            path: form.path.trim(),
        },
        _ => {
            let error =
                error_box("Give either an app and an operation, or a method and a path, not both.");
            let page = try_page(&signed_in, &form, Some(error));
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
    };
    let credential = keyscope_keys::credential(Some(form.key.trim()).filter(|key| !key.is_empty()));
    let authorizer = console.admin.authorizer();
    let outcome = authorizer.decide(Front::Console, credential, target);
    let decided_on = target.decided_on(&outcome);
    // An app role tries requests on its apps only; any other is answered
    // as one to an app that does not exist.
    if let Some((app, _)) = decided_on
        && !signed_in.actor.role.sees(app)
    {
        let error = error_box(
            "No app of that name among your apps: you may try requests on your apps only.",
        );
        let page = try_page(&signed_in, &form, Some(error));
        return Ok((StatusCode::NOT_FOUND, page).into_response());
    }
    let decision = &outcome.decision;
    let result = html! {
        section.result aria-labelledby="result-heading" role="status" {
            h2 #result-heading { @if decision.allow { "Allowed" } @else { "Denied" } }
            p { (explain(decision)) }
            dl.facts {
                dt { "Reason" } dd { code { (decision.reason.as_str()) } }
                @if let Some((app, op)) = decided_on {
                    dt { "Decided on" } dd { (app) " · " code { (op) } }
                }
                @if let Some(required) = &decision.required {
                    dt { "Required" } dd { code { (required.to_string()) } }
                }
                @if let Some(key) = decision.key_id { dt { "Key id" } dd { (key) } }
                @if let Some(scope) = decision.scope_id { dt { "Scope id" } dd { (scope) } }
                dt { "Generation" } dd { (outcome.generation) }
            }
        }
    };
    Ok(try_page(&signed_in, &form, Some(result)).into_response())
}

/// A decision, in words.
fn explain(decision: &Decision) -> String {
    match decision.reason {
        Reason::Allowed => "The key's scope grants this operation.".to_owned(),
        Reason::MissingKey => "No key was given.".to_owned(),
        Reason::MalformedKey => "That is not a keyscope API key.".to_owned(),
        Reason::UnknownKey => {
            "No such key: it was never issued, or its scope was deleted.".to_owned()
        }
        Reason::RevokedKey => "The key was revoked.".to_owned(),
        Reason::ExpiredKey => {
            "The key has expired: its lifetime, or its grace after a rotation, is over.".to_owned()
        }
        Reason::WrongApp => "The key's scope belongs to another application.".to_owned(),
        Reason::InsufficientPermission => match &decision.required {
            Some(required) => format!("The key's scope does not grant {required}."),
            None => "The key's scope does not grant what the operation needs.".to_owned(),
        },
        Reason::UnknownOperation => {
            "The policy knows no such operation, or no route matches the path.".to_owned()
        }
        Reason::NoSnapshot => "No snapshot is loaded, so everything is denied.".to_owned(),
        Reason::PolicyError => "The policy failed, so the request is denied.".to_owned(),
        Reason::StalePolicy => {
            "The decision data is older than max_stale allows, so the request is denied.".to_owned()
        }
    }
}
