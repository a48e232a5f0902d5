//! Unit tests of `wire::native`.

use super::*;
use crate::crypto::Rng;
use proptest::prelude::*;

/// Deterministic byte stream for tests: SplitMix64.
struct TestRng(u64);
impl Rng for TestRng {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            *b = (z ^ (z >> 31)) as u8;
        }
    }
}

fn key(n: u8) -> NativeKey {
    NativeKey::derive(&[n; 32])
}

fn tcp(port: u16) -> Access {
    Access::new(Proto::Tcp, port).unwrap()
}

fn udp(port: u16) -> Access {
    Access::new(Proto::Udp, port).unwrap()
}

fn req(allow_ip: Option<IpAddr>, access: Vec<Access>) -> Plaintext {
    Plaintext {
        timestamp: 1_760_000_000,
        timeout: 300,
        allow_ip,
        access,
    }
}

fn round_trip(r: &Plaintext) {
    let k = key(1);
    let p = seal(&k, r, &mut TestRng(9)).unwrap();
    assert_eq!(p.len(), PACKET_LEN);
    assert_eq!(p[0], VERSION);
    assert_eq!(hint_of(&p).unwrap(), hint(&k, r.timestamp / EPOCH_SECS));
    assert_eq!(&open(&k, &p).unwrap(), r);
}

#[test]
fn round_trips_every_family_and_access_count() {
    round_trip(&req(None, vec![tcp(22)]));
    round_trip(&req(Some("192.0.2.7".parse().unwrap()), vec![udp(53)]));
    round_trip(&req(
        Some("2001:db8::1".parse().unwrap()),
        vec![tcp(22), udp(51820)],
    ));
    let sixteen: Vec<Access> = (1..=16)
        .map(|i| if i % 2 == 0 { tcp(i) } else { udp(i * 1000) })
        .collect();
    round_trip(&req(Some("2001:db8::ff".parse().unwrap()), sixteen.clone()));
    round_trip(&Plaintext {
        timestamp: 0,
        timeout: 0,
        allow_ip: None,
        access: sixteen.clone(),
    });
    round_trip(&Plaintext {
        timestamp: u64::MAX,
        timeout: u32::MAX,
        allow_ip: None,
        access: sixteen,
    });
}

#[test]
fn layout_arithmetic() {
    assert_eq!(PLAINTEXT_LEN, 91);
    assert_eq!((HINT_OFF, NONCE_OFF, CT_OFF, TAG_OFF), (1, 9, 21, 112));
    assert_eq!(
        (
            PT_TIMEOUT,
            PT_FAMILY,
            PT_ADDR,
            PT_COUNT,
            PT_ACCESS,
            PT_FIXED_END
        ),
        (8, 12, 13, 29, 30, 78)
    );
}

#[test]
fn two_seals_of_one_request_differ() {
    let k = key(1);
    let r = req(None, vec![tcp(22)]);
    let mut rng = TestRng(1);
    let a = seal(&k, &r, &mut rng).unwrap();
    let b = seal(&k, &r, &mut rng).unwrap();
    assert_ne!(a, b);
    assert_eq!(
        a[..NONCE_OFF],
        b[..NONCE_OFF],
        "same key and epoch give the same hint"
    );
}

#[test]
fn seal_refuses_unencodable_requests() {
    let k = key(1);
    let mut rng = TestRng(1);
    assert_eq!(
        seal(&k, &req(None, vec![]), &mut rng),
        Err(NativeError::Encode("no access requested"))
    );
    let seventeen: Vec<Access> = (1..=17).map(tcp).collect();
    assert_eq!(
        seal(&k, &req(None, seventeen), &mut rng),
        Err(NativeError::Encode("more than 16 accesses"))
    );
    assert_eq!(
        seal(&k, &req(None, vec![tcp(22), udp(22), tcp(22)]), &mut rng),
        Err(NativeError::Encode("the same access twice"))
    );
}

#[test]
fn cheap_checks_come_first() {
    let k = key(1);
    let p = seal(&k, &req(None, vec![tcp(22)]), &mut TestRng(1)).unwrap();
    assert_eq!(hint_of(&p[..127]), Err(NativeError::Length));
    assert_eq!(hint_of(&[]), Err(NativeError::Length));
    let mut long = p.to_vec();
    long.push(0);
    assert_eq!(hint_of(&long), Err(NativeError::Length));
    assert_eq!(open(&k, &long), Err(NativeError::Length));
    let mut v2 = p;
    v2[0] = 0x02;
    assert_eq!(hint_of(&v2), Err(NativeError::Version));
    assert_eq!(open(&k, &v2), Err(NativeError::Version));
}

#[test]
fn wrong_key_fails_authentication() {
    let p = seal(&key(1), &req(None, vec![tcp(22)]), &mut TestRng(1)).unwrap();
    assert_eq!(open(&key(2), &p), Err(NativeError::Auth));
}

#[test]
fn any_single_byte_change_is_refused() {
    let k = key(1);
    let r = req(Some("192.0.2.1".parse().unwrap()), vec![tcp(22), udp(53)]);
    let p = seal(&k, &r, &mut TestRng(3)).unwrap();
    for i in 0..PACKET_LEN {
        for flip in [0x01u8, 0x80, 0xFF] {
            let mut t = p;
            t[i] ^= flip;
            let want = if i == VERSION_OFF {
                NativeError::Version
            } else {
                NativeError::Auth
            };
            assert_eq!(open(&k, &t), Err(want), "byte {i} ^ {flip:#x}");
        }
    }
}

#[test]
fn hint_depends_on_epoch_and_key() {
    let a = key(1);
    let b = key(2);
    assert_ne!(hint(&a, 100), hint(&a, 101));
    assert_ne!(hint(&a, 100), hint(&b, 100));
    assert_eq!(hint(&a, 100), hint(&key(1), 100));
    // The epoch boundary is at multiples of EPOCH_SECS (600) seconds.
    assert_eq!(epoch_of(1199), 1);
    assert_eq!(epoch_of(1200), 2);
    let at = |t: u64| {
        let r = Plaintext {
            timestamp: t,
            ..req(None, vec![tcp(22)])
        };
        hint_of(&seal(&a, &r, &mut TestRng(1)).unwrap()).unwrap()
    };
    assert_eq!(at(1200), at(1799));
    assert_ne!(at(1799), at(1800));
}

#[test]
fn epoch_window_covers_every_accepted_timestamp() {
    assert_eq!(
        epochs_within(1_000_000, 120),
        epoch_of(999_880)..=epoch_of(1_000_120)
    );
    for t in 999_880..=1_000_120 {
        assert!(epochs_within(1_000_000, 120).contains(&epoch_of(t)));
    }
    assert_eq!(epochs_within(10, 1300), 0..=2);
    assert_eq!(
        epochs_within(u64::MAX, 120),
        epoch_of(u64::MAX - 120)..=epoch_of(u64::MAX)
    );
}

/// A well-formed plaintext for [`seal_raw_plaintext`] tests: tcp/22, family 0.
fn good_plaintext(timestamp: u64) -> [u8; PLAINTEXT_LEN] {
    let mut pt = [0u8; PLAINTEXT_LEN];
    pt[..8].copy_from_slice(&timestamp.to_be_bytes());
    pt[PT_COUNT] = 1;
    pt[PT_ACCESS..PT_ACCESS + 3].copy_from_slice(&[6, 0, 22]);
    pt
}

fn open_raw(edit: impl FnOnce(&mut [u8; PLAINTEXT_LEN])) -> Result<Plaintext, NativeError> {
    let k = key(5);
    let ts = 1_760_000_000;
    let mut pt = good_plaintext(ts);
    edit(&mut pt);
    let p = seal_raw_plaintext(&k, hint(&k, epoch_of(ts)), &pt, &mut TestRng(4));
    open(&k, &p)
}

#[test]
fn raw_plaintext_baseline_parses() {
    let r = open_raw(|_| {}).unwrap();
    assert_eq!(r.access, vec![tcp(22)]);
    assert_eq!(r.allow_ip, None);
    // Padding (everything after the used access slots) is not checked.
    assert!(open_raw(|pt| pt[PT_ACCESS + 3..].fill(0xEE)).is_ok());
}

#[test]
fn strict_parse_refuses_each_malformation() {
    let m = |s| Err(NativeError::Malformed(s));
    assert_eq!(
        open_raw(|pt| pt[PT_FAMILY] = 5),
        m("unknown address family")
    );
    assert_eq!(
        open_raw(|pt| pt[PT_FAMILY] = 0x46),
        m("unknown address family")
    );
    assert_eq!(
        open_raw(|pt| pt[PT_ADDR + 15] = 1),
        m("address bytes set without an address family")
    );
    assert_eq!(
        open_raw(|pt| {
            pt[PT_FAMILY] = 4;
            pt[PT_ADDR] = 10;
            pt[PT_ADDR + 4] = 1;
        }),
        m("IPv4 address with nonzero trailing bytes")
    );
    assert_eq!(
        open_raw(|pt| pt[PT_COUNT] = 0),
        m("access count not in 1..=16")
    );
    assert_eq!(
        open_raw(|pt| pt[PT_COUNT] = 17),
        m("access count not in 1..=16")
    );
    assert_eq!(
        open_raw(|pt| pt[PT_COUNT] = 255),
        m("access count not in 1..=16")
    );
    assert_eq!(
        open_raw(|pt| pt[PT_ACCESS] = 1),
        m("protocol not tcp (6) or udp (17)")
    );
    assert_eq!(open_raw(|pt| pt[PT_ACCESS + 2] = 0), m("port 0"));
    // Count 2: the second slot is parsed too (here: zeros = proto 0).
    assert_eq!(
        open_raw(|pt| pt[PT_COUNT] = 2),
        m("protocol not tcp (6) or udp (17)")
    );
    assert_eq!(
        open_raw(|pt| {
            pt[PT_COUNT] = 2;
            pt[PT_ACCESS + 3..PT_ACCESS + 6].copy_from_slice(&[6, 0, 22]);
        }),
        m("the same access twice")
    );
    // The timestamp moved to another epoch than the (authenticated) hint says.
    assert_eq!(
        open_raw(|pt| pt[..8].copy_from_slice(&(1_760_000_000u64 + 3600).to_be_bytes())),
        m("hint does not match the timestamp's epoch")
    );
    // A valid v4 and v6 address are accepted.
    let v4 = open_raw(|pt| {
        pt[PT_FAMILY] = 4;
        pt[PT_ADDR..PT_ADDR + 4].copy_from_slice(&[192, 0, 2, 9]);
    });
    assert_eq!(v4.unwrap().allow_ip, Some("192.0.2.9".parse().unwrap()));
    let v6 = open_raw(|pt| {
        pt[PT_FAMILY] = 6;
        pt[PT_ADDR] = 0x20;
        pt[PT_ADDR + 15] = 1;
    });
    assert_eq!(v6.unwrap().allow_ip, Some("2000::1".parse().unwrap()));
}

fn arb_access() -> impl Strategy<Value = Access> {
    (prop_oneof![Just(Proto::Tcp), Just(Proto::Udp)], 1u16..)
        .prop_map(|(proto, port)| Access { proto, port })
}

fn arb_request() -> impl Strategy<Value = Plaintext> {
    let ip = prop_oneof![
        Just(None),
        any::<[u8; 4]>().prop_map(|o| Some(IpAddr::from(o))),
        any::<[u8; 16]>().prop_map(|o| Some(IpAddr::from(o))),
    ];
    let access = proptest::collection::btree_set(arb_access(), 1..=MAX_ACCESS)
        .prop_map(|s| s.into_iter().collect::<Vec<_>>())
        .prop_shuffle();
    (any::<u64>(), any::<u32>(), ip, access).prop_map(|(timestamp, timeout, allow_ip, access)| {
        Plaintext {
            timestamp,
            timeout,
            allow_ip,
            access,
        }
    })
}

proptest! {
    #[test]
    fn open_inverts_seal(r in arb_request(), seed in any::<u64>(), secret in any::<[u8; 32]>()) {
        let k = NativeKey::derive(&secret);
        let p = seal(&k, &r, &mut TestRng(seed)).unwrap();
        prop_assert_eq!(hint_of(&p).unwrap(), hint(&k, epoch_of(r.timestamp)));
        prop_assert_eq!(open(&k, &p).unwrap(), r);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let k = key(1);
        let _ = hint_of(&bytes);
        prop_assert!(open(&k, &bytes).is_err());
    }

    #[test]
    fn arbitrary_packets_of_the_right_shape_never_panic(mut bytes in any::<[u8; PACKET_LEN]>()) {
        bytes[0] = VERSION;
        prop_assert!(hint_of(&bytes).is_ok());
        prop_assert_eq!(open(&key(1), &bytes), Err(NativeError::Auth));
    }

    /// Authenticated garbage: the strict parser sees arbitrary plaintexts and never panics.
    #[test]
    fn arbitrary_authenticated_plaintexts_never_panic(pt in any::<[u8; PLAINTEXT_LEN]>(), h in any::<[u8; HINT_LEN]>()) {
        let k = key(1);
        let p = seal_raw_plaintext(&k, h, &pt, &mut TestRng(0));
        match open(&k, &p) {
            Ok(r) => prop_assert!(!r.access.is_empty() && r.access.len() <= MAX_ACCESS),
            Err(e) => prop_assert!(matches!(e, NativeError::Malformed(_))),
        }
    }
}
