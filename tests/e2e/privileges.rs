//! Least privilege: the daemon keeps only CAP_NET_ADMIN and holds no internet socket, runs as
//! an unprivileged user (under systemd's ambient capability, or switched to by itself), refuses
//! key files it does not own; the shipped unit scores ≤ 1.2, its syscall filter admits every
//! syscall the daemon makes, and `scripts/install` puts the binary where the unit runs it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::*;

const CAP_NET_ADMIN_ONLY: u64 = 1 << 12;

fn caps(status: &HashMap<String, String>, set: &str) -> u64 {
    u64::from_str_radix(&status[set], 16).unwrap()
}

/// The capability sets and NoNewPrivs of a running daemon, and the proof it holds no socket
/// of an internet family: none of its socket inodes appears in its namespace's tcp/udp/raw
/// tables, while its netlink sockets do appear in the netlink table.
fn assert_least_privilege(pid: u32) {
    assert_least_privilege_with(pid, 3);
}

/// [`assert_least_privilege`] for a daemon with at least `netlink` netlink sockets (the ipset
/// backend has 2: the queue and ipset; nftables 3: the queue, commands and events).
pub(crate) fn assert_least_privilege_with(pid: u32, netlink_sockets: usize) {
    let st = proc_status(pid);
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            caps(&st, set),
            CAP_NET_ADMIN_ONLY,
            "{set} = {} (want only CAP_NET_ADMIN)",
            st[set]
        );
    }
    for set in ["CapInh", "CapAmb"] {
        assert_eq!(caps(&st, set), 0, "{set} = {}", st[set]);
    }
    assert_eq!(st["NoNewPrivs"], "1");

    let mut inodes = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let target = std::fs::read_link(e.unwrap().path()).unwrap();
        if let Some(i) = target
            .to_string_lossy()
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
        {
            inodes.push(i.to_string());
        }
    }
    assert!(
        inodes.len() >= netlink_sockets,
        "expected the queue and the grant backend's netlink sockets, found {inodes:?}"
    );
    let column = |table: &str, col: usize| -> Vec<String> {
        std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))
            .unwrap_or_default()
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(col).map(str::to_string))
            .collect()
    };
    for table in [
        "tcp", "tcp6", "udp", "udp6", "udplite", "udplite6", "raw", "raw6",
    ] {
        let inet = column(table, 9);
        let hit: Vec<_> = inodes.iter().filter(|i| inet.contains(i)).collect();
        assert!(hit.is_empty(), "the daemon holds {table} socket(s) {hit:?}");
    }
    let netlink = column("netlink", 9);
    let nl = inodes.iter().filter(|i| netlink.contains(i)).count();
    assert!(
        nl >= netlink_sockets,
        "netlink sockets not found in /proc/{pid}/net/netlink: {inodes:?}"
    );
    // Every socket is netlink or the signal pipe (AF_UNIX).
    let unix = column("unix", 6);
    for i in &inodes {
        assert!(
            netlink.contains(i) || unix.contains(i),
            "socket {i} is neither netlink nor unix"
        );
    }
}

#[test]
fn daemon_keeps_only_cap_net_admin_and_holds_no_internet_socket() {
    let (lab, key) = started(2);
    // After a knock too: granting opens nothing new.
    knock_host(&lab, &key, &[]);
    assert!(
        wait_until(OPEN_WITHIN, || seconds_left(&lab, CLI4, "tcp/2222")
            .is_some())
        .is_some()
    );
    assert_least_privilege(lab.daemon_pid());
}

/// Resolving the default `[server] user` (`nfknock`, which this host does not have) must not
/// leave an NSS module (`libnss_systemd`, and the libraries it pulls in) mapped in the daemon for
/// its whole life: that alone cost ~0.9 MiB of idle RSS (bench: 4.6 → 5.6 MiB, target ≤ 5).
#[test]
fn default_user_lookup_leaves_no_nss_module_in_the_daemon() {
    let lab = Lab::new();
    let key = lab.keygen("alice.key");
    let config = lab.path("default-user.toml");
    // The lab's table without `user =`: the default user is looked up.
    let server = format!(
        "[server]\nport = {KNOCK_PORT}\nqueue = 3\nstate_dir = \"{}\"\n{}\n",
        lab.path("state").display(),
        default_server()
    );
    std::fs::write(
        &config,
        format!("{server}{}", alice(&key, &alice_allows_both(), 2)),
    )
    .unwrap();
    let mut d = Daemon::start(&lab, &[], &config, &[], "info", "default-user.log");
    let pid = d.pid();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let log = d.log();
    d.stop();
    let nss: Vec<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|path| path.contains("libnss_"))
        .collect();
    assert!(
        nss.is_empty(),
        "NSS modules mapped in the idle daemon: {nss:?}\n{log}"
    );
}

/// The client's copy of a key the daemon's user owns: root's, mode 0600 (the knock runs as
/// root here).
pub(crate) fn client_copy(lab: &Lab, key: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let client_key = lab.path("client.key");
    std::fs::copy(key, &client_key).unwrap();
    std::fs::set_permissions(&client_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    client_key
}

/// What systemd does with `User=nfknock` + `AmbientCapabilities=CAP_NET_ADMIN` +
/// `CapabilityBoundingSet=CAP_NET_ADMIN`, done with setpriv: the daemon starts as uid 65534
/// with a key file, config and state directory owned by that user, serves, and grants.
#[test]
fn daemon_runs_as_an_unprivileged_user_with_ambient_cap_net_admin() {
    use std::os::unix::fs::{chown, PermissionsExt};
    let lab = Lab::new();
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let nobody = 65534;
    // The lab's directory is root's 0700; the user's own directory inside it must be reachable.
    std::fs::set_permissions(lab.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let home = lab.path("nobody");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let key = lab.keygen("nobody/alice.key");
    let state = home.join("state");
    init_state(&state);
    let config = home.join("nfknock.toml");
    // systemd's `User=` already switched: the config names that user, as the shipped one
    // does by default (`nfknock`).
    std::fs::write(
        &config,
        format!(
            "{}{}",
            server_table(&state, "nobody", &default_server()),
            alice(&key, "\"tcp/2222\"", 5)
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    for p in [&home, &key, &state, &config] {
        chown(p, Some(nobody), Some(nobody)).unwrap();
    }
    let prefix = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all,+net_admin",
        "--ambient-caps=-all,+net_admin",
        "--bounding-set=-all,+net_admin",
    ];
    let mut d = Daemon::start(&lab, &prefix, &config, &[], "debug", "nobody.log");
    let st = proc_status(d.pid());
    assert!(
        st["Uid"].split_whitespace().all(|u| u == "65534"),
        "Uid: {}",
        st["Uid"]
    );
    assert!(
        st["Gid"].split_whitespace().all(|g| g == "65534"),
        "Gid: {}",
        st["Gid"]
    );
    assert_least_privilege(d.pid());

    assert!(!client_open(&lab), "open before the knock");
    let client_key = client_copy(&lab, &key);
    knock_host(&lab, &client_key, &[]);
    assert!(
        wait_until(OPEN_WITHIN, || client_open(&lab)).is_some(),
        "{}",
        d.log()
    );
    assert!(!stranger_open(&lab));
    // The journal the unprivileged daemon wrote is its own and private.
    let meta = std::fs::metadata(state.join("replay.journal")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.mode() & 0o777), (nobody, 0o600));
    assert!(d.stop().success(), "{}", d.log());
}

/// A system account for a daemon started as root to switch to, created once if missing the
/// way `scripts/install` creates `nfknock` (`nfknock` itself is left alone: on a host that has
/// it, every daemon started as root without `user` would switch to it). Its own account rather
/// than `nobody`: what a test hands to it belongs to nothing else. Returns (uid, gid).
pub(crate) fn test_user() -> (u32, u32) {
    const NAME: &str = "nfknock-test";
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, NAME]).output().unwrap();
        out.status.success().then(|| {
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u32>()
                .unwrap()
        })
    };
    if id("-u").is_none() {
        // Exit status 9: someone else created it meanwhile.
        let out = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .args(["--shell", "/usr/sbin/nologin", NAME])
            .output()
            .unwrap();
        assert!(
            out.status.success() || out.status.code() == Some(9),
            "useradd {NAME}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (id("-u").unwrap(), id("-g").unwrap())
}

/// Outside systemd: started as root with `[server] user`, the daemon switches to that user
/// once set up and keeps only CAP_NET_ADMIN, then still grants, re-creates a flushed table
/// (netlink writes after the switch) and reloads its config (reading the key file as that
/// user). Before it starts, root-owned files it could not read after the switch are named
/// with the fix.
#[test]
fn daemon_started_as_root_switches_to_the_configured_user_and_keeps_working() {
    use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
    let (uid, gid) = test_user();
    let user = "nfknock-test";
    let lab = Lab::new();
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    // The lab's directory is root's 0700: the user must reach its files inside.
    std::fs::set_permissions(lab.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let key = lab.keygen("alice.key");
    let state = lab.path("state");
    let config = lab.path("nfknock.toml");
    let write = |allow: &str| {
        let table = server_table(&state, user, &default_server());
        std::fs::write(&config, format!("{table}{}", alice(&key, allow, 5))).unwrap();
    };
    write("\"tcp/2222\"");
    // A start that should be refused: bounded, so a daemon that serves instead fails the test
    // (exit 124) rather than hanging it.
    let serve = |lab: &Lab| {
        let config = config.to_str().unwrap();
        lab.run(
            &lab.srv,
            &["timeout", "15", bin(), "serve", "--config", config],
        )
    };

    // Root's key file: the daemon (and `check`) refuse it, naming the chown.
    let out = lab.nfknock(&lab.srv, &["check", "--config", config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("`chown {user}: {}`", key.display())),
        "{err}"
    );
    chown(&key, Some(uid), Some(gid)).unwrap();

    // The lab's state directory is as `nfknock init-state`, run by root, leaves it: root's. An
    // existing directory is never handed over (`state_dir` may name one that is not ours): the
    // fix is named, and nothing was started.
    let out = serve(&lab);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("`chown -R {user}: {}`", state.display())),
        "{err}"
    );
    assert_eq!(lab.nft_list(), "", "a refused start left a table behind");

    // A missing one is created for the user, as systemd's StateDirectory= does.
    let marked = lab.path("state.marked");
    std::fs::rename(&state, &marked).unwrap();
    let mut d = Daemon::start(&lab, &[], &config, &[], "info", "created.log");
    let meta = std::fs::symlink_metadata(&state).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (uid, 0o700));
    assert!(
        d.log().contains("state_dir did not exist: created it"),
        "{}",
        d.log()
    );
    assert!(d.stop().success(), "{}", d.log());
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::rename(&marked, &state).unwrap();

    // The installer's way: `init-state`, then the directory handed to the user.
    let owner = format!("{uid}:{gid}");
    let out = Command::new("chown")
        .args(["-R", &owner, state.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut d = Daemon::start(&lab, &[], &config, &[], "debug", "switch.log");
    let st = proc_status(d.pid());
    for (field, want) in [("Uid", uid), ("Gid", gid)] {
        assert!(
            st[field].split_whitespace().all(|v| v == want.to_string()),
            "{field}: {} (want {want} four times)",
            st[field]
        );
    }
    assert_eq!(st["Groups"], "", "supplementary groups kept");
    assert_least_privilege(d.pid());
    assert!(
        d.log().contains(&format!("switched to user {user}")),
        "{}",
        d.log()
    );
    assert!(d.log().contains("first start"), "{}", d.log());

    assert!(!client_open(&lab), "open before the knock");
    let client_key = client_copy(&lab, &key);
    knock_host(&lab, &client_key, &[]);
    assert!(
        wait_until(OPEN_WITHIN, || client_open(&lab)).is_some(),
        "{}",
        d.log()
    );
    let meta = std::fs::metadata(state.join("replay.journal")).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (uid, 0o600));

    // CAP_NET_ADMIN after the switch: a flushed ruleset comes back with the grant.
    lab.run(&lab.srv, &["nft", "flush", "ruleset"]);
    assert!(
        wait_until(RESTORED_WITHIN, || seconds_left(&lab, CLI4, "tcp/2222")
            .is_some())
        .is_some(),
        "{}",
        d.log()
    );

    // A reload re-reads the config and the key file as the user, and takes effect.
    write("\"tcp/2222\", \"tcp/8080\"");
    let _ = Command::new("kill")
        .args(["-HUP", &d.pid().to_string()])
        .status();
    assert!(
        wait_until(Duration::from_secs(2), || d
            .log()
            .contains("config reloaded"))
        .is_some(),
        "{}",
        d.log()
    );
    assert!(!d.log().contains("new config refused"), "{}", d.log());
    let out = lab.knock(
        &lab.cli,
        SRV4,
        &[
            "--key-file",
            client_key.to_str().unwrap(),
            "--access",
            "tcp/8080",
        ],
    );
    assert!(out.status.success());
    assert!(
        wait_until(OPEN_WITHIN, || seconds_left(&lab, CLI4, "tcp/8080")
            .is_some())
        .is_some(),
        "{}",
        d.log()
    );
    assert!(d.stop().success(), "{}", d.log());
}

/// A key file the daemon's user does not own is refused with the fix in the message.
#[test]
fn key_file_owned_by_another_user_is_refused_with_the_fix() {
    use std::os::unix::fs::{chown, PermissionsExt};
    let lab = Lab::new();
    std::fs::set_permissions(lab.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let key = lab.keygen("alice.key");
    chown(&key, Some(1000), Some(1000)).unwrap();
    let config = lab.write_config("", &alice(&key, "\"tcp/2222\"", 5));
    let out = lab.nfknock(&lab.srv, &["check", "--config", config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("owned by uid 1000") && err.contains("chown"),
        "{err}"
    );
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `systemd-analyze security --offline=true systemd/nfknock.service` scores ≤ 1.2.
#[test]
fn systemd_unit_exposure_is_at_most_1_2() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(repo("systemd/nfknock.service"))
        .output()
        .expect("systemd-analyze (Debian: systemd) is needed for this test");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for nfknock.service:"))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no score in:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    eprintln!("FIGURE systemd-analyze security exposure: {score}");
    assert!(
        score <= 1.2,
        "exposure {score} > 1.2:\n{}",
        text.lines()
            .filter(|l| l.contains('✗'))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let unit = std::fs::read_to_string(repo("systemd/nfknock.service")).unwrap();
    for line in [
        "User=nfknock",
        "Group=nfknock",
        "AmbientCapabilities=CAP_NET_ADMIN",
        "CapabilityBoundingSet=CAP_NET_ADMIN",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit lacks {line}");
    }
}

/// Every syscall of a group of `systemd-analyze syscall-filter`, nested groups expanded.
fn syscall_group(group: &str, memo: &mut HashMap<String, Vec<String>>) -> Vec<String> {
    if let Some(v) = memo.get(group) {
        return v.clone();
    }
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", "--no-pager", group])
        .output()
        .unwrap();
    let mut calls = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
        let w = line.trim();
        if w.is_empty() || w.starts_with('#') {
            continue;
        }
        if w.starts_with('@') {
            calls.extend(syscall_group(w, memo));
        } else {
            calls.push(w.to_string());
        }
    }
    assert!(!calls.is_empty(), "systemd-analyze knows no group {group}");
    memo.insert(group.to_string(), calls.clone());
    calls
}

/// The syscalls `SystemCallFilter=` lines allow, as systemd.exec(5) merges them: the first
/// line is an allow list; a later `~` line removes from it, a later plain line adds to it.
fn unit_allowed_syscalls(unit: &str) -> std::collections::HashSet<String> {
    let mut memo = HashMap::new();
    let mut allowed = std::collections::HashSet::new();
    let mut first = true;
    for value in unit
        .lines()
        .filter_map(|l| l.strip_prefix("SystemCallFilter="))
    {
        let (deny, list) = match value.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        assert!(
            !(first && deny),
            "the unit's first SystemCallFilter= must be an allow list"
        );
        first = false;
        for item in list.split_whitespace() {
            let calls = if item.starts_with('@') {
                syscall_group(item, &mut memo)
            } else {
                vec![item.to_string()]
            };
            for c in calls {
                if deny {
                    allowed.remove(&c);
                } else {
                    allowed.insert(c);
                }
            }
        }
    }
    allowed
}

/// Every syscall the daemon makes — exec and start, a grant, a flush and its restore, a
/// reload, SIGTERM — is allowed by the unit's `SystemCallFilter=`, and every socket it opens is
/// of a family `RestrictAddressFamilies=` allows (under systemd a denied call fails with EPERM,
/// which no test outside systemd would otherwise notice).
#[test]
fn every_syscall_of_the_daemon_passes_the_units_filter() {
    let unit = std::fs::read_to_string(repo("systemd/nfknock.service")).unwrap();
    let allowed = unit_allowed_syscalls(&unit);
    let families: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("RestrictAddressFamilies="))
        .flat_map(str::split_whitespace)
        .collect();

    let lab = Lab::new();
    let key = lab.keygen("alice.key");
    let config = lab.write_config("", &alice(&key, "\"tcp/2222\"", 5));
    let trace = lab.path("strace.out");
    let tr = trace.to_str().unwrap().to_string();
    let mut d = Daemon::start(
        &lab,
        &["strace", "-f", "-qq", "-o", &tr],
        &config,
        &[],
        "info",
        "strace.log",
    );
    // The child is strace; the daemon is its only child.
    let out = Command::new("pgrep")
        .args(["-P", &d.pid().to_string()])
        .output()
        .unwrap();
    let daemon_pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!daemon_pid.is_empty(), "daemon not found under strace");
    knock_host(&lab, &key, &[]);
    assert!(
        wait_until(OPEN_WITHIN, || seconds_left(&lab, CLI4, "tcp/2222")
            .is_some())
        .is_some(),
        "{}",
        d.log()
    );
    lab.run(&lab.srv, &["nft", "flush", "ruleset"]);
    assert!(
        wait_until(RESTORED_WITHIN, || seconds_left(&lab, CLI4, "tcp/2222")
            .is_some())
        .is_some(),
        "{}",
        d.log()
    );
    let _ = Command::new("kill").args(["-HUP", &daemon_pid]).status();
    assert!(
        wait_until(Duration::from_secs(2), || d
            .log()
            .contains("config reloaded"))
        .is_some(),
        "{}",
        d.log()
    );
    // The unit's ExecReload=: a request over the control socket, answered by its thread.
    let out = lab.nfknock(&lab.srv, &["reload", "--config", config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    let _ = Command::new("kill").args(["-TERM", &daemon_pid]).status();
    let status = d.child.take().unwrap().wait().unwrap();
    assert!(status.success(), "{}", d.log());

    let text = std::fs::read_to_string(&trace).unwrap();
    let mut used = std::collections::BTreeSet::new();
    for line in text.lines() {
        let Some((_, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        let Some(name) = rest.split('(').next().filter(|n| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        }) else {
            continue;
        };
        if rest.starts_with(&format!("{name}(")) {
            used.insert(name.to_string());
        }
        if let Some(args) = rest.strip_prefix("socket(") {
            let family = args.split(',').next().unwrap_or("");
            assert!(
                families.contains(&family),
                "the daemon opened a socket of family {family}: {line}"
            );
        }
    }
    assert!(
        used.contains("sendto") && used.contains("capset"),
        "strace saw too little: {used:?}"
    );
    let denied: Vec<_> = used.iter().filter(|c| !allowed.contains(*c)).collect();
    assert!(
        denied.is_empty(),
        "the unit's SystemCallFilter= denies syscalls the daemon makes: {denied:?}"
    );
}

/// `scripts/install --destdir` lays out exactly what the unit expects (ExecStart's binary, the
/// unit, the config directory 0700), and running it twice changes nothing.
#[test]
fn install_script_puts_the_binary_where_the_unit_runs_it_and_is_idempotent() {
    let dest = tempfile::tempdir().unwrap();
    let run = || {
        let out = Command::new(repo("scripts/install"))
            .args(["--binary", bin(), "--destdir"])
            .arg(dest.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "install: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run();
    run();
    let unit = std::fs::read_to_string(repo("systemd/nfknock.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let exec_bin = exec.split_whitespace().next().unwrap();
    let installed = dest.path().join(exec_bin.trim_start_matches('/'));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&installed)
        .unwrap_or_else(|e| panic!("{}: {e}", installed.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755, "{}", installed.display());
    let installed_unit = dest.path().join("etc/systemd/system/nfknock.service");
    assert_eq!(std::fs::read_to_string(installed_unit).unwrap(), unit);
    let etc = std::fs::metadata(dest.path().join("etc/nfknock")).unwrap();
    assert_eq!(etc.permissions().mode() & 0o777, 0o700);
    assert!(dest
        .path()
        .join("usr/local/share/doc/nfknock/examples/server.toml")
        .exists());
    // Uninstall removes what install added and keeps the config directory (it holds keys).
    let out = Command::new(repo("scripts/install"))
        .args(["--uninstall", "--destdir"])
        .arg(dest.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !installed.exists()
            && !dest
                .path()
                .join("etc/systemd/system/nfknock.service")
                .exists()
    );
    assert!(dest.path().join("etc/nfknock").exists());
}
