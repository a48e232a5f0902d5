//! The state directory: a corrupt, wiped or moved replay journal opens no replay window; a
//! directory prepared by `nfknock init-state` is a first start that grants at once.

use std::thread;
use std::time::{Duration, Instant};

use super::*;

#[test]
fn corrupt_journal_is_set_aside_and_no_replay_window_opens() {
    const MAX_AGE: u64 = 4;
    let mut lab = Lab::new();
    let key = lab.keygen("alice.key");
    lab.write_config_raw(
        &format!("protect = [\"tcp/2222\"]\nmax_age = {MAX_AGE}\n"),
        &alice(&key, "\"tcp/2222\"", 2),
    );
    lab.start_daemon();
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let sent = lab.path("sent.bin");
    knock_host(&lab, &key, &["--save-packet", sent.to_str().unwrap()]);
    assert!(
        wait_until(OPEN_WITHIN, || client_open(&lab)).is_some(),
        "{}",
        lab.log()
    );
    let (_, status) = lab.stop_daemon();
    assert!(status.success());
    assert!(
        wait_until(Duration::from_secs(4), || !client_open(&lab)).is_some(),
        "first grant did not expire"
    );
    // Built (stamped) before the restart, never sent: nobody can tell it from a recorded one.
    let unsent = lab.path("unsent.bin");
    knock_host(
        &lab,
        &key,
        &["--save-packet", unsent.to_str().unwrap(), "--dry-run"],
    );

    let journal = lab.path("state").join("replay.journal");
    std::fs::write(
        &journal,
        b"\x00garbage that is no replay journal\xff\xfe".repeat(10),
    )
    .unwrap();
    lab.start_daemon();
    let loaded = Instant::now();
    let log = lab.log();
    assert!(
        log.contains("replay journal was corrupt and has been set aside"),
        "{log}"
    );
    assert!(
        log.contains(&format!("refused for the next {MAX_AGE}s")),
        "{log}"
    );
    let aside: Vec<_> = std::fs::read_dir(lab.path("state"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("replay.journal.corrupt-"))
        .collect();
    assert_eq!(
        aside.len(),
        1,
        "corrupt journal not kept for a person to look at"
    );

    // Knocks stamped before the restart: refused, recorded or not.
    let lost = rejections(&lab.log(), "state-lost");
    send_udp(&lab.cli, sock(SRV4, KNOCK_PORT), read(&unsent));
    send_udp(&lab.cli, sock(SRV4, KNOCK_PORT), read(&sent));
    // Documented (daemon.rs): a fresh knock is refused too until load time + max_age, because a
    // packet accepted before the loss may carry a timestamp up to max_age ahead of the clock.
    knock_host(&lab, &key, &[]);
    assert!(
        wait_until(Duration::from_secs(2), || rejections(
            &lab.log(),
            "state-lost"
        ) >= lost + 3)
        .is_some(),
        "old knocks not refused as state-lost:\n{}",
        lab.log()
    );
    assert!(
        loaded.elapsed() < Duration::from_secs(MAX_AGE),
        "too slow to test the refusal window"
    );
    assert!(
        !client_open(&lab),
        "a knock stamped inside the refusal window opened the port"
    );

    // Past the window, a fresh knock is granted: the daemon kept running.
    thread::sleep(Duration::from_secs(MAX_AGE + 1).saturating_sub(loaded.elapsed()));
    knock_host(&lab, &key, &[]);
    assert!(
        wait_until(OPEN_WITHIN, || client_open(&lab)).is_some(),
        "{}",
        lab.log()
    );
    let (_, status) = lab.stop_daemon();
    assert!(
        status.success(),
        "daemon did not keep running after the corrupt journal"
    );
}

/// Issue "security", item 3: a state directory that lost its journal (wiped, on tmpfs, or a
/// changed `state_dir`) is not a first start. Knocks captured before the restart, sent or only
/// built, are refused; the log says which case applied and what to do.
#[test]
fn wiped_or_moved_state_dir_refuses_knocks_captured_before_the_restart() {
    // Long enough that every captured knock is still fresh when it is replayed: a refusal
    // below can only be the lost-journal rule, never `stale`.
    const MAX_AGE: u64 = 120;
    let mut lab = Lab::new();
    let key = lab.keygen("alice.key");
    write_config_with_state(&lab, "state", MAX_AGE, &key);
    lab.start_daemon();
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let sent = lab.path("sent.bin");
    knock_host(&lab, &key, &["--save-packet", sent.to_str().unwrap()]);
    assert!(
        wait_until(OPEN_WITHIN, || client_open(&lab)).is_some(),
        "{}",
        lab.log()
    );
    let unsent = lab.path("unsent.bin");
    knock_host(
        &lab,
        &key,
        &["--save-packet", unsent.to_str().unwrap(), "--dry-run"],
    );
    assert!(lab.stop_daemon().1.success());
    assert!(
        wait_until(Duration::from_secs(4), || !client_open(&lab)).is_some(),
        "the first grant did not expire"
    );

    let replay_captured = |lab: &Lab, case: &str| {
        let (lost, grants) = (
            rejections(&lab.log(), "state-lost"),
            grant_lines(&lab.log()),
        );
        for k in [&sent, &unsent] {
            send_udp(&lab.cli, sock(SRV4, KNOCK_PORT), read(k));
        }
        wait_until(Duration::from_secs(2), || {
            rejections(&lab.log(), "state-lost") >= lost + 2 || grant_lines(&lab.log()) > grants
        });
        assert_eq!(
            grant_lines(&lab.log()),
            grants,
            "{case}: a knock captured before the restart was granted:\n{}",
            lab.log()
        );
        assert!(!client_open(lab), "{case}: port open");
        assert_eq!(
            rejections(&lab.log(), "state-lost"),
            lost + 2,
            "{case}: captured knocks not refused as state-lost:\n{}",
            lab.log()
        );
    };

    // 1. The state directory is wiped (rm -rf, a tmpfs after a reboot).
    std::fs::remove_dir_all(lab.path("state")).unwrap();
    lab.start_daemon();
    replay_captured(&lab, "wiped state directory");
    let lost_line = "no replay journal and no first-start marker";
    assert_eq!(lab.log().matches(lost_line).count(), 1, "{}", lab.log());
    assert!(
        lab.log()
            .contains(&format!("refused for the next {MAX_AGE}s")),
        "{}",
        lab.log()
    );
    assert!(lab.log().contains("nfknock init-state"), "{}", lab.log());
    assert!(lab.stop_daemon().1.success());

    // 2. `state_dir` now names another (empty) directory.
    write_config_with_state(&lab, "state-moved", MAX_AGE, &key);
    lab.start_daemon();
    replay_captured(&lab, "changed state_dir");
    assert_eq!(lab.log().matches(lost_line).count(), 2, "{}", lab.log());
    assert!(lab.path("state-moved").join("replay.journal").exists());
    assert!(lab.stop_daemon().1.success());
}

/// Issue "security", item 3: a state directory prepared the way the installer prepares it
/// (`nfknock init-state`) is a first start: the daemon says so, removes the marker once its
/// journal exists, and grants the first knock at once.
#[test]
fn first_start_with_the_install_marker_grants_at_once() {
    let mut lab = Lab::new();
    let key = lab.keygen("alice.key");
    write_config_with_state(&lab, "state", 120, &key);
    let state = lab.path("state");
    assert!(
        std::fs::read_dir(&state).unwrap().count() == 1,
        "the lab prepares the state directory with one marker file"
    );
    lab.start_daemon();
    assert!(
        lab.log()
            .contains("first start of this state directory (first-start marker found)"),
        "{}",
        lab.log()
    );
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    knock_host(&lab, &key, &[]);
    assert!(
        wait_until(OPEN_WITHIN, || client_open(&lab)).is_some(),
        "the first knock after a first start was not granted at once:\n{}",
        lab.log()
    );
    let names: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["replay.journal".to_string()],
        "marker not removed"
    );
    // A restart is no longer a first start.
    assert!(lab.stop_daemon().1.success());
    lab.start_daemon();
    assert_eq!(
        lab.log()
            .matches("first start of this state directory")
            .count(),
        1
    );
    assert!(lab.log().contains("replay journal loaded"), "{}", lab.log());
}
