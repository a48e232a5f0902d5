//! A client's `nat` list: which of its allowed ports a grant forwards, and to where (fwknop
//! `FORCE_NAT`, `FORCE_SNAT`, `FORCE_MASQUERADE`, and the targets NAT access messages may ask
//! for). Pure: checks values, reads nothing.
//!
//! ```toml
//! allow = ["tcp/2222"]
//! nat = [
//!   { port = "tcp/2222", to = "192.168.10.2:22" },                     # IPv4 knocks
//!   { port = "tcp/2222", to = "[fd10::2]:22", masquerade = true },     # IPv6 knocks
//!   { port = "tcp/2200", to = ":22" },                                 # local: this host's :22
//!   { port = "tcp/80", to = "192.168.10.5:80", dnat = false },         # routed, not translated
//! ]
//! ```
//!
//! Each `port` must be in the client's `allow` (a forwarded port is still a granted port: the
//! gate protects it, a knock asks for it); at most one target per port and address family. The
//! packet never chooses a destination: a NAT access message may only name a target listed here.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use toml::Spanned;

use crate::access::{Access, SourceNat};
use crate::config::raw::{join, Sink};
use crate::config::{NatRule, NatTo};

/// One `nat` entry as written.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNat {
    port: Spanned<String>,
    to: Spanned<String>,
    masquerade: Option<bool>,
    snat: Option<Spanned<String>>,
    dnat: Option<bool>,
}

/// `nat = [...]` → rules; every bad entry is reported with its line. `allow` is the client's
/// checked allow list.
pub(super) fn nat_rules(
    sink: &mut Sink<'_>,
    prefix: &str,
    raw: Option<&Spanned<Vec<RawNat>>>,
    allow: &[(Access, Range<usize>)],
) -> Vec<NatRule> {
    let Some(list) = raw else {
        return Vec::new();
    };
    let mut out: Vec<NatRule> = Vec::new();
    for (i, r) in list.get_ref().iter().enumerate() {
        let key = |k: &str| join(prefix, &format!("nat[{}].{k}", i + 1));
        let access = match r.port.get_ref().parse::<Access>() {
            Ok(a) => Some(a),
            Err(e) => {
                sink.at(
                    Some(r.port.span()),
                    &key("port"),
                    format!(
                        "`{}` is not an access: {e}; name the port the client connects to, e.g. `port = \"tcp/2222\"`",
                        r.port.get_ref()
                    ),
                );
                None
            }
        };
        let to = match parse_to(r.to.get_ref()) {
            Ok(t) => Some(t),
            Err(why) => {
                sink.at(Some(r.to.span()), &key("to"), why);
                None
            }
        };
        let source = match (r.masquerade.unwrap_or(false), &r.snat) {
            (true, Some(s)) => {
                sink.at(
                    Some(s.span()),
                    &key("snat"),
                    "`snat` and `masquerade = true` exclude each other; keep one",
                );
                None
            }
            (true, None) => Some(SourceNat::Masquerade),
            (false, None) => Some(SourceNat::Keep),
            (false, Some(s)) => match s.get_ref().parse::<IpAddr>() {
                Ok(a) => Some(SourceNat::To(a)),
                Err(_) => {
                    sink.at(
                        Some(s.span()),
                        &key("snat"),
                        format!(
                            "`{}` is not an IP address; write the address forwarded flows leave with, e.g. `snat = \"192.168.10.1\"`",
                            s.get_ref()
                        ),
                    );
                    None
                }
            },
        };
        let (Some(access), Some(to), Some(source)) = (access, to, source) else {
            continue;
        };
        if !allow.iter().any(|(a, _)| *a == access) {
            sink.at(
                Some(r.port.span()),
                &key("port"),
                format!("{access} is not in this client's `allow`; add \"{access}\" to `allow` (a forwarded port is granted like any other)"),
            );
            continue;
        }
        if let (NatTo::Host(t), SourceNat::To(s)) = (to, source) {
            if t.is_ipv4() != s.is_ipv4() {
                sink.at(
                    Some(r.to.span()),
                    &key("snat"),
                    format!("`snat = \"{s}\"` is not of the family of the target {t}; use an address of the same family"),
                );
                continue;
            }
        }
        let dnat = r.dnat.unwrap_or(true);
        if !dnat {
            // No translation: the client connects to the target itself.
            let problem = match to {
                NatTo::Local(_) => Some("`dnat = false` needs a target on another host (`to = \"ADDRESS:PORT\"`): a port of this host is opened with `allow`".to_string()),
                NatTo::Host(t) if t.port() != access.port => Some(format!("with `dnat = false` the client connects to {t} itself, so `port` must be {}/{}", access.proto.name(), t.port())),
                _ if source != SourceNat::Keep => Some("`snat`/`masquerade` rewrite only translated flows; remove them or drop `dnat = false`".to_string()),
                _ => None,
            };
            if let Some(p) = problem {
                sink.at(Some(r.to.span()), &key("dnat"), p);
                continue;
            }
        }
        let rule = NatRule {
            access,
            to,
            source,
            dnat,
        };
        if let Some(prev) = out
            .iter()
            .find(|p| p.access == access && p.same_family(&rule))
        {
            sink.at(
                Some(r.port.span()),
                &key("port"),
                format!(
                    "{access} already forwards to {} for this family; give each port one target per address family",
                    prev.to
                ),
            );
            continue;
        }
        out.push(rule);
    }
    out
}

/// `host:port`, `[v6]:port`, or `:port` (this host).
fn parse_to(text: &str) -> Result<NatTo, String> {
    let bad = || {
        format!(
            "`{text}` is not a NAT target; write `ADDRESS:PORT` (e.g. \"192.168.10.2:22\", \"[fd10::2]:22\") or `:PORT` for a port of this host; host names are not resolved"
        )
    };
    if let Some(port) = text.strip_prefix(':') {
        return match port.parse::<u16>() {
            Ok(p) if p != 0 && !port.starts_with('0') => Ok(NatTo::Local(p)),
            _ => Err(bad()),
        };
    }
    let sa: SocketAddr = text.parse().map_err(|_| bad())?;
    let ip = sa.ip();
    if sa.port() == 0 || ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
        return Err(format!(
            "`{text}` cannot be forwarded to: name a unicast address other than loopback and a port from 1 to 65535"
        ));
    }
    if let IpAddr::V6(v6) = ip {
        if v6.to_ipv4_mapped().is_some() {
            return Err(format!(
                "`{text}` is an IPv4-mapped IPv6 address; write the IPv4 address itself"
            ));
        }
    }
    Ok(NatTo::Host(sa))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_addresses_with_ports_or_a_local_port() {
        assert_eq!(
            parse_to("192.168.10.2:22"),
            Ok(NatTo::Host("192.168.10.2:22".parse().unwrap()))
        );
        assert_eq!(
            parse_to("[fd10::2]:22"),
            Ok(NatTo::Host("[fd10::2]:22".parse().unwrap()))
        );
        assert_eq!(parse_to(":22"), Ok(NatTo::Local(22)));
        for bad in [
            "host:22",
            "192.168.10.2",
            "192.168.10.2:0",
            ":0",
            ":022",
            "0.0.0.0:22",
            "127.0.0.1:22",
            "[::ffff:10.0.0.1]:22",
            "",
        ] {
            assert!(parse_to(bad).is_err(), "{bad}");
        }
    }
}
