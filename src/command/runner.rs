//! The command runner: a process forked by `nfknock serve` before it leaves root, which runs
//! the commands of command cycles and command messages as their configured users. I/O.
//!
//! **Why a separate process.** After start the daemon is the service user with CAP_NET_ADMIN
//! only: it can neither change user nor start a program as someone else. The runner keeps
//! exactly what that takes, CAP_SETUID and CAP_SETGID, CAP_KILL (to end a command's process
//! group at its timeout, which runs as another user), plus CAP_NET_ADMIN only when a client
//! sets `command_net_admin` (it is handed to that client's commands as an ambient capability,
//! so `ipset`/`nft` work as an unprivileged user); it becomes the service user too when the
//! daemon does, and has no other capability, no dumpable memory and `no_new_privs` (unless a
//! client's command messages go through sudo, which is set-uid and needs privileges to gain).
//!
//! **Forked, confined, executed.** [`spawn`] forks while the daemon is still root and has one
//! thread, confines the child (bounding set, user, `no_new_privs`), then executes
//! `/proc/self/exe __command-runner` ([`runner_main`]): the runner is a fresh image holding
//! none of the daemon's memory (no key), its capabilities carried over the exec as ambient ones
//! and cleared at once. The daemon sends it the command settings (one JSON `CatalogEntry`
//! per client, checked again), then jobs.
//!
//! **What it trusts.** The daemon faces the network, so the runner takes it for the less trusted
//! side: a message ([`super::proto`]) names a client and a command of that client *in the
//! config the runner was forked with* plus typed values, which are checked again; a command
//! message's argv is matched again against that client's allow-list. No argv of the daemon's own
//! making is ever run. A reload does not reach the runner: command settings change with a
//! restart (the daemon warns).
//!
//! **How a command runs.** `execve` of the absolute path (no shell, no PATH search), a clean
//! environment (`PATH`, `LC_ALL=C`), working directory `/`, stdin `/dev/null`, stdout and stderr
//! into one pipe read into the log (the first [`MAX_OUTPUT`] bytes; the rest is counted),
//! every other descriptor closed, `setgroups`/`setgid`/`setuid` to the configured user,
//! `no_new_privs`, its own process group. At its `command_timeout` the group gets SIGTERM,
//! [`KILL_GRACE_SECS`] later SIGKILL. At most `max_commands` run at once; up to [`MAX_QUEUED`]
//! wait, more are refused with a log line. Every start and end is logged with the exit status.
//!
//! **If it dies.** The daemon notices (the socket closes) and logs it loudly; grants in the nft
//! set are unaffected, commands are skipped with an error until nfknock is restarted (it cannot
//! fork a privileged runner again once it has left root), and pending `on_expire` commands stay
//! in `state_dir` to run after that restart. When the daemon ends (however it ends, the kernel
//! closes its end of the socket) the runner drops what is still queued, lets the commands that
//! run finish or kills them at their timeouts as always, and exits: a command is never left
//! without its timeout.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tracing::{error, info};

use super::proto::{self, Job, MAX_MESSAGE};
use super::template::{valid_user, MAX_ARGS};
use super::{
    ClientCommands, CommandUser, Cycle, Exec, GrantMode, Sudo, Template, KILL_GRACE_SECS,
    MAX_OUTPUT, MAX_QUEUED,
};
use crate::config::{Account, Config};

mod jobs;
use jobs::child_main;

/// The environment every command gets, and nothing else.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// `CAP_NET_ADMIN` (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_KILL: u32 = 5;
const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;

/// The daemon's end of the runner.
#[derive(Debug)]
pub struct Runner {
    sock: OwnedFd,
    pid: libc::pid_t,
    gone: bool,
}

/// Why a job was not handed over.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The runner's socket is full (it is far behind): the job is skipped.
    Full,
    /// The runner is gone: no command runs until nfknock is restarted.
    Gone,
}

impl Runner {
    /// Hand `job` over without blocking.
    pub fn send(&mut self, job: &Job) -> Result<(), SendError> {
        if self.gone {
            return Err(SendError::Gone);
        }
        let msg = proto::encode(job);
        // SAFETY: `msg` is a valid buffer of its length; the descriptor is ours.
        let rc = unsafe {
            libc::send(
                self.sock.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if rc >= 0 {
            return Ok(());
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => Err(SendError::Full),
            _ => {
                self.gone = true;
                Err(SendError::Gone)
            }
        }
    }

    /// Has the runner exited? Reaps it (it is our child) and says so once.
    pub fn check(&mut self) -> Option<String> {
        if self.gone && self.pid == 0 {
            return None;
        }
        let mut status = 0;
        // SAFETY: a valid out-pointer; WNOHANG never blocks.
        let rc = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        if rc == self.pid {
            self.gone = true;
            self.pid = 0;
            return Some(if libc::WIFEXITED(status) {
                format!("exited with status {}", libc::WEXITSTATUS(status))
            } else {
                format!("was killed by signal {}", libc::WTERMSIG(status))
            });
        }
        if self.gone {
            self.pid = 0;
            return Some("closed its socket".into());
        }
        None
    }

    pub fn is_gone(&self) -> bool {
        self.gone
    }
}

/// One client's commands as the runner keeps them.
struct Entry {
    name: String,
    commands: ClientCommands,
}

/// The argument that makes `nfknock` the command runner (`main.rs` looks for it before
/// anything else; not a documented command: it only works with the socket on descriptor 3).
pub const RUNNER_ARG: &str = "__command-runner";
/// The descriptor the runner finds its socket on.
const RUNNER_FD: RawFd = 3;
/// The message that ends the catalog.
const CATALOG_END: &[u8] = b"END";

/// One client's command settings as the daemon hands them to the runner it has just executed
/// (JSON, one message per client): only the settings, never a key. The runner checks them
/// again as the config check did ([`Template::parse`], absolute paths, user names).
#[derive(serde::Serialize, serde::Deserialize)]
struct CatalogEntry {
    name: String,
    grant: GrantMode,
    on_grant: Option<Vec<String>>,
    on_expire: Option<Vec<String>>,
    exact: Option<Vec<Vec<String>>>,
    prefixes: Vec<Vec<String>>,
    sudo: Option<(String, Option<String>)>,
    user: String,
    uid: u32,
    gid: u32,
    timeout_secs: u32,
    net_admin: bool,
}

impl CatalogEntry {
    fn of(e: &Entry) -> Option<CatalogEntry> {
        let c = &e.commands;
        let u = c.user.as_ref()?;
        Some(CatalogEntry {
            name: e.name.clone(),
            grant: c.grant,
            on_grant: c.cycle.on_grant.as_ref().map(|t| t.source.clone()),
            on_expire: c.cycle.on_expire.as_ref().map(|t| t.source.clone()),
            exact: c.exec.as_ref().map(|x| x.exact.clone()),
            prefixes: c
                .exec
                .as_ref()
                .map(|x| x.prefixes.clone())
                .unwrap_or_default(),
            sudo: c
                .exec
                .as_ref()
                .and_then(|x| x.sudo.as_ref())
                .map(|s| (s.user.clone(), s.group.clone())),
            user: u.account.name.clone(),
            uid: u.account.uid,
            gid: u.account.gid,
            timeout_secs: u.timeout_secs,
            net_admin: u.net_admin,
        })
    }

    fn into_entry(self) -> Result<Entry, String> {
        let tpl = |v: Option<Vec<String>>| {
            v.map(|a| Template::parse(&a).map_err(|e| e.to_string()))
                .transpose()
        };
        let absolute = |v: &[Vec<String>]| {
            v.iter()
                .all(|a| a.first().is_some_and(|p| p.starts_with('/')) && a.len() <= MAX_ARGS)
        };
        if !crate::config::valid_name(&self.name)
            || !valid_user(&self.user)
            || self.uid == 0
            || !absolute(self.exact.as_deref().unwrap_or_default())
            || !absolute(&self.prefixes)
            || !(1..=super::MAX_TIMEOUT_SECS).contains(&self.timeout_secs)
        {
            return Err(format!("bad command settings for client `{}`", self.name));
        }
        let sudo_ok = self
            .sudo
            .as_ref()
            .is_none_or(|(u, g)| valid_user(u) && g.as_deref().is_none_or(valid_user));
        if !sudo_ok {
            return Err(format!("bad sudo user for client `{}`", self.name));
        }
        let exec = self.exact.map(|exact| Exec {
            exact,
            prefixes: self.prefixes,
            sudo: self.sudo.map(|(user, group)| Sudo { user, group }),
        });
        Ok(Entry {
            name: self.name,
            commands: ClientCommands {
                grant: self.grant,
                cycle: Cycle {
                    on_grant: tpl(self.on_grant)?,
                    on_expire: tpl(self.on_expire)?,
                },
                exec,
                user: Some(CommandUser {
                    account: Account {
                        name: self.user,
                        uid: self.uid,
                        gid: self.gid,
                    },
                    timeout_secs: self.timeout_secs,
                    net_admin: self.net_admin,
                }),
            },
        })
    }
}

/// Fork the runner if any client runs commands. Call before the daemon leaves root, while it
/// has one thread. `service`: the account the daemon is about to become (the runner becomes it
/// too), if any.
pub fn spawn(config: &Config, service: Option<&Account>) -> io::Result<Option<Runner>> {
    let catalog: Vec<Entry> = config
        .clients
        .iter()
        .filter(|c| c.commands.any())
        .map(|c| Entry {
            name: c.name.clone(),
            commands: c.commands.clone(),
        })
        .collect();
    if catalog.is_empty() {
        return Ok(None);
    }
    let net_admin = catalog
        .iter()
        .any(|e| e.commands.user.as_ref().is_some_and(|u| u.net_admin));
    let max = config.server.max_commands.max(1) as usize;
    check_capabilities(net_admin)?;
    let mut fds = [0; 2];
    // SAFETY: a valid array for socketpair(2) to fill.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair returned two new descriptors that nothing else owns.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the daemon has one thread here (serve forks before it starts any), so the child
    // may run ordinary Rust code; it never returns into the caller.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        drop(ours);
        let sudo = catalog
            .iter()
            .any(|e| e.commands.exec.as_ref().is_some_and(|x| x.sudo.is_some()));
        // Confined first, then a fresh program: nothing of the daemon's memory (keys, the
        // config) survives the exec; the kept capabilities pass as ambient ones.
        let e = match confine(parent, net_admin, sudo, service) {
            Ok(()) => exec_runner(theirs, max),
            Err(e) => e,
        };
        error!("command runner: {e}; no command will run until nfknock is restarted");
        // SAFETY: leave without running the parent's exit handlers or destructors twice.
        unsafe { libc::_exit(1) };
    }
    drop(theirs);
    // The catalog, one client per message, then the end mark (blocking: the runner reads it
    // before anything else).
    for e in &catalog {
        let Some(entry) = CatalogEntry::of(e) else {
            continue;
        };
        let msg = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        send_all(&ours, &msg)?;
    }
    send_all(&ours, CATALOG_END)?;
    info!(
        pid,
        clients = catalog.len(),
        max_commands = max,
        net_admin,
        "command runner started (keeps CAP_SETUID, CAP_SETGID, CAP_KILL{})",
        if net_admin { ", CAP_NET_ADMIN" } else { "" }
    );
    Ok(Some(Runner {
        sock: ours,
        pid,
        gone: false,
    }))
}

/// One blocking message on the runner's socket.
fn send_all(sock: &OwnedFd, msg: &[u8]) -> io::Result<()> {
    if msg.len() > MAX_MESSAGE {
        return Err(io::Error::other(
            "a client's command settings are too large to hand to the runner",
        ));
    }
    // SAFETY: `msg` is valid for its length; the descriptor is ours.
    let rc = unsafe {
        libc::send(
            sock.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// In the forked child, confined: put the socket on descriptor 3, close the rest and execute
/// this program again as the runner. Returns only on failure.
fn exec_runner(sock: OwnedFd, max: usize) -> String {
    use std::ffi::CString;
    let fd = sock.as_raw_fd();
    // SAFETY: dup2 onto 3 (clears CLOEXEC on the copy); then every other descriptor above 2
    // closes at exec.
    unsafe {
        if fd != RUNNER_FD && libc::dup2(fd, RUNNER_FD) != RUNNER_FD {
            return format!("dup2: {}", io::Error::last_os_error());
        }
        if fd == RUNNER_FD {
            libc::fcntl(RUNNER_FD, libc::F_SETFD, 0);
        }
        libc::syscall(
            libc::SYS_close_range,
            4u32,
            u32::MAX,
            4u32, /* CLOSE_RANGE_CLOEXEC */
        );
    }
    std::mem::forget(sock);
    let cstr = |s: &str| CString::new(s).unwrap_or_default();
    let exe = cstr("/proc/self/exe");
    let args = [cstr("nfknock"), cstr(RUNNER_ARG), cstr(&max.to_string())];
    let mut env: Vec<CString> = ["NFKNOCK_LOG", "JOURNAL_STREAM"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| cstr(&format!("{k}={v}"))))
        .collect();
    env.push(cstr(&format!("PATH={PATH}")));
    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = env
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    // SAFETY: NUL-terminated strings and NULL-terminated arrays that outlive the call.
    unsafe { libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    format!(
        "cannot execute /proc/self/exe as the runner: {}",
        io::Error::last_os_error()
    )
}

/// `nfknock __command-runner MAX`: the runner, executed by [`spawn`] with its socket on
/// descriptor 3. Reads its catalog, then serves. Never returns.
pub fn runner_main(max: &str) -> ! {
    let code = match runner(max) {
        Ok(()) => 0,
        Err(e) => {
            error!("command runner: {e}; no command will run until nfknock is restarted");
            1
        }
    };
    std::process::exit(code)
}

fn runner(max: &str) -> Result<(), String> {
    let max: usize = max
        .parse()
        .ok()
        .filter(|m| (1..=64).contains(m))
        .ok_or("bad max_commands")?;
    // SAFETY: fcntl on a descriptor number; F_GETFD only asks.
    if unsafe { libc::fcntl(RUNNER_FD, libc::F_GETFD) } < 0 {
        return Err("no socket on descriptor 3: this is started by `nfknock serve` only".into());
    }
    // SAFETY: descriptor 3 was handed to this process by `spawn`, nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(RUNNER_FD) };
    // SAFETY: prctl with integer arguments (an exec makes the process dumpable again).
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // The ambient capabilities that carried the kept ones over the exec are not handed on:
    // each command raises its own (only CAP_NET_ADMIN, only when configured).
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    let mut catalog = Vec::new();
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    loop {
        // SAFETY: `buf` is valid for its length.
        let n = unsafe { libc::recv(RUNNER_FD, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            return Err("the daemon closed the socket before the catalog ended".into());
        }
        let msg = &buf[..n as usize];
        if msg == CATALOG_END {
            break;
        }
        let entry: CatalogEntry =
            serde_json::from_slice(msg).map_err(|e| format!("bad catalog entry: {e}"))?;
        catalog.push(entry.into_entry()?);
    }
    child_main(sock, &catalog, max)
}

/// The runner needs CAP_SETUID, CAP_SETGID and CAP_KILL (and CAP_NET_ADMIN to hand on): a
/// daemon started without them (a unit's `User=` with CAP_NET_ADMIN only) is told so at start,
/// not at the first command.
fn check_capabilities(net_admin: bool) -> io::Result<()> {
    use caps::{CapSet, Capability};
    let have = caps::read(None, CapSet::Permitted)
        .map_err(|e| io::Error::other(format!("cannot read capabilities: {e}")))?;
    let mut want = vec![
        Capability::CAP_SETUID,
        Capability::CAP_SETGID,
        Capability::CAP_KILL,
    ];
    if net_admin {
        want.push(Capability::CAP_NET_ADMIN);
    }
    let missing: Vec<String> = want
        .iter()
        .filter(|c| !have.contains(c))
        .map(|c| c.to_string())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "clients run commands (`grant = \"command\"`/`\"both\"` or `commands`), which needs {} to run them as `command_user`; start nfknock as root (it leaves root itself), or give the unit `AmbientCapabilities=` and `CapabilityBoundingSet=` CAP_NET_ADMIN {} (docs/COMMANDS.md)",
        missing.join(", "),
        want.iter().filter(|c| **c != Capability::CAP_NET_ADMIN).map(|c| c.to_string()).collect::<Vec<_>>().join(" ")
    )))
}

fn os(rc: libc::c_int, what: &str) -> Result<(), String> {
    if rc == -1 {
        Err(format!("{what}: {}", io::Error::last_os_error()))
    } else {
        Ok(())
    }
}

/// Set the capability sets of this thread (capset(2), version 3).
fn capset(effective: u32, permitted: u32, inheritable: u32) -> libc::c_int {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [
        Data {
            effective,
            permitted,
            inheritable,
        },
        Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    // SAFETY: valid header and two data structs, as _LINUX_CAPABILITY_VERSION_3 requires.
    unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) as libc::c_int }
}

fn bit(cap: u32) -> u32 {
    1 << cap
}

/// The runner's own privileges: see the module doc.
fn confine(
    parent: libc::pid_t,
    net_admin: bool,
    sudo: bool,
    service: Option<&Account>,
) -> Result<(), String> {
    // SAFETY: prctl/getppid with integer arguments.
    unsafe {
        if libc::getppid() != parent {
            return Err("the daemon exited while the runner started".into());
        }
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    // CAP_KILL: a command runs as another user, and its process group must still be
    // signalled at its timeout (kill(2) needs a matching uid or CAP_KILL).
    let mut keep = bit(CAP_SETUID) | bit(CAP_SETGID) | bit(CAP_KILL);
    if net_admin {
        keep |= bit(CAP_NET_ADMIN);
    }
    for cap in 0..=63u32 {
        // Capability numbers beyond 31 are never kept (none of ours is).
        let kept = cap < 32 && keep & (1 << cap) != 0;
        if !kept {
            // SAFETY: prctl with integer arguments; EINVAL past the last capability is fine.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        }
    }
    if let Some(a) = service.filter(|a| a.uid != 0) {
        // SAFETY: integer arguments; a zero-length list needs no pointer.
        unsafe {
            os(
                libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0),
                "PR_SET_KEEPCAPS",
            )?;
            os(libc::setgroups(0, std::ptr::null()), "setgroups")?;
            os(libc::setresgid(a.gid, a.gid, a.gid), "setresgid")?;
            os(libc::setresuid(a.uid, a.uid, a.uid), "setresuid")?;
            os(
                libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0),
                "PR_SET_KEEPCAPS",
            )?;
        }
    }
    // Inheritable and ambient too: that is how the kept capabilities cross the exec into the
    // runner program (capabilities(7): ambient ones survive the exec of a plain file).
    os(capset(keep, keep, keep), "capset")?;
    // SAFETY: integer arguments.
    unsafe {
        os(
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            ),
            "clear ambient capabilities",
        )?;
        for cap in 0..32u32 {
            if keep & (1 << cap) != 0 {
                os(
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE,
                        cap as libc::c_ulong,
                        0,
                        0,
                    ),
                    "raise an ambient capability",
                )?;
            }
        }
        // Inherited and irreversible: with a sudo client, sudo (set-uid) must still work.
        if !sudo {
            os(
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
                "PR_SET_NO_NEW_PRIVS",
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        let t = |a: &[&str]| {
            Template::parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
        };
        Entry {
            name: "alice".into(),
            commands: ClientCommands {
                grant: GrantMode::Both,
                cycle: Cycle {
                    on_grant: Some(t(&["/usr/sbin/ipset", "add", "wl", "$SRC"])),
                    on_expire: Some(t(&["/usr/sbin/ipset", "del", "wl", "$SRC"])),
                },
                exec: Some(Exec {
                    exact: vec![vec!["/usr/bin/id".into()]],
                    prefixes: vec![vec!["/usr/bin/touch".into()]],
                    sudo: Some(Sudo {
                        user: "www".into(),
                        group: None,
                    }),
                }),
                user: Some(CommandUser {
                    account: Account {
                        name: "nobody".into(),
                        uid: 65534,
                        gid: 65534,
                    },
                    timeout_secs: 10,
                    net_admin: true,
                }),
            },
        }
    }

    /// The catalog crosses the exec unchanged, and the runner checks it again: a relative
    /// program, root, an unknown variable or a bad name never gets in.
    #[test]
    fn the_catalog_survives_the_trip_and_is_checked_again() {
        let json = serde_json::to_vec(&CatalogEntry::of(&entry()).unwrap()).unwrap();
        let back: CatalogEntry = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.into_entry().unwrap().commands, entry().commands);
        let bad = |f: &dyn Fn(&mut CatalogEntry)| {
            let mut e = CatalogEntry::of(&entry()).unwrap();
            f(&mut e);
            e.into_entry().is_err()
        };
        assert!(bad(&|e| e.on_grant = Some(vec!["ipset".into()])));
        assert!(bad(
            &|e| e.on_expire = Some(vec!["/bin/x".into(), "$SOURCE".into()])
        ));
        assert!(bad(&|e| e.uid = 0));
        assert!(bad(&|e| e.user = "-rf".into()));
        assert!(bad(&|e| e.name = "a b".into()));
        assert!(bad(&|e| e.exact = Some(vec![vec!["id".into()]])));
        assert!(bad(&|e| e.prefixes = vec![vec![]]));
        assert!(bad(&|e| e.sudo = Some(("-u".into(), None))));
        assert!(bad(&|e| e.timeout_secs = 0));
    }
}
