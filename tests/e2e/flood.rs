//! Floods: junk from many sources neither starves legitimate knocks nor grows the daemon's
//! memory; a flood that saturates the queue delays neither a flush repair nor SIGTERM. The
//! flood generators here serve `rate_limit.rs` too.
//!
//! The CPU-saturating floods (here and in `rate_limit.rs`) take
//! [`flood_lock`](super::flood_lock): they never run together, while lighter tests go on in
//! parallel beside them. They live in two files so that the test order (by name) puts lighter
//! tests between them, and a thread rarely waits for the lock.

use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nfknock::access::Access;
use nfknock::crypto::{NativeKey, Rng};
use nfknock::sys::OsRng;
use nfknock::wire::native;

use super::*;

/// The kernel's counters of one NFQUEUE in the server namespace
/// (`/proc/net/netfilter/nfnetlink_queue`: queue, portid, waiting, copy mode, copy range,
/// queue_dropped, user_dropped, id_sequence, 1 — net/netfilter/nfnetlink_queue.c `seq_show`).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct QueueStats {
    /// Packets waiting for the daemon's verdict right now.
    pub(super) waiting: u64,
    pub(super) dropped_full: u64,
    pub(super) user_dropped: u64,
    pub(super) queued_total: u64,
}

pub(super) fn queue_stats(lab: &Lab, queue: u16) -> QueueStats {
    let out = lab.run(&lab.srv, &["cat", "/proc/net/netfilter/nfnetlink_queue"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        let f: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        if f.len() >= 8 && f[0] == u64::from(queue) {
            return QueueStats {
                waiting: f[2],
                dropped_full: f[5],
                user_dropped: f[6],
                queued_total: f[7],
            };
        }
    }
    QueueStats::default()
}

/// `VmRSS` / `VmHWM` of a process, KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let s = proc_status(pid);
    let kib = |k: &str| s[k].trim_end_matches(" kB").trim().parse::<u64>().unwrap();
    (kib("VmRSS"), kib("VmHWM"))
}

/// A native knock built in-process (the flood and latency loops cannot afford a process per
/// knock): `access` for `allow_ip`, stamped now.
fn seal(key: &NativeKey, access: Access, allow_ip: IpAddr) -> [u8; native::PACKET_LEN] {
    let req = native::Plaintext {
        timestamp: nfknock::daemon::unix_now(),
        timeout: 0,
        allow_ip: Some(allow_ip),
        access: vec![access],
    };
    native::seal(key, &req, &mut OsRng).unwrap()
}

fn tcp(port: u16) -> Access {
    format!("tcp/{port}").parse().unwrap()
}

/// Flood parameters: `NFK_FLOOD_PACKETS` (default 2 000 000), bounded by `NFK_FLOOD_SECS`
/// (default 25 s) so the test stays under a minute on a busy machine.
fn flood_bounds() -> (u64, Duration) {
    let n = std::env::var("NFK_FLOOD_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let s = std::env::var("NFK_FLOOD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    (n, Duration::from_secs(s))
}

/// Extra flood sources on the client's veth: 10.77.0.10 … 10.77.0.(10+n-1).
pub(super) fn add_flood_sources(lab: &Lab, n: u8) -> Vec<IpAddr> {
    let addrs: Vec<IpAddr> = (0..n)
        .map(|i| format!("10.77.0.{}", 10 + u16::from(i)).parse().unwrap())
        .collect();
    lab.add_client_addresses("addrs.batch", &addrs);
    addrs
}

/// Extra IPv6 flood sources on the client's veth, all in the lab's fd77::/64:
/// fd77::100 … fd77::(100+n-1) (hex).
pub(super) fn add_flood_sources_v6(lab: &Lab, n: u16) -> Vec<IpAddr> {
    let addrs: Vec<IpAddr> = (0..n)
        .map(|i| format!("fd77::{:x}", 0x100 + i).parse().unwrap())
        .collect();
    lab.add_client_addresses("addrs6.batch", &addrs);
    addrs
}

#[derive(Debug, Default)]
pub(super) struct FloodReport {
    pub(super) sent: u64,
    pub(super) send_errors: u64,
    pub(super) took: Duration,
}

/// Send `n` packets (or until `limit`) as fast as one thread can from `sources` in the client
/// namespace: alternately 128 random bytes and a well-formed native knock under a key the
/// server does not know (1024 distinct ones of each, cycled).
pub(super) fn flood(
    lab: &Lab,
    sources: Vec<IpAddr>,
    n: u64,
    limit: Duration,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<FloodReport> {
    let mut payloads: Vec<Vec<u8>> = Vec::with_capacity(2048);
    let stranger = NativeKey::derive(&[0x5a; 32]);
    for i in 0..1024 {
        let mut junk = vec![0u8; native::PACKET_LEN];
        OsRng.fill(&mut junk);
        payloads.push(junk);
        payloads.push(seal(&stranger, tcp(HOST_PORT), sources[i % sources.len()]).to_vec());
    }
    let srv = if sources[0].is_ipv6() { SRV6 } else { SRV4 };
    let sender = Sender {
        to: sock(srv, KNOCK_PORT),
        check_every: 4096,
        max: n,
        limit,
        stop,
    };
    sender.spawn(lab, sources, payloads)
}

/// One flood sender thread in the client namespace: `payloads` in turn from one socket per
/// source to `to`, as fast as it can, until `max` packets, `limit` or `stop` (looked at every
/// `check_every` packets).
struct Sender {
    to: SocketAddr,
    check_every: u64,
    max: u64,
    limit: Duration,
    stop: Arc<AtomicBool>,
}

impl Sender {
    fn spawn(
        self,
        lab: &Lab,
        sources: Vec<IpAddr>,
        payloads: Vec<Vec<u8>>,
    ) -> thread::JoinHandle<FloodReport> {
        let cli = lab.cli.clone();
        thread::spawn(move || {
            in_ns(&cli, move || {
                let socks: Vec<UdpSocket> = sources
                    .iter()
                    .map(|a| {
                        let s = UdpSocket::bind(SocketAddr::new(*a, 0)).unwrap();
                        s.connect(self.to).unwrap();
                        s
                    })
                    .collect();
                let mut r = FloodReport::default();
                let start = Instant::now();
                for i in 0..self.max {
                    if i % self.check_every == 0
                        && (self.stop.load(Ordering::Relaxed) || start.elapsed() > self.limit)
                    {
                        break;
                    }
                    let s = &socks[(i as usize) % socks.len()];
                    match s.send(&payloads[(i as usize) % payloads.len()]) {
                        Ok(_) => r.sent += 1,
                        Err(_) => r.send_errors += 1,
                    }
                }
                r.took = start.elapsed();
                r
            })
        })
    }
}

#[derive(Debug, Default)]
struct LegitReport {
    sent: usize,
    granted: usize,
    latencies: Vec<Duration>,
}

/// Knock every 100 ms from the client's own address, each knock for a port of its own (so
/// each grant is seen on its own), and time knock → TCP SYN through the gate (an RST from the
/// port nobody listens on is the proof the SYN passed; a closed gate drops it silently).
fn legit_knocks(
    lab: &Lab,
    key: NativeKey,
    base_port: u16,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<LegitReport> {
    let cli = lab.cli.clone();
    thread::spawn(move || {
        in_ns(&cli, move || {
            let me: IpAddr = CLI4.parse().unwrap();
            let s = UdpSocket::bind(SocketAddr::new(me, 0)).unwrap();
            let mut r = LegitReport::default();
            let mut next = Instant::now();
            while !stop.load(Ordering::SeqCst) && r.sent < 1000 {
                let now = Instant::now();
                if now < next {
                    thread::sleep(next - now);
                }
                next += Duration::from_millis(100);
                let port = base_port + r.sent as u16;
                let pkt = seal(&key, tcp(port), me);
                let t = Instant::now();
                s.send_to(&pkt, sock(SRV4, KNOCK_PORT)).unwrap();
                r.sent += 1;
                let target = sock(SRV4, port);
                while t.elapsed() < Duration::from_secs(1) {
                    // An RST comes back in well under a millisecond on the veth: 1 ms tells a
                    // dropped SYN from a passed one, and bounds the latency's resolution.
                    match TcpStream::connect_timeout(&target, Duration::from_millis(1)) {
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                        Err(_) => continue,
                    }
                    r.granted += 1;
                    r.latencies.push(t.elapsed());
                    break;
                }
            }
            r
        })
    })
}

/// Junk from 200 sources at the speed of one sender thread, while a legitimate client knocks
/// every 100 ms: every legitimate knock is granted within 1 s, and the daemon's memory stays
/// flat. The per-source limit drops most of the flood in the kernel.
#[test]
fn junk_flood_does_not_starve_legit_knocks_or_grow_memory() {
    junk_flood(20, 1.0);
}

pub(super) fn junk_flood(rate_limit: u32, legit_min: f64) {
    let _alone = flood_lock();
    let lab = Lab::new();
    let key_path = lab.keygen("alice.key");
    let base_port = 30000u16;
    // Each legitimate knock opens its own port: protect and allow 30000..30399.
    let ports: Vec<String> = (0..400)
        .map(|i| format!("\"tcp/{}\"", base_port + i))
        .collect();
    let ports = ports.join(", ");
    // The daemon's own resilience: random junk must reach the queue, so the kernel's junk
    // filter is off (prefilter.rs floods with it on).
    lab.write_config_raw(
        &format!("protect = [{ports}]\nmax_age = 120\nrate_limit = {rate_limit}\n{NO_PREFILTER}"),
        &alice(&key_path, &ports, 60),
    );
    // Production log level: rejected junk is logged at debug, i.e. not at all.
    let d = Daemon::start(
        &lab,
        &[],
        &lab.path("nfknock.toml"),
        &[],
        "info",
        "flood.log",
    );
    let pid = d.pid();
    let key = nfknock::config::read_native_key_file(
        &nfknock::sys::FsLoader,
        &key_path,
        nfknock::sys::euid(),
    )
    .unwrap();
    let sources = add_flood_sources(&lab, 200);
    let (n, limit) = flood_bounds();

    let (rss0, hwm0) = memory_kib(pid);
    let q0 = queue_stats(&lab, 3);
    let stop = Arc::new(AtomicBool::new(false));
    let legit = legit_knocks(&lab, key, base_port, stop.clone());
    let flooder = flood(&lab, sources, n, limit, stop.clone());
    let mut rss_max = rss0;
    while !flooder.is_finished() {
        thread::sleep(Duration::from_millis(250));
        rss_max = rss_max.max(memory_kib(pid).0);
    }
    let f = flooder.join().unwrap();
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let mut l = legit.join().unwrap();
    let q1 = queue_stats(&lab, 3);
    let (rss1, hwm1) = memory_kib(pid);
    let rate = nft_out(&lab, &["list", "set", "inet", "nfknock", "knock_rate_v4"]);
    let tracked = rate.matches("10.77.0.").count();

    let queued = q1.queued_total - q0.queued_total;
    let lat_med = if l.latencies.is_empty() {
        Duration::ZERO
    } else {
        median(&mut l.latencies)
    };
    let lat_max = l.latencies.iter().max().copied().unwrap_or_default();
    eprintln!(
        "FIGURE junk flood (rate_limit = {rate_limit}): sent {} packets ({} send errors) from 200 sources in {:?} = {:.0} pkt/s; \
         kernel queued {queued} to the daemon ({} dropped: queue full, {} user-dropped), {tracked} sources rate-tracked; \
         legit knocks granted {}/{} ({:.1} %), knock → TCP open median {lat_med:?} max {lat_max:?}; \
         daemon VmRSS {rss0} → max {rss_max} → {rss1} KiB, VmHWM {hwm0} → {hwm1} KiB",
        f.sent,
        f.send_errors,
        f.took,
        f.sent as f64 / f.took.as_secs_f64(),
        q1.dropped_full - q0.dropped_full,
        q1.user_dropped - q0.user_dropped,
        l.granted,
        l.sent,
        100.0 * l.granted as f64 / l.sent.max(1) as f64,
    );
    assert!(f.sent >= n.min(100_000), "the flood did not flood: {f:?}");
    assert!(l.sent >= 10, "too few legitimate knocks to judge: {l:?}");
    assert!(
        l.granted as f64 >= legit_min * l.sent as f64,
        "legitimate knocks starved by the flood: {}/{}",
        l.granted,
        l.sent
    );
    assert!(
        rss_max.saturating_sub(rss0) < 8 * 1024,
        "RSS grew {rss0} → {rss_max} KiB"
    );
    assert!(
        hwm1.saturating_sub(hwm0) < 8 * 1024,
        "peak RSS grew {hwm0} → {hwm1} KiB"
    );
    let log = d.log();
    assert!(!log.contains("ERROR"), "{log}");
}

/// `n` fwknop clients open to every source (`sources` left at its default), each with its own
/// random keys: fwknop packets carry no key hint, so every fwknop-shaped packet is tried under
/// all of them — the costliest packet there is.
fn wide_open_fwknop_clients(n: usize) -> String {
    use base64::Engine as _;
    let b64 = |len: usize| {
        let mut k = vec![0u8; len];
        OsRng.fill(&mut k);
        base64::engine::general_purpose::STANDARD.encode(k)
    };
    (0..n)
        .map(|i| {
            format!(
                "[[client]]\nname = \"fw{i}\"\nallow = [\"tcp/{HOST_PORT}\"]\n[client.fwknop]\n\
                 key_base64 = \"{}\"\nhmac_key_base64 = \"{}\"\nhmac = \"sha256\"\nmode = \"cbc\"\n\n",
                b64(32),
                b64(64)
            )
        })
        .collect()
}

/// Send fwknop-shaped junk (base64 text of an fwknop SPA's length, starting like a Rijndael
/// packet, so it passes every cheap check and costs one HMAC per fwknop client) from `sources`
/// in the client namespace to the server's IPv6 knock port, as fast as one thread can, until
/// `stop`, `limit` or `max` packets.
fn fwknop_junk_flood(
    lab: &Lab,
    sources: Vec<IpAddr>,
    max: u64,
    limit: Duration,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<FloodReport> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let payloads: Vec<Vec<u8>> = (0..256)
        .map(|_| {
            let mut p = vec![0u8; 200];
            OsRng.fill(&mut p);
            for c in p.iter_mut() {
                *c = ALPHABET[usize::from(*c) % 64];
            }
            p[0] = b'8';
            p
        })
        .collect();
    let sender = Sender {
        to: sock(SRV6, KNOCK_PORT),
        check_every: 1024,
        max,
        limit,
        stop,
    };
    sender.spawn(lab, sources, payloads)
}

/// Issue "security", item 5: a flood that outpaces the daemon — fwknop-shaped junk from many
/// IPv6 sources against many wide-open fwknop clients, with the per-source limit off — fills
/// the queue, and still a flushed ruleset is repaired within 1 s and SIGTERM ends the daemon
/// within 1 s (the loop serves them between bursts instead of draining the queue first).
#[test]
fn a_flood_that_saturates_the_queue_neither_delays_a_flush_repair_nor_sigterm() {
    use std::os::unix::fs::PermissionsExt;
    let _alone = flood_lock();
    let lab = Lab::new();
    let config = lab.write_config_raw(
        &format!("protect = [\"tcp/{HOST_PORT}\"]\nmax_age = 120\nrate_limit = 0\n"),
        &wide_open_fwknop_clients(200),
    );
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut d = Daemon::start(&lab, &[], &config, &[], "info", "saturated.log");
    // 48 sources on the client's veth: fd77::100 … fd77::12f.
    let sources = add_flood_sources_v6(&lab, 48);

    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = sources
        .chunks(16)
        .map(|c| {
            fwknop_junk_flood(
                &lab,
                c.to_vec(),
                20_000_000,
                Duration::from_secs(60),
                stop.clone(),
            )
        })
        .collect();
    let finish = |stop: &AtomicBool, senders: Vec<thread::JoinHandle<FloodReport>>| {
        stop.store(true, Ordering::SeqCst);
        senders
            .into_iter()
            .map(|s| s.join().unwrap())
            .collect::<Vec<_>>()
    };

    // Saturated: a backlog of thousands waits in the queue and the kernel drops for want of room.
    let q0 = queue_stats(&lab, 3);
    let saturated = wait_until(Duration::from_secs(20), || {
        let q = queue_stats(&lab, 3);
        q.waiting >= 10_000 && q.dropped_full > q0.dropped_full
    });
    let q = queue_stats(&lab, 3);
    if saturated.is_none() {
        let r = finish(&stop, senders);
        panic!("the flood did not saturate the queue: {q:?}, {r:?}");
    }
    eprintln!("FIGURE saturated queue: {q:?}");

    // A flush is repaired within 1 s while the backlog is still there.
    let out = lab.run(&lab.srv, &["nft", "flush", "ruleset"]);
    assert!(out.status.success());
    let flushed = Instant::now();
    let repaired = wait_until(Duration::from_secs(5), || {
        nft_out(&lab, &["list", "chain", "inet", "nfknock", "gate_input"]).contains("queue num 3")
    });
    let backlog = queue_stats(&lab, 3).waiting;
    eprintln!("FIGURE flush repaired under the flood after {repaired:?} (backlog {backlog})");
    if repaired.is_none_or(|t| t > Duration::from_secs(1)) {
        let r = finish(&stop, senders);
        panic!(
            "flush not repaired within 1 s under the flood ({:?}): {r:?}",
            flushed.elapsed()
        );
    }

    // The flood fills the queue again; SIGTERM ends the daemon within 1 s all the same.
    thread::sleep(Duration::from_millis(500));
    let q = queue_stats(&lab, 3);
    let mut child = d.child.take().unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let asked = Instant::now();
    let exited = wait_until(Duration::from_secs(5), || {
        child.try_wait().ok().flatten().is_some()
    });
    let took = asked.elapsed();
    if exited.is_none() {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let r = finish(&stop, senders);
    eprintln!(
        "FIGURE SIGTERM under the flood (backlog {}): exited after {took:?}; senders {r:?}",
        q.waiting
    );
    assert!(
        q.waiting >= 1_000,
        "the queue was not saturated at SIGTERM: {q:?}"
    );
    assert!(
        exited.is_some_and(|t| t <= Duration::from_secs(1)),
        "SIGTERM took {took:?} under the flood"
    );
    assert!(status.success(), "exit status {status}\n{}", d.log());
}
