//! Tests of the netlink layer: message bytes checked without root, and the parser held to its
//! no-panic contract (it reads what the kernel sends for the queue, nf_tables and events alike).

use super::*;

/// A datagram as the kernel would send it to us: an nf_tables element event with nested
/// attributes, an acknowledgement, an error, and `NLMSG_DONE`. Built with [`MsgBuf`], checked
/// against hand-written bytes in `attributes_are_padded_and_parse_back`.
fn real_datagram() -> Vec<u8> {
    let mut m = MsgBuf::default();
    let s = m.begin(
        nfnl_type(NFNL_SUBSYS_NFTABLES, 12),
        NLM_F_CREATE,
        7,
        NFPROTO_INET,
        0,
    );
    m.attr_str(1, "nfknock");
    m.attr_str(2, "allow_v4");
    let list = m.nest(3);
    for a in [1u8, 2] {
        let e = m.nest(1);
        let k = m.nest(1);
        m.attr(1, &[10, 0, 0, a, 6, 0, 0, 0, 0, 22, 0, 0]);
        m.nest_end(k);
        m.attr_u64(4, 30_000);
        m.attr_u64(5, 29_999);
        m.nest_end(e);
    }
    m.nest_end(list);
    m.end(s);
    let mut out = m.bytes().to_vec();
    for (seq, errno) in [(8u32, 0i32), (9, -libc::ENOENT)] {
        out.extend_from_slice(&36u32.to_ne_bytes());
        out.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        out.extend_from_slice(&0u16.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&errno.to_ne_bytes());
        out.extend_from_slice(&[0u8; 16]);
    }
    out.extend_from_slice(&20u32.to_ne_bytes());
    out.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    out.extend_from_slice(&[0u8; 14]);
    out
}

/// Everything a caller could read: every message, and every attribute read as nested too
/// (depth-limited), as the nf_tables code walks element lists. Returns how much it saw.
fn walk(datagram: &[u8]) -> usize {
    fn nested(buf: &[u8], depth: u32) -> usize {
        if depth > 6 {
            return 0;
        }
        attrs(buf)
            .map(|(t, v)| {
                let _ = (be_u32(v), be_u64(v), str_attr(v), attr(v, t));
                1 + nested(v, depth + 1)
            })
            .sum()
    }
    messages(datagram)
        .map(|m| match m {
            Ok(m) => {
                let _ = (m.subsys(), m.nfnl_msg(), nlmsgerr(m.payload));
                1 + nfgen(m.payload).map_or(0, |(_, body)| nested(body, 0))
            }
            Err(Malformed) => 1,
        })
        .sum()
}

#[test]
fn attributes_are_padded_and_parse_back() {
    let mut m = MsgBuf::default();
    let s = m.begin(
        nfnl_type(NFNL_SUBSYS_NFTABLES, 1),
        NLM_F_ACK,
        7,
        NFPROTO_INET,
        0,
    );
    m.attr_str(1, "nfknock");
    m.end(s);
    assert_eq!(m.len(), 16 + 4 + 12);
    #[rustfmt::skip]
    let want: Vec<u8> = [
        &32u32.to_ne_bytes()[..], &0x0a01u16.to_ne_bytes(), &5u16.to_ne_bytes(),
        &7u32.to_ne_bytes(), &[0; 4], &[1, 0, 0, 0],
        &12u16.to_ne_bytes(), &1u16.to_ne_bytes(), b"nfknock\0",
    ]
    .concat();
    assert_eq!(m.bytes(), want);
    let msg = messages(m.bytes()).next().unwrap().unwrap();
    assert_eq!(msg.seq, 7);
    assert_eq!(msg.flags, NLM_F_REQUEST | NLM_F_ACK);
    assert_eq!((msg.subsys(), msg.nfnl_msg()), (NFNL_SUBSYS_NFTABLES, 1));
    let (fam, body) = nfgen(msg.payload).unwrap();
    assert_eq!(fam, NFPROTO_INET);
    assert_eq!(str_attr(attr(body, 1).unwrap()), b"nfknock");
}

#[test]
fn a_real_datagram_parses_back() {
    let d = real_datagram();
    let msgs: Vec<Msg<'_>> = messages(&d).map(Result::unwrap).collect();
    assert_eq!(msgs.len(), 4);
    let (_, body) = nfgen(msgs[0].payload).unwrap();
    let elems: Vec<_> = attrs(attr(body, 3).unwrap()).collect();
    assert_eq!(elems.len(), 2);
    let key = attr(attr(elems[1].1, 1).unwrap(), 1).unwrap();
    assert_eq!(key, &[10, 0, 0, 2, 6, 0, 0, 0, 0, 22, 0, 0]);
    assert_eq!(attr(elems[1].1, 5).and_then(be_u64), Some(29_999));
    assert_eq!(
        msgs[1..]
            .iter()
            .map(|m| (m.ty, m.seq, nlmsgerr(m.payload)))
            .collect::<Vec<_>>(),
        [
            (NLMSG_ERROR, 8, Some(0)),
            (NLMSG_ERROR, 9, Some(libc::ENOENT)),
            (NLMSG_DONE, 0, Some(0)),
        ]
    );
}

/// Every prefix of a real datagram: no panic, never more messages than the whole has, and a
/// cut inside a message shows as `Malformed` rather than as a shorter message.
#[test]
fn every_prefix_of_a_real_datagram_parses_without_panic() {
    let d = real_datagram();
    let whole = walk(&d);
    let first_len = messages(&d).next().unwrap().unwrap().payload.len() + NLMSG_HDRLEN;
    for cut in 0..=d.len() {
        let prefix = &d[..cut];
        assert!(walk(prefix) <= whole, "cut {cut}");
        let msgs: Vec<_> = messages(prefix).collect();
        assert!(msgs.len() <= 4, "cut {cut}");
        if cut > 0 && cut < first_len {
            assert_eq!(msgs, [Err(Malformed)], "cut {cut}");
        }
    }
}

/// Bogus lengths at every place a length is read: every message and attribute header of the
/// real datagram gets 0, 1, 3, its own header length, one past the end, and u16/u32::MAX.
#[test]
fn bogus_lengths_anywhere_never_panic() {
    let d = real_datagram();
    for at in 0..d.len().saturating_sub(1) {
        for v in [0u16, 1, 3, 4, 15, 16, 17, 0x7fff, u16::MAX] {
            let mut b = d.clone();
            b[at..at + 2].copy_from_slice(&v.to_ne_bytes());
            let _ = walk(&b);
        }
    }
    for at in 0..d.len().saturating_sub(3) {
        for v in [0u32, 15, 16, 10_000, u32::MAX] {
            let mut b = d.clone();
            b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
            let _ = walk(&b);
        }
    }
}

#[test]
fn a_message_that_does_not_fit_ends_the_datagram() {
    let d = real_datagram();
    let first_len = u32::from_ne_bytes(d[0..4].try_into().unwrap()) as usize;
    for bogus in [0u32, 1, 15, 10_000, u32::MAX] {
        let mut b = d.clone();
        b[first_len..first_len + 4].copy_from_slice(&bogus.to_ne_bytes());
        let msgs: Vec<_> = messages(&b).collect();
        assert_eq!(msgs.len(), 2, "nlmsg_len {bogus}");
        assert!(msgs[0].is_ok());
        assert_eq!(msgs[1], Err(Malformed));
    }
    // An attribute claiming more than its message holds ends that message's attributes.
    let mut m = MsgBuf::default();
    let s = m.begin(nfnl_type(NFNL_SUBSYS_QUEUE, 0), 0, 1, NFPROTO_UNSPEC, 3);
    m.attr(1, &[1, 2, 3, 4]);
    m.attr(10, &[0x45, 0, 0, 0]);
    m.end(s);
    let mut b = m.bytes().to_vec();
    b[28..30].copy_from_slice(&204u16.to_ne_bytes());
    let msg = messages(&b).next().unwrap().unwrap();
    let (_, body) = nfgen(msg.payload).unwrap();
    assert_eq!(attrs(body).collect::<Vec<_>>(), [(1, &[1u8, 2, 3, 4][..])]);
}

#[test]
fn parsing_garbage_never_panics() {
    for len in 0..64 {
        let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        let _ = walk(&junk);
        let _ = attrs(&junk).count();
    }
    let mut bad = vec![0xffu8; 20];
    bad[0..4].copy_from_slice(&20u32.to_ne_bytes());
    let _ = walk(&bad);
}

proptest::proptest! {
    #[test]
    fn random_bytes_never_panic(b in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
        let n = messages(&b).count();
        proptest::prop_assert!(n <= b.len() / NLMSG_HDRLEN + 1);
        let _ = walk(&b);
    }
}

/// An `NLMSG_ERROR` whose error field is `i32::MIN` (no kernel sends it, but the parser's
/// contract is "never panics"): negating it must not overflow.
#[test]
fn error_code_of_i32_min_does_not_overflow() {
    assert_eq!(nlmsgerr(&i32::MIN.to_ne_bytes()), Some(i32::MIN));
    assert_eq!(nlmsgerr(&(-2i32).to_ne_bytes()), Some(2));
    assert_eq!(nlmsgerr(&[0, 0]), None);
}

/// The batch frame: BEGIN and END name the subsystem in `res_id`, only the last message asks
/// for an ack, and a refusal is traced back to the tag of the refused message.
#[test]
fn batch_frames_its_messages() {
    let mut b: Batch<&str> = Batch::new(NFNL_SUBSYS_NFTABLES, 256, 41);
    b.start();
    for what in ["first", "second"] {
        let s = b.begin(0, NLM_F_CREATE, NFPROTO_INET, what);
        b.msg().attr_str(1, what);
        b.msg().end(s);
    }
    let msgs: Vec<Msg<'_>> = messages(b.bytes()).map(Result::unwrap).collect();
    assert_eq!(
        msgs.iter().map(|m| (m.ty, m.seq)).collect::<Vec<_>>(),
        [(NFNL_MSG_BATCH_BEGIN, 42), (0x0a00, 43), (0x0a00, 44)]
    );
    assert_eq!(
        msgs[0].payload,
        [0, 0, 0, 10],
        "res_id = NFNL_SUBSYS_NFTABLES"
    );
    assert!(msgs.iter().all(|m| m.flags & NLM_F_ACK == 0));
    assert_eq!(msgs[1].flags, NLM_F_REQUEST | NLM_F_CREATE);
}

/// The layer carries the ipset subsystem as it is: an `IPSET_CMD_ADD` (9) for `hash:ip,port`
/// with protocol, nested data, and network-order integers flagged `NLA_F_NET_BYTEORDER`.
#[test]
fn an_ipset_message_needs_nothing_new() {
    const IPSET_CMD_ADD: u16 = 9;
    let mut m = MsgBuf::default();
    let s = m.begin(
        nfnl_type(NFNL_SUBSYS_IPSET, IPSET_CMD_ADD),
        NLM_F_ACK,
        5,
        NFPROTO_IPV4,
        0,
    );
    m.attr(1, &[7]); // IPSET_ATTR_PROTOCOL
    m.attr_str(2, "nfknock_v4"); // IPSET_ATTR_SETNAME
    let data = m.nest(7); // IPSET_ATTR_DATA
    let ip = m.nest(1); // IPSET_ATTR_IP
    m.attr(1 | NLA_F_NET_BYTEORDER, &[192, 0, 2, 7]); // IPSET_ATTR_IPADDR_IPV4
    m.nest_end(ip);
    m.attr_u16(4 | NLA_F_NET_BYTEORDER, 22); // IPSET_ATTR_PORT
    m.attr(7, &[6]); // IPSET_ATTR_PROTO
    m.attr_u32(6 | NLA_F_NET_BYTEORDER, 30); // IPSET_ATTR_TIMEOUT
    m.nest_end(data);
    m.end(s);
    let msg = messages(m.bytes()).next().unwrap().unwrap();
    assert_eq!(
        (msg.subsys(), msg.nfnl_msg()),
        (NFNL_SUBSYS_IPSET, IPSET_CMD_ADD)
    );
    let (fam, body) = nfgen(msg.payload).unwrap();
    assert_eq!(fam, NFPROTO_IPV4);
    let data = attr(body, 7).unwrap();
    assert_eq!(attr(attr(data, 1).unwrap(), 1), Some(&[192, 0, 2, 7][..]));
    assert_eq!(attr(data, 6).and_then(be_u32), Some(30));
    // The flags stay on the wire (ipset checks them) and off the parsed type.
    let raw_ty = u16::from_ne_bytes(m.bytes()[46..48].try_into().unwrap());
    assert_eq!(raw_ty, 7 | NLA_F_NESTED);
}

#[test]
fn sender_filter_drops_listed_ports_only() {
    // Load, compare against each port, keep, drop.
    let prog = sender_filter(&[5, 6]);
    assert_eq!(prog.len(), 5);
    assert_eq!(prog[0].k, 12, "nlmsg_pid");
    assert_eq!(prog[1].jt, 2);
    assert_eq!(prog[2].jt, 1);
    assert_eq!(prog[1].k, u32::from_be_bytes(5u32.to_ne_bytes()));
    assert_eq!(prog[3].k, u32::MAX);
    assert_eq!(prog[4].k, 0);
    // Nobody to ignore: keep everything. Too many: the first 200 fit the jump range.
    assert_eq!(sender_filter(&[])[1].k, u32::MAX);
    let many: Vec<u32> = (1..=300).collect();
    let prog = sender_filter(&many);
    assert_eq!(prog.len(), 203);
    assert_eq!(prog[1].jt, 200);
}

/// A wait for an answer that never comes ends at its deadline with an error that says so.
/// (Opening a netfilter netlink socket needs no privilege; nothing is sent.)
#[test]
fn a_missing_answer_times_out() {
    let sock = NlSocket::open(0).unwrap();
    assert_ne!(sock.portid(), 0);
    let mut buf = vec![0u8; 4096];
    let t = std::time::Instant::now();
    let err = sock
        .recv_until(
            &mut buf,
            std::time::Duration::from_millis(100),
            |_| Some(()),
        )
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert!(
        err.to_string().contains("no answer from the kernel"),
        "{err}"
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
    assert!(matches!(sock.try_recv(&mut buf), Ok(None)));
}
