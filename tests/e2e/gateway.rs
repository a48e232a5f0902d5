//! Gateway grants (issue 10 §1, fwknop `FORWARD_ALL`): a knock of a client with `gateway`
//! lets its source open new flows into the named internal networks through the server, any
//! port, for the grant's time; before the knock, and for every other source, new flows into
//! those networks are dropped by the forward gate; a network not named is not gated at all.
//!
//! The client and the stranger route the internal networks through the server
//! ([`Lab::route_internal_from_outside`]); the internal host answers each connection with the
//! address it came from ([`whoami_server`]), so the test sees the masquerade too. A flush of
//! the ruleset is repaired with the gateway grant in it.

use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use super::*;

/// Two different services of the internal host: a gateway opens every port.
const PORTS: [u16; 2] = [22, 80];
const CTR_PORT: u16 = 80;

/// The address `to` sees a connection from `ns` come from, if one is accepted.
fn seen_from(ns: &str, to: SocketAddr) -> Option<String> {
    let mut out = String::new();
    let mut c = tcp_connect(ns, to).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    c.read_to_string(&mut out).ok()?;
    (!out.is_empty()).then_some(out)
}

#[test]
fn a_knock_opens_the_named_networks_for_that_source_only_until_expiry() {
    let mut lab = Lab::new();
    let int = lab.add_internal();
    lab.route_internal_from_outside();
    let _services: Vec<Echo> = PORTS
        .iter()
        .flat_map(|&p| [sock(INT4, p), sock(INT6, p)])
        .map(|a| whoami_server(&int, a))
        .collect();
    // A host outside the gateway networks, reached by routing (not published).
    let _ctr = whoami_server(&lab.ctr, sock(CTR4, CTR_PORT));
    let r = lab.run(
        &lab.cli,
        &["ip", "route", "add", "10.79.0.0/24", "via", SRV4],
    );
    assert!(r.status.success(), "{r:?}");
    let key = lab.keygen("alice.key");
    lab.write_config(
        "",
        &format!(
            "{}gateway = {{ networks = [\"10.80.0.0/24\", \"fd80::/64\"], masquerade = true }}\n",
            alice(&key, &format!("\"tcp/{HOST_PORT}\""), 3)
        ),
    );
    lab.start_daemon();
    let ctr = sock(CTR4, CTR_PORT);
    let int4 = |p| sock(INT4, p);
    let int6 = |p| sock(INT6, p);

    // Before the knock: the internal networks are closed to everyone, any port, both families.
    for p in PORTS {
        assert!(
            !tcp_open(&lab.cli, int4(p), CLOSED_WITHIN),
            "{INT4}:{p} open before the knock"
        );
        assert!(
            !tcp_open(&lab.cli, int6(p), CLOSED_WITHIN),
            "[{INT6}]:{p} open before the knock"
        );
    }
    // ... while a host outside them is forwarded to as before (its forwarding is not gated).
    // (The lab's "container runtime" masquerades what leaves towards it.)
    assert!(
        seen_from(&lab.cli, ctr).is_some(),
        "forwarding outside the gateway networks was changed:\n{}",
        lab.nft_list()
    );

    // IPv4 knock: the source reaches two different ports of the internal host, masqueraded.
    lab.knock(
        &lab.cli,
        SRV4,
        &["--key-file", key.to_str().unwrap(), "--access", "tcp/2222"],
    );
    for p in PORTS {
        assert!(
            opens(&lab.cli, int4(p)),
            "{INT4}:{p} not opened by the gateway grant:\n{}\n{}",
            lab.log(),
            lab.nft_list()
        );
        assert_eq!(
            seen_from(&lab.cli, int4(p)).as_deref(),
            Some(SRV_INT4),
            "not masqueraded"
        );
    }
    let set = lab.run(
        &lab.srv,
        &["nft", "list", "set", "inet", "nfknock", "gateway_v4"],
    );
    let set = String::from_utf8_lossy(&set.stdout);
    assert!(
        set.contains(&format!("{CLI4} . 10.80.0.0/24 timeout 3s")),
        "{set}"
    );
    let st = status_json(&lab).unwrap();
    assert!(
        st.iter()
            .any(|v| v["source"] == CLI4 && v["gateway"] == "10.80.0.0/24"),
        "status lacks the gateway grant: {st:?}"
    );
    assert!(
        lab.log().contains("grant gateway"),
        "no gateway grant line:\n{}",
        lab.log()
    );
    // ... for that source only; and an IPv4 knock opens no IPv6 network.
    for p in PORTS {
        assert!(
            !tcp_open(&lab.oth, int4(p), CLOSED_WITHIN),
            "{INT4}:{p} open for a stranger"
        );
    }
    assert!(!tcp_open(&lab.cli, int6(22), CLOSED_WITHIN));

    // Someone flushes the ruleset: the daemon re-creates the table with the gateway grant.
    let r = lab.run(&lab.srv, &["nft", "flush", "ruleset"]);
    assert!(r.status.success(), "{r:?}");
    let gateway_v4 = || {
        let out = lab.run(
            &lab.srv,
            &["nft", "list", "set", "inet", "nfknock", "gateway_v4"],
        );
        String::from_utf8_lossy(&out.stdout).contains(CLI4)
    };
    assert!(
        wait_until(RESTORED_WITHIN, gateway_v4).is_some(),
        "gateway grant not restored after a flush:\n{}\n{}",
        lab.log(),
        lab.nft_list()
    );
    assert!(opens(&lab.cli, int4(80)), "closed after the repair");
    assert!(
        !tcp_open(&lab.oth, int4(80), CLOSED_WITHIN),
        "the repaired gate lets a stranger in"
    );

    // IPv6 knock: the same over IPv6 (the internal host has no IPv6 route back, so the
    // answer proves the masquerade).
    lab.knock(
        &lab.cli,
        SRV6,
        &["--key-file", key.to_str().unwrap(), "--access", "tcp/2222"],
    );
    for p in PORTS {
        assert!(opens(&lab.cli, int6(p)), "[{INT6}]:{p} not opened");
        assert_eq!(seen_from(&lab.cli, int6(p)).as_deref(), Some(SRV_INT6));
        assert!(!tcp_open(&lab.oth, int6(p), CLOSED_WITHIN), "v6 stranger");
    }

    // Expiry closes it again: new flows are dropped, the outside host still reachable.
    assert!(
        closes(&lab.cli, int4(80), Duration::from_secs(6)),
        "the gateway grant did not expire"
    );
    assert!(closes(&lab.cli, int6(22), Duration::from_secs(3)));
    assert!(seen_from(&lab.cli, ctr).is_some());
}

/// A reload that changes the client's gateway revokes its live gateway grant at once (the
/// kernel would otherwise keep it until it expires), and a new knock gets the new one; a config
/// without any gateway takes the gateway sets and gate out of the table, so those networks are
/// forwarded as before.
#[test]
fn a_reload_revokes_gateway_grants_it_no_longer_authorises() {
    let mut lab = Lab::new();
    let int = lab.add_internal();
    lab.route_internal_from_outside();
    let _svc = whoami_server(&int, sock(INT4, 22));
    let key = lab.keygen("alice.key");
    let client = |gateway: &str| {
        format!(
            "{}{gateway}",
            alice(&key, &format!("\"tcp/{HOST_PORT}\""), 60)
        )
    };
    lab.write_config(
        "",
        &client("gateway = { networks = [\"10.80.0.0/24\"], masquerade = true }\n"),
    );
    lab.start_daemon();
    let target = sock(INT4, 22);
    lab.knock(
        &lab.cli,
        SRV4,
        &["--key-file", key.to_str().unwrap(), "--access", "tcp/2222"],
    );
    assert!(opens(&lab.cli, target), "{}", lab.log());

    // The gateway now rewrites sources otherwise: the live grant (masquerade) is revoked on
    // reload, and 10.80.0.0/24 stays closed to the client until it knocks again.
    lab.write_config(
        "",
        &client(&format!(
            "gateway = {{ networks = [\"10.80.0.0/24\"], snat = \"{SRV_INT4}\" }}\n"
        )),
    );
    let config = lab.path("nfknock.toml");
    let out = lab.nfknock(&lab.srv, &["reload", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !tcp_open(&lab.cli, target, CLOSED_WITHIN),
        "a revoked gateway grant still forwards:\n{}\n{}",
        lab.log(),
        lab.nft_list()
    );
    assert!(
        lab.log()
            .contains("the client's gateway now rewrites the source otherwise"),
        "{}",
        lab.log()
    );

    lab.knock(
        &lab.cli,
        SRV4,
        &["--key-file", key.to_str().unwrap(), "--access", "tcp/2222"],
    );
    assert!(opens(&lab.cli, target), "{}", lab.log());
    let seen = lab.run(
        &lab.srv,
        &["nft", "list", "map", "inet", "nfknock", "gateway_snat_v4"],
    );
    assert!(
        String::from_utf8_lossy(&seen.stdout).contains(&format!(": {SRV_INT4}")),
        "{seen:?}"
    );

    // No gateway at all: no gateway objects; 10.80.0.0/24 is not gated any more (the host
    // forwards it as it did before nfknock; it is the admin's network, not ours).
    lab.write_config("", &client(""));
    let out = lab.nfknock(&lab.srv, &["reload", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(!lab.nft_list().contains("gateway"), "{}", lab.nft_list());
    assert!(
        opens(&lab.cli, target),
        "forwarding into a network no longer named stays closed"
    );
}

/// The migration path, end to end: an fwknopd `FORWARD_ALL Y` stanza goes through
/// `nfknock import-fwknop` (its FORCE_NAT host becomes the gateway's one network, with a
/// warning to widen it), the imported client is served as written, and the real fwknop
/// client's access message opens every port of that host for its source only.
#[test]
fn an_imported_forward_all_stanza_serves_the_real_fwknop_client() {
    use super::fwknop::{fwknop, key_gen, Keys};
    let mut lab = Lab::new();
    let int = lab.add_internal();
    lab.route_internal_from_outside();
    let _services: Vec<Echo> = PORTS
        .iter()
        .map(|&p| whoami_server(&int, sock(INT4, p)))
        .collect();
    let keys = key_gen(&lab, "sha256");
    let Keys::Base64 { key, hmac, .. } = &keys else {
        panic!("fwknop --key-gen gave no base64 keys");
    };
    let access = lab.path("access.conf");
    std::fs::write(
        &access,
        format!(
            "SOURCE ANY\nKEY_BASE64 {key}\nHMAC_KEY_BASE64 {hmac}\nOPEN_PORTS tcp/{HOST_PORT}\n\
             REQUIRE_SOURCE_ADDRESS Y\nFORWARD_ALL Y\nFORCE_NAT {INT4} 0\n"
        ),
    )
    .unwrap();
    let out = lab.nfknock(
        &lab.srv,
        &["import-fwknop", "--access-conf", access.to_str().unwrap()],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stdout.contains(&format!(
            "gateway = {{ networks = [\"{INT4}/32\"], masquerade = true }}"
        )),
        "{stdout}\n{stderr}"
    );
    assert!(stderr.contains("widen `networks`"), "{stderr}");
    let client = &stdout[stdout.find("[[client]]").expect("no client imported")..];
    let p = lab.write_config("", client);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    lab.start_daemon();

    for p in PORTS {
        assert!(
            !tcp_open(&lab.cli, sock(INT4, p), CLOSED_WITHIN),
            "open before the knock"
        );
    }
    let mut args: Vec<String> = ["-A", &format!("tcp/{HOST_PORT}"), "-D", SRV4, "-a", CLI4]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(keys.client_args());
    let out = fwknop(&lab, &lab.cli, &args);
    assert!(out.status.success(), "fwknop {args:?}: {out:?}");
    for p in PORTS {
        assert!(
            opens(&lab.cli, sock(INT4, p)),
            "{INT4}:{p} not opened by the fwknop knock:\n{}",
            lab.log()
        );
        assert_eq!(
            seen_from(&lab.cli, sock(INT4, p)).as_deref(),
            Some(SRV_INT4)
        );
        assert!(
            !tcp_open(&lab.oth, sock(INT4, p), CLOSED_WITHIN),
            "stranger"
        );
    }
}
