//! nf_tables expressions: the building blocks of a rule, written into its
//! `NFTA_RULE_EXPRESSIONS` list. Pure: builds bytes, no I/O.

use super::uapi::*;
use crate::netfilter::netlink::MsgBuf;

/// The expression list of a rule being built. Expressions can only be written through it, so
/// none lands outside a rule.
pub(super) struct Exprs<'m>(pub(super) &'m mut MsgBuf);

/// `NFTA_DATA_VALUE` nested in `ty` (a set element's key, a comparison's operand).
pub(super) fn data_value(m: &mut MsgBuf, ty: u16, value: &[u8]) {
    let n = m.nest(ty);
    m.attr(NFTA_DATA_VALUE, value);
    m.nest_end(n);
}

impl Exprs<'_> {
    fn data_value(&mut self, ty: u16, value: &[u8]) {
        data_value(self.0, ty, value);
    }

    /// Start one expression of the list; returns the offsets to close with
    /// [`Exprs::expr_end`].
    fn expr(&mut self, name: &str) -> (usize, usize) {
        let elem = self.0.nest(NFTA_LIST_ELEM);
        self.0.attr_str(NFTA_EXPR_NAME, name);
        let data = self.0.nest(NFTA_EXPR_DATA);
        (elem, data)
    }

    fn expr_end(&mut self, (elem, data): (usize, usize)) {
        self.0.nest_end(data);
        self.0.nest_end(elem);
    }

    pub fn e_meta(&mut self, key: u32, dreg: u32) {
        let e = self.expr("meta");
        self.0.attr_u32(2, key); // NFTA_META_KEY
        self.0.attr_u32(1, dreg); // NFTA_META_DREG
        self.expr_end(e);
    }

    pub fn e_cmp(&mut self, sreg: u32, op: u32, value: &[u8]) {
        let e = self.expr("cmp");
        self.0.attr_u32(1, sreg); // NFTA_CMP_SREG
        self.0.attr_u32(2, op); // NFTA_CMP_OP
        self.data_value(3, value); // NFTA_CMP_DATA
        self.expr_end(e);
    }

    pub fn e_payload(&mut self, base: u32, offset: u32, len: u32, dreg: u32) {
        let e = self.expr("payload");
        self.0.attr_u32(1, dreg); // NFTA_PAYLOAD_DREG
        self.0.attr_u32(2, base);
        self.0.attr_u32(3, offset);
        self.0.attr_u32(4, len);
        self.expr_end(e);
    }

    pub fn e_range_neq(&mut self, sreg: u32, from: &[u8], to: &[u8]) {
        let e = self.expr("range");
        self.0.attr_u32(1, sreg); // NFTA_RANGE_SREG
        self.0.attr_u32(2, NFT_RANGE_NEQ); // NFTA_RANGE_OP
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
        self.0.attr_u32(1, reg); // NFTA_BITWISE_SREG
        self.0.attr_u32(2, reg); // NFTA_BITWISE_DREG
        self.0.attr_u32(3, mask.len() as u32); // NFTA_BITWISE_LEN
        self.data_value(4, mask); // NFTA_BITWISE_MASK
        self.data_value(5, &[0u8; 16][..mask.len()]); // NFTA_BITWISE_XOR
        self.expr_end(e);
    }

    pub fn e_ct(&mut self, key: u32, dir: Option<u8>, dreg: u32) {
        let e = self.expr("ct");
        self.0.attr_u32(1, dreg); // NFTA_CT_DREG
        self.0.attr_u32(2, key); // NFTA_CT_KEY
        if let Some(d) = dir {
            self.0.attr(3, &[d]); // NFTA_CT_DIRECTION (u8)
        }
        self.expr_end(e);
    }

    pub fn e_lookup(&mut self, set: &str, sreg: u32, flags: u32) {
        let e = self.expr("lookup");
        self.0.attr_str(1, set); // NFTA_LOOKUP_SET
        self.0.attr_u32(2, sreg); // NFTA_LOOKUP_SREG
        self.0.attr_u32(5, flags); // NFTA_LOOKUP_FLAGS
        self.expr_end(e);
    }

    /// `counter name "NAME"`: count the packet in the table's named counter `NAME`.
    pub fn e_counter_ref(&mut self, name: &str) {
        let e = self.expr("objref");
        self.0.attr_u32(1, NFT_OBJECT_COUNTER); // NFTA_OBJREF_IMM_TYPE
        self.0.attr_str(2, name); // NFTA_OBJREF_IMM_NAME
        self.expr_end(e);
    }

    /// `lookup` in a map: the data of the element found is loaded into `dreg`.
    pub fn e_lookup_map(&mut self, set: &str, sreg: u32, dreg: u32) {
        let e = self.expr("lookup");
        self.0.attr_str(1, set); // NFTA_LOOKUP_SET
        self.0.attr_u32(2, sreg); // NFTA_LOOKUP_SREG
        self.0.attr_u32(3, dreg); // NFTA_LOOKUP_DREG
        self.expr_end(e);
    }

    /// `snat`/`dnat` of family `nfproto` to the address in `reg_addr` and, if given, the port
    /// in `reg_proto` (nft_nat.c derives the range flags from which registers are set).
    pub fn e_nat(&mut self, ty: u32, nfproto: u8, reg_addr: u32, reg_proto: Option<u32>) {
        let e = self.expr("nat");
        self.0.attr_u32(1, ty); // NFTA_NAT_TYPE
        self.0.attr_u32(2, u32::from(nfproto)); // NFTA_NAT_FAMILY
        self.0.attr_u32(3, reg_addr); // NFTA_NAT_REG_ADDR_MIN
        if let Some(r) = reg_proto {
            self.0.attr_u32(5, r); // NFTA_NAT_REG_PROTO_MIN
        }
        self.expr_end(e);
    }

    /// `masquerade`: the source becomes the address of the outgoing interface.
    pub fn e_masq(&mut self) {
        let elem = self.0.nest(NFTA_LIST_ELEM);
        self.0.attr_str(NFTA_EXPR_NAME, "masq");
        self.0.nest_end(elem);
    }

    pub fn e_notrack(&mut self) {
        let elem = self.0.nest(NFTA_LIST_ELEM);
        self.0.attr_str(NFTA_EXPR_NAME, "notrack");
        self.0.nest_end(elem);
    }

    pub fn e_verdict(&mut self, code: u32) {
        let e = self.expr("immediate");
        self.0.attr_u32(1, NFT_REG_VERDICT); // NFTA_IMMEDIATE_DREG
        let data = self.0.nest(2); // NFTA_IMMEDIATE_DATA
        let v = self.0.nest(NFTA_DATA_VERDICT);
        self.0.attr_u32(NFTA_VERDICT_CODE, code);
        self.0.nest_end(v);
        self.0.nest_end(data);
        self.expr_end(e);
    }

    /// `add @set { <key in sreg> limit rate over RATE/second burst BURST packets }`: a dynset
    /// with an embedded per-element limit; the rule goes on (to its drop) only while the
    /// source exceeds the rate (`nft_dynset_eval` → `nft_limit_pkts_eval` with `F_INV`).
    pub fn e_dynset_limit(&mut self, set: &str, sreg: u32, rate: u64, burst: u32) {
        let e = self.expr("dynset");
        self.0.attr_u32(4, sreg); // NFTA_DYNSET_SREG_KEY
        self.0.attr_u32(3, NFT_DYNSET_OP_ADD); // NFTA_DYNSET_OP
        self.0.attr_str(1, set); // NFTA_DYNSET_SET_NAME
        let inner = self.0.nest(7); // NFTA_DYNSET_EXPR
        self.0.attr_str(NFTA_EXPR_NAME, "limit");
        let d = self.0.nest(NFTA_EXPR_DATA);
        self.0.attr_u64(1, rate); // NFTA_LIMIT_RATE
        self.0.attr_u64(2, 1); // NFTA_LIMIT_UNIT: seconds
        self.0.attr_u32(3, burst); // NFTA_LIMIT_BURST
        self.0.attr_u32(4, NFT_LIMIT_PKTS); // NFTA_LIMIT_TYPE
        self.0.attr_u32(5, NFT_LIMIT_F_INV); // NFTA_LIMIT_FLAGS: "over"
        self.0.nest_end(d);
        self.0.nest_end(inner);
        self.expr_end(e);
    }

    /// The native `queue` expression (`nft_queue`): one queue, no flags — in particular no
    /// `bypass`, so knocks are dropped (fail closed) while no daemon listens.
    pub fn e_queue(&mut self, num: u16) {
        self.e_queue_range(num, 1);
    }

    /// `queue num NUM-(NUM+TOTAL-1)`: without the CPU-fanout flag the kernel picks the queue by
    /// a hash of the packet's addresses (`nfqueue_hash`), so one flow stays on one queue.
    pub fn e_queue_range(&mut self, num: u16, total: u16) {
        let e = self.expr("queue");
        self.0.attr(1, &num.to_be_bytes()); // NFTA_QUEUE_NUM
        self.0.attr(2, &total.to_be_bytes()); // NFTA_QUEUE_TOTAL
        self.0.attr(3, &0u16.to_be_bytes()); // NFTA_QUEUE_FLAGS
        self.expr_end(e);
    }

    /// The xt `NFQUEUE` target rev 3 through `nft_compat`: `struct xt_NFQ_info_v3
    /// { u16 queuenum; u16 queues_total; u16 flags; }` in host order, padded to `XT_ALIGN`
    /// (8 bytes) because `xt_check_target` insists on the aligned size.
    pub fn e_compat_nfqueue(&mut self, num: u16) {
        self.e_compat_nfqueue_range(num, 1);
    }

    /// The xt target with `queues_total`: the same hash by addresses as [`Self::e_queue_range`].
    pub fn e_compat_nfqueue_range(&mut self, num: u16, total: u16) {
        let e = self.expr("target");
        self.0.attr_str(1, "NFQUEUE"); // NFTA_TARGET_NAME
        self.0.attr_u32(2, 3); // NFTA_TARGET_REV
        let mut info = [0u8; 8];
        info[0..2].copy_from_slice(&num.to_ne_bytes());
        info[2..4].copy_from_slice(&total.to_ne_bytes());
        self.0.attr(3, &info); // NFTA_TARGET_INFO
        self.expr_end(e);
    }
}
