//! `[server]`: the daemon's own settings, and `user` resolved against the user database.

use std::path::PathBuf;

use toml::Spanned;

use super::*;
use crate::access::Access;
use crate::config::files::Accounts;
use crate::config::raw::{join, RawServer, Section, Shape, Sink};
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
        "queue" => "the NFQUEUE number, from 0 to 65535, e.g. `queue = 0`",
        "state_dir" => "a quoted absolute path, e.g. `state_dir = \"/var/lib/nfknock\"`",
        "protect" => "a list of accesses, e.g. `protect = [\"tcp/22\", \"tcp/443\"]`",
        "max_age" => "seconds, from 1 to 3600, e.g. `max_age = 120`",
        "manage_ruleset" | "gate_forward" | "revoke_on_reload" => "`true` or `false`",
        "backend" => "where grants are written, e.g. `backend = \"nftables\"`",
        "rate_limit" => "knocks per second per source (0 turns it off), e.g. `rate_limit = 20`",
        "rate_limit_v4_prefix" => "the prefix length an IPv4 source is metered by, from 1 to 32, e.g. `rate_limit_v4_prefix = 32`",
        "rate_limit_v6_prefix" => "the prefix length an IPv6 source is metered by, from 1 to 128, e.g. `rate_limit_v6_prefix = 64`",
        "user" => "a quoted user name, e.g. `user = \"nfknock\"`",
        "max_commands" => "the number of commands that may run at once, from 1 to 64, e.g. `max_commands = 4`",
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
    let queue = int(
        sink,
        &raw.queue,
        "queue",
        (0, 65535),
        crate::config::DEFAULT_QUEUE.into(),
        "the NFQUEUE number",
    );
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
        queue: u16::try_from(queue).unwrap_or(crate::config::DEFAULT_QUEUE),
        state_dir,
        protect: Vec::new(),
        max_age: u64::try_from(max_age).unwrap_or(crate::config::DEFAULT_MAX_AGE),
        manage_ruleset: raw.manage_ruleset.unwrap_or(true),
        gate_forward: raw.gate_forward.unwrap_or(true),
        revoke_on_reload: raw.revoke_on_reload.unwrap_or(true),
        backend: raw.backend.unwrap_or_default(),
        rate_limit: u32::try_from(rate_limit).unwrap_or(crate::config::DEFAULT_RATE_LIMIT),
        rate_limit_v4_prefix: u8::try_from(rate_limit_v4_prefix)
            .unwrap_or(crate::config::DEFAULT_RATE_LIMIT_V4_PREFIX),
        rate_limit_v6_prefix: u8::try_from(rate_limit_v6_prefix)
            .unwrap_or(crate::config::DEFAULT_RATE_LIMIT_V6_PREFIX),
        user: run_as(sink, cx.accounts, raw.user.as_ref()),
        max_commands: u32::try_from(max_commands).unwrap_or(crate::command::DEFAULT_MAX_COMMANDS),
    };
    (server, protect)
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
