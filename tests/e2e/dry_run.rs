//! `serve --dry-run` closes nothing unless `--with-gate`, and opens nothing either way.

use std::thread;
use std::time::Duration;

use super::*;

#[test]
fn dry_run_installs_no_gate_and_writes_no_grant() {
    let lab = Lab::new();
    let key = lab.keygen("alice.key");
    let config = lab.write_config("", &alice(&key, "\"tcp/2222\"", 30));
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    assert!(
        client_open(&lab) && stranger_open(&lab),
        "the lab port is not open to begin with"
    );

    let mut d = Daemon::start(&lab, &[], &config, &["--dry-run"], "debug", "dry.log");
    assert!(d.log().contains("no gate is installed"), "{}", d.log());
    let chain = nft_out(&lab, &["list", "chain", "inet", "nfknock", "gate_input"]);
    assert!(
        chain.contains("queue num 3") && !chain.contains("@allow"),
        "{chain}"
    );
    assert!(
        client_open(&lab) && stranger_open(&lab),
        "a dry run closed the port"
    );

    knock_host(&lab, &key, &[]);
    assert!(
        wait_until(Duration::from_secs(2), || d
            .log()
            .contains("dry run: would add grant"))
        .is_some(),
        "{}",
        d.log()
    );
    assert!(
        d.log()
            .lines()
            .any(|l| l.contains("would add grant") && l.contains(CLI4) && l.contains("tcp/2222")),
        "{}",
        d.log()
    );
    assert!(
        !nft_out(&lab, &["list", "set", "inet", "nfknock", "allow_v4"]).contains(CLI4),
        "a dry run wrote a grant"
    );
    assert!(
        client_open(&lab) && stranger_open(&lab),
        "the port closed after a dry-run knock"
    );
    // A flush during a dry run restores the gateless table, and no grant.
    lab.run(&lab.srv, &["nft", "flush", "ruleset"]);
    assert!(wait_until(RESTORED_WITHIN, || nft_out(
        &lab,
        &["list", "chain", "inet", "nfknock", "gate_input"]
    )
    .contains("queue"))
    .is_some());
    assert!(!nft_out(&lab, &["list", "set", "inet", "nfknock", "allow_v4"]).contains(CLI4));
    assert!(stranger_open(&lab));
    assert!(d.stop().success());
}

#[test]
fn dry_run_with_gate_closes_the_port_and_a_valid_knock_opens_nothing() {
    let lab = Lab::new();
    let key = lab.keygen("alice.key");
    let config = lab.write_config("", &alice(&key, "\"tcp/2222\"", 30));
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));

    let mut d = Daemon::start(
        &lab,
        &[],
        &config,
        &["--dry-run", "--with-gate"],
        "debug",
        "dry-gate.log",
    );
    assert!(d.log().contains("gate installed"), "{}", d.log());
    assert!(
        !client_open(&lab) && !stranger_open(&lab),
        "--with-gate left the port open"
    );
    knock_host(&lab, &key, &[]);
    assert!(
        wait_until(Duration::from_secs(2), || d
            .log()
            .contains("dry run: would add grant"))
        .is_some(),
        "{}",
        d.log()
    );
    thread::sleep(Duration::from_millis(300));
    assert!(!client_open(&lab), "a dry-run knock opened the port");
    assert!(d.stop().success());

    // --with-gate alone is a usage error.
    let out = lab.nfknock(
        &lab.srv,
        &["serve", "--config", config.to_str().unwrap(), "--with-gate"],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
