//! The audit trail: every change to a store, appended in the change's own
//! transaction, each entry chained to the one before it by SHA-256.
//!
//! An entry records when, who (the [actor](os_user)), what (the action and
//! its target) and the record before and after, as JSON. It never holds a
//! secret: keys and admin tokens appear as their stored records, which hold
//! no secret either.
//!
//! Entry `n` carries the hash of entry `n - 1` (`prev`; 32 zero bytes for the
//! first) and its own hash over its sequence number, `prev` and every field
//! ([`seal`]). The store also keeps the last entry's number and hash (the
//! head), so [`verify`] finds an entry that was edited (its hash no longer
//! matches), removed (a gap, or a head past the end) or moved (a `prev` that
//! no longer matches), and names the first bad one.
//!
//! What a chain in the same database cannot prove: someone able to rewrite
//! every entry after an edit, and the head, with the same hash function.
//! Copy `audit list --json` (or the head's hash) elsewhere to anchor it.

use std::fmt;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// What a change appends to the trail (time, actor and chain added by the
/// store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// What was done: `scope.create`, `key.rotate`, `policy.swap`...
    pub action: String,
    /// What it was done to: `scope:3`, `key:12`, `route:GET /x`...
    pub target: String,
    /// The record before, as JSON.
    pub before: Option<String>,
    /// The record after, as JSON.
    pub after: Option<String>,
}

impl AuditEvent {
    /// An event with no records yet.
    pub fn new(action: impl Into<String>, target: impl Into<String>) -> Self {
        Self {
            action: action.into(),
            target: target.into(),
            before: None,
            after: None,
        }
    }

    /// The record before the change.
    pub fn before(mut self, record: &impl Serialize) -> Self {
        self.before = Some(json(record));
        self
    }

    /// The record after the change.
    pub fn after(mut self, record: &impl Serialize) -> Self {
        self.after = Some(json(record));
        self
    }
}

fn json(record: &impl Serialize) -> String {
    // Serialising the store's own records cannot fail: no maps with
    // non-string keys, no custom errors.
    serde_json::to_string(record).unwrap_or_else(|e| format!("\"unserialisable: {e}\""))
}

/// A SHA-256, shown as hex.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// What the first entry follows.
    pub const GENESIS: Hash = Hash([0; 32]);

    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One entry of the trail, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Its place in the trail, from 1.
    pub seq: u64,
    /// When (RFC 3339, UTC, milliseconds).
    pub at: String,
    /// Who: `os:NAME` for the CLI, `admin:NAME` for a named admin token.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// The record before, as JSON text.
    #[serde(serialize_with = "raw_json")]
    pub before: Option<String>,
    /// The record after, as JSON text.
    #[serde(serialize_with = "raw_json")]
    pub after: Option<String>,
    /// The hash of the entry before.
    pub prev: Hash,
    /// This entry's hash.
    pub hash: Hash,
}

fn raw_json<S: serde::Serializer>(text: &Option<String>, serializer: S) -> Result<S::Ok, S::Error> {
    match text
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
    {
        None => serializer.serialize_none(),
        Some(Ok(value)) => value.serialize(serializer),
        // An entry edited into invalid JSON is still shown, as text.
        Some(Err(_)) => serializer.serialize_some(text),
    }
}

impl AuditEntry {
    /// The hash this entry's contents give.
    pub fn expected_hash(&self) -> Hash {
        digest(
            self.seq,
            &self.prev,
            &self.at,
            &self.actor,
            &self.action,
            &self.target,
            self.before.as_deref(),
            self.after.as_deref(),
        )
    }
}

/// The last entry's number and hash, kept beside the trail.
pub type Head = (u64, Hash);

/// The trail as read in one transaction.
#[derive(Debug, Clone, Default)]
pub struct AuditTrail {
    /// The entries asked for, by number.
    pub entries: Vec<AuditEntry>,
    /// The head: `None` while the trail is empty.
    pub head: Option<Head>,
}

/// Seals `event` as the entry after `head`, at `at` by `actor`.
pub fn seal(head: Option<Head>, at: String, actor: &str, event: AuditEvent) -> AuditEntry {
    let (last, prev) = head.unwrap_or((0, Hash::GENESIS));
    let mut entry = AuditEntry {
        seq: last + 1,
        at,
        actor: actor.to_owned(),
        action: event.action,
        target: event.target,
        before: event.before,
        after: event.after,
        prev,
        hash: Hash::GENESIS,
    };
    entry.hash = entry.expected_hash();
    entry
}

/// The hash of an entry: SHA-256 over a context string, the number, `prev`,
/// and each field with its length (and whether it is there), so that no two
/// different entries hash the same bytes.
#[allow(clippy::too_many_arguments)]
fn digest(
    seq: u64,
    prev: &Hash,
    at: &str,
    actor: &str,
    action: &str,
    target: &str,
    before: Option<&str>,
    after: Option<&str>,
) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(b"keyscope-audit-v1\0");
    hasher.update(seq.to_be_bytes());
    hasher.update(prev.0);
    for field in [
        Some(at),
        Some(actor),
        Some(action),
        Some(target),
        before,
        after,
    ] {
        match field {
            None => hasher.update([0]),
            Some(text) => {
                hasher.update([1]);
                hasher.update((text.len() as u64).to_be_bytes());
                hasher.update(text.as_bytes());
            }
        }
    }
    Hash(hasher.finalize().into())
}

/// Where a trail stops being trustworthy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit entry {seq}: {why}")]
pub struct ChainBreak {
    /// The first entry that is not what was written (or, for a removed
    /// entry, the number where one is missing).
    pub seq: u64,
    /// What is wrong.
    pub why: String,
}

/// Checks a whole trail, oldest first, against itself and its head. Returns
/// how many entries it holds.
pub fn verify(trail: &AuditTrail) -> Result<u64, ChainBreak> {
    let mut expected_seq = 1;
    let mut prev = Hash::GENESIS;
    for entry in &trail.entries {
        if entry.seq != expected_seq {
            return Err(ChainBreak {
                seq: expected_seq,
                why: format!(
                    "it is missing: the next entry found is {} (removed, or renumbered)",
                    entry.seq
                ),
            });
        }
        if entry.prev != prev {
            return Err(ChainBreak {
                seq: entry.seq,
                why: format!(
                    "it does not follow entry {}: it names {} as the hash before it, which is {} \
                     (entries removed or reordered)",
                    entry.seq - 1,
                    entry.prev,
                    prev
                ),
            });
        }
        let hash = entry.expected_hash();
        if entry.hash != hash {
            return Err(ChainBreak {
                seq: entry.seq,
                why: "its contents do not match its hash (edited after it was written)".to_owned(),
            });
        }
        prev = entry.hash;
        expected_seq += 1;
    }
    let count = expected_seq - 1;
    match trail.head {
        None if count == 0 => Ok(0),
        None => Err(ChainBreak {
            seq: 1,
            why: "the trail has entries but its head is gone".to_owned(),
        }),
        Some((last, _)) if last > count => Err(ChainBreak {
            seq: count + 1,
            why: format!(
                "it is missing: the head says the trail ends at entry {last} (entries removed \
                 from the end)"
            ),
        }),
        Some((last, hash)) if last != count || hash != prev => Err(ChainBreak {
            seq: count,
            why: format!(
                "the head says the last entry is {last} with hash {hash}; the trail ends at \
                 {count} with hash {prev}"
            ),
        }),
        Some(_) => Ok(count),
    }
}

/// Which entries of `entries` (a whole trail, in order) `role` may read:
/// all of them for a role over every app; for an app role, those about
/// its apps' scopes and keys, and the refused attempts on them. An
/// entry's app is read from its records: a scope's `app`; a key's
/// `scope_id`, through the scopes the trail (or else `scope_app`, the
/// store's live scopes) names. An entry whose app cannot be told is not
/// shown to an app role.
pub fn visible_to(
    role: &crate::Role,
    entries: &[AuditEntry],
    scope_app: impl Fn(u64) -> Option<String>,
) -> Vec<bool> {
    if role.apps().is_none() {
        return vec![true; entries.len()];
    }
    let record = |text: &Option<String>| -> Option<serde_json::Value> {
        text.as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
    };
    let field = |entry: &AuditEntry, name: &str| -> Option<serde_json::Value> {
        [&entry.after, &entry.before]
            .into_iter()
            .filter_map(record)
            .find_map(|value| {
                value.get(name).cloned().or_else(|| {
                    // A rotation's record holds the old and new keys.
                    value.get("old").and_then(|old| old.get(name)).cloned()
                })
            })
    };
    let mut scopes = std::collections::HashMap::<u64, String>::new();
    entries
        .iter()
        .map(|entry| {
            let app = if entry.target.starts_with("scope:") || entry.action.starts_with("refused.")
            {
                let app = field(entry, "app").and_then(|app| app.as_str().map(str::to_owned));
                if let (Some(app), Some(id)) = (&app, field(entry, "id").and_then(|id| id.as_u64()))
                {
                    scopes.insert(id, app.clone());
                }
                app
            } else if entry.target.starts_with("key:") {
                field(entry, "scope_id")
                    .and_then(|id| id.as_u64())
                    .and_then(|id| scopes.get(&id).cloned().or_else(|| scope_app(id)))
            } else {
                None
            };
            app.is_some_and(|app| role.sees(&app))
        })
        .collect()
}

/// `ms` since the Unix epoch as the trail and the store write times:
/// `2026-11-27T09:41:02.123Z`.
pub fn timestamp(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// The milliseconds since the Unix epoch that [`timestamp`] wrote as
/// `text`; `None` for any other text.
pub fn parse_timestamp(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let shape = b.len() == 24
        && [4, 7].iter().all(|&i| b[i] == b'-')
        && b[10] == b'T'
        && [13, 16].iter().all(|&i| b[i] == b':')
        && b[19] == b'.'
        && b[23] == b'Z';
    if !shape {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = text.get(range)?;
        digits
            .bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second, milli) = (
        number(11..13)?,
        number(14..16)?,
        number(17..19)?,
        number(20..23)?,
    );
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = u64::try_from(days_from_civil(year as i64, month as u32, day as u32)).ok()?;
    let ms = ((days * 86_400 + hour * 3600 + minute * 60 + second) * 1000) + milli;
    // Only what `timestamp` writes: no 31st of a 30-day month.
    (timestamp(ms) == text).then_some(ms)
}

/// Howard Hinnant's `days_from_civil`: a date to days since 1970-01-01.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = i64::from(if month > 2 { month - 3 } else { month + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to a date.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The current time in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The OS user running this process, as the CLI's actor: `os:NAME`, or
/// `os:uid=N` when the account database does not name it. Taken from the
/// process's real uid (`/proc/self`), not from `$USER`, which anyone can set.
pub fn os_user() -> String {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(uid) = std::fs::metadata("/proc/self").map(|meta| meta.uid()) else {
        return "os:unknown".to_owned();
    };
    let name = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let id = fields.nth(1)?;
                (id.parse() == Ok(uid)).then(|| name.to_owned())
            })
        });
    match name {
        Some(name) => format!("os:{name}"),
        None => format!("os:uid={uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trail(n: u64) -> AuditTrail {
        let mut entries: Vec<AuditEntry> = Vec::new();
        for i in 0..n {
            let head = entries.last().map(|e| (e.seq, e.hash));
            let event = AuditEvent::new("scope.create", format!("scope:{i}"))
                .after(&serde_json::json!({ "id": i }));
            entries.push(seal(head, timestamp(i * 1000), "os:test", event));
        }
        let head = entries.last().map(|e| (e.seq, e.hash));
        AuditTrail { entries, head }
    }

    #[test]
    fn a_timestamp_reads_back_as_the_millisecond_it_was_written_from() {
        for ms in [0, 1, 951_782_400_000, 1_796_000_000_123, 4_102_444_799_999] {
            assert_eq!(parse_timestamp(&timestamp(ms)), Some(ms), "{ms}");
        }
        assert_eq!(
            parse_timestamp("2026-11-27T09:41:02.123Z"),
            Some(1_795_772_462_123)
        );
        for bad in [
            "",
            "2026-11-27T09:41:02Z",
            "2026-11-27 09:41:02.123Z",
            "2026-02-30T09:41:02.123Z",
            "2026-13-01T09:41:02.123Z",
            "2026-11-27T24:00:00.000Z",
            "+026-11-27T09:41:02.123Z",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_untouched_trail_verifies() {
        assert_eq!(verify(&trail(0)), Ok(0));
        assert_eq!(verify(&trail(5)), Ok(5));
    }

    #[test]
    fn an_edit_a_removal_and_a_swap_are_each_named() {
        let mut edited = trail(5);
        edited.entries[2].actor = "os:mallory".to_owned();
        let err = verify(&edited).unwrap_err();
        assert_eq!(err.seq, 3, "{err}");
        assert!(err.why.contains("edited"), "{err}");

        let mut removed = trail(5);
        removed.entries.remove(1);
        assert_eq!(verify(&removed).unwrap_err().seq, 2);

        let mut tail = trail(5);
        tail.entries.pop();
        let err = verify(&tail).unwrap_err();
        assert_eq!(err.seq, 5, "{err}");

        // Two entries' contents swapped, as an SQL swap of every column but
        // the number would: the first moved one no longer follows.
        let mut swapped = trail(5);
        swapped.entries.swap(1, 3);
        swapped.entries[1].seq = 2;
        swapped.entries[3].seq = 4;
        let err = verify(&swapped).unwrap_err();
        assert_eq!(err.seq, 2, "{err}");
    }

    #[test]
    fn timestamps_are_rfc_3339() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_795_772_462_123), "2026-11-27T09:41:02.123Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
