//! Who may use the admin API: a live named admin token (stored as its
//! SHA-256, compared in constant time, looked up at every request so that a
//! revoked token is refused at once), and a per-address limit on failed
//! attempts. The token's name is the actor of the changes it makes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};

use keyscope_store::{Store as _, StoreError, TokenKind};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq as _;

use keyscope_keys::admin_token::digest as token_digest;

use super::Admin;
use super::errors::ApiError;
use crate::bundles::Poller;

/// Failed authentications per client address (behind a trusted proxy, the
/// client it names): a token bucket of [`FailedLogins::BURST`] failures,
/// refilled one per [`FailedLogins::REFILL`]. The credential is always
/// checked first, so a valid one gets in whatever its address's failures;
/// a client with none left gets 429 for a wrong or missing one.
#[derive(Default)]
pub(super) struct FailedLogins {
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl FailedLogins {
    const BURST: f64 = 10.0;
    const REFILL: Duration = Duration::from_secs(6);
    /// Past this many addresses, full buckets are forgotten.
    const MAX_TRACKED: usize = 10_000;

    /// The bucket of `client`: its address, or for IPv6 its /64 (a host
    /// holds a whole /64, and would otherwise get a bucket per address).
    fn bucket(client: IpAddr) -> IpAddr {
        match client.to_canonical() {
            IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
            v4 => v4,
        }
    }

    /// Whether `peer` may try now.
    fn may_try(&self, peer: IpAddr) -> bool {
        let peer = Self::bucket(peer);
        let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        buckets
            .get(&peer)
            .is_none_or(|&(left, at)| Self::refilled(left, at) >= 1.0)
    }

    /// Counts a failure of `peer`.
    fn failed(&self, peer: IpAddr) {
        let peer = Self::bucket(peer);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= Self::MAX_TRACKED {
            buckets.retain(|_, &mut (left, at)| Self::refilled(left, at) < Self::BURST);
        }
        let (left, at) = buckets
            .get(&peer)
            .copied()
            .unwrap_or((Self::BURST, Instant::now()));
        let left = Self::refilled(left, at);
        buckets.insert(peer, ((left - 1.0).max(0.0), Instant::now()));
    }

    fn refilled(left: f64, at: Instant) -> f64 {
        (left + at.elapsed().as_secs_f64() / Self::REFILL.as_secs_f64()).min(Self::BURST)
    }
}

/// The digest of the fleet token a poll presented: a long poll checks it
/// again when the credentials change.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FleetDigest(pub [u8; 32]);

/// Whom a request's token names.
enum Who {
    /// A gateway, or whoever holds the shared fleet token.
    Fleet(Poller),
    /// An admin.
    Admin(Actor),
    /// Nobody: no token, or one that names nobody.
    Nobody,
}

/// Who made an admin request, and what they may do.
#[derive(Debug, Clone)]
pub struct Actor {
    /// `admin:NAME` or `oidc:SUBJECT (EMAIL)`: the actor in the audit trail.
    pub name: String,
    /// What they may do ([`keyscope_store::roles`]).
    pub role: keyscope_store::Role,
}

impl Admin {
    /// Whom `presented` (a token's digest) names: a live named token of the
    /// store, or on a gateway the one token it was started with. Blocks on
    /// the store.
    pub fn identify(
        &self,
        presented: &[u8; 32],
        read_only: bool,
    ) -> Result<Option<Actor>, StoreError> {
        identify(self, presented, read_only)
    }

    /// Reads the fleet tokens anew, learns those made since the last read,
    /// and says whom `presented` names. Blocks on the store.
    fn learn_fleet(&self, presented: &[u8; 32]) -> Result<Option<Poller>, StoreError> {
        let (Some(store), Some(bundles)) = (&self.store, &self.bundles) else {
            return Ok(None);
        };
        let tokens = store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tokens(TokenKind::Fleet);
        match tokens {
            Ok(tokens) => bundles.credentials().learn(&tokens),
            // Fail static: the tokens last read still stand.
            Err(StoreError::Unavailable { .. }) => {}
            Err(error) => return Err(error),
        }
        Ok(bundles.credentials().who(presented))
    }

    /// Whether `client` may fail to authenticate once more now.
    pub fn may_try(&self, client: IpAddr) -> bool {
        self.failures.may_try(client)
    }

    /// The client of a request from `peer`: the peer, or behind a trusted
    /// proxy the client it names ([`crate::client`]).
    pub fn client(&self, peer: IpAddr, headers: &axum::http::HeaderMap) -> IpAddr {
        self.proxies.client(peer, headers)
    }

    /// Counts a failed authentication of `peer`.
    pub fn failed(&self, peer: IpAddr) {
        self.failures.failed(peer);
        self.authorizer.metrics().admin_auth_failed();
    }
}

fn identify(
    admin: &Admin,
    presented: &[u8; 32],
    read_only: bool,
) -> Result<Option<Actor>, StoreError> {
    let Some(store) = &admin.store else {
        return Ok(admin
            .gateway_token
            .filter(|token| bool::from(presented.ct_eq(token)))
            .map(|_| Actor {
                name: "admin:admin".to_owned(),
                role: keyscope_store::Role::Admin,
            }));
    };
    let read = store
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .tokens(TokenKind::Admin);
    let mut known = admin
        .known_tokens
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let tokens = match read {
        Ok(tokens) => {
            known.clone_from(&tokens);
            tokens
        }
        // Fail static for reads: while the database is out of reach, a
        // request that changes nothing (the status, the fleet) is checked
        // against the tokens last read. A change would need the database
        // anyway, so it fails closed.
        Err(StoreError::Unavailable { .. }) if read_only => known.clone(),
        Err(error) => return Err(error),
    };
    drop(known);
    // Every live token is compared, whichever matches.
    let mut found = None;
    for token in tokens.iter().filter(|t| t.revoked_at.is_none()) {
        if bool::from(presented.ct_eq(&token.digest))
            && let Some(role) = &token.role
        {
            found = Some(Actor {
                name: format!("admin:{}", token.name),
                role: role.clone(),
            });
        }
    }
    Ok(found)
}

pub(super) async fn authenticate(
    State(admin): State<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let client = admin.client(peer.ip(), request.headers());
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token_digest(token.trim()));
    // Fleet tokens read bundles and nothing else. They are checked first,
    // against the tokens last read: a known gateway's poll never waits on
    // the store, so bundles keep flowing while the database is down.
    let polling = request.uri().path() == "/v1/bundle";
    let known = admin
        .bundles
        .as_ref()
        .filter(|_| polling)
        .zip(presented)
        .and_then(|(bundles, digest)| bundles.credentials().who(&digest));
    let who = match (known, presented) {
        (Some(poller), _) => Who::Fleet(poller),
        (None, None) => Who::Nobody,
        (None, Some(digest)) => {
            let read_only = matches!(*request.method(), Method::GET | Method::HEAD);
            let looked_up = {
                let admin = admin.clone();
                tokio::task::spawn_blocking(move || -> Result<Who, StoreError> {
                    // A gateway's token made since the last read of the
                    // store, or an admin's token.
                    if polling && let Some(poller) = admin.learn_fleet(&digest)? {
                        return Ok(Who::Fleet(poller));
                    }
                    Ok(identify(&admin, &digest, read_only)?.map_or(Who::Nobody, Who::Admin))
                })
                .await
            };
            match looked_up {
                Ok(Ok(who)) => who,
                Ok(Err(error)) => return ApiError::from(error).into_response(),
                Err(_) => {
                    return ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "the token could not be checked",
                    )
                    .into_response();
                }
            }
        }
    };
    match who {
        Who::Fleet(Poller::Revoked(name)) => {
            // Counted, but not against the address: a revoked token is no
            // guess, and a decommissioned gateway still polling must not
            // lock its neighbours behind the same address out.
            admin.authorizer.metrics().admin_auth_failed();
            static REVOKED: crate::throttle::Throttle = crate::throttle::Throttle::new();
            if let Some(refused) = REVOKED.tick(1) {
                tracing::warn!(
                    client = %client,
                    gateway = %name,
                    refused,
                    "bundle polls under revoked fleet tokens refused (this one's gateway named; \
                     at most one line per 10 s)"
                );
            }
            return unauthorized(format!(
                "the fleet token of gateway `{name}` was revoked; make it a new one \
                 (keyscope fleet token create --gateway {name})"
            ));
        }
        Who::Fleet(poller) => {
            let mut request = request;
            request.extensions_mut().insert(poller);
            if let Some(digest) = presented {
                request.extensions_mut().insert(FleetDigest(digest));
            }
            return next.run(request).await;
        }
        Who::Admin(actor) => {
            let mut request = request;
            request.extensions_mut().insert(actor);
            return next.run(request).await;
        }
        Who::Nobody => {}
    }
    // A valid credential got in above, whatever this client's failures:
    // only failures are limited.
    if !admin.failures.may_try(client) {
        admin.authorizer.metrics().admin_auth_failed();
        static LIMITED: crate::throttle::Throttle = crate::throttle::Throttle::new();
        if let Some(refused) = LIMITED.tick(1) {
            tracing::warn!(
                client = %client,
                refused,
                "admin API: too many failed authentications; refused (at most one line per 10 s)"
            );
        }
        return too_many();
    }
    admin.failed(client);
    // The log names the client and the path, never what it presented; a
    // flood of failures is one line per 10 s, with the count.
    static FAILED: crate::throttle::Throttle = crate::throttle::Throttle::new();
    if let Some(failures) = FAILED.tick(1) {
        tracing::warn!(
            client = %client,
            path = %keyscope_store::printable(request.uri().path()),
            token = if presented.is_some() { "wrong" } else { "missing" },
            failures,
            "admin API: authentication failed (this client named; at most one line per 10 s)"
        );
    }
    unauthorized(
        if presented.is_some() && polling {
            "the token is neither a fleet token nor an admin token"
        } else if presented.is_some() {
            "the admin token is not valid"
        } else {
            "the admin API needs Authorization: Bearer <admin token>"
        }
        .to_owned(),
    )
}

/// 429, with when to try again.
fn too_many() -> Response {
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "too many failed authentications from this address; try again later",
    )
    .into_response();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(FailedLogins::REFILL.as_secs()),
    );
    response
}

/// 401, with the realm a client should authenticate to.
fn unauthorized(message: String) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"keyscope-admin\""),
    );
    response
}
