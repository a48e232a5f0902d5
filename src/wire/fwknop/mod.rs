//! fwknop 2.x SPA packets (shared/FWKNOP-WIRE.md): base64 text, Rijndael (EVP_BytesToKey-MD5 →
//! AES-256) in CBC/CTR/CFB/OFB/ECB/legacy, HMAC checked before decryption in constant time,
//! an inner digest, `:`-separated fields. Parsing never panics; post-decryption bytes are still
//! hostile (fwknop CVE-2012-4434/4435).
//!
//! Receiver pipeline ([`open`]; [`open_prepared`] is the same for a server that tries one packet
//! under many keys), in fwknopd's order (`lib/fko_funcs.c:fko_new_with_data`,
//! `lib/fko_encryption.c`, `lib/fko_decode.c`):
//!
//! 1. [`precheck`]: length, charset, `U2FsdGVkX1` prefix, first character — no crypto;
//! 2. HMAC over `"U2FsdGVkX1" + body` (type from the key, tag = last N chars), constant time;
//! 3. canonical base64 only, decoded as libfko does; EVP_BytesToKey-MD5 → AES-256, decrypt in
//!    the configured mode;
//! 4. lenient PKCS#7 unpad, the `[0-9]{16}:` check, C-string cut, printable check;
//! 5. inner digest (type from its length, SHA3 as fallback), then `fields` parsing.
//!
//! The replay identity of an opened packet ([`Opened::replay_id`]) is a digest of its
//! authenticated plaintext, not of its spelling on the wire: see [`Opened`].
//!
//! Nothing allocates before the HMAC has verified: the ciphertext is decoded into a stack
//! buffer. [`seal`] is the encoder (tests, benchmarks); [`seal_random`] is what our own client
//! (`nfknock knock --fwknop`) sends.
//!
//! Submodules, one concern each: `names` (HMAC, mode and digest types and their spellings),
//! `key` (credentials and their limits), `open` (the receiver), `seal` (the encoder), `hmac`
//! (the outer tag), `digest` (the inner digest), `cipher` (key derivation and block modes),
//! `b64` (libfko's lenient base64), `fields` (the plaintext fields). This file holds what they
//! share: the wire limits, [`SpaMessage`] and [`FwknopError`].

mod b64;
mod cipher;
mod digest;
mod fields;
mod hmac;
mod key;
mod names;
mod open;
mod seal;

pub use b64::decode_b64_lenient;
pub use fields::{valid_username, MAX_CLIENT_TIMEOUT, MAX_USERNAME_LEN};
pub use key::{
    decode_key_base64, keygen_hmac_len, FwknopKey, FwknopKeyError, PreparedKey, KEYGEN_KEY_LEN,
    MAX_HMAC_KEY_LEN, MAX_KEY_LEN, PLACEHOLDER_KEY,
};
pub use names::{DigestType, EncMode, HmacType, ParseNameError};
pub use open::{looks_like_gpg, open, open_prepared, precheck, prechecked, Opened, Prechecked};
pub use seal::{
    random_digits, seal, seal_random, seal_raw_plaintext, SealRequest, PROTOCOL_VERSION,
};

use std::net::Ipv4Addr;

use crate::access::Access;

/// `MAX_SPA_ENCODED_MSG_SIZE` (lib/fko_limits.h): libfko refuses a wire packet, and a
/// plaintext, this long or longer.
const MAX_SPA_ENCODED_MSG_SIZE: usize = 1500;
/// fwknopd's `MIN_SPA_DATA_SIZE` (server/fwknopd_common.h). Other modules (the nftables length
/// filter, config checks) take the fwknop length range from here.
pub const MIN_WIRE_LEN: usize = 140;
/// The longest wire packet libfko accepts: one less than `MAX_SPA_ENCODED_MSG_SIZE`.
pub const MAX_WIRE_LEN: usize = MAX_SPA_ENCODED_MSG_SIZE - 1;

/// Could a payload of this length be an fwknop packet?
pub fn plausible_len(len: usize) -> bool {
    (MIN_WIRE_LEN..=MAX_WIRE_LEN).contains(&len)
}

/// `"U2FsdGVkX1"`: base64 of `Salted_` plus the high nibble of `_` (§3.4). Every Rijndael
/// `enc_b64` starts with it and the client strips it from the wire.
pub const SALTED_PREFIX: &[u8; 10] = b"U2FsdGVkX1";
/// OpenSSL's salt magic, the first 8 raw bytes of every Rijndael ciphertext.
const SALTED_MAGIC: &[u8; 8] = b"Salted__";
/// `MIN_GNUPG_MSG_SIZE` (lib/fko_limits.h): libfko calls anything this long GnuPG.
pub const MIN_GNUPG_LEN: usize = 400;
/// `MIN_SPA_ENCODED_MSG_SIZE` / `MAX_SPA_ENCODED_MSG_SIZE`: plaintext bounds,
/// `MIN_PLAINTEXT ≤ len < MAX_PLAINTEXT`.
const MIN_PLAINTEXT: usize = 36;
const MAX_PLAINTEXT: usize = MAX_SPA_ENCODED_MSG_SIZE;

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

impl SpaMessage {
    /// The NAT target `(host, port)` of a NAT message (types 2, 4, 5, 6), already validated.
    pub fn nat_target(&self) -> Option<(&str, u16)> {
        self.nat_access
            .as_deref()
            .and_then(|s| fields::parse_nat(s).ok())
    }

    /// The command of a command message (type 0): the raw message after the allow IP.
    pub fn command(&self) -> Option<&str> {
        if self.message_type == 0 {
            self.message.split_once(',').map(|(_, cmd)| cmd)
        } else {
            None
        }
    }
}

/// Why an fwknop packet was refused. Small and `Copy`: nothing allocates on the error path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FwknopError {
    /// Wire length outside [`MIN_WIRE_LEN`]`..=`[`MAX_WIRE_LEN`] (fwknopd `MIN_SPA_DATA_SIZE`,
    /// libfko `MAX_SPA_ENCODED_MSG_SIZE`), or a sealed packet that would be.
    #[error("wrong length")]
    Length,
    /// A byte outside `[A-Za-z0-9+/]` (fwknopd `SPA_MSG_NOT_SPA_DATA`).
    #[error("not base64 SPA data")]
    Charset,
    /// The packet itself starts with `U2FsdGVkX1`: fwknopd's `preprocess_spa_data` refuses it,
    /// else prepending the prefix to a captured packet would dodge the replay cache.
    #[error("starts with the `U2FsdGVkX1` prefix (replay-bypass attempt)")]
    SaltedPrefix,
    /// Long packet whose first character cannot start a Rijndael packet: most likely fwknop's
    /// GnuPG mode, which is not supported.
    #[error("GnuPG-encrypted fwknop packet (not supported; use Rijndael keys)")]
    Gpg,
    /// First character not one of `8 9 + /`: every Rijndael packet starts with one of them
    /// (FWKNOP-WIRE.md §3.4), so this is not fwknop data.
    #[error("not an fwknop Rijndael packet (bad first character)")]
    NotRijndael,
    /// The key itself is unusable (Rijndael key not 1..=[`MAX_KEY_LEN`] bytes, HMAC key not
    /// 1..=[`MAX_HMAC_KEY_LEN`]).
    #[error(
        "unusable key (Rijndael key must be 1-{key} bytes, HMAC key 1-{hmac} bytes)",
        key = MAX_KEY_LEN,
        hmac = MAX_HMAC_KEY_LEN
    )]
    Key,
    /// HMAC mismatch (`FKO_ERROR_INVALID_DATA_HMAC_COMPAREFAIL`): wrong HMAC key or type, or a
    /// tampered packet.
    #[error("HMAC mismatch")]
    Hmac,
    /// The ciphertext's base64 is not canonical (a lone final character, or unused bits set in
    /// the last one). libfko would decode it to the same bytes, but no client writes it: it is
    /// a re-spelled copy of a packet. Stricter than fwknopd; checked before decryption.
    #[error("base64 not in canonical form (a re-spelled copy of a packet)")]
    NonCanonical,
    /// Ciphertext is not a whole number of AES blocks after the salt
    /// (`FKO_ERROR_INVALID_DATA_DECRYPT_CIPHERLEN_VALIDFAIL`).
    #[error("ciphertext is not a whole number of AES blocks")]
    CipherLength,
    /// The plaintext does not start with 16 digits and `:` (`FKO_ERROR_DECRYPTION_FAILURE`):
    /// the wrong Rijndael key or mode when no HMAC is used.
    #[error("decryption failed (wrong key or encryption mode)")]
    Decrypt,
    /// The inner digest does not match (`FKO_ERROR_DIGEST_VERIFICATION_FAILED`).
    #[error("inner digest mismatch")]
    Digest,
    /// The decrypted message breaks a libfko rule; the text names which.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

#[cfg(test)]
mod tests;
