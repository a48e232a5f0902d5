//! `[server]`: the daemon's own settings, and `user` resolved against the user database.

use std::path::PathBuf;

use toml::Spanned;

use super::*;
use crate::access::Access;
use crate::config::files::Accounts;
use crate::config::raw::{join, QueueValue, RawServer, Section, Shape, Sink};
use crate::config::values::{self, int_in};
use crate::config::{RunAs, Server};

pub(super) const SERVER: Shape = Shape {
    header: "[server]",
    nested: &[],
    hint: server_hint,
};

fn server_hint(key: &str) -> Option<&'static str> {
    Some(match key {
        "port" => "the UDP port knocks arrive on, a number from 1 to 65535, e.g. `port = 62201`",
        "queue" => "the NFQUEUE number from 0 to 65535, or a range of queues served by one worker each, e.g. `queue = 0` or `queue = \"0-3\"`",
        "state_dir" => "a quoted absolute path, e.g. `state_dir = \"/var/lib/nfknock\"`",
        "protect" => "a list of accesses, e.g. `protect = [\"tcp/22\", \"tcp/443\"]`",
        "max_age" => "seconds, from 1 to 3600, e.g. `max_age = 120`",
        "manage_ruleset" | "gate_forward" | "revoke_on_reload" | "prefilter" => "`true` or `false`",
        "backend" => "where grants are written: `backend = \"nftables\"` (the default) or `backend = \"ipset\"`",
        "ipset_v4" | "ipset_v6" => "a quoted ipset name of up to 31 printable characters without spaces, e.g. `ipset_v4 = \"nfknock_allow_v4\"`",
        "rate_limit" => "knocks per second per source (0 turns it off), e.g. `rate_limit = 20`",
        "rate_limit_v4_prefix" => "the prefix length an IPv4 source is metered by, from 1 to 32, e.g. `rate_limit_v4_prefix = 32`",
        "rate_limit_v6_prefix" => "the prefix length an IPv6 source is metered by, from 1 to 128, e.g. `rate_limit_v6_prefix = 64`",
        "user" => "a quoted user name, e.g. `user = \"nfknock\"`",
        "max_commands" => "the number of commands that may run at once, from 1 to 64, e.g. `max_commands = 4`",
        "metrics_file" => "a quoted absolute path ending in `.prom`, e.g. `metrics_file = \"/var/lib/prometheus/node-exporter/nfknock.prom\"`",
        _ => return None,
    })
}

/// `[server]` (optional: every key has a default). Returns the explicit `protect`, if any.
pub(super) fn server_settings(
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
        crate::config::DEFAULT_PORT.into(),
        "the knock port",
    );
    let (queue, queue_count) = queues(sink, raw.queue.as_ref());
    let max_age = int(
        sink,
        &raw.max_age,
        "max_age",
        (1, MAX_MAX_AGE as i64),
        crate::config::DEFAULT_MAX_AGE as i64,
        "max_age (seconds)",
    );
    let rate_limit = int(
        sink,
        &raw.rate_limit,
        "rate_limit",
        (0, 1_000_000),
        crate::config::DEFAULT_RATE_LIMIT.into(),
        "rate_limit (knocks per second; 0 = off)",
    );
    let rate_limit_v4_prefix = int(
        sink,
        &raw.rate_limit_v4_prefix,
        "rate_limit_v4_prefix",
        (1, 32),
        crate::config::DEFAULT_RATE_LIMIT_V4_PREFIX.into(),
        "rate_limit_v4_prefix (the IPv4 prefix length one rate budget covers)",
    );
    let rate_limit_v6_prefix = int(
        sink,
        &raw.rate_limit_v6_prefix,
        "rate_limit_v6_prefix",
        (1, 128),
        crate::config::DEFAULT_RATE_LIMIT_V6_PREFIX.into(),
        "rate_limit_v6_prefix (the IPv6 prefix length one rate budget covers)",
    );

    let max_commands = int(
        sink,
        &raw.max_commands,
        "max_commands",
        (1, 64),
        crate::command::DEFAULT_MAX_COMMANDS.into(),
        "max_commands (commands running at once)",
    );

    let state_dir = match &raw.state_dir {
        None => PathBuf::from(crate::config::DEFAULT_STATE_DIR),
        Some(s) => {
            let p = PathBuf::from(s.get_ref());
            if !p.is_absolute() {
                sink.at(
                    Some(s.span()),
                    "server.state_dir",
                    format!("`{}` is not an absolute path; write the full path, e.g. `state_dir = \"{}\"`", s.get_ref(), crate::config::DEFAULT_STATE_DIR),
                );
            }
            p
        }
    };

    let metrics_file = raw.metrics_file.as_ref().and_then(|s| {
        let p = PathBuf::from(s.get_ref());
        let fine = p.is_absolute()
            && p.file_name().is_some()
            && p.extension().is_some_and(|e| e == "prom");
        if !fine {
            sink.at(
                Some(s.span()),
                "server.metrics_file",
                format!(
                    "`{}` is not an absolute path to a `.prom` file (node_exporter's textfile collector reads only those); write e.g. `metrics_file = \"{}\"`, or remove the key for no metrics file",
                    s.get_ref(),
                    crate::config::NODE_EXPORTER_METRICS_FILE
                ),
            );
        }
        fine.then_some(p)
    });

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
        port: u16::try_from(port).unwrap_or(crate::config::DEFAULT_PORT),
        queue,
        queue_count,
        state_dir,
        protect: Vec::new(),
        max_age: u64::try_from(max_age).unwrap_or(crate::config::DEFAULT_MAX_AGE),
        manage_ruleset: raw.manage_ruleset.unwrap_or(true),
        gate_forward: raw.gate_forward.unwrap_or(true),
        revoke_on_reload: raw.revoke_on_reload.unwrap_or(true),
        prefilter: prefilter(sink, &raw),
        backend: raw.backend.unwrap_or_default(),
        ipset: ipset_names(sink, &raw),
        rate_limit: u32::try_from(rate_limit).unwrap_or(crate::config::DEFAULT_RATE_LIMIT),
        rate_limit_v4_prefix: u8::try_from(rate_limit_v4_prefix)
            .unwrap_or(crate::config::DEFAULT_RATE_LIMIT_V4_PREFIX),
        rate_limit_v6_prefix: u8::try_from(rate_limit_v6_prefix)
            .unwrap_or(crate::config::DEFAULT_RATE_LIMIT_V6_PREFIX),
        user: run_as(sink, cx.accounts, raw.user.as_ref()),
        max_commands: u32::try_from(max_commands).unwrap_or(crate::command::DEFAULT_MAX_COMMANDS),
        metrics_file,
    };
    (server, protect)
}

/// `prefilter` (issue 11): on by default where it exists, in the knock chain of nfknock's
/// nftables table; `backend = "ipset"` installs no such chain (the host's iptables rules
/// capture knocks), so there it is off and an explicit `prefilter = true` is refused.
fn prefilter(sink: &mut Sink<'_>, raw: &RawServer) -> bool {
    let nftables = raw.backend.unwrap_or_default() == crate::config::Backend::Nftables;
    if !nftables && raw.prefilter == Some(true) {
        sink.at(
            None,
            "server.prefilter",
            "`prefilter = true` is part of the knock chain of nfknock's nftables table, which `backend = \"ipset\"` does not install (the host's iptables rules capture knocks); remove it, or use `backend = \"nftables\"` to drop junk in the kernel",
        );
    }
    raw.prefilter.unwrap_or(nftables) && nftables
}

/// `ipset_v4` / `ipset_v6`: valid names, different from each other, and only with
/// `backend = "ipset"` (elsewhere they would do nothing).
fn ipset_names(sink: &mut Sink<'_>, raw: &RawServer) -> crate::config::IpsetNames {
    let mut names = crate::config::IpsetNames::default();
    let backend = raw.backend.unwrap_or_default();
    if backend == crate::config::Backend::Ipset && raw.gate_forward == Some(true) {
        sink.at(
            None,
            "server.gate_forward",
            "`gate_forward = true` is the forward gate of nfknock's nftables table, which `backend = \"ipset\"` does not install (its iptables rules gate the host's own ports); remove it, or use `backend = \"nftables\"` to gate DNAT-published ports",
        );
    }
    for (v6, given) in [(false, &raw.ipset_v4), (true, &raw.ipset_v6)] {
        let Some(given) = given else { continue };
        let key = if v6 {
            "server.ipset_v6"
        } else {
            "server.ipset_v4"
        };
        let name = given.get_ref();
        if backend != crate::config::Backend::Ipset {
            sink.at(
                Some(given.span()),
                key,
                format!("is used only with `backend = \"ipset\"` (this config's backend is `{}`); remove it, or add `backend = \"ipset\"` to `[server]`", backend.name()),
            );
        } else if let Some(why) = crate::config::ipset_name_problem(name) {
            sink.at(
                Some(given.span()),
                key,
                format!("`{}` {why}; give an ipset name of 1 to {} printable characters without spaces, e.g. `{} = \"{}\"`", name.escape_debug(), crate::config::IPSET_NAME_MAX, &key[7..], if v6 { crate::config::DEFAULT_IPSET_V6 } else { crate::config::DEFAULT_IPSET_V4 }),
            );
        } else if v6 {
            names.v6 = name.clone();
        } else {
            names.v4 = name.clone();
        }
    }
    if names.v4 == names.v6 {
        sink.at(
            raw.ipset_v6.as_ref().or(raw.ipset_v4.as_ref()).map(|s| s.span()),
            "server.ipset_v6",
            format!("names the same ipset as `ipset_v4` (`{}`); each family needs its own set, e.g. `ipset_v6 = \"{}\"`", names.v6, crate::config::DEFAULT_IPSET_V6),
        );
    }
    names
}

/// `[server] queue`: a number, or `"first-last"` (one worker per queue). Returns the first
/// queue and how many.
fn queues(sink: &mut Sink<'_>, value: Option<&Spanned<QueueValue>>) -> (u16, u16) {
    let key = "server.queue";
    let default = (crate::config::DEFAULT_QUEUE, 1);
    let Some(v) = value else { return default };
    let usage = "e.g. `queue = 0` for one queue or `queue = \"0-3\"` for four, one worker each";
    let num = |t: &str| t.trim().parse::<i64>().ok();
    let (first, last) = match v.get_ref() {
        QueueValue::Number(n) => (*n, *n),
        QueueValue::Text(t) => {
            let parsed = match t.split_once('-') {
                Some((a, b)) => num(a).zip(num(b)),
                None => num(t).map(|n| (n, n)),
            };
            let Some(range) = parsed else {
                sink.at(
                    Some(v.span()),
                    key,
                    format!("\"{t}\" is neither a queue number nor a range of them; {usage}"),
                );
                return default;
            };
            range
        }
    };
    for n in [first, last] {
        if !(0..=65535).contains(&n) {
            sink.at(
                Some(v.span()),
                key,
                format!("{n} is out of range: an NFQUEUE number must be from 0 to 65535"),
            );
            return default;
        }
    }
    if last < first {
        sink.at(
            Some(v.span()),
            key,
            format!("the range {first}-{last} is backwards; give the first queue first, e.g. `queue = \"{last}-{first}\"`"),
        );
        return default;
    }
    let count = last - first + 1;
    let max = i64::from(crate::config::MAX_QUEUES);
    if count > max {
        sink.at(
            Some(v.span()),
            key,
            format!("{count} queues: at most {max} (one worker thread each); a few more than the CPUs is plenty"),
        );
        return default;
    }
    (first as u16, count as u16)
}

/// Resolve `[server] user` (or the default, [`crate::config::DEFAULT_USER`], if the local user
/// database has that account: see [`Accounts::local_by_name`]).
fn run_as(sink: &mut Sink<'_>, accounts: &dyn Accounts, user: Option<&Spanned<String>>) -> RunAs {
    let key = "server.user";
    let Some(user) = user else {
        return match accounts.local_by_name(crate::config::DEFAULT_USER) {
            Ok(Some(account)) => RunAs::User {
                account,
                explicit: false,
            },
            Ok(None) => RunAs::Unchanged,
            Err(e) => {
                sink.at(
                    None,
                    key,
                    format!("cannot look up the default user `{}` in {}: {e}; fix that file, or set `user` to the user nfknock should run as", crate::config::DEFAULT_USER, crate::config::LOCAL_USERS),
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
                crate::config::DEFAULT_USER
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
                    crate::config::USERADD
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
