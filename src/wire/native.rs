//! nfknock native wire format v1 (docs/PROTOCOL.md): one fixed-length UDP datagram,
//! AES-256-GCM, versioned header as AAD, an epoch key hint for O(1) key lookup.
//!
//! ```text
//!  0       1                 9                    21                          112        128
//!  +-------+-----------------+--------------------+---------------------------+----------+
//!  |version|  hint (8)       |  nonce (12)        |  ciphertext (91)          | tag (16) |
//!  +-------+-----------------+--------------------+---------------------------+----------+
//!  \______ AAD (9) _________/
//! ```
//!
//! Contract: [`hint_of`] and [`open`] never panic and never allocate before the tag has
//! verified; every byte of the plaintext is checked (strict parse) once it has.
//! The replay identity of a packet is SHA-256 of its 128 wire bytes
//! ([`crate::replay::key_of`]); the caller records it only after `open` and the freshness check
//! pass.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::Aes256Gcm;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::access::{Access, Proto};
use crate::crypto::{NativeKey, Rng};

/// First byte of every native packet. Not a base64 character, so it never looks like fwknop.
pub const VERSION: u8 = 0x01;
/// Every native packet has exactly this many bytes of UDP payload.
pub const PACKET_LEN: usize = 128;
/// Length of the key hint.
pub const HINT_LEN: usize = 8;
/// Seconds per key-hint epoch. Ten minutes: knocks inside one epoch share a hint (an observer
/// can link those), knocks in different epochs cannot be linked; and the server can afford a
/// table wide enough to recognise a client whose clock is off by an hour, so it can tell the
/// operator "stale by N seconds" instead of "unknown key" (see [`SKEW_DIAGNOSIS_SECS`]).
pub const EPOCH_SECS: u64 = 600;
/// The server indexes hints for timestamps within this many seconds of its clock (or `max_age`
/// if larger): knocks outside `max_age` but inside this are authenticated and refused as stale
/// with their measured skew.
pub const SKEW_DIAGNOSIS_SECS: u64 = 3600;
/// Most accesses one knock can carry.
pub const MAX_ACCESS: usize = 16;

/// AES-GCM nonce length (96 bits, NIST SP 800-38D's recommended IV size).
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length (full 128 bits).
pub const TAG_LEN: usize = 16;

// Wire offsets. Each field is `[FIELD_OFF, FIELD_OFF + FIELD_LEN)`.
const VERSION_OFF: usize = 0;
const HINT_OFF: usize = VERSION_OFF + 1;
const NONCE_OFF: usize = HINT_OFF + HINT_LEN;
const CT_OFF: usize = NONCE_OFF + NONCE_LEN;
const TAG_OFF: usize = PACKET_LEN - TAG_LEN;
/// The authenticated-but-unencrypted header: version and hint.
const AAD_LEN: usize = NONCE_OFF;

/// Bytes of plaintext (= ciphertext) in a packet: 128 − 1 − 8 − 12 − 16 = 91.
pub const PLAINTEXT_LEN: usize = TAG_OFF - CT_OFF;

// Plaintext offsets.
const PT_TIMESTAMP: usize = 0; // u64 BE
const PT_TIMEOUT: usize = PT_TIMESTAMP + 8; // u32 BE
const PT_FAMILY: usize = PT_TIMEOUT + 4; // u8: 0, 4 or 6
const PT_ADDR: usize = PT_FAMILY + 1; // 16 bytes
const ADDR_LEN: usize = 16;
const PT_COUNT: usize = PT_ADDR + ADDR_LEN; // u8: 1..=MAX_ACCESS
const PT_ACCESS: usize = PT_COUNT + 1; // count × (proto u8, port u16 BE)
const ACCESS_LEN: usize = 3;
/// Where padding starts when every access slot is used.
const PT_FIXED_END: usize = PT_ACCESS + MAX_ACCESS * ACCESS_LEN;

/// Address family bytes.
const FAMILY_SOURCE: u8 = 0;
const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;

/// Domain-separation prefix of the hint MAC input.
const HINT_DOMAIN: &[u8] = b"nfknock-hint-v1";

// The layout must fit the fixed packet length; these fail the build if an edit breaks it.
const _: () = assert!(CT_OFF + PLAINTEXT_LEN + TAG_LEN == PACKET_LEN);
const _: () = assert!(PT_FIXED_END <= PLAINTEXT_LEN);
const _: () = assert!(MAX_ACCESS <= u8::MAX as usize);
// DESIGN.md: well under the 1 232-byte DNS-over-UDP "safe" payload size.
const _: () = assert!(PACKET_LEN <= 1232);

/// What a native packet's plaintext says: the content [`seal`] encrypts and [`open`] returns
/// once the tag verified. The engine turns it into a [`crate::policy::Knock`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plaintext {
    /// Client's clock, Unix seconds.
    pub timestamp: u64,
    /// Requested grant length in seconds; 0 = the server's default for this client.
    pub timeout: u32,
    /// Address to open for; `None` = the packet's source address.
    pub allow_ip: Option<IpAddr>,
    /// 1..=MAX_ACCESS accesses.
    pub access: Vec<Access>,
}

/// Why a native packet was refused. Small and allocation-free (hot path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NativeError {
    #[error("wrong length")]
    Length,
    #[error("unknown version")]
    Version,
    #[error("authentication failed")]
    Auth,
    #[error("malformed plaintext: {0}")]
    Malformed(&'static str),
    #[error("request cannot be encoded: {0}")]
    Encode(&'static str),
}

/// The epoch a timestamp falls in (`timestamp / EPOCH_SECS`).
pub fn epoch_of(timestamp: u64) -> u64 {
    timestamp / EPOCH_SECS
}

/// The epochs whose hints a server must recognise at `now` when it accepts timestamps within
/// `max_age` seconds either side: `epoch_of(now − max_age) ..= epoch_of(now + max_age)`
/// (saturating). The key-lookup table holds each client's hint for every epoch in this range.
pub fn epochs_within(now: u64, max_age: u64) -> std::ops::RangeInclusive<u64> {
    epoch_of(now.saturating_sub(max_age))..=epoch_of(now.saturating_add(max_age))
}

/// Cheap pre-crypto check: length and version. Returns the key hint.
pub fn hint_of(packet: &[u8]) -> Result<[u8; HINT_LEN], NativeError> {
    let packet: &[u8; PACKET_LEN] = packet.try_into().map_err(|_| NativeError::Length)?;
    if packet[VERSION_OFF] != VERSION {
        return Err(NativeError::Version);
    }
    let mut hint = [0u8; HINT_LEN];
    hint.copy_from_slice(&packet[HINT_OFF..NONCE_OFF]);
    Ok(hint)
}

/// The key hint a client with `key` uses in `epoch` (= timestamp / EPOCH_SECS).
///
/// First 8 bytes of HMAC-SHA256(hint key, `"nfknock-hint-v1"` ‖ epoch as u64 BE). Without the
/// hint key an observer cannot tell whether two hints of different epochs belong to one client.
pub fn hint(key: &NativeKey, epoch: u64) -> [u8; HINT_LEN] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.hint.as_slice())
        .expect("HMAC accepts keys of any length");
    mac.update(HINT_DOMAIN);
    mac.update(&epoch.to_be_bytes());
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; HINT_LEN];
    out.copy_from_slice(&full[..HINT_LEN]);
    out
}

/// Authenticate and decrypt, then parse the plaintext strictly.
///
/// Order: length and version ([`hint_of`]), then the AES-GCM tag (the library's constant-time
/// comparison; the ciphertext is decrypted only if it matches), then the plaintext. Decryption
/// happens in a zeroized stack buffer; the only allocation is the returned `access` list.
pub fn open(key: &NativeKey, packet: &[u8]) -> Result<Plaintext, NativeError> {
    hint_of(packet)?;
    let packet: &[u8; PACKET_LEN] = packet.try_into().map_err(|_| NativeError::Length)?;
    let (aad, rest) = packet.split_at(AAD_LEN);
    let (nonce, rest) = rest.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(PLAINTEXT_LEN);
    let nonce: &[u8; NONCE_LEN] = nonce.try_into().map_err(|_| NativeError::Length)?;
    let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| NativeError::Length)?;

    let mut buf = Zeroizing::new([0u8; PLAINTEXT_LEN]);
    buf.copy_from_slice(ciphertext);
    cipher(key)
        .decrypt_inout_detached(nonce.into(), aad, buf.as_mut_slice().into(), tag.into())
        .map_err(|_| NativeError::Auth)?;

    let req = parse_plaintext(&buf)?;
    // The hint is authenticated (AAD), so only a holder of the key can send one that does not
    // belong to the timestamp's epoch: a broken client. Refuse rather than guess.
    if aad[HINT_OFF..] != hint(key, epoch_of(req.timestamp)) {
        return Err(NativeError::Malformed(
            "hint does not match the timestamp's epoch",
        ));
    }
    Ok(req)
}

/// Build a packet for `req` (client side).
///
/// Draws the 12-byte nonce from `rng` first, then the padding (docs/PROTOCOL.md relies on this
/// order to make the test vectors reproducible).
pub fn seal(
    key: &NativeKey,
    req: &Plaintext,
    rng: &mut dyn Rng,
) -> Result<[u8; PACKET_LEN], NativeError> {
    let mut pt = Zeroizing::new([0u8; PLAINTEXT_LEN]);
    let used = encode_plaintext(req, &mut pt)?;
    let h = hint(key, epoch_of(req.timestamp));
    Ok(seal_with_padding(key, h, &mut pt, used, rng))
}

/// Seal an arbitrary plaintext: used to build negative test vectors (malformed plaintexts under
/// a valid key). Not for clients: nothing here checks that `plaintext` parses.
///
/// Draws the nonce from `rng`; `plaintext` is used as given, padding included.
#[doc(hidden)]
pub fn seal_raw_plaintext(
    key: &NativeKey,
    hint: [u8; HINT_LEN],
    plaintext: &[u8; PLAINTEXT_LEN],
    rng: &mut dyn Rng,
) -> [u8; PACKET_LEN] {
    let mut pt = Zeroizing::new(*plaintext);
    seal_with_padding(key, hint, &mut pt, PLAINTEXT_LEN, rng)
}

/// Draw the nonce, fill `pt[used..]` with random padding, encrypt and assemble the packet.
fn seal_with_padding(
    key: &NativeKey,
    hint: [u8; HINT_LEN],
    pt: &mut [u8; PLAINTEXT_LEN],
    used: usize,
    rng: &mut dyn Rng,
) -> [u8; PACKET_LEN] {
    let mut packet = [0u8; PACKET_LEN];
    packet[VERSION_OFF] = VERSION;
    packet[HINT_OFF..NONCE_OFF].copy_from_slice(&hint);

    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce);
    packet[NONCE_OFF..CT_OFF].copy_from_slice(&nonce);
    if let Some(padding) = pt.get_mut(used..) {
        rng.fill(padding);
    }

    let (aad, body) = packet.split_at_mut(AAD_LEN);
    let (_, body) = body.split_at_mut(NONCE_LEN);
    let (ct, tag_out) = body.split_at_mut(PLAINTEXT_LEN);
    ct.copy_from_slice(pt.as_slice());
    // AES-GCM refuses only plaintexts over 2^36 − 32 bytes or AAD over 2^61 − 1 bytes; ours are
    // 91 and 9.
    let tag = cipher(key)
        .encrypt_inout_detached((&nonce).into(), aad, ct.into())
        .expect("AES-GCM accepts a 91-byte plaintext");
    tag_out.copy_from_slice(&tag);
    packet
}

/// The AES-256-GCM instance for `key`. Built per call: the key schedule costs less than one
/// packet's GHASH, and keeping it out of `NativeKey` keeps that type a pair of byte arrays.
/// With the crate's `zeroize` feature the round keys are wiped when it drops.
fn cipher(key: &NativeKey) -> Aes256Gcm {
    let k: &[u8; 32] = &key.enc;
    Aes256Gcm::new(k.into())
}

/// Write the meaningful part of the plaintext; returns how many bytes it used (the rest is
/// padding).
fn encode_plaintext(req: &Plaintext, pt: &mut [u8; PLAINTEXT_LEN]) -> Result<usize, NativeError> {
    let count = req.access.len();
    if count == 0 {
        return Err(NativeError::Encode("no access requested"));
    }
    if count > MAX_ACCESS {
        return Err(NativeError::Encode("more than 16 accesses"));
    }
    if has_duplicate(&req.access) {
        return Err(NativeError::Encode("the same access twice"));
    }
    pt[PT_TIMESTAMP..PT_TIMEOUT].copy_from_slice(&req.timestamp.to_be_bytes());
    pt[PT_TIMEOUT..PT_FAMILY].copy_from_slice(&req.timeout.to_be_bytes());
    match req.allow_ip {
        None => pt[PT_FAMILY] = FAMILY_SOURCE,
        Some(IpAddr::V4(a)) => {
            pt[PT_FAMILY] = FAMILY_V4;
            pt[PT_ADDR..PT_ADDR + 4].copy_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            pt[PT_FAMILY] = FAMILY_V6;
            pt[PT_ADDR..PT_COUNT].copy_from_slice(&a.octets());
        }
    }
    // count ≤ MAX_ACCESS ≤ 255, checked above and at compile time.
    pt[PT_COUNT] = count as u8;
    let slots = pt[PT_ACCESS..PT_FIXED_END].chunks_exact_mut(ACCESS_LEN);
    for (slot, a) in slots.zip(&req.access) {
        slot[0] = a.proto.number();
        slot[1..].copy_from_slice(&a.port.to_be_bytes());
    }
    Ok(PT_ACCESS + count * ACCESS_LEN)
}

/// Strict parse of an authenticated plaintext. Still hostile input: every read is in bounds
/// by construction (fixed-size array, named offsets) and every value is checked.
fn parse_plaintext(pt: &[u8; PLAINTEXT_LEN]) -> Result<Plaintext, NativeError> {
    let timestamp = u64::from_be_bytes(field(pt, PT_TIMESTAMP)?);
    let timeout = u32::from_be_bytes(field(pt, PT_TIMEOUT)?);
    let addr: [u8; ADDR_LEN] = field(pt, PT_ADDR)?;
    let allow_ip = match pt[PT_FAMILY] {
        FAMILY_SOURCE => {
            if addr != [0; ADDR_LEN] {
                return Err(NativeError::Malformed(
                    "address bytes set without an address family",
                ));
            }
            None
        }
        FAMILY_V4 => {
            let (v4, tail) = addr.split_at(4);
            if tail.iter().any(|&b| b != 0) {
                return Err(NativeError::Malformed(
                    "IPv4 address with nonzero trailing bytes",
                ));
            }
            let v4: [u8; 4] = v4
                .try_into()
                .map_err(|_| NativeError::Malformed("IPv4 address"))?;
            Some(IpAddr::V4(Ipv4Addr::from(v4)))
        }
        FAMILY_V6 => Some(IpAddr::V6(Ipv6Addr::from(addr))),
        _ => return Err(NativeError::Malformed("unknown address family")),
    };
    let count = usize::from(pt[PT_COUNT]);
    if count == 0 || count > MAX_ACCESS {
        return Err(NativeError::Malformed("access count not in 1..=16"));
    }
    let mut access = Vec::with_capacity(count);
    for slot in pt[PT_ACCESS..PT_FIXED_END]
        .chunks_exact(ACCESS_LEN)
        .take(count)
    {
        let proto = Proto::from_number(slot[0])
            .ok_or(NativeError::Malformed("protocol not tcp (6) or udp (17)"))?;
        let port = u16::from_be_bytes([slot[1], slot[2]]);
        let a = Access::new(proto, port).ok_or(NativeError::Malformed("port 0"))?;
        if access.contains(&a) {
            return Err(NativeError::Malformed("the same access twice"));
        }
        access.push(a);
    }
    Ok(Plaintext {
        timestamp,
        timeout,
        allow_ip,
        access,
    })
}

/// `N` bytes of `pt` from `off`. Offsets are constants, so this never fails; the `Result` keeps
/// the parser free of panicking paths all the same.
fn field<const N: usize>(pt: &[u8; PLAINTEXT_LEN], off: usize) -> Result<[u8; N], NativeError> {
    pt.get(off..off + N)
        .and_then(|s| s.try_into().ok())
        .ok_or(NativeError::Malformed("field out of bounds"))
}

/// Does `list` name one access twice? (n ≤ 16: quadratic is cheapest.)
fn has_duplicate(list: &[Access]) -> bool {
    list.iter().enumerate().any(|(i, a)| list[..i].contains(a))
}

#[cfg(test)]
mod tests {
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
        (any::<u64>(), any::<u32>(), ip, access).prop_map(
            |(timestamp, timeout, allow_ip, access)| Plaintext {
                timestamp,
                timeout,
                allow_ip,
                access,
            },
        )
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
}
