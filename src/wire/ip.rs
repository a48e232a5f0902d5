//! IPv4/IPv6 + UDP headers of a packet handed over by NFQUEUE (a raw IP packet, no link-layer
//! header). Parsing is by length and named offsets and never panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const IPV4_MIN_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const UDP_HEADER: usize = 8;
const PROTO_UDP: u8 = 17;

/// A UDP datagram as the kernel queued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

/// Why a queued packet is not a UDP datagram we can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IpError {
    #[error("truncated IP or UDP header")]
    Truncated,
    #[error("not IPv4 or IPv6")]
    Version,
    #[error("not UDP (or IPv6 extension headers)")]
    NotUdp,
    #[error("IP fragment")]
    Fragment,
    #[error("inconsistent length fields")]
    Length,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Is `addr` an IPv4-mapped IPv6 address, `::ffff:a.b.c.d` (RFC 4291 §2.5.5.2)?
///
/// Such an address names an IPv4 host *inside a dual-stack socket API*; it never belongs in an
/// IPv6 header. Linux drops it as a TCP source but, since 5.12 ("ipv6: weaken the v4mapped
/// source check"), still hands it to UDP and to the NFQUEUE before that, and IPv4's rp_filter
/// never sees it. The engine therefore refuses it as a knock's source (`mapped-source`) and
/// policy refuses it as an allow-IP: matching it as IPv4 would let anyone with an IPv6 path
/// pass for any IPv4 source. Other IPv6 forms that embed an IPv4 address (IPv4-compatible
/// `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are ordinary IPv6 addresses to nfknock:
/// never converted, matched only by IPv6 `sources`.
pub fn is_ipv4_mapped(addr: IpAddr) -> bool {
    matches!(addr, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
}

/// Parse a raw IPv4 or IPv6 packet carrying UDP.
pub fn parse(packet: &[u8]) -> Result<Datagram<'_>, IpError> {
    let first = *packet.first().ok_or(IpError::Truncated)?;
    let (src, dst, l4) = match first >> 4 {
        4 => {
            if packet.len() < IPV4_MIN_HEADER {
                return Err(IpError::Truncated);
            }
            let ihl = usize::from(first & 0x0f) * 4;
            let total = usize::from(be16(packet, 2));
            if ihl < IPV4_MIN_HEADER || total < ihl || total > packet.len() {
                return Err(IpError::Length);
            }
            // More-fragments flag or a non-zero offset: a knock is never fragmented.
            if be16(packet, 6) & 0x3fff != 0 {
                return Err(IpError::Fragment);
            }
            if packet[9] != PROTO_UDP {
                return Err(IpError::NotUdp);
            }
            let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
            let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
            (IpAddr::V4(src), IpAddr::V4(dst), &packet[ihl..total])
        }
        6 => {
            if packet.len() < IPV6_HEADER {
                return Err(IpError::Truncated);
            }
            let payload_len = usize::from(be16(packet, 4));
            if IPV6_HEADER + payload_len > packet.len() {
                return Err(IpError::Length);
            }
            if packet[6] != PROTO_UDP {
                return Err(IpError::NotUdp);
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&packet[8..24]);
            d.copy_from_slice(&packet[24..40]);
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                &packet[IPV6_HEADER..IPV6_HEADER + payload_len],
            )
        }
        _ => return Err(IpError::Version),
    };
    if l4.len() < UDP_HEADER {
        return Err(IpError::Truncated);
    }
    let udp_len = usize::from(be16(l4, 4));
    if udp_len < UDP_HEADER || udp_len > l4.len() {
        return Err(IpError::Length);
    }
    Ok(Datagram {
        src,
        dst,
        src_port: be16(l4, 0),
        dst_port: be16(l4, 2),
        payload: &l4[UDP_HEADER..udp_len],
    })
}

/// Build a raw IPv4/IPv6 + UDP packet (checksums zero). For tests, benchmarks and `verify`.
pub fn build(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let udp_len = (UDP_HEADER + payload.len()) as u16;
    let mut udp = Vec::with_capacity(udp_len as usize);
    udp.extend_from_slice(&src_port.to_be_bytes());
    udp.extend_from_slice(&dst_port.to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut p = Vec::with_capacity(IPV6_HEADER + udp.len());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = (IPV4_MIN_HEADER + udp.len()) as u16;
            p.extend_from_slice(&[0x45, 0]);
            p.extend_from_slice(&total.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0x40, 0, 64, PROTO_UDP, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let to6 = |a: IpAddr| match a {
                IpAddr::V4(v) => v.to_ipv6_mapped(),
                IpAddr::V6(v) => v,
            };
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&(udp.len() as u16).to_be_bytes());
            p.extend_from_slice(&[PROTO_UDP, 64]);
            p.extend_from_slice(&to6(s).octets());
            p.extend_from_slice(&to6(d).octets());
        }
    }
    p.extend_from_slice(&udp);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_v4_and_v6() {
        for (s, d) in [("10.0.0.2", "10.0.0.1"), ("fd00::2", "fd00::1")] {
            let (s, d): (IpAddr, IpAddr) = (s.parse().unwrap(), d.parse().unwrap());
            let pkt = build(s, d, 40000, 62201, b"hello");
            let g = parse(&pkt).unwrap();
            assert_eq!(
                (g.src, g.dst, g.src_port, g.dst_port, g.payload),
                (s, d, 40000, 62201, &b"hello"[..])
            );
        }
    }

    #[test]
    fn refuses_fragments_truncation_and_other_protocols() {
        let s: IpAddr = "10.0.0.2".parse().unwrap();
        let d: IpAddr = "10.0.0.1".parse().unwrap();
        let pkt = build(s, d, 1, 2, b"x");
        let mut frag = pkt.clone();
        frag[6] = 0x20; // more fragments
        assert_eq!(parse(&frag), Err(IpError::Fragment));
        let mut tcp = pkt.clone();
        tcp[9] = 6;
        assert_eq!(parse(&tcp), Err(IpError::NotUdp));
        for n in 0..pkt.len() {
            assert!(parse(&pkt[..n]).is_err());
        }
        assert_eq!(parse(&[0x15; 40]), Err(IpError::Version));
    }

    #[test]
    fn only_ipv4_mapped_addresses_are_mapped() {
        for a in [
            "::ffff:10.77.0.2",
            "::ffff:0.0.0.0",
            "::ffff:255.255.255.255",
        ] {
            assert!(is_ipv4_mapped(a.parse().unwrap()), "{a}");
        }
        for a in [
            "10.77.0.2",
            "::10.77.0.2",
            "64:ff9b::a4d:2",
            "2002:a4d:2::1",
            "::ffff:0:a4d:2",
            "::1",
            "::",
            "fd77::2",
        ] {
            assert!(!is_ipv4_mapped(a.parse().unwrap()), "{a}");
        }
        // The parser reports a mapped source as it is; refusing it is the engine's job.
        let s: IpAddr = "::ffff:10.77.0.2".parse().unwrap();
        let d: IpAddr = "fd77::1".parse().unwrap();
        assert_eq!(parse(&build(s, d, 1, 2, b"x")).unwrap().src, s);
    }

    /// What the kernel could queue if the ruleset were not ours (or an attacker lies in the
    /// headers): every inconsistency is named, nothing is read past the buffer.
    #[test]
    fn names_each_inconsistent_header() {
        let (s4, d4): (IpAddr, IpAddr) = ("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap());
        let (s6, d6): (IpAddr, IpAddr) = ("fd00::2".parse().unwrap(), "fd00::1".parse().unwrap());
        // IPv6 with an extension header (hop-by-hop = 0) or TCP in `next header`.
        let v6 = build(s6, d6, 1, 2, b"knock");
        for next in [0u8, 6, 44] {
            let mut p = v6.clone();
            p[6] = next;
            assert_eq!(parse(&p), Err(IpError::NotUdp), "next header {next}");
        }
        // An IPv6 payload length beyond the buffer.
        let mut p = v6.clone();
        p[4..6].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(parse(&p), Err(IpError::Length));
        // The IP header says the datagram is shorter than a UDP header.
        let v4 = build(s4, d4, 1, 2, b"knock");
        let mut p = v4.clone();
        p[2..4].copy_from_slice(&(20u16 + 7).to_be_bytes());
        assert_eq!(parse(&p), Err(IpError::Truncated));
        let mut p = v6.clone();
        p[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(parse(&p), Err(IpError::Truncated));
        // The UDP length field below 8 or beyond the IP payload.
        for udp_len in [0u16, 7, 8 + 5 + 1, u16::MAX] {
            for pkt in [&v4, &v6] {
                let mut p = pkt.clone();
                let at = if pkt[0] >> 4 == 4 { 20 } else { 40 } + 4;
                p[at..at + 2].copy_from_slice(&udp_len.to_be_bytes());
                assert_eq!(parse(&p), Err(IpError::Length), "udp length {udp_len}");
            }
        }
        // A UDP length shorter than the IP payload is the datagram (trailing bytes ignored).
        let mut p = v4.clone();
        p[24..26].copy_from_slice(&(8u16 + 2).to_be_bytes());
        assert_eq!(parse(&p).unwrap().payload, b"kn");
        // IPv4 header length below 20 bytes, or a total length below it.
        let mut p = v4.clone();
        p[0] = 0x44;
        assert_eq!(parse(&p), Err(IpError::Length));
        let mut p = v4;
        p[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(parse(&p), Err(IpError::Length));
    }

    /// `build` with an IPv4 and an IPv6 address makes an IPv6 packet carrying the IPv4 one
    /// as `::ffff:a.b.c.d`: the shape of a mapped-source knock the engine must refuse.
    #[test]
    fn build_maps_ipv4_into_an_ipv6_packet() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        let pkt = build(v4, v6, 40000, 62201, b"x");
        let g = parse(&pkt).unwrap();
        assert_eq!(g.src, "::ffff:192.0.2.7".parse::<IpAddr>().unwrap());
        assert!(is_ipv4_mapped(g.src));
        assert_eq!((g.dst, g.payload), (v6, &b"x"[..]));
        let pkt = build(v6, v4, 40000, 62201, b"x");
        let g = parse(&pkt).unwrap();
        assert_eq!(g.dst, "::ffff:192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn never_panics_on_short_garbage() {
        for len in 0..64 {
            for fill in [0u8, 0x45, 0x60, 0xff] {
                let _ = parse(&vec![fill; len]);
            }
        }
    }
}
