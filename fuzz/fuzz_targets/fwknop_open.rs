//! fwknop packets: `precheck`, then `open` under the key picked by the first byte (every mode
//! and HMAC type, some keys without HMAC so that decryption is reached).
#![no_main]
use libfuzzer_sys::fuzz_target;
use nfknock::wire::fwknop;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, wire)) = data.split_first() else {
        return;
    };
    if fwknop::precheck(wire).is_ok() {
        let _ = fwknop::open(nfknock_fuzz::fwknop_key(selector), wire);
    }
});
