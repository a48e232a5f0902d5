//! How the per-packet cost of an fwknop knock grows with the number of fwknop clients.
//!
//! fwknop packets carry no key hint, so the server tries every client whose `sources` admit the
//! packet's source, one HMAC each, in config order — as fwknopd does with its access.conf
//! stanzas. This measures `Engine::handle` (the whole pure pipeline) with the matching client
//! configured LAST, for:
//!
//! - 1 client;
//! - N (at most 256) clients that all accept `0.0.0.0/0` (the worst case: N HMACs per packet);
//! - N clients whose `sources` are small networks, 4 clients per /24, the packet coming from the
//!   last /24 (a realistic deployment: the source narrows the search to a few);
//! - a forged packet (right shape, unknown key) against N clients on `0.0.0.0/0`: what each
//!   packet of a flood costs.
//!
//! Run: `cargo run --release --example fwknop_scale [-- N [ITERATIONS]]` (default N = 1000).
//! The wide-open cases use at most `MAX_FWKNOP_CANDIDATES` (256) clients: a config with more
//! fwknop clients admitting one address is refused (issue 11 §2), so that is the worst case;
//! the forged-packet case is shown at 1, 16, 64 and 256 clients.
//! Prints the median, 10th and 90th percentile per packet. Every packet is distinct (fresh
//! salt), so none is a replay.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use zeroize::Zeroizing;

use nfknock::access::Access;
use nfknock::config::Config;
use nfknock::engine::Engine;
use nfknock::policy::{Decision, Packet, Reason};
use nfknock::replay::ReplayCache;
use nfknock::wire::fwknop::{seal, DigestType, EncMode, FwknopKey, HmacType, SealRequest};

const NOW: u64 = 1_800_000_000;
const DST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// Deterministic bytes (splitmix64): reproducible keys without an RNG dependency.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..n)
        .map(|_| {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Client `i`'s keys, as `fwknop --key-gen` makes them: 32-byte key, 64-byte HMAC-SHA256 key.
fn keys(i: usize) -> (Vec<u8>, Vec<u8>) {
    (bytes(2 * i as u64 + 1, 32), bytes(2 * i as u64 + 2, 64))
}

/// Source network of client `i` in the realistic layout: 4 clients per /24.
fn narrow_net(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, (i / 4 / 256) as u8, (i / 4 % 256) as u8, 0)
}

fn config(n: usize, narrow: bool) -> Arc<Config> {
    let mut t = String::from("[server]\nprotect = [\"tcp/22\"]\nmax_age = 120\n");
    for i in 0..n {
        let (k, h) = keys(i);
        let sources = if narrow {
            format!("[\"{}/24\"]", narrow_net(i))
        } else {
            "[\"0.0.0.0/0\"]".to_string()
        };
        t += &format!(
            "\n[[client]]\nname = \"c{i}\"\nallow = [\"tcp/22\"]\nsources = {sources}\nrequire_source_match = false\n\
             [client.fwknop]\nkey_base64 = \"{}\"\nhmac_key_base64 = \"{}\"\n",
            b64(&k),
            b64(&h)
        );
    }
    Arc::new(
        nfknock::config::parse_str(&t, Path::new("fwknop_scale.toml"))
            .expect("generated config is valid"),
    )
}

/// `count` distinct packets under client `i`'s keys (or under keys no client has).
fn packets(i: Option<usize>, count: usize) -> Vec<Vec<u8>> {
    let (k, h) = match i {
        Some(i) => keys(i),
        None => (bytes(u64::MAX - 1, 32), bytes(u64::MAX, 64)),
    };
    let key = FwknopKey::new(
        Zeroizing::new(k),
        Some(Zeroizing::new(h)),
        HmacType::Sha256,
        EncMode::Cbc,
    )
    .unwrap();
    let ssh: Access = "tcp/22".parse().unwrap();
    (0..count)
        .map(|j| {
            let req = SealRequest::access("root", NOW, Ipv4Addr::new(198, 51, 100, 7), &[ssh], 0);
            let salt: [u8; 8] = bytes(1_000_000 + j as u64, 8).try_into().unwrap();
            seal(
                &key,
                &req,
                salt,
                &format!("{:016}", 1_000_000_000_000_000 + j),
                DigestType::Sha256,
            )
            .expect("seal")
            .into_bytes()
        })
        .collect()
}

struct Stats {
    median: Duration,
    p10: Duration,
    p90: Duration,
}

/// Handle each packet once (they are all distinct) and time each call.
fn run(config: Arc<Config>, packets: &[Vec<u8>], src: IpAddr, expect_grant: bool) -> Stats {
    let mut engine = Engine::new(config, ReplayCache::new(), 0, NOW);
    let packet = Packet {
        src,
        dst: IpAddr::V4(DST),
    };
    let mut times = Vec::with_capacity(packets.len());
    for p in packets {
        let t = Instant::now();
        let out = engine.handle(std::hint::black_box(p), packet, NOW);
        times.push(t.elapsed());
        match (&out.decision, expect_grant) {
            (Decision::Grant(_), true) | (Decision::Reject(Reason::AuthFailed), false) => {}
            (d, _) => panic!("unexpected decision {d:?}"),
        }
    }
    times.sort();
    let at = |q: usize| times[(times.len() - 1) * q / 100];
    Stats {
        median: at(50),
        p10: at(10),
        p90: at(90),
    }
}

fn show(label: &str, s: &Stats) {
    println!(
        "{label:<58} median {:>9.2} µs   p10 {:>9.2} µs   p90 {:>9.2} µs",
        s.median.as_secs_f64() * 1e6,
        s.p10.as_secs_f64() * 1e6,
        s.p90.as_secs_f64() * 1e6
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(1000, |a| a.parse().expect("N"));
    let iters: usize = args.next().map_or(0, |a| a.parse().expect("ITERATIONS"));
    // About the same total work per case: many iterations for cheap cases, fewer for costly ones.
    let iters_for = |tries: usize| {
        if iters > 0 {
            iters
        } else {
            (200_000 / tries.max(1)).clamp(201, 20_001)
        }
    };
    let src_any = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
    let last = n - 1;
    let src_narrow = IpAddr::V4(Ipv4Addr::from(u32::from(narrow_net(last)) + 9));

    println!(
        "fwknop knocks through Engine::handle (HMAC-SHA256, AES-256-CBC), matching client last"
    );
    let one = iters_for(1);
    show(
        "1 client, sources 0.0.0.0/0",
        &run(config(1, false), &packets(Some(0), one), src_any, true),
    );

    // A config may not have more fwknop clients admitting one address than are tried per
    // packet (issue 11 §2): the wide-open cases stop at that bound.
    let cap = nfknock::config::MAX_FWKNOP_CANDIDATES;
    let n_any = n.min(cap);
    let cfg_any = config(n_any, false);
    let k = iters_for(n_any);
    show(
        &format!("{n_any} clients, all sources 0.0.0.0/0"),
        &run(cfg_any.clone(), &packets(Some(n_any - 1), k), src_any, true),
    );

    let cfg_narrow = config(n, true);
    let k4 = iters_for(4);
    show(
        &format!("{n} clients, 4 per /24 source network"),
        &run(cfg_narrow, &packets(Some(last), k4), src_narrow, true),
    );

    // What each packet of a forged flood costs as the wide-open fwknop clients grow, up to
    // the bound (a config with more is refused, so this is the most one packet can cost).
    let mut steps: Vec<usize> = [1, 16, 64, cap]
        .into_iter()
        .filter(|&m| m < n_any)
        .collect();
    steps.push(n_any);
    for m in steps {
        let cfg = if m == n_any {
            cfg_any.clone()
        } else {
            config(m, false)
        };
        show(
            &format!("{m} clients on 0.0.0.0/0, forged packet (unknown key)"),
            &run(cfg, &packets(None, iters_for(m)), src_any, false),
        );
    }
}
