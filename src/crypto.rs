//! Keys and the primitives around them. Pure: randomness comes in through [`Rng`].
//!
//! Every key type zeroizes itself on drop and prints as `<redacted>` in `Debug`.
//!
//! SKELETON: the native-format helper owns this file (HKDF derivation, key generation).

use zeroize::Zeroizing;

/// Source of randomness, passed into the core so tests can be deterministic.
pub trait Rng {
    fn fill(&mut self, buf: &mut [u8]);
}

/// The operating system's CSPRNG (`getrandom(2)`).
pub struct OsRng;

impl Rng for OsRng {
    fn fill(&mut self, buf: &mut [u8]) {
        // getrandom(2) only fails before the kernel pool is initialised at early boot or with
        // invalid arguments; neither can be worked around safely, so a failure is fatal.
        getrandom::fill(buf).expect("getrandom(2) failed: the kernel has no entropy source");
    }
}

/// Length of a client's native secret.
pub const SECRET_LEN: usize = 32;

/// A client's native 256-bit secret and the two keys derived from it with HKDF-SHA256
/// (distinct labels): one for AES-256-GCM, one for the key hint.
#[derive(Clone)]
pub struct NativeKey {
    pub(crate) enc: Zeroizing<[u8; 32]>,
    pub(crate) hint: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for NativeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NativeKey(<redacted>)")
    }
}

/// Why key material was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not valid base64")]
    Base64,
    #[error("wrong length: {got} bytes, expected {expected}")]
    Length { got: usize, expected: usize },
}

impl NativeKey {
    /// Derive the encryption and hint keys from a 256-bit secret.
    pub fn derive(secret: &[u8; SECRET_LEN]) -> NativeKey {
        let _ = secret;
        unimplemented!("native helper")
    }

    /// Decode a base64 secret (as printed by `nfknock keygen`) and derive.
    pub fn from_base64(text: &str) -> Result<NativeKey, KeyError> {
        let _ = text;
        unimplemented!("native helper")
    }
}

/// A new random secret, base64 with padding, for `nfknock keygen`.
pub fn generate_secret_base64(rng: &mut dyn Rng) -> Zeroizing<String> {
    let _ = rng;
    unimplemented!("native helper")
}
