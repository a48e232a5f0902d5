//! The values of access.conf variables, read as fwknopd reads them: IPv4 networks (`SOURCE`,
//! `DESTINATION`), `proto/port` lists, seconds, `ACCESS_EXPIRE` dates and digest names. An
//! error is the text of a message that says what to write instead.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::access::Access;
use crate::wire::fwknop::HmacType;

/// `a.b.c.d`, `a.b.c.d/NN`, `a.b.c.d/m.m.m.m` or `ANY`. `Ok(None)` = ANY.
pub(super) fn parse_net(item: &str) -> Result<(Option<Ipv4Net>, Option<String>), String> {
    if item.eq_ignore_ascii_case("ANY") {
        return Ok((None, None));
    }
    let (addr, mask) = match item.split_once('/') {
        Some((a, m)) => (a, Some(m)),
        None => (item, None),
    };
    let ip: Ipv4Addr = addr.parse().map_err(|_| {
        if addr.contains(':') {
            format!("`{item}` is IPv6; fwknop's format is IPv4-only, so list IPv4 networks (nfknock accepts IPv6 for native clients)")
        } else {
            format!("`{item}` is not an IPv4 address or network; write a dotted quad such as `192.0.2.0/24`")
        }
    })?;
    let prefix = match mask {
        None => 32,
        Some(m) if m.contains('.') => {
            let mask: Ipv4Addr = m
                .parse()
                .map_err(|_| format!("`{item}`: `{m}` is not a netmask"))?;
            let bits = u32::from(mask);
            let ones = bits.leading_ones();
            if ones + bits.trailing_zeros() != 32 && bits != 0 {
                return Err(format!("`{item}`: netmask `{m}` is not contiguous; write the network as a prefix, e.g. `/24`"));
            }
            u8::try_from(ones).unwrap_or(32)
        }
        Some(m) => m
            .parse::<u8>()
            .ok()
            .filter(|&p| p <= 32 && !m.starts_with('+'))
            .ok_or_else(|| format!("`{item}`: `/{m}` is not a prefix length from 0 to 32"))?,
    };
    let net = Ipv4Net::new(ip, prefix).map_err(|_| format!("`{item}` is not a network"))?;
    let note = (net.trunc() != net).then(|| {
        format!(
            "`{item}` has host bits set; fwknopd masks them and matches {}, and so does the import",
            net.trunc()
        )
    });
    Ok((Some(net.trunc()), note))
}

/// A SOURCE/DESTINATION list. `Ok(None)` = ANY.
pub(super) fn parse_nets(value: &str) -> Result<(Option<Vec<Ipv4Net>>, Vec<String>), String> {
    let mut nets = Vec::new();
    let mut any = false;
    let mut notes = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        match parse_net(item)? {
            (None, _) => any = true,
            (Some(n), note) => {
                notes.extend(note);
                if !nets.contains(&n) {
                    nets.push(n);
                }
            }
        }
    }
    Ok(((!any).then_some(nets), notes))
}

/// An OPEN_PORTS / RESTRICT_PORTS list: `proto/port` items, protocol case-insensitive
/// (fwknopd `parse_proto_and_port`).
pub(super) fn parse_ports(value: &str) -> Result<Vec<Access>, String> {
    let mut out = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        let a: Access = item
            .to_ascii_lowercase()
            .parse()
            .map_err(|e| format!("`{item}` is not a proto/port: {e}"))?;
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

pub(super) fn parse_seconds(value: &str) -> Option<u64> {
    (!value.is_empty() && value.len() <= 19 && value.bytes().all(|b| b.is_ascii_digit()))
        .then(|| value.parse().ok())
        .flatten()
}

/// `ACCESS_EXPIRE MM/DD/YYYY` (fwknopd: `sscanf("%2d/%2d/%4d")`, a year < 100 is 2000 + yy).
pub(super) fn parse_expire_date(value: &str) -> Option<u64> {
    let mut parts = value.split('/');
    let (m, d, y) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let num = |s: &str, max_len: usize| -> Option<u32> {
        (!s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (month, day, year) = (num(m, 2)?, num(d, 2)?, num(y, 4)?);
    let year = if y.len() <= 2 { 2000 + year } else { year };
    crate::config::date_to_unix(i64::from(year), month, day)
}

/// `HMAC_DIGEST_TYPE`, case-insensitive as fwknopd's `hmac_digest_strtoint()`.
pub(super) fn hmac_type(value: &str) -> Option<HmacType> {
    value.parse().ok()
}
