//! End-to-end tests: the real `nfknock` binary and the real kernel, in network namespaces.
//! Each test builds its own lab (see `lab.rs`) and asserts what an admin would check: real TCP
//! connections that fail before a knock, succeed after it, and fail again after expiry.

mod lab;

use std::io::{Read, Write};
use std::time::Duration;

use lab::*;

const CLOSED_WITHIN: Duration = Duration::from_millis(400);
const OPEN_WITHIN: Duration = Duration::from_secs(1);

/// Does `ns` get a TCP connection to `to` within a second (the grant is in force)?
fn opens(ns: &str, to: std::net::SocketAddr) -> bool {
    wait_until(OPEN_WITHIN, || tcp_open(ns, to, Duration::from_millis(200))).is_some()
}

/// Does `to` stop accepting new connections from `ns` within `limit` (the grant expired)?
fn closes(ns: &str, to: std::net::SocketAddr, limit: Duration) -> bool {
    wait_until(limit, || !tcp_open(ns, to, Duration::from_millis(200))).is_some()
}

fn alice(lab: &Lab, timeout: u32) -> (std::path::PathBuf, String) {
    let key = lab.keygen("alice.key");
    let client = format!(
        "[[client]]\nname = \"alice\"\nkey_file = \"{}\"\nallow = [\"tcp/{HOST_PORT}\", \"tcp/{PUBLISHED_PORT}\"]\n\
         timeout = {timeout}\nmax_timeout = 60\n",
        key.display()
    );
    (key, client)
}

fn started(timeout: u32) -> (Lab, std::path::PathBuf) {
    let mut lab = Lab::new();
    let (key, client) = alice(&lab, timeout);
    lab.write_config("", &client);
    lab.start_daemon();
    (lab, key)
}

fn knock_host(lab: &Lab, key: &std::path::Path, extra: &[&str]) {
    let mut args = vec!["--key-file", key.to_str().unwrap(), "--access", "tcp/2222"];
    args.extend_from_slice(extra);
    lab.knock(&lab.cli, SRV4, &args);
}

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
    let before =
        lab.log().matches("reason=\"replay\"").count() + lab.log().matches("reason=replay").count();
    send_udp(&lab.cli, sock(SRV4, KNOCK_PORT), read(&saved));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !tcp_open(&lab.cli, target, CLOSED_WITHIN),
        "replay after restart opened the port"
    );
    let after =
        lab.log().matches("reason=\"replay\"").count() + lab.log().matches("reason=replay").count();
    assert!(
        after > before,
        "replay after restart not detected:\n{}",
        lab.log()
    );
}

#[test]
fn bad_knocks_are_refused_and_the_port_stays_closed() {
    let (lab, key) = started(5);
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

/// Issue item 11: the host REDIRECTs the protected port to a local service on another port
/// (`tcp dport 2222 redirect to :2223`). The gate judges the port the client connected to
/// (conntrack's original destination), not the port after NAT: strangers stay out over IPv4
/// and IPv6, a knocked client gets in, and the grant's expiry closes it again. The other way
/// round (an unprotected port 2224 redirected to the protected 2222) stays gated too.
#[test]
fn redirected_protected_port_is_gated_by_the_port_the_client_connected_to() {
    let (lab, key) = started(2);
    let behind = HOST_PORT + 1;
    let front = HOST_PORT + 2;
    let nat = format!(
        "table inet labredirect {{\n chain pre {{ type nat hook prerouting priority dstnat; \
         tcp dport {HOST_PORT} redirect to :{behind}; tcp dport {front} redirect to :{HOST_PORT}; }}\n}}\n"
    );
    let nat_file = lab.path("redirect.nft");
    std::fs::write(&nat_file, nat).unwrap();
    let out = lab.run(&lab.srv, &["nft", "-f", nat_file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _svc = echo_server(&lab.srv, sock("::", behind));
    let _gated = echo_server(&lab.srv, sock("::", HOST_PORT));
    for (who, ns, to) in [
        ("a stranger", &lab.oth, sock(SRV_OTH4, HOST_PORT)),
        ("a stranger", &lab.oth, sock(SRV_OTH6, HOST_PORT)),
        ("a stranger", &lab.oth, sock(SRV_OTH4, front)),
        (
            "the client before its knock",
            &lab.cli,
            sock(SRV4, HOST_PORT),
        ),
        (
            "the client before its knock",
            &lab.cli,
            sock(SRV6, HOST_PORT),
        ),
    ] {
        assert!(
            !tcp_open(ns, to, CLOSED_WITHIN),
            "{who} reached the redirected protected port {to}"
        );
    }
    // The service behind the redirect answers on its own port: the closed port is the gate.
    assert!(tcp_open(&lab.oth, sock(SRV_OTH4, behind), OPEN_WITHIN));

    knock_host(&lab, &key, &[]);
    assert!(opens(&lab.cli, sock(SRV4, HOST_PORT)), "{}", lab.log());
    assert!(opens(&lab.cli, sock(SRV4, front)), "{}", lab.log());
    lab.knock(
        &lab.cli,
        SRV6,
        &["--key-file", key.to_str().unwrap(), "--access", "tcp/2222"],
    );
    assert!(opens(&lab.cli, sock(SRV6, HOST_PORT)), "{}", lab.log());
    assert!(
        !tcp_open(&lab.oth, sock(SRV_OTH4, HOST_PORT), CLOSED_WITHIN),
        "the client's knock opened the redirected port for a stranger"
    );
    assert!(closes(
        &lab.cli,
        sock(SRV4, HOST_PORT),
        Duration::from_secs(5)
    ));
    assert!(closes(
        &lab.cli,
        sock(SRV6, HOST_PORT),
        Duration::from_secs(5)
    ));
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

/// Another client, bob, for configs that drop alice: the gate (`protect`) stays the same.
fn bob(lab: &Lab) -> String {
    let key = lab.keygen("bob.key");
    format!(
        "[[client]]\nname = \"bob\"\nkey_file = \"{}\"\nallow = [\"tcp/{HOST_PORT}\"]\n",
        key.display()
    )
}

/// SIGHUP, and wait until the daemon says the new config is in force.
fn reload(lab: &Lab) {
    let before = lab.log().matches("config reloaded").count();
    lab.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(3), || lab
            .log()
            .matches("config reloaded")
            .count()
            > before)
        .is_some(),
        "no reload:\n{}",
        lab.log()
    );
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
    let (key, client) = alice(&lab, 60);
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

/// `nft -j list table inet nfknock` in the server namespace without the `expires` counters
/// that move by themselves: the table's rules, sets and elements as they are.
fn table_snapshot(lab: &Lab) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("expires");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let out = lab.run(&lab.srv, &["nft", "-j", "list", "table", "inet", "nfknock"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    strip(&mut v);
    v
}

/// Run `nfknock ARGS` in the server namespace, killed if it has not exited within 10 s (a
/// second daemon that starts serving fails the test instead of hanging it).
fn run_bounded(lab: &Lab, args: &[&str]) -> (Option<i32>, String) {
    let err = lab.path("second.err");
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.srv, bin()])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let exited = wait_until(Duration::from_secs(10), || {
        child.try_wait().ok().flatten().is_some()
    });
    if exited.is_none() {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&err).unwrap_or_default();
    (exited.and(status.code()), text)
}

/// Issue "security", item 4: a second `nfknock serve` — with the same config, or with another
/// queue number and state directory — and `nfknock uninstall` find the running daemon before
/// they touch anything in the kernel: they exit 2 naming its pid and what to do, nothing in
/// the ruleset changes (`nft monitor` sees no event, the table is as it was), the live grant
/// stays, and the running daemon goes on granting.
#[test]
fn a_second_daemon_or_uninstall_exits_2_and_the_running_daemon_sees_no_change() {
    let (lab, key) = started(60);
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let _ctr = echo_server(&lab.ctr, sock("0.0.0.0", 80));
    knock_host(&lab, &key, &[]);
    assert!(opens(&lab.cli, sock(SRV4, HOST_PORT)), "{}", lab.log());
    let before = table_snapshot(&lab);

    let events = lab.path("monitor.out");
    let mut monitor = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.srv, "nft", "monitor"])
        .stdout(std::fs::File::create(&events).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let pid = lab.daemon_pid().to_string();
    let same = lab.path("nfknock.toml");
    let other = lab.path("other.toml");
    let text = std::fs::read_to_string(&same)
        .unwrap()
        .replace("queue = 3", "queue = 4")
        .replace("/state\"", "/state2\"");
    assert!(
        text.contains("queue = 4") && text.contains("state2"),
        "{text}"
    );
    std::fs::write(&other, text).unwrap();
    for (what, args) in [
        (
            "serve, same config",
            vec!["serve", "--config", same.to_str().unwrap()],
        ),
        (
            "serve, queue 4 and another state_dir",
            vec!["serve", "--config", other.to_str().unwrap()],
        ),
        ("uninstall", vec!["uninstall"]),
    ] {
        let (code, err) = run_bounded(&lab, &args);
        eprintln!("{what}: exit {code:?}\n{err}");
        assert_eq!(code, Some(2), "{what}: exit {code:?}\n{err}");
        assert!(
            err.contains(&pid) && err.contains("systemctl stop nfknock"),
            "{what}: the message names neither the running daemon's pid {pid} nor what to do:\n{err}"
        );
    }
    assert!(
        !lab.path("state2").exists(),
        "the second daemon created its state directory"
    );

    std::thread::sleep(Duration::from_millis(300));
    let _ = monitor.kill();
    let _ = monitor.wait();
    let seen = std::fs::read_to_string(&events).unwrap();
    assert!(
        seen.trim().is_empty(),
        "the ruleset changed under the running daemon:\n{seen}"
    );
    assert_eq!(table_snapshot(&lab), before, "table `inet nfknock` changed");
    assert!(
        tcp_open(&lab.cli, sock(SRV4, HOST_PORT), CLOSED_WITHIN),
        "the live grant is gone"
    );
    // The running daemon still serves: a new knock opens the published port.
    lab.knock(
        &lab.cli,
        SRV4,
        &["--key-file", key.to_str().unwrap(), "--access", "tcp/8080"],
    );
    assert!(opens(&lab.cli, sock(SRV4, PUBLISHED_PORT)), "{}", lab.log());
}
