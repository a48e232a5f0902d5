//! The fleet relay's parsers on arbitrary bytes: a grant key and value read from etcd (hostile
//! until checked), and fleet.toml. A key that parses is the canonical spelling of its grant; a
//! value that parses survives a round trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nfknock::fleet::record::{GrantValue, Layout};

fuzz_target!(|data: &[u8]| {
    let layout = Layout::new("nfknock", "prod").unwrap();
    if let Ok(g) = layout.parse_key(data) {
        assert_eq!(layout.key(&g).as_bytes(), data);
    }
    if let Ok(v) = GrantValue::parse(data) {
        assert_eq!(GrantValue::parse(v.encode().as_bytes()), Ok(v));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = nfknock::fleet::settings::parse(text, std::path::Path::new("/etc/nfknock/fleet.toml"));
    }
});
