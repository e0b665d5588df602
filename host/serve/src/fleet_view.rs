//! The fleet as its polls report it: each gateway's last poll, by id.
//!
//! Bounded and cheap, because every poll writes it: a poll costs O(log n)
//! under a lock that no scan holds (an id index and an age index), at most
//! [`MAX_FLEET`] ids are kept (past it, the longest unseen goes), a gateway
//! unseen for [`GONE_AFTER_POLLS`] long-poll periods is shown as gone, and
//! one unseen for [`DROP_AFTER_POLLS`] is dropped. Listing copies the
//! entries out under the lock and builds its answer outside it.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

/// How many gateways the view remembers.
pub const MAX_FLEET: usize = 100_000;

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
    pub credential: crate::fleet_credentials::Credential,
}

/// The fleet view.
#[derive(Debug)]
pub struct FleetView {
    by_id: HashMap<String, Seen>,
    /// `(last_seen_ms, id)`, oldest first.
    by_age: BTreeSet<(u64, String)>,
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
            gone_after_ms: period.saturating_mul(u64::from(GONE_AFTER_POLLS)),
            drop_after_ms: period.saturating_mul(u64::from(DROP_AFTER_POLLS)),
        }
    }

    /// Notes a poll at `now_ms`: O(log n), and drops what is due.
    pub fn seen(&mut self, id: String, seen: Seen, now_ms: u64) {
        if let Some(before) = self.by_id.get(&id) {
            self.by_age.remove(&(before.last_seen_ms, id.clone()));
        }
        self.by_age.insert((seen.last_seen_ms, id.clone()));
        self.by_id.insert(id, seen);
        self.drop_due(now_ms);
        while self.by_id.len() > MAX_FLEET {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.by_id.remove(&oldest);
        }
    }

    /// Forgets a gateway; whether it was known.
    pub fn forget(&mut self, id: &str) -> bool {
        match self.by_id.remove(id) {
            Some(seen) => {
                self.by_age.remove(&(seen.last_seen_ms, id.to_owned()));
                true
            }
            None => false,
        }
    }

    /// Drops every gateway unseen for [`DROP_AFTER_POLLS`] periods: each
    /// costs O(log n) once.
    fn drop_due(&mut self, now_ms: u64) {
        let horizon = now_ms.saturating_sub(self.drop_after_ms);
        while let Some((last_seen, _)) = self.by_age.first() {
            if *last_seen >= horizon {
                break;
            }
            if let Some((_, id)) = self.by_age.pop_first() {
                self.by_id.remove(&id);
            }
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
        Seen {
            version: 1,
            revision: 1,
            snapshot: String::new(),
            module: String::new(),
            last_seen_ms: at,
            address: IpAddr::from([127, 0, 0, 1]),
            credential: crate::fleet_credentials::Credential::Named,
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
}
