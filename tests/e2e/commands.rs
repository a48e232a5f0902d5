//! Commands end to end: command cycles (`grant = "command"`, `on_grant`/`on_expire`) with the
//! seed's ipset example for real — `ipset` and an `iptables-legacy` rule in the server
//! namespace, run as `nobody` with CAP_NET_ADMIN handed on — and command messages from the
//! real fwknop client (`fwknop --server-cmd`). Each test asserts what an admin would check: a
//! real TCP connection, the set's members, the files a command made, the log lines.

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::fwknop::{fwknop, key_gen, Keys};
use super::*;

/// The service the ipset gates (the nfknock gate does not protect it: the cycle does).
const CYCLE_PORT: u16 = 2223;
const IPSET: &str = "/usr/sbin/ipset";

fn cycle_port() -> SocketAddr {
    sock(SRV4, CYCLE_PORT)
}

/// The whitelist set and the iptables-legacy rules of the seed's example, in the server
/// namespace: tcp/2223 accepted from members of `whitelist`, dropped for everyone else.
fn ipset_gate(lab: &Lab) {
    for args in [
        vec![IPSET, "create", "whitelist", "hash:ip", "timeout", "600"],
        vec![
            "iptables-legacy",
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            "2223",
            "-m",
            "set",
            "--match-set",
            "whitelist",
            "src",
            "-j",
            "ACCEPT",
        ],
        vec![
            "iptables-legacy",
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            "2223",
            "-j",
            "DROP",
        ],
    ] {
        let out = lab.run(&lab.srv, &args);
        assert!(
            out.status.success(),
            "{args:?} (apt-get install ipset iptables; scripts/test does it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The members of `whitelist`.
fn members(lab: &Lab) -> Vec<String> {
    let out = lab.run(&lab.srv, &[IPSET, "list", "whitelist"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split("Members:\n")
        .nth(1)
        .unwrap_or("")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

/// Alice, a native client whose grants are the ipset cycle only (`grant = "command"`).
fn cycle_client(key: &Path, timeout: u32, on_grant: &str, on_expire: &str, extra: &str) -> String {
    format!(
        "{}grant = \"command\"\non_grant = {on_grant}\non_expire = {on_expire}\ncommand_user = \"nobody\"\ncommand_net_admin = true\n{extra}",
        alice(key, &format!("\"tcp/{CYCLE_PORT}\""), timeout)
    )
}

fn server_lines() -> String {
    format!("protect = [\"tcp/{HOST_PORT}\"]\nmax_age = 120\n")
}

fn knock_cycle(lab: &Lab, key: &Path) {
    lab.knock(
        &lab.cli,
        SRV4,
        &["--key-file", key.to_str().unwrap(), "--access", "tcp/2223"],
    );
}

/// The log lines of one command (`command="on_expire"`, ...) that finished.
fn finished(log: &str, what: &str) -> usize {
    log.lines()
        .filter(|l| {
            l.contains("command finished")
                && (l.contains(&format!("command=\"{what}\""))
                    || l.contains(&format!("command={what}")))
        })
        .count()
}

/// The seed's example: closed → knock → `ipset add` ran as nobody → reachable → after the
/// timer `on_expire` ran (log line, set empty) → closed again. The nft set holds nothing:
/// `grant = "command"` replaces it.
#[test]
fn ipset_cycle_opens_the_port_and_on_expire_closes_it() {
    let mut lab = Lab::new();
    ipset_gate(&lab);
    let _echo = echo_server(&lab.srv, cycle_port());
    let key = lab.keygen("alice.key");
    let on_grant = format!("[\"{IPSET}\", \"add\", \"whitelist\", \"$SRC\", \"timeout\", \"$CLIENT_TIMEOUT\", \"-exist\"]");
    let on_expire = format!("[\"{IPSET}\", \"del\", \"whitelist\", \"$SRC\", \"-exist\"]");
    lab.write_config_raw(
        &server_lines(),
        &cycle_client(&key, 3, &on_grant, &on_expire, ""),
    );
    lab.start_daemon();
    assert!(
        !tcp_open(&lab.cli, cycle_port(), CLOSED_WITHIN),
        "open before any knock"
    );
    knock_cycle(&lab, &key);
    assert!(
        opens(&lab.cli, cycle_port()),
        "not reachable after the knock:\n{}",
        lab.log()
    );
    assert_eq!(members(&lab), [CLI4]);
    wait_until(Duration::from_secs(2), || {
        finished(&lab.log(), "on_grant") == 1
    });
    let log = lab.log();
    assert!(
        log.contains("command started")
            && log.contains("user=nobody")
            && finished(&log, "on_grant") == 1,
        "{log}"
    );
    let allow = lab.run(
        &lab.srv,
        &["nft", "list", "set", "inet", "nfknock", "allow_v4"],
    );
    let allow = String::from_utf8_lossy(&allow.stdout);
    assert!(
        !allow.contains(CLI4),
        "grant = \"command\" wrote to the nft set: {allow}"
    );
    // The on_expire runs at the deadline (3 s), before ipset's own timeout would matter.
    assert!(
        wait_until(Duration::from_secs(6), || finished(&lab.log(), "on_expire")
            == 1)
        .is_some(),
        "on_expire did not run:\n{}",
        lab.log()
    );
    assert!(
        members(&lab).is_empty(),
        "set not emptied: {:?}",
        members(&lab)
    );
    assert!(closes(&lab.cli, cycle_port(), Duration::from_secs(2)));
}

/// A restart between the grant and its expiry: the pending close is on disk, and the next
/// daemon runs it. The on_grant here adds without an ipset timeout, so only on_expire can
/// empty the set.
#[test]
fn on_expire_runs_after_a_daemon_restart() {
    let mut lab = Lab::new();
    ipset_gate(&lab);
    let _echo = echo_server(&lab.srv, cycle_port());
    let key = lab.keygen("alice.key");
    let on_grant = format!("[\"{IPSET}\", \"add\", \"whitelist\", \"$SRC\", \"-exist\"]");
    let on_expire = format!("[\"{IPSET}\", \"del\", \"whitelist\", \"$SRC\", \"-exist\"]");
    lab.write_config_raw(
        &server_lines(),
        &cycle_client(&key, 4, &on_grant, &on_expire, ""),
    );
    lab.start_daemon();
    knock_cycle(&lab, &key);
    assert!(opens(&lab.cli, cycle_port()), "{}", lab.log());
    let (_, status) = lab.stop_daemon();
    assert!(status.success());
    let pending = std::fs::read_to_string(lab.path("state/pending-closes")).unwrap();
    assert!(
        pending.contains(&format!("alice {CLI4} tcp {CYCLE_PORT} 4 -")),
        "{pending}"
    );
    assert_eq!(finished(&lab.log(), "on_expire"), 0);
    lab.start_daemon();
    assert!(
        wait_until(Duration::from_secs(8), || finished(&lab.log(), "on_expire")
            == 1)
        .is_some(),
        "the restarted daemon did not run the close:\n{}",
        lab.log()
    );
    assert!(members(&lab).is_empty());
    assert!(closes(&lab.cli, cycle_port(), Duration::from_secs(2)));
    let pending = std::fs::read_to_string(lab.path("state/pending-closes")).unwrap();
    assert_eq!(pending.lines().count(), 1, "{pending}");
}

/// The `pid=N` of the first "command started" line.
fn started_pid(log: &str) -> Option<u32> {
    let line = log.lines().find(|l| l.contains("command started"))?;
    let at = line.find("pid=")? + 4;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// A command that hangs is killed at its `command_timeout` (its whole process group), and the
/// log says so; the packet loop went on meanwhile.
#[test]
fn a_hanging_command_is_killed_at_its_timeout() {
    let mut lab = Lab::new();
    let key = lab.keygen("alice.key");
    let client = format!(
        "{}grant = \"both\"\non_grant = [\"/bin/sleep\", \"60\"]\ncommand_user = \"nobody\"\ncommand_timeout = 1\n",
        alice(&key, &format!("\"tcp/{HOST_PORT}\""), 30)
    );
    lab.write_config("", &client);
    lab.start_daemon();
    let _echo = echo_server(&lab.srv, sock(SRV4, HOST_PORT));
    lab.knock(
        &lab.cli,
        SRV4,
        &["--key-file", key.to_str().unwrap(), "--access", "tcp/2222"],
    );
    // grant = "both": the nft grant is there at once, whatever the command does.
    assert!(opens(&lab.cli, sock(SRV4, HOST_PORT)), "{}", lab.log());
    assert!(
        wait_until(Duration::from_secs(6), || lab
            .log()
            .contains("command failed"))
        .is_some(),
        "{}",
        lab.log()
    );
    let log = lab.log();
    assert!(
        log.contains("command timed out after 1s: SIGTERM to its process group"),
        "{log}"
    );
    assert!(log.contains("signal: 15"), "{log}");
    let pid = started_pid(&log).expect("no pid logged");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "sleep {pid} still runs"
    );
}

/// A directory nobody may write to, for what commands make.
fn drop_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("nfknock-e2e-cmd-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    d
}

/// An fwknop client `bob` with `extra` client lines, and the daemon started.
fn start_fwknop(lab: &mut Lab, keys: &Keys, extra: &str) {
    let clients = format!(
        "[[client]]\nname = \"bob\"\nallow = [\"tcp/{HOST_PORT}\"]\ncommand_user = \"nobody\"\n{extra}\n[client.fwknop]\n{}",
        keys.toml()
    );
    let p = lab.write_config("", &clients);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    lab.start_daemon();
}

/// `fwknop` from the client namespace with `args` and the keys.
fn fwknop_cli(lab: &Lab, keys: &Keys, args: &[&str]) {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(["-D".into(), SRV4.into(), "-a".into(), CLI4.into()]);
    all.extend(keys.client_args());
    let out = fwknop(lab, &lab.cli, &all);
    assert!(
        out.status.success(),
        "fwknop {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rejections(lab: &Lab, code: &str) -> usize {
    lab.log()
        .lines()
        .filter(|l| {
            l.contains("rejected knock")
                && (l.contains(&format!("reason=\"{code}\""))
                    || l.contains(&format!("reason={code} ")))
        })
        .count()
}

/// Command messages from the real client (`fwknop --server-cmd`): the allowed command runs as
/// `command_user`; one that is not listed, or that carries shell syntax, is refused and runs
/// nothing.
#[test]
fn fwknop_command_messages_run_only_the_listed_command() {
    let mut lab = Lab::new();
    let keys = key_gen(&lab, "sha256");
    let out = drop_dir();
    let ran: PathBuf = out.path().join("ran");
    let other = out.path().join("other");
    let pwned = out.path().join("pwned");
    start_fwknop(
        &mut lab,
        &keys,
        &format!("commands = [[\"/usr/bin/touch\", \"{}\"]]\n", ran.display()),
    );
    fwknop_cli(
        &lab,
        &keys,
        &[
            "--server-cmd",
            &format!("/usr/bin/touch {}", other.display()),
        ],
    );
    fwknop_cli(
        &lab,
        &keys,
        &[
            "--server-cmd",
            &format!(
                "/usr/bin/touch {} ; /usr/bin/touch {}",
                ran.display(),
                pwned.display()
            ),
        ],
    );
    assert!(
        wait_until(Duration::from_secs(3), || rejections(
            &lab,
            "command-not-allowed"
        ) == 2)
        .is_some(),
        "{}",
        lab.log()
    );
    fwknop_cli(
        &lab,
        &keys,
        &["--server-cmd", &format!("/usr/bin/touch {}", ran.display())],
    );
    assert!(
        wait_until(Duration::from_secs(5), || ran.exists()).is_some(),
        "the allowed command did not run:\n{}",
        lab.log()
    );
    assert_eq!(
        std::fs::metadata(&ran).unwrap().uid(),
        65534,
        "not run as nobody"
    );
    assert!(!other.exists() && !pwned.exists());
    assert!(
        wait_until(Duration::from_secs(3), || finished(
            &lab.log(),
            "command message"
        ) == 1)
        .is_some(),
        "{}",
        lab.log()
    );
}

/// A client without an allow-list refuses command messages, as fwknopd does without
/// `ENABLE_CMD_EXEC Y`; and a value from the packet (the fwknop user name) can never become an
/// option: `-U -la` is refused before anything runs, `-U bob` runs.
#[test]
fn command_messages_are_refused_by_default_and_values_never_become_options() {
    let mut lab = Lab::new();
    let keys = key_gen(&lab, "sha256");
    start_fwknop(
        &mut lab,
        &keys,
        "grant = \"both\"\non_grant = [\"/usr/bin/touch\", \"$USER\"]\n",
    );
    fwknop_cli(&lab, &keys, &["--server-cmd", "/usr/bin/id"]);
    assert!(
        wait_until(Duration::from_secs(3), || rejections(&lab, "unsupported")
            == 1)
        .is_some(),
        "{}",
        lab.log()
    );
    fwknop_cli(&lab, &keys, &["-A", "tcp/2222", "-U", "-la"]);
    assert!(
        wait_until(Duration::from_secs(3), || lab.log().contains(
            "on_grant refused: the knock's user name \"-la\" cannot be a command argument"
        ))
        .is_some(),
        "{}",
        lab.log()
    );
    assert!(!lab.log().contains("command started"), "{}", lab.log());
    fwknop_cli(&lab, &keys, &["-A", "tcp/2222", "-U", "bob"]);
    assert!(
        wait_until(Duration::from_secs(5), || lab
            .log()
            .contains("command started"))
        .is_some(),
        "{}",
        lab.log()
    );
    assert!(
        lab.log().contains("\"/usr/bin/touch\", \"bob\""),
        "{}",
        lab.log()
    );
}

/// The `pid=N` of the first line containing `what`.
fn pid_of(log: &str, what: &str) -> Option<u32> {
    let line = log.lines().find(|l| l.contains(what))?;
    let at = line.find("pid=")? + 4;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// `name:\tvalue` of /proc/PID/status.
fn proc_status(pid: u32, name: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// What a command runs with, as it sees it (its output is in the log): the configured user, no
/// supplementary groups, CAP_NET_ADMIN as its only (ambient) capability, no_new_privs, an
/// environment of PATH and LC_ALL only. The runner itself keeps CAP_SETUID, CAP_SETGID,
/// CAP_KILL and (because a client asks for it) CAP_NET_ADMIN, and nothing else.
#[test]
fn commands_run_confined_as_their_user_with_a_clean_environment() {
    let mut lab = Lab::new();
    let key = lab.keygen("alice.key");
    let on_grant = "[\"/bin/grep\", \"-E\", \"^(Uid|Gid|Groups|CapEff|CapAmb|CapBnd|NoNewPrivs):\", \"/proc/self/status\"]";
    lab.write_config_raw(
        &server_lines(),
        &cycle_client(&key, 1, on_grant, "[\"/usr/bin/env\"]", ""),
    );
    lab.start_daemon();
    let runner = pid_of(&lab.log(), "command runner started").expect("runner pid");
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(proc_status(runner, set), "00000000000010e0", "runner {set}");
    }
    assert_eq!(proc_status(runner, "NoNewPrivs"), "1");
    assert_eq!(proc_status(runner, "CapAmb"), "0000000000000000");
    // A program of its own (executed, not just forked): none of the daemon's memory, keys
    // included, is in it.
    let cmdline = std::fs::read(format!("/proc/{runner}/cmdline")).unwrap();
    assert_eq!(
        cmdline, b"nfknock\x00__command-runner\x004\x00",
        "runner {runner}"
    );
    knock_cycle(&lab, &key);
    assert!(
        wait_until(Duration::from_secs(5), || finished(&lab.log(), "on_expire")
            == 1)
        .is_some(),
        "{}",
        lab.log()
    );
    let log = lab.log();
    for want in [
        "Uid:\\t65534\\t65534\\t65534\\t65534",
        "Gid:\\t65534\\t65534\\t65534\\t65534",
        "CapEff:\\t0000000000001000",
        "CapAmb:\\t0000000000001000",
        "NoNewPrivs:\\t1",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LC_ALL=C",
    ] {
        assert!(log.contains(want), "{want:?} not in:\n{log}");
    }
    // The output is one escaped line: `Groups:\t \nCapEff...` when there are none.
    assert!(
        log.contains("Groups:\\t \\n") || log.contains("Groups:\\t\\n"),
        "supplementary groups left:\n{log}"
    );
    assert!(
        !log.lines().any(|l| l.starts_with("Uid:")),
        "output not on one line:\n{log}"
    );
    // The daemon's own environment (NFKNOCK_LOG) is not handed on.
    let env_out = log.split("command=\"on_expire\"").nth(1).unwrap_or("");
    assert!(!env_out.contains("NFKNOCK_LOG"), "{log}");
}

/// If the runner dies, the daemon says so loudly and goes on: the nft grant of a
/// `grant = "both"` client is still written, the command is skipped with an error that says
/// to restart nfknock.
#[test]
fn a_dead_runner_is_reported_and_nft_grants_go_on() {
    let mut lab = Lab::new();
    let key = lab.keygen("alice.key");
    let client = format!(
        "{}grant = \"both\"\non_grant = [\"/bin/true\"]\ncommand_user = \"nobody\"\n",
        alice(&key, &format!("\"tcp/{HOST_PORT}\""), 30)
    );
    lab.write_config("", &client);
    lab.start_daemon();
    let _echo = echo_server(&lab.srv, sock(SRV4, HOST_PORT));
    let runner = pid_of(&lab.log(), "command runner started").expect("runner pid");
    let out = Command::new("kill")
        .args(["-KILL", &runner.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        wait_until(Duration::from_secs(3), || lab.log().contains(
            "the command runner was killed by signal 9: no command runs until nfknock is restarted"
        ))
        .is_some(),
        "{}",
        lab.log()
    );
    lab.knock(
        &lab.cli,
        SRV4,
        &["--key-file", key.to_str().unwrap(), "--access", "tcp/2222"],
    );
    assert!(opens(&lab.cli, sock(SRV4, HOST_PORT)), "{}", lab.log());
    assert!(
        wait_until(Duration::from_secs(2), || lab.log().contains(
            "command skipped: the command runner is gone; restart nfknock"
        ))
        .is_some(),
        "{}",
        lab.log()
    );
    assert!(!lab.log().contains("command started"));
}

/// A daemon that lacks what the runner needs (a unit's `User=` with CAP_NET_ADMIN only) does
/// not start, and says which capabilities to give it: not a silent failure at the first
/// command.
#[test]
fn without_setuid_capabilities_a_daemon_with_commands_refuses_to_start() {
    let lab = Lab::new();
    let key = lab.keygen("alice.key");
    let client = format!(
        "{}grant = \"both\"\non_grant = [\"/bin/true\"]\ncommand_user = \"nobody\"\n",
        alice(&key, &format!("\"tcp/{HOST_PORT}\""), 30)
    );
    let config = lab.write_config("", &client);
    let out = lab.run(
        &lab.srv,
        &[
            "setpriv",
            "--bounding-set",
            "-setuid,-kill",
            bin(),
            "serve",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("cannot start the command runner")
            && err.contains("which needs CAP_SETUID, CAP_KILL to run them as `command_user`"),
        "{err}"
    );
}

/// The daemon stops (SIGTERM) while a command runs: the runner still ends it at its timeout,
/// then exits; nothing is left behind.
#[test]
fn a_command_outliving_the_daemon_is_still_killed_at_its_timeout() {
    let mut lab = Lab::new();
    let key = lab.keygen("alice.key");
    let client = format!(
        "{}grant = \"both\"\non_grant = [\"/bin/sleep\", \"60\"]\ncommand_user = \"nobody\"\ncommand_timeout = 2\n",
        alice(&key, &format!("\"tcp/{HOST_PORT}\""), 30)
    );
    lab.write_config("", &client);
    lab.start_daemon();
    let runner = pid_of(&lab.log(), "command runner started").expect("runner pid");
    lab.knock(
        &lab.cli,
        SRV4,
        &["--key-file", key.to_str().unwrap(), "--access", "tcp/2222"],
    );
    assert!(
        wait_until(Duration::from_secs(3), || lab
            .log()
            .contains("command started"))
        .is_some(),
        "{}",
        lab.log()
    );
    let sleeper = started_pid(&lab.log()).unwrap();
    let (_, status) = lab.stop_daemon();
    assert!(status.success());
    // Gone, or a zombie its new parent has not reaped yet.
    let gone = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    };
    assert!(
        wait_until(Duration::from_secs(6), || gone(sleeper) && gone(runner)).is_some(),
        "sleep {sleeper} or runner {runner} still there:\n{}",
        lab.log()
    );
    assert!(
        lab.log().contains("command timed out after 2s"),
        "{}",
        lab.log()
    );
}

/// `max_commands = 1`: a knock for two ports makes two on_grant commands, and the second
/// starts only when the first has finished.
#[test]
fn max_commands_bounds_the_commands_running_at_once() {
    let mut lab = Lab::new();
    let key = lab.keygen("alice.key");
    let client = format!(
        "{}grant = \"both\"\non_grant = [\"/bin/sleep\", \"1\"]\ncommand_user = \"nobody\"\n",
        alice(&key, &alice_allows_both(), 30)
    );
    lab.write_config("max_commands = 1\n", &client);
    lab.start_daemon();
    lab.knock(
        &lab.cli,
        SRV4,
        &[
            "--key-file",
            key.to_str().unwrap(),
            "--access",
            "tcp/2222,tcp/8080",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(6), || finished(&lab.log(), "on_grant")
            == 2)
        .is_some(),
        "{}",
        lab.log()
    );
    let log = lab.log();
    let events: Vec<&str> = log
        .lines()
        .filter_map(|l| {
            if l.contains("command started") {
                Some("start")
            } else if l.contains("command finished") {
                Some("end")
            } else {
                None
            }
        })
        .collect();
    assert_eq!(events, ["start", "end", "start", "end"], "{log}");
}

/// A pending close whose client lost its `on_expire` before a restart cannot run: the log says
/// which close, and to run it by hand (it is not dropped silently).
#[test]
fn a_close_that_can_no_longer_run_is_reported_with_what_to_do() {
    let mut lab = Lab::new();
    ipset_gate(&lab);
    let key = lab.keygen("alice.key");
    let on_grant = format!("[\"{IPSET}\", \"add\", \"whitelist\", \"$SRC\", \"-exist\"]");
    let on_expire = format!("[\"{IPSET}\", \"del\", \"whitelist\", \"$SRC\", \"-exist\"]");
    lab.write_config_raw(
        &server_lines(),
        &cycle_client(&key, 2, &on_grant, &on_expire, ""),
    );
    lab.start_daemon();
    knock_cycle(&lab, &key);
    assert!(
        wait_until(Duration::from_secs(3), || members(&lab) == [CLI4]).is_some(),
        "{}",
        lab.log()
    );
    lab.stop_daemon();
    let without_close = format!(
        "{}grant = \"command\"\non_grant = {on_grant}\ncommand_user = \"nobody\"\ncommand_net_admin = true\n",
        alice(&key, &format!("\"tcp/{CYCLE_PORT}\""), 2)
    );
    lab.write_config_raw(&server_lines(), &without_close);
    lab.start_daemon();
    let want = format!("close=\"{CLI4} tcp/{CYCLE_PORT}\"");
    assert!(
        wait_until(Duration::from_secs(5), || lab.log().lines().any(|l| l
            .contains(
                "on_expire not run: the client has no on_expire; run this close by hand"
            )
            && l.contains(&want)))
        .is_some(),
        "{}",
        lab.log()
    );
    assert_eq!(members(&lab), [CLI4], "nothing ran");
}

/// A `pending-closes` file that does not parse: nfknock does not start (its closes might never
/// run otherwise), and says which line and what to do.
#[test]
fn a_corrupt_pending_closes_file_stops_the_start_with_the_fix() {
    let lab = Lab::new();
    let key = lab.keygen("alice.key");
    let config = lab.write_config("", &alice(&key, &format!("\"tcp/{HOST_PORT}\""), 30));
    std::fs::write(
        lab.path("state/pending-closes"),
        "nfknock pending-closes 1\n100 alice 10.77.0.2 tcp 2223 30 -\nthis is not a close\n",
    )
    .unwrap();
    let out = lab.nfknock(&lab.srv, &["serve", "--config", config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(
            "cannot read the pending on_expire commands; nfknock does not start without them"
        ) && err.contains("pending-closes is corrupt (line 3: not 7 fields)")
            && err
                .contains("run them by hand if needed (the file is text), then move the file away"),
        "{err}"
    );
}

/// The cycle over IPv6: `$SRC` is the client's IPv6 address, in an `inet6` ipset gated by an
/// `ip6tables-legacy` rule.
#[test]
fn ipset_cycle_over_ipv6() {
    let mut lab = Lab::new();
    for args in [
        vec![
            IPSET,
            "create",
            "whitelist6",
            "hash:ip",
            "family",
            "inet6",
            "timeout",
            "600",
        ],
        vec![
            "ip6tables-legacy",
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            "2223",
            "-m",
            "set",
            "--match-set",
            "whitelist6",
            "src",
            "-j",
            "ACCEPT",
        ],
        vec![
            "ip6tables-legacy",
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            "2223",
            "-j",
            "DROP",
        ],
    ] {
        let out = lab.run(&lab.srv, &args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let port6 = sock(SRV6, CYCLE_PORT);
    let _echo = echo_server(&lab.srv, port6);
    let key = lab.keygen("alice.key");
    let on_grant = format!("[\"{IPSET}\", \"add\", \"whitelist6\", \"$SRC\", \"-exist\"]");
    let on_expire = format!("[\"{IPSET}\", \"del\", \"whitelist6\", \"$SRC\", \"-exist\"]");
    lab.write_config_raw(
        &server_lines(),
        &cycle_client(&key, 2, &on_grant, &on_expire, ""),
    );
    lab.start_daemon();
    assert!(
        !tcp_open(&lab.cli, port6, CLOSED_WITHIN),
        "open before any knock"
    );
    lab.knock(
        &lab.cli,
        SRV6,
        &["--key-file", key.to_str().unwrap(), "--access", "tcp/2223"],
    );
    assert!(opens(&lab.cli, port6), "{}", lab.log());
    assert!(
        wait_until(Duration::from_secs(5), || finished(&lab.log(), "on_expire")
            == 1)
        .is_some(),
        "{}",
        lab.log()
    );
    assert!(lab.log().contains(&format!("\"{CLI6}\"")), "{}", lab.log());
    assert!(closes(&lab.cli, port6, Duration::from_secs(2)));
}

/// Started as root with `[server] user = "nobody"`: the daemon leaves root, and so does the
/// runner (uid 65534, CAP_SETUID/SETGID/KILL only); a command for `command_user = "daemon"`
/// then runs as uid 1 with no capability at all, inheritable ones included.
#[test]
fn with_a_service_user_the_runner_leaves_root_too() {
    use std::os::unix::fs::chown;
    let lab = Lab::new();
    let nobody = 65534;
    std::fs::set_permissions(lab.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let home = lab.path("nobody");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let key = lab.keygen("nobody/alice.key");
    let state = home.join("state");
    init_state(&state);
    let config = home.join("nfknock.toml");
    let client = format!(
        "{}grant = \"both\"\non_grant = [\"/bin/grep\", \"-E\", \"^(Uid|CapEff|CapInh|CapAmb):\", \"/proc/self/status\"]\ncommand_user = \"daemon\"\n",
        alice(&key, &format!("\"tcp/{HOST_PORT}\""), 30)
    );
    std::fs::write(
        &config,
        format!(
            "{}{client}",
            server_table(&state, "nobody", &default_server())
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    for p in [&home, &key, &state, &config] {
        chown(p, Some(nobody), Some(nobody)).unwrap();
    }
    let d = Daemon::start(&lab, &[], &config, &[], "debug", "nobody.log");
    let runner = pid_of(&d.log(), "command runner started").expect("runner pid");
    assert!(proc_status(runner, "Uid")
        .split_whitespace()
        .all(|u| u == "65534"));
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(proc_status(runner, set), "00000000000000e0", "runner {set}");
    }
    let client_key = super::privileges::client_copy(&lab, &key);
    lab.knock(
        &lab.cli,
        SRV4,
        &[
            "--key-file",
            client_key.to_str().unwrap(),
            "--access",
            "tcp/2222",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(5), || finished(&d.log(), "on_grant")
            == 1)
        .is_some(),
        "{}",
        d.log()
    );
    let log = d.log();
    for want in [
        "Uid:\\t1\\t1\\t1\\t1",
        "CapInh:\\t0000000000000000",
        "CapEff:\\t0000000000000000",
        "CapAmb:\\t0000000000000000",
    ] {
        assert!(log.contains(want), "{want:?} not in:\n{log}");
    }
}
