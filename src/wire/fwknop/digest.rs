//! The inner digest (FWKNOP-WIRE.md §2.6): the hash of the encoded fields that ends every
//! plaintext, as unpadded base64. The receiver infers its type from its length.

use sha2::Digest;

use super::b64;
use super::names::DigestType;

/// Largest digest, in bytes (SHA-512, SHA3-512); HMAC tags share the bound.
pub(super) const MAX_DIGEST_LEN: usize = 64;
/// Its base64 length.
pub(super) const MAX_DIGEST_B64: usize = b64::encoded_len(MAX_DIGEST_LEN);

impl DigestType {
    /// Candidates for a digest field of `b64_len` characters, in libfko's order
    /// (`verify_digest`: SHA-256 before SHA3-256, SHA-512 before SHA3-512).
    pub(super) fn candidates(b64_len: usize) -> &'static [DigestType] {
        match b64_len {
            22 => &[DigestType::Md5],
            27 => &[DigestType::Sha1],
            43 => &[DigestType::Sha256, DigestType::Sha3_256],
            64 => &[DigestType::Sha384],
            86 => &[DigestType::Sha512, DigestType::Sha3_512],
            _ => &[],
        }
    }

    /// Unpadded base64 of the digest of `data`, written into `out`; returns its length.
    pub(super) fn b64_into(self, data: &[u8], out: &mut [u8; MAX_DIGEST_B64]) -> usize {
        let mut raw = [0u8; MAX_DIGEST_LEN];
        let n = match self {
            DigestType::Md5 => put(&mut raw, &md5::Md5::digest(data)),
            DigestType::Sha1 => put(&mut raw, &sha1::Sha1::digest(data)),
            DigestType::Sha256 => put(&mut raw, &sha2::Sha256::digest(data)),
            DigestType::Sha384 => put(&mut raw, &sha2::Sha384::digest(data)),
            DigestType::Sha512 => put(&mut raw, &sha2::Sha512::digest(data)),
            DigestType::Sha3_256 => put(&mut raw, &sha3::Sha3_256::digest(data)),
            DigestType::Sha3_512 => put(&mut raw, &sha3::Sha3_512::digest(data)),
        };
        b64::encode_into(raw.get(..n).unwrap_or(&[]), out).unwrap_or(0)
    }
}

/// Copy a hash output into a fixed buffer; returns its length.
pub(super) fn put(dst: &mut [u8], src: &[u8]) -> usize {
    match dst.get_mut(..src.len()) {
        Some(d) => {
            d.copy_from_slice(src);
            src.len()
        }
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The length table in `candidates` agrees with `b64_len` for every type, in libfko's order.
    #[test]
    fn candidates_are_the_types_of_that_length() {
        for len in 0..=MAX_DIGEST_B64 + 1 {
            let want: Vec<DigestType> = DigestType::ALL
                .into_iter()
                .filter(|d| d.b64_len() == len)
                .collect();
            assert_eq!(DigestType::candidates(len), &want[..], "{len}");
        }
        assert!(DigestType::ALL
            .iter()
            .all(|d| d.digest_len() <= MAX_DIGEST_LEN));
    }

    /// `put` copies a whole hash or nothing: a buffer too small for it (which the bound above
    /// rules out) gives an empty digest or tag, which never matches, rather than a panic or a
    /// truncated tag.
    #[test]
    fn put_copies_all_or_nothing() {
        let mut buf = [0u8; 4];
        assert_eq!(put(&mut buf, &[7; 4]), 4);
        assert_eq!(buf, [7; 4]);
        assert_eq!(put(&mut buf, &[9; 5]), 0);
        assert_eq!(buf, [7; 4], "left untouched");
    }
}
