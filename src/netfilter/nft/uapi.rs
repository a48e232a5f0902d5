//! nf_tables numbers, each once: the kernel's UAPI (`include/uapi/linux/netfilter/nf_tables.h`,
//! and the expression attribute sets of `net/netfilter/nft_*.c`). No code, no I/O. The netlink
//! and nfnetlink numbers they build on are in [`netlink`](crate::netfilter::netlink).

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
pub const NFT_MSG_NEWOBJ: u16 = 18;
pub const NFT_MSG_GETOBJ: u16 = 19;
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
/// `NFTA_SET_DESC_CONCAT`: the field lengths of a concatenated interval key (pipapo sets).
pub const NFTA_SET_DESC_CONCAT: u16 = 2;
pub const NFTA_SET_FIELD_LEN: u16 = 1;
/// `NFT_SET_CONCAT`: the key is a concatenation of ranges (nft sets it for `a . b` with
/// `flags interval`; the kernel then picks the pipapo set type).
pub const NFT_SET_CONCAT: u32 = 0x80;
/// `NFTA_SET_ELEM_KEY_END`: the last key of an element's range (pipapo sets).
pub const NFTA_SET_ELEM_KEY_END: u16 = 10;
pub const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub const NFTA_SET_ELEM_KEY: u16 = 1;
pub const NFTA_SET_ELEM_FLAGS: u16 = 3;
pub const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
pub const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
pub const NFTA_OBJ_TABLE: u16 = 1;
pub const NFTA_OBJ_NAME: u16 = 2;
pub const NFTA_OBJ_TYPE: u16 = 3;
pub const NFTA_OBJ_DATA: u16 = 4;
pub const NFTA_COUNTER_BYTES: u16 = 1;
pub const NFTA_COUNTER_PACKETS: u16 = 2;
pub const NFTA_DATA_VALUE: u16 = 1;
pub const NFTA_DATA_VERDICT: u16 = 2;
pub const NFTA_VERDICT_CODE: u16 = 1;

pub const NFT_SET_INTERVAL: u32 = 0x4;
pub const NFT_SET_TIMEOUT: u32 = 0x10;
/// `NFT_SET_ELEM_INTERVAL_END`: this element ends an interval (the first address after it).
pub const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
/// `NFT_OBJECT_COUNTER`: a named counter (`counter NAME { }`).
pub const NFT_OBJECT_COUNTER: u32 = 1;
pub const NFT_SET_EVAL: u32 = 0x20;

pub const NF_INET_PRE_ROUTING: u32 = 0;
pub const NF_INET_LOCAL_IN: u32 = 1;
pub const NF_INET_FORWARD: u32 = 2;

// ---- registers: the 16-byte NFT_REG_1 overlays the 4-byte NFT_REG32_00..03 ----
pub const NFT_REG_VERDICT: u32 = 0;
pub const NFT_REG_1: u32 = 1;
pub const NFT_REG32_00: u32 = 8;

// ---- expressions (net/netfilter/nft_*.c attribute sets) ----

pub const NFT_META_NFPROTO: u32 = 15;
pub const NFT_META_L4PROTO: u32 = 16;
pub const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
pub const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
pub const NFT_CMP_EQ: u32 = 0;
pub const NFT_CMP_NEQ: u32 = 1;
pub const NFT_CMP_LTE: u32 = 3;
pub const NFT_CMP_GTE: u32 = 5;
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

// ---- NAT (issue 10 §1): maps, the nat/masq expressions, the nat hooks ----
pub const NFT_SET_MAP: u32 = 0x8;
pub const NFTA_SET_DATA_TYPE: u16 = 6;
pub const NFTA_SET_DATA_LEN: u16 = 7;
pub const NFTA_SET_ELEM_DATA: u16 = 2;
/// `NFTA_SET_ELEM_USERDATA`: opaque to the kernel; nft reads a comment from it.
pub const NFTA_SET_ELEM_USERDATA: u16 = 6;
/// libnftnl's `NFTNL_UDATA_SET_ELEM_COMMENT`: the TLV type nft prints as `comment "..."`.
pub const NFTNL_UDATA_SET_ELEM_COMMENT: u8 = 0;
pub const NF_INET_POST_ROUTING: u32 = 4;
/// `NFT_REG_2`: the second 16-byte register (= `NFT_REG32_04`).
pub const NFT_REG_2: u32 = 2;
/// `enum nft_nat_types` (linux/netfilter/nf_tables.h).
pub const NFT_NAT_SNAT: u32 = 0;
pub const NFT_NAT_DNAT: u32 = 1;
