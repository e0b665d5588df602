//! Who may poll a control plane for bundles.
//!
//! Each gateway has a fleet token of its own (`keyscope fleet token create
//! --gateway NAME`), stored as its SHA-256 beside the admin tokens. Its
//! name is the gateway's id: a poll under it writes that gateway's row of
//! the fleet view and no other. The control plane reads the fleet tokens
//! with each read of its store, so a revocation takes effect at the next
//! read (`poll_ms`), and a store it cannot read keeps the tokens last read
//! serving (fail static), as it keeps the snapshot.
//!
//! The single shared token of old (`--fleet-token-file`) still opens the
//! bundles, deprecated: every gateway holds it, so any of them can poll
//! under any id not taken by a gateway of its own.
//!
//! A named token is looked up by its digest in a hash map: the digest is
//! the SHA-256 of 238 random bits, so what a lookup's timing could tell
//! is about a hash nobody can invert. The shared token, like every admin
//! token, is compared in constant time.

use std::collections::{HashMap, HashSet};
use std::sync::{PoisonError, RwLock};

use keyscope_store::{Token, TokenKind};
use serde::Serialize;
use subtle::ConstantTimeEq as _;
use tokio::sync::watch;

/// What a presented token is to the bundle endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poller {
    /// The gateway of this name, by its own live token.
    Gateway(String),
    /// Whoever holds the shared fleet token.
    Shared,
    /// The gateway of this name, by a token since revoked.
    Revoked(String),
}

/// How a gateway in the fleet view authenticated its last poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Credential {
    /// Its own fleet token.
    Named,
    /// The shared fleet token (deprecated).
    Shared,
    /// An admin token.
    Admin,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Named {
    /// Every fleet token's digest: the gateway's name, and whether the
    /// token is live.
    by_digest: HashMap<[u8; 32], (String, bool)>,
    /// The names of the live tokens.
    live: HashSet<String>,
    /// The names of every token, live or revoked.
    names: HashSet<String>,
}

impl Named {
    fn add(&mut self, token: &Token) {
        let live = token.revoked_at.is_none();
        if live {
            self.live.insert(token.name.clone());
        }
        self.names.insert(token.name.clone());
        self.by_digest
            .insert(token.digest, (token.name.clone(), live));
    }
}

/// The fleet's credentials, as last read from the store.
#[derive(Debug)]
pub struct FleetCredentials {
    shared: Option<[u8; 32]>,
    named: RwLock<Named>,
    /// Bumped whenever a read changes them: a long poll waiting under a
    /// token revoked since is answered 401 at once.
    changed: watch::Sender<u64>,
}

impl FleetCredentials {
    /// Credentials with the shared token whose digest is `shared`, if any,
    /// and no named token until [`FleetCredentials::set`].
    pub fn new(shared: Option<[u8; 32]>) -> Self {
        Self {
            shared,
            named: RwLock::new(Named::default()),
            changed: watch::channel(0).0,
        }
    }

    /// A signal that the credentials changed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Replaces the named tokens with `tokens` (the fleet tokens of the
    /// store, live and revoked).
    pub fn set(&self, tokens: &[Token]) {
        let mut named = Named::default();
        for token in tokens.iter().filter(|t| t.kind == TokenKind::Fleet) {
            named.add(token);
        }
        let mut held = self.named.write().unwrap_or_else(PoisonError::into_inner);
        if *held != named {
            *held = named;
            drop(held);
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Adds the tokens among `tokens` whose digests were unknown: a token
    /// made since the last full read, which a poll presents before the
    /// refresh loop reads it. A digest already known keeps its state: only
    /// [`FleetCredentials::set`], in the order of its reads, revokes, so an
    /// older read can never bring a revoked token back.
    pub fn learn(&self, tokens: &[Token]) {
        let mut named = self.named.write().unwrap_or_else(PoisonError::into_inner);
        for token in tokens.iter().filter(|t| t.kind == TokenKind::Fleet) {
            if !named.by_digest.contains_key(&token.digest) {
                named.add(token);
            }
        }
    }

    /// Whether a shared token is configured.
    pub fn has_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Whom the token whose digest is `presented` names; `None` if it is
    /// no fleet token (it may still be an admin token).
    pub fn who(&self, presented: &[u8; 32]) -> Option<Poller> {
        if self
            .shared
            .is_some_and(|shared| bool::from(presented.ct_eq(&shared)))
        {
            return Some(Poller::Shared);
        }
        let named = self.named.read().unwrap_or_else(PoisonError::into_inner);
        named.by_digest.get(presented).map(|(name, live)| {
            if *live {
                Poller::Gateway(name.clone())
            } else {
                Poller::Revoked(name.clone())
            }
        })
    }

    /// Whether the gateway `name` has a live token of its own.
    pub fn has_live(&self, name: &str) -> bool {
        self.named
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .live
            .contains(name)
    }

    /// Whether the gateway `name` has, or had, a token of its own: its ids
    /// are reserved to it, even once revoked, so that no other credential
    /// can pass for a gateway cut off.
    pub fn has_token(&self, name: &str) -> bool {
        self.named
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .names
            .contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, digest: u8, revoked: bool) -> Token {
        Token {
            id: u64::from(digest),
            kind: TokenKind::Fleet,
            name: name.to_owned(),
            created_at: "then".to_owned(),
            revoked_at: revoked.then(|| "later".to_owned()),
            role: None,
            digest: [digest; 32],
        }
    }

    #[test]
    fn a_token_names_its_gateway_until_it_is_revoked() {
        let credentials = FleetCredentials::new(Some([9; 32]));
        assert_eq!(credentials.who(&[9; 32]), Some(Poller::Shared));
        assert_eq!(credentials.who(&[1; 32]), None, "not read yet");
        credentials.set(&[token("edge-1", 1, false), token("edge-2", 2, true)]);
        assert_eq!(
            credentials.who(&[1; 32]),
            Some(Poller::Gateway("edge-1".into()))
        );
        assert_eq!(
            credentials.who(&[2; 32]),
            Some(Poller::Revoked("edge-2".into()))
        );
        assert_eq!(credentials.who(&[3; 32]), None);
        assert!(credentials.has_live("edge-1") && !credentials.has_live("edge-2"));
        assert!(credentials.has_token("edge-2") && !credentials.has_token("edge-3"));
        // A read after the revocation: refused from then on.
        credentials.set(&[token("edge-1", 1, true), token("edge-2", 2, true)]);
        assert_eq!(
            credentials.who(&[1; 32]),
            Some(Poller::Revoked("edge-1".into()))
        );
        assert!(!credentials.has_live("edge-1") && credentials.has_token("edge-1"));
    }

    #[test]
    fn learning_adds_new_tokens_and_never_brings_a_revoked_one_back() {
        let credentials = FleetCredentials::new(None);
        credentials.set(&[token("edge-1", 1, true)]);
        // A read older than the revocation, and a token made since.
        credentials.learn(&[token("edge-1", 1, false), token("edge-2", 2, false)]);
        assert_eq!(
            credentials.who(&[1; 32]),
            Some(Poller::Revoked("edge-1".into()))
        );
        assert_eq!(
            credentials.who(&[2; 32]),
            Some(Poller::Gateway("edge-2".into()))
        );
    }

    #[test]
    fn admin_tokens_are_never_fleet_tokens() {
        let credentials = FleetCredentials::new(None);
        let mut admin = token("alice", 4, false);
        admin.kind = TokenKind::Admin;
        credentials.set(&[admin]);
        assert_eq!(credentials.who(&[4; 32]), None);
        assert!(!credentials.has_shared());
    }
}
