//! The command keys of one `[[client]]`: `grant`, `on_grant`, `on_expire`, `command_user`,
//! `command_timeout`, `command_net_admin` (command cycles) and `commands`, `command_prefixes`,
//! `command_sudo_user`, `command_sudo_group` (command messages). See `crate::command`.

use toml::Spanned;

use super::Cx;
use crate::command::{
    ClientCommands, CommandUser, Cycle, Exec, GrantMode, Sudo, Template, Var, DEFAULT_TIMEOUT_SECS,
    MAX_TIMEOUT_SECS,
};
use crate::config::raw::{join, RawClient, Section, Sink, SpannedList};
use crate::config::values::int_in;

pub(super) fn hint(key: &str) -> Option<&'static str> {
    Some(match key {
        "grant" => "`\"nft\"`, `\"command\"` or `\"both\"`",
        "on_grant" | "on_expire" => {
            "an argv list, e.g. `[\"/usr/sbin/ipset\", \"add\", \"whitelist\", \"$SRC\"]`"
        }
        "command_user" | "command_sudo_user" | "command_sudo_group" => {
            "a quoted name, e.g. `\"nobody\"`"
        }
        "command_timeout" => "a number of seconds, e.g. `command_timeout = 10`",
        "command_net_admin" => "`true` or `false`",
        "commands" | "command_prefixes" => {
            "a list of argv lists, e.g. `[[\"/usr/bin/systemctl\", \"restart\", \"nginx\"]]`"
        }
        _ => return None,
    })
}

/// Check the command keys; `native`: the client's key is known to be native (no fwknop user
/// name, no command messages).
pub(super) fn client_commands(
    sink: &mut Sink<'_>,
    cx: &Cx<'_>,
    prefix: &str,
    sec: &Section<'_, RawClient>,
    native: bool,
) -> ClientCommands {
    let raw = &sec.raw;
    let k = |key: &str| join(prefix, key);
    let template = |sink: &mut Sink<'_>, list: &Option<SpannedList>, key: &str| {
        let list = list.as_ref()?;
        let argv: Vec<String> = list.get_ref().iter().map(|s| s.get_ref().clone()).collect();
        match Template::parse(&argv) {
            Ok(t) => {
                if native && t.uses(Var::User) {
                    sink.at(
                        Some(list.span()),
                        &k(key),
                        "uses $USER, but this client's knocks are native and carry no user name; remove $USER",
                    );
                    return None;
                }
                Some(t)
            }
            Err(e) => {
                let span = list
                    .get_ref()
                    .get(e.index)
                    .map_or(list.span(), |s| s.span());
                sink.at(Some(span), &k(key), e.to_string());
                None
            }
        }
    };
    let on_grant = template(sink, &raw.on_grant, "on_grant");
    let on_expire = template(sink, &raw.on_expire, "on_expire");
    let grant = raw.grant.as_ref().map_or(GrantMode::Nft, |g| *g.get_ref());
    let grant_span = raw.grant.as_ref().map(|g| g.span());
    if grant.command() && raw.on_grant.is_none() && !sec.failed("on_grant") {
        sink.at(
            grant_span.clone(),
            &k("grant"),
            "asks for a command but this client has no `on_grant`; add `on_grant = [\"/path/to/program\", \"$SRC\", ...]`",
        );
    }
    if !grant.command() && (raw.on_grant.is_some() || raw.on_expire.is_some()) {
        let span = raw
            .on_grant
            .as_ref()
            .or(raw.on_expire.as_ref())
            .map(|l| l.span());
        sink.at(
            span,
            &k("grant"),
            "`on_grant`/`on_expire` are set but `grant` is \"nft\" (the default), so they would never run; set `grant = \"command\"` (instead of the nft set) or `grant = \"both\"`",
        );
    }
    if let (Some(nat), false) = (&raw.nat, grant.nft()) {
        sink.at(
            Some(nat.span()),
            &k("nat"),
            "forwards ports through the nft grant, but `grant = \"command\"` writes none; use `grant = \"both\"` or remove `nat`",
        );
    }
    if let (Some(gw), false) = (&raw.gateway, grant.nft()) {
        sink.at(
            Some(gw.span()),
            &k("gateway"),
            "opens its networks with the nft grant, but `grant = \"command\"` writes none; use `grant = \"both\"` or remove `gateway`",
        );
    }
    if raw.on_expire.is_some() && raw.on_grant.is_none() {
        sink.at(
            raw.on_expire.as_ref().map(|l| l.span()),
            &k("on_expire"),
            "without `on_grant` there is nothing to close; add `on_grant` or remove `on_expire`",
        );
    }

    let exec = exec(sink, prefix, raw, native);
    let wants_user = grant.command() || exec.is_some();
    let user = command_user(sink, cx, prefix, raw, wants_user);
    ClientCommands {
        grant,
        cycle: Cycle {
            on_grant,
            on_expire,
        },
        exec,
        user,
    }
}

/// `commands`, `command_prefixes`, `command_sudo_user`, `command_sudo_group`.
fn exec(sink: &mut Sink<'_>, prefix: &str, raw: &RawClient, native: bool) -> Option<Exec> {
    let k = |key: &str| join(prefix, key);
    let lists = |sink: &mut Sink<'_>, v: &Option<Spanned<Vec<Vec<String>>>>, key: &str| {
        let v = v.as_ref()?;
        let mut out = Vec::new();
        for (i, argv) in v.get_ref().iter().enumerate() {
            let bad = argv.first().is_none_or(|p| !p.starts_with('/'))
                || argv.len() > crate::command::template::MAX_ARGS
                || argv
                    .iter()
                    .any(|a| a.len() > crate::command::template::MAX_ARG_LEN || a.contains('\0'));
            if bad {
                sink.at(
                    Some(v.span()),
                    &format!("{}[{}]", k(key), i + 1),
                    "each entry must be a non-empty argv list starting with an absolute path, e.g. [\"/usr/bin/systemctl\", \"restart\", \"nginx\"]",
                );
            } else {
                out.push(argv.clone());
            }
        }
        Some((out, v.span()))
    };
    let exact = lists(sink, &raw.commands, "commands");
    let prefixes = lists(sink, &raw.command_prefixes, "command_prefixes");
    let span = exact.as_ref().or(prefixes.as_ref()).map(|(_, s)| s.clone());
    let sudo = match (&raw.command_sudo_user, &raw.command_sudo_group) {
        (None, None) => None,
        (None, Some(g)) => {
            sink.at(
                Some(g.span()),
                &k("command_sudo_group"),
                "needs `command_sudo_user` (sudo -u USER -g GROUP)",
            );
            None
        }
        (Some(u), g) => {
            let ok = |s: &str| crate::command::template::valid_user(s);
            if !ok(u.get_ref()) || g.as_ref().is_some_and(|g| !ok(g.get_ref())) {
                sink.at(
                    Some(u.span()),
                    &k("command_sudo_user"),
                    "sudo user and group must be names of letters, digits and `_.-`",
                );
            }
            Some(Sudo {
                user: u.get_ref().clone(),
                group: g.as_ref().map(|g| g.get_ref().clone()),
            })
        }
    };
    let span = span?;
    if native {
        sink.at(
            Some(span),
            &k("commands"),
            "command messages are an fwknop feature (`fwknop --server-cmd`); native knocks cannot carry one: remove `commands`/`command_prefixes` or give this client a `[client.fwknop]` key",
        );
        return None;
    }
    Some(Exec {
        exact: exact.map(|(v, _)| v).unwrap_or_default(),
        prefixes: prefixes.map(|(v, _)| v).unwrap_or_default(),
        sudo,
    })
}

/// `command_user` (required when anything runs; never root), `command_timeout`,
/// `command_net_admin`.
fn command_user(
    sink: &mut Sink<'_>,
    cx: &Cx<'_>,
    prefix: &str,
    raw: &RawClient,
    wanted: bool,
) -> Option<CommandUser> {
    let k = |key: &str| join(prefix, key);
    let timeout = int_in(
        sink,
        &raw.command_timeout,
        &k("command_timeout"),
        (1, MAX_TIMEOUT_SECS.into()),
        DEFAULT_TIMEOUT_SECS.into(),
        "command_timeout (seconds)",
    )
    .and_then(|t| u32::try_from(t).ok())
    .unwrap_or(DEFAULT_TIMEOUT_SECS);
    let Some(user) = &raw.command_user else {
        if wanted {
            sink.at(
                None,
                &k("command_user"),
                "this client runs commands but has no `command_user`; name the unprivileged user they run as, e.g. `command_user = \"nobody\"` (add `command_net_admin = true` for ipset/nft)",
            );
        }
        return None;
    };
    if !wanted {
        sink.at(
            Some(user.span()),
            &k("command_user"),
            "this client runs no command (no `grant = \"command\"`/`\"both\"`, no `commands`); remove it",
        );
        return None;
    }
    let name = user.get_ref();
    match cx.accounts.by_name(name) {
        Ok(Some(account)) if account.uid == 0 => {
            sink.at(
                Some(user.span()),
                &k("command_user"),
                format!("`{name}` is root; commands run unprivileged: name another user, and set `command_net_admin = true` if the program changes the firewall (ipset, nft)"),
            );
            None
        }
        Ok(Some(account)) => Some(CommandUser {
            account,
            timeout_secs: timeout,
            net_admin: raw.command_net_admin.unwrap_or(false),
        }),
        Ok(None) => {
            sink.at(
                Some(user.span()),
                &k("command_user"),
                format!("there is no user `{name}` on this system; create it or name another"),
            );
            None
        }
        Err(e) => {
            sink.at(
                Some(user.span()),
                &k("command_user"),
                format!("cannot look up user `{name}`: {e}"),
            );
            None
        }
    }
}
