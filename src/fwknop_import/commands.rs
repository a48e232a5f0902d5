//! A stanza's command variables → the client's command keys: `CMD_CYCLE_OPEN`,
//! `CMD_CYCLE_CLOSE`, `CMD_CYCLE_TIMER` (a command cycle, `grant = "command"`), and
//! `ENABLE_CMD_EXEC`, `CMD_EXEC_USER`, `ENABLE_CMD_SUDO_EXEC`, `CMD_SUDO_EXEC_USER`,
//! `CMD_SUDO_EXEC_GROUP` (command messages).
//!
//! fwknopd splits a command line into argv itself and runs it with `execvpe` (server/extcmd.c,
//! `_run_extcmd()`, no shell); so does nfknock. A line written for a shell (pipes,
//! redirections, `$(…)`, globs) is refused with what it would mean, rather than carried over
//! as something else.

use super::access_conf::{Origin, Stanza};
use super::syntax::is_yes;
use super::values::parse_seconds;
use crate::command::split::split;
use crate::command::Template;

/// The command keys of one client, ready to render.
#[derive(Debug, Default)]
pub(super) struct CommandsOut {
    pub(super) on_grant: Option<Vec<String>>,
    pub(super) on_expire: Option<Vec<String>>,
    /// `CMD_CYCLE_TIMER`: the grant length (timeout = max_timeout), so the close runs then.
    pub(super) timer: Option<u32>,
    pub(super) command_user: Option<String>,
    /// fwknopd ran cycle commands as root: the import hands the command CAP_NET_ADMIN.
    pub(super) net_admin: bool,
    /// `ENABLE_CMD_EXEC Y`: an (empty) allow-list to fill in.
    pub(super) exec: bool,
    pub(super) sudo_user: Option<String>,
    pub(super) sudo_group: Option<String>,
}

/// Warnings and errors: `(is_error, origin, message)`.
pub(super) type Notes = Vec<(bool, Origin, String)>;

/// fwknop's substitutions (server/cmd_cycle.c) → nfknock's, or why not.
fn map_var(name: &str) -> Result<&'static str, String> {
    Ok(match name {
        "SRC" => "$SRC",
        "IP" => "$IP",
        "PORT" => "$PORT",
        "PROTO" => "$PROTO",
        "CLIENT_TIMEOUT" => "$CLIENT_TIMEOUT",
        "USER" => "$USER",
        "PKT_SRC" | "DST" | "TIMEOUT" => {
            return Err(format!(
                "`${name}` has no nfknock equivalent (nfknock offers $SRC $IP $PORT $PROTO $CLIENT_TIMEOUT $USER); rewrite the command without it"
            ))
        }
        other => return Err(format!("`${other}` is not a variable fwknopd substitutes; remove it")),
    })
}

/// One command line → an argv template, or the reason it cannot be one.
fn argv_of(line: &str) -> Result<Vec<String>, String> {
    let words = split(line, true)?;
    let mut out = Vec::with_capacity(words.len());
    for w in words {
        let mut s = String::new();
        let mut rest = w.as_str();
        while let Some(at) = rest.find('$') {
            s.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let len = after
                .bytes()
                .take_while(|b| b.is_ascii_uppercase() || *b == b'_')
                .count();
            if len == 0 {
                return Err("a `$` that is not a variable; no shell runs this, so write the argument without it".into());
            }
            s.push_str(map_var(&after[..len])?);
            rest = &after[len..];
        }
        s.push_str(rest);
        out.push(s);
    }
    Template::parse(&out).map_err(|e| e.to_string())?;
    Ok(out)
}

pub(super) fn convert(st: &Stanza) -> (CommandsOut, Notes) {
    let mut o = CommandsOut::default();
    let mut notes: Notes = Vec::new();
    let mut err = |origin: &Origin, m: String| notes.push((true, origin.clone(), m));
    let open = st.get("CMD_CYCLE_OPEN");
    let close = st.get("CMD_CYCLE_CLOSE");
    let timer = st.get("CMD_CYCLE_TIMER");
    if let Some(s) = open {
        match argv_of(&s.value) {
            Ok(a) => o.on_grant = Some(a),
            Err(m) => err(&s.origin, format!("CMD_CYCLE_OPEN cannot be imported: {m}")),
        }
        match close {
            None => err(&s.origin, "CMD_CYCLE_OPEN without CMD_CYCLE_CLOSE (fwknopd refuses it too); add `CMD_CYCLE_CLOSE NONE` or the close command".into()),
            Some(c) if c.value.trim() == "NONE" => {}
            Some(c) => match argv_of(&c.value) {
                Ok(a) => o.on_expire = Some(a),
                Err(m) => err(&c.origin, format!("CMD_CYCLE_CLOSE cannot be imported: {m}")),
            },
        }
        match timer {
            Some(t) => match parse_seconds(&t.value).and_then(|n| u32::try_from(n).ok()) {
                Some(n) if n > 0 => o.timer = Some(n),
                _ => err(&t.origin, format!("CMD_CYCLE_TIMER `{}` is not a number of seconds", t.value.as_str())),
            },
            None if o.on_expire.is_some() => err(&s.origin, "CMD_CYCLE_CLOSE without CMD_CYCLE_TIMER (fwknopd refuses it too); add the seconds between open and close".into()),
            None => {}
        }
        o.command_user = Some(
            st.get("CMD_EXEC_USER")
                .map_or("nobody".to_string(), |u| u.value.to_string()),
        );
        o.net_admin = true;
        notes.push((false, s.origin.clone(), "CMD_CYCLE_OPEN: imported as `grant = \"command\"` with `on_grant`/`on_expire` (no shell, as fwknopd's execvpe); fwknopd ran them as root, nfknock runs them as `command_user` with CAP_NET_ADMIN (enough for ipset and nft): check that the commands work so, and note that $PROTO is `tcp`/`udp` (fwknopd substituted 6/17)".into()));
    } else {
        for s in [close, timer].into_iter().flatten() {
            notes.push((
                false,
                s.origin.clone(),
                format!(
                    "{} without CMD_CYCLE_OPEN is ignored (by fwknopd too)",
                    s.var
                ),
            ));
        }
    }
    if let Some(s) = st.get("ENABLE_CMD_EXEC").filter(|s| is_yes(&s.value)) {
        o.exec = true;
        o.command_user.get_or_insert_with(|| {
            st.get("CMD_EXEC_USER")
                .map_or("nobody".to_string(), |u| u.value.to_string())
        });
        notes.push((false, s.origin.clone(), "ENABLE_CMD_EXEC Y: fwknopd ran any command a client sent; nfknock runs only those listed: imported with an empty `commands = []`, so fill in the exact argv (or `command_prefixes`) this client may run".into()));
    }
    if let Some(s) = st.get("CMD_REGEX") {
        notes.push((
            false,
            s.origin.clone(),
            "CMD_REGEX: replaced by the exact allow-list `commands`; dropped".into(),
        ));
    }
    if let Some(s) = st.get("CMD_EXEC_GROUP") {
        notes.push((
            false,
            s.origin.clone(),
            "CMD_EXEC_GROUP: commands run with `command_user`'s own group; dropped".into(),
        ));
    }
    let sudo = st
        .get("ENABLE_CMD_SUDO_EXEC")
        .is_some_and(|s| is_yes(&s.value));
    if sudo && o.exec {
        o.sudo_user = Some(
            st.get("CMD_SUDO_EXEC_USER")
                .map_or("root".to_string(), |u| u.value.to_string()),
        );
        o.sudo_group = st.get("CMD_SUDO_EXEC_GROUP").map(|g| g.value.to_string());
    } else {
        for s in [
            "ENABLE_CMD_SUDO_EXEC",
            "CMD_SUDO_EXEC_USER",
            "CMD_SUDO_EXEC_GROUP",
        ]
        .iter()
        .filter_map(|v| st.get(v))
        {
            notes.push((
                false,
                s.origin.clone(),
                format!(
                    "{}: only used with `ENABLE_CMD_EXEC Y` and `ENABLE_CMD_SUDO_EXEC Y`; dropped",
                    s.var
                ),
            ));
        }
    }
    if !o.exec && open.is_none() {
        if let Some(s) = st.get("CMD_EXEC_USER") {
            notes.push((
                false,
                s.origin.clone(),
                "CMD_EXEC_USER: this stanza runs no command; dropped".into(),
            ));
        }
    }
    (o, notes)
}

/// The TOML lines for `o` (after the client's other keys, before `[client.fwknop]`).
pub(super) fn render(o: &CommandsOut, quote: impl Fn(&str) -> String) -> String {
    let list = |v: &[String]| {
        let items: Vec<String> = v.iter().map(|s| quote(s)).collect();
        format!("[{}]", items.join(", "))
    };
    let mut s = String::new();
    if let Some(g) = &o.on_grant {
        s.push_str("grant = \"command\"\n");
        s.push_str(&format!("on_grant = {}\n", list(g)));
        if let Some(e) = &o.on_expire {
            s.push_str(&format!("on_expire = {}\n", list(e)));
        }
    }
    if o.exec {
        s.push_str("commands = []   # ENABLE_CMD_EXEC Y: list the argv this client may run\n");
        if let Some(u) = &o.sudo_user {
            s.push_str(&format!("command_sudo_user = {}\n", quote(u)));
        }
        if let Some(g) = &o.sudo_group {
            s.push_str(&format!("command_sudo_group = {}\n", quote(g)));
        }
    }
    if let Some(u) = &o.command_user {
        s.push_str(&format!("command_user = {}\n", quote(u)));
        if o.net_admin {
            s.push_str("command_net_admin = true\n");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fwknop_command_lines_become_argv_templates_or_clear_refusals() {
        assert_eq!(
            argv_of("/usr/sbin/ipset add whitelist $SRC timeout $CLIENT_TIMEOUT").unwrap(),
            [
                "/usr/sbin/ipset",
                "add",
                "whitelist",
                "$SRC",
                "timeout",
                "$CLIENT_TIMEOUT"
            ]
        );
        // Quoted, a set element is one argument, its variables substituted inside it.
        assert_eq!(
            argv_of("/usr/sbin/nft add element inet filter fw '{ $SRC . $PORT }'").unwrap()[6],
            "{ $SRC . $PORT }"
        );
        // Unquoted, as fwknopd runs it: braces are words of their own.
        assert_eq!(
            argv_of("/usr/sbin/nft add element inet filter fw { $SRC . $PORT }").unwrap()[6..],
            ["{", "$SRC", ".", "$PORT", "}"]
        );
        assert_eq!(
            argv_of("/usr/sbin/ipset add x $SRC *").unwrap_err(),
            "`*` is shell syntax (a glob); no shell runs this command, so it is refused: write a plain program with arguments, or put the shell logic into a script and name the script"
        );
        assert!(argv_of("ipset add x $SRC")
            .unwrap_err()
            .contains("absolute path"));
        assert!(argv_of("/bin/x $DST")
            .unwrap_err()
            .contains("no nfknock equivalent"));
        assert!(argv_of("/bin/x $SRC | /bin/y")
            .unwrap_err()
            .contains("a pipe"));
        assert!(argv_of("/bin/x $(id)")
            .unwrap_err()
            .contains("command substitution"));
    }
}
