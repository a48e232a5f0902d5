//! The user database and who nfknock is: what resolving `[server] user` needs.

use std::io;

pub use crate::config::{Account, Accounts};

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
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

    fn local_by_name(&self, name: &str) -> io::Result<Option<Account>> {
        match std::fs::read_to_string(crate::config::LOCAL_USERS) {
            Ok(text) => Ok(passwd_entry(&text, name)),
            // No local database (a minimal container): no local account either.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The account `name` in `passwd(5)` text (`name:password:uid:gid:gecos:dir:shell`), if a
/// well-formed line has it. Comments, blank, short or malformed lines and NIS `+`/`-` entries
/// name no account.
pub fn passwd_entry(text: &str, name: &str) -> Option<Account> {
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != name || name.is_empty() || name.starts_with(['+', '-', '#']) {
            return None;
        }
        let _password = f.next()?;
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some(Account {
            name: name.to_owned(),
            uid,
            gid,
        })
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_lookup_finds_root_and_reports_a_missing_or_impossible_name() {
        let root = user_by_name("root").unwrap().unwrap();
        assert_eq!((root.name.as_str(), root.uid, root.gid), ("root", 0, 0));
        assert_eq!(
            SystemAccounts.by_name("nfknock-no-such-user-here").unwrap(),
            None
        );
        let e = user_by_name("ro\0ot").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(e.to_string(), "a user name has no NUL byte");
        assert_eq!(SystemAccounts.euid(), euid());
    }

    #[test]
    fn passwd_entry_reads_name_uid_gid_and_skips_what_is_no_account() {
        let text = "# comment\n\nroot:x:0:0:root:/root:/bin/bash\n+nfknock::::::\n\
                    nfknock:x:bad:1\nnfk:x:7\nnfknock:x:998:997::/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(
            passwd_entry(text, "nfknock"),
            Some(Account {
                name: "nfknock".into(),
                uid: 998,
                gid: 997
            })
        );
        assert_eq!(passwd_entry(text, "root").map(|a| a.uid), Some(0));
        assert_eq!(passwd_entry(text, "nfk"), None);
        assert_eq!(passwd_entry(text, "+nfknock"), None);
        assert_eq!(passwd_entry(text, ""), None);
        assert_eq!(passwd_entry(text, "nobody-here"), None);
    }

    #[test]
    fn the_local_user_database_has_root() {
        let root = SystemAccounts.local_by_name("root").unwrap().unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
    }
}
