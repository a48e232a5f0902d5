//! Stage 2 for the server config: raw sections → [`Plan`] (everything validated, native
//! secrets still as bytes) → [`Config`].
//!
//! Native keys are derived only in [`Plan::build`], after every check has passed, so the whole
//! check runs without touching key derivation.

use std::ops::Range;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use toml::de::DeValue;
use toml::Spanned;
use zeroize::Zeroizing;

use super::files::{Accounts, Files};
use super::raw::{
    self, join, RawClient, RawFwknop, RawServer, RawServerDocument, Section, Shape, Sink,
};
use super::secret::{self, Owner};
use super::values::{self, indexed, int_in, valid_name};
use super::{ClientEntry, Config, Credential, Problem, RunAs, Server};
use crate::access::Access;
use crate::crypto::{NativeKey, SECRET_LEN};
use crate::wire::fwknop::{
    decode_key_base64, EncMode, FwknopKey, HmacType, MAX_HMAC_KEY_LEN, MAX_KEY_LEN, PLACEHOLDER_KEY,
};

/// Largest `max_timeout`: one week.
pub const MAX_MAX_TIMEOUT: u32 = 86_400 * 7;
/// Largest `max_age`.
pub const MAX_MAX_AGE: u64 = 3600;

const ROOT: Shape = Shape {
    header: "top level",
    nested: &["server", "client"],
    hint: |_| None,
};

const SERVER: Shape = Shape {
    header: "[server]",
    nested: &[],
    hint: server_hint,
};

const CLIENT: Shape = Shape {
    header: "[[client]]",
    nested: &["fwknop"],
    hint: client_hint,
};

const FWKNOP: Shape = Shape {
    header: "[client.fwknop]",
    nested: &[],
    hint: fwknop_hint,
};

fn server_hint(key: &str) -> Option<&'static str> {
    Some(match key {
        "port" => "the UDP port knocks arrive on, a number from 1 to 65535, e.g. `port = 62201`",
        "queue" => "the NFQUEUE number, from 0 to 65535, e.g. `queue = 0`",
        "state_dir" => "a quoted absolute path, e.g. `state_dir = \"/var/lib/nfknock\"`",
        "protect" => "a list of accesses, e.g. `protect = [\"tcp/22\", \"tcp/443\"]`",
        "max_age" => "seconds, from 1 to 3600, e.g. `max_age = 120`",
        "manage_ruleset" | "gate_forward" | "revoke_on_reload" => "`true` or `false`",
        "rate_limit" => "knocks per second per source (0 turns it off), e.g. `rate_limit = 20`",
        "rate_limit_v4_prefix" => "the prefix length an IPv4 source is metered by, from 1 to 32, e.g. `rate_limit_v4_prefix = 32`",
        "rate_limit_v6_prefix" => "the prefix length an IPv6 source is metered by, from 1 to 128, e.g. `rate_limit_v6_prefix = 64`",
        "user" => "a quoted user name, e.g. `user = \"nfknock\"`",
        _ => return None,
    })
}

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
        "expires" => "a date, e.g. `expires = \"2027-01-31\"`",
        "expires_at" => "a Unix time, e.g. `expires_at = 1801353600`",
        "fwknop" => "a table: `[client.fwknop]` after this client's keys",
        _ => return None,
    })
}

fn fwknop_hint(key: &str) -> Option<&'static str> {
    Some(match key {
        "key_base64" | "hmac_key_base64" => "the quoted base64 text printed by `fwknop --key-gen`",
        "key" | "hmac_key" => "a quoted passphrase",
        "key_file" | "hmac_key_file" => "a quoted path to a file holding one line of base64",
        "hmac" => "one of \"md5\", \"sha1\", \"sha256\", \"sha384\", \"sha512\", \"sha3_256\", \"sha3_512\"",
        "mode" => "one of \"cbc\", \"ctr\", \"cfb\", \"ofb\", \"ecb\", \"legacy\"",
        "no_hmac" => "`true` or `false`",
        _ => return None,
    })
}

/// A client's secret before key derivation.
pub(crate) enum Secret {
    /// Boxed: drafts and plans move through `Vec`s, and a secret stored inline would stay in
    /// each vector's freed buffer after being moved out; the box moves only a pointer.
    Native(Box<Zeroizing<[u8; SECRET_LEN]>>),
    Fwknop(FwknopKey),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Native(_) => f.write_str("Native(<redacted>)"),
            Secret::Fwknop(k) => f.debug_tuple("Fwknop").field(k).finish(),
        }
    }
}

/// A validated client whose native key is not derived yet.
#[derive(Debug)]
pub(crate) struct ClientPlan {
    pub(crate) name: String,
    pub(crate) secret: Secret,
    pub(crate) allow: Vec<Access>,
    pub(crate) deny: Vec<Access>,
    pub(crate) timeout: u32,
    pub(crate) max_timeout: u32,
    pub(crate) sources: Vec<IpNet>,
    pub(crate) destinations: Vec<IpNet>,
    pub(crate) require_source_match: bool,
    pub(crate) require_username: Option<String>,
    pub(crate) expires_at: Option<u64>,
}

/// A fully validated config, native keys not derived yet.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) path: PathBuf,
    pub(crate) server: Server,
    pub(crate) clients: Vec<ClientPlan>,
}

impl Plan {
    /// Derive the native keys. Cannot fail: every input was validated.
    pub(crate) fn build(self) -> Config {
        let clients = self
            .clients
            .into_iter()
            .map(|c| ClientEntry {
                credential: match c.secret {
                    Secret::Native(bytes) => Credential::Native(NativeKey::derive(&bytes)),
                    Secret::Fwknop(k) => Credential::Fwknop(k),
                },
                name: c.name,
                allow: c.allow,
                deny: c.deny,
                timeout: c.timeout,
                max_timeout: c.max_timeout,
                sources: c.sources,
                destinations: c.destinations,
                require_source_match: c.require_source_match,
                require_username: c.require_username,
                expires_at: c.expires_at,
            })
            .collect();
        Config {
            path: self.path,
            server: self.server,
            clients,
        }
    }
}

/// Result of checking a server config text.
pub(crate) struct Checked {
    /// `Some` when stage 2 could build everything; only usable if `problems` is empty.
    pub(crate) plan: Option<Plan>,
    pub(crate) problems: Vec<Problem>,
    /// The text holds a key inline (so the file itself must be private).
    pub(crate) inline_secret: bool,
    /// Who files holding secrets must belong to (from `[server] user`).
    pub(crate) owner: Owner,
}

/// Check a server config text: every problem, with lines. Key files are read through
/// `files`, `[server] user` is resolved against `accounts`.
pub(crate) fn check_text(
    text: &str,
    path: &Path,
    files: &dyn Files,
    accounts: &dyn Accounts,
) -> Checked {
    let mut sink = Sink::new(text, path);
    let mut cx = Cx {
        path,
        inline_secret: false,
        files,
        accounts,
        owner: Owner::for_server(&RunAs::Unchanged, accounts.euid()),
    };
    let plan = check(&mut sink, &mut cx, text);
    Checked {
        plan,
        problems: sink.into_problems(),
        inline_secret: cx.inline_secret,
        owner: cx.owner,
    }
}

struct Cx<'a> {
    path: &'a Path,
    inline_secret: bool,
    files: &'a dyn Files,
    accounts: &'a dyn Accounts,
    /// Who key files must belong to; known once `[server]` is read, before any client.
    owner: Owner,
}

/// A client on its way through stage 2.
struct Draft {
    name: Option<(String, Range<usize>)>,
    secret: Option<Secret>,
    allow: Vec<(Access, Range<usize>)>,
    deny: Vec<Access>,
    timeout: u32,
    max_timeout: u32,
    sources: Vec<IpNet>,
    destinations: Vec<IpNet>,
    require_source_match: bool,
    require_username: Option<String>,
    expires_at: Option<u64>,
}

fn check(sink: &mut Sink<'_>, cx: &mut Cx<'_>, text: &str) -> Option<Plan> {
    let doc = raw::parse_document(sink, text)?;
    let span = doc.span();
    let root: Section<'_, RawServerDocument> = raw::section(
        sink,
        Spanned::new(span, DeValue::Table(doc.into_inner())),
        "",
        &ROOT,
    )?;

    let mut server_sec = None;
    let mut client_values = Vec::new();
    let mut client_key_span = None;
    for (k, v) in root.nested {
        match k.get_ref().as_ref() {
            "server" => server_sec = raw::section::<RawServer>(sink, v, "server", &SERVER),
            _ => {
                client_key_span = Some(k.span());
                let vspan = v.span();
                match v.into_inner() {
                    DeValue::Array(items) => client_values.extend(items),
                    DeValue::Table(_) => sink.at(
                        Some(vspan),
                        "client",
                        "`[client]` is a single table; write `[[client]]` (two brackets) before each client",
                    ),
                    other => sink.at(
                        Some(vspan),
                        "client",
                        format!("must be a list of tables, found {}; write `[[client]]` before each client", other.type_str()),
                    ),
                }
            }
        }
    }

    let (mut server, protect) = server_settings(sink, cx, server_sec);
    cx.owner = Owner::for_server(&server.user, cx.accounts.euid());

    let mut drafts = Vec::new();
    for (i, v) in client_values.into_iter().enumerate() {
        let n = i + 1;
        let prefix = format!("client[{n}]");
        if let Some(sec) = raw::section::<RawClient>(sink, v, &prefix, &CLIENT) {
            drafts.push(client(sink, cx, &prefix, sec));
        }
    }
    if drafts.is_empty() && client_key_span.is_none() && sink.problems.is_empty() {
        sink.at(
            None,
            "client",
            "no client is configured, so no knock can ever be accepted; add a `[[client]]` with `name`, `key` (from `nfknock keygen`) and `allow`",
        );
    }

    // Names are unique: the name is what logs, `nfknock list` and reloads go by.
    for (i, d) in drafts.iter().enumerate() {
        let Some((name, span)) = &d.name else {
            continue;
        };
        if let Some((_, first)) = drafts[..i]
            .iter()
            .filter_map(|e| e.name.as_ref())
            .find(|(m, _)| m == name)
        {
            let first_line = sink.line(first.start);
            sink.at(
                Some(span.clone()),
                &indexed("client", i + 1, "name"),
                format!("`{name}` is already the name of the client on line {first_line}; give each client its own name"),
            );
        }
    }

    // The gate protects `protect`; a grant for anything outside it opens nothing that was closed.
    match protect {
        None => {
            let mut all: Vec<Access> = drafts
                .iter()
                .flat_map(|d| d.allow.iter().map(|(a, _)| *a))
                .collect();
            all.sort();
            all.dedup();
            server.protect = all;
        }
        Some((list, list_span)) => {
            let list_line = sink.line(list_span.start);
            for (i, d) in drafts.iter().enumerate() {
                for (a, span) in d.allow.iter().filter(|(a, _)| !list.contains(a)) {
                    let who = d.name.as_ref().map_or_else(
                        || format!("client[{}]", i + 1),
                        |(n, _)| format!("client `{n}`"),
                    );
                    sink.at(
                        Some(span.clone()),
                        &indexed("client", i + 1, "allow"),
                        format!(
                            "{who} may be granted {a} but `[server] protect` (line {list_line}) does not include it, so the gate never closes it; add \"{a}\" to `protect` or remove it from this `allow`"
                        ),
                    );
                }
            }
            server.protect = list;
        }
    }

    let mut clients = Vec::new();
    for d in drafts {
        // A draft without a name or secret has already been reported.
        let (Some((name, _)), Some(secret)) = (d.name, d.secret) else {
            continue;
        };
        clients.push(ClientPlan {
            name,
            secret,
            allow: d.allow.into_iter().map(|(a, _)| a).collect(),
            deny: d.deny,
            timeout: d.timeout,
            max_timeout: d.max_timeout,
            sources: d.sources,
            destinations: d.destinations,
            require_source_match: d.require_source_match,
            require_username: d.require_username,
            expires_at: d.expires_at,
        });
    }
    Some(Plan {
        path: cx.path.to_path_buf(),
        server,
        clients,
    })
}

/// An explicit `protect` list and where it is written.
type ExplicitProtect = (Vec<Access>, Range<usize>);

/// `[server]` (optional: every key has a default). Returns the explicit `protect`, if any.
fn server_settings(
    sink: &mut Sink<'_>,
    cx: &Cx<'_>,
    sec: Option<Section<'_, RawServer>>,
) -> (Server, Option<ExplicitProtect>) {
    let raw = sec.map(|s| s.raw).unwrap_or_default();
    let int =
        |sink: &mut Sink<'_>, v: &Option<Spanned<i64>>, k: &str, range, default: i64, what| {
            int_in(sink, v, &join("server", k), range, default, what).unwrap_or(default)
        };
    let port = int(
        sink,
        &raw.port,
        "port",
        (1, 65535),
        super::DEFAULT_PORT.into(),
        "the knock port",
    );
    let queue = int(
        sink,
        &raw.queue,
        "queue",
        (0, 65535),
        super::DEFAULT_QUEUE.into(),
        "the NFQUEUE number",
    );
    let max_age = int(
        sink,
        &raw.max_age,
        "max_age",
        (1, MAX_MAX_AGE as i64),
        super::DEFAULT_MAX_AGE as i64,
        "max_age (seconds)",
    );
    let rate_limit = int(
        sink,
        &raw.rate_limit,
        "rate_limit",
        (0, 1_000_000),
        super::DEFAULT_RATE_LIMIT.into(),
        "rate_limit (knocks per second; 0 = off)",
    );
    let rate_limit_v4_prefix = int(
        sink,
        &raw.rate_limit_v4_prefix,
        "rate_limit_v4_prefix",
        (1, 32),
        super::DEFAULT_RATE_LIMIT_V4_PREFIX.into(),
        "rate_limit_v4_prefix (the IPv4 prefix length one rate budget covers)",
    );
    let rate_limit_v6_prefix = int(
        sink,
        &raw.rate_limit_v6_prefix,
        "rate_limit_v6_prefix",
        (1, 128),
        super::DEFAULT_RATE_LIMIT_V6_PREFIX.into(),
        "rate_limit_v6_prefix (the IPv6 prefix length one rate budget covers)",
    );

    let state_dir = match &raw.state_dir {
        None => PathBuf::from(super::DEFAULT_STATE_DIR),
        Some(s) => {
            let p = PathBuf::from(s.get_ref());
            if !p.is_absolute() {
                sink.at(
                    Some(s.span()),
                    "server.state_dir",
                    format!("`{}` is not an absolute path; write the full path, e.g. `state_dir = \"{}\"`", s.get_ref(), super::DEFAULT_STATE_DIR),
                );
            }
            p
        }
    };

    let protect = raw.protect.as_ref().map(|list| {
        let mut v: Vec<Access> = values::accesses(sink, list, "server.protect").into_iter().map(|(a, _)| a).collect();
        v.sort();
        v.dedup();
        if v.is_empty() && list.get_ref().is_empty() {
            sink.at(
                Some(list.span()),
                "server.protect",
                "is empty, so the gate protects nothing; list the ports to gate, or remove `protect` to gate everything clients may be granted",
            );
        }
        (v, list.span())
    });

    let server = Server {
        port: u16::try_from(port).unwrap_or(super::DEFAULT_PORT),
        queue: u16::try_from(queue).unwrap_or(super::DEFAULT_QUEUE),
        state_dir,
        protect: Vec::new(),
        max_age: u64::try_from(max_age).unwrap_or(super::DEFAULT_MAX_AGE),
        manage_ruleset: raw.manage_ruleset.unwrap_or(true),
        gate_forward: raw.gate_forward.unwrap_or(true),
        revoke_on_reload: raw.revoke_on_reload.unwrap_or(true),
        rate_limit: u32::try_from(rate_limit).unwrap_or(super::DEFAULT_RATE_LIMIT),
        rate_limit_v4_prefix: u8::try_from(rate_limit_v4_prefix)
            .unwrap_or(super::DEFAULT_RATE_LIMIT_V4_PREFIX),
        rate_limit_v6_prefix: u8::try_from(rate_limit_v6_prefix)
            .unwrap_or(super::DEFAULT_RATE_LIMIT_V6_PREFIX),
        user: run_as(sink, cx.accounts, raw.user.as_ref()),
    };
    (server, protect)
}

/// Resolve `[server] user` (or the default, [`super::DEFAULT_USER`], if that account exists).
fn run_as(sink: &mut Sink<'_>, accounts: &dyn Accounts, user: Option<&Spanned<String>>) -> RunAs {
    let key = "server.user";
    let Some(user) = user else {
        return match accounts.by_name(super::DEFAULT_USER) {
            Ok(Some(account)) => RunAs::User {
                account,
                explicit: false,
            },
            Ok(None) => RunAs::Unchanged,
            Err(e) => {
                sink.at(
                    None,
                    key,
                    format!("cannot look up the default user `{}`: {e}; fix the user database (nsswitch.conf), or set `user` to the user nfknock should run as", super::DEFAULT_USER),
                );
                RunAs::Unchanged
            }
        };
    };
    let name = user.get_ref();
    if !valid_user_name(name) {
        let hint = if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
            "a user name, not a uid"
        } else {
            "a user name of 1 to 32 letters, digits and `_.-`"
        };
        sink.at(
            Some(user.span()),
            key,
            format!(
                "`{name}` is not a user name; give {hint}, e.g. `user = \"{}\"`",
                super::DEFAULT_USER
            ),
        );
        return RunAs::Unchanged;
    }
    match accounts.by_name(name) {
        Ok(Some(account)) => RunAs::User {
            account,
            explicit: true,
        },
        Ok(None) => {
            sink.at(
                Some(user.span()),
                key,
                format!(
                    "there is no user `{name}` on this system; create it with `{} {name}`, or fix the name",
                    super::USERADD
                ),
            );
            RunAs::Unchanged
        }
        Err(e) => {
            sink.at(
                Some(user.span()),
                key,
                format!("cannot look up user `{name}`: {e}; fix the user database (nsswitch.conf)"),
            );
            RunAs::Unchanged
        }
    }
}

/// `[A-Za-z0-9_.-]{1,32}`, not starting with `-`, not all digits (what `useradd` accepts,
/// less its exotica).
fn valid_user_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && !name.starts_with('-')
        && !name.bytes().all(|b| b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn client(
    sink: &mut Sink<'_>,
    cx: &mut Cx<'_>,
    prefix: &str,
    sec: Section<'_, RawClient>,
) -> Draft {
    let k = |key: &str| join(prefix, key);
    let raw = &sec.raw;

    let name = match &raw.name {
        Some(n) if valid_name(n.get_ref()) => Some((n.get_ref().clone(), n.span())),
        Some(n) => {
            sink.at(
                Some(n.span()),
                &k("name"),
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
                    &k("name"),
                    "this client has no `name`; add e.g. `name = \"alice\"`",
                );
            }
            None
        }
    };

    // Exactly one credential.
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

    let max_timeout = int_in(
        sink,
        &raw.max_timeout,
        &k("max_timeout"),
        (1, MAX_MAX_TIMEOUT.into()),
        super::DEFAULT_MAX_TIMEOUT.into(),
        "max_timeout (seconds, at most one week)",
    )
    .and_then(|v| u32::try_from(v).ok());
    // Without an explicit timeout, the default is capped by a smaller max_timeout.
    let default_timeout =
        super::DEFAULT_TIMEOUT.min(max_timeout.unwrap_or(super::DEFAULT_MAX_TIMEOUT));
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

    let require_username = match &raw.require_username {
        None => None,
        Some(u) if !is_fwknop && secret_kind_known(&given) => {
            sink.at(
                Some(u.span()),
                &k("require_username"),
                "applies only to fwknop clients (native knocks carry no user name); remove it or give this client a `[client.fwknop]` key",
            );
            None
        }
        Some(u) if u.get_ref().is_empty() || u.get_ref().contains(':') => {
            // ':' separates fields in the fwknop message; such a name could never match.
            sink.at(
                Some(u.span()),
                &k("require_username"),
                "must be a non-empty user name without `:`",
            );
            None
        }
        Some(u) => Some(u.get_ref().clone()),
    };

    let expires_at = match (&raw.expires, &raw.expires_at) {
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
    };

    Draft {
        name,
        secret,
        allow,
        deny,
        timeout: timeout.unwrap_or(default_timeout),
        max_timeout: max_timeout.unwrap_or(super::DEFAULT_MAX_TIMEOUT),
        sources,
        destinations,
        require_source_match: raw.require_source_match.unwrap_or(true),
        require_username,
        expires_at,
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

/// Which of three mutually exclusive ways to give a key was used.
enum KeySpec<'a> {
    Base64(&'a Spanned<raw::SecretText>),
    Text(&'a Spanned<raw::SecretText>),
    File(&'a Spanned<String>),
}

/// The three ways a key may be given, as found in the raw table.
struct KeyFields<'a>(
    Option<&'a Spanned<raw::SecretText>>,
    Option<&'a Spanned<raw::SecretText>>,
    Option<&'a Spanned<String>>,
);

/// Pick one of `(base64, text, file)`; report if several are given.
fn one_of<'a>(
    sink: &mut Sink<'_>,
    prefix: &str,
    names: [&str; 3],
    given: KeyFields<'a>,
) -> Option<KeySpec<'a>> {
    let mut found: Vec<(KeySpec<'a>, &str, Range<usize>)> = Vec::new();
    if let Some(v) = given.0 {
        found.push((KeySpec::Base64(v), names[0], v.span()));
    }
    if let Some(v) = given.1 {
        found.push((KeySpec::Text(v), names[1], v.span()));
    }
    if let Some(v) = given.2 {
        found.push((KeySpec::File(v), names[2], v.span()));
    }
    let mut it = found.into_iter();
    let first = it.next()?;
    for (_, name, span) in it {
        sink.at(
            Some(span),
            &join(prefix, name),
            format!(
                "`{}` is already given; use exactly one of `{}`, `{}` or `{}`",
                first.1, names[0], names[1], names[2]
            ),
        );
    }
    Some(first.0)
}

/// Decode one fwknop key (Rijndael or HMAC) into bytes, reporting problems at its key.
fn fwknop_bytes(
    sink: &mut Sink<'_>,
    cx: &mut Cx<'_>,
    prefix: &str,
    names: [&str; 3],
    spec: KeySpec<'_>,
) -> Option<(Zeroizing<Vec<u8>>, Range<usize>, String)> {
    match spec {
        KeySpec::Base64(v) => {
            cx.inline_secret = true;
            let key = join(prefix, names[0]);
            match decode_key_base64(&v.get_ref().0) {
                Some(b) => Some((b, v.span(), key)),
                None => {
                    sink.at(
                        Some(v.span()),
                        &key,
                        "is not valid base64; paste the value printed by `fwknop --key-gen`",
                    );
                    None
                }
            }
        }
        KeySpec::Text(v) => {
            cx.inline_secret = true;
            Some((
                Zeroizing::new(v.get_ref().0.as_bytes().to_vec()),
                v.span(),
                join(prefix, names[1]),
            ))
        }
        KeySpec::File(f) => {
            let key = join(prefix, names[2]);
            let r = secret::resolve(f.get_ref(), cx.path, None).and_then(|p| {
                let text = secret::read_key_file(cx.files, &p, &cx.owner)?;
                decode_key_base64(&text)
                    .ok_or_else(|| format!("key file {} is not valid base64; it must hold the base64 value printed by `fwknop --key-gen`", p.display()))
            });
            match r {
                Ok(b) => Some((b, f.span(), key)),
                Err(m) => {
                    sink.at(Some(f.span()), &key, m);
                    None
                }
            }
        }
    }
}

fn fwknop_key(
    sink: &mut Sink<'_>,
    cx: &mut Cx<'_>,
    prefix: &str,
    sec: Section<'_, RawFwknop>,
) -> Option<FwknopKey> {
    let raw = &sec.raw;
    const KEY: [&str; 3] = ["key_base64", "key", "key_file"];
    const HMAC: [&str; 3] = ["hmac_key_base64", "hmac_key", "hmac_key_file"];

    let key_spec = one_of(
        sink,
        prefix,
        KEY,
        KeyFields(
            raw.key_base64.as_ref(),
            raw.key.as_ref(),
            raw.key_file.as_ref(),
        ),
    );
    let key = match key_spec {
        Some(spec) => fwknop_bytes(sink, cx, prefix, KEY, spec),
        None => {
            if !KEY.iter().any(|k| sec.failed(k)) {
                sink.at(
                    Some(sec.span.clone()),
                    &join(prefix, "key_base64"),
                    "this fwknop client has no key; add `key_base64 = \"...\"` (from `fwknop --key-gen`), `key = \"passphrase\"` or `key_file = PATH`",
                );
            }
            None
        }
    };
    let key = key.and_then(|(bytes, span, name)| {
        if bytes.is_empty() || bytes.len() > MAX_KEY_LEN {
            sink.at(
                Some(span),
                &name,
                format!("is {} bytes long; an fwknop key is 1 to {MAX_KEY_LEN} bytes (fwknop's RIJNDAEL_MAX_KEYSIZE); generate one with `fwknop --key-gen`", bytes.len()),
            );
            None
        } else if bytes.as_slice() == PLACEHOLDER_KEY.as_bytes() {
            sink.at(Some(span), &name, "is fwknop's placeholder `__CHANGEME__`; generate a real key with `fwknop --key-gen`");
            None
        } else {
            Some((bytes, span))
        }
    });

    let hmac_spec = one_of(
        sink,
        prefix,
        HMAC,
        KeyFields(
            raw.hmac_key_base64.as_ref(),
            raw.hmac_key.as_ref(),
            raw.hmac_key_file.as_ref(),
        ),
    );
    let hmac_given = hmac_spec.is_some() || HMAC.iter().any(|k| sec.failed(k));
    let no_hmac = raw.no_hmac.unwrap_or(false);
    let mode = raw.mode.as_ref().map_or(EncMode::Cbc, |m| *m.get_ref());
    let mut ok = key.is_some();

    let hmac_key = match hmac_spec {
        Some(spec) => match fwknop_bytes(sink, cx, prefix, HMAC, spec) {
            Some((bytes, span, name)) => {
                if bytes.is_empty() || bytes.len() > MAX_HMAC_KEY_LEN {
                    sink.at(
                        Some(span),
                        &name,
                        format!("is {} bytes long; an fwknop HMAC key is 1 to {MAX_HMAC_KEY_LEN} bytes (fwknop's MAX_DIGEST_BLOCK_LEN); generate one with `fwknop --key-gen`", bytes.len()),
                    );
                    ok = false;
                } else if key
                    .as_ref()
                    .is_some_and(|(k, _)| k.as_slice() == bytes.as_slice())
                {
                    // fwknopd refuses this too (server/access.c acc_data_is_valid): one secret
                    // must not key both the cipher and the MAC.
                    sink.at(Some(span), &name, "is the same as the encryption key; use two different keys (`fwknop --key-gen` prints both)");
                    ok = false;
                } else if no_hmac {
                    sink.at(
                        Some(span),
                        &join(prefix, "no_hmac"),
                        "`no_hmac = true` contradicts the HMAC key given; remove one of them",
                    );
                    ok = false;
                } else if mode == EncMode::Legacy {
                    // fwknop clients refuse legacy mode with an HMAC (shared/FWKNOP-WIRE.md §3.1).
                    sink.at(Some(span), &name, "legacy mode cannot be used with an HMAC (fwknop clients refuse it); remove the HMAC key and set `no_hmac = true`, or use mode \"cbc\"");
                    ok = false;
                }
                Some(bytes)
            }
            None => {
                ok = false;
                None
            }
        },
        None => {
            if !hmac_given && !no_hmac {
                sink.at(
                    Some(sec.span.clone()),
                    &join(prefix, "hmac_key_base64"),
                    "this fwknop client has no HMAC key; add `hmac_key_base64 = \"...\"` (from `fwknop --key-gen`), or set `no_hmac = true` to accept unauthenticated packets from it",
                );
                ok = false;
            }
            None
        }
    };
    if raw.hmac.is_some() && hmac_key.is_none() && no_hmac {
        if let Some(h) = &raw.hmac {
            sink.at(Some(h.span()), &join(prefix, "hmac"), "is set but this client has no HMAC key (`no_hmac = true`); remove `hmac` or add an HMAC key");
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    let (key, _) = key?;
    Some(FwknopKey {
        key,
        hmac_key,
        hmac_type: raw.hmac.as_ref().map_or(HmacType::Sha256, |h| *h.get_ref()),
        mode,
    })
}
