//! IP/UDP headers of a queued packet.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = nfknock::wire::ip::parse(data);
});
