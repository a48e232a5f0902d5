//! nf_tables numbers and expressions, built with the shared [`MsgBuf`]. Pure: no I/O.
//!
//! Constants are the kernel's UAPI (`include/uapi/linux/netfilter/nf_tables.h`). nf_tables
//! integer attributes are big-endian; register *contents* (`NFTA_DATA_VALUE`) are whatever the
//! packet/ct field holds.

use crate::netfilter::netlink::MsgBuf;

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

pub const NF_INET_PRE_ROUTING: u32 = 0;
pub const NF_INET_LOCAL_IN: u32 = 1;
pub const NF_INET_FORWARD: u32 = 2;

// ---- registers: the 16-byte NFT_REG_1 overlays the 4-byte NFT_REG32_00..03 ----
pub const NFT_REG_VERDICT: u32 = 0;
pub const NFT_REG_1: u32 = 1;
pub const NFT_REG32_00: u32 = 8;

impl MsgBuf {
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
