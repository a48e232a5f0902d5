//! Stage 2 for the server config: raw sections → [`Plan`] (everything validated, native
//! secrets still as bytes) → [`Config`].
//!
//! Native keys are derived only in [`Plan::build`], after every check has passed, so the whole
//! check runs without touching key derivation.
//!
//! [`settings`] checks `[server]`, [`client_entry`] one `[[client]]`, [`fwknop_key`] its
//! `[client.fwknop]` key material; this file drives them and checks what spans them (unique
//! names, `protect` covering every `allow`).

mod client_commands;
mod client_entry;
mod fwknop_key;
mod gateway;
mod nat;
mod settings;

use client_entry::{client, CLIENT};
pub(crate) use gateway::RawGateway;
pub(crate) use nat::RawNat;
use settings::{server_settings, SERVER};

use std::ops::Range;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use toml::de::DeValue;
use toml::Spanned;
use zeroize::Zeroizing;

use super::files::{Accounts, Files};
use super::raw::{self, RawClient, RawServer, RawServerDocument, Section, Shape, Sink};
use super::secret::Owner;
use super::values::indexed;
use super::{ClientEntry, Config, Credential, Problem, RunAs, Server};
use crate::access::Access;
use crate::crypto::{NativeKey, SECRET_LEN};
use crate::wire::fwknop::FwknopKey;

/// Largest `max_timeout`: one week.
pub const MAX_MAX_TIMEOUT: u32 = 86_400 * 7;
/// Largest `max_age`.
pub const MAX_MAX_AGE: u64 = 3600;

const ROOT: Shape = Shape {
    header: "top level",
    nested: &["server", "client"],
    hint: |_| None,
};

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
    pub(crate) commands: crate::command::ClientCommands,
    pub(crate) nat: Vec<super::NatRule>,
    pub(crate) gateway: Option<super::Gateway>,
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
                commands: c.commands,
                nat: c.nat,
                gateway: c.gateway,
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
    commands: crate::command::ClientCommands,
    nat: Vec<super::NatRule>,
    gateway: Option<super::Gateway>,
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
                .filter(|d| d.commands.grant.nft())
                .flat_map(|d| d.allow.iter().map(|(a, _)| *a))
                .collect();
            all.sort();
            all.dedup();
            server.protect = all;
        }
        Some((list, list_span)) => {
            let list_line = sink.line(list_span.start);
            for (i, d) in drafts.iter().enumerate() {
                // A command-only client's accesses are the command's business, not the gate's.
                if !d.commands.grant.nft() {
                    continue;
                }
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

    fwknop_candidates(sink, &drafts);
    // NAT grants are nftables maps and chains: the ipset backend has none.
    if server.backend != super::Backend::Nftables {
        for (i, d) in drafts.iter().enumerate() {
            if d.gateway.is_some() {
                sink.at(
                    None,
                    &indexed("client", i + 1, "gateway"),
                    format!("`gateway` needs `[server] backend = \"nftables\"` (the forward gate and its sets live in table `inet nfknock`); the {} backend cannot gate forwarding: remove `gateway` or switch the backend", server.backend.name()),
                );
            }
            if !d.nat.is_empty() {
                sink.at(
                    None,
                    &indexed("client", i + 1, "nat"),
                    format!("`nat` needs `[server] backend = \"nftables\"` (the DNAT maps and NAT chains live in table `inet nfknock`); the {} backend cannot forward: remove `nat` or switch the backend", server.backend.name()),
                );
            }
        }
    }

    // A routed (`dnat = false`) target is closed by the forward gate, which must be on.
    if !server.gate_forward {
        for (i, d) in drafts.iter().enumerate() {
            if d.gateway.is_some() {
                sink.at(
                    None,
                    &indexed("client", i + 1, "gateway"),
                    "a gateway is closed to everyone else by the forward gate, but `[server] gate_forward = false`; set `gate_forward = true` or remove `gateway`",
                );
            }
            if let Some(r) = d.nat.iter().find(|r| !r.dnat) {
                sink.at(
                    None,
                    &indexed("client", i + 1, "nat"),
                    format!("{} is forwarded with `dnat = false`, which the forward gate closes, but `[server] gate_forward = false`; set `gate_forward = true` or drop `dnat = false`", r.access),
                );
            }
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
            commands: d.commands,
            nat: d.nat,
            gateway: d.gateway,
        });
    }
    Some(Plan {
        path: cx.path.to_path_buf(),
        server,
        clients,
    })
}

/// Issue 11 §2: refuse a config in which some fwknop client comes after
/// [`MAX_FWKNOP_CANDIDATES`](super::MAX_FWKNOP_CANDIDATES) other fwknop clients that admit the
/// same source address: the engine never tries it for packets from there. The addresses
/// checked are the network addresses of every fwknop `sources` entry: the clients admitting
/// an address are those with an entry containing it, and prefixes nest, so the most crowded
/// addresses include one of those.
fn fwknop_candidates(sink: &mut Sink<'_>, drafts: &[Draft]) {
    let cap = super::MAX_FWKNOP_CANDIDATES;
    let fw: Vec<(usize, &Draft)> = drafts
        .iter()
        .enumerate()
        .filter(|(_, d)| matches!(d.secret, Some(Secret::Fwknop(_))))
        .collect();
    if fw.len() <= cap {
        return;
    }
    let mut points: Vec<std::net::IpAddr> = fw
        .iter()
        .flat_map(|(_, d)| d.sources.iter().map(|n| n.network()))
        .collect();
    points.sort_unstable();
    points.dedup();
    let mut reported = vec![false; drafts.len()];
    for p in points {
        let admitting = fw
            .iter()
            .filter(|(_, d)| d.sources.iter().any(|n| n.contains(&p)));
        for (i, d) in admitting.skip(cap) {
            if std::mem::replace(&mut reported[*i], true) {
                continue;
            }
            let who = d.name.as_ref().map_or_else(
                || format!("client[{}]", i + 1),
                |(n, _)| format!("client `{n}`"),
            );
            sink.at(
                d.name.as_ref().map(|(_, span)| span.clone()),
                &indexed("client", i + 1, "sources"),
                format!(
                    "{who} comes after {cap} other fwknop clients whose `sources` admit {p}: an fwknop packet carries no key hint, so nfknock tries at most {cap} fwknop clients per packet, in file order, and would never try this one for packets from there; narrow the `sources` of the fwknop clients, or give some of them native keys (`nfknock keygen`)"
                ),
            );
        }
    }
}

/// An explicit `protect` list and where it is written.
type ExplicitProtect = (Vec<Access>, Range<usize>);
