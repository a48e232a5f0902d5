//! One nfknock daemon per network namespace: the instance lock, and who holds it.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;

use anyhow::Context;

/// What a command that found another daemon was about to do (for its message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Serve,
    Uninstall,
}

/// The one nfknock daemon per network namespace: an abstract `AF_UNIX` socket bound to a name
/// derived from the table's, held for the daemon's life (and by `nfknock uninstall` while it
/// works).
///
/// Why this lock: its scope is exactly the scope of table `inet nfknock`, the network namespace
/// (abstract socket names live in the network namespace, unix(7)), so two instances with
/// different queue numbers or state directories still cannot both manage the one table, while
/// daemons in other namespaces (containers, the e2e labs) never see each other. It needs no file
/// system (no stale pid file after a crash or SIGKILL: the kernel frees the name with the last
/// descriptor), works under the unit's sandbox (`RestrictAddressFamilies=` allows AF_UNIX) and
/// is taken before anything in the kernel is touched. The NFQUEUE bind, which the kernel refuses
/// to a second binder of the same number, now also comes before any nftables change, for a
/// foreign program (fwknopd, an IDS) on our queue number. A program that binds this name first
/// keeps a new daemon from starting (never a running one from running); the refusal names the
/// holder's pid and uid so it can be found.
pub struct InstanceLock {
    listener: UnixListener,
}

/// Probes waiting to be dismissed at most (`listen(2)` backlog); the tick accepts and closes
/// them, so a later probe can still read the holder's pid.
const LOCK_BACKLOG: usize = 4;

/// Another nfknock daemon manages table `inet nfknock` in this network namespace: nothing was
/// done. `main` exits with [`crate::cli::EXIT_USAGE`] for it.
#[derive(Debug)]
pub struct AlreadyRunning {
    pub action: Action,
    /// The holder's pid and uid (`SO_PEERCRED`), when it answered.
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    /// The holder's command line, when `/proc` shows it.
    pub cmdline: Option<String>,
}

impl std::fmt::Display for AlreadyRunning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::netfilter::nft::{FAMILY, TABLE};
        let who = match (self.pid, &self.cmdline) {
            (Some(pid), Some(cmd)) => format!("pid {pid}, uid {}: `{cmd}`", self.uid.unwrap_or(0)),
            (Some(pid), None) => format!("pid {pid}, uid {}", self.uid.unwrap_or(0)),
            _ => "pid unknown".to_string(),
        };
        let kill = self
            .pid
            .map_or(String::new(), |p| format!(", or `kill {p}`"));
        match self.action {
            Action::Serve => write!(
                f,
                "another nfknock daemon ({who}) already manages table `{FAMILY} {TABLE}` (or, with backend = \"ipset\", its ipsets) in this network namespace; nothing was changed. Stop it first (`systemctl stop nfknock`{kill}), or give it a new config with `systemctl reload nfknock` (SIGHUP)"
            ),
            Action::Uninstall => write!(
                f,
                "the nfknock daemon ({who}) manages table `{FAMILY} {TABLE}` (or, with backend = \"ipset\", its ipsets) in this network namespace and would re-create them at once; nothing was removed. Stop it first (`systemctl stop nfknock`{kill}), then run `nfknock uninstall` again"
            ),
        }
    }
}

impl std::error::Error for AlreadyRunning {}

impl InstanceLock {
    /// The abstract socket name (without its leading NUL).
    fn name() -> String {
        use crate::netfilter::nft::{FAMILY, TABLE};
        format!("nfknock: table {FAMILY} {TABLE}")
    }

    /// Take the lock, or say who holds it.
    pub fn acquire(action: Action) -> anyhow::Result<InstanceLock> {
        use std::os::linux::net::SocketAddrExt;
        let name = Self::name();
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .context("cannot name the instance lock")?;
        match UnixListener::bind_addr(&addr) {
            Ok(listener) => {
                listener
                    .set_nonblocking(true)
                    .context("cannot configure the instance lock")?;
                // std listens with a backlog of 128; a few are enough (see LOCK_BACKLOG).
                // SAFETY: listen(2) on a socket we own.
                unsafe { libc::listen(listener.as_raw_fd(), LOCK_BACKLOG as libc::c_int) };
                Ok(InstanceLock { listener })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                let cred = holder(name.as_bytes());
                let cmdline = cred.and_then(|c| {
                    let raw = std::fs::read(format!("/proc/{}/cmdline", c.pid)).ok()?;
                    let text: String = String::from_utf8_lossy(&raw)
                        .trim_end_matches('\0')
                        .replace('\0', " ")
                        .chars()
                        .take(200)
                        .collect();
                    (!text.is_empty()).then_some(text)
                });
                Err(AlreadyRunning {
                    action,
                    pid: cred.and_then(|c| u32::try_from(c.pid).ok()),
                    uid: cred.map(|c| c.uid),
                    cmdline,
                }
                .into())
            }
            Err(e) => Err(e).context(
                "cannot bind the instance lock (an abstract AF_UNIX socket); the sandbox must allow AF_UNIX (systemd: RestrictAddressFamilies=AF_NETLINK AF_UNIX)",
            ),
        }
    }

    /// Connect to the lock's holder, for a request (`super::requests`). `NotFound`-like errors
    /// (`ConnectionRefused`) mean no daemon holds it in this network namespace.
    pub(super) fn connect() -> std::io::Result<std::os::unix::net::UnixStream> {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(Self::name().as_bytes())?;
        std::os::unix::net::UnixStream::connect_addr(&addr)
    }

    /// The listening socket, for the thread that answers requests on it; the lock is held as
    /// long as that thread keeps it.
    pub(super) fn into_listener(self) -> UnixListener {
        self.listener
    }

    /// Accept and close the connections of processes that asked who holds the lock (without
    /// blocking), so the backlog never fills and every later one gets its answer.
    pub fn dismiss_probes(&self) {
        for _ in 0..LOCK_BACKLOG * 4 {
            if self.listener.accept().is_err() {
                break;
            }
        }
    }
}

/// The credentials of the process listening on abstract name `name` (`SO_PEERCRED` of a
/// connection to it: the listener's, as of its `listen(2)`). Non-blocking: a holder whose
/// backlog is full, or that is stopped, answers `None`.
fn holder(name: &[u8]) -> Option<libc::ucred> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: plain socket(2); the descriptor is owned by `OwnedFd` right after.
    let raw = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // An abstract name: a NUL, then the name (not NUL-terminated), its length in addrlen.
    let path = addr.sun_path.get_mut(1..=name.len())?;
    for (d, s) in path.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    // SAFETY: `addr` is a valid sockaddr_un and `len` does not exceed its size.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            std::ptr::addr_of!(addr).cast(),
            len as libc::socklen_t,
        )
    };
    if rc != 0 {
        return None;
    }
    peer_cred(fd.as_raw_fd())
}

/// `SO_PEERCRED` of a connected `AF_UNIX` socket: the peer's pid, uid and gid.
pub(super) fn peer_cred(fd: std::os::fd::RawFd) -> Option<libc::ucred> {
    // SAFETY: ucred is plain data; all-zero is a valid value.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut clen = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` has room for `clen` bytes, which the kernel updates.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(cred).cast(),
            &mut clen,
        )
    };
    (rc == 0 && cred.pid > 0).then_some(cred)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One instance per network namespace: a second `acquire` is refused with the holder's pid
    /// and uid, as often as it is tried (the holder dismisses probes), and the lock is free again
    /// once dropped. Runs in a network namespace of its own (root only), so it meets no daemon.
    #[test]
    fn instance_lock_is_one_per_network_namespace_and_names_its_holder() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        std::thread::spawn(|| {
            // SAFETY: unshare(CLONE_NEWNET) moves only this thread to a new network namespace.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            let lock = InstanceLock::acquire(Action::Serve).unwrap();
            for _ in 0..3 * LOCK_BACKLOG {
                let e = InstanceLock::acquire(Action::Serve).err().unwrap();
                let held = e.downcast_ref::<AlreadyRunning>().unwrap();
                assert_eq!(held.pid, Some(std::process::id()), "{e}");
                // SAFETY: getuid has no preconditions.
                assert_eq!(held.uid, Some(unsafe { libc::getuid() }));
                let text = e.to_string();
                assert!(
                    text.contains(&format!("pid {}", std::process::id()))
                        && text.contains("systemctl stop nfknock")
                        && text.contains("nothing was changed"),
                    "{text}"
                );
                assert_eq!(crate::cli::exit_code(&e), crate::cli::EXIT_USAGE);
                lock.dismiss_probes();
            }
            let e = InstanceLock::acquire(Action::Uninstall).err().unwrap();
            assert!(e.to_string().contains("nothing was removed"), "{e}");
            drop(lock);
            InstanceLock::acquire(Action::Uninstall).unwrap();
        })
        .join()
        .unwrap();
    }
}
