//! The encoder: [`SealRequest`] and [`seal`], which build a packet the way libfko's
//! `fko_spa_data_final` does (tests, benchmarks, our own client).

use std::net::Ipv4Addr;

use zeroize::Zeroizing;

use super::digest::MAX_DIGEST_B64;
use super::hmac::{hmac_b64, MAX_TAG_B64};
use super::key::FwknopKey;
use super::names::DigestType;
use super::open::precheck;
use super::{b64, cipher, fields};
use super::{FwknopError, MAX_PLAINTEXT, MIN_PLAINTEXT, SALTED_MAGIC, SALTED_PREFIX};
use crate::access::Access;
use crate::crypto::Rng;

/// What [`seal`] puts in a packet (§2.1). The allow IP is the first item of `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealRequest {
    /// 1..=48 bytes passing fwknop's username rule.
    pub username: String,
    pub timestamp: u64,
    /// `3.0.0` for fwknop 2.6 (`FKO_PROTOCOL_VERSION`); 1..=8 characters.
    pub version: String,
    /// 0..=6 (§2.2).
    pub message_type: u8,
    /// `allow_ip,proto/port,...`, or `allow_ip,command` for type 0.
    pub message: String,
    /// `host,port`, required exactly for types 2, 4, 5, 6.
    pub nat_access: Option<String>,
    /// Legacy server-auth field (fwknopd ignores it).
    pub server_auth: Option<String>,
    /// Written exactly for types 3, 4, 6; must be 0 otherwise.
    pub client_timeout: u32,
}

/// fwknop 2.6's protocol version string (`FKO_PROTOCOL_VERSION`).
pub const PROTOCOL_VERSION: &str = "3.0.0";

impl SealRequest {
    /// A plain access request (type 1, or 3 when `client_timeout > 0`, as the fwknop client
    /// does), e.g. `allow_ip = 10.1.2.3`, `access = [tcp/22]`.
    pub fn access(
        username: &str,
        timestamp: u64,
        allow_ip: Ipv4Addr,
        access: &[Access],
        client_timeout: u32,
    ) -> SealRequest {
        let mut message = allow_ip.to_string();
        for a in access {
            message.push(',');
            message.push_str(&a.to_string());
        }
        SealRequest {
            username: username.to_string(),
            timestamp,
            version: PROTOCOL_VERSION.to_string(),
            message_type: if client_timeout > 0 { 3 } else { 1 },
            message,
            nat_access: None,
            server_auth: None,
            client_timeout,
        }
    }
}

/// Build a wire packet the way libfko does (`fko_spa_data_final`): fields, inner digest, PKCS#7,
/// `"Salted__" ‖ salt ‖ AES-256-<mode>`, unpadded base64 minus its first 10 characters, then the
/// HMAC's unpadded base64 if the key has an HMAC key.
///
/// `salt` (8 random bytes) and `rand_value` (16 decimal digits) must come from a real RNG for
/// packets that are sent; fixing them gives reproducible packets for tests. The result always
/// passes [`precheck`] and [`open`](super::open) under the same key.
pub fn seal(
    key: &FwknopKey,
    msg: &SealRequest,
    salt: [u8; 8],
    rand_value: &str,
    digest: DigestType,
) -> Result<String, FwknopError> {
    if !key.usable() {
        return Err(FwknopError::Key);
    }
    let encoded = Zeroizing::new(fields::build(msg, rand_value)?);
    seal_encoded(key, encoded.as_bytes(), salt, Some(digest))
}

/// [`seal`] with a fresh salt and random value drawn from `rng`: what a client sends
/// (`nfknock knock --fwknop`). libfko takes both from /dev/urandom (`lib/fko_rand_value.c`,
/// `lib/cipher_funcs.c:get_random_data`); the salt and the 16 digits make every packet, and its
/// replay identity, unique.
pub fn seal_random(
    key: &FwknopKey,
    msg: &SealRequest,
    digest: DigestType,
    rng: &mut dyn Rng,
) -> Result<String, FwknopError> {
    let mut salt = [0u8; 8];
    rng.fill(&mut salt);
    let rand_value = random_digits(rng);
    seal(key, msg, salt, &rand_value, digest)
}

/// fwknop's random value: [`fields::RAND_LEN`] decimal digits (`FKO_RAND_VAL_SIZE`), each
/// uniform (bytes ≥ 250 are drawn again, so no digit is favoured).
pub fn random_digits(rng: &mut dyn Rng) -> String {
    let mut out = String::with_capacity(fields::RAND_LEN);
    let mut buf = [0u8; 32];
    while out.len() < fields::RAND_LEN {
        rng.fill(&mut buf);
        for b in buf {
            if b < 250 && out.len() < fields::RAND_LEN {
                out.push(char::from(b'0' + b % 10));
            }
        }
    }
    out
}

/// Seal an arbitrary encoded message, without [`seal`]'s field checks: for fuzzing (so the
/// fuzzer reaches [`open`]'s post-decryption checks and field parser with a valid HMAC) and
/// negative test vectors. Not for clients.
///
/// The plaintext is `encoded ":" digest(encoded)`, or `encoded` as given when `digest` is
/// `None`.
#[doc(hidden)]
pub fn seal_raw_plaintext(
    key: &FwknopKey,
    encoded: &[u8],
    salt: [u8; 8],
    digest: Option<DigestType>,
) -> Result<String, FwknopError> {
    if !key.usable() {
        return Err(FwknopError::Key);
    }
    seal_encoded(key, encoded, salt, digest)
}

/// The second half of [`seal`]: digest, pad, encrypt, base64, HMAC.
fn seal_encoded(
    key: &FwknopKey,
    encoded: &[u8],
    salt: [u8; 8],
    digest: Option<DigestType>,
) -> Result<String, FwknopError> {
    let mut d = [0u8; MAX_DIGEST_B64];
    let dn = digest.map_or(0, |dt| dt.b64_into(encoded, &mut d));
    let sep = usize::from(digest.is_some());

    // raw = "Salted__" ‖ salt ‖ PKCS7(encoded ":" digest), encrypted in place.
    let pt_len = encoded.len() + sep + dn;
    if !(MIN_PLAINTEXT..MAX_PLAINTEXT).contains(&pt_len) {
        return Err(FwknopError::Malformed("plaintext length out of range"));
    }
    let pad = cipher::BLOCK - pt_len % cipher::BLOCK;
    let mut raw = Zeroizing::new(Vec::with_capacity(cipher::BLOCK + pt_len + pad));
    raw.extend_from_slice(SALTED_MAGIC);
    raw.extend_from_slice(&salt);
    raw.extend_from_slice(encoded);
    if digest.is_some() {
        raw.push(b':');
        raw.extend_from_slice(d.get(..dn).unwrap_or(&[]));
    }
    let padded = raw.len() + pad;
    raw.resize(padded, pad as u8);
    if let Some(ct) = raw.get_mut(cipher::BLOCK..) {
        cipher::PacketCipher::derive(&key.key, &salt, key.mode).encrypt(key.mode, ct);
    }

    let enc_b64 = b64::encode_string(&raw);
    let body = enc_b64
        .get(SALTED_PREFIX.len()..)
        .ok_or(FwknopError::Length)?;
    let mut wire = String::with_capacity(body.len() + MAX_TAG_B64);
    wire.push_str(body);
    if let Some(hk) = &key.hmac_key {
        let mut tag = [0u8; MAX_TAG_B64];
        let n = hmac_b64(key.hmac_type, hk, &[enc_b64.as_bytes()], &mut tag)?;
        wire.push_str(
            std::str::from_utf8(tag.get(..n).unwrap_or(&[])).map_err(|_| FwknopError::Key)?,
        );
    }
    precheck(wire.as_bytes())?;
    Ok(wire)
}
