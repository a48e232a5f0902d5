//! `nfknock reload` (the unit's `ExecReload=`): exit status 0 only once the new config is in
//! force; a broken config fails with the reason on the terminal and the daemon keeps serving
//! the old one; no daemon is a clear failure, not a hang.

use std::time::Duration;

use super::*;

/// Bob's `[[client]]` (key file `bob.key`, tcp/2222), to add to a running config.
fn bob_entry(lab: &Lab) -> (String, PathBuf) {
    let key = lab.keygen("bob.key");
    let entry = format!(
        "[[client]]\nname = \"bob\"\nkey_file = \"{}\"\nallow = [\"tcp/{HOST_PORT}\"]\ntimeout = 30\n",
        key.display()
    );
    (entry, key)
}

fn reload_cmd(lab: &Lab) -> std::process::Output {
    let config = lab.path("nfknock.toml");
    lab.nfknock(&lab.srv, &["reload", "--config", config.to_str().unwrap()])
}

#[test]
fn reload_succeeds_once_the_new_config_is_in_force_and_a_broken_one_fails_with_the_reason() {
    let (lab, alice_key) = started(30);
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let target = sock(SRV4, HOST_PORT);
    let alice_only = alice(&alice_key, &alice_allows_both(), 30);
    let (bob, bob_key) = bob_entry(&lab);
    let knock_bob = || {
        lab.knock(
            &lab.cli,
            SRV4,
            &[
                "--key-file",
                bob_key.to_str().unwrap(),
                "--access",
                "tcp/2222",
            ],
        )
    };

    // Bob is unknown: his knock opens nothing.
    knock_bob();
    assert!(!tcp_open(&lab.cli, target, CLOSED_WITHIN), "{}", lab.log());

    // A good reload: exit 0, and bob's very next knock is granted (no waiting for a log line).
    lab.write_config("", &format!("{alice_only}{bob}"));
    let out = reload_cmd(&lab);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "reload failed: {stdout}{stderr}");
    assert!(stdout.contains("reloaded"), "{stdout}");
    knock_bob();
    assert!(
        opens(&lab.cli, target),
        "the reload said ok but bob's knock opened nothing:\n{}",
        lab.log()
    );

    // A broken config: exit 1, the reason (file, line, key) on the terminal, nothing changed.
    std::fs::write(
        lab.path("nfknock.toml"),
        "[server]\nport = \"not a number\"\n",
    )
    .unwrap();
    let out = reload_cmd(&lab);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("nfknock.toml") && stderr.contains("port"),
        "the reason is not on the terminal:\n{stderr}"
    );
    assert!(stderr.contains("keeps serving"), "{stderr}");
    // The old config (alice and bob, the gate) still serves: alice's knock opens the port for
    // her, a stranger stays out.
    knock_host(&lab, &alice_key, &[]);
    assert!(opens(&lab.cli, target), "{}", lab.log());
    assert!(!stranger_open(&lab));
}

/// With no daemon in the network namespace the command fails at once and says what to do.
#[test]
fn reload_without_a_daemon_fails_at_once_and_says_so() {
    let lab = Lab::new();
    let key = lab.keygen("alice.key");
    lab.write_config("", &alice(&key, &alice_allows_both(), 30));
    let start = std::time::Instant::now();
    let out = reload_cmd(&lab);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no nfknock daemon runs") && stderr.contains("systemctl start nfknock"),
        "{stderr}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// What systemd hears (`NOTIFY_SOCKET`): `READY=1` once serving; for each reload, good or
/// broken, `RELOADING=1` with `MONOTONIC_USEC=` (systemd 253+ requires it) and then `READY=1`.
#[test]
fn the_daemon_tells_systemd_reloading_then_ready() {
    use std::os::unix::net::UnixDatagram;
    let lab = Lab::new();
    let key = lab.keygen("alice.key");
    let config = lab.write_config("", &alice(&key, &alice_allows_both(), 30));
    let notify_path = lab.path("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let env = format!("NOTIFY_SOCKET={}", notify_path.display());
    let mut d = Daemon::start(&lab, &["env", &env], &config, &[], "info", "notify.log");
    let next = || {
        let mut buf = [0u8; 512];
        let n = notify
            .recv(&mut buf)
            .expect("no sd_notify message within 5 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1\n");
    let reload = || lab.nfknock(&lab.srv, &["reload", "--config", config.to_str().unwrap()]);
    assert!(reload().status.success(), "{}", d.log());
    let reloading = next();
    let usec = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .and_then(|s| s.trim_end().parse::<u64>().ok());
    assert!(usec.is_some_and(|u| u > 0), "{reloading:?}");
    assert_eq!(next(), "READY=1\n");
    // SIGHUP, with a broken config: refused, and systemd still hears both.
    std::fs::write(&config, "[server]\nport = \"x\"\n").unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &d.pid().to_string()])
        .status();
    assert!(next().starts_with("RELOADING=1\nMONOTONIC_USEC="));
    assert_eq!(next(), "READY=1\n");
    assert!(d.stop().success());
    assert_eq!(next(), "STOPPING=1\n");
}
