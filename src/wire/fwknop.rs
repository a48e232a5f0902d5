//! fwknop 2.x SPA packets (shared/FWKNOP-WIRE.md): base64 text, Rijndael (EVP_BytesToKey-MD5 →
//! AES-256) in CBC/CTR/CFB/OFB/ECB/legacy, HMAC checked before decryption in constant time,
//! an inner digest, `:`-separated fields. Parsing never panics; post-decryption bytes are still
//! hostile (fwknop CVE-2012-4434/4435).
//!
//! SKELETON: the fwknop helper owns this file.

use std::net::Ipv4Addr;
use zeroize::Zeroizing;

use crate::access::Access;

/// fwknopd's `MIN_SPA_DATA_SIZE` (server/fwknopd_common.h).
pub const MIN_WIRE_LEN: usize = 140;
/// One less than `MAX_SPA_ENCODED_MSG_SIZE` (lib/fko_limits.h): libfko refuses len ≥ 1500.
pub const MAX_WIRE_LEN: usize = 1499;

/// Could a payload of this length be an fwknop packet?
pub fn plausible_len(len: usize) -> bool {
    (MIN_WIRE_LEN..=MAX_WIRE_LEN).contains(&len)
}

/// HMAC algorithm of a stanza (`HMAC_DIGEST_TYPE`). Never auto-detected from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HmacType {
    Md5,
    Sha1,
    Sha256,
    Sha384,
    Sha512,
    #[serde(rename = "sha3_256")]
    Sha3_256,
    #[serde(rename = "sha3_512")]
    Sha3_512,
}

/// Rijndael mode of a stanza (`ENCRYPTION_MODE`). Not signalled on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncMode {
    Cbc,
    Ctr,
    Cfb,
    Ofb,
    Ecb,
    /// fwknop < 2.5 (`-M legacy`): key right-padded with '0' to 16 bytes, CBC.
    Legacy,
}

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

/// A decoded fwknop SPA message (after HMAC, decryption and digest all verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaMessage {
    pub rand_value: String,
    pub username: String,
    pub timestamp: u64,
    pub version: String,
    pub message_type: u8,
    /// The raw message field, e.g. `10.1.2.3,tcp/22`.
    pub message: String,
    /// The allow IP (first item of the message); `0.0.0.0` means "the packet source".
    pub allow_ip: Ipv4Addr,
    /// Requested accesses (empty for command messages).
    pub access: Vec<Access>,
    pub nat_access: Option<String>,
    pub server_auth: Option<String>,
    /// 0 when absent.
    pub client_timeout: u32,
}

/// Why an fwknop packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FwknopError {
    #[error("wrong length")]
    Length,
    #[error("not base64 SPA data")]
    Charset,
    #[error("starts with the `U2FsdGVkX1` prefix (replay-bypass attempt)")]
    SaltedPrefix,
    #[error("HMAC mismatch")]
    Hmac,
    #[error("decryption failed")]
    Decrypt,
    #[error("inner digest mismatch")]
    Digest,
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

/// Cheap checks before any crypto: length, charset, the `U2FsdGVkX1` prefix.
pub fn precheck(wire: &[u8]) -> Result<(), FwknopError> {
    let _ = wire;
    unimplemented!("fwknop helper")
}

/// fwknopd's replay digest: SHA-256 over the exact wire bytes.
pub fn replay_key(wire: &[u8]) -> [u8; 32] {
    let _ = wire;
    unimplemented!("fwknop helper")
}

/// Verify the HMAC (if the key has one), decrypt, verify the inner digest, parse the fields.
pub fn open(key: &FwknopKey, wire: &[u8]) -> Result<SpaMessage, FwknopError> {
    let _ = (key, wire);
    unimplemented!("fwknop helper")
}
