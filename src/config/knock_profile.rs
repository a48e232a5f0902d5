//! The knock client's own file of knock profiles (`nfknock knock -n NAME`), like fwknop's `~/.fwknoprc`: an optional
//! `[default]` table and one `[server.NAME]` stanza per server. Same two stages and the same
//! error discipline as the server config.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use toml::de::DeValue;
use toml::Spanned;
use zeroize::Zeroizing;

use super::files::{Files, MemFiles};
use super::raw::{self, join, RawClientDocument, RawProfile, Section, Shape, Sink};
use super::secret;
use super::values::{self, int_in, valid_name};
use super::{ConfigErrors, Problem};
use crate::access::Access;
use crate::crypto::{NativeKey, SECRET_LEN};
use crate::wire::fwknop::{decode_key_base64, DigestType, FwknopKey, MAX_CLIENT_TIMEOUT};

/// One `[server.NAME]` stanza with `[default]` applied.
#[derive(Debug, Clone)]
pub struct KnockProfile {
    /// The stanza name (`-n NAME`).
    pub name: String,
    /// Host name or address (v4/v6) to send the knock to; resolved when knocking.
    pub server: String,
    /// UDP port of the server's knock listener.
    pub port: u16,
    /// The key file the key was read from; `None` for an inline `key`.
    pub key_file: Option<PathBuf>,
    /// The packet format and its key (`format = "native"`, the default, or `"fwknop"`).
    pub key: ProfileKey,
    /// What to ask for.
    pub access: Vec<Access>,
    /// Grant length to ask for; `None` lets the server use the client's default.
    pub timeout: Option<u32>,
    pub allow_ip: AllowIp,
}

/// What a stanza knocks with: a native key, or fwknop credentials and settings.
#[derive(Debug, Clone)]
pub enum ProfileKey {
    Native(NativeKey),
    Fwknop(FwknopProfile),
}

/// A `format = "fwknop"` stanza's packet settings: what `nfknock knock --fwknop` sends.
#[derive(Debug, Clone)]
pub struct FwknopProfile {
    /// Rijndael key (`key`/`key_file`), HMAC key (`hmac_key`/`hmac_key_file`), `hmac`, `mode`.
    pub key: FwknopKey,
    /// The inner digest (`digest`, fwknop's `--digest-type`); default SHA-256.
    pub digest: DigestType,
    /// The user name in the packet (`user`, fwknop's `-U`); `None`: the login name.
    pub user: Option<String>,
}

/// Which address the grant is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowIp {
    /// Not set: this host's address on the route to the server (what `require_source_match`
    /// expects when there is no NAT on the way).
    Auto,
    /// The server uses the knock's source address (what it sees after NAT).
    Source,
    /// This address.
    Addr(IpAddr),
}

impl std::fmt::Display for AllowIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AllowIp::Auto => f.write_str("auto"),
            AllowIp::Source => f.write_str("source"),
            AllowIp::Addr(a) => write!(f, "{a}"),
        }
    }
}

/// A validated client config.
#[derive(Debug, Clone)]
pub struct KnockProfiles {
    pub path: PathBuf,
    /// Sorted by name.
    pub profiles: Vec<KnockProfile>,
}

impl KnockProfiles {
    /// The stanza `[server.NAME]`.
    pub fn stanza(&self, name: &str) -> Option<&KnockProfile> {
        self.profiles.iter().find(|p| p.name == name)
    }

    /// All stanza names (for "no stanza `x`; known: a, b").
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.profiles.iter().map(|p| p.name.as_str())
    }
}

/// `$XDG_CONFIG_HOME/nfknock/client.toml`, else `~/.config/nfknock/client.toml`, from the
/// values of those variables (the CLI reads them); `None` when neither is usable. The XDG spec
/// says a relative `$XDG_CONFIG_HOME` is invalid and must be ignored.
pub fn knock_profiles_path(
    xdg: Option<&std::ffi::OsStr>,
    home: Option<&std::ffi::OsStr>,
) -> Option<PathBuf> {
    let base = match xdg.map(Path::new).filter(|p| p.is_absolute()) {
        Some(x) => x.to_path_buf(),
        None => Path::new(home.filter(|h| !h.is_empty())?).join(".config"),
    };
    Some(base.join("nfknock").join("client.toml"))
}

/// What reading the knock client's file needs from outside it; the CLI fills it in.
#[derive(Clone, Copy)]
pub struct KnockEnv<'a> {
    /// Where the file and the key files it names are read.
    pub files: &'a dyn Files,
    /// Who reads them (key files must be this user's or root's).
    pub euid: u32,
    /// `$HOME`, for `~` in `key_file`; `None` when unset or empty.
    pub home: Option<&'a Path>,
}

/// Read and validate the knock client's file (and the key files it names) through `env`.
///
/// A file holding an inline `key` must itself be private: mode 0600 or stricter, owned by
/// `env.euid` or root.
pub fn load_knock_profiles(path: &Path, env: &KnockEnv<'_>) -> Result<KnockProfiles, ConfigErrors> {
    let (text, meta) = super::read_config(env.files, path)?;
    let checked = check_client(&text, path, env);
    let mut problems = checked.problems;
    if checked.inline_secret {
        let owner = secret::Owner::running_as(env.euid);
        if let Err(problem) = super::inline_secrets_private(path, meta, &owner) {
            problems.insert(0, problem);
        }
    }
    match checked.plan {
        Some(plan) if problems.is_empty() => Ok(plan.build()),
        _ => Err(ConfigErrors(problems)),
    }
}

/// Validate the knock client's file given as text alone: no key file can be read and `~` is
/// not expanded (for text with inline keys: fuzz targets, tests).
pub fn parse_knock_profiles(text: &str, path: &Path) -> Result<KnockProfiles, ConfigErrors> {
    let env = KnockEnv {
        files: &MemFiles::default(),
        euid: 0,
        home: None,
    };
    let checked = check_client(text, path, &env);
    match checked.plan {
        Some(plan) if checked.problems.is_empty() => Ok(plan.build()),
        _ => Err(ConfigErrors(checked.problems)),
    }
}

const ROOT: Shape = Shape {
    header: "top level",
    nested: &["default", "server"],
    hint: |_| None,
};
const DEFAULT: Shape = Shape {
    header: "[default]",
    nested: &[],
    hint: profile_hint,
};
const STANZA: Shape = Shape {
    header: "[server.NAME]",
    nested: &[],
    hint: profile_hint,
};

fn profile_hint(key: &str) -> Option<&'static str> {
    Some(match key {
        "server" => "a quoted host name or address, e.g. `server = \"203.0.113.10\"`",
        "port" => "the server's knock port, from 1 to 65535, e.g. `port = 62201`",
        "key" => "the quoted base64 line printed by `nfknock keygen`",
        "key_file" => "a quoted path to the key from `nfknock keygen`, e.g. `key_file = \"~/.config/nfknock/home.key\"`",
        "access" => "a list of accesses, e.g. `access = [\"tcp/22\"]`",
        "timeout" => "seconds, e.g. `timeout = 60`",
        "allow_ip" => "\"source\" or a quoted address, e.g. `allow_ip = \"source\"`",
        "format" => "\"native\" (the default) or \"fwknop\"",
        "hmac_key" => "the quoted HMAC_KEY_BASE64 value printed by `nfknock keygen --fwknop`",
        "hmac_key_file" => "a quoted path to the HMAC key file from `nfknock keygen --fwknop --out`",
        "hmac" => "one of \"md5\", \"sha1\", \"sha256\", \"sha384\", \"sha512\", \"sha3_256\", \"sha3_512\"",
        "digest" => "one of \"md5\", \"sha1\", \"sha256\", \"sha384\", \"sha512\", \"sha3_256\", \"sha3_512\"",
        "mode" => "one of \"cbc\", \"ctr\", \"cfb\", \"ofb\", \"ecb\"",
        "user" => "a quoted user name, e.g. `user = \"alice\"`",
        _ => return None,
    })
}

/// A validated stanza whose key is not derived yet.
pub(crate) struct ProfilePlan {
    name: String,
    server: String,
    port: u16,
    key_file: Option<PathBuf>,
    secret: PlanSecret,
    access: Vec<Access>,
    timeout: Option<u32>,
    allow_ip: AllowIp,
}

/// A stanza's key before the native key is derived.
pub(crate) enum PlanSecret {
    Native(Zeroizing<[u8; SECRET_LEN]>),
    Fwknop(FwknopProfile),
}

#[cfg(test)]
impl PlanSecret {
    /// The native secret (tests of native stanzas).
    fn native(&self) -> &[u8; SECRET_LEN] {
        match self {
            PlanSecret::Native(s) => s,
            PlanSecret::Fwknop(_) => panic!("an fwknop stanza"),
        }
    }
}

pub(crate) struct ClientPlan {
    path: PathBuf,
    profiles: Vec<ProfilePlan>,
}

impl ClientPlan {
    fn build(self) -> KnockProfiles {
        let profiles = self
            .profiles
            .into_iter()
            .map(|p| KnockProfile {
                key: match p.secret {
                    PlanSecret::Native(s) => ProfileKey::Native(NativeKey::derive(&s)),
                    PlanSecret::Fwknop(f) => ProfileKey::Fwknop(f),
                },
                name: p.name,
                server: p.server,
                port: p.port,
                key_file: p.key_file,
                access: p.access,
                timeout: p.timeout,
                allow_ip: p.allow_ip,
            })
            .collect();
        KnockProfiles {
            path: self.path,
            profiles,
        }
    }
}

/// Result of checking a client config text.
pub(crate) struct Checked {
    pub(crate) plan: Option<ClientPlan>,
    pub(crate) problems: Vec<Problem>,
    pub(crate) inline_secret: bool,
}

/// Check a client config text: every problem, with lines.
pub(crate) fn check_client(text: &str, path: &Path, env: &KnockEnv<'_>) -> Checked {
    let mut sink = Sink::new(text, path);
    let mut inline_secret = false;
    let plan = check(&mut sink, text, path, env, &mut inline_secret);
    Checked {
        plan,
        problems: sink.into_problems(),
        inline_secret,
    }
}

fn check(
    sink: &mut Sink<'_>,
    text: &str,
    path: &Path,
    env: &KnockEnv<'_>,
    inline_secret: &mut bool,
) -> Option<ClientPlan> {
    let doc = raw::parse_document(sink, text)?;
    let span = doc.span();
    let root: Section<'_, RawClientDocument> = raw::section(
        sink,
        Spanned::new(span, DeValue::Table(doc.into_inner())),
        "",
        &ROOT,
    )?;

    let mut default = RawProfile::default();
    let mut stanzas = Vec::new();
    let mut saw_server = false;
    for (k, v) in root.nested {
        if k.get_ref().as_ref() == "default" {
            if let Some(sec) = raw::section::<RawProfile>(sink, v, "default", &DEFAULT) {
                default = sec.raw;
            }
            continue;
        }
        saw_server = true;
        let vspan = v.span();
        match v.into_inner() {
            DeValue::Table(t) => {
                for (name, value) in t {
                    let n = name.get_ref().to_string();
                    let key = format!("server.{n}");
                    if !valid_name(&n) {
                        sink.at(Some(name.span()), &key, format!("`{n}` is not a valid stanza name; use 1 to 64 letters, digits and `_.@-`"));
                        continue;
                    }
                    if let Some(sec) = raw::section::<RawProfile>(sink, value, &key, &STANZA) {
                        stanzas.push((n, sec));
                    }
                }
            }
            other => sink.at(
                Some(vspan),
                "server",
                format!(
                    "must hold tables, found {}; write each server as `[server.NAME]`",
                    other.type_str()
                ),
            ),
        }
    }
    if !saw_server && sink.problems.is_empty() {
        sink.at(None, "server", "no server is configured; add a `[server.NAME]` stanza with `server`, `key_file` and `access`");
    }

    let mut profiles = Vec::new();
    for (name, sec) in stanzas {
        if sec.raw.key.is_some() || default.key.is_some() {
            *inline_secret = true;
        }
        if let Some(p) = profile(sink, path, env, &name, &sec, &default) {
            profiles.push(p);
        }
    }
    profiles.sort_by(|a, b| a.name.cmp(&b.name));
    Some(ClientPlan {
        path: path.to_path_buf(),
        profiles,
    })
}

/// A value from the stanza, else from `[default]`, with the key it was found under.
fn pick<'a, T>(
    stanza: &'a Option<T>,
    default: &'a Option<T>,
    prefix: &str,
    key: &str,
) -> Option<(&'a T, String)> {
    match (stanza, default) {
        (Some(v), _) => Some((v, join(prefix, key))),
        (None, Some(v)) => Some((v, join("default", key))),
        (None, None) => None,
    }
}

fn profile(
    sink: &mut Sink<'_>,
    path: &Path,
    env: &KnockEnv<'_>,
    name: &str,
    sec: &Section<'_, RawProfile>,
    default: &RawProfile,
) -> Option<ProfilePlan> {
    let prefix = format!("server.{name}");
    let raw = &sec.raw;
    let stanza_span = Some(sec.span.clone());
    let mut ok = true;
    let missing = |sink: &mut Sink<'_>, key: &str, example: &str| {
        if !sec.failed(key) {
            sink.at(
                stanza_span.clone(),
                &join(&prefix, key),
                format!(
                    "stanza `{name}` has no `{key}`; add e.g. `{example}` (here or in [default])"
                ),
            );
        }
    };

    let server = match pick(&raw.server, &default.server, &prefix, "server") {
        Some((s, key)) => match check_host(s.get_ref()) {
            Ok(()) => Some(s.get_ref().clone()),
            Err(m) => {
                sink.at(Some(s.span()), &key, m);
                None
            }
        },
        None => {
            missing(sink, "server", "server = \"203.0.113.10\"");
            None
        }
    };

    let port = match pick(&raw.port, &default.port, &prefix, "port") {
        Some((p, key)) => int_in(
            sink,
            &Some(p.clone()),
            &key,
            (1, 65535),
            0,
            "the server's knock port",
        )
        .and_then(|p| u16::try_from(p).ok()),
        None => Some(super::DEFAULT_PORT),
    };

    // A stanza's own key (inline or file) overrides any key in [default].
    let (key_text, key_file) = if raw.key.is_some() || raw.key_file.is_some() {
        (
            raw.key.as_ref().map(|k| (k, join(&prefix, "key"))),
            raw.key_file
                .as_ref()
                .map(|f| (f, join(&prefix, "key_file"))),
        )
    } else {
        (
            default.key.as_ref().map(|k| (k, join("default", "key"))),
            default
                .key_file
                .as_ref()
                .map(|f| (f, join("default", "key_file"))),
        )
    };
    let format = match pick(&raw.format, &default.format, &prefix, "format") {
        None => Some(false),
        Some((f, _)) if f.get_ref() == "native" => Some(false),
        Some((f, _)) if f.get_ref() == "fwknop" => Some(true),
        Some((f, key)) => {
            sink.at(
                Some(f.span()),
                &key,
                format!("`{}` is not a knock format; write `format = \"native\"` (nfknock's own, the default) or `format = \"fwknop\"` (fwknop 2.x packets, for fwknopd or an nfknock `[client.fwknop]`)", f.get_ref()),
            );
            None
        }
    };
    let is_fwknop = format == Some(true);
    let decode = |text: &str| -> Result<KeyBytes, String> {
        if is_fwknop {
            decode_key_base64(text).map(KeyBytes::Fwknop).ok_or_else(|| {
                "is not valid base64; use the KEY_BASE64 value printed by `nfknock keygen --fwknop`"
                    .to_string()
            })
        } else {
            secret::decode_native_secret(text).map(KeyBytes::Native)
        }
    };
    let key = match (key_text, key_file) {
        (Some(_), Some((f, key))) => {
            sink.at(
                Some(f.span()),
                &key,
                "`key` is already given; use either `key` or `key_file`, not both",
            );
            None
        }
        (Some((k, key)), None) => match decode(&k.get_ref().0) {
            Ok(bytes) => Some((None, bytes, k.span(), key)),
            Err(m) => {
                sink.at(Some(k.span()), &key, format!("the key {m}"));
                None
            }
        },
        (None, Some((f, key))) => {
            let r = secret::resolve(f.get_ref(), path, env.home).and_then(|p| {
                let owner = secret::Owner::running_as(env.euid);
                let text = secret::read_key_file(env.files, &p, &owner)?;
                let bytes = decode(&text).map_err(|m| format!("key file {} {m}", p.display()))?;
                Ok((Some(p), bytes))
            });
            match r {
                Ok((p, b)) => Some((p, b, f.span(), key)),
                Err(m) => {
                    sink.at(Some(f.span()), &key, m);
                    None
                }
            }
        }
        (None, None) => {
            if !sec.failed("key") {
                missing(
                    sink,
                    "key_file",
                    "key_file = \"~/.config/nfknock/home.key\"",
                );
            }
            None
        }
    };
    let key = match key {
        Some((file, KeyBytes::Native(secret), _, _)) => Some((file, PlanSecret::Native(secret))),
        Some((file, KeyBytes::Fwknop(bytes), span, key)) => {
            fwknop::profile(sink, path, env, &prefix, sec, default, bytes, span, &key)
                .map(|f| (file, PlanSecret::Fwknop(f)))
        }
        None => {
            if is_fwknop {
                // Still report the fwknop settings' own problems.
                let _ = fwknop::settings(sink, path, env, &prefix, sec, default);
            }
            None
        }
    };
    if format == Some(false) {
        fwknop::native_only(sink, &prefix, sec);
    }

    let access = match pick(&raw.access, &default.access, &prefix, "access") {
        Some((list, key)) => {
            let before = sink.problems.len();
            let v: Vec<Access> = values::accesses(sink, list, &key)
                .into_iter()
                .map(|(a, _)| a)
                .collect();
            if list.get_ref().is_empty() {
                sink.at(
                    Some(list.span()),
                    &key,
                    "is empty; list what to open, e.g. `access = [\"tcp/22\"]`",
                );
            }
            (sink.problems.len() == before).then_some(v)
        }
        None => {
            missing(sink, "access", "access = [\"tcp/22\"]");
            None
        }
    };

    let timeout = match pick(&raw.timeout, &default.timeout, &prefix, "timeout") {
        Some((t, key)) => match int_in(
            sink,
            &Some(t.clone()),
            &key,
            (1, super::server::MAX_MAX_TIMEOUT.into()),
            0,
            "timeout (seconds)",
        ) {
            Some(v) => Some(u32::try_from(v).ok()),
            None => {
                ok = false;
                None
            }
        },
        None => Some(None),
    };

    let allow_ip = match pick(&raw.allow_ip, &default.allow_ip, &prefix, "allow_ip") {
        None => Some(AllowIp::Auto),
        Some((a, _)) if a.get_ref() == "source" => Some(AllowIp::Source),
        Some((a, key)) => match a.get_ref().parse::<IpAddr>() {
            Ok(ip) if !ip.is_unspecified() => Some(AllowIp::Addr(ip)),
            _ => {
                sink.at(
                    Some(a.span()),
                    &key,
                    format!("`{}` is neither \"source\" nor an address; write `allow_ip = \"source\"` to let the server use the packet's source, or an address such as \"198.51.100.7\"", a.get_ref()),
                );
                None
            }
        },
    };

    let (server, port, (key_file, secret), access, timeout, allow_ip) =
        (server?, port?, key?, access?, timeout?, allow_ip?);
    if is_fwknop {
        // An fwknop packet carries an IPv4 allow IP (FWKNOP-WIRE.md §2.3) and a client timeout
        // of at most 65536 s (§2.1).
        if let (AllowIp::Addr(IpAddr::V6(_)), Some((a, key))) = (
            allow_ip,
            pick(&raw.allow_ip, &default.allow_ip, &prefix, "allow_ip"),
        ) {
            sink.at(Some(a.span()), &key, "fwknop packets carry only an IPv4 allow IP; write an IPv4 address, or `allow_ip = \"source\"` to let the server use the packet's source");
            ok = false;
        }
        if let (Some(t), Some((span, key))) = (
            timeout,
            pick(&raw.timeout, &default.timeout, &prefix, "timeout"),
        ) {
            if t > MAX_CLIENT_TIMEOUT {
                sink.at(
                    Some(span.span()),
                    &key,
                    format!("fwknop packets ask for at most {MAX_CLIENT_TIMEOUT} seconds"),
                );
                ok = false;
            }
        }
    }
    ok.then_some(ProfilePlan {
        name: name.to_string(),
        server,
        port,
        key_file,
        secret,
        access,
        timeout,
        allow_ip,
    })
}

/// A key decoded for its format, before any derivation.
enum KeyBytes {
    Native(Zeroizing<[u8; SECRET_LEN]>),
    Fwknop(Zeroizing<Vec<u8>>),
}

/// A host name (RFC 1123 labels) or an IPv4/IPv6 address.
fn check_host(host: &str) -> Result<(), String> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let h = host.strip_suffix('.').unwrap_or(host);
    if (1..=253).contains(&h.len()) && h.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!("`{host}` is neither a host name nor an address; write e.g. `server = \"knock.example.org\"` or `server = \"2001:db8::10\"` (no brackets, no port)"))
    }
}

mod fwknop;
#[cfg(test)]
mod tests;
