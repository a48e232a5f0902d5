//! The ipset messages, byte for byte against what the `ipset` tool (7.17) sends for the same
//! command, captured with `strace -e trace=sendto -e write=3 ipset ...` (the sequence number is
//! the capture's); and the parsing of a captured LIST reply, plus bytes that must not panic.

use super::*;

/// Hex dump (whitespace ignored) → bytes.
fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const SEQ: u32 = 0x6b0d_80f2;

fn grant(addr: &str, access: &str, timeout_s: u32) -> Element {
    Element {
        addr: addr.parse().unwrap(),
        access: access.parse().unwrap(),
        timeout_s,
    }
}

/// `ipset create nfknock_allow_v4 hash:ip,port family inet timeout 300 maxelem 262144 -exist`
#[test]
fn create_is_what_ipset_create_exist_sends() {
    let mut m = MsgBuf::default();
    build_create(&mut m, SEQ, "nfknock_allow_v4", false, 7);
    assert_eq!(
        m.bytes(),
        hex("6c000000 0206 0504 f2800d6b 00000000 02000000
             0500 0100 07000000
             1500 0200 6e666b6e6f636b5f616c6c6f775f7634 00000000
             1100 0300 686173683a69702c706f7274 00000000
             0500 0400 07000000
             0500 0500 02000000
             1400 0780 0800 0640 0000012c 0800 1340 00040000")
    );
}

/// `ipset add nfknock_allow_v4 192.0.2.7,tcp:22 timeout 30 -exist`: no `NLM_F_EXCL`, so the
/// kernel refreshes an element that is there (flags 0x0005; without `-exist` the tool sends
/// 0x0205).
#[test]
fn one_add_is_what_ipset_add_exist_sends() {
    let mut m = MsgBuf::default();
    build_adt(
        &mut m,
        SEQ,
        true,
        "nfknock_allow_v4",
        &[grant("192.0.2.7", "tcp/22", 30)],
    );
    assert_eq!(
        m.bytes(),
        hex("64000000 0906 0500 f2800d6b 00000000 02000000
             0500 0100 07000000
             1500 0200 6e666b6e6f636b5f616c6c6f775f7634 00000000
             3000 0780 0c00 0180 0800 0140 c0000207
                       0600 0440 0016 0000
                       0800 0640 0000001e
                       0500 0700 06000000
                       0800 0940 00000000")
    );
}

/// `ipset add nfknock_allow_v6 2001:db8::7,udp:53 timeout 30 -exist`
#[test]
fn an_ipv6_add_is_what_ipset_sends() {
    let mut m = MsgBuf::default();
    build_adt(
        &mut m,
        0x6b0d_80f3,
        true,
        "nfknock_allow_v6",
        &[grant("2001:db8::7", "udp/53", 30)],
    );
    assert_eq!(
        m.bytes(),
        hex("70000000 0906 0500 f3800d6b 00000000 02000000
             0500 0100 07000000
             1500 0200 6e666b6e6f636b5f616c6c6f775f7636 00000000
             3c00 0780 1800 0180 1400 0240 20010db8000000000000000000000007
                       0600 0440 0035 0000
                       0800 0640 0000001e
                       0500 0700 11000000
                       0800 0940 00000000")
    );
}

/// `ipset del nfknock_allow_v4 192.0.2.7,tcp:22 -exist`: no timeout, no `NLM_F_EXCL`.
#[test]
fn one_del_is_what_ipset_del_exist_sends() {
    let mut m = MsgBuf::default();
    build_adt(
        &mut m,
        0x6b0d_80f3,
        false,
        "nfknock_allow_v4",
        &[grant("192.0.2.7", "tcp/22", 30)],
    );
    assert_eq!(
        m.bytes(),
        hex("5c000000 0a06 0500 f3800d6b 00000000 02000000
             0500 0100 07000000
             1500 0200 6e666b6e6f636b5f616c6c6f775f7634 00000000
             2800 0780 0c00 0180 0800 0140 c0000207
                       0600 0440 0016 0000
                       0500 0700 06000000
                       0800 0940 00000000")
    );
}

/// `printf 'add s 192.0.2.7,tcp:22 timeout 30\nadd s 192.0.2.8,udp:53 timeout 1\n' |
/// ipset restore -exist`: one ADD holding an `IPSET_ATTR_ADT` list, its elements numbered from
/// line 1, and a command-level LINENO (without it the kernel refuses the list with
/// IPSET_ERR_PROTOCOL, `ip_set_ad`).
#[test]
fn several_adds_are_what_ipset_restore_exist_sends() {
    let mut m = MsgBuf::default();
    let elems = [
        grant("192.0.2.7", "tcp/22", 30),
        grant("192.0.2.8", "udp/53", 1),
    ];
    build_adt(&mut m, 0x6b0d_83a1, true, "s", &elems);
    assert_eq!(
        m.bytes(),
        hex("90000000 0906 0500 a1830d6b 00000000 02000000
             0500 0100 07000000
             0600 0200 73000000
             0800 0940 00000001
             6400 0880
               3000 0780 0c00 0180 0800 0140 c0000207 0600 0440 0016 0000
                         0800 0640 0000001e 0500 0700 06000000 0800 0940 00000001
               3000 0780 0c00 0180 0800 0140 c0000208 0600 0440 0035 0000
                         0800 0640 00000001 0500 0700 11000000 0800 0940 00000002")
    );
}

/// Several elements go in one `IPSET_ATTR_ADT` list of `IPSET_ATTR_DATA`s, each with its own
/// timeout; a timeout of 0 (never expire) is never sent.
#[test]
fn several_elements_go_in_one_adt_list() {
    let mut m = MsgBuf::default();
    let elems = [
        grant("192.0.2.7", "tcp/22", 30),
        grant("192.0.2.8", "udp/53", 0),
    ];
    build_adt(&mut m, 1, true, "s", &elems);
    let msg = messages(m.bytes()).next().unwrap().unwrap();
    assert_eq!(msg.flags, NLM_F_REQUEST | NLM_F_ACK);
    let (_, body) = nfgen(msg.payload).unwrap();
    assert!(attr(body, IPSET_ATTR_DATA).is_none());
    let datas: Vec<&[u8]> = attrs(attr(body, IPSET_ATTR_ADT).unwrap())
        .filter(|(t, _)| *t == IPSET_ATTR_DATA)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(datas.len(), 2);
    let timeouts: Vec<u32> = datas
        .iter()
        .map(|d| be_u32(attr(d, IPSET_ATTR_TIMEOUT).unwrap()).unwrap())
        .collect();
    assert_eq!(timeouts, [30, 1]);
    // What the kernel would list back is what was written.
    let parsed: Vec<_> = datas.iter().filter_map(|d| parse_element(d)).collect();
    assert_eq!(
        parsed
            .iter()
            .map(|e| (e.addr, e.access))
            .collect::<Vec<_>>(),
        elems.iter().map(|e| (e.addr, e.access)).collect::<Vec<_>>()
    );
}

/// `ipset list nfknock_allow_v6` (a dump), `ipset destroy`, and the opening PROTOCOL and TYPE
/// questions; HEADER asks for an ack as well (the tool sends it without), so that a request
/// always ends with the kernel's verdict.
#[test]
fn list_destroy_protocol_type_and_header_are_what_ipset_sends() {
    let mut m = MsgBuf::default();
    build_list(&mut m, SEQ, "nfknock_allow_v6");
    assert_eq!(
        m.bytes(),
        hex(
            "34000000 0706 0503 f2800d6b 00000000 02000000 0500 0100 07000000
             1500 0200 6e666b6e6f636b5f616c6c6f775f7636 00000000"
        )
    );
    m.clear();
    build_destroy(&mut m, SEQ, "nfknock_allow_v4");
    assert_eq!(
        m.bytes(),
        hex(
            "34000000 0306 0502 f2800d6b 00000000 02000000 0500 0100 07000000
             1500 0200 6e666b6e6f636b5f616c6c6f775f7634 00000000"
        )
    );
    m.clear();
    build_protocol(&mut m, 0x6b0d_80f0);
    assert_eq!(
        m.bytes(),
        hex("1c000000 0106 0100 f0800d6b 00000000 02000000 0500 0100 07000000")
    );
    m.clear();
    build_type(&mut m, 0x6b0d_80f1, false);
    assert_eq!(
        m.bytes(),
        hex(
            "38000000 0d06 0100 f1800d6b 00000000 02000000 0500 0100 07000000
             1100 0300 686173683a69702c706f7274 00000000 0500 0500 02000000"
        )
    );
    m.clear();
    build_header(&mut m, 0x6b0d_80f2, "nfknock_allow_v6");
    assert_eq!(
        m.bytes(),
        hex(
            "34000000 0c06 0500 f2800d6b 00000000 02000000 0500 0100 07000000
             1500 0200 6e666b6e6f636b5f616c6c6f775f7636 00000000"
        )
    );
}

/// The kernel's answer to `ipset list nfknock_allow_v6` holding `2001:db8::7,udp:53 timeout 29`
/// (captured with `strace -e read=3`).
const LIST_REPLY: &str = "dc000000 0706 0200 f2800d6b c2510000 02000000 05000100 07000000
    15000200 6e666b6e6f636b5f616c6c6f775f7636 00000000
    11000300 686173683a69702c706f7274 00000000 05000500 0a000000 05000400 07000000
    0600 0b40 00010000
    4400 0780 08001240 00000400 08001340 00040000 05001500 0c000000 08001140 67ff11af
              08001940 00000000 08001a40 00000148 08001840 00000001 08000640 0000012c
    3800 0880 3400 0780 1800 0180 1400 0200 20010db8000000000000000000000007
              0600 0440 0035 0000 0500 0700 11000000 0800 0640 0000001d";

#[test]
fn a_list_reply_yields_its_header_and_elements() {
    let reply = hex(LIST_REPLY);
    let msg = messages(&reply).next().unwrap().unwrap();
    assert_eq!(msg.nfnl_msg(), IPSET_CMD_LIST);
    let (_, body) = nfgen(msg.payload).unwrap();
    assert_eq!(
        parse_header(body),
        Some(Header {
            type_name: SET_TYPE.into(),
            family: NFPROTO_IPV6,
            references: 0,
        })
    );
    let elems: Vec<_> = parse_elements(body).collect();
    assert_eq!(
        elems,
        [LiveElement {
            addr: "2001:db8::7".parse().unwrap(),
            access: "udp/53".parse().unwrap(),
            left_s: 29,
        }]
    );
}

/// Parsing never panics: every prefix of the reply, and a byte changed at every offset.
#[test]
fn parsing_never_panics_on_cut_or_changed_bytes() {
    let reply = hex(LIST_REPLY);
    for n in 0..=reply.len() {
        for m in messages(&reply[..n]).map_while(Result::ok) {
            if let Some((_, body)) = nfgen(m.payload) {
                let _ = parse_header(body);
                let _ = parse_elements(body).count();
                let _ = parse_protocol(body);
                let _ = parse_type(body);
            }
        }
    }
    for i in 0..reply.len() {
        for v in [0u8, 0xff, 0x05] {
            let mut r = reply.clone();
            r[i] = v;
            for m in messages(&r).map_while(Result::ok) {
                if let Some((_, body)) = nfgen(m.payload) {
                    let _ = parse_header(body);
                    let _ = parse_elements(body).count();
                }
            }
        }
    }
}

/// Random bytes as a reply body (a deterministic generator): no panic either.
#[test]
fn parsing_never_panics_on_random_bytes() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..20_000 {
        let len = (next() % 200) as usize;
        let mut body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Often a plausible attribute header first, so the parsers get past it.
        if len >= 4 && next() % 2 == 0 {
            body[2] = IPSET_ATTR_ADT as u8;
            body[3] = 0x80;
        }
        let _ = parse_header(&body);
        let _ = parse_elements(&body).count();
        let _ = parse_protocol(&body);
        let _ = parse_type(&body);
    }
}

/// A PROTOCOL reply (`ipset` 7.17's kernel: 7, min 6).
#[test]
fn the_protocol_reply_gives_the_version_and_its_minimum() {
    let reply =
        hex("24000000 0106 0000 f1800d6b c2510000 02000000 05000100 07000000 05000a00 06000000");
    let msg = messages(&reply).next().unwrap().unwrap();
    let (_, body) = nfgen(msg.payload).unwrap();
    assert_eq!(parse_protocol(body), Some((7, 6)));
}

#[test]
fn timeouts_round_up_to_whole_seconds_and_never_reach_zero() {
    assert_eq!(timeout_secs(Duration::from_millis(1)), 1);
    assert_eq!(timeout_secs(Duration::ZERO), 1);
    assert_eq!(timeout_secs(Duration::from_millis(30_001)), 31);
    assert_eq!(timeout_secs(Duration::from_secs(30)), 30);
    assert_eq!(timeout_secs(Duration::from_secs(u64::MAX)), MAX_TIMEOUT_S);
}

/// Errors name the set and what to do.
#[test]
fn errors_name_the_set_and_the_fix() {
    let busy = IpsetError::Busy {
        set: "nfknock_allow_v4".into(),
        references: 1,
    }
    .to_string();
    assert!(
        busy.contains("`nfknock_allow_v4` is in use by 1 iptables rule")
            && busy.contains("remove those rules first"),
        "{busy}"
    );
    let missing = Ipset::refused("add elements to", "s6", true, libc::ENOENT).to_string();
    assert!(
        missing.contains("ipset `s6`: it does not exist")
            && missing.contains("ipset create s6 hash:ip,port family inet6"),
        "{missing}"
    );
    let wrong = Ipset::refused("create", "s", false, libc::EEXIST).to_string();
    assert!(
        wrong.contains("not a hash:ip,port set of family inet"),
        "{wrong}"
    );
    let full = Ipset::refused("add elements to", "s", false, IPSET_ERR_HASH_FULL).to_string();
    assert!(full.contains("is full"), "{full}");
    let other = Ipset::refused("list", "s", false, libc::EINVAL);
    assert!(
        std::error::Error::source(&other)
            .unwrap()
            .to_string()
            .contains("Invalid argument"),
        "{other}"
    );
}
