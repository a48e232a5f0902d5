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

/// The seed's example in the server namespace: the ipset `set` (`hash:ip`, IPv6 with `v6`) and
/// the iptables-legacy (ip6tables-legacy) rules that accept tcp/2223 from its members and drop
/// it for everyone else.
fn ipset_gate(lab: &Lab, set: &str, v6: bool) {
    let (iptables, family): (&str, &[&str]) = if v6 {
        ("ip6tables-legacy", &["family", "inet6"])
    } else {
        ("iptables-legacy", &[])
    };
    let port = CYCLE_PORT.to_string();
    let rule = [iptables, "-A", "INPUT", "-p", "tcp", "--dport", &port];
    for args in [
        [
            &[IPSET, "create", set, "hash:ip"],
            family,
            &["timeout", "600"],
        ]
        .concat(),
        [
            &rule[..],
            &["-m", "set", "--match-set", set, "src", "-j", "ACCEPT"],
        ]
        .concat(),
        [&rule[..], &["-j", "DROP"]].concat(),
    ] {
        let out = lab.run(&lab.srv, &args);
        assert!(
            out.status.success(),
            "{args:?} (apt-get install ipset iptables; scripts/test does it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `ipset ARGS` as a TOML argv array, for `on_grant`/`on_expire`.
fn ipset_argv(args: &[&str]) -> String {
    let quoted: Vec<String> = [&[IPSET], args]
        .concat()
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// The cycle `on_grant` = add `$SRC` to `set` (no ipset timeout: only `on_expire` empties it),
/// `on_expire` = delete it.
fn add_del(set: &str) -> (String, String) {
    (
        ipset_argv(&["add", set, "$SRC", "-exist"]),
        ipset_argv(&["del", set, "$SRC", "-exist"]),
    )
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

/// A native knock from the client for the cycle's tcp/2223 on `server`.
fn knock_cycle(lab: &Lab, key: &Path, server: &str) {
    lab.knock(
        &lab.cli,
        server,
        &["--key-file", key.to_str().unwrap(), "--access", "tcp/2223"],
    );
}

/// Alice with her own nft grant (`allow`, 30 s) and `on_grant` = `argv` run as nobody
/// (`grant = "both"`), plus `extra` client lines.
fn both_client(key: &Path, allow: &str, argv: &str, extra: &str) -> String {
    format!(
        "{}grant = \"both\"\non_grant = {argv}\ncommand_user = \"nobody\"\n{extra}",
        alice(key, allow, 30)
    )
}

/// A lab with alice as a [`both_client`] of the host port, and the daemon running.
fn started_both(argv: &str, extra: &str) -> (Lab, PathBuf) {
    let mut lab = Lab::new();
    let key = lab.keygen("alice.key");
    lab.write_config("", &both_client(&key, &host_port(), argv, extra));
    lab.start_daemon();
    (lab, key)
}

/// Alice's `allow` of the host port alone.
fn host_port() -> String {
    format!("\"tcp/{HOST_PORT}\"")
}

/// Wait up to `secs` for the daemon's log (as `log` reads it) to satisfy `cond`; fail with
/// `what` and the log.
fn await_log(log: impl Fn() -> String, secs: u64, what: &str, cond: impl Fn(&str) -> bool) {
    let met = wait_until(Duration::from_secs(secs), || cond(&log())).is_some();
    assert!(met, "{what} (waited {secs} s); the log:\n{}", log());
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
    ipset_gate(&lab, "whitelist", false);
    let _echo = echo_server(&lab.srv, cycle_port());
    let key = lab.keygen("alice.key");
    let on_grant = ipset_argv(&[
        "add",
        "whitelist",
        "$SRC",
        "timeout",
        "$CLIENT_TIMEOUT",
        "-exist",
    ]);
    let (_, on_expire) = add_del("whitelist");
    lab.write_config_raw(
        &server_lines(),
        &cycle_client(&key, 3, &on_grant, &on_expire, ""),
    );
    lab.start_daemon();
    assert!(
        !tcp_open(&lab.cli, cycle_port(), CLOSED_WITHIN),
        "open before any knock"
    );
    knock_cycle(&lab, &key, SRV4);
    assert!(
        opens(&lab.cli, cycle_port()),
        "not reachable after the knock:\n{}",
        lab.log()
    );
    assert_eq!(members(&lab), [CLI4]);
    await_log(
        || lab.log(),
        2,
        "on_grant did not run as nobody",
        |log| {
            log.contains("command started")
                && log.contains("user=nobody")
                && finished(log, "on_grant") == 1
        },
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
    await_log(
        || lab.log(),
        6,
        "on_expire did not run",
        |log| finished(log, "on_expire") == 1,
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
    ipset_gate(&lab, "whitelist", false);
    let _echo = echo_server(&lab.srv, cycle_port());
    let key = lab.keygen("alice.key");
    let (on_grant, on_expire) = add_del("whitelist");
    lab.write_config_raw(
        &server_lines(),
        &cycle_client(&key, 4, &on_grant, &on_expire, ""),
    );
    lab.start_daemon();
    knock_cycle(&lab, &key, SRV4);
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
    await_log(
        || lab.log(),
        8,
        "the restarted daemon did not run the close",
        |log| finished(log, "on_expire") == 1,
    );
    assert!(members(&lab).is_empty());
    assert!(closes(&lab.cli, cycle_port(), Duration::from_secs(2)));
    let pending = std::fs::read_to_string(lab.path("state/pending-closes")).unwrap();
    assert_eq!(pending.lines().count(), 1, "{pending}");
}

/// A command that hangs is killed at its `command_timeout` (its whole process group), and the
/// log says so; the packet loop went on meanwhile.
#[test]
fn a_hanging_command_is_killed_at_its_timeout() {
    let (lab, key) = started_both("[\"/bin/sleep\", \"60\"]", "command_timeout = 1\n");
    let _echo = echo_server(&lab.srv, sock(SRV4, HOST_PORT));
    knock_host(&lab, &key, &[]);
    // grant = "both": the nft grant is there at once, whatever the command does.
    assert!(opens(&lab.cli, sock(SRV4, HOST_PORT)), "{}", lab.log());
    await_log(
        || lab.log(),
        6,
        "the command did not fail",
        |log| log.contains("command failed"),
    );
    let log = lab.log();
    assert!(
        log.contains("command timed out after 1s: SIGTERM to its process group"),
        "{log}"
    );
    assert!(log.contains("signal: 15"), "{log}");
    let pid = pid_of(&log, "command started").expect("no pid logged");
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
    await_log(
        || lab.log(),
        3,
        "two refusals expected",
        |log| rejections(log, "command-not-allowed") == 2,
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
    await_log(
        || lab.log(),
        3,
        "the command message did not finish",
        |log| finished(log, "command message") == 1,
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
    await_log(
        || lab.log(),
        3,
        "not refused as unsupported",
        |log| rejections(log, "unsupported") == 1,
    );
    fwknop_cli(&lab, &keys, &["-A", "tcp/2222", "-U", "-la"]);
    await_log(
        || lab.log(),
        3,
        "the option was not refused",
        |log| {
            log.contains(
                "on_grant refused: the knock's user name \"-la\" cannot be a command argument",
            )
        },
    );
    assert!(!lab.log().contains("command started"), "{}", lab.log());
    fwknop_cli(&lab, &keys, &["-A", "tcp/2222", "-U", "bob"]);
    await_log(
        || lab.log(),
        5,
        "no command started",
        |log| log.contains("command started"),
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
    let status = proc_status(runner);
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(status[set], "00000000000010e0", "runner {set}");
    }
    assert_eq!(status["NoNewPrivs"], "1");
    assert_eq!(status["CapAmb"], "0000000000000000");
    // A program of its own (executed, not just forked): none of the daemon's memory, keys
    // included, is in it.
    let cmdline = std::fs::read(format!("/proc/{runner}/cmdline")).unwrap();
    assert_eq!(
        cmdline, b"nfknock\x00__command-runner\x004\x00",
        "runner {runner}"
    );
    knock_cycle(&lab, &key, SRV4);
    await_log(
        || lab.log(),
        5,
        "on_expire did not run",
        |log| finished(log, "on_expire") == 1,
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
    let (lab, key) = started_both("[\"/bin/true\"]", "");
    let _echo = echo_server(&lab.srv, sock(SRV4, HOST_PORT));
    let runner = pid_of(&lab.log(), "command runner started").expect("runner pid");
    let out = Command::new("kill")
        .args(["-KILL", &runner.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    await_log(
        || lab.log(),
        3,
        "the runner's death not reported",
        |log| {
            log.contains(
            "the command runner was killed by signal 9: no command runs until nfknock is restarted",
        )
        },
    );
    knock_host(&lab, &key, &[]);
    assert!(opens(&lab.cli, sock(SRV4, HOST_PORT)), "{}", lab.log());
    await_log(
        || lab.log(),
        2,
        "the command was not skipped",
        |log| log.contains("command skipped: the command runner is gone; restart nfknock"),
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
    let client = both_client(&key, &host_port(), "[\"/bin/true\"]", "");
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
    let (mut lab, key) = started_both("[\"/bin/sleep\", \"60\"]", "command_timeout = 2\n");
    let runner = pid_of(&lab.log(), "command runner started").expect("runner pid");
    knock_host(&lab, &key, &[]);
    await_log(
        || lab.log(),
        3,
        "no command started",
        |log| log.contains("command started"),
    );
    let sleeper = pid_of(&lab.log(), "command started").unwrap();
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
    let client = both_client(&key, &alice_allows_both(), "[\"/bin/sleep\", \"1\"]", "");
    lab.write_config("max_commands = 1\n", &client);
    lab.start_daemon();
    knock_access(&lab, &key, "tcp/2222,tcp/8080", &[]);
    await_log(
        || lab.log(),
        6,
        "two on_grant expected",
        |log| finished(log, "on_grant") == 2,
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
    ipset_gate(&lab, "whitelist", false);
    let key = lab.keygen("alice.key");
    let (on_grant, on_expire) = add_del("whitelist");
    lab.write_config_raw(
        &server_lines(),
        &cycle_client(&key, 2, &on_grant, &on_expire, ""),
    );
    lab.start_daemon();
    knock_cycle(&lab, &key, SRV4);
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
    await_log(
        || lab.log(),
        5,
        "the lost close was not reported",
        |log| {
            log.lines().any(|l| {
                l.contains("on_expire not run: the client has no on_expire; run this close by hand")
                    && l.contains(&want)
            })
        },
    );
    assert_eq!(members(&lab), [CLI4], "nothing ran");
}

/// A `pending-closes` file that does not parse: nfknock does not start (its closes might never
/// run otherwise), and says which line and what to do.
#[test]
fn a_corrupt_pending_closes_file_stops_the_start_with_the_fix() {
    let lab = Lab::new();
    let key = lab.keygen("alice.key");
    let config = lab.write_config("", &alice(&key, &host_port(), 30));
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
    ipset_gate(&lab, "whitelist6", true);
    let port6 = sock(SRV6, CYCLE_PORT);
    let _echo = echo_server(&lab.srv, port6);
    let key = lab.keygen("alice.key");
    let (on_grant, on_expire) = add_del("whitelist6");
    lab.write_config_raw(
        &server_lines(),
        &cycle_client(&key, 2, &on_grant, &on_expire, ""),
    );
    lab.start_daemon();
    assert!(
        !tcp_open(&lab.cli, port6, CLOSED_WITHIN),
        "open before any knock"
    );
    knock_cycle(&lab, &key, SRV6);
    assert!(opens(&lab.cli, port6), "{}", lab.log());
    await_log(
        || lab.log(),
        5,
        "on_expire did not run",
        |log| finished(log, "on_expire") == 1,
    );
    assert!(lab.log().contains(&format!("\"{CLI6}\"")), "{}", lab.log());
    assert!(closes(&lab.cli, port6, Duration::from_secs(2)));
}

/// Started as root with `[server] user = "nobody"`: the daemon leaves root, and so does the
/// runner (uid 65534, CAP_SETUID/SETGID/KILL only); a command for `command_user = "daemon"`
/// then runs as uid 1 with no capability at all, inheritable ones included.
#[test]
fn with_a_service_user_the_runner_leaves_root_too() {
    let lab = Lab::new();
    let (key, config) = super::privileges::nobody_home(&lab, |key| {
        format!(
            "{}grant = \"both\"\non_grant = [\"/bin/grep\", \"-E\", \"^(Uid|CapEff|CapInh|CapAmb):\", \"/proc/self/status\"]\ncommand_user = \"daemon\"\n",
            alice(key, &host_port(), 30)
        )
    });
    let d = Daemon::start(&lab, &[], &config, &[], "debug", "nobody.log");
    let runner = pid_of(&d.log(), "command runner started").expect("runner pid");
    let status = proc_status(runner);
    assert!(status["Uid"].split_whitespace().all(|u| u == "65534"));
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(status[set], "00000000000000e0", "runner {set}");
    }
    let client_key = super::privileges::client_copy(&lab, &key);
    knock_host(&lab, &client_key, &[]);
    await_log(
        || d.log(),
        5,
        "on_grant did not run",
        |log| finished(log, "on_grant") == 1,
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
