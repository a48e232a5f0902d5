//! fwknop's names for its algorithms: the HMAC type (`HMAC_DIGEST_TYPE`), the Rijndael mode
//! (`ENCRYPTION_MODE`) and the inner digest type (`DIGEST_TYPE`), in fwknop's spellings
//! (`FromStr`, `Display`, serde) and with their lengths on the wire. Hashing with them lives in
//! `digest` and `hmac`.

use std::fmt;
use std::str::FromStr;

use super::b64;

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

/// A name given to `FromStr` that is not one of fwknop's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{given}`; expected one of: {expected}")]
pub struct ParseNameError {
    kind: &'static str,
    given: String,
    expected: &'static str,
}

impl HmacType {
    /// All HMAC types.
    pub const ALL: [HmacType; 7] = [
        HmacType::Md5,
        HmacType::Sha1,
        HmacType::Sha256,
        HmacType::Sha384,
        HmacType::Sha512,
        HmacType::Sha3_256,
        HmacType::Sha3_512,
    ];

    /// Raw tag length in bytes.
    pub fn tag_len(self) -> usize {
        match self {
            HmacType::Md5 => 16,
            HmacType::Sha1 => 20,
            HmacType::Sha256 | HmacType::Sha3_256 => 32,
            HmacType::Sha384 => 48,
            HmacType::Sha512 | HmacType::Sha3_512 => 64,
        }
    }

    /// Characters the tag takes at the end of the wire packet (unpadded base64, §4.1).
    pub fn b64_len(self) -> usize {
        b64::encoded_len(self.tag_len())
    }

    /// fwknop's lowercase spelling (`HMAC_DIGEST_TYPE`, `--hmac-digest-type`).
    pub fn name(self) -> &'static str {
        match self {
            HmacType::Md5 => "md5",
            HmacType::Sha1 => "sha1",
            HmacType::Sha256 => "sha256",
            HmacType::Sha384 => "sha384",
            HmacType::Sha512 => "sha512",
            HmacType::Sha3_256 => "sha3_256",
            HmacType::Sha3_512 => "sha3_512",
        }
    }
}

/// fwknopd's default `HMAC_DIGEST_TYPE` whenever an HMAC key is set.
impl Default for HmacType {
    fn default() -> Self {
        HmacType::Sha256
    }
}

impl fmt::Display for HmacType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Case-insensitive, as `hmac_digest_strtoint()`; `sha3-256` is accepted for `sha3_256`.
impl FromStr for HmacType {
    type Err = ParseNameError;
    fn from_str(s: &str) -> Result<Self, ParseNameError> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        HmacType::ALL
            .into_iter()
            .find(|t| t.name() == norm)
            .ok_or_else(|| ParseNameError {
                kind: "HMAC digest type",
                given: s.to_string(),
                expected: "md5, sha1, sha256, sha384, sha512, sha3_256, sha3_512",
            })
    }
}

impl EncMode {
    /// All supported modes.
    pub const ALL: [EncMode; 6] = [
        EncMode::Cbc,
        EncMode::Ctr,
        EncMode::Cfb,
        EncMode::Ofb,
        EncMode::Ecb,
        EncMode::Legacy,
    ];

    /// fwknop's spelling (`ENCRYPTION_MODE`, `-M`; `lib/fko_util.c:fko_enc_mode_strs`).
    pub fn name(self) -> &'static str {
        match self {
            EncMode::Cbc => "CBC",
            EncMode::Ctr => "CTR",
            EncMode::Cfb => "CFB",
            EncMode::Ofb => "OFB",
            EncMode::Ecb => "ECB",
            EncMode::Legacy => "legacy",
        }
    }
}

/// CBC, fwknop's default `ENCRYPTION_MODE`.
impl Default for EncMode {
    fn default() -> Self {
        EncMode::Cbc
    }
}

impl fmt::Display for EncMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Case-insensitive, as `enc_mode_strtoint()`. `Asymmetric` (GnuPG) and `PCBC` are refused.
impl FromStr for EncMode {
    type Err = ParseNameError;
    fn from_str(s: &str) -> Result<Self, ParseNameError> {
        let t = s.trim();
        EncMode::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(t))
            .ok_or_else(|| ParseNameError {
                kind: "encryption mode",
                given: s.to_string(),
                expected: "CBC, CTR, CFB, OFB, ECB, legacy (GnuPG `Asymmetric` and PCBC are not supported)",
            })
    }
}

/// Inner digest of the SPA message (`DIGEST_TYPE`, `-m`; §2.6). The receiver infers it from the
/// digest's length; the sender picks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestType {
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

impl DigestType {
    /// All digest types.
    pub const ALL: [DigestType; 7] = [
        DigestType::Md5,
        DigestType::Sha1,
        DigestType::Sha256,
        DigestType::Sha384,
        DigestType::Sha512,
        DigestType::Sha3_256,
        DigestType::Sha3_512,
    ];

    /// Raw digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            DigestType::Md5 => 16,
            DigestType::Sha1 => 20,
            DigestType::Sha256 | DigestType::Sha3_256 => 32,
            DigestType::Sha384 => 48,
            DigestType::Sha512 | DigestType::Sha3_512 => 64,
        }
    }

    /// Length of its unpadded base64 form, the last field of the plaintext.
    pub fn b64_len(self) -> usize {
        b64::encoded_len(self.digest_len())
    }

    /// fwknop's lowercase spelling.
    pub fn name(self) -> &'static str {
        match self {
            DigestType::Md5 => "md5",
            DigestType::Sha1 => "sha1",
            DigestType::Sha256 => "sha256",
            DigestType::Sha384 => "sha384",
            DigestType::Sha512 => "sha512",
            DigestType::Sha3_256 => "sha3_256",
            DigestType::Sha3_512 => "sha3_512",
        }
    }
}

impl fmt::Display for DigestType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Case-insensitive like `digest_strtoint()`; `sha3-256` is accepted for `sha3_256`.
impl FromStr for DigestType {
    type Err = ParseNameError;
    fn from_str(s: &str) -> Result<Self, ParseNameError> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        DigestType::ALL
            .into_iter()
            .find(|t| t.name() == norm)
            .ok_or_else(|| ParseNameError {
                kind: "digest type",
                given: s.to_string(),
                expected: "md5, sha1, sha256, sha384, sha512, sha3_256, sha3_512",
            })
    }
}
