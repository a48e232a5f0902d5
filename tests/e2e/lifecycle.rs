//! Signals and reloads: SIGTERM is prompt, a broken config is refused and the old one serves,
//! a reload that removes a client closes its port (unless `revoke_on_reload = false`).

use std::time::Duration;

use super::*;

#[test]
fn sigterm_exits_within_a_second_and_a_broken_reload_keeps_the_old_config() {
    let (mut lab, key) = started(2);
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    // break the config, ask for a reload: refused with a message, old one keeps serving
    std::fs::write(
        lab.path("nfknock.toml"),
        "[server]\nport = \"not a number\"\n",
    )
    .unwrap();
    lab.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(3), || lab
            .log()
            .contains("new config refused"))
        .is_some(),
        "{}",
        lab.log()
    );
    knock_host(&lab, &key, &[]);
    assert!(opens(&lab.cli, sock(SRV4, HOST_PORT)));
    // idle daemon, no packet in flight: SIGTERM must still be prompt
    std::thread::sleep(Duration::from_millis(300));
    let (took, status) = lab.stop_daemon();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(1), "took {took:?} to stop");
    // grants stay in the kernel after the daemon is gone
    assert!(
        lab.nft_list().contains("10.77.0.2"),
        "grant vanished with the daemon"
    );
}

/// Another client, bob, for configs that drop alice: the gate (`protect`) stays the same.
fn bob(lab: &Lab) -> String {
    let key = lab.keygen("bob.key");
    format!(
        "[[client]]\nname = \"bob\"\nkey_file = \"{}\"\nallow = [\"tcp/{HOST_PORT}\"]\n",
        key.display()
    )
}

/// `nft flush ruleset` in the server namespace, and wait until the daemon has put its table
/// back.
fn flush_and_wait_for_repair(lab: &Lab) {
    let out = lab.run(&lab.srv, &["nft", "flush", "ruleset"]);
    assert!(out.status.success());
    assert!(
        wait_until(Duration::from_secs(2), || lab
            .nft_list()
            .contains("queue num 3"))
        .is_some(),
        "table not repaired:\n{}",
        lab.log()
    );
}

/// Issue "security", item 10: removing a client from the config and reloading closes the
/// port it had opened at once (a new TCP connection fails), and a later flush repair does not
/// bring the grant back.
#[test]
fn a_reload_that_removes_a_client_closes_its_open_port_and_a_flush_repair_keeps_it_closed() {
    let (lab, key) = started(60);
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let target = sock(SRV4, HOST_PORT);
    knock_host(&lab, &key, &[]);
    assert!(opens(&lab.cli, target), "{}", lab.log());

    lab.write_config("", &bob(&lab));
    reload(&lab);
    assert!(
        !tcp_open(&lab.cli, target, CLOSED_WITHIN),
        "the removed client's port is still open after the reload:\n{}",
        lab.nft_list()
    );
    let allowed = String::from_utf8_lossy(
        &lab.run(
            &lab.srv,
            &["nft", "list", "set", "inet", "nfknock", "allow_v4"],
        )
        .stdout,
    )
    .into_owned();
    assert!(
        !allowed.contains(CLI4),
        "grant still in the set:\n{allowed}"
    );
    let log = lab.log();
    assert!(
        log.lines()
            .any(|l| l.contains("grant revoked") && l.contains("alice") && l.contains(CLI4)),
        "no revocation line naming the client and the address:\n{log}"
    );

    flush_and_wait_for_repair(&lab);
    assert!(
        !tcp_open(&lab.cli, target, CLOSED_WITHIN),
        "the flush repair restored a revoked grant:\n{}",
        lab.nft_list()
    );
    // alice's key is refused now.
    knock_host(&lab, &key, &[]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!tcp_open(&lab.cli, target, CLOSED_WITHIN));
}

/// With `revoke_on_reload = false` the same reload leaves the grant to run out its time,
/// across a flush repair too.
#[test]
fn with_revoke_on_reload_false_a_removed_clients_port_stays_open_until_it_expires() {
    let mut lab = Lab::new();
    let key = lab.keygen("alice.key");
    let client = alice(&key, &alice_allows_both(), 60);
    lab.write_config("revoke_on_reload = false", &client);
    lab.start_daemon();
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let target = sock(SRV4, HOST_PORT);
    knock_host(&lab, &key, &[]);
    assert!(opens(&lab.cli, target), "{}", lab.log());

    lab.write_config("revoke_on_reload = false", &bob(&lab));
    reload(&lab);
    assert!(
        opens(&lab.cli, target),
        "the grant was revoked:\n{}",
        lab.log()
    );
    flush_and_wait_for_repair(&lab);
    assert!(
        opens(&lab.cli, target),
        "the flush repair lost the kept grant:\n{}",
        lab.log()
    );
}
