//! The kernel's per-source rate limit (per /64 for IPv6) drops a flood before the queue, and
//! with the limit off (`rate_limit = 0`) the daemon itself keeps legitimate knocks going.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::flood::{add_flood_sources_v6, flood, junk_flood, queue_stats};
use super::*;

/// The same flood with the per-source limit off (`rate_limit = 0`): every junk packet reaches
/// the queue, as from a botnet too large for the limit to matter. The daemon must keep up well
/// enough that at least 90 % of legitimate knocks are granted, with flat memory.
#[test]
fn junk_flood_without_rate_limit_reaches_the_daemon_and_legit_knocks_still_pass() {
    junk_flood(0, 0.9);
}

/// The kernel's per-source limit (20/s, burst 40) drops a one-source flood in prerouting: the
/// queue sees about 40 of 20 000 packets, the source is tracked in `knock_rate_v4`, and the
/// same source knocks successfully a moment later.
#[test]
fn per_source_rate_limit_drops_a_single_source_flood_before_the_queue() {
    // Random junk: the key-hint filter would drop it before the rate rules.
    let (lab, key) = started_with(NO_PREFILTER, 5);
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let q0 = queue_stats(&lab, 3);
    let stop = Arc::new(AtomicBool::new(false));
    let f = flood(
        &lab,
        vec![CLI4.parse().unwrap()],
        20_000,
        Duration::from_secs(20),
        stop,
    )
    .join()
    .unwrap();
    thread::sleep(Duration::from_millis(300));
    let q1 = queue_stats(&lab, 3);
    let queued = q1.queued_total - q0.queued_total;
    let allowed = 40 + (20.0 * (f.took + Duration::from_millis(300)).as_secs_f64()).ceil() as u64;
    eprintln!("FIGURE single-source flood: {} packets in {:?}, {queued} reached the queue (limit allows ≤ {allowed})", f.sent, f.took);
    assert!(f.sent >= 19_000, "{f:?}");
    assert!(
        queued <= allowed,
        "{queued} of {} packets reached the queue",
        f.sent
    );
    let rate = nft_out(&lab, &["list", "set", "inet", "nfknock", "knock_rate_v4"]);
    assert!(
        rate.contains(CLI4),
        "source not tracked by the limit:\n{rate}"
    );
    // The bucket refills at 20/s: the flooding source's own knock gets through a second later.
    thread::sleep(Duration::from_secs(1));
    knock_host(&lab, &key, &[]);
    assert!(
        wait_until(OPEN_WITHIN, || client_open(&lab)).is_some(),
        "{}",
        lab.log()
    );
}

/// Issue item 7: IPv6 knocks are rate limited per /64 (`rate_limit_v6_prefix = 64`), so a
/// host flooding from 20 addresses of its /64 gets one budget (burst 40, then 20/s) to the
/// queue, not 20 of them; the /64 is one element of `knock_rate_v6`; and a client in another
/// /64 knocks and connects while the flood goes on.
#[test]
fn ipv6_flood_from_many_addresses_of_one_slash_64_shares_one_rate_limit() {
    // Random junk: the key-hint filter would drop it before the rate rules.
    let (lab, key) = started_with(NO_PREFILTER, 5);
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let sources = add_flood_sources_v6(&lab, 20);
    let q0 = queue_stats(&lab, 3);
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = flood(
        &lab,
        sources,
        u64::MAX,
        Duration::from_secs(20),
        stop.clone(),
    );
    thread::sleep(Duration::from_millis(300));
    // A client of another /64 (the stranger's fd78::/64) knocks during the flood.
    lab.knock(
        &lab.oth,
        SRV_OTH6,
        &["--key-file", key.to_str().unwrap(), "--access", "tcp/2222"],
    );
    let opened = wait_until(OPEN_WITHIN, || {
        tcp_open(
            &lab.oth,
            sock(SRV_OTH6, HOST_PORT),
            Duration::from_millis(300),
        )
    });
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let f = flooder.join().unwrap();
    thread::sleep(Duration::from_millis(300));
    let queued = queue_stats(&lab, 3).queued_total - q0.queued_total;
    // One budget for the whole /64, plus the one knock from fd78::/64.
    let allowed =
        40 + (20.0 * (f.took + Duration::from_millis(300)).as_secs_f64()).ceil() as u64 + 1;
    let rate = nft_out(&lab, &["list", "set", "inet", "nfknock", "knock_rate_v6"]);
    eprintln!(
        "FIGURE v6 /64 flood: {} packets from 20 addresses in {:?}, {queued} reached the queue (limit allows ≤ {allowed})",
        f.sent, f.took
    );
    assert!(f.sent >= 19_000, "the flood did not flood: {f:?}");
    assert!(
        queued <= allowed,
        "{queued} of {} packets from one /64 reached the queue (one /64 budget allows {allowed}):\n{rate}",
        f.sent
    );
    assert!(
        rate.contains("fd77:: limit rate") && !rate.contains("fd77::1"),
        "the /64 must be one element, keyed by its network address:\n{rate}"
    );
    assert!(
        opened.is_some(),
        "a knock from another /64 did not open the port during the flood:\n{}",
        lab.log()
    );
}
