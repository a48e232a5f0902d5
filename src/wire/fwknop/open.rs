//! The receiver: [`precheck`] (cheap checks, no crypto), then [`open`] or [`open_prepared`]
//! (HMAC, decryption, lenient unpadding, inner digest, fields, in fwknopd's order), which also
//! give the replay identity of a packet ([`Opened::replay_id`]).

use sha2::Digest;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::digest::MAX_DIGEST_B64;
use super::hmac::{hmac_b64, PreparedMac, MAX_TAG_B64};
use super::key::{FwknopKey, PreparedKey};
use super::names::DigestType;
use super::{b64, cipher, fields};
use super::{
    plausible_len, FwknopError, SpaMessage, MAX_PLAINTEXT, MAX_WIRE_LEN, MIN_GNUPG_LEN,
    MIN_PLAINTEXT, SALTED_PREFIX,
};

/// Raw bytes the prefixed wire body can decode to; sized for the longest legal wire.
pub(super) const RAW_BUF: usize = b64::decoded_len(MAX_WIRE_LEN + SALTED_PREFIX.len());

/// Can `c` start a Rijndael wire packet? Wire char 0 is `enc_b64[10]`: the low nibble of `_`
/// (1111) and two salt bits, i.e. one of `8 9 + /` (§3.4).
fn rijndael_first_char(c: u8) -> bool {
    matches!(c, b'8' | b'9' | b'+' | b'/')
}

/// Heuristic for a clear log message: is this likely an fwknop GnuPG packet? GnuPG packets are
/// at least 400 characters (`MIN_GNUPG_MSG_SIZE`) and, with their `hQ` stripped, do not start
/// like a Rijndael packet. Not a security check.
pub fn looks_like_gpg(wire: &[u8]) -> bool {
    wire.len() >= MIN_GNUPG_LEN
        && wire.iter().all(|&c| b64::is_b64_char(c))
        && wire.first().is_some_and(|&c| !rijndael_first_char(c))
}

/// Cheap checks before any crypto: length, charset, the `U2FsdGVkX1` prefix, and the first
/// character every Rijndael packet has.
///
/// Stricter than fwknopd in two documented ways: `=` is refused (libfko never writes it), and
/// packets that cannot be Rijndael (GnuPG mode) are refused here rather than after an HMAC.
pub fn precheck(wire: &[u8]) -> Result<(), FwknopError> {
    if !plausible_len(wire.len()) {
        return Err(FwknopError::Length);
    }
    if !wire.iter().all(|&c| b64::is_b64_char(c)) {
        return Err(FwknopError::Charset);
    }
    if wire.starts_with(SALTED_PREFIX) {
        return Err(FwknopError::SaltedPrefix);
    }
    match wire.first() {
        Some(&c) if rijndael_first_char(c) => Ok(()),
        _ if looks_like_gpg(wire) => Err(FwknopError::Gpg),
        _ => Err(FwknopError::NotRijndael),
    }
}

/// Prefix of the data hashed into [`Opened::replay_id`], so an fwknop message identity never
/// equals a digest of wire bytes (fwknopd's replay digest, SHA-256 of the wire text, or a
/// native packet's identity).
const MESSAGE_ID_LABEL: &[u8] = b"nfknock fwknop message id v1\0";

/// A packet that authenticated and parsed, with its replay identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub message: SpaMessage,
    /// SHA-256 of `MESSAGE_ID_LABEL` and the authenticated plaintext (every field and the
    /// inner digest, as the inner digest was verified over them).
    ///
    /// Every spelling of a packet that opens at all yields the same plaintext, so it has this
    /// same identity: base64 variants (refused anyway, [`FwknopError::NonCanonical`]), ciphertext
    /// whose padding was altered — without an HMAC, stream modes (CTR, CFB, OFB) let anyone flip
    /// padding bits that libfko's lenient unpadding and C-string cut then ignore — and an HMAC'd
    /// packet with its tag cut off, opened by a no-HMAC client that shares the Rijndael key.
    /// Two honest packets never share it: each carries 16 fresh random digits and its timestamp.
    pub replay_id: [u8; 32],
}

/// Verify the HMAC (if the key has one), decrypt, verify the inner digest, parse the fields.
///
/// Runs [`precheck`] first (cheap; callers may also call it once before trying several keys).
/// Nothing is allocated until the HMAC has verified, and plaintext buffers are wiped.
pub fn open(key: &FwknopKey, wire: &[u8]) -> Result<SpaMessage, FwknopError> {
    open_with(key, None, prechecked(wire)?).map(|o| o.message)
}

/// A payload that passed [`precheck`]. Only [`prechecked`] makes one, so [`open_prepared`]
/// cannot be handed a packet that skipped the `U2FsdGVkX1` (replay-bypass) check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prechecked<'a>(&'a [u8]);

impl<'a> Prechecked<'a> {
    /// The wire bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.0
    }
}

/// [`precheck`], keeping the proof: check a packet once, then try it under many keys.
pub fn prechecked(wire: &[u8]) -> Result<Prechecked<'_>, FwknopError> {
    precheck(wire)?;
    Ok(Prechecked(wire))
}

/// [`open`] with a [`PreparedKey`], for a packet already [`prechecked`]; also returns the
/// packet's replay identity.
pub fn open_prepared(key: &PreparedKey, wire: Prechecked<'_>) -> Result<Opened, FwknopError> {
    open_with(&key.key, key.mac.as_ref(), wire)
}

/// The receiver pipeline after [`precheck`]; `mac`, when given, was prepared from `key`.
fn open_with(
    key: &FwknopKey,
    mac: Option<&PreparedMac>,
    wire: Prechecked<'_>,
) -> Result<Opened, FwknopError> {
    let wire = wire.0;
    if !key.usable() {
        return Err(FwknopError::Key);
    }

    // 1. HMAC first: it rejects every packet under a wrong key, before any decryption
    //    (`fko_verify_hmac`). The tag is the last N characters for the *configured* type.
    let body = match &key.hmac_key {
        Some(hk) => {
            let n = key.hmac_type.b64_len();
            let body_len = wire.len().checked_sub(n).filter(|&l| l >= MIN_PLAINTEXT);
            let (body, tag) = wire
                .split_at_checked(body_len.ok_or(FwknopError::Length)?)
                .ok_or(FwknopError::Length)?;
            let mut want = [0u8; MAX_TAG_B64];
            let len = match mac {
                Some(m) => m.tag_b64(body, &mut want)?,
                None => hmac_b64(key.hmac_type, hk, &[SALTED_PREFIX, body], &mut want)?,
            };
            let want = want.get(..len).unwrap_or(&[]);
            // Compare the base64 text as fwknopd does, never decoded bytes: the last tag
            // character carries leftover bits that lenient decoding ignores, so a byte compare
            // would accept altered wire strings — each with a fresh replay key.
            if !bool::from(want.ct_eq(tag)) {
                return Err(FwknopError::Hmac);
            }
            body
        }
        None => wire,
    };

    // 2. Re-add the prefix; refuse every spelling but the canonical one (libfko would take
    //    them all: without an HMAC each would be a fresh packet to a wire-keyed replay cache);
    //    decode into a stack buffer.
    if !b64::is_canonical(&[SALTED_PREFIX, body]) {
        return Err(FwknopError::NonCanonical);
    }
    let mut raw = Zeroizing::new([0u8; RAW_BUF]);
    let raw_len =
        b64::decode_into(&[SALTED_PREFIX, body], &mut raw[..]).ok_or(FwknopError::Charset)?;
    let raw = raw.get_mut(..raw_len).ok_or(FwknopError::CipherLength)?;
    if raw_len % cipher::BLOCK != 0 || raw_len < 2 * cipher::BLOCK {
        return Err(FwknopError::CipherLength);
    }

    // 3. Salt from raw[8..16] (the `Salted__` magic is not checked, as in `rij_decrypt`).
    let (head, ct) = raw.split_at_mut(cipher::BLOCK);
    let mut salt = [0u8; 8];
    salt.copy_from_slice(head.get(8..16).ok_or(FwknopError::CipherLength)?);
    cipher::PacketCipher::derive(&key.key, &salt, key.mode).decrypt(key.mode, ct);

    // 4. Lenient unpad; libfko's size checks; the 16-digits-and-colon "good key" check.
    //    libfko's `pt_len < cipher_len - 32 || pt_len <= 0` (fko_encryption.c) cannot fail
    //    here: the unpad drops at most one block, and the shortest packet precheck lets
    //    through carries two blocks of ciphertext; an empty plaintext would fail the length
    //    check below anyway.
    let pt_len = cipher::unpad_lenient(ct);
    let pt = ct.get(..pt_len).ok_or(FwknopError::Decrypt)?;
    if !(MIN_PLAINTEXT..MAX_PLAINTEXT).contains(&pt_len) {
        return Err(FwknopError::Malformed("plaintext length out of range"));
    }
    let rand_ok = pt
        .get(..fields::RAND_LEN)
        .is_some_and(|r| r.iter().all(u8::is_ascii_digit))
        && pt.get(fields::RAND_LEN) == Some(&b':');
    if !rand_ok {
        return Err(FwknopError::Decrypt);
    }
    // libfko treats the plaintext as a C string from here on.
    let pt = pt.split(|&b| b == 0).next().unwrap_or(&[]);
    if !(MIN_PLAINTEXT..MAX_PLAINTEXT).contains(&pt.len()) {
        return Err(FwknopError::Malformed("plaintext length out of range"));
    }
    if !pt.iter().all(|&b| (0x20..=0x7e).contains(&b)) {
        return Err(FwknopError::Malformed("non-printable plaintext"));
    }
    let text =
        std::str::from_utf8(pt).map_err(|_| FwknopError::Malformed("non-printable plaintext"))?;

    // 5. Inner digest: type from the length of the last field.
    if text.bytes().filter(|&b| b == b':').count() < fields::MIN_COLONS {
        return Err(FwknopError::Malformed("too few fields"));
    }
    let (encoded, digest) = text
        .rsplit_once(':')
        .ok_or(FwknopError::Malformed("too few fields"))?;
    let candidates = DigestType::candidates(digest.len());
    if candidates.is_empty() {
        return Err(FwknopError::Malformed("unknown inner digest length"));
    }
    let mut ok = false;
    for dt in candidates {
        let mut want = [0u8; MAX_DIGEST_B64];
        let n = dt.b64_into(encoded.as_bytes(), &mut want);
        if bool::from(want.get(..n).unwrap_or(&[]).ct_eq(digest.as_bytes())) {
            ok = true;
            break;
        }
    }
    if !ok {
        return Err(FwknopError::Digest);
    }

    // 6. Fields, and the identity of what was authenticated.
    let message = fields::parse(encoded)?;
    let mut id = sha2::Sha256::new();
    id.update(MESSAGE_ID_LABEL);
    id.update(text.as_bytes());
    Ok(Opened {
        message,
        replay_id: id.finalize().into(),
    })
}
