//! Console sessions: what a signed-in browser holds is a random session id
//! in an HttpOnly cookie; the server keeps its SHA-256, the admin token it
//! was opened with (as the token's digest), and the session's CSRF token.
//! A session ends at sign-out, after `idle` without a request,
//! `max` after sign-in, or when its admin token is revoked.
//! Sessions live in this process: a restart signs everyone out.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use rand::distr::{Alphanumeric, SampleString as _};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use keyscope_serve::ConsoleLifetimes as Lifetimes;

/// What a request's session says about it.
#[derive(Debug, Clone)]
pub(crate) struct SignedIn {
    /// The admin token's digest: checked against the store at each request.
    pub token: [u8; 32],
    /// `admin:NAME`, the actor of this session's changes.
    pub actor: String,
    /// The token every form of this session carries.
    pub csrf: String,
}

impl SignedIn {
    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        bool::from(presented.as_bytes().ct_eq(self.csrf.as_bytes()))
    }
}

struct Session {
    signed_in: SignedIn,
    started: Instant,
    last_seen: Instant,
}

/// The open sessions, by the SHA-256 of their ids.
pub(crate) struct Sessions {
    open: Mutex<HashMap<[u8; 32], Session>>,
    lifetimes: Lifetimes,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("lifetimes", &self.lifetimes)
            .finish_non_exhaustive()
    }
}

/// The most sessions held at once; past it, the oldest ends.
const MAX_SESSIONS: usize = 10_000;

/// A new random secret: 43 characters from the CSPRNG (about 256 bits).
pub(crate) fn random_secret() -> Zeroizing<String> {
    Zeroizing::new(Alphanumeric.sample_string(&mut rand::rng(), 43))
}

fn id_digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    pub fn new(lifetimes: Lifetimes) -> Self {
        Self {
            open: Mutex::new(HashMap::new()),
            lifetimes,
        }
    }

    /// Opens a session for `token` (a digest) named `actor`; the session id
    /// for the cookie.
    pub fn start(&self, token: [u8; 32], actor: String, now: Instant) -> Zeroizing<String> {
        let id = random_secret();
        let session = Session {
            signed_in: SignedIn {
                token,
                actor,
                csrf: random_secret().to_string(),
            },
            started: now,
            last_seen: now,
        };
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() >= MAX_SESSIONS {
            open.retain(|_, session| self.alive(session, now));
        }
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open
                .iter()
                .min_by_key(|(_, session)| session.started)
                .map(|(digest, _)| *digest)
        {
            open.remove(&oldest);
        }
        open.insert(id_digest(&id), session);
        id
    }

    /// The session of cookie value `id`, if it is open; it counts as a use.
    pub fn find(&self, id: &str, now: Instant) -> Option<SignedIn> {
        let digest = id_digest(id);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let session = open.get_mut(&digest)?;
        if !self.alive(session, now) {
            open.remove(&digest);
            return None;
        }
        session.last_seen = now;
        Some(session.signed_in.clone())
    }

    /// Ends the session of cookie value `id`.
    pub fn end(&self, id: &str) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id_digest(id));
    }

    fn alive(&self, session: &Session, now: Instant) -> bool {
        now.saturating_duration_since(session.last_seen) < self.lifetimes.idle
            && now.saturating_duration_since(session.started) < self.lifetimes.max
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const LIFETIMES: Lifetimes = Lifetimes {
        idle: Duration::from_secs(60),
        max: Duration::from_secs(600),
    };

    #[test]
    fn a_session_is_found_by_its_id_only() {
        let sessions = Sessions::new(LIFETIMES);
        let now = Instant::now();
        let id = sessions.start([7; 32], "admin:alice".into(), now);
        let found = sessions.find(&id, now).unwrap();
        assert_eq!(found.actor, "admin:alice");
        assert_eq!(found.token, [7; 32]);
        assert!(found.csrf_matches(&found.csrf.clone()));
        assert!(!found.csrf_matches("not-it"));
        assert!(!found.csrf_matches(""));
        assert!(sessions.find("guess", now).is_none());
        assert!(sessions.find(&id[..42], now).is_none());
    }

    #[test]
    fn each_session_has_its_own_id_and_csrf_token() {
        let sessions = Sessions::new(LIFETIMES);
        let now = Instant::now();
        let a = sessions.start([1; 32], "admin:a".into(), now);
        let b = sessions.start([1; 32], "admin:a".into(), now);
        assert_ne!(*a, *b);
        let (a, b) = (
            sessions.find(&a, now).unwrap(),
            sessions.find(&b, now).unwrap(),
        );
        assert_ne!(a.csrf, b.csrf);
        assert!(!a.csrf_matches(&b.csrf));
    }

    #[test]
    fn an_idle_session_expires_and_a_busy_one_lives_until_its_maximum() {
        let sessions = Sessions::new(LIFETIMES);
        let start = Instant::now();
        let idle = sessions.start([1; 32], "admin:a".into(), start);
        assert!(
            sessions
                .find(&idle, start + Duration::from_secs(59))
                .is_some()
        );
        // 59 s after that use, still open; 60 s after it, gone.
        assert!(
            sessions
                .find(&idle, start + Duration::from_secs(118))
                .is_some()
        );
        assert!(
            sessions
                .find(&idle, start + Duration::from_secs(178))
                .is_none()
        );
        // Gone for good, even at an earlier clock.
        assert!(sessions.find(&idle, start).is_none());

        let busy = sessions.start([1; 32], "admin:a".into(), start);
        let mut at = start;
        while at + Duration::from_secs(30) < start + Duration::from_secs(600) {
            at += Duration::from_secs(30);
            assert!(sessions.find(&busy, at).is_some(), "at {at:?}");
        }
        assert!(
            sessions
                .find(&busy, start + Duration::from_secs(600))
                .is_none()
        );
    }

    #[test]
    fn sign_out_ends_one_session() {
        let sessions = Sessions::new(LIFETIMES);
        let now = Instant::now();
        let a = sessions.start([1; 32], "admin:a".into(), now);
        let b = sessions.start([1; 32], "admin:a".into(), now);
        sessions.end(&a);
        assert!(sessions.find(&a, now).is_none());
        assert!(sessions.find(&b, now).is_some());
    }

    #[test]
    fn past_the_limit_the_oldest_session_ends() {
        let sessions = Sessions::new(LIFETIMES);
        let start = Instant::now();
        let first = sessions.start([1; 32], "admin:a".into(), start);
        for n in 1..MAX_SESSIONS {
            sessions.start(
                [1; 32],
                "admin:a".into(),
                start + Duration::from_millis(n as u64),
            );
        }
        let at = start + Duration::from_secs(1);
        assert!(sessions.find(&first, at).is_some());
        sessions.start([1; 32], "admin:a".into(), at);
        assert!(sessions.find(&first, at).is_none());
    }
}
