//! The nfknock TOML text: a header, the `[server]` section and one `[[client]]` per converted
//! stanza, each under a comment naming the file and line it came from. Strings are quoted by
//! the toml crate; comments are kept on one line.

use zeroize::Zeroizing;

use super::fwknopd_conf::DaemonSettings;
use super::stanza::{ClientOut, KeyText};
use super::{FWKNOP_DEFAULT_MAX_AGE, FWKNOP_DEFAULT_PORT};
use crate::access::SourceNat;
use crate::wire::fwknop::EncMode;

/// A TOML basic or literal string, quoted and escaped by the toml crate.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn quote_list<T: ToString>(items: &[T]) -> String {
    let v: Vec<String> = items.iter().map(|i| quote(&i.to_string())).collect();
    format!("[{}]", v.join(", "))
}

pub(super) fn render_header(with_daemon: bool) -> String {
    let from = if with_daemon {
        "fwknopd's access.conf and fwknopd.conf"
    } else {
        "fwknopd's access.conf"
    };
    format!(
        "# nfknock server configuration, imported from {from} by `nfknock import-fwknop`.\n\
         # It holds the fwknop keys: keep it private (chmod 600) and owned by root.\n\
         # Review it, then: nfknock check --config THIS_FILE\n\
         # The gate closes every port a client may open (`protect` defaults to the union of the\n\
         # clients' `allow` lists); fwknop clients keep their keys and need no change.\n\n"
    )
}

pub(super) fn render_server(daemon: Option<&DaemonSettings>) -> String {
    let (port, port_from, max_age, max_age_from) = match daemon {
        Some(d) => (
            d.port,
            d.port_from.as_str(),
            d.max_age,
            d.max_age_from.as_str(),
        ),
        None => (
            FWKNOP_DEFAULT_PORT,
            "fwknopd's default (no fwknopd.conf given)",
            FWKNOP_DEFAULT_MAX_AGE,
            "fwknopd's default (no fwknopd.conf given)",
        ),
    };
    format!(
        "[server]\nport = {port}          # {}\nmax_age = {max_age}         # {}\n",
        comment(port_from),
        comment(max_age_from)
    )
}

/// Text safe inside a `#` comment (one line).
fn comment(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

pub(super) fn render_client(c: &ClientOut) -> Zeroizing<String> {
    let mut o = Zeroizing::new(String::new());
    let line = |o: &mut Zeroizing<String>, s: String| {
        o.push_str(&s);
        o.push('\n');
    };
    line(
        &mut o,
        format!(
            "# {}:{}: SOURCE {}",
            c.origin.0.display(),
            c.origin.1,
            comment(&c.source_text)
        ),
    );
    line(&mut o, "[[client]]".to_string());
    line(&mut o, format!("name = {}", quote(&c.name)));
    line(&mut o, format!("sources = {}", quote_list(&c.sources)));
    if !c.destinations.is_empty() {
        line(
            &mut o,
            format!("destinations = {}", quote_list(&c.destinations)),
        );
    }
    match &c.allow_comment {
        Some(note) => line(
            &mut o,
            format!("allow = {}   # {note}", quote_list(&c.allow)),
        ),
        None => line(&mut o, format!("allow = {}", quote_list(&c.allow))),
    }
    if !c.deny.is_empty() {
        line(&mut o, format!("deny = {}", quote_list(&c.deny)));
    }
    line(&mut o, format!("timeout = {}", c.timeout));
    line(&mut o, format!("max_timeout = {}", c.max_timeout));
    line(
        &mut o,
        format!("require_source_match = {}", c.require_source_match),
    );
    if let Some(u) = &c.require_username {
        line(&mut o, format!("require_username = {}", quote(u)));
    }
    if let Some((t, note)) = &c.expires_at {
        line(&mut o, format!("expires_at = {t}   # {}", comment(note)));
    }
    o.push_str(&super::commands::render(&c.commands, quote));
    if let Some((to, source, dnat)) = &c.nat {
        let mut extra = match source {
            SourceNat::Keep => String::new(),
            SourceNat::Masquerade => ", masquerade = true".to_string(),
            SourceNat::To(a) => format!(", snat = {}", quote(&a.to_string())),
        };
        if !dnat {
            extra.push_str(", dnat = false");
        }
        let entries: Vec<String> = c
            .allow
            .iter()
            .map(|a| {
                format!(
                    "{{ port = {}, to = {}{extra} }}",
                    quote(&a.to_string()),
                    quote(&to.to_string())
                )
            })
            .collect();
        line(
            &mut o,
            format!(
                "nat = [{}]   # FORCE_NAT{}",
                entries.join(", "),
                if *dnat { "" } else { ", DISABLE_DNAT" }
            ),
        );
    }
    if let Some((net, source)) = &c.gateway {
        let extra = match source {
            SourceNat::Keep => String::new(),
            SourceNat::Masquerade => ", masquerade = true".to_string(),
            SourceNat::To(a) => format!(", snat = {}", quote(&a.to_string())),
        };
        line(
            &mut o,
            format!(
                "gateway = {{ networks = [{}]{extra} }}   # FORWARD_ALL: widen to the internal networks",
                quote(&net.to_string())
            ),
        );
    }
    line(&mut o, "[client.fwknop]".to_string());
    match &c.key {
        KeyText::Base64(k) => line(&mut o, format!("key_base64 = {}", quote(k))),
        KeyText::Text(k) => line(&mut o, format!("key = {}", quote(k))),
    }
    match &c.hmac {
        Some((KeyText::Base64(k), t)) => {
            line(&mut o, format!("hmac_key_base64 = {}", quote(k)));
            line(&mut o, format!("hmac = {}", quote(t.name())));
        }
        Some((KeyText::Text(k), t)) => {
            line(&mut o, format!("hmac_key = {}", quote(k)));
            line(&mut o, format!("hmac = {}", quote(t.name())));
        }
        None => line(&mut o, "no_hmac = true".to_string()),
    }
    line(&mut o, format!("mode = {}", quote(&mode_name(c.mode))));
    o
}

/// The TOML spelling of a mode (`mode = "cbc"`).
fn mode_name(m: EncMode) -> String {
    m.name().to_ascii_lowercase()
}
