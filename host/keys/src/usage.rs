//! How often and when each key was last used, counted in memory where
//! decisions are made and written back in batches.
//!
//! A decision calls [`UsageTally::record`]: a short lock and a map update,
//! never I/O. Whoever writes the figures back (a server to its store, a
//! gateway to its control plane on its next poll) calls
//! [`UsageTally::drain`] once per interval, so a key costs at most one write
//! per interval however busy it is; a write that fails hands its figures
//! back with [`UsageTally::merge`], and none are lost.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};

/// One key's use since the last write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyUse {
    /// The key's id.
    pub key_id: u64,
    /// How many decisions presented it.
    pub uses: u64,
    /// The latest of them, in milliseconds since the Unix epoch.
    pub last_used_ms: u64,
}

/// The most entries a gateway's report carries in one poll; the rest wait
/// for the next one.
pub const MAX_REPORT: usize = 256;

/// The most uses one entry of a report may carry: 2^32, far more than one
/// gateway decides for one key between two polls (an hour at a million a
/// second is 3.6 * 10^9). A gateway that counted more, through a long
/// outage, reports the rest in its next polls.
pub const MAX_USES_PER_ENTRY: u64 = 1 << 32;

/// Why a usage report does not parse. Never carries more than a short,
/// printable excerpt of what was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("usage report entry {index} is not KEY=USES@MS: {why}")]
pub struct BadReport {
    /// Which entry, from 1.
    pub index: usize,
    /// What is wrong with it.
    pub why: &'static str,
}

impl KeyUse {
    /// Merges another count for the same key.
    fn absorb(&mut self, other: KeyUse) {
        self.uses = self.uses.saturating_add(other.uses);
        self.last_used_ms = self.last_used_ms.max(other.last_used_ms);
    }

    /// A report as a gateway sends it in its poll's `keyscope-usage`
    /// header: `KEY=USES@MS`, comma-separated.
    pub fn report(uses: &[KeyUse]) -> String {
        uses.iter()
            .map(|u| format!("{}={}@{}", u.key_id, u.uses, u.last_used_ms))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Parses a report made by [`KeyUse::report`]; at most [`MAX_REPORT`]
    /// entries.
    pub fn parse_report(text: &str) -> Result<Vec<KeyUse>, BadReport> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let mut uses = Vec::new();
        for (index, entry) in text.split(',').enumerate() {
            let bad = |why| BadReport {
                index: index + 1,
                why,
            };
            if index >= MAX_REPORT {
                return Err(bad("a report holds at most 256 entries"));
            }
            let (key, rest) = entry.trim().split_once('=').ok_or(bad("no `=`"))?;
            let (count, at) = rest.split_once('@').ok_or(bad("no `@`"))?;
            let number = |text: &str, what| text.parse::<u64>().map_err(|_| bad(what));
            let use_ = KeyUse {
                key_id: number(key, "the key id is not a whole number")?,
                uses: number(count, "the count is not a whole number")?,
                last_used_ms: number(at, "the time is not a whole number")?,
            };
            if use_.uses == 0 {
                return Err(bad("the count is 0"));
            }
            if use_.uses > MAX_USES_PER_ENTRY {
                return Err(bad("the count is over 2^32, more than a poll can report"));
            }
            uses.push(use_);
        }
        Ok(uses)
    }
}

/// Uses counted since the last [`UsageTally::drain`], by key.
#[derive(Default)]
pub struct UsageTally {
    keys: Mutex<HashMap<u64, KeyUse>>,
}

impl fmt::Debug for UsageTally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageTally")
            .field("pending_keys", &self.lock().len())
            .finish()
    }
}

impl UsageTally {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, KeyUse>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one use of `key_id` at `at_ms`.
    pub fn record(&self, key_id: u64, at_ms: u64) {
        self.merge([KeyUse {
            key_id,
            uses: 1,
            last_used_ms: at_ms,
        }]);
    }

    /// Adds counts: a failed write's, handed back, or a gateway's report.
    pub fn merge(&self, uses: impl IntoIterator<Item = KeyUse>) {
        let mut keys = self.lock();
        for use_ in uses {
            keys.entry(use_.key_id)
                .and_modify(|held| held.absorb(use_))
                .or_insert(use_);
        }
    }

    /// Adds a gateway's report, already parsed: a time later than `now_ms`
    /// counts as `now_ms`, and a key not pending yet is taken only while
    /// fewer than `max_keys` are, so that forged ids cannot grow the tally
    /// past what the store holds. Returns how many entries it dropped.
    pub fn merge_report(&self, report: &[KeyUse], now_ms: u64, max_keys: usize) -> usize {
        let mut keys = self.lock();
        let mut dropped = 0;
        for use_ in report {
            let use_ = KeyUse {
                last_used_ms: use_.last_used_ms.min(now_ms),
                ..*use_
            };
            if let Some(held) = keys.get_mut(&use_.key_id) {
                held.absorb(use_);
            } else if keys.len() < max_keys {
                keys.insert(use_.key_id, use_);
            } else {
                dropped += 1;
            }
        }
        dropped
    }

    /// Takes every count, by key id, leaving none.
    pub fn drain(&self) -> Vec<KeyUse> {
        let mut uses: Vec<KeyUse> = std::mem::take(&mut *self.lock()).into_values().collect();
        uses.sort_unstable_by_key(|u| u.key_id);
        uses
    }

    /// Takes a report's worth: at most `limit` keys (the lowest ids), each
    /// with at most [`MAX_USES_PER_ENTRY`] uses, leaving the rest.
    pub fn drain_at_most(&self, limit: usize) -> Vec<KeyUse> {
        let mut keys = self.lock();
        let mut ids: Vec<u64> = keys.keys().copied().collect();
        ids.sort_unstable();
        ids.truncate(limit);
        ids.iter()
            .filter_map(|id| {
                let held = keys.get_mut(id)?;
                if held.uses > MAX_USES_PER_ENTRY {
                    held.uses -= MAX_USES_PER_ENTRY;
                    Some(KeyUse {
                        uses: MAX_USES_PER_ENTRY,
                        ..*held
                    })
                } else {
                    keys.remove(id)
                }
            })
            .collect()
    }

    /// Whether any count waits to be written.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_aggregates_by_key_and_hands_back_what_failed() {
        let tally = UsageTally::default();
        for at in [10, 30, 20] {
            tally.record(7, at);
        }
        tally.record(3, 5);
        let drained = tally.drain();
        assert_eq!(
            drained,
            [
                KeyUse {
                    key_id: 3,
                    uses: 1,
                    last_used_ms: 5
                },
                KeyUse {
                    key_id: 7,
                    uses: 3,
                    last_used_ms: 30
                },
            ]
        );
        assert!(tally.is_empty());
        tally.record(7, 40);
        tally.merge(drained);
        let again = tally.drain();
        assert_eq!(again[1].uses, 4);
        assert_eq!(again[1].last_used_ms, 40);
    }

    #[test]
    fn reports_round_trip_and_bad_ones_are_named() {
        let uses = [
            KeyUse {
                key_id: 1,
                uses: 2,
                last_used_ms: 3,
            },
            KeyUse {
                key_id: 9,
                uses: 1,
                last_used_ms: 1_764_000_000_000,
            },
        ];
        assert_eq!(KeyUse::parse_report(&KeyUse::report(&uses)).unwrap(), uses);
        assert_eq!(KeyUse::parse_report("").unwrap(), []);
        let err = KeyUse::parse_report("1=2@3,x=1@2").unwrap_err();
        assert_eq!(err.index, 2);
        assert!(KeyUse::parse_report("1=0@3").is_err());
        assert!(KeyUse::parse_report("1=2").is_err());
        let long = vec!["1=1@1"; MAX_REPORT + 1].join(",");
        assert!(KeyUse::parse_report(&long).is_err());
    }

    #[test]
    fn draining_at_most_leaves_the_rest() {
        let tally = UsageTally::default();
        for id in 0..10 {
            tally.record(id, 1);
        }
        let first = tally.drain_at_most(4);
        assert_eq!(
            first.iter().map(|u| u.key_id).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(tally.drain().len(), 6);
    }

    #[test]
    fn a_count_beyond_one_entry_is_reported_over_several_polls() {
        let tally = UsageTally::default();
        tally.merge([KeyUse {
            key_id: 1,
            uses: MAX_USES_PER_ENTRY * 2 + 5,
            last_used_ms: 9,
        }]);
        let counts: Vec<u64> = std::iter::from_fn(|| {
            let report = tally.drain_at_most(MAX_REPORT);
            report.first().map(|entry| entry.uses)
        })
        .collect();
        assert_eq!(counts, [MAX_USES_PER_ENTRY, MAX_USES_PER_ENTRY, 5]);
        let report = KeyUse::report(&[KeyUse {
            key_id: 1,
            uses: MAX_USES_PER_ENTRY,
            last_used_ms: 9,
        }]);
        assert!(KeyUse::parse_report(&report).is_ok());
        let over = format!("1={}@9", MAX_USES_PER_ENTRY + 1);
        assert!(KeyUse::parse_report(&over).is_err());
        assert!(KeyUse::parse_report("1=9223372036854775807@1").is_err());
    }

    #[test]
    fn a_report_cannot_grow_the_tally_past_its_bound_or_date_a_use_ahead() {
        let tally = UsageTally::default();
        let forged: Vec<KeyUse> = (0..1000)
            .map(|key_id| KeyUse {
                key_id,
                uses: 1,
                last_used_ms: u64::MAX,
            })
            .collect();
        assert_eq!(tally.merge_report(&forged, 50, 10), 990);
        // A key already pending still adds up, past the bound.
        let more = [KeyUse {
            key_id: 3,
            uses: 2,
            last_used_ms: 7,
        }];
        assert_eq!(tally.merge_report(&more, 50, 10), 0);
        let drained = tally.drain();
        assert_eq!(drained.len(), 10);
        assert!(drained.iter().all(|u| u.last_used_ms == 50));
        assert_eq!(drained[3].uses, 3);
    }
}
