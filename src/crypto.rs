//! Keys and the primitives around them. Pure: randomness comes in through [`Rng`].
//!
//! Every key type zeroizes itself on drop and prints as `<redacted>` in `Debug`.
//!
//! A client's native secret is 32 random bytes. It never keys anything directly: HKDF-SHA256
//! (RFC 5869) derives one key per job, each under its own `info` label, so the AES-256-GCM key
//! and the key-hint key are independent (docs/PROTOCOL.md, "Keys").

use base64::Engine as _;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

/// Source of randomness, passed into the core so tests can be deterministic.
pub trait Rng {
    /// Fill `buf` completely with random bytes.
    fn fill(&mut self, buf: &mut [u8]);
}

/// Length of a client's native secret.
pub const SECRET_LEN: usize = 32;

/// HKDF `info` label of the AES-256-GCM key. Part of the wire format v1: changing it changes
/// every packet.
pub const AEAD_KEY_LABEL: &[u8] = b"nfknock v1 aead key";
/// HKDF `info` label of the key-hint (HMAC-SHA256) key. Part of the wire format v1.
pub const HINT_KEY_LABEL: &[u8] = b"nfknock v1 hint key";

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
    #[error(
        "not valid base64 (standard alphabet with `=` padding, as printed by `nfknock keygen`)"
    )]
    Base64,
    #[error(
        "wrong length: {got} bytes, expected {expected}; generate a secret with `nfknock keygen`"
    )]
    Length { got: usize, expected: usize },
}

impl NativeKey {
    /// Derive the encryption and hint keys from a 256-bit secret.
    ///
    /// HKDF-SHA256 with no salt (the secret is already uniformly random, RFC 5869 §3.1) and the
    /// `info` labels [`AEAD_KEY_LABEL`] and [`HINT_KEY_LABEL`].
    pub fn derive(secret: &[u8; SECRET_LEN]) -> NativeKey {
        let hk = Hkdf::<Sha256>::new(None, secret);
        let mut enc = Zeroizing::new([0u8; 32]);
        let mut hint = Zeroizing::new([0u8; 32]);
        // HKDF-Expand only fails for outputs longer than 255 × 32 bytes; ours are 32.
        hk.expand(AEAD_KEY_LABEL, enc.as_mut_slice())
            .expect("HKDF-SHA256 can expand 32 bytes");
        hk.expand(HINT_KEY_LABEL, hint.as_mut_slice())
            .expect("HKDF-SHA256 can expand 32 bytes");
        NativeKey { enc, hint }
    }

    /// Decode a base64 secret (as printed by `nfknock keygen`) and derive.
    ///
    /// Standard alphabet, canonical `=` padding, exactly [`SECRET_LEN`] bytes once decoded.
    /// Surrounding ASCII whitespace (a trailing newline from a key file) is ignored.
    pub fn from_base64(text: &str) -> Result<NativeKey, KeyError> {
        let text = text.trim_ascii();
        // Decode into a zeroized buffer; `decode` sizes the Vec once from the input length, so
        // no unzeroized copy is left behind by a reallocation.
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| KeyError::Base64)?,
        );
        let secret: &[u8; SECRET_LEN] =
            bytes.as_slice().try_into().map_err(|_| KeyError::Length {
                got: bytes.len(),
                expected: SECRET_LEN,
            })?;
        Ok(NativeKey::derive(secret))
    }
}

/// A new random secret, base64 with padding, for `nfknock keygen`.
pub fn generate_secret_base64(rng: &mut dyn Rng) -> Zeroizing<String> {
    let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
    rng.fill(secret.as_mut_slice());
    // 32 bytes are 44 base64 characters; reserve them up front so the String never reallocates
    // (a reallocation would leave an unzeroized copy of the secret in freed memory).
    let mut text = Zeroizing::new(String::with_capacity(SECRET_B64_LEN));
    base64::engine::general_purpose::STANDARD.encode_string(secret.as_slice(), &mut text);
    text
}

/// Length of a secret in base64 with padding.
const SECRET_B64_LEN: usize = SECRET_LEN.div_ceil(3) * 4;

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts up from a seed: enough to tell two draws apart, nothing more.
    struct CountingRng(u8);
    impl Rng for CountingRng {
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                *b = self.0;
                self.0 = self.0.wrapping_add(1);
            }
        }
    }

    #[test]
    fn derived_keys_differ_from_each_other_and_from_the_secret() {
        let secret = [7u8; 32];
        let k = NativeKey::derive(&secret);
        assert_ne!(*k.enc, *k.hint);
        assert_ne!(*k.enc, secret);
        assert_ne!(*k.hint, secret);
        // Deterministic.
        assert_eq!(*NativeKey::derive(&secret).enc, *k.enc);
        assert_ne!(*NativeKey::derive(&[8u8; 32]).enc, *k.enc);
    }

    #[test]
    fn derivation_is_rfc5869_hkdf_sha256_with_our_labels() {
        // Independent check: HKDF with no salt is PRK = HMAC(zeros(32), secret),
        // OKM = HMAC(PRK, info || 0x01) for a 32-byte output.
        use hmac::{Hmac, KeyInit, Mac};
        let secret = [0x42u8; 32];
        let mut ext = <Hmac<Sha256> as KeyInit>::new_from_slice(&[0u8; 32]).unwrap();
        ext.update(&secret);
        let prk = ext.finalize().into_bytes();
        for (label, got) in [
            (AEAD_KEY_LABEL, *NativeKey::derive(&secret).enc),
            (HINT_KEY_LABEL, *NativeKey::derive(&secret).hint),
        ] {
            let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&prk).unwrap();
            m.update(label);
            m.update(&[1]);
            assert_eq!(m.finalize().into_bytes().as_slice(), &got);
        }
    }

    #[test]
    fn base64_round_trip_through_keygen() {
        let text = generate_secret_base64(&mut CountingRng(0));
        assert_eq!(text.len(), 44);
        assert!(text.ends_with('='));
        let secret: [u8; 32] = std::array::from_fn(|i| i as u8);
        let k = NativeKey::from_base64(&text).unwrap();
        assert_eq!(*k.enc, *NativeKey::derive(&secret).enc);
        // A trailing newline from a key file is fine.
        assert!(NativeKey::from_base64(&format!("{}\n", *text)).is_ok());
    }

    #[test]
    fn base64_refusals_are_specific() {
        assert_eq!(
            NativeKey::from_base64("not base64!").unwrap_err(),
            KeyError::Base64
        );
        // 44 chars but without padding is not canonical.
        let mut text = generate_secret_base64(&mut CountingRng(0)).to_string();
        text.pop();
        assert_eq!(NativeKey::from_base64(&text).unwrap_err(), KeyError::Base64);
        // 16 bytes, valid base64.
        assert_eq!(
            NativeKey::from_base64("AAAAAAAAAAAAAAAAAAAAAA==").unwrap_err(),
            KeyError::Length {
                got: 16,
                expected: 32
            }
        );
        assert_eq!(
            NativeKey::from_base64("").unwrap_err(),
            KeyError::Length {
                got: 0,
                expected: 32
            }
        );
        let long = base64::engine::general_purpose::STANDARD.encode([1u8; 33]);
        assert_eq!(
            NativeKey::from_base64(&long).unwrap_err(),
            KeyError::Length {
                got: 33,
                expected: 32
            }
        );
    }

    #[test]
    fn debug_never_prints_key_material() {
        let k = NativeKey::derive(&[0xAB; 32]);
        let shown = format!("{k:?}");
        assert_eq!(shown, "NativeKey(<redacted>)");
    }
}
