//! Unit tests of `replay`.

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
