//! Issue 12 §8: nfknock on a host that already runs a default-drop firewall, the shipped
//! `examples/nftables-host.conf`. The host's own firewall accepts the protected port; nfknock's
//! gate (which runs first, at priority -10) decides who gets there: closed → knock → open →
//! expired. Without the host's accept a grant opens nothing (the gate never accepts); a reload
//! of the host firewall (`flush ruleset`) does not open the gate.

use std::time::Duration;

use super::*;

/// The shipped example with the protected port set to the lab's host port (and, if `accept`
/// is false, the protected port's accept left out), loaded in the server namespace.
fn load_host_firewall(lab: &Lab, accept: bool) {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/nftables-host.conf"
    ))
    .unwrap();
    let define = "define nfknock_protected_tcp = { 22 }";
    assert!(shipped.contains(define), "the example's define changed");
    let mut text = shipped.replace(
        define,
        &format!("define nfknock_protected_tcp = {{ {HOST_PORT} }}"),
    );
    if !accept {
        let line = "\t\ttcp dport $nfknock_protected_tcp accept\n";
        assert!(text.contains(line), "the example's accept line changed");
        text = text.replace(line, "");
    }
    let file = lab.path("nftables.conf");
    std::fs::write(&file, text).unwrap();
    let out = lab.run(&lab.srv, &["nft", "-f", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "loading the example host firewall: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn default_drop_host_firewall_with_nfknock_closed_knock_open_expired() {
    let mut lab = Lab::new();
    let key = lab.keygen("alice.key");
    lab.write_config("", &alice(&key, &format!("\"tcp/{HOST_PORT}\""), 3));
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    load_host_firewall(&lab, true);
    assert!(
        client_open(&lab) && stranger_open(&lab),
        "the example firewall does not accept the protected port by itself"
    );

    lab.start_daemon();
    assert!(!client_open(&lab), "open before the knock");
    assert!(!stranger_open(&lab), "open to a stranger");
    // The knock gets through the host's policy drop: nfknock queues it first.
    knock_host(&lab, &key, &[]);
    assert!(
        opens(&lab.cli, sock(SRV4, HOST_PORT)),
        "the knock opened nothing:\n{}",
        lab.log()
    );
    assert!(
        !stranger_open(&lab),
        "the grant opened the port to a stranger"
    );
    assert!(
        closes(&lab.cli, sock(SRV4, HOST_PORT), Duration::from_secs(6)),
        "the grant did not expire"
    );

    // Reloading the host firewall (its `flush ruleset` removes nfknock's table): the daemon
    // re-creates the gate, and the port stays closed to anyone without a grant.
    load_host_firewall(&lab, true);
    assert!(
        wait_until(RESTORED_WITHIN, || lab.nft_list().contains("gate_input")).is_some(),
        "nfknock's table was not re-created after the host firewall reload:\n{}",
        lab.log()
    );
    assert!(
        !stranger_open(&lab) && !client_open(&lab),
        "open after the host firewall reload"
    );
    knock_host(&lab, &key, &[]);
    assert!(
        opens(&lab.cli, sock(SRV4, HOST_PORT)),
        "no grant after the reload"
    );
}

/// The README's warning, shown: behind a `policy drop` without the protected port's accept,
/// a valid knock is granted (the element is in the set) and the port stays closed.
#[test]
fn a_grant_opens_nothing_behind_a_policy_drop_without_the_accept() {
    let mut lab = Lab::new();
    let key = lab.keygen("alice.key");
    lab.write_config("", &alice(&key, &format!("\"tcp/{HOST_PORT}\""), 30));
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    load_host_firewall(&lab, false);
    lab.start_daemon();
    knock_host(&lab, &key, &[]);
    assert!(
        wait_until(Duration::from_secs(2), || seconds_left(
            &lab,
            CLI4,
            &format!("tcp/{HOST_PORT}")
        )
        .is_some())
        .is_some(),
        "the knock was not granted:\n{}",
        lab.log()
    );
    assert!(
        !tcp_open(&lab.cli, sock(SRV4, HOST_PORT), Duration::from_secs(1)),
        "the port opened although the host firewall does not accept it"
    );
}
