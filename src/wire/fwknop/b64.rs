//! Base64 exactly as libfko writes and reads it (`lib/base64.c`).
//!
//! Writing: RFC 4648 standard alphabet, and libfko strips the `=` padding (`strip_b64_eq()`), so
//! every base64 string on an fwknop wire has none.
//!
//! Reading (`b64_decode`) is lenient, and we must be bit-compatible with it (FWKNOP-WIRE.md
//! §5.4): decoding stops at the first `=`, any other character outside the alphabet is an
//! error, every character but the first of each group of four emits one byte, so a final lone
//! character yields nothing and left-over bits are ignored. The `base64` crate's strict engines
//! refuse some of the strings libfko accepts, hence this small codec. Nothing here allocates;
//! callers hand in the output buffer.

pub(super) const ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Marks bytes outside the alphabet in [`DECODE`].
const INVALID: u8 = 0xff;

/// Byte → 6-bit value, [`INVALID`] outside the alphabet. A table rather than a `match`: the
/// charset scan of [`super::precheck`] runs on every queued packet.
const DECODE: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// The 6-bit value of a base64 character, `None` outside the alphabet.
#[inline]
pub(super) fn sextet(c: u8) -> Option<u8> {
    let v = DECODE[usize::from(c)];
    (v != INVALID).then_some(v)
}

/// Is `c` in the base64 alphabet (without `=`)?
#[inline]
pub(super) fn is_b64_char(c: u8) -> bool {
    DECODE[usize::from(c)] != INVALID
}

/// Number of bytes libfko's decoder emits for `n` alphabet characters.
pub(super) const fn decoded_len(n: usize) -> usize {
    let rem = n % 4;
    n / 4 * 3 + if rem == 0 { 0 } else { rem - 1 }
}

/// Number of characters of the unpadded encoding of `n` bytes.
pub(super) const fn encoded_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

/// Decode the concatenation of `parts` the way libfko's `b64_decode` does, into `out`.
///
/// Returns the number of bytes written, or `None` if a character is outside the alphabet or
/// `out` is too small. Taking several parts lets the receiver decode `"U2FsdGVkX1" + body`
/// without first copying the two into one buffer.
pub(super) fn decode_into(parts: &[&[u8]], out: &mut [u8]) -> Option<usize> {
    // Only the low 12 bits of the accumulator are ever read: a byte is emitted from at most
    // two sextets.
    let mut acc: u32 = 0;
    let mut written = 0;
    for (i, &c) in parts.iter().flat_map(|p| p.iter()).enumerate() {
        if c == b'=' {
            break;
        }
        let v = sextet(c)?;
        acc = ((acc << 6) | u32::from(v)) & 0xfff;
        let phase = i & 3;
        if phase != 0 {
            let byte = (acc >> (6 - 2 * phase)) as u8;
            *out.get_mut(written)? = byte;
            written += 1;
        }
    }
    Some(written)
}

/// Is the concatenation of `parts` the canonical unpadded encoding of the bytes
/// [`decode_into`] reads from it, i.e. exactly what [`encode_into`] writes for them?
///
/// For a string of alphabet characters that means: no lone final character (which decodes to
/// nothing) and zeros in the unused low bits of the final character (which decoding ignores).
/// libfko accepts both (§5.4), so without this check a captured packet has more than one
/// spelling. A character outside the alphabet (`=` included) makes the answer `false`.
pub(super) fn is_canonical(parts: &[&[u8]]) -> bool {
    let mut n = 0usize;
    let mut last = None;
    for &c in parts.iter().flat_map(|p| p.iter()) {
        if !is_b64_char(c) {
            return false;
        }
        n += 1;
        last = Some(c);
    }
    let Some(v) = last.and_then(sextet) else {
        return true;
    };
    match n % 4 {
        0 => true,
        1 => false,
        // Two characters carry one byte: the last one's low 4 bits are unused.
        2 => v & 0x0f == 0,
        // Three characters carry two bytes: the last one's low 2 bits are unused.
        _ => v & 0x03 == 0,
    }
}

/// Encode `input` without padding into `out`; returns the number of characters written, or
/// `None` if `out` is shorter than [`encoded_len`]`(input.len())`.
pub(super) fn encode_into(input: &[u8], out: &mut [u8]) -> Option<usize> {
    let need = encoded_len(input.len());
    let out = out.get_mut(..need)?;
    let mut o = out.iter_mut();
    let mut put = |sextet: u32| {
        if let Some(slot) = o.next() {
            // `sextet & 63` indexes a 64-entry table: cannot go out of bounds.
            *slot = ALPHABET[(sextet & 63) as usize];
        }
    };
    for chunk in input.chunks(3) {
        let b0 = u32::from(chunk.first().copied().unwrap_or(0));
        let b1 = u32::from(chunk.get(1).copied().unwrap_or(0));
        let b2 = u32::from(chunk.get(2).copied().unwrap_or(0));
        let n = (b0 << 16) | (b1 << 8) | b2;
        put(n >> 18);
        put(n >> 12);
        if chunk.len() > 1 {
            put(n >> 6);
        }
        if chunk.len() > 2 {
            put(n);
        }
    }
    Some(need)
}

/// Encode `input` without padding into a new `String` (encoder side only).
pub(super) fn encode_string(input: &[u8]) -> String {
    let mut buf = vec![0u8; encoded_len(input.len())];
    let n = encode_into(input, &mut buf).unwrap_or(0);
    buf.truncate(n);
    // Only alphabet characters were written.
    String::from_utf8(buf).unwrap_or_default()
}

/// Decode a base64 string with libfko's lenient rules (§5.4): stops at the first `=`, ignores
/// left-over bits, drops a final lone character. `None` if any character before the first `=`
/// is outside the alphabet.
///
/// This is how fwknopd reads `KEY_BASE64` / `HMAC_KEY_BASE64` (with their `=` padding) and every
/// base64 field inside an SPA packet. Surrounding whitespace is not trimmed: the config parser
/// must do that, as fwknopd's does.
pub fn decode_b64_lenient(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let chars = bytes.iter().position(|&c| c == b'=').unwrap_or(bytes.len());
    let mut out = vec![0u8; decoded_len(chars)];
    let n = decode_into(&[bytes], &mut out)?;
    out.truncate(n);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn encoder_output_is_canonical(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            prop_assert!(is_canonical(&[enc(&data).as_bytes()]));
        }

        /// Canonical ⇔ re-encoding the decoded bytes gives the same string back.
        #[test]
        fn canonical_iff_it_re_encodes_to_itself(s in "[A-Za-z0-9+/]{0,40}", cut in 0usize..40) {
            let b = s.as_bytes();
            let (x, y) = b.split_at(cut.min(b.len()));
            let decoded = decode_b64_lenient(&s).unwrap();
            prop_assert_eq!(is_canonical(&[x, y]), enc(&decoded) == s, "{}", s);
        }
    }

    fn enc(b: &[u8]) -> String {
        encode_string(b)
    }

    #[test]
    fn encodes_like_standard_base64_without_padding() {
        for len in 0..70 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let std = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&data);
            assert_eq!(enc(&data), std, "len {len}");
            assert_eq!(encoded_len(len), std.len());
        }
        assert_eq!(enc(b"root"), "cm9vdA");
        assert_eq!(enc(b"10.1.2.3,tcp/22"), "MTAuMS4yLjMsdGNwLzIy");
    }

    #[test]
    fn decodes_canonical_strings() {
        assert_eq!(decode_b64_lenient("cm9vdA").unwrap(), b"root");
        assert_eq!(decode_b64_lenient("cm9vdA==").unwrap(), b"root");
        assert_eq!(decode_b64_lenient("").unwrap(), b"");
        for len in 0..70 {
            let data: Vec<u8> = (0..len).map(|i| (i * 91 + 3) as u8).collect();
            let s = base64::engine::general_purpose::STANDARD.encode(&data);
            assert_eq!(decode_b64_lenient(&s).unwrap(), data, "{s}");
            assert_eq!(decode_b64_lenient(s.trim_end_matches('=')).unwrap(), data);
        }
    }

    #[test]
    fn lenient_quirks_match_libfko() {
        // Non-zero trailing bits are ignored ("cm9vdB" has low bits set in its last char).
        assert_eq!(decode_b64_lenient("cm9vdB").unwrap(), b"root");
        // A final lone character yields nothing.
        assert_eq!(decode_b64_lenient("cm9vZ").unwrap(), b"roo");
        assert_eq!(decode_b64_lenient("cm9vZ==").unwrap(), b"roo");
        assert_eq!(decode_b64_lenient("Q").unwrap(), b"");
        // Decoding stops at the first '=', whatever follows.
        assert_eq!(decode_b64_lenient("cm9vdA=!!garbage").unwrap(), b"root");
        assert_eq!(decode_b64_lenient("=abc").unwrap(), b"");
        // Anything else outside the alphabet is an error.
        for bad in [
            "cm9v dA", "cm9v\ndA", "cm9v-A", "cm9v_A", "!", "cm9vd\0A", "é",
        ] {
            assert_eq!(decode_b64_lenient(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn decode_into_refuses_short_output_and_joins_parts() {
        let mut out = [0u8; 3];
        assert_eq!(decode_into(&[b"cm9vdA"], &mut out), None);
        let mut out = [0u8; 8];
        assert_eq!(decode_into(&[b"cm9", b"vdA"], &mut out), Some(4));
        assert_eq!(&out[..4], b"root");
        assert_eq!(decode_into(&[b"U2FsdGVkX1"], &mut out), Some(7));
        assert_eq!(&out[..7], b"Salted_");
    }

    #[test]
    fn canonical_is_exactly_what_the_encoder_writes() {
        assert!(is_canonical(&[b"cm9vdA"]));
        assert!(is_canonical(&[b"cm9v", b"dA"]));
        assert!(is_canonical(&[b""]));
        assert!(is_canonical(&[]));
        // Spare bits set, a lone final character, padding, foreign characters.
        assert!(is_canonical(&[b"cm9vZA"]) && is_canonical(&[b"cm9vZm8"]));
        for bad in [
            "cm9vdB", "cm9vdP", "cm9vZm9", "cm9vZ", "Q", "cm9vdA==", "cm9v dA",
        ] {
            assert!(!is_canonical(&[bad.as_bytes()]), "{bad}");
        }
        // "U2FsdGVkX1" ends in the middle of a group: the split does not matter.
        for (tail, ok) in [
            ("8A", true),
            ("8AB", false),
            ("8AAA", true),
            ("8AAB", false),
            ("8AAAA", true),
            ("8AAAB", false),
        ] {
            assert_eq!(
                is_canonical(&[b"U2FsdGVkX1", tail.as_bytes()]),
                ok,
                "{tail}"
            );
        }
    }

    #[test]
    fn decoded_len_matches_decoder() {
        for n in 0..40 {
            let s = "A".repeat(n);
            assert_eq!(
                decode_b64_lenient(&s).unwrap().len(),
                decoded_len(n),
                "n={n}"
            );
        }
    }
}
