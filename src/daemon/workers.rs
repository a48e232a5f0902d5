//! More cores: `queue = "0-3"` binds one NFQUEUE per queue number, each served by its own
//! worker thread with its own queue socket; the kernel spreads knocks over them by flow (a hash
//! of the addresses, see the knock rule in `netfilter/nft/rules.rs`). Shell: threads and
//! sockets, nothing else.
//!
//! A worker does the part that costs CPU per packet whatever the packet is — receiving it from
//! the kernel (≈ 3–6 µs of copying and syscalls per queued packet, issue 11) and the batch
//! verdict DROP (every knock is dropped, whatever the engine decides) — and hands the bytes to
//! the main loop in batches. The main loop keeps everything that has state: the one engine
//! (hence one replay cache: a knock replayed to another queue is still a replay), the journal
//! and its one writer, the grant backend and its netlink socket, the live grants, reload,
//! signals, the tick and flush repair. Workers hold no config, so a reload needs nothing from
//! them.
//!
//! The hand-off is a bounded channel ([`CHANNEL_BATCHES`]): when the main loop falls behind, a
//! worker waits and leaves packets in its kernel queue, whose length bounds the backlog as with
//! one queue. [`Fanin`] is what the main loop sees: a [`PacketSource`] whose descriptor (an
//! eventfd) is readable while batches wait.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tracing::info;

use super::run::PacketSource;
use crate::netfilter::queue::{kernel_stats, Queue, QueueError, QueueStats};

/// Packets a worker hands over at once (the main loop's burst).
const BATCH: usize = 256;
/// Batches waiting for the main loop at most, over all workers: 8 × 256 packets of at most
/// `copy_range` (1 600) bytes is 3.3 MB in the worst case; a native knock is 136 bytes.
const CHANNEL_BATCHES: usize = 8;
/// How often an idle worker looks at the stop flag.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// Queued packets copied out of a queue's receive buffer: one allocation per batch, reused.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Batch {
    fn push(&mut self, pkt: &[u8]) {
        self.bytes.extend_from_slice(pkt);
        self.ends.push(self.bytes.len());
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

type Handoff = Result<Batch, QueueError>;

/// Counters of one worker, read by the main loop.
#[derive(Default)]
struct WorkerStats {
    packets: AtomicU64,
    /// Times the worker found the channel full and waited for the main loop.
    waits: AtomicU64,
    /// The worker's queue socket's overruns and unparsable messages, for the metrics.
    overruns: AtomicU64,
    malformed: AtomicU64,
}

/// The main loop's side of the workers: a [`PacketSource`] fed by every queue of the range.
pub struct Fanin {
    rx: mpsc::Receiver<Handoff>,
    /// Readable while batches wait (workers write after each hand-off).
    wake: OwnedFd,
    current: Option<Batch>,
    next: usize,
    /// Emptied batches, back to the workers.
    pool: Arc<Mutex<Vec<Batch>>>,
    stop: Arc<AtomicBool>,
    stats: Vec<(u16, Arc<WorkerStats>)>,
    first: u16,
}

impl Fanin {
    /// Start one worker thread per queue. Call after the privilege drop: the threads inherit
    /// the capabilities of the thread that starts them, and need none.
    pub fn start(queues: Vec<Queue>) -> io::Result<Fanin> {
        // SAFETY: eventfd(2) with valid flags; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor owned by nobody else.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        let (tx, rx) = mpsc::sync_channel(CHANNEL_BATCHES);
        let pool = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let first = queues.first().map_or(0, Queue::num);
        let mut stats = Vec::new();
        for q in queues {
            let st = Arc::new(WorkerStats::default());
            stats.push((q.num(), st.clone()));
            let w = Worker {
                queue: q,
                tx: tx.clone(),
                wake: wake.try_clone()?,
                pool: pool.clone(),
                stop: stop.clone(),
                stats: st,
            };
            std::thread::Builder::new()
                .name(format!("nfknock-q{}", w.queue.num()))
                .spawn(move || w.run())?;
        }
        info!(
            first,
            last = first + (stats.len() as u16).saturating_sub(1),
            "one worker thread per queue: the kernel spreads knocks over them by flow"
        );
        Ok(Fanin {
            rx,
            wake,
            current: None,
            next: 0,
            pool,
            stop,
            stats,
            first,
        })
    }

    /// The next waiting batch, if any; `Err` if a worker failed or every worker ended.
    fn take_batch(&mut self) -> Result<bool, QueueError> {
        if let Some(b) = self.current.take() {
            let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
            if pool.len() < CHANNEL_BATCHES + self.stats.len() {
                pool.push(b);
            }
        }
        let got = match self.rx.try_recv() {
            Err(TryRecvError::Empty) => {
                // Clear the wake-up, then look again: a batch sent before the clear is seen
                // now, one sent after it sets the eventfd again.
                let mut v = 0u64;
                // SAFETY: reads 8 bytes into `v` from our own non-blocking eventfd.
                unsafe { libc::read(self.wake.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
                self.rx.try_recv()
            }
            other => other,
        };
        match got {
            Ok(Ok(b)) => {
                self.current = Some(b);
                self.next = 0;
                Ok(true)
            }
            Ok(Err(e)) => Err(e),
            Err(TryRecvError::Empty) => Ok(false),
            Err(TryRecvError::Disconnected) => Err(QueueError::Io {
                op: "receive from the workers of",
                queue: self.first,
                source: io::Error::other("every queue worker has ended"),
            }),
        }
    }
}

impl PacketSource for Fanin {
    fn fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    fn recv_batch(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<usize, QueueError> {
        let mut got = 0;
        while got < max {
            let exhausted = self.current.as_ref().is_none_or(|b| self.next >= b.len());
            if exhausted && !self.take_batch()? {
                break;
            }
            if let Some(b) = &self.current {
                f(0, b.get(self.next));
                self.next += 1;
                got += 1;
            }
        }
        Ok(got)
    }

    /// The workers gave every packet its verdict (DROP) when they handed it over.
    fn drop_pending(&mut self) -> Result<(), QueueError> {
        Ok(())
    }

    /// Added up over the workers' sockets.
    fn socket_counters(&self) -> (u64, u64) {
        self.stats.iter().fold((0, 0), |(o, m), (_, st)| {
            (
                o + st.overruns.load(Ordering::Relaxed),
                m + st.malformed.load(Ordering::Relaxed),
            )
        })
    }

    /// Added up over the queues of the range (`None` if one is not readable).
    fn kernel_stats(&self) -> Option<QueueStats> {
        let mut all: Option<QueueStats> = None;
        for (queue, _) in &self.stats {
            let s = kernel_stats(*queue)?;
            all = Some(match all {
                None => s,
                Some(a) => QueueStats {
                    queue_total: a.queue_total.saturating_add(s.queue_total),
                    queue_dropped: a.queue_dropped.wrapping_add(s.queue_dropped),
                    user_dropped: a.user_dropped.wrapping_add(s.user_dropped),
                    id_sequence: a.id_sequence.wrapping_add(s.id_sequence),
                    ..a
                },
            });
        }
        all
    }
}

impl Drop for Fanin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for (queue, st) in &self.stats {
            info!(
                queue,
                packets = st.packets.load(Ordering::Relaxed),
                waits_for_main_loop = st.waits.load(Ordering::Relaxed),
                "queue worker stopped"
            );
        }
    }
}

struct Worker {
    queue: Queue,
    tx: mpsc::SyncSender<Handoff>,
    wake: OwnedFd,
    pool: Arc<Mutex<Vec<Batch>>>,
    stop: Arc<AtomicBool>,
    stats: Arc<WorkerStats>,
}

impl Worker {
    fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            if !readable(self.queue.as_raw_fd(), IDLE_POLL) {
                continue;
            }
            let mut batch = self
                .pool
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()
                .unwrap_or_default();
            batch.clear();
            let handoff = self.fill(&mut batch).map(|()| batch);
            self.stats
                .overruns
                .store(self.queue.overruns(), Ordering::Relaxed);
            self.stats
                .malformed
                .store(self.queue.malformed(), Ordering::Relaxed);
            let failed = handoff.is_err();
            if let Ok(b) = &handoff {
                if b.len() == 0 {
                    continue;
                }
                self.stats
                    .packets
                    .fetch_add(b.len() as u64, Ordering::Relaxed);
            }
            let sent = match self.tx.try_send(handoff) {
                Ok(()) => true,
                Err(TrySendError::Full(h)) => {
                    self.stats.waits.fetch_add(1, Ordering::Relaxed);
                    self.tx.send(h).is_ok()
                }
                Err(TrySendError::Disconnected(_)) => false,
            };
            if !sent {
                return; // the main loop has gone
            }
            let one = 1u64;
            // SAFETY: writes 8 bytes from `one` to our own eventfd.
            unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
            if failed {
                return;
            }
        }
    }

    /// Receive up to [`BATCH`] waiting packets into `batch`, then drop them all in the kernel
    /// with one batch verdict (a knock is never delivered, whatever the engine decides).
    fn fill(&mut self, batch: &mut Batch) -> Result<(), QueueError> {
        while batch.len() < BATCH {
            let want = BATCH - batch.len();
            let n = self.queue.recv_batch(want, &mut |_, pkt| batch.push(pkt))?;
            if n < want {
                break;
            }
        }
        self.queue.drop_pending().map(|_| ())
    }
}

/// The daemon's packet source: one queue served by the main loop itself (the default), or a
/// range of queues served by workers.
pub enum Queues {
    One(Queue),
    Many(Fanin),
}

impl Queues {
    /// Bind `count` queues from `first` on. Before any nftables change: if another program
    /// holds one of the numbers, nothing has been diverted to it.
    pub fn open(first: u16, count: u16) -> Result<Vec<Queue>, QueueError> {
        (0..count.max(1))
            .map(|i| {
                Queue::open(crate::netfilter::queue::QueueConfig {
                    num: first.saturating_add(i),
                    ..Default::default()
                })
            })
            .collect()
    }

    /// Serve `queues`: one on the main loop, more with one worker each (started here: call
    /// after the privilege drop).
    pub fn start(mut queues: Vec<Queue>) -> io::Result<Queues> {
        if queues.len() == 1 {
            if let Some(q) = queues.pop() {
                return Ok(Queues::One(q));
            }
        }
        Fanin::start(queues).map(Queues::Many)
    }
}

impl PacketSource for Queues {
    fn fd(&self) -> RawFd {
        match self {
            Queues::One(q) => q.as_raw_fd(),
            Queues::Many(f) => f.fd(),
        }
    }

    fn recv_batch(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<usize, QueueError> {
        match self {
            Queues::One(q) => q.recv_batch(max, f),
            Queues::Many(m) => m.recv_batch(max, f),
        }
    }

    fn drop_pending(&mut self) -> Result<(), QueueError> {
        match self {
            Queues::One(q) => q.drop_pending().map(|_| ()),
            Queues::Many(m) => m.drop_pending(),
        }
    }

    fn socket_counters(&self) -> (u64, u64) {
        match self {
            Queues::One(q) => PacketSource::socket_counters(q),
            Queues::Many(m) => m.socket_counters(),
        }
    }

    fn kernel_stats(&self) -> Option<QueueStats> {
        match self {
            Queues::One(q) => PacketSource::kernel_stats(q),
            Queues::Many(m) => PacketSource::kernel_stats(m),
        }
    }
}

/// Whether `fd` became readable within `timeout` (`poll(2)`; an interrupted call is "no").
fn readable(fd: RawFd, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) };
    rc > 0 && p.revents != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_hands_back_each_packet_as_pushed() {
        let mut b = Batch::default();
        for p in [&b"one"[..], b"", b"three"] {
            b.push(p);
        }
        assert_eq!(b.len(), 3);
        assert_eq!(
            (b.get(0), b.get(1), b.get(2)),
            (&b"one"[..], &b""[..], &b"three"[..])
        );
        b.clear();
        assert_eq!(b.len(), 0);
    }
}
