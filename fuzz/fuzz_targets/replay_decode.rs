//! The replay-journal decoder; whatever it keeps must re-encode to records it decodes again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nfknock::replay;

fuzz_target!(|data: &[u8]| {
    let now = nfknock_fuzz::NOW[0];
    if let Ok(d) = replay::decode(data, now) {
        let again = replay::encode_journal(d.refuse_before, d.entries.iter().map(|(k, e)| (k, *e)));
        let back = replay::decode(&again, now).expect("re-encoded journal decodes");
        assert_eq!(back.entries, d.entries);
        assert_eq!(back.refuse_before, d.refuse_before);
        assert!(!back.torn_tail);
    }
});
