//! The daemon's side of commands: turns grants of `grant = "command"`/`"both"` clients into
//! `on_grant` jobs (after their `on_expire` is safely on disk), allowed command messages into
//! jobs, and runs due closes from the tick. Never blocks: a job the runner cannot take right
//! now is logged and skipped (a close is kept for the next tick, or the next start).

use tracing::{error, info};

use crate::command::pending::{Close, Pending};
use crate::command::proto::Job;
use crate::command::runner::{Runner, SendError};
use crate::command::Values;
use crate::config::ClientEntry;
use crate::policy;

/// Commands of a running daemon.
pub struct Commands {
    runner: Option<Runner>,
    pending: Pending,
    dry_run: bool,
    /// Jobs of this burst, sent once the pending closes are on disk.
    jobs: Vec<Job>,
}

impl Commands {
    pub fn new(runner: Option<Runner>, pending: Pending, dry_run: bool) -> Commands {
        if !pending.is_empty() && runner.is_none() && !dry_run {
            error!(
                pending = pending.len(),
                "pending on_expire commands are kept in state_dir but no client runs commands now, so they do not run; run them by hand (the file `pending-closes` is text) and remove it, or restore the clients' command settings"
            );
        } else if !pending.is_empty() {
            info!(
                pending = pending.len(),
                "pending on_expire commands loaded; overdue ones run now"
            );
        }
        Commands {
            runner,
            pending,
            dry_run,
            jobs: Vec::new(),
        }
    }

    /// A grant for `client`: one `on_grant` per access, and its `on_expire` kept for `now + ttl`.
    pub fn grant(&mut self, client: &ClientEntry, g: &policy::Grant, user: Option<&str>, now: u64) {
        let c = &client.commands;
        if !c.grant.command() || c.cycle.on_grant.is_none() {
            return;
        }
        let uses_user = [&c.cycle.on_grant, &c.cycle.on_expire]
            .into_iter()
            .flatten()
            .any(|t| t.uses(crate::command::Var::User));
        let user = match user {
            Some(u) if crate::command::template::valid_user(u) => Some(u),
            // The name comes from the packet: shown escaped, and never an argument.
            Some(u) if uses_user => {
                error!(
                    client = %client.name,
                    addr = %g.addr,
                    "on_grant refused: the knock's user name {u:?} cannot be a command argument ($USER must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,31}}, so it can never become an option)"
                );
                return;
            }
            _ => None,
        };
        for a in &g.access {
            let values = Values {
                src: g.addr,
                proto: a.proto,
                port: a.port,
                timeout: g.ttl,
                user: user.map(str::to_string),
            };
            if c.cycle.on_expire.is_some() {
                let close = Close {
                    deadline: now + u64::from(g.ttl),
                    client: client.name.clone(),
                    values: values.clone(),
                };
                if !self.pending.add(close) {
                    error!(
                        client = %client.name,
                        addr = %g.addr,
                        "on_grant skipped: {} on_expire commands are already pending, so this one could not be kept",
                        crate::command::pending::MAX_PENDING
                    );
                    continue;
                }
            }
            self.jobs.push(Job::Grant {
                client: client.name.clone(),
                values,
            });
        }
    }

    /// An allowed command message.
    pub fn command(&mut self, client: &ClientEntry, run: &policy::CommandRun) {
        self.jobs.push(Job::Exec {
            client: client.name.clone(),
            argv: run.argv.clone(),
        });
    }

    /// End of a burst: the closes to disk first (what is opened must be closable, also after a
    /// crash), then the jobs to the runner.
    pub fn flush(&mut self) {
        if self.jobs.is_empty() {
            return;
        }
        let jobs = std::mem::take(&mut self.jobs);
        if let Err(e) = self.pending.save() {
            error!("{e}; on_grant commands of this burst are skipped (their on_expire could not be kept)");
            for j in jobs.iter().filter(|j| !matches!(j, Job::Grant { .. })) {
                self.send(j);
            }
            return;
        }
        for j in &jobs {
            self.send(j);
        }
    }

    /// Once a second: notice a dead runner, run due closes.
    pub fn tick(&mut self, now: u64) {
        if let Some(r) = self.runner.as_mut() {
            if let Some(how) = r.check() {
                error!(
                    "the command runner {how}: no command runs until nfknock is restarted (systemctl restart nfknock); grants in the nft set are not affected, and pending on_expire commands stay in state_dir and run after the restart"
                );
            }
        }
        // Without a runner, closes stay on disk for the next start (logged when it went).
        if !self.dry_run && self.runner.as_ref().is_none_or(Runner::is_gone) {
            return;
        }
        let due = self.pending.take_due(now);
        let mut keep = Vec::new();
        for close in due {
            let job = Job::Expire {
                client: close.client.clone(),
                values: close.values.clone(),
            };
            if !self.send(&job) {
                keep.push(close);
            }
        }
        self.pending.put_back(keep);
        if let Err(e) = self.pending.save() {
            error!("{e}");
        }
    }

    /// Hand `job` to the runner; false if it could not be (logged).
    fn send(&mut self, job: &Job) -> bool {
        let (client, what) = (job.client(), job.what());
        if self.dry_run {
            info!(client, command = what, "dry run: the command is not run");
            return true;
        }
        let Some(r) = self.runner.as_mut() else {
            error!(client, command = what, "command skipped: no command runner was started (a client's command settings were added by a reload: restart nfknock)");
            return false;
        };
        match r.send(job) {
            Ok(()) => true,
            Err(SendError::Full) => {
                error!(client, command = what, "command skipped: the command runner is too far behind (its socket is full); raise `max_commands` or shorten `command_timeout`");
                false
            }
            Err(SendError::Gone) => {
                error!(client, command = what, "command skipped: the command runner is gone; restart nfknock (pending on_expire commands are kept)");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{CommandUser, GrantMode, Template};

    fn client(on_grant: &[&str]) -> ClientEntry {
        let mut c = crate::policy::tests::client();
        let t = |a: &[&str]| {
            Template::parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
        };
        c.commands.grant = GrantMode::Command;
        c.commands.cycle.on_grant = Some(t(on_grant));
        c.commands.cycle.on_expire = Some(t(&["/usr/sbin/ipset", "del", "wl", "$SRC"]));
        c.commands.user = Some(CommandUser {
            account: crate::config::Account {
                name: "nobody".into(),
                uid: 65534,
                gid: 65534,
            },
            timeout_secs: 5,
            net_admin: true,
        });
        c
    }

    fn grant(ttl: u32) -> policy::Grant {
        policy::Grant {
            addr: "192.0.2.7".parse().unwrap(),
            access: vec!["tcp/22".parse().unwrap(), "udp/53".parse().unwrap()],
            ttl,
            nat: vec![],
            gateway: vec![],
        }
    }

    fn on_disk(dir: &std::path::Path) -> String {
        std::fs::read_to_string(dir.join(crate::command::pending::FILE)).unwrap_or_default()
    }

    /// Each granted access gets its close on disk when the burst ends (before its on_grant is
    /// handed over), and the tick takes it off once due.
    #[test]
    fn closes_are_on_disk_before_the_open_and_leave_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Commands::new(None, Pending::open(dir.path()).unwrap(), true);
        let alice = client(&["/usr/sbin/ipset", "add", "wl", "$SRC"]);
        c.grant(&alice, &grant(5), None, 100);
        assert_eq!(c.jobs.len(), 2);
        assert_eq!(
            on_disk(dir.path()),
            "",
            "nothing written before the burst ends"
        );
        c.flush();
        assert!(c.jobs.is_empty());
        let text = on_disk(dir.path());
        assert!(
            text.contains("105 alice 192.0.2.7 tcp 22 5 -")
                && text.contains("105 alice 192.0.2.7 udp 53 5 -"),
            "{text}"
        );
        c.tick(104);
        assert_eq!(on_disk(dir.path()).lines().count(), 3);
        c.tick(105);
        assert_eq!(
            on_disk(dir.path()).lines().count(),
            1,
            "only the header is left"
        );
    }

    /// A user name that cannot be an argument stops the cycle before anything is kept or run;
    /// without $USER in the templates the name does not matter.
    #[test]
    fn a_user_name_that_cannot_be_an_argument_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Commands::new(None, Pending::open(dir.path()).unwrap(), true);
        let with_user = client(&["/usr/bin/logger", "$USER"]);
        c.grant(&with_user, &grant(5), Some("-rf"), 100);
        assert!(c.jobs.is_empty() && c.pending.is_empty());
        c.grant(&with_user, &grant(5), Some("bob"), 100);
        assert_eq!(c.jobs.len(), 2);
        let without = client(&["/usr/bin/logger", "$SRC"]);
        let mut d = Commands::new(None, Pending::open(dir.path()).unwrap(), true);
        d.grant(&without, &grant(5), Some("-rf"), 100);
        assert_eq!(d.jobs.len(), 2);
    }

    /// Without a runner (not a dry run), due closes stay on disk for the next start.
    #[test]
    fn without_a_runner_closes_wait_for_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Commands::new(None, Pending::open(dir.path()).unwrap(), false);
        c.grant(&client(&["/bin/true"]), &grant(5), None, 100);
        c.flush();
        c.tick(1_000);
        assert_eq!(Pending::open(dir.path()).unwrap().len(), 2);
    }
}
