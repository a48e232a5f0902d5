//! The NAT part of the owned table (config `nat`): the DNAT maps, the SNAT/masquerade sets and
//! maps, the routed forwards (`dnat = false`) and the targets the forward gate closes; their
//! element keys and data, writing them beside a grant, and reading them back. Created only while
//! some client has `nat` ([`RulesetSpec::nat`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::access::SourceNat;

use super::sets::{concat3, GrantKey, IfAbsent, SetDef, UDATA_CONCAT};
use super::*;

/// nft 1.0.6's userdata for a map `ADDR . inet_proto . inet_service : ADDR . inet_service`
/// (key and data byte order, the concatenations' field lengths), so `nft list` prints it.
const UDATA_NAT_MAP: &[u8] = &[
    0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x03, 0x08, 0x00, 0x04,
    0x0d, 0x00, 0x00, 0x00, 0x01, 0x00, 0x04, 0x08, 0x00, 0x04, 0x0d, 0x00, 0x00, 0x00, 0x01, 0x00,
    0x06, 0x04, 0x00, 0x00, 0x00, 0x00,
];
/// ... and for a map `ADDR . inet_proto . inet_service : ADDR`.
pub(super) const UDATA_SNAT_MAP: &[u8] = &[
    0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x01, 0x04, 0x02, 0x00, 0x00, 0x00, 0x03, 0x08, 0x00, 0x04,
    0x0d, 0x00, 0x00, 0x00, 0x01, 0x00, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00,
];

/// The NAT maps and sets, created only while some client has `nat` ([`RulesetSpec::nat`]).
pub(super) const NAT_SETS: &[SetDef] = &[
    SetDef {
        name: MAP_NAT_V4,
        id: 9,
        key_type: concat3(7, 12, 13),
        key_len: 12,
        flags: NFT_SET_MAP | NFT_SET_TIMEOUT,
        dynamic: None,
        data: Some(((7 << 6) | 13, 8)),
        userdata: UDATA_NAT_MAP,
    },
    SetDef {
        name: MAP_NAT_V6,
        id: 10,
        key_type: concat3(8, 12, 13),
        key_len: 24,
        flags: NFT_SET_MAP | NFT_SET_TIMEOUT,
        dynamic: None,
        data: Some(((8 << 6) | 13, 20)),
        userdata: UDATA_NAT_MAP,
    },
    SetDef {
        name: SET_MASQUERADE_V4,
        id: 11,
        key_type: concat3(7, 12, 13),
        key_len: 12,
        flags: NFT_SET_TIMEOUT,
        dynamic: None,
        data: None,
        userdata: UDATA_CONCAT,
    },
    SetDef {
        name: SET_MASQUERADE_V6,
        id: 12,
        key_type: concat3(8, 12, 13),
        key_len: 24,
        flags: NFT_SET_TIMEOUT,
        dynamic: None,
        data: None,
        userdata: UDATA_CONCAT,
    },
    SetDef {
        name: MAP_SNAT_V4,
        id: 13,
        key_type: concat3(7, 12, 13),
        key_len: 12,
        flags: NFT_SET_MAP | NFT_SET_TIMEOUT,
        dynamic: None,
        data: Some((7, 4)),
        userdata: UDATA_SNAT_MAP,
    },
    SetDef {
        name: MAP_SNAT_V6,
        id: 14,
        key_type: concat3(8, 12, 13),
        key_len: 24,
        flags: NFT_SET_MAP | NFT_SET_TIMEOUT,
        dynamic: None,
        data: Some((8, 16)),
        userdata: UDATA_SNAT_MAP,
    },
];

/// The data of a DNAT map element: `addr . port`, the port big-endian padded to 4 bytes
/// (v4: 8 bytes, v6: 20).
pub fn nat_data(to: SocketAddr) -> ([u8; 20], usize) {
    let mut d = [0u8; 20];
    let a = addr_bytes(&mut d, to.ip());
    d[a..a + 2].copy_from_slice(&to.port().to_be_bytes());
    (d, a + 4)
}

/// The inverse of [`nat_data`].
pub fn decode_nat_data(data: &[u8], v6: bool) -> Option<SocketAddr> {
    let a = if v6 { 16 } else { 4 };
    if data.len() != a + 4 {
        return None;
    }
    let ip = if v6 {
        IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(data.get(..16)?).ok()?))
    } else {
        IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(data.get(..4)?).ok()?))
    };
    let port = u16::from_be_bytes(data.get(a..a + 2)?.try_into().ok()?);
    Some(SocketAddr::new(ip, port))
}

/// `addr` at the start of `buf`; returns its length.
fn addr_bytes(buf: &mut [u8; 20], addr: IpAddr) -> usize {
    match addr {
        IpAddr::V4(a) => {
            buf[..4].copy_from_slice(&a.octets());
            4
        }
        IpAddr::V6(a) => {
            buf[..16].copy_from_slice(&a.octets());
            16
        }
    }
}

/// A map element's data on the stack: buffer and used length.
pub(super) struct Data(([u8; 20], usize));

impl AsRef<[u8]> for Data {
    fn as_ref(&self) -> &[u8] {
        let (d, len) = &self.0;
        d.get(..*len).unwrap_or(d)
    }
}

impl Nft {
    /// The translation elements of the forwarded grants of one family in `elems`: the DNAT
    /// map element (`source . proto . port : target . port`) and, as the target says, a
    /// masquerade element or an SNAT map element (the grant's key too), all with
    /// the grant's timeout; or their removal. Nothing for a burst without NAT grants.
    pub(super) fn nat_elements(&mut self, add: bool, elems: &[Element], v6: bool) {
        let fam = |e: &&Element| e.addr.is_ipv6() == v6 && e.nat.is_some();
        if !elems.iter().any(|e| fam(&e)) {
            return;
        }
        let (nat, masq, snat) = if v6 {
            (MAP_NAT_V6, SET_MASQUERADE_V6, MAP_SNAT_V6)
        } else {
            (MAP_NAT_V4, SET_MASQUERADE_V4, MAP_SNAT_V4)
        };
        let timeout = |e: &Element| add.then_some(e.timeout_ms);
        let all: Vec<(&Element, NatTarget)> = elems
            .iter()
            .filter(fam)
            .filter_map(|e| Some((e, e.nat?)))
            .collect();
        let (nats, routed): (Vec<_>, Vec<_>) = all.into_iter().partition(|(_, t)| t.dnat);
        let fwd = if v6 { SET_FORWARD_V6 } else { SET_FORWARD_V4 };
        for chunk in routed.chunks(ELEMS_PER_MSG) {
            self.set_elements(
                add,
                fwd,
                chunk.iter().map(|(e, t)| {
                    (
                        ForwardKey(forward_key(e.addr, t.to.ip(), e.access)),
                        timeout(e),
                    )
                }),
            );
        }
        for chunk in nats.chunks(ELEMS_PER_MSG) {
            self.map_elements(
                add,
                nat,
                chunk.iter().map(|(e, t)| {
                    let key = GrantKey(element_key(e.addr, e.access));
                    (key, Some(Data(nat_data(t.to))), timeout(e))
                }),
            );
        }
        // The source translation has the grant's key too: postrouting looks it up by the port
        // the client connected to (`ct original proto-dst`).
        let after = |e: &Element, _: &NatTarget| GrantKey(element_key(e.addr, e.access));
        let masqs: Vec<_> = nats
            .iter()
            .filter(|(_, t)| t.source == SourceNat::Masquerade)
            .collect();
        for chunk in masqs.chunks(ELEMS_PER_MSG) {
            self.set_elements(
                add,
                masq,
                chunk.iter().map(|(e, t)| (after(e, t), timeout(e))),
            );
        }
        let snats: Vec<_> = nats
            .iter()
            .filter_map(|(e, t)| match t.source {
                SourceNat::To(a) if a.is_ipv6() == v6 => Some((e, t, a)),
                _ => None,
            })
            .collect();
        for chunk in snats.chunks(ELEMS_PER_MSG) {
            self.map_elements(
                add,
                snat,
                chunk.iter().map(|(e, t, a)| {
                    let mut d = [0u8; 20];
                    let len = addr_bytes(&mut d, *a);
                    (after(e, t), Some(Data((d, len))), timeout(e))
                }),
            );
        }
    }

    /// [`Nft::set_elements`] for a map: each element with its data (on add).
    fn map_elements(
        &mut self,
        add: bool,
        set: &'static str,
        elems: impl Iterator<Item = (GrantKey, Option<Data>, Option<u64>)>,
    ) {
        self.elements_msg(add, set, elems, None)
    }

    /// The DNAT targets in the map of one family (`None` if the map is absent: no `nat`).
    pub(super) fn nat_targets(
        &mut self,
        v6: bool,
    ) -> Result<Vec<(IpAddr, Access, SocketAddr)>, NftError> {
        let map = if v6 { MAP_NAT_V6 } else { MAP_NAT_V4 };
        self.elements(map, IfAbsent::Empty, |elem| {
            let key = attr(attr(elem, NFTA_SET_ELEM_KEY)?, NFTA_DATA_VALUE)?;
            let data = attr(attr(elem, NFTA_SET_ELEM_DATA)?, NFTA_DATA_VALUE)?;
            let (addr, access) = decode_key(key, v6)?;
            Some((addr, access, decode_nat_data(data, v6)?))
        })
    }
}

/// The key of a `forward_v*` element: `source . target . proto . port`, each field padded to
/// 4 bytes (v4: 16 bytes, v6: 40); the port is the target's (`dnat = false` requires `port`
/// to be it). Returns the buffer and the used length.
pub fn forward_key(src: IpAddr, target: IpAddr, access: Access) -> ([u8; 40], usize) {
    let mut k = [0u8; 40];
    let a = match (src, target) {
        (IpAddr::V4(s), IpAddr::V4(t)) => {
            k[..4].copy_from_slice(&s.octets());
            k[4..8].copy_from_slice(&t.octets());
            8
        }
        (IpAddr::V6(s), IpAddr::V6(t)) => {
            k[..16].copy_from_slice(&s.octets());
            k[16..32].copy_from_slice(&t.octets());
            32
        }
        // Policy never pairs families (`nat-family`); an empty key matches nothing.
        _ => return (k, 0),
    };
    k[a] = access.proto.number();
    k[a + 4..a + 6].copy_from_slice(&access.port.to_be_bytes());
    (k, a + 8)
}

/// The inverse of [`forward_key`].
fn decode_forward_key(key: &[u8], v6: bool) -> Option<(IpAddr, SocketAddr, Access)> {
    let n = if v6 { 16 } else { 4 };
    if key.len() != 2 * n + 8 {
        return None;
    }
    let ip = |b: &[u8]| -> Option<IpAddr> {
        Some(if v6 {
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))
        } else {
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))
        })
    };
    let src = ip(key.get(..n)?)?;
    let dst = ip(key.get(n..2 * n)?)?;
    let proto = Proto::from_number(*key.get(2 * n)?)?;
    let port = u16::from_be_bytes(key.get(2 * n + 4..2 * n + 6)?.try_into().ok()?);
    Some((src, SocketAddr::new(dst, port), Access::new(proto, port)?))
}

/// A `forward_v*` key on the stack.
pub(super) struct ForwardKey(([u8; 40], usize));

impl AsRef<[u8]> for ForwardKey {
    fn as_ref(&self) -> &[u8] {
        let (k, len) = &self.0;
        k.get(..*len).unwrap_or(k)
    }
}

/// The routed forwards and the targets the forward gate closes (created with the NAT sets).
pub(super) const FORWARD_SETS: &[SetDef] = &[
    SetDef {
        name: SET_FORWARD_V4,
        id: 15,
        key_type: (7 << 18) | concat3(7, 12, 13),
        key_len: 16,
        flags: NFT_SET_TIMEOUT,
        dynamic: None,
        data: None,
        userdata: UDATA_CONCAT,
    },
    SetDef {
        name: SET_FORWARD_V6,
        id: 16,
        key_type: (8 << 18) | concat3(8, 12, 13),
        key_len: 40,
        flags: NFT_SET_TIMEOUT,
        dynamic: None,
        data: None,
        userdata: UDATA_CONCAT,
    },
    SetDef {
        name: SET_FORWARD_PROTECTED_V4,
        id: 17,
        key_type: concat3(7, 12, 13),
        key_len: 12,
        flags: 0,
        dynamic: None,
        data: None,
        userdata: UDATA_CONCAT,
    },
    SetDef {
        name: SET_FORWARD_PROTECTED_V6,
        id: 18,
        key_type: concat3(8, 12, 13),
        key_len: 24,
        flags: 0,
        dynamic: None,
        data: None,
        userdata: UDATA_CONCAT,
    },
];

impl Nft {
    /// The routed grants of one family's `forward_v*` set (none if the set is absent).
    pub(super) fn forwards(&mut self, v6: bool) -> Result<Vec<LiveElement>, NftError> {
        let set = if v6 { SET_FORWARD_V6 } else { SET_FORWARD_V4 };
        self.elements(set, IfAbsent::Empty, |elem| {
            let key = attr(attr(elem, NFTA_SET_ELEM_KEY)?, NFTA_DATA_VALUE)?;
            let (addr, to, access) = decode_forward_key(key, v6)?;
            Some(LiveElement {
                addr,
                access,
                timeout_ms: attr(elem, NFTA_SET_ELEM_TIMEOUT)
                    .and_then(be_u64)
                    .unwrap_or(0),
                expires_ms: attr(elem, NFTA_SET_ELEM_EXPIRATION)
                    .and_then(be_u64)
                    .unwrap_or(0),
                nat: Some(NatTarget {
                    to,
                    source: SourceNat::Keep,
                    dnat: false,
                }),
                gateway: None,
            })
        })
    }
}
