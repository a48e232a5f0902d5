//! The grants this daemon wrote, kept compactly with their deadlines and clients, to restore
//! them after a flush and to revoke them on a reload.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::access::{Access, GatewayTo, NatTarget, Proto};
use crate::grants::Grant;

/// Bits of a [`LiveGrants`] value that hold the index of the client the grant was made for;
/// the other 40 hold its deadline in milliseconds (34 years of uptime).
const OWNER_BITS: u32 = 24;
/// The owner of a grant whose client is no longer in the config (kept by
/// `revoke_on_reload = false`), or whose index does not fit [`OWNER_BITS`].
pub(super) const NO_OWNER: u32 = (1 << OWNER_BITS) - 1;
const MAX_DEADLINE_MS: u64 = (1 << (64 - OWNER_BITS)) - 1;

fn pack_live(deadline_ms: u64, owner: u32) -> u64 {
    deadline_ms.min(MAX_DEADLINE_MS) << OWNER_BITS | u64::from(owner.min(NO_OWNER))
}

fn live_deadline(v: u64) -> u64 {
    v >> OWNER_BITS
}

fn live_owner(v: u64) -> u32 {
    (v & u64::from(NO_OWNER)) as u32
}

/// The grants this daemon wrote, with their deadlines and the client each was made for, to
/// re-create them if someone flushes the ruleset and to revoke them when a reload no longer
/// authorises them. Compact because it holds one entry per live grant (100 000 are a few MiB):
/// IPv4 grants pack into one `u64` key, and every value is one `u64` holding the deadline
/// (milliseconds since the daemon started) and the client's index ([`pack_live`]).
pub(super) struct LiveGrants {
    base: Instant,
    /// `addr << 24 | proto << 16 | port` → `deadline << OWNER_BITS | client`.
    v4: HashMap<u64, u64>,
    v6: HashMap<(u128, u8, u16), u64>,
    /// The NAT targets of forwarded grants (few: only clients with `nat` have them), so a
    /// restore re-creates their translations too. An entry outlives its grant until the next
    /// [`LiveGrants::forget_expired`].
    nat: HashMap<(IpAddr, Access), NatTarget>,
    /// Gateway grants (few: only clients with `gateway` have them), by address and network:
    /// the packed value, the gateway, and the access whose knock opened it.
    gateways: HashMap<(IpAddr, ipnet::IpNet), (u64, GatewayTo, Access)>,
}

impl LiveGrants {
    pub(super) fn new() -> LiveGrants {
        LiveGrants {
            base: Instant::now(),
            v4: HashMap::new(),
            v6: HashMap::new(),
            nat: HashMap::new(),
            gateways: HashMap::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// Remember `grants`, each made for the client of the same position in `owners`.
    pub(super) fn record(&mut self, grants: &[Grant], owners: &[u32]) {
        let now = self.now_ms();
        for (e, &owner) in grants.iter().zip(owners) {
            let timeout_ms = u64::try_from(e.timeout.as_millis()).unwrap_or(u64::MAX);
            let v = pack_live(now.saturating_add(timeout_ms), owner);
            if let Some(g) = e.gateway {
                self.gateways.insert((e.addr, g.net), (v, g, e.access));
                continue;
            }
            let (proto, port) = (e.access.proto.number(), e.access.port);
            match e.nat {
                Some(t) => self.nat.insert((e.addr, e.access), t),
                None => self.nat.remove(&(e.addr, e.access)),
            };
            match e.addr {
                IpAddr::V4(a) => {
                    let key =
                        u64::from(u32::from(a)) << 24 | u64::from(proto) << 16 | u64::from(port);
                    self.v4.insert(key, v);
                }
                IpAddr::V6(a) => {
                    self.v6.insert((u128::from(a), proto, port), v);
                }
            }
        }
    }

    /// The NAT targets of the forwarded grants (a copy: few entries), for judging them.
    pub(super) fn nat_targets(&self) -> HashMap<(IpAddr, Access), NatTarget> {
        self.nat.clone()
    }

    pub(super) fn forget_expired(&mut self) {
        let now = self.now_ms();
        self.v4.retain(|_, v| live_deadline(*v) > now);
        self.v6.retain(|_, v| live_deadline(*v) > now);
        self.gateways.retain(|_, (v, _, _)| live_deadline(*v) > now);
        if !self.nat.is_empty() {
            let (v4, v6) = (&self.v4, &self.v6);
            self.nat
                .retain(|&(addr, a), _| live_value(v4, v6, addr, a).is_some());
        }
    }

    /// Every live grant: address, access, packed value.
    fn entries(&self) -> impl Iterator<Item = (IpAddr, Option<Access>, u64)> + '_ {
        let access = |proto: u8, port: u16| Access::new(Proto::from_number(proto)?, port);
        let v4 = self.v4.iter().map(move |(&k, &v)| {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from((k >> 24) as u32));
            (addr, access((k >> 16) as u8, k as u16), v)
        });
        let v6 = self.v6.iter().map(move |(&(a, proto, port), &v)| {
            (
                IpAddr::V6(std::net::Ipv6Addr::from(a)),
                access(proto, port),
                v,
            )
        });
        v4.chain(v6)
    }

    /// How many grants are live (not yet forgotten as expired): IPv4, IPv6.
    pub(super) fn counts(&self) -> (u64, u64) {
        let gw6 = self.gateways.keys().filter(|(a, _)| a.is_ipv6()).count() as u64;
        let gw4 = self.gateways.len() as u64 - gw6;
        (self.v4.len() as u64 + gw4, self.v6.len() as u64 + gw6)
    }

    /// Every live grant with the time it has left.
    pub(super) fn remaining(&self) -> Vec<Grant> {
        self.remaining_where(|_, _, _, _| true)
    }

    /// The live grants `keep(addr, access, client, gateway)` accepts, with the time they have
    /// left.
    pub(super) fn remaining_where(
        &self,
        mut keep: impl FnMut(IpAddr, Access, u32, Option<GatewayTo>) -> bool,
    ) -> Vec<Grant> {
        let now = self.now_ms();
        let mut out: Vec<Grant> = self
            .entries()
            .filter_map(|(addr, access, v)| {
                let (access, deadline) = (access?, live_deadline(v));
                (deadline > now && keep(addr, access, live_owner(v), None)).then_some(Grant {
                    addr,
                    access,
                    timeout: Duration::from_millis(deadline - now),
                    nat: self.nat.get(&(addr, access)).copied(),
                    gateway: None,
                })
            })
            .collect();
        for (&(addr, _), &(v, g, access)) in &self.gateways {
            let deadline = live_deadline(v);
            if deadline > now && keep(addr, access, live_owner(v), Some(g)) {
                out.push(Grant {
                    addr,
                    access,
                    timeout: Duration::from_millis(deadline - now),
                    nat: None,
                    gateway: Some(g),
                });
            }
        }
        out
    }

    /// Ask `judge(addr, access, client)` about every live grant: `Ok(new client index)` keeps
    /// it under that index, `Err(why)` forgets it. Returns the forgotten ones with the time
    /// they had left, their client and `why`; expired grants are dropped silently.
    pub(super) fn revise<R>(
        &mut self,
        mut judge: impl FnMut(IpAddr, Access, u32, Option<GatewayTo>) -> Result<u32, R>,
    ) -> Vec<(Grant, u32, R)> {
        let now = self.now_ms();
        let mut revoked = Vec::new();
        let nat = &self.nat;
        let mut one = |addr: IpAddr, proto: u8, port: u16, v: &mut u64| -> bool {
            let deadline = live_deadline(*v);
            let Some(access) = Proto::from_number(proto).and_then(|p| Access::new(p, port)) else {
                return false;
            };
            if deadline <= now {
                return false;
            }
            let owner = live_owner(*v);
            match judge(addr, access, owner, None) {
                Ok(new_owner) => {
                    *v = pack_live(deadline, new_owner);
                    true
                }
                Err(why) => {
                    let timeout = Duration::from_millis(deadline - now);
                    revoked.push((
                        Grant {
                            addr,
                            access,
                            timeout,
                            nat: nat.get(&(addr, access)).copied(),
                            gateway: None,
                        },
                        owner,
                        why,
                    ));
                    false
                }
            }
        };
        self.v4.retain(|&k, v| {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from((k >> 24) as u32));
            one(addr, (k >> 16) as u8, k as u16, v)
        });
        self.v6.retain(|&(a, proto, port), v| {
            one(IpAddr::V6(std::net::Ipv6Addr::from(a)), proto, port, v)
        });
        self.gateways.retain(|&(addr, _), (v, g, access)| {
            let deadline = live_deadline(*v);
            if deadline <= now {
                return false;
            }
            let owner = live_owner(*v);
            match judge(addr, *access, owner, Some(*g)) {
                Ok(new_owner) => {
                    *v = pack_live(deadline, new_owner);
                    true
                }
                Err(why) => {
                    revoked.push((
                        Grant {
                            addr,
                            access: *access,
                            timeout: Duration::from_millis(deadline - now),
                            nat: None,
                            gateway: Some(*g),
                        },
                        owner,
                        why,
                    ));
                    false
                }
            }
        });
        revoked
    }
}

/// The packed value of the live grant `addr . access`, if there is one.
fn live_value(
    v4: &HashMap<u64, u64>,
    v6: &HashMap<(u128, u8, u16), u64>,
    addr: IpAddr,
    a: Access,
) -> Option<u64> {
    let (proto, port) = (a.proto.number(), a.port);
    match addr {
        IpAddr::V4(v) => v4
            .get(&(u64::from(u32::from(v)) << 24 | u64::from(proto) << 16 | u64::from(port)))
            .copied(),
        IpAddr::V6(v) => v6.get(&(u128::from(v), proto, port)).copied(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_grants_round_trip_both_families_and_forget_expired_ones() {
        let mut live = LiveGrants::new();
        let e = |addr: &str, access: &str, timeout_ms| Grant {
            addr: addr.parse().unwrap(),
            access: access.parse().unwrap(),
            timeout: Duration::from_millis(timeout_ms),
            nat: None,
            gateway: None,
        };
        live.record(
            &[
                e("192.0.2.7", "tcp/22", 60_000),
                e("2001:db8::7", "udp/65535", 60_000),
                e("198.51.100.1", "tcp/1", 0),
            ],
            &[0, 1, 2],
        );
        let mut back = live.remaining();
        back.sort_by_key(|g| g.addr);
        assert_eq!(back.len(), 2, "{back:?}");
        assert_eq!(
            (back[0].addr, back[0].access),
            ("192.0.2.7".parse().unwrap(), "tcp/22".parse().unwrap())
        );
        assert_eq!(
            (back[1].addr, back[1].access),
            ("2001:db8::7".parse().unwrap(), "udp/65535".parse().unwrap())
        );
        assert!(back
            .iter()
            .all(|g| g.timeout > Duration::from_secs(59) && g.timeout <= Duration::from_secs(60)));
        live.forget_expired();
        assert_eq!(live.v4.len() + live.v6.len(), 2);
    }

    /// Each live grant remembers its client in the same `u64` as its deadline (the memory per
    /// grant stays as it was); a revision re-numbers the kept ones and hands back the others
    /// with their client and reason.
    #[test]
    fn live_grants_remember_their_client_and_a_revision_renumbers_or_revokes() {
        let mut live = LiveGrants::new();
        let _: &HashMap<u64, u64> = &live.v4;
        let _: &HashMap<(u128, u8, u16), u64> = &live.v6;
        let e = |addr: &str, access: &str| Grant {
            addr: addr.parse().unwrap(),
            access: access.parse().unwrap(),
            timeout: Duration::from_secs(60),
            nat: None,
            gateway: None,
        };
        live.record(
            &[
                e("192.0.2.7", "tcp/22"),
                e("192.0.2.8", "tcp/22"),
                e("2001:db8::7", "udp/53"),
            ],
            &[3, NO_OWNER + 5, 70_000],
        );
        let mut owners: Vec<(IpAddr, u32)> = Vec::new();
        live.remaining_where(|a, _, o, _| {
            owners.push((a, o));
            true
        });
        owners.sort();
        assert_eq!(
            owners,
            [
                ("192.0.2.7".parse().unwrap(), 3),
                ("192.0.2.8".parse().unwrap(), NO_OWNER),
                ("2001:db8::7".parse().unwrap(), 70_000),
            ]
        );
        let revoked = live.revise(|_, _, o, _| if o == 3 { Err("gone") } else { Ok(o + 1) });
        assert_eq!(revoked.len(), 1);
        let (g, owner, why) = revoked[0];
        assert_eq!(
            (g.addr, owner, why),
            ("192.0.2.7".parse().unwrap(), 3, "gone")
        );
        assert!(
            g.timeout > Duration::from_secs(59) && g.timeout <= Duration::from_secs(60),
            "{g:?}"
        );
        let left = live.remaining();
        assert_eq!(left.len(), 2);
        assert!(
            left.iter().all(|g| g.timeout > Duration::from_secs(59)),
            "{left:?}"
        );
        let mut owners: Vec<u32> = Vec::new();
        live.remaining_where(|_, _, o, _| {
            owners.push(o);
            true
        });
        owners.sort();
        assert_eq!(owners, [70_001, NO_OWNER], "NO_OWNER saturates");
        assert_eq!(pack_live(u64::MAX, u32::MAX), u64::MAX);
    }

    /// Gateway grants are kept beside the port grants: restored with their network, judged
    /// with it on a reload, forgotten when they expire.
    #[test]
    fn gateway_grants_are_kept_restored_and_revised_with_their_network() {
        use crate::access::{GatewayTo, SourceNat};
        let mut live = LiveGrants::new();
        let addr: IpAddr = "192.0.2.7".parse().unwrap();
        let ssh: Access = "tcp/22".parse().unwrap();
        let gw = |net: &str| GatewayTo {
            net: net.parse().unwrap(),
            source: SourceNat::Masquerade,
        };
        let grant = |gateway: Option<GatewayTo>, ms| Grant {
            addr,
            access: ssh,
            timeout: Duration::from_millis(ms),
            nat: None,
            gateway,
        };
        live.record(
            &[
                grant(None, 60_000),
                grant(Some(gw("10.80.0.0/24")), 60_000),
                grant(Some(gw("10.90.0.0/24")), 60_000),
                grant(Some(gw("10.99.0.0/24")), 0),
            ],
            &[0, 0, 0, 0],
        );
        let mut back: Vec<_> = live.remaining().iter().map(|g| g.gateway).collect();
        back.sort_by_key(|g| g.map(|g| g.net));
        assert_eq!(
            back,
            [None, Some(gw("10.80.0.0/24")), Some(gw("10.90.0.0/24"))]
        );
        assert_eq!(live.counts(), (4, 0), "until forgotten");
        live.forget_expired();
        assert_eq!(live.counts(), (3, 0));
        let revoked = live.revise(|_, _, o, g| match g {
            Some(g) if g.net.to_string() == "10.90.0.0/24" => Err("narrowed"),
            _ => Ok(o),
        });
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].0.gateway, Some(gw("10.90.0.0/24")));
        live.forget_expired();
        assert_eq!(live.remaining().len(), 2);
    }
}
