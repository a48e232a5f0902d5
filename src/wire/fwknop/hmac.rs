//! The outer HMAC (FWKNOP-WIRE.md §4): over `"U2FsdGVkX1" + body`, as unpadded base64, of the
//! type the key is configured with (never detected from the packet); and [`PreparedMac`], the
//! keyed state a [`PreparedKey`](super::PreparedKey) keeps.

use hmac::{Hmac, KeyInit, Mac, SimpleHmac};
use zeroize::Zeroizing;

use super::b64;
use super::digest::{put, MAX_DIGEST_LEN};
use super::names::HmacType;
use super::{FwknopError, SALTED_PREFIX};

/// Largest HMAC tag (SHA-512 / SHA3-512): a tag is as long as its hash's output.
const MAX_TAG_LEN: usize = MAX_DIGEST_LEN;
pub(super) const MAX_TAG_B64: usize = b64::encoded_len(MAX_TAG_LEN);

/// HMAC of the concatenated `parts`, as unpadded base64 into `out`; returns its length.
pub(super) fn hmac_b64(
    ht: HmacType,
    key: &[u8],
    parts: &[&[u8]],
    out: &mut [u8; MAX_TAG_B64],
) -> Result<usize, FwknopError> {
    fn run<M: Mac + KeyInit>(
        key: &[u8],
        parts: &[&[u8]],
        raw: &mut [u8],
    ) -> Result<usize, FwknopError> {
        let mut m = <M as KeyInit>::new_from_slice(key).map_err(|_| FwknopError::Key)?;
        for p in parts {
            Mac::update(&mut m, p);
        }
        Ok(put(raw, &m.finalize().into_bytes()))
    }
    let mut raw = Zeroizing::new([0u8; MAX_TAG_LEN]);
    // RFC 2104 HMAC in every case; SHA-3 has no block-level core in `sha3` 0.12, so it goes
    // through `SimpleHmac` (same result, slightly slower).
    let n = match ht {
        HmacType::Md5 => run::<Hmac<md5::Md5>>(key, parts, &mut raw[..])?,
        HmacType::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts, &mut raw[..])?,
        HmacType::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts, &mut raw[..])?,
        HmacType::Sha384 => run::<Hmac<sha2::Sha384>>(key, parts, &mut raw[..])?,
        HmacType::Sha512 => run::<Hmac<sha2::Sha512>>(key, parts, &mut raw[..])?,
        HmacType::Sha3_256 => run::<SimpleHmac<sha3::Sha3_256>>(key, parts, &mut raw[..])?,
        HmacType::Sha3_512 => run::<SimpleHmac<sha3::Sha3_512>>(key, parts, &mut raw[..])?,
    };
    b64::encode_into(raw.get(..n).unwrap_or(&[]), out).ok_or(FwknopError::Key)
}

/// A keyed HMAC state with `U2FsdGVkX1` absorbed, cloned per packet. The hash cores wipe
/// their state on drop (the `zeroize` features of `sha1`, `sha2`, `md-5` in Cargo.toml).
#[derive(Clone)]
pub(super) enum PreparedMac {
    Md5(Hmac<md5::Md5>),
    Sha1(Hmac<sha1::Sha1>),
    Sha256(Hmac<sha2::Sha256>),
    Sha384(Hmac<sha2::Sha384>),
    Sha512(Hmac<sha2::Sha512>),
}

impl PreparedMac {
    /// `None` for SHA-3: `SimpleHmac` keeps the padded key in a plain array that nothing wipes,
    /// so those keys are keyed per packet as before (SHA-3 HMACs are rare: fwknop 2.6.10's
    /// `--key-gen` cannot even make them, FWKNOP-WIRE.md §3.1).
    pub(super) fn new(ht: HmacType, key: &[u8]) -> Option<PreparedMac> {
        fn keyed<M: Mac + KeyInit>(key: &[u8]) -> Option<M> {
            let mut m = <M as KeyInit>::new_from_slice(key).ok()?;
            Mac::update(&mut m, SALTED_PREFIX);
            Some(m)
        }
        Some(match ht {
            HmacType::Md5 => PreparedMac::Md5(keyed(key)?),
            HmacType::Sha1 => PreparedMac::Sha1(keyed(key)?),
            HmacType::Sha256 => PreparedMac::Sha256(keyed(key)?),
            HmacType::Sha384 => PreparedMac::Sha384(keyed(key)?),
            HmacType::Sha512 => PreparedMac::Sha512(keyed(key)?),
            HmacType::Sha3_256 | HmacType::Sha3_512 => return None,
        })
    }

    /// HMAC of `"U2FsdGVkX1" + body` as unpadded base64 into `out`; returns its length.
    pub(super) fn tag_b64(
        &self,
        body: &[u8],
        out: &mut [u8; MAX_TAG_B64],
    ) -> Result<usize, FwknopError> {
        fn run<M: Mac + Clone>(m: &M, body: &[u8], raw: &mut [u8]) -> usize {
            let mut m = m.clone();
            Mac::update(&mut m, body);
            put(raw, &m.finalize().into_bytes())
        }
        let mut raw = Zeroizing::new([0u8; MAX_TAG_LEN]);
        let n = match self {
            PreparedMac::Md5(m) => run(m, body, &mut raw[..]),
            PreparedMac::Sha1(m) => run(m, body, &mut raw[..]),
            PreparedMac::Sha256(m) => run(m, body, &mut raw[..]),
            PreparedMac::Sha384(m) => run(m, body, &mut raw[..]),
            PreparedMac::Sha512(m) => run(m, body, &mut raw[..]),
        };
        b64::encode_into(raw.get(..n).unwrap_or(&[]), out).ok_or(FwknopError::Key)
    }
}
