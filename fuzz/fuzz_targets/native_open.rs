//! Native packets: the pre-crypto check and `open` under a fixed key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nfknock::wire::native;

fuzz_target!(|data: &[u8]| {
    if native::hint_of(data).is_ok() {
        let _ = native::open(nfknock_fuzz::native_key(), data);
    }
});
