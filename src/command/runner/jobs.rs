//! The runner's job loop, in the runner process: take jobs off the daemon's socket, check each
//! against the catalog the runner was forked with, start at most `max_commands` at once (the rest
//! wait, up to [`MAX_QUEUED`]), log each command's output and exit status, and end its process
//! group at its timeout. I/O.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::*;

struct Running {
    pid: u32,
    child: Child,
    out: Option<std::fs::File>,
    output: Vec<u8>,
    dropped: usize,
    client: String,
    what: &'static str,
    started: Instant,
    deadline: Instant,
    term_sent: Option<Instant>,
}

pub(super) fn child_main(sock: OwnedFd, catalog: &[Entry], max: usize) -> Result<(), String> {
    let fd = sock.as_raw_fd();
    let mut queue: VecDeque<Resolved> = VecDeque::new();
    let mut running: Vec<Running> = Vec::new();
    let mut open = true;
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    while open || !running.is_empty() || !queue.is_empty() {
        let wait = if running.is_empty() { 1000 } else { 50 };
        if open && readable(fd, wait) {
            // SAFETY: `buf` is valid for its length.
            let n =
                unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n == 0 {
                open = false;
                if !queue.is_empty() {
                    warn!(
                        dropped = queue.len(),
                        "the daemon has ended: commands still waiting are not run"
                    );
                    queue.clear();
                }
            } else if n > 0 {
                let msg = &buf[..n as usize];
                let job = match proto::decode(msg) {
                    Ok(job) => job,
                    Err(e) => {
                        error!("command runner: refused a malformed request: {e}");
                        continue;
                    }
                };
                let close = match &job {
                    Job::Expire { values, .. } => Some(format!(
                        "{} {}/{}",
                        values.src,
                        values.proto.name(),
                        values.port
                    )),
                    _ => None,
                };
                let (client, what) = (job.client().to_string(), job.what());
                match resolve(catalog, job) {
                    Ok(item) if queue.len() < MAX_QUEUED => queue.push_back(item),
                    Ok(_) => error!(
                        client,
                        command = what,
                        close,
                        "command refused: {MAX_QUEUED} commands are already waiting (raise `max_commands` or shorten `command_timeout`){}",
                        if close.is_some() { "; run this close by hand" } else { "" }
                    ),
                    Err(e) if close.is_some() => error!(
                        client,
                        close,
                        "on_expire not run: {e}; run this close by hand"
                    ),
                    Err(e) => error!(client, command = what, "command refused: {e}"),
                }
            }
        } else if !open {
            std::thread::sleep(Duration::from_millis(50));
        }
        while running.len() < max {
            let Some((job, argv, user, via_sudo)) = queue.pop_front() else {
                break;
            };
            match start(&argv, &user, !via_sudo) {
                Ok((child, out)) => {
                    info!(
                        client = job.client(),
                        command = job.what(),
                        pid = child.id(),
                        user = %user.account.name,
                        argv = ?argv,
                        "command started"
                    );
                    let now = Instant::now();
                    running.push(Running {
                        pid: child.id(),
                        child,
                        out: Some(out),
                        output: Vec::new(),
                        dropped: 0,
                        client: job.client().to_string(),
                        what: job.what(),
                        started: now,
                        deadline: now + Duration::from_secs(u64::from(user.timeout_secs)),
                        term_sent: None,
                    });
                }
                Err(e) => error!(
                    client = job.client(),
                    command = job.what(),
                    argv = ?argv,
                    "command could not start: {e}"
                ),
            }
        }
        running.retain_mut(|r| !service_child(r));
    }
    Ok(())
}

/// Read output, enforce the timeout, reap. True when the command is done.
fn service_child(r: &mut Running) -> bool {
    drain(r);
    let now = Instant::now();
    if now >= r.deadline {
        let pgid = -(r.pid as libc::pid_t);
        match r.term_sent {
            None => {
                warn!(
                    client = %r.client,
                    command = r.what,
                    pid = r.pid,
                    "command timed out after {}s: SIGTERM to its process group",
                    (r.deadline - r.started).as_secs()
                );
                // SAFETY: signalling the command's own process group.
                if unsafe { libc::kill(pgid, libc::SIGTERM) } != 0 {
                    error!(client = %r.client, pid = r.pid, "cannot signal the command: {}", io::Error::last_os_error());
                }
                r.term_sent = Some(now);
            }
            Some(t) if now.duration_since(t) >= Duration::from_secs(KILL_GRACE_SECS) => {
                // SAFETY: as above.
                unsafe { libc::kill(pgid, libc::SIGKILL) };
            }
            Some(_) => {}
        }
    }
    match r.child.try_wait() {
        Ok(Some(status)) => {
            drain(r);
            // One log line per command, whatever it printed: newlines and other control
            // characters are escaped (`\n`, `\t`, `\u{1b}`), so output can never forge a line
            // that log readers (fail2ban) would take for nfknock's own.
            let text = String::from_utf8_lossy(&r.output);
            let text = text.trim_end().escape_debug().to_string();
            let more = if r.dropped > 0 {
                format!(" (+{} bytes not logged)", r.dropped)
            } else {
                String::new()
            };
            let secs = r.started.elapsed().as_secs_f64();
            if status.success() {
                info!(client = %r.client, command = r.what, pid = r.pid, status = %status, secs, output = %format!("{text}{more}"), "command finished");
            } else {
                warn!(client = %r.client, command = r.what, pid = r.pid, status = %status, secs, output = %format!("{text}{more}"), "command failed");
            }
            true
        }
        Ok(None) => false,
        Err(e) => {
            error!(client = %r.client, pid = r.pid, "cannot wait for the command: {e}");
            true
        }
    }
}

/// Read what the command wrote so far, keeping [`MAX_OUTPUT`] bytes.
fn drain(r: &mut Running) {
    let Some(out) = r.out.as_mut() else { return };
    let mut buf = [0u8; 4096];
    loop {
        match out.read(&mut buf) {
            Ok(0) => {
                r.out = None;
                return;
            }
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(r.output.len());
                let take = room.min(n);
                r.output.extend_from_slice(&buf[..take]);
                r.dropped += n - take;
            }
            Err(_) => return,
        }
    }
}

/// The argv a job stands for in the runner's own catalog, its values checked again.
/// A job, its argv, who runs it, and whether it goes through sudo (then without
/// `no_new_privs`, or sudo could not become its target user).
type Resolved = (Job, Vec<String>, CommandUser, bool);

fn resolve(catalog: &[Entry], job: Job) -> Result<Resolved, String> {
    let entry = catalog
        .iter()
        .find(|e| e.name == job.client())
        .ok_or_else(|| format!("client `{}` runs no commands in the config the runner started with (restart nfknock after changing command settings)", job.client()))?;
    let c = &entry.commands;
    let user = c.user.clone().ok_or("the client has no command_user")?;
    let argv = match &job {
        Job::Grant { values, .. } => c
            .cycle
            .on_grant
            .as_ref()
            .ok_or("the client has no on_grant")?
            .expand(values)?,
        Job::Expire { values, .. } => c
            .cycle
            .on_expire
            .as_ref()
            .ok_or("the client has no on_expire")?
            .expand(values)?,
        Job::Exec { argv, .. } => {
            let exec = c
                .exec
                .as_ref()
                .ok_or("the client may not send command messages")?;
            if !exec.permits(argv) {
                return Err(format!(
                    "command {argv:?} is not in client `{}`'s allow-list",
                    entry.name
                ));
            }
            exec.final_argv(argv)
        }
    };
    let via_sudo =
        matches!(job, Job::Exec { .. }) && c.exec.as_ref().is_some_and(|x| x.sudo.is_some());
    Ok((job, argv, user, via_sudo))
}

/// Is `fd` readable within `ms` milliseconds?
fn readable(fd: RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut p, 1, ms) };
    rc > 0 && p.revents != 0
}

/// Start `argv` as `user` (see the module doc); the read end of its output pipe.
fn start(
    argv: &[String],
    user: &CommandUser,
    no_new_privs: bool,
) -> io::Result<(Child, std::fs::File)> {
    let mut fds = [0; 2];
    // SAFETY: a valid array for pipe2(2) to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two new descriptors nothing else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_SETFL on our own descriptor.
    unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    let w2 = w.try_clone()?;
    let (uid, gid, net_admin) = (user.account.uid, user.account.gid, user.net_admin);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .env("PATH", PATH)
        .env("LC_ALL", "C")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::from(w))
        .stderr(Stdio::from(w2))
        .process_group(0);
    // SAFETY: the closure only makes system calls (no allocation, no locks): it runs between
    // fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let check = |rc: libc::c_int| {
                if rc == -1 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setresgid(gid, gid, gid))?;
            if net_admin {
                check(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0))?;
            }
            check(libc::setresuid(uid, uid, uid))?;
            if net_admin {
                let c = bit(CAP_NET_ADMIN);
                check(capset(c, c, c))?;
                check(libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE,
                    CAP_NET_ADMIN as libc::c_ulong,
                    0,
                    0,
                ))?;
            } else {
                // Nothing at all: not even in the inheritable set (a file with inheritable
                // file capabilities could otherwise pick up the runner's).
                check(capset(0, 0, 0))?;
            }
            if no_new_privs {
                check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            }
            // Every descriptor but 0, 1, 2 closes at exec (std's own error pipe already does).
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                4u32, /* CLOSE_RANGE_CLOEXEC */
            );
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(cmd);
    Ok((child, std::fs::File::from(r)))
}
