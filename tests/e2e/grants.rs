//! Grants: a knock opens the gated port for its source only, over IPv4 and IPv6, for a host
//! service and a DNAT-published container port, and the kernel closes it on expiry; bad knocks
//! (wrong key, stale or skewed clock, tampered, wrong length) open nothing and get no answer.

use std::io::{Read, Write};
use std::time::Duration;

use super::*;

#[test]
fn knock_opens_the_port_for_that_source_only_and_it_closes_on_expiry() {
    let (lab, key) = started(2);
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let target = sock(SRV4, HOST_PORT);

    // 1. closed before any knock
    assert!(
        !tcp_open(&lab.cli, target, CLOSED_WITHIN),
        "port open before any knock"
    );

    // 2. a knock opens it for this source within 1 s ...
    knock_host(&lab, &key, &[]);
    assert!(
        opens(&lab.cli, target),
        "port did not open within 1 s:\n{}",
        lab.log()
    );
    // ... and not for another source
    assert!(
        !tcp_open(&lab.oth, sock(SRV_OTH4, HOST_PORT), CLOSED_WITHIN),
        "port opened for a stranger"
    );

    // 9. status shows the live grant with its remaining time
    let st = lab.nfknock(&lab.srv, &["status", "--json"]);
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(
        st.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.contains(CLI4))
        .unwrap_or_else(|| panic!("no grant in status: {text}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["access"], "tcp/2222");
    let left = v["seconds_left"].as_u64().unwrap();
    assert!((1..=2).contains(&left), "seconds_left {left}");
    let human = lab.nfknock(&lab.srv, &["status"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("10.77.0.2"));

    // 3. an established connection survives the grant's expiry; new ones are refused after it
    let mut conn = tcp_connect(&lab.cli, target).expect("connect during grant");
    assert!(
        closes(&lab.cli, target, Duration::from_secs(5)),
        "grant did not expire"
    );
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    conn.write_all(b"still here").unwrap();
    let mut buf = [0u8; 10];
    conn.read_exact(&mut buf)
        .expect("established connection cut by expiry");
    assert_eq!(&buf, b"still here");
    assert!(lab.log().contains("grant"), "no grant log line");
}

#[test]
fn bad_knocks_are_refused_and_the_port_stays_closed() {
    // The daemon's own refusals: prefilter.rs shows the kernel dropping the same knocks.
    let (lab, key) = started_with(NO_PREFILTER, 5);
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let target = sock(SRV4, HOST_PORT);
    let to = sock(SRV4, KNOCK_PORT);

    // wrong key
    let other = lab.keygen("mallory.key");
    knock_host(&lab, &other, &[]);
    // stale timestamp (client clock 10 minutes behind)
    knock_host(&lab, &key, &["--time-offset", "-600"]);
    // tampered byte
    let p = lab.path("good.bin");
    knock_host(
        &lab,
        &key,
        &["--save-packet", p.to_str().unwrap(), "--dry-run"],
    );
    let mut bytes = read(&p);
    bytes[60] ^= 0x01;
    send_udp(&lab.cli, to, bytes);
    // wrong length
    let mut long = read(&p);
    long.push(0);
    send_udp(&lab.cli, to, long);
    send_udp(&lab.cli, to, vec![1u8; 40]);

    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !tcp_open(&lab.cli, target, CLOSED_WITHIN),
        "a bad knock opened the port:\n{}",
        lab.log()
    );
    let log = lab.log();
    assert!(log.contains("stale"), "stale knock not reported:\n{log}");
    assert!(log.contains("skew=-60"), "skew not in the log line:\n{log}");
    assert!(
        log.contains("unknown-key") || log.contains("auth-failed"),
        "wrong key not reported:\n{log}"
    );
    // the untouched packet is still good: proof the refusals were about the damage
    send_udp(&lab.cli, to, read(&p));
    assert!(opens(&lab.cli, target));
}

#[test]
fn skewed_clock_is_refused_and_the_log_names_the_skew() {
    // What `prefilter = false` is for (issue 11): with it on, this knock dies in the kernel.
    let (lab, key) = started_with(NO_PREFILTER, 5);
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    knock_host(&lab, &key, &["--time-offset", "-3000"]);
    assert!(
        wait_until(Duration::from_secs(2), || lab.log().contains("skew=-3000")).is_some(),
        "skew not in the log:\n{}",
        lab.log()
    );
    assert_eq!(rejections(&lab.log(), "stale"), 1, "{}", lab.log());
    // The client is named too: the operator knows whose clock to fix.
    assert!(
        lab.log()
            .lines()
            .any(|l| l.contains("skew=-3000") && l.contains("alice")),
        "{}",
        lab.log()
    );
    assert!(
        !client_open(&lab),
        "a knock 50 minutes stale opened the port"
    );
}

#[test]
fn ipv6_knock_opens_the_port_for_that_source_only() {
    let (lab, key) = started(2);
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let target = sock(SRV6, HOST_PORT);
    assert!(
        !tcp_open(&lab.cli, target, CLOSED_WITHIN),
        "v6 port open before knock"
    );
    lab.knock(
        &lab.cli,
        SRV6,
        &["--key-file", key.to_str().unwrap(), "--access", "tcp/2222"],
    );
    assert!(opens(&lab.cli, target), "{}", lab.log());
    assert!(
        !tcp_open(&lab.oth, sock(SRV_OTH6, HOST_PORT), CLOSED_WITHIN),
        "v6 port open for a stranger"
    );
    // the v4 grant set is untouched: the v6 knock opened only the v6 source
    assert!(
        !tcp_open(&lab.cli, sock(SRV4, HOST_PORT), CLOSED_WITHIN),
        "v6 knock opened v4"
    );
    assert!(closes(&lab.cli, target, Duration::from_secs(5)));
}

#[test]
fn dnat_published_container_port_is_gated_the_same_way() {
    let (lab, key) = started(2);
    let _ctr = echo_server(&lab.ctr, sock("0.0.0.0", 80));
    let published = sock(SRV4, PUBLISHED_PORT);
    assert!(
        !tcp_open(&lab.cli, published, CLOSED_WITHIN),
        "published port open before knock"
    );
    lab.knock(
        &lab.cli,
        SRV4,
        &["--key-file", key.to_str().unwrap(), "--access", "tcp/8080"],
    );
    assert!(opens(&lab.cli, published), "{}", lab.log());
    assert!(
        !tcp_open(&lab.oth, sock(SRV_OTH4, PUBLISHED_PORT), CLOSED_WITHIN),
        "published port open for a stranger"
    );
    assert!(closes(&lab.cli, published, Duration::from_secs(5)));
}

/// A knock — valid or not, daemon up or down — gets no answer of any kind (no UDP, no ICMP).
#[test]
fn knocks_get_no_reply_of_any_kind() {
    let (mut lab, key) = started(2);
    let mut capture = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.cli,
            "tcpdump",
            "-n",
            "-U",
            "--immediate-mode",
            "-Z",
            "root",
            "-i",
            "to-srv",
            "-w",
        ])
        .arg(lab.path("cap.pcap"))
        .args(["src", "host", SRV4, "or", "src", "host", SRV6])
        .stderr(std::fs::File::create(lab.path("tcpdump.err")).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // A connected UDP socket would see ECONNREFUSED if an ICMP port-unreachable came back.
    let probe = |lab: &Lab, payload: Vec<u8>, v6: bool| {
        let to = if v6 {
            sock(SRV6, KNOCK_PORT)
        } else {
            sock(SRV4, KNOCK_PORT)
        };
        in_ns(&lab.cli, move || {
            let s = std::net::UdpSocket::bind(if v6 { "[::]:0" } else { "0.0.0.0:0" }).unwrap();
            s.connect(to).unwrap();
            s.send(&payload).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(400)))
                .unwrap();
            let mut buf = [0u8; 64];
            let r = s.recv(&mut buf);
            assert!(
                matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
                "knock got an answer: {r:?}"
            );
        })
    };
    let good = lab.path("k.bin");
    knock_host(
        &lab,
        &key,
        &["--save-packet", good.to_str().unwrap(), "--dry-run"],
    );
    probe(&lab, read(&good), false);
    probe(&lab, vec![7u8; 128], false);
    probe(&lab, vec![7u8; 128], true);
    lab.stop_daemon();
    // daemon down: knocks are still dropped, never answered
    probe(&lab, vec![1u8; 128], false);
    // Positive control: a datagram to an unprotected closed UDP port gets an ICMP port
    // unreachable, so the capture does see the server's answers when there are any.
    let control = in_ns(&lab.cli, || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect(sock(SRV4, 9)).unwrap();
        s.send(b"control").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
        s.recv(&mut [0u8; 16]).map(|_| ())
    });
    assert!(
        matches!(&control, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "control datagram not refused: {control:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let _ = std::process::Command::new("kill")
        .args(["-INT", &capture.id().to_string()])
        .status();
    let _ = capture.wait();
    let read_back = |filter: &[&str]| {
        let out = std::process::Command::new("tcpdump")
            .args(["-n", "-r"])
            .arg(lab.path("cap.pcap"))
            .args(filter)
            .stderr(std::process::Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        !read_back(&["icmp[icmptype] == icmp-unreach"])
            .trim()
            .is_empty(),
        "capture saw nothing at all: {}\n{}",
        std::fs::read_to_string(lab.path("tcpdump.err")).unwrap_or_default(),
        read_back(&[])
    );
    // Anything else from the server, neighbour discovery and the control aside, is an answer.
    let seen = read_back(&["(ip and not (icmp and icmp[icmptype] == icmp-unreach and icmp[30:2] == 9)) or (ip6 and not (icmp6 and ip6[40] >= 128))"]);
    assert!(
        seen.trim().is_empty(),
        "the server answered knocks:\n{seen}"
    );
}

/// `nfknock knock -n NAME` takes server, port, key file and accesses from a client config
/// stanza, like fwknop's `~/.fwknoprc`.
#[test]
fn knock_with_a_named_stanza_of_the_client_config() {
    use std::os::unix::fs::PermissionsExt;
    let (lab, key) = started(2);
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let cfg = lab.path("client.toml");
    std::fs::write(
        &cfg,
        format!(
            "[default]\nport = {KNOCK_PORT}\n\n[server.lab]\nserver = \"{SRV4}\"\nkey_file = \"{}\"\naccess = [\"tcp/{HOST_PORT}\"]\n",
            key.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = lab.nfknock(
        &lab.cli,
        &[
            "knock",
            "-n",
            "lab",
            "--client-config",
            cfg.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "knock -n failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target = sock(SRV4, HOST_PORT);
    assert!(opens(&lab.cli, target), "{}", lab.log());
    // An unknown stanza is a clear error, not a knock.
    let out = lab.nfknock(
        &lab.cli,
        &[
            "knock",
            "-n",
            "nope",
            "--client-config",
            cfg.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("[server.nope]"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
