//! Commands: command cycles (`on_grant`/`on_expire`, fwknop `CMD_CYCLE_*`) and command
//! messages (fwknop message type 0, `ENABLE_CMD_EXEC`).
//!
//! | file | what | pure? |
//! | --- | --- | --- |
//! | `mod.rs` | the per-client settings ([`GrantMode`], [`Cycle`], [`Exec`], [`CommandUser`]), the allow-list match | pure |
//! | `template.rs` | argv templates and their per-argument substitution | pure |
//! | `split.rs` | a command string → argv, refusing shell syntax | pure |
//! | `proto.rs` | the daemon → runner message format (length-prefixed, validated) | pure |
//! | `runner.rs` | the privilege-separated runner process: fork, exec, timeouts, output | I/O |
//! | `pending.rs` | the pending `on_expire` commands on disk (`state_dir/pending-closes`) | I/O |
//!
//! The daemon leaves root and keeps only CAP_NET_ADMIN, so it cannot run a program as another
//! user. Before it drops its privileges it forks the runner ([`runner::spawn`]), which keeps
//! CAP_SETUID and CAP_SETGID (and CAP_NET_ADMIN only if a client sets `command_net_admin`,
//! to hand it on as an ambient capability) and nothing else. The two talk over a socketpair; the
//! daemon sends *names* (client, which command) and typed values, never a program or argv of
//! its own: the runner takes the argv from the config it was forked with and checks the values
//! again. A command message's argv comes from the packet and is checked by the runner against
//! the client's allow-list, again.

pub mod pending;
pub mod proto;
pub mod runner;
pub mod split;
pub mod template;

pub use template::{Template, Values, Var};

/// `grant`: what a granted knock does for a client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantMode {
    /// A set element with a timeout (the default).
    #[default]
    Nft,
    /// The client's `on_grant` command only (fwknop `CMD_CYCLE_OPEN` replaces the firewall).
    Command,
    /// Both.
    Both,
}

impl GrantMode {
    pub fn nft(self) -> bool {
        matches!(self, GrantMode::Nft | GrantMode::Both)
    }
    pub fn command(self) -> bool {
        matches!(self, GrantMode::Command | GrantMode::Both)
    }
}

/// `on_grant` / `on_expire` of one client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cycle {
    pub on_grant: Option<Template>,
    pub on_expire: Option<Template>,
}

/// Command messages a client may send (`commands`, `command_prefixes`, `command_sudo_*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exec {
    /// Exact argv a message may ask for.
    pub exact: Vec<Vec<String>>,
    /// argv prefixes: a message's argv may add arguments after one of these.
    pub prefixes: Vec<Vec<String>>,
    /// Run through `sudo -u USER [-g GROUP] --` (fwknop `ENABLE_CMD_SUDO_EXEC`).
    pub sudo: Option<Sudo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sudo {
    pub user: String,
    pub group: Option<String>,
}

/// Everything about commands for one client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCommands {
    pub grant: GrantMode,
    pub cycle: Cycle,
    /// `Some` when the client may send command messages.
    pub exec: Option<Exec>,
    /// Who its commands run as (`Some` whenever it runs any).
    pub user: Option<CommandUser>,
}

impl ClientCommands {
    /// Does this client run anything at all?
    pub fn any(&self) -> bool {
        self.user.is_some() && (self.grant.command() || self.exec.is_some())
    }
}

/// Where `sudo` is (fwknopd's `SUDO_EXE` default, server/fwknopd_common.h).
pub const SUDO: &str = "/usr/bin/sudo";

impl Exec {
    /// Does the allow-list permit `argv`? Exact entries match whole; a prefix matches when
    /// argv starts with it and adds no argument that starts with `-` (no options after the
    /// allowed part).
    pub fn permits(&self, argv: &[String]) -> bool {
        self.exact.iter().any(|e| e.as_slice() == argv)
            || self.prefixes.iter().any(|p| {
                argv.len() >= p.len()
                    && argv[..p.len()] == p[..]
                    && argv[p.len()..].iter().all(|a| !a.starts_with('-'))
            })
    }

    /// The argv the runner execs for a permitted `argv`.
    pub fn final_argv(&self, argv: &[String]) -> Vec<String> {
        match &self.sudo {
            None => argv.to_vec(),
            Some(s) => {
                let mut v = vec![SUDO.to_string(), "-n".into(), "-u".into(), s.user.clone()];
                if let Some(g) = &s.group {
                    v.push("-g".into());
                    v.push(g.clone());
                }
                v.push("--".into());
                v.extend_from_slice(argv);
                v
            }
        }
    }
}

/// Who a client's commands run as, and for how long at most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandUser {
    pub account: crate::config::Account,
    /// Seconds before the command's process group gets SIGTERM (then SIGKILL after
    /// [`KILL_GRACE_SECS`]).
    pub timeout_secs: u32,
    /// Hand CAP_NET_ADMIN to the command as an ambient capability (`ipset`, `nft`).
    pub net_admin: bool,
}

/// Default `command_timeout` (fwknopd's `CMD_EXEC_TIMEOUT` default, server/fwknopd_common.h).
pub const DEFAULT_TIMEOUT_SECS: u32 = 30;
/// Longest `command_timeout`.
pub const MAX_TIMEOUT_SECS: u32 = 3600;
/// Seconds between SIGTERM and SIGKILL of a command's process group.
pub const KILL_GRACE_SECS: u64 = 2;
/// Default `[server] max_commands`: commands running at once.
pub const DEFAULT_MAX_COMMANDS: u32 = 4;
/// Commands waiting for a slot in the runner, beyond which new ones are refused (logged).
pub const MAX_QUEUED: usize = 256;
/// Output of one command kept for the log; the rest is read and counted.
pub const MAX_OUTPUT: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_allow_list_matches_exact_argv_and_prefixes_without_options() {
        let e = Exec {
            exact: vec![v(&["/usr/bin/systemctl", "restart", "nginx"])],
            prefixes: vec![v(&["/usr/bin/touch"])],
            sudo: None,
        };
        assert!(e.permits(&v(&["/usr/bin/systemctl", "restart", "nginx"])));
        assert!(!e.permits(&v(&["/usr/bin/systemctl", "restart", "nginx", "sshd"])));
        assert!(!e.permits(&v(&["/usr/bin/systemctl", "stop", "nginx"])));
        assert!(e.permits(&v(&["/usr/bin/touch", "/tmp/x"])));
        assert!(!e.permits(&v(&["/usr/bin/touch", "--reference=/etc/shadow", "/tmp/x"])));
        assert!(!e.permits(&v(&["/usr/bin/touchy"])));
        let s = Exec {
            sudo: Some(Sudo {
                user: "www".into(),
                group: Some("www".into()),
            }),
            ..e
        };
        assert_eq!(
            s.final_argv(&v(&["/usr/bin/touch", "/tmp/x"])),
            v(&[
                SUDO,
                "-n",
                "-u",
                "www",
                "-g",
                "www",
                "--",
                "/usr/bin/touch",
                "/tmp/x"
            ])
        );
    }
}
