//! No input of any length makes the pure core allocate without bound.
//!
//! A counting `#[global_allocator]` records the peak of live heap bytes while each parser runs on
//! large hostile inputs (1 MiB of random bytes, deeply nested TOML, a huge valid journal), and
//! the test asserts that the peak above the baseline stays within a small multiple of the input
//! size. This complements the fuzzers (`scripts/fuzz`), whose inputs are capped at 16 KiB.
//!
//! Everything runs in one `#[test]` so that no other test thread allocates while a case is
//! measured.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use nfknock::engine::Engine;
use nfknock::policy::Packet;
use nfknock::replay::{self, ReplayCache};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc`/`realloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let grow = new_size - layout.size();
                let live = LIVE.fetch_add(grow, Ordering::Relaxed) + grow;
                PEAK.fetch_max(live, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Peak heap bytes allocated by `f` on top of what was live before it.
fn peak_of<R>(f: impl FnOnce() -> R) -> usize {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = f();
    let peak = PEAK.load(Ordering::Relaxed);
    drop(r);
    peak.saturating_sub(base)
}

/// Deterministic xorshift bytes (no RNG crate needed for test data).
fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

const MIB: usize = 1 << 20;

/// Assert `peak <= factor × input + slack` and say which case broke it.
fn assert_bounded(case: &str, peak: usize, input: usize, factor: usize) {
    let slack = 64 * 1024;
    let bound = factor * input + slack;
    eprintln!("{case}: input {input} B, peak {peak} B (bound {bound} B)");
    assert!(
        peak <= bound,
        "{case}: peak heap {peak} B exceeds {factor} × input ({input} B) + {slack} B"
    );
}

const CONFIG: &str = r#"
[server]
port = 62201

[[client]]
name = "native"
key = "dJYYlhX3RrNpzmjFAuy2ZVbjV73CR81fz2u41iCAIJQ="
allow = ["tcp/22"]

[[client]]
name = "fwknop"
allow = ["tcp/22"]
[client.fwknop]
key_base64 = "oQIY1T7kis/kyV9QHh/Fe2cpnA0SvOAy995h7HWCMvE="
hmac_key_base64 = "0XEuKA+PgGJcbHwjdGciHsjUhYIJGf2UD5OL69B+LyH8miyYeRuszycx4IFY3WPAnPwAO26cYeBjysAkd116QQ=="
"#;

fn engine_cases() {
    let path = Path::new("/nonexistent/nfknock.toml");
    let config = Arc::new(nfknock::config::parse_str(CONFIG, path).expect("test config is valid"));
    let now = 1_760_000_000;
    let mut engine = Engine::new(config, ReplayCache::new(), 0, now);
    let packet = Packet {
        src: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
    };
    // Every length up to past fwknop's maximum, random bytes and base64-looking text, then
    // 1 MiB: a refused packet allocates almost nothing whatever its length.
    let random = random_bytes(MIB, 1);
    let b64ish: Vec<u8> = random
        .iter()
        .map(|b| {
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[usize::from(b % 64)]
        })
        .collect();
    let mut worst = 0;
    for len in 0..=1600 {
        for data in [&random[..len], &b64ish[..len]] {
            worst = worst.max(peak_of(|| engine.handle(data, packet, now)));
        }
    }
    assert_bounded("engine, every length 0..=1600", worst, 1600, 4);
    for (case, data) in [
        ("engine, 1 MiB random", &random),
        ("engine, 1 MiB base64 text", &b64ish),
    ] {
        let peak = peak_of(|| engine.handle(data, packet, now));
        assert_bounded(case, peak, data.len(), 1);
        let peak = peak_of(|| engine.handle_ip(data, now));
        assert_bounded(case, peak, data.len(), 1);
    }
}

fn config_cases() {
    let path = Path::new("/nonexistent/nfknock.toml");
    let random = String::from_utf8_lossy(&random_bytes(MIB, 2)).into_owned();
    let deep_arrays = format!(
        "[server]\nport = {}{}\n",
        "[".repeat(MIB / 2),
        "]".repeat(MIB / 2)
    );
    let deep_tables = format!("x = {}1{}\n", "{a=".repeat(MIB / 4), "}".repeat(MIB / 4));
    let long_string = format!("[server]\nstate_dir = \"{}\"\n", "a".repeat(MIB));
    let many_clients: String = (0..MIB / 64)
        .map(|i| format!("[[client]]\nname = \"c{i}\"\nallow = [\"tcp/22\"]\n"))
        .collect();
    for (case, text) in [
        ("config, 1 MiB random", &random),
        ("config, nested arrays", &deep_arrays),
        ("config, nested inline tables", &deep_tables),
        ("config, 1 MiB string", &long_string),
        ("config, 16k clients without keys", &many_clients),
    ] {
        // The `toml` crate's document tree is the largest cost: about 53 bytes per input byte
        // for `[[[[…]]]]` (one array per two bytes) and 14 for random text (every syntax error
        // it recovers from is kept). Linear, not unbounded; config files are local and small.
        let peak = peak_of(|| nfknock::config::parse_str(text, path));
        assert_bounded(&format!("server {case}"), peak, text.len(), 64);
        let peak = peak_of(|| nfknock::config::parse_knock_profiles(text, path));
        assert_bounded(&format!("client {case}"), peak, text.len(), 64);
    }
}

fn journal_cases() {
    let now = 1_760_000_000;
    let random = random_bytes(MIB, 3);
    let keys: Vec<replay::ReplayKey> = (0..MIB / replay::RECORD_LEN)
        .map(|i| nfknock::replay::key_of(&(i as u64).to_be_bytes()))
        .collect();
    let valid = replay::encode_journal(0, keys.iter().map(|k| (k, now + 60)));
    let mut random_with_header = replay::encode_header(0).to_vec();
    random_with_header.extend_from_slice(&random);
    for (case, data) in [
        ("journal, 1 MiB random", &random),
        ("journal, header + 1 MiB random", &random_with_header),
        ("journal, 1 MiB of live records", &valid),
    ] {
        let peak = peak_of(|| replay::decode(data, now));
        // One 40-byte entry per 48-byte record, plus the Vec's doubling.
        assert_bounded(case, peak, data.len(), 2);
    }
}

#[test]
fn core_allocation_is_bounded_by_the_input_size() {
    // The nested TOML cases recurse in the parser: give them the main thread's stack size
    // rather than the test harness's 2 MiB, as the daemon (main thread) has.
    let t = std::thread::Builder::new()
        .stack_size(8 * MIB)
        .spawn(|| {
            engine_cases();
            config_cases();
            journal_cases();
        })
        .expect("spawn");
    t.join().expect("no case failed");
}
