//! The loop: one thread, one `poll(2)` over the queue, the ruleset events and the control pipe;
//! a turn spends at most [`TURN`] on packets. Per burst: engine, journal, one grant batch, one
//! batch verdict. The side effects sit behind traits so tests drive this loop in-process.

use std::net::IpAddr;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing::{debug, error, info, warn};

use super::control::Control;
use super::instance::InstanceLock;
use super::live_grants::{LiveGrants, NO_OWNER};
use super::{monotonic_secs, unix_now};
use crate::access::format_list;
use crate::engine::{Engine, Outcome};
use crate::netfilter::nft::{Element, Nft, NftError, NftEvents, RulesetSpec};
use crate::netfilter::queue::{Queue, QueueError};
use crate::policy::{Decision, Packet, Reason};
use crate::replay::ReplayKey;
use crate::state::ReplayJournal;
use crate::wire;

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

/// The running daemon: the pure engine plus its shells. Generic over the side effects so tests
/// drive the real loop in-process with scripted packets and a recording kernel.
pub struct Daemon<Q, K, E> {
    pub(super) engine: Engine,
    pub(super) journal: ReplayJournal,
    pub(super) queue: Q,
    pub(super) kernel: K,
    pub(super) events: E,
    pub(super) spec: RulesetSpec,
    /// Install the gate rules (false for a dry run without `--with-gate`).
    pub(super) gate: bool,
    /// Grants we wrote and their deadlines, to restore them if someone flushes the ruleset.
    pub(super) live: LiveGrants,
    warn_budget: WarnBudget,
    pub(super) config_path: PathBuf,
    /// Held for the daemon's life; probes of it are dismissed at each tick.
    pub(super) instance: Option<InstanceLock>,
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

    pub(super) fn reinstall(&mut self) {
        let restore = self.live.remaining();
        match self.kernel.install(&self.spec, &restore) {
            Ok(()) => warn!(
                grants = restore.len(),
                "table `inet nfknock` was removed or changed by someone else; re-created it"
            ),
            Err(e) => error!("cannot re-create table `inet nfknock`: {e}"),
        }
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
