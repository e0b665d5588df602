//! The fleet as its polls report it: each gateway's last poll, by id.
//!
//! Bounded and cheap, because every poll writes it: a poll costs O(log n)
//! under a lock that no scan holds (an id index, an age index, and an age
//! index per owner), a gateway unseen for [`GONE_AFTER_POLLS`] long-poll
//! periods is shown as gone, and one unseen for [`DROP_AFTER_POLLS`] is
//! dropped. Listing copies the entries out under the lock and builds its
//! answer outside it.
//!
//! Each row has an owner, the credential that wrote it: a gateway's own
//! token (whose ids are `NAME` and `NAME:SUFFIX`), the shared token, or an
//! admin token. A token's holder can push out only rows of its own: a
//! gateway's own token keeps at most [`MAX_IDS_PER_GATEWAY`] rows (past
//! it, its own longest unseen goes), and past [`MAX_FLEET`] rows in all,
//! the shared and admin tokens' longest unseen go first, then the
//! newcomer's owner's own.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use crate::fleet_credentials::Credential;

/// How many gateways the view remembers.
pub const MAX_FLEET: usize = 100_000;

/// How many ids one gateway's own token may keep rows under (`NAME` and
/// `NAME:SUFFIX`: a host's processes, such as nginx's workers).
pub const MAX_IDS_PER_GATEWAY: usize = 64;

/// A gateway unseen for this many long-poll periods is shown as gone.
pub const GONE_AFTER_POLLS: u32 = 3;

/// A gateway unseen for this many long-poll periods is dropped.
pub const DROP_AFTER_POLLS: u32 = 10;

/// A gateway, as its last poll described it.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    /// The version of the bundle it held.
    pub version: u64,
    /// The revision it held.
    pub revision: u64,
    /// Its snapshot's digest.
    pub snapshot: String,
    /// Its module's digest.
    pub module: String,
    /// When it polled last (ms since the Unix epoch).
    pub last_seen_ms: u64,
    /// From where.
    pub address: IpAddr,
    /// Under which credential.
    pub credential: Credential,
}

/// Who wrote a row, as the view bounds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Owner {
    /// A gateway's own token, by its name.
    Gateway(String),
    /// The shared token, or an admin token: ids of any name.
    Unnamed(Credential),
}

impl Owner {
    fn of(id: &str, credential: Credential) -> Self {
        match credential {
            Credential::Named => Self::Gateway(gateway_name(id).to_owned()),
            other => Self::Unnamed(other),
        }
    }

    fn cap(&self) -> usize {
        match self {
            Self::Gateway(_) => MAX_IDS_PER_GATEWAY,
            Self::Unnamed(_) => MAX_FLEET,
        }
    }
}

/// The gateway name an id belongs to: `NAME` of `NAME` or `NAME:SUFFIX`.
pub fn gateway_name(id: &str) -> &str {
    id.split(':').next().unwrap_or(id)
}

/// The fleet view.
#[derive(Debug)]
pub struct FleetView {
    by_id: HashMap<String, Seen>,
    /// `(last_seen_ms, id)`, oldest first.
    by_age: BTreeSet<(u64, String)>,
    /// The same, per owner.
    by_owner: HashMap<Owner, BTreeSet<(u64, String)>>,
    gone_after_ms: u64,
    drop_after_ms: u64,
}

impl FleetView {
    /// A view whose gateways are gone after [`GONE_AFTER_POLLS`] periods of
    /// `long_poll` unseen, and dropped after [`DROP_AFTER_POLLS`].
    pub fn new(long_poll: Duration) -> Self {
        let period = u64::try_from(long_poll.as_millis())
            .unwrap_or(u64::MAX)
            .max(1000);
        Self {
            by_id: HashMap::new(),
            by_age: BTreeSet::new(),
            by_owner: HashMap::new(),
            gone_after_ms: period.saturating_mul(u64::from(GONE_AFTER_POLLS)),
            drop_after_ms: period.saturating_mul(u64::from(DROP_AFTER_POLLS)),
        }
    }

    /// Notes a poll at `now_ms`: O(log n), and drops what is due.
    pub fn seen(&mut self, id: String, seen: Seen, now_ms: u64) {
        self.forget(&id);
        let owner = Owner::of(&id, seen.credential);
        let key = (seen.last_seen_ms, id.clone());
        self.by_age.insert(key.clone());
        let owned = self.by_owner.entry(owner.clone()).or_default();
        owned.insert(key);
        // The owner's cap: its own longest unseen goes.
        let over = owned.len().saturating_sub(owner.cap());
        let evicted: Vec<String> = (0..over)
            .filter_map(|_| owned.pop_first().map(|(_, id)| id))
            .collect();
        self.by_id.insert(id, seen);
        for id in evicted {
            self.forget(&id);
        }
        self.drop_due(now_ms);
        // The view's cap: the unnamed rows' longest unseen go first, then
        // the newcomer's owner's own.
        while self.by_id.len() > MAX_FLEET {
            let victim = [
                Owner::Unnamed(Credential::Shared),
                Owner::Unnamed(Credential::Admin),
                owner.clone(),
            ]
            .iter()
            .find_map(|owner| self.by_owner.get(owner)?.first().map(|(_, id)| id.clone()));
            match victim {
                Some(id) => {
                    self.forget(&id);
                }
                None => break,
            }
        }
    }

    /// Forgets a gateway; whether it was known.
    pub fn forget(&mut self, id: &str) -> bool {
        let Some(seen) = self.by_id.remove(id) else {
            return false;
        };
        let key = (seen.last_seen_ms, id.to_owned());
        self.by_age.remove(&key);
        let owner = Owner::of(id, seen.credential);
        if let Some(owned) = self.by_owner.get_mut(&owner) {
            owned.remove(&key);
            if owned.is_empty() {
                self.by_owner.remove(&owner);
            }
        }
        true
    }

    /// Drops every gateway unseen for [`DROP_AFTER_POLLS`] periods: each
    /// costs O(log n) once.
    fn drop_due(&mut self, now_ms: u64) {
        let horizon = now_ms.saturating_sub(self.drop_after_ms);
        while let Some((last_seen, id)) = self.by_age.first().cloned() {
            if last_seen >= horizon {
                break;
            }
            self.forget(&id);
        }
    }

    /// Every gateway not yet dropped at `now_ms`, by id, and whether it is
    /// gone. The caller builds its answer from the copy.
    pub fn list(&mut self, now_ms: u64) -> Vec<(String, Seen, bool)> {
        self.drop_due(now_ms);
        let gone_before = now_ms.saturating_sub(self.gone_after_ms);
        let mut listed: Vec<(String, Seen, bool)> = self
            .by_id
            .iter()
            .map(|(id, seen)| (id.clone(), seen.clone(), seen.last_seen_ms < gone_before))
            .collect();
        listed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        listed
    }

    /// How many gateways it holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(at: u64) -> Seen {
        seen_as(at, Credential::Shared)
    }

    fn seen_as(at: u64, credential: Credential) -> Seen {
        Seen {
            version: 1,
            revision: 1,
            snapshot: String::new(),
            module: String::new(),
            last_seen_ms: at,
            address: IpAddr::from([127, 0, 0, 1]),
            credential,
        }
    }

    #[test]
    fn gateways_go_then_are_dropped_and_can_be_forgotten() {
        let mut view = FleetView::new(Duration::from_secs(1));
        view.seen("a".into(), seen(10_000), 10_000);
        view.seen("b".into(), seen(12_000), 12_000);
        let listed = view.list(12_500);
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|(_, _, gone)| !gone));
        // 3 periods unseen: gone; 10: dropped.
        let listed = view.list(14_001);
        assert!(listed[0].2, "a is gone");
        assert!(!listed[1].2, "b is not");
        assert_eq!(view.list(20_001).len(), 1, "a dropped");
        // A poll brings a gateway back; a forget removes it.
        view.seen("a".into(), seen(20_002), 20_002);
        assert_eq!(view.len(), 2);
        assert!(view.forget("a"));
        assert!(!view.forget("a"));
        assert_eq!(view.list(20_003).len(), 1);
    }

    #[test]
    fn the_view_holds_at_most_its_cap_and_drops_the_longest_unseen() {
        let mut view = FleetView::new(Duration::from_secs(3600));
        for i in 0..(MAX_FLEET as u64 + 10) {
            view.seen(format!("g{i}"), seen(1_000_000 + i), 1_000_000 + i);
        }
        assert_eq!(view.len(), MAX_FLEET);
        let listed = view.list(1_000_000 + MAX_FLEET as u64 + 10);
        assert!(listed.iter().all(|(id, _, _)| id != "g0" && id != "g9"));
        assert!(listed.iter().any(|(id, _, _)| id == "g10"));
        // A repeated poll moves its gateway, and costs no new entry.
        view.seen("g10".into(), seen(9_000_000), 9_000_000);
        assert_eq!(view.len(), MAX_FLEET);
    }

    #[test]
    fn a_gateways_token_pushes_out_only_its_own_rows() {
        let mut view = FleetView::new(Duration::from_secs(3600));
        view.seen("edge-3".into(), seen_as(1_000, Credential::Named), 1_000);
        view.seen("old".into(), seen_as(1_001, Credential::Shared), 1_001);
        // A stolen token of edge-1's floods under its suffixes.
        for i in 0..10_000u64 {
            let at = 2_000 + i;
            view.seen(format!("edge-1:g{i}"), seen_as(at, Credential::Named), at);
        }
        let listed = view.list(20_000);
        let owned = listed
            .iter()
            .filter(|(id, _, _)| id.starts_with("edge-1:"))
            .count();
        assert_eq!(owned, MAX_IDS_PER_GATEWAY);
        assert!(listed.iter().any(|(id, _, _)| id == "edge-3"));
        assert!(listed.iter().any(|(id, _, _)| id == "old"));
        assert!(listed.iter().any(|(id, _, _)| id == "edge-1:g9999"));
        // A row that changes hands is counted under its new owner alone.
        view.seen("old".into(), seen_as(30_000, Credential::Named), 30_000);
        view.seen("old".into(), seen_as(30_001, Credential::Named), 30_001);
        assert_eq!(view.len(), MAX_IDS_PER_GATEWAY + 2);
        assert_eq!(view.by_owner.len(), 3);
    }
}
