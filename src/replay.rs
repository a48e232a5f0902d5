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
/// A format-1 journal decodes too: its expiries are converted (`upgrade_v1_expiry`) and
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
mod tests;
