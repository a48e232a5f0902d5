//! fwknop field parser past the HMAC, two ways:
//! - `Structured`: a request built from fuzzer-chosen fields goes through `seal`; whenever
//!   `seal` accepts it, `open` must accept the packet and return the same fields (round trip);
//! - `Raw`: fuzzer-chosen plaintext bytes go through `seal_raw_plaintext` (with or without a
//!   correct inner digest), so `open`'s post-decryption checks and `fields::parse` see
//!   arbitrary text behind a valid HMAC.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use nfknock::wire::fwknop::{self, DigestType, SealRequest};

#[derive(Arbitrary, Debug)]
enum Input {
    Structured {
        key: u8,
        salt: [u8; 8],
        rand: u64,
        digest: u8,
        username: String,
        timestamp: u64,
        version: String,
        message_type: u8,
        message: String,
        nat_access: Option<String>,
        server_auth: Option<String>,
        client_timeout: u32,
    },
    Raw {
        key: u8,
        salt: [u8; 8],
        /// `None`: the plaintext is used as given (no inner digest appended).
        digest: Option<u8>,
        plaintext: Vec<u8>,
    },
}

fn digest_type(d: u8) -> DigestType {
    DigestType::ALL[usize::from(d) % DigestType::ALL.len()]
}

fuzz_target!(|input: Input| {
    match input {
        Input::Structured {
            key,
            salt,
            rand,
            digest,
            username,
            timestamp,
            version,
            message_type,
            message,
            nat_access,
            server_auth,
            client_timeout,
        } => {
            let key = nfknock_fuzz::fwknop_key(key);
            let req = SealRequest {
                username,
                timestamp,
                version,
                message_type,
                message,
                nat_access,
                server_auth,
                client_timeout,
            };
            let rand = format!("{:016}", rand % 10_000_000_000_000_000);
            let Ok(wire) = fwknop::seal(key, &req, salt, &rand, digest_type(digest)) else {
                return;
            };
            let got = fwknop::open(key, wire.as_bytes())
                .unwrap_or_else(|e| panic!("seal wrote a packet open refuses: {e}: {req:?}"));
            assert_eq!(
                (
                    &got.username,
                    got.timestamp,
                    &got.version,
                    got.message_type,
                    &got.message,
                    &got.nat_access,
                    got.client_timeout,
                    &got.rand_value
                ),
                (
                    &req.username,
                    req.timestamp,
                    &req.version,
                    req.message_type,
                    &req.message,
                    &req.nat_access,
                    req.client_timeout,
                    &rand
                ),
            );
        }
        Input::Raw {
            key,
            salt,
            digest,
            plaintext,
        } => {
            let key = nfknock_fuzz::fwknop_key(key);
            let Ok(wire) =
                fwknop::seal_raw_plaintext(key, &plaintext, salt, digest.map(digest_type))
            else {
                return;
            };
            let _ = fwknop::open(key, wire.as_bytes());
        }
    }
});
