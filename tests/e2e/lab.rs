//! A lab of network namespaces for the end-to-end tests, driven against the real kernel and the
//! real `nfknock` binary.
//!
//! ```text
//!   cli (10.77.0.2, fd77::2) ──veth── srv (10.77.0.1, fd77::1) ──veth── ctr (10.79.0.2)
//!                                      │ 10.78.0.1, fd78::1        "container": listens on :80,
//!   oth (10.78.0.2, fd78::2) ──veth────┘                            published as srv:8080 (DNAT)
//!                                      │ 10.80.0.1, fd80::1
//!                                      └──veth── int (10.80.0.2, fd80::2), only after
//!                                                [`Lab::add_internal`]: a host behind the
//!                                                server that NAT grants forward to
//! ```
//! Every lab has its own uniquely named namespaces (`nfk-<pid>-<n>-<role>`), removed on drop, so
//! tests run in parallel and after a crashed run. Traffic never leaves these namespaces. Its
//! `state` directory is prepared as the installer prepares one ([`init_state`]).
//!
//! This is the only rig of the end-to-end tests: every area file builds its labs here, starts
//! the lab's daemon ([`Lab::start_daemon`]) or one with other options ([`Daemon::start`]:
//! `--dry-run`, a `setpriv`/`strace` prefix, another log level), adds addresses
//! ([`Lab::add_client_addresses`]) and writes configs ([`Lab::write_config`],
//! [`Lab::write_config_raw`]).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

pub const SRV4: &str = "10.77.0.1";
pub const CLI4: &str = "10.77.0.2";
pub const SRV6: &str = "fd77::1";
#[allow(dead_code)] // named with the rest of the lab, no test connects to it yet
pub const CLI6: &str = "fd77::2";
pub const SRV_OTH4: &str = "10.78.0.1";
pub const OTH4: &str = "10.78.0.2";
pub const SRV_OTH6: &str = "fd78::1";
#[allow(dead_code)] // named with the rest of the lab, no test connects to it yet
pub const OTH6: &str = "fd78::2";
pub const CTR4: &str = "10.79.0.2";
/// The internal host behind the server ([`Lab::add_internal`]) and the server's side of it.
pub const INT4: &str = "10.80.0.2";
pub const INT6: &str = "fd80::2";
pub const SRV_INT4: &str = "10.80.0.1";
/// What IPv6 flows masqueraded to the internal host come from.
pub const SRV_INT6: &str = "fd80::1";
/// Host service gated in the input hook.
pub const HOST_PORT: u16 = 2222;
/// DNAT-published container port gated in the forward hook (→ ctr:80).
pub const PUBLISHED_PORT: u16 = 8080;
pub const KNOCK_PORT: u16 = 62201;

/// The user the lab's daemons run as, said explicitly: root, as they are started. The lab's
/// files (config, keys, state) are root's, in a 0700 directory; without `user`, a daemon on a
/// host that has an account `nfknock` would switch to it and could not read them.
pub const LAB_USER: &str = "root";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The `[server]` lines of most lab configs after the ones [`server_table`] writes: the host
/// port and the published port protected, `max_age` 120 s.
pub fn default_server() -> String {
    format!("protect = [\"tcp/{HOST_PORT}\", \"tcp/{PUBLISHED_PORT}\"]\nmax_age = 120\n")
}

/// The `[server]` table of every lab config: the knock port, queue 3, `state_dir`, `user`, then
/// the `extra` lines.
pub fn server_table(state_dir: &Path, user: &str, extra: &str) -> String {
    server_table_with_queue(state_dir, user, "3", extra)
}

/// [`server_table`] with another `queue` value (TOML), e.g. `"\"3-4\""` for two workers.
pub fn server_table_with_queue(state_dir: &Path, user: &str, queue: &str, extra: &str) -> String {
    format!(
        "[server]\nport = {KNOCK_PORT}\nqueue = {queue}\nstate_dir = \"{}\"\nuser = \"{user}\"\n{extra}\n",
        state_dir.display()
    )
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_nfknock")
}

fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    out
}

fn must(args: &[&str]) {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run `f` on a thread that has entered network namespace `ns`.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || {
        enter(&path);
        f()
    })
    .join()
    .expect("thread in namespace panicked")
}

fn enter(path: &str) {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns on a valid namespace fd; affects only the calling thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// A TCP echo service running in a namespace until dropped.
pub struct Echo {
    stop: Arc<AtomicBool>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

pub fn echo_server(ns: &str, addr: SocketAddr) -> Echo {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let path = format!("/run/netns/{ns}");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        enter(&path);
        let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        while !s.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((mut c, _)) => {
                    c.set_nonblocking(false).unwrap();
                    thread::spawn(move || {
                        let mut buf = [0u8; 1024];
                        while let Ok(n) = c.read(&mut buf) {
                            if n == 0 || c.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    });
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    rx.recv().expect("echo server did not start");
    Echo { stop }
}

/// A TCP service in a namespace that answers each connection with the address it came from
/// (what a host behind a NAT sees), then closes it; runs until dropped.
pub fn whoami_server(ns: &str, addr: SocketAddr) -> Echo {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let path = format!("/run/netns/{ns}");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        enter(&path);
        let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        while !s.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((mut c, peer)) => {
                    let _ = c.set_nonblocking(false);
                    let _ = c.write_all(peer.ip().to_string().as_bytes());
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    rx.recv().expect("whoami server did not start");
    Echo { stop }
}

/// Can `ns` open a TCP connection to `to` (SYN answered within `within`)?
pub fn tcp_open(ns: &str, to: SocketAddr, within: Duration) -> bool {
    in_ns(ns, move || TcpStream::connect_timeout(&to, within).is_ok())
}

/// Open a TCP connection from `ns` that stays usable outside the namespace thread.
pub fn tcp_connect(ns: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    in_ns(ns, move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(1))
    })
}

/// Send one UDP datagram from `ns`.
pub fn send_udp(ns: &str, to: SocketAddr, payload: Vec<u8>) {
    in_ns(ns, move || {
        let bind: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
            .parse()
            .unwrap();
        let s = UdpSocket::bind(bind).unwrap();
        s.send_to(&payload, to).unwrap();
    })
}

pub fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

/// Poll `cond` every 20 ms until it holds or `limit` passes; returns the time it took.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

pub struct Lab {
    pub name: String,
    pub srv: String,
    pub cli: String,
    pub oth: String,
    pub ctr: String,
    /// The internal host's namespace, once [`Lab::add_internal`] made it.
    pub int: Option<String>,
    pub dir: tempfile::TempDir,
    daemon: Option<Child>,
    log_path: PathBuf,
    runs: usize,
}

impl Lab {
    pub fn new() -> Lab {
        let name = format!(
            "nfk-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let ns = |role: &str| format!("{name}-{role}");
        let (srv, cli, oth, ctr) = (ns("srv"), ns("cli"), ns("oth"), ns("ctr"));
        let dir = tempfile::Builder::new()
            .prefix("nfknock-e2e-")
            .tempdir()
            .unwrap();
        let lab = Lab {
            name,
            srv,
            cli,
            oth,
            ctr,
            int: None,
            log_path: dir.path().join("daemon.log"),
            dir,
            daemon: None,
            runs: 0,
        };
        for n in [&lab.srv, &lab.cli, &lab.oth, &lab.ctr] {
            let _ = sh(&["ip", "netns", "del", n]);
            must(&["ip", "netns", "add", n]);
            must(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        lab.link(&lab.srv.clone(), "to-cli", &lab.cli.clone(), "to-srv");
        lab.link(&lab.srv.clone(), "to-oth", &lab.oth.clone(), "to-srv");
        lab.link(&lab.srv.clone(), "to-ctr", &lab.ctr.clone(), "to-srv");
        let (s, c, o, k) = (
            lab.srv.as_str(),
            lab.cli.as_str(),
            lab.oth.as_str(),
            lab.ctr.as_str(),
        );
        for (n, dev, a) in [
            (s, "to-cli", "10.77.0.1/24"),
            (c, "to-srv", "10.77.0.2/24"),
            (s, "to-oth", "10.78.0.1/24"),
            (o, "to-srv", "10.78.0.2/24"),
            (s, "to-ctr", "10.79.0.1/24"),
            (k, "to-srv", "10.79.0.2/24"),
        ] {
            must(&["ip", "-n", n, "addr", "add", a, "dev", dev]);
        }
        for (n, dev, a) in [
            (s, "to-cli", "fd77::1/64"),
            (c, "to-srv", "fd77::2/64"),
            (s, "to-oth", "fd78::1/64"),
            (o, "to-srv", "fd78::2/64"),
        ] {
            must(&["ip", "-n", n, "addr", "add", a, "dev", dev, "nodad"]);
        }
        must(&["ip", "-n", k, "route", "add", "default", "via", "10.79.0.1"]);
        must(&[
            "ip",
            "netns",
            "exec",
            s,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        // The "container runtime": publish ctr:80 as srv:8080, the way Docker/Podman do.
        let nat = format!(
            "table ip labnat {{\n chain pre {{ type nat hook prerouting priority dstnat; \
             tcp dport {PUBLISHED_PORT} dnat to {CTR4}:80; }}\n \
             chain post {{ type nat hook postrouting priority srcnat; oifname \"to-ctr\" masquerade; }}\n}}\n"
        );
        let nat_file = lab.path("labnat.nft");
        std::fs::write(&nat_file, nat).unwrap();
        must(&[
            "ip",
            "netns",
            "exec",
            s,
            "nft",
            "-f",
            nat_file.to_str().unwrap(),
        ]);
        init_state(&lab.path("state"));
        lab
    }

    /// Add the internal host `int` behind the server (for NAT grants) and return its
    /// namespace: reached from the server over `to-int`, from nowhere else (the client has no
    /// route to it). Its IPv4 default route is the server; it has NO IPv6 default route, so
    /// an IPv6 flow forwarded to it is answered only if its source was masqueraded to the
    /// server's `fd80::1`. The server forwards both families (the daemon changes no sysctl:
    /// an admin switches forwarding on, as here).
    pub fn add_internal(&mut self) -> String {
        assert!(self.int.is_none(), "internal host already added");
        let int = format!("{}-int", self.name);
        let _ = sh(&["ip", "netns", "del", &int]);
        must(&["ip", "netns", "add", &int]);
        must(&["ip", "-n", &int, "link", "set", "lo", "up"]);
        self.int = Some(int.clone());
        let srv = self.srv.clone();
        self.link(&srv, "to-int", &int, "to-srv");
        must(&[
            "ip",
            "-n",
            &srv,
            "addr",
            "add",
            "10.80.0.1/24",
            "dev",
            "to-int",
        ]);
        must(&[
            "ip",
            "-n",
            &int,
            "addr",
            "add",
            "10.80.0.2/24",
            "dev",
            "to-srv",
        ]);
        for (n, a) in [(&srv, "fd80::1/64"), (&int, "fd80::2/64")] {
            must(&[
                "ip",
                "-n",
                n,
                "addr",
                "add",
                a,
                "dev",
                if n == &srv { "to-int" } else { "to-srv" },
                "nodad",
            ]);
        }
        must(&["ip", "-n", &int, "route", "add", "default", "via", SRV_INT4]);
        must(&[
            "ip",
            "netns",
            "exec",
            &srv,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.forwarding=1",
        ]);
        int
    }

    /// Give the client and the stranger routes to the internal networks through the server
    /// (10.80.0.0/24, fd80::/64), as the clients of a gateway (VPN-like) have: the server then
    /// forwards their flows there unless its forward gate drops them.
    pub fn route_internal_from_outside(&self) {
        assert!(self.int.is_some(), "add_internal first");
        for (ns, v4, v6) in [(&self.cli, SRV4, SRV6), (&self.oth, SRV_OTH4, SRV_OTH6)] {
            must(&["ip", "-n", ns, "route", "add", "10.80.0.0/24", "via", v4]);
            must(&["ip", "-n", ns, "-6", "route", "add", "fd80::/64", "via", v6]);
        }
    }

    fn link(&self, a: &str, a_dev: &str, b: &str, b_dev: &str) {
        must(&[
            "ip", "link", "add", a_dev, "netns", a, "type", "veth", "peer", "name", b_dev, "netns",
            b,
        ]);
        must(&["ip", "-n", a, "link", "set", a_dev, "up"]);
        must(&["ip", "-n", b, "link", "set", b_dev, "up"]);
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A new key file (mode 0600) made by `nfknock keygen --out`.
    pub fn keygen(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        let out = sh(&[bin(), "keygen", "--out", p.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        p
    }

    /// Write `nfknock.toml` for the daemon: the [`default_server`] lines, then `server_extra`;
    /// `clients` is appended after the `[server]` table.
    pub fn write_config(&self, server_extra: &str, clients: &str) -> PathBuf {
        self.write_config_raw(&format!("{}{server_extra}", default_server()), clients)
    }

    /// Write `nfknock.toml` where the defaults of [`Lab::write_config`] (`protect`, `max_age`)
    /// do not fit: `server` lines go into the lab's `[server]` table as they are.
    pub fn write_config_raw(&self, server: &str, clients: &str) -> PathBuf {
        let p = self.path("nfknock.toml");
        let table = server_table(&self.path("state"), LAB_USER, server);
        std::fs::write(&p, format!("{table}{clients}")).unwrap();
        p
    }

    /// [`Lab::write_config_raw`] with another `queue` value (TOML), e.g. `"\"3-4\""`.
    pub fn write_config_queue(&self, queue: &str, server: &str, clients: &str) -> PathBuf {
        let p = self.path("nfknock.toml");
        let table = server_table_with_queue(&self.path("state"), LAB_USER, queue, server);
        std::fs::write(&p, format!("{table}{clients}")).unwrap();
        p
    }

    /// Add `addrs` to the client's veth (IPv4 as /24, IPv6 as /64 without DAD), e.g. as flood
    /// sources; `name` is the `ip -batch` file written for it.
    pub fn add_client_addresses(&self, name: &str, addrs: &[IpAddr]) {
        let batch = self.path(name);
        let text: String = addrs
            .iter()
            .map(|a| match a {
                IpAddr::V4(_) => format!("addr add {a}/24 dev to-srv\n"),
                IpAddr::V6(_) => format!("addr add {a}/64 dev to-srv nodad\n"),
            })
            .collect();
        std::fs::write(&batch, text).unwrap();
        let out = self.run(&self.cli, &["ip", "-batch", batch.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn run(&self, ns: &str, args: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec", ns];
        all.extend_from_slice(args);
        sh(&all)
    }

    pub fn nfknock(&self, ns: &str, args: &[&str]) -> Output {
        let mut all = vec![bin()];
        all.extend_from_slice(args);
        self.run(ns, &all)
    }

    /// Start `nfknock serve` in the server namespace and wait until it is serving.
    pub fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "daemon already running");
        self.runs += 1;
        let config = self.path("nfknock.toml");
        let child = spawn_serve(
            &self.srv,
            &[],
            &config,
            &[],
            "debug",
            &self.log_path,
            self.runs,
        );
        self.daemon = Some(child);
    }

    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("daemon not running").id()
    }

    /// SIGTERM the daemon; returns how long it took to exit, and its exit status.
    pub fn stop_daemon(&mut self) -> (Duration, std::process::ExitStatus) {
        self.signal("TERM");
        let start = Instant::now();
        let mut child = self.daemon.take().expect("daemon not running");
        let status = child.wait().unwrap();
        (start.elapsed(), status)
    }

    pub fn kill_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, sig: &str) {
        // `ip netns exec` execs the daemon, so the child's pid is the daemon's.
        must(&["kill", &format!("-{sig}"), &self.daemon_pid().to_string()]);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Knock from `ns` with `args` appended to `knock --server SERVER --port 62201`.
    pub fn knock(&self, ns: &str, server: &str, args: &[&str]) -> Output {
        let mut all = vec!["knock", "--server", server, "--port", "62201"];
        all.extend_from_slice(args);
        let out = self.nfknock(ns, &all);
        assert!(
            out.status.success(),
            "knock failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn nft_list(&self) -> String {
        String::from_utf8_lossy(
            &self
                .run(&self.srv, &["nft", "list", "table", "inet", "nfknock"])
                .stdout,
        )
        .into_owned()
    }
}

/// `ip netns exec SRV [prefix…] nfknock serve --config CONFIG [extra…]` with its output
/// appended to `log_path`, once it has logged `nfknock serving` for the `want`-th time there
/// (killed, and a panic with its log, if it exits or does not serve within 15 s).
fn spawn_serve(
    srv: &str,
    prefix: &[&str],
    config: &Path,
    extra: &[&str],
    log_level: &str,
    log_path: &Path,
    want: usize,
) -> Child {
    let log = File::options()
        .create(true)
        .append(true)
        .open(log_path)
        .unwrap();
    let mut child = Command::new("ip")
        .args(["netns", "exec", srv])
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
    let read_log = || std::fs::read_to_string(log_path).unwrap_or_default();
    let exited = |c: &mut Child| c.try_wait().ok().flatten().is_some();
    let ok = wait_until(Duration::from_secs(15), || {
        read_log().matches("nfknock serving").count() >= want || exited(&mut child)
    });
    if ok.is_none() || exited(&mut child) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("daemon did not start:\n{}", read_log());
    }
    child
}

/// A daemon started with options the lab's own does not use (`--dry-run`, a `setpriv` or
/// `strace` prefix, a quieter log), killed on drop.
pub struct Daemon {
    pub child: Option<Child>,
    log_path: PathBuf,
}

impl Daemon {
    /// `ip netns exec SRV [prefix…] nfknock serve --config CONFIG [extra…]`, logging to
    /// `lab.path(log_name)` at `log_level`, once it serves.
    pub fn start(
        lab: &Lab,
        prefix: &[&str],
        config: &Path,
        extra: &[&str],
        log_level: &str,
        log_name: &str,
    ) -> Daemon {
        let log_path = lab.path(log_name);
        let child = spawn_serve(&lab.srv, prefix, config, extra, log_level, &log_path, 1);
        Daemon {
            child: Some(child),
            log_path,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `ip netns exec` and `setpriv` exec the daemon: the child's pid is the daemon's.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon not running").id()
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("daemon not running");
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

impl Drop for Lab {
    fn drop(&mut self) {
        self.kill_daemon();
        for n in [&self.srv, &self.cli, &self.oth, &self.ctr]
            .into_iter()
            .chain(self.int.as_ref())
        {
            let _ = sh(&["ip", "netns", "del", n]);
        }
        if thread::panicking() {
            eprintln!("--- daemon log of {} ---\n{}", self.name, self.log());
        }
    }
}

/// Prepare `dir` as the installer prepares `/var/lib/nfknock` (`nfknock init-state`): a new
/// state directory, whose first daemon start grants at once. Every lab's `state` directory is
/// made so; a directory made any other way starts as a lost journal (knocks refused for
/// `max_age`).
pub fn init_state(dir: &Path) {
    let out = sh(&[bin(), "init-state", "--state-dir", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "init-state {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Read a whole file as bytes.
pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// The first three octets of a [`Pool`]'s network.
pub const POOL_NET: &str = "10.88.0";
/// A [`Pool`]'s client and stranger.
pub const POOL_CLI4: &str = "10.88.0.100";
pub const POOL_OTH4: &str = "10.88.0.101";
/// A [`Pool`]'s service namespace (where a test runs etcd).
pub const POOL_SVC4: &str = "10.88.0.200";

/// Several server namespaces on one bridge, each with its own `nfknock serve`, plus a client,
/// a stranger and a service namespace (for etcd): the rig of the fleet tests.
///
/// ```text
///   host0 (10.88.0.1)  host1 (10.88.0.2) …  cli (.100)  oth (.101)  svc (.200)
///        └──────────────┴───── bridge br0 in namespace `hub` ────┴──────────┘
/// ```
/// Host `i` has its own config, state directory and daemon log under `dir/host{i}/`.
pub struct Pool {
    pub hub: String,
    pub hosts: Vec<String>,
    pub cli: String,
    pub oth: String,
    pub svc: String,
    pub dir: tempfile::TempDir,
    daemons: Vec<Option<Child>>,
}

impl Pool {
    pub fn new(n: usize) -> Pool {
        let name = format!(
            "nfk-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let dir = tempfile::Builder::new()
            .prefix("nfknock-pool-")
            .tempdir()
            .unwrap();
        let pool = Pool {
            hub: format!("{name}-hub"),
            hosts: (0..n).map(|i| format!("{name}-h{i}")).collect(),
            cli: format!("{name}-cli"),
            oth: format!("{name}-oth"),
            svc: format!("{name}-svc"),
            dir,
            daemons: (0..n).map(|_| None).collect(),
        };
        let hub = pool.hub.clone();
        let _ = sh(&["ip", "netns", "del", &hub]);
        must(&["ip", "netns", "add", &hub]);
        must(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"]);
        must(&["ip", "-n", &hub, "link", "set", "br0", "up"]);
        let mut members: Vec<(String, String)> = pool
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.clone(), format!("{POOL_NET}.{}", i + 1)))
            .collect();
        members.push((pool.cli.clone(), POOL_CLI4.into()));
        members.push((pool.oth.clone(), POOL_OTH4.into()));
        members.push((pool.svc.clone(), POOL_SVC4.into()));
        for (k, (ns, addr)) in members.iter().enumerate() {
            let _ = sh(&["ip", "netns", "del", ns]);
            must(&["ip", "netns", "add", ns]);
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            let port = format!("p{k}");
            must(&[
                "ip", "link", "add", &port, "netns", &hub, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ]);
            must(&[
                "ip", "-n", &hub, "link", "set", &port, "master", "br0", "up",
            ]);
            must(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            must(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        }
        for i in 0..n {
            std::fs::create_dir_all(pool.host_dir(i)).unwrap();
            init_state(&pool.host_dir(i).join("state"));
        }
        pool
    }

    pub fn addr(&self, i: usize) -> String {
        format!("{POOL_NET}.{}", i + 1)
    }

    pub fn host_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("host{i}"))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write host `i`'s `nfknock.toml`: the lab's `[server]` table with `server` lines, then
    /// `clients`.
    pub fn write_config(&self, i: usize, server: &str, clients: &str) -> PathBuf {
        let p = self.host_dir(i).join("nfknock.toml");
        let table = server_table(&self.host_dir(i).join("state"), LAB_USER, server);
        std::fs::write(&p, format!("{table}{clients}")).unwrap();
        p
    }

    /// Start `nfknock serve` on host `i` and wait until it serves.
    pub fn start_daemon(&mut self, i: usize) {
        assert!(self.daemons[i].is_none(), "daemon {i} already running");
        let config = self.host_dir(i).join("nfknock.toml");
        let log = self.host_dir(i).join("daemon.log");
        let want = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("nfknock serving")
            .count()
            + 1;
        self.daemons[i] = Some(spawn_serve(
            &self.hosts[i],
            &[],
            &config,
            &[],
            "debug",
            &log,
            want,
        ));
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.host_dir(i).join("daemon.log")).unwrap_or_default()
    }

    /// Send `sig` (e.g. `HUP`) to host `i`'s daemon.
    pub fn signal(&self, i: usize, sig: &str) {
        let pid = self.daemons[i].as_ref().expect("daemon not running").id();
        must(&["kill", &format!("-{sig}"), &pid.to_string()]);
    }

    pub fn run(&self, ns: &str, args: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec", ns];
        all.extend_from_slice(args);
        sh(&all)
    }

    /// Knock host `i` from `ns` with `args` appended to `knock --server ADDR --port 62201`.
    pub fn knock(&self, ns: &str, i: usize, args: &[&str]) {
        let server = self.addr(i);
        let mut all = vec![bin(), "knock", "--server", &server, "--port", "62201"];
        all.extend_from_slice(args);
        let out = self.run(ns, &all);
        assert!(
            out.status.success(),
            "knock failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for c in self.daemons.iter_mut().filter_map(Option::take) {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
        if thread::panicking() {
            for i in 0..self.hosts.len() {
                eprintln!("--- daemon log of host {i} ---\n{}", self.log(i));
            }
        }
        for n in self
            .hosts
            .iter()
            .chain([&self.cli, &self.oth, &self.svc, &self.hub])
        {
            let _ = sh(&["ip", "netns", "del", n]);
        }
    }
}
