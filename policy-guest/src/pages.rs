//! The key table: key records in **pages** by the leading bits of their
//! digest, and a Merkle tree over the pages (`conformance/CONTRACT.md` §4).
//!
//! A change touches the pages of the keys it names and the tree's path
//! above them, so applying it costs what it changes: a revocation at ten
//! million keys rehashes one page of about 64 records and 18 nodes.
//!
//! The pages of a loaded snapshot stay in its bytes ([`Page::Base`]): a
//! load copies no record. A page a change touches gets its own vector
//! ([`Page::Owned`]). A lookup goes straight to its page and searches it by
//! interpolation (digests are uniform), so it reads about two records where
//! a binary search over a million reads twenty.

use std::sync::Arc;

use sha2::{Digest as _, Sha256};

/// Bytes per key record.
pub const RECORD_LEN: usize = 64;
/// A key record as the snapshot holds it.
pub type Record = [u8; RECORD_LEN];
/// At most this many records per page on average: a table of `n` records
/// has the fewest pages, a power of two, that keeps `n / pages` at or
/// below it.
pub const PAGE_RECORDS: usize = 64;

/// The number of leading digest bits that pick a record's page, for a
/// table of `count` records: the smallest `b` with `count <= 64 * 2^b`.
pub fn page_bits(count: usize) -> u32 {
    let mut bits = 0;
    while PAGE_RECORDS
        .checked_shl(bits)
        .is_some_and(|cap| cap < count)
    {
        bits += 1;
    }
    bits
}

/// A record's digest's first eight bytes, big-endian.
pub fn prefix(record: &[u8]) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&record[..8]);
    u64::from_be_bytes(word)
}

/// The page of a digest whose first eight bytes are `prefix`.
pub fn page_of(prefix: u64, bits: u32) -> usize {
    if bits == 0 {
        0
    } else {
        (prefix >> (64 - bits)) as usize
    }
}

/// A page's leaf hash: SHA-256 of `0x00` and its records.
pub fn leaf_hash(records: &[Record]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update([0u8]);
    for record in records {
        hash.update(record);
    }
    hash.finalize().into()
}

/// An inner node: SHA-256 of `0x01` and its two children.
pub fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update([1u8]);
    hash.update(left);
    hash.update(right);
    hash.finalize().into()
}

#[derive(Debug, Clone)]
enum Page {
    /// Records `at .. at + len` of the base table.
    Base { at: usize, len: usize },
    /// A page changed since, shared by the table's clones: a clone of a
    /// much-changed table still copies no record.
    Owned(Arc<Vec<Record>>),
}

/// Why records do not make a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableError {
    /// Record `index` is not strictly after the one before it.
    NotAscending(usize),
    /// More records than a snapshot can hold.
    TooMany,
}

/// The key records, paged, with their tree.
#[derive(Clone)]
pub struct KeyTable {
    /// The bytes the table was built from: records `base_at ..` of them,
    /// in order (a loaded snapshot's own bytes), shared by its clones:
    /// a clone copies only the pages changed since and the tree.
    base: Arc<Vec<u8>>,
    base_at: usize,
    base_len: usize,
    bits: u32,
    pages: Vec<Page>,
    /// `levels[0]` the leaves (one per page), each next level half as long;
    /// the last is the root alone.
    levels: Vec<Vec<[u8; 32]>>,
    count: usize,
}

impl std::fmt::Debug for KeyTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyTable")
            .field("count", &self.count)
            .field("page_bits", &self.bits)
            .finish_non_exhaustive()
    }
}

/// Changes to a table, checked and hashed, not yet applied.
#[derive(Debug)]
pub struct TablePlan {
    /// Replacement pages, by page number; or a whole new table when the
    /// page count changes.
    pages: Vec<(usize, Vec<Record>)>,
    /// New nodes per level, by index, ascending.
    nodes: Vec<Vec<(usize, [u8; 32])>>,
    rebuilt: Option<Box<KeyTable>>,
    count: usize,
    root: [u8; 32],
}

impl TablePlan {
    /// The root the table will have.
    pub fn root(&self) -> [u8; 32] {
        self.root
    }

    /// How many records the table will hold.
    pub fn count(&self) -> usize {
        self.count
    }
}

impl KeyTable {
    /// A table of `records`, which must be strictly ascending by digest.
    pub fn new(records: Vec<Record>) -> Result<Self, TableError> {
        let count = records.len();
        Self::in_bytes(records.into_flattened(), 0, count)
    }

    /// A table of the `count` records at `at` in `bytes`, which must be
    /// strictly ascending by digest; it keeps `bytes` and copies nothing.
    pub fn in_bytes(bytes: Vec<u8>, at: usize, count: usize) -> Result<Self, TableError> {
        let (bits, pages, levels) = Self::build(Self::slice(&bytes, at, count))?;
        Ok(Self {
            base: Arc::new(bytes),
            base_at: at,
            base_len: count,
            bits,
            pages,
            levels,
            count,
        })
    }

    /// The root of the tree over the `count` records at `at` in `bytes`
    /// (strictly ascending by digest), without keeping them.
    pub fn root_of(bytes: &[u8], at: usize, count: usize) -> Result<[u8; 32], TableError> {
        let (_, _, levels) = Self::build(Self::slice(bytes, at, count))?;
        Ok(levels.last().map_or([0; 32], |level| level[0]))
    }

    /// The pages of `base` and the tree over them.
    #[allow(clippy::type_complexity, reason = "one private constructor's parts")]
    fn build(base: &[Record]) -> Result<(u32, Vec<Page>, Vec<Vec<[u8; 32]>>), TableError> {
        let count = base.len();
        if u32::try_from(count).is_err() {
            return Err(TableError::TooMany);
        }
        if let Some(i) = base
            .windows(2)
            .position(|pair| pair[0][..32] >= pair[1][..32])
        {
            return Err(TableError::NotAscending(i + 1));
        }
        let bits = page_bits(count);
        let mut pages = Vec::with_capacity(1 << bits);
        let mut next = 0;
        for page in 0..1usize << bits {
            let len = base[next..]
                .iter()
                .take_while(|record| page_of(prefix(&record[..]), bits) == page)
                .count();
            pages.push(Page::Base { at: next, len });
            next += len;
        }
        let leaves: Vec<[u8; 32]> = pages
            .iter()
            .map(|page| leaf_hash(Self::records_in(base, page)))
            .collect();
        let mut levels = vec![leaves];
        while let Some(below) = levels.last().filter(|level| level.len() > 1) {
            let above = below
                .chunks_exact(2)
                .map(|pair| node_hash(&pair[0], &pair[1]))
                .collect();
            levels.push(above);
        }
        Ok((bits, pages, levels))
    }

    fn slice(bytes: &[u8], at: usize, count: usize) -> &[Record] {
        bytes[at..at + count * RECORD_LEN]
            .as_chunks::<RECORD_LEN>()
            .0
    }

    fn records_in<'t>(base: &'t [Record], page: &'t Page) -> &'t [Record] {
        match page {
            Page::Base { at, len } => &base[*at..*at + *len],
            Page::Owned(records) => records,
        }
    }

    /// The records of page `page`, in order.
    fn page(&self, page: usize) -> &[Record] {
        Self::records_in(
            Self::slice(&self.base, self.base_at, self.base_len),
            &self.pages[page],
        )
    }

    /// The bytes the table was built from (a loaded snapshot's own).
    pub fn base(&self) -> &[u8] {
        &self.base
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The root of the tree over the pages.
    pub fn root(&self) -> [u8; 32] {
        self.levels.last().map_or([0; 32], |level| level[0])
    }

    /// The page bits: the table has `2^bits` pages.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Every record, in digest order.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        (0..self.pages.len()).flat_map(|page| self.page(page).iter())
    }

    /// The record with `digest`, if `matches` (a constant-time comparison
    /// of the whole digest) agrees, and how many records the search read.
    pub fn find(&self, digest: &[u8], matches: impl Fn(&Record) -> bool) -> (Option<&Record>, u32) {
        let page = self.page(page_of(prefix(digest), self.bits));
        let (at, probes) = search(page, digest, self.bits);
        (
            at.ok().map(|i| &page[i]).filter(|record| matches(record)),
            probes,
        )
    }

    /// The record with exactly this digest.
    pub fn get(&self, digest: &[u8]) -> Option<&Record> {
        self.find(digest, |record| record[..32] == digest[..32]).0
    }

    /// Checks and hashes `updates` (strictly ascending by digest): each
    /// replaces the record of its digest or is added. Returns the plan and,
    /// for each update, the record it replaces.
    pub fn plan(&self, updates: &[Record]) -> Result<(TablePlan, Vec<Option<Record>>), TableError> {
        if let Some(i) = updates
            .windows(2)
            .position(|pair| pair[0][..32] >= pair[1][..32])
        {
            return Err(TableError::NotAscending(i + 1));
        }
        let replaced: Vec<Option<Record>> = updates
            .iter()
            .map(|update| self.get(&update[..32]).copied())
            .collect();
        let added = replaced.iter().filter(|old| old.is_none()).count();
        let count = self.count + added;
        if u32::try_from(count).is_err() {
            return Err(TableError::TooMany);
        }
        if page_bits(count) != self.bits {
            // The page count doubles: every record moves, so build anew.
            let table = Self::new(merge(self.records().copied(), updates))?;
            return Ok((
                TablePlan {
                    pages: Vec::new(),
                    nodes: Vec::new(),
                    root: table.root(),
                    count,
                    rebuilt: Some(Box::new(table)),
                },
                replaced,
            ));
        }
        let mut pages: Vec<(usize, Vec<Record>)> = Vec::new();
        let mut rest = updates;
        while let Some(first) = rest.first() {
            let page = page_of(prefix(&first[..]), self.bits);
            let here = rest
                .iter()
                .take_while(|update| page_of(prefix(&update[..]), self.bits) == page)
                .count();
            let (mine, later) = rest.split_at(here);
            pages.push((page, merge(self.page(page).iter().copied(), mine)));
            rest = later;
        }
        let mut nodes: Vec<Vec<(usize, [u8; 32])>> = Vec::with_capacity(self.levels.len());
        nodes.push(
            pages
                .iter()
                .map(|(page, records)| (*page, leaf_hash(records)))
                .collect(),
        );
        for level in 1..self.levels.len() {
            let below = &nodes[level - 1];
            let mut above: Vec<(usize, [u8; 32])> = Vec::new();
            for (i, _) in below {
                let parent = i / 2;
                if above.last().is_some_and(|(last, _)| *last == parent) {
                    continue;
                }
                let child = |index: usize| {
                    below
                        .binary_search_by_key(&index, |(at, _)| *at)
                        .map_or(self.levels[level - 1][index], |found| below[found].1)
                };
                above.push((
                    parent,
                    node_hash(&child(2 * parent), &child(2 * parent + 1)),
                ));
            }
            nodes.push(above);
        }
        let root = nodes
            .last()
            .and_then(|top| top.first())
            .map_or_else(|| self.root(), |(_, hash)| *hash);
        Ok((
            TablePlan {
                pages,
                nodes,
                rebuilt: None,
                count,
                root,
            },
            replaced,
        ))
    }

    /// Applies a plan made by [`KeyTable::plan`] on this table as it is.
    pub fn commit(&mut self, plan: TablePlan) {
        if let Some(table) = plan.rebuilt {
            *self = *table;
            return;
        }
        for (page, records) in plan.pages {
            self.pages[page] = Page::Owned(Arc::new(records));
        }
        for (level, nodes) in plan.nodes.into_iter().enumerate() {
            for (i, hash) in nodes {
                self.levels[level][i] = hash;
            }
        }
        self.count = plan.count;
    }
}

/// Merges `updates` (ascending) into `records` (ascending): an update
/// replaces the record of its digest, or is inserted in order.
fn merge(records: impl Iterator<Item = Record>, updates: &[Record]) -> Vec<Record> {
    let mut merged = Vec::with_capacity(updates.len());
    let mut updates = updates.iter().peekable();
    for record in records {
        while let Some(update) = updates.next_if(|u| u[..32] < record[..32]) {
            merged.push(*update);
        }
        match updates.next_if(|u| u[..32] == record[..32]) {
            Some(update) => merged.push(*update),
            None => merged.push(record),
        }
    }
    merged.extend(updates.copied());
    merged
}

/// Where `digest` is in `page`: `Ok` at its record, `Err` where it would
/// go; and how many records the search read. An interpolation search: the
/// page's digests are uniform over its share of the prefix space, so each
/// guess is placed by the first eight bytes between the bounds known so
/// far, which takes about two reads for a page of 64. After four guesses
/// it bisects, so a skewed page costs a logarithm, never a scan.
fn search(page: &[Record], digest: &[u8], bits: u32) -> (Result<usize, usize>, u32) {
    // Prefixes as floating point: a guess needs no more than 53 bits, and a
    // float division costs a few cycles where a 128-bit one costs dozens.
    let key = prefix(digest);
    let (mut lo, mut hi) = (0usize, page.len());
    // The prefixes at lo - 1 and hi, or the page's bounds: the page's
    // first prefix is `wanted` with its low `64 - bits` bits cleared.
    let low_bits = u64::MAX.checked_shr(bits).unwrap_or(0);
    let mut below = (key & !low_bits) as f64;
    let mut above = below + low_bits as f64 + 1.0;
    let wanted = key as f64;
    let mut probes = 0;
    while lo < hi {
        let guess = if probes < 4 {
            let fraction = ((wanted - below) / (above - below).max(1.0)).clamp(0.0, 1.0);
            (lo + (fraction * (hi - lo) as f64) as usize).min(hi - 1)
        } else {
            lo + (hi - lo) / 2
        };
        probes += 1;
        // The first eight bytes as a word decide all but a tie.
        let found = prefix(&page[guess][..]);
        match found
            .cmp(&key)
            .then_with(|| page[guess][8..32].cmp(&digest[8..32]))
        {
            std::cmp::Ordering::Equal => return (Ok(guess), probes),
            std::cmp::Ordering::Less => {
                lo = guess + 1;
                below = found as f64;
            }
            std::cmp::Ordering::Greater => {
                hi = guess;
                above = found as f64;
            }
        }
    }
    (Err(lo), probes)
}

/// The first index of `0..len` that is not `below` (`below` holds for a
/// prefix of the indices), searched from `guess` outwards in doubling
/// steps and then by bisection: a good guess costs a probe or two, a bad
/// one a logarithm, never a scan. Also how many indices it read.
pub fn gallop(guess: usize, len: usize, below: impl Fn(usize) -> bool) -> (usize, u32) {
    if len == 0 {
        return (0, 0);
    }
    let guess = guess.min(len - 1);
    let mut probes = 1;
    if below(guess) {
        // The answer is in (guess, len].
        let (mut lo, mut step) = (guess + 1, 1);
        let mut hi = lo;
        while hi < len && {
            probes += 1;
            below(hi)
        } {
            lo = hi + 1;
            hi = (hi + step).min(len);
            step *= 2;
        }
        let (at, more) = bisect(lo, hi, &below);
        (at, probes + more)
    } else {
        // The answer is in [0, guess].
        let (mut hi, mut step) = (guess, 1);
        let mut lo = hi;
        while lo > 0 && {
            probes += 1;
            !below(lo - 1)
        } {
            hi = lo - 1;
            lo = lo.saturating_sub(step);
            step *= 2;
        }
        let (at, more) = bisect(lo, hi, &below);
        (at, probes + more)
    }
}

/// The first index in `lo..hi` that is not `below`, all before it being
/// below (and `hi` not below, or the end).
fn bisect(mut lo: usize, mut hi: usize, below: &impl Fn(usize) -> bool) -> (usize, u32) {
    let mut probes = 0;
    while lo < hi {
        let middle = lo + (hi - lo) / 2;
        probes += 1;
        if below(middle) {
            lo = middle + 1;
        } else {
            hi = middle;
        }
    }
    (lo, probes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seed: u64) -> Record {
        let digest: [u8; 32] = Sha256::digest(seed.to_le_bytes()).into();
        let mut record = [0u8; RECORD_LEN];
        record[..32].copy_from_slice(&digest);
        record[32..40].copy_from_slice(&seed.to_le_bytes());
        record
    }

    fn sorted(seeds: impl Iterator<Item = u64>) -> Vec<Record> {
        let mut records: Vec<Record> = seeds.map(record).collect();
        records.sort_unstable_by(|a, b| a[..32].cmp(&b[..32]));
        records
    }

    #[test]
    fn page_bits_keep_pages_at_most_64_on_average() {
        assert_eq!(page_bits(0), 0);
        assert_eq!(page_bits(64), 0);
        assert_eq!(page_bits(65), 1);
        assert_eq!(page_bits(1_000_000), 14);
        assert_eq!(page_bits(10_000_000), 18);
    }

    #[test]
    fn every_record_is_found_and_no_other() {
        for n in [0, 1, 2, 63, 64, 65, 1000, 5000] {
            let table = KeyTable::new(sorted(0..n)).unwrap();
            assert_eq!(table.len(), n as usize);
            for seed in 0..n {
                let wanted = record(seed);
                assert_eq!(table.get(&wanted[..32]), Some(&wanted), "{n}: {seed}");
            }
            assert_eq!(table.get(&record(n + 1)[..32]), None);
            assert_eq!(table.records().count(), n as usize);
        }
    }

    #[test]
    fn a_planned_change_gives_the_root_of_the_table_built_whole() {
        let mut table = KeyTable::new(sorted(0..4000)).unwrap();
        let mut all: Vec<Record> = table.records().copied().collect();
        for round in 0..40u64 {
            // Some new records, one changed.
            let mut updates = sorted(10_000 + round * 50..10_000 + round * 50 + round % 7);
            let mut changed = all[(round as usize * 37) % all.len()];
            changed[60] ^= 1;
            updates.push(changed);
            updates.sort_unstable_by(|a, b| a[..32].cmp(&b[..32]));
            let (plan, replaced) = table.plan(&updates).unwrap();
            assert_eq!(replaced.iter().filter(|r| r.is_some()).count(), 1);
            all = merge(all.into_iter(), &updates);
            let whole = KeyTable::new(all.clone()).unwrap();
            assert_eq!(plan.root(), whole.root(), "round {round}");
            table.commit(plan);
            assert_eq!(table.root(), whole.root());
            assert!(table.records().eq(whole.records()));
        }
        // The page count doubled on the way.
        assert!(table.bits() > page_bits(4000));
    }

    #[test]
    fn unordered_records_and_updates_are_refused() {
        let mut records = sorted(0..10);
        records.swap(3, 4);
        assert_eq!(
            KeyTable::new(records).unwrap_err(),
            TableError::NotAscending(4)
        );
        let table = KeyTable::new(sorted(0..10)).unwrap();
        let twice = [record(1), record(1)];
        assert_eq!(table.plan(&twice).unwrap_err(), TableError::NotAscending(1));
    }

    #[test]
    fn interpolation_reads_few_records_and_a_skewed_page_stays_logarithmic() {
        let table = KeyTable::new(sorted(0..1_000_000)).unwrap();
        let probes: u32 = (0..10_000u64)
            .map(|seed| {
                let wanted = record(seed * 97);
                table.find(&wanted[..32], |r| r[..32] == wanted[..32]).1
            })
            .sum();
        let average = f64::from(probes) / 10_000.0;
        assert!(average < 3.0, "{average} records read per lookup");
        // Every digest in one corner of the prefix space: galloping, not a scan.
        let skewed: Vec<Record> = (0..4096u64)
            .map(|i| {
                let mut r = [0u8; RECORD_LEN];
                r[..8].copy_from_slice(&i.to_be_bytes());
                r
            })
            .collect();
        let (at, probes) = search(&skewed, &skewed[4000][..32], 0);
        assert_eq!(at, Ok(4000));
        assert!(probes <= 4 + 12, "{probes}");
    }
}
