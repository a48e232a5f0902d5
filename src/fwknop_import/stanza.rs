//! One access.conf stanza → one nfknock client ([`ClientOut`]): a warning for everything that
//! is dropped or behaves differently, an error (and no client) for everything that cannot be
//! carried over. As in fwknopd, the last line setting a variable wins.

use ipnet::Ipv4Net;
use zeroize::Zeroizing;

use super::access_conf::{Origin, Setting, Stanza};
use super::syntax::is_yes;
use super::values::{hmac_type, parse_expire_date, parse_nets, parse_ports, parse_seconds};
use super::variables::{unmapped, Unmapped, GPG_ADVICE, MAPPED};
use super::{Diag, Level, Options, FWKNOP_DEFAULT_MAX_TIMEOUT, FWKNOP_DEFAULT_TIMEOUT};
use std::net::{IpAddr, SocketAddr};

use crate::access::{Access, SourceNat};
use crate::wire::fwknop::{EncMode, HmacType, MAX_HMAC_KEY_LEN, MAX_KEY_LEN};

/// A key as written in access.conf.
pub(super) enum KeyText {
    /// `KEY` / `HMAC_KEY`: the bytes of the string.
    Text(Zeroizing<String>),
    /// `KEY_BASE64` / `HMAC_KEY_BASE64`.
    Base64(Zeroizing<String>),
}

/// A stanza converted to an nfknock client.
pub(super) struct ClientOut {
    pub(super) name: String,
    pub(super) origin: Origin,
    pub(super) source_text: String,
    pub(super) sources: Vec<Ipv4Net>,
    pub(super) destinations: Vec<Ipv4Net>,
    pub(super) allow: Vec<Access>,
    pub(super) allow_comment: Option<String>,
    pub(super) deny: Vec<Access>,
    pub(super) timeout: u32,
    pub(super) max_timeout: u32,
    pub(super) require_source_match: bool,
    pub(super) require_username: Option<String>,
    pub(super) expires_at: Option<(u64, String)>,
    pub(super) key: KeyText,
    pub(super) hmac: Option<(KeyText, HmacType)>,
    pub(super) mode: EncMode,
    pub(super) commands: super::commands::CommandsOut,
    /// `FORCE_NAT IP PORT` (+ `FORCE_SNAT` / `FORCE_MASQUERADE`): every allowed port is
    /// forwarded there, as fwknopd does with any request of this stanza; `false` with
    /// `DISABLE_DNAT Y` (routed: `dnat = false`).
    pub(super) nat: Option<(SocketAddr, SourceNat, bool)>,
    /// `FORWARD_ALL Y` (gateway mode): the network the gateway leads to (the FORCE_NAT host,
    /// which the admin is told to widen) and the source translation (fwknopd masquerades
    /// unless FORCE_SNAT names an address, server/fw_util_iptables.c `snat_rule`).
    pub(super) gateway: Option<(Ipv4Net, SourceNat)>,
}

/// Collects the messages of one stanza.
struct StanzaDiags<'a> {
    label: String,
    out: &'a mut Vec<Diag>,
    errors: usize,
}

impl StanzaDiags<'_> {
    fn push(&mut self, level: Level, origin: &Origin, message: String) {
        if level == Level::Error {
            self.errors += 1;
        }
        self.out.push(Diag {
            level,
            origin: Some(origin.clone()),
            stanza: Some(self.label.clone()),
            message,
        });
    }
    fn warn(&mut self, origin: &Origin, message: String) {
        self.push(Level::Warning, origin, message);
    }
    fn error(&mut self, origin: &Origin, message: String) {
        self.push(Level::Error, origin, message);
    }
}

/// Decoded bytes of a key (for length and equality checks).
fn key_bytes(k: &KeyText) -> Option<Zeroizing<Vec<u8>>> {
    match k {
        KeyText::Text(t) => Some(Zeroizing::new(t.as_bytes().to_vec())),
        KeyText::Base64(b) => crate::wire::fwknop::decode_key_base64(b),
    }
}

fn key_text(setting: &Setting) -> KeyText {
    let v = Zeroizing::new(setting.value.to_string());
    if setting.var.ends_with("_BASE64") {
        KeyText::Base64(v)
    } else {
        KeyText::Text(v)
    }
}

/// Check one key's form and length; `max` in bytes.
fn check_key(
    d: &mut StanzaDiags<'_>,
    setting: &Setting,
    key: &KeyText,
    max: usize,
    what: &str,
) -> bool {
    let var = &setting.var;
    if setting.value.as_str() == crate::wire::fwknop::PLACEHOLDER_KEY {
        d.error(&setting.origin, format!("{var} is fwknop's placeholder `__CHANGEME__`; generate real keys with `fwknop --key-gen` and give them to the client"));
        return false;
    }
    match key_bytes(key) {
        None => {
            d.error(
                &setting.origin,
                format!("{var} is not valid base64; paste the value printed by `fwknop --key-gen`"),
            );
            false
        }
        Some(b) if b.is_empty() || b.len() > max => {
            d.error(&setting.origin, format!("{var} is {} bytes long; an fwknop {what} is 1 to {max} bytes; generate one with `fwknop --key-gen`", b.len()));
            false
        }
        Some(_) => true,
    }
}

pub(super) fn convert_stanza(
    st: &Stanza,
    name: String,
    opts: &Options,
    diags: &mut Vec<Diag>,
) -> Option<ClientOut> {
    let mut d = StanzaDiags {
        label: name.clone(),
        out: diags,
        errors: 0,
    };

    // Unmapped variables first, in file order.
    let mut gpg = false;
    for s in &st.settings {
        if MAPPED.contains(&s.var.as_str()) {
            continue;
        }
        match unmapped(&s.var) {
            Some(Unmapped::Always(m)) => {
                gpg |= s.var.starts_with("GPG_");
                // Never echo a value that may be a secret (GPG_DECRYPT_PW).
                d.warn(&s.origin, format!("{}: {m}", s.var));
            }
            None => d.warn(&s.origin, format!("unknown access.conf variable `{}`; fwknopd ignores it too, and so does the import", s.var)),
        }
    }

    // SOURCE (always present: it started the stanza).
    let source = st
        .get("SOURCE")
        .map_or("", |s| s.value.as_str())
        .to_string();
    let sources = match parse_nets(&source) {
        Ok((nets, notes)) => {
            for n in notes {
                d.warn(&st.origin, format!("SOURCE {n}"));
            }
            Some(nets.unwrap_or_else(|| vec![Ipv4Net::default()]))
        }
        Err(m) => {
            d.error(&st.origin, format!("SOURCE {m}"));
            None
        }
    };
    let destinations = match st.get("DESTINATION") {
        None => Some(Vec::new()),
        Some(s) => match parse_nets(&s.value) {
            Ok((nets, notes)) => {
                for n in notes {
                    d.warn(&s.origin, format!("DESTINATION {n}"));
                }
                Some(nets.unwrap_or_default())
            }
            Err(m) => {
                d.error(&s.origin, format!("DESTINATION {m}"));
                None
            }
        },
    };

    // Ports.
    let mut allow_comment = None;
    let allow = match st.get("OPEN_PORTS") {
        Some(s) => match parse_ports(&s.value) {
            Ok(v) => Some(v),
            Err(m) => {
                d.error(
                    &s.origin,
                    format!("OPEN_PORTS {m}; fix it (fwknopd refuses it too)"),
                );
                None
            }
        },
        None => match &opts.protect {
            Some(list) => {
                allow_comment = Some("no OPEN_PORTS: the --protect list".to_string());
                Some(list.clone())
            }
            None => {
                d.error(&st.origin, "has no OPEN_PORTS, so fwknopd let it open any port; an nfknock client needs an explicit allow list: pass the ports it may open with `--protect tcp/22,...` (or add OPEN_PORTS to the stanza)".to_string());
                None
            }
        },
    };
    let deny = match st.get("RESTRICT_PORTS") {
        None => Some(Vec::new()),
        Some(s) => match parse_ports(&s.value) {
            Ok(v) => Some(v),
            Err(m) => {
                d.error(
                    &s.origin,
                    format!("RESTRICT_PORTS {m}; fix it (fwknopd refuses it too)"),
                );
                None
            }
        },
    };

    // Timeouts.
    let seconds = |d: &mut StanzaDiags<'_>, var: &str, default: u32| -> Option<u32> {
        match st.get(var) {
            None => Some(default),
            Some(s) => match parse_seconds(&s.value) {
                Some(0) => Some(default),
                Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
                None => {
                    d.error(
                        &s.origin,
                        format!("{var} `{}` is not a number of seconds", s.value.as_str()),
                    );
                    None
                }
            },
        }
    };
    let (commands, notes) = super::commands::convert(st);
    for (is_error, origin, m) in notes {
        if is_error {
            d.error(&origin, m);
        } else {
            d.warn(&origin, m);
        }
    }
    let timeout = seconds(&mut d, "FW_ACCESS_TIMEOUT", FWKNOP_DEFAULT_TIMEOUT);
    let max_timeout = seconds(&mut d, "MAX_FW_TIMEOUT", FWKNOP_DEFAULT_MAX_TIMEOUT);
    // CMD_CYCLE_TIMER is when the close runs: every grant lasts exactly that long.
    let (timeout, mut max_timeout) = match commands.timer {
        Some(t) => (Some(t), max_timeout.map(|_| t)),
        None => (timeout, max_timeout),
    };
    let mut timeout = timeout;
    let week = crate::config::MAX_MAX_TIMEOUT;
    if let Some(m) = max_timeout.filter(|&m| m > week) {
        let origin = st.get("MAX_FW_TIMEOUT").map_or(&st.origin, |s| &s.origin);
        d.warn(
            origin,
            format!(
                "MAX_FW_TIMEOUT {m} is more than nfknock's limit of one week; max_timeout = {week}"
            ),
        );
        max_timeout = Some(week);
    }
    if let Some(t) = timeout.filter(|&t| t > week) {
        let origin = st
            .get("FW_ACCESS_TIMEOUT")
            .map_or(&st.origin, |s| &s.origin);
        d.warn(
            origin,
            format!(
                "FW_ACCESS_TIMEOUT {t} is more than nfknock's limit of one week; timeout = {week}"
            ),
        );
        timeout = Some(week);
    }
    if let (Some(t), Some(m)) = (timeout, max_timeout) {
        if t > m {
            // fwknopd caps only client-requested timeouts; nfknock requires timeout <= max_timeout.
            let origin = st
                .get("FW_ACCESS_TIMEOUT")
                .map_or(&st.origin, |s| &s.origin);
            d.warn(origin, format!("FW_ACCESS_TIMEOUT {t} is more than MAX_FW_TIMEOUT {m}; nfknock needs timeout <= max_timeout, so max_timeout = {t} (a client asking with `fwknop -f` may now get up to {t}s)"));
            max_timeout = Some(t);
        }
    }

    // Policy.
    let require_username = match st.get("REQUIRE_USERNAME") {
        None => Some(None),
        Some(s) if s.value.contains(':') => {
            d.error(&s.origin, "REQUIRE_USERNAME contains `:`, which no fwknop user name can (it separates the packet's fields); fix the name".to_string());
            None
        }
        Some(s) => Some(Some(s.value.to_string())),
    };
    let require_source_match = match st.last_of(&["REQUIRE_SOURCE_ADDRESS", "REQUIRE_SOURCE"]) {
        Some(s) if is_yes(&s.value) => true,
        other => {
            let origin = other.map_or(&st.origin, |s| &s.origin);
            d.warn(origin, "REQUIRE_SOURCE_ADDRESS is off (fwknop's default): imported as `require_source_match = false`, so a knock may open access for an address other than its source and a captured knock can be aimed elsewhere; set REQUIRE_SOURCE_ADDRESS Y (here: `require_source_match = true`) once the clients send their own address (`fwknop -a IP` or `-R`, not `-s`)".to_string());
            false
        }
    };
    let expires_at = match st.last_of(&["ACCESS_EXPIRE", "ACCESS_EXPIRE_EPOCH"]) {
        None => Some(None),
        Some(s) if s.var == "ACCESS_EXPIRE" => match parse_expire_date(&s.value) {
            Some(t) => Some(Some((
                t,
                format!(
                    "ACCESS_EXPIRE {} (UTC midnight; fwknopd used local time)",
                    s.value.as_str()
                ),
            ))),
            None => {
                d.error(
                    &s.origin,
                    format!(
                        "ACCESS_EXPIRE `{}` is not a date MM/DD/YYYY",
                        s.value.as_str()
                    ),
                );
                None
            }
        },
        Some(s) => match parse_seconds(&s.value) {
            Some(t) if i64::try_from(t).is_ok() => Some(Some((
                t,
                format!("ACCESS_EXPIRE_EPOCH {}", s.value.as_str()),
            ))),
            _ => {
                d.error(
                    &s.origin,
                    format!(
                        "ACCESS_EXPIRE_EPOCH `{}` is not a Unix time",
                        s.value.as_str()
                    ),
                );
                None
            }
        },
    };

    // Credential.
    let mode = match st.get("ENCRYPTION_MODE") {
        // fwknopd's defaults, as the wire module names them.
        None => Some(EncMode::default()),
        Some(s) => match s.value.to_ascii_lowercase().as_str() {
            known if known.parse::<EncMode>().is_ok() => known.parse().ok(),
            "asymmetric" => {
                d.error(
                    &s.origin,
                    format!("ENCRYPTION_MODE {}: {GPG_ADVICE}", s.value.as_str()),
                );
                None
            }
            _ => {
                d.error(&s.origin, format!("ENCRYPTION_MODE `{}` is not one of CBC, CTR, CFB, OFB, ECB, legacy (fwknop supports no other Rijndael mode)", s.value.as_str()));
                None
            }
        },
    };
    let key_setting = st.last_of(&["KEY", "KEY_BASE64"]);
    let key = match key_setting {
        None => {
            let msg = if gpg {
                format!("has no KEY or KEY_BASE64, only GnuPG settings: {GPG_ADVICE}")
            } else {
                "has no KEY or KEY_BASE64; add the client's Rijndael key (from `fwknop --key-gen`)"
                    .to_string()
            };
            d.error(&st.origin, msg);
            None
        }
        Some(s) => {
            if st.get("KEY").is_some() && st.get("KEY_BASE64").is_some() {
                d.warn(&s.origin, format!("both KEY and KEY_BASE64 are set; fwknopd uses the last one ({}), and so does the import; remove the other", s.var));
            }
            let k = key_text(s);
            check_key(&mut d, s, &k, MAX_KEY_LEN, "key").then_some(k)
        }
    };
    let hmac_setting = st.last_of(&["HMAC_KEY", "HMAC_KEY_BASE64"]);
    let digest = st.get("HMAC_DIGEST_TYPE");
    let hmac_type = match digest {
        None => Some(HmacType::default()),
        Some(s) => hmac_type(&s.value).or_else(|| {
            d.error(&s.origin, format!("HMAC_DIGEST_TYPE `{}` is not one of md5, sha1, sha256, sha384, sha512, sha3_256, sha3_512", s.value.as_str()));
            None
        }),
    };
    let hmac = match hmac_setting {
        None => {
            if let Some(s) = digest {
                d.warn(
                    &s.origin,
                    "HMAC_DIGEST_TYPE without an HMAC key is ignored (by fwknopd too)".to_string(),
                );
            }
            d.warn(&st.origin, "has no HMAC key: imported with `no_hmac = true`, so its packets are decrypted before they are authenticated; generate an HMAC key with `fwknop --key-gen` and use it on both ends (`fwknop --use-hmac`)".to_string());
            Some(None)
        }
        Some(s) => {
            if st.get("HMAC_KEY").is_some() && st.get("HMAC_KEY_BASE64").is_some() {
                d.warn(&s.origin, format!("both HMAC_KEY and HMAC_KEY_BASE64 are set; fwknopd uses the last one ({}), and so does the import; remove the other", s.var));
            }
            let k = key_text(s);
            let mut ok = check_key(&mut d, s, &k, MAX_HMAC_KEY_LEN, "HMAC key");
            if ok {
                if let (Some(kb), Some(hb)) = (key.as_ref().and_then(key_bytes), key_bytes(&k)) {
                    if *kb == *hb {
                        d.error(&s.origin, format!("{} equals the encryption key; fwknopd refuses that too; generate two keys with `fwknop --key-gen`", s.var));
                        ok = false;
                    }
                }
            }
            if ok && mode == Some(EncMode::Legacy) {
                d.error(&s.origin, "ENCRYPTION_MODE legacy cannot be combined with an HMAC key (fwknop clients refuse it); upgrade the client and use CBC with HMAC".to_string());
                ok = false;
            }
            match (ok, hmac_type) {
                (true, Some(t)) => Some(Some((k, t))),
                _ => None,
            }
        }
    };

    let (nat, gateway) = match st.get("FORWARD_ALL").filter(|s| is_yes(&s.value)) {
        Some(fa) => (Some(None), forward_all(&mut d, st, fa)),
        None => (force_nat(&mut d, st, allow.as_deref()), Some(None)),
    };

    if d.errors > 0 {
        return None;
    }
    Some(ClientOut {
        name,
        origin: st.origin.clone(),
        source_text: source,
        sources: sources?,
        destinations: destinations?,
        allow: allow?,
        allow_comment,
        deny: deny?,
        timeout: timeout?,
        max_timeout: max_timeout?,
        require_source_match,
        require_username: require_username?,
        expires_at: expires_at?,
        key: key?,
        hmac: hmac?,
        mode: mode?,
        commands,
        nat: nat?,
        gateway: gateway?,
    })
}

/// `FORWARD_ALL Y` (server/fw_util_iptables.c `forward_access_rule`: one FORWARD accept of
/// everything from the source; `snat_rule`: MASQUERADE unless FORCE_SNAT) → a `gateway`.
/// fwknopd names no network: everything the client sends through the host is accepted. nfknock's
/// gate only closes what it is told, so the gateway needs named networks; the FORCE_NAT host is
/// the one network the stanza names (as a /32, with a warning to widen it); without one, no
/// network can be derived and the stanza is refused, saying what to write. `None` on an error.
fn forward_all(
    d: &mut StanzaDiags<'_>,
    st: &Stanza,
    fa: &Setting,
) -> Option<Option<(Ipv4Net, SourceNat)>> {
    let source = match st.get("FORCE_SNAT") {
        Some(s) if st.get("FORCE_MASQUERADE").is_none_or(|m| !is_yes(&m.value)) => {
            match s.value.parse::<std::net::Ipv4Addr>() {
                Ok(a) => SourceNat::To(IpAddr::V4(a)),
                Err(_) => {
                    d.error(&s.origin, format!("FORCE_SNAT `{}` is not an IPv4 address; fix it (fwknopd refuses it too)", s.value.as_str()));
                    return None;
                }
            }
        }
        _ => SourceNat::Masquerade,
    };
    let host = st.get("FORCE_NAT").and_then(|f| {
        f.value
            .split_whitespace()
            .next()
            .and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
            .filter(|ip| !ip.is_unspecified() && !ip.is_loopback() && !ip.is_multicast())
            .map(|ip| (f, ip))
    });
    let Some((fnat, ip)) = host else {
        d.error(&fa.origin, "FORWARD_ALL Y without a FORCE_NAT host: fwknopd then forwards everything from the client, but nfknock's forward gate closes only networks it is told (closing all forwarding through this host would cut everyone else off); add `FORCE_NAT <an internal host> 0` to the stanza and widen the imported `gateway.networks` afterwards, or write the client's `gateway = { networks = [\"10.0.0.0/24\"], masquerade = true }` by hand".to_string());
        return None;
    };
    let net = Ipv4Net::new(ip, 32).ok()?;
    let nd = st.get("DISABLE_DNAT").filter(|s| is_yes(&s.value));
    let how = if nd.is_some() {
        "routed, as with DISABLE_DNAT"
    } else {
        "routed, not translated: fwknopd's FORWARD_ALL without DISABLE_DNAT sends all the client's traffic to that host (DNAT ALL); nfknock's gateway lets the client reach the internal hosts by their own addresses"
    };
    d.warn(&fnat.origin, format!("FORWARD_ALL Y with FORCE_NAT {}: imported as `gateway = {{ networks = [\"{net}\"] }}` ({how}); fwknopd accepts everything the client forwards, nfknock only the networks named: widen `networks` to the internal networks the client should reach (e.g. \"{}/24\"); the host needs forwarding on (`sysctl net.ipv4.ip_forward=1`)", fnat.value.as_str(), Ipv4Net::new(ip, 24).map(|n| n.trunc().network()).unwrap_or(ip)));
    Some(Some((net, source)))
}

/// `FORCE_NAT IP PORT`, `FORCE_SNAT IP`, `FORCE_MASQUERADE Y` (server/access.c) → the target
/// every allowed port of the client is forwarded to. `None` on an error (reported).
fn force_nat(
    d: &mut StanzaDiags<'_>,
    st: &Stanza,
    allow: Option<&[Access]>,
) -> Option<Option<(SocketAddr, SourceNat, bool)>> {
    let snat = st.get("FORCE_SNAT");
    let masq = st.get("FORCE_MASQUERADE").filter(|s| is_yes(&s.value));
    let no_dnat = st.get("DISABLE_DNAT").filter(|s| is_yes(&s.value));
    let Some(fnat) = st.get("FORCE_NAT") else {
        for s in [snat, masq, no_dnat].into_iter().flatten() {
            d.warn(&s.origin, format!("{} without FORCE_NAT: nothing is forwarded for this client, so there is no source to rewrite; dropped", s.var));
        }
        return Some(None);
    };
    let mut words = fnat.value.split_whitespace();
    let to = match (words.next(), words.next(), words.next()) {
        (Some(ip), Some(port), None) => {
            match (ip.parse::<std::net::Ipv4Addr>(), port.parse::<u16>()) {
                (Ok(ip), Ok(port)) if port != 0 && !ip.is_unspecified() && !ip.is_loopback() => {
                    Some(SocketAddr::new(IpAddr::V4(ip), port))
                }
                _ => None,
            }
        }
        _ => None,
    };
    let Some(to) = to else {
        d.error(&fnat.origin, format!("FORCE_NAT `{}` is not `IPv4-ADDRESS PORT` (e.g. `FORCE_NAT 192.168.10.2 22`); fix it (fwknopd refuses it too)", fnat.value.as_str()));
        return None;
    };
    let source = match (masq, snat) {
        (Some(m), Some(s)) => {
            d.warn(&s.origin, format!("FORCE_SNAT and FORCE_MASQUERADE are both set; fwknopd masquerades ({}), and so does the import", m.var));
            SourceNat::Masquerade
        }
        (Some(_), None) => SourceNat::Masquerade,
        (None, Some(s)) => {
            match s.value.parse::<std::net::Ipv4Addr>() {
                Ok(a) => SourceNat::To(IpAddr::V4(a)),
                Err(_) => {
                    d.error(&s.origin, format!("FORCE_SNAT `{}` is not an IPv4 address; fix it (fwknopd refuses it too)", s.value.as_str()));
                    return None;
                }
            }
        }
        (None, None) => SourceNat::Keep,
    };
    if let Some(nd) = no_dnat {
        // Routed: the client connects to the target itself, so each allowed port must be it.
        if source != SourceNat::Keep {
            d.error(&nd.origin, "DISABLE_DNAT with FORCE_SNAT/FORCE_MASQUERADE: nfknock rewrites the source of translated flows only; drop one of them".to_string());
            return None;
        }
        if let Some(a) = allow.and_then(|l| l.iter().find(|a| a.port != to.port())) {
            d.error(&nd.origin, format!("DISABLE_DNAT: the client connects to {to} itself, so every port it may open must be {}; {a} is not (split the stanza, or drop DISABLE_DNAT)", to.port()));
            return None;
        }
        d.warn(&fnat.origin, format!("FORCE_NAT {} with DISABLE_DNAT: the client routes to {to} through this host (`dnat = false`); nfknock's forward gate closes {to} to everyone else (needs `gate_forward = true`, the default, and forwarding on: `sysctl net.ipv4.ip_forward=1`)", fnat.value.as_str()));
        return Some(Some((to, source, false)));
    }
    d.warn(&fnat.origin, format!("FORCE_NAT {}: every port of this client's `allow` is forwarded to {to} (`nat`); the host needs forwarding on (`sysctl net.ipv4.ip_forward=1`; nfknock changes no sysctl, `nfknock check` warns), and {to} must route its answers back through this host unless the source is rewritten (FORCE_SNAT / FORCE_MASQUERADE)", fnat.value.as_str()));
    Some(Some((to, source, true)))
}
