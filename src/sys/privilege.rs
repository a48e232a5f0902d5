//! Leaving root for the service user, keeping only CAP_NET_ADMIN.

use std::io;

use super::Account;

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

#[cfg(test)]
mod tests {
    use super::*;
    use caps::{CapSet, Capability};

    fn nobody() -> Account {
        crate::sys::user_by_name("nobody")
            .unwrap()
            .expect("this test needs the user `nobody`")
    }

    /// Root becomes the service user for good, with CAP_NET_ADMIN only; a root that already
    /// lacks a needed capability (a container, a unit's CapabilityBoundingSet=) is told which
    /// step failed for which user.
    /// Root becomes the service user for good, with CAP_NET_ADMIN only; a root that already
    /// lacks a needed capability (a container, a unit's CapabilityBoundingSet=) is told which
    /// step failed for which user.
    #[test]
    fn root_becomes_the_user_with_net_admin_only_and_a_failing_step_is_named() {
        assert_eq!(crate::sys::euid(), 0, "this test runs as root");
        let nobody = nobody();
        let check = |ok: bool, what: String| if ok { Ok(()) } else { Err(what) };
        crate::sys::in_forked_child(|| {
            // Without CAP_SETGID the group step fails (the bounding set has shrunk already).
            caps::drop(None, CapSet::Effective, Capability::CAP_SETGID).unwrap();
            let e = switch_user(&nobody).unwrap_err();
            check(matches!(e, SwitchError::Os { .. }), format!("{e:?}"))?;
            check(
                e.to_string()
                    == "cannot drop supplementary groups (setgroups) while switching to user `nobody`: Operation not permitted (os error 1)",
                e.to_string(),
            )?;
            caps::raise(None, CapSet::Effective, Capability::CAP_SETGID).unwrap();
            switch_user(&nobody).map_err(|e| e.to_string())?;
            check(crate::sys::euid() == nobody.uid, "euid".into())?;
            let only: caps::CapsHashSet = [Capability::CAP_NET_ADMIN].into_iter().collect();
            for set in [CapSet::Effective, CapSet::Permitted, CapSet::Bounding] {
                let have = caps::read(None, set).unwrap();
                check(have == only, format!("{set:?}: {have:?}"))?;
            }
            // Now without CAP_SETPCAP: the bounding set cannot shrink, and the error says so.
            let e = switch_user(&nobody).unwrap_err();
            check(matches!(e, SwitchError::Caps { .. }), format!("{e:?}"))?;
            check(
                e.to_string().starts_with(
                    "cannot shrink the bounding set while switching to user `nobody`: ",
                ),
                e.to_string(),
            )
        })
        .unwrap();
    }
}
