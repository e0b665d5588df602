//! Console sessions: what a signed-in browser holds is a random session id
//! in an HttpOnly cookie. The store keeps the id's SHA-256 with the
//! session's actor, role, and the admin token it was opened with (as the
//! token's digest), so every control plane sharing the store knows the
//! session, and a restart signs nobody out. The session's CSRF token is
//! derived from its id, so it needs no keeping.
//!
//! A session ends at sign-out (everywhere), after `idle` without a request,
//! at its end (`max` after sign-in, or the identity provider's expiry if
//! sooner), or when its admin token is revoked. A gateway, which has no
//! store, keeps its sessions in memory.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use rand::distr::{Alphanumeric, SampleString as _};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use keyscope_serve::ConsoleLifetimes as Lifetimes;
use keyscope_serve::surface::{Access, Actor, Admin};
use keyscope_store::ConsoleSession;

/// What a request's session says about it.
#[derive(Debug, Clone)]
pub(crate) struct SignedIn {
    /// Who, and what they may do.
    pub actor: Actor,
    /// The admin token it was opened with, checked at each request;
    /// `None` for a session opened through the identity provider.
    pub token: Option<[u8; 32]>,
    /// The token every form of this session carries.
    pub csrf: String,
}

impl SignedIn {
    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        bool::from(presented.as_bytes().ct_eq(self.csrf.as_bytes()))
    }

    fn of(id: &str, session: ConsoleSession) -> Self {
        Self {
            actor: Actor {
                name: session.actor,
                role: session.role,
            },
            token: session.token,
            csrf: csrf_of(id),
        }
    }
}

/// The console's sessions: in the store, or on a gateway in memory.
pub(crate) struct Sessions {
    lifetimes: Lifetimes,
    /// By the SHA-256 of their ids, with their last use: a gateway's
    /// sessions; on a server with a store, each session as last read from
    /// it, which pages that change nothing use while the database is out
    /// of reach (fail static, as for admin tokens).
    in_memory: Mutex<HashMap<[u8; 32], (ConsoleSession, u64)>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("lifetimes", &self.lifetimes)
            .finish_non_exhaustive()
    }
}

/// A new random secret: 43 characters from the CSPRNG (about 256 bits).
pub(crate) fn random_secret() -> Zeroizing<String> {
    Zeroizing::new(Alphanumeric.sample_string(&mut rand::rng(), 43))
}

fn id_digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// A session's CSRF token: a digest of its id under its own label, so that
/// it reveals nothing of the id (nor of the digest the store keeps).
fn csrf_of(id: &str) -> String {
    hex::encode(Sha256::digest(format!("keyscope-console-csrf\n{id}")))
}

fn ms(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Sessions {
    pub fn new(lifetimes: Lifetimes) -> Self {
        Self {
            lifetimes,
            in_memory: Mutex::new(HashMap::new()),
        }
    }

    /// Opens a session for `actor`, opened with admin token `token` (a
    /// digest) or through the identity provider, ending at `ends_ms` at the
    /// latest; the session id for the cookie.
    pub async fn start(
        &self,
        admin: &Admin,
        actor: &Actor,
        token: Option<[u8; 32]>,
        ends_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<Zeroizing<String>, Access> {
        let id = random_secret();
        let most = now_ms.saturating_add(ms(self.lifetimes.max));
        let session = ConsoleSession {
            token,
            actor: actor.name.clone(),
            role: actor.role.clone(),
            started_ms: now_ms,
            ends_ms: ends_ms.map_or(most, |ends| ends.min(most)),
        };
        let idle = ms(self.lifetimes.idle);
        match admin
            .open_session(id_digest(&id), session.clone(), now_ms, idle)
            .await
        {
            Ok(()) => {}
            Err(Access::Gateway) => self.remember(id_digest(&id), session, now_ms),
            Err(error) => return Err(error),
        }
        Ok(id)
    }

    /// Holds `session` in memory, as of `now_ms`.
    fn remember(&self, digest: [u8; 32], session: ConsoleSession, now_ms: u64) {
        let idle = ms(self.lifetimes.idle);
        let mut open = self
            .in_memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !open.contains_key(&digest) && open.len() as u64 >= keyscope_store::MAX_SESSIONS {
            open.retain(|_, (session, seen)| session.open_at(*seen, now_ms, idle));
            if open.len() as u64 >= keyscope_store::MAX_SESSIONS
                && let Some(oldest) = open
                    .iter()
                    .min_by_key(|(_, (session, _))| session.started_ms)
                    .map(|(digest, _)| *digest)
            {
                open.remove(&oldest);
            }
        }
        open.insert(digest, (session, now_ms));
    }

    /// The session held in memory under `digest`, if it is alive; it
    /// counts as a use.
    fn recall(&self, digest: &[u8; 32], now_ms: u64) -> Option<ConsoleSession> {
        let idle = ms(self.lifetimes.idle);
        let mut open = self
            .in_memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match open.get_mut(digest) {
            Some((session, seen)) if session.open_at(*seen, now_ms, idle) => {
                *seen = now_ms;
                Some(session.clone())
            }
            Some(_) => {
                open.remove(digest);
                None
            }
            None => None,
        }
    }

    /// The session of cookie value `id`, if it is open; it counts as a
    /// use. While the database is out of reach, a request that changes
    /// nothing (`read_only`) is checked against the session as last read.
    pub async fn find(
        &self,
        admin: &Admin,
        id: &str,
        now_ms: u64,
        read_only: bool,
    ) -> Result<Option<SignedIn>, Access> {
        let idle = ms(self.lifetimes.idle);
        let digest = id_digest(id);
        let found = match admin.session(digest, now_ms, idle).await {
            Ok(Some(session)) => {
                self.remember(digest, session.clone(), now_ms);
                Some(session)
            }
            Ok(None) => {
                self.forget(&digest);
                None
            }
            Err(Access::Gateway) => self.recall(&digest, now_ms),
            Err(Access::Store(keyscope_store::StoreError::Unavailable { .. })) if read_only => {
                self.recall(&digest, now_ms)
            }
            Err(error) => return Err(error),
        };
        Ok(found.map(|session| SignedIn::of(id, session)))
    }

    fn forget(&self, digest: &[u8; 32]) {
        self.in_memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(digest);
    }

    /// Ends the session of cookie value `id`, everywhere.
    pub async fn end(&self, admin: &Admin, id: &str) -> Result<(), Access> {
        let digest = id_digest(id);
        self.forget(&digest);
        match admin.end_session(digest).await {
            Err(Access::Gateway) => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csrf_token_is_the_sessions_own_and_reveals_nothing_of_its_id() {
        let (a, b) = (random_secret(), random_secret());
        assert_ne!(csrf_of(&a), csrf_of(&b));
        assert_eq!(csrf_of(&a), csrf_of(&a));
        assert!(!csrf_of(&a).contains(a.as_str()));
        assert_ne!(csrf_of(&a), hex::encode(id_digest(&a)));
    }

    #[test]
    fn a_session_is_alive_until_idle_or_its_end() {
        let session = ConsoleSession {
            token: None,
            actor: "admin:a".into(),
            role: keyscope_store::Role::Admin,
            started_ms: 1_000,
            ends_ms: 10_000,
        };
        assert!(session.open_at(1_000, 1_500, 1_000));
        assert!(!session.open_at(1_000, 2_000, 1_000));
        assert!(session.open_at(9_000, 9_999, 1_000));
        assert!(!session.open_at(9_900, 10_000, 1_000));
    }
}
