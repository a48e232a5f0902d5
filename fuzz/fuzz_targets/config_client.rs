//! The client config loader on arbitrary text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = nfknock::config::parse_knock_profiles(
        text,
        std::path::Path::new("/nonexistent/client.toml"),
    );
});
