//! Unit tests of the policy: each refusal, its order, and the rules for addresses.

use super::*;
use crate::config::Credential;
use crate::wire::fwknop::{EncMode, FwknopKey, HmacType};

pub(crate) fn client() -> ClientEntry {
    ClientEntry {
        name: "alice".into(),
        credential: Credential::Fwknop(FwknopKey {
            key: zeroize::Zeroizing::new(b"k".to_vec()),
            hmac_key: None,
            hmac_type: HmacType::Sha256,
            mode: EncMode::Cbc,
        }),
        allow: vec!["tcp/22".parse().unwrap(), "udp/53".parse().unwrap()],
        deny: vec![],
        timeout: 30,
        max_timeout: 300,
        sources: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
        destinations: vec![],
        require_source_match: true,
        require_username: None,
        expires_at: None,
        commands: Default::default(),
        nat: vec![],
        gateway: None,
    }
}

const NOW: u64 = 1_800_000_000;
const SRC: &str = "192.0.2.7";

fn packet() -> Packet {
    Packet {
        src: SRC.parse().unwrap(),
        dst: "192.0.2.1".parse().unwrap(),
    }
}

fn req(access: &[Access]) -> Knock {
    Knock {
        timestamp: NOW,
        allow_ip: Some(SRC.parse().unwrap()),
        access: access.to_vec(),
        timeout: 0,
        username: None,
        message_type: None,
        nat_access: None,
        command: None,
    }
}

fn ssh() -> Vec<Access> {
    vec!["tcp/22".parse().unwrap()]
}

#[test]
fn grants_allowed_access_for_the_default_timeout() {
    let a = ssh();
    let d = evaluate(&req(&a), &packet(), &client(), 120, 0, NOW);
    assert_eq!(
        d,
        Decision::Grant(Grant {
            addr: SRC.parse().unwrap(),
            access: a,
            ttl: 30,
            nat: vec![],
            gateway: Vec::new(),
        })
    );
}

#[test]
fn requested_timeout_is_capped() {
    let a = ssh();
    let mut r = req(&a);
    r.timeout = 10;
    let ttl = |d| match d {
        Decision::Grant(g) => g.ttl,
        d => panic!("{d:?}"),
    };
    assert_eq!(ttl(evaluate(&r, &packet(), &client(), 120, 0, NOW)), 10);
    r.timeout = 100_000;
    assert_eq!(ttl(evaluate(&r, &packet(), &client(), 120, 0, NOW)), 300);
}

#[test]
fn stale_timestamps_report_the_skew_both_ways() {
    let a = ssh();
    let mut r = req(&a);
    r.timestamp = NOW - 121;
    assert_eq!(
        evaluate(&r, &packet(), &client(), 120, 0, NOW),
        Decision::Reject(Reason::Stale { skew: -121 })
    );
    r.timestamp = NOW + 500;
    assert_eq!(
        evaluate(&r, &packet(), &client(), 120, 0, NOW),
        Decision::Reject(Reason::Stale { skew: 500 })
    );
    r.timestamp = NOW - 120;
    assert!(matches!(
        evaluate(&r, &packet(), &client(), 120, 0, NOW),
        Decision::Grant(_)
    ));
}

#[test]
fn source_rules() {
    let a = ssh();
    let mut r = req(&a);
    r.allow_ip = None;
    assert_eq!(
        evaluate(&r, &packet(), &client(), 120, 0, NOW),
        Decision::Reject(Reason::SourceRequired)
    );
    let mut c = client();
    c.require_source_match = false;
    assert!(
        matches!(evaluate(&r, &packet(), &c, 120, 0, NOW), Decision::Grant(g) if g.addr == packet().src)
    );
    r.allow_ip = Some("198.51.100.1".parse().unwrap());
    assert_eq!(
        evaluate(&r, &packet(), &client(), 120, 0, NOW),
        Decision::Reject(Reason::SourceMismatch)
    );
    // Without the requirement, the allow-IP is what opens (fwknop semantics).
    assert!(
        matches!(evaluate(&r, &packet(), &c, 120, 0, NOW), Decision::Grant(g) if g.addr == r.allow_ip.unwrap())
    );
    c.sources = vec!["10.0.0.0/8".parse().unwrap()];
    assert_eq!(
        evaluate(&r, &packet(), &c, 120, 0, NOW),
        Decision::Reject(Reason::SourceNotAllowed)
    );
}

#[test]
fn access_must_all_be_allowed_and_not_denied() {
    let c = client();
    let bad: Vec<Access> = vec!["tcp/22".parse().unwrap(), "tcp/23".parse().unwrap()];
    assert_eq!(
        evaluate(&req(&bad), &packet(), &c, 120, 0, NOW),
        Decision::Reject(Reason::NotAllowed(bad[1]))
    );
    let mut c = client();
    c.deny = ssh();
    assert_eq!(
        evaluate(&req(&ssh()), &packet(), &c, 120, 0, NOW),
        Decision::Reject(Reason::NotAllowed(ssh()[0]))
    );
    assert_eq!(
        evaluate(&req(&[]), &packet(), &client(), 120, 0, NOW),
        Decision::Reject(Reason::NoAccess)
    );
}

#[test]
fn username_and_expiry() {
    let a = ssh();
    let mut c = client();
    c.require_username = Some("bob".into());
    let mut r = req(&a);
    assert_eq!(
        evaluate(&r, &packet(), &c, 120, 0, NOW),
        Decision::Reject(Reason::UsernameMismatch)
    );
    r.username = Some("bob".into());
    assert!(matches!(
        evaluate(&r, &packet(), &c, 120, 0, NOW),
        Decision::Grant(_)
    ));
    c.expires_at = Some(NOW);
    assert_eq!(
        evaluate(&r, &packet(), &c, 120, 0, NOW),
        Decision::Reject(Reason::ClientExpired)
    );
}

/// Security issue item 8: `::ffff:192.0.2.7` in an IPv6 header is not 192.0.2.7. It used to
/// be matched as IPv4 (this test asserted so); now it is refused whatever `sources` say.
#[test]
fn ipv4_mapped_sources_are_refused_even_by_v6_networks() {
    let a = ssh();
    let p = Packet {
        src: "::ffff:192.0.2.7".parse().unwrap(),
        dst: "fd00::1".parse().unwrap(),
    };
    for sources in [
        vec!["192.0.2.0/24"],
        vec!["::ffff:0:0/96"],
        vec!["::/0", "0.0.0.0/0"],
    ] {
        let mut c = client();
        c.sources = sources.iter().map(|n| n.parse().unwrap()).collect();
        assert!(!addresses_permitted(&c, &p), "{sources:?}");
        let mut r = req(&a);
        r.allow_ip = Some(p.src);
        assert_eq!(
            evaluate(&r, &p, &c, 120, 0, NOW),
            Decision::Reject(Reason::MappedSource),
            "{sources:?}"
        );
        r.allow_ip = None;
        c.require_source_match = false;
        assert_eq!(
            evaluate(&r, &p, &c, 120, 0, NOW),
            Decision::Reject(Reason::MappedSource),
            "{sources:?}"
        );
    }
    assert_eq!(Reason::MappedSource.code(), "mapped-source");
    assert!(
        !Reason::MappedSource.is_noise(),
        "worth a (rate-limited) warning"
    );
}

/// One of each reason. The `match` makes a new variant a compile error here until it is
/// added to the list (and so to the checks below).
fn every_reason() -> Vec<Reason> {
    let all = vec![
        Reason::NotUdp,
        Reason::BadLength,
        Reason::BadHeader("version"),
        Reason::UnknownKey,
        Reason::SourceNotAllowed,
        Reason::MappedSource,
        Reason::AuthFailed,
        Reason::Malformed("allow-IP is not a unicast address"),
        Reason::Replay,
        Reason::StateLost,
        Reason::Stale { skew: -121 },
        Reason::ClientExpired,
        Reason::SourceRequired,
        Reason::SourceMismatch,
        Reason::UsernameMismatch,
        Reason::NoAccess,
        Reason::NotAllowed("tcp/23".parse().unwrap()),
        Reason::Unsupported("fwknop command messages"),
        Reason::CommandNotAllowed,
        Reason::NatNotAllowed("tcp/2222".parse().unwrap()),
        Reason::NatFamily("tcp/2222".parse().unwrap()),
    ];
    for r in &all {
        match r {
            Reason::NotUdp
            | Reason::BadLength
            | Reason::BadHeader(_)
            | Reason::UnknownKey
            | Reason::SourceNotAllowed
            | Reason::MappedSource
            | Reason::AuthFailed
            | Reason::Malformed(_)
            | Reason::Replay
            | Reason::StateLost
            | Reason::Stale { .. }
            | Reason::ClientExpired
            | Reason::SourceRequired
            | Reason::SourceMismatch
            | Reason::UsernameMismatch
            | Reason::NoAccess
            | Reason::NotAllowed(_)
            | Reason::Unsupported(_)
            | Reason::CommandNotAllowed => {}
            Reason::NatNotAllowed(_) | Reason::NatFamily(_) => {}
        }
    }
    all
}

/// The codes are what `verify --json`, the logs (`reason=`) and fail2ban filters match on:
/// one per reason, distinct, and stable.
#[test]
fn every_reason_has_its_own_stable_code() {
    let codes: Vec<&str> = every_reason().iter().map(Reason::code).collect();
    assert_eq!(
        codes,
        [
            "not-udp",
            "bad-length",
            "bad-header",
            "unknown-key",
            "source-not-allowed",
            "mapped-source",
            "auth-failed",
            "malformed",
            "replay",
            "state-lost",
            "stale",
            "client-expired",
            "source-required",
            "source-mismatch",
            "username-mismatch",
            "no-access",
            "not-allowed",
            "unsupported",
            "command-not-allowed",
            "nat-not-allowed",
            "nat-family",
        ]
    );
    let mut unique = codes.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), codes.len(), "two reasons share a code");
}

/// The text an operator reads in the log or in `nfknock verify`: it names what was wrong,
/// with the detail the variant carries, and where there is one, what to do.
#[test]
fn every_reason_explains_itself_to_the_operator() {
    let texts: Vec<String> = every_reason().iter().map(Reason::to_string).collect();
    let expect = [
        "not a UDP packet",
        "payload length matches no knock format",
        "bad header: version",
        "no configured key matches",
        "source address not allowed for this client",
        "clients must knock over IPv4 or from a real IPv6 address",
        "authentication failed (wrong key or tampered packet)",
        "malformed request: allow-IP is not a unicast address",
        "replayed packet",
        "knock again, from a correct clock",
        "timestamp behind by 121s, more than max_age; check the client's clock",
        "client access expired",
        "the client requires an explicit allow-IP",
        "allow-IP inside the knock differs from the packet source",
        "username does not match require_username",
        "knock requests no access",
        "tcp/23 is not allowed for this client",
        "unsupported: fwknop command messages",
        "command not in this client's `commands`/`command_prefixes`",
        "NAT request for tcp/2222 names a target this client's `nat` does not list for tcp/2222; add the target",
        "tcp/2222 is forwarded only to addresses of the other IP family",
    ];
    for (text, want) in texts.iter().zip(expect) {
        assert!(text.contains(want), "{text:?} lacks {want:?}");
    }
    assert_eq!(texts.len(), expect.len());
    assert_eq!(
        Reason::Stale { skew: 500 }.to_string(),
        "timestamp ahead by 500s, more than max_age; check the client's clock"
    );
}

/// Junk and floods are logged at `debug`; everything that says something about a configured
/// client (a wrong key, a replay, a clock) is worth a (rate-limited) warning.
#[test]
fn only_junk_is_noise() {
    let noise: Vec<&str> = every_reason()
        .iter()
        .filter(|r| r.is_noise())
        .map(Reason::code)
        .collect();
    assert_eq!(
        noise,
        ["not-udp", "bad-length", "bad-header", "unknown-key"]
    );
}

/// An authenticated allow-IP of `0.0.0.0`, `::` or a multicast group opens nothing for
/// anyone, whatever `require_source_match` says (fwknop's `0.0.0.0` means "the source" and
/// reaches the policy as `None`, never as this).
#[test]
fn unspecified_and_multicast_allow_ips_are_refused() {
    let a = ssh();
    let mut c = client();
    for ip in ["0.0.0.0", "::", "224.0.0.1", "239.1.2.3", "ff02::1"] {
        for strict in [true, false] {
            c.require_source_match = strict;
            let mut r = req(&a);
            r.allow_ip = Some(ip.parse().unwrap());
            assert_eq!(
                evaluate(&r, &packet(), &c, 120, 0, NOW),
                Decision::Reject(Reason::Malformed("allow-IP is not a unicast address")),
                "{ip}, require_source_match = {strict}"
            );
        }
    }
}

/// IPv4-compatible, NAT64 and 6to4 addresses embed an IPv4 address but are IPv6 to
/// nfknock: they never satisfy an IPv4 network, only an IPv6 one.
#[test]
fn other_ipv6_forms_are_never_read_as_ipv4() {
    let mut c = client();
    c.sources = vec!["10.77.0.0/24".parse().unwrap()];
    let v6net = "::/0".parse().unwrap();
    for src in ["::10.77.0.2", "64:ff9b::a4d:2", "2002:a4d:2::1"] {
        let p = Packet {
            src: src.parse().unwrap(),
            dst: "fd00::1".parse().unwrap(),
        };
        assert!(!addresses_permitted(&c, &p), "{src}");
        let mut wide = c.clone();
        wide.sources.push(v6net);
        assert!(addresses_permitted(&wide, &p), "{src}");
    }
    // Destinations are matched as they are too.
    let mut c = client();
    c.destinations = vec!["192.0.2.1/32".parse().unwrap()];
    let p = Packet {
        src: "2001:db8::7".parse().unwrap(),
        dst: "::ffff:192.0.2.1".parse().unwrap(),
    };
    assert!(!addresses_permitted(&c, &p));
}

/// An authenticated allow-IP `::ffff:a.b.c.d` (native family 6) is refused, not read as
/// a.b.c.d nor granted in the IPv6 set.
#[test]
fn ipv4_mapped_allow_ip_is_refused() {
    let a = ssh();
    let mut r = req(&a);
    r.allow_ip = Some("::ffff:192.0.2.7".parse().unwrap());
    let mut c = client();
    for strict in [true, false] {
        c.require_source_match = strict;
        assert!(
            matches!(evaluate(&r, &packet(), &c, 120, 0, NOW), Decision::Reject(Reason::Malformed(m)) if m.contains("IPv4-mapped")),
            "require_source_match = {strict}"
        );
    }
}

/// fwknop message types (`fko_message_type_t`, lib/fko.h): access requests (1, and 3 with a
/// client timeout) are served; command (0) messages are refused as unsupported; NAT access
/// (2, 4) and local NAT (5, 6) messages are refused for a client without `nat` (issue 10).
/// A native knock has no message type.
#[test]
fn only_fwknop_access_messages_are_served() {
    let a = ssh();
    let mut k = req(&a);
    assert!(matches!(
        evaluate(&k, &packet(), &client(), 120, 0, NOW),
        Decision::Grant(_)
    ));
    for (t, want) in [
        (0, Some("command")),
        (1, None),
        (2, Some("nat")),
        (3, None),
        (4, Some("nat")),
        (5, Some("nat")),
        (6, Some("nat")),
    ] {
        k.message_type = Some(t);
        k.nat_access = (t >= 2 && t != 3).then(|| "192.168.10.2,22".to_string());
        match (evaluate(&k, &packet(), &client(), 120, 0, NOW), want) {
            (Decision::Grant(_), None) => {}
            (Decision::Reject(Reason::Unsupported(what)), Some(w)) if what.contains(w) => {}
            (Decision::Reject(Reason::NatNotAllowed(a)), Some("nat")) if a == ssh()[0] => {}
            (d, _) => panic!("type {t}: {d:?}"),
        }
    }
}

/// The order of the refusals an operator sees: an unsupported message type first (whatever
/// its age), then a timestamp older than the replay records reach, then the age.
#[test]
fn unsupported_type_then_lost_state_then_age() {
    let a = ssh();
    let mut k = req(&a);
    k.timestamp = NOW - 1000;
    let not_before = NOW - 500;
    let eval = |k: &Knock| evaluate(k, &packet(), &client(), 120, not_before, NOW);
    assert_eq!(eval(&k), Decision::Reject(Reason::StateLost));
    k.message_type = Some(0);
    assert!(matches!(eval(&k), Decision::Reject(Reason::Unsupported(_))));
    k.message_type = Some(1);
    k.timestamp = NOW - 200;
    assert_eq!(eval(&k), Decision::Reject(Reason::Stale { skew: -200 }));
    k.timestamp = not_before;
    assert_eq!(
        evaluate(&k, &packet(), &client(), 600, not_before, NOW),
        Decision::Grant(Grant {
            addr: SRC.parse().unwrap(),
            access: a,
            ttl: 30,
            nat: vec![],
            gateway: Vec::new(),
        }),
        "stamped exactly at the bound: granted"
    );
}

/// Command messages (fwknop type 0): refused by default; with an allow-list, only an exact
/// argv or a prefix without added options runs, split without a shell, and only after every
/// other check (age, source, user name) has passed.
#[test]
fn command_messages_run_only_what_the_allow_list_names() {
    use crate::command::{CommandUser, Exec};
    let mut k = req(&[]);
    k.message_type = Some(0);
    k.username = Some("bob".into());
    k.command = Some("/usr/bin/systemctl restart nginx".into());
    assert!(matches!(
        evaluate(&k, &packet(), &client(), 120, 0, NOW),
        Decision::Reject(Reason::Unsupported(_))
    ));
    let mut c = client();
    c.commands.exec = Some(Exec {
        exact: vec![vec![
            "/usr/bin/systemctl".into(),
            "restart".into(),
            "nginx".into(),
        ]],
        prefixes: vec![vec!["/usr/bin/touch".into()]],
        sudo: None,
    });
    c.commands.user = Some(CommandUser {
        account: crate::config::Account {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
        },
        timeout_secs: 10,
        net_admin: false,
    });
    let run_as = |c: &ClientEntry, text: &str| {
        let mut k = k.clone();
        k.command = Some(text.into());
        evaluate(&k, &packet(), c, 120, 0, NOW)
    };
    let run = |text: &str| run_as(&c, text);
    assert_eq!(
        run("/usr/bin/systemctl restart nginx"),
        Decision::Command(CommandRun {
            addr: SRC.parse().unwrap(),
            argv: vec![
                "/usr/bin/systemctl".into(),
                "restart".into(),
                "nginx".into()
            ],
        })
    );
    assert!(
        matches!(run("/usr/bin/touch '/tmp/a b'"), Decision::Command(r) if r.argv[1] == "/tmp/a b")
    );
    for refused in [
        "/usr/bin/systemctl restart nginx; reboot",
        "/usr/bin/systemctl stop nginx",
        "/usr/bin/touch --reference=/etc/shadow /tmp/x",
        "/usr/bin/touch $(id)",
        "systemctl restart nginx",
    ] {
        assert_eq!(
            run(refused),
            Decision::Reject(Reason::CommandNotAllowed),
            "{refused}"
        );
    }
    // The other checks still come first.
    let mut old = k.clone();
    old.timestamp = NOW - 1000;
    assert!(matches!(
        evaluate(&old, &packet(), &c, 120, 0, NOW),
        Decision::Reject(Reason::Stale { .. })
    ));
    let mut c = c.clone();
    c.require_username = Some("alice".into());
    assert_eq!(
        run_as(&c, "/usr/bin/systemctl restart nginx"),
        Decision::Reject(Reason::UsernameMismatch)
    );
}

mod nat {
    //! NAT (issue 10 §1): the client's `nat` list decides every target; a packet only picks
    //! which of its forwarded ports it wants.
    use super::*;
    use crate::access::{NatTarget, SourceNat};
    use crate::config::{NatRule, NatTo};

    fn fwd() -> Access {
        "tcp/2222".parse().unwrap()
    }

    fn nat_client() -> ClientEntry {
        let mut c = client();
        c.allow.push(fwd());
        c.allow.push("tcp/2200".parse().unwrap());
        c.nat = vec![
            NatRule {
                access: fwd(),
                to: NatTo::Host("192.168.10.2:22".parse().unwrap()),
                source: SourceNat::Keep,
                dnat: true,
            },
            NatRule {
                access: fwd(),
                to: NatTo::Host("[fd10::2]:22".parse().unwrap()),
                source: SourceNat::Masquerade,
                dnat: true,
            },
            NatRule {
                access: "tcp/2200".parse().unwrap(),
                to: NatTo::Local(22),
                source: SourceNat::Keep,
                dnat: true,
            },
        ];
        c
    }

    fn nat_knock(t: u8, field: &str) -> Knock {
        let mut k = req(&[fwd()]);
        k.message_type = Some(t);
        k.nat_access = Some(field.into());
        k
    }

    fn granted(d: Decision) -> Grant {
        match d {
            Decision::Grant(g) => g,
            d => panic!("not a grant: {d:?}"),
        }
    }

    fn target(to: &str, source: SourceNat) -> NatTarget {
        NatTarget {
            to: to.parse().unwrap(),
            source,
            dnat: true,
        }
    }

    #[test]
    fn a_native_or_plain_fwknop_knock_for_a_forwarded_port_gets_the_configured_target() {
        for t in [None, Some(1), Some(3)] {
            let mut k = req(&[fwd(), "tcp/22".parse().unwrap()]);
            k.message_type = t;
            let g = granted(evaluate(&k, &packet(), &nat_client(), 120, 0, NOW));
            assert_eq!(g.access, [fwd(), "tcp/22".parse().unwrap()]);
            assert_eq!(g.nat, [(fwd(), target("192.168.10.2:22", SourceNat::Keep))]);
        }
    }

    #[test]
    fn a_nat_message_is_granted_only_for_the_configured_host_and_port() {
        for t in [2, 4] {
            let g = granted(evaluate(
                &nat_knock(t, "192.168.10.2,22"),
                &packet(),
                &nat_client(),
                120,
                0,
                NOW,
            ));
            assert_eq!(g.nat, [(fwd(), target("192.168.10.2:22", SourceNat::Keep))]);
            for other in [
                "192.168.10.3,22",
                "192.168.10.2,23",
                "internal.example,22",
                "10.0.0.1,80",
            ] {
                assert_eq!(
                    evaluate(&nat_knock(t, other), &packet(), &nat_client(), 120, 0, NOW),
                    Decision::Reject(Reason::NatNotAllowed(fwd())),
                    "type {t} asking for {other}"
                );
            }
            for junk in ["192.168.10.2", "192.168.10.2,x", "192.168.10.2,70000"] {
                assert!(matches!(
                    evaluate(&nat_knock(t, junk), &packet(), &nat_client(), 120, 0, NOW),
                    Decision::Reject(Reason::Malformed(_))
                ));
            }
        }
    }

    #[test]
    fn a_nat_message_for_a_port_without_nat_is_refused_even_if_the_port_is_allowed() {
        let mut k = nat_knock(2, "192.168.10.2,22");
        k.access = ssh();
        assert_eq!(
            evaluate(&k, &packet(), &nat_client(), 120, 0, NOW),
            Decision::Reject(Reason::NatNotAllowed(ssh()[0]))
        );
    }

    #[test]
    fn an_ipv6_knock_gets_the_ipv6_target_and_a_family_without_one_is_refused() {
        let src: IpAddr = "2001:db8::7".parse().unwrap();
        let p = Packet {
            src,
            dst: "2001:db8::1".parse().unwrap(),
        };
        let mut k = req(&[fwd()]);
        k.allow_ip = Some(src);
        let g = granted(evaluate(&k, &p, &nat_client(), 120, 0, NOW));
        assert_eq!(
            g.nat,
            [(fwd(), target("[fd10::2]:22", SourceNat::Masquerade))]
        );
        let mut c = nat_client();
        c.nat
            .retain(|r| !matches!(r.to, NatTo::Host(h) if h.is_ipv6()));
        assert_eq!(
            evaluate(&k, &p, &c, 120, 0, NOW),
            Decision::Reject(Reason::NatFamily(fwd()))
        );
    }

    #[test]
    fn local_nat_forwards_to_the_knocked_address_and_opens_the_local_port() {
        let local: Access = "tcp/2200".parse().unwrap();
        let mut k = nat_knock(5, "server.example,22");
        k.access = vec![local];
        let g = granted(evaluate(&k, &packet(), &nat_client(), 120, 0, NOW));
        assert_eq!(g.nat, [(local, target("192.0.2.1:22", SourceNat::Keep))]);
        assert_eq!(g.access, [local, "tcp/22".parse().unwrap()]);
        k.nat_access = Some("server.example,23".into());
        assert_eq!(
            evaluate(&k, &packet(), &nat_client(), 120, 0, NOW),
            Decision::Reject(Reason::NatNotAllowed(local))
        );
        // A local NAT message cannot reach an internal host's entry, nor the reverse.
        let mut k = nat_knock(6, "192.168.10.2,22");
        assert_eq!(
            evaluate(&k, &packet(), &nat_client(), 120, 0, NOW),
            Decision::Reject(Reason::NatNotAllowed(fwd()))
        );
        k.message_type = Some(2);
        k.access = vec![local];
        k.nat_access = Some("192.0.2.1,22".into());
        assert_eq!(
            evaluate(&k, &packet(), &nat_client(), 120, 0, NOW),
            Decision::Reject(Reason::NatNotAllowed(local))
        );
    }

    #[test]
    fn a_nat_message_forwards_its_first_port_only() {
        let mut k = nat_knock(2, "192.168.10.2,22");
        k.access = vec![fwd(), "tcp/22".parse().unwrap()];
        let g = granted(evaluate(&k, &packet(), &nat_client(), 120, 0, NOW));
        assert_eq!(g.access, [fwd()]);
    }

    #[test]
    fn a_routed_entry_grants_its_port_with_a_routed_target() {
        let mut c = client();
        c.nat = vec![NatRule {
            access: ssh()[0],
            to: NatTo::Host("192.168.10.2:22".parse().unwrap()),
            source: SourceNat::Keep,
            dnat: false,
        }];
        let g = granted(evaluate(&req(&ssh()), &packet(), &c, 120, 0, NOW));
        assert_eq!(g.access, ssh());
        assert_eq!(
            g.nat,
            [(
                ssh()[0],
                NatTarget {
                    to: "192.168.10.2:22".parse().unwrap(),
                    source: SourceNat::Keep,
                    dnat: false,
                }
            )]
        );
    }
}

/// Issue 10 §1, fwknop `FORWARD_ALL`: any granted knock of a gateway client also opens its
/// networks of the granted address's family, for that address, with the grant's ttl; a
/// refused knock opens nothing.
#[test]
fn a_gateway_client_s_grant_opens_its_networks_of_the_address_family() {
    use crate::access::{GatewayTo, SourceNat};
    let mut c = client();
    c.gateway = Some(crate::config::Gateway {
        networks: vec![
            "10.80.0.0/24".parse().unwrap(),
            "fd80::/64".parse().unwrap(),
        ],
        source: SourceNat::Masquerade,
    });
    let gw = |net: &str| GatewayTo {
        net: net.parse().unwrap(),
        source: SourceNat::Masquerade,
    };
    let granted = |d| match d {
        Decision::Grant(g) => g,
        other => panic!("{other:?}"),
    };
    let g = granted(evaluate(&req(&ssh()), &packet(), &c, 120, 0, NOW));
    assert_eq!(g.gateway, [gw("10.80.0.0/24")]);
    assert_eq!((g.addr, g.ttl), (SRC.parse().unwrap(), 30));
    // Over IPv6, the IPv6 network.
    let src6: IpAddr = "2001:db8::7".parse().unwrap();
    let mut k = req(&["udp/53".parse().unwrap()]);
    k.allow_ip = Some(src6);
    k.timeout = 10;
    let p6 = Packet {
        src: src6,
        dst: "2001:db8::1".parse().unwrap(),
    };
    let g = granted(evaluate(&k, &p6, &c, 120, 0, NOW));
    assert_eq!((g.gateway, g.ttl), (vec![gw("fd80::/64")], 10));
    // Keyed on the address granted: the allow-IP where the client may name another one.
    c.require_source_match = false;
    let mut k = req(&ssh());
    k.allow_ip = Some("198.51.100.9".parse().unwrap());
    let g = granted(evaluate(&k, &packet(), &c, 120, 0, NOW));
    assert_eq!(g.addr, "198.51.100.9".parse::<IpAddr>().unwrap());
    assert_eq!(g.gateway, [gw("10.80.0.0/24")]);
    // A refused knock opens no gateway; a client without one gets none.
    assert_eq!(
        evaluate(
            &req(&["tcp/80".parse().unwrap()]),
            &packet(),
            &c,
            120,
            0,
            NOW
        ),
        Decision::Reject(Reason::NotAllowed("tcp/80".parse().unwrap()))
    );
    let g = granted(evaluate(&req(&ssh()), &packet(), &client(), 120, 0, NOW));
    assert!(g.gateway.is_empty());
}
