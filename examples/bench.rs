//! `scripts/bench` driver: nfknock and Debian's fwknopd side by side, in network namespaces this
//! program creates (and removes), against the real kernel.
//!
//! ```text
//! cargo build --release --example bench && sudo target/release/examples/bench [--quick] [--json PATH]
//! ```
//!
//! A grant is observed where it takes effect: in the kernel's ruleset. A thread in the server
//! namespace subscribes to nftables events (`NFNLGRP_NFTABLES`) and timestamps every new
//! element of `inet nfknock allow_v4` (nfknock) and every new rule of `ip filter FWKNOP_INPUT`
//! (fwknopd, whose iptables is iptables-nft). Knocks are built with the library
//! (`wire::native::seal`, `wire::fwknop::seal`, the fwknop client's wire format) and checked
//! once with the real `fwknop` client. Every figure is printed as a markdown table and, with
//! `--json`, written as JSON. Nothing is asserted: BENCHMARKS.md interprets the figures.
//!
//! Scenarios (each for both daemons unless said otherwise):
//! 1. knock → open latency (kernel event, and the client's first successful TCP connect);
//! 2. sustained grants/s from many distinct allow-IPs;
//! 3. junk flood at increasing rates, with a legitimate knock every 50 ms;
//!    for nfknock also with native-length junk, kernel prefilter on and off (`--only prefilter`:
//!    the `junk_native` counter, queue counters, daemon CPU per junk packet);
//! 4. scale (nfknock): per-packet cost with 1/1 000/10 000 clients and 0/100 000 live grants;
//! 5. memory: VmRSS idle, under flood, at 10 000 clients + 100 000 grants; fwknopd idle.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use nfknock::access::{Access, Proto};
use nfknock::crypto::{NativeKey, Rng};
use nfknock::netfilter::netlink as nl;
use nfknock::netfilter::nft::uapi as nft_uapi;
use nfknock::sys::OsRng;
use nfknock::wire::fwknop::{self, DigestType, EncMode, FwknopKey, HmacType, SealRequest};
use nfknock::wire::native;

const SERVICE: Access = Access {
    proto: Proto::Tcp,
    port: lab::SERVICE_PORT,
};
/// NFQUEUE number of the nfknock runs (read back with `queue::kernel_stats`).
const QUEUE: u16 = 7;
/// Junk sender threads in the flood scenario.
const SENDERS: usize = 2;
/// Source addresses the legitimate knocks of a flood ladder rotate over: more than one ladder
/// sends (9 steps × 30 knocks for fwknopd, 6 × 60 for nfknock), so none is used twice.
const LEGIT_SOURCES: usize = 400;
/// A legitimate knock this often during each flood step, for nfknock...
const NFKNOCK_LEGIT_EVERY: Duration = Duration::from_millis(50);
/// ... and for fwknopd, whose grant path (two or three `iptables` forks per grant, ≈ 37
/// grants/s at best here) must not be what the junk rows measure.
const FWKNOPD_LEGIT_EVERY: Duration = Duration::from_millis(100);
/// Nice value of the grant watcher and of the thread sending the legit knocks in the prefilter
/// ladders (see [`Watcher::start_nice`]): the instruments, not the daemon or the junk senders.
const WATCHER_NICE: i32 = -10;
/// Pause between filling the allow set and measuring it (see `run_scale`).
const SETTLE: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// The lab
// ---------------------------------------------------------------------------------------------

/// Two namespaces joined by a veth: `srv` (10.66.0.1/16, the daemon, a TCP service on :2222)
/// and `cli` (10.66.0.2/16 plus a pool of extra addresses 10.66.2.1 … used as knock sources and
/// allow-IPs). Names are unique per process and run; everything is removed on drop.
mod lab {
    use super::*;

    pub const SRV: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 1);
    pub const SERVICE_PORT: u16 = 2222;
    pub const KNOCK_PORT: u16 = 62201;
    /// The server's end of the veth (fwknopd sniffs it).
    pub const SRV_DEV: &str = "to-cli";
    const CLI_DEV: &str = "to-srv";

    /// The `i`-th extra client address.
    pub fn pool_addr(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 66, 2 + (i / 250) as u8, 1 + (i % 250) as u8)
    }

    pub fn knock_dst() -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(SRV, KNOCK_PORT))
    }

    pub struct Lab {
        pub srv: String,
        pub cli: String,
        pub dir: PathBuf,
        service_stop: Arc<AtomicBool>,
    }

    fn ns_path(ns: &str) -> String {
        format!("/run/netns/{ns}")
    }

    /// Enter network namespace `ns` (this thread only).
    pub fn enter(ns: &str) -> Result<()> {
        let f = std::fs::File::open(ns_path(ns)).with_context(|| format!("open namespace {ns}"))?;
        // SAFETY: setns on a valid namespace descriptor; affects only the calling thread.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns {ns}: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Run `f` on a thread inside `ns` and wait for it.
    pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let ns = ns.to_string();
        thread::spawn(move || enter(&ns).map(|()| f()))
            .join()
            .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
    }

    /// Run a command, fail with its stderr.
    pub fn sh(args: &[&str]) -> Result<String> {
        let out = Command::new(args[0])
            .args(&args[1..])
            .output()
            .with_context(|| format!("run {}", args[0]))?;
        if !out.status.success() {
            bail!(
                "{} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn sh_stdin(args: &[&str], input: &str) -> Result<()> {
        use std::io::Write;
        let mut child = Command::new(args[0])
            .args(&args[1..])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "{} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    impl Lab {
        /// Build a lab with `pool` extra client addresses (≤ 2 500).
        pub fn new(tag: &str, pool: usize) -> Result<Lab> {
            let base = format!("nfkb-{}-{tag}", std::process::id());
            let (srv, cli) = (format!("{base}-srv"), format!("{base}-cli"));
            let dir =
                std::env::temp_dir().join(format!("nfknock-bench-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
            let lab = Lab {
                srv,
                cli,
                dir,
                service_stop: Arc::new(AtomicBool::new(false)),
            };
            for n in [&lab.srv, &lab.cli] {
                let _ = sh(&["ip", "netns", "del", n]);
                sh(&["ip", "netns", "add", n])?;
                sh(&["ip", "-n", n, "link", "set", "lo", "up"])?;
            }
            sh(&[
                "ip", "link", "add", SRV_DEV, "netns", &lab.srv, "type", "veth", "peer", "name",
                CLI_DEV, "netns", &lab.cli,
            ])?;
            sh(&[
                "ip",
                "-n",
                &lab.srv,
                "addr",
                "add",
                "10.66.0.1/16",
                "dev",
                SRV_DEV,
            ])?;
            sh(&[
                "ip",
                "-n",
                &lab.cli,
                "addr",
                "add",
                "10.66.0.2/16",
                "dev",
                CLI_DEV,
            ])?;
            let mut batch = String::new();
            for i in 0..pool {
                let _ = writeln!(batch, "addr add {}/16 dev {CLI_DEV}", pool_addr(i));
            }
            sh_stdin(&["ip", "-n", &lab.cli, "-batch", "-"], &batch)?;
            sh(&["ip", "-n", &lab.srv, "link", "set", SRV_DEV, "up"])?;
            sh(&["ip", "-n", &lab.cli, "link", "set", CLI_DEV, "up"])?;
            // Resolve every pool address on the server side up front, so no SYN-ACK of the
            // client-view probe waits for ARP.
            let link = sh(&["ip", "-n", &lab.cli, "link", "show", CLI_DEV])?;
            let mac = link
                .split_whitespace()
                .skip_while(|w| *w != "link/ether")
                .nth(1)
                .context("client MAC")?
                .to_string();
            let mut neigh =
                format!("neigh replace 10.66.0.2 lladdr {mac} dev {SRV_DEV} nud permanent\n");
            for i in 0..pool {
                let _ = writeln!(
                    neigh,
                    "neigh replace {} lladdr {mac} dev {SRV_DEV} nud permanent",
                    pool_addr(i)
                );
            }
            sh_stdin(&["ip", "-n", &lab.srv, "-batch", "-"], &neigh)?;
            lab.start_service()?;
            Ok(lab)
        }

        /// A TCP service on srv:2222 that accepts and closes (the thing a knock opens).
        fn start_service(&self) -> Result<()> {
            let stop = self.service_stop.clone();
            let srv = self.srv.clone();
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                let l = enter(&srv).and_then(|()| {
                    let l = std::net::TcpListener::bind(("0.0.0.0", SERVICE_PORT))?;
                    l.set_nonblocking(true)?;
                    Ok(l)
                });
                let l = match l {
                    Ok(l) => {
                        let _ = tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok(_) => {}
                        Err(_) => thread::sleep(Duration::from_millis(2)),
                    }
                }
            });
            rx.recv()?
        }

        pub fn run(&self, ns: &str, args: &[&str]) -> Result<String> {
            let mut all = vec!["ip", "netns", "exec", ns];
            all.extend_from_slice(args);
            sh(&all)
        }

        /// UDP sockets in the client namespace, bound to pool addresses `from..from+n` and
        /// connected to the knock port.
        pub fn udp_sockets(&self, from: usize, n: usize) -> Result<Vec<UdpSocket>> {
            in_ns(&self.cli, move || -> Result<Vec<UdpSocket>> {
                (from..from + n)
                    .map(|i| {
                        let s = UdpSocket::bind((pool_addr(i), 0))?;
                        s.connect(knock_dst())?;
                        Ok(s)
                    })
                    .collect()
            })?
        }
    }

    impl Drop for Lab {
        fn drop(&mut self) {
            self.service_stop.store(true, Ordering::Relaxed);
            for n in [&self.srv, &self.cli] {
                let _ = sh(&["ip", "netns", "del", n]);
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

use lab::{in_ns, pool_addr, Lab};

// ---------------------------------------------------------------------------------------------
// Grants as the kernel sees them
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Nfknock,
    Fwknopd,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Nfknock => "nfknock",
            Peer::Fwknopd => "fwknopd",
        }
    }
}

/// Subscription to nftables events in the server namespace: every grant with the time the
/// event was received (one thread blocked in `recv`, so the delay is one wake-up).
struct Watcher {
    rx: mpsc::Receiver<(Instant, Ipv4Addr)>,
    seen: HashMap<Ipv4Addr, Instant>,
    /// Grants seen so far and the time of the latest.
    total: usize,
    last: Option<Instant>,
    /// ENOBUFS on the event socket: events were lost (counts would be low).
    lost: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn nl_socket(groups: u32) -> Result<OwnedFd> {
    // SAFETY: plain socket(2); owned right away.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_NETFILTER,
        )
    };
    if raw < 0 {
        bail!("netlink socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: zeroed sockaddr_nl is valid.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = groups;
    // SAFETY: addr is a valid sockaddr_nl.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if rc != 0 {
        bail!("bind netlink: {}", std::io::Error::last_os_error());
    }
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 64 << 20);
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: tv is a valid timeval of the given size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
    Ok(fd)
}

fn setsockopt(fd: &OwnedFd, level: i32, name: i32, v: i32) {
    // SAFETY: v is a c_int and its size is passed.
    unsafe {
        libc::setsockopt(fd.as_raw_fd(), level, name, (&v as *const i32).cast(), 4);
    }
}

/// The allow-IP of a new `allow_v4` element, for each element of a NEWSETELEM message.
fn nfknock_grants(body: &[u8], out: &mut Vec<Ipv4Addr>) {
    if nl::attr(body, nft_uapi::NFTA_SET_ELEM_LIST_TABLE).map(nl::str_attr)
        != Some(b"nfknock".as_slice())
        || nl::attr(body, nft_uapi::NFTA_SET_ELEM_LIST_SET).map(nl::str_attr)
            != Some(b"allow_v4".as_slice())
    {
        return;
    }
    let Some(list) = nl::attr(body, nft_uapi::NFTA_SET_ELEM_LIST_ELEMENTS) else {
        return;
    };
    for (_, elem) in nl::attrs(list) {
        let key = nl::attr(elem, nft_uapi::NFTA_SET_ELEM_KEY)
            .and_then(|k| nl::attr(k, nft_uapi::NFTA_DATA_VALUE));
        if let Some((std::net::IpAddr::V4(a), _)) =
            key.and_then(|k| nfknock::netfilter::nft::decode_key(k, false))
        {
            out.push(a);
        }
    }
}

/// The source address matched by a new rule of `ip filter FWKNOP_INPUT` (iptables-nft encodes
/// `-s A/32` as `payload load 4b @ network header + 12` followed by `cmp eq A`).
fn fwknopd_grant(body: &[u8]) -> Option<Ipv4Addr> {
    const NFTA_PAYLOAD_BASE: u16 = 2;
    const NFTA_PAYLOAD_OFFSET: u16 = 3;
    const NFTA_PAYLOAD_LEN: u16 = 4;
    const NFTA_CMP_DATA: u16 = 3;
    if nl::attr(body, nft_uapi::NFTA_RULE_TABLE).map(nl::str_attr) != Some(b"filter".as_slice())
        || nl::attr(body, nft_uapi::NFTA_RULE_CHAIN).map(nl::str_attr)
            != Some(b"FWKNOP_INPUT".as_slice())
    {
        return None;
    }
    let mut saddr_loaded = false;
    for (_, e) in nl::attrs(nl::attr(body, nft_uapi::NFTA_RULE_EXPRESSIONS)?) {
        let name = nl::str_attr(nl::attr(e, nft_uapi::NFTA_EXPR_NAME)?);
        let data = nl::attr(e, nft_uapi::NFTA_EXPR_DATA).unwrap_or(&[]);
        let is = |t, v: u32| nl::attr(data, t) == Some(v.to_be_bytes().as_slice());
        match name {
            b"payload" => {
                saddr_loaded = is(NFTA_PAYLOAD_BASE, 1)
                    && is(NFTA_PAYLOAD_OFFSET, 12)
                    && is(NFTA_PAYLOAD_LEN, 4)
            }
            b"cmp" if saddr_loaded => {
                let v = nl::attr(nl::attr(data, NFTA_CMP_DATA)?, nft_uapi::NFTA_DATA_VALUE)?;
                let o: [u8; 4] = v.try_into().ok()?;
                return Some(Ipv4Addr::from(o));
            }
            _ => saddr_loaded = false,
        }
    }
    None
}

impl Watcher {
    fn start(lab: &Lab, peer: Peer) -> Result<Watcher> {
        Watcher::start_nice(lab, peer, None)
    }

    /// [`Watcher::start`], the watching thread at `nice` (e.g. -10): the grant's timestamp is
    /// taken when this thread returns from `recv`, so where junk senders keep both CPUs busy a
    /// watcher at the senders' priority waits for a CPU and adds its own wait to the latency.
    fn start_nice(lab: &Lab, peer: Peer, nice: Option<i32>) -> Result<Watcher> {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let lost = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s, srv) = (lost.clone(), stop.clone(), lab.srv.clone());
        thread::spawn(move || {
            if let Some(n) = nice {
                set_thread_nice(n);
            }
            let fd =
                match lab::enter(&srv).and_then(|()| nl_socket(1 << (nl::NFNLGRP_NFTABLES - 1))) {
                    Ok(fd) => {
                        let _ = ready_tx.send(Ok(()));
                        fd
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
            let mut buf = vec![0u8; 1 << 20];
            let mut found = Vec::new();
            while !s.load(Ordering::Relaxed) {
                // SAFETY: buf is writable for its length.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                let t = Instant::now();
                if n < 0 {
                    if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
                        l.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                found.clear();
                for m in nl::messages(&buf[..n as usize]).map_while(Result::ok) {
                    if m.ty >> 8 != nl::NFNL_SUBSYS_NFTABLES {
                        continue;
                    }
                    let Some((_, body)) = nl::nfgen(m.payload) else {
                        continue;
                    };
                    match (peer, m.ty & 0xff) {
                        (Peer::Nfknock, nft_uapi::NFT_MSG_NEWSETELEM) => {
                            nfknock_grants(body, &mut found)
                        }
                        (Peer::Fwknopd, nft_uapi::NFT_MSG_NEWRULE) => {
                            found.extend(fwknopd_grant(body))
                        }
                        _ => {}
                    }
                }
                for a in &found {
                    if tx.send((t, *a)).is_err() {
                        return;
                    }
                }
            }
        });
        ready_rx.recv()??;
        Ok(Watcher {
            rx,
            seen: HashMap::new(),
            total: 0,
            last: None,
            lost,
            stop,
        })
    }

    fn record(&mut self, (t, a): (Instant, Ipv4Addr)) {
        self.seen.entry(a).or_insert(t);
        self.total += 1;
        self.last = Some(t);
    }

    /// Take every event received so far.
    fn drain(&mut self) {
        while let Ok(e) = self.rx.try_recv() {
            self.record(e);
        }
    }

    /// Wait up to `timeout` for one more event.
    fn wait_any(&mut self, timeout: Duration) {
        if let Ok(e) = self.rx.recv_timeout(timeout) {
            self.record(e);
        }
        self.drain();
    }

    /// When `ip` was granted, waiting until `deadline` for it.
    fn wait_for(&mut self, ip: Ipv4Addr, deadline: Instant) -> Option<Instant> {
        self.drain();
        loop {
            if let Some(t) = self.seen.get(&ip) {
                return Some(*t);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.rx.recv_timeout(left) {
                Ok(e) => self.record(e),
                Err(_) => return self.seen.get(&ip).copied(),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Daemons
// ---------------------------------------------------------------------------------------------

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn pid(&self) -> u32 {
        // `ip netns exec` execs the program, so the child's pid is the daemon's.
        self.child.id()
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = s.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    fn hwm_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    /// CPU time of all the daemon's threads (the loop, queue workers, the journal's sync
    /// thread), ns (`/proc/PID/task/*/schedstat`, field 1). A thread that has ended is not
    /// counted, so take both readings while the daemon runs.
    fn cpu_ns(&self) -> u64 {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return 0;
        };
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// Time all the daemon's threads spent runnable but waiting for a CPU, ns, and how many
    /// times they were scheduled in (`/proc/PID/task/*/schedstat`, fields 2 and 3): with junk
    /// senders on the same cores, the wait is what a knock can spend before the daemon runs.
    fn runq_wait(&self) -> (u64, u64) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return (0, 0);
        };
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
            .filter_map(|s| {
                let mut f = s.split_whitespace().skip(1).map(str::parse::<u64>);
                Some((f.next()?.ok()?, f.next()?.ok()?))
            })
            .fold((0, 0), |(w, n), (a, b)| (w + a, n + b))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_logged(lab: &Lab, args: &[&str], log: PathBuf) -> Result<Child> {
    let f = std::fs::File::create(&log)?;
    Command::new("ip")
        .args(["netns", "exec", &lab.srv])
        .args(args)
        .env_remove("NFKNOCK_LOG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .spawn()
        .with_context(|| format!("start {}", args[0]))
}

static STARTS: AtomicU64 = AtomicU64::new(0);

/// Start `nfknock serve` with `[server]` extras and client tables; wait until it serves.
fn start_nfknock(lab: &Lab, bin: &str, server_extra: &str, clients: &str) -> Result<Daemon> {
    start_nfknock_on(lab, bin, &QUEUE.to_string(), server_extra, clients)
}

/// [`start_nfknock`] on `queue` (a TOML value: `7`, or `"7-8"` for two queue workers).
fn start_nfknock_on(
    lab: &Lab,
    bin: &str,
    queue: &str,
    server_extra: &str,
    clients: &str,
) -> Result<Daemon> {
    let n = STARTS.fetch_add(1, Ordering::Relaxed);
    let cfg = lab.dir.join(format!("nfknock-{n}.toml"));
    let state = lab.dir.join(format!("state-{n}"));
    // A new state directory, prepared as scripts/install prepares one, so knocks count at once
    // (without the marker it would start as a lost journal and refuse knocks for max_age).
    let out = Command::new(bin)
        .args(["init-state", "--state-dir"])
        .arg(&state)
        .output()
        .context("run nfknock init-state")?;
    if !out.status.success() {
        bail!(
            "nfknock init-state: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = format!(
        "[server]\nport = {}\nqueue = {queue}\nstate_dir = \"{}\"\nprotect = [\"tcp/{}\"]\nmax_age = 120\n{server_extra}\n{clients}",
        lab::KNOCK_PORT,
        state.display(),
        lab::SERVICE_PORT
    );
    std::fs::write(&cfg, text)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600))?;
    let log = lab.dir.join(format!("nfknock-{n}.log"));
    let child = spawn_logged(
        lab,
        &[bin, "serve", "--config", cfg.to_str().context("path")?],
        log.clone(),
    )?;
    let mut d = Daemon { child, log };
    let t = Instant::now();
    while !d.log_text().contains("nfknock serving") {
        if t.elapsed() > Duration::from_secs(120) || d.child.try_wait()?.is_some() {
            bail!("nfknock did not start:\n{}", d.log_text());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(d)
}

/// How fwknopd is configured for a run.
#[derive(Clone, Copy, PartialEq)]
enum FwTuning {
    /// As FWKNOP-WIRE.md §12: built-in `PCAP_DISPATCH_COUNT` (100) and `PCAP_LOOP_SLEEP`
    /// (100 000 µs), `-v`.
    Defaults,
    /// Its capacity under a flood: `PCAP_DISPATCH_COUNT 100000` and `PCAP_LOOP_SLEEP 1000`
    /// (fwknopd 2.6.10 accepts 1–8 388 608 for the count: 0, which its shipped fwknopd.conf
    /// comment calls the default, is refused), no `-v`.
    Tuned,
}

impl FwTuning {
    fn conf_lines(self) -> &'static str {
        match self {
            FwTuning::Defaults => "",
            FwTuning::Tuned => "PCAP_DISPATCH_COUNT 100000;\nPCAP_LOOP_SLEEP 1000;\n",
        }
    }
}

/// Start Debian's fwknopd in pcap mode as FWKNOP-WIRE.md §12 (with [`FwTuning::Defaults`]: a
/// 100 ms sleep per capture loop), behind `iptables -A INPUT -p tcp --dport 2222 -j DROP`.
fn start_fwknopd(lab: &Lab, keys: &Keys, tuning: FwTuning) -> Result<Daemon> {
    let p = |name: &str| lab.dir.join(name);
    lab.run(
        &lab.srv,
        &[
            "iptables",
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            &lab::SERVICE_PORT.to_string(),
            "-j",
            "DROP",
        ],
    )?;
    std::fs::write(
        p("fwknopd.conf"),
        format!(
            "PCAP_INTF {};\nPCAP_FILTER udp port {};\nENABLE_SPA_PACKET_AGING Y;\nMAX_SPA_PACKET_AGE 120;\n\
             ENABLE_DIGEST_PERSISTENCE Y;\nFIREWALL_EXE /usr/sbin/iptables;\n{}",
            lab::SRV_DEV,
            lab::KNOCK_PORT,
            tuning.conf_lines()
        ),
    )?;
    // REQUIRE_SOURCE_ADDRESS N as the issue asks for the throughput run; every packet carries
    // an explicit allow-IP, so the setting changes nothing for these packets.
    std::fs::write(
        p("access.conf"),
        format!(
            "SOURCE ANY\nKEY_BASE64 {}\nHMAC_KEY_BASE64 {}\nHMAC_DIGEST_TYPE sha256\nFW_ACCESS_TIMEOUT 30\nMAX_FW_TIMEOUT 60\nREQUIRE_SOURCE_ADDRESS N\n",
            keys.fw_key_b64, keys.fw_hmac_b64
        ),
    )?;
    use std::os::unix::fs::PermissionsExt;
    for f in ["fwknopd.conf", "access.conf"] {
        std::fs::set_permissions(p(f), std::fs::Permissions::from_mode(0o600))?;
    }
    let s = |name: &str| p(name).to_string_lossy().into_owned();
    let (conf, access, digest, pid, dir) = (
        s("fwknopd.conf"),
        s("access.conf"),
        s("digest.cache"),
        s("fwknopd.pid"),
        lab.dir.to_string_lossy().into_owned(),
    );
    let mut args = vec!["fwknopd", "-f"];
    if tuning == FwTuning::Defaults {
        args.push("-v");
    }
    args.extend([
        "-c", &conf, "-a", &access, "-d", &digest, "-p", &pid, "-r", &dir,
    ]);
    let child = spawn_logged(lab, &args, p("fwknopd.log"))?;
    let mut d = Daemon {
        child,
        log: p("fwknopd.log"),
    };
    let t = Instant::now();
    while lab
        .run(&lab.srv, &["iptables", "-S", "FWKNOP_INPUT"])
        .is_err()
    {
        if t.elapsed() > Duration::from_secs(20) || d.child.try_wait()?.is_some() {
            bail!("fwknopd did not start:\n{}", d.log_text());
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(d)
}

// ---------------------------------------------------------------------------------------------
// Knocks
// ---------------------------------------------------------------------------------------------

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    OsRng.fill(&mut b);
    b
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unix_now() -> u64 {
    nfknock::daemon::unix_now()
}

/// The bench's own credentials: one native client, one fwknop client.
struct Keys {
    native_b64: String,
    native: NativeKey,
    fw_key_b64: String,
    fw_hmac_b64: String,
    fwknop: FwknopKey,
}

impl Keys {
    fn new() -> Keys {
        let secret = random::<32>();
        let (k, h) = (random::<32>(), random::<64>());
        Keys {
            native_b64: b64(&secret),
            native: NativeKey::derive(&secret),
            fw_key_b64: b64(&k),
            fw_hmac_b64: b64(&h),
            fwknop: unknown_fwknop_key_from(&k, &h),
        }
    }

    /// nfknock `[[client]]` tables for these keys (both open tcp/2222 for any allow-IP).
    fn clients(&self) -> String {
        format!(
            "[[client]]\nname = \"bench\"\nkey = \"{}\"\nallow = [\"tcp/{port}\"]\ntimeout = 600\nrequire_source_match = false\n\n\
             [[client]]\nname = \"bench-fwknop\"\nallow = [\"tcp/{port}\"]\ntimeout = 600\nrequire_source_match = false\n\
             [client.fwknop]\nkey_base64 = \"{}\"\nhmac_key_base64 = \"{}\"\nhmac = \"sha256\"\n",
            self.native_b64,
            self.fw_key_b64,
            self.fw_hmac_b64,
            port = lab::SERVICE_PORT
        )
    }
}

fn unknown_fwknop_key_from(k: &[u8], h: &[u8]) -> FwknopKey {
    FwknopKey::new(
        Zeroizing::new(k.to_vec()),
        Some(Zeroizing::new(h.to_vec())),
        HmacType::Sha256,
        EncMode::Cbc,
    )
    .expect("random keys of valid lengths")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Native,
    Fwknop,
}

fn native_knock(key: &NativeKey, allow: Ipv4Addr, now: u64) -> Vec<u8> {
    let req = native::Plaintext {
        timestamp: now,
        timeout: 0,
        allow_ip: Some(allow.into()),
        access: vec![SERVICE],
    };
    native::seal(key, &req, &mut OsRng)
        .expect("sealable request")
        .to_vec()
}

fn fwknop_knock(key: &FwknopKey, allow: Ipv4Addr, now: u64) -> Vec<u8> {
    let rand: String = random::<16>()
        .iter()
        .map(|b| char::from(b'0' + b % 10))
        .collect();
    let req = SealRequest::access("bench", now, allow, &[SERVICE], 0);
    fwknop::seal(key, &req, random::<8>(), &rand, DigestType::Sha256)
        .expect("sealable request")
        .into_bytes()
}

fn knock(keys: &Keys, f: Format, allow: Ipv4Addr) -> Vec<u8> {
    match f {
        Format::Native => native_knock(&keys.native, allow, unix_now()),
        Format::Fwknop => fwknop_knock(&keys.fwknop, allow, unix_now()),
    }
}

/// Allow-IPs that are nobody's address (10.128.0.0/9), handed out once per run, so no grant is
/// ever a refresh of an existing one and no packet a replay.
struct Ips(u32);

impl Ips {
    fn next(&mut self) -> Ipv4Addr {
        let n = self.0;
        self.0 += 1;
        let host = (n / 254) * 256 + n % 254 + 1;
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + host)
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

fn pct(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    Some(s[i.min(s.len() - 1)])
}

fn dist(v: &[f64]) -> Value {
    json!({ "n": v.len(), "p50": pct(v, 50.0), "p99": pct(v, 99.0), "max": pct(v, 100.0), "min": pct(v, 0.0) })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------------------------
// 1. Knock → open latency
// ---------------------------------------------------------------------------------------------

/// A non-blocking TCP connect from `src` to the service.
fn probe(src: Ipv4Addr) -> Option<OwnedFd> {
    // SAFETY: plain socket(2); owned right away.
    let raw = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return None;
    }
    // SAFETY: fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let sa = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let (local, remote) = (sa(src, 0), sa(lab::SRV, lab::SERVICE_PORT));
    let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
    // SAFETY: valid sockaddr_in values of `len` bytes.
    unsafe {
        if libc::bind(
            fd.as_raw_fd(),
            (&local as *const libc::sockaddr_in).cast(),
            len,
        ) != 0
        {
            return None;
        }
        libc::connect(
            fd.as_raw_fd(),
            (&remote as *const libc::sockaddr_in).cast(),
            len,
        );
    }
    Some(fd)
}

/// The client's view: keep launching TCP connects from `src` (every 100 µs for the first 10 ms,
/// then every 1 ms; a SYN the gate drops is simply abandoned) until one is answered.
fn first_connect(src: Ipv4Addr, t0: Instant, limit: Duration) -> Option<Instant> {
    let mut socks: Vec<OwnedFd> = Vec::new();
    let mut next = t0;
    loop {
        let now = Instant::now();
        if now.duration_since(t0) > limit {
            return None;
        }
        if now >= next {
            if socks.len() >= 400 {
                socks.remove(0);
            }
            socks.extend(probe(src));
            let step = if now.duration_since(t0) < Duration::from_millis(10) {
                100
            } else {
                1000
            };
            next = now + Duration::from_micros(step);
        }
        let mut fds: Vec<libc::pollfd> = socks
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            })
            .collect();
        let wait = next.saturating_duration_since(Instant::now());
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: wait.as_nanos().min(999_999_999) as i64,
        };
        // SAFETY: fds is a valid array for the call; ts a valid timespec.
        let n = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as u64, &ts, std::ptr::null()) };
        if n > 0 {
            let t = Instant::now();
            for (i, p) in fds.iter().enumerate().rev() {
                if p.revents == 0 {
                    continue;
                }
                let mut err: i32 = 0;
                let mut l = 4u32;
                // SAFETY: err/l describe a writable c_int.
                unsafe {
                    libc::getsockopt(
                        p.fd,
                        libc::SOL_SOCKET,
                        libc::SO_ERROR,
                        (&mut err as *mut i32).cast(),
                        &mut l,
                    )
                };
                if err == 0 && p.revents & libc::POLLOUT != 0 {
                    return Some(t);
                }
                socks.remove(i);
            }
        }
    }
}

/// `n` knocks, one at a time, each from and for its own pool address; per knock the kernel
/// event and (if `connect`) the first successful TCP connect from that address.
fn latency(
    lab: &Lab,
    w: Watcher,
    keys: &Arc<Keys>,
    f: Format,
    first: usize,
    n: usize,
    connect: bool,
) -> Result<(Watcher, Value)> {
    let keys = keys.clone();
    in_ns(&lab.cli, move || -> Result<(Watcher, Value)> {
        let mut w = w;
        let (mut ev, mut conn) = (Vec::new(), Vec::new());
        let mut lost = 0;
        for i in first..first + n {
            let ip = pool_addr(i);
            let s = UdpSocket::bind((ip, 0))?;
            let pkt = knock(&keys, f, ip);
            let t0 = Instant::now();
            s.send_to(&pkt, lab::knock_dst())?;
            let c = if connect {
                first_connect(ip, t0, Duration::from_secs(3))
            } else {
                None
            };
            match w.wait_for(ip, t0 + Duration::from_secs(3)) {
                Some(t) => ev.push(ms(t.saturating_duration_since(t0))),
                None => lost += 1,
            }
            if let Some(c) = c {
                conn.push(ms(c - t0));
            }
            thread::sleep(Duration::from_millis(2));
        }
        let v = json!({ "format": format!("{f:?}").to_lowercase(), "knocks": n, "not_granted": lost, "event_ms": dist(&ev), "connect_ms": dist(&conn) });
        Ok((w, v))
    })?
}

/// One knock with the real `fwknop` client; was it granted within 3 s?
fn real_fwknop_client(
    lab: &Lab,
    w: &mut Watcher,
    keys: &Keys,
    allow: Ipv4Addr,
) -> Result<Option<f64>> {
    let t0 = Instant::now();
    let a = allow.to_string();
    let dst = lab::SRV.to_string();
    let access = format!("tcp/{}", lab::SERVICE_PORT);
    lab.run(
        &lab.cli,
        &[
            "fwknop",
            "-A",
            &access,
            "-a",
            &a,
            "-D",
            &dst,
            "--key-base64-rijndael",
            &keys.fw_key_b64,
            "--key-base64-hmac",
            &keys.fw_hmac_b64,
            "--no-rc-file",
            "--no-save-args",
        ],
    )?;
    Ok(w.wait_for(allow, t0 + Duration::from_secs(3))
        .map(|t| ms(t - t0)))
}

// ---------------------------------------------------------------------------------------------
// 2. Sustained grants/s
// ---------------------------------------------------------------------------------------------

/// Send `packets` (distinct allow-IPs) round-robin over `socks`, keeping at most `window`
/// knocks in flight (sent, not yet seen in the kernel), within `timebox`.
fn throughput(
    w: &mut Watcher,
    socks: &[UdpSocket],
    packets: &[Vec<u8>],
    window: usize,
    timebox: Duration,
    d: &Daemon,
) -> Value {
    w.drain();
    let base = w.total;
    let cpu0 = d.cpu_ns();
    let t0 = Instant::now();
    let mut sent = 0usize;
    let mut last_progress = (0usize, Instant::now());
    while sent < packets.len() && t0.elapsed() < timebox {
        w.drain();
        let granted = w.total - base;
        if granted != last_progress.0 {
            last_progress = (granted, Instant::now());
        } else if last_progress.1.elapsed() > Duration::from_secs(2) {
            break; // stalled: the rest of the window was lost
        }
        let out = sent - granted.min(sent);
        if out < window {
            let k = (window - out).min(packets.len() - sent).min(64);
            for p in &packets[sent..sent + k] {
                let _ = socks[sent % socks.len()].send(p);
                sent += 1;
            }
        } else {
            w.wait_any(Duration::from_millis(5));
        }
    }
    let end = Instant::now() + Duration::from_secs(3);
    while w.total - base < sent && Instant::now() < end {
        w.wait_any(Duration::from_millis(20));
    }
    let granted = w.total - base;
    let secs = w
        .last
        .map_or(0.0, |l| l.saturating_duration_since(t0).as_secs_f64());
    let cpu = d.cpu_ns().saturating_sub(cpu0);
    json!({
        "sent": sent, "granted": granted, "seconds": secs,
        "grants_per_s": if secs > 0.0 { granted as f64 / secs } else { 0.0 },
        "window": window,
        "daemon_cpu_us_per_grant": if granted > 0 && cpu > 0 { Some(cpu as f64 / 1e3 / granted as f64) } else { None },
        "events_lost": w.lost.load(Ordering::Relaxed),
    })
}

// ---------------------------------------------------------------------------------------------
// 3. Junk flood
// ---------------------------------------------------------------------------------------------

/// `sendmmsg` a batch of packets on a connected socket; how many went out.
fn send_batch(fd: i32, pkts: &[Vec<u8>]) -> usize {
    let mut iov: Vec<libc::iovec> = pkts
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut _,
            iov_len: p.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|v| {
            // SAFETY: zeroed mmsghdr is valid (no name, no control).
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    // SAFETY: msgs/iov point into `pkts`, alive for the call.
    let rc = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), msgs.len() as u32, 0) };
    rc.max(0) as usize
}

/// Junk for nfknock: random 128-byte payloads, native packets under unknown keys, fwknop
/// packets under an unknown key (each costs the daemon one HMAC per fwknop client).
fn junk_nfknock(n: usize, with_fwknop: bool) -> Vec<Vec<u8>> {
    let stranger = NativeKey::derive(&random::<32>());
    let fw = unknown_fwknop_key_from(&random::<32>(), &random::<64>());
    let now = unix_now();
    let kinds = if with_fwknop { 3 } else { 2 };
    (0..n)
        .map(|i| match i % kinds {
            0 => random::<{ native::PACKET_LEN }>().to_vec(),
            1 => native_knock(&stranger, Ipv4Addr::from(random::<4>()), now),
            _ => fwknop_knock(&fw, Ipv4Addr::from(random::<4>()), now),
        })
        .collect()
}

/// Junk for fwknopd: random bytes of an fwknop packet's length, and packets under an unknown key.
fn junk_fwknopd(n: usize) -> Vec<Vec<u8>> {
    let fw = unknown_fwknop_key_from(&random::<32>(), &random::<64>());
    let now = unix_now();
    (0..n)
        .map(|i| {
            let good = fwknop_knock(&fw, Ipv4Addr::from(random::<4>()), now);
            if i % 2 == 0 {
                let mut r = vec![0u8; good.len()];
                OsRng.fill(&mut r);
                r
            } else {
                good
            }
        })
        .collect()
}

/// Send junk at `rate` packets/s for `secs` from the client namespace (paced per millisecond,
/// sendmmsg batches of 64, rotating over 64 source addresses). Returns packets sent and the
/// seconds it took.
fn flood(
    socks: Arc<Vec<UdpSocket>>,
    junk: Arc<Vec<Vec<u8>>>,
    rate: u64,
    secs: f64,
) -> thread::JoinHandle<(u64, f64)> {
    thread::spawn(move || {
        let t0 = Instant::now();
        let dur = Duration::from_secs_f64(secs);
        let mut sent = 0u64;
        let mut j = 0usize;
        let mut s = 0usize;
        while t0.elapsed() < dur {
            let due = (rate as f64 * t0.elapsed().as_secs_f64()) as u64;
            if sent >= due {
                thread::sleep(Duration::from_micros(200));
                continue;
            }
            let k = ((due - sent) as usize).min(64);
            if j + k > junk.len() {
                j = 0;
            }
            sent += send_batch(socks[s % socks.len()].as_raw_fd(), &junk[j..j + k]) as u64;
            j += k;
            s += 1;
        }
        (sent, t0.elapsed().as_secs_f64())
    })
}

/// The kernel's counters of queues `QUEUE .. QUEUE + n`, added up.
fn sum_stats(lab: &Lab, n: u16) -> Option<nfknock::netfilter::queue::QueueStats> {
    in_ns(&lab.srv, move || {
        let mut all: Option<nfknock::netfilter::queue::QueueStats> = None;
        for i in 0..n {
            let s = nfknock::netfilter::queue::kernel_stats(QUEUE + i)?;
            all = Some(match all {
                None => s,
                Some(mut a) => {
                    a.id_sequence = a.id_sequence.wrapping_add(s.id_sequence);
                    a.queue_dropped = a.queue_dropped.wrapping_add(s.queue_dropped);
                    a.user_dropped = a.user_dropped.wrapping_add(s.user_dropped);
                    a
                }
            });
        }
        all
    })
    .ok()
    .flatten()
}

/// The prefilter as the kernel sees it in the server namespace: hints in `knock_hints`, packets
/// counted by `junk_native` and `junk_fwknop` (what `nfknock status --json` prints). `None` if the
/// table or its counters cannot be read.
fn prefilter_stats(lab: &Lab) -> Option<nfknock::netfilter::nft::PrefilterStats> {
    in_ns(&lab.srv, || {
        nfknock::netfilter::nft::Nft::open()
            .and_then(|mut n| n.prefilter_stats())
            .ok()
    })
    .ok()
    .flatten()
}

struct FloodCtx<'a> {
    /// Queues the daemon serves from `QUEUE` on (their counters are added up).
    queues: u16,
    /// One legitimate knock this often during a step.
    legit_every: Duration,
    lab: &'a Lab,
    peer: Peer,
    keys: &'a Keys,
    daemon: &'a Daemon,
    junk: Arc<Vec<Vec<u8>>>,
    socks: Arc<Vec<UdpSocket>>,
    /// Legitimate knocks go out from these in turn, each from an address of its own as in the
    /// latency scenario: fwknopd granted about half of the knocks sent from one address every
    /// 50–100 ms even with no junk at all, and none from an address that had knocked a step
    /// earlier (seen here with `-v` off and on; a 0/s step shows it), which is not what the
    /// junk rows are meant to measure.
    legit: Vec<UdpSocket>,
    /// Legitimate knocks sent so far over the ladder (the next one uses `legit[sent % len]`).
    legit_sent: std::cell::Cell<usize>,
}

/// One flood step: junk at `rate` for `secs`, a legitimate knock every 50 ms meanwhile.
fn flood_step(c: &FloodCtx, w: &mut Watcher, ips: &mut Ips, rate: u64, secs: f64) -> Result<Value> {
    let n = c.queues;
    let q = move |lab: &Lab| sum_stats(lab, n);
    let st0 = if c.peer == Peer::Nfknock {
        q(c.lab)
    } else {
        None
    };
    let pf0 = if c.peer == Peer::Nfknock {
        prefilter_stats(c.lab)
    } else {
        None
    };
    let cpu0 = c.daemon.cpu_ns();
    let wait0 = c.daemon.runq_wait();
    // Two sender threads: on veth the sender also runs the kernel's receive path (nftables,
    // NFQUEUE enqueue) for every packet, so one thread alone cannot offer the top rates.
    let senders: Vec<_> = (0..SENDERS)
        .map(|i| {
            let socks: Vec<UdpSocket> = c
                .socks
                .iter()
                .skip(i)
                .step_by(SENDERS)
                .filter_map(|s| s.try_clone().ok())
                .collect();
            flood(Arc::new(socks), c.junk.clone(), rate / SENDERS as u64, secs)
        })
        .collect();
    let t0 = Instant::now();
    let mut legit = Vec::new();
    let mut rss_mid = None;
    thread::sleep(Duration::from_millis(100));
    while t0.elapsed().as_secs_f64() < secs - 0.05 {
        let ip = ips.next();
        let pkt = match c.peer {
            Peer::Nfknock => native_knock(&c.keys.native, ip, unix_now()),
            Peer::Fwknopd => fwknop_knock(&c.keys.fwknop, ip, unix_now()),
        };
        let t = Instant::now();
        let k = c.legit_sent.get();
        c.legit_sent.set(k + 1);
        let _ = c.legit[k % c.legit.len()].send(&pkt);
        legit.push((ip, t));
        if rss_mid.is_none() && t0.elapsed().as_secs_f64() > secs / 2.0 {
            rss_mid = c.daemon.rss_kib();
        }
        thread::sleep(c.legit_every);
    }
    let (mut sent, mut took) = (0u64, 0f64);
    for h in senders {
        let (n, t) = h
            .join()
            .map_err(|_| anyhow::anyhow!("flood sender panicked"))?;
        sent += n;
        took = took.max(t);
    }
    let cpu = c.daemon.cpu_ns().saturating_sub(cpu0);
    let wait1 = c.daemon.runq_wait();
    let (waited, slices) = (
        wait1.0.saturating_sub(wait0.0),
        wait1.1.saturating_sub(wait0.1),
    );
    let mut lat = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    for (ip, t) in &legit {
        if let Some(g) = w.wait_for(*ip, deadline) {
            lat.push(ms(g.saturating_duration_since(*t)));
        }
    }
    // let the queue drain before the next step
    thread::sleep(Duration::from_millis(500));
    let st1 = if c.peer == Peer::Nfknock {
        q(c.lab)
    } else {
        None
    };
    let (queued, qdrop, udrop) = match (st0, st1) {
        (Some(a), Some(b)) => (
            Some(b.id_sequence.wrapping_sub(a.id_sequence)),
            Some(b.queue_dropped.wrapping_sub(a.queue_dropped)),
            Some(b.user_dropped.wrapping_sub(a.user_dropped)),
        ),
        _ => (None, None, None),
    };
    // Junk the kernel's prefilter dropped during the step (its named counters are read after
    // the drain, like the queue's).
    let pf1 = if c.peer == Peer::Nfknock {
        prefilter_stats(c.lab)
    } else {
        None
    };
    let (kernel_native, kernel_fwknop) = match (pf0, pf1) {
        (Some(a), Some(b)) => (
            Some(b.junk_native.0.wrapping_sub(a.junk_native.0)),
            Some(b.junk_fwknop.0.wrapping_sub(a.junk_fwknop.0)),
        ),
        _ => (None, None),
    };
    let granted = lat.len();
    Ok(json!({
        "rate": rate,
        "junk_sent": sent,
        "sent_pps": sent as f64 / took,
        "kernel_junk_native": kernel_native, "kernel_junk_fwknop": kernel_fwknop,
        "daemon_runq_wait_us_per_run": if slices > 0 { Some(waited as f64 / 1e3 / slices as f64) } else { None },
        "daemon_cpu_ns_per_junk": if sent > 0 { Some(cpu as f64 / sent as f64) } else { None },
        "queued_pps": queued.map(|q| q as f64 / took),
        "queue_dropped": qdrop, "socket_dropped": udrop,
        "daemon_cpu_pct": cpu as f64 / 1e7 / took,
        "legit_sent": legit.len(), "legit_granted": granted,
        "all_legit_granted": granted == legit.len(),
        "legit_ms": dist(&lat),
        "rss_kib": rss_mid,
        "loadavg": loadavg(),
    }))
}

fn flood_ladder(
    c: &FloodCtx,
    w: &mut Watcher,
    ips: &mut Ips,
    rates: &[u64],
    secs: f64,
    stop_on_failures: bool,
) -> Result<Value> {
    let mut steps = Vec::new();
    let mut best: Option<Value> = None;
    let mut failures = 0;
    for &rate in rates {
        let s = flood_step(c, w, ips, rate, secs)?;
        eprintln!(
            "    {} flood {rate:>7}/s: sent {:.0}/s, kernel drops {}, legit {}/{}, cpu {:.0}% ({:.0} ns/junk)",
            c.peer.name(),
            s["sent_pps"].as_f64().unwrap_or(0.0),
            s["kernel_junk_native"],
            s["legit_granted"],
            s["legit_sent"],
            s["daemon_cpu_pct"].as_f64().unwrap_or(0.0),
            s["daemon_cpu_ns_per_junk"].as_f64().unwrap_or(0.0)
        );
        let sender_short = s["sent_pps"].as_f64().unwrap_or(0.0) < 0.9 * rate as f64;
        if s["all_legit_granted"] == json!(true) && !sender_short {
            best = Some(s.clone());
            failures = 0;
        } else {
            failures += 1;
        }
        steps.push(s);
        if sender_short || (stop_on_failures && failures >= 2) {
            break;
        }
    }
    Ok(json!({ "steps": steps, "best": best }))
}

// ---------------------------------------------------------------------------------------------
// 4. Scale
// ---------------------------------------------------------------------------------------------

fn many_clients(keys: &Keys, n: usize) -> String {
    let mut s = keys.clients();
    for i in 1..n {
        let _ = write!(
            s,
            "\n[[client]]\nname = \"c{i}\"\nkey = \"{}\"\nallow = [\"tcp/{}\"]\nrequire_source_match = false\n",
            b64(&random::<32>()),
            lab::SERVICE_PORT
        );
    }
    s
}

/// Per-packet figures at the current state: sequential latency, grants/s and daemon CPU per
/// grant, daemon CPU per junk packet.
#[allow(clippy::too_many_arguments)]
fn scale_point(
    lab: &Lab,
    d: &Daemon,
    w: &mut Watcher,
    keys: &Keys,
    ips: &mut Ips,
    socks: &[UdpSocket],
    junk: &Arc<Vec<Vec<u8>>>,
    m: &Mode,
) -> Result<Value> {
    let mut ev = Vec::new();
    let mut sent_at = Vec::new();
    for i in 0..m.scale_lat {
        let ip = ips.next();
        let pkt = native_knock(&keys.native, ip, unix_now());
        let t0 = Instant::now();
        sent_at.push(monotonic_ns());
        socks[i % socks.len()].send(&pkt)?;
        if let Some(t) = w.wait_for(ip, t0 + Duration::from_secs(3)) {
            ev.push(ms(t - t0));
        }
        thread::sleep(Duration::from_millis(2));
    }
    let pkts: Vec<Vec<u8>> = (0..m.scale_thru)
        .map(|_| native_knock(&keys.native, ips.next(), unix_now()))
        .collect();
    let thru = throughput(w, socks, &pkts, 512, Duration::from_secs(30), d);
    // junk at a rate the daemon absorbs, CPU per queued packet
    let q = || {
        in_ns(&lab.srv, || nfknock::netfilter::queue::kernel_stats(QUEUE))
            .ok()
            .flatten()
    };
    let (st0, cpu0) = (q(), d.cpu_ns());
    let socks_a = Arc::new(lab.udp_sockets(0, 16)?);
    let (sent, _) = flood(
        socks_a,
        junk.clone(),
        50_000,
        m.scale_junk as f64 / 50_000.0,
    )
    .join()
    .map_err(|_| anyhow::anyhow!("sender"))?;
    thread::sleep(Duration::from_millis(300));
    let (st1, cpu1) = (q(), d.cpu_ns());
    let queued = match (st0, st1) {
        (Some(a), Some(b)) => b.id_sequence.wrapping_sub(a.id_sequence) as u64,
        _ => sent,
    };
    Ok(json!({
        "event_ms": dist(&ev),
        // each knock's latency in the order sent: shows whether a p99 is one outlier or many
        "event_ms_each": ev,
        // CLOCK_MONOTONIC of each send, to line the knocks up with a kernel trace taken with
        // `trace_clock` = mono (BENCHMARKS.md, "p99 at 100 000 grants")
        "sent_monotonic_ns": sent_at,
        "throughput": thru,
        "junk_sent": sent, "junk_queued": queued,
        "daemon_cpu_ns_per_junk": if queued > 0 { Some(cpu1.saturating_sub(cpu0) as f64 / queued as f64) } else { None },
    }))
}

/// Fill `allow_v4` up to `target` grants: through the daemon (full mode), or directly with
/// `Nft::upsert` in the server namespace (quick mode).
#[allow(clippy::too_many_arguments)]
fn fill(
    lab: &Lab,
    d: &Daemon,
    w: &mut Watcher,
    keys: &Keys,
    ips: &mut Ips,
    socks: &[UdpSocket],
    have: usize,
    target: usize,
    via_daemon: bool,
) -> Result<Value> {
    let n = target.saturating_sub(have);
    if via_daemon {
        let pkts: Vec<Vec<u8>> = (0..n)
            .map(|_| native_knock(&keys.native, ips.next(), unix_now()))
            .collect();
        let v = throughput(w, socks, &pkts, 512, Duration::from_secs(120), d);
        return Ok(json!({ "by": "daemon", "grants": n, "throughput": v }));
    }
    let elems: Vec<nfknock::netfilter::nft::Element> = (0..n)
        .map(|_| nfknock::netfilter::nft::Element {
            addr: ips.next().into(),
            access: SERVICE,
            timeout_ms: 600_000,
            nat: None,
            gateway: None,
        })
        .collect();
    let t = Instant::now();
    in_ns(&lab.srv, move || -> Result<()> {
        let mut nft = nfknock::netfilter::nft::Nft::open()?;
        nft.upsert(&elems)?;
        Ok(())
    })??;
    w.drain();
    Ok(json!({ "by": "Nft::upsert", "grants": n, "seconds": t.elapsed().as_secs_f64() }))
}

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

struct Mode {
    quick: bool,
    lat_n: usize,
    thru_n: usize,
    fw_thru_secs: u64,
    rates: Vec<u64>,
    fw_rates: Vec<u64>,
    /// Offered junk rates of the prefilter on/off ladders; the last is above what the lab's two
    /// sender threads reach on 2 cores, so its row shows their maximum.
    pf_rates: Vec<u64>,
    step_secs: f64,
    clients: Vec<usize>,
    grants: usize,
    scale_lat: usize,
    scale_thru: usize,
    scale_junk: usize,
}

impl Mode {
    fn new(quick: bool) -> Mode {
        if quick {
            Mode {
                quick,
                lat_n: 50,
                thru_n: 5_000,
                fw_thru_secs: 4,
                rates: vec![50_000, 150_000, 300_000],
                fw_rates: vec![0, 500, 1_000, 2_000, 10_000, 30_000],
                pf_rates: vec![100_000, 600_000],
                step_secs: 1.5,
                clients: vec![1, 1_000, 10_000],
                grants: 100_000,
                scale_lat: 15,
                scale_thru: 1_000,
                scale_junk: 10_000,
            }
        } else {
            Mode {
                quick,
                lat_n: 200,
                thru_n: 50_000,
                fw_thru_secs: 10,
                rates: vec![50_000, 100_000, 150_000, 200_000, 300_000, 400_000],
                fw_rates: vec![0, 250, 500, 800, 1_000, 2_000, 10_000, 30_000, 100_000],
                pf_rates: vec![50_000, 100_000, 200_000, 300_000, 400_000, 600_000],
                step_secs: 3.0,
                clients: vec![1, 1_000, 10_000],
                grants: 100_000,
                // p99 of 50 is the maximum: one scheduling hiccup decided it. Of 200, the
                // second-worst knock.
                scale_lat: 200,
                scale_thru: 5_000,
                scale_junk: 50_000,
            }
        }
    }
}

/// Set the calling thread's nice value (on Linux `PRIO_PROCESS` with a tid is one thread);
/// returns the previous one.
fn set_thread_nice(n: i32) -> i32 {
    // SAFETY: get/setpriority on this thread's own tid; plain integers.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        let old = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, n);
        old
    }
}

/// `CLOCK_MONOTONIC`, ns.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The 1-minute load average: other work on the machine shows up in every figure.
fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn raise_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max.min(65_536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Everything about nfknock: scenarios 1, 2, 3, 5 (idle, flood).
fn run_nfknock(
    bin: &str,
    keys: &Arc<Keys>,
    m: &Mode,
    ips: &mut Ips,
    only: &dyn Fn(&str) -> bool,
) -> Result<Value> {
    let mut out = json!({});
    let lab = Lab::new("nfk", 2 * m.lat_n + 100 + LEGIT_SOURCES)?;
    // rate_limit = 0: one sender stands for many clients here (scenarios 2 and 3); the
    // kernel's per-source limit (20/s) would otherwise cap the figures at the bench's sources.
    let d = start_nfknock(&lab, bin, "rate_limit = 0", &keys.clients())?;
    thread::sleep(Duration::from_millis(300));
    out["rss_idle_kib"] = json!(d.rss_kib());
    let mut w = Watcher::start(&lab, Peer::Nfknock)?;
    // warm-up: the first knock must get through before anything is timed
    let (w2, warm) = latency(&lab, w, keys, Format::Native, 2 * m.lat_n, 1, false)?;
    w = w2;
    out["warmup"] = warm;
    if only("latency") {
        eprintln!(
            "==> nfknock: knock → open latency ({} knocks per format)",
            m.lat_n
        );
        let (w2, native) = latency(&lab, w, keys, Format::Native, 0, m.lat_n, true)?;
        let (w3, fw) = latency(&lab, w2, keys, Format::Fwknop, m.lat_n, m.lat_n, true)?;
        w = w3;
        out["latency"] = json!({ "native": native, "fwknop": fw });
        out["real_fwknop_client_ms"] = json!(real_fwknop_client(
            &lab,
            &mut w,
            keys,
            pool_addr(2 * m.lat_n + 1)
        )?);
        out["rss_after_latency_kib"] = json!(d.rss_kib());
    }
    if only("throughput") {
        eprintln!("==> nfknock: sustained grants/s ({} knocks)", m.thru_n);
        let socks = lab.udp_sockets(0, 64)?;
        let pkts: Vec<Vec<u8>> = (0..m.thru_n)
            .map(|_| native_knock(&keys.native, ips.next(), unix_now()))
            .collect();
        out["throughput"] = throughput(&mut w, &socks, &pkts, 512, Duration::from_secs(60), &d);
        let pkts: Vec<Vec<u8>> = (0..m.thru_n / 5)
            .map(|_| fwknop_knock(&keys.fwknop, ips.next(), unix_now()))
            .collect();
        out["throughput_fwknop_format"] =
            throughput(&mut w, &socks, &pkts, 512, Duration::from_secs(60), &d);
    }
    if only("flood") {
        eprintln!("==> nfknock: junk flood (rate_limit = 0)");
        let ctx = FloodCtx {
            queues: 1,
            legit_every: NFKNOCK_LEGIT_EVERY,
            lab: &lab,
            peer: Peer::Nfknock,
            keys,
            daemon: &d,
            junk: Arc::new(junk_nfknock(3 * 1024, true)),
            socks: Arc::new(lab.udp_sockets(0, 64)?),
            legit: lab.udp_sockets(2 * m.lat_n + 100, LEGIT_SOURCES)?,
            legit_sent: Default::default(),
        };
        out["flood"] = flood_ladder(&ctx, &mut w, ips, &m.rates, m.step_secs, true)?;
        out["rss_after_flood_kib"] = json!(d.rss_kib());
        out["hwm_kib"] = json!(d.hwm_kib());
    }
    out["events_lost"] = json!(w.lost.load(Ordering::Relaxed));
    let log = d.log_text();
    out["log_lines"] = json!(log.lines().count());
    d.stop();
    Ok(out)
}

/// nfknock with two queue workers (`queue = "7-8"`): grants/s and the junk-flood ladder, to set
/// beside the one-queue rows of [`run_nfknock`].
fn run_nfknock_workers(bin: &str, keys: &Arc<Keys>, m: &Mode, ips: &mut Ips) -> Result<Value> {
    let mut out = json!({ "queue": format!("{QUEUE}-{}", QUEUE + 1) });
    let lab = Lab::new("nfw", 2 * m.lat_n + 100 + LEGIT_SOURCES)?;
    let queue = format!("\"{QUEUE}-{}\"", QUEUE + 1);
    let d = start_nfknock_on(&lab, bin, &queue, "rate_limit = 0", &keys.clients())?;
    thread::sleep(Duration::from_millis(300));
    out["rss_idle_kib"] = json!(d.rss_kib());
    let mut w = Watcher::start(&lab, Peer::Nfknock)?;
    let (w2, warm) = latency(&lab, w, keys, Format::Native, 2 * m.lat_n, 1, false)?;
    w = w2;
    out["warmup"] = warm;
    eprintln!(
        "==> nfknock, 2 queue workers: sustained grants/s ({} knocks)",
        m.thru_n
    );
    let socks = lab.udp_sockets(0, 64)?;
    let pkts: Vec<Vec<u8>> = (0..m.thru_n)
        .map(|_| native_knock(&keys.native, ips.next(), unix_now()))
        .collect();
    out["throughput"] = throughput(&mut w, &socks, &pkts, 512, Duration::from_secs(60), &d);
    eprintln!("==> nfknock, 2 queue workers: junk flood (rate_limit = 0)");
    let ctx = FloodCtx {
        queues: 2,
        legit_every: NFKNOCK_LEGIT_EVERY,
        lab: &lab,
        peer: Peer::Nfknock,
        keys,
        daemon: &d,
        junk: Arc::new(junk_nfknock(3 * 1024, true)),
        socks: Arc::new(socks),
        legit: lab.udp_sockets(2 * m.lat_n + 100, LEGIT_SOURCES)?,
        legit_sent: Default::default(),
    };
    out["flood"] = flood_ladder(&ctx, &mut w, ips, &m.rates, m.step_secs, true)?;
    out["rss_after_flood_kib"] = json!(d.rss_kib());
    let log_path = d.log.clone();
    d.stop();
    // Contention at the hand-off: each worker logs, when it stops, how many packets it passed
    // to the main loop and how often it found the channel full and had to wait.
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    let field = |line: &str, key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    out["workers"] = json!(log
        .lines()
        .filter(|l| l.contains("queue worker stopped"))
        .map(|l| json!({
            "queue": field(l, "queue="),
            "packets": field(l, "packets="),
            "waits_for_main_loop": field(l, "waits_for_main_loop="),
        }))
        .collect::<Vec<_>>());
    Ok(out)
}

/// Native-length junk (random 128-byte payloads and native knocks under an unknown key,
/// alternately: udp length 136, as a native knock) against nfknock with the kernel prefilter on
/// (the default) and off (`prefilter = false`: every junk packet reaches the daemon, the old
/// behaviour), one fresh lab and daemon each, `rate_limit = 0`. Per step: the kernel's
/// `junk_native` counter, the queue's counters, the daemon's CPU per junk packet, the legit
/// knocks granted and their latency.
fn run_prefilter(bin: &str, keys: &Arc<Keys>, m: &Mode, ips: &mut Ips) -> Result<Value> {
    let mut out = json!({});
    for on in [true, false] {
        let name = if on { "on" } else { "off" };
        eprintln!("==> nfknock: native-length junk flood, prefilter {name} (rate_limit = 0)");
        let lab = Lab::new(if on { "pf1" } else { "pf0" }, 100 + LEGIT_SOURCES)?;
        let d = start_nfknock(
            &lab,
            bin,
            &format!("rate_limit = 0\nprefilter = {on}"),
            &keys.clients(),
        )?;
        let mut w = Watcher::start_nice(&lab, Peer::Nfknock, Some(WATCHER_NICE))?;
        let (w2, warm) = latency(&lab, w, keys, Format::Native, 0, 1, false)?;
        w = w2;
        let pf = prefilter_stats(&lab);
        let hints = pf.map(|p| p.hints);
        if on && hints.unwrap_or(0) == 0 {
            bail!(
                "prefilter = true, but the kernel's `inet nfknock knock_hints` set is empty or \
                 unreadable ({pf:?}); see the daemon's log:\n{}",
                d.log_text()
            );
        }
        let ctx = FloodCtx {
            queues: 1,
            legit_every: NFKNOCK_LEGIT_EVERY,
            lab: &lab,
            peer: Peer::Nfknock,
            keys,
            daemon: &d,
            junk: Arc::new(junk_nfknock(2 * 1024, false)),
            socks: Arc::new(lab.udp_sockets(0, 64)?),
            legit: lab.udp_sockets(100, LEGIT_SOURCES)?,
            legit_sent: Default::default(),
        };
        // The legit knocks go out from this thread, which timestamps each before its `send`: at
        // the junk senders' priority it could wait for a CPU in between, counted as latency.
        let old_nice = set_thread_nice(WATCHER_NICE);
        let ladder = flood_ladder(&ctx, &mut w, ips, &m.pf_rates, m.step_secs, true);
        set_thread_nice(old_nice);
        let mut ladder = ladder?;
        // The highest junk rate actually sent with every legit knock granted, whether or not
        // the senders reached the offered rate (with the prefilter on, the top step is the
        // senders' maximum, not the daemon's).
        let clean = ladder["steps"].as_array().and_then(|a| {
            a.iter()
                .filter(|s| s["all_legit_granted"] == json!(true))
                .max_by(|x, y| {
                    let v = |s: &Value| s["sent_pps"].as_f64().unwrap_or(0.0);
                    v(x).total_cmp(&v(y))
                })
                .cloned()
        });
        ladder["max_sent_all_granted"] = json!(clean);
        ladder["hints"] = json!(hints);
        ladder["warmup"] = warm;
        ladder["rss_after_flood_kib"] = json!(d.rss_kib());
        out[name] = ladder;
        d.stop();
    }
    Ok(out)
}

fn run_fwknopd(
    keys: &Arc<Keys>,
    m: &Mode,
    ips: &mut Ips,
    only: &dyn Fn(&str) -> bool,
) -> Result<Value> {
    let mut out = json!({});
    let lab = Lab::new("fwk", m.lat_n + 100 + LEGIT_SOURCES)?;
    let (d, mut w) = start_fwknopd_warm(&lab, keys, m, FwTuning::Defaults)?;
    out["rss_idle_kib"] = json!(d.rss_kib());
    if only("latency") {
        eprintln!("==> fwknopd: knock → open latency ({} knocks)", m.lat_n);
        let (w2, fw) = latency(&lab, w, keys, Format::Fwknop, 0, m.lat_n, true)?;
        w = w2;
        out["latency"] = json!({ "fwknop": fw });
        out["real_fwknop_client_ms"] = json!(real_fwknop_client(
            &lab,
            &mut w,
            keys,
            pool_addr(m.lat_n + 95)
        )?);
    }
    if only("throughput") {
        eprintln!("==> fwknopd: sustained grants/s ({} s)", m.fw_thru_secs);
        let socks = lab.udp_sockets(0, 16)?;
        let pkts: Vec<Vec<u8>> = (0..(m.fw_thru_secs as usize * 200))
            .map(|_| fwknop_knock(&keys.fwknop, ips.next(), unix_now()))
            .collect();
        out["throughput"] = throughput(
            &mut w,
            &socks,
            &pkts,
            20,
            Duration::from_secs(m.fw_thru_secs),
            &d,
        );
    }
    if only("flood") {
        eprintln!("==> fwknopd: junk flood");
        let ctx = FloodCtx {
            queues: 1,
            legit_every: FWKNOPD_LEGIT_EVERY,
            lab: &lab,
            peer: Peer::Fwknopd,
            keys,
            daemon: &d,
            junk: Arc::new(junk_fwknopd(1024)),
            socks: Arc::new(lab.udp_sockets(0, 64)?),
            legit: lab.udp_sockets(m.lat_n + 100, LEGIT_SOURCES)?,
            legit_sent: Default::default(),
        };
        out["flood"] = flood_ladder(&ctx, &mut w, ips, &m.fw_rates, m.step_secs, false)?;
    }
    d.stop();
    drop(lab);
    if only("flood") {
        eprintln!(
            "==> fwknopd tuned (PCAP_DISPATCH_COUNT 100000, PCAP_LOOP_SLEEP 1000, no -v): junk flood"
        );
        let lab = Lab::new("fwt", m.lat_n + 100 + LEGIT_SOURCES)?;
        let (d, mut w) = start_fwknopd_warm(&lab, keys, m, FwTuning::Tuned)?;
        let ctx = FloodCtx {
            queues: 1,
            legit_every: FWKNOPD_LEGIT_EVERY,
            lab: &lab,
            peer: Peer::Fwknopd,
            keys,
            daemon: &d,
            junk: Arc::new(junk_fwknopd(1024)),
            socks: Arc::new(lab.udp_sockets(0, 64)?),
            legit: lab.udp_sockets(m.lat_n + 100, LEGIT_SOURCES)?,
            legit_sent: Default::default(),
        };
        out["flood_tuned"] = flood_ladder(&ctx, &mut w, ips, &m.fw_rates, m.step_secs, false)?;
        out["rss_idle_tuned_kib"] = json!(d.rss_kib());
        d.stop();
    }
    Ok(out)
}

/// Start fwknopd and wait until it grants (it opens its capture after creating its chains).
fn start_fwknopd_warm(
    lab: &Lab,
    keys: &Arc<Keys>,
    m: &Mode,
    tuning: FwTuning,
) -> Result<(Daemon, Watcher)> {
    let d = start_fwknopd(lab, keys, tuning)?;
    let mut w = Watcher::start(lab, Peer::Fwknopd)?;
    let t = Instant::now();
    for i in 0..30 {
        let (w2, v) = latency(lab, w, keys, Format::Fwknop, m.lat_n + 60 + i, 1, false)?;
        w = w2;
        if v["not_granted"] == json!(0) {
            return Ok((d, w));
        }
    }
    bail!(
        "fwknopd granted nothing within {:?}:\n{}",
        t.elapsed(),
        d.log_text()
    )
}

fn run_scale(bin: &str, keys: &Arc<Keys>, m: &Mode, ips: &mut Ips) -> Result<Value> {
    let mut rows = Vec::new();
    let lab = Lab::new("scale", 64)?;
    let socks = lab.udp_sockets(0, 64)?;
    let junk = Arc::new(junk_nfknock(2048, false));
    for &c in &m.clients {
        eprintln!("==> nfknock scale: {c} clients");
        let t = Instant::now();
        let d = start_nfknock(&lab, bin, "rate_limit = 0", &many_clients(keys, c))?;
        let startup = t.elapsed().as_secs_f64();
        let mut w = Watcher::start(&lab, Peer::Nfknock)?;
        let rss_idle = d.rss_kib();
        let p0 = scale_point(&lab, &d, &mut w, keys, ips, &socks, &junk, m)?;
        let have = m.scale_lat + m.scale_thru;
        let filled = fill(
            &lab, &d, &mut w, keys, ips, &socks, have, m.grants, !m.quick,
        )?;
        // Measure the state, not the fill's after-effects: the fill's last grants take the
        // kernel's set past 98 304 elements (75 % of 131 072 buckets), and nft_set_hash's
        // rhashtable then re-hashes every element in a kworker for 50–80 ms (`perf`/tracefs
        // workqueue trace in BENCHMARKS.md); knocks sent meanwhile wait up to ~10 ms.
        thread::sleep(SETTLE);
        let p1 = scale_point(&lab, &d, &mut w, keys, ips, &socks, &junk, m)?;
        rows.push(json!({
            "clients": c, "startup_s": startup, "rss_idle_kib": rss_idle,
            "grants_0": p0, "fill": filled, "grants_100k": p1, "live_grants": m.grants.max(have) + m.scale_lat + m.scale_thru,
            "rss_kib": d.rss_kib(), "hwm_kib": d.hwm_kib(),
        }));
        d.stop();
        in_ns(&lab.srv, || {
            nfknock::netfilter::nft::Nft::open().and_then(|mut n| n.remove_table())
        })??;
    }
    Ok(json!(rows))
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

fn f(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or_else(|| "–".into(), |x| format!("{x:.digits$}"))
}

fn mib(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "–".into(), |k| format!("{:.1} MiB", k / 1024.0))
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "n/a",
    }
}

fn report(r: &Value) -> String {
    let (n, fw) = (&r["nfknock"], &r["fwknopd"]);
    let mut s = String::new();
    let nl_ = &n["latency"]["native"]["event_ms"];
    let nf = &n["latency"]["fwknop"]["event_ms"];
    let ff = &fw["latency"]["fwknop"]["event_ms"];
    let ratio = |a: &Value, b: &Value| match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let r50 = ratio(&ff["p50"], &nl_["p50"]);
    let r99 = ratio(&ff["p99"], &nl_["p99"]);
    let _ = writeln!(s, "| figure | nfknock | fwknopd 2.6.10 | target | |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    let _ =
        writeln!(
        s,
        "| knock → grant in kernel, native knock, p50 / p99 | {} / {} ms | – | p99 ≤ 1 ms | {} |",
        f(&nl_["p50"], 3), f(&nl_["p99"], 3), verdict(nl_["p99"].as_f64().map(|x| x <= 1.0))
    );
    let _ = writeln!(
        s,
        "| knock → grant in kernel, fwknop knock, p50 / p99 | {} / {} ms | {} / {} ms | | |",
        f(&nf["p50"], 3),
        f(&nf["p99"], 3),
        f(&ff["p50"], 1),
        f(&ff["p99"], 1)
    );
    let _ = writeln!(
        s,
        "| fwknopd ÷ nfknock (native), p50 / p99 | {} / {} × | | ≥ 100× | {} |",
        r50.map_or("–".into(), |x| format!("{x:.0}")),
        r99.map_or("–".into(), |x| format!("{x:.0}")),
        verdict(r50.zip(r99).map(|(a, b)| a >= 100.0 && b >= 100.0))
    );
    let (nc, fc) = (
        &n["latency"]["native"]["connect_ms"],
        &fw["latency"]["fwknop"]["connect_ms"],
    );
    let _ = writeln!(
        s,
        "| knock → first TCP connect (client's view), p50 / p99 | {} / {} ms | {} / {} ms | | |",
        f(&nc["p50"], 3),
        f(&nc["p99"], 3),
        f(&fc["p50"], 1),
        f(&fc["p99"], 1)
    );
    let _ = writeln!(
        s,
        "| real `fwknop` client: process start → grant | {} ms | {} ms | | |",
        f(&n["real_fwknop_client_ms"], 2),
        f(&fw["real_fwknop_client_ms"], 1)
    );
    let (nt, ft) = (&n["throughput"], &fw["throughput"]);
    let _ = writeln!(
        s,
        "| sustained grants/s (native; fwknop format) | {} ({}/{}); {} | {} ({}/{}) | ≥ 20 000 | {} |",
        f(&nt["grants_per_s"], 0), nt["granted"], nt["sent"], f(&n["throughput_fwknop_format"]["grants_per_s"], 0),
        f(&ft["grants_per_s"], 1), ft["granted"], ft["sent"],
        verdict(nt["grants_per_s"].as_f64().map(|x| x >= 20_000.0))
    );
    let nw = &r["nfknock_2_workers"];
    if !nw.is_null() {
        let _ = writeln!(
            s,
            "| sustained grants/s, native, 1 queue vs 2 queue workers (`queue = \"{}\"`) | {} vs {} | | | |",
            nw["queue"].as_str().unwrap_or("?"),
            f(&nt["grants_per_s"], 0),
            f(&nw["throughput"]["grants_per_s"], 0)
        );
        let _ = writeln!(
            s,
            "| junk absorbed with no legit knock lost, 1 queue vs 2 queue workers (offered/s) | {} vs {} | | | |",
            n["flood"]["best"]["rate"].as_u64().map_or("none".into(), |x| x.to_string()),
            nw["flood"]["best"]["rate"].as_u64().map_or("none".into(), |x| x.to_string())
        );
        let waits: Vec<String> = nw["workers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|w| {
                        format!(
                            "queue {}: {} packets, {} waits",
                            w["queue"], w["packets"], w["waits_for_main_loop"]
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "| 2 queue workers: packets handed to the main loop, times a worker waited for it | {} | | | |",
            waits.join("; ")
        );
    }
    let (nb, fb) = (&n["flood"]["best"], &fw["flood"]["best"]);
    let _ = writeln!(
        s,
        "| junk absorbed with no legit knock lost (offered/s) | {} | {} | ≥ 150 000 | {} |",
        nb["rate"].as_u64().map_or("none".into(), |x| x.to_string()),
        fb["rate"].as_u64().map_or("none".into(), |x| x.to_string()),
        verdict(
            n["flood"]
                .get("steps")
                .map(|_| nb["rate"].as_u64().unwrap_or(0) >= 150_000)
        )
    );
    let ftb = &fw["flood_tuned"]["best"];
    let tuned_ratio = match (nb["rate"].as_u64(), ftb["rate"].as_u64()) {
        (Some(a), Some(b)) if b > 0 => Some(a as f64 / b as f64),
        _ => None,
    };
    let _ = writeln!(
        s,
        "| junk absorbed with no legit knock lost, against tuned fwknopd (offered/s) | {} | {} (tuned) | ≥ 10× | {} |",
        nb["rate"].as_u64().map_or("none".into(), |x| x.to_string()),
        ftb["rate"].as_u64().map_or("none".into(), |x| x.to_string()),
        if fw["flood_tuned"].is_null() {
            "n/a"
        } else {
            verdict(Some(tuned_ratio.is_some_and(|x| x >= 10.0)))
        }
    );
    let _ = writeln!(
        s,
        "| legit knock latency at that rate, p50 / p99 | {} / {} ms | {} / {} ms | | |",
        f(&nb["legit_ms"]["p50"], 2),
        f(&nb["legit_ms"]["p99"], 2),
        f(&fb["legit_ms"]["p50"], 1),
        f(&fb["legit_ms"]["p99"], 1)
    );
    let pf = &r["nfknock_prefilter"];
    if !pf.is_null() {
        // The goals of issue 11 for native-length junk, from the prefilter ladders.
        let (on, off) = (&pf["on"], &pf["off"]);
        let top = on["steps"]
            .as_array()
            .and_then(|a| a.last())
            .cloned()
            .unwrap_or(json!(null));
        let top_ok = top["all_legit_granted"]
            .as_bool()
            .zip(top["legit_ms"]["p99"].as_f64())
            .map(|(all, p99)| all && p99 <= 1.0);
        let _ = writeln!(
            s,
            "| native-length junk, prefilter on, top step (the senders' max): sent/s, legit granted, p50 / p99 | {} /s, {}/{}, {} / {} ms | | 100 %, p99 ≤ 1 ms | {} |",
            f(&top["sent_pps"], 0),
            top["legit_granted"],
            top["legit_sent"],
            f(&top["legit_ms"]["p50"], 2),
            f(&top["legit_ms"]["p99"], 2),
            verdict(top_ok)
        );
        // Off: the highest step the queue kept up with (no queue drops). Higher off steps
        // divide the daemon's CPU by junk it never saw (the kernel dropped it at the queue).
        let off_ref = off["steps"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .rev()
                    .find(|st| st["queue_dropped"].as_u64() == Some(0))
                    .or(a.first())
            })
            .cloned()
            .unwrap_or(json!(null));
        // On: the worst step (the daemon's idle work, spread over the fewest packets).
        let on_worst = on["steps"]
            .as_array()
            .and_then(|a| {
                a.iter().max_by(|x, y| {
                    let v = |s: &Value| s["daemon_cpu_ns_per_junk"].as_f64().unwrap_or(0.0);
                    v(x).total_cmp(&v(y))
                })
            })
            .cloned()
            .unwrap_or(json!(null));
        let _ = writeln!(
            s,
            "| daemon CPU per native-length junk packet, prefilter on (worst step, {}/s) vs off (highest step with no queue drops, {}/s) | {} vs {} ns | | ≈ 0 | {} |",
            on_worst["rate"],
            off_ref["rate"],
            f(&on_worst["daemon_cpu_ns_per_junk"], 1),
            f(&off_ref["daemon_cpu_ns_per_junk"], 0),
            verdict(on_worst["daemon_cpu_ns_per_junk"].as_f64().map(|x| x < 100.0))
        );
        let clean = &on["max_sent_all_granted"];
        let ftb = &fw["flood_tuned"]["best"];
        let ratio = match (clean["sent_pps"].as_f64(), ftb["sent_pps"].as_f64()) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let _ = writeln!(
            s,
            "| junk sent with no legit knock lost, prefilter on vs tuned fwknopd (sent/s) | {} | {} (tuned) | ≥ 10× | {} |",
            f(&clean["sent_pps"], 0),
            f(&ftb["sent_pps"], 0),
            if fw["flood_tuned"].is_null() {
                "n/a (run with `--only prefilter,flood`)"
            } else {
                verdict(Some(ratio.is_some_and(|x| x >= 10.0)))
            }
        );
    }
    let _ = writeln!(
        s,
        "| RSS idle | {} | {} | ≤ 5 MiB | {} |",
        mib(&n["rss_idle_kib"]),
        mib(&fw["rss_idle_kib"]),
        verdict(n["rss_idle_kib"].as_f64().map(|k| k <= 5.0 * 1024.0))
    );
    let _ = writeln!(
        s,
        "| RSS after the flood ladder (peak) | {} ({}) | | | |",
        mib(&n["rss_after_flood_kib"]),
        mib(&n["hwm_kib"])
    );
    let big = r["scale"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["clients"] == json!(10_000)));
    if let Some(b) = big {
        let _ = writeln!(
            s,
            "| RSS at 10 000 clients + {} live grants (filled by {}) | {} (peak {}) | | ≤ 32 MiB | {} |",
            b["live_grants"],
            b["fill"]["by"].as_str().unwrap_or("?"),
            mib(&b["rss_kib"]), mib(&b["hwm_kib"]),
            verdict(b["rss_kib"].as_f64().map(|k| k <= 32.0 * 1024.0))
        );
    }

    let floods = [
        ("nfknock (`rate_limit = 0`)", &n["flood"]),
        (
            "nfknock, 2 queue workers (`queue = \"7-8\"`, `rate_limit = 0`; CPU = all threads)",
            &r["nfknock_2_workers"]["flood"],
        ),
        (
            "fwknopd, defaults (`PCAP_DISPATCH_COUNT` 100, `PCAP_LOOP_SLEEP` 100000, `-v`)",
            &fw["flood"],
        ),
        (
            "fwknopd, tuned (`PCAP_DISPATCH_COUNT 100000`, `PCAP_LOOP_SLEEP 1000`, no `-v`)",
            &fw["flood_tuned"],
        ),
    ];
    for (name, fl) in floods {
        let Some(steps) = fl["steps"].as_array() else {
            continue;
        };
        let every = if name.starts_with("fwknopd") {
            FWKNOPD_LEGIT_EVERY
        } else {
            NFKNOCK_LEGIT_EVERY
        };
        let _ = writeln!(
            s,
            "\n**Junk flood, {name}** (a legit knock every {} ms during each step, each from an address of its own)\n",
            every.as_millis()
        );
        let _ = writeln!(s, "| offered/s | sent/s | queued/s | queue drops | socket drops | daemon CPU | legit granted | legit p50 / p99 | load |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
        for st in steps {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {}% | {}/{} | {} / {} ms | {} |",
                st["rate"],
                f(&st["sent_pps"], 0),
                f(&st["queued_pps"], 0),
                f(&st["queue_dropped"], 0),
                f(&st["socket_dropped"], 0),
                f(&st["daemon_cpu_pct"], 0),
                st["legit_granted"],
                st["legit_sent"],
                f(&st["legit_ms"]["p50"], 2),
                f(&st["legit_ms"]["p99"], 2),
                f(&st["loadavg"], 1)
            );
        }
    }
    if !pf.is_null() {
        let _ = writeln!(
            s,
            "\n**Native-length junk, kernel prefilter on and off** (`rate_limit = 0`; random 128-byte payloads and native knocks under an unknown key, alternately, udp length 136; a legit knock every {} ms, each from an address of its own; kernel drops = the `junk_native` counter of `inet nfknock`; CPU = all the daemon's threads ÷ junk packets sent)\n",
            NFKNOCK_LEGIT_EVERY.as_millis()
        );
        let _ = writeln!(s, "| prefilter | offered/s | sent/s | kernel drops (`junk_native`) | queued/s | queue drops | daemon CPU | CPU ns / junk packet | daemon's wait for a CPU per run | legit granted | legit p50 / p99 | load |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|");
        for (name, lad) in [("on", &pf["on"]), ("off", &pf["off"])] {
            for st in lad["steps"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    s,
                    "| {name} | {} | {} | {} | {} | {} | {}% | {} | {} µs | {}/{} | {} / {} ms | {} |",
                    st["rate"],
                    f(&st["sent_pps"], 0),
                    f(&st["kernel_junk_native"], 0),
                    f(&st["queued_pps"], 0),
                    f(&st["queue_dropped"], 0),
                    f(&st["daemon_cpu_pct"], 1),
                    f(&st["daemon_cpu_ns_per_junk"], 1),
                    f(&st["daemon_runq_wait_us_per_run"], 0),
                    st["legit_granted"],
                    st["legit_sent"],
                    f(&st["legit_ms"]["p50"], 2),
                    f(&st["legit_ms"]["p99"], 2),
                    f(&st["loadavg"], 1)
                );
            }
        }
    }
    let scales = [
        ("nfknock".to_string(), &r["scale"]),
        (
            format!("baseline `{}`", r["baseline"].as_str().unwrap_or("")),
            &r["scale_baseline"],
        ),
    ];
    for (label, sc) in scales {
        let Some(rows) = sc.as_array() else {
            continue;
        };
        let _ = writeln!(
            s,
            "\n**Scale, {label}** (rate_limit = 0; grants = live elements of `allow_v4`; p99 at 100 000 ≤ 2 × p99 at 0 is the goal)\n"
        );
        let _ = writeln!(s, "| clients | grants | startup | knock → grant p50 / p99 | p99 ÷ p99 at 0 | grants/s | CPU µs / grant | CPU ns / junk packet | RSS |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
        for row in rows {
            let p99_0 = row["grants_0"]["event_ms"]["p99"].as_f64();
            for (g, p) in [("0", &row["grants_0"]), ("100 000", &row["grants_100k"])] {
                let ratio = match (p["event_ms"]["p99"].as_f64(), p99_0) {
                    (Some(a), Some(b)) if b > 0.0 && g != "0" => {
                        format!("{:.2} ({})", a / b, verdict(Some(a <= 2.0 * b)))
                    }
                    _ => "–".into(),
                };
                let _ = writeln!(
                    s,
                    "| {} | {g} | {} s | {} / {} ms | {ratio} | {} | {} | {} | {} |",
                    row["clients"],
                    f(&row["startup_s"], 2),
                    f(&p["event_ms"]["p50"], 3),
                    f(&p["event_ms"]["p99"], 3),
                    f(&p["throughput"]["grants_per_s"], 0),
                    f(&p["throughput"]["daemon_cpu_us_per_grant"], 1),
                    f(&p["daemon_cpu_ns_per_junk"], 0),
                    if g == "0" {
                        mib(&row["rss_idle_kib"])
                    } else {
                        mib(&row["rss_kib"])
                    }
                );
            }
        }
    }
    s
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut quick, mut json_path, mut only_list, mut bin) =
        (false, None::<PathBuf>, None::<String>, None::<String>);
    let mut clients_arg = None::<Vec<usize>>;
    let mut baseline = None::<String>;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--json" => json_path = Some(args.next().context("--json needs a path")?.into()),
            "--only" => {
                only_list = Some(
                    args.next()
                        .context("--only needs latency,throughput,flood,prefilter,workers,scale")?,
                )
            }
            "--nfknock" => bin = Some(args.next().context("--nfknock needs a path")?),
            "--baseline" => {
                baseline = Some(
                    args.next()
                        .context("--baseline needs the path of an older nfknock")?,
                )
            }
            "--clients" => {
                let list = args.next().context("--clients needs a list, e.g. 1,1000")?;
                let parsed: Result<Vec<usize>, _> = list.split(',').map(str::parse).collect();
                clients_arg = Some(parsed.with_context(|| {
                    format!("--clients {list}: give client counts separated by commas, e.g. 1,1000")
                })?);
            }
            "-h" | "--help" => {
                println!("usage: bench [--quick] [--json PATH] [--only latency,throughput,flood,prefilter,workers,scale] [--clients 1,1000,10000] [--nfknock BIN] [--baseline OLD_BIN]");
                return Ok(());
            }
            other => bail!("unknown argument {other}; see --help"),
        }
    }
    let bin = match bin {
        Some(b) => b,
        // target/release/examples/bench → target/release/nfknock
        None => std::env::current_exe()?
            .parent()
            .and_then(|p| p.parent())
            .context("exe dir")?
            .join("nfknock")
            .to_string_lossy()
            .into_owned(),
    };
    if !std::path::Path::new(&bin).exists() {
        bail!("{bin} not found; build it with `cargo build --release` or pass --nfknock");
    }
    raise_nofile();
    let only = move |s: &str| {
        only_list
            .as_deref()
            .is_none_or(|l| l.split(',').any(|x| x == s))
    };
    let mut m = Mode::new(quick);
    if let Some(c) = clients_arg {
        m.clients = c;
    }
    let keys = Arc::new(Keys::new());
    let mut ips = Ips(0);
    let started = Instant::now();
    let uname = lab::sh(&["uname", "-r"]).unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
        c.lines()
            .find(|l| l.starts_with("model name"))
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
    });
    let mut r = json!({
        "mode": if quick { "quick" } else { "full" },
        "machine": { "nproc": thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "cpu": cpu, "kernel": uname.trim() },
        "date_unix": unix_now(),
        "loadavg_start": loadavg(),
    });
    r["nfknock"] = run_nfknock(&bin, &keys, &m, &mut ips, &only)?;
    if only("prefilter") {
        r["nfknock_prefilter"] = run_prefilter(&bin, &keys, &m, &mut ips)?;
    }
    if only("workers") {
        r["nfknock_2_workers"] = run_nfknock_workers(&bin, &keys, &m, &mut ips)?;
    }
    r["fwknopd"] = if lab::sh(&["sh", "-c", "command -v fwknopd"]).is_ok() {
        run_fwknopd(&keys, &m, &mut ips, &only)?
    } else {
        eprintln!("fwknopd not installed: skipping the peer (apt-get install fwknop-server)");
        json!(null)
    };
    if only("scale") {
        // Before and after in one run: the scale rows of an older build, interleaved in time
        // with this one's, so both see the same machine.
        if let Some(old) = &baseline {
            eprintln!("==> baseline {old}");
            r["scale_baseline"] = run_scale(old, &keys, &m, &mut ips)?;
            r["baseline"] = json!(old);
        }
        r["scale"] = run_scale(&bin, &keys, &m, &mut ips)?;
    }
    r["seconds"] = json!(started.elapsed().as_secs_f64());
    r["loadavg_end"] = json!(loadavg());
    let table = report(&r);
    println!("{table}");
    println!(
        "\n(total {:.0} s, {} mode, 1-min load average {} at the start, {} at the end)",
        started.elapsed().as_secs_f64(),
        if quick { "quick" } else { "full" },
        f(&r["loadavg_start"], 2),
        f(&r["loadavg_end"], 2)
    );
    if let Some(p) = json_path {
        std::fs::write(&p, serde_json::to_string_pretty(&r)?)?;
        eprintln!("JSON written to {}", p.display());
    }
    Ok(())
}
