//! Replay cache bounded by time, not by count, and the byte encoding of its on-disk journal.
//! Pure: `now` is passed in; file I/O lives in [`crate::state`].
//!
//! The cache keeps each authenticated packet's identity until `timestamp + max_age`: after that
//! the freshness check refuses the packet anyway, so remembering it longer buys nothing. Memory
//! is therefore bounded by the knock rate × `max_age`, and an attacker cannot evict entries by
//! flooding (only authenticated packets are inserted).
//!
//! # Journal encoding (docs/PROTOCOL.md, "Replay journal")
//!
//! ```text
//! header  (8):  "NFKR" | format version u16 BE (= 1) | reserved u16 (= 0)
//! record (32):  key (16) | expires_at u64 BE | first 8 bytes of SHA-256(key ‖ expires_at BE)
//! ```
//!
//! Records are only ever appended, each batch with one `write(2)`. A crash can leave the last
//! record short or garbled; [`decode`] drops it and says so. A bad record anywhere else means
//! the file was damaged by something other than a torn append, and the whole journal is
//! refused ([`CorruptJournal`]): the caller then falls back to refusing every knock older than
//! the restart.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use sha2::{Digest, Sha256};

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

/// Authenticated packet identities, each kept until its expiry (`timestamp + max_age`).
///
/// Beside the map sits a min-heap of `(expires_at, key)` so [`prune`](Self::prune) costs
/// O(expired × log n) rather than a scan of every entry: cheap enough to call every second
/// with 100 000 live entries.
#[derive(Debug, Default, Clone)]
pub struct ReplayCache {
    entries: HashMap<ReplayKey, u64>,
    /// Every expiry ever set for a live key. An entry whose expiry was later raised leaves a
    /// stale heap item behind; `prune` skips it (its time differs from the map's).
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
                self.by_expiry.push(Reverse((expires_at, key)));
            }
            None => {
                self.entries.insert(key, expires_at);
                self.by_expiry.push(Reverse((expires_at, key)));
            }
        }
    }

    /// Forget everything that expired before `now`.
    pub fn prune(&mut self, now: u64) {
        while let Some(Reverse((exp, key))) = self.by_expiry.peek().copied() {
            if exp >= now {
                break;
            }
            self.by_expiry.pop();
            // Remove only if this heap item is the key's current expiry, not a stale one.
            if self.entries.get(&key) == Some(&exp) {
                self.entries.remove(&key);
            }
        }
        // Stale items can only pile up when keys are re-inserted with later expiries, which
        // the daemon never does for a replayed packet; still, keep the heap bounded.
        if self.by_expiry.len() > 2 * self.entries.len() + 1024 {
            self.by_expiry = self
                .entries
                .iter()
                .map(|(k, &e)| Reverse((e, *k)))
                .collect();
        }
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
}

/// First bytes of every journal file.
pub const JOURNAL_MAGIC: [u8; 4] = *b"NFKR";
/// The journal format this code writes and reads.
pub const JOURNAL_VERSION: u16 = 1;
/// Length of the journal header.
pub const HEADER_LEN: usize = 8;
/// Length of one journal record.
pub const RECORD_LEN: usize = 32;

const REC_KEY: usize = 0;
const REC_EXPIRES: usize = REC_KEY + KEY_LEN;
const REC_CHECK: usize = REC_EXPIRES + 8;
const CHECK_LEN: usize = 8;
const _: () = assert!(REC_CHECK + CHECK_LEN == RECORD_LEN);

/// Why a journal was refused. `Display` is the reason the daemon logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CorruptJournal {
    #[error("file is {len} bytes, shorter than the {HEADER_LEN}-byte header")]
    Short { len: usize },
    #[error("header does not start with \"NFKR\"")]
    Magic,
    #[error(
        "unsupported journal format version {0} (this nfknock reads version {JOURNAL_VERSION})"
    )]
    Version(u16),
    #[error("reserved header bytes are not zero")]
    Reserved,
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
}

/// The journal file header.
pub fn encode_header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&JOURNAL_MAGIC);
    h[4..6].copy_from_slice(&JOURNAL_VERSION.to_be_bytes());
    // h[6..8]: reserved, zero.
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
pub fn encode_journal<'a>(entries: impl IntoIterator<Item = (&'a ReplayKey, u64)>) -> Vec<u8> {
    let mut out = encode_header().to_vec();
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

/// Decode a whole journal file, keeping the records live at `now`.
///
/// Never panics; allocates at most one entry per complete record in `bytes`.
pub fn decode(bytes: &[u8], now: u64) -> Result<Decoded, CorruptJournal> {
    let (header, body) = bytes
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(CorruptJournal::Short { len: bytes.len() })?;
    if header[..4] != JOURNAL_MAGIC {
        return Err(CorruptJournal::Magic);
    }
    let version = u16::from_be_bytes([header[4], header[5]]);
    if version != JOURNAL_VERSION {
        return Err(CorruptJournal::Version(version));
    }
    if header[6..] != [0, 0] {
        return Err(CorruptJournal::Reserved);
    }

    let records = body.chunks_exact(RECORD_LEN);
    let partial = !records.remainder().is_empty();
    let count = records.len();
    let mut out = Decoded {
        entries: Vec::with_capacity(count),
        torn_tail: partial,
        expired: 0,
    };
    for (index, rec) in records.enumerate() {
        let Some((key, expires_at)) = decode_record(rec) else {
            // A garbled final record is a torn append (e.g. the file grew but the data block
            // never reached the disk); anywhere else it is damage.
            if index + 1 == count && !partial {
                out.torn_tail = true;
                break;
            }
            return Err(CorruptJournal::Checksum {
                index,
                offset: HEADER_LEN + index * RECORD_LEN,
            });
        };
        if expires_at >= now {
            out.entries.push((key, expires_at));
        } else {
            out.expired += 1;
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

    fn k(n: u8) -> ReplayKey {
        [n; KEY_LEN]
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
        c.prune(100);
        assert_eq!(c.len(), 1);
        c.prune(101);
        assert!(c.is_empty());
    }

    #[test]
    fn reinsert_keeps_the_later_expiry() {
        let mut c = ReplayCache::new();
        c.insert(k(1), 100);
        c.insert(k(1), 50);
        c.insert(k(1), 200);
        // The stale heap item for 100 must not remove the key when 100 passes.
        c.prune(150);
        assert!(c.contains(&k(1), 150));
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![(&k(1), 200)]);
        c.prune(201);
        assert!(c.is_empty());
    }

    #[test]
    fn prune_removes_exactly_the_expired() {
        let mut c = ReplayCache::new();
        for i in 0..=255u8 {
            c.insert(k(i), u64::from(i) * 10);
        }
        c.prune(1000);
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
            c.prune(t);
        }
        assert_eq!(c.len(), 1);
        assert!(c.by_expiry.len() <= 2 + 1024 + 1);
    }

    fn journal(entries: &[(ReplayKey, u64)]) -> Vec<u8> {
        encode_journal(entries.iter().map(|(k, e)| (k, *e)))
    }

    #[test]
    fn header_and_record_bytes() {
        assert_eq!(encode_header(), *b"NFKR\x00\x01\x00\x00");
        let r = encode_record(&k(0xAA), 0x0102_0304_0506_0708);
        assert_eq!(r[..16], [0xAA; 16]);
        assert_eq!(r[16..24], [1, 2, 3, 4, 5, 6, 7, 8]);
        let mut h = Sha256::new();
        h.update(&r[..24]);
        assert_eq!(r[24..], h.finalize()[..8]);
    }

    #[test]
    fn round_trip_drops_expired() {
        let all = vec![(k(1), 10), (k(2), 20), (k(3), 30)];
        let d = decode(&journal(&all), 20).unwrap();
        assert_eq!(
            d,
            Decoded {
                entries: vec![(k(2), 20), (k(3), 30)],
                torn_tail: false,
                expired: 1
            }
        );
        assert_eq!(decode(&encode_header(), 0).unwrap().entries, vec![]);
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
            decode(b"NFKR\0\x02\0\0", 0),
            Err(CorruptJournal::Version(2))
        );
        assert_eq!(
            decode(b"NFKR\0\x01\0\x01", 0),
            Err(CorruptJournal::Reserved)
        );
        let reason = CorruptJournal::Version(2).to_string();
        assert!(reason.contains("version 2"), "{reason}");
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
            let mut bytes = encode_header().to_vec();
            bytes.extend_from_slice(&tail);
            let _ = decode(&bytes, 0);
        }

        #[test]
        fn decode_inverts_encode(entries in proptest::collection::vec((any::<[u8; KEY_LEN]>(), any::<u64>()), 0..40), now in any::<u64>()) {
            let d = decode(&journal(&entries), now).unwrap();
            let live: Vec<_> = entries.iter().copied().filter(|&(_, e)| e >= now).collect();
            prop_assert_eq!(d.expired, entries.len() - live.len());
            prop_assert_eq!(d.entries, live);
            prop_assert!(!d.torn_tail);
        }

        #[test]
        fn cache_agrees_with_a_naive_model(ops in proptest::collection::vec((0u8..8, 0u64..100, any::<bool>()), 0..200)) {
            let mut c = ReplayCache::new();
            let mut model: HashMap<ReplayKey, u64> = HashMap::new();
            let mut now = 0;
            for (key, t, is_prune) in ops {
                if is_prune {
                    now = now.max(t);
                    c.prune(now);
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
    }
}
