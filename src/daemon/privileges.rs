//! Privileges: leave root for the service user (`[server] user`), then keep only CAP_NET_ADMIN
//! and keep keys out of core dumps and ptrace. Both are called from [`serve`](super::serve).

use std::path::Path;

use anyhow::{bail, Context};
use tracing::{info, warn};

use crate::config::{self, Config};

/// What `[server] user` means for a daemon running as `euid`.
#[derive(Debug, PartialEq, Eq)]
enum UserPlan<'a> {
    /// Switch to this account.
    Switch(&'a config::Account),
    /// Stay who we are; log the warning first, if any.
    Stay(Option<String>),
}

/// Decide [`UserPlan`] (pure, for tests). A daemon running as another user than root cannot
/// switch: fine when that is the default user or unset, an error when the config names a
/// different one.
fn user_plan(user: &config::RunAs, euid: u32) -> Result<UserPlan<'_>, String> {
    use config::RunAs;
    if let Some(account) = user.switch_to(euid) {
        return Ok(UserPlan::Switch(account));
    }
    match user {
        RunAs::Unchanged if euid == 0 => Ok(UserPlan::Stay(Some(format!(
            "running as root: `[server] user` is not set and {passwd} has no user `{user}`, so nfknock keeps uid 0 (with only CAP_NET_ADMIN), and root owns most files here; create the user with `{useradd} {user}` (scripts/install does), or set `user` to an unprivileged user",
            user = config::DEFAULT_USER,
            passwd = config::LOCAL_USERS,
            useradd = config::USERADD
        )))),
        RunAs::User { account, .. } if euid == 0 => Ok(UserPlan::Stay(Some(format!(
            "running as root: `[server] user = \"{name}\"` keeps uid 0 (with only CAP_NET_ADMIN), and root owns most files here; create an unprivileged user (`{useradd} {user}`) and set `user` to it",
            name = account.name,
            useradd = config::USERADD,
            user = config::DEFAULT_USER
        )))),
        RunAs::User {
            account,
            explicit: true,
        } if account.uid != euid => Err(format!(
            "nfknock runs as uid {euid}, not as `{name}` (uid {}) as `[server] user` says, and only root can switch users; start it as root, or as `{name}` (systemd: `User={name}`), or set `user` to the user it runs as",
            account.uid,
            name = account.name
        )),
        _ => Ok(UserPlan::Stay(None)),
    }
}

/// Leave root for the configured user (see [`user_plan`]): hand it a missing `state_dir`,
/// switch for good keeping only CAP_NET_ADMIN, then make sure it can read the config again,
/// as a reload (SIGHUP) will.
pub(super) fn leave_root(config: &Config, config_path: &Path) -> anyhow::Result<()> {
    let account =
        match user_plan(&config.server.user, crate::sys::euid()).map_err(anyhow::Error::msg)? {
            UserPlan::Stay(None) => return Ok(()),
            UserPlan::Stay(Some(warning)) => {
                warn!("{warning}");
                return Ok(());
            }
            UserPlan::Switch(account) => account,
        };
    let name = &account.name;
    let dir = &config.server.state_dir;
    let created = crate::state::prepare_dir(dir, account)
        .with_context(|| format!("`state_dir` is not ready for user `{name}` (`[server] user`)"))?;
    if created {
        info!(dir = %dir.display(), "state_dir did not exist: created it (mode 0700) for user {name}");
    }
    crate::sys::switch_user(account).with_context(|| {
        format!("cannot become user `{name}` (`[server] user`); if a container or service manager limits this process's capabilities or system calls, let it set the user instead (systemd: `User={name}`)")
    })?;
    if let Err(e) = crate::sys::open_regular(config_path, crate::sys::Links::Follow) {
        bail!(
            "switched to user `{name}`, which cannot read the config file {}: {e}; a reload (SIGHUP) would fail: let it read the file and every directory above it (e.g. `chown {name}: {}`)",
            config_path.display(),
            config::shell_quote(config_path)
        );
    }
    info!(
        uid = account.uid,
        gid = account.gid,
        "switched to user {name}, keeping only CAP_NET_ADMIN"
    );
    Ok(())
}

/// Keep only CAP_NET_ADMIN (effective, permitted, bounding; nothing inheritable or ambient),
/// forbid privilege gain through exec, and keep keys out of core dumps and ptrace.
pub fn drop_privileges() -> anyhow::Result<()> {
    use caps::{CapSet, Capability};
    // SAFETY: prctl with these constant arguments has no memory effects.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let keep: caps::CapsHashSet = [Capability::CAP_NET_ADMIN].into_iter().collect();
    let permitted = caps::read(None, CapSet::Permitted).context("cannot read capabilities")?;
    if !permitted.contains(&Capability::CAP_NET_ADMIN) {
        bail!("nfknock serve needs CAP_NET_ADMIN: run it as root or with AmbientCapabilities=CAP_NET_ADMIN");
    }
    if permitted.contains(&Capability::CAP_SETPCAP) {
        for cap in caps::all() {
            if cap != Capability::CAP_NET_ADMIN {
                caps::drop(None, CapSet::Bounding, cap)
                    .with_context(|| format!("cannot drop {cap} from the bounding set"))?;
            }
        }
    }
    // prctl(PR_CAP_AMBIENT_CLEAR_ALL): allowed without privilege and by any syscall filter.
    caps::clear(None, CapSet::Ambient).context("cannot clear ambient capabilities")?;
    // The rest is capset(2), which a unit's `SystemCallFilter=~@privileged` denies: change only
    // what differs. Under systemd with AmbientCapabilities=, effective and permitted are already
    // {CAP_NET_ADMIN}; the inheritable set holds it too (raising an ambient capability requires
    // it, capabilities(7)). Without ambient capabilities and with no_new_privs, an inheritable
    // capability passes to no program we could exec, so failing to clear it is worth a warning,
    // not a refusal to start.
    if !caps::read(None, CapSet::Inheritable)
        .context("cannot read capabilities")?
        .is_empty()
    {
        if let Err(e) = caps::clear(None, CapSet::Inheritable) {
            warn!("cannot clear the inheritable capability set ({e}); allow capset(2) in the unit's SystemCallFilter= to clear it");
        }
    }
    for set in [CapSet::Effective, CapSet::Permitted] {
        if caps::read(None, set).context("cannot read capabilities")? != keep {
            caps::set(None, set, &keep).with_context(|| {
                format!("cannot set the {set:?} capabilities to CAP_NET_ADMIN only")
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_switches_to_the_configured_user_and_nobody_else_can() {
        use config::{Account, RunAs};
        let svc = Account {
            name: "svc".into(),
            uid: 4242,
            gid: 4243,
        };
        let named = |account: &Account, explicit| RunAs::User {
            account: account.clone(),
            explicit,
        };
        for explicit in [true, false] {
            assert_eq!(
                user_plan(&named(&svc, explicit), 0),
                Ok(UserPlan::Switch(&svc))
            );
            // Already that user (systemd's User=): nothing to do, nothing to say.
            assert_eq!(
                user_plan(&named(&svc, explicit), 4242),
                Ok(UserPlan::Stay(None))
            );
        }
        // Root staying root says why, and how to stop it.
        let Ok(UserPlan::Stay(Some(w))) = user_plan(&RunAs::Unchanged, 0) else {
            panic!("no warning for root without a user");
        };
        assert!(
            w.contains("no user `nfknock`")
                && w.contains("`useradd --system --user-group --no-create-home --shell /usr/sbin/nologin nfknock`"),
            "{w}"
        );
        let root = Account {
            name: "root".into(),
            uid: 0,
            gid: 0,
        };
        let Ok(UserPlan::Stay(Some(w))) = user_plan(&named(&root, true), 0) else {
            panic!("no warning for user = root");
        };
        assert!(w.contains("`[server] user = \"root\"` keeps uid 0"), "{w}");
        // Started as someone else: the default is no promise, a named user is.
        assert_eq!(user_plan(&RunAs::Unchanged, 1000), Ok(UserPlan::Stay(None)));
        assert_eq!(
            user_plan(&named(&svc, false), 1000),
            Ok(UserPlan::Stay(None))
        );
        let e = user_plan(&named(&svc, true), 1000).unwrap_err();
        assert!(
            e.contains("runs as uid 1000") && e.contains("only root can switch users"),
            "{e}"
        );
    }

    fn nobody() -> config::Account {
        crate::sys::user_by_name("nobody")
            .unwrap()
            .expect("this test needs the user `nobody`")
    }

    /// `[server] user = "nobody"` with a config in a directory only root can enter: the daemon creates the
    /// state directory for nobody, switches, and refuses to run on, naming the file and the fix
    /// (a reload would fail); a root without CAP_SETGID is told to let its manager set the user.
    #[test]
    fn root_leaving_for_a_user_who_cannot_read_the_config_is_refused_with_the_fix() {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(crate::sys::euid(), 0, "this test runs as root");
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let path = dir.path().join("nfknock.toml");
        std::fs::write(
            &path,
            format!(
                "[server]\nuser = \"nobody\"\nstate_dir = \"{}\"\n\n[[client]]\nname = \"alice\"\nkey = \"{}\"\nallow = [\"tcp/22\"]\n",
                dir.path().join("state").display(),
                crate::crypto::generate_secret_base64(&mut crate::sys::OsRng).as_str()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let nobody = nobody();
        // nobody owns the file, but cannot reach it: the temporary directory is root's, 0700
        // (as for a config kept under /root).
        std::os::unix::fs::chown(&path, Some(nobody.uid), Some(nobody.gid)).unwrap();
        let config = super::super::load_config(&path).unwrap();
        assert_eq!(config.server.user.switch_to(0), Some(&nobody));
        let (state, shown) = (dir.path().join("state"), path.clone());
        crate::sys::in_forked_child(move || {
            use caps::{CapSet, Capability};
            caps::drop(None, CapSet::Effective, Capability::CAP_SETGID).unwrap();
            let e = format!("{:#}", leave_root(&config, &path).unwrap_err());
            if !e.starts_with("cannot become user `nobody` (`[server] user`); if a container or service manager limits this process's capabilities or system calls, let it set the user instead (systemd: `User=nobody`): cannot drop supplementary groups") {
                return Err(e);
            }
            caps::raise(None, CapSet::Effective, Capability::CAP_SETGID).unwrap();
            let e = format!("{:#}", leave_root(&config, &path).unwrap_err());
            let want = format!(
                "switched to user `nobody`, which cannot read the config file {}: Permission denied (os error 13); a reload (SIGHUP) would fail: let it read the file and every directory above it (e.g. `chown nobody: {}`)",
                shown.display(),
                shown.display()
            );
            if e != want {
                return Err(e);
            }
            Ok(())
        })
        .unwrap();
        let meta = std::fs::metadata(&state).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o777), (nobody.uid, 0o700));
    }

    /// A daemon started with root's capabilities keeps CAP_NET_ADMIN only, inheritable ones
    /// included; one without CAP_NET_ADMIN is told how to start it.
    #[test]
    fn drop_privileges_keeps_net_admin_only_and_refuses_to_run_without_it() {
        use caps::{CapSet, Capability};
        assert_eq!(crate::sys::euid(), 0, "this test runs as root");
        crate::sys::in_forked_child(|| {
            let only: caps::CapsHashSet = [Capability::CAP_NET_ADMIN].into_iter().collect();
            caps::set(None, CapSet::Inheritable, &only).unwrap();
            drop_privileges().map_err(|e| format!("{e:#}"))?;
            for set in [CapSet::Effective, CapSet::Permitted, CapSet::Bounding] {
                let have = caps::read(None, set).unwrap();
                if have != only {
                    return Err(format!("{set:?}: {have:?}"));
                }
            }
            if !caps::read(None, CapSet::Inheritable).unwrap().is_empty() {
                return Err("inheritable set not cleared".into());
            }
            // Twice is harmless (a reload never calls it, but nothing differs any more).
            drop_privileges().map_err(|e| format!("{e:#}"))?;
            caps::clear(None, CapSet::Effective).unwrap();
            caps::clear(None, CapSet::Permitted).unwrap();
            let e = format!("{:#}", drop_privileges().unwrap_err());
            if e != "nfknock serve needs CAP_NET_ADMIN: run it as root or with AmbientCapabilities=CAP_NET_ADMIN" {
                return Err(e);
            }
            Ok(())
        })
        .unwrap();
    }
}
