//! nf_tables netlink messages, built by hand into one reusable buffer and parsed by length.
//!
//! Constants are the kernel's UAPI (`include/uapi/linux/netfilter/nf_tables.h`,
//! `nfnetlink.h`, `netlink.h`). Attribute payloads follow the kernel's byte order rules:
//! netlink headers and `NLA_F_*` are host order, nf_tables integer attributes are big-endian,
//! register *contents* (`NFTA_DATA_VALUE`) are whatever the packet/ct field holds.
//!
//! Parsing never panics: every read is length-checked and a malformed message yields `None`.

// ---- netlink (linux/netlink.h) ----
pub const NLMSG_HDRLEN: usize = 16;
pub const NLA_HDRLEN: usize = 4;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLA_F_NESTED: u16 = 0x8000;
pub const NLA_TYPE_MASK: u16 = 0x3fff;

// ---- nfnetlink ----
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub const NFNL_MSG_BATCH_END: u16 = 0x11;
/// `NFNLGRP_NFTABLES`: the multicast group of ruleset change events.
pub const NFNLGRP_NFTABLES: u32 = 7;
pub const NFPROTO_INET: u8 = 1;
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;

// ---- nf_tables message types ----
pub const NFT_MSG_NEWTABLE: u16 = 0;
pub const NFT_MSG_GETTABLE: u16 = 1;
pub const NFT_MSG_DELTABLE: u16 = 2;
pub const NFT_MSG_NEWCHAIN: u16 = 3;
pub const NFT_MSG_GETCHAIN: u16 = 4;
pub const NFT_MSG_DELCHAIN: u16 = 5;
pub const NFT_MSG_NEWRULE: u16 = 6;
pub const NFT_MSG_DELRULE: u16 = 8;
pub const NFT_MSG_NEWSET: u16 = 9;
pub const NFT_MSG_GETSET: u16 = 10;
pub const NFT_MSG_DELSET: u16 = 11;
pub const NFT_MSG_NEWSETELEM: u16 = 12;
pub const NFT_MSG_GETSETELEM: u16 = 13;
pub const NFT_MSG_DELSETELEM: u16 = 14;
pub const NFT_MSG_DESTROYTABLE: u16 = 26;
pub const NFT_MSG_DESTROYSETELEM: u16 = 30;

// ---- attributes ----
pub const NFTA_TABLE_NAME: u16 = 1;
pub const NFTA_CHAIN_TABLE: u16 = 1;
pub const NFTA_CHAIN_NAME: u16 = 3;
pub const NFTA_CHAIN_HOOK: u16 = 4;
pub const NFTA_CHAIN_POLICY: u16 = 5;
pub const NFTA_CHAIN_TYPE: u16 = 7;
pub const NFTA_HOOK_HOOKNUM: u16 = 1;
pub const NFTA_HOOK_PRIORITY: u16 = 2;
pub const NFTA_RULE_TABLE: u16 = 1;
pub const NFTA_RULE_CHAIN: u16 = 2;
pub const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub const NFTA_LIST_ELEM: u16 = 1;
pub const NFTA_EXPR_NAME: u16 = 1;
pub const NFTA_EXPR_DATA: u16 = 2;
pub const NFTA_SET_TABLE: u16 = 1;
pub const NFTA_SET_NAME: u16 = 2;
pub const NFTA_SET_FLAGS: u16 = 3;
pub const NFTA_SET_KEY_TYPE: u16 = 4;
pub const NFTA_SET_KEY_LEN: u16 = 5;
pub const NFTA_SET_DESC: u16 = 9;
pub const NFTA_SET_ID: u16 = 10;
pub const NFTA_SET_TIMEOUT: u16 = 11;
pub const NFTA_SET_USERDATA: u16 = 13;
pub const NFTA_SET_DESC_SIZE: u16 = 1;
pub const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub const NFTA_SET_ELEM_KEY: u16 = 1;
pub const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
pub const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
pub const NFTA_DATA_VALUE: u16 = 1;
pub const NFTA_DATA_VERDICT: u16 = 2;
pub const NFTA_VERDICT_CODE: u16 = 1;

pub const NFT_SET_TIMEOUT: u32 = 0x10;
pub const NFT_SET_EVAL: u32 = 0x20;

pub const NF_DROP: u32 = 0;
pub const NF_ACCEPT: u32 = 1;
pub const NF_INET_PRE_ROUTING: u32 = 0;
pub const NF_INET_LOCAL_IN: u32 = 1;
pub const NF_INET_FORWARD: u32 = 2;

// ---- registers: the 16-byte NFT_REG_1 overlays the 4-byte NFT_REG32_00..03 ----
pub const NFT_REG_VERDICT: u32 = 0;
pub const NFT_REG_1: u32 = 1;
pub const NFT_REG32_00: u32 = 8;

/// A netlink message builder over one growable buffer that is cleared, never shrunk, so the
/// hot path does not allocate once it has warmed up.
#[derive(Default)]
pub struct MsgBuf {
    pub buf: Vec<u8>,
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

impl MsgBuf {
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Start a message: `nlmsghdr` + `nfgenmsg`. Returns its offset for [`MsgBuf::end_msg`].
    pub fn begin_msg(&mut self, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in end_msg
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        self.buf.push(family);
        self.buf.push(0); // NFNETLINK_V0
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    /// An nf_tables message (`NFNL_SUBSYS_NFTABLES << 8 | msg`).
    pub fn begin_nft(&mut self, msg: u16, flags: u16, seq: u32, family: u8) -> usize {
        self.begin_msg(
            (NFNL_SUBSYS_NFTABLES << 8) | msg,
            NLM_F_REQUEST | flags,
            seq,
            family,
            0,
        )
    }

    pub fn end_msg(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        if let Some(dst) = self.buf.get_mut(start..start + 4) {
            dst.copy_from_slice(&len.to_ne_bytes());
        }
    }

    /// `NFNL_MSG_BATCH_BEGIN` / `_END` around nf_tables messages.
    pub fn batch_marker(&mut self, ty: u16, seq: u32) {
        let s = self.begin_msg(ty, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES);
        self.end_msg(s);
    }

    pub fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = (NLA_HDRLEN + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        let padded = pad4(self.buf.len());
        self.buf.resize(padded, 0);
    }

    /// A NUL-terminated string attribute.
    pub fn attr_str(&mut self, ty: u16, s: &str) {
        let len = (NLA_HDRLEN + s.len() + 1) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        let padded = pad4(self.buf.len());
        self.buf.resize(padded, 0);
    }

    pub fn attr_u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    pub fn attr_u64(&mut self, ty: u16, v: u64) {
        self.attr(ty, &v.to_be_bytes());
    }

    pub fn nest(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        start
    }

    pub fn nest_end(&mut self, start: usize) {
        // Attribute lengths are u16; callers chunk so a nest never reaches 64 KiB.
        let len = (self.buf.len() - start) as u16;
        if let Some(dst) = self.buf.get_mut(start..start + 2) {
            dst.copy_from_slice(&len.to_ne_bytes());
        }
    }

    /// `NFTA_DATA_VALUE` nested in `ty`.
    pub fn data_value(&mut self, ty: u16, value: &[u8]) {
        let n = self.nest(ty);
        self.attr(NFTA_DATA_VALUE, value);
        self.nest_end(n);
    }

    /// Start one expression of a rule's `NFTA_RULE_EXPRESSIONS` list; returns the offsets
    /// to close with [`MsgBuf::expr_end`].
    pub fn expr(&mut self, name: &str) -> (usize, usize) {
        let elem = self.nest(NFTA_LIST_ELEM);
        self.attr_str(NFTA_EXPR_NAME, name);
        let data = self.nest(NFTA_EXPR_DATA);
        (elem, data)
    }

    pub fn expr_end(&mut self, (elem, data): (usize, usize)) {
        self.nest_end(data);
        self.nest_end(elem);
    }
}

// ---- expressions (net/netfilter/nft_*.c attribute sets) ----

pub const NFT_META_NFPROTO: u32 = 15;
pub const NFT_META_L4PROTO: u32 = 16;
pub const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
pub const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
pub const NFT_CMP_EQ: u32 = 0;
pub const NFT_CMP_NEQ: u32 = 1;
pub const NFT_RANGE_NEQ: u32 = 1;
pub const NFT_CT_STATE: u32 = 0;
pub const NFT_CT_STATUS: u32 = 2;
pub const NFT_CT_PROTO_DST: u32 = 12;
pub const IP_CT_DIR_ORIGINAL: u8 = 0;
pub const NFT_LOOKUP_F_INV: u32 = 1;
pub const NFT_DYNSET_OP_ADD: u32 = 0;
pub const NFT_LIMIT_PKTS: u32 = 0;
pub const NFT_LIMIT_F_INV: u32 = 1;
/// `NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED)`.
pub const CT_STATE_ESTABLISHED_RELATED: u32 = 0x2 | 0x4;
/// `IPS_DST_NAT` (linux/netfilter/nf_conntrack_common.h).
pub const IPS_DST_NAT: u32 = 1 << 5;

impl MsgBuf {
    pub fn e_meta(&mut self, key: u32, dreg: u32) {
        let e = self.expr("meta");
        self.attr_u32(2, key); // NFTA_META_KEY
        self.attr_u32(1, dreg); // NFTA_META_DREG
        self.expr_end(e);
    }

    pub fn e_cmp(&mut self, sreg: u32, op: u32, value: &[u8]) {
        let e = self.expr("cmp");
        self.attr_u32(1, sreg); // NFTA_CMP_SREG
        self.attr_u32(2, op); // NFTA_CMP_OP
        self.data_value(3, value); // NFTA_CMP_DATA
        self.expr_end(e);
    }

    pub fn e_payload(&mut self, base: u32, offset: u32, len: u32, dreg: u32) {
        let e = self.expr("payload");
        self.attr_u32(1, dreg); // NFTA_PAYLOAD_DREG
        self.attr_u32(2, base);
        self.attr_u32(3, offset);
        self.attr_u32(4, len);
        self.expr_end(e);
    }

    pub fn e_range_neq(&mut self, sreg: u32, from: &[u8], to: &[u8]) {
        let e = self.expr("range");
        self.attr_u32(1, sreg); // NFTA_RANGE_SREG
        self.attr_u32(2, NFT_RANGE_NEQ); // NFTA_RANGE_OP
        self.data_value(3, from);
        self.data_value(4, to);
        self.expr_end(e);
    }

    /// `reg = (reg & mask) ^ 0` over 4 bytes (host order: ct state/status are host-endian u32).
    pub fn e_bitwise_and(&mut self, reg: u32, mask: u32) {
        self.e_bitwise_mask(reg, &mask.to_ne_bytes());
    }

    /// `reg = (reg & mask) ^ 0` over `mask.len()` bytes (at most 16, one 128-bit register),
    /// e.g. an address prefix: `ip6 saddr & ffff:ffff:ffff:ffff::`.
    pub fn e_bitwise_mask(&mut self, reg: u32, mask: &[u8]) {
        let mask = mask.get(..16).unwrap_or(mask);
        let e = self.expr("bitwise");
        self.attr_u32(1, reg); // NFTA_BITWISE_SREG
        self.attr_u32(2, reg); // NFTA_BITWISE_DREG
        self.attr_u32(3, mask.len() as u32); // NFTA_BITWISE_LEN
        self.data_value(4, mask); // NFTA_BITWISE_MASK
        self.data_value(5, &[0u8; 16][..mask.len()]); // NFTA_BITWISE_XOR
        self.expr_end(e);
    }

    pub fn e_ct(&mut self, key: u32, dir: Option<u8>, dreg: u32) {
        let e = self.expr("ct");
        self.attr_u32(1, dreg); // NFTA_CT_DREG
        self.attr_u32(2, key); // NFTA_CT_KEY
        if let Some(d) = dir {
            self.attr(3, &[d]); // NFTA_CT_DIRECTION (u8)
        }
        self.expr_end(e);
    }

    pub fn e_lookup(&mut self, set: &str, sreg: u32, flags: u32) {
        let e = self.expr("lookup");
        self.attr_str(1, set); // NFTA_LOOKUP_SET
        self.attr_u32(2, sreg); // NFTA_LOOKUP_SREG
        self.attr_u32(5, flags); // NFTA_LOOKUP_FLAGS
        self.expr_end(e);
    }

    pub fn e_notrack(&mut self) {
        let elem = self.nest(NFTA_LIST_ELEM);
        self.attr_str(NFTA_EXPR_NAME, "notrack");
        self.nest_end(elem);
    }

    pub fn e_verdict(&mut self, code: u32) {
        let e = self.expr("immediate");
        self.attr_u32(1, NFT_REG_VERDICT); // NFTA_IMMEDIATE_DREG
        let data = self.nest(2); // NFTA_IMMEDIATE_DATA
        let v = self.nest(NFTA_DATA_VERDICT);
        self.attr_u32(NFTA_VERDICT_CODE, code);
        self.nest_end(v);
        self.nest_end(data);
        self.expr_end(e);
    }

    /// `add @set { <key in sreg> limit rate over RATE/second burst BURST packets }`: a dynset
    /// with an embedded per-element limit; the rule goes on (to its drop) only while the
    /// source exceeds the rate (`nft_dynset_eval` → `nft_limit_pkts_eval` with `F_INV`).
    pub fn e_dynset_limit(&mut self, set: &str, sreg: u32, rate: u64, burst: u32) {
        let e = self.expr("dynset");
        self.attr_u32(4, sreg); // NFTA_DYNSET_SREG_KEY
        self.attr_u32(3, NFT_DYNSET_OP_ADD); // NFTA_DYNSET_OP
        self.attr_str(1, set); // NFTA_DYNSET_SET_NAME
        let inner = self.nest(7); // NFTA_DYNSET_EXPR
        self.attr_str(NFTA_EXPR_NAME, "limit");
        let d = self.nest(NFTA_EXPR_DATA);
        self.attr_u64(1, rate); // NFTA_LIMIT_RATE
        self.attr_u64(2, 1); // NFTA_LIMIT_UNIT: seconds
        self.attr_u32(3, burst); // NFTA_LIMIT_BURST
        self.attr_u32(4, NFT_LIMIT_PKTS); // NFTA_LIMIT_TYPE
        self.attr_u32(5, NFT_LIMIT_F_INV); // NFTA_LIMIT_FLAGS: "over"
        self.nest_end(d);
        self.nest_end(inner);
        self.expr_end(e);
    }

    /// The native `queue` expression (`nft_queue`): one queue, no flags — in particular no
    /// `bypass`, so knocks are dropped (fail closed) while no daemon listens.
    pub fn e_queue(&mut self, num: u16) {
        let e = self.expr("queue");
        self.attr(1, &num.to_be_bytes()); // NFTA_QUEUE_NUM
        self.attr(2, &1u16.to_be_bytes()); // NFTA_QUEUE_TOTAL
        self.attr(3, &0u16.to_be_bytes()); // NFTA_QUEUE_FLAGS
        self.expr_end(e);
    }

    /// The xt `NFQUEUE` target rev 3 through `nft_compat`: `struct xt_NFQ_info_v3
    /// { u16 queuenum; u16 queues_total; u16 flags; }` in host order, padded to `XT_ALIGN`
    /// (8 bytes) because `xt_check_target` insists on the aligned size.
    pub fn e_compat_nfqueue(&mut self, num: u16) {
        let e = self.expr("target");
        self.attr_str(1, "NFQUEUE"); // NFTA_TARGET_NAME
        self.attr_u32(2, 3); // NFTA_TARGET_REV
        let mut info = [0u8; 8];
        info[0..2].copy_from_slice(&num.to_ne_bytes());
        info[2..4].copy_from_slice(&1u16.to_ne_bytes());
        self.attr(3, &info); // NFTA_TARGET_INFO
        self.expr_end(e);
    }
}

// ---- parsing ----

/// One netlink message of a receive buffer.
pub struct Msg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub pid: u32,
    /// Everything after the `nlmsghdr`.
    pub payload: &'a [u8],
}

/// Iterate over the netlink messages in `buf`; stops at the first malformed header.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Msg<'_>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        let hdr = rest.get(..NLMSG_HDRLEN)?;
        let len = u32::from_ne_bytes(hdr[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            rest = &[];
            return None;
        }
        let msg = Msg {
            ty: u16::from_ne_bytes(hdr[4..6].try_into().ok()?),
            flags: u16::from_ne_bytes(hdr[6..8].try_into().ok()?),
            seq: u32::from_ne_bytes(hdr[8..12].try_into().ok()?),
            pid: u32::from_ne_bytes(hdr[12..16].try_into().ok()?),
            payload: rest.get(NLMSG_HDRLEN..len)?,
        };
        rest = rest.get(pad4(len).min(rest.len())..).unwrap_or(&[]);
        Some(msg)
    })
}

/// Iterate over `(type without flags, value)` of the attributes in `buf`.
pub fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        let hdr = rest.get(..NLA_HDRLEN)?;
        let len = u16::from_ne_bytes([hdr[0], hdr[1]]) as usize;
        let ty = u16::from_ne_bytes([hdr[2], hdr[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > rest.len() {
            rest = &[];
            return None;
        }
        let value = rest.get(NLA_HDRLEN..len)?;
        rest = rest.get(pad4(len).min(rest.len())..).unwrap_or(&[]);
        Some((ty, value))
    })
}

/// The value of the first attribute `ty` in `buf`.
pub fn attr(buf: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(buf).find(|(t, _)| *t == ty).map(|(_, v)| v)
}

pub fn be_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

/// A NUL-terminated string attribute, without its NUL.
pub fn str_attr(v: &[u8]) -> &[u8] {
    v.split(|b| *b == 0).next().unwrap_or(v)
}

/// The `errno` of an `NLMSG_ERROR` payload (0 = ack) and the sequence number it answers.
pub fn nlmsgerr(payload: &[u8]) -> Option<i32> {
    let e = payload.get(0..4)?;
    // `struct nlmsgerr { int error; ... }` holds a negative errno; `wrapping_neg` so that a
    // bogus `i32::MIN` cannot overflow (the parser never panics).
    Some(i32::from_ne_bytes(e.try_into().ok()?).wrapping_neg())
}

/// The payload of an nf_tables message after its `nfgenmsg`, and the family it carries.
pub fn nfgen(payload: &[u8]) -> Option<(u8, &[u8])> {
    Some((*payload.first()?, payload.get(4..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_parse_back() {
        let mut m = MsgBuf::default();
        let s = m.begin_nft(NFT_MSG_GETTABLE, NLM_F_ACK, 7, NFPROTO_INET);
        m.attr_str(NFTA_TABLE_NAME, "nfknock");
        m.end_msg(s);
        assert_eq!(m.len(), 16 + 4 + 12);
        let msg = messages(&m.buf).next().unwrap();
        assert_eq!(msg.seq, 7);
        assert_eq!(msg.ty, (10 << 8) | NFT_MSG_GETTABLE);
        let (fam, body) = nfgen(msg.payload).unwrap();
        assert_eq!(fam, NFPROTO_INET);
        assert_eq!(str_attr(attr(body, NFTA_TABLE_NAME).unwrap()), b"nfknock");
    }

    #[test]
    fn parsing_garbage_never_panics() {
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = messages(&junk).count();
            let _ = attrs(&junk).count();
        }
        let mut bad = vec![0xffu8; 20];
        bad[0..4].copy_from_slice(&20u32.to_ne_bytes());
        for m in messages(&bad) {
            let _ = attrs(m.payload).count();
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
}
