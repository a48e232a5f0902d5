//! Per-packet cost of the pure pipeline (`Engine::handle`: parse → key lookup → authenticate →
//! replay → policy), without the kernel: a valid native knock, a valid fwknop knock, and the
//! junk the daemon must shrug off (random bytes, a well-formed packet under an unknown key).
//!
//! `cargo bench --bench engine`. The end-to-end figures (queue, nftables, fwknopd side by side)
//! come from `scripts/bench`; see BENCHMARKS.md.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use zeroize::Zeroizing;

use nfknock::access::{Access, Proto};
use nfknock::crypto::{NativeKey, Rng};
use nfknock::engine::Engine;
use nfknock::policy::Packet;
use nfknock::replay::ReplayCache;
use nfknock::sys::OsRng;
use nfknock::wire::fwknop::{self, DigestType, EncMode, FwknopKey, HmacType, SealRequest};
use nfknock::wire::native;

const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SSH: Access = Access {
    proto: Proto::Tcp,
    port: 22,
};

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    OsRng.fill(&mut b);
    b
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

struct Setup {
    engine: Engine,
    native: NativeKey,
    fwknop: FwknopKey,
    now: u64,
}

/// One native client and one fwknop client (the fwknop clients are tried by source address, so
/// every fwknop-shaped packet costs one HMAC per matching client).
fn setup() -> Setup {
    let secret = random::<32>();
    let (fkey, fhmac) = (random::<32>(), random::<64>());
    let text = format!(
        "[server]\nprotect = [\"tcp/22\"]\n\n\
         [[client]]\nname = \"alice\"\nkey = \"{}\"\nallow = [\"tcp/22\"]\n\n\
         [[client]]\nname = \"bob\"\nallow = [\"tcp/22\"]\n[client.fwknop]\nkey_base64 = \"{}\"\nhmac_key_base64 = \"{}\"\nhmac = \"sha256\"\n",
        b64(&secret),
        b64(&fkey),
        b64(&fhmac)
    );
    let config =
        nfknock::config::parse_str(&text, Path::new("bench.toml")).expect("bench config is valid");
    let now = nfknock::daemon::unix_now();
    let fwknop = FwknopKey::new(
        Zeroizing::new(fkey.to_vec()),
        Some(Zeroizing::new(fhmac.to_vec())),
        HmacType::Sha256,
        EncMode::Cbc,
    )
    .expect("valid fwknop key");
    Setup {
        engine: Engine::new(Arc::new(config), ReplayCache::new(), 0, now),
        native: NativeKey::derive(&secret),
        fwknop,
        now,
    }
}

fn native_knock(key: &NativeKey, now: u64) -> [u8; native::PACKET_LEN] {
    let req = native::Plaintext {
        timestamp: now,
        timeout: 0,
        allow_ip: None,
        access: vec![SSH],
    };
    native::seal(key, &req, &mut OsRng).expect("sealable request")
}

fn fwknop_knock(key: &FwknopKey, now: u64) -> Vec<u8> {
    let rand: String = random::<16>()
        .iter()
        .map(|b| char::from(b'0' + b % 10))
        .collect();
    let req = SealRequest::access("bench", now, SRC, &[SSH], 0);
    fwknop::seal(key, &req, random::<8>(), &rand, DigestType::Sha256)
        .expect("sealable request")
        .into_bytes()
}

fn engine(c: &mut Criterion) {
    let packet = Packet {
        src: IpAddr::V4(SRC),
        dst: IpAddr::V4(DST),
    };
    let mut g = c.benchmark_group("engine");

    // Valid knocks: a fresh packet per iteration (the same one twice is a replay); sealing is
    // done in the untimed setup. Each grant also lands in the replay cache, as in the daemon.
    let mut s = setup();
    g.bench_function("native_valid", |b| {
        b.iter_batched(
            || native_knock(&s.native, s.now),
            |p| black_box(s.engine.handle(&p, packet, s.now)),
            BatchSize::SmallInput,
        )
    });
    let mut s = setup();
    g.bench_function("fwknop_valid", |b| {
        b.iter_batched(
            || fwknop_knock(&s.fwknop, s.now),
            |p| black_box(s.engine.handle(&p, packet, s.now)),
            BatchSize::SmallInput,
        )
    });

    // Junk: nothing is recorded, so one packet can be fed again and again.
    let mut s = setup();
    let random_bytes: [u8; native::PACKET_LEN] = random();
    g.bench_function("junk_random_128", |b| {
        b.iter(|| black_box(s.engine.handle(black_box(&random_bytes), packet, s.now)))
    });
    let stranger = NativeKey::derive(&random::<32>());
    let unknown_native = native_knock(&stranger, s.now);
    g.bench_function("junk_native_unknown_key", |b| {
        b.iter(|| black_box(s.engine.handle(black_box(&unknown_native), packet, s.now)))
    });
    let other = FwknopKey::new(
        Zeroizing::new(random::<32>().to_vec()),
        Some(Zeroizing::new(random::<64>().to_vec())),
        HmacType::Sha256,
        EncMode::Cbc,
    )
    .expect("valid fwknop key");
    let unknown_fwknop = fwknop_knock(&other, s.now);
    g.bench_function("junk_fwknop_unknown_key", |b| {
        b.iter(|| black_box(s.engine.handle(black_box(&unknown_fwknop), packet, s.now)))
    });
    g.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
