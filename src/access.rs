//! `proto/port` pairs: what a knock asks for, what a client may have, what the gate protects.
//!
//! The text form is fwknop's: lowercase `tcp/22`, `udp/53`. Parsing never panics.
//! [`NatTarget`]: where a forwarded grant leads (config `nat`, fwknop `FORCE_NAT`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Transport protocol of a gated service. The discriminant is the IP protocol number, which is
/// also the byte stored in the nftables `inet_proto` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Proto {
    Tcp = 6,
    Udp = 17,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The protocol for an IP protocol number, if it is one we gate.
    pub fn from_number(n: u8) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One `proto/port` pair. The port is never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Access {
    pub proto: Proto,
    pub port: u16,
}

impl Access {
    /// `None` when `port` is 0.
    pub fn new(proto: Proto, port: u16) -> Option<Access> {
        (port != 0).then_some(Access { proto, port })
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.proto.name(), self.port)
    }
}

/// Why a `proto/port` string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AccessParseError {
    #[error("expected `proto/port`, e.g. `tcp/22`")]
    Shape,
    #[error("protocol must be `tcp` or `udp`")]
    Proto,
    #[error("port must be a number from 1 to 65535")]
    Port,
}

impl FromStr for Access {
    type Err = AccessParseError;

    /// Strict: lowercase `tcp`/`udp`, a slash, 1 to 5 ASCII digits without a leading zero,
    /// value 1..=65535.
    fn from_str(s: &str) -> Result<Access, AccessParseError> {
        let (proto, port) = s.split_once('/').ok_or(AccessParseError::Shape)?;
        let proto = match proto {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return Err(AccessParseError::Proto),
        };
        if port.is_empty()
            || port.len() > 5
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.starts_with('0')
        {
            return Err(AccessParseError::Port);
        }
        let port: u32 = port.parse().map_err(|_| AccessParseError::Port)?;
        let port = u16::try_from(port).map_err(|_| AccessParseError::Port)?;
        Access::new(proto, port).ok_or(AccessParseError::Port)
    }
}

/// Parse a comma-separated list such as `tcp/22,udp/53`. Empty items are refused.
pub fn parse_list(s: &str) -> Result<Vec<Access>, AccessParseError> {
    s.split(',').map(|item| item.trim().parse()).collect()
}

/// Render a list as `tcp/22,udp/53`.
pub fn format_list(list: &[Access]) -> String {
    list.iter()
        .map(Access::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Where a forwarded grant's new flows are translated to (a `nat` entry of the config, carried
/// by the grant to the backend): the destination after DNAT and what the source becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NatTarget {
    /// The internal host and port (or this host's own address, for local NAT).
    pub to: SocketAddr,
    pub source: SourceNat,
    /// `true`: the client connects to this host's port and its flow is translated to `to`.
    /// `false` (fwknop `DISABLE_DNAT`): the client connects to `to` itself, routed through
    /// this host, whose forward gate lets exactly that flow through.
    pub dnat: bool,
}

/// Where a gateway grant (config `gateway`, fwknop `FORWARD_ALL`) lets its address forward
/// to: every new flow, any protocol and port, into `net`; its source rewritten as `source` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GatewayTo {
    pub net: ipnet::IpNet,
    pub source: SourceNat,
}

impl fmt::Display for GatewayTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.net)?;
        match self.source {
            SourceNat::Keep => Ok(()),
            SourceNat::Masquerade => write!(f, " (masquerade)"),
            SourceNat::To(a) => write!(f, " (snat {a})"),
        }
    }
}

/// What the source address of a forwarded flow becomes on its way to the internal host
/// (fwknop `FORCE_SNAT` / `FORCE_MASQUERADE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SourceNat {
    /// Kept: the internal host must route its answers back through this host.
    #[default]
    Keep,
    /// The address of the interface the flow leaves by (`masquerade`).
    Masquerade,
    /// This address (`snat to`); of the target's family.
    To(IpAddr),
}

impl fmt::Display for NatTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to)?;
        if !self.dnat {
            write!(f, " (routed, no DNAT)")?;
        }
        match self.source {
            SourceNat::Keep => Ok(()),
            SourceNat::Masquerade => write!(f, " (masquerade)"),
            SourceNat::To(a) => write!(f, " (snat {a})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let a: Access = "tcp/22".parse().unwrap();
        assert_eq!(
            a,
            Access {
                proto: Proto::Tcp,
                port: 22
            }
        );
        assert_eq!(a.to_string(), "tcp/22");
        assert_eq!("udp/65535".parse::<Access>().unwrap().port, 65535);
    }

    #[test]
    fn refuses_what_fwknop_clients_refuse() {
        for bad in [
            "tcp/0",
            "TCP/22",
            "icmp/0",
            "none/0",
            "tcp/65536",
            "tcp/",
            "tcp",
            "/22",
            "tcp/022",
            "tcp/+22",
            "tcp/ 22",
            "tcp/999999",
            "",
        ] {
            assert!(bad.parse::<Access>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn list_round_trip() {
        let l = parse_list("tcp/22,udp/53").unwrap();
        assert_eq!(format_list(&l), "tcp/22,udp/53");
        assert!(parse_list("tcp/22,").is_err());
    }
}
