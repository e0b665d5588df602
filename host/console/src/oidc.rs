//! Signing in through the company's OpenID provider (`[console.oidc]`):
//! the authorization code flow with PKCE, `state` and `nonce`, and the ID
//! token verified by `openidconnect` against the provider's discovery
//! document and JWKS (signature, issuer, audience, expiry, nonce).
//!
//! The flow's secrets (state, nonce, PKCE verifier) live in a short-lived
//! HttpOnly cookie of the browser that started it, so the callback may
//! reach any control plane behind a load balancer; the cookie is cleared
//! at the callback, whatever its outcome, and the provider takes a code
//! once, so a replayed callback is refused. The provider's documents are
//! kept for a minute (a flood of sign-in starts does not become a flood of
//! requests to the provider), and read again at once when an ID token
//! does not verify against them, so a rotated signing key is picked up.
//!
//! The user's groups (the claim `[console.oidc] claim` names) map to a
//! role; the strongest wins ([`Role::strongest`]). A user in no mapped
//! group is refused in words. The session ends at the ID token's expiry
//! (or the console's own maximum, if sooner), and its changes are audited
//! as `oidc:SUBJECT (EMAIL)`.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use openidconnect::core::{
    CoreClient, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreResponseType,
};
use openidconnect::{
    AdditionalClaims, AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    IdToken, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    SyncHttpClient,
};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use keyscope_serve::Oidc;
use keyscope_serve::surface::Actor;
use keyscope_store::Role;

use super::layout::error_box;
use super::sign_in::sign_in_page;
use super::{Console, SESSION_COOKIE, cookie, now_ms, set_cookie};

/// The cookie that carries a sign-in in progress.
const FLOW_COOKIE: &str = "keyscope_oidc";

/// Where the flow's cookie is sent: the start and the callback.
const FLOW_PATH: &str = "/sign-in/oidc";

/// The most a provider's document may hold.
const MAX_DOCUMENT_BYTES: u64 = 1 << 20;

/// The provider, as configured, with an HTTP client for it.
pub(crate) struct Provider {
    oidc: Oidc,
    http: ureq::Agent,
    /// The discovery document and JWKS as last read, and when.
    documents: std::sync::Mutex<Option<(std::time::Instant, CoreProviderMetadata)>>,
}

/// How long the provider's documents are used before they are read again.
const DOCUMENTS_FOR: Duration = Duration::from_secs(60);

type Client = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("oidc", &self.oidc)
            .finish_non_exhaustive()
    }
}

/// The ID token's claims besides the standard ones: the groups claim is
/// among them.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Extra {
    #[serde(flatten)]
    claims: serde_json::Map<String, serde_json::Value>,
}

impl AdditionalClaims for Extra {}

type ProviderIdToken =
    IdToken<Extra, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;

/// `openidconnect`'s requests over `ureq`: no redirects followed (a
/// redirect could send a request where the provider did not mean), a
/// deadline, and a bound on what is read.
struct Http<'a>(&'a ureq::Agent);

impl SyncHttpClient for Http<'_> {
    type Error = ureq::Error;

    fn call(
        &self,
        request: openidconnect::HttpRequest,
    ) -> Result<openidconnect::HttpResponse, Self::Error> {
        let response = self.0.run(request)?;
        let (parts, body) = response.into_parts();
        let bytes = body
            .into_with_config()
            .limit(MAX_DOCUMENT_BYTES)
            .read_to_vec()?;
        Ok(openidconnect::http::Response::from_parts(parts, bytes))
    }
}

/// A sign-in in progress: what the callback checks.
struct Flow {
    state: String,
    nonce: String,
    verifier: String,
}

impl Flow {
    /// As the cookie holds it: three URL-safe base64 values.
    fn cookie(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{}.{}.{}", self.state, self.nonce, self.verifier))
    }

    fn from_cookie(text: &str) -> Option<Self> {
        let mut parts = text.split('.');
        let (state, nonce, verifier) = (parts.next()?, parts.next()?, parts.next()?);
        let plain = |part: &str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        (parts.next().is_none() && plain(state) && plain(nonce) && plain(verifier)).then(|| Flow {
            state: state.to_owned(),
            nonce: nonce.to_owned(),
            verifier: verifier.to_owned(),
        })
    }
}

/// Who signed in, from a verified ID token.
struct Identity {
    subject: String,
    email: Option<String>,
    groups: Vec<String>,
    expires_ms: u64,
}

/// Why a sign-in through the provider was refused, in words for the page.
struct Refused(StatusCode, String);

impl Provider {
    pub fn new(oidc: Oidc) -> Self {
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Self {
            oidc,
            http,
            documents: std::sync::Mutex::new(None),
        }
    }

    /// The button's words.
    pub fn name(&self) -> &str {
        &self.oidc.config.name
    }

    /// A client of the provider: its documents as kept, or read now if
    /// they are older than [`DOCUMENTS_FOR`] or `fresh` says so. The second
    /// value says whether they were read now.
    fn client(&self, fresh: bool) -> Result<(Client, bool), Refused> {
        let unreachable = |why: String| {
            Refused(
                StatusCode::BAD_GATEWAY,
                format!(
                    "The identity provider could not be reached or did not answer as one \
                     ({why}). Try again, or sign in with an admin token."
                ),
            )
        };
        let config = &self.oidc.config;
        let issuer =
            IssuerUrl::new(config.issuer.clone()).map_err(|e| unreachable(e.to_string()))?;
        let kept = self
            .documents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .filter(|(at, _)| !fresh && at.elapsed() < DOCUMENTS_FOR);
        let (metadata, read_now) = match kept {
            Some((_, metadata)) => (metadata, false),
            None => {
                let metadata = CoreProviderMetadata::discover(&issuer, &Http(&self.http))
                    .map_err(|e| unreachable(chain(&e)))?;
                *self
                    .documents
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((std::time::Instant::now(), metadata.clone()));
                (metadata, true)
            }
        };
        let redirect = RedirectUrl::new(config.redirect_url.clone())
            .map_err(|e| unreachable(e.to_string()))?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(config.client_id.clone()),
            Some(ClientSecret::new(self.oidc.client_secret.to_string())),
        )
        .set_redirect_uri(redirect);
        Ok((client, read_now))
    }

    /// Starts a sign-in: where to send the browser, and the flow to keep.
    fn begin(&self) -> Result<(String, Flow), Refused> {
        let (client, _) = self.client(false)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client.authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in &self.oidc.config.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        Ok((
            url.to_string(),
            Flow {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                verifier: verifier.secret().clone(),
            },
        ))
    }

    /// Finishes a sign-in: the code exchanged (with the PKCE verifier),
    /// the ID token verified (with the nonce).
    fn finish(&self, code: String, flow: &Flow) -> Result<Identity, Refused> {
        let (client, read_now) = self.client(false)?;
        let refused = |why: String| {
            Refused(
                StatusCode::UNAUTHORIZED,
                format!("The identity provider's answer was refused: {why}. Sign in again."),
            )
        };
        let response = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| refused(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(flow.verifier.clone()))
            .request(&Http(&self.http))
            .map_err(|e| refused(format!("the code was not accepted ({})", chain(&e))))?;
        use openidconnect::TokenResponse as _;
        let raw = response
            .id_token()
            .ok_or_else(|| refused("it holds no ID token".into()))?
            .to_string();
        let token: ProviderIdToken = raw
            .parse()
            .map_err(|_| refused("its ID token is malformed".into()))?;
        let nonce = Nonce::new(flow.nonce.clone());
        let verified = token.claims(&client.id_token_verifier(), &nonce);
        // Kept documents may predate a rotation of the provider's keys:
        // read them again, once, before refusing.
        let fresh;
        let verified = match verified {
            Err(_) if !read_now => {
                fresh = self.client(true)?.0;
                token.claims(&fresh.id_token_verifier(), &nonce)
            }
            verified => verified,
        };
        let claims = verified
            .map_err(|e| refused(format!("its ID token did not verify ({})", chain(&e))))?;
        let groups = match claims
            .additional_claims()
            .claims
            .get(&self.oidc.config.claim)
        {
            Some(serde_json::Value::Array(groups)) => groups
                .iter()
                .filter_map(|group| group.as_str().map(str::to_owned))
                .collect(),
            Some(serde_json::Value::String(group)) => vec![group.clone()],
            _ => Vec::new(),
        };
        Ok(Identity {
            subject: claims.subject().to_string(),
            email: claims.email().map(|email| email.to_string()),
            groups,
            expires_ms: u64::try_from(claims.expiration().timestamp_millis()).unwrap_or(0),
        })
    }

    /// The role `groups` hold, if any.
    fn role(&self, groups: &[String]) -> Option<Role> {
        Role::strongest(
            self.oidc
                .roles
                .iter()
                .filter(|(group, _)| groups.contains(group))
                .map(|(_, role)| role),
        )
    }
}

/// An error and its causes, on one line and printable.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        source = cause.source();
    }
    keyscope_store::printable(&text)
}

/// `GET /sign-in/oidc`: sends the browser to the provider.
pub(super) async fn start(State(console): State<Console>) -> Response {
    let Some(provider) = console.oidc.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let begun = tokio::task::spawn_blocking(move || provider.begin()).await;
    let (url, flow) = match begun {
        Ok(Ok(begun)) => begun,
        Ok(Err(Refused(status, why))) => {
            tracing::warn!(why = %why, "console: sign-in through the identity provider could not start");
            return sign_in_page(&console, status, Some(error_box(&why)));
        }
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let mut response = Redirect::to(&url).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            &console,
            FLOW_COOKIE,
            FLOW_PATH,
            Some(&flow.cookie()),
            // Lax: the provider's redirect back is a cross-site navigation.
            "Lax; Max-Age=600",
        ),
    );
    response
}

#[derive(Deserialize)]
pub(super) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /sign-in/oidc/callback`: the provider's answer.
pub(super) async fn callback(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(callback): Query<Callback>,
) -> Response {
    let mut response = match finish(&console, &headers, callback).await {
        Ok(response) => response,
        Err(Refused(status, why)) => {
            tracing::warn!(why = %why, "console: sign-in through the identity provider refused");
            sign_in_page(&console, status, Some(error_box(&why)))
        }
    };
    // The flow is over, whatever its outcome.
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&console, FLOW_COOKIE, FLOW_PATH, None, "Lax"),
    );
    response
}

async fn finish(
    console: &Console,
    headers: &HeaderMap,
    callback: Callback,
) -> Result<Response, Refused> {
    let provider = console
        .oidc
        .clone()
        .ok_or_else(|| Refused(StatusCode::NOT_FOUND, "There is no such page.".into()))?;
    // Nothing of the callback is believed, its error included, unless it
    // answers the flow this browser started.
    let flow = cookie(headers, FLOW_COOKIE).and_then(Flow::from_cookie);
    let matches = match (&flow, &callback.state) {
        (Some(flow), Some(state)) => bool::from(flow.state.as_bytes().ct_eq(state.as_bytes())),
        _ => false,
    };
    let not_ours = || {
        Refused(
            StatusCode::FORBIDDEN,
            "This sign-in did not start in this browser, or was already used (its state does \
             not match). Sign in again."
                .into(),
        )
    };
    let (Some(flow), true) = (flow, matches) else {
        return Err(not_ours());
    };
    if let Some(error) = &callback.error {
        // Only an error code of the protocol's shape is shown; its
        // description, free text from the URL, never is.
        let code = Some(error.as_str())
            .filter(|code| {
                !code.is_empty()
                    && code.len() <= 40
                    && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            })
            .unwrap_or("an error");
        return Err(Refused(
            StatusCode::UNAUTHORIZED,
            format!("The identity provider did not sign you in ({code}). Sign in again."),
        ));
    }
    let Some(code) = callback.code else {
        return Err(not_ours());
    };
    let identity = {
        let provider = provider.clone();
        tokio::task::spawn_blocking(move || provider.finish(code, &flow))
            .await
            .map_err(|_| {
                Refused(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The sign-in failed. Try again.".into(),
                )
            })??
    };
    let who = match &identity.email {
        Some(email) => format!("{} ({email})", identity.subject),
        None => identity.subject.clone(),
    };
    let who = keyscope_store::printable(&who);
    let Some(role) = provider.role(&identity.groups) else {
        return Err(Refused(
            StatusCode::FORBIDDEN,
            format!(
                "You signed in at the identity provider as {who}, but none of your groups holds \
                 a role in this console, so you cannot use it. Ask a keyscope admin to map one \
                 of your groups to a role."
            ),
        ));
    };
    let now = now_ms();
    if identity.expires_ms <= now {
        return Err(Refused(
            StatusCode::UNAUTHORIZED,
            "The identity provider's ID token has already expired. Sign in again.".into(),
        ));
    }
    let actor = Actor {
        name: format!("oidc:{who}"),
        role,
    };
    // (The browser's Strict session cookie, if it holds one, is not sent
    // on this cross-site arrival: an older session ends idle or at sign-out.)
    let id = super::open_session(console, headers, &actor, None, Some(identity.expires_ms))
        .await
        .map_err(|error| Refused(error.status, error.message))?;
    tracing::info!(actor = %actor.name, role = %actor.role, "console: signed in through the identity provider");
    // A page that moves on by itself rather than a redirect: the browser
    // arrived here from the provider's site, and a SameSite=Strict cookie
    // is not sent on a redirect of that navigation; it is on the page's own.
    let page = maud::html! {
        (maud::DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content="0;url=/";
                title { "Signed in · keyscope" }
                link rel="stylesheet" href="/assets/console.css";
            }
            body { main { p { "You are signed in as " (who) ". " a href="/" { "Continue to the console" } } } }
        }
    };
    let mut response = page.into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(console, SESSION_COOKIE, "/", Some(&id), "Strict"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_cookie_holds_three_plain_values_or_nothing() {
        let flow = Flow {
            state: "s-1_x".into(),
            nonce: "n".into(),
            verifier: "v".into(),
        };
        let back = Flow::from_cookie(&flow.cookie()).unwrap();
        assert_eq!(
            (back.state, back.nonce, back.verifier),
            ("s-1_x".into(), "n".into(), "v".into())
        );
        for bad in ["", "a.b", "a.b.c.d", "a..c", "a.b.c;", "a.b.<c>"] {
            assert!(Flow::from_cookie(bad).is_none(), "{bad}");
        }
    }
}
