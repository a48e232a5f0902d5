//! The operating system's side of the core's inputs, for the shells: the CSPRNG, files read
//! with their checks made on the open descriptor, the user database, leaving root for the
//! service user, and the importer's file loading ([`FsLoader`]). (The clock is read in
//! `daemon::unix_now`.) The pure core only sees the [`Rng`] trait.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::crypto::Rng;
use crate::fwknop_import::Loader;

/// The operating system's CSPRNG (`getrandom(2)`).
pub struct OsRng;

impl Rng for OsRng {
    fn fill(&mut self, buf: &mut [u8]) {
        // getrandom(2) only fails before the kernel pool is initialised at early boot or with
        // invalid arguments; neither can be worked around safely, so a failure is fatal.
        getrandom::fill(buf).expect("getrandom(2) failed: the kernel has no entropy source");
    }
}

/// What to do when the last component of a path is a symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Open what it points to (a config file may be a link into a configuration tree).
    Follow,
    /// Refuse it (`O_NOFOLLOW`): a key file is opened as exactly the file that was named.
    Refuse,
}

/// The error inside an [`io::Error`] from [`open_regular`] when [`Links::Refuse`] met a
/// symbolic link; callers add what to do about it ([`is_link_refused`]).
#[derive(Debug)]
struct LinkRefused;

impl std::fmt::Display for LinkRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("it is a symbolic link, which nfknock does not follow")
    }
}

impl std::error::Error for LinkRefused {}

/// Was `e` [`open_regular`] refusing a symbolic link?
pub fn is_link_refused(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<LinkRefused>())
}

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A regular file open for reading, with the metadata of the open descriptor (`fstat(2)`): what
/// is checked (owner, mode, size) is the file that is read, even if the path changes meanwhile.
#[derive(Debug)]
pub struct RegularFile {
    file: File,
    meta: Metadata,
}

/// Open `path` for reading if it is a regular file.
///
/// `O_NONBLOCK` makes opening a FIFO return at once instead of waiting for a writer (it is
/// then refused as not a regular file); on a regular file the flag changes nothing. With
/// [`Links::Refuse`] a symbolic link is refused (`O_NOFOLLOW`). The descriptor is `O_CLOEXEC`
/// (Rust's default) and `O_NOCTTY`.
pub fn open_regular(path: &Path, links: Links) -> io::Result<RegularFile> {
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if links == Links::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| {
            if links == Links::Refuse && e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(io::ErrorKind::InvalidInput, LinkRefused)
            } else {
                e
            }
        })?;
    let meta = file.metadata()?;
    let ty = meta.file_type();
    if !ty.is_file() {
        let kind = if ty.is_dir() {
            "a directory"
        } else if ty.is_fifo() {
            "a FIFO"
        } else if ty.is_socket() {
            "a socket"
        } else if ty.is_char_device() || ty.is_block_device() {
            "a device"
        } else {
            "not a file"
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is not a regular file but {kind}"),
        ));
    }
    Ok(RegularFile { file, meta })
}

impl RegularFile {
    /// The open descriptor's metadata (`fstat(2)` at open).
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// The open file and its metadata, for a caller that reads it its own way.
    pub fn into_parts(self) -> (File, Metadata) {
        (self.file, self.meta)
    }

    /// Read the whole file into one zeroizing buffer allocated once, sized from `fstat` (+1
    /// byte to notice a file that grows while it is read): no reallocation ever leaves a copy
    /// of a secret in freed memory. A file longer than `limit` is refused before it is read.
    pub fn read_all(&mut self, limit: u64) -> io::Result<Zeroizing<Vec<u8>>> {
        let len = self.meta.len();
        if len > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("it is longer than {limit} bytes; is this the right file?"),
            ));
        }
        // `len <= limit`, and every limit used fits in memory many times over.
        let len = len as usize;
        let mut buf = Zeroizing::new(vec![0u8; len + 1]);
        let mut n = 0;
        while n < buf.len() {
            match self.file.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n > len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "it grew while it was being read; try again once nothing is writing to it",
            ));
        }
        // Shrinks the length only: the capacity (wiped on drop) stays where it is.
        buf.truncate(n);
        Ok(buf)
    }
}

/// A user account from the user database (`getpwnam_r(3)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    /// The primary group.
    pub gid: u32,
}

/// Who nfknock is and which users exist: what resolving `[server] user` needs. The config
/// check takes it as an argument, so tests pass a fake user database.
pub trait Accounts {
    /// The effective user id.
    fn euid(&self) -> u32;
    /// The account named `name`, or `None` if there is none.
    fn by_name(&self, name: &str) -> io::Result<Option<Account>>;
}

/// The system's user database (`/etc/passwd`, or whatever `nsswitch.conf` names).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemAccounts;

impl Accounts for SystemAccounts {
    fn euid(&self) -> u32 {
        euid()
    }

    fn by_name(&self, name: &str) -> io::Result<Option<Account>> {
        user_by_name(name)
    }
}

/// Look `name` up with `getpwnam_r(3)` (thread-safe; the buffer grows on `ERANGE`).
pub fn user_by_name(name: &str) -> io::Result<Option<Account>> {
    let cname = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a user name has no NUL byte"))?;
    // SAFETY: sysconf has no memory effects.
    let hint = unsafe { libc::sysconf(libc::_SC_GETPW_R_SIZE_MAX) };
    let mut size = usize::try_from(hint)
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or(1024);
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: an all-zero passwd (null pointers, zero ids) is a valid value to overwrite.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `cname` is NUL-terminated, `buf` is
        // `buf.len()` bytes, `pwd` and `found` are local. The strings `pwd` points to live in
        // `buf`, which outlives their use below.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        match rc {
            0 if found.is_null() => return Ok(None),
            0 => {
                // SAFETY: on success pw_name points to a NUL-terminated string inside `buf`.
                let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) }
                    .to_string_lossy()
                    .into_owned();
                return Ok(Some(Account {
                    name,
                    uid: pwd.pw_uid,
                    gid: pwd.pw_gid,
                }));
            }
            libc::ERANGE if size < 1 << 20 => size *= 2,
            // getpwnam_r(3): "ENOENT, ESRCH, EBADF, EPERM ... The given name was not found"
            // on some systems (glibc returns 0 with no result).
            libc::ENOENT | libc::ESRCH => return Ok(None),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// Why switching to the service user failed; the daemon adds what to do.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("cannot {op} while switching to user `{user}`: {source}")]
    Os {
        op: &'static str,
        user: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot {op} while switching to user `{user}`: {source}")]
    Caps {
        op: &'static str,
        user: String,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("after switching to user `{user}`, {what}; refusing to run")]
    Check { user: String, what: String },
}

/// `Err(last OS error)` when a libc call returned -1.
fn os(rc: libc::c_int) -> io::Result<()> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Leave root for good and become `account`: no supplementary groups, its primary group and
/// uid as the real, effective and saved ids, and of all capabilities only CAP_NET_ADMIN, in the
/// permitted and effective sets and the bounding set (the netlink writes need it: grants,
/// re-creating a flushed table, a reload's new ruleset). What systemd does for the unit's
/// `User=` with `AmbientCapabilities=CAP_NET_ADMIN` and `CapabilityBoundingSet=CAP_NET_ADMIN`.
///
/// Must run as root, before any other thread exists (capability sets are per thread).
/// Verified afterwards: ids, groups, capabilities, and that uid 0 cannot be had back.
pub fn switch_user(account: &Account) -> Result<(), SwitchError> {
    use caps::{CapSet, Capability};
    let user = || account.name.clone();
    let os_err = |op| {
        move |source| SwitchError::Os {
            op,
            user: user(),
            source,
        }
    };
    let caps_err = |op| {
        move |source| SwitchError::Caps {
            op,
            user: user(),
            source,
        }
    };
    let keep: caps::CapsHashSet = [Capability::CAP_NET_ADMIN].into_iter().collect();

    // Leaving uid 0 clears the permitted set unless PR_SET_KEEPCAPS is set (capabilities(7),
    // "Effect of user ID changes on capabilities"); the effective set is cleared regardless.
    // SAFETY: prctl with constant integer arguments has no memory effects.
    os(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) })
        .map_err(os_err("keep capabilities (PR_SET_KEEPCAPS)"))?;
    // The bounding set can only shrink, and only with CAP_SETPCAP, which root still has here.
    for cap in caps::all() {
        if cap != Capability::CAP_NET_ADMIN {
            caps::drop(None, CapSet::Bounding, cap).map_err(caps_err("shrink the bounding set"))?;
        }
    }
    // SAFETY: a zero-length list needs no pointer.
    os(unsafe { libc::setgroups(0, std::ptr::null()) })
        .map_err(os_err("drop supplementary groups (setgroups)"))?;
    let (uid, gid) = (account.uid, account.gid);
    // SAFETY: plain integer arguments. glibc applies both to every thread of the process.
    os(unsafe { libc::setresgid(gid, gid, gid) })
        .map_err(os_err("set the group ids (setresgid)"))?;
    // SAFETY: as above.
    os(unsafe { libc::setresuid(uid, uid, uid) })
        .map_err(os_err("set the user ids (setresuid)"))?;
    // SAFETY: as above.
    os(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) })
        .map_err(os_err("reset PR_SET_KEEPCAPS"))?;
    // Effective first: it must stay a subset of the permitted set at every step.
    caps::set(None, CapSet::Effective, &keep)
        .map_err(caps_err("set the effective capabilities"))?;
    caps::set(None, CapSet::Permitted, &keep)
        .map_err(caps_err("set the permitted capabilities"))?;
    caps::clear(None, CapSet::Inheritable)
        .map_err(caps_err("clear the inheritable capabilities"))?;
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clear the ambient capabilities"))?;

    let check = |what: String| SwitchError::Check { user: user(), what };
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: three valid out-pointers to locals.
    os(unsafe { libc::getresuid(&mut r, &mut e, &mut s) }).map_err(os_err("read the user ids"))?;
    if (r, e, s) != (uid, uid, uid) {
        return Err(check(format!("the user ids are {r}/{e}/{s}, not {uid}")));
    }
    // SAFETY: as above.
    os(unsafe { libc::getresgid(&mut r, &mut e, &mut s) }).map_err(os_err("read the group ids"))?;
    if (r, e, s) != (gid, gid, gid) {
        return Err(check(format!("the group ids are {r}/{e}/{s}, not {gid}")));
    }
    // SAFETY: a zero-length query needs no buffer; it returns the number of groups.
    let groups = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if groups != 0 {
        return Err(check(format!("{groups} supplementary groups remain")));
    }
    // SAFETY: plain integer argument. If this succeeds, the process is root again.
    if unsafe { libc::setuid(0) } == 0 {
        return Err(check("uid 0 could be had back".to_string()));
    }
    for set in [CapSet::Effective, CapSet::Permitted, CapSet::Bounding] {
        let have = caps::read(None, set).map_err(caps_err("read the capabilities"))?;
        if have != keep {
            return Err(check(format!(
                "the {set:?} capability set is {have:?}, not CAP_NET_ADMIN only"
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// File loading for `nfknock import-fwknop`: the pure importer reads through this.

/// The real file system behind the importer's [`Loader`]: whole files as UTF-8 text, the
/// `*.conf` files of a directory, canonical names for include-loop detection.
pub struct FsLoader;

impl Loader for FsLoader {
    fn read(&self, path: &Path) -> Result<Zeroizing<String>, String> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| e.to_string())?);
        match std::str::from_utf8(&bytes) {
            Ok(text) => Ok(Zeroizing::new(text.to_string())),
            Err(_) => Err("the file is not UTF-8 text".to_string()),
        }
    }

    fn conf_files(&self, dir: &Path) -> Result<Vec<PathBuf>, String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.extension().is_some_and(|e| e == "conf") && path.is_file() {
                out.push(path);
            }
        }
        out.sort();
        Ok(out)
    }

    fn canonical(&self, path: &Path) -> PathBuf {
        std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
    }
}

#[cfg(test)]
mod fs_loader_tests {
    use super::*;

    #[test]
    fn lists_only_conf_files_sorted_and_reads_utf8_text_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in ["b.conf", "a.conf", "c.txt", "conf"] {
            std::fs::write(d.join(name), "SOURCE ANY\n").unwrap();
        }
        std::fs::create_dir(d.join("sub.conf")).unwrap();
        std::fs::write(d.join("latin1.conf"), b"KEY caf\xe9\n").unwrap();
        assert_eq!(
            FsLoader.conf_files(d).unwrap(),
            [d.join("a.conf"), d.join("b.conf"), d.join("latin1.conf")]
        );
        assert_eq!(
            FsLoader.read(&d.join("a.conf")).unwrap().as_str(),
            "SOURCE ANY\n"
        );
        assert_eq!(
            FsLoader.read(&d.join("latin1.conf")).unwrap_err(),
            "the file is not UTF-8 text"
        );
        let missing = FsLoader.read(&d.join("missing.conf")).unwrap_err();
        assert!(missing.contains("No such file"), "{missing}");
        let not_dir = FsLoader.conf_files(&d.join("a.conf")).unwrap_err();
        assert!(not_dir.contains("Not a directory"), "{not_dir}");
    }

    #[test]
    fn canonical_names_are_equal_for_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.conf"), "").unwrap();
        std::os::unix::fs::symlink(d.join("a.conf"), d.join("link.conf")).unwrap();
        let real = FsLoader.canonical(&d.join("a.conf"));
        assert_eq!(FsLoader.canonical(&d.join("link.conf")), real);
        assert_eq!(FsLoader.canonical(&d.join(".").join("a.conf")), real);
        // A path that does not exist keeps its name (the read reports the error).
        assert_eq!(
            FsLoader.canonical(&d.join("gone.conf")),
            d.join("gone.conf")
        );
    }
}

#[cfg(test)]
mod fs_loader_refuses_tests {
    use super::*;

    /// Run `f` on a thread; fail (instead of hanging the test run) if it takes over 5 s.
    fn within_5s<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("{what} hung"))
    }

    /// `nfknock import-fwknop --access-conf /dev/zero` (or a FIFO) must not hang or eat memory.
    #[test]
    fn import_loader_refuses_a_fifo_and_dev_zero_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("access.conf");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = within_5s("reading a FIFO", move || FsLoader.read(&fifo).map(|_| ())).unwrap_err();
        assert!(e.contains("not a regular file") && e.contains("FIFO"), "{e}");
        let e = within_5s("reading /dev/zero", || {
            FsLoader.read(Path::new("/dev/zero")).map(|_| ())
        })
        .unwrap_err();
        assert!(e.contains("not a regular file") && e.contains("device"), "{e}");
        // ... and a directory listing skips a FIFO named *.conf.
        assert!(FsLoader.conf_files(dir.path()).unwrap().is_empty());
    }
}
