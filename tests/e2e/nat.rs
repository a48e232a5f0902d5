//! NAT grants (issue 10 §1): a knock for a forwarded port reaches the internal host behind the
//! server ([`Lab::add_internal`]) through the server's address, for that source only, over IPv4
//! and IPv6; the kernel expires the translation with the grant; a packet asking for another
//! target is refused. Native knocks and the real fwknop client's NAT access messages
//! (`fwknop -N`, type 2) alike.
//!
//! Nothing listens on the server's forwarded port itself: a connection that succeeds there was
//! forwarded, and the echo it gets back comes from the internal host.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::fwknop::{fwknop, key_gen, Keys};
use super::*;

/// The forwarded port on the server (protected by the lab's default `protect`).
const FWD: u16 = HOST_PORT;
/// The internal service.
const INT_PORT: u16 = 22;

/// Alice's `nat`: tcp/2222 → int:22 over IPv4 (its answers are routed back through the
/// server) and over IPv6 (masqueraded: the internal host has no IPv6 route back).
fn nat_lines() -> String {
    format!(
        "nat = [{{ port = \"tcp/{FWD}\", to = \"{INT4}:{INT_PORT}\" }}, \
         {{ port = \"tcp/{FWD}\", to = \"[{INT6}]:{INT_PORT}\", masquerade = true }}]\n"
    )
}

/// A lab with the internal host running an echo service on :22 (both families), and the daemon
/// serving `clients`.
fn nat_lab(clients: impl FnOnce(&Lab) -> String) -> (Lab, Vec<Echo>) {
    let mut lab = Lab::new();
    let int = lab.add_internal();
    let echoes = vec![
        echo_server(&int, sock(INT4, INT_PORT)),
        echo_server(&int, sock(INT6, INT_PORT)),
    ];
    let clients = clients(&lab);
    let p = lab.write_config("", &clients);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    lab.start_daemon();
    (lab, echoes)
}

/// A connection from `ns` to `to` that echoes what it is sent (the internal host answered).
fn echoes(ns: &str, to: SocketAddr) -> bool {
    let Ok(mut c) = tcp_connect(ns, to) else {
        return false;
    };
    let echoed = |c: &mut TcpStream| -> std::io::Result<bool> {
        c.set_read_timeout(Some(Duration::from_secs(2)))?;
        c.write_all(b"through the gate")?;
        let mut buf = [0u8; 16];
        c.read_exact(&mut buf)?;
        Ok(&buf == b"through the gate")
    };
    echoed(&mut c).unwrap_or(false)
}

/// `nft list map|set inet nfknock NAME` in the server namespace.
fn nat_elements(lab: &Lab, name: &str) -> String {
    nat_elements_opt(lab, name).unwrap_or_else(|| panic!("no {name} in:\n{}", lab.nft_list()))
}

/// [`nat_elements`], `None` while the table or the map is missing.
fn nat_elements_opt(lab: &Lab, name: &str) -> Option<String> {
    let kind = if name.starts_with("masquerade") {
        "set"
    } else {
        "map"
    };
    let out = lab.run(&lab.srv, &["nft", "list", kind, "inet", "nfknock", name]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_native_knock_reaches_the_internal_host_for_that_source_only_and_closes_on_expiry() {
    let key_path = std::cell::RefCell::new(None);
    let (lab, _echo) = nat_lab(|lab| {
        let key = lab.keygen("alice.key");
        let c = format!(
            "{}{}",
            alice(&key, &format!("\"tcp/{FWD}\""), 3),
            nat_lines()
        );
        *key_path.borrow_mut() = Some(key);
        c
    });
    let key = key_path.into_inner().unwrap();
    let int = lab.int.clone().unwrap();
    let (via4, via6) = (sock(SRV4, FWD), sock(SRV6, FWD));

    // Closed before the knock: the forwarded port is gated, the internal host not routed to.
    assert!(
        !tcp_open(&lab.cli, via4, CLOSED_WITHIN),
        "open before the knock"
    );
    assert!(
        !tcp_open(&lab.cli, via6, CLOSED_WITHIN),
        "v6 open before the knock"
    );
    assert!(
        !tcp_open(&lab.cli, sock(INT4, INT_PORT), CLOSED_WITHIN),
        "the internal host is reachable directly"
    );
    // The service itself is there (from the server).
    assert!(tcp_open(
        &lab.srv,
        sock(INT4, INT_PORT),
        Duration::from_secs(1)
    ));

    // IPv4: a knock for tcp/2222 reaches int:22 through the server's address.
    lab.knock(
        &lab.cli,
        SRV4,
        &["--key-file", key.to_str().unwrap(), "--access", "tcp/2222"],
    );
    assert!(opens(&lab.cli, via4), "not forwarded:\n{}", lab.log());
    assert!(echoes(&lab.cli, via4), "no echo from the internal host");
    let map = nat_elements(&lab, "nat_v4");
    assert!(
        map.contains(&format!("{CLI4} . tcp . {FWD} timeout 3s"))
            && map.contains(&format!(": {INT4} . {INT_PORT}")),
        "{map}"
    );
    let st = status_json(&lab).unwrap();
    let g = st
        .iter()
        .find(|v| v["source"] == CLI4)
        .unwrap_or_else(|| panic!("{st:?}"));
    assert_eq!(g["forwarded_to"], format!("{INT4}:{INT_PORT}"));
    // ... for that source only.
    assert!(
        !tcp_open(&lab.oth, sock(SRV_OTH4, FWD), CLOSED_WITHIN),
        "forwarded for a stranger"
    );
    assert!(
        lab.log().contains("grant forwarded (NAT)"),
        "no NAT grant line:\n{}",
        lab.log()
    );

    // IPv6: the same port leads to the IPv6 target, masqueraded.
    lab.knock(
        &lab.cli,
        SRV6,
        &["--key-file", key.to_str().unwrap(), "--access", "tcp/2222"],
    );
    assert!(opens(&lab.cli, via6), "v6 not forwarded:\n{}", lab.log());
    assert!(echoes(&lab.cli, via6), "no v6 echo from the internal host");
    assert!(
        !tcp_open(&lab.oth, sock(SRV_OTH6, FWD), CLOSED_WITHIN),
        "v6 forwarded for a stranger"
    );
    let masq = nat_elements(&lab, "masquerade_v6");
    assert!(masq.contains(&format!("fd77::2 . tcp . {FWD}")), "{masq}");

    // An established forwarded connection outlives the grant; new ones are refused after it.
    let mut conn = tcp_connect(&lab.cli, via4).expect("connect during the grant");
    assert!(
        closes(&lab.cli, via4, Duration::from_secs(6)),
        "the translation did not expire"
    );
    assert!(closes(&lab.cli, via6, Duration::from_secs(3)));
    assert!(
        !nat_elements(&lab, "nat_v4").contains(CLI4),
        "map element left after expiry"
    );
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    conn.write_all(b"still here").unwrap();
    let mut buf = [0u8; 10];
    conn.read_exact(&mut buf)
        .expect("established forwarded connection cut by expiry");
    drop(int);
}

/// The real fwknop client's NAT access message (`fwknop -A tcp/2222 -N 10.80.0.2:22`, type 2)
/// reaches the configured internal host; one naming another host or port is refused, writes no
/// translation, and the log names what it asked for.
#[test]
fn an_fwknop_nat_access_message_reaches_only_the_configured_target() {
    let keys = std::cell::RefCell::new(None);
    let (lab, _echo) = nat_lab(|lab| {
        let k = key_gen(lab, "sha256");
        let c = format!(
            "[[client]]\nname = \"bob\"\nallow = [\"tcp/{FWD}\"]\ntimeout = 5\n{}\n[client.fwknop]\n{}",
            nat_lines(),
            k.toml()
        );
        *keys.borrow_mut() = Some(k);
        c
    });
    let keys: Keys = keys.into_inner().unwrap();
    let via4 = sock(SRV4, FWD);
    let nat_knock = |target: &str| {
        let mut args: Vec<String> = [
            "-A",
            &format!("tcp/{FWD}"),
            "-N",
            target,
            "-D",
            SRV4,
            "-a",
            CLI4,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(keys.client_args());
        let out = fwknop(&lab, &lab.cli, &args);
        assert!(
            out.status.success(),
            "fwknop {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };

    // Another internal host, another port: refused, nothing forwarded.
    for other in ["10.80.0.3:22", "10.80.0.2:23"] {
        nat_knock(other);
    }
    assert!(
        wait_until(Duration::from_secs(2), || rejections(
            &lab.log(),
            "nat-not-allowed"
        ) >= 2)
        .is_some(),
        "refusals not logged:\n{}",
        lab.log()
    );
    let log = lab.log();
    assert!(
        log.contains("10.80.0.3,22") && log.contains("10.80.0.2,23"),
        "the log does not name the asked targets:\n{log}"
    );
    assert!(
        !tcp_open(&lab.cli, via4, CLOSED_WITHIN),
        "a refused NAT knock opened"
    );
    assert!(!nat_elements(&lab, "nat_v4").contains(CLI4));

    // The configured one: forwarded.
    nat_knock(&format!("{INT4}:{INT_PORT}"));
    assert!(opens(&lab.cli, via4), "not forwarded:\n{}", lab.log());
    assert!(echoes(&lab.cli, via4));

    // Someone flushes the ruleset: the table comes back with the grant AND its translation.
    let out = lab.run(&lab.srv, &["nft", "flush", "ruleset"]);
    assert!(out.status.success());
    assert!(
        wait_until(RESTORED_WITHIN, || nat_elements_opt(&lab, "nat_v4")
            .is_some_and(|m| m.contains(CLI4)))
        .is_some(),
        "the translation was not restored:\n{}",
        lab.log()
    );
    assert!(
        echoes(&lab.cli, via4),
        "not forwarded after the flush repair"
    );
    assert!(
        !tcp_open(&lab.oth, sock(SRV_OTH4, FWD), CLOSED_WITHIN),
        "forwarded for a stranger"
    );
    assert!(
        closes(&lab.cli, via4, Duration::from_secs(8)),
        "did not expire"
    );
}

/// The real fwknop client's local NAT message (`fwknop -A tcp/22 --nat-local --nat-port 2200`,
/// type 5): a knock for tcp/2200 reaches this host's own :22 (fwknopd's
/// ENABLE_IPT_LOCAL_NAT), for that source only; tcp/22 itself stays gated for everyone else.
#[test]
fn an_fwknop_local_nat_message_reaches_the_local_port() {
    let mut lab = Lab::new();
    let keys = key_gen(&lab, "sha256");
    let _svc = echo_server(&lab.srv, sock("0.0.0.0", 22));
    let p = lab.write_config_raw(
        "protect = [\"tcp/2200\", \"tcp/22\"]\nmax_age = 120\n",
        &format!(
            "[[client]]\nname = \"bob\"\nallow = [\"tcp/2200\"]\ntimeout = 3\nnat = [{{ port = \"tcp/2200\", to = \":22\" }}]\n[client.fwknop]\n{}",
            keys.toml()
        ),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    lab.start_daemon();
    let via = sock(SRV4, 2200);
    assert!(
        !tcp_open(&lab.cli, via, CLOSED_WITHIN),
        "open before the knock"
    );
    assert!(!tcp_open(&lab.cli, sock(SRV4, 22), CLOSED_WITHIN));

    let mut args: Vec<String> = [
        "-A",
        "tcp/22",
        "--nat-local",
        "--nat-port",
        "2200",
        "-D",
        SRV4,
        "-a",
        CLI4,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(keys.client_args());
    let out = fwknop(&lab, &lab.cli, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(opens(&lab.cli, via), "not redirected:\n{}", lab.log());
    assert!(echoes(&lab.cli, via));
    assert!(
        !tcp_open(&lab.oth, sock(SRV_OTH4, 2200), CLOSED_WITHIN),
        "redirected for a stranger"
    );
    assert!(
        closes(&lab.cli, via, Duration::from_secs(6)),
        "did not expire"
    );
}

/// `nfknock check` warns when a `nat` entry forwards to another host while the kernel does
/// not forward (the daemon changes no sysctl), and is quiet once it does.
#[test]
fn check_warns_while_forwarding_is_off() {
    let lab = Lab::new();
    let key = lab.keygen("alice.key");
    let config = lab.write_config(
        "",
        &format!(
            "{}{}",
            alice(&key, &format!("\"tcp/{FWD}\""), 3),
            nat_lines()
        ),
    );
    let check = || {
        let out = lab.nfknock(&lab.srv, &["check", "--config", config.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let sysctl = |kv: &str| {
        let out = lab.run(&lab.srv, &["sysctl", "-qw", kv]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sysctl("net.ipv4.ip_forward=0");
    sysctl("net.ipv6.conf.all.forwarding=0");
    let warned = check();
    for needle in [
        "warning: client `alice` forwards tcp/2222 to 10.80.0.2:22 but /proc/sys/net/ipv4/ip_forward is 0",
        "sysctl -w net.ipv6.conf.all.forwarding=1",
    ] {
        assert!(warned.contains(needle), "{needle}:\n{warned}");
    }
    sysctl("net.ipv4.ip_forward=1");
    sysctl("net.ipv6.conf.all.forwarding=1");
    let quiet = check();
    assert!(!quiet.contains("forwards"), "{quiet}");
}

/// `snat = "10.80.0.1"` (fwknop FORCE_SNAT): the internal host sees the forwarded
/// connection come from that address, and only the flows of the grant with `snat` are
/// rewritten (tcp/2223 to the same host keeps the client's address).
#[test]
fn snat_rewrites_the_source_of_that_grants_flows_only() {
    let mut lab = Lab::new();
    let int = lab.add_internal();
    let _who = whoami_server(&int, sock(INT4, 7));
    let key = lab.keygen("alice.key");
    lab.write_config_raw(
        "protect = [\"tcp/2222\", \"tcp/2223\"]\nmax_age = 120\n",
        &format!(
            "{}nat = [{{ port = \"tcp/2222\", to = \"{INT4}:7\", snat = \"{SRV_INT4}\" }}, {{ port = \"tcp/2223\", to = \"{INT4}:7\" }}]\n",
            alice(&key, "\"tcp/2222\", \"tcp/2223\"", 5)
        ),
    );
    lab.start_daemon();
    lab.knock(
        &lab.cli,
        SRV4,
        &[
            "--key-file",
            key.to_str().unwrap(),
            "--access",
            "tcp/2222,tcp/2223",
        ],
    );
    let seen = |port: u16| -> String {
        let mut out = String::new();
        wait_until(OPEN_WITHIN, || {
            tcp_connect(&lab.cli, sock(SRV4, port))
                .and_then(|mut c| {
                    c.set_read_timeout(Some(Duration::from_secs(2)))?;
                    out.clear();
                    c.read_to_string(&mut out)
                })
                .is_ok_and(|n| n > 0)
        });
        out
    };
    assert_eq!(seen(2222), SRV_INT4, "not SNATed:\n{}", lab.log());
    assert_eq!(seen(2223), CLI4, "a grant without snat was rewritten");
}

/// A reload that sends the forwarded port elsewhere revokes the live forwarded grant: its
/// translation to the old target is deleted at once (not left until it expires), and the log
/// says why.
#[test]
fn a_reload_that_moves_the_target_revokes_the_forwarded_grant() {
    let key_path = std::cell::RefCell::new(None);
    let (lab, _echo) = nat_lab(|lab| {
        let key = lab.keygen("alice.key");
        let c = format!(
            "{}{}",
            alice(&key, &format!("\"tcp/{FWD}\""), 60),
            nat_lines()
        );
        *key_path.borrow_mut() = Some(key);
        c
    });
    let key = key_path.into_inner().unwrap();
    let via4 = sock(SRV4, FWD);
    lab.knock(
        &lab.cli,
        SRV4,
        &["--key-file", key.to_str().unwrap(), "--access", "tcp/2222"],
    );
    assert!(opens(&lab.cli, via4), "not forwarded:\n{}", lab.log());
    lab.write_config(
        "",
        &format!(
            "{}nat = [{{ port = \"tcp/{FWD}\", to = \"10.80.0.3:{INT_PORT}\" }}]\n",
            alice(&key, &format!("\"tcp/{FWD}\""), 60)
        ),
    );
    reload(&lab);
    assert!(
        lab.log()
            .contains("the client's nat now forwards this access elsewhere"),
        "{}",
        lab.log()
    );
    assert!(
        !nat_elements(&lab, "nat_v4").contains(CLI4),
        "the old translation is still there"
    );
    assert!(!tcp_open(&lab.cli, via4, CLOSED_WITHIN), "still forwarded");
}

/// `dnat = false` (fwknop `DISABLE_DNAT`): the client routes to the internal host through the
/// server itself; the forward gate closes that target to everyone until a knock opens it for
/// the knocking source only, and the kernel closes it again on expiry. No port of the server
/// opens.
#[test]
fn a_routed_target_opens_for_that_source_only_without_dnat() {
    let mut lab = Lab::new();
    let int = lab.add_internal();
    let _echo = echo_server(&int, sock(INT4, INT_PORT));
    for ns in [lab.cli.clone(), lab.oth.clone()] {
        let via = if ns == lab.cli { SRV4 } else { SRV_OTH4 };
        let out = lab.run(&ns, &["ip", "route", "add", "10.80.0.0/24", "via", via]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let key = lab.keygen("alice.key");
    lab.write_config_raw(
        "protect = [\"tcp/22\"]\nmax_age = 120\n",
        &format!(
            "{}nat = [{{ port = \"tcp/{INT_PORT}\", to = \"{INT4}:{INT_PORT}\", dnat = false }}]\n",
            alice(&key, &format!("\"tcp/{INT_PORT}\""), 3)
        ),
    );
    lab.start_daemon();
    let target = sock(INT4, INT_PORT);
    assert!(
        !tcp_open(&lab.cli, target, CLOSED_WITHIN),
        "open before the knock"
    );
    assert!(
        !tcp_open(&lab.oth, target, CLOSED_WITHIN),
        "open for a stranger"
    );
    lab.knock(
        &lab.cli,
        SRV4,
        &["--key-file", key.to_str().unwrap(), "--access", "tcp/22"],
    );
    assert!(opens(&lab.cli, target), "not opened:\n{}", lab.log());
    assert!(echoes(&lab.cli, target));
    assert!(
        !tcp_open(&lab.oth, target, CLOSED_WITHIN),
        "opened for a stranger"
    );
    let allow = String::from_utf8_lossy(
        &lab.run(
            &lab.srv,
            &["nft", "list", "set", "inet", "nfknock", "allow_v4"],
        )
        .stdout,
    )
    .into_owned();
    assert!(
        !allow.contains(CLI4),
        "a routed grant opened a port of the server: {allow}"
    );
    assert!(
        closes(&lab.cli, target, Duration::from_secs(6)),
        "did not expire"
    );
}
