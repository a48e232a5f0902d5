//! The worst-day guarantees (issue "Hardening"), each proved against the real kernel and the
//! real `nfknock` binary in a namespace lab (`tests/e2e/lab.rs`):
//!
//! - someone flushes the ruleset, deletes our table or reloads `nftables.service`: the gate and
//!   every live grant are back (with their remaining time) within a generous 2 s;
//! - the daemon is SIGKILLed: grants stay in the kernel and expire on time, and every knock sent
//!   before the crash is a replay after the restart; a corrupt journal is set aside and no replay
//!   window opens;
//! - a junk flood neither starves legitimate knocks nor grows the daemon's memory; the per-source
//!   rate limit drops a single-source flood before the queue; a skewed clock is named in the log;
//! - the daemon keeps only CAP_NET_ADMIN, holds no internet socket, and runs as an unprivileged
//!   user with the ambient capability; the systemd unit's exposure score is at most 1.2;
//! - `serve --dry-run` closes nothing unless `--with-gate`, and opens nothing either way.
//!
//! Measurements (not asserted beyond a functional bound) are `#[ignore]`d tests that print
//! their figures: `cargo test --test e2e_hardening -- --ignored --nocapture`.

#[path = "e2e/lab.rs"]
mod lab;

use std::collections::HashMap;
use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use lab::*;
use nfknock::access::Access;
use nfknock::crypto::{NativeKey, Rng};
use nfknock::netfilter::nft::Nft;
use nfknock::sys::OsRng;
use nfknock::wire::native;

const CLOSED_WITHIN: Duration = Duration::from_millis(400);
const OPEN_WITHIN: Duration = Duration::from_secs(1);
/// The functional bound on flush recovery (the goal, measured separately, is 100 ms).
const RESTORED_WITHIN: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// helpers

/// The daemon's config, written by hand where the lab's `write_config` (fixed `max_age` and
/// `protect`) does not fit. `server` lines go into the lab's `[server]` table.
fn write_config(lab: &Lab, server: &str, clients: &str) -> PathBuf {
    let p = lab.path("nfknock.toml");
    let table = server_table(&lab.path("state"), LAB_USER, server);
    std::fs::write(&p, format!("{table}{clients}")).unwrap();
    p
}

const DEFAULT_SERVER: &str = "protect = [\"tcp/2222\", \"tcp/8080\"]\nmax_age = 120\n";

fn alice(key: &Path, allow: &str, timeout: u32) -> String {
    format!(
        "[[client]]\nname = \"alice\"\nkey_file = \"{}\"\nallow = [{allow}]\ntimeout = {timeout}\nmax_timeout = 600\n",
        key.display()
    )
}

/// A lab with alice (tcp/2222 and tcp/8080, grants of `timeout` s) and the daemon running.
fn started(timeout: u32) -> (Lab, PathBuf) {
    let mut lab = Lab::new();
    let key = lab.keygen("alice.key");
    write_config(
        &lab,
        DEFAULT_SERVER,
        &alice(&key, "\"tcp/2222\", \"tcp/8080\"", timeout),
    );
    lab.start_daemon();
    (lab, key)
}

fn knock_host(lab: &Lab, key: &Path, extra: &[&str]) {
    let mut args = vec!["--key-file", key.to_str().unwrap(), "--access", "tcp/2222"];
    args.extend_from_slice(extra);
    lab.knock(&lab.cli, SRV4, &args);
}

fn client_open(lab: &Lab) -> bool {
    tcp_open(&lab.cli, sock(SRV4, HOST_PORT), Duration::from_millis(300))
}

fn stranger_open(lab: &Lab) -> bool {
    tcp_open(&lab.oth, sock(SRV_OTH4, HOST_PORT), CLOSED_WITHIN)
}

/// `nfknock status --json`: seconds left of the grant `src access`, if live.
fn seconds_left(lab: &Lab, src: &str, access: &str) -> Option<u64> {
    let out = lab.nfknock(&lab.srv, &["status", "--json"]);
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["source"] == src && v["access"] == access)
            .then(|| v["seconds_left"].as_u64())
            .flatten()
    })
}

fn nft_out(lab: &Lab, args: &[&str]) -> String {
    let mut all = vec!["nft"];
    all.extend_from_slice(args);
    let out = lab.run(&lab.srv, &all);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Rejections with reason `code` in a log (tracing prints `reason="code"` or `reason=code`).
fn rejections(log: &str, code: &str) -> usize {
    log.matches(&format!("reason=\"{code}\"")).count()
        + log.matches(&format!("reason={code} ")).count()
}

/// Grants in a log (one `grant` line per granted knock).
fn grant_lines(log: &str) -> usize {
    log.matches(" grant client=").count()
}

/// `/proc/PID/status` as key → value.
fn proc_status(pid: u32) -> HashMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        })
        .collect()
}

/// `VmRSS` / `VmHWM` of a process, KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let s = proc_status(pid);
    let kib = |k: &str| s[k].trim_end_matches(" kB").trim().parse::<u64>().unwrap();
    (kib("VmRSS"), kib("VmHWM"))
}

/// The kernel's counters of one NFQUEUE in the server namespace
/// (`/proc/net/netfilter/nfnetlink_queue`: queue, portid, waiting, copy mode, copy range,
/// queue_dropped, user_dropped, id_sequence, 1 — net/netfilter/nfnetlink_queue.c `seq_show`).
#[derive(Debug, Clone, Copy, Default)]
struct QueueStats {
    /// Packets waiting for the daemon's verdict right now.
    waiting: u64,
    dropped_full: u64,
    user_dropped: u64,
    queued_total: u64,
}

fn queue_stats(lab: &Lab, queue: u16) -> QueueStats {
    let out = lab.run(&lab.srv, &["cat", "/proc/net/netfilter/nfnetlink_queue"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        let f: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        if f.len() >= 8 && f[0] == u64::from(queue) {
            return QueueStats {
                waiting: f[2],
                dropped_full: f[5],
                user_dropped: f[6],
                queued_total: f[7],
            };
        }
    }
    QueueStats::default()
}

/// A daemon started with options the lab's `start_daemon` does not pass (`--dry-run`, a
/// `setpriv` prefix, a quieter log), killed on drop.
struct Daemon {
    child: Option<Child>,
    log_path: PathBuf,
}

impl Daemon {
    /// `ip netns exec SRV [prefix…] nfknock serve --config CONFIG [extra…]`, waiting until it
    /// serves (panics with its log otherwise).
    fn start(
        lab: &Lab,
        prefix: &[&str],
        config: &Path,
        extra: &[&str],
        log_level: &str,
        log_name: &str,
    ) -> Daemon {
        let log_path = lab.path(log_name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.srv])
            .args(prefix)
            .args([bin(), "serve", "--config"])
            .arg(config)
            .args(extra)
            .env("NFKNOCK_LOG", log_level)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child: Some(child),
            log_path,
        };
        let ok = wait_until(Duration::from_secs(15), || {
            d.log().contains("nfknock serving") || d.exited()
        });
        assert!(
            ok.is_some() && !d.exited(),
            "daemon did not start:\n{}",
            d.log()
        );
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// `ip netns exec` and `setpriv` exec the daemon: the child's pid is the daemon's.
    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        c.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if thread::panicking() {
            eprintln!("--- log {} ---\n{}", self.log_path.display(), self.log());
        }
    }
}

/// A native knock built in-process (the flood and latency loops cannot afford a process per
/// knock): `access` for `allow_ip`, stamped now.
fn seal(key: &NativeKey, access: Access, allow_ip: IpAddr) -> [u8; native::PACKET_LEN] {
    let req = native::Request {
        timestamp: nfknock::daemon::unix_now(),
        timeout: 0,
        allow_ip: Some(allow_ip),
        access: vec![access],
    };
    native::seal(key, &req, &mut OsRng).unwrap()
}

fn tcp(port: u16) -> Access {
    format!("tcp/{port}").parse().unwrap()
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

// ---------------------------------------------------------------------------------------------
// 1. flush recovery

/// The three ways a host's firewall tooling removes our table.
fn disruptions(lab: &Lab) -> Vec<(&'static str, Vec<String>)> {
    // What `systemctl reload nftables` does on Debian: `nft -f /etc/nftables.conf`, a file that
    // starts with `flush ruleset` and defines the host's own table.
    let conf = lab.path("nftables.conf");
    std::fs::write(
        &conf,
        "flush ruleset\n\ntable inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t}\n}\n",
    )
    .unwrap();
    vec![
        (
            "nft flush ruleset",
            vec!["nft".into(), "flush".into(), "ruleset".into()],
        ),
        (
            "nft delete table inet nfknock",
            ["nft", "delete", "table", "inet", "nfknock"]
                .map(String::from)
                .to_vec(),
        ),
        (
            "nftables.service reload",
            vec!["nft".into(), "-f".into(), conf.display().to_string()],
        ),
    ]
}

/// What one disruption looked like from a netlink client polling `allow_v4` in a tight loop.
#[derive(Debug)]
struct Restore {
    /// From the first poll that found the table or the grant gone to the first that found the
    /// grant back.
    gap: Option<Duration>,
    /// From just before the disruption command started to the grant back (includes starting
    /// `nft`): an upper bound.
    since_command: Duration,
}

/// Run `cmd` in the server namespace while a thread there polls for the grant of `src` and
/// times its absence.
fn time_restore(lab: &Lab, cmd: &[String], src: IpAddr) -> Restore {
    let srv = lab.srv.clone();
    let done = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let d = done.clone();
    let poller = thread::spawn(move || {
        in_ns(&srv, move || {
            let mut nft = Nft::open().unwrap();
            let present = |nft: &mut Nft| {
                nft.list()
                    .map(|l| l.iter().any(|g| g.addr == src))
                    .unwrap_or(false)
            };
            assert!(present(&mut nft), "grant not there before the disruption");
            ready_tx.send(()).unwrap();
            let mut gone: Option<Instant> = None;
            let limit = Instant::now() + Duration::from_secs(5);
            loop {
                let now_present = present(&mut nft);
                let t = Instant::now();
                match (now_present, gone) {
                    (false, None) => gone = Some(t),
                    (true, Some(g)) => return (Some(t - g), t),
                    // The command finished and the grant is there: either it never vanished
                    // for long enough to see, or it is back already.
                    (true, None) if d.load(Ordering::SeqCst) => return (None, t),
                    _ => {}
                }
                assert!(t < limit, "grant not back within 5 s");
            }
        })
    });
    ready_rx.recv().unwrap();
    let start = Instant::now();
    let out = lab.run(
        &lab.srv,
        &cmd.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    done.store(true, Ordering::SeqCst);
    let (gap, back) = poller.join().unwrap();
    Restore {
        gap,
        since_command: back.saturating_duration_since(start),
    }
}

#[test]
fn flush_delete_and_nftables_reload_restore_the_gate_and_the_grant_with_its_time() {
    let (lab, key) = started(120);
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    knock_host(&lab, &key, &[]);
    assert!(
        wait_until(OPEN_WITHIN, || client_open(&lab)).is_some(),
        "knock did not open:\n{}",
        lab.log()
    );
    assert!(!stranger_open(&lab));
    let cli: IpAddr = CLI4.parse().unwrap();

    for (what, cmd) in disruptions(&lab) {
        let before = seconds_left(&lab, CLI4, "tcp/2222").expect("grant listed before");
        let t = Instant::now();
        let r = time_restore(&lab, &cmd, cli);
        eprintln!("{what}: {r:?}");
        assert!(
            r.since_command < RESTORED_WITHIN,
            "{what}: grant back only after {:?}",
            r.since_command
        );
        assert!(
            lab.nft_list().contains("@allow_v4"),
            "{what}: gate rules not back:\n{}",
            lab.nft_list()
        );
        // Real TCP: closed again for the stranger, open again for the granted client.
        assert!(
            !stranger_open(&lab),
            "{what}: the gate is open for a stranger"
        );
        assert!(
            client_open(&lab),
            "{what}: the granted client is shut out:\n{}",
            lab.log()
        );
        // The grant kept its remaining time: not lost, not reset to the full 120 s.
        let after = seconds_left(&lab, CLI4, "tcp/2222").expect("grant listed after");
        let elapsed = t.elapsed().as_secs();
        assert!(
            after <= before && after + elapsed + 2 >= before,
            "{what}: {before}s left before, {after}s after"
        );
    }
    // The host's own table from the "nftables.service reload" is untouched.
    assert!(nft_out(&lab, &["list", "tables"]).contains("table inet filter"));
    assert_eq!(
        lab.log().matches("re-created it").count(),
        3,
        "{}",
        lab.log()
    );
}

/// Flush recovery, median of 20 runs of each disruption. Goal ≤ 100 ms.
/// `cargo test --test e2e_hardening flush_recovery_median -- --ignored --nocapture`
#[test]
#[ignore]
fn flush_recovery_median_of_20() {
    let (lab, key) = started(600);
    knock_host(&lab, &key, &[]);
    let cli: IpAddr = CLI4.parse().unwrap();
    assert!(
        wait_until(OPEN_WITHIN, || seconds_left(&lab, CLI4, "tcp/2222")
            .is_some())
        .is_some()
    );
    for (what, cmd) in disruptions(&lab) {
        let (mut gaps, mut totals, mut unseen) = (Vec::new(), Vec::new(), 0);
        for _ in 0..20 {
            let r = time_restore(&lab, &cmd, cli);
            match r.gap {
                Some(g) => gaps.push(g),
                None => unseen += 1,
            }
            totals.push(r.since_command);
            thread::sleep(Duration::from_millis(50));
        }
        let max = *totals.iter().max().unwrap();
        eprintln!(
            "FIGURE flush recovery, {what}: table gone → back with grant median {:?} (max {:?}, {} of 20 too fast to see); \
             command start → grant back median {:?} (max {max:?})",
            if gaps.is_empty() { Duration::ZERO } else { median(&mut gaps.clone()) },
            gaps.iter().max().copied().unwrap_or_default(),
            unseen,
            median(&mut totals),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. crashes and a corrupt journal

#[test]
fn sigkill_keeps_grants_in_the_kernel_until_they_expire_and_old_knocks_stay_replays() {
    let (mut lab, key) = started(4);
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let (k1, k2) = (lab.path("k1.bin"), lab.path("k2.bin"));
    knock_host(&lab, &key, &["--save-packet", k1.to_str().unwrap()]);
    lab.knock(
        &lab.cli,
        SRV4,
        &[
            "--key-file",
            key.to_str().unwrap(),
            "--access",
            "tcp/8080",
            "--save-packet",
            k2.to_str().unwrap(),
        ],
    );
    assert!(
        wait_until(OPEN_WITHIN, || client_open(&lab)).is_some(),
        "{}",
        lab.log()
    );
    let granted = Instant::now();
    assert!(
        wait_until(OPEN_WITHIN, || seconds_left(&lab, CLI4, "tcp/8080")
            .is_some())
        .is_some()
    );

    lab.kill_daemon(); // SIGKILL: no shutdown code runs
                       // The grants live in the kernel, not in the daemon.
    assert!(client_open(&lab), "grant gone with the killed daemon");
    assert!(!stranger_open(&lab), "gate gone with the killed daemon");
    assert!(seconds_left(&lab, CLI4, "tcp/8080").is_some());
    // ... and the kernel expires them on time (4 s after the knock), daemon or not.
    let gone = wait_until(Duration::from_secs(8), || {
        !nft_out(&lab, &["list", "set", "inet", "nfknock", "allow_v4"]).contains(CLI4)
    });
    assert!(gone.is_some(), "grants did not expire without the daemon");
    let lived = granted.elapsed();
    assert!(
        lived > Duration::from_secs(3) && lived < Duration::from_millis(6500),
        "grants lived {lived:?}, timeout 4 s"
    );
    assert!(!client_open(&lab), "port open after expiry");

    // After a restart, every knock sent before the crash is a replay.
    lab.start_daemon();
    let before = rejections(&lab.log(), "replay");
    for k in [&k1, &k2] {
        send_udp(&lab.cli, sock(SRV4, KNOCK_PORT), read(k));
    }
    assert!(
        wait_until(Duration::from_secs(2), || rejections(&lab.log(), "replay")
            >= before + 2)
        .is_some(),
        "knocks sent before the crash not refused as replays:\n{}",
        lab.log()
    );
    assert!(
        !client_open(&lab),
        "a replay after the crash opened the port"
    );
    // The restarted daemon serves: a fresh knock opens.
    knock_host(&lab, &key, &[]);
    assert!(
        wait_until(OPEN_WITHIN, || client_open(&lab)).is_some(),
        "{}",
        lab.log()
    );
}

#[test]
fn corrupt_journal_is_set_aside_and_no_replay_window_opens() {
    const MAX_AGE: u64 = 4;
    let mut lab = Lab::new();
    let key = lab.keygen("alice.key");
    write_config(
        &lab,
        &format!("protect = [\"tcp/2222\"]\nmax_age = {MAX_AGE}\n"),
        &alice(&key, "\"tcp/2222\"", 2),
    );
    lab.start_daemon();
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let sent = lab.path("sent.bin");
    knock_host(&lab, &key, &["--save-packet", sent.to_str().unwrap()]);
    assert!(
        wait_until(OPEN_WITHIN, || client_open(&lab)).is_some(),
        "{}",
        lab.log()
    );
    let (_, status) = lab.stop_daemon();
    assert!(status.success());
    assert!(
        wait_until(Duration::from_secs(4), || !client_open(&lab)).is_some(),
        "first grant did not expire"
    );
    // Built (stamped) before the restart, never sent: nobody can tell it from a recorded one.
    let unsent = lab.path("unsent.bin");
    knock_host(
        &lab,
        &key,
        &["--save-packet", unsent.to_str().unwrap(), "--dry-run"],
    );

    let journal = lab.path("state").join("replay.journal");
    std::fs::write(
        &journal,
        b"\x00garbage that is no replay journal\xff\xfe".repeat(10),
    )
    .unwrap();
    lab.start_daemon();
    let loaded = Instant::now();
    let log = lab.log();
    assert!(
        log.contains("replay journal was corrupt and has been set aside"),
        "{log}"
    );
    assert!(
        log.contains(&format!("refused for the next {MAX_AGE}s")),
        "{log}"
    );
    let aside: Vec<_> = std::fs::read_dir(lab.path("state"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("replay.journal.corrupt-"))
        .collect();
    assert_eq!(
        aside.len(),
        1,
        "corrupt journal not kept for a person to look at"
    );

    // Knocks stamped before the restart: refused, recorded or not.
    let lost = rejections(&lab.log(), "state-lost");
    send_udp(&lab.cli, sock(SRV4, KNOCK_PORT), read(&unsent));
    send_udp(&lab.cli, sock(SRV4, KNOCK_PORT), read(&sent));
    // Documented (daemon.rs): a fresh knock is refused too until load time + max_age, because a
    // packet accepted before the loss may carry a timestamp up to max_age ahead of the clock.
    knock_host(&lab, &key, &[]);
    assert!(
        wait_until(Duration::from_secs(2), || rejections(
            &lab.log(),
            "state-lost"
        ) >= lost + 3)
        .is_some(),
        "old knocks not refused as state-lost:\n{}",
        lab.log()
    );
    assert!(
        loaded.elapsed() < Duration::from_secs(MAX_AGE),
        "too slow to test the refusal window"
    );
    assert!(
        !client_open(&lab),
        "a knock stamped inside the refusal window opened the port"
    );

    // Past the window, a fresh knock is granted: the daemon kept running.
    thread::sleep(Duration::from_secs(MAX_AGE + 1).saturating_sub(loaded.elapsed()));
    knock_host(&lab, &key, &[]);
    assert!(
        wait_until(OPEN_WITHIN, || client_open(&lab)).is_some(),
        "{}",
        lab.log()
    );
    let (_, status) = lab.stop_daemon();
    assert!(
        status.success(),
        "daemon did not keep running after the corrupt journal"
    );
}

/// The daemon's config with `state_dir` = `lab.path(state)`, alice allowed tcp/2222 with grants
/// of one second.
fn write_config_with_state(lab: &Lab, state: &str, max_age: u64, key: &Path) -> PathBuf {
    let p = lab.path("nfknock.toml");
    let text = format!(
        "[server]\nport = {KNOCK_PORT}\nqueue = 3\nstate_dir = \"{}\"\nprotect = [\"tcp/2222\"]\nmax_age = {max_age}\n\n{}",
        lab.path(state).display(),
        alice(key, "\"tcp/2222\"", 1)
    );
    std::fs::write(&p, text).unwrap();
    p
}

/// Issue "security", item 3: a state directory that lost its journal (wiped, on tmpfs, or a
/// changed `state_dir`) is not a first start. Knocks captured before the restart, sent or only
/// built, are refused; the log says which case applied and what to do.
#[test]
fn wiped_or_moved_state_dir_refuses_knocks_captured_before_the_restart() {
    // Long enough that every captured knock is still fresh when it is replayed: a refusal
    // below can only be the lost-journal rule, never `stale`.
    const MAX_AGE: u64 = 120;
    let mut lab = Lab::new();
    let key = lab.keygen("alice.key");
    write_config_with_state(&lab, "state", MAX_AGE, &key);
    lab.start_daemon();
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let sent = lab.path("sent.bin");
    knock_host(&lab, &key, &["--save-packet", sent.to_str().unwrap()]);
    assert!(
        wait_until(OPEN_WITHIN, || client_open(&lab)).is_some(),
        "{}",
        lab.log()
    );
    let unsent = lab.path("unsent.bin");
    knock_host(
        &lab,
        &key,
        &["--save-packet", unsent.to_str().unwrap(), "--dry-run"],
    );
    assert!(lab.stop_daemon().1.success());
    assert!(
        wait_until(Duration::from_secs(4), || !client_open(&lab)).is_some(),
        "the first grant did not expire"
    );

    let replay_captured = |lab: &Lab, case: &str| {
        let (lost, grants) = (
            rejections(&lab.log(), "state-lost"),
            grant_lines(&lab.log()),
        );
        for k in [&sent, &unsent] {
            send_udp(&lab.cli, sock(SRV4, KNOCK_PORT), read(k));
        }
        wait_until(Duration::from_secs(2), || {
            rejections(&lab.log(), "state-lost") >= lost + 2 || grant_lines(&lab.log()) > grants
        });
        assert_eq!(
            grant_lines(&lab.log()),
            grants,
            "{case}: a knock captured before the restart was granted:\n{}",
            lab.log()
        );
        assert!(!client_open(lab), "{case}: port open");
        assert_eq!(
            rejections(&lab.log(), "state-lost"),
            lost + 2,
            "{case}: captured knocks not refused as state-lost:\n{}",
            lab.log()
        );
    };

    // 1. The state directory is wiped (rm -rf, a tmpfs after a reboot).
    std::fs::remove_dir_all(lab.path("state")).unwrap();
    lab.start_daemon();
    replay_captured(&lab, "wiped state directory");
    let lost_line = "no replay journal and no first-start marker";
    assert_eq!(lab.log().matches(lost_line).count(), 1, "{}", lab.log());
    assert!(
        lab.log()
            .contains(&format!("refused for the next {MAX_AGE}s")),
        "{}",
        lab.log()
    );
    assert!(lab.log().contains("nfknock init-state"), "{}", lab.log());
    assert!(lab.stop_daemon().1.success());

    // 2. `state_dir` now names another (empty) directory.
    write_config_with_state(&lab, "state-moved", MAX_AGE, &key);
    lab.start_daemon();
    replay_captured(&lab, "changed state_dir");
    assert_eq!(lab.log().matches(lost_line).count(), 2, "{}", lab.log());
    assert!(lab.path("state-moved").join("replay.journal").exists());
    assert!(lab.stop_daemon().1.success());
}

/// Issue "security", item 3: a state directory prepared the way the installer prepares it
/// (`nfknock init-state`) is a first start: the daemon says so, removes the marker once its
/// journal exists, and grants the first knock at once.
#[test]
fn first_start_with_the_install_marker_grants_at_once() {
    let mut lab = Lab::new();
    let key = lab.keygen("alice.key");
    write_config_with_state(&lab, "state", 120, &key);
    let state = lab.path("state");
    assert!(
        std::fs::read_dir(&state).unwrap().count() == 1,
        "the lab prepares the state directory with one marker file"
    );
    lab.start_daemon();
    assert!(
        lab.log()
            .contains("first start of this state directory (first-start marker found)"),
        "{}",
        lab.log()
    );
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    knock_host(&lab, &key, &[]);
    assert!(
        wait_until(OPEN_WITHIN, || client_open(&lab)).is_some(),
        "the first knock after a first start was not granted at once:\n{}",
        lab.log()
    );
    let names: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["replay.journal".to_string()],
        "marker not removed"
    );
    // A restart is no longer a first start.
    assert!(lab.stop_daemon().1.success());
    lab.start_daemon();
    assert_eq!(
        lab.log()
            .matches("first start of this state directory")
            .count(),
        1
    );
    assert!(lab.log().contains("replay journal loaded"), "{}", lab.log());
}

/// Issue "security", item 6: a knock accepted under a short `max_age` and long enough ago that
/// the old cache forgot it must stay a replay when a reload raises `max_age`.
#[test]
fn raising_max_age_on_reload_does_not_make_an_old_knock_fresh() {
    let mut lab = Lab::new();
    let key = lab.keygen("alice.key");
    write_config_with_state(&lab, "state", 2, &key);
    lab.start_daemon();
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let sent = lab.path("sent.bin");
    let knocked = Instant::now();
    knock_host(&lab, &key, &["--save-packet", sent.to_str().unwrap()]);
    assert!(
        wait_until(OPEN_WITHIN, || client_open(&lab)).is_some(),
        "{}",
        lab.log()
    );
    // Past max_age + one tick: a cache bounded by max_age has dropped the entry by now.
    thread::sleep(Duration::from_secs(4).saturating_sub(knocked.elapsed()));
    assert!(!client_open(&lab), "the one-second grant did not expire");
    write_config_with_state(&lab, "state", 3600, &key);
    let reloads = lab.log().matches("config reloaded").count();
    lab.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(3), || lab
            .log()
            .matches("config reloaded")
            .count()
            > reloads)
        .is_some(),
        "{}",
        lab.log()
    );
    let (replays, grants) = (rejections(&lab.log(), "replay"), grant_lines(&lab.log()));
    send_udp(&lab.cli, sock(SRV4, KNOCK_PORT), read(&sent));
    wait_until(Duration::from_secs(2), || {
        rejections(&lab.log(), "replay") > replays || grant_lines(&lab.log()) > grants
    });
    assert_eq!(
        grant_lines(&lab.log()),
        grants,
        "the old knock was granted after max_age was raised:\n{}",
        lab.log()
    );
    assert!(!client_open(&lab), "port open");
    assert_eq!(
        rejections(&lab.log(), "replay"),
        replays + 1,
        "not refused as a replay:\n{}",
        lab.log()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. floods, rate limit, clock skew

/// Flood parameters: `NFK_FLOOD_PACKETS` (default 2 000 000), bounded by `NFK_FLOOD_SECS`
/// (default 25 s) so the test stays under a minute on a busy machine.
fn flood_bounds() -> (u64, Duration) {
    let n = std::env::var("NFK_FLOOD_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let s = std::env::var("NFK_FLOOD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    (n, Duration::from_secs(s))
}

/// Extra flood sources on the client's veth: 10.77.0.10 … 10.77.0.(10+n-1).
fn add_flood_sources(lab: &Lab, n: u8) -> Vec<IpAddr> {
    let batch = lab.path("addrs.batch");
    let addrs: Vec<IpAddr> = (0..n)
        .map(|i| format!("10.77.0.{}", 10 + u16::from(i)).parse().unwrap())
        .collect();
    let text: String = addrs
        .iter()
        .map(|a| format!("addr add {a}/24 dev to-srv\n"))
        .collect();
    std::fs::write(&batch, text).unwrap();
    let out = lab.run(&lab.cli, &["ip", "-batch", batch.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    addrs
}

/// Extra IPv6 flood sources on the client's veth, all in the lab's fd77::/64:
/// fd77::100 … fd77::(100+n-1) (hex).
fn add_flood_sources_v6(lab: &Lab, n: u16) -> Vec<IpAddr> {
    let batch = lab.path("addrs6.batch");
    let addrs: Vec<IpAddr> = (0..n)
        .map(|i| format!("fd77::{:x}", 0x100 + i).parse().unwrap())
        .collect();
    let text: String = addrs
        .iter()
        .map(|a| format!("addr add {a}/64 dev to-srv nodad\n"))
        .collect();
    std::fs::write(&batch, text).unwrap();
    let out = lab.run(&lab.cli, &["ip", "-batch", batch.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    addrs
}

#[derive(Debug, Default)]
struct FloodReport {
    sent: u64,
    send_errors: u64,
    took: Duration,
}

/// Send `n` packets (or until `limit`) as fast as one thread can from `sources` in the client
/// namespace: alternately 128 random bytes and a well-formed native knock under a key the
/// server does not know (1024 distinct ones of each, cycled).
fn flood(
    lab: &Lab,
    sources: Vec<IpAddr>,
    n: u64,
    limit: Duration,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<FloodReport> {
    let cli = lab.cli.clone();
    let mut payloads: Vec<Vec<u8>> = Vec::with_capacity(2048);
    let stranger = NativeKey::derive(&[0x5a; 32]);
    for i in 0..1024 {
        let mut junk = vec![0u8; native::PACKET_LEN];
        OsRng.fill(&mut junk);
        payloads.push(junk);
        payloads.push(seal(&stranger, tcp(HOST_PORT), sources[i % sources.len()]).to_vec());
    }
    thread::spawn(move || {
        in_ns(&cli, move || {
            let srv = if sources[0].is_ipv6() { SRV6 } else { SRV4 };
            let to = sock(srv, KNOCK_PORT);
            let socks: Vec<UdpSocket> = sources
                .iter()
                .map(|a| {
                    let s = UdpSocket::bind(SocketAddr::new(*a, 0)).unwrap();
                    s.connect(to).unwrap();
                    s
                })
                .collect();
            let mut r = FloodReport::default();
            let start = Instant::now();
            for i in 0..n {
                if i % 4096 == 0 && (stop.load(Ordering::Relaxed) || start.elapsed() > limit) {
                    break;
                }
                let s = &socks[(i as usize) % socks.len()];
                match s.send(&payloads[(i as usize) % payloads.len()]) {
                    Ok(_) => r.sent += 1,
                    Err(_) => r.send_errors += 1,
                }
            }
            r.took = start.elapsed();
            r
        })
    })
}

#[derive(Debug, Default)]
struct LegitReport {
    sent: usize,
    granted: usize,
    latencies: Vec<Duration>,
}

/// Knock every 100 ms from the client's own address, each knock for a port of its own (so
/// each grant is seen on its own), and time knock → TCP SYN through the gate (an RST from the
/// port nobody listens on is the proof the SYN passed; a closed gate drops it silently).
fn legit_knocks(
    lab: &Lab,
    key: NativeKey,
    base_port: u16,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<LegitReport> {
    let cli = lab.cli.clone();
    thread::spawn(move || {
        in_ns(&cli, move || {
            let me: IpAddr = CLI4.parse().unwrap();
            let s = UdpSocket::bind(SocketAddr::new(me, 0)).unwrap();
            let mut r = LegitReport::default();
            let mut next = Instant::now();
            while !stop.load(Ordering::SeqCst) && r.sent < 1000 {
                let now = Instant::now();
                if now < next {
                    thread::sleep(next - now);
                }
                next += Duration::from_millis(100);
                let port = base_port + r.sent as u16;
                let pkt = seal(&key, tcp(port), me);
                let t = Instant::now();
                s.send_to(&pkt, sock(SRV4, KNOCK_PORT)).unwrap();
                r.sent += 1;
                let target = sock(SRV4, port);
                while t.elapsed() < Duration::from_secs(1) {
                    // An RST comes back in well under a millisecond on the veth: 1 ms tells a
                    // dropped SYN from a passed one, and bounds the latency's resolution.
                    match TcpStream::connect_timeout(&target, Duration::from_millis(1)) {
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                        Err(_) => continue,
                    }
                    r.granted += 1;
                    r.latencies.push(t.elapsed());
                    break;
                }
            }
            r
        })
    })
}

/// Junk from 200 sources at the speed of one sender thread, while a legitimate client knocks
/// every 100 ms: every legitimate knock is granted within 1 s, and the daemon's memory stays
/// flat. The per-source limit drops most of the flood in the kernel.
#[test]
fn junk_flood_does_not_starve_legit_knocks_or_grow_memory() {
    junk_flood(20, 1.0);
}

/// The same flood with the per-source limit off (`rate_limit = 0`): every junk packet reaches
/// the queue, as from a botnet too large for the limit to matter. The daemon must keep up well
/// enough that at least 90 % of legitimate knocks are granted, with flat memory.
#[test]
fn junk_flood_without_rate_limit_reaches_the_daemon_and_legit_knocks_still_pass() {
    junk_flood(0, 0.9);
}

fn junk_flood(rate_limit: u32, legit_min: f64) {
    let lab = Lab::new();
    let key_path = lab.keygen("alice.key");
    let base_port = 30000u16;
    // Each legitimate knock opens its own port: protect and allow 30000..30399.
    let ports: Vec<String> = (0..400)
        .map(|i| format!("\"tcp/{}\"", base_port + i))
        .collect();
    let ports = ports.join(", ");
    write_config(
        &lab,
        &format!("protect = [{ports}]\nmax_age = 120\nrate_limit = {rate_limit}\n"),
        &alice(&key_path, &ports, 60),
    );
    // Production log level: rejected junk is logged at debug, i.e. not at all.
    let d = Daemon::start(
        &lab,
        &[],
        &lab.path("nfknock.toml"),
        &[],
        "info",
        "flood.log",
    );
    let pid = d.pid();
    let key = nfknock::config::read_native_key_file(
        &nfknock::sys::FsLoader,
        &key_path,
        nfknock::sys::euid(),
    )
    .unwrap();
    let sources = add_flood_sources(&lab, 200);
    let (n, limit) = flood_bounds();

    let (rss0, hwm0) = memory_kib(pid);
    let q0 = queue_stats(&lab, 3);
    let stop = Arc::new(AtomicBool::new(false));
    let legit = legit_knocks(&lab, key, base_port, stop.clone());
    let flooder = flood(&lab, sources, n, limit, stop.clone());
    let mut rss_max = rss0;
    while !flooder.is_finished() {
        thread::sleep(Duration::from_millis(250));
        rss_max = rss_max.max(memory_kib(pid).0);
    }
    let f = flooder.join().unwrap();
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let mut l = legit.join().unwrap();
    let q1 = queue_stats(&lab, 3);
    let (rss1, hwm1) = memory_kib(pid);
    let rate = nft_out(&lab, &["list", "set", "inet", "nfknock", "knock_rate_v4"]);
    let tracked = rate.matches("10.77.0.").count();

    let queued = q1.queued_total - q0.queued_total;
    let lat_med = if l.latencies.is_empty() {
        Duration::ZERO
    } else {
        median(&mut l.latencies)
    };
    let lat_max = l.latencies.iter().max().copied().unwrap_or_default();
    eprintln!(
        "FIGURE junk flood (rate_limit = {rate_limit}): sent {} packets ({} send errors) from 200 sources in {:?} = {:.0} pkt/s; \
         kernel queued {queued} to the daemon ({} dropped: queue full, {} user-dropped), {tracked} sources rate-tracked; \
         legit knocks granted {}/{} ({:.1} %), knock → TCP open median {lat_med:?} max {lat_max:?}; \
         daemon VmRSS {rss0} → max {rss_max} → {rss1} KiB, VmHWM {hwm0} → {hwm1} KiB",
        f.sent,
        f.send_errors,
        f.took,
        f.sent as f64 / f.took.as_secs_f64(),
        q1.dropped_full - q0.dropped_full,
        q1.user_dropped - q0.user_dropped,
        l.granted,
        l.sent,
        100.0 * l.granted as f64 / l.sent.max(1) as f64,
    );
    assert!(f.sent >= n.min(100_000), "the flood did not flood: {f:?}");
    assert!(l.sent >= 10, "too few legitimate knocks to judge: {l:?}");
    assert!(
        l.granted as f64 >= legit_min * l.sent as f64,
        "legitimate knocks starved by the flood: {}/{}",
        l.granted,
        l.sent
    );
    assert!(
        rss_max.saturating_sub(rss0) < 8 * 1024,
        "RSS grew {rss0} → {rss_max} KiB"
    );
    assert!(
        hwm1.saturating_sub(hwm0) < 8 * 1024,
        "peak RSS grew {hwm0} → {hwm1} KiB"
    );
    let log = d.log();
    assert!(!log.contains("ERROR"), "{log}");
}

/// The kernel's per-source limit (20/s, burst 40) drops a one-source flood in prerouting: the
/// queue sees about 40 of 20 000 packets, the source is tracked in `knock_rate_v4`, and the
/// same source knocks successfully a moment later.
#[test]
fn per_source_rate_limit_drops_a_single_source_flood_before_the_queue() {
    let (lab, key) = started(5);
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let q0 = queue_stats(&lab, 3);
    let stop = Arc::new(AtomicBool::new(false));
    let f = flood(
        &lab,
        vec![CLI4.parse().unwrap()],
        20_000,
        Duration::from_secs(20),
        stop,
    )
    .join()
    .unwrap();
    thread::sleep(Duration::from_millis(300));
    let q1 = queue_stats(&lab, 3);
    let queued = q1.queued_total - q0.queued_total;
    let allowed = 40 + (20.0 * (f.took + Duration::from_millis(300)).as_secs_f64()).ceil() as u64;
    eprintln!("FIGURE single-source flood: {} packets in {:?}, {queued} reached the queue (limit allows ≤ {allowed})", f.sent, f.took);
    assert!(f.sent >= 19_000, "{f:?}");
    assert!(
        queued <= allowed,
        "{queued} of {} packets reached the queue",
        f.sent
    );
    let rate = nft_out(&lab, &["list", "set", "inet", "nfknock", "knock_rate_v4"]);
    assert!(
        rate.contains(CLI4),
        "source not tracked by the limit:\n{rate}"
    );
    // The bucket refills at 20/s: the flooding source's own knock gets through a second later.
    thread::sleep(Duration::from_secs(1));
    knock_host(&lab, &key, &[]);
    assert!(
        wait_until(OPEN_WITHIN, || client_open(&lab)).is_some(),
        "{}",
        lab.log()
    );
}

/// Issue item 7: IPv6 knocks are rate limited per /64 (`rate_limit_v6_prefix = 64`), so a
/// host flooding from 20 addresses of its /64 gets one budget (burst 40, then 20/s) to the
/// queue, not 20 of them; the /64 is one element of `knock_rate_v6`; and a client in another
/// /64 knocks and connects while the flood goes on.
#[test]
fn ipv6_flood_from_many_addresses_of_one_slash_64_shares_one_rate_limit() {
    let (lab, key) = started(5);
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let sources = add_flood_sources_v6(&lab, 20);
    let q0 = queue_stats(&lab, 3);
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = flood(
        &lab,
        sources,
        u64::MAX,
        Duration::from_secs(20),
        stop.clone(),
    );
    thread::sleep(Duration::from_millis(300));
    // A client of another /64 (the stranger's fd78::/64) knocks during the flood.
    lab.knock(
        &lab.oth,
        SRV_OTH6,
        &["--key-file", key.to_str().unwrap(), "--access", "tcp/2222"],
    );
    let opened = wait_until(OPEN_WITHIN, || {
        tcp_open(
            &lab.oth,
            sock(SRV_OTH6, HOST_PORT),
            Duration::from_millis(300),
        )
    });
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let f = flooder.join().unwrap();
    thread::sleep(Duration::from_millis(300));
    let queued = queue_stats(&lab, 3).queued_total - q0.queued_total;
    // One budget for the whole /64, plus the one knock from fd78::/64.
    let allowed =
        40 + (20.0 * (f.took + Duration::from_millis(300)).as_secs_f64()).ceil() as u64 + 1;
    let rate = nft_out(&lab, &["list", "set", "inet", "nfknock", "knock_rate_v6"]);
    eprintln!(
        "FIGURE v6 /64 flood: {} packets from 20 addresses in {:?}, {queued} reached the queue (limit allows ≤ {allowed})",
        f.sent, f.took
    );
    assert!(f.sent >= 19_000, "the flood did not flood: {f:?}");
    assert!(
        queued <= allowed,
        "{queued} of {} packets from one /64 reached the queue (one /64 budget allows {allowed}):\n{rate}",
        f.sent
    );
    assert!(
        rate.contains("fd77:: limit rate") && !rate.contains("fd77::1"),
        "the /64 must be one element, keyed by its network address:\n{rate}"
    );
    assert!(
        opened.is_some(),
        "a knock from another /64 did not open the port during the flood:\n{}",
        lab.log()
    );
}

#[test]
fn skewed_clock_is_refused_and_the_log_names_the_skew() {
    let (lab, key) = started(5);
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    knock_host(&lab, &key, &["--time-offset", "-3000"]);
    assert!(
        wait_until(Duration::from_secs(2), || lab.log().contains("skew=-3000")).is_some(),
        "skew not in the log:\n{}",
        lab.log()
    );
    assert_eq!(rejections(&lab.log(), "stale"), 1, "{}", lab.log());
    // The client is named too: the operator knows whose clock to fix.
    assert!(
        lab.log()
            .lines()
            .any(|l| l.contains("skew=-3000") && l.contains("alice")),
        "{}",
        lab.log()
    );
    assert!(
        !client_open(&lab),
        "a knock 50 minutes stale opened the port"
    );
}

/// `n` fwknop clients open to every source (`sources` left at its default), each with its own
/// random keys: fwknop packets carry no key hint, so every fwknop-shaped packet is tried under
/// all of them — the costliest packet there is.
fn wide_open_fwknop_clients(n: usize) -> String {
    use base64::Engine as _;
    let b64 = |len: usize| {
        let mut k = vec![0u8; len];
        OsRng.fill(&mut k);
        base64::engine::general_purpose::STANDARD.encode(k)
    };
    (0..n)
        .map(|i| {
            format!(
                "[[client]]\nname = \"fw{i}\"\nallow = [\"tcp/{HOST_PORT}\"]\n[client.fwknop]\n\
                 key_base64 = \"{}\"\nhmac_key_base64 = \"{}\"\nhmac = \"sha256\"\nmode = \"cbc\"\n\n",
                b64(32),
                b64(64)
            )
        })
        .collect()
}

/// Send fwknop-shaped junk (base64 text of an fwknop SPA's length, starting like a Rijndael
/// packet, so it passes every cheap check and costs one HMAC per fwknop client) from `sources`
/// in the client namespace to the server's IPv6 knock port, as fast as one thread can, until
/// `stop`, `limit` or `max` packets.
fn fwknop_junk_flood(
    lab: &Lab,
    sources: Vec<IpAddr>,
    max: u64,
    limit: Duration,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<FloodReport> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let payloads: Vec<Vec<u8>> = (0..256)
        .map(|_| {
            let mut p = vec![0u8; 200];
            OsRng.fill(&mut p);
            for c in p.iter_mut() {
                *c = ALPHABET[usize::from(*c) % 64];
            }
            p[0] = b'8';
            p
        })
        .collect();
    let cli = lab.cli.clone();
    thread::spawn(move || {
        in_ns(&cli, move || {
            let to = sock(SRV6, KNOCK_PORT);
            let socks: Vec<UdpSocket> = sources
                .iter()
                .map(|a| {
                    let s = UdpSocket::bind(SocketAddr::new(*a, 0)).unwrap();
                    s.connect(to).unwrap();
                    s
                })
                .collect();
            let mut r = FloodReport::default();
            let start = Instant::now();
            for i in 0..max {
                if i % 1024 == 0 && (stop.load(Ordering::Relaxed) || start.elapsed() > limit) {
                    break;
                }
                let s = &socks[(i as usize) % socks.len()];
                match s.send(&payloads[(i as usize) % payloads.len()]) {
                    Ok(_) => r.sent += 1,
                    Err(_) => r.send_errors += 1,
                }
            }
            r.took = start.elapsed();
            r
        })
    })
}

/// Issue "security", item 5: a flood that outpaces the daemon — fwknop-shaped junk from many
/// IPv6 sources against many wide-open fwknop clients, with the per-source limit off — fills
/// the queue, and still a flushed ruleset is repaired within 1 s and SIGTERM ends the daemon
/// within 1 s (the loop serves them between bursts instead of draining the queue first).
#[test]
fn a_flood_that_saturates_the_queue_neither_delays_a_flush_repair_nor_sigterm() {
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::new();
    let config = write_config(
        &lab,
        &format!("protect = [\"tcp/{HOST_PORT}\"]\nmax_age = 120\nrate_limit = 0\n"),
        &wide_open_fwknop_clients(200),
    );
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut d = Daemon::start(&lab, &[], &config, &[], "info", "saturated.log");
    // 48 sources on the client's veth: fd77::100 … fd77::12f.
    let batch = lab.path("v6addrs.batch");
    let sources: Vec<IpAddr> = (0..48u16)
        .map(|i| format!("fd77::{:x}", 0x100 + i).parse().unwrap())
        .collect();
    let text: String = sources
        .iter()
        .map(|a| format!("addr add {a}/64 dev to-srv nodad\n"))
        .collect();
    std::fs::write(&batch, text).unwrap();
    let out = lab.run(&lab.cli, &["ip", "-batch", batch.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = sources
        .chunks(16)
        .map(|c| {
            fwknop_junk_flood(
                &lab,
                c.to_vec(),
                20_000_000,
                Duration::from_secs(60),
                stop.clone(),
            )
        })
        .collect();
    let finish = |stop: &AtomicBool, senders: Vec<thread::JoinHandle<FloodReport>>| {
        stop.store(true, Ordering::SeqCst);
        senders
            .into_iter()
            .map(|s| s.join().unwrap())
            .collect::<Vec<_>>()
    };

    // Saturated: a backlog of thousands waits in the queue and the kernel drops for want of room.
    let q0 = queue_stats(&lab, 3);
    let saturated = wait_until(Duration::from_secs(20), || {
        let q = queue_stats(&lab, 3);
        q.waiting >= 10_000 && q.dropped_full > q0.dropped_full
    });
    let q = queue_stats(&lab, 3);
    if saturated.is_none() {
        let r = finish(&stop, senders);
        panic!("the flood did not saturate the queue: {q:?}, {r:?}");
    }
    eprintln!("FIGURE saturated queue: {q:?}");

    // A flush is repaired within 1 s while the backlog is still there.
    let out = lab.run(&lab.srv, &["nft", "flush", "ruleset"]);
    assert!(out.status.success());
    let flushed = Instant::now();
    let repaired = wait_until(Duration::from_secs(5), || {
        nft_out(&lab, &["list", "chain", "inet", "nfknock", "gate_input"]).contains("queue num 3")
    });
    let backlog = queue_stats(&lab, 3).waiting;
    eprintln!("FIGURE flush repaired under the flood after {repaired:?} (backlog {backlog})");
    if repaired.is_none_or(|t| t > Duration::from_secs(1)) {
        let r = finish(&stop, senders);
        panic!(
            "flush not repaired within 1 s under the flood ({:?}): {r:?}",
            flushed.elapsed()
        );
    }

    // The flood fills the queue again; SIGTERM ends the daemon within 1 s all the same.
    thread::sleep(Duration::from_millis(500));
    let q = queue_stats(&lab, 3);
    let mut child = d.child.take().unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let asked = Instant::now();
    let exited = wait_until(Duration::from_secs(5), || {
        child.try_wait().ok().flatten().is_some()
    });
    let took = asked.elapsed();
    if exited.is_none() {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let r = finish(&stop, senders);
    eprintln!(
        "FIGURE SIGTERM under the flood (backlog {}): exited after {took:?}; senders {r:?}",
        q.waiting
    );
    assert!(
        q.waiting >= 1_000,
        "the queue was not saturated at SIGTERM: {q:?}"
    );
    assert!(
        exited.is_some_and(|t| t <= Duration::from_secs(1)),
        "SIGTERM took {took:?} under the flood"
    );
    assert!(status.success(), "exit status {status}\n{}", d.log());
}

/// Issue "security", item 4: another program (fwknopd, an IDS) holding the configured NFQUEUE
/// number makes `nfknock serve` exit 2 before it changes anything in nftables (it used to
/// install the gate first and only then fail to bind the queue).
#[test]
fn a_foreign_program_on_the_queue_makes_serve_exit_2_before_any_nftables_change() {
    use nfknock::netfilter::queue::{Queue, QueueConfig};
    let lab = Lab::new();
    let key = lab.keygen("alice.key");
    let config = write_config(&lab, DEFAULT_SERVER, &alice(&key, "\"tcp/2222\"", 5));
    let _other = in_ns(&lab.srv, || {
        Queue::open(QueueConfig {
            num: 3,
            ..QueueConfig::default()
        })
        .unwrap()
    });
    let out = lab.nfknock(&lab.srv, &["serve", "--config", config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("NFQUEUE 3") && err.contains("another process holds it"),
        "{err}"
    );
    let ruleset = nft_out(&lab, &["list", "ruleset"]);
    assert!(
        !ruleset.contains("nfknock"),
        "serve changed the ruleset before it failed:\n{ruleset}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. least privilege

const CAP_NET_ADMIN_ONLY: u64 = 1 << 12;

fn caps(status: &HashMap<String, String>, set: &str) -> u64 {
    u64::from_str_radix(&status[set], 16).unwrap()
}

/// The capability sets and NoNewPrivs of a running daemon, and the proof it holds no socket
/// of an internet family: none of its socket inodes appears in its namespace's tcp/udp/raw
/// tables, while its netlink sockets do appear in the netlink table.
fn assert_least_privilege(pid: u32) {
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
        inodes.len() >= 3,
        "expected the queue, nft and event netlink sockets, found {inodes:?}"
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
        nl >= 3,
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
            server_table(&state, "nobody", DEFAULT_SERVER),
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
    // The client's copy of the key is root's (the knock runs as root here).
    let client_key = lab.path("client.key");
    std::fs::copy(&key, &client_key).unwrap();
    std::fs::set_permissions(&client_key, std::fs::Permissions::from_mode(0o600)).unwrap();
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
fn test_user() -> (u32, u32) {
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
        let table = server_table(&state, user, DEFAULT_SERVER);
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
    let client_key = lab.path("client.key");
    std::fs::copy(&key, &client_key).unwrap();
    std::fs::set_permissions(&client_key, std::fs::Permissions::from_mode(0o600)).unwrap();
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
    let config = write_config(&lab, DEFAULT_SERVER, &alice(&key, "\"tcp/2222\"", 5));
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
    let config = write_config(&lab, DEFAULT_SERVER, &alice(&key, "\"tcp/2222\"", 5));
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

// ---------------------------------------------------------------------------------------------
// 5. dry run

#[test]
fn dry_run_installs_no_gate_and_writes_no_grant() {
    let lab = Lab::new();
    let key = lab.keygen("alice.key");
    let config = write_config(&lab, DEFAULT_SERVER, &alice(&key, "\"tcp/2222\"", 30));
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    assert!(
        client_open(&lab) && stranger_open(&lab),
        "the lab port is not open to begin with"
    );

    let mut d = Daemon::start(&lab, &[], &config, &["--dry-run"], "debug", "dry.log");
    assert!(d.log().contains("no gate is installed"), "{}", d.log());
    let chain = nft_out(&lab, &["list", "chain", "inet", "nfknock", "gate_input"]);
    assert!(
        chain.contains("queue num 3") && !chain.contains("@allow"),
        "{chain}"
    );
    assert!(
        client_open(&lab) && stranger_open(&lab),
        "a dry run closed the port"
    );

    knock_host(&lab, &key, &[]);
    assert!(
        wait_until(Duration::from_secs(2), || d
            .log()
            .contains("dry run: would add grant"))
        .is_some(),
        "{}",
        d.log()
    );
    assert!(
        d.log()
            .lines()
            .any(|l| l.contains("would add grant") && l.contains(CLI4) && l.contains("tcp/2222")),
        "{}",
        d.log()
    );
    assert!(
        !nft_out(&lab, &["list", "set", "inet", "nfknock", "allow_v4"]).contains(CLI4),
        "a dry run wrote a grant"
    );
    assert!(
        client_open(&lab) && stranger_open(&lab),
        "the port closed after a dry-run knock"
    );
    // A flush during a dry run restores the gateless table, and no grant.
    lab.run(&lab.srv, &["nft", "flush", "ruleset"]);
    assert!(wait_until(RESTORED_WITHIN, || nft_out(
        &lab,
        &["list", "chain", "inet", "nfknock", "gate_input"]
    )
    .contains("queue"))
    .is_some());
    assert!(!nft_out(&lab, &["list", "set", "inet", "nfknock", "allow_v4"]).contains(CLI4));
    assert!(stranger_open(&lab));
    assert!(d.stop().success());
}

#[test]
fn dry_run_with_gate_closes_the_port_and_a_valid_knock_opens_nothing() {
    let lab = Lab::new();
    let key = lab.keygen("alice.key");
    let config = write_config(&lab, DEFAULT_SERVER, &alice(&key, "\"tcp/2222\"", 30));
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));

    let mut d = Daemon::start(
        &lab,
        &[],
        &config,
        &["--dry-run", "--with-gate"],
        "debug",
        "dry-gate.log",
    );
    assert!(d.log().contains("gate installed"), "{}", d.log());
    assert!(
        !client_open(&lab) && !stranger_open(&lab),
        "--with-gate left the port open"
    );
    knock_host(&lab, &key, &[]);
    assert!(
        wait_until(Duration::from_secs(2), || d
            .log()
            .contains("dry run: would add grant"))
        .is_some(),
        "{}",
        d.log()
    );
    thread::sleep(Duration::from_millis(300));
    assert!(!client_open(&lab), "a dry-run knock opened the port");
    assert!(d.stop().success());

    // --with-gate alone is a usage error.
    let out = lab.nfknock(
        &lab.srv,
        &["serve", "--config", config.to_str().unwrap(), "--with-gate"],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
