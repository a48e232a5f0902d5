//! Replays: a knock is granted once, also across a restart, a SIGKILL and a reload that raises
//! `max_age`.

use std::thread;
use std::time::{Duration, Instant};

use super::*;

#[test]
fn replayed_knock_is_refused_also_after_a_restart() {
    let (mut lab, key) = started(1);
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let target = sock(SRV4, HOST_PORT);
    let saved = lab.path("knock.bin");
    knock_host(&lab, &key, &["--save-packet", saved.to_str().unwrap()]);
    assert!(opens(&lab.cli, target));
    assert!(closes(&lab.cli, target, Duration::from_secs(4)));

    // the same bytes again: refused
    send_udp(&lab.cli, sock(SRV4, KNOCK_PORT), read(&saved));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !tcp_open(&lab.cli, target, CLOSED_WITHIN),
        "replay opened the port"
    );
    assert!(
        lab.log().contains("replay"),
        "no replay log line:\n{}",
        lab.log()
    );

    // and after a restart of the daemon
    let (_, status) = lab.stop_daemon();
    assert!(status.success());
    lab.start_daemon();
    let before = rejections(&lab.log(), "replay");
    send_udp(&lab.cli, sock(SRV4, KNOCK_PORT), read(&saved));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !tcp_open(&lab.cli, target, CLOSED_WITHIN),
        "replay after restart opened the port"
    );
    let after = rejections(&lab.log(), "replay");
    assert!(
        after > before,
        "replay after restart not detected:\n{}",
        lab.log()
    );
}

#[test]
fn sigkill_keeps_grants_in_the_kernel_until_they_expire_and_old_knocks_stay_replays() {
    let (mut lab, key) = started(4);
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let (k1, k2) = (lab.path("k1.bin"), lab.path("k2.bin"));
    knock_host(&lab, &key, &["--save-packet", k1.to_str().unwrap()]);
    knock_access(
        &lab,
        &key,
        "tcp/8080",
        &["--save-packet", k2.to_str().unwrap()],
    );
    assert!(
        wait_until(OPEN_WITHIN, || client_open(&lab)).is_some(),
        "{}",
        lab.log()
    );
    let granted = Instant::now();
    assert!(
        wait_until(OPEN_WITHIN, || seconds_left(&lab, CLI4, "tcp/8080")
            .is_some())
        .is_some()
    );

    lab.kill_daemon(); // SIGKILL: no shutdown code runs
                       // The grants live in the kernel, not in the daemon.
    assert!(client_open(&lab), "grant gone with the killed daemon");
    assert!(!stranger_open(&lab), "gate gone with the killed daemon");
    assert!(seconds_left(&lab, CLI4, "tcp/8080").is_some());
    // ... and the kernel expires them on time (4 s after the knock), daemon or not.
    let gone = wait_until(Duration::from_secs(8), || {
        !nft_out(&lab, &["list", "set", "inet", "nfknock", "allow_v4"]).contains(CLI4)
    });
    assert!(gone.is_some(), "grants did not expire without the daemon");
    let lived = granted.elapsed();
    assert!(
        lived > Duration::from_secs(3) && lived < Duration::from_millis(6500),
        "grants lived {lived:?}, timeout 4 s"
    );
    assert!(!client_open(&lab), "port open after expiry");

    // After a restart, every knock sent before the crash is a replay.
    lab.start_daemon();
    let before = rejections(&lab.log(), "replay");
    for k in [&k1, &k2] {
        send_udp(&lab.cli, sock(SRV4, KNOCK_PORT), read(k));
    }
    assert!(
        wait_until(Duration::from_secs(2), || rejections(&lab.log(), "replay")
            >= before + 2)
        .is_some(),
        "knocks sent before the crash not refused as replays:\n{}",
        lab.log()
    );
    assert!(
        !client_open(&lab),
        "a replay after the crash opened the port"
    );
    // The restarted daemon serves: a fresh knock opens.
    knock_host(&lab, &key, &[]);
    assert!(
        wait_until(OPEN_WITHIN, || client_open(&lab)).is_some(),
        "{}",
        lab.log()
    );
}

/// Issue "security", item 6: a knock accepted under a short `max_age` and long enough ago that
/// the old cache forgot it must stay a replay when a reload raises `max_age`.
#[test]
fn raising_max_age_on_reload_does_not_make_an_old_knock_fresh() {
    let mut lab = Lab::new();
    let key = lab.keygen("alice.key");
    write_config_with_state(&lab, "state", 2, &key);
    lab.start_daemon();
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let sent = lab.path("sent.bin");
    let knocked = Instant::now();
    knock_host(&lab, &key, &["--save-packet", sent.to_str().unwrap()]);
    assert!(
        wait_until(OPEN_WITHIN, || client_open(&lab)).is_some(),
        "{}",
        lab.log()
    );
    // Past max_age + one tick: a cache bounded by max_age has dropped the entry by now.
    thread::sleep(Duration::from_secs(4).saturating_sub(knocked.elapsed()));
    assert!(!client_open(&lab), "the one-second grant did not expire");
    write_config_with_state(&lab, "state", 3600, &key);
    reload(&lab);
    let (replays, grants) = (rejections(&lab.log(), "replay"), grant_lines(&lab.log()));
    send_udp(&lab.cli, sock(SRV4, KNOCK_PORT), read(&sent));
    wait_until(Duration::from_secs(2), || {
        rejections(&lab.log(), "replay") > replays || grant_lines(&lab.log()) > grants
    });
    assert_eq!(
        grant_lines(&lab.log()),
        grants,
        "the old knock was granted after max_age was raised:\n{}",
        lab.log()
    );
    assert!(!client_open(&lab), "port open");
    assert_eq!(
        rejections(&lab.log(), "replay"),
        replays + 1,
        "not refused as a replay:\n{}",
        lab.log()
    );
}
