//! fwknop credentials: [`FwknopKey`], checked the way fwknopd checks `access.conf` keys, the key
//! limits, and [`PreparedKey`], the same key with its HMAC state computed once for many packets.

use std::fmt;

use zeroize::Zeroizing;

use super::hmac::PreparedMac;
use super::names::{EncMode, HmacType};

/// One fwknop credential: the Rijndael passphrase/key and an optional HMAC key.
#[derive(Clone)]
pub struct FwknopKey {
    /// 1..=32 bytes (`KEY` or decoded `KEY_BASE64`).
    pub key: Zeroizing<Vec<u8>>,
    /// `None` only when the config says explicitly that this client sends no HMAC.
    pub hmac_key: Option<Zeroizing<Vec<u8>>>,
    pub hmac_type: HmacType,
    pub mode: EncMode,
}

impl std::fmt::Debug for FwknopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FwknopKey")
            .field("key", &"<redacted>")
            .field("hmac_key", &self.hmac_key.as_ref().map(|_| "<redacted>"))
            .field("hmac_type", &self.hmac_type)
            .field("mode", &self.mode)
            .finish()
    }
}

/// Why a key was refused by [`FwknopKey::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FwknopKeyError {
    #[error(
        "Rijndael key is {0} bytes; fwknop keys are 1 to {max} bytes (`KEY` or decoded `KEY_BASE64`)",
        max = MAX_KEY_LEN
    )]
    KeyLength(usize),
    #[error(
        "HMAC key is {0} bytes; fwknop HMAC keys are 1 to {max} bytes (`HMAC_KEY` or decoded `HMAC_KEY_BASE64`)",
        max = MAX_HMAC_KEY_LEN
    )]
    HmacKeyLength(usize),
    #[error("the Rijndael key and the HMAC key are identical; fwknopd refuses this — generate a separate HMAC key with `fwknop --key-gen`")]
    SameKeys,
}

/// `RIJNDAEL_MAX_KEYSIZE` (lib/rijndael.h): the longest Rijndael key or passphrase. Config
/// parsing and the fwknop importer take the key limits from here.
pub const MAX_KEY_LEN: usize = 32;
/// `MAX_DIGEST_BLOCK_LEN` (lib/fko_limits.h): the SHA3-256 block size bounds HMAC keys.
pub const MAX_HMAC_KEY_LEN: usize = 136;
/// The Rijndael key length `fwknop --key-gen` draws (`RIJNDAEL_MAX_KEYSIZE`, lib/fko_funcs.c
/// `fko_key_gen`); `nfknock keygen --fwknop` draws the same.
pub const KEYGEN_KEY_LEN: usize = MAX_KEY_LEN;

/// The HMAC key length `fwknop --key-gen --hmac-digest-type T` draws (lib/fko_funcs.c
/// `fko_key_gen`: the hash's block size for SHA-256/384/512, its digest size for MD5 and
/// SHA-1). fwknop 2.6.10 refuses to pick one for SHA3 (FWKNOP-WIRE.md §3.1); nfknock draws 64
/// bytes there, within both SHA3 block sizes.
pub fn keygen_hmac_len(hmac: HmacType) -> usize {
    match hmac {
        HmacType::Md5 => 16,
        HmacType::Sha1 => 20,
        HmacType::Sha256 | HmacType::Sha3_256 | HmacType::Sha3_512 => 64,
        HmacType::Sha384 | HmacType::Sha512 => 128,
    }
}

/// The placeholder key of fwknopd's shipped access.conf, which fwknopd refuses
/// (server/access.c); config parsing and the importer refuse it too.
pub const PLACEHOLDER_KEY: &str = "__CHANGEME__";

/// Decode a `KEY_BASE64` / `HMAC_KEY_BASE64` value as fwknopd does: surrounding whitespace
/// trimmed, every character in `[A-Za-z0-9+/=]` (server/access.c refuses anything else with
/// `is_base64`), then libfko's `b64_decode` ([`super::decode_b64_lenient`]: decoding stops at
/// the first `=`, leftover bits and a final lone character are dropped). The one decoder of
/// fwknop keys: config files, key files and the importer all read keys through it.
pub fn decode_key_base64(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let text = text.trim();
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
    {
        return None;
    }
    super::decode_b64_lenient(text).map(Zeroizing::new)
}

impl FwknopKey {
    /// Validate and build a credential the way fwknopd's `acc_data_is_valid()` does: Rijndael
    /// key 1..=32 bytes, HMAC key 1..=136 bytes, and the two must differ. (A legacy-mode key
    /// longer than 16 bytes is accepted; only its first 16 bytes are used, as fwknopd does.)
    pub fn new(
        key: Zeroizing<Vec<u8>>,
        hmac_key: Option<Zeroizing<Vec<u8>>>,
        hmac_type: HmacType,
        mode: EncMode,
    ) -> Result<FwknopKey, FwknopKeyError> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(FwknopKeyError::KeyLength(key.len()));
        }
        if let Some(h) = &hmac_key {
            if h.is_empty() || h.len() > MAX_HMAC_KEY_LEN {
                return Err(FwknopKeyError::HmacKeyLength(h.len()));
            }
            if h.as_slice() == key.as_slice() {
                return Err(FwknopKeyError::SameKeys);
            }
        }
        Ok(FwknopKey {
            key,
            hmac_key,
            hmac_type,
            mode,
        })
    }

    /// Is this key usable as is? (Fields are public, so [`open`](super::open) checks again.)
    pub(super) fn usable(&self) -> bool {
        (1..=MAX_KEY_LEN).contains(&self.key.len())
            && self
                .hmac_key
                .as_ref()
                .is_none_or(|h| (1..=MAX_HMAC_KEY_LEN).contains(&h.len()))
    }
}

/// An fwknop key made ready for many packets: the HMAC key's inner and outer pad blocks are
/// hashed once here instead of once per packet, and the `U2FsdGVkX1` prefix every MACed text
/// starts with is already absorbed. The server tries every candidate client's HMAC per packet
/// (fwknop packets carry no key hint), so this is its per-client cost. Same results as
/// [`open`](super::open).
#[derive(Clone)]
pub struct PreparedKey {
    pub(super) key: FwknopKey,
    /// `None` without an HMAC key, for an unusable one, and for SHA-3 (see [`PreparedMac::new`]).
    pub(super) mac: Option<PreparedMac>,
}

impl PreparedKey {
    pub fn new(key: &FwknopKey) -> PreparedKey {
        let mac = match &key.hmac_key {
            Some(hk) if key.usable() => PreparedMac::new(key.hmac_type, hk),
            _ => None,
        };
        PreparedKey {
            key: key.clone(),
            mac,
        }
    }
}

impl fmt::Debug for PreparedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedKey")
            .field("key", &self.key)
            .field("prepared_hmac", &self.mac.is_some())
            .finish()
    }
}
