//! The loop: one thread, one `poll(2)` over the queue, the grant backend's events and the
//! control pipe; a turn spends at most [`TURN`] on packets. Per burst: engine, journal, one
//! grant write, one batch verdict. The side effects sit behind traits ([`PacketSource`],
//! [`GrantSink`]) so tests drive this loop in-process.

use std::net::IpAddr;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing::{debug, error, info, warn};

use super::control::Control;
use super::instance::InstanceLock;
use super::live_grants::{LiveGrants, NO_OWNER};
use super::metrics_file::MetricsFile;
use super::{monotonic_secs, unix_now};
use crate::access::format_list;
use crate::engine::{Engine, Outcome};
use crate::grants::{Grant, GrantSink};
use crate::metrics::{Metrics, Snapshot};
use crate::netfilter::queue::{kernel_stats, Queue, QueueError, QueueStats};
use crate::policy::{Decision, Reason};
use crate::replay::ReplayKey;
use crate::state::ReplayJournal;

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
/// How often the metrics file (`[server] metrics_file`) is rewritten: node_exporter is
/// typically scraped every 15 s or more; a write costs about 1.5 ms on ext4, 30 µs on tmpfs
/// (docs/METRICS.md has the measurement), between bursts.
const METRICS_EVERY: Duration = Duration::from_secs(5);
/// After a failed key-hint write, how long the tick waits before it tries the whole window
/// again (a set missing from a table loaded by hand must not cost a window of HMACs and an
/// error line every second). Start, reload, repair and clock steps try at once.
const HINT_RETRY: Duration = Duration::from_secs(30);

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
    /// Socket overruns (`ENOBUFS`) and unparsable messages seen so far, for the metrics.
    fn socket_counters(&self) -> (u64, u64) {
        (0, 0)
    }
    /// The kernel's counters of this queue, for the metrics (`None`: not readable).
    fn kernel_stats(&self) -> Option<QueueStats> {
        None
    }
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

    fn socket_counters(&self) -> (u64, u64) {
        (self.overruns(), self.malformed())
    }

    fn kernel_stats(&self) -> Option<QueueStats> {
        kernel_stats(self.num())
    }
}

/// The running daemon: the pure engine plus its shells. Generic over the side effects so tests
/// drive the real loop in-process with scripted packets and a recording grant sink.
pub struct Daemon<Q, S> {
    pub(super) engine: Engine,
    pub(super) journal: ReplayJournal,
    pub(super) queue: Q,
    /// Where grants go (`serve` gives it the backend the config names, maybe in a dry run).
    pub(super) grants: S,
    /// Grants we wrote and their deadlines, to restore them if someone flushes the ruleset.
    pub(super) live: LiveGrants,
    warn_budget: WarnBudget,
    pub(super) config_path: PathBuf,
    /// Held for the daemon's life; probes of it are dismissed at each tick.
    pub(super) instance: Option<InstanceLock>,
    /// Command cycles and command messages (`None`: commands are skipped with an error).
    pub(super) commands: Option<super::commands::Commands>,
    /// Counted here, written to `[server] metrics_file` every [`METRICS_EVERY`].
    pub(super) metrics: Metrics,
    metrics_file: MetricsFile,
    /// When the last key-hint write failed ([`HINT_RETRY`]).
    hints_failed: Option<Instant>,
}

impl<Q: PacketSource, S: GrantSink> Daemon<Q, S> {
    /// Assemble a daemon whose grant backend is set up for the engine's config.
    pub fn new(
        engine: Engine,
        journal: ReplayJournal,
        queue: Q,
        grants: S,
        config_path: PathBuf,
    ) -> Self {
        Daemon {
            engine,
            journal,
            queue,
            grants,
            live: LiveGrants::new(),
            warn_budget: WarnBudget::default(),
            config_path,
            instance: None,
            commands: None,
            metrics: Metrics::new(env!("CARGO_PKG_VERSION"), unix_now()),
            metrics_file: MetricsFile::default(),
            hints_failed: None,
        }
    }

    /// Run command cycles and command messages through `commands`.
    pub fn with_commands(mut self, commands: super::commands::Commands) -> Self {
        self.commands = Some(commands);
        self
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
        // The first metrics file is written at the first tick.
        let mut last_metrics: Option<Instant> = None;
        // The prefilter drops every native knock whose hint it does not hold: fill it before
        // the first packet.
        self.sync_hints(true);
        loop {
            // A backend that cannot notice changes by others has no descriptor: poll(2) skips
            // a negative one.
            let events = self.grants.event_fd().unwrap_or(-1);
            let ready = poll3(self.queue.fd(), events, control.fd(), 1000)?;
            if control.take_terminate() {
                info!("shutting down; grants stay in the kernel until they expire");
                // The last counts, so a scrape after the stop sees everything that happened.
                self.write_metrics();
                return Ok(());
            }
            if let Some(ticket) = control.take_reload() {
                let outcome = self.reload();
                self.metrics.reloaded(outcome.is_ok());
                control.post_reload(ticket, outcome);
            }
            // A ruleset repair before packets: the gate may be open (or knocks unheard) until
            // it is done, and a turn of packets can wait for it.
            if ready[1] {
                self.check_grants();
            }
            if ready[0] {
                self.drain_queue()?;
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                let now = unix_now();
                let step = self.engine.tick(now, monotonic_secs());
                if let Some(step) = step {
                    warn!(
                        step_secs = step,
                        "the wall clock stepped by {step}s: replay records stay until their expiry \
                         by the clock that does not step, and the key-hint window moved with the \
                         clock"
                    );
                }
                // The kernel's hint timeouts were computed from the old clock: all anew.
                self.sync_hints(step.is_some());
                self.live.forget_expired();
                if let Some(c) = self.commands.as_mut() {
                    c.tick(now);
                }
                // A backend without change events (ipset) is asked once a tick whether its
                // objects are still there.
                if self.grants.event_fd().is_none() {
                    self.check_grants();
                }
                self.warn_budget.reset();
                if let Some(lock) = &self.instance {
                    lock.dismiss_probes();
                }
                // On its own thread: an fdatasync on this loop held knocks for 7–11 ms.
                if let Err(e) = self.journal.sync_in_background() {
                    error!("{e}");
                }
                // Written on its own thread too (20–40 ms at 100 000 entries); put in place at
                // a later tick.
                if let Err(e) = self.journal.finish_compaction() {
                    error!("{e}; the journal stays as it was, compaction retried in 10 minutes");
                }
                if last_compact.elapsed() >= COMPACT_EVERY {
                    last_compact = Instant::now();
                    if let Err(e) = self.journal.start_compaction(self.engine.replay()) {
                        error!("{e}");
                    }
                }
                if last_metrics.is_none_or(|t| t.elapsed() >= METRICS_EVERY) {
                    last_metrics = Some(Instant::now());
                    self.write_metrics();
                }
            }
        }
    }

    /// Handle the packets waiting in the queue, burst by burst, for one [`TURN`] at most: the
    /// loop then serves signals, ruleset events and the tick before it drains more (`poll(2)`
    /// reports the queue readable again at once if packets are left).
    fn drain_queue(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + TURN;
        let mut outcomes: Vec<(u32, Outcome)> = Vec::with_capacity(BURST);
        // When each packet was read off the queue, for `nfknock_knock_seconds`.
        let mut received: Vec<Instant> = Vec::with_capacity(BURST);
        loop {
            outcomes.clear();
            received.clear();
            let now = unix_now();
            let mut dry = false;
            while outcomes.len() < BURST {
                let want = (BURST - outcomes.len()).min(TURN_CHECK);
                let engine = &mut self.engine;
                let n = self.queue.recv_batch(want, &mut |id, pkt| {
                    received.push(Instant::now());
                    let outcome = engine.handle_ip(pkt, now);
                    outcomes.push((id, outcome));
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
            self.apply(&outcomes)?;
            // One batch verdict drops the whole burst (ids wrap as the kernel's do).
            self.queue.drop_pending()?;
            let done = Instant::now();
            for t in &received {
                self.metrics
                    .observe_knock(done.saturating_duration_since(*t));
            }
            if dry || Instant::now() >= deadline {
                return Ok(());
            }
        }
    }

    /// Persist replay records, write grants, log.
    fn apply(&mut self, outcomes: &[(u32, Outcome)]) -> anyhow::Result<()> {
        let records: Vec<(ReplayKey, u64)> =
            outcomes.iter().filter_map(|(_, o)| o.record).collect();
        if !records.is_empty() {
            // A failure here must not open anything: without the record, no grant.
            if let Err(e) = self.journal.append(&records) {
                error!("{e}; refusing this burst's grants so no replay window opens");
                return Ok(());
            }
        }
        let mut grants = Vec::new();
        // The client each grant was made for, for revocation on reload.
        let mut owners = Vec::new();
        let config = self.engine.config().clone();
        let now = unix_now();
        for (_, o) in outcomes {
            let format = o.format.map(|f| f.name());
            match &o.decision {
                // An accepted command message counts as an accepted knock.
                Decision::Grant(_) | Decision::Command(_) => self.metrics.knock(None, format),
                Decision::Reject(reason) => self.metrics.knock(Some(reason.code()), format),
            }
            let client = o.client.map(|i| config.clients[i].name.as_str());
            let entry = o.client.and_then(|i| config.clients.get(i));
            let src = SrcDisplay(o.src);
            match &o.decision {
                Decision::Grant(g) if entry.is_some_and(|c| c.commands.grant.command()) => {
                    let c = entry.expect("checked above");
                    info!(
                        client = client.unwrap_or("?"),
                        src = %src,
                        addr = %g.addr,
                        access = %format_list(&g.access),
                        ttl = g.ttl,
                        format = o.format.map_or("?", |f| f.name()),
                        nft = c.commands.grant.nft(),
                        "grant (command cycle)"
                    );
                    let user = o.knock.as_ref().and_then(|k| k.username.as_deref());
                    self.command_cycle(c, g, user, now);
                    if c.commands.grant.nft() {
                        self.push_grants(g, o, &mut grants, &mut owners);
                    }
                }
                Decision::Command(run) => {
                    info!(
                        client = client.unwrap_or("?"),
                        src = %src,
                        argv = ?run.argv,
                        "command message accepted"
                    );
                    match (entry, self.commands.as_mut()) {
                        (Some(c), Some(cmds)) => cmds.command(c, run),
                        _ => error!(
                            client = client.unwrap_or("?"),
                            "command message skipped: commands are not set up in this daemon"
                        ),
                    }
                }
                Decision::Grant(g) => {
                    self.push_grants(g, o, &mut grants, &mut owners);
                    info!(
                        client = client.unwrap_or("?"),
                        src = %src,
                        addr = %g.addr,
                        access = %format_list(&g.access),
                        ttl = g.ttl,
                        format = o.format.map_or("?", |f| f.name()),
                        "grant"
                    );
                    for (a, to) in &g.nat {
                        info!(client = client.unwrap_or("?"), addr = %g.addr, access = %a, to = %to, "grant forwarded (NAT)");
                    }
                    for gw in &g.gateway {
                        info!(client = client.unwrap_or("?"), addr = %g.addr, network = %gw, ttl = g.ttl, "grant gateway (forwarding into the network)");
                    }
                }
                Decision::Reject(reason) => self.log_reject(o, reason, &src, client),
            }
        }
        if let Some(c) = self.commands.as_mut() {
            c.flush();
        }
        if grants.is_empty() {
            return Ok(());
        }
        match self.grants.write(&grants) {
            // A dry run wrote nothing, so there is nothing to restore after a flush.
            Ok(()) if !self.grants.writes_grants() => {}
            Ok(()) => {
                self.metrics.grants_written(grants.len());
                self.live.record(&grants, &owners)
            }
            Err(e) => {
                self.metrics.grant_write_failed();
                error!("{}; re-creating {}", e.report(), self.grants.objects());
                self.restore();
                match self.grants.write(&grants) {
                    Ok(()) => {
                        self.metrics.grants_written(grants.len());
                        self.live.record(&grants, &owners)
                    }
                    Err(e) => {
                        self.metrics.grant_write_failed();
                        error!("grants lost: {}", e.report())
                    }
                }
            }
        }
        Ok(())
    }

    /// A command-cycle client's grant: its `on_grant` (and pending `on_expire`).
    fn command_cycle(
        &mut self,
        c: &crate::config::ClientEntry,
        g: &crate::policy::Grant,
        user: Option<&str>,
        now: u64,
    ) {
        match self.commands.as_mut() {
            Some(cmds) => cmds.grant(c, g, user, now),
            None => {
                error!(client = %c.name, "on_grant skipped: commands are not set up in this daemon")
            }
        }
    }

    /// The nft grants of a decision, with their owner.
    fn push_grants(
        &self,
        g: &crate::policy::Grant,
        o: &Outcome,
        grants: &mut Vec<Grant>,
        owners: &mut Vec<u32>,
    ) {
        let owner = o
            .client
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or(NO_OWNER);
        for a in &g.access {
            grants.push(Grant {
                addr: g.addr,
                access: *a,
                timeout: Duration::from_secs(u64::from(g.ttl)),
                nat: g.nat.iter().find(|(n, _)| n == a).map(|(_, t)| *t),
                gateway: None,
            });
            owners.push(owner);
        }
        // A gateway client's knock also opens its networks for the address (fwknop
        // FORWARD_ALL), keyed on the first access for logs and reloads.
        if let Some(first) = g.access.first() {
            for gw in &g.gateway {
                grants.push(Grant {
                    addr: g.addr,
                    access: *first,
                    timeout: Duration::from_secs(u64::from(g.ttl)),
                    nat: None,
                    gateway: Some(*gw),
                });
                owners.push(owner);
            }
        }
    }

    fn log_reject(&mut self, o: &Outcome, reason: &Reason, src: &SrcDisplay, client: Option<&str>) {
        let format = o.format.map_or("?", |f| f.name());
        let skew = o.skew;
        let client = client.unwrap_or("-");
        // A refused NAT request: say which target the packet asked for (the config's targets
        // are in the config; the packet's are only ever compared).
        let asked = o.knock.as_ref().and_then(|k| k.nat_access.as_deref());
        if let (Some(asked), Reason::NatNotAllowed(_) | Reason::NatFamily(_)) = (asked, reason) {
            if self.warn_budget.take() {
                warn!(%src, reason = reason.code(), format, client, nat_asked = asked, "rejected knock: {reason}");
            } else {
                debug!(%src, reason = reason.code(), format, client, nat_asked = asked, "rejected knock: {reason}");
            }
            return;
        }
        if reason.is_noise() || !self.warn_budget.take() {
            debug!(%src, reason = reason.code(), format, client, skew, "rejected knock: {reason}");
        } else {
            warn!(%src, reason = reason.code(), format, client, skew, "rejected knock: {reason}");
        }
    }

    /// Someone changed the backend's objects (e.g. `nft flush ruleset`): if ours lost
    /// anything, put them back with the live grants. (With `manage_ruleset = false` the backend
    /// answers with an error that says what to load.)
    fn check_grants(&mut self) {
        match self.grants.drain() {
            Ok(false) => {}
            Ok(true) => self.restore(),
            Err(e) => error!("{}", e.report()),
        }
    }

    /// Re-create the backend's objects holding the live grants with the time they have left.
    fn restore(&mut self) {
        let restore = self.live.remaining();
        match self.grants.restore(&restore) {
            Ok(()) => {
                self.metrics.repaired();
                warn!(
                    grants = restore.len(),
                    "{} was removed or changed by someone else; re-created it",
                    self.grants.objects()
                );
                self.sync_hints(true);
            }
            Err(e) => error!("{}", e.report()),
        }
    }

    /// Write the metrics to `[server] metrics_file`, if set: a few KiB to a new file beside it,
    /// renamed over it (node_exporter never reads half a file). Failures are logged once each.
    fn write_metrics(&mut self) {
        let Some(path) = self.engine.config().server.metrics_file.clone() else {
            return;
        };
        let (live_grants_v4, live_grants_v6) = self.live.counts();
        let (queue_overruns, queue_malformed) = self.queue.socket_counters();
        let kernel = self.queue.kernel_stats();
        let snap = Snapshot {
            live_grants_v4,
            live_grants_v6,
            queue_kernel_dropped: kernel.map(|k| u64::from(k.queue_dropped)),
            queue_user_dropped: kernel.map(|k| u64::from(k.user_dropped)),
            queue_overruns,
            queue_malformed,
            journal_bytes: std::fs::metadata(self.journal.path()).ok().map(|m| m.len()),
            prefilter: if self.engine.config().server.prefilter {
                self.grants.prefilter().ok().flatten()
            } else {
                None
            },
        };
        let text = self.metrics.render(&snap);
        self.metrics_file.write(&path, &text);
    }

    /// Bring the kernel's key-hint prefilter up to date (issue 11): with `all`, the whole
    /// window replaces what it holds (start, reload, flush repair, clock step); otherwise the
    /// epochs that entered the window since the last call are added (one batch every ten
    /// minutes, a minute before they can be needed). A failed write is retried whole by the
    /// tick after [`HINT_RETRY`]. Nothing with `prefilter = false`.
    pub(super) fn sync_hints(&mut self, all: bool) {
        if !self.engine.config().server.prefilter {
            return;
        }
        if !all && self.hints_failed.is_some_and(|t| t.elapsed() < HINT_RETRY) {
            return;
        }
        let hints = self.engine.kernel_hints(unix_now(), all);
        if hints.is_empty() && !all {
            return;
        }
        match self.grants.write_hints(&hints, all) {
            Ok(()) => {
                self.hints_failed = None;
                if all {
                    info!(hints = hints.len(), "key hints written to the prefilter");
                } else {
                    debug!(hints = hints.len(), "next epoch's key hints added");
                }
            }
            Err(e) => {
                error!("{}", e.report());
                self.engine.kernel_hints_lost();
                self.hints_failed = Some(Instant::now());
            }
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
