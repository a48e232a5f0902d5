//! Fixed keys and configs shared by the fuzz targets. The keys are the public test-vector keys
//! (tests/vectors/*.jsonl), so the committed seeds are packets that authenticate under them and
//! the fuzzer starts from inputs that reach the deepest code.

use std::sync::OnceLock;

use nfknock::crypto::NativeKey;
use nfknock::wire::fwknop::{EncMode, FwknopKey, HmacType};
use zeroize::Zeroizing;

/// The secret of the native vectors `source-address-tcp22` and friends.
pub const NATIVE_SECRET: &str = "dJYYlhX3RrNpzmjFAuy2ZVbjV73CR81fz2u41iCAIJQ=";

/// The native key of [`NATIVE_SECRET`].
pub fn native_key() -> &'static NativeKey {
    static KEY: OnceLock<NativeKey> = OnceLock::new();
    KEY.get_or_init(|| NativeKey::from_base64(NATIVE_SECRET).expect("vector secret is valid"))
}

fn b64(s: &str) -> Vec<u8> {
    nfknock::wire::fwknop::decode_b64_lenient(s).expect("vector key is base64")
}

const KEY_A: &str = "oQIY1T7kis/kyV9QHh/Fe2cpnA0SvOAy995h7HWCMvE=";
const HMAC_A: &str =
    "0XEuKA+PgGJcbHwjdGciHsjUhYIJGf2UD5OL69B+LyH8miyYeRuszycx4IFY3WPAnPwAO26cYeBjysAkd116QQ==";

/// fwknop credentials, one per selector value (`input[0] % FWKNOP_KEYS`): every mode and every
/// HMAC type, plus keys without HMAC so that random input reaches decryption and unpadding.
/// Indices 0..=5 are keys of committed vectors (see `fuzz/make_seeds.py`).
pub fn fwknop_keys() -> &'static [FwknopKey] {
    static KEYS: OnceLock<Vec<FwknopKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let k = |key: Vec<u8>, hmac: Option<Vec<u8>>, ht: HmacType, mode: EncMode| {
            FwknopKey::new(Zeroizing::new(key), hmac.map(Zeroizing::new), ht, mode)
                .expect("fuzz key is valid")
        };
        let pass = || b"fwknoptest".to_vec();
        vec![
            // 0: keyset A (fwknop --key-gen), CBC, HMAC-SHA256.
            k(
                b64(KEY_A),
                Some(b64(HMAC_A)),
                HmacType::Sha256,
                EncMode::Cbc,
            ),
            // 1: keyset A, CTR.
            k(
                b64(KEY_A),
                Some(b64(HMAC_A)),
                HmacType::Sha256,
                EncMode::Ctr,
            ),
            // 2: passphrases fwknoptest / hmactest, CBC, HMAC-SHA256.
            k(
                pass(),
                Some(b"hmactest".to_vec()),
                HmacType::Sha256,
                EncMode::Cbc,
            ),
            // 3: passphrase fwknoptest, CBC, no HMAC.
            k(pass(), None, HmacType::Sha256, EncMode::Cbc),
            // 4: passphrase fwknoptest, legacy (fwknop < 2.5), no HMAC.
            k(pass(), None, HmacType::Sha256, EncMode::Legacy),
            // 5: passphrase asdfasdf, legacy, no HMAC.
            k(
                b"asdfasdf".to_vec(),
                None,
                HmacType::Sha256,
                EncMode::Legacy,
            ),
            // 6..: the remaining modes without HMAC, and the remaining HMAC types.
            k(pass(), None, HmacType::Sha256, EncMode::Cfb),
            k(pass(), None, HmacType::Sha256, EncMode::Ofb),
            k(pass(), None, HmacType::Sha256, EncMode::Ecb),
            k(pass(), None, HmacType::Sha256, EncMode::Ctr),
            k(
                pass(),
                Some(b"hmactest".to_vec()),
                HmacType::Md5,
                EncMode::Cbc,
            ),
            k(
                pass(),
                Some(b"hmactest".to_vec()),
                HmacType::Sha1,
                EncMode::Cbc,
            ),
            k(
                pass(),
                Some(b"hmactest".to_vec()),
                HmacType::Sha384,
                EncMode::Ofb,
            ),
            k(
                pass(),
                Some(b"hmactest".to_vec()),
                HmacType::Sha512,
                EncMode::Cfb,
            ),
            k(
                pass(),
                Some(b"hmactest".to_vec()),
                HmacType::Sha3_256,
                EncMode::Ecb,
            ),
            k(
                pass(),
                Some(b"hmactest".to_vec()),
                HmacType::Sha3_512,
                EncMode::Ctr,
            ),
        ]
    })
}

/// Pick a key by selector byte.
pub fn fwknop_key(selector: u8) -> &'static FwknopKey {
    let keys = fwknop_keys();
    &keys[usize::from(selector) % keys.len()]
}

/// A server config with one native client (the vector secret) and one fwknop client (keyset A,
/// CBC, HMAC-SHA256), both open to any source.
pub const ENGINE_CONFIG: &str = r#"
[server]
port = 62201

[[client]]
name = "native"
key = "dJYYlhX3RrNpzmjFAuy2ZVbjV73CR81fz2u41iCAIJQ="
allow = ["tcp/22", "udp/53", "tcp/443"]
sources = ["0.0.0.0/0", "::/0"]
require_source_match = false

[[client]]
name = "fwknop"
allow = ["tcp/22", "tcp/443"]
sources = ["0.0.0.0/0", "::/0"]
require_source_match = false
[client.fwknop]
key_base64 = "oQIY1T7kis/kyV9QHh/Fe2cpnA0SvOAy995h7HWCMvE="
hmac_key_base64 = "0XEuKA+PgGJcbHwjdGciHsjUhYIJGf2UD5OL69B+LyH8miyYeRuszycx4IFY3WPAnPwAO26cYeBjysAkd116QQ=="
hmac = "sha256"
mode = "cbc"
"#;

/// Timestamps of the committed vectors: native (1760000000) and fwknop (1795566850).
pub const NOW: [u64; 2] = [1_760_000_000, 1_795_566_850];
