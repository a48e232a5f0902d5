//! The rules of the owned table, twice: as netlink expressions ([`add_all`]) and as nft text
//! ([`render`]). Each rule's two forms sit next to each other; the root test
//! `install_lists_like_render` checks that `nft list table` of the installed rules prints the
//! rendered text, so the two cannot drift.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::expr::Exprs;
use super::*;

/// What differs between the IPv4 and the IPv6 twin of a rule.
struct Fam {
    nfproto: u8,
    saddr_off: u32,
    saddr_len: u32,
    allow: &'static str,
    rate: &'static str,
    fwknop_src: &'static str,
    saddr: &'static str,
    /// The prefix length one knock rate budget covers (`rate_limit_v4_prefix` / `_v6_`).
    rate_prefix: fn(&RulesetSpec) -> u8,
    /// NAT: the DNAT map, masquerade set and SNAT map, nft's family word (`ip`, `ip6`), and the
    /// register a DNAT map's port lands in (after the 4- or 16-byte address, as nft puts it).
    nat: &'static str,
    masq: &'static str,
    snat: &'static str,
    word: &'static str,
    nat_port_reg: u32,
    /// Routed NAT grants (`dnat = false`) and the targets they open.
    fwd: &'static str,
    fwd_protected: &'static str,
    daddr_off: u32,
    daddr: &'static str,
    /// Gateway grants: the networks closed, the `source . network` grants, the masqueraded.
    gw_nets: &'static str,
    gw: &'static str,
    gw_masq: &'static str,
    gw_snat: &'static str,
}

impl Fam {
    /// nft's name for this family's address type, in rendered set and map types.
    fn addr_type(&self) -> &'static str {
        if self.nfproto == NFPROTO_IPV4 {
            "ipv4_addr"
        } else {
            "ipv6_addr"
        }
    }
}

const FAMS: [Fam; 2] = [
    Fam {
        nfproto: NFPROTO_IPV4,
        saddr_off: 12,
        saddr_len: 4,
        allow: SET_ALLOW_V4,
        rate: SET_KNOCK_RATE_V4,
        fwknop_src: SET_FWKNOP_SRC_V4,
        saddr: "ip saddr",
        rate_prefix: |s| s.rate_limit_v4_prefix,
        nat: MAP_NAT_V4,
        masq: SET_MASQUERADE_V4,
        snat: MAP_SNAT_V4,
        word: "ip",
        nat_port_reg: NFT_REG32_00 + 1,
        fwd: SET_FORWARD_V4,
        fwd_protected: SET_FORWARD_PROTECTED_V4,
        daddr_off: 16,
        daddr: "ip daddr",
        gw_nets: SET_GATEWAY_NETS_V4,
        gw: SET_GATEWAY_V4,
        gw_masq: SET_GATEWAY_MASQUERADE_V4,
        gw_snat: MAP_GATEWAY_SNAT_V4,
    },
    Fam {
        nfproto: NFPROTO_IPV6,
        saddr_off: 8,
        saddr_len: 16,
        allow: SET_ALLOW_V6,
        rate: SET_KNOCK_RATE_V6,
        fwknop_src: SET_FWKNOP_SRC_V6,
        saddr: "ip6 saddr",
        rate_prefix: |s| s.rate_limit_v6_prefix,
        nat: MAP_NAT_V6,
        masq: SET_MASQUERADE_V6,
        snat: MAP_SNAT_V6,
        word: "ip6",
        nat_port_reg: NFT_REG_2,
        fwd: SET_FORWARD_V6,
        fwd_protected: SET_FORWARD_PROTECTED_V6,
        daddr_off: 24,
        daddr: "ip6 daddr",
        gw_nets: SET_GATEWAY_NETS_V6,
        gw: SET_GATEWAY_V6,
        gw_masq: SET_GATEWAY_MASQUERADE_V6,
        gw_snat: MAP_GATEWAY_SNAT_V6,
    },
];

/// The 32-bit register `n` after `NFT_REG_1`'s first word: concatenations put each field in
/// its own 4-byte-aligned register run (nft `netlink_register_space`).
fn reg32(n: u32) -> u32 {
    NFT_REG32_00 + n
}

/// `udp dport PORT` in an inet table: `meta l4proto udp` + transport header bytes 2..4.
fn udp_dport(m: &mut Exprs<'_>, port: u16) {
    m.e_meta(NFT_META_L4PROTO, NFT_REG_1);
    m.e_cmp(NFT_REG_1, NFT_CMP_EQ, &[17]);
    m.e_payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, NFT_REG_1);
    m.e_cmp(NFT_REG_1, NFT_CMP_EQ, &port.to_be_bytes());
}

/// `ct state ! established,related`: `(ct state & (established|related)) == 0` — a bitmask
/// test; a flow that is new, untracked or invalid is gated, an established one never is, so
/// an expired grant does not cut an open session.
fn ct_not_established(m: &mut Exprs<'_>) {
    m.e_ct(NFT_CT_STATE, None, NFT_REG_1);
    m.e_bitwise_and(NFT_REG_1, CT_STATE_ESTABLISHED_RELATED);
    m.e_cmp(NFT_REG_1, NFT_CMP_EQ, &0u32.to_ne_bytes());
}

fn nfproto(m: &mut Exprs<'_>, fam: u8) {
    m.e_meta(NFT_META_NFPROTO, NFT_REG_1);
    m.e_cmp(NFT_REG_1, NFT_CMP_EQ, &[fam]);
}

/// The destination port the gate looks at: the packet's (`th dport`), or the conntrack
/// original one (`ct original proto-dst`: the port the client connected to, before DNAT or
/// REDIRECT).
#[derive(Clone, Copy)]
enum Dport {
    Th,
    CtOriginal,
}

impl Dport {
    fn load(self, m: &mut Exprs<'_>, reg: u32) {
        match self {
            Dport::Th => m.e_payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, reg),
            Dport::CtOriginal => m.e_ct(NFT_CT_PROTO_DST, Some(IP_CT_DIR_ORIGINAL), reg),
        }
    }

    fn text(self) -> &'static str {
        match self {
            Dport::Th => "th dport",
            Dport::CtOriginal => "ct original proto-dst",
        }
    }
}

/// `meta l4proto . DPORT @protected SADDR . meta l4proto . DPORT != @allow drop`.
fn gate(m: &mut Exprs<'_>, fam: &Fam, dport: Dport) {
    m.e_meta(NFT_META_L4PROTO, NFT_REG_1);
    dport.load(m, reg32(1));
    m.e_lookup(SET_PROTECTED, NFT_REG_1, 0);
    m.e_payload(
        NFT_PAYLOAD_NETWORK_HEADER,
        fam.saddr_off,
        fam.saddr_len,
        NFT_REG_1,
    );
    let after = fam.saddr_len / 4;
    m.e_meta(NFT_META_L4PROTO, reg32(after));
    dport.load(m, reg32(after + 1));
    m.e_lookup(fam.allow, NFT_REG_1, NFT_LOOKUP_F_INV);
    m.e_verdict(NF_DROP);
}

/// The mask that turns a source address into its knock rate key (the first `saddr_len` bytes
/// count), or `None` when the prefix covers the whole address: no bitwise expression then,
/// and nft prints a bare `ip saddr`.
fn rate_mask(fam: &Fam, spec: &RulesetSpec) -> Option<[u8; 16]> {
    let prefix = u32::from((fam.rate_prefix)(spec));
    if prefix >= fam.saddr_len * 8 {
        return None;
    }
    let mut mask = [0u8; 16];
    for (i, b) in (0u32..).zip(mask.iter_mut()) {
        let ones = prefix.saturating_sub(i * 8).min(8);
        *b = (0xff_u16 << (8 - ones)) as u8;
    }
    Some(mask)
}

/// `SADDR [& MASK]` into register 1: the key of the knock rate sets.
fn rate_key(m: &mut Exprs<'_>, fam: &Fam, spec: &RulesetSpec) {
    m.e_payload(
        NFT_PAYLOAD_NETWORK_HEADER,
        fam.saddr_off,
        fam.saddr_len,
        NFT_REG_1,
    );
    if let Some(mask) = rate_mask(fam, spec) {
        m.e_bitwise_mask(
            NFT_REG_1,
            mask.get(..fam.saddr_len as usize).unwrap_or(&mask),
        );
    }
}

/// [`rate_key`] as nft prints it: `ip6 saddr & ffff:ffff:ffff:ffff::`.
fn rate_key_text(fam: &Fam, spec: &RulesetSpec) -> String {
    match rate_mask(fam, spec) {
        None => fam.saddr.to_string(),
        Some(m) if fam.nfproto == NFPROTO_IPV4 => {
            format!("{} & {}", fam.saddr, Ipv4Addr::new(m[0], m[1], m[2], m[3]))
        }
        Some(m) => format!("{} & {}", fam.saddr, Ipv6Addr::from(m)),
    }
}

/// The transport protocols a NATed flow is gated for, one rule each (an access is tcp or udp).
///
/// nft before 1.0.7 (Debian 12 has 1.0.6, Ubuntu 22.04 1.0.2) gives `ct original proto-dst`
/// no type unless a `meta l4proto tcp`-like match before it says which protocol's port it is:
/// without it, `nft -f` refuses the concatenation ("can not use variable sized data types
/// (invalid) in concat expressions"). One rule per protocol, with that match first, loads with
/// every nft from 1.0.2 and means the same: `@protected` holds tcp and udp ports only.
const NATED_PROTOS: [Proto; 2] = [Proto::Tcp, Proto::Udp];

/// `ct status dnat ct state ! established,related meta l4proto PROTO` + the gate on the
/// original port: a flow whose destination was NATed (DNAT, REDIRECT) is judged by the port
/// the client asked for.
fn gate_nated(m: &mut Exprs<'_>, fam: &Fam, proto: Proto) {
    new_flow(m, fam, true);
    m.e_meta(NFT_META_L4PROTO, NFT_REG_1);
    m.e_cmp(NFT_REG_1, NFT_CMP_EQ, &[proto as u8]);
    gate(m, fam, Dport::CtOriginal);
}

/// `SADDR . meta l4proto . DPORT` into registers 1.. (a NAT map's or set's key: the grant's
/// own `source . proto . port`). Prerouting reads the packet's port (`th dport`), postrouting
/// the one the client connected to (`ct original proto-dst`: after DNAT, the packet carries
/// the target's), so every element of a grant has the grant's key.
fn flow_key(m: &mut Exprs<'_>, fam: &Fam, dport: Dport) {
    nfproto(m, fam.nfproto);
    m.e_payload(
        NFT_PAYLOAD_NETWORK_HEADER,
        fam.saddr_off,
        fam.saddr_len,
        NFT_REG_1,
    );
    let after = fam.saddr_len / 4;
    m.e_meta(NFT_META_L4PROTO, reg32(after));
    dport.load(m, reg32(after + 1));
}

/// `ct status dnat` (`translated`: the flow's destination was translated, by our map or
/// anyone's) or `ct status ! dnat`.
fn ct_dnat(m: &mut Exprs<'_>, translated: bool) {
    m.e_ct(NFT_CT_STATUS, None, NFT_REG_1);
    m.e_bitwise_and(NFT_REG_1, IPS_DST_NAT);
    let op = if translated { NFT_CMP_NEQ } else { NFT_CMP_EQ };
    m.e_cmp(NFT_REG_1, op, &0u32.to_ne_bytes());
}

/// `ct status [!] dnat ct state ! established,related` and `fam`'s protocol: the start of every
/// forward-gate rule, for a new flow translated or not.
fn new_flow(m: &mut Exprs<'_>, fam: &Fam, translated: bool) {
    ct_dnat(m, translated);
    ct_not_established(m);
    nfproto(m, fam.nfproto);
}

/// `ct status ! dnat ct state ! established,related DADDR . meta l4proto . th dport
/// @forward_protected SADDR . DADDR . meta l4proto . th dport != @forward drop`: a new flow
/// routed (not translated) to a `dnat = false` target passes only for a source that knocked
/// for it (fwknop `DISABLE_DNAT`). Translated flows are judged by [`gate_nated`].
fn gate_routed(m: &mut Exprs<'_>, fam: &Fam) {
    new_flow(m, fam, false);
    let n = fam.saddr_len / 4;
    m.e_payload(
        NFT_PAYLOAD_NETWORK_HEADER,
        fam.daddr_off,
        fam.saddr_len,
        NFT_REG_1,
    );
    m.e_meta(NFT_META_L4PROTO, reg32(n));
    Dport::Th.load(m, reg32(n + 1));
    m.e_lookup(fam.fwd_protected, NFT_REG_1, 0);
    m.e_payload(
        NFT_PAYLOAD_NETWORK_HEADER,
        fam.saddr_off,
        fam.saddr_len,
        NFT_REG_1,
    );
    m.e_payload(
        NFT_PAYLOAD_NETWORK_HEADER,
        fam.daddr_off,
        fam.saddr_len,
        reg32(n),
    );
    m.e_meta(NFT_META_L4PROTO, reg32(2 * n));
    Dport::Th.load(m, reg32(2 * n + 1));
    m.e_lookup(fam.fwd, NFT_REG_1, NFT_LOOKUP_F_INV);
    m.e_verdict(NF_DROP);
}

fn gate_routed_text(fam: &Fam) -> String {
    format!(
        "ct status ! dnat ct state ! established,related {d} . meta l4proto . th dport @{} {} . {d} . meta l4proto . th dport != @{} drop",
        fam.fwd_protected,
        fam.saddr,
        fam.fwd,
        d = fam.daddr
    )
}

/// `SADDR . DADDR` into registers 1.. (a gateway set's key).
fn saddr_daddr(m: &mut Exprs<'_>, fam: &Fam) {
    m.e_payload(
        NFT_PAYLOAD_NETWORK_HEADER,
        fam.saddr_off,
        fam.saddr_len,
        NFT_REG_1,
    );
    m.e_payload(
        NFT_PAYLOAD_NETWORK_HEADER,
        fam.daddr_off,
        fam.saddr_len,
        reg32(fam.saddr_len / 4),
    );
}

/// `ct status ! dnat ct state ! established,related DADDR @gateway_nets SADDR . DADDR !=
/// @gateway drop`: a new flow routed into a gateway network passes only for a source holding
/// a gateway grant that covers its destination (fwknop `FORWARD_ALL`). Translated flows are
/// judged by the NAT gates ([`gate_nated`]), not here: a `nat` grant to a host of a gateway
/// network needs no gateway grant.
fn gate_gateway(m: &mut Exprs<'_>, fam: &Fam) {
    new_flow(m, fam, false);
    m.e_payload(
        NFT_PAYLOAD_NETWORK_HEADER,
        fam.daddr_off,
        fam.saddr_len,
        NFT_REG_1,
    );
    m.e_lookup(fam.gw_nets, NFT_REG_1, 0);
    saddr_daddr(m, fam);
    m.e_lookup(fam.gw, NFT_REG_1, NFT_LOOKUP_F_INV);
    m.e_verdict(NF_DROP);
}

fn gate_gateway_text(fam: &Fam) -> String {
    format!(
        "ct status ! dnat ct state ! established,related {d} @{} {} . {d} != @{} drop",
        fam.gw_nets,
        fam.saddr,
        fam.gw,
        d = fam.daddr
    )
}

/// `SADDR . DADDR @gateway_masquerade masquerade` (nat postrouting).
fn gateway_masq(m: &mut Exprs<'_>, fam: &Fam) {
    nfproto(m, fam.nfproto);
    saddr_daddr(m, fam);
    m.e_lookup(fam.gw_masq, NFT_REG_1, 0);
    m.e_masq();
}

/// `snat ADDR to SADDR . DADDR map @gateway_snat` (nat postrouting).
fn gateway_snat(m: &mut Exprs<'_>, fam: &Fam) {
    nfproto(m, fam.nfproto);
    saddr_daddr(m, fam);
    m.e_lookup_map(fam.gw_snat, NFT_REG_1, NFT_REG_1);
    m.e_nat(NFT_NAT_SNAT, fam.nfproto, NFT_REG_1, None);
}

fn gateway_snat_text(fam: &Fam) -> String {
    format!(
        "snat {} to {} . {} map @{}",
        fam.word, fam.saddr, fam.daddr, fam.gw_snat
    )
}

fn gateway_masq_text(fam: &Fam) -> String {
    format!("{} . {} @{} masquerade", fam.saddr, fam.daddr, fam.gw_masq)
}

/// The gateway sets as nft text (after the NAT sets, as the kernel lists them).
fn render_gateway_sets(s: &mut String, spec: &RulesetSpec) {
    for fam in &FAMS {
        let v6 = fam.nfproto == NFPROTO_IPV6;
        let ty = if v6 { "ipv6_addr" } else { "ipv4_addr" };
        let _ = writeln!(
            s,
            "
	set {} {{
		type {ty}
		flags interval",
            fam.gw_nets
        );
        let elems = super::prefilter::intervals_text(&spec.gateway_nets, v6);
        if !elems.is_empty() {
            let _ = writeln!(s, "		elements = {{ {} }}", elems.join(", "));
        }
        let _ = writeln!(s, "	}}");
    }
    for set in [|f: &Fam| f.gw, |f: &Fam| f.gw_masq] {
        for fam in &FAMS {
            let ty = if fam.nfproto == NFPROTO_IPV6 {
                "ipv6_addr"
            } else {
                "ipv4_addr"
            };
            let _ = writeln!(
                s,
                "
	set {} {{
		type {ty} . {ty}
		flags interval,timeout
	}}",
                set(fam)
            );
        }
    }
    for fam in &FAMS {
        let ty = if fam.nfproto == NFPROTO_IPV6 {
            "ipv6_addr"
        } else {
            "ipv4_addr"
        };
        let _ = writeln!(
            s,
            "\n\tmap {} {{\n\t\ttype {ty} . {ty} : {ty}\n\t\tflags interval,timeout\n\t}}",
            fam.gw_snat
        );
    }
}

/// The NAT chains (issue 10 §1): a forwarded grant's new flows are translated by the element
/// its grant wrote, which the kernel expires with it. Conntrack NATs only a flow's first
/// packet, so an established flow keeps its translation after the element expires, as it
/// keeps its way through the gate.
fn add_nat(nft: &mut Nft, spec: &RulesetSpec) {
    for fam in &FAMS {
        nft.add_rule(TABLE, CHAIN_NAT_PREROUTING, |m| {
            flow_key(m, fam, Dport::Th);
            m.e_lookup_map(fam.nat, NFT_REG_1, NFT_REG_1);
            m.e_nat(NFT_NAT_DNAT, fam.nfproto, NFT_REG_1, Some(fam.nat_port_reg));
        });
    }
    for fam in &FAMS {
        nft.add_rule(TABLE, CHAIN_NAT_POSTROUTING, |m| {
            ct_dnat(m, true);
            flow_key(m, fam, Dport::CtOriginal);
            m.e_lookup(fam.masq, NFT_REG_1, 0);
            m.e_masq();
        });
    }
    for fam in &FAMS {
        nft.add_rule(TABLE, CHAIN_NAT_POSTROUTING, |m| {
            ct_dnat(m, true);
            flow_key(m, fam, Dport::CtOriginal);
            m.e_lookup_map(fam.snat, NFT_REG_1, NFT_REG_1);
            m.e_nat(NFT_NAT_SNAT, fam.nfproto, NFT_REG_1, None);
        });
    }
    if !spec.gateway_nets.is_empty() {
        for fam in &FAMS {
            nft.add_rule(TABLE, CHAIN_NAT_POSTROUTING, |m| gateway_masq(m, fam));
        }
        for fam in &FAMS {
            nft.add_rule(TABLE, CHAIN_NAT_POSTROUTING, |m| gateway_snat(m, fam));
        }
    }
}

/// [`add_nat`]'s maps and chains as nft text.
fn render_nat(s: &mut String, spec: &RulesetSpec) {
    // The timed maps and sets, each for IPv4 then IPv6, in the order add_nat creates them.
    type Name = fn(&Fam) -> &'static str;
    type Type = fn(&str) -> String;
    let timed: [(&str, Name, Type); 4] = [
        (
            "map",
            |f| f.nat,
            |ty| format!("{ty} . inet_proto . inet_service : {ty} . inet_service"),
        ),
        (
            "set",
            |f| f.masq,
            |ty| format!("{ty} . inet_proto . inet_service"),
        ),
        (
            "map",
            |f| f.snat,
            |ty| format!("{ty} . inet_proto . inet_service : {ty}"),
        ),
        (
            "set",
            |f| f.fwd,
            |ty| format!("{ty} . {ty} . inet_proto . inet_service"),
        ),
    ];
    for (kind, name, ty) in timed {
        for fam in &FAMS {
            let _ = writeln!(
                s,
                "\n\t{kind} {} {{\n\t\ttype {}\n\t\tflags timeout\n\t}}",
                name(fam),
                ty(fam.addr_type())
            );
        }
    }
    for fam in &FAMS {
        let ty = fam.addr_type();
        let mut targets: Vec<String> = spec
            .forward_targets
            .iter()
            .filter(|(ip, _)| ip.is_ipv6() == (fam.nfproto == NFPROTO_IPV6))
            .map(|(ip, a)| format!("{ip} . {} . {}", a.proto.name(), a.port))
            .collect();
        targets.sort();
        targets.dedup();
        let elements = if targets.is_empty() {
            String::new()
        } else {
            format!("\t\telements = {{ {} }}\n", targets.join(", "))
        };
        let _ = writeln!(
            s,
            "\n\tset {} {{\n\t\ttype {ty} . inet_proto . inet_service\n{elements}\t}}",
            fam.fwd_protected
        );
    }
}

fn render_nat_chains(s: &mut String, spec: &RulesetSpec) {
    let key = |fam: &Fam| format!("{} . meta l4proto . th dport", fam.saddr);
    let orig = |fam: &Fam| format!("{} . meta l4proto . ct original proto-dst", fam.saddr);
    let _ = writeln!(
        s,
        "\n\tchain {CHAIN_NAT_PREROUTING} {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;"
    );
    for fam in &FAMS {
        let _ = writeln!(s, "\t\tdnat {} to {} map @{}", fam.word, key(fam), fam.nat);
    }
    let _ = writeln!(
        s,
        "\t}}\n\n\tchain {CHAIN_NAT_POSTROUTING} {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;"
    );
    for fam in &FAMS {
        let _ = writeln!(
            s,
            "\t\tct status dnat {} @{} masquerade",
            orig(fam),
            fam.masq
        );
    }
    for fam in &FAMS {
        let _ = writeln!(
            s,
            "\t\tct status dnat snat {} to {} map @{}",
            fam.word,
            orig(fam),
            fam.snat
        );
    }
    if !spec.gateway_nets.is_empty() {
        for fam in &FAMS {
            let _ = writeln!(s, "\t\t{}", gateway_masq_text(fam));
        }
        for fam in &FAMS {
            let _ = writeln!(s, "\t\t{}", gateway_snat_text(fam));
        }
    }
    let _ = writeln!(s, "\t}}");
}

/// udp lengths (header included) a knock may have.
fn knock_udp_len(spec: &RulesetSpec) -> (u16, Option<(u16, u16)>) {
    let native = spec.native_len.saturating_add(UDP_HDR);
    let fwknop = spec.fwknop.then_some(FWKNOP_UDP_LEN);
    (native, fwknop)
}

/// Append every rule of `spec` to the batch being built.
pub(super) fn add_all(nft: &mut Nft, spec: &RulesetSpec) {
    let port = spec.knock_port;
    // knock: no conntrack entry per knock (a flood must not fill the ct table), wrong lengths
    // and per-source floods dropped before the queue.
    nft.add_rule(TABLE, CHAIN_KNOCK, |m| {
        udp_dport(m, port);
        m.e_notrack();
    });
    let (native, fwknop) = knock_udp_len(spec);
    nft.add_rule(TABLE, CHAIN_KNOCK, |m| {
        udp_dport(m, port);
        m.e_payload(NFT_PAYLOAD_TRANSPORT_HEADER, 4, 2, NFT_REG_1);
        m.e_cmp(NFT_REG_1, NFT_CMP_NEQ, &native.to_be_bytes());
        if let Some((lo, hi)) = fwknop {
            m.e_payload(NFT_PAYLOAD_TRANSPORT_HEADER, 4, 2, NFT_REG_1);
            m.e_range_neq(NFT_REG_1, &lo.to_be_bytes(), &hi.to_be_bytes());
        }
        m.e_verdict(NF_DROP);
    });
    // Junk dies here, before the rate sets (spoofed junk must not fill them) and the queue.
    if spec.prefilter {
        nft.add_rule(TABLE, CHAIN_KNOCK, |m| {
            udp_dport(m, port);
            m.e_payload(NFT_PAYLOAD_TRANSPORT_HEADER, 4, 2, NFT_REG_1);
            m.e_cmp(NFT_REG_1, NFT_CMP_EQ, &native.to_be_bytes());
            m.e_payload(NFT_PAYLOAD_TRANSPORT_HEADER, HINT_TH_OFFSET, 8, NFT_REG_1);
            m.e_lookup(SET_KNOCK_HINTS, NFT_REG_1, NFT_LOOKUP_F_INV);
            m.e_counter_ref(COUNTER_JUNK_NATIVE);
            m.e_verdict(NF_DROP);
        });
        if let Some((lo, hi)) = fwknop {
            for fam in &FAMS {
                nft.add_rule(TABLE, CHAIN_KNOCK, |m| {
                    udp_dport(m, port);
                    m.e_payload(NFT_PAYLOAD_TRANSPORT_HEADER, 4, 2, NFT_REG_1);
                    m.e_cmp(NFT_REG_1, NFT_CMP_GTE, &lo.to_be_bytes());
                    m.e_cmp(NFT_REG_1, NFT_CMP_LTE, &hi.to_be_bytes());
                    nfproto(m, fam.nfproto);
                    m.e_payload(
                        NFT_PAYLOAD_NETWORK_HEADER,
                        fam.saddr_off,
                        fam.saddr_len,
                        NFT_REG_1,
                    );
                    m.e_lookup(fam.fwknop_src, NFT_REG_1, NFT_LOOKUP_F_INV);
                    m.e_counter_ref(COUNTER_JUNK_FWKNOP);
                    m.e_verdict(NF_DROP);
                });
            }
        }
    }
    if spec.rate_limit > 0 {
        for fam in &FAMS {
            nft.add_rule(TABLE, CHAIN_KNOCK, |m| {
                udp_dport(m, port);
                nfproto(m, fam.nfproto);
                rate_key(m, fam, spec);
                m.e_dynset_limit(
                    fam.rate,
                    NFT_REG_1,
                    u64::from(spec.rate_limit),
                    spec.rate_limit.saturating_mul(2),
                );
                m.e_verdict(NF_DROP);
            });
            // Fail closed when the rate set is full: `nft_dynset_eval` cannot add the new
            // source's element then, so the expression breaks, the rule above does not match
            // and the knock would go on unlimited. A source the set does not hold is dropped.
            nft.add_rule(TABLE, CHAIN_KNOCK, |m| {
                udp_dport(m, port);
                nfproto(m, fam.nfproto);
                rate_key(m, fam, spec);
                m.e_lookup(fam.rate, NFT_REG_1, NFT_LOOKUP_F_INV);
                m.e_verdict(NF_DROP);
            });
        }
    }
    // gate_input: knocks to the daemon (no bypass: while it is down, knocks are dropped),
    // then the gate itself, which only ever drops.
    nft.add_rule(TABLE, CHAIN_INPUT, |m| {
        udp_dport(m, port);
        match spec.backend {
            QueueBackend::Native => m.e_queue_range(spec.queue, spec.queue_total.max(1)),
            QueueBackend::Compat => m.e_compat_nfqueue_range(spec.queue, spec.queue_total.max(1)),
        }
    });
    if spec.gate_input {
        // The port the packet carries: every flow, NATed, untracked or not.
        for fam in &FAMS {
            nft.add_rule(TABLE, CHAIN_INPUT, |m| {
                ct_not_established(m);
                nfproto(m, fam.nfproto);
                gate(m, fam, Dport::Th);
            });
        }
        // The port the client connected to, for flows the host NATed to itself: the input
        // hook sees the port after NAT, so `redirect to :2223` of a protected tcp/22 would
        // otherwise reach the service behind it ungated.
        for fam in &FAMS {
            for proto in NATED_PROTOS {
                nft.add_rule(TABLE, CHAIN_INPUT, |m| gate_nated(m, fam, proto));
            }
        }
    }
    if spec.gate_forward {
        for fam in &FAMS {
            for proto in NATED_PROTOS {
                nft.add_rule(TABLE, CHAIN_FORWARD, |m| gate_nated(m, fam, proto));
            }
        }
        if spec.nat {
            for fam in &FAMS {
                nft.add_rule(TABLE, CHAIN_FORWARD, |m| gate_routed(m, fam));
            }
        }
        if !spec.gateway_nets.is_empty() {
            for fam in &FAMS {
                nft.add_rule(TABLE, CHAIN_FORWARD, |m| gate_gateway(m, fam));
            }
        }
    }
    if spec.nat {
        add_nat(nft, spec);
    }
}

fn gate_text(fam: &Fam, dport: Dport) -> String {
    let d = dport.text();
    format!(
        "meta l4proto . {d} @{SET_PROTECTED} {} . meta l4proto . {d} != @{} drop",
        fam.saddr, fam.allow
    )
}

fn gate_nated_text(fam: &Fam, proto: Proto) -> String {
    format!(
        "ct status dnat ct state ! established,related meta l4proto {} {}",
        proto.name(),
        gate_text(fam, Dport::CtOriginal)
    )
}

/// The table as nft text, in the form `nft list table inet nfknock` prints it (nft 1.0.6),
/// which `nft -f` also reads.
pub fn render(spec: &RulesetSpec) -> String {
    let mut s = String::new();
    let port = spec.knock_port;
    let _ = writeln!(s, "table {FAMILY} {TABLE} {{");
    for name in [COUNTER_JUNK_NATIVE, COUNTER_JUNK_FWKNOP] {
        let _ = writeln!(s, "\tcounter {name} {{\n\t\tpackets 0 bytes 0\n\t}}\n");
    }
    for (name, ty) in [(SET_ALLOW_V4, "ipv4_addr"), (SET_ALLOW_V6, "ipv6_addr")] {
        let _ = writeln!(
            s,
            "\tset {name} {{\n\t\ttype {ty} . inet_proto . inet_service\n\t\tflags timeout\n\t}}\n"
        );
    }
    let _ = writeln!(
        s,
        "\tset {SET_PROTECTED} {{\n\t\ttype inet_proto . inet_service"
    );
    if !spec.protect.is_empty() {
        let elems: Vec<String> = spec
            .protect
            .iter()
            .map(|a| format!("{} . {}", a.proto.name(), a.port))
            .collect();
        let _ = writeln!(s, "\t\telements = {{ {} }}", elems.join(", "));
    }
    let _ = writeln!(s, "\t}}\n");
    for (name, ty) in [
        (SET_KNOCK_RATE_V4, "ipv4_addr"),
        (SET_KNOCK_RATE_V6, "ipv6_addr"),
    ] {
        let _ = writeln!(
            s,
            "\tset {name} {{\n\t\ttype {ty}\n\t\tsize {KNOCK_RATE_SIZE}\n\t\tflags dynamic,timeout\n\t\ttimeout {}m\n\t}}\n",
            KNOCK_RATE_TIMEOUT_MS / 60_000
        );
    }
    let _ = writeln!(
        s,
        "\tset {SET_KNOCK_HINTS} {{\n\t\ttypeof @th,{},64\n\t\tflags timeout\n\t}}\n",
        HINT_TH_OFFSET * 8
    );
    for (name, ty, v6) in [
        (SET_FWKNOP_SRC_V4, "ipv4_addr", false),
        (SET_FWKNOP_SRC_V6, "ipv6_addr", true),
    ] {
        let _ = writeln!(s, "\tset {name} {{\n\t\ttype {ty}\n\t\tflags interval");
        let elems = super::prefilter::intervals_text(&spec.fwknop_sources, v6);
        if !elems.is_empty() {
            let _ = writeln!(s, "\t\telements = {{ {} }}", elems.join(", "));
        }
        let _ = writeln!(s, "\t}}\n");
    }
    if spec.nat {
        // After the other sets, as the kernel lists them (creation order); the blank
        // line before the first chain is written below.
        s.pop();
        render_nat(&mut s, spec);
        if !spec.gateway_nets.is_empty() {
            render_gateway_sets(&mut s, spec);
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "\tchain {CHAIN_KNOCK} {{\n\t\ttype filter hook prerouting priority raw; policy accept;"
    );
    let _ = writeln!(s, "\t\tudp dport {port} notrack");
    let (native, fwknop) = knock_udp_len(spec);
    match fwknop {
        Some((lo, hi)) => {
            let _ = writeln!(
                s,
                "\t\tudp dport {port} udp length != {native} udp length != {lo}-{hi} drop"
            );
        }
        None => {
            let _ = writeln!(s, "\t\tudp dport {port} udp length != {native} drop");
        }
    }
    if spec.prefilter {
        let _ = writeln!(
            s,
            "\t\tudp dport {port} udp length {native} @th,{},64 != @{SET_KNOCK_HINTS} counter name \"{COUNTER_JUNK_NATIVE}\" drop",
            HINT_TH_OFFSET * 8
        );
        if let Some((lo, hi)) = fwknop {
            for fam in &FAMS {
                let _ = writeln!(
                    s,
                    "\t\tudp dport {port} udp length {lo}-{hi} {} != @{} counter name \"{COUNTER_JUNK_FWKNOP}\" drop",
                    fam.saddr, fam.fwknop_src
                );
            }
        }
    }
    if spec.rate_limit > 0 {
        for fam in &FAMS {
            let key = rate_key_text(fam, spec);
            let _ = writeln!(
                s,
                "\t\tudp dport {port} add @{} {{ {key} limit rate over {}/second burst {} packets }} drop",
                fam.rate,
                spec.rate_limit,
                spec.rate_limit.saturating_mul(2)
            );
            let _ = writeln!(s, "\t\tudp dport {port} {key} != @{} drop", fam.rate);
        }
    }
    let _ = writeln!(s, "\t}}\n");
    let _ = writeln!(
        s,
        "\tchain {CHAIN_INPUT} {{\n\t\ttype filter hook input priority filter - 10; policy accept;"
    );
    // nft prints the compat NFQUEUE target (xt NFQUEUE rev 3, one queue, no flags) and the
    // native queue expression alike.
    let queues = match spec.queue_total {
        0 | 1 => spec.queue.to_string(),
        n => format!(
            "{}-{}",
            spec.queue,
            u32::from(spec.queue) + u32::from(n) - 1
        ),
    };
    let _ = writeln!(s, "\t\tudp dport {port} queue num {queues}");
    if spec.gate_input {
        for fam in &FAMS {
            let _ = writeln!(
                s,
                "\t\tct state ! established,related {}",
                gate_text(fam, Dport::Th)
            );
        }
        for fam in &FAMS {
            for proto in NATED_PROTOS {
                let _ = writeln!(s, "\t\t{}", gate_nated_text(fam, proto));
            }
        }
    }
    let _ = writeln!(s, "\t}}");
    if spec.gate_forward {
        let _ = writeln!(s, "\n\tchain {CHAIN_FORWARD} {{\n\t\ttype filter hook forward priority filter - 10; policy accept;");
        for fam in &FAMS {
            for proto in NATED_PROTOS {
                let _ = writeln!(s, "\t\t{}", gate_nated_text(fam, proto));
            }
        }
        if spec.nat {
            for fam in &FAMS {
                let _ = writeln!(s, "\t\t{}", gate_routed_text(fam));
            }
        }
        if !spec.gateway_nets.is_empty() {
            for fam in &FAMS {
                let _ = writeln!(s, "\t\t{}", gate_gateway_text(fam));
            }
        }
        let _ = writeln!(s, "\t}}");
    }
    if spec.nat {
        render_nat_chains(&mut s, spec);
    }
    let _ = writeln!(s, "}}");
    s
}
