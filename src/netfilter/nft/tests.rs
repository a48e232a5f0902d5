//! Tests of the nftables shell. The ones that need the kernel run as root in a private network
//! namespace each (entered with `setns` from a thread of their own) and are skipped otherwise.

use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

fn tcp(port: u16) -> Access {
    Access { proto: Proto::Tcp, port }
}

// ---- no root ----

#[test]
fn element_key_bytes() {
    let (k, n) = element_key(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), tcp(22));
    assert_eq!(&k[..n], &[192, 0, 2, 7, 6, 0, 0, 0, 0, 22, 0, 0]);
    let (k, n) = element_key(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)), Access { proto: Proto::Udp, port: 0x1234 });
    assert_eq!(n, 24);
    assert_eq!(&k[..16], &Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets());
    assert_eq!(&k[16..24], &[17, 0, 0, 0, 0x12, 0x34, 0, 0]);
    assert_eq!(decode_key(&k[..n], true), Some((IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)), Access { proto: Proto::Udp, port: 0x1234 })));
    assert_eq!(protected_key(tcp(443)), [6, 0, 0, 0, 0x01, 0xbb, 0, 0]);
    assert_eq!(decode_key(&[1, 2, 3], false), None);
    assert_eq!(decode_key(&[1, 2, 3, 4, 1, 0, 0, 0, 0, 22, 0, 0], false), None, "icmp is not ours");
}

/// The upsert message: NEWSETELEM with CREATE and without EXCL, TIMEOUT and EXPIRATION both
/// equal to the grant's timeout, inside a batch. (Opening a netfilter netlink socket needs no
/// privilege; nothing is sent.)
#[test]
fn upsert_message_bytes() {
    let mut nft = Nft::open().unwrap();
    nft.batch_start();
    let e = Element { addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), access: tcp(22), timeout_ms: 30_000 };
    nft.add_grants(&[e], false);
    nft.add_grants(&[e], true); // no v6 element: no message
    let msgs: Vec<_> = messages(&nft.msg.buf).collect();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].ty, NFNL_MSG_BATCH_BEGIN);
    let m = &msgs[1];
    assert_eq!(m.ty, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM);
    assert_eq!(m.flags & NLM_F_CREATE, NLM_F_CREATE);
    assert_eq!(m.flags & NLM_F_EXCL, 0, "a re-knock must not fail with EEXIST");
    let (fam, body) = nfgen(m.payload).unwrap();
    assert_eq!(fam, NFPROTO_INET);
    assert_eq!(str_attr(attr(body, NFTA_SET_ELEM_LIST_TABLE).unwrap()), b"nfknock");
    assert_eq!(str_attr(attr(body, NFTA_SET_ELEM_LIST_SET).unwrap()), b"allow_v4");
    let elems: Vec<_> = attrs(attr(body, NFTA_SET_ELEM_LIST_ELEMENTS).unwrap()).collect();
    assert_eq!(elems.len(), 1);
    let el = elems[0].1;
    let key = attr(attr(el, NFTA_SET_ELEM_KEY).unwrap(), NFTA_DATA_VALUE).unwrap();
    assert_eq!(key, &[10, 0, 0, 1, 6, 0, 0, 0, 0, 22, 0, 0]);
    assert_eq!(attr(el, NFTA_SET_ELEM_TIMEOUT).and_then(be_u64), Some(30_000));
    assert_eq!(attr(el, NFTA_SET_ELEM_EXPIRATION).and_then(be_u64), Some(30_000));
}

#[test]
fn zero_timeout_is_refused() {
    let mut nft = Nft::open().unwrap();
    let e = Element { addr: IpAddr::V4(Ipv4Addr::LOCALHOST), access: tcp(22), timeout_ms: 0 };
    assert!(matches!(nft.upsert(&[e]), Err(NftError::ZeroTimeout { .. })));
}

/// Lines of nft text without comments, indentation and blank lines.
fn normalized(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

/// `nft/nfknock.nft` is `render(default spec)` plus comments: the two can never drift.
#[test]
fn shipped_file_is_render_of_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/nft/nfknock.nft");
    let shipped = std::fs::read_to_string(path).unwrap();
    assert_eq!(normalized(&shipped), normalized(&render(&RulesetSpec::default())));
}

#[test]
fn render_follows_the_spec() {
    let spec = RulesetSpec {
        knock_port: 1000,
        queue: 3,
        backend: QueueBackend::Compat,
        protect: vec![tcp(22), Access { proto: Proto::Udp, port: 53 }],
        native_len: 100,
        fwknop: false,
        rate_limit: 0,
        gate_forward: false,
    };
    let text = render(&spec);
    assert!(text.contains("udp dport 1000 udp length != 108 drop\n"));
    assert!(text.contains("udp dport 1000 queue num 3\n"));
    assert!(text.contains("elements = { tcp . 22, udp . 53 }"));
    assert!(!text.contains("limit rate"));
    assert!(!text.contains(CHAIN_FORWARD));
    let def = render(&RulesetSpec::default());
    assert!(def.contains("udp length != 136 udp length != 148-1507 drop"));
    assert!(def.contains("add @knock_rate_v4 { ip saddr limit rate over 20/second burst 40 packets } drop"));
}

#[test]
fn event_filter_on_own_ports() {
    // Only the structure: load, compare against each port, keep, drop.
    let prog = own_port_filter(&[5, 6]);
    assert_eq!(prog.len(), 5);
    assert_eq!(prog[1].jt, 2);
    assert_eq!(prog[2].jt, 1);
    assert_eq!(prog[3].k, u32::MAX);
    assert_eq!(prog[4].k, 0);
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
        let name = format!("nfk-nft-{}-{}", std::process::id(), NETNS_SEQ.fetch_add(1, Ordering::SeqCst));
        let ok = Command::new("ip").args(["netns", "add", &name]).status().map(|s| s.success()).unwrap_or(false);
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
        let out = Command::new("ip").args(["netns", "exec", &self.name, "nft"]).args(args).output().unwrap();
        assert!(out.status.success(), "nft {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn compat_spec() -> RulesetSpec {
    RulesetSpec { backend: QueueBackend::Compat, ..RulesetSpec::default() }
}

fn v4(a: u8, port: u16, timeout_ms: u64) -> Element {
    Element { addr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, a)), access: tcp(port), timeout_ms }
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
    assert_eq!(normalized(&listed), normalized(&render(&compat_spec())), "nft lists:\n{listed}");
}
