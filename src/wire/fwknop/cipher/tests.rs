//! Unit tests of `wire::fwknop::cipher`.

use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// NIST SP 800-38A F.1.5/F.2.5/F.3.13/F.4.5/F.5.5 (AES-256) with an injected key and IV.
fn sp800_38a() -> (PacketCipher, Vec<u8>) {
    let key = hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4");
    let iv: [u8; 16] = hex("000102030405060708090a0b0c0d0e0f").try_into().unwrap();
    let pt = hex(concat!(
        "6bc1bee22e409f96e93d7e117393172a",
        "ae2d8a571e03ac9c9eb76fac45af8e51",
        "30c81c46a35ce411e5fbc1191a0a52ef",
        "f69f2445df4f9b17ad2b417be66c3710"
    ));
    (
        PacketCipher {
            aes: Aes256::new_from_slice(&key).unwrap(),
            iv,
        },
        pt,
    )
}

fn check_mode(mode: EncMode, expected_ct: &str) {
    let (c, pt) = sp800_38a();
    let mut buf = pt.clone();
    c.encrypt(mode, &mut buf);
    assert_eq!(buf, hex(expected_ct), "{mode:?} encrypt");
    c.decrypt(mode, &mut buf);
    assert_eq!(buf, pt, "{mode:?} decrypt");
}

#[test]
fn cbc_matches_sp800_38a() {
    check_mode(
        EncMode::Cbc,
        concat!(
            "f58c4c04d6e5f1ba779eabfb5f7bfbd6",
            "9cfc4e967edb808d679f777bc6702c7d",
            "39f23369a9d9bacfa530e26304231461",
            "b2eb05e2c39be9fcda6c19078c6a9d1b"
        ),
    );
}

#[test]
fn ecb_matches_sp800_38a() {
    check_mode(
        EncMode::Ecb,
        concat!(
            "f3eed1bdb5d2a03c064b5a7e3db181f8",
            "591ccb10d410ed26dc5ba74a31362870",
            "b6ed21b99ca6f4f9f153e7b1beafed1d",
            "23304b7a39f9f3ff067d8d8f9e24ecc7"
        ),
    );
}

#[test]
fn cfb128_matches_sp800_38a() {
    check_mode(
        EncMode::Cfb,
        concat!(
            "dc7e84bfda79164b7ecd8486985d3860",
            "39ffed143b28b1c832113c6331e5407b",
            "df10132415e54b92a13ed0a8267ae2f9",
            "75a385741ab9cef82031623d55b1e471"
        ),
    );
}

#[test]
fn ofb_matches_sp800_38a() {
    check_mode(
        EncMode::Ofb,
        concat!(
            "dc7e84bfda79164b7ecd8486985d3860",
            "4febdc6740d20b3ac88f6ad82a4fb08d",
            "71ab47a086e86eedf39d1c5bba97c408",
            "0126141d67f37be8538f5a8be740e484"
        ),
    );
}

#[test]
fn ctr_matches_sp800_38a_and_carries_over_all_bytes() {
    let (mut c, pt) = sp800_38a();
    c.iv = hex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff").try_into().unwrap();
    let mut buf = pt.clone();
    c.encrypt(EncMode::Ctr, &mut buf);
    assert_eq!(
        buf,
        hex(concat!(
            "601ec313775789a5b7a7f504bbf3d228",
            "f443e3ca4d62b59aca84e990cacaf5c5",
            "2b0930daa23de94ce87017ba2d84988d",
            "dfc9c58db67aada613c2dd08457941a6"
        ))
    );
    // Counter 0x..ff ff ff must carry into the high bytes (a 64-bit counter would not).
    c.iv = [0xff; 16];
    c.iv[0] = 0x01;
    let mut two = [0u8; 32];
    c.encrypt(EncMode::Ctr, &mut two);
    let mut expect = [0u8; 32];
    let mut ctr: Block = c.iv.into();
    c.aes.encrypt_block(&mut ctr);
    expect[..16].copy_from_slice(&ctr);
    let mut next = [0u8; 16];
    next[0] = 0x02;
    let mut ctr: Block = next.into();
    c.aes.encrypt_block(&mut ctr);
    expect[16..].copy_from_slice(&ctr);
    assert_eq!(two, expect);
}

/// The CTR counter wraps from 2^128 - 1 to 0, as libfko's byte-wise carry does.
#[test]
fn ctr_counter_wraps_at_2_pow_128() {
    let (mut c, _) = sp800_38a();
    c.iv = [0xff; 16];
    let mut two = [0u8; 32];
    c.encrypt(EncMode::Ctr, &mut two);
    let mut first: Block = [0xff; 16].into();
    c.aes.encrypt_block(&mut first);
    let mut second: Block = [0u8; 16].into();
    c.aes.encrypt_block(&mut second);
    assert_eq!(&two[..16], first.as_slice());
    assert_eq!(&two[16..], second.as_slice());
}

/// Every mode: decrypt inverts encrypt for 1..=6 blocks, a trailing partial block is left
/// as it was, and a one-block message is its own prefix of a longer one (the modes carry
/// no state between calls other than the IV).
#[test]
fn every_mode_round_trips_and_leaves_a_partial_block_alone() {
    let salt = [3u8; 8];
    for mode in EncMode::ALL {
        let c = PacketCipher::derive(b"fwknoptest", &salt, mode);
        let pt: Vec<u8> = (0..6 * BLOCK + 5).map(|i| i as u8).collect();
        let mut full = pt.clone();
        c.encrypt(mode, &mut full);
        assert_eq!(&full[6 * BLOCK..], &pt[6 * BLOCK..], "{mode} tail");
        assert_ne!(&full[..BLOCK], &pt[..BLOCK], "{mode} encrypts");
        for n in 1..=6 {
            let mut buf = pt[..n * BLOCK + 3].to_vec();
            c.encrypt(mode, &mut buf);
            assert_eq!(&buf[..n * BLOCK], &full[..n * BLOCK], "{mode} {n} blocks");
            assert_eq!(
                &buf[n * BLOCK..],
                &pt[n * BLOCK..n * BLOCK + 3],
                "{mode} tail"
            );
            c.decrypt(mode, &mut buf);
            assert_eq!(buf, &pt[..n * BLOCK + 3], "{mode} {n} blocks decrypt");
        }
        let mut short = pt[..BLOCK - 1].to_vec();
        c.decrypt(mode, &mut short);
        assert_eq!(short, &pt[..BLOCK - 1], "{mode} less than a block");
    }
}

#[test]
fn evp_bytes_to_key_matches_openssl() {
    // `openssl enc -aes-256-cbc -md md5 -S 0001020304050607 -pass pass:fwknoptest -P`
    let kiv = evp_bytes_to_key(b"fwknoptest", &[0, 1, 2, 3, 4, 5, 6, 7], EncMode::Cbc);
    assert_eq!(
        &kiv[..32],
        &hex("FD3E186A43AFF3B28F96D377481AC117D9F24690A9228F5724510DAD3BE32141")[..]
    );
    assert_eq!(&kiv[32..], &hex("918B4F3283166318BFB36DE0C035C489")[..]);
    // Legacy mode pads with '0': same as `-pass pass:asdfasdf00000000`.
    let kiv = evp_bytes_to_key(b"asdfasdf", &[0, 1, 2, 3, 4, 5, 6, 7], EncMode::Legacy);
    assert_eq!(
        &kiv[..32],
        &hex("8F902964621FEA56A144452F36DAA4ED424A47479FAD582ECF75990DFDE6005B")[..]
    );
    assert_eq!(&kiv[32..], &hex("9B2CE54AEE13CFB52F24A2800101C82F")[..]);
}

#[test]
fn legacy_passphrase_is_padded_with_ascii_zero_and_truncated_at_16() {
    let p = passphrase(b"asdfasdf", EncMode::Legacy);
    assert_eq!(&p.0[..p.1], b"asdfasdf00000000");
    let p = passphrase(b"0123456789abcdefXYZ", EncMode::Legacy);
    assert_eq!(&p.0[..p.1], b"0123456789abcdef");
    let p = passphrase(b"asdfasdf", EncMode::Cbc);
    assert_eq!(&p.0[..p.1], b"asdfasdf");
    // Padding is the same as giving the padded key in CBC mode.
    let salt = [7u8; 8];
    let a = PacketCipher::derive(b"short", &salt, EncMode::Legacy);
    let b = PacketCipher::derive(b"short00000000000", &salt, EncMode::Cbc);
    assert_eq!(a.iv, b.iv);
}

#[test]
fn unpad_is_lenient_like_libfko() {
    let mut v = vec![b'a'; 12];
    v.extend([4, 4, 4, 4]);
    assert_eq!(unpad_lenient(&v), 12);
    v[15] = 3; // last 3 bytes are 4,4,3: not padding -> keep all
    assert_eq!(unpad_lenient(&v), 16);
    v[15] = 0; // zero pad value removes nothing
    assert_eq!(unpad_lenient(&v), 16);
    v[15] = 17; // > block size -> keep all
    assert_eq!(unpad_lenient(&v), 16);
    assert_eq!(unpad_lenient(&[16u8; 16]), 0);
    assert_eq!(unpad_lenient(&[]), 0);
    assert_eq!(unpad_lenient(&[5, 5]), 2); // n > len: keep, no panic
}
