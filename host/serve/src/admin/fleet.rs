//! `GET /v1/bundle` for gateways and `GET /admin/fleet` for admins.
//!
//! A gateway polls with the bundle it holds (`version`, `revision`,
//! `snapshot`, `module`), its `gateway` id, `wait` seconds, and
//! `If-None-Match`. If it
//! holds the published state, the poll waits until a newer one is
//! published or `wait` runs out (then 304); otherwise it gets a delta from
//! its state if one is held, else the full bundle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use keyscope_bundle::Have;
use keyscope_bundle::format::state_tag;
use keyscope_runtime::time::now_ms;
use serde::Deserialize;

use super::auth::FleetDigest;
use super::errors::ApiError;
use super::{Admin, Handled};
use crate::bundles::{Bundles, Credential, Poller, Published, Seen};
use crate::fleet_view::gateway_name;
use crate::throttle::Throttle;

/// The longest a poll may wait, whatever it asks.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(60);

/// The longest a poll waits on a server whose connections idle out after
/// `idle_timeout`: a waiting poll sends nothing, so it must answer before.
pub(crate) fn long_poll_max(idle_timeout: Duration) -> Duration {
    MAX_WAIT.min(idle_timeout.saturating_sub(Duration::from_secs(5)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Poll {
    version: Option<u64>,
    revision: Option<u64>,
    snapshot: Option<String>,
    module: Option<String>,
    gateway: Option<String>,
    wait: Option<u64>,
}

fn bundles(admin: &Admin) -> Result<Arc<Bundles>, ApiError> {
    admin.bundles.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "bundles-off",
            "this server does not publish bundles: start it with --bundle-signing-key",
        )
    })
}

fn invalid(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid-input", message)
}

/// A gateway id, by the one rule ([`keyscope_gateway::ID_RULE`]).
fn check_id(id: &str) -> Result<(), ApiError> {
    keyscope_gateway::check_id(id).map_err(|error| invalid(error.to_string()))
}

fn check_digest(what: &str, digest: &str) -> Result<(), ApiError> {
    // Lowercase only, as every digest is written: an uppercase one would
    // never match what was published, and fetch a full bundle every time.
    if digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what}: a digest is 64 lowercase hex digits"
        )))
    }
}

pub(super) async fn bundle(
    State(admin): State<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    poller: Option<Extension<Poller>>,
    actor: Option<Extension<super::Actor>>,
    digest: Option<Extension<FleetDigest>>,
    poll: Result<Query<Poll>, QueryRejection>,
    headers: HeaderMap,
) -> Handled {
    // An admin token polls as a gateway would only if its role reads the
    // whole platform: a bundle holds every app.
    if let Some(Extension(actor)) = &actor {
        admin
            .allow(actor, keyscope_store::roles::Action::Read, "bundle")
            .await?;
    }
    let bundles = bundles(&admin)?;
    let Query(poll) = poll.map_err(|rejection| {
        // Names the parameter at fault; shown printable and short.
        let why = keyscope_store::printable(&rejection.body_text());
        invalid(format!(
            "the poll's query (revision, snapshot, module, gateway, wait): {}",
            why.chars().take(200).collect::<String>()
        ))
    })?;
    if let Some(id) = &poll.gateway {
        check_id(id)?;
    }
    let (gateway, credential) = whose(&bundles, poller.map(|Extension(p)| p), poll.gateway)?;
    for (what, digest) in [("snapshot", &poll.snapshot), ("module", &poll.module)] {
        if let Some(digest) = digest {
            check_digest(what, digest)?;
        }
    }
    let have = match (poll.revision, &poll.snapshot, &poll.module) {
        (Some(revision), Some(snapshot), Some(module)) => Some(Have {
            revision,
            snapshot: snapshot.as_str(),
            module: module.as_str(),
        }),
        (None, None, None) => None,
        _ => {
            return Err(invalid(
                "revision, snapshot and module: give all three, or none".into(),
            ));
        }
    };
    // The gateway's usage since its last poll: checked whole before any of
    // it is counted.
    let uses = if let Some(report) = headers.get(keyscope_gateway::USAGE_HEADER) {
        report
            .to_str()
            .map_err(|_| invalid("the usage report is not ASCII".into()))
            .and_then(|text| {
                keyscope_keys::usage::KeyUse::parse_report(text)
                    .map_err(|error| invalid(error.to_string()))
            })?
    } else {
        Vec::new()
    };
    // Counted once the poll is known good: a refused poll's report is
    // kept by the gateway and sent again. However many ids the fleet's
    // reports name, the tally holds no more keys than the live snapshot
    // does (and a report's worth): a forged id costs a slot until the next
    // write, never memory without bound, and the store ignores ids it lacks.
    let max_keys = admin.authorizer.live().map_or(0, |live| {
        usize::try_from(live.current().snapshot_info.keys).unwrap_or(usize::MAX)
    });
    if let (Some(id), Some(have)) = (&gateway, have) {
        bundles.seen(
            id.clone(),
            Seen {
                version: poll.version.unwrap_or(0),
                revision: have.revision,
                snapshot: have.snapshot.to_owned(),
                module: have.module.to_owned(),
                last_seen_ms: now_ms(),
                address: peer.ip(),
                credential,
            },
        );
    }
    let dropped = admin.authorizer.usage().merge_report(
        &uses,
        now_ms(),
        max_keys.saturating_add(keyscope_keys::usage::MAX_REPORT),
    );
    if dropped > 0 {
        warn_dropped(gateway.as_deref(), dropped);
    }
    let held_tag = have.map(|have| state_tag(have.revision, have.snapshot, have.module));
    let held_version = poll.version.unwrap_or(0);
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let holds = |published: &Published| {
        held_tag
            .as_deref()
            .is_some_and(|tag| published.held_by(tag, held_version))
            || Some(&published.etag) == if_none_match.as_ref()
    };
    let mut published = bundles.published();
    let wait = Duration::from_secs(poll.wait.unwrap_or(0)).min(admin.long_poll_max);
    // A fleet token revoked while its poll waits: 401 at the change.
    let revoked = || {
        digest.is_some_and(|Extension(FleetDigest(digest))| {
            matches!(bundles.credentials().who(&digest), Some(Poller::Revoked(_)))
        })
    };
    if holds(&published.borrow_and_update()) && !wait.is_zero() {
        let mut credentials = bundles.credentials().subscribe();
        let _ = tokio::time::timeout(wait, async {
            loop {
                tokio::select! {
                    _ = published.wait_for(|published| published.stopping || !holds(published)) => break,
                    changed = credentials.changed() => {
                        if changed.is_err() || revoked() {
                            break;
                        }
                    }
                }
            }
        })
        .await;
    }
    if revoked() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the fleet token this poll presented was revoked while it waited",
        ));
    }
    let current = published.borrow().clone();
    if holds(&current) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        set_etag(response.headers_mut(), &current.etag);
        return Ok(response);
    }
    let owned = have.map(|have| {
        (
            have.revision,
            have.snapshot.to_owned(),
            have.module.to_owned(),
        )
    });
    let built = tokio::task::spawn_blocking(move || {
        bundles.bundle(owned.as_ref().map(|(revision, snapshot, module)| Have {
            revision: *revision,
            snapshot,
            module,
        }))
    })
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "building the bundle failed",
        )
    })?
    .map_err(|error| {
        // The gateway keeps serving what it holds (fail static).
        tracing::error!(%error, "bundle poll: the snapshot could not be encoded");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "building the bundle failed",
        )
    })?;
    if let Some(why) = built.why_full {
        tracing::info!(
            gateway = gateway.as_deref().unwrap_or("-"),
            revision = poll.revision,
            why,
            "bundle poll: the full bundle, not a delta"
        );
    }
    let mut response = Body::from(Bytes::from_owner(built.bytes)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.keyscope.bundle"),
    );
    set_etag(headers, &current.etag);
    headers.insert(
        "keyscope-bundle-kind",
        HeaderValue::from_static(match built.kind {
            keyscope_bundle::Kind::Full => "full",
            keyscope_bundle::Kind::Delta => "delta",
        }),
    );
    Ok(response)
}

/// The poll's gateway id and how it authenticated. A gateway's own token
/// names it: a poll under it may say its name or `NAME:SUFFIX`
/// ([`keyscope_gateway::owned_by`]), and any other id is refused, so that
/// no gateway writes another's row. The shared token may not poll under an
/// id a gateway's own token owns.
fn whose(
    bundles: &Bundles,
    poller: Option<Poller>,
    said: Option<String>,
) -> Result<(Option<String>, Credential), ApiError> {
    let forbidden = |message: String| ApiError::new(StatusCode::FORBIDDEN, "forbidden", message);
    match poller {
        Some(Poller::Gateway(name)) => match said {
            Some(said) if !keyscope_gateway::owned_by(&said, &name) => Err(forbidden(format!(
                "this fleet token is gateway `{name}`'s, and the poll says it is `{said}`: \
                 start the gateway with --gateway-id {name}"
            ))),
            said => Ok((Some(said.unwrap_or(name)), Credential::Named)),
        },
        Some(Poller::Shared) => match said {
            Some(said) if bundles.credentials().has_token(gateway_name(&said)) => {
                Err(forbidden(format!(
                    "gateway `{said}` has (or had) a fleet token of its own: the shared fleet \
                     token cannot poll as it"
                )))
            }
            said => Ok((said, Credential::Shared)),
        },
        // Refused before the handler; refused here too, should that change.
        Some(Poller::Revoked(name)) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("the fleet token of gateway `{name}` was revoked"),
        )),
        // An admin token: trusted with every id.
        None => Ok((said, Credential::Admin)),
    }
}

/// Logs usage entries dropped, at most once per 10 s with the count since
/// the last line: a flood of forged reports must not flood the log too.
fn warn_dropped(gateway: Option<&str>, dropped: usize) {
    static DROPPED: Throttle = Throttle::new();
    if let Some(total) = DROPPED.tick(dropped as u64) {
        tracing::warn!(
            gateway = gateway.unwrap_or("-"),
            dropped = total,
            "usage reports name more keys than the snapshot holds: entries dropped \
             (a forged report, or a tally that outgrew its bound)"
        );
    }
}

fn set_etag(headers: &mut HeaderMap, tag: &str) {
    if let Ok(value) = HeaderValue::from_str(tag) {
        headers.insert(header::ETAG, value);
    }
    // Long polls answer as soon as a newer state exists: a gateway may
    // poll again at once.
    headers.insert("keyscope-long-poll", HeaderValue::from_static("1"));
}

pub(super) async fn fleet(
    State(admin): State<Admin>,
    Extension(actor): Extension<super::Actor>,
) -> Handled {
    admin
        .allow(&actor, keyscope_store::roles::Action::Read, "fleet")
        .await?;
    Ok(Json(bundles(&admin)?.fleet()).into_response())
}

/// `DELETE /admin/fleet/{id}`: forgets a gateway (a decommissioned one, or
/// an id that should never have polled). It comes back if it polls again.
pub(super) async fn forget(
    State(admin): State<Admin>,
    Extension(actor): Extension<super::Actor>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Handled {
    admin
        .allow(
            &actor,
            keyscope_store::roles::Action::Change,
            "fleet.forget",
        )
        .await?;
    check_id(&id)?;
    if bundles(&admin)?.forget(&id) {
        tracing::info!(gateway = %id, "fleet: gateway forgotten");
        Ok(Json(serde_json::json!({ "forgotten": id })).into_response())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no gateway `{id}` in the fleet view"),
        ))
    }
}
