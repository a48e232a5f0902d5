//! Native plaintext parser behind a valid AES-GCM tag: the input is sealed under the fixed key
//! first (`seal_raw_plaintext`), so every execution reaches `open`'s plaintext parser.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nfknock::wire::native::{self, PLAINTEXT_LEN};

struct Zeros;
impl nfknock::crypto::Rng for Zeros {
    fn fill(&mut self, buf: &mut [u8]) {
        buf.fill(0);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut pt = [0u8; PLAINTEXT_LEN];
    let n = data.len().min(PLAINTEXT_LEN);
    pt[..n].copy_from_slice(&data[..n]);
    let key = nfknock_fuzz::native_key();
    let packet = native::seal_raw_plaintext(key, native::hint(key, 0), &pt, &mut Zeros);
    let _ = native::open(key, &packet);
});
