//! Rijndael as libfko uses it (`lib/cipher_funcs.c`, `lib/rijndael.c`; FWKNOP-WIRE.md §3).
//!
//! Key and IV come from OpenSSL's `EVP_BytesToKey(aes-256, md5, salt, pass, 1)`: always
//! AES-256, whatever the passphrase length. The block modes are RustCrypto's (`cbc`,
//! `cfb-mode`, `ofb`, `ctr`) over `aes`: libfko's `block_encrypt`/`block_decrypt` are the
//! standard modes (CFB-128, 128-bit big-endian CTR from the IV; FWKNOP-WIRE.md §3.2), and ECB is
//! `aes`'s own `*_blocks`. What stays here is what libfko does its own way: legacy mode's
//! passphrase handling, `EVP_BytesToKey`, and the lenient padding removal. Every mode runs over
//! whole 16-byte blocks because libfko PKCS#7-pads in every mode; the padding is ours, never
//! the crates'.

use aes::cipher::{
    BlockCipherDecrypt, BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt, InnerIvInit,
    KeyInit, StreamCipherCore,
};
use aes::{Aes256, Block};
use md5::{Digest, Md5};
use zeroize::Zeroizing;

use super::{EncMode, MAX_KEY_LEN};

/// AES block size.
pub(super) const BLOCK: usize = 16;
/// `RIJNDAEL_MIN_KEYSIZE` (lib/rijndael.h): legacy mode pads the passphrase to this length.
const LEGACY_KEY_LEN: usize = 16;

/// An AES-256 key schedule plus the IV, both derived from one packet's salt.
pub(super) struct PacketCipher {
    aes: Aes256,
    iv: [u8; BLOCK],
}

impl Drop for PacketCipher {
    fn drop(&mut self) {
        // The round keys are wiped by `aes`'s own Drop (feature "zeroize"); wipe the IV too.
        zeroize::Zeroize::zeroize(&mut self.iv);
    }
}

/// Bytes fed to `EVP_BytesToKey` as the passphrase. `cipher_funcs.c:rij_salt_and_iv()`: in
/// legacy mode (`FKO_ENC_MODE_CBC_LEGACY_IV`) a passphrase shorter than 16 bytes is
/// right-padded with ASCII '0'; fwknopd (`access.c`) and the client both truncate a longer one
/// to 16 bytes.
fn passphrase(key: &[u8], mode: EncMode) -> Zeroizing<([u8; MAX_KEY_LEN], usize)> {
    let mut buf = Zeroizing::new(([0u8; MAX_KEY_LEN], 0usize));
    let take = if mode == EncMode::Legacy {
        key.len().min(LEGACY_KEY_LEN)
    } else {
        key.len().min(MAX_KEY_LEN)
    };
    let (arr, len) = &mut *buf;
    if let (Some(dst), Some(src)) = (arr.get_mut(..take), key.get(..take)) {
        dst.copy_from_slice(src);
    }
    *len = take;
    if mode == EncMode::Legacy && take < LEGACY_KEY_LEN {
        if let Some(pad) = arr.get_mut(take..LEGACY_KEY_LEN) {
            pad.fill(b'0');
        }
        *len = LEGACY_KEY_LEN;
    }
    buf
}

impl PacketCipher {
    /// The cipher for one packet: [`evp_bytes_to_key`] over the key and the packet's salt.
    pub(super) fn derive(key: &[u8], salt: &[u8; 8], mode: EncMode) -> PacketCipher {
        let kiv = evp_bytes_to_key(key, salt, mode);
        let mut aes_key = Zeroizing::new([0u8; 32]);
        aes_key.copy_from_slice(&kiv[..32]);
        let mut iv = [0u8; BLOCK];
        iv.copy_from_slice(&kiv[32..48]);
        // An array of the key's exact size: no length to check, no error path.
        let aes = Aes256::new((&*aes_key).into());
        PacketCipher { aes, iv }
    }

    /// Decrypt `data` in place; any trailing partial block is left untouched (callers check
    /// that the length is a multiple of 16 first).
    pub(super) fn decrypt(&self, mode: EncMode, data: &mut [u8]) {
        let (blocks, _) = Block::slice_as_chunks_mut(data);
        let iv = self.iv();
        let aes = &self.aes;
        match mode {
            EncMode::Ecb => aes.decrypt_blocks(blocks),
            EncMode::Cbc | EncMode::Legacy => {
                cbc::Decryptor::inner_iv_init(aes, &iv).decrypt_blocks(blocks)
            }
            EncMode::Cfb => cfb_mode::Decryptor::inner_iv_init(aes, &iv).decrypt_blocks(blocks),
            EncMode::Ofb | EncMode::Ctr => Self::keystream(aes, &iv, mode, blocks),
        }
    }

    /// Encrypt `data` in place (encoder side); same block rule as [`Self::decrypt`].
    pub(super) fn encrypt(&self, mode: EncMode, data: &mut [u8]) {
        let (blocks, _) = Block::slice_as_chunks_mut(data);
        let iv = self.iv();
        let aes = &self.aes;
        match mode {
            EncMode::Ecb => aes.encrypt_blocks(blocks),
            EncMode::Cbc | EncMode::Legacy => {
                cbc::Encryptor::inner_iv_init(aes, &iv).encrypt_blocks(blocks)
            }
            EncMode::Cfb => cfb_mode::Encryptor::inner_iv_init(aes, &iv).encrypt_blocks(blocks),
            EncMode::Ofb | EncMode::Ctr => Self::keystream(aes, &iv, mode, blocks),
        }
    }

    /// The IV as the crates take it, wiped after use.
    fn iv(&self) -> Zeroizing<Block> {
        Zeroizing::new(self.iv.into())
    }

    /// OFB and CTR are their own inverse: XOR with a keystream. The mode cores run on whole
    /// blocks (no partial-block buffer). CTR is `Ctr128BE`: the whole IV is the counter, +1 per
    /// block with the carry through all 16 bytes, wrapping at 2^128 (`lib/rijndael.c`
    /// `block_encrypt`, `MODE_CTR`: its `carry_flg` loop; FWKNOP-WIRE.md §3.2).
    fn keystream(aes: &Aes256, iv: &Block, mode: EncMode, blocks: &mut [Block]) {
        if mode == EncMode::Ofb {
            ofb::OfbCore::inner_iv_init(aes, iv).apply_keystream_blocks(blocks);
        } else {
            ctr::CtrCore::<_, ctr::flavors::Ctr128BE>::inner_iv_init(aes, iv)
                .apply_keystream_blocks(blocks);
        }
    }
}

/// `EVP_BytesToKey` with MD5 and one iteration, 48 bytes out:
/// `D1 = MD5(pass‖salt)`, `D2 = MD5(D1‖pass‖salt)`, `D3 = MD5(D2‖pass‖salt)`;
/// key = `D1‖D2`, IV = `D3`.
fn evp_bytes_to_key(key: &[u8], salt: &[u8; 8], mode: EncMode) -> Zeroizing<[u8; 48]> {
    let pass = passphrase(key, mode);
    let (arr, len) = &*pass;
    let pass = arr.get(..*len).unwrap_or(&[]);
    let mut kiv = Zeroizing::new([0u8; 48]);
    let mut prev = Zeroizing::new([0u8; 16]);
    for (i, chunk) in kiv.chunks_exact_mut(16).enumerate() {
        let mut h = Md5::new();
        if i > 0 {
            h.update(&prev[..]);
        }
        h.update(pass);
        h.update(salt);
        let mut d = h.finalize();
        chunk.copy_from_slice(&d);
        prev.copy_from_slice(&d);
        zeroize::Zeroize::zeroize(d.as_mut_slice());
    }
    kiv
}

/// libfko's padding removal (`rij_decrypt`): if the last byte `n` is at most 16 and the last
/// `n` bytes all equal `n`, drop them; otherwise keep everything and raise no error. `n == 0`
/// drops nothing. Returns the unpadded length.
pub(super) fn unpad_lenient(pt: &[u8]) -> usize {
    let len = pt.len();
    let Some(&n) = pt.last() else { return 0 };
    let n = usize::from(n);
    if n <= BLOCK && n <= len {
        if let Some(tail) = pt.get(len - n..) {
            if tail.iter().all(|&b| usize::from(b) == n) {
                return len - n;
            }
        }
    }
    len
}

#[cfg(test)]
mod tests;
