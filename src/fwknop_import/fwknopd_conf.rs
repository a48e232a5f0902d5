//! `fwknopd.conf`: what carries over to nfknock's `[server]` section (the knock port of the
//! capture mode in use, `MAX_SPA_PACKET_AGE`), and a warning for each setting that turns on
//! something nfknock does not do.

use std::path::Path;

use super::syntax::{is_yes, split_line};
use super::{Diag, Level, FWKNOP_DEFAULT_MAX_AGE, FWKNOP_DEFAULT_PORT};

/// What was taken from fwknopd.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DaemonSettings {
    pub(super) port: u16,
    /// Where the port came from, for the comment in the output.
    pub(super) port_from: String,
    pub(super) max_age: u64,
    pub(super) max_age_from: String,
    pub(super) diags: Vec<Diag>,
}

/// `udp port N` / `udp dst port N` in a BPF filter; the first such port.
fn pcap_filter_port(filter: &str) -> Option<u16> {
    let words: Vec<&str> = filter
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter(|w| !w.is_empty())
        .collect();
    for (i, w) in words.iter().enumerate() {
        if !w.eq_ignore_ascii_case("udp") {
            continue;
        }
        let rest = words.get(i + 1..).unwrap_or(&[]);
        let port = match rest {
            [p, n, ..] if p.eq_ignore_ascii_case("port") => n,
            [d, p, n, ..] if d.eq_ignore_ascii_case("dst") && p.eq_ignore_ascii_case("port") => n,
            _ => continue,
        };
        if let Some(port) = parse_u16_nonzero(port) {
            return Some(port);
        }
    }
    None
}

fn parse_u16_nonzero(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().filter(|&p| p != 0)
}

pub(super) fn parse_fwknopd_conf(text: &str, path: &Path) -> DaemonSettings {
    // Last line wins, as in fwknopd.
    let mut vars: Vec<(String, String, usize)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if let Some((var, value)) = split_line(raw) {
            vars.retain(|(v, _, _)| v != var);
            vars.push((var.to_string(), value.to_string(), i + 1));
        }
    }
    let get = |name: &str| vars.iter().find(|(v, _, _)| v == name);
    let mut diags = Vec::new();
    let mut warn = |line: usize, message: String| {
        diags.push(Diag {
            level: Level::Warning,
            origin: Some((path.to_path_buf(), line)),
            stanza: None,
            message,
        });
    };

    // The knock port, from the capture mode in use.
    let enabled = |name: &str| get(name).is_some_and(|(_, v, _)| is_yes(v));
    let (mode_port_var, mode) = if enabled("ENABLE_UDP_SERVER") {
        ("UDPSERV_PORT", "ENABLE_UDP_SERVER")
    } else if enabled("ENABLE_NFQ_CAPTURE") {
        ("NFQ_PORT", "ENABLE_NFQ_CAPTURE")
    } else {
        ("", "")
    };
    let mut port = FWKNOP_DEFAULT_PORT;
    let mut port_from = "fwknopd's default (udp port 62201)".to_string();
    if !mode_port_var.is_empty() {
        match get(mode_port_var) {
            Some((_, v, line)) => match parse_u16_nonzero(v) {
                Some(p) => {
                    port = p;
                    port_from = format!("{mode_port_var} {v} ({mode} Y)");
                }
                None => warn(*line, format!("{mode_port_var} `{v}` is not a port (1..65535); using {FWKNOP_DEFAULT_PORT}")),
            },
            None => port_from = format!("{mode_port_var} default ({mode} Y)"),
        }
    } else if let Some((_, filter, line)) = get("PCAP_FILTER") {
        match pcap_filter_port(filter) {
            Some(p) => {
                port = p;
                port_from = format!("PCAP_FILTER \"{filter}\"");
                let simple = filter
                    .split_whitespace()
                    .all(|w| ["udp", "dst", "port"].contains(&w) || parse_u16_nonzero(w).is_some());
                if !simple {
                    warn(*line, format!("PCAP_FILTER `{filter}`: only the UDP port {p} was taken; nfknock's kernel rules send every UDP packet to port {p} to the daemon, and the rest of the filter has no equivalent"));
                }
            }
            None => warn(*line, format!("PCAP_FILTER `{filter}` names no `udp port N`; nfknock receives knocks over UDP only, so the port is {FWKNOP_DEFAULT_PORT}; set `[server] port` if the clients use another")),
        }
    }

    let mut max_age = FWKNOP_DEFAULT_MAX_AGE;
    let mut max_age_from = "fwknopd's default MAX_SPA_PACKET_AGE".to_string();
    if let Some((_, v, line)) = get("MAX_SPA_PACKET_AGE") {
        match v.parse::<u64>() {
            Ok(0) | Err(_) => warn(*line, format!("MAX_SPA_PACKET_AGE `{v}` is not a positive number of seconds; using {FWKNOP_DEFAULT_MAX_AGE}")),
            Ok(n) if n > crate::config::MAX_MAX_AGE => {
                max_age = crate::config::MAX_MAX_AGE;
                max_age_from = format!("MAX_SPA_PACKET_AGE {v}, capped");
                warn(*line, format!("MAX_SPA_PACKET_AGE {n} is more than nfknock's limit; max_age = {} (the replay cache keeps each knock for max_age)", crate::config::MAX_MAX_AGE));
            }
            Ok(n) => {
                max_age = n;
                max_age_from = format!("MAX_SPA_PACKET_AGE {v}");
            }
        }
    }
    if let Some((_, v, line)) = get("ENABLE_SPA_PACKET_AGING") {
        if !is_yes(v) {
            warn(*line, format!("ENABLE_SPA_PACKET_AGING {v}: nfknock always checks the knock's age (max_age = {max_age}); sync the clients' clocks or use `fwknop --time-offset-plus/minus`"));
        }
    }

    // Settings that turn on something nfknock does not do.
    for (var, value, line) in &vars {
        let yes = is_yes(value);
        let msg = match var.as_str() {
            "ENABLE_DIGEST_PERSISTENCE" if !yes => Some("nfknock always keeps a replay cache (bounded by max_age, persisted in `state_dir`); nothing to do"),
            "ENABLE_SPA_OVER_HTTP" if yes => Some("SPA over HTTP is not supported: nfknock receives knocks as UDP datagrams; have the clients send UDP (`fwknop -P udp`, the default)"),
            "ENABLE_TCP_SERVER" if yes => Some("knocks over TCP are not supported: nfknock receives UDP only; have the clients send UDP (`fwknop -P udp`, the default)"),
            "ENABLE_X_FORWARDED_FOR" if yes => Some("only used for SPA over HTTP, which nfknock does not accept"),
            "ENABLE_IPT_FORWARDING" | "ENABLE_IPT_LOCAL_NAT" if yes => Some("NAT access messages (types 2, 4, 5, 6) are served per client: each target a client may ask for is listed in its `nat` (FORCE_NAT stanzas are imported so); add `nat = [{ port = \"tcp/2222\", to = \"10.0.0.5:22\" }]` (or `to = \":22\"` for local NAT) to the clients that send them, and switch forwarding on (`sysctl net.ipv4.ip_forward=1`)"),
            "ENABLE_IPT_SNAT" if yes => Some("source NAT is per `nat` entry in nfknock: add `snat = \"ADDRESS\"` (SNAT_TRANSLATE_IP) or `masquerade = true` to the clients' `nat` entries"),
            "ENABLE_IPT_OUTPUT" if yes => Some("nfknock adds no OUTPUT rules; the gate only drops new inbound flows, so replies are never blocked by it"),
            "ENABLE_DESTINATION_RULE" if yes => Some("nfknock grants `source . proto . port` for every local address; restrict by destination with a client's `destinations` (checked when the knock arrives)"),
            _ => None,
        };
        if let Some(m) = msg {
            warn(*line, format!("{var} {value}: {m}"));
        }
    }
    diags.sort_by_key(|d| d.origin.as_ref().map_or(0, |o| o.1));
    DaemonSettings {
        port,
        port_from,
        max_age,
        max_age_from,
        diags,
    }
}
