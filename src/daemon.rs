//! Wiring: queue → engine → nft → verdict, plus signals, reload, sd_notify, privileges.
//!
//! The only place a [`Decision`] becomes netlink. One thread, one `poll(2)` over the queue
//! socket, the nftables event socket and a signal pipe: a signal never waits for a packet, and
//! a turn of the loop spends at most `TURN` (50 ms) on packets before it serves signals, ruleset
//! events and the tick again, so a flood never starves them. One daemon per network namespace
//! ([`InstanceLock`]); a reload revokes the live grants the new config no longer authorises.
//!
//! Per burst of queued packets: every packet goes through the pure [`Engine`]; the replay
//! records of authenticated packets are appended to the journal (before any grant, so a crash
//! can never forget a packet that opened something); all grants go to the kernel in one netlink
//! batch; then one batch verdict drops every packet of the burst — a knock is never delivered
//! and the host never answers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use tracing::{debug, error, info, warn};

use crate::access::{format_list, Access, Proto};
use crate::config::{self, Config};
use crate::engine::{Engine, Outcome};
use crate::netfilter::nft::{Element, Nft, NftError, NftEvents, QueueBackend, RulesetSpec};
use crate::netfilter::queue::{Queue, QueueConfig, QueueError};
use crate::policy::{Decision, Packet, Reason};
use crate::replay::ReplayKey;
use crate::state::{LoadReport, ReplayJournal};
use crate::wire::{self, native};

/// Packets handled per burst before grants are flushed and verdicts given.
const BURST: usize = 256;
/// Longest the loop spends on queued packets before it looks at signals, ruleset events and
/// the tick again. A flood that outpaces the daemon keeps the queue readable for as long as it
/// lasts; without a bound, SIGTERM, the repair of a flushed ruleset, journal syncs and the
/// hint window would all wait for the flood to end. 50 ms keeps each of them within about
/// 50 ms of its cause (a flush repair's goal is 100 ms) for the price of one `poll(2)` and one
/// read of the control pipe per 50 ms of packets.
const TURN: Duration = Duration::from_millis(50);
/// Packets received between two looks at the clock within a turn. The costliest packet is an
/// fwknop-shaped one tried under every fwknop client whose `sources` admit it (fwknop packets
/// carry no key hint): with hundreds of such clients that is a millisecond or more, so a whole
/// burst could overrun [`TURN`] many times over; 16 such packets overrun it by little. The
/// clock is read through the vDSO: no syscall is added per packet.
const TURN_CHECK: usize = 16;
/// How often the engine's windows move and the journal is synced.
const TICK: Duration = Duration::from_secs(1);
/// How often the journal is rewritten without expired entries.
const COMPACT_EVERY: Duration = Duration::from_secs(600);
/// Rejections logged at `warn` per second at most; the rest are counted.
const WARN_PER_SEC: u32 = 10;

/// Where queued packets come from: the kernel's NFQUEUE, or a scripted source in tests.
pub trait PacketSource {
    /// Readable when packets are waiting (`poll(2)`).
    fn fd(&self) -> RawFd;
    /// Without blocking, hand up to `max` waiting packets (id, raw IP packet) to `f`.
    fn recv_batch(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<usize, QueueError>;
    /// Verdict DROP for every packet received so far.
    fn drop_pending(&mut self) -> Result<(), QueueError>;
}

impl PacketSource for Queue {
    fn fd(&self) -> RawFd {
        self.as_raw_fd()
    }

    fn recv_batch(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<usize, QueueError> {
        Queue::recv_batch(self, max, f)
    }

    fn drop_pending(&mut self) -> Result<(), QueueError> {
        Queue::drop_pending(self).map(|_| ())
    }
}

/// The kernel side of the gate: the owned table and the grants in its allow sets.
pub trait Kernel {
    /// Create or refresh the table (one atomic batch), adding `restore` grants.
    fn install(&mut self, spec: &RulesetSpec, restore: &[Element]) -> Result<(), NftError>;
    /// Add or refresh grants (one batch).
    fn upsert(&mut self, elems: &[Element]) -> Result<(), NftError>;
    /// Remove grants (a revocation); grants already gone are no error.
    fn delete(&mut self, elems: &[Element]) -> Result<(), NftError>;
    /// Do grants really reach the kernel? (Not in a dry run: nothing to restore after a flush.)
    fn writes_grants(&self) -> bool {
        true
    }
}

impl Kernel for Nft {
    fn install(&mut self, spec: &RulesetSpec, restore: &[Element]) -> Result<(), NftError> {
        Nft::install(self, spec, restore)
    }

    fn upsert(&mut self, elems: &[Element]) -> Result<(), NftError> {
        Nft::upsert(self, elems)
    }

    fn delete(&mut self, elems: &[Element]) -> Result<(), NftError> {
        Nft::delete(self, elems)
    }
}

/// `--dry-run`: the table is installed as asked, but every grant is only logged as it would
/// have been written.
#[derive(Debug)]
pub struct DryRun<K>(pub K);

impl<K: Kernel> Kernel for DryRun<K> {
    fn install(&mut self, spec: &RulesetSpec, restore: &[Element]) -> Result<(), NftError> {
        self.0.install(spec, restore)
    }

    fn upsert(&mut self, elems: &[Element]) -> Result<(), NftError> {
        for e in elems {
            info!(addr = %e.addr, access = %e.access, timeout_ms = e.timeout_ms, "dry run: would add grant");
        }
        Ok(())
    }

    fn delete(&mut self, elems: &[Element]) -> Result<(), NftError> {
        for e in elems {
            info!(addr = %e.addr, access = %e.access, "dry run: would revoke grant");
        }
        Ok(())
    }

    fn writes_grants(&self) -> bool {
        false
    }
}

/// Notice when someone else changes the ruleset (e.g. `nft flush ruleset`).
pub trait RulesetEvents {
    fn fd(&self) -> RawFd;
    /// Drain pending events; true if our table may have lost something.
    fn drain(&mut self) -> Result<bool, NftError>;
}

impl RulesetEvents for NftEvents {
    fn fd(&self) -> RawFd {
        self.as_raw_fd()
    }

    fn drain(&mut self) -> Result<bool, NftError> {
        NftEvents::drain(self)
    }
}

/// What a command that found another daemon was about to do (for its message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Serve,
    Uninstall,
}

/// The one nfknock daemon per network namespace: an abstract `AF_UNIX` socket bound to a name
/// derived from the table's, held for the daemon's life (and by `nfknock uninstall` while it
/// works).
///
/// Why this lock: its scope is exactly the scope of table `inet nfknock`, the network namespace
/// (abstract socket names live in the network namespace, unix(7)), so two instances with
/// different queue numbers or state directories still cannot both manage the one table, while
/// daemons in other namespaces (containers, the e2e labs) never see each other. It needs no file
/// system (no stale pid file after a crash or SIGKILL: the kernel frees the name with the last
/// descriptor), works under the unit's sandbox (`RestrictAddressFamilies=` allows AF_UNIX) and
/// is taken before anything in the kernel is touched. The NFQUEUE bind, which the kernel refuses
/// to a second binder of the same number, now also comes before any nftables change, for a
/// foreign program (fwknopd, an IDS) on our queue number. A program that binds this name first
/// keeps a new daemon from starting (never a running one from running); the refusal names the
/// holder's pid and uid so it can be found.
pub struct InstanceLock {
    listener: UnixListener,
}

/// Probes waiting to be dismissed at most (`listen(2)` backlog); the tick accepts and closes
/// them, so a later probe can still read the holder's pid.
const LOCK_BACKLOG: usize = 4;

/// Another nfknock daemon manages table `inet nfknock` in this network namespace: nothing was
/// done. `main` exits with [`crate::cli::EXIT_USAGE`] for it.
#[derive(Debug)]
pub struct AlreadyRunning {
    pub action: Action,
    /// The holder's pid and uid (`SO_PEERCRED`), when it answered.
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    /// The holder's command line, when `/proc` shows it.
    pub cmdline: Option<String>,
}

impl std::fmt::Display for AlreadyRunning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::netfilter::nft::{FAMILY, TABLE};
        let who = match (self.pid, &self.cmdline) {
            (Some(pid), Some(cmd)) => format!("pid {pid}, uid {}: `{cmd}`", self.uid.unwrap_or(0)),
            (Some(pid), None) => format!("pid {pid}, uid {}", self.uid.unwrap_or(0)),
            _ => "pid unknown".to_string(),
        };
        let kill = self
            .pid
            .map_or(String::new(), |p| format!(", or `kill {p}`"));
        match self.action {
            Action::Serve => write!(
                f,
                "another nfknock daemon ({who}) already manages table `{FAMILY} {TABLE}` in this network namespace; nothing was changed. Stop it first (`systemctl stop nfknock`{kill}), or give it a new config with `systemctl reload nfknock` (SIGHUP)"
            ),
            Action::Uninstall => write!(
                f,
                "the nfknock daemon ({who}) manages table `{FAMILY} {TABLE}` in this network namespace and would re-create it at once; nothing was removed. Stop it first (`systemctl stop nfknock`{kill}), then run `nfknock uninstall` again"
            ),
        }
    }
}

impl std::error::Error for AlreadyRunning {}

impl InstanceLock {
    /// The abstract socket name (without its leading NUL).
    fn name() -> String {
        use crate::netfilter::nft::{FAMILY, TABLE};
        format!("nfknock: table {FAMILY} {TABLE}")
    }

    /// Take the lock, or say who holds it.
    pub fn acquire(action: Action) -> anyhow::Result<InstanceLock> {
        use std::os::linux::net::SocketAddrExt;
        let name = Self::name();
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .context("cannot name the instance lock")?;
        match UnixListener::bind_addr(&addr) {
            Ok(listener) => {
                listener
                    .set_nonblocking(true)
                    .context("cannot configure the instance lock")?;
                // std listens with a backlog of 128; a few are enough (see LOCK_BACKLOG).
                // SAFETY: listen(2) on a socket we own.
                unsafe { libc::listen(listener.as_raw_fd(), LOCK_BACKLOG as libc::c_int) };
                Ok(InstanceLock { listener })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                let cred = holder(name.as_bytes());
                let cmdline = cred.and_then(|c| {
                    let raw = std::fs::read(format!("/proc/{}/cmdline", c.pid)).ok()?;
                    let text: String = String::from_utf8_lossy(&raw)
                        .trim_end_matches('\0')
                        .replace('\0', " ")
                        .chars()
                        .take(200)
                        .collect();
                    (!text.is_empty()).then_some(text)
                });
                Err(AlreadyRunning {
                    action,
                    pid: cred.and_then(|c| u32::try_from(c.pid).ok()),
                    uid: cred.map(|c| c.uid),
                    cmdline,
                }
                .into())
            }
            Err(e) => Err(e).context(
                "cannot bind the instance lock (an abstract AF_UNIX socket); the sandbox must allow AF_UNIX (systemd: RestrictAddressFamilies=AF_NETLINK AF_UNIX)",
            ),
        }
    }

    /// Accept and close the connections of processes that asked who holds the lock (without
    /// blocking), so the backlog never fills and every later one gets its answer.
    pub fn dismiss_probes(&self) {
        for _ in 0..LOCK_BACKLOG * 4 {
            if self.listener.accept().is_err() {
                break;
            }
        }
    }
}

/// The credentials of the process listening on abstract name `name` (`SO_PEERCRED` of a
/// connection to it: the listener's, as of its `listen(2)`). Non-blocking: a holder whose
/// backlog is full, or that is stopped, answers `None`.
fn holder(name: &[u8]) -> Option<libc::ucred> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: plain socket(2); the descriptor is owned by `OwnedFd` right after.
    let raw = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // An abstract name: a NUL, then the name (not NUL-terminated), its length in addrlen.
    let path = addr.sun_path.get_mut(1..=name.len())?;
    for (d, s) in path.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    // SAFETY: `addr` is a valid sockaddr_un and `len` does not exceed its size.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            std::ptr::addr_of!(addr).cast(),
            len as libc::socklen_t,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: ucred is plain data; all-zero is a valid value.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut clen = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` has room for `clen` bytes, which the kernel updates.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(cred).cast(),
            &mut clen,
        )
    };
    (rc == 0 && cred.pid > 0).then_some(cred)
}

/// `nfknock serve` options.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    /// Decide and log every knock, write no grant.
    pub dry_run: bool,
    /// With `dry_run`: install the gate rules too (without it a dry run closes nothing).
    pub with_gate: bool,
}

/// The ruleset a config asks for.
pub fn ruleset_spec(config: &Config, backend: QueueBackend) -> RulesetSpec {
    RulesetSpec {
        knock_port: config.server.port,
        queue: config.server.queue,
        backend,
        protect: config.server.protect.clone(),
        native_len: native::PACKET_LEN as u16,
        fwknop: config
            .clients
            .iter()
            .any(|c| matches!(c.credential, config::Credential::Fwknop(_))),
        rate_limit: config.server.rate_limit,
        rate_limit_v4_prefix: config.server.rate_limit_v4_prefix,
        rate_limit_v6_prefix: config.server.rate_limit_v6_prefix,
        gate_input: true,
        gate_forward: config.server.gate_forward,
    }
}

/// `spec` without its gate rules unless `gate`: a dry run without `--with-gate` still queues
/// and judges knocks, but closes nothing that was open.
fn gated(spec: RulesetSpec, gate: bool) -> RulesetSpec {
    if gate {
        spec
    } else {
        RulesetSpec {
            gate_input: false,
            gate_forward: false,
            ..spec
        }
    }
}

/// Seconds since the Unix epoch (the one clock read of the daemon's decisions).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seconds on a clock that never steps (`CLOCK_BOOTTIME`: like `CLOCK_MONOTONIC`, but it keeps
/// counting through a suspend, which is time passing, not a step). Only the replay cache uses
/// it, to tell a step of the wall clock from time passing.
pub fn monotonic_secs() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through the valid pointer it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } == 0 {
        return u64::try_from(ts.tv_sec).unwrap_or(0);
    }
    // Kernels before 2.6.39 lack CLOCK_BOOTTIME; CLOCK_MONOTONIC (Instant) stops during a
    // suspend, which only makes replay entries stay longer.
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs()
}

/// Load a config or explain every problem.
pub fn load_config(path: &Path) -> anyhow::Result<Config> {
    config::load(path, &crate::sys::FsLoader, &crate::sys::SystemAccounts).map_err(|e| {
        let hint = format!(
            "fix the problems above and run `nfknock check --config {}`",
            path.display()
        );
        anyhow::Error::new(e).context(hint)
    })
}

/// Open the replay journal and log what was found: which case applied and, where knocks are
/// refused, until when and what the operator can do.
fn open_journal(
    config: &Config,
    config_path: &Path,
    now: u64,
) -> anyhow::Result<(ReplayJournal, crate::replay::ReplayCache)> {
    let dir = &config.server.state_dir;
    let max_age = config.server.max_age;
    let (journal, cache, report) = ReplayJournal::open(dir, now, max_age)
        .context("cannot open the replay journal; check `state_dir` and its permissions")?;
    // Every "refused" case below refuses knocks stamped before start + max_age: a knock
    // accepted before may carry a timestamp up to max_age ahead of the clock.
    match &report {
        LoadReport::FirstStart => info!(
            dir = %dir.display(),
            "first start of this state directory (first-start marker found): new replay journal, marker removed"
        ),
        LoadReport::Missing {
            refuse_before,
            dir_created,
            marker_ignored,
        } => error!(
            dir = %dir.display(),
            "no replay journal and no first-start marker in the state directory ({}): taken for \
             a lost journal (directory wiped or on a tmpfs, or `state_dir` changed), so knocks \
             stamped before {refuse_before} are refused for the next {max_age}s (no replay \
             window opens){}; after that knocks work again, nothing else to do. A new state \
             directory meant as such grants at once if prepared before its first start with \
             `nfknock init-state --config {}` (scripts/install does this)",
            if *dir_created { "it did not exist" } else { "it exists, without a journal" },
            if *marker_ignored {
                "; a `first-start` entry that is not a regular file was ignored"
            } else {
                ""
            },
            config_path.display()
        ),
        LoadReport::Loaded { live, torn_tail } => {
            info!(live, torn_tail, "replay journal loaded");
            if cache.refuse_before() > now {
                warn!(
                    "the replay journal was lost or set aside less than max_age ago: knocks \
                     stamped before {} are still refused",
                    cache.refuse_before()
                );
            }
        }
        LoadReport::Upgraded {
            from_version,
            live,
            refuse_before,
        } => warn!(
            live,
            "replay journal rewritten from format {from_version}, which does not say which knocks \
             it had already forgotten: knocks stamped before {refuse_before} are refused for the \
             next {max_age}s (no replay window opens)"
        ),
        LoadReport::Corrupt {
            reason,
            refuse_before,
        } => error!(
            %reason,
            "replay journal was corrupt and has been set aside; knocks stamped before \
             {refuse_before} are refused for the next {max_age}s (no replay window opens)"
        ),
    }
    Ok((journal, cache))
}

/// Run the daemon until SIGTERM/SIGINT.
pub fn serve(opts: &Options) -> anyhow::Result<()> {
    let config = Arc::new(load_config(&opts.config)?);
    for w in config::warnings(&config) {
        warn!("{w}");
    }
    // Before anything in the kernel or the state directory is touched: a running daemon must
    // see no change at all.
    let instance = InstanceLock::acquire(Action::Serve)?;
    // Started as root (no unit's User=): become the service user before anything is created in
    // state_dir, so every file there is its own, as under systemd. The netlink work below
    // needs only the CAP_NET_ADMIN it keeps. (After the lock: a missing state_dir is created.)
    leave_root(&config, &opts.config)?;
    let now = unix_now();
    let (journal, cache) = open_journal(&config, &opts.config, now)?;

    // The queue before any nftables change: if another program holds the number, nothing has
    // been diverted to it or gated in its name.
    let queue = Queue::open(QueueConfig {
        num: config.server.queue,
        ..QueueConfig::default()
    })?;
    let mut nft = Nft::open().context("cannot open the nftables netlink socket")?;
    let backend = nft
        .detect_queue_backend()
        .context("cannot probe the kernel's queue support")?;
    match backend {
        QueueBackend::Native => {
            info!("kernel has nft_queue: knocks are diverted with the native `queue` expression")
        }
        QueueBackend::Compat => info!(
            "kernel has no nft_queue: knocks are diverted with the xt NFQUEUE target (nft_compat)"
        ),
    }
    let gate = !opts.dry_run || opts.with_gate;
    let spec = gated(ruleset_spec(&config, backend), gate);
    if config.server.manage_ruleset {
        nft.install(&spec, &[])
            .context("cannot install the `inet nfknock` table")?;
        if gate {
            info!(port = spec.knock_port, queue = spec.queue, protect = %format_list(&spec.protect), "gate installed");
        } else {
            warn!(port = spec.knock_port, queue = spec.queue, "dry run: knocks are queued but no gate is installed, so nothing closes (add --with-gate to test the gate)");
        }
    } else if !nft.table_exists()? {
        bail!("table `inet nfknock` is not loaded and manage_ruleset = false; load nft/nfknock.nft (`nft -f nft/nfknock.nft`) or set manage_ruleset = true");
    }
    let events = NftEvents::open(&[nft.portid()]).context("cannot subscribe to nftables events")?;

    let control = Control::register()?;
    drop_privileges()?;
    // No extra refusal bound: the cache carries it (and its journal keeps it across restarts).
    let engine = Engine::new(config.clone(), cache, 0, now);
    release_freed_memory();
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    info!(
        clients = config.clients.len(),
        dry_run = opts.dry_run,
        "nfknock serving"
    );
    let result = if opts.dry_run {
        Daemon::new(
            engine,
            journal,
            queue,
            DryRun(nft),
            events,
            spec,
            gate,
            opts.config.clone(),
        )
        .holding(instance)
        .run(&control)
    } else {
        Daemon::new(
            engine,
            journal,
            queue,
            nft,
            events,
            spec,
            gate,
            opts.config.clone(),
        )
        .holding(instance)
        .run(&control)
    };
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    result
}

/// The running daemon: the pure engine plus its shells. Generic over the side effects so tests
/// drive the real loop in-process with scripted packets and a recording kernel.
pub struct Daemon<Q, K, E> {
    engine: Engine,
    journal: ReplayJournal,
    queue: Q,
    kernel: K,
    events: E,
    spec: RulesetSpec,
    /// Install the gate rules (false for a dry run without `--with-gate`).
    gate: bool,
    /// Grants we wrote and their deadlines, to restore them if someone flushes the ruleset.
    live: LiveGrants,
    warn_budget: WarnBudget,
    config_path: PathBuf,
    /// Held for the daemon's life; probes of it are dismissed at each tick.
    instance: Option<InstanceLock>,
}

impl<Q: PacketSource, K: Kernel, E: RulesetEvents> Daemon<Q, K, E> {
    /// Assemble a daemon whose table is already installed as `spec`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        engine: Engine,
        journal: ReplayJournal,
        queue: Q,
        kernel: K,
        events: E,
        spec: RulesetSpec,
        gate: bool,
        config_path: PathBuf,
    ) -> Self {
        Daemon {
            engine,
            journal,
            queue,
            kernel,
            events,
            spec,
            gate,
            live: LiveGrants::new(),
            warn_budget: WarnBudget::default(),
            config_path,
            instance: None,
        }
    }

    /// Hold `lock` while serving.
    pub fn holding(mut self, lock: InstanceLock) -> Self {
        self.instance = Some(lock);
        self
    }

    /// Serve until `control` says terminate. The journal is synced on the way out.
    pub fn run(mut self, control: &Control) -> anyhow::Result<()> {
        let result = self.serve(control);
        if let Err(e) = self.journal.sync() {
            error!("{e}");
        }
        result
    }

    fn serve(&mut self, control: &Control) -> anyhow::Result<()> {
        let mut last_tick = Instant::now();
        let mut last_compact = Instant::now();
        loop {
            let ready = poll3(self.queue.fd(), self.events.fd(), control.fd(), 1000)?;
            if control.take_terminate() {
                info!("shutting down; grants stay in the kernel until they expire");
                return Ok(());
            }
            if control.take_reload() {
                self.reload();
            }
            // A ruleset repair before packets: the gate may be open (or knocks unheard) until
            // it is done, and a turn of packets can wait for it.
            if ready[1] {
                self.check_ruleset();
            }
            if ready[0] {
                self.drain_queue()?;
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                let now = unix_now();
                if let Some(step) = self.engine.tick(now, monotonic_secs()) {
                    warn!(
                        step_secs = step,
                        "the wall clock stepped by {step}s: replay records stay until their expiry \
                         by the clock that does not step, and the key-hint window moved with the \
                         clock"
                    );
                }
                self.live.forget_expired();
                self.warn_budget.reset();
                if let Some(lock) = &self.instance {
                    lock.dismiss_probes();
                }
                if let Err(e) = self.journal.sync() {
                    error!("{e}");
                }
                if last_compact.elapsed() >= COMPACT_EVERY {
                    last_compact = Instant::now();
                    if let Err(e) = self.journal.compact(self.engine.replay()) {
                        error!("{e}");
                    }
                }
            }
        }
    }

    /// Handle the packets waiting in the queue, burst by burst, for one [`TURN`] at most: the
    /// loop then serves signals, ruleset events and the tick before it drains more (`poll(2)`
    /// reports the queue readable again at once if packets are left).
    fn drain_queue(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + TURN;
        let mut outcomes: Vec<(u32, Option<IpAddr>, Outcome)> = Vec::with_capacity(BURST);
        loop {
            outcomes.clear();
            let now = unix_now();
            let mut dry = false;
            while outcomes.len() < BURST {
                let want = (BURST - outcomes.len()).min(TURN_CHECK);
                let engine = &mut self.engine;
                let n = self.queue.recv_batch(want, &mut |id, pkt| {
                    let (src, outcome) = match wire::ip::parse(pkt) {
                        Ok(d) => (
                            Some(d.src),
                            engine.handle(
                                d.payload,
                                Packet {
                                    src: d.src,
                                    dst: d.dst,
                                },
                                now,
                            ),
                        ),
                        Err(_) => (None, Outcome::reject(None, Reason::NotUdp)),
                    };
                    outcomes.push((id, src, outcome));
                })?;
                if n < want {
                    dry = true;
                    break;
                }
                if Instant::now() >= deadline {
                    break;
                }
            }
            if outcomes.is_empty() {
                return Ok(());
            }
            self.apply(&outcomes, now)?;
            // One batch verdict drops the whole burst (ids wrap as the kernel's do).
            self.queue.drop_pending()?;
            if dry || Instant::now() >= deadline {
                return Ok(());
            }
        }
    }

    /// Persist replay records, write grants, log.
    fn apply(
        &mut self,
        outcomes: &[(u32, Option<IpAddr>, Outcome)],
        now: u64,
    ) -> anyhow::Result<()> {
        let records: Vec<(ReplayKey, u64)> =
            outcomes.iter().filter_map(|(_, _, o)| o.record).collect();
        if !records.is_empty() {
            // A failure here must not open anything: without the record, no grant.
            if let Err(e) = self.journal.append(&records) {
                error!("{e}; refusing this burst's grants so no replay window opens");
                return Ok(());
            }
        }
        let mut elems = Vec::new();
        // The client each element was granted to, for revocation on reload.
        let mut owners = Vec::new();
        let config = self.engine.config().clone();
        for (_, src, o) in outcomes {
            let client = o.client.map(|i| config.clients[i].name.as_str());
            let src = SrcDisplay(*src);
            match &o.decision {
                Decision::Grant(g) => {
                    let owner = o
                        .client
                        .and_then(|i| u32::try_from(i).ok())
                        .unwrap_or(NO_OWNER);
                    for a in &g.access {
                        elems.push(Element {
                            addr: g.addr,
                            access: *a,
                            timeout_ms: u64::from(g.ttl) * 1000,
                        });
                        owners.push(owner);
                    }
                    info!(
                        client = client.unwrap_or("?"),
                        src = %src,
                        addr = %g.addr,
                        access = %format_list(&g.access),
                        ttl = g.ttl,
                        format = o.format.map_or("?", |f| f.name()),
                        "grant"
                    );
                }
                Decision::Reject(reason) => self.log_reject(o, reason, &src, client, now),
            }
        }
        if elems.is_empty() {
            return Ok(());
        }
        match self.kernel.upsert(&elems) {
            // A dry run wrote nothing, so there is nothing to restore after a flush.
            Ok(()) if !self.kernel.writes_grants() => {}
            Ok(()) => self.live.record(&elems, &owners),
            Err(e) => {
                error!("{e}; re-installing the table");
                self.reinstall();
                match self.kernel.upsert(&elems) {
                    Ok(()) => self.live.record(&elems, &owners),
                    Err(e) => error!("grants lost: {e}"),
                }
            }
        }
        Ok(())
    }

    fn log_reject(
        &mut self,
        o: &Outcome,
        reason: &Reason,
        src: &SrcDisplay,
        client: Option<&str>,
        now: u64,
    ) {
        let format = o.format.map_or("?", |f| f.name());
        let skew = match reason {
            Reason::Stale { skew } => Some(*skew),
            _ => o
                .knock
                .as_ref()
                .map(|k| crate::policy::skew(k.timestamp, now)),
        };
        let client = client.unwrap_or("-");
        if reason.is_noise() || !self.warn_budget.take() {
            debug!(%src, reason = reason.code(), format, client, skew, "rejected knock: {reason}");
        } else {
            warn!(%src, reason = reason.code(), format, client, skew, "rejected knock: {reason}");
        }
    }

    /// Someone changed the ruleset: if our table lost anything, put it back with live grants.
    fn check_ruleset(&mut self) {
        match self.events.drain() {
            Ok(false) => {}
            Ok(true) => {
                if self.engine.config().server.manage_ruleset {
                    self.reinstall();
                } else {
                    error!("table `inet nfknock` was changed and manage_ruleset = false: reload nft/nfknock.nft");
                }
            }
            Err(e) => error!("{e}"),
        }
    }

    fn reinstall(&mut self) {
        let restore = self.live.remaining();
        match self.kernel.install(&self.spec, &restore) {
            Ok(()) => warn!(
                grants = restore.len(),
                "table `inet nfknock` was removed or changed by someone else; re-created it"
            ),
            Err(e) => error!("cannot re-create table `inet nfknock`: {e}"),
        }
    }

    fn reload(&mut self) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
        match config::load(
            &self.config_path,
            &crate::sys::FsLoader,
            &crate::sys::SystemAccounts,
        ) {
            Err(e) => error!("new config refused, the running one stays:\n{e}"),
            Ok(new) => {
                let old = self.engine.config().clone();
                if new.server.queue != old.server.queue
                    || new.server.state_dir != old.server.state_dir
                {
                    warn!("`queue` and `state_dir` changes take effect at the next restart");
                }
                for w in config::warnings(&new) {
                    warn!("{w}");
                }
                let spec = gated(ruleset_spec(&new, self.spec.backend), self.gate);
                let spec = RulesetSpec {
                    queue: self.spec.queue,
                    ..spec
                };
                // Each live grant is judged against the new config: kept under its client's
                // new index, or revoked (unless `revoke_on_reload = false`) with the reason.
                let now = unix_now();
                let index: HashMap<&str, usize> = new
                    .clients
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name.as_str(), i))
                    .collect();
                let judge = |addr: IpAddr, access: Access, owner: u32| {
                    let was = (owner != NO_OWNER)
                        .then(|| old.clients.get(owner as usize))
                        .flatten();
                    let now_at = was.and_then(|c| index.get(c.name.as_str()).copied());
                    if new.server.revoke_on_reload {
                        let is = now_at.and_then(|i| new.clients.get(i));
                        if let Some(why) = revocation(was, is, addr, access, now) {
                            return Err(why);
                        }
                    }
                    Ok(now_at
                        .and_then(|i| u32::try_from(i).ok())
                        .map_or(NO_OWNER, |i| i.min(NO_OWNER)))
                };
                if spec != self.spec && new.server.manage_ruleset {
                    // The grants the new config still authorises go in with the new gate, as
                    // after a flush (the table may be gone right now).
                    let restore = self
                        .live
                        .remaining_where(|a, acc, o| judge(a, acc, o).is_ok());
                    if let Err(e) = self.kernel.install(&spec, &restore) {
                        error!("new config refused, cannot update the ruleset: {e}");
                        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                        return;
                    }
                }
                let revoked = self.live.revise(judge);
                self.revoke(&old, &revoked);
                self.spec = spec;
                info!(
                    clients = new.clients.len(),
                    revoked = revoked.len(),
                    "config reloaded"
                );
                self.engine.reconfigure(Arc::new(new), unix_now());
                release_freed_memory();
            }
        }
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    }

    /// Take grants the reloaded config no longer authorises out of the kernel, and say so.
    /// [`LiveGrants`] has forgotten them already, so a flush repair never restores them.
    fn revoke(&mut self, old: &Config, revoked: &[(Element, u32, &'static str)]) {
        if revoked.is_empty() {
            return;
        }
        for (e, owner, why) in revoked {
            let client = (*owner != NO_OWNER)
                .then(|| old.clients.get(*owner as usize))
                .flatten()
                .map_or("?", |c| c.name.as_str());
            warn!(client, addr = %e.addr, access = %e.access, reason = *why, "grant revoked by the new config");
        }
        let elems: Vec<Element> = revoked.iter().map(|r| r.0).collect();
        if let Err(e) = self.kernel.delete(&elems) {
            let longest = elems.iter().map(|e| e.timeout_ms).max().unwrap_or(0);
            error!(
                "cannot remove {} revoked grant(s) from the kernel: {e}; they stay open until they expire (within {}s): delete them by hand, e.g. `nft delete element {} {} {} {{ ADDR . tcp . PORT }}`",
                elems.len(),
                longest.div_ceil(1000),
                crate::netfilter::nft::FAMILY,
                crate::netfilter::nft::TABLE,
                crate::netfilter::nft::SET_ALLOW_V4,
            );
        }
    }
}

/// Why a live grant of `access` to `addr`, made for client `was` (`None`: a client no longer
/// known), is not authorised by `is` — the client of the same name in the reloaded config, if
/// any — at `now`; `None` if it still is. What a reload "narrows": the client is gone, its key
/// changed (a rotated key must not leave the old key's grants open), it expired, the access left
/// its `allow` or entered its `deny`, or — when the grant is for the knock's own source
/// (`require_source_match`) — the address left its `sources`. Not judged: `destinations` and,
/// without `require_source_match`, `sources` (the knock's addresses are not kept), and
/// `protect` (a grant for a port no longer gated opens nothing).
fn revocation(
    was: Option<&config::ClientEntry>,
    is: Option<&config::ClientEntry>,
    addr: IpAddr,
    access: Access,
    now: u64,
) -> Option<&'static str> {
    let (Some(was), Some(is)) = (was, is) else {
        return Some("client removed from the config");
    };
    if !same_credential(&was.credential, &is.credential) {
        return Some("client key changed");
    }
    if is.expires_at.is_some_and(|t| now >= t) {
        return Some("client expired");
    }
    if !is.allow.contains(&access) {
        return Some("access no longer in the client's allow");
    }
    if is.deny.contains(&access) {
        return Some("access now in the client's deny");
    }
    if is.require_source_match && !is.sources.iter().any(|n| n.contains(&addr)) {
        return Some("address no longer in the client's sources");
    }
    None
}

/// Do two credentials accept the same knocks (same secret, same algorithms)?
fn same_credential(a: &config::Credential, b: &config::Credential) -> bool {
    use config::Credential::{Fwknop, Native};
    match (a, b) {
        (Native(a), Native(b)) => *a.enc == *b.enc && *a.hint == *b.hint,
        (Fwknop(a), Fwknop(b)) => {
            *a.key == *b.key
                && a.hmac_key.as_deref() == b.hmac_key.as_deref()
                && a.hmac_type == b.hmac_type
                && a.mode == b.mode
        }
        _ => false,
    }
}

/// Bits of a [`LiveGrants`] value that hold the index of the client the grant was made for;
/// the other 40 hold its deadline in milliseconds (34 years of uptime).
const OWNER_BITS: u32 = 24;
/// The owner of a grant whose client is no longer in the config (kept by
/// `revoke_on_reload = false`), or whose index does not fit [`OWNER_BITS`].
const NO_OWNER: u32 = (1 << OWNER_BITS) - 1;
const MAX_DEADLINE_MS: u64 = (1 << (64 - OWNER_BITS)) - 1;

fn pack_live(deadline_ms: u64, owner: u32) -> u64 {
    deadline_ms.min(MAX_DEADLINE_MS) << OWNER_BITS | u64::from(owner.min(NO_OWNER))
}

fn live_deadline(v: u64) -> u64 {
    v >> OWNER_BITS
}

fn live_owner(v: u64) -> u32 {
    (v & u64::from(NO_OWNER)) as u32
}

/// The grants this daemon wrote, with their deadlines and the client each was made for, to
/// re-create them if someone flushes the ruleset and to revoke them when a reload no longer
/// authorises them. Compact because it holds one entry per live grant (100 000 are a few MiB):
/// IPv4 grants pack into one `u64` key, and every value is one `u64` holding the deadline
/// (milliseconds since the daemon started) and the client's index ([`pack_live`]).
struct LiveGrants {
    base: Instant,
    /// `addr << 24 | proto << 16 | port` → `deadline << OWNER_BITS | client`.
    v4: HashMap<u64, u64>,
    v6: HashMap<(u128, u8, u16), u64>,
}

impl LiveGrants {
    fn new() -> LiveGrants {
        LiveGrants {
            base: Instant::now(),
            v4: HashMap::new(),
            v6: HashMap::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// Remember `elems`, each granted to the client of the same position in `owners`.
    fn record(&mut self, elems: &[Element], owners: &[u32]) {
        let now = self.now_ms();
        for (e, &owner) in elems.iter().zip(owners) {
            let v = pack_live(now.saturating_add(e.timeout_ms), owner);
            let (proto, port) = (e.access.proto.number(), e.access.port);
            match e.addr {
                IpAddr::V4(a) => {
                    let key =
                        u64::from(u32::from(a)) << 24 | u64::from(proto) << 16 | u64::from(port);
                    self.v4.insert(key, v);
                }
                IpAddr::V6(a) => {
                    self.v6.insert((u128::from(a), proto, port), v);
                }
            }
        }
    }

    fn forget_expired(&mut self) {
        let now = self.now_ms();
        self.v4.retain(|_, v| live_deadline(*v) > now);
        self.v6.retain(|_, v| live_deadline(*v) > now);
    }

    /// Every live grant: address, access, packed value.
    fn entries(&self) -> impl Iterator<Item = (IpAddr, Option<Access>, u64)> + '_ {
        let access = |proto: u8, port: u16| Access::new(Proto::from_number(proto)?, port);
        let v4 = self.v4.iter().map(move |(&k, &v)| {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from((k >> 24) as u32));
            (addr, access((k >> 16) as u8, k as u16), v)
        });
        let v6 = self.v6.iter().map(move |(&(a, proto, port), &v)| {
            (
                IpAddr::V6(std::net::Ipv6Addr::from(a)),
                access(proto, port),
                v,
            )
        });
        v4.chain(v6)
    }

    /// Every live grant with the time it has left.
    fn remaining(&self) -> Vec<Element> {
        self.remaining_where(|_, _, _| true)
    }

    /// The live grants `keep(addr, access, client)` accepts, with the time they have left.
    fn remaining_where(&self, mut keep: impl FnMut(IpAddr, Access, u32) -> bool) -> Vec<Element> {
        let now = self.now_ms();
        self.entries()
            .filter_map(|(addr, access, v)| {
                let (access, deadline) = (access?, live_deadline(v));
                (deadline > now && keep(addr, access, live_owner(v))).then_some(Element {
                    addr,
                    access,
                    timeout_ms: deadline - now,
                })
            })
            .collect()
    }

    /// Ask `judge(addr, access, client)` about every live grant: `Ok(new client index)` keeps
    /// it under that index, `Err(why)` forgets it. Returns the forgotten ones with the time
    /// they had left, their client and `why`; expired grants are dropped silently.
    fn revise<R>(
        &mut self,
        mut judge: impl FnMut(IpAddr, Access, u32) -> Result<u32, R>,
    ) -> Vec<(Element, u32, R)> {
        let now = self.now_ms();
        let mut revoked = Vec::new();
        let mut one = |addr: IpAddr, proto: u8, port: u16, v: &mut u64| -> bool {
            let deadline = live_deadline(*v);
            let Some(access) = Proto::from_number(proto).and_then(|p| Access::new(p, port)) else {
                return false;
            };
            if deadline <= now {
                return false;
            }
            let owner = live_owner(*v);
            match judge(addr, access, owner) {
                Ok(new_owner) => {
                    *v = pack_live(deadline, new_owner);
                    true
                }
                Err(why) => {
                    let timeout_ms = deadline - now;
                    revoked.push((
                        Element {
                            addr,
                            access,
                            timeout_ms,
                        },
                        owner,
                        why,
                    ));
                    false
                }
            }
        };
        self.v4.retain(|&k, v| {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from((k >> 24) as u32));
            one(addr, (k >> 16) as u8, k as u16, v)
        });
        self.v6.retain(|&(a, proto, port), v| {
            one(IpAddr::V6(std::net::Ipv6Addr::from(a)), proto, port, v)
        });
        revoked
    }
}

/// A packet's source for log lines, formatted only if the line is emitted (the junk path must
/// not allocate).
struct SrcDisplay(Option<IpAddr>);

impl std::fmt::Display for SrcDisplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => write!(f, "{ip}"),
            None => f.write_str("?"),
        }
    }
}

/// Rate limit for `warn` lines about rejected knocks (a flood must not flood the journal).
#[derive(Default)]
struct WarnBudget {
    used: u32,
    suppressed: u64,
}

impl WarnBudget {
    fn take(&mut self) -> bool {
        if self.used < WARN_PER_SEC {
            self.used += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    fn reset(&mut self) {
        if self.suppressed > 0 {
            warn!(
                suppressed = self.suppressed,
                "rejected knocks not logged at warn in the last second (see debug)"
            );
        }
        self.used = 0;
        self.suppressed = 0;
    }
}

/// What tells the loop to stop or reload: SIGTERM/SIGINT/SIGHUP in production, a
/// [`ControlHandle`] in tests. Flags plus a wake-up pipe that `poll(2)` watches, so neither
/// waits for a packet.
pub struct Control {
    terminate: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    read: UnixStream,
    write: UnixStream,
}

/// Asks a running [`Daemon`] to stop or reload, from another thread.
#[derive(Clone)]
pub struct ControlHandle {
    terminate: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    write: Arc<UnixStream>,
}

impl ControlHandle {
    pub fn terminate(&self) {
        self.terminate.store(true, Ordering::SeqCst);
        self.wake();
    }

    pub fn reload(&self) {
        self.reload.store(true, Ordering::SeqCst);
        self.wake();
    }

    fn wake(&self) {
        use std::io::Write;
        let _ = (&*self.write).write(&[1]);
    }
}

impl Control {
    /// Flags and pipe, no signal handlers (tests; see [`Control::handle`]).
    pub fn new() -> anyhow::Result<Control> {
        let (read, write) = UnixStream::pair().context("cannot create the control pipe")?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        Ok(Control {
            terminate: Arc::new(AtomicBool::new(false)),
            reload: Arc::new(AtomicBool::new(false)),
            read,
            write,
        })
    }

    /// Flags and pipe driven by SIGTERM/SIGINT (terminate) and SIGHUP (reload).
    pub fn register() -> anyhow::Result<Control> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let control = Control::new()?;
        for sig in [SIGTERM, SIGINT] {
            signal_hook::flag::register(sig, control.terminate.clone())?;
        }
        signal_hook::flag::register(SIGHUP, control.reload.clone())?;
        for sig in [SIGTERM, SIGINT, SIGHUP] {
            signal_hook::low_level::pipe::register(sig, control.write.try_clone()?)?;
        }
        Ok(control)
    }

    pub fn handle(&self) -> anyhow::Result<ControlHandle> {
        Ok(ControlHandle {
            terminate: self.terminate.clone(),
            reload: self.reload.clone(),
            write: Arc::new(self.write.try_clone()?),
        })
    }

    fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    fn drain(&self) {
        use std::io::Read;
        let mut buf = [0u8; 64];
        while let Ok(n) = (&self.read).read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    }

    fn take_terminate(&self) -> bool {
        self.drain();
        self.terminate.load(Ordering::SeqCst)
    }

    fn take_reload(&self) -> bool {
        self.reload.swap(false, Ordering::SeqCst)
    }
}

/// Give the heap that parsing a large config used back to the kernel: glibc keeps freed memory
/// in its arenas, and a 10 000-client TOML parse leaves megabytes there for the daemon's life.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; no pointers of ours are involved.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `poll(2)` three descriptors for input; which are readable.
fn poll3(a: RawFd, b: RawFd, c: RawFd, timeout_ms: i32) -> anyhow::Result<[bool; 3]> {
    let mut fds = [a, b, c].map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    // SAFETY: `fds` is a valid array of three pollfd structs for the duration of the call.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok([false; 3]);
        }
        return Err(e).context("poll failed");
    }
    Ok(fds.map(|p| p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0))
}

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
            "running as root: `[server] user` is not set and there is no user `{user}`, so nfknock keeps uid 0 (with only CAP_NET_ADMIN), and root owns most files here; create the user with `{useradd} {user}` (scripts/install does), or set `user` to an unprivileged user",
            user = config::DEFAULT_USER,
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
fn leave_root(config: &Config, config_path: &Path) -> anyhow::Result<()> {
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

/// Parse a knock payload file or hex (for `verify`): raw bytes of the UDP payload.
pub fn describe_format(payload: &[u8]) -> &'static str {
    wire::detect(payload).map_or("unknown", |f| f.name())
}

/// The real loop driven in-process: scripted packets in, a recording kernel out.
#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::io::{Read, Write};
    use std::net::Ipv4Addr;
    use std::sync::Mutex;

    use crate::crypto::NativeKey;
    use crate::sys::OsRng;

    /// Packets the test pushes; readable through a socket pair like a real queue.
    #[derive(Clone)]
    struct Script {
        packets: Arc<Mutex<VecDeque<Vec<u8>>>>,
        dropped: Arc<Mutex<u32>>,
        bell: Arc<UnixStream>,
    }

    struct ScriptedQueue {
        script: Script,
        ring: UnixStream,
        next_id: u32,
    }

    impl Script {
        fn push(&self, packet: Vec<u8>) {
            self.packets.lock().unwrap().push_back(packet);
            let _ = (&*self.bell).write(&[1]);
        }
    }

    impl PacketSource for ScriptedQueue {
        fn fd(&self) -> RawFd {
            self.ring.as_raw_fd()
        }
        fn recv_batch(
            &mut self,
            max: usize,
            f: &mut dyn FnMut(u32, &[u8]),
        ) -> Result<usize, QueueError> {
            let _ = (&self.ring).read(&mut [0u8; 64]);
            let mut n = 0;
            while n < max {
                let Some(p) = self.script.packets.lock().unwrap().pop_front() else {
                    break;
                };
                self.next_id += 1;
                f(self.next_id, &p);
                n += 1;
            }
            Ok(n)
        }
        fn drop_pending(&mut self) -> Result<(), QueueError> {
            *self.script.dropped.lock().unwrap() = self.next_id;
            Ok(())
        }
    }

    /// One `install` call: the spec and the grants restored with it.
    type Install = (RulesetSpec, Vec<Element>);

    #[derive(Clone, Default)]
    struct Recorder {
        installs: Arc<Mutex<Vec<Install>>>,
        grants: Arc<Mutex<Vec<Element>>>,
        deleted: Arc<Mutex<Vec<Element>>>,
    }

    impl Kernel for Recorder {
        fn install(&mut self, spec: &RulesetSpec, restore: &[Element]) -> Result<(), NftError> {
            self.installs
                .lock()
                .unwrap()
                .push((spec.clone(), restore.to_vec()));
            Ok(())
        }
        fn upsert(&mut self, elems: &[Element]) -> Result<(), NftError> {
            self.grants.lock().unwrap().extend_from_slice(elems);
            Ok(())
        }
        fn delete(&mut self, elems: &[Element]) -> Result<(), NftError> {
            self.deleted.lock().unwrap().extend_from_slice(elems);
            Ok(())
        }
    }

    /// "Someone flushed the ruleset" when the test rings.
    struct ScriptedEvents(UnixStream);

    impl RulesetEvents for ScriptedEvents {
        fn fd(&self) -> RawFd {
            self.0.as_raw_fd()
        }
        fn drain(&mut self) -> Result<bool, NftError> {
            Ok((&self.0).read(&mut [0u8; 64]).is_ok_and(|n| n > 0))
        }
    }

    const SRC: &str = "192.0.2.7";

    struct Harness {
        dir: tempfile::TempDir,
        /// alice's secret, as in the config.
        secret: String,
        key: NativeKey,
        script: Script,
        kernel: Recorder,
        flush: UnixStream,
        handle: ControlHandle,
        thread: std::thread::JoinHandle<anyhow::Result<()>>,
    }

    fn write_config(dir: &Path, secret: &str, allow: &str) -> PathBuf {
        write_clients(dir, "", &[("alice", secret, allow)])
    }

    /// A config of `(name, secret, allow)` clients, `server` lines added to `[server]`.
    fn write_clients(dir: &Path, server: &str, clients: &[(&str, &str, &str)]) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("nfknock.toml");
        let mut text = format!(
            "[server]\nstate_dir = \"{}\"\n{server}\n",
            dir.join("state").display()
        );
        for (name, secret, allow) in clients {
            text.push_str(&format!(
                "\n[[client]]\nname = \"{name}\"\nkey = \"{secret}\"\nallow = [{allow}]\n"
            ));
        }
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    fn start() -> Harness {
        start_allowing("\"tcp/22\"")
    }

    /// alice may open `allow`.
    fn start_allowing(allow: &str) -> Harness {
        start_with(allow, |script, ring| ScriptedQueue {
            script,
            ring,
            next_id: 0,
        })
    }

    /// A daemon reading packets from the queue `make` builds out of the script and the
    /// readable end of its bell.
    fn start_with<Q: PacketSource + Send + 'static>(
        allow: &str,
        make: impl FnOnce(Script, UnixStream) -> Q,
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let secret = crate::crypto::generate_secret_base64(&mut OsRng);
        let key = NativeKey::from_base64(&secret).unwrap();
        let path = write_config(dir.path(), &secret, allow);
        let config = Arc::new(load_config(&path).unwrap());
        let now = unix_now();
        crate::state::mark_first_start(&config.server.state_dir).unwrap();
        let (journal, cache, report) =
            ReplayJournal::open(&config.server.state_dir, now, config.server.max_age).unwrap();
        assert_eq!(report, LoadReport::FirstStart);
        let (bell, ring) = UnixStream::pair().unwrap();
        ring.set_nonblocking(true).unwrap();
        let script = Script {
            packets: Default::default(),
            dropped: Default::default(),
            bell: Arc::new(bell),
        };
        let (flush, events) = UnixStream::pair().unwrap();
        events.set_nonblocking(true).unwrap();
        let kernel = Recorder::default();
        let spec = ruleset_spec(&config, QueueBackend::Compat);
        let control = Control::new().unwrap();
        let handle = control.handle().unwrap();
        let engine = Engine::new(config, cache, 0, now);
        let queue = make(script.clone(), ring);
        let d = Daemon::new(
            engine,
            journal,
            queue,
            kernel.clone(),
            ScriptedEvents(events),
            spec,
            true,
            path,
        );
        let thread = std::thread::spawn(move || d.run(&control));
        Harness {
            dir,
            secret: secret.to_string(),
            key,
            script,
            kernel,
            flush,
            handle,
            thread,
        }
    }

    fn knock(h: &Harness, access: &str) -> Vec<u8> {
        let req = native::Request {
            timestamp: unix_now(),
            timeout: 0,
            allow_ip: Some(SRC.parse().unwrap()),
            access: crate::access::parse_list(access).unwrap(),
        };
        let payload = native::seal(&h.key, &req, &mut OsRng).unwrap();
        wire::ip::build(
            SRC.parse().unwrap(),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            40000,
            62201,
            &payload,
        )
    }

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn grants_once_drops_every_packet_restores_after_a_flush_and_stops_on_request() {
        let h = start();
        let packet = knock(&h, "tcp/22");
        h.script.push(packet.clone());
        wait_for("the grant", || !h.kernel.grants.lock().unwrap().is_empty());
        let g = h.kernel.grants.lock().unwrap()[0];
        assert_eq!(
            (g.addr, g.access.to_string(), g.timeout_ms),
            (SRC.parse().unwrap(), "tcp/22".into(), 30_000)
        );

        // The same packet again, and junk: no new grant, every packet dropped.
        h.script.push(packet);
        h.script.push(vec![0x45; 60]);
        wait_for("the verdicts", || *h.script.dropped.lock().unwrap() == 3);
        assert_eq!(
            h.kernel.grants.lock().unwrap().len(),
            1,
            "a replay or junk was granted"
        );

        // Someone flushes the ruleset: the table comes back with the live grant's remaining time.
        (&h.flush).write_all(&[1]).unwrap();
        wait_for("the re-install", || {
            !h.kernel.installs.lock().unwrap().is_empty()
        });
        let (spec, restore) = h.kernel.installs.lock().unwrap()[0].clone();
        assert!(spec.gate_input && spec.protect == vec!["tcp/22".parse().unwrap()]);
        assert_eq!(restore.len(), 1);
        assert!(
            restore[0].timeout_ms > 25_000 && restore[0].timeout_ms <= 30_000,
            "{restore:?}"
        );

        // A broken config on reload is refused; the daemon keeps serving the old one.
        std::fs::write(h.dir.path().join("nfknock.toml"), "[server]\nport = 0\n").unwrap();
        h.handle.reload();
        h.script.push(knock(&h, "tcp/22"));
        wait_for("a grant after the refused reload", || {
            h.kernel.grants.lock().unwrap().len() == 2
        });

        h.handle.terminate();
        h.thread.join().unwrap().unwrap();
    }

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

    #[test]
    fn live_grants_round_trip_both_families_and_forget_expired_ones() {
        let mut live = LiveGrants::new();
        let e = |addr: &str, access: &str, timeout_ms| Element {
            addr: addr.parse().unwrap(),
            access: access.parse().unwrap(),
            timeout_ms,
        };
        live.record(
            &[
                e("192.0.2.7", "tcp/22", 60_000),
                e("2001:db8::7", "udp/65535", 60_000),
                e("198.51.100.1", "tcp/1", 0),
            ],
            &[0, 1, 2],
        );
        let mut back = live.remaining();
        back.sort_by_key(|g| g.addr);
        assert_eq!(back.len(), 2, "{back:?}");
        assert_eq!(
            (back[0].addr, back[0].access),
            ("192.0.2.7".parse().unwrap(), "tcp/22".parse().unwrap())
        );
        assert_eq!(
            (back[1].addr, back[1].access),
            ("2001:db8::7".parse().unwrap(), "udp/65535".parse().unwrap())
        );
        assert!(back
            .iter()
            .all(|g| g.timeout_ms > 59_000 && g.timeout_ms <= 60_000));
        live.forget_expired();
        assert_eq!(live.v4.len() + live.v6.len(), 2);
    }

    #[test]
    fn a_valid_reload_changes_what_is_allowed_and_the_gate() {
        let h = start();
        let secret_path = h.dir.path().join("nfknock.toml");
        h.script.push(knock(&h, "tcp/443"));
        wait_for("the verdict", || *h.script.dropped.lock().unwrap() == 1);
        assert!(
            h.kernel.grants.lock().unwrap().is_empty(),
            "tcp/443 granted before it was allowed"
        );

        // Same key, now also tcp/443: the reload re-installs the gate with the new protect list.
        let text = std::fs::read_to_string(&secret_path).unwrap();
        let secret = text
            .lines()
            .find_map(|l| l.strip_prefix("key = \""))
            .unwrap()
            .trim_end_matches('"')
            .to_string();
        write_config(h.dir.path(), &secret, "\"tcp/22\", \"tcp/443\"");
        h.handle.reload();
        wait_for("the re-install", || {
            !h.kernel.installs.lock().unwrap().is_empty()
        });
        assert_eq!(h.kernel.installs.lock().unwrap()[0].0.protect.len(), 2);
        h.script.push(knock(&h, "tcp/443"));
        wait_for("the grant", || !h.kernel.grants.lock().unwrap().is_empty());

        h.handle.terminate();
        h.thread.join().unwrap().unwrap();
    }

    /// A flood the daemon never catches up with: every receive hands over as many junk
    /// packets as asked for, and the descriptor is always readable. Runs dry after `until`, so
    /// a loop that never looks up does end (and the test fails instead of hanging).
    struct EndlessQueue {
        ring: UnixStream,
        received: Arc<std::sync::atomic::AtomicU64>,
        until: Instant,
        next_id: u32,
        junk: Vec<u8>,
    }

    impl PacketSource for EndlessQueue {
        fn fd(&self) -> RawFd {
            self.ring.as_raw_fd()
        }
        fn recv_batch(
            &mut self,
            max: usize,
            f: &mut dyn FnMut(u32, &[u8]),
        ) -> Result<usize, QueueError> {
            if Instant::now() >= self.until {
                return Ok(0);
            }
            for _ in 0..max {
                self.next_id = self.next_id.wrapping_add(1);
                f(self.next_id, &self.junk);
            }
            self.received.fetch_add(max as u64, Ordering::SeqCst);
            Ok(max)
        }
        fn drop_pending(&mut self) -> Result<(), QueueError> {
            Ok(())
        }
    }

    /// Issue "security", item 5: a flood that outpaces the daemon keeps the queue readable
    /// forever; signals, ruleset events and the tick must still be served between bursts.
    #[test]
    fn a_queue_that_never_runs_dry_still_repairs_a_flush_and_stops_on_request() {
        use crate::crypto::Rng;
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = received.clone();
        let h = start_with("\"tcp/22\"", move |script, ring| {
            // Rung once and never read: the descriptor stays readable, as under a flood.
            let _ = (&*script.bell).write(&[1]);
            let mut junk = vec![0u8; native::PACKET_LEN];
            OsRng.fill(&mut junk);
            EndlessQueue {
                ring,
                received: count,
                until: Instant::now() + Duration::from_secs(20),
                next_id: 0,
                junk: wire::ip::build(
                    SRC.parse().unwrap(),
                    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                    40000,
                    62201,
                    &junk,
                ),
            }
        });
        wait_for("the flood", || received.load(Ordering::SeqCst) > 10_000);

        (&h.flush).write_all(&[1]).unwrap();
        let flushed = Instant::now();
        wait_for("the re-install", || {
            !h.kernel.installs.lock().unwrap().is_empty()
        });
        let took = flushed.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "flush repaired after {took:?}"
        );
        let at_repair = received.load(Ordering::SeqCst);
        wait_for("packets after the repair", || {
            received.load(Ordering::SeqCst) > at_repair + 10_000
        });

        let Harness { handle, thread, .. } = h;
        handle.terminate();
        let asked = Instant::now();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(thread.join()));
        let result = rx
            .recv_timeout(Duration::from_secs(1))
            .unwrap_or_else(|_| panic!("terminate not honoured within 1 s under a flood"));
        result.unwrap().unwrap();
        eprintln!("stopped {:?} after the request", asked.elapsed());
    }

    /// `(addr, access)` of grants, sorted: what a test compares.
    fn keys(elems: &[Element]) -> Vec<(IpAddr, String)> {
        let mut v: Vec<_> = elems
            .iter()
            .map(|e| (e.addr, e.access.to_string()))
            .collect();
        v.sort();
        v
    }

    fn src_grant(access: &str) -> (IpAddr, String) {
        (SRC.parse().unwrap(), access.to_string())
    }

    /// Wait until the daemon has judged `n` packets in all.
    fn judged(h: &Harness, n: u32) {
        wait_for("the verdicts", || *h.script.dropped.lock().unwrap() >= n);
    }

    /// Issue "security", item 10: a reload that removes a client revokes its live grants at
    /// once, and a later flush repair does not bring them back.
    #[test]
    fn a_reload_that_removes_a_client_revokes_its_grants_and_a_flush_does_not_restore_them() {
        let h = start();
        h.script.push(knock(&h, "tcp/22"));
        wait_for("the grant", || h.kernel.grants.lock().unwrap().len() == 1);

        // alice leaves; carol (another key, same allow) stays: the gate itself is unchanged.
        let carol = crate::crypto::generate_secret_base64(&mut OsRng);
        write_clients(h.dir.path(), "", &[("carol", &carol, "\"tcp/22\"")]);
        h.handle.reload();
        wait_for("the revocation", || {
            !h.kernel.deleted.lock().unwrap().is_empty()
        });
        assert_eq!(
            keys(&h.kernel.deleted.lock().unwrap()),
            [src_grant("tcp/22")]
        );
        assert!(
            h.kernel.installs.lock().unwrap().is_empty(),
            "the gate did not change: no re-install"
        );

        // Someone flushes the ruleset: the table comes back without the revoked grant.
        (&h.flush).write_all(&[1]).unwrap();
        wait_for("the re-install", || {
            !h.kernel.installs.lock().unwrap().is_empty()
        });
        assert_eq!(keys(&h.kernel.installs.lock().unwrap()[0].1), []);

        // alice's knocks are refused from now on.
        h.script.push(knock(&h, "tcp/22"));
        judged(&h, 2);
        assert_eq!(h.kernel.grants.lock().unwrap().len(), 1);
        h.handle.terminate();
        h.thread.join().unwrap().unwrap();
    }

    /// A reload that narrows `allow` revokes the grants it no longer allows and keeps the
    /// others — also through the re-install that the changed gate needs (that re-install used
    /// to restore no grant at all), and through a later flush repair.
    #[test]
    fn a_reload_that_narrows_allow_revokes_only_what_it_no_longer_allows() {
        let h = start_allowing("\"tcp/22\", \"tcp/443\"");
        h.script.push(knock(&h, "tcp/22,tcp/443"));
        wait_for("the grants", || h.kernel.grants.lock().unwrap().len() == 2);

        write_config(h.dir.path(), &h.secret, "\"tcp/443\"");
        h.handle.reload();
        wait_for("the re-install", || {
            !h.kernel.installs.lock().unwrap().is_empty()
        });
        let (spec, restore) = h.kernel.installs.lock().unwrap()[0].clone();
        assert_eq!(spec.protect, vec!["tcp/443".parse().unwrap()]);
        assert_eq!(keys(&restore), [src_grant("tcp/443")]);
        wait_for("the revocation", || {
            !h.kernel.deleted.lock().unwrap().is_empty()
        });
        assert_eq!(
            keys(&h.kernel.deleted.lock().unwrap()),
            [src_grant("tcp/22")]
        );

        (&h.flush).write_all(&[1]).unwrap();
        wait_for("the repair", || {
            h.kernel.installs.lock().unwrap().len() == 2
        });
        assert_eq!(
            keys(&h.kernel.installs.lock().unwrap()[1].1),
            [src_grant("tcp/443")]
        );
        h.handle.terminate();
        h.thread.join().unwrap().unwrap();
    }

    /// `revoke_on_reload = false`: grants outlive their client's removal until they expire,
    /// flush repairs included.
    #[test]
    fn revoke_on_reload_false_keeps_the_grants_of_a_removed_client() {
        let h = start();
        h.script.push(knock(&h, "tcp/22"));
        wait_for("the grant", || h.kernel.grants.lock().unwrap().len() == 1);
        let carol = crate::crypto::generate_secret_base64(&mut OsRng);
        write_clients(
            h.dir.path(),
            "revoke_on_reload = false",
            &[("carol", &carol, "\"tcp/22\"")],
        );
        h.handle.reload();
        // alice is unknown once the reload is done: her next knock is refused.
        h.script.push(knock(&h, "tcp/22"));
        judged(&h, 2);
        assert_eq!(h.kernel.grants.lock().unwrap().len(), 1, "reload not done");
        assert!(h.kernel.deleted.lock().unwrap().is_empty());
        (&h.flush).write_all(&[1]).unwrap();
        wait_for("the repair", || {
            !h.kernel.installs.lock().unwrap().is_empty()
        });
        assert_eq!(
            keys(&h.kernel.installs.lock().unwrap()[0].1),
            [src_grant("tcp/22")]
        );
        h.handle.terminate();
        h.thread.join().unwrap().unwrap();
    }

    /// Each live grant remembers its client in the same `u64` as its deadline (the memory per
    /// grant stays as it was); a revision re-numbers the kept ones and hands back the others
    /// with their client and reason.
    #[test]
    fn live_grants_remember_their_client_and_a_revision_renumbers_or_revokes() {
        let mut live = LiveGrants::new();
        let _: &HashMap<u64, u64> = &live.v4;
        let _: &HashMap<(u128, u8, u16), u64> = &live.v6;
        let e = |addr: &str, access: &str| Element {
            addr: addr.parse().unwrap(),
            access: access.parse().unwrap(),
            timeout_ms: 60_000,
        };
        live.record(
            &[
                e("192.0.2.7", "tcp/22"),
                e("192.0.2.8", "tcp/22"),
                e("2001:db8::7", "udp/53"),
            ],
            &[3, NO_OWNER + 5, 70_000],
        );
        let mut owners: Vec<(IpAddr, u32)> = Vec::new();
        live.remaining_where(|a, _, o| {
            owners.push((a, o));
            true
        });
        owners.sort();
        assert_eq!(
            owners,
            [
                ("192.0.2.7".parse().unwrap(), 3),
                ("192.0.2.8".parse().unwrap(), NO_OWNER),
                ("2001:db8::7".parse().unwrap(), 70_000),
            ]
        );
        let revoked = live.revise(|_, _, o| if o == 3 { Err("gone") } else { Ok(o + 1) });
        assert_eq!(revoked.len(), 1);
        let (g, owner, why) = revoked[0];
        assert_eq!(
            (g.addr, owner, why),
            ("192.0.2.7".parse().unwrap(), 3, "gone")
        );
        assert!(g.timeout_ms > 59_000 && g.timeout_ms <= 60_000, "{g:?}");
        let left = live.remaining();
        assert_eq!(left.len(), 2);
        assert!(left.iter().all(|g| g.timeout_ms > 59_000), "{left:?}");
        let mut owners: Vec<u32> = Vec::new();
        live.remaining_where(|_, _, o| {
            owners.push(o);
            true
        });
        owners.sort();
        assert_eq!(owners, [70_001, NO_OWNER], "NO_OWNER saturates");
        assert_eq!(pack_live(u64::MAX, u32::MAX), u64::MAX);
    }

    /// What a reload "narrows", one case at a time.
    #[test]
    fn revocation_covers_removal_key_expiry_allow_deny_and_sources() {
        let base = crate::policy::tests::client();
        let addr: IpAddr = "192.0.2.7".parse().unwrap();
        let ssh: Access = "tcp/22".parse().unwrap();
        let judge = |is: Option<&config::ClientEntry>, addr: IpAddr| {
            revocation(Some(&base), is, addr, ssh, 1_000)
        };
        let mut c = base.clone();
        assert_eq!(judge(Some(&c), addr), None, "unchanged: kept");
        c.allow.push("tcp/443".parse().unwrap());
        assert_eq!(judge(Some(&c), addr), None, "widened: kept");
        assert_eq!(judge(None, addr), Some("client removed from the config"));
        assert_eq!(
            revocation(None, Some(&c), addr, ssh, 1_000),
            Some("client removed from the config")
        );
        let mut k = base.clone();
        k.credential = config::Credential::Native(NativeKey::derive(&[0x77; 32]));
        assert_eq!(judge(Some(&k), addr), Some("client key changed"));
        let mut f = base.clone();
        if let config::Credential::Fwknop(fk) = &mut f.credential {
            fk.key = zeroize::Zeroizing::new(b"rotated".to_vec());
        }
        assert_eq!(judge(Some(&f), addr), Some("client key changed"));
        let mut x = base.clone();
        x.expires_at = Some(1_000);
        assert_eq!(judge(Some(&x), addr), Some("client expired"));
        let mut a = base.clone();
        a.allow = vec!["tcp/443".parse().unwrap()];
        assert_eq!(
            judge(Some(&a), addr),
            Some("access no longer in the client's allow")
        );
        let mut d = base.clone();
        d.deny = vec![ssh];
        assert_eq!(
            judge(Some(&d), addr),
            Some("access now in the client's deny")
        );
        let mut s = base.clone();
        s.sources = vec!["198.51.100.0/24".parse().unwrap()];
        s.require_source_match = true;
        assert_eq!(
            judge(Some(&s), addr),
            Some("address no longer in the client's sources")
        );
        s.require_source_match = false;
        assert_eq!(
            judge(Some(&s), addr),
            None,
            "the knock's source is not known"
        );
    }

    /// One instance per network namespace: a second `acquire` is refused with the holder's pid
    /// and uid, as often as it is tried (the holder dismisses probes), and the lock is free again
    /// once dropped. Runs in a network namespace of its own (root only), so it meets no daemon.
    #[test]
    fn instance_lock_is_one_per_network_namespace_and_names_its_holder() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        std::thread::spawn(|| {
            // SAFETY: unshare(CLONE_NEWNET) moves only this thread to a new network namespace.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            let lock = InstanceLock::acquire(Action::Serve).unwrap();
            for _ in 0..3 * LOCK_BACKLOG {
                let e = InstanceLock::acquire(Action::Serve).err().unwrap();
                let held = e.downcast_ref::<AlreadyRunning>().unwrap();
                assert_eq!(held.pid, Some(std::process::id()), "{e}");
                // SAFETY: getuid has no preconditions.
                assert_eq!(held.uid, Some(unsafe { libc::getuid() }));
                let text = e.to_string();
                assert!(
                    text.contains(&format!("pid {}", std::process::id()))
                        && text.contains("systemctl stop nfknock")
                        && text.contains("nothing was changed"),
                    "{text}"
                );
                assert_eq!(crate::cli::exit_code(&e), crate::cli::EXIT_USAGE);
                lock.dismiss_probes();
            }
            let e = InstanceLock::acquire(Action::Uninstall).err().unwrap();
            assert!(e.to_string().contains("nothing was removed"), "{e}");
            drop(lock);
            InstanceLock::acquire(Action::Uninstall).unwrap();
        })
        .join()
        .unwrap();
    }
}
