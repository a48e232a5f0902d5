//! Tests of the nftables shell. The ones that need the kernel run as root in a private network
//! namespace each (entered with `setns` from a thread of their own) and are skipped otherwise.

use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

fn tcp(port: u16) -> Access {
    Access {
        proto: Proto::Tcp,
        port,
    }
}

// ---- no root ----

/// A failed netlink operation, as the daemon logs it (`GrantError::report`, the whole chain on
/// one line): the OS error once, after the operation and the object (it used to be in the nft
/// error's message too).
#[test]
fn a_kernel_error_is_reported_once() {
    let enobufs = || io::Error::from_raw_os_error(libc::ENOBUFS);
    let errno = enobufs().to_string();
    for (nft, says) in [
        (
            NftError::Kernel {
                op: "add elements to",
                object: Object::Set(SET_ALLOW_V4),
                source: enobufs(),
            },
            format!("cannot write 1 grant(s) to X: cannot add elements to set `inet nfknock {SET_ALLOW_V4}`: {errno}"),
        ),
        (
            NftError::Socket {
                op: "open",
                source: enobufs(),
            },
            format!("cannot write 1 grant(s) to X: cannot open the nftables netlink socket: {errno}"),
        ),
    ] {
        let e = crate::grants::GrantError::Write {
            object: "X".into(),
            count: 1,
            source: Box::new(nft),
        };
        assert_eq!(e.report().to_string(), says);
    }
    let e = crate::netfilter::netlink::OpenError {
        step: crate::netfilter::netlink::OpenStep::Bind,
        source: enobufs(),
    };
    assert_eq!(e.to_string(), "cannot bind a netlink socket");
}

#[test]
fn element_key_bytes() {
    let (k, n) = element_key(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), tcp(22));
    assert_eq!(&k[..n], &[192, 0, 2, 7, 6, 0, 0, 0, 0, 22, 0, 0]);
    let (k, n) = element_key(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        Access {
            proto: Proto::Udp,
            port: 0x1234,
        },
    );
    assert_eq!(n, 24);
    assert_eq!(
        &k[..16],
        &Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets()
    );
    assert_eq!(&k[16..24], &[17, 0, 0, 0, 0x12, 0x34, 0, 0]);
    assert_eq!(
        decode_key(&k[..n], true),
        Some((
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            Access {
                proto: Proto::Udp,
                port: 0x1234
            }
        ))
    );
    assert_eq!(protected_key(tcp(443)), [6, 0, 0, 0, 0x01, 0xbb, 0, 0]);
    assert_eq!(decode_key(&[1, 2, 3], false), None);
    assert_eq!(
        decode_key(&[1, 2, 3, 4, 1, 0, 0, 0, 0, 22, 0, 0], false),
        None,
        "icmp is not ours"
    );
}

/// The upsert message: NEWSETELEM with CREATE and without EXCL, TIMEOUT and EXPIRATION both
/// equal to the grant's timeout, inside a batch. (Opening a netfilter netlink socket needs no
/// privilege; nothing is sent.)
#[test]
fn upsert_message_bytes() {
    let mut nft = Nft::open().unwrap();
    nft.batch_start();
    let e = Element {
        addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        access: tcp(22),
        timeout_ms: 30_000,
        nat: None,
        gateway: None,
    };
    nft.grants(true, &[e], false);
    nft.grants(true, &[e], true); // no v6 element: no message
    let msgs: Vec<_> = messages(nft.batch.bytes()).map_while(Result::ok).collect();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].ty, NFNL_MSG_BATCH_BEGIN);
    let m = &msgs[1];
    assert_eq!(m.ty, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM);
    assert_eq!(m.flags & NLM_F_CREATE, NLM_F_CREATE);
    assert_eq!(
        m.flags & NLM_F_EXCL,
        0,
        "a re-knock must not fail with EEXIST"
    );
    let (fam, body) = nfgen(m.payload).unwrap();
    assert_eq!(fam, NFPROTO_INET);
    assert_eq!(
        str_attr(attr(body, NFTA_SET_ELEM_LIST_TABLE).unwrap()),
        b"nfknock"
    );
    assert_eq!(
        str_attr(attr(body, NFTA_SET_ELEM_LIST_SET).unwrap()),
        b"allow_v4"
    );
    let elems: Vec<_> = attrs(attr(body, NFTA_SET_ELEM_LIST_ELEMENTS).unwrap()).collect();
    assert_eq!(elems.len(), 1);
    let el = elems[0].1;
    let key = attr(attr(el, NFTA_SET_ELEM_KEY).unwrap(), NFTA_DATA_VALUE).unwrap();
    assert_eq!(key, &[10, 0, 0, 1, 6, 0, 0, 0, 0, 22, 0, 0]);
    assert_eq!(
        attr(el, NFTA_SET_ELEM_TIMEOUT).and_then(be_u64),
        Some(30_000)
    );
    assert_eq!(
        attr(el, NFTA_SET_ELEM_EXPIRATION).and_then(be_u64),
        Some(30_000)
    );
}

/// The revocation message: DELSETELEM naming the element's key and nothing else (no
/// timeout; and an element list, since a DELSETELEM without one flushes the whole set).
#[test]
fn delete_message_bytes() {
    let mut nft = Nft::open().unwrap();
    nft.batch_start();
    let v4 = Element {
        addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        access: tcp(22),
        timeout_ms: 30_000,
        nat: None,
        gateway: None,
    };
    let v6 = Element {
        addr: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        access: tcp(443),
        timeout_ms: 30_000,
        nat: None,
        gateway: None,
    };
    nft.grants(false, &[v4, v6], false);
    nft.grants(false, &[v4, v6], true);
    let msgs: Vec<_> = messages(nft.batch.bytes()).map_while(Result::ok).collect();
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[0].ty, NFNL_MSG_BATCH_BEGIN);
    for (m, set, key) in [
        (&msgs[1], &b"allow_v4"[..], element_key(v4.addr, v4.access)),
        (&msgs[2], &b"allow_v6"[..], element_key(v6.addr, v6.access)),
    ] {
        assert_eq!(m.ty, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELSETELEM);
        assert_eq!(m.flags, NLM_F_REQUEST, "no CREATE, EXCL or ACK of its own");
        let (fam, body) = nfgen(m.payload).unwrap();
        assert_eq!(fam, NFPROTO_INET);
        assert_eq!(
            str_attr(attr(body, NFTA_SET_ELEM_LIST_TABLE).unwrap()),
            b"nfknock"
        );
        assert_eq!(str_attr(attr(body, NFTA_SET_ELEM_LIST_SET).unwrap()), set);
        let elems: Vec<_> = attrs(attr(body, NFTA_SET_ELEM_LIST_ELEMENTS).unwrap()).collect();
        assert_eq!(elems.len(), 1);
        let el = elems[0].1;
        let k = attr(attr(el, NFTA_SET_ELEM_KEY).unwrap(), NFTA_DATA_VALUE).unwrap();
        assert_eq!(k, &key.0[..key.1]);
        assert_eq!(attr(el, NFTA_SET_ELEM_TIMEOUT), None);
        assert_eq!(attr(el, NFTA_SET_ELEM_EXPIRATION), None);
    }
    // The v4 message ends with its element list, byte for byte (host-order headers):
    // ELEMENTS { LIST_ELEM { KEY { DATA_VALUE 10.0.0.1 . tcp . 22 } } }.
    #[rustfmt::skip]
    let tail: [u8; 28] = [
        28, 0, 3, 0x80,  24, 0, 1, 0x80,  20, 0, 1, 0x80,  16, 0, 1, 0,
        10, 0, 0, 1,  6, 0, 0, 0,  0, 22, 0, 0,
    ];
    assert!(
        cfg!(target_endian = "big") || msgs[1].payload.ends_with(&tail),
        "{:02x?}",
        msgs[1].payload
    );
}

#[test]
fn zero_timeout_is_refused() {
    let mut nft = Nft::open().unwrap();
    let e = Element {
        addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        access: tcp(22),
        timeout_ms: 0,
        nat: None,
        gateway: None,
    };
    assert!(matches!(
        nft.upsert(&[e]),
        Err(NftError::ZeroTimeout { .. })
    ));
}

/// Lines of nft text without comments, indentation and blank lines.
fn normalized(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            l.split('#')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|l| !l.is_empty())
        .collect()
}

/// `nft/nfknock.nft` is `render(default spec)` plus comments: the two can never drift.
#[test]
fn shipped_file_is_render_of_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/nft/nfknock.nft");
    let shipped = std::fs::read_to_string(path).unwrap();
    assert_eq!(
        normalized(&shipped),
        normalized(&render(&RulesetSpec::default()))
    );
}

#[test]
fn render_follows_the_spec() {
    let spec = RulesetSpec {
        gateway_nets: Vec::new(),
        knock_port: 1000,
        queue: 3,
        queue_total: 1,
        backend: QueueBackend::Compat,
        protect: vec![
            tcp(22),
            Access {
                proto: Proto::Udp,
                port: 53,
            },
        ],
        native_len: 100,
        fwknop: false,
        prefilter: false,
        fwknop_sources: Vec::new(),
        rate_limit: 0,
        rate_limit_v4_prefix: 24,
        rate_limit_v6_prefix: 48,
        gate_input: false,
        gate_forward: false,
        nat: false,
        forward_targets: vec![],
    };
    let text = render(&spec);
    assert!(text.contains("udp dport 1000 udp length != 108 drop\n"));
    assert!(text.contains("udp dport 1000 queue num 3\n"));
    assert!(text.contains("elements = { tcp . 22, udp . 53 }"));
    assert!(!text.contains("limit rate"));
    assert!(!text.contains("@knock_hints") && !text.contains("@fwknop_src"));
    assert!(!text.contains(CHAIN_FORWARD));
    assert!(
        !text.contains("@allow_v4"),
        "no input gate: nothing may close"
    );
    assert!(
        text.contains("chain gate_input {"),
        "knocks are still queued from the input hook"
    );
    assert!(render(&RulesetSpec::default())
        .contains("ct state ! established,related meta l4proto . th dport @protected"));
    let def = render(&RulesetSpec::default());
    assert!(def.contains("udp length != 136 udp length != 148-1507 drop"));
    assert!(def.contains(
        "add @knock_rate_v4 { ip saddr limit rate over 20/second burst 40 packets } drop"
    ));
    // IPv6 is metered per /64, and a source the full set cannot hold is dropped.
    assert!(def.contains(
        "udp dport 62201 add @knock_rate_v6 { ip6 saddr & ffff:ffff:ffff:ffff:: limit rate over 20/second burst 40 packets } drop\n\
         \t\tudp dport 62201 ip6 saddr & ffff:ffff:ffff:ffff:: != @knock_rate_v6 drop\n"
    ));
    assert!(def.contains("udp dport 62201 ip saddr != @knock_rate_v4 drop\n"));
    let other = render(&RulesetSpec {
        rate_limit_v4_prefix: 24,
        rate_limit_v6_prefix: 57,
        ..RulesetSpec::default()
    });
    assert!(
        other.contains("{ ip saddr & 255.255.255.0 limit rate"),
        "{other}"
    );
    assert!(other.contains("ip6 saddr & ffff:ffff:ffff:ff80:: != @knock_rate_v6 drop"));
    // Issue item 11: the input gate judges a flow the host NATed to itself (REDIRECT) by the
    // port the client connected to as well, also without the forward gate.
    let no_forward = render(&RulesetSpec {
        gate_forward: false,
        ..RulesetSpec::default()
    });
    let input = no_forward.split("chain gate_input").nth(1).unwrap();
    for saddr in ["ip saddr", "ip6 saddr"] {
        assert!(
            input.contains(&format!("\t\tct status dnat ct state ! established,related meta l4proto tcp meta l4proto . ct original proto-dst @protected {saddr} . meta l4proto . ct original proto-dst != @allow_v")),
            "{no_forward}"
        );
        // Issue 12 §6: one rule per protocol, so nft < 1.0.7 (Debian 12's 1.0.6) can type
        // `ct original proto-dst` inside the concatenation.
        assert!(
            input.contains(&format!("\t\tct status dnat ct state ! established,related meta l4proto udp meta l4proto . ct original proto-dst @protected {saddr} . meta l4proto . ct original proto-dst != @allow_v")),
            "{no_forward}"
        );
        assert!(input.contains(&format!(
            "th dport @protected {saddr} . meta l4proto . th dport != @allow_v"
        )));
    }
    let whole = render(&RulesetSpec {
        rate_limit_v6_prefix: 128,
        ..RulesetSpec::default()
    });
    assert!(whole.contains("{ ip6 saddr limit rate"), "{whole}");
}

/// The knock rate rules in netlink: the /64 mask sits in register 1 before the dynset and
/// before the fail-closed lookup (inverted), so both use the same key. No root needed.
#[test]
fn knock_rate_rules_mask_the_source_and_fail_closed() {
    let mut nft = Nft::open().unwrap();
    nft.batch_start();
    let spec = RulesetSpec {
        prefilter: false,
        ..RulesetSpec::default()
    };
    rules::add_all(&mut nft, &spec);
    let mut rules = Vec::new();
    for m in messages(nft.batch.bytes()).map_while(Result::ok) {
        if m.ty != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE {
            continue;
        }
        let (_, body) = nfgen(m.payload).unwrap();
        if str_attr(attr(body, NFTA_RULE_CHAIN).unwrap()) != CHAIN_KNOCK.as_bytes() {
            continue;
        }
        let exprs: Vec<(String, Vec<u8>)> = attrs(attr(body, NFTA_RULE_EXPRESSIONS).unwrap())
            .map(|(_, e)| {
                let name = String::from_utf8_lossy(str_attr(attr(e, NFTA_EXPR_NAME).unwrap()));
                (
                    name.into_owned(),
                    attr(e, NFTA_EXPR_DATA).unwrap_or(&[]).to_vec(),
                )
            })
            .collect();
        rules.push(exprs);
    }
    let names = |r: &Vec<(String, Vec<u8>)>| {
        r.iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    // notrack, length, then v4 add + v4 fail-closed, v6 add + v6 fail-closed.
    assert_eq!(rules.len(), 6);
    let head = "meta cmp payload cmp meta cmp payload";
    assert_eq!(names(&rules[2]), format!("{head} dynset immediate"));
    assert_eq!(names(&rules[3]), format!("{head} lookup immediate"));
    assert_eq!(names(&rules[4]), format!("{head} bitwise dynset immediate"));
    assert_eq!(names(&rules[5]), format!("{head} bitwise lookup immediate"));
    for r in &rules[4..6] {
        let bitwise = &r[7].1;
        let mask = attr(attr(bitwise, 4).unwrap(), NFTA_DATA_VALUE).unwrap();
        assert_eq!(mask, [[0xff; 8], [0; 8]].concat(), "NFTA_BITWISE_MASK");
        assert_eq!(
            attr(bitwise, 3),
            Some(&16u32.to_be_bytes()[..]),
            "NFTA_BITWISE_LEN"
        );
    }
    for (r, set) in [
        (&rules[3], SET_KNOCK_RATE_V4),
        (&rules[5], SET_KNOCK_RATE_V6),
    ] {
        let lookup = &r[r.len() - 2].1;
        assert_eq!(str_attr(attr(lookup, 1).unwrap()), set.as_bytes());
        assert_eq!(attr(lookup, 5), Some(&NFT_LOOKUP_F_INV.to_be_bytes()[..]));
    }
}

// ---- root, in a private network namespace ----

static NETNS_SEQ: AtomicU32 = AtomicU32::new(0);

/// A named network namespace, deleted on drop (also when the test fails).
struct Netns {
    name: String,
}

impl Netns {
    /// `None` (test skipped) when not root.
    fn new() -> Option<Netns> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return None;
        }
        let name = format!(
            "nfk-nft-{}-{}",
            std::process::id(),
            NETNS_SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "ip netns add {name}");
        Some(Netns { name })
    }

    /// Run `f` on a fresh thread that has entered the namespace (setns affects one thread).
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            // SAFETY: a valid netns fd; only this thread's namespace changes.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {path}");
            f()
        })
        .join()
        .unwrap()
    }

    fn nft(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn compat_spec() -> RulesetSpec {
    RulesetSpec {
        backend: QueueBackend::Compat,
        ..RulesetSpec::default()
    }
}

fn v4(a: u8, port: u16, timeout_ms: u64) -> Element {
    Element {
        addr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, a)),
        access: tcp(port),
        timeout_ms,
        nat: None,
        gateway: None,
    }
}

#[test]
fn detects_compat_backend_and_leaves_nothing() {
    let Some(ns) = Netns::new() else { return };
    let backend = ns.run(|| Nft::open().unwrap().detect_queue_backend().unwrap());
    // This build machine has no nft_queue (DESIGN.md); production kernels answer Native.
    eprintln!("queue backend: {backend:?}");
    assert_eq!(ns.nft(&["list", "ruleset"]).trim(), "");
}

#[test]
fn install_lists_like_render() {
    let Some(ns) = Netns::new() else { return };
    ns.run(|| {
        let mut nft = Nft::open().unwrap();
        assert!(!nft.table_exists().unwrap());
        nft.install(&compat_spec(), &[]).unwrap();
        assert!(nft.table_exists().unwrap());
    });
    let listed = ns.nft(&["list", "table", "inet", "nfknock"]);
    assert_eq!(
        normalized(&listed),
        normalized(&render(&compat_spec())),
        "nft lists:\n{listed}"
    );
}

/// Other rate prefixes (a byte-aligned one, odd ones, the whole address) list as rendered:
/// the mask nft prints is the one [`render`] writes.
#[test]
fn install_lists_like_render_with_other_rate_prefixes() {
    let Some(ns) = Netns::new() else { return };
    for (v4, v6) in [(24, 48), (17, 57), (1, 1), (32, 128), (31, 127)] {
        let spec = RulesetSpec {
            rate_limit_v4_prefix: v4,
            rate_limit_v6_prefix: v6,
            ..compat_spec()
        };
        let s = spec.clone();
        ns.run(move || Nft::open().unwrap().install(&s, &[]).unwrap());
        let listed = ns.nft(&["list", "table", "inet", "nfknock"]);
        assert_eq!(
            normalized(&listed),
            normalized(&render(&spec)),
            "/{v4} /{v6}: nft lists:\n{listed}"
        );
    }
}

/// Issue 11 §4: `queue = "7-8"` spreads knocks over two queues by flow (xt NFQUEUE rev 3
/// `queues_total`, or the native expression's `NFTA_QUEUE_TOTAL`); nft lists it as rendered.
#[test]
fn a_queue_range_installs_and_lists_like_render() {
    let Some(ns) = Netns::new() else { return };
    let spec = RulesetSpec {
        queue: 7,
        queue_total: 2,
        ..compat_spec()
    };
    assert!(render(&spec).contains("queue num 7-8\n"));
    let s = spec.clone();
    ns.run(move || Nft::open().unwrap().install(&s, &[]).unwrap());
    let listed = ns.nft(&["list", "table", "inet", "nfknock"]);
    assert_eq!(
        normalized(&listed),
        normalized(&render(&spec)),
        "nft lists:\n{listed}"
    );
}

/// `serve --dry-run` without `--with-gate`: switching a gated table to a gateless one removes
/// every gate rule (input and forward) and keeps the knock → queue rule.
#[test]
fn gateless_install_lists_like_render_and_removes_the_gate() {
    let Some(ns) = Netns::new() else { return };
    let gateless = RulesetSpec {
        gate_input: false,
        gate_forward: false,
        ..compat_spec()
    };
    let spec = gateless.clone();
    ns.run(move || {
        let mut nft = Nft::open().unwrap();
        nft.install(&compat_spec(), &[]).unwrap();
        nft.install(&spec, &[]).unwrap();
    });
    let listed = ns.nft(&["list", "table", "inet", "nfknock"]);
    assert_eq!(
        normalized(&listed),
        normalized(&render(&gateless)),
        "nft lists:\n{listed}"
    );
    assert!(
        !listed.contains("@allow_v4") && !listed.contains(CHAIN_FORWARD),
        "{listed}"
    );
    assert!(listed.contains("queue num 0"), "{listed}");
}

#[test]
fn reinstall_keeps_grants_and_upsert_refreshes_the_timer() {
    let Some(ns) = Netns::new() else { return };
    ns.run(|| {
        let mut nft = Nft::open().unwrap();
        nft.install(&compat_spec(), &[]).unwrap();
        nft.upsert(&[v4(1, 22, 60_000)]).unwrap();
        let live = nft.list().unwrap();
        assert_eq!(live.len(), 1);
        let g = live[0];
        assert_eq!(
            (g.addr, g.access, g.timeout_ms),
            (v4(1, 22, 0).addr, tcp(22), 60_000)
        );
        assert!(g.expires_ms <= 60_000 && g.expires_ms > 55_000, "{g:?}");

        // Installing again (a daemon restart) keeps the grant.
        nft.install(&compat_spec(), &[]).unwrap();
        assert_eq!(nft.list().unwrap().len(), 1);

        // A re-knock with a short timeout, then with a long one: no EEXIST, and the timer
        // follows the latest timeout (kernels ≥ 6.12 restart it when EXPIRATION is sent).
        nft.upsert(&[v4(1, 22, 5_000)]).unwrap();
        let g = nft.list().unwrap()[0];
        assert_eq!(g.timeout_ms, 5_000);
        assert!(g.expires_ms <= 5_000, "{g:?}");
        std::thread::sleep(std::time::Duration::from_millis(1200));
        nft.upsert(&[v4(1, 22, 5_000)]).unwrap();
        let g = nft.list().unwrap()[0];
        assert!(
            g.expires_ms > 4_500,
            "refresh did not restart the timer: {g:?}"
        );
    });
    let listed = ns.nft(&["list", "set", "inet", "nfknock", "allow_v4"]);
    assert!(
        listed.contains("198.51.100.1 . tcp . 22 timeout 5s expires"),
        "{listed}"
    );
}

#[test]
fn v6_grants_and_chunked_batches() {
    let Some(ns) = Netns::new() else { return };
    ns.run(|| {
        let mut nft = Nft::open().unwrap();
        nft.install(&compat_spec(), &[]).unwrap();
        let a6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x42));
        let mut many: Vec<Element> = (0..3000u32)
            .map(|i| Element {
                addr: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
                access: tcp(22),
                timeout_ms: 60_000,
                nat: None,
                gateway: None,
            })
            .collect();
        many.push(Element {
            addr: a6,
            access: Access {
                proto: Proto::Udp,
                port: 53,
            },
            timeout_ms: 30_000,
            nat: None,
            gateway: None,
        });
        nft.upsert(&many).unwrap();
        let live = nft.list().unwrap();
        assert_eq!(live.len(), 3001);
        let g = live.iter().find(|g| g.addr == a6).unwrap();
        assert_eq!(
            (g.access, g.timeout_ms),
            (
                Access {
                    proto: Proto::Udp,
                    port: 53
                },
                30_000
            )
        );
    });
    let listed = ns.nft(&["list", "set", "inet", "nfknock", "allow_v6"]);
    assert!(
        listed.contains("2001:db8::42 . udp . 53 timeout 30s"),
        "{listed}"
    );
}

/// A revocation removes exactly the named grants, of both families, in the kernel; a grant
/// that is already gone (expired, deleted by an admin, or the whole table flushed) is skipped,
/// not an error that would keep the others.
#[test]
fn delete_removes_only_the_named_grants_and_skips_absent_ones() {
    let Some(ns) = Netns::new() else { return };
    ns.run(|| {
        let mut nft = Nft::open().unwrap();
        nft.install(&compat_spec(), &[]).unwrap();
        let a6 = Element {
            addr: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
            access: tcp(22),
            timeout_ms: 60_000,
            nat: None,
            gateway: None,
        };
        nft.upsert(&[
            v4(1, 22, 60_000),
            v4(2, 22, 60_000),
            v4(1, 2222, 60_000),
            a6,
        ])
        .unwrap();
        nft.delete(&[v4(1, 22, 60_000), a6, v4(9, 22, 60_000)])
            .unwrap();
        let mut left: Vec<(IpAddr, Access)> = nft
            .list()
            .unwrap()
            .iter()
            .map(|g| (g.addr, g.access))
            .collect();
        left.sort();
        assert_eq!(
            left,
            [(v4(1, 0, 0).addr, tcp(2222)), (v4(2, 0, 0).addr, tcp(22))]
        );
        nft.delete(&[]).unwrap();
        nft.remove_table().unwrap();
        nft.delete(&[v4(2, 22, 60_000)])
            .expect("revoking from a flushed table is no error");
    });
}

#[test]
fn flush_ruleset_is_noticed_and_restored() {
    let Some(ns) = Netns::new() else { return };
    let (mut nft, mut events) = ns.run(|| {
        let nft = Nft::open().unwrap();
        let events = NftEvents::open(&[nft.portid()]).unwrap();
        (nft, events)
    });
    // Sockets keep the namespace they were opened in: the rest may run on this thread.
    nft.install(&compat_spec(), &[]).unwrap();
    nft.upsert(&[v4(1, 22, 60_000)]).unwrap();
    nft.install(&compat_spec(), &[]).unwrap();
    assert!(
        !events.drain().unwrap(),
        "our own install and grants are not a flush"
    );

    ns.nft(&["flush", "ruleset"]);
    assert!(events.drain().unwrap(), "flush ruleset must be noticed");
    assert!(!events.drain().unwrap(), "drained");
    assert!(!nft.table_exists().unwrap());
    assert!(matches!(nft.list(), Err(NftError::NotFound { .. })));
    let err = nft.upsert(&[v4(1, 22, 1_000)]).unwrap_err().to_string();
    assert!(err.contains("load nft/nfknock.nft"), "{err}");

    // The daemon re-creates the table with its live grants, in one batch.
    nft.install(&compat_spec(), &[v4(1, 22, 40_000), v4(2, 2222, 50_000)])
        .unwrap();
    let mut live = nft.list().unwrap();
    live.sort_by_key(|g| g.timeout_ms);
    assert_eq!(live.len(), 2);
    assert_eq!((live[0].access, live[0].timeout_ms), (tcp(22), 40_000));
    assert_eq!((live[1].access, live[1].timeout_ms), (tcp(2222), 50_000));
    assert!(!events.drain().unwrap());

    ns.nft(&[
        "delete",
        "rule",
        "inet",
        "nfknock",
        "gate_input",
        "handle",
        &rule_handle(&ns),
    ]);
    assert!(events.drain().unwrap(), "a deleted rule must be noticed");
    ns.nft(&["delete", "table", "inet", "nfknock"]);
    assert!(events.drain().unwrap(), "a deleted table must be noticed");
    // Someone else's table is none of our business.
    ns.nft(&["add", "table", "inet", "other"]);
    ns.nft(&["delete", "table", "inet", "other"]);
    assert!(!events.drain().unwrap());
}

/// The watcher ignores the changes of exactly the sockets it is told about: another nftables
/// socket of this same process is someone else, whose removal of our table must be noticed.
#[test]
fn events_ignore_only_the_sockets_they_are_given() {
    let Some(ns) = Netns::new() else { return };
    ns.run(|| {
        let mut ours = Nft::open().unwrap();
        let mut other = Nft::open().unwrap();
        let mut events = NftEvents::open(&[ours.portid()]).unwrap();
        ours.install(&compat_spec(), &[]).unwrap();
        ours.install(&compat_spec(), &[]).unwrap();
        assert!(!events.drain().unwrap(), "our own reinstall is not a flush");
        other.remove_table().unwrap();
        assert!(
            events.drain().unwrap(),
            "another socket of this process deleted the table: not noticed"
        );
        // Told that `other` is ours too, its changes are no longer someone else's.
        events.set_own(&[ours.portid(), other.portid()]).unwrap();
        other.install(&compat_spec(), &[]).unwrap();
        other.remove_table().unwrap();
        assert!(!events.drain().unwrap());
        ours.install(&compat_spec(), &[]).unwrap();
        assert!(!events.drain().unwrap());
        // And with nobody ours, even our own reinstall is someone else's.
        events.set_own(&[]).unwrap();
        ours.install(&compat_spec(), &[]).unwrap();
        assert!(events.drain().unwrap());
    });
}

fn rule_handle(ns: &Netns) -> String {
    let out = ns.nft(&["-a", "list", "chain", "inet", "nfknock", "gate_input"]);
    let line = out.lines().find(|l| l.contains("@allow_v4")).unwrap();
    line.rsplit("handle ").next().unwrap().trim().to_string()
}

#[test]
fn incompatible_set_and_remove_table() {
    let Some(ns) = Netns::new() else { return };
    ns.nft(&["add", "table", "inet", "nfknock"]);
    ns.nft(&[
        "add",
        "set",
        "inet",
        "nfknock",
        "allow_v4",
        "{ type ipv4_addr; }",
    ]);
    ns.run(|| {
        let mut nft = Nft::open().unwrap();
        let err = nft.install(&compat_spec(), &[]).unwrap_err();
        assert!(
            matches!(
                err,
                NftError::Incompatible {
                    object: Object::Set(SET_ALLOW_V4)
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("nft delete table inet nfknock"),
            "{err}"
        );
        nft.remove_table().unwrap();
        nft.remove_table().unwrap(); // absent already: fine
        assert!(!nft.table_exists().unwrap());
        // The forward gate off: an existing forward chain goes away.
        nft.install(&compat_spec(), &[]).unwrap();
        nft.install(
            &RulesetSpec {
                gate_forward: false,
                rate_limit: 0,
                ..compat_spec()
            },
            &[],
        )
        .unwrap();
    });
    let listed = ns.nft(&["list", "table", "inet", "nfknock"]);
    assert!(
        !listed.contains(CHAIN_FORWARD) && !listed.contains("limit rate"),
        "{listed}"
    );
}

/// Knock sources on `lo` of `ns` (plus `SRV_V4`/`SRV_V6` to knock to), and a probe table whose
/// input chain (before `gate_input`) counts, per source, the knocks that got through the
/// `knock` chain: what the rate limit let pass on to the queue.
fn knock_lab(ns: &Netns, sources: &[&str]) {
    let ip = |args: &[&str]| {
        let ok = Command::new("ip")
            .args(["-n", &ns.name])
            .args(args)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "ip {args:?}");
    };
    ip(&["link", "set", "lo", "up"]);
    for a in [SRV_V4, SRV_V6].iter().chain(sources) {
        let plen = if a.contains(':') { "128" } else { "32" };
        ip(&["addr", "add", &format!("{a}/{plen}"), "dev", "lo"]);
    }
    let rules: String = sources
        .iter()
        .map(|a| {
            let fam = if a.contains(':') { "ip6" } else { "ip" };
            format!("\t\t{fam} saddr {a} udp dport 62201 counter\n")
        })
        .collect();
    let probe = format!(
        "table inet probe {{\n\tchain c {{\n\t\ttype filter hook input priority -100; policy accept;\n{rules}\t}}\n}}\n"
    );
    let path = std::env::temp_dir().join(format!("{}.nft", ns.name));
    std::fs::write(&path, probe).unwrap();
    ns.nft(&["-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(path);
}

const SRV_V4: &str = "10.99.0.1";
const SRV_V6: &str = "fd99::1";

/// Send `n` native-length knocks (128 bytes of junk) from `src` to the knock port, over `lo`:
/// local traffic crosses prerouting like any other.
fn send_knocks(ns: &Netns, src: &str, n: usize) {
    let src: IpAddr = src.parse().unwrap();
    ns.run(move || {
        let to: IpAddr = if src.is_ipv6() { SRV_V6 } else { SRV_V4 }.parse().unwrap();
        let s = std::net::UdpSocket::bind((src, 0)).unwrap();
        for _ in 0..n {
            s.send_to(&[0u8; 128], (to, 62201)).unwrap();
        }
    });
}

/// Knocks per source that passed the `knock` chain (the probe table's counters).
fn passed(ns: &Netns) -> std::collections::HashMap<String, u64> {
    let listed = ns.nft(&["list", "chain", "inet", "probe", "c"]);
    listed
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let at = |key: &str| w.iter().position(|x| *x == key).and_then(|i| w.get(i + 1));
            Some((at("saddr")?.to_string(), at("packets")?.parse().ok()?))
        })
        .collect()
}

/// Issue item 7: when a knock rate set is full, a source that has no element in it is dropped
/// (fail closed), not let through unlimited. The kernel's `nft_dynset_eval` cannot add the
/// element, so the dynset expression breaks and the rate rule does not match; the rule after
/// it drops every source the set does not hold. Elements expire, so a full set drains and the
/// new source gets its turn.
#[test]
fn full_knock_rate_set_drops_new_sources_instead_of_letting_them_through() {
    let Some(ns) = Netns::new() else { return };
    // Three sources per family, each its own meter key (/32, and three different /64s).
    let v4 = ["10.99.0.2", "10.99.0.3", "10.99.0.4"];
    let v6 = ["fd99:0:0:1::2", "fd99:0:0:2::2", "fd99:0:0:3::2"];
    knock_lab(&ns, &[&v4[..], &v6[..]].concat());
    // The packets carry no valid key hint: measure the rate rules alone.
    let spec = RulesetSpec {
        prefilter: false,
        ..compat_spec()
    };
    ns.run(move || Nft::open().unwrap().install(&spec, &[]).unwrap());
    // Shrink the installed sets to 2 elements with a 2 s timeout (the kernel applies a new
    // `size` and `timeout` to an existing set of the same type and flags).
    for (set, ty) in [
        (SET_KNOCK_RATE_V4, "ipv4_addr"),
        (SET_KNOCK_RATE_V6, "ipv6_addr"),
    ] {
        ns.nft(&[
            "add",
            "set",
            "inet",
            "nfknock",
            set,
            &format!("{{ type {ty}; size 2; flags dynamic,timeout; timeout 2s; }}"),
        ]);
        let listed = ns.nft(&["list", "set", "inet", "nfknock", set]);
        assert!(
            listed.contains("size 2") && listed.contains("timeout 2s"),
            "the test needs tiny sets:\n{listed}"
        );
    }

    for src in v4.iter().chain(&v6) {
        send_knocks(&ns, src, 3);
    }
    let got = passed(&ns);
    let listed = ns.nft(&["list", "table", "inet", "nfknock"]);
    for fam in [&v4, &v6] {
        // The first two sources fill the set and stay under the rate: all their knocks pass.
        assert_eq!(got[fam[0]], 3, "{got:?}\n{listed}");
        assert_eq!(got[fam[1]], 3, "{got:?}\n{listed}");
        // The third finds the set full: every knock is dropped, none reaches the queue.
        assert_eq!(
            got[fam[2]], 0,
            "a source the full rate set cannot hold went through unlimited: {got:?}\n{listed}"
        );
    }
    // Once the elements expire (2 s) and the set's garbage collector frees them, the third
    // source is metered and passes like the others.
    let t = std::time::Instant::now();
    while [SET_KNOCK_RATE_V4, SET_KNOCK_RATE_V6].iter().any(|set| {
        ns.nft(&["list", "set", "inet", "nfknock", set])
            .contains("elements")
    }) {
        assert!(t.elapsed().as_secs() < 15, "the full sets never drained");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // A listing already hides expired elements; they count against `size` until the garbage
    // collector (every second by default, `nft_set_gc_interval`) frees them.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    for src in [v4[2], v6[2]] {
        send_knocks(&ns, src, 3);
    }
    let got = passed(&ns);
    assert_eq!(
        (got[v4[2]], got[v6[2]]),
        (3, 3),
        "the full set did not drain: {got:?}"
    );
}

/// Issue item 7: IPv6 sources are metered per /64 (`rate_limit_v6_prefix`, default 64), so a
/// host cannot escape the limit by sending from many addresses of its /64; another /64 has
/// its own budget.
#[test]
fn knock_rate_is_metered_per_ipv6_slash_64() {
    let Some(ns) = Netns::new() else { return };
    let same64 = [
        "fd99:0:0:1::a",
        "fd99:0:0:1::b",
        "fd99:0:0:1::c",
        "fd99:0:0:1::d",
    ];
    let other64 = "fd99:0:0:2::a";
    knock_lab(&ns, &[&same64[..], &[other64]].concat());
    // The packets carry no valid key hint: measure the rate rules alone.
    let spec = RulesetSpec {
        prefilter: false,
        ..compat_spec()
    };
    ns.run(move || Nft::open().unwrap().install(&spec, &[]).unwrap());

    // 4 × 30 knocks from one /64 at once: the /64 shares one bucket of 40 (+20/s), where
    // per-address buckets would let all 120 through.
    let t = std::time::Instant::now();
    for src in same64 {
        send_knocks(&ns, src, 30);
    }
    let took = t.elapsed();
    send_knocks(&ns, other64, 3);
    let got = passed(&ns);
    let from64: u64 = same64.iter().map(|a| got[*a]).sum();
    let allowed = 40 + (20.0 * took.as_secs_f64()).ceil() as u64;
    let listed = ns.nft(&["list", "set", "inet", "nfknock", SET_KNOCK_RATE_V6]);
    assert!(
        from64 <= allowed,
        "{from64} of 120 knocks from one /64 passed in {took:?} (limit allows {allowed}): {got:?}\n{listed}"
    );
    assert!(from64 >= 40, "the burst must pass: {got:?}");
    assert_eq!(got[other64], 3, "another /64 has its own budget: {got:?}");
    // One element per /64, keyed by the network address.
    assert!(listed.contains("fd99:0:0:1:: limit rate"), "{listed}");
    assert!(listed.contains("fd99:0:0:2:: limit rate"), "{listed}");
    assert!(!listed.contains("fd99:0:0:1::a"), "{listed}");
}

/// Median time of one single-grant `upsert`, in a namespace. Run with
/// `cargo test --lib upsert_latency -- --ignored --nocapture`.
#[test]
#[ignore]
fn upsert_latency() {
    let Some(ns) = Netns::new() else { return };
    ns.run(|| {
        let mut nft = Nft::open().unwrap();
        nft.install(&compat_spec(), &[]).unwrap();
        let mut times = Vec::with_capacity(1000);
        for i in 0..1000u32 {
            let e = Element {
                addr: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i % 50))),
                access: tcp(22),
                timeout_ms: 60_000,
                nat: None,
                gateway: None,
            };
            let t = std::time::Instant::now();
            nft.upsert(&[e]).unwrap();
            times.push(t.elapsed());
        }
        times.sort();
        eprintln!(
            "upsert of one grant: median {:?}, p90 {:?}, p99 {:?}",
            times[500], times[900], times[990]
        );
    });
}

// ---- the prefilter (issue 11) ----

fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

/// Nested, adjacent and single-address sources merge into the intervals nft would list; the
/// elements are what nft 1.0.6 sends (a leading end at 0, an end after each range but the one
/// that runs to the last address).
#[test]
fn fwknop_sources_become_merged_intervals() {
    let n = nets(&[
        "10.1.0.0/16",
        "10.0.0.0/8",
        "192.0.2.2/32",
        "192.0.2.1/32",
        "192.0.2.9/32",
        "2001:db8::/32",
    ]);
    let v4 = |a: &str| u128::from(u32::from(a.parse::<Ipv4Addr>().unwrap()));
    assert_eq!(
        prefilter::merged_ranges(&n, false),
        [
            (v4("10.0.0.0"), v4("10.255.255.255")),
            (v4("192.0.2.1"), v4("192.0.2.2")),
            (v4("192.0.2.9"), v4("192.0.2.9"))
        ]
    );
    assert_eq!(
        interval_elements(&n, false),
        [
            (0, true),
            (v4("10.0.0.0"), false),
            (v4("11.0.0.0"), true),
            (v4("192.0.2.1"), false),
            (v4("192.0.2.3"), true),
            (v4("192.0.2.9"), false),
            (v4("192.0.2.10"), true)
        ]
    );
    assert_eq!(
        prefilter::intervals_text(&n, false),
        ["10.0.0.0/8", "192.0.2.1-192.0.2.2", "192.0.2.9"]
    );
    assert_eq!(prefilter::intervals_text(&n, true), ["2001:db8::/32"]);
    let all = nets(&["0.0.0.0/0", "::/0"]);
    assert_eq!(interval_elements(&all, false), [(0, false)]);
    assert_eq!(interval_elements(&all, true), [(0, false)]);
    assert_eq!(prefilter::intervals_text(&all, true), ["::/0"]);
    assert!(interval_elements(&nets(&["::/0"]), false).is_empty());
}

/// The junk rules in netlink: the hint is the 8 bytes at transport offset 9 (nft's
/// `@th,72,64`), looked up inverted in `knock_hints`, counted, dropped; the fwknop rule looks
/// the source up inverted in the family's interval set. No root needed.
#[test]
fn prefilter_rules_load_the_hint_and_the_source() {
    let mut nft = Nft::open().unwrap();
    nft.batch_start();
    rules::add_all(&mut nft, &RulesetSpec::default());
    let bytes = nft.batch.bytes().to_vec();
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    // payload: dreg 1, base transport (2), offset 9, len 8
    let mut hint_load = Vec::new();
    for (ty, v) in [(1u16, 1u32), (2, 2), (3, 9), (4, 8)] {
        hint_load.extend_from_slice(&8u16.to_ne_bytes());
        hint_load.extend_from_slice(&ty.to_ne_bytes());
        hint_load.extend_from_slice(&v.to_be_bytes());
    }
    assert!(has(&hint_load), "no @th,72,64 load");
    for name in [
        SET_KNOCK_HINTS,
        SET_FWKNOP_SRC_V4,
        SET_FWKNOP_SRC_V6,
        COUNTER_JUNK_NATIVE,
        COUNTER_JUNK_FWKNOP,
    ] {
        assert!(has(name.as_bytes()), "{name} not referenced");
    }
    let off = RulesetSpec {
        prefilter: false,
        ..RulesetSpec::default()
    };
    nft.batch_start();
    rules::add_all(&mut nft, &off);
    let bytes = nft.batch.bytes().to_vec();
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(!has(SET_KNOCK_HINTS.as_bytes()) && !has(b"objref"));
}

/// In the kernel: fwknop sources of every shape list as rendered; hints written, replaced and
/// counted; the junk counters read back.
#[test]
fn prefilter_sets_list_like_render_and_hints_are_replaced() {
    let Some(ns) = Netns::new() else { return };
    let spec = RulesetSpec {
        fwknop_sources: nets(&[
            "10.0.0.0/8",
            "10.1.0.0/16",
            "192.0.2.1/32",
            "192.0.2.2/32",
            "2001:db8::/32",
        ]),
        ..compat_spec()
    };
    let s = spec.clone();
    let (first, second) = ns.run(move || {
        let mut nft = Nft::open().unwrap();
        nft.install(&s, &[]).unwrap();
        let hints: Vec<HintElement> = (1..=300u64).map(|i| (i.to_be_bytes(), 60_000)).collect();
        nft.write_hints(&hints, true).unwrap();
        nft.write_hints(&[(301u64.to_be_bytes(), 60_000)], false)
            .unwrap();
        let first = nft.prefilter_stats().unwrap();
        nft.write_hints(&hints[..5], true).unwrap();
        // A re-install (reload with the same sources) keeps the hints.
        nft.install(&s, &[]).unwrap();
        (first, nft.prefilter_stats().unwrap())
    });
    assert_eq!(first.hints, 301);
    assert_eq!((first.junk_native, first.junk_fwknop), ((0, 0), (0, 0)));
    assert_eq!(second.hints, 5);
    let listed = ns.nft(&["list", "table", "inet", "nfknock"]);
    let without_hints: Vec<String> = normalized(&listed)
        .into_iter()
        .filter(|l| !(l.starts_with("elements = { 0x") || l.starts_with("0x")))
        .collect();
    assert_eq!(
        without_hints,
        normalized(&render(&spec)),
        "nft lists:\n{listed}"
    );
    assert!(listed.contains("elements = { 10.0.0.0/8, 192.0.2.1-192.0.2.2 }"));
    assert!(listed.contains("0x1 timeout 1m expires"), "{listed}");
}

/// Issue 10 §1: with `nat`, the table gains the NAT maps (element timeouts), the DNAT chain
/// and the SNAT/masquerade chain, and `nft list` prints them as [`render`] writes them; a NAT
/// grant writes its allow element, its DNAT map element and its masquerade element in one
/// batch, `list` reads the target back, and a revocation removes all of them. Without `nat`
/// again, the NAT chains and maps go.
#[test]
fn nat_install_lists_like_render_and_grants_carry_their_translation() {
    let Some(ns) = Netns::new() else { return };
    let spec = RulesetSpec {
        nat: true,
        forward_targets: vec![
            ("192.168.10.5".parse().unwrap(), tcp(80)),
            ("fd10::5".parse().unwrap(), tcp(80)),
        ],
        ..compat_spec()
    };
    let s = spec.clone();
    // A routed grant (`dnat = false`): no allow element, a `forward_v4` one.
    let routed = Element {
        nat: Some(NatTarget {
            to: "192.168.10.5:80".parse().unwrap(),
            source: crate::access::SourceNat::Keep,
            dnat: false,
        }),
        ..v4(8, 80, 30_000)
    };
    let nat = |to: &str, source| {
        Some(NatTarget {
            to: to.parse().unwrap(),
            source,
            dnat: true,
        })
    };
    let g4 = Element {
        nat: nat("192.168.10.2:22", crate::access::SourceNat::Masquerade),
        ..v4(7, 2222, 30_000)
    };
    let g6 = Element {
        addr: "2001:db8::7".parse().unwrap(),
        access: tcp(2222),
        timeout_ms: 30_000,
        nat: nat(
            "[fd10::2]:22",
            crate::access::SourceNat::To("fd10::1".parse().unwrap()),
        ),
        gateway: None,
    };
    let live = ns.run(move || {
        let mut nft = Nft::open().unwrap();
        nft.install(&s, &[]).unwrap();
        nft.upsert(&[g4, g6, routed]).unwrap();
        nft.list().unwrap()
    });
    let listed = ns.nft(&["list", "table", "inet", "nfknock"]);
    let bare: String = {
        // The elements aside, the table is what render says.
        let mut out = String::new();
        for l in listed.lines().filter(|l| !l.contains(" expires ")) {
            out.push_str(l);
            out.push('\n');
        }
        out
    };
    assert_eq!(
        normalized(&bare),
        normalized(&render(&spec)),
        "nft lists:\n{listed}"
    );
    assert!(
        listed.contains("198.51.100.7 . tcp . 2222 timeout 30s expires"),
        "{listed}"
    );
    assert!(listed.contains(": 192.168.10.2 . 22"), "{listed}");
    assert!(listed.contains(": fd10::2 . 22"), "{listed}");
    assert!(listed.contains(": fd10::1"), "{listed}");
    let masq = listed.split("set masquerade_v4").nth(1).unwrap();
    assert!(
        masq.contains("198.51.100.7 . tcp . 2222 timeout 30s"),
        "masquerade element keyed like the grant (the port connected to): {listed}"
    );
    let fwd = listed.split("set forward_v4").nth(1).unwrap();
    assert!(
        fwd.contains("198.51.100.8 . 192.168.10.5 . tcp . 80 timeout 30s"),
        "{listed}"
    );
    let allow = listed.split("set allow_v4").nth(1).unwrap();
    let allow = allow.split('}').next().unwrap();
    assert!(
        !allow.contains("198.51.100.8"),
        "a routed grant opened a local port: {listed}"
    );
    let mut back: Vec<_> = live
        .iter()
        .map(|e| (e.addr, e.access, e.nat.map(|n| (n.to, n.dnat))))
        .collect();
    back.sort();
    assert_eq!(
        back,
        [
            (
                g4.addr,
                tcp(2222),
                Some(("192.168.10.2:22".parse().unwrap(), true))
            ),
            (
                routed.addr,
                tcp(80),
                Some(("192.168.10.5:80".parse().unwrap(), false))
            ),
            (
                g6.addr,
                tcp(2222),
                Some(("[fd10::2]:22".parse().unwrap(), true))
            ),
        ]
    );
    let s = spec.clone();
    ns.run(move || {
        let mut nft = Nft::open().unwrap();
        nft.delete(&[g4, g6, routed]).unwrap();
        assert!(nft.list().unwrap().is_empty());
        // A restore with NAT grants after a flush re-creates the translations too.
        nft.remove_table().unwrap();
        nft.install(&s, &[g4]).unwrap();
    });
    let listed = ns.nft(&["list", "map", "inet", "nfknock", MAP_NAT_V4]);
    assert!(listed.contains(": 192.168.10.2 . 22"), "{listed}");
    ns.run(move || {
        let mut nft = Nft::open().unwrap();
        nft.install(&compat_spec(), &[g4]).unwrap();
    });
    let listed = ns.nft(&["list", "table", "inet", "nfknock"]);
    assert!(
        !listed.contains("nat_") && !listed.contains("masquerade") && !listed.contains("snat"),
        "NAT objects removed: {listed}"
    );
}

/// Issue 10 §1 (`FORWARD_ALL`): with gateway networks, the table holds the gateway sets, the
/// forward gate that closes those networks and the masquerade rule, and `nft list` prints them
/// as [`render`] writes them; a gateway grant is one `source . network` element with the
/// grant's timeout (also in the masquerade set when masqueraded), opens no port of this host,
/// is revoked and restored like a grant; without gateway networks the sets go.
#[test]
fn gateway_install_lists_like_render_and_grants_are_source_network_ranges() {
    let Some(ns) = Netns::new() else { return };
    let spec = RulesetSpec {
        nat: true,
        gateway_nets: vec![
            "10.80.0.0/24".parse().unwrap(),
            "10.90.0.0/16".parse().unwrap(),
            "fd80::/64".parse().unwrap(),
        ],
        ..compat_spec()
    };
    let gw = |net: &str, source| {
        Some(crate::access::GatewayTo {
            net: net.parse().unwrap(),
            source,
        })
    };
    let g4 = Element {
        gateway: gw("10.80.0.0/24", crate::access::SourceNat::Masquerade),
        ..v4(7, 22, 30_000)
    };
    let snat = Element {
        gateway: gw(
            "10.90.0.0/16",
            crate::access::SourceNat::To("10.90.0.1".parse().unwrap()),
        ),
        ..v4(9, 22, 30_000)
    };
    let g6 = Element {
        gateway: gw("fd80::/64", crate::access::SourceNat::Keep),
        addr: "2001:db8::7".parse().unwrap(),
        access: tcp(22),
        timeout_ms: 30_000,
        nat: None,
    };
    let s = spec.clone();
    let live = ns.run(move || {
        let mut nft = Nft::open().unwrap();
        nft.install(&s, &[]).unwrap();
        nft.upsert(&[g4, g6, snat]).unwrap();
        nft.list().unwrap()
    });
    // `list` reads them back with their network and the access of the knock (the comment).
    let mut back: Vec<_> = live
        .iter()
        .map(|e| {
            (
                e.addr,
                e.access,
                e.gateway.map(|g| g.net.to_string()),
                e.timeout_ms,
            )
        })
        .collect();
    back.sort();
    assert_eq!(
        back,
        [
            (g4.addr, tcp(22), Some("10.80.0.0/24".into()), 30_000),
            (snat.addr, tcp(22), Some("10.90.0.0/16".into()), 30_000),
            (g6.addr, tcp(22), Some("fd80::/64".into()), 30_000),
        ]
    );
    let listed = ns.nft(&["list", "table", "inet", "nfknock"]);
    let bare: String = listed
        .lines()
        .filter(|l| !l.contains(" expires "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        normalized(&bare),
        normalized(&render(&spec)),
        "nft lists:\n{listed}"
    );
    let set = |name: &str| {
        let rest = listed.split(&format!("set {name} {{")).nth(1).unwrap();
        rest.split('}').next().unwrap().to_string()
    };
    assert!(
        set(SET_GATEWAY_V4).contains("198.51.100.7 . 10.80.0.0/24 timeout 30s expires")
            && set(SET_GATEWAY_V4).contains("comment \"tcp/22\""),
        "{listed}"
    );
    assert!(
        set(SET_GATEWAY_V6).contains("2001:db8::7 . fd80::/64 timeout 30s expires"),
        "{listed}"
    );
    assert!(
        set(SET_GATEWAY_MASQUERADE_V4).contains("198.51.100.7 . 10.80.0.0/24 timeout 30s"),
        "{listed}"
    );
    let map = listed
        .split(&format!("map {MAP_GATEWAY_SNAT_V4} {{"))
        .nth(1)
        .unwrap();
    assert!(
        map.contains("198.51.100.9 . 10.90.0.0/16 timeout 30s expires")
            && map.contains(": 10.90.0.1"),
        "{listed}"
    );
    assert!(
        !set(SET_GATEWAY_MASQUERADE_V6).contains("2001:db8::7"),
        "not masqueraded: {listed}"
    );
    assert!(
        !set(SET_ALLOW_V4).contains("198.51.100.7") && !set(SET_ALLOW_V6).contains("2001:db8::7"),
        "a gateway grant opened a port of this host: {listed}"
    );
    // Revoked: gone; restored after a flush: back with its time.
    let s = spec.clone();
    ns.run(move || {
        let mut nft = Nft::open().unwrap();
        nft.delete(&[g4, g6, snat]).unwrap();
    });
    let listed = ns.nft(&["list", "set", "inet", "nfknock", SET_GATEWAY_V4]);
    assert!(!listed.contains("198.51.100.7"), "{listed}");
    ns.run(move || {
        let mut nft = Nft::open().unwrap();
        nft.remove_table().unwrap();
        nft.install(&s, &[g4]).unwrap();
    });
    let listed = ns.nft(&["list", "set", "inet", "nfknock", SET_GATEWAY_V4]);
    assert!(
        listed.contains("198.51.100.7 . 10.80.0.0/24 timeout 30s expires"),
        "{listed}"
    );
    // Without `gateway` in the config, its sets and rules go, and the restore drops the grant.
    ns.run(move || {
        let mut nft = Nft::open().unwrap();
        nft.install(&compat_spec(), &[g4]).unwrap();
    });
    let listed = ns.nft(&["list", "table", "inet", "nfknock"]);
    assert!(
        !listed.contains("gateway"),
        "gateway objects removed: {listed}"
    );
}
