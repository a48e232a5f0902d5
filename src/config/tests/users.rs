//! `[server] user`: resolved against `Accounts`; files holding keys must be that user's.

use super::*;

/// A user database of `users`, seen by a process whose effective uid is `euid`.
struct FakeAccounts {
    euid: u32,
    users: Vec<Account>,
}

impl Accounts for FakeAccounts {
    fn euid(&self) -> u32 {
        self.euid
    }
    fn by_name(&self, name: &str) -> std::io::Result<Option<Account>> {
        Ok(self.users.iter().find(|a| a.name == name).cloned())
    }
    fn local_by_name(&self, name: &str) -> std::io::Result<Option<Account>> {
        self.by_name(name)
    }
}

fn account(name: &str, uid: u32) -> Account {
    Account {
        name: name.into(),
        uid,
        gid: uid + 1,
    }
}

/// Root, on a system with `users`.
fn as_root(users: &[Account]) -> FakeAccounts {
    FakeAccounts {
        euid: 0,
        users: users.to_vec(),
    }
}

#[test]
fn user_defaults_to_nfknock_if_it_exists_else_nfknock_stays_who_it_is() {
    let text = native_client("");
    let path = Path::new(PATH);
    let nfknock = account("nfknock", 998);
    let c = check_str_with(&text, path, &as_root(std::slice::from_ref(&nfknock)));
    assert!(c.problems.is_empty(), "{}", ConfigErrors(c.problems));
    assert_eq!(
        c.plan.unwrap().server.user,
        RunAs::User {
            account: nfknock.clone(),
            explicit: false
        }
    );
    let c = check_str_with(&text, path, &as_root(&[]));
    assert_eq!(c.plan.unwrap().server.user, RunAs::Unchanged);

    let text = format!("[server]\nuser = \"svc\"\n{}", native_client(""));
    let svc = account("svc", 4242);
    let c = check_str_with(&text, path, &as_root(&[nfknock, svc.clone()]));
    let user = c.plan.unwrap().server.user;
    assert_eq!(
        user,
        RunAs::User {
            account: svc.clone(),
            explicit: true
        }
    );
    // Root switches to it; a daemon already running as someone else cannot.
    assert_eq!(user.switch_to(0), Some(&svc));
    assert_eq!(user.switch_to(4242), None);
    assert_eq!(user.switch_to(998), None);
    let root = RunAs::User {
        account: account("root", 0),
        explicit: true,
    };
    assert_eq!(root.switch_to(0), None);
}

/// Root, on a system whose `nfknock` account comes from a directory (LDAP, systemd) and not
/// from the local files: the default user is not taken from there; a named user is.
struct DirectoryOnly;

impl Accounts for DirectoryOnly {
    fn euid(&self) -> u32 {
        0
    }
    fn by_name(&self, name: &str) -> std::io::Result<Option<Account>> {
        Ok(Some(account(name, 5000)))
    }
    fn local_by_name(&self, _name: &str) -> std::io::Result<Option<Account>> {
        Ok(None)
    }
}

#[test]
fn the_default_user_is_looked_up_only_in_the_local_files() {
    let path = Path::new(PATH);
    let c = check_str_with(&native_client(""), path, &DirectoryOnly);
    assert!(c.problems.is_empty(), "{}", ConfigErrors(c.problems));
    assert_eq!(c.plan.unwrap().server.user, RunAs::Unchanged);
    let text = format!("[server]\nuser = \"nfknock\"\n{}", native_client(""));
    let c = check_str_with(&text, path, &DirectoryOnly);
    assert_eq!(
        c.plan.unwrap().server.user,
        RunAs::User {
            account: account("nfknock", 5000),
            explicit: true
        }
    );
}

#[test]
fn an_unknown_or_malformed_user_is_an_error_at_its_line_with_the_fix() {
    let path = Path::new(PATH);
    let text = format!(
        "[server]\nport = 62201\nuser = \"nfknock-typo\"\n{}",
        native_client("")
    );
    let c = check_str_with(&text, path, &as_root(&[account("nfknock", 998)]));
    let p = at(&c.problems, "server.user");
    assert_eq!(p.line, Some(3));
    assert!(
        p.message.contains("there is no user `nfknock-typo`")
            && p.message.contains("`useradd --system --user-group --no-create-home --shell /usr/sbin/nologin nfknock-typo`"),
        "{}",
        p.message
    );
    for (bad, says) in [
        ("998", "not a uid"),
        ("", "1 to 32"),
        ("-x", "1 to 32"),
        ("a b", "1 to 32"),
    ] {
        let text = format!("[server]\nuser = \"{bad}\"\n{}", native_client(""));
        let c = check_str_with(&text, path, &as_root(&[]));
        let p = at(&c.problems, "server.user");
        assert!(p.message.contains(says), "{bad:?}: {}", p.message);
    }
    let ps = problems(&format!("[server]\nuser = 0\n{}", native_client("")));
    assert!(at(&ps, "server.user")
        .message
        .contains("a quoted user name"));
}

/// Started as root with `user = "svc"`, key files and a config holding keys must be `svc`'s:
/// after the switch a reload reads them as `svc`.
#[test]
fn files_holding_keys_must_belong_to_the_user_the_daemon_switches_to() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("nfknock.toml");
    let key = dir.path().join("alice.key");
    write_private(&key, &native_key(), 0o600);
    let svc = account("svc", 4242);
    // This test's files belong to whoever runs it; `svc` is never that user.
    let text = "[server]\nuser = \"svc\"\n[[client]]\nname = \"alice\"\nkey_file = \"alice.key\"\nallow = [\"tcp/22\"]\n";
    let c = check_str_with(text, &cfg, &as_root(std::slice::from_ref(&svc)));
    let p = at(&c.problems, "client[1].key_file");
    let want = format!("`chown svc: {}`", key.display());
    assert!(p.message.contains(&want), "{}", p.message);

    write_private(
        &cfg,
        &format!("[server]\nuser = \"svc\"\n{}", native_client("")),
        0o600,
    );
    let err = load_with(&cfg, &as_root(&[svc])).unwrap_err();
    let want = format!("`chown svc: {}`", cfg.display());
    assert!(err.0[0].message.contains(&want), "{err}");

    // Without a switch (the user it runs as already), its own files do.
    let me = account("me", crate::sys::euid());
    let text = text.replace("\"svc\"", "\"me\"");
    let accounts = FakeAccounts {
        euid: me.uid,
        users: vec![me],
    };
    let c = check_str_with(&text, &cfg, &accounts);
    assert!(c.problems.is_empty(), "{}", ConfigErrors(c.problems));
}

/// A user database that cannot be read: an nsswitch.conf naming a dead LDAP server, and an
/// /etc/passwd the daemon may not read.
struct BrokenAccounts;

impl Accounts for BrokenAccounts {
    fn euid(&self) -> u32 {
        0
    }
    fn by_name(&self, _name: &str) -> std::io::Result<Option<Account>> {
        Err(std::io::Error::other("the LDAP server does not answer"))
    }
    fn local_by_name(&self, _name: &str) -> std::io::Result<Option<Account>> {
        Err(std::io::Error::other("Permission denied (os error 13)"))
    }
}

#[test]
fn a_user_database_that_fails_is_named_with_the_user_and_the_fix() {
    let body = native_client("");
    let c = check_str_with(&body, Path::new(PATH), &BrokenAccounts);
    let p = at(&c.problems, "server.user");
    assert_eq!(
        p.message,
        "cannot look up the default user `nfknock` in /etc/passwd: Permission denied (os error 13); fix that file, or set `user` to the user nfknock should run as"
    );
    let text = format!("[server]\nuser = \"svc\"\n{body}");
    let c = check_str_with(&text, Path::new(PATH), &BrokenAccounts);
    let p = at(&c.problems, "server.user");
    assert_eq!(
        p.message,
        "cannot look up user `svc`: the LDAP server does not answer; fix the user database (nsswitch.conf)"
    );
    assert_eq!(p.line, Some(2));
}
