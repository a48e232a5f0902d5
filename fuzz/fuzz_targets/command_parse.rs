//! The command parsers: the daemon → runner message decoder (what it accepts must re-encode to
//! the same bytes), the command-string splitter, and argv templates with substitution. None
//! may panic; a substituted value never starts an argument with `-`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nfknock::command::{proto, split, Template, Values};

fuzz_target!(|data: &[u8]| {
    if let Ok(job) = proto::decode(data) {
        assert_eq!(
            proto::encode(&job),
            data,
            "decode accepted a non-canonical message"
        );
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = split::split(text, false);
    if let Ok(argv) = split::split(text, true) {
        if let Ok(t) = Template::parse(&argv) {
            let v = Values {
                src: "192.0.2.7".parse().unwrap(),
                proto: nfknock::access::Proto::Tcp,
                port: 22,
                timeout: 30,
                user: Some("bob".into()),
            };
            if let Ok(out) = t.expand(&v) {
                assert_eq!(out.len(), argv.len(), "a value split an argument");
            }
        }
    }
});
