//! Wiring: queue → engine → nft → verdict, plus signals, reload, sd_notify, privileges.
//!
//! The only place a [`Decision`] becomes netlink. One thread, one `poll(2)` over the queue
//! socket, the nftables event socket and a signal pipe: a signal never waits for a packet.
//!
//! Per burst of queued packets: every packet goes through the pure [`Engine`]; the replay
//! records of authenticated packets are appended to the journal (before any grant, so a crash
//! can never forget a packet that opened something); all grants go to the kernel in one netlink
//! batch; then one batch verdict drops every packet of the burst — a knock is never delivered
//! and the host never answers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
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

/// Load a config or explain every problem.
pub fn load_config(path: &Path) -> anyhow::Result<Config> {
    config::load(path).map_err(|e| {
        let hint = format!(
            "fix the problems above and run `nfknock check --config {}`",
            path.display()
        );
        anyhow::Error::new(e).context(hint)
    })
}

/// Run the daemon until SIGTERM/SIGINT.
pub fn serve(opts: &Options) -> anyhow::Result<()> {
    let config = Arc::new(load_config(&opts.config)?);
    for w in config::warnings(&config) {
        warn!("{w}");
    }
    // Started as root (no unit's User=): become the service user before anything is created in
    // state_dir, so every file there is its own, as under systemd. The netlink work below
    // needs only the CAP_NET_ADMIN it keeps.
    leave_root(&config, &opts.config)?;
    let now = unix_now();
    let (journal, cache, report) = ReplayJournal::open(&config.server.state_dir, now)
        .context("cannot open the replay journal; check `state_dir` and its permissions")?;
    let refuse_before = match &report {
        LoadReport::Fresh => {
            info!(dir = %config.server.state_dir.display(), "new replay journal");
            0
        }
        LoadReport::Loaded { live, torn_tail } => {
            info!(live, torn_tail, "replay journal loaded");
            0
        }
        LoadReport::Corrupt {
            reason,
            refuse_before,
        } => {
            // A packet accepted before the loss may carry a timestamp up to max_age ahead of
            // the clock; refusing everything stamped before `lost + max_age` closes that too.
            let until = refuse_before.saturating_add(config.server.max_age);
            error!(
                %reason,
                "replay journal was corrupt and has been set aside; knocks stamped before {until} are refused for the next {}s (no replay window opens)",
                config.server.max_age
            );
            until
        }
    };

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
    let queue = Queue::open(QueueConfig {
        num: config.server.queue,
        ..QueueConfig::default()
    })?;
    let events = NftEvents::open().context("cannot subscribe to nftables events")?;

    let control = Control::register()?;
    drop_privileges()?;
    let engine = Engine::new(config.clone(), cache, refuse_before, now);
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
        }
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
            if ready[0] {
                self.drain_queue()?;
            }
            if ready[1] {
                self.check_ruleset();
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                let now = unix_now();
                self.engine.tick(now);
                self.live.forget_expired();
                self.warn_budget.reset();
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

    /// Handle every packet waiting in the queue, burst by burst.
    fn drain_queue(&mut self) -> anyhow::Result<()> {
        let mut outcomes: Vec<(u32, Option<IpAddr>, Outcome)> = Vec::with_capacity(BURST);
        loop {
            outcomes.clear();
            let now = unix_now();
            let engine = &mut self.engine;
            let n = self.queue.recv_batch(BURST, &mut |id, pkt| {
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
            if n == 0 {
                return Ok(());
            }
            self.apply(&outcomes, now)?;
            // One batch verdict drops the whole burst (ids wrap as the kernel's do).
            self.queue.drop_pending()?;
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
        let config = self.engine.config().clone();
        for (_, src, o) in outcomes {
            let client = o.client.map(|i| config.clients[i].name.as_str());
            let src = SrcDisplay(*src);
            match &o.decision {
                Decision::Grant(g) => {
                    for a in &g.access {
                        elems.push(Element {
                            addr: g.addr,
                            access: *a,
                            timeout_ms: u64::from(g.ttl) * 1000,
                        });
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
            Ok(()) => self.live.record(&elems),
            Err(e) => {
                error!("{e}; re-installing the table");
                self.reinstall();
                match self.kernel.upsert(&elems) {
                    Ok(()) => self.live.record(&elems),
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
        match config::load(&self.config_path) {
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
                if spec != self.spec && new.server.manage_ruleset {
                    if let Err(e) = self.kernel.install(&spec, &[]) {
                        error!("new config refused, cannot update the ruleset: {e}");
                        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                        return;
                    }
                }
                self.spec = spec;
                info!(clients = new.clients.len(), "config reloaded");
                self.engine.reconfigure(Arc::new(new), unix_now());
                release_freed_memory();
            }
        }
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    }
}

/// The grants this daemon wrote, with their deadlines, to re-create them if someone flushes the
/// ruleset. Compact because it holds one entry per live grant (100 000 are a few MiB): IPv4
/// grants pack into one `u64` key, deadlines are milliseconds since the daemon started.
struct LiveGrants {
    base: Instant,
    /// `addr << 24 | proto << 16 | port` → deadline.
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

    fn record(&mut self, elems: &[Element]) {
        let now = self.now_ms();
        for e in elems {
            let deadline = now.saturating_add(e.timeout_ms);
            let (proto, port) = (e.access.proto.number(), e.access.port);
            match e.addr {
                IpAddr::V4(a) => {
                    let key =
                        u64::from(u32::from(a)) << 24 | u64::from(proto) << 16 | u64::from(port);
                    self.v4.insert(key, deadline);
                }
                IpAddr::V6(a) => {
                    self.v6.insert((u128::from(a), proto, port), deadline);
                }
            }
        }
    }

    fn forget_expired(&mut self) {
        let now = self.now_ms();
        self.v4.retain(|_, d| *d > now);
        self.v6.retain(|_, d| *d > now);
    }

    /// Every live grant with the time it has left.
    fn remaining(&self) -> Vec<Element> {
        let now = self.now_ms();
        let element = |addr: IpAddr, proto: u8, port: u16, deadline: u64| {
            let access = Access {
                proto: Proto::from_number(proto)?,
                port,
            };
            (deadline > now).then(|| Element {
                addr,
                access,
                timeout_ms: deadline - now,
            })
        };
        let v4 = self.v4.iter().filter_map(|(&k, &d)| {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from((k >> 24) as u32));
            element(addr, (k >> 16) as u8, k as u16, d)
        });
        let v6 = self.v6.iter().filter_map(|(&(a, proto, port), &d)| {
            element(IpAddr::V6(std::net::Ipv6Addr::from(a)), proto, port, d)
        });
        v4.chain(v6).collect()
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
    crate::state::prepare_dir(&config.server.state_dir, account)
        .with_context(|| format!("`state_dir` is not ready for user `{name}` (`[server] user`)"))?;
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
        key: NativeKey,
        script: Script,
        kernel: Recorder,
        flush: UnixStream,
        handle: ControlHandle,
        thread: std::thread::JoinHandle<anyhow::Result<()>>,
    }

    fn write_config(dir: &Path, secret: &str, allow: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("nfknock.toml");
        std::fs::write(
            &path,
            format!(
                "[server]\nstate_dir = \"{}\"\n\n[[client]]\nname = \"alice\"\nkey = \"{secret}\"\nallow = [{allow}]\n",
                dir.join("state").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let secret = crate::crypto::generate_secret_base64(&mut OsRng);
        let key = NativeKey::from_base64(&secret).unwrap();
        let path = write_config(dir.path(), &secret, "\"tcp/22\"");
        let config = Arc::new(load_config(&path).unwrap());
        let now = unix_now();
        let (journal, cache, _) = ReplayJournal::open(&config.server.state_dir, now).unwrap();
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
        let queue = ScriptedQueue {
            script: script.clone(),
            ring,
            next_id: 0,
        };
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
        live.record(&[
            e("192.0.2.7", "tcp/22", 60_000),
            e("2001:db8::7", "udp/65535", 60_000),
            e("198.51.100.1", "tcp/1", 0),
        ]);
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
}
