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
mod tests;
