//! The whole per-packet pipeline with one native and one fwknop client. Input: one flag byte
//! (bit 0: which vector timestamp is "now"; bit 1: IPv6 source), four source-address bytes,
//! then the UDP payload. Each input gets a fresh engine (empty replay cache) so that runs are
//! reproducible; the config is parsed once.
#![no_main]
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use nfknock::config::Config;
use nfknock::engine::Engine;
use nfknock::policy::{Decision, Packet};
use nfknock::replay::ReplayCache;

fn config() -> &'static Arc<Config> {
    static C: OnceLock<Arc<Config>> = OnceLock::new();
    C.get_or_init(|| {
        let path = std::path::Path::new("/nonexistent/nfknock.toml");
        Arc::new(nfknock::config::parse_str(nfknock_fuzz::ENGINE_CONFIG, path).expect("valid"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((src, payload)) = rest.split_first_chunk::<4>() else {
        return;
    };
    let v4 = Ipv4Addr::from(*src);
    let src = if flags & 2 == 0 {
        IpAddr::V4(v4)
    } else {
        IpAddr::V6(v4.to_ipv6_mapped())
    };
    let packet = Packet {
        src,
        dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
    };
    let now = nfknock_fuzz::NOW[usize::from(flags & 1)];
    let mut engine = Engine::new(config().clone(), ReplayCache::new(), 0, now);
    let first = engine.handle(payload, packet, now);
    // The same packet again must never be granted twice (replay cache).
    let second = engine.handle(payload, packet, now);
    let granted = |o: &nfknock::engine::Outcome| matches!(o.decision, Decision::Grant(_));
    assert!(
        !(granted(&first) && granted(&second)),
        "replayed knock granted twice"
    );
});
