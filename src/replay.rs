//! Replay cache bounded by time, not by count, and the byte encoding of its on-disk journal.
//! Pure: the clocks are passed in; file I/O lives in [`crate::state`].
//!
//! # How long an identity is kept
//!
//! Every authenticated packet's identity is kept until `timestamp + KEEP_SECS`. `KEEP_SECS` is
//! the largest `max_age` a config may set (one hour), not the `max_age` in force: the bound is
//! fixed when the packet is recorded (it is the expiry written to the journal) and neither
//! shrinks nor grows with a later `max_age`, so raising `max_age` on a reload or a restart can
//! never make a forgotten packet fresh again (issue "security", item 6). The price is memory:
//! the knocks of the last hour rather than of the last `max_age` seconds, about 70 bytes per
//! authenticated knock (100 000 entries ≈ 7 MB); an attacker cannot grow it by flooding, only
//! authenticated packets are inserted. The alternative, keeping entries for the `max_age` in
//! force and refusing older knocks whenever it is raised, would refuse honest knocks on every
//! raise and need the history of past `max_age`s in the journal.
//!
//! # Clock steps
//!
//! Freshness is judged by the wall clock, which can step. Two rules keep a step from reopening
//! a replay window:
//!
//! - An entry is dropped only once its expiry has passed on the wall clock *and* by the
//!   monotonic clock since it was recorded. Entries are grouped in eras, one per offset
//!   between the two clocks (a new era starts when the offset changes, i.e. the wall clock
//!   stepped). After a step forward, the entries of earlier eras are pruned as if the clock had
//!   not stepped, so a step back later still finds them; after a step back, the wall clock is
//!   the later of the two for them, and rules.
//! - The cache remembers the newest timestamp it ever forgot ([`ReplayCache::refuse_before`]):
//!   a knock stamped before it might be a replay the cache can no longer recognise, and is
//!   refused. With a steady clock that bound trails the clock by `KEEP_SECS`, where the
//!   freshness check refuses anyway; it matters after the clock steps back by more than that,
//!   and it is also how a lost, corrupt or old-format journal is handled (everything stamped
//!   before start + `max_age` counts as forgotten). It is kept in the journal's header.
//!
//! # Journal encoding (docs/PROTOCOL.md, "Replay journal")
//!
//! ```text
//! header (24):  "NFKR" | format version u16 BE (= 2) | reserved u16 (= 0)
//!               | refuse_before u64 BE | first 8 bytes of SHA-256(the 16 bytes before)
//! record (32):  key (16) | expires_at u64 BE | first 8 bytes of SHA-256(key ‖ expires_at BE)
//! ```
//!
//! Records are only ever appended, each batch with one `write(2)`. A crash can leave the last
//! record short or garbled; [`decode`] drops it and says so. A bad record anywhere else means
//! the file was damaged by something other than a torn append, and the whole journal is
//! refused ([`CorruptJournal`]): the caller then falls back to refusing every knock older than
//! the restart. Format 1 (an 8-byte header, records holding `timestamp + max_age`) is still
//! read, safely: see [`decode`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use sha2::{Digest, Sha256};

/// How long every replay identity is kept: until `timestamp + KEEP_SECS`. The largest
/// `max_age` the config accepts, so no `max_age` can make a forgotten packet fresh.
pub const KEEP_SECS: u64 = crate::config::MAX_MAX_AGE;

/// A change of the offset between the wall clock and the monotonic clock up to this many
/// seconds is rounding (both are read in whole seconds, at slightly different instants), not
/// a step.
pub const STEP_TOLERANCE_SECS: u64 = 2;

/// The expiry recorded for a packet stamped `timestamp`.
pub fn expiry_of(timestamp: u64) -> u64 {
    timestamp.saturating_add(KEEP_SECS)
}

/// The timestamp an expiry was computed from (the inverse of [`expiry_of`]).
fn stamped_at(expires_at: u64) -> u64 {
    expires_at.saturating_sub(KEEP_SECS)
}

/// Length of a replay identity.
pub const KEY_LEN: usize = 16;

/// Identity of an authenticated packet: the first 128 bits of SHA-256 over its exact wire bytes
/// (both formats). 128 bits keep an accidental collision among even 2³² live entries below
/// 2⁻⁶⁴ and a forged one out of reach, at half the memory of the full digest — the cache holds
/// one per knock of the last `max_age` seconds.
pub type ReplayKey = [u8; KEY_LEN];

/// The replay identity of a packet: SHA-256 of its exact wire bytes, truncated to 128 bits.
///
/// Hashing the whole datagram (not just the nonce) makes the identity format-independent, and
/// for AES-GCM it covers the nonce and tag, so any bit-for-bit replay is caught; a changed bit
/// fails authentication instead.
pub fn key_of(packet: &[u8]) -> ReplayKey {
    key_from_digest(&Sha256::digest(packet).into())
}

/// The replay identity for a full SHA-256 digest of the wire bytes (fwknopd's replay digest).
pub fn key_from_digest(digest: &[u8; 32]) -> ReplayKey {
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&digest[..KEY_LEN]);
    key
}

/// Authenticated packet identities, each kept until its expiry (`timestamp + KEEP_SECS`), by
/// both clocks (see the module documentation).
///
/// Beside the map, each era holds a min-heap of `(expires_at, key)` so
/// [`prune`](Self::prune) costs O(expired × log n) rather than a scan of every entry: cheap
/// enough to call every second with 100 000 live entries.
/// `Default` is [`ReplayCache::new`]: empty, nothing refused.
#[derive(Debug, Clone, Default)]
pub struct ReplayCache {
    entries: HashMap<ReplayKey, u64>,
    /// The era entries are recorded in now.
    current: Era,
    /// Eras that ended with a clock step and still hold entries, oldest first.
    older: Vec<Era>,
    /// Knocks stamped before this may have been forgotten (see [`Self::refuse_before`]).
    refuse_before: u64,
}

/// Entries recorded while the wall clock ran at one offset from the monotonic clock.
#[derive(Debug, Clone, Default)]
struct Era {
    /// Wall clock − monotonic clock, seconds; `None` until the first [`ReplayCache::prune`].
    offset: Option<i128>,
    /// Every expiry set in this era for a key. An entry whose expiry was later raised leaves a
    /// stale item behind; `prune` skips it (its time differs from the map's).
    by_expiry: BinaryHeap<Reverse<(u64, ReplayKey)>>,
}

impl ReplayCache {
    /// An empty cache.
    pub fn new() -> ReplayCache {
        ReplayCache::default()
    }

    /// Is `key` recorded and not yet expired at `now`?
    pub fn contains(&self, key: &ReplayKey, now: u64) -> bool {
        self.entries.get(key).is_some_and(|&exp| exp >= now)
    }

    /// Record `key` until `expires_at` (Unix seconds). Recording a key again keeps the later
    /// of the two expiries.
    pub fn insert(&mut self, key: ReplayKey, expires_at: u64) {
        match self.entries.get_mut(&key) {
            Some(exp) if *exp >= expires_at => {}
            Some(exp) => {
                *exp = expires_at;
                self.current.by_expiry.push(Reverse((expires_at, key)));
            }
            None => {
                self.entries.insert(key, expires_at);
                self.current.by_expiry.push(Reverse((expires_at, key)));
            }
        }
    }

    /// Knocks stamped before this time may be replays this cache no longer holds (it forgot
    /// their entries, or the journal they were in was lost): they must be refused.
    pub fn refuse_before(&self) -> u64 {
        self.refuse_before
    }

    /// From now on refuse every knock stamped before `timestamp` (never lowers the bound).
    pub fn raise_refuse_before(&mut self, timestamp: u64) {
        self.refuse_before = self.refuse_before.max(timestamp);
    }

    /// Forget every entry whose expiry has passed by both clocks: the wall clock `now` and the
    /// monotonic clock `mono` (seconds since any fixed origin; it never steps).
    ///
    /// Returns the wall clock's step since the last call, in seconds (positive: forward), when
    /// the two clocks' offset moved by more than [`STEP_TOLERANCE_SECS`].
    pub fn prune(&mut self, now: u64, mono: u64) -> Option<i64> {
        let offset = i128::from(now) - i128::from(mono);
        let mut step = None;
        match self.current.offset {
            None => self.current.offset = Some(offset),
            Some(was) if (offset - was).unsigned_abs() > u128::from(STEP_TOLERANCE_SECS) => {
                step = Some(i64::try_from(offset - was).unwrap_or(i64::MAX));
                let ended = std::mem::replace(
                    &mut self.current,
                    Era {
                        offset: Some(offset),
                        by_expiry: BinaryHeap::new(),
                    },
                );
                self.older.push(ended);
            }
            Some(_) => {}
        }
        let (entries, refuse_before) = (&mut self.entries, &mut self.refuse_before);
        prune_era(&mut self.current, now, entries, refuse_before);
        for era in &mut self.older {
            // The wall clock is `lag` seconds ahead of where it was in this era: measured by
            // that era's clock (the monotonic clock plus its offset), `now` is earlier.
            let lag = era.offset.map_or(0, |was| (offset - was).max(0));
            let cutoff = now.saturating_sub(u64::try_from(lag).unwrap_or(u64::MAX));
            prune_era(era, cutoff, entries, refuse_before);
        }
        self.older.retain(|era| !era.by_expiry.is_empty());
        // Stale items can only pile up when keys are re-inserted with later expiries, which
        // the daemon never does for a replayed packet; still, keep the heaps bounded.
        let items = self.current.by_expiry.len()
            + self.older.iter().map(|e| e.by_expiry.len()).sum::<usize>();
        if items > 2 * self.entries.len() + 1024 {
            let entries = &self.entries;
            for era in std::iter::once(&mut self.current).chain(self.older.iter_mut()) {
                era.by_expiry
                    .retain(|Reverse((exp, key))| entries.get(key) == Some(exp));
            }
        }
        step
    }

    /// Number of recorded keys (expired ones included until the next `prune`).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No keys recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every recorded key and its expiry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&ReplayKey, u64)> {
        self.entries.iter().map(|(k, &v)| (k, v))
    }

    #[cfg(test)]
    fn heap_items(&self) -> usize {
        self.current.by_expiry.len() + self.older.iter().map(|e| e.by_expiry.len()).sum::<usize>()
    }
}

/// Drop `era`'s entries that expired before `cutoff`; each one forgotten raises
/// `refuse_before` past its packet's timestamp.
fn prune_era(
    era: &mut Era,
    cutoff: u64,
    entries: &mut HashMap<ReplayKey, u64>,
    refuse_before: &mut u64,
) {
    while let Some(Reverse((exp, key))) = era.by_expiry.peek().copied() {
        if exp >= cutoff {
            break;
        }
        era.by_expiry.pop();
        // Remove only if this heap item is the key's current expiry, not a stale one.
        if entries.get(&key) == Some(&exp) {
            entries.remove(&key);
            *refuse_before = (*refuse_before).max(stamped_at(exp).saturating_add(1));
        }
    }
}

/// First bytes of every journal file.
pub const JOURNAL_MAGIC: [u8; 4] = *b"NFKR";
/// The journal format this code writes. It also reads [`JOURNAL_VERSION_1`].
pub const JOURNAL_VERSION: u16 = 2;
/// The first format: an 8-byte header without `refuse_before`; records hold
/// `timestamp + max_age` (the `max_age` of the day).
pub const JOURNAL_VERSION_1: u16 = 1;
/// Length of the journal header.
pub const HEADER_LEN: usize = 24;
/// Length of a format-1 header.
pub const HEADER_LEN_V1: usize = 8;
/// Length of one journal record.
pub const RECORD_LEN: usize = 32;

const HDR_VERSION: usize = 4;
const HDR_RESERVED: usize = 6;
const HDR_REFUSE_BEFORE: usize = 8;
const HDR_CHECK: usize = 16;
const _: () = assert!(HDR_CHECK + CHECK_LEN == HEADER_LEN && HDR_REFUSE_BEFORE == HEADER_LEN_V1);

const REC_KEY: usize = 0;
const REC_EXPIRES: usize = REC_KEY + KEY_LEN;
const REC_CHECK: usize = REC_EXPIRES + 8;
const CHECK_LEN: usize = 8;
const _: () = assert!(REC_CHECK + CHECK_LEN == RECORD_LEN);

/// Why a journal was refused. `Display` is the reason the daemon logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CorruptJournal {
    #[error("file is {len} bytes, shorter than its header")]
    Short { len: usize },
    #[error("header does not start with \"NFKR\"")]
    Magic,
    #[error(
        "unsupported journal format version {0} (this nfknock reads versions {JOURNAL_VERSION_1} and {JOURNAL_VERSION})"
    )]
    Version(u16),
    #[error("reserved header bytes are not zero")]
    Reserved,
    #[error("header fails its checksum")]
    HeaderChecksum,
    #[error("record {index} (byte offset {offset}) fails its checksum and is not the last one")]
    Checksum { index: usize, offset: usize },
}

/// What [`decode`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Records still live at `now` (`expires_at >= now`), in file order. A key may appear
    /// more than once (it was appended twice); [`ReplayCache::insert`] keeps the later expiry.
    pub entries: Vec<(ReplayKey, u64)>,
    /// The file ended in a short or garbled record (a torn append), which was dropped.
    pub torn_tail: bool,
    /// Intact records that had expired at `now` and were dropped.
    pub expired: usize,
    /// Knocks stamped before this must be refused: the header's bound, raised past every
    /// record dropped as expired (those packets are forgotten now).
    pub refuse_before: u64,
    /// The file's format version: [`JOURNAL_VERSION`], or [`JOURNAL_VERSION_1`] (whose
    /// expiries [`decode`] has already converted).
    pub format_version: u16,
}

/// The journal file header.
pub fn encode_header(refuse_before: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..HDR_VERSION].copy_from_slice(&JOURNAL_MAGIC);
    h[HDR_VERSION..HDR_RESERVED].copy_from_slice(&JOURNAL_VERSION.to_be_bytes());
    // h[HDR_RESERVED..HDR_REFUSE_BEFORE]: reserved, zero.
    h[HDR_REFUSE_BEFORE..HDR_CHECK].copy_from_slice(&refuse_before.to_be_bytes());
    let check = digest8(&h[..HDR_CHECK]);
    h[HDR_CHECK..].copy_from_slice(&check);
    h
}

/// One journal record.
pub fn encode_record(key: &ReplayKey, expires_at: u64) -> [u8; RECORD_LEN] {
    let mut r = [0u8; RECORD_LEN];
    r[REC_KEY..REC_EXPIRES].copy_from_slice(key);
    r[REC_EXPIRES..REC_CHECK].copy_from_slice(&expires_at.to_be_bytes());
    r[REC_CHECK..].copy_from_slice(&checksum(key, expires_at));
    r
}

/// Header followed by one record per entry: a whole journal file, or (without the header,
/// see [`encode_records`]) one append.
pub fn encode_journal<'a>(
    refuse_before: u64,
    entries: impl IntoIterator<Item = (&'a ReplayKey, u64)>,
) -> Vec<u8> {
    let mut out = encode_header(refuse_before).to_vec();
    out.extend(encode_records(entries));
    out
}

/// The records for `entries`, back to back (what one append writes).
pub fn encode_records<'a>(entries: impl IntoIterator<Item = (&'a ReplayKey, u64)>) -> Vec<u8> {
    let entries = entries.into_iter();
    let mut out = Vec::with_capacity(entries.size_hint().0 * RECORD_LEN);
    for (k, e) in entries {
        out.extend_from_slice(&encode_record(k, e));
    }
    out
}

fn checksum(key: &ReplayKey, expires_at: u64) -> [u8; CHECK_LEN] {
    let mut h = Sha256::new();
    h.update(key);
    h.update(expires_at.to_be_bytes());
    let full = h.finalize();
    let mut out = [0u8; CHECK_LEN];
    out.copy_from_slice(&full[..CHECK_LEN]);
    out
}

fn digest8(bytes: &[u8]) -> [u8; CHECK_LEN] {
    let full = Sha256::digest(bytes);
    let mut out = [0u8; CHECK_LEN];
    out.copy_from_slice(&full[..CHECK_LEN]);
    out
}

/// A format-1 record's expiry in today's terms. Format 1 stored `timestamp + max_age` with the
/// `max_age` of the day (at least 1), so the packet was stamped at or before `expires_at − 1`
/// and today's bound for it is at most `expires_at − 1 + KEEP_SECS`: keeping it until then
/// never forgets it early.
fn upgrade_v1_expiry(expires_at: u64) -> u64 {
    expires_at.saturating_sub(1).saturating_add(KEEP_SECS)
}

/// Decode a whole journal file, keeping the records live at `now`.
///
/// A format-1 journal decodes too: its expiries are converted ([`upgrade_v1_expiry`]) and
/// `format_version` says so. It cannot say which packets its daemon had already forgotten
/// under a smaller `max_age`; the caller must refuse older knocks as after a lost journal.
///
/// Never panics; allocates at most one entry per complete record in `bytes`.
pub fn decode(bytes: &[u8], now: u64) -> Result<Decoded, CorruptJournal> {
    let short = CorruptJournal::Short { len: bytes.len() };
    let head = bytes.first_chunk::<HEADER_LEN_V1>().ok_or(short)?;
    if head[..HDR_VERSION] != JOURNAL_MAGIC {
        return Err(CorruptJournal::Magic);
    }
    let version = u16::from_be_bytes([head[HDR_VERSION], head[HDR_VERSION + 1]]);
    let (header_len, header_refuse_before) = match version {
        JOURNAL_VERSION => {
            let h = bytes.first_chunk::<HEADER_LEN>().ok_or(short)?;
            if h[HDR_CHECK..] != digest8(&h[..HDR_CHECK]) {
                return Err(CorruptJournal::HeaderChecksum);
            }
            let mut refuse = [0u8; 8];
            refuse.copy_from_slice(&h[HDR_REFUSE_BEFORE..HDR_CHECK]);
            (HEADER_LEN, u64::from_be_bytes(refuse))
        }
        JOURNAL_VERSION_1 => (HEADER_LEN_V1, 0),
        other => return Err(CorruptJournal::Version(other)),
    };
    if head[HDR_RESERVED..HDR_REFUSE_BEFORE] != [0, 0] {
        return Err(CorruptJournal::Reserved);
    }
    let body = bytes.get(header_len..).unwrap_or_default();

    let records = body.chunks_exact(RECORD_LEN);
    let partial = !records.remainder().is_empty();
    let count = records.len();
    let mut out = Decoded {
        entries: Vec::with_capacity(count),
        torn_tail: partial,
        expired: 0,
        refuse_before: header_refuse_before,
        format_version: version,
    };
    for (index, rec) in records.enumerate() {
        let Some((key, stored)) = decode_record(rec) else {
            // A garbled final record is a torn append (e.g. the file grew but the data block
            // never reached the disk); anywhere else it is damage.
            if index + 1 == count && !partial {
                out.torn_tail = true;
                break;
            }
            return Err(CorruptJournal::Checksum {
                index,
                offset: header_len + index * RECORD_LEN,
            });
        };
        let expires_at = if version == JOURNAL_VERSION_1 {
            upgrade_v1_expiry(stored)
        } else {
            stored
        };
        if expires_at >= now {
            out.entries.push((key, expires_at));
        } else {
            out.expired += 1;
            out.refuse_before = out
                .refuse_before
                .max(stamped_at(expires_at).saturating_add(1));
        }
    }
    Ok(out)
}

/// One record, if its checksum holds.
fn decode_record(rec: &[u8]) -> Option<(ReplayKey, u64)> {
    let rec: &[u8; RECORD_LEN] = rec.try_into().ok()?;
    let key: ReplayKey = rec[REC_KEY..REC_EXPIRES].try_into().ok()?;
    let expires_at = u64::from_be_bytes(rec[REC_EXPIRES..REC_CHECK].try_into().ok()?);
    (rec[REC_CHECK..] == checksum(&key, expires_at)).then_some((key, expires_at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A realistic wall-clock time.
    const T: u64 = 1_800_000_000;

    fn k(n: u8) -> ReplayKey {
        [n; KEY_LEN]
    }

    /// Prune with a clock that never stepped (wall and monotonic clock agree).
    fn prune(c: &mut ReplayCache, now: u64) {
        assert_eq!(c.prune(now, now), None);
    }

    #[test]
    fn entries_live_until_their_expiry() {
        let mut c = ReplayCache::new();
        c.insert(k(1), 100);
        assert!(c.contains(&k(1), 0));
        assert!(
            c.contains(&k(1), 100),
            "still refused at the expiry second itself"
        );
        assert!(!c.contains(&k(1), 101));
        assert!(!c.contains(&k(2), 0));
        prune(&mut c, 100);
        assert_eq!(c.len(), 1);
        prune(&mut c, 101);
        assert!(c.is_empty());
    }

    #[test]
    fn reinsert_keeps_the_later_expiry() {
        let mut c = ReplayCache::new();
        c.insert(k(1), 100);
        c.insert(k(1), 50);
        c.insert(k(1), 200);
        // The stale heap item for 100 must not remove the key when 100 passes.
        prune(&mut c, 150);
        assert!(c.contains(&k(1), 150));
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![(&k(1), 200)]);
        prune(&mut c, 201);
        assert!(c.is_empty());
    }

    #[test]
    fn prune_removes_exactly_the_expired() {
        let mut c = ReplayCache::new();
        for i in 0..=255u8 {
            c.insert(k(i), u64::from(i) * 10);
        }
        prune(&mut c, 1000);
        assert_eq!(c.len(), 256 - 100);
        assert!(c.iter().all(|(_, e)| e >= 1000));
        assert!(c.contains(&k(100), 1000));
        assert!(!c.contains(&k(99), 0), "pruned, not just expired");
    }

    #[test]
    fn heap_stays_bounded_under_repeated_refresh() {
        let mut c = ReplayCache::new();
        for t in 0..10_000u64 {
            c.insert(k(1), t + 10);
            prune(&mut c, t);
        }
        assert_eq!(c.len(), 1);
        assert!(c.heap_items() <= 2 + 1024 + 1);
    }

    /// Refreshing keys whose expiries stay in the future leaves stale heap items that no
    /// prune pops; once they outnumber twice the live entries (plus slack), they are dropped,
    /// and what remains still expires each key at its latest expiry.
    #[test]
    fn stale_heap_items_are_compacted() {
        let mut c = ReplayCache::new();
        for round in 0..600u64 {
            c.insert(k(1), T + 10_000 + round);
            c.insert(k(2), T + 20_000 + round);
        }
        assert_eq!(c.heap_items(), 1200, "one item per raised expiry");
        prune(&mut c, T);
        assert_eq!(c.len(), 2);
        assert_eq!(c.heap_items(), 2, "only the live expiries are left");
        prune(&mut c, T + 10_599);
        assert!(c.contains(&k(1), T + 10_599));
        prune(&mut c, T + 10_600);
        assert!(!c.contains(&k(1), T + 10_600) && c.contains(&k(2), T + 10_600));
        prune(&mut c, T + 20_600);
        assert!(c.is_empty());
    }

    /// Issue "security", item 6: the bound is the largest `max_age` a config may set, whatever
    /// `max_age` is in force, so no reload can make a forgotten packet fresh.
    #[test]
    fn every_entry_is_kept_for_the_largest_max_age() {
        assert_eq!(KEEP_SECS, crate::config::MAX_MAX_AGE);
        assert_eq!(expiry_of(T), T + 3600);
        assert_eq!(expiry_of(u64::MAX), u64::MAX);
        let mut c = ReplayCache::new();
        c.insert(k(1), expiry_of(T));
        prune(&mut c, T + 3600);
        assert!(c.contains(&k(1), T + 3600));
        prune(&mut c, T + 3601);
        assert!(c.is_empty());
        assert_eq!(
            c.refuse_before(),
            T + 1,
            "knocks stamped up to T are forgotten"
        );
    }

    /// Issue "security", item 6: a day's step forward and back. The entry recorded before the
    /// step outlives the excursion; entries recorded during it live until the wall clock
    /// passes their expiry again; nothing honest is refused.
    #[test]
    fn forward_then_backward_step_forgets_nothing() {
        const DAY: u64 = 86_400;
        let mut c = ReplayCache::new();
        assert_eq!(c.prune(T, 0), None);
        c.insert(k(1), expiry_of(T));
        // Forward a day, one second later.
        assert_eq!(c.prune(T + DAY, 1), Some(DAY as i64 - 1));
        assert!(
            c.contains(&k(1), 0),
            "forgotten because the wall clock jumped"
        );
        c.insert(k(2), expiry_of(T + DAY));
        for s in 2..10 {
            assert_eq!(c.prune(T + DAY + s, s), None);
        }
        // Back to the right time.
        assert_eq!(c.prune(T + 10, 10), Some(1 - DAY as i64));
        assert!(c.contains(&k(1), T + 10) && c.contains(&k(2), T + 10));
        assert_eq!(c.refuse_before(), 0);
        // An hour later by both clocks the first entry goes; the second is stamped a day
        // ahead of the corrected clock and stays until the wall clock passes its expiry.
        c.prune(T + 3601, 3601);
        assert!(!c.contains(&k(1), 0) && c.contains(&k(2), 0));
        assert_eq!(c.refuse_before(), T + 1);
        c.prune(T + DAY + 3601, DAY + 3601);
        assert!(c.is_empty());
    }

    /// After a forward step that turns out to be right, earlier entries still go once the
    /// monotonic clock says their hour is over: memory stays bounded.
    #[test]
    fn forward_step_that_stays_prunes_old_entries_by_the_monotonic_clock() {
        let mut c = ReplayCache::new();
        c.prune(T, 0);
        c.insert(k(1), expiry_of(T));
        c.prune(T + 50 * 86_400, 1);
        c.prune(T + 50 * 86_400 + 3599, 3600);
        assert!(c.contains(&k(1), 0));
        c.prune(T + 50 * 86_400 + 3601, 3602);
        assert!(c.is_empty() && c.older.is_empty());
    }

    /// Issue "security", item 6: once the clock steps back by more than `KEEP_SECS`, packets
    /// forgotten before the step are refused through `refuse_before`; later ones are not.
    #[test]
    fn backward_step_refuses_only_what_was_forgotten() {
        let mut c = ReplayCache::new();
        c.insert(k(1), expiry_of(T));
        c.insert(k(2), expiry_of(T + 100));
        c.prune(T + 3650, 3650);
        assert!(!c.contains(&k(1), 0) && c.contains(&k(2), 0));
        assert_eq!(c.refuse_before(), T + 1);
        // The wall clock is set back two hours.
        assert!(c.prune(T - 3550, 3651).is_some());
        assert_eq!(c.refuse_before(), T + 1);
        assert!(
            c.contains(&k(2), T - 3550),
            "entries of the later era stay by wall clock"
        );
    }

    #[test]
    fn refuse_before_only_rises() {
        let mut c = ReplayCache::new();
        c.raise_refuse_before(T);
        c.raise_refuse_before(T - 5);
        assert_eq!(c.refuse_before(), T);
        c.insert(k(1), expiry_of(T - 10));
        prune(&mut c, T + 3600);
        assert_eq!(
            c.refuse_before(),
            T,
            "a forgotten older packet does not lower it"
        );
    }

    fn journal(entries: &[(ReplayKey, u64)]) -> Vec<u8> {
        encode_journal(0, entries.iter().map(|(k, e)| (k, *e)))
    }

    #[test]
    fn header_and_record_bytes() {
        let h = encode_header(0x1122_3344_5566_7788);
        assert_eq!(
            h[..16],
            *b"NFKR\x00\x02\x00\x00\x11\x22\x33\x44\x55\x66\x77\x88"
        );
        assert_eq!(h[16..], Sha256::digest(&h[..16])[..8]);
        let r = encode_record(&k(0xAA), 0x0102_0304_0506_0708);
        assert_eq!(r[..16], [0xAA; 16]);
        assert_eq!(r[16..24], [1, 2, 3, 4, 5, 6, 7, 8]);
        let mut h = Sha256::new();
        h.update(&r[..24]);
        assert_eq!(r[24..], h.finalize()[..8]);
    }

    #[test]
    fn round_trip_drops_expired_and_forgets_their_packets() {
        let all = [(k(1), T + 10), (k(2), T + 20), (k(3), T + 30)];
        let d = decode(&encode_journal(7, all.iter().map(|(k, e)| (k, *e))), T + 20).unwrap();
        assert_eq!(
            d,
            Decoded {
                entries: vec![(k(2), T + 20), (k(3), T + 30)],
                torn_tail: false,
                expired: 1,
                refuse_before: T + 10 - KEEP_SECS + 1,
                format_version: JOURNAL_VERSION,
            }
        );
        let empty = decode(&encode_header(T), 0).unwrap();
        assert_eq!((empty.entries, empty.refuse_before), (vec![], T));
    }

    /// A format-1 journal still loads: every entry kept at least as long as today's bound
    /// would keep it, nothing refused that the file does not justify.
    #[test]
    fn format_1_journal_is_read_with_todays_bound() {
        let mut v1 = b"NFKR\x00\x01\x00\x00".to_vec();
        // Stamped T and T + 50 under max_age = 120; the first expired long ago.
        for (key, exp) in [(k(1), T - 5000 + 120), (k(2), T + 50 + 120)] {
            v1.extend_from_slice(&encode_record(&key, exp));
        }
        let d = decode(&v1, T).unwrap();
        assert_eq!(d.format_version, 1);
        assert_eq!(d.entries, vec![(k(2), T + 50 + 119 + KEEP_SECS)]);
        assert!(d.entries[0].1 >= expiry_of(T + 50));
        assert_eq!((d.expired, d.refuse_before), (1, T - 5000 + 120));
        // A torn final record in a format-1 file is still a torn tail.
        let cut = &v1[..v1.len() - 3];
        assert!(decode(cut, T).unwrap().torn_tail);
    }

    #[test]
    fn torn_tail_is_dropped_and_reported() {
        let full = journal(&[(k(1), 10), (k(2), 20)]);
        for cut in 1..RECORD_LEN {
            let d = decode(&full[..full.len() - cut], 0).unwrap();
            assert_eq!(d.entries, vec![(k(1), 10)], "cut {cut}");
            assert!(d.torn_tail);
        }
        // A full-length but garbled final record (file grew, data never landed): also torn.
        let mut zeroed = full.clone();
        let n = zeroed.len();
        zeroed[n - RECORD_LEN..].fill(0);
        let d = decode(&zeroed, 0).unwrap();
        assert_eq!((d.entries, d.torn_tail), (vec![(k(1), 10)], true));
    }

    #[test]
    fn damage_before_the_end_is_corruption() {
        let full = journal(&[(k(1), 10), (k(2), 20), (k(3), 30)]);
        for i in HEADER_LEN..HEADER_LEN + 2 * RECORD_LEN {
            let mut bad = full.clone();
            bad[i] ^= 0x01;
            let index = (i - HEADER_LEN) / RECORD_LEN;
            assert_eq!(
                decode(&bad, 0),
                Err(CorruptJournal::Checksum {
                    index,
                    offset: HEADER_LEN + index * RECORD_LEN
                })
            );
        }
        // A flipped last record followed by a torn partial one: the flip is not at the end.
        let mut bad = full.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        bad.extend_from_slice(&[0; 5]);
        assert_eq!(
            decode(&bad, 0),
            Err(CorruptJournal::Checksum {
                index: 2,
                offset: HEADER_LEN + 2 * RECORD_LEN
            })
        );
    }

    #[test]
    fn bad_headers_are_corruption_with_a_reason() {
        assert_eq!(decode(b"", 0), Err(CorruptJournal::Short { len: 0 }));
        assert_eq!(
            decode(b"NFKR\0\x01\0", 0),
            Err(CorruptJournal::Short { len: 7 })
        );
        assert_eq!(decode(b"NFKX\0\x01\0\0", 0), Err(CorruptJournal::Magic));
        assert_eq!(
            decode(b"NFKR\0\x03\0\0", 0),
            Err(CorruptJournal::Version(3))
        );
        assert_eq!(
            decode(b"NFKR\0\x01\0\x01", 0),
            Err(CorruptJournal::Reserved)
        );
        let header = encode_header(T);
        assert_eq!(
            decode(&header[..HEADER_LEN - 1], 0),
            Err(CorruptJournal::Short {
                len: HEADER_LEN - 1
            })
        );
        // Every bit of the header counts: a flipped `refuse_before` must not lower the bound.
        for i in HEADER_LEN_V1..HEADER_LEN {
            let mut bad = header;
            bad[i] ^= 0x04;
            assert_eq!(
                decode(&bad, 0),
                Err(CorruptJournal::HeaderChecksum),
                "byte {i}"
            );
        }
        let reason = CorruptJournal::Version(3).to_string();
        assert!(reason.contains("version 3"), "{reason}");
    }

    /// One step of the safety property below.
    #[derive(Debug, Clone)]
    enum Op {
        /// Record a packet stamped `skew` seconds from the wall clock.
        Record(i16),
        /// Time passes (`secs` on both clocks) and the cache is pruned.
        Pass(u16),
        /// The wall clock steps by `secs` (the monotonic clock does not) and the cache is pruned.
        Step(i32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<i16>().prop_map(Op::Record),
            (0u16..8000).prop_map(Op::Pass),
            (-200_000i32..200_000).prop_map(Op::Step),
        ]
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), now in any::<u64>()) {
            if let Ok(d) = decode(&bytes, now) {
                prop_assert!(d.entries.len() <= bytes.len() / RECORD_LEN);
            }
        }

        #[test]
        fn garbage_after_a_valid_header_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut bytes = encode_header(0).to_vec();
            bytes.extend_from_slice(&tail);
            let _ = decode(&bytes, 0);
        }

        #[test]
        fn decode_inverts_encode(entries in proptest::collection::vec((any::<[u8; KEY_LEN]>(), any::<u64>()), 0..40), now in any::<u64>(), refuse in any::<u64>()) {
            let bytes = encode_journal(refuse, entries.iter().map(|(k, e)| (k, *e)));
            let d = decode(&bytes, now).unwrap();
            let live: Vec<_> = entries.iter().copied().filter(|&(_, e)| e >= now).collect();
            prop_assert_eq!(d.expired, entries.len() - live.len());
            prop_assert_eq!(d.entries, live);
            prop_assert!(!d.torn_tail);
            let forgotten = entries.iter().filter(|&&(_, e)| e < now).map(|&(_, e)| stamped_at(e) + 1);
            prop_assert_eq!(d.refuse_before, forgotten.fold(refuse, u64::max));
        }

        #[test]
        fn cache_agrees_with_a_naive_model(ops in proptest::collection::vec((0u8..8, 0u64..100, any::<bool>()), 0..200)) {
            let mut c = ReplayCache::new();
            let mut model: HashMap<ReplayKey, u64> = HashMap::new();
            let mut now = 0;
            for (key, t, is_prune) in ops {
                if is_prune {
                    now = now.max(t);
                    c.prune(now, now);
                    model.retain(|_, e| *e >= now);
                } else {
                    c.insert(k(key), t);
                    let e = model.entry(k(key)).or_insert(t);
                    *e = (*e).max(t);
                }
                prop_assert_eq!(c.len(), model.len());
                for key in 0..8 {
                    prop_assert_eq!(c.contains(&k(key), now), model.get(&k(key)).is_some_and(|&e| e >= now));
                }
            }
        }

        /// Whatever the clocks do, a recorded packet is either still in the cache or stamped
        /// before `refuse_before`: it can never be accepted twice. With a clock that never
        /// steps, `refuse_before` stays `KEEP_SECS` behind, where nothing fresh is refused.
        #[test]
        fn no_clock_step_lets_a_recorded_packet_through(ops in proptest::collection::vec(op(), 0..120)) {
            let mut c = ReplayCache::new();
            let (mut wall, mut mono) = (T, 0u64);
            let mut recorded: Vec<(ReplayKey, u64)> = Vec::new();
            let mut stepped = false;
            for (n, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Record(skew) => {
                        let ts = wall.saturating_add_signed(i64::from(skew));
                        let key = key_of(&(n as u64).to_be_bytes());
                        if ts >= c.refuse_before() {
                            c.insert(key, expiry_of(ts));
                            recorded.push((key, ts));
                        }
                    }
                    Op::Pass(secs) => {
                        wall += u64::from(secs);
                        mono += u64::from(secs);
                        c.prune(wall, mono);
                    }
                    Op::Step(secs) => {
                        wall = wall.saturating_add_signed(i64::from(secs));
                        stepped |= secs != 0;
                        c.prune(wall, mono);
                    }
                }
                for (key, ts) in &recorded {
                    prop_assert!(c.contains(key, 0) || *ts < c.refuse_before(), "{ts} forgotten, refuse_before {}", c.refuse_before());
                }
                if !stepped {
                    prop_assert!(c.refuse_before() <= (wall + 1).saturating_sub(KEEP_SECS));
                }
            }
        }
    }
}
