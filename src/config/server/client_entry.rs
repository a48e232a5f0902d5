//! One `[[client]]` of the daemon's config, checked in steps: its name, its key material,
//! what it may open, its timeouts, where it may knock from, and its limits.

use std::ops::Range;

use ipnet::IpNet;
use toml::Spanned;
use zeroize::Zeroizing;

use super::fwknop_key::{fwknop_key, FWKNOP};
use super::*;
use crate::config::raw::{self, join, RawClient, RawFwknop, Section, Shape, Sink};
use crate::config::secret::{self};
use crate::config::values::{self, int_in, valid_name};
use crate::crypto::SECRET_LEN;

pub(super) const CLIENT: Shape = Shape {
    header: "[[client]]",
    nested: &["fwknop"],
    hint: client_hint,
};

fn client_hint(key: &str) -> Option<&'static str> {
    Some(match key {
        "name" => "a quoted name of 1 to 64 letters, digits and `_.@-`, e.g. `name = \"alice\"`",
        "key" => "the quoted base64 line printed by `nfknock keygen`",
        "key_file" => {
            "a quoted path to a file holding the key, e.g. `key_file = \"/etc/nfknock/alice.key\"`"
        }
        "allow" | "deny" => "a list of accesses, e.g. `[\"tcp/22\", \"udp/53\"]`",
        "timeout" | "max_timeout" => "a number of seconds, e.g. `timeout = 30`",
        "sources" | "destinations" => {
            "a list of quoted networks or addresses, e.g. `[\"0.0.0.0/0\", \"::/0\"]`"
        }
        "require_source_match" => "`true` or `false`",
        "require_username" => "a quoted user name, e.g. `require_username = \"bob\"`",
        // `expires` (any TOML value, see `expiry`) and `fwknop` (a nested section) explain
        // a wrong value themselves: no hint.
        "expires_at" => "a Unix time, e.g. `expires_at = 1801353600`",
        "gateway" => {
            "a table, e.g. `gateway = { networks = [\"10.80.0.0/24\"], masquerade = true }`"
        }
        "nat" => {
            "a list of tables, e.g. `nat = [{ port = \"tcp/2222\", to = \"192.168.10.2:22\" }]`"
        }
        other => return super::client_commands::hint(other),
    })
}

/// Check one `[[client]]` in steps; every problem is reported, not just the first.
pub(super) fn client(
    sink: &mut Sink<'_>,
    cx: &mut Cx<'_>,
    prefix: &str,
    sec: Section<'_, RawClient>,
) -> Draft {
    let raw = &sec.raw;
    let name = name(sink, prefix, &sec);
    let key = key_material(sink, cx, prefix, &sec);
    let (allow, deny) = access_lists(sink, prefix, &sec);
    let (timeout, max_timeout) = timeouts(sink, prefix, raw);
    let (sources, destinations) = networks(sink, prefix, raw);
    let require_username = require_username(sink, prefix, raw, key.native);
    let expires_at = expiry(sink, prefix, raw);
    let commands = super::client_commands::client_commands(sink, cx, prefix, &sec, key.native);
    let nat = super::nat::nat_rules(sink, prefix, raw.nat.as_ref(), &allow);
    let gateway = super::gateway::gateway(sink, prefix, raw.gateway.as_ref());
    Draft {
        name,
        secret: key.secret,
        allow,
        deny,
        timeout,
        max_timeout,
        sources,
        destinations,
        require_source_match: raw.require_source_match.unwrap_or(true),
        require_username,
        expires_at,
        commands,
        nat,
        gateway,
    }
}

/// `name`: required, valid (see [`valid_name`]). Uniqueness is checked across clients.
fn name(
    sink: &mut Sink<'_>,
    prefix: &str,
    sec: &Section<'_, RawClient>,
) -> Option<(String, Range<usize>)> {
    match &sec.raw.name {
        Some(n) if valid_name(n.get_ref()) => Some((n.get_ref().clone(), n.span())),
        Some(n) => {
            sink.at(
                Some(n.span()),
                &join(prefix, "name"),
                format!(
                    "`{}` is not a valid client name; use 1 to 64 letters, digits and `_.@-`",
                    n.get_ref()
                ),
            );
            None
        }
        None => {
            if !sec.failed("name") {
                sink.at(
                    Some(sec.span.clone()),
                    &join(prefix, "name"),
                    "this client has no `name`; add e.g. `name = \"alice\"`",
                );
            }
            None
        }
    }
}

/// What [`key_material`] found.
struct KeyMaterial {
    secret: Option<Secret>,
    /// Exactly one credential was given and it is a native one (`key` or `key_file`).
    native: bool,
}

/// Exactly one credential: `key`, `key_file` or `[client.fwknop]`.
fn key_material(
    sink: &mut Sink<'_>,
    cx: &mut Cx<'_>,
    prefix: &str,
    sec: &Section<'_, RawClient>,
) -> KeyMaterial {
    let k = |key: &str| join(prefix, key);
    let raw = &sec.raw;
    let fwknop = sec.nested.first().cloned();
    let mut given: Vec<(&str, Range<usize>)> = Vec::new();
    if let Some(v) = &raw.key {
        given.push(("key", v.span()));
    } else if sec.failed.iter().any(|f| f == "key") {
        given.push(("key", sec.span.clone()));
    }
    if let Some(v) = &raw.key_file {
        given.push(("key_file", v.span()));
    } else if sec.failed.iter().any(|f| f == "key_file") {
        given.push(("key_file", sec.span.clone()));
    }
    if let Some((fk, _)) = &fwknop {
        given.push(("[client.fwknop]", fk.span()));
    }
    let mut secret = None;
    let mut is_fwknop = false;
    match given.as_slice() {
        [] => sink.at(
            Some(sec.span.clone()),
            &k("key"),
            "this client has no key; add `key = \"...\"` (from `nfknock keygen`), `key_file = PATH`, or a `[client.fwknop]` table for an fwknop client",
        ),
        [_] => {
            if let Some(text) = &raw.key {
                cx.inline_secret = true;
                match secret::decode_native_secret(&text.get_ref().0) {
                    Ok(bytes) => secret = Some(Secret::Native(Box::new(bytes))),
                    Err(msg) => sink.at(Some(text.span()), &k("key"), format!("the key {msg}")),
                }
            } else if let Some(file) = &raw.key_file {
                secret = native_key_file(sink, cx, file, &k("key_file"))
                    .map(|b| Secret::Native(Box::new(b)));
            } else if let Some((_, value)) = fwknop {
                is_fwknop = true;
                if let Some(fsec) = raw::section::<RawFwknop>(sink, value, &k("fwknop"), &FWKNOP) {
                    secret = fwknop_key(sink, cx, &k("fwknop"), fsec).map(Secret::Fwknop);
                }
            }
        }
        [(first, _), rest @ ..] => {
            for (what, span) in rest {
                sink.at(
                    Some(span.clone()),
                    &k(what.trim_matches(|c| c == '[' || c == ']').trim_start_matches("client.")),
                    format!("this client already has `{first}`; give exactly one of `key`, `key_file` or `[client.fwknop]`"),
                );
            }
        }
    }
    KeyMaterial {
        secret,
        native: !is_fwknop && secret_kind_known(&given),
    }
}

/// `allow` (required, not empty) and `deny`.
fn access_lists(
    sink: &mut Sink<'_>,
    prefix: &str,
    sec: &Section<'_, RawClient>,
) -> (Vec<(Access, Range<usize>)>, Vec<Access>) {
    let k = |key: &str| join(prefix, key);
    let raw = &sec.raw;
    let allow = match &raw.allow {
        Some(list) => {
            let v = values::accesses(sink, list, &k("allow"));
            if list.get_ref().is_empty() {
                sink.at(
                    Some(list.span()),
                    &k("allow"),
                    "is empty, so this client could never be granted anything; list what it may open, e.g. `allow = [\"tcp/22\"]`",
                );
            }
            v
        }
        None => {
            if !sec.failed("allow") {
                sink.at(
                    Some(sec.span.clone()),
                    &k("allow"),
                    "this client has no `allow`; list what it may open, e.g. `allow = [\"tcp/22\"]`",
                );
            }
            Vec::new()
        }
    };
    let deny = raw
        .deny
        .as_ref()
        .map(|l| {
            values::accesses(sink, l, &k("deny"))
                .into_iter()
                .map(|(a, _)| a)
                .collect()
        })
        .unwrap_or_default();
    (allow, deny)
}

/// `timeout` and `max_timeout` (defaults applied; the default timeout is capped by a smaller
/// `max_timeout`; an explicit timeout above `max_timeout` is reported).
fn timeouts(sink: &mut Sink<'_>, prefix: &str, raw: &RawClient) -> (u32, u32) {
    let k = |key: &str| join(prefix, key);
    let max_timeout = int_in(
        sink,
        &raw.max_timeout,
        &k("max_timeout"),
        (1, MAX_MAX_TIMEOUT.into()),
        crate::config::DEFAULT_MAX_TIMEOUT.into(),
        "max_timeout (seconds, at most one week)",
    )
    .and_then(|v| u32::try_from(v).ok());
    // Without an explicit timeout, the default is capped by a smaller max_timeout.
    let default_timeout = crate::config::DEFAULT_TIMEOUT
        .min(max_timeout.unwrap_or(crate::config::DEFAULT_MAX_TIMEOUT));
    let timeout = int_in(
        sink,
        &raw.timeout,
        &k("timeout"),
        (1, MAX_MAX_TIMEOUT.into()),
        default_timeout.into(),
        "timeout (seconds)",
    )
    .and_then(|v| u32::try_from(v).ok());
    if let (Some(t), Some(m), Some(span)) =
        (timeout, max_timeout, raw.timeout.as_ref().map(|t| t.span()))
    {
        if t > m {
            sink.at(
                Some(span),
                &k("timeout"),
                format!("timeout = {t} is more than max_timeout = {m}; lower `timeout` or raise `max_timeout`"),
            );
        }
    }
    (
        timeout.unwrap_or(default_timeout),
        max_timeout.unwrap_or(crate::config::DEFAULT_MAX_TIMEOUT),
    )
}

/// `sources` (default: anywhere; not empty) and `destinations`.
fn networks(sink: &mut Sink<'_>, prefix: &str, raw: &RawClient) -> (Vec<IpNet>, Vec<IpNet>) {
    let k = |key: &str| join(prefix, key);
    let sources = match &raw.sources {
        None => vec![IpNet::V4(Default::default()), IpNet::V6(Default::default())],
        Some(list) => {
            let v = values::networks(sink, list, &k("sources"));
            if list.get_ref().is_empty() {
                sink.at(
                    Some(list.span()),
                    &k("sources"),
                    "is empty, so no knock could ever be accepted; remove `sources` to accept knocks from anywhere, or list networks",
                );
            }
            v
        }
    };
    let destinations = raw
        .destinations
        .as_ref()
        .map(|l| values::networks(sink, l, &k("destinations")))
        .unwrap_or_default();
    (sources, destinations)
}

/// `require_username`: fwknop clients only (`native`: the client's key is known native).
fn require_username(
    sink: &mut Sink<'_>,
    prefix: &str,
    raw: &RawClient,
    native: bool,
) -> Option<String> {
    let key = join(prefix, "require_username");
    match &raw.require_username {
        None => None,
        Some(u) if native => {
            sink.at(
                Some(u.span()),
                &key,
                "applies only to fwknop clients (native knocks carry no user name); remove it or give this client a `[client.fwknop]` key",
            );
            None
        }
        Some(u) if u.get_ref().is_empty() || u.get_ref().contains(':') => {
            // ':' separates fields in the fwknop message; such a name could never match.
            sink.at(
                Some(u.span()),
                &key,
                "must be a non-empty user name without `:`",
            );
            None
        }
        Some(u) => Some(u.get_ref().clone()),
    }
}

/// `expires` (a date) or `expires_at` (Unix time), not both.
fn expiry(sink: &mut Sink<'_>, prefix: &str, raw: &RawClient) -> Option<u64> {
    let k = |key: &str| join(prefix, key);
    match (&raw.expires, &raw.expires_at) {
        (Some(_), Some(at)) => {
            sink.at(
                Some(at.span()),
                &k("expires_at"),
                "give either `expires` or `expires_at`, not both",
            );
            None
        }
        (Some(date), None) => values::expires(sink, date, &k("expires")),
        (None, Some(at)) => match u64::try_from(*at.get_ref()) {
            Ok(t) => Some(t),
            Err(_) => {
                sink.at(
                    Some(at.span()),
                    &k("expires_at"),
                    "must be a Unix time (seconds since 1970), not negative",
                );
                None
            }
        },
        (None, None) => None,
    }
}

/// Exactly one credential was given, so whether it is native is known.
fn secret_kind_known(given: &[(&str, Range<usize>)]) -> bool {
    given.len() == 1
}

fn native_key_file(
    sink: &mut Sink<'_>,
    cx: &Cx<'_>,
    file: &Spanned<String>,
    key: &str,
) -> Option<Zeroizing<[u8; SECRET_LEN]>> {
    let result = secret::resolve(file.get_ref(), cx.path, None).and_then(|p| {
        let text = secret::read_key_file(cx.files, &p, &cx.owner)?;
        secret::decode_native_secret(&text).map_err(|m| format!("key file {} {m}", p.display()))
    });
    result.map_err(|m| sink.at(Some(file.span()), key, m)).ok()
}
