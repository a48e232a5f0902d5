//! Gateway grants (config `gateway`, fwknop `FORWARD_ALL`): their sets and elements. A grant
//! is `source . network` in the timed interval set of its family (and in the masquerade set
//! too when its flows are masqueraded); the forward gate ([`super::rules`]) drops new flows
//! into the gateway networks ([`SET_GATEWAY_NETS_V4`]/`_V6`, the union of every client's) from
//! any source whose `source . destination` no element covers. Builds messages; no I/O.

use std::net::IpAddr;

use ipnet::IpNet;

use super::expr::data_value;
use super::nat::UDATA_SNAT_MAP;
use super::sets::{IfAbsent, SetDef, UDATA_ADDR, UDATA_CONCAT};
use super::*;
use crate::access::{Access, GatewayTo, SourceNat};

/// Flags of a timed `source . network` set: what nft 1.0.6 sends for `type ADDR . ADDR;
/// flags interval,timeout` (checked with strace): the kernel picks its pipapo set type.
const GRANT_FLAGS: u32 = NFT_SET_INTERVAL | NFT_SET_TIMEOUT | NFT_SET_CONCAT;

/// The gateway sets, created while some client has `gateway` ([`RulesetSpec::gateway_nets`]).
pub(super) const GATEWAY_SETS: &[SetDef] = &[
    SetDef {
        name: SET_GATEWAY_NETS_V4,
        id: 19,
        key_type: 7,
        key_len: 4,
        flags: NFT_SET_INTERVAL,
        dynamic: None,
        data: None,
        userdata: UDATA_ADDR,
    },
    SetDef {
        name: SET_GATEWAY_NETS_V6,
        id: 20,
        key_type: 8,
        key_len: 16,
        flags: NFT_SET_INTERVAL,
        dynamic: None,
        data: None,
        userdata: UDATA_ADDR,
    },
    SetDef {
        name: SET_GATEWAY_V4,
        id: 21,
        key_type: (7 << 6) | 7,
        key_len: 8,
        flags: GRANT_FLAGS,
        dynamic: None,
        data: None,
        userdata: UDATA_CONCAT,
    },
    SetDef {
        name: SET_GATEWAY_V6,
        id: 22,
        key_type: (8 << 6) | 8,
        key_len: 32,
        flags: GRANT_FLAGS,
        dynamic: None,
        data: None,
        userdata: UDATA_CONCAT,
    },
    SetDef {
        name: SET_GATEWAY_MASQUERADE_V4,
        id: 23,
        key_type: (7 << 6) | 7,
        key_len: 8,
        flags: GRANT_FLAGS,
        dynamic: None,
        data: None,
        userdata: UDATA_CONCAT,
    },
    SetDef {
        name: SET_GATEWAY_MASQUERADE_V6,
        id: 24,
        key_type: (8 << 6) | 8,
        key_len: 32,
        flags: GRANT_FLAGS,
        dynamic: None,
        data: None,
        userdata: UDATA_CONCAT,
    },
    SetDef {
        name: MAP_GATEWAY_SNAT_V4,
        id: 25,
        key_type: (7 << 6) | 7,
        key_len: 8,
        flags: GRANT_FLAGS | NFT_SET_MAP,
        dynamic: None,
        data: Some((7, 4)),
        userdata: UDATA_SNAT_MAP,
    },
    SetDef {
        name: MAP_GATEWAY_SNAT_V6,
        id: 26,
        key_type: (8 << 6) | 8,
        key_len: 32,
        flags: GRANT_FLAGS | NFT_SET_MAP,
        dynamic: None,
        data: Some((8, 16)),
        userdata: UDATA_SNAT_MAP,
    },
];

/// A pipapo key on the stack: buffer and used length.
pub type RangeKey = ([u8; 32], usize);

/// `source . network` as the first and the last key of a pipapo element: the source, then
/// the network's first (or last) address; each field its address length (v4: 8 bytes, v6: 32).
/// `None` when the families differ (policy never pairs them).
pub fn gateway_keys(src: IpAddr, net: IpNet) -> Option<(RangeKey, RangeKey)> {
    let key = |last: IpAddr| -> Option<RangeKey> {
        let mut k = [0u8; 32];
        match (src, last) {
            (IpAddr::V4(s), IpAddr::V4(l)) => {
                k[..4].copy_from_slice(&s.octets());
                k[4..8].copy_from_slice(&l.octets());
                Some((k, 8))
            }
            (IpAddr::V6(s), IpAddr::V6(l)) => {
                k[..16].copy_from_slice(&s.octets());
                k[16..].copy_from_slice(&l.octets());
                Some((k, 32))
            }
            _ => None,
        }
    };
    Some((key(net.network())?, key(net.broadcast())?))
}

impl Nft {
    /// Fill the gateway networks' sets with `nets` (flush + add, in the batch being built).
    pub(super) fn gateway_nets(&mut self, nets: &[IpNet]) {
        for (set, v6) in [(SET_GATEWAY_NETS_V4, false), (SET_GATEWAY_NETS_V6, true)] {
            self.interval_set(set, nets, v6);
        }
    }

    /// Add (with their timeouts) or remove the gateway grants of one family in `elems`: the
    /// `source . network` element, and the same in the masquerade set for a masqueraded one.
    /// Nothing for a burst without gateway grants.
    pub(super) fn gateway_elements(&mut self, add: bool, elems: &[Element], v6: bool) {
        let of_fam = |e: &&Element| e.addr.is_ipv6() == v6 && e.gateway.is_some();
        if !elems.iter().any(|e| of_fam(&e)) {
            return;
        }
        let (set, masq, snat) = if v6 {
            (
                SET_GATEWAY_V6,
                SET_GATEWAY_MASQUERADE_V6,
                MAP_GATEWAY_SNAT_V6,
            )
        } else {
            (
                SET_GATEWAY_V4,
                SET_GATEWAY_MASQUERADE_V4,
                MAP_GATEWAY_SNAT_V4,
            )
        };
        let all: Vec<&Element> = elems.iter().filter(of_fam).collect();
        for chunk in all.chunks(ELEMS_PER_MSG) {
            self.range_elements(add, set, chunk);
        }
        let masqs: Vec<&Element> = all
            .iter()
            .copied()
            .filter(|e| e.gateway.is_some_and(|g| g.source == SourceNat::Masquerade))
            .collect();
        for chunk in masqs.chunks(ELEMS_PER_MSG) {
            self.range_elements(add, masq, chunk);
        }
        let snats: Vec<&Element> = all
            .iter()
            .copied()
            .filter(|e| {
                e.gateway
                    .is_some_and(|g| matches!(g.source, SourceNat::To(a) if a.is_ipv6() == v6))
            })
            .collect();
        for chunk in snats.chunks(ELEMS_PER_MSG) {
            self.range_elements(add, snat, chunk);
        }
    }

    /// One element message of `source . network` ranges for a pipapo `set`: key and key end,
    /// with the timeout (and expiration, so a re-knock restarts the timer) when adding.
    fn range_elements(&mut self, add: bool, set: &'static str, elems: &[&Element]) {
        let (msg, flags, op) = if add {
            (NFT_MSG_NEWSETELEM, NLM_F_CREATE, "add elements to")
        } else {
            (NFT_MSG_DELSETELEM, 0, "delete elements from")
        };
        let (s, m) = self.begin(msg, flags, NFPROTO_INET, op, Object::Set(set));
        m.attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
        m.attr_str(NFTA_SET_ELEM_LIST_SET, set);
        let list = m.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
        for e in elems {
            let Some(((first, n), (last, _))) = e.gateway.and_then(|g| gateway_keys(e.addr, g.net))
            else {
                continue;
            };
            let el = m.nest(NFTA_LIST_ELEM);
            data_value(m, NFTA_SET_ELEM_KEY, first.get(..n).unwrap_or(&first));
            data_value(m, NFTA_SET_ELEM_KEY_END, last.get(..n).unwrap_or(&last));
            if add {
                m.attr_u64(NFTA_SET_ELEM_TIMEOUT, e.timeout_ms);
                m.attr_u64(NFTA_SET_ELEM_EXPIRATION, e.timeout_ms);
                // The access whose knock opened it, as an nft comment (`nft list` shows it;
                // `nfknock status` reads it back): the kernel keeps no other trace of it.
                let (c, n) = access_comment(e.access);
                m.attr(NFTA_SET_ELEM_USERDATA, c.get(..n).unwrap_or(&c));
                // In the SNAT map: the address the flows leave with.
                if let Some(SourceNat::To(a)) = e
                    .gateway
                    .map(|g| g.source)
                    .filter(|_| set == MAP_GATEWAY_SNAT_V4 || set == MAP_GATEWAY_SNAT_V6)
                {
                    match a {
                        IpAddr::V4(a) => data_value(m, NFTA_SET_ELEM_DATA, &a.octets()),
                        IpAddr::V6(a) => data_value(m, NFTA_SET_ELEM_DATA, &a.octets()),
                    }
                }
            }
            m.nest_end(el);
        }
        m.nest_end(list);
        m.end(s);
    }
}

/// `access` as libnftnl's comment TLV: type, length (with the NUL), `proto/port`, NUL.
fn access_comment(access: Access) -> ([u8; 16], usize) {
    let text = access.to_string(); // at most "tcp/65535"
    let mut c = [0u8; 16];
    let n = text.len().min(12);
    c[0] = NFTNL_UDATA_SET_ELEM_COMMENT;
    c[1] = n as u8 + 1;
    c[2..2 + n].copy_from_slice(&text.as_bytes()[..n]);
    (c, n + 3)
}

/// The access in an element's comment, if it is one of ours.
fn comment_access(udata: &[u8]) -> Option<Access> {
    let (&ty, rest) = udata.split_first()?;
    let (&len, rest) = rest.split_first()?;
    let text = rest.get(..usize::from(len))?.strip_suffix(&[0])?;
    (ty == NFTNL_UDATA_SET_ELEM_COMMENT)
        .then(|| std::str::from_utf8(text).ok()?.parse().ok())
        .flatten()
}

/// The network a pipapo element's first and last address span, if it is a prefix.
fn span_net(first: IpAddr, last: IpAddr) -> Option<IpNet> {
    let (a, b, bits) = match (first, last) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return None,
    };
    let host = 128 - (a ^ b).leading_zeros();
    let net = IpNet::new(first, (bits - host) as u8).ok()?;
    (net.network() == first && net.broadcast() == last).then_some(net)
}

impl Nft {
    /// The gateway grants of one family's set (none if the set is absent: no `gateway`).
    pub(super) fn gateways(&mut self, v6: bool) -> Result<Vec<LiveElement>, NftError> {
        let set = if v6 { SET_GATEWAY_V6 } else { SET_GATEWAY_V4 };
        let n = if v6 { 16 } else { 4 };
        let ip = |b: &[u8]| -> Option<IpAddr> {
            Some(if v6 {
                IpAddr::V6(<[u8; 16]>::try_from(b).ok()?.into())
            } else {
                IpAddr::V4(<[u8; 4]>::try_from(b).ok()?.into())
            })
        };
        self.elements(set, IfAbsent::Empty, |elem| {
            let key = attr(attr(elem, NFTA_SET_ELEM_KEY)?, NFTA_DATA_VALUE)?;
            let end = attr(attr(elem, NFTA_SET_ELEM_KEY_END)?, NFTA_DATA_VALUE)?;
            if key.len() != 2 * n || end.len() != 2 * n || key.get(..n) != end.get(..n) {
                return None;
            }
            let net = span_net(ip(key.get(n..)?)?, ip(end.get(n..)?)?)?;
            Some(LiveElement {
                addr: ip(key.get(..n)?)?,
                access: comment_access(attr(elem, NFTA_SET_ELEM_USERDATA)?)?,
                timeout_ms: attr(elem, NFTA_SET_ELEM_TIMEOUT)
                    .and_then(be_u64)
                    .unwrap_or(0),
                expires_ms: attr(elem, NFTA_SET_ELEM_EXPIRATION)
                    .and_then(be_u64)
                    .unwrap_or(0),
                nat: None,
                gateway: Some(GatewayTo {
                    net,
                    source: SourceNat::Keep,
                }),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_carry_the_access_and_ranges_read_back_as_networks() {
        for a in ["tcp/22", "udp/65535", "tcp/1"] {
            let a: Access = a.parse().unwrap();
            let (c, n) = access_comment(a);
            assert_eq!(comment_access(&c[..n]), Some(a));
        }
        assert_eq!(comment_access(&[0, 3, b'x', b'y', 0]), None);
        assert_eq!(comment_access(&[0, 9, b't']), None, "short");
        assert_eq!(comment_access(&[]), None);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            span_net(ip("10.80.0.0"), ip("10.80.0.255")),
            Some("10.80.0.0/24".parse().unwrap())
        );
        assert_eq!(
            span_net(ip("10.80.0.7"), ip("10.80.0.7")),
            Some("10.80.0.7/32".parse().unwrap())
        );
        assert_eq!(
            span_net(ip("fd80::"), ip("fd80::ffff:ffff:ffff:ffff")),
            Some("fd80::/64".parse().unwrap())
        );
        assert_eq!(span_net(ip("10.80.0.1"), ip("10.80.0.255")), None);
        assert_eq!(span_net(ip("10.80.0.0"), ip("fd80::")), None);
    }

    #[test]
    fn a_gateway_key_spans_the_network_after_the_source() {
        let ((first, n), (last, m)) =
            gateway_keys("10.0.0.2".parse().unwrap(), "10.80.0.0/24".parse().unwrap()).unwrap();
        assert_eq!((n, m), (8, 8));
        assert_eq!(&first[..8], &[10, 0, 0, 2, 10, 80, 0, 0]);
        assert_eq!(&last[..8], &[10, 0, 0, 2, 10, 80, 0, 255]);
        let ((first, n), (last, _)) =
            gateway_keys("fd00::2".parse().unwrap(), "fd80::/64".parse().unwrap()).unwrap();
        assert_eq!(n, 32);
        assert_eq!(first[31], 0);
        assert_eq!(&last[24..32], &[0xff; 8]);
        assert!(gateway_keys("10.0.0.2".parse().unwrap(), "fd80::/64".parse().unwrap()).is_none());
    }
}
