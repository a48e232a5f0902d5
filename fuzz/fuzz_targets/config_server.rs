//! The server config loader on arbitrary text. Relative `key_file`s resolve under a directory
//! that does not exist.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = nfknock::config::parse_str(text, std::path::Path::new("/nonexistent/nfknock.toml"));
});
