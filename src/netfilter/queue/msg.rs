//! NFQUEUE messages: the config and verdict messages we send, and what the kernel sends us
//! (queued packets, acknowledgements, errors). Pure: no I/O; the verdict path allocates nothing.
//!
//! The layouts are the kernel's UAPI, `include/uapi/linux/netfilter/nfnetlink_queue.h`
//! (commands, attributes, verdict header); the kernel side is `net/netfilter/nfnetlink_queue.c`.
//! Headers and attributes come from the shared [`netlink`](crate::netfilter::netlink) layer, whose
//! parser never panics: a message with a bogus length ends the parse of its datagram, an
//! attribute with a bogus length ends the parse of its message.

use crate::netfilter::netlink::{
    attrs, nfgen, nfnl_type, nlmsgerr, Malformed, Msg, MsgBuf, NFNL_SUBSYS_QUEUE, NFPROTO_UNSPEC,
    NLMSG_ERROR, NLM_F_ACK,
};

pub const NFQNL_MSG_PACKET: u16 = 0;
pub const NFQNL_MSG_VERDICT: u16 = 1;
pub const NFQNL_MSG_CONFIG: u16 = 2;
pub const NFQNL_MSG_VERDICT_BATCH: u16 = 3;

/// `struct nfqnl_msg_packet_hdr { __be32 packet_id; __be16 hw_protocol; __u8 hook; }`.
pub const NFQA_PACKET_HDR: u16 = 1;
/// `struct nfqnl_msg_verdict_hdr { __be32 verdict; __be32 id; }`.
pub const NFQA_VERDICT_HDR: u16 = 2;
pub const NFQA_PAYLOAD: u16 = 10;

/// `struct nfqnl_msg_config_cmd { __u8 command; __u8 _pad; __be16 pf; }`.
pub const NFQA_CFG_CMD: u16 = 1;
/// `struct nfqnl_msg_config_params { __be32 copy_range; __u8 copy_mode; } __packed`.
pub const NFQA_CFG_PARAMS: u16 = 2;
pub const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;

pub const NFQNL_CFG_CMD_BIND: u8 = 1;
pub const NFQNL_CFG_CMD_UNBIND: u8 = 2;
pub const NFQNL_COPY_PACKET: u8 = 2;
/// The kernel clamps a larger copy range to this (`NFQNL_MAX_COPY_RANGE`).
pub const MAX_COPY_RANGE: u32 = 0xffff;

/// Write a verdict (`NFQNL_MSG_VERDICT`) or batch verdict (`NFQNL_MSG_VERDICT_BATCH`) message
/// into `out` (cleared first). No `NLM_F_ACK`: the kernel reports failures anyway
/// (`netlink_rcv_skb` acks on error), and success needs no answer.
pub fn verdict_msg(out: &mut MsgBuf, msg: u16, queue: u16, seq: u32, verdict: u32, id: u32) {
    out.clear();
    let s = out.begin(
        nfnl_type(NFNL_SUBSYS_QUEUE, msg),
        0,
        seq,
        NFPROTO_UNSPEC,
        queue,
    );
    let mut hdr = [0u8; 8];
    hdr[..4].copy_from_slice(&verdict.to_be_bytes());
    hdr[4..].copy_from_slice(&id.to_be_bytes());
    out.attr(NFQA_VERDICT_HDR, &hdr);
    out.end(s);
}

/// Write a config message with `command` and, for a bind, the copy parameters and queue length
/// into `out` (cleared first). Sent with `NLM_F_ACK` so the bind's outcome is known.
pub fn config_msg(out: &mut MsgBuf, queue: u16, seq: u32, command: u8, params: Option<(u32, u32)>) {
    out.clear();
    let s = out.begin(
        nfnl_type(NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG),
        NLM_F_ACK,
        seq,
        NFPROTO_UNSPEC,
        queue,
    );
    // pf is ignored for BIND/UNBIND (one instance serves every family).
    out.attr(NFQA_CFG_CMD, &[command, 0, 0, 0]);
    if let Some((copy_range, max_len)) = params {
        let mut p = [0u8; 5];
        p[0..4].copy_from_slice(&copy_range.min(MAX_COPY_RANGE).to_be_bytes());
        p[4] = NFQNL_COPY_PACKET;
        out.attr(NFQA_CFG_PARAMS, &p);
        out.attr_u32(NFQA_CFG_QUEUE_MAXLEN, max_len);
    }
    out.end(s);
}

/// One netlink message from the socket, as far as the queue shell cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// `NFQNL_MSG_PACKET`: packet id and the copied IP packet (empty if the kernel sent none).
    Packet { id: u32, payload: &'a [u8] },
    /// `NLMSG_ERROR`: `errno` 0 is an acknowledgement, otherwise a positive errno.
    Error { seq: u32, errno: i32 },
    /// Anything else (`NLMSG_DONE`, `NLMSG_NOOP`, other nfnetlink messages).
    Other,
    /// A message that failed a length check (the rest of its datagram is skipped), or a packet
    /// message without a usable `NFQA_PACKET_HDR`.
    Malformed,
}

/// The messages of one received datagram (borrowing it: nothing is copied).
pub fn messages(datagram: &[u8]) -> impl Iterator<Item = Message<'_>> {
    crate::netfilter::netlink::messages(datagram).map(classify)
}

fn classify(m: Result<Msg<'_>, Malformed>) -> Message<'_> {
    let Ok(m) = m else {
        return Message::Malformed;
    };
    match m.ty {
        NLMSG_ERROR => match nlmsgerr(m.payload) {
            Some(errno) => Message::Error { seq: m.seq, errno },
            None => Message::Malformed,
        },
        t if t == nfnl_type(NFNL_SUBSYS_QUEUE, NFQNL_MSG_PACKET) => parse_packet(m.payload),
        _ => Message::Other,
    }
}

/// The payload of an `NFQNL_MSG_PACKET`: `struct nfgenmsg`, then attributes.
fn parse_packet(payload: &[u8]) -> Message<'_> {
    let mut id = None;
    let mut packet: &[u8] = &[];
    for (ty, data) in attrs(nfgen(payload).map_or(&[], |(_, body)| body)) {
        match ty {
            NFQA_PACKET_HDR => {
                id = data
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_be_bytes)
            }
            NFQA_PAYLOAD => packet = data,
            _ => {}
        }
    }
    match id {
        Some(id) => Message::Packet {
            id,
            payload: packet,
        },
        None => Message::Malformed,
    }
}

/// `a` is after `b` in the kernel's wrapping id sequence (`nfq_id_after`).
pub fn id_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The newer of `current` and `id`.
pub fn newest(current: Option<u32>, id: u32) -> u32 {
    match current {
        Some(c) if !id_after(id, c) => c,
        _ => id,
    }
}
