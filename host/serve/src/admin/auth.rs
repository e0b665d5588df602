//! Who may use the admin API: the admin token (stored as its SHA-256,
//! compared in constant time) and a per-address limit on failed attempts.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::distr::{Alphanumeric, SampleString as _};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::Admin;
use super::errors::ApiError;

/// A new admin token: `ksadmin_` and 40 characters from the CSPRNG.
pub fn generate_token() -> Zeroizing<String> {
    let mut token = Zeroizing::new(String::from("ksadmin_"));
    token.push_str(&Alphanumeric.sample_string(&mut rand::rng(), 40));
    token
}

/// The SHA-256 of a token, as stored.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Failed authentications per client address: a token bucket of
/// [`FailedLogins::BURST`] failures, refilled one per
/// [`FailedLogins::REFILL`]. A client with none left gets 429 without its
/// token being looked at.
#[derive(Default)]
pub(super) struct FailedLogins {
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl FailedLogins {
    const BURST: f64 = 10.0;
    const REFILL: Duration = Duration::from_secs(6);
    /// Past this many addresses, full buckets are forgotten.
    const MAX_TRACKED: usize = 10_000;

    /// Whether `peer` may try now.
    fn may_try(&self, peer: IpAddr) -> bool {
        let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        buckets
            .get(&peer)
            .is_none_or(|&(left, at)| Self::refilled(left, at) >= 1.0)
    }

    /// Counts a failure of `peer`.
    fn failed(&self, peer: IpAddr) {
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

pub(super) async fn authenticate(
    State(admin): State<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if !admin.failures.may_try(peer.ip()) {
        admin.authorizer.metrics().admin_auth_failed();
        tracing::warn!(peer = %peer.ip(), "admin API: too many failed authentications; refused");
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
        return response;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token_digest(token.trim()));
    // The fleet token reads bundles and nothing else.
    let fleet = admin
        .bundles
        .as_ref()
        .filter(|_| request.uri().path() == "/v1/bundle")
        .map(|bundles| bundles.fleet_token);
    let valid = presented.is_some_and(|digest| {
        bool::from(digest.ct_eq(&admin.token))
            | fleet.is_some_and(|fleet| bool::from(digest.ct_eq(&fleet)))
    });
    if valid {
        return next.run(request).await;
    }
    admin.failures.failed(peer.ip());
    admin.authorizer.metrics().admin_auth_failed();
    // The log names the client and the path, never what it presented.
    tracing::warn!(
        peer = %peer.ip(),
        path = %keyscope_store::printable(request.uri().path()),
        token = if presented.is_some() { "wrong" } else { "missing" },
        "admin API: authentication failed"
    );
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        if presented.is_some() {
            "the admin token is not valid"
        } else {
            "the admin API needs Authorization: Bearer <admin token>"
        },
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"keyscope-admin\""),
    );
    response
}
