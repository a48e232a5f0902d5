//! Stage-2 helpers shared by the server and the client config: ranges, lists of accesses and
//! networks, dates. Each reports into the [`Sink`] and returns a usable value (or `None`), so
//! checking goes on after a problem.

use std::net::IpAddr;

use ipnet::IpNet;
use toml::Spanned;

use super::raw::{join, Sink, SpannedList};
use crate::access::Access;

/// An integer key within `lo..=hi`; `default` when absent, `None` when out of range.
pub(crate) fn int_in(
    sink: &mut Sink<'_>,
    value: &Option<Spanned<i64>>,
    key: &str,
    range: (i64, i64),
    default: i64,
    what: &str,
) -> Option<i64> {
    let Some(v) = value else { return Some(default) };
    let (lo, hi) = range;
    let n = *v.get_ref();
    if (lo..=hi).contains(&n) {
        Some(n)
    } else {
        sink.at(
            Some(v.span()),
            key,
            format!("{n} is out of range: {what} must be from {lo} to {hi}"),
        );
        None
    }
}

/// A list of `proto/port` strings; each bad item is reported on its own line.
/// Duplicates are dropped, order kept.
pub(crate) fn accesses(
    sink: &mut Sink<'_>,
    list: &SpannedList,
    key: &str,
) -> Vec<(Access, std::ops::Range<usize>)> {
    let mut out: Vec<(Access, std::ops::Range<usize>)> = Vec::new();
    for (i, item) in list.get_ref().iter().enumerate() {
        match item.get_ref().parse::<Access>() {
            Ok(a) => {
                if !out.iter().any(|(b, _)| *b == a) {
                    out.push((a, item.span()));
                }
            }
            Err(e) => sink.at(
                Some(item.span()),
                &format!("{key}[{}]", i + 1),
                format!("`{}` is not an access: {e}", item.get_ref()),
            ),
        }
    }
    out
}

/// A list of networks: CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a plain address (one host).
pub(crate) fn networks(sink: &mut Sink<'_>, list: &SpannedList, key: &str) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (i, item) in list.get_ref().iter().enumerate() {
        let k = format!("{key}[{}]", i + 1);
        match network(item.get_ref()) {
            Ok(net) => {
                if !out.contains(&net) {
                    out.push(net);
                }
            }
            Err(msg) => sink.at(Some(item.span()), &k, msg),
        }
    }
    out
}

/// One network. Host bits set (`10.1.2.3/24`) is refused: it is either a typo for the network
/// or for the single host, and a firewall should not guess which.
pub(crate) fn network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    let net: IpNet = text.parse().map_err(|_| {
        format!("`{text}` is neither an address nor a network; write e.g. `203.0.113.0/24`, `2001:db8::/32` or `198.51.100.7`")
    })?;
    if net.trunc() != net {
        let host_len = match net {
            IpNet::V4(_) => 32,
            IpNet::V6(_) => 128,
        };
        return Err(format!(
            "`{text}` has host bits set; write `{}` for the network or `{}/{host_len}` for the one address",
            net.trunc(),
            net.addr()
        ));
    }
    Ok(net)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: u32) -> u32 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Unix time of UTC midnight starting a date, for years 1970..=9999.
pub(crate) fn date_to_unix(year: i64, month: u32, day: u32) -> Option<u64> {
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
    {
        return None;
    }
    u64::try_from(days_from_civil(year, month, day) * 86_400).ok()
}

/// Parse exactly `YYYY-MM-DD`.
pub(crate) fn parse_date(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let year = digits(0..4)?;
    let month = u32::try_from(digits(5..7)?).ok()?;
    let day = u32::try_from(digits(8..10)?).ok()?;
    date_to_unix(year, month, day)
}

/// `expires` as a string or a bare TOML date → Unix time of that UTC midnight.
pub(crate) fn expires(sink: &mut Sink<'_>, value: &Spanned<toml::Value>, key: &str) -> Option<u64> {
    const FIX: &str = "write a date as `expires = \"2027-01-31\"` (UTC midnight) or a Unix time as `expires_at = 1801353600`";
    let parsed = match value.get_ref() {
        toml::Value::String(s) => parse_date(s),
        toml::Value::Datetime(dt) => match (dt.date, dt.time, dt.offset) {
            (Some(d), None, None) => {
                date_to_unix(i64::from(d.year), u32::from(d.month), u32::from(d.day))
            }
            _ => None,
        },
        _ => None,
    };
    if parsed.is_none() {
        sink.at(
            Some(value.span()),
            key,
            format!("`{}` is not a date; {FIX}", value.get_ref()),
        );
    }
    parsed
}

/// A dotted key for the `n`-th (1-based) item of an array of tables.
pub(crate) fn indexed(prefix: &str, n: usize, key: &str) -> String {
    join(&format!("{prefix}[{n}]"), key)
}

/// The name rule for a `[[client]]` and a knock profile (`[server.NAME]`), which the importer
/// also renders names to: `[A-Za-z0-9_.@-]{1,64}` (safe in logs, `nfknock list` and TOML keys).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.@-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_midnight() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2027-01-31"), Some(1_801_353_600));
        assert_eq!(parse_date("2000-02-29"), Some(951_782_400));
        assert_eq!(parse_date("2027-04-30"), Some(1_809_043_200));
        for bad in [
            "2027-02-29",
            "1900-02-29",
            "2027-04-31",
            "2027-13-01",
            "2027-00-10",
            "2027-1-31",
            "27-01-31",
            "2027/01/31",
            "1969-12-31",
            "2027-01-3x",
            "+027-01-31",
            "２０２７-01-31",
            "",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn networks_accept_cidr_and_plain_addresses_but_not_host_bits() {
        assert_eq!(network("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(
            network("198.51.100.7").unwrap().to_string(),
            "198.51.100.7/32"
        );
        assert_eq!(network("::/0").unwrap().to_string(), "::/0");
        assert_eq!(
            network("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
        let e = network("10.1.2.3/24").unwrap_err();
        assert!(
            e.contains("`10.1.2.0/24`") && e.contains("`10.1.2.3/32`"),
            "{e}"
        );
        let e = network("2001:db8::1/64").unwrap_err();
        assert_eq!(
            e,
            "`2001:db8::1/64` has host bits set; write `2001:db8::/64` for the network or `2001:db8::1/128` for the one address"
        );
        assert!(network("10.0.0.0/33").is_err());
        assert!(network("example.com")
            .unwrap_err()
            .contains("neither an address nor a network"));
    }
}
