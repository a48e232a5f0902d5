//! NFQUEUE: bind a queue, receive queued packets in batches without blocking, and give
//! verdicts (one batch verdict per burst). Socket use only; the messages are in `msg.rs` (pure),
//! the kernel's counters in `stats.rs`, the socket in [`netlink`](super::netlink).
//!
//! Own implementation rather than the `nfq` crate: we need the file descriptor (poll together
//! with the signal pipe and nftables events, so shutdown never waits for a packet), a large
//! `SO_RCVBUFFORCE`, `ENOBUFS` accounting and batch verdicts.
//!
//! The kernel side is `net/netfilter/nfnetlink_queue.c`; the behaviour cited below is from there.
//!
//! Fail-closed: the queue is bound without `NFQA_CFG_F_FAIL_OPEN`, so a full queue or a full socket
//! buffer drops packets in the kernel, and when this process goes away the kernel drops whatever is
//! still queued (`instance_destroy` → `nfqnl_flush` with `NF_DROP`). Without a listener at all the
//! `NFQUEUE` target (no `--queue-bypass`) drops too.

mod msg;
mod stats;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use super::netlink::{MsgBuf, NlSocket, OpenError, OpenStep, Recv, NF_ACCEPT, NF_DROP};
use msg::*;
pub use stats::{kernel_stats, QueueStats};

/// The kernel-internal `ENOTSUPP`, which `nfqnl_recv_config` returns for an unknown command and
/// which leaks to user space as 524.
const ENOTSUPP: i32 = 524;

// --- Our choices ------------------------------------------------------------------------------

/// The one receive buffer, allocated at open and reused. A queued packet arrives as one netlink
/// datagram of at most `copy_range` (≤ 64 KiB) plus ~100 bytes of headers, so it always fits.
const RECV_BUF_LEN: usize = 256 << 10;
/// The buffer verdicts and config messages are built in: a verdict is 32 bytes, the bind 48.
const OUT_BUF_LEN: usize = 64;
/// How long `open` waits for the kernel to acknowledge the bind.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// How to bind the queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    pub num: u16,
    /// Kernel queue length (`NFQA_CFG_QUEUE_MAXLEN`); packets beyond it are dropped by the kernel.
    pub max_len: u32,
    /// Socket receive buffer, bytes (`SO_RCVBUFFORCE`, falls back to `SO_RCVBUF`).
    pub rcvbuf: usize,
    /// Bytes of each packet copied to user space (IP header + UDP header + payload).
    pub copy_range: u32,
}

impl Default for QueueConfig {
    fn default() -> QueueConfig {
        QueueConfig {
            num: 0,
            // Room for ~200 ms of a 150 000 packets/s flood: on a busy host the daemon can be
            // off the CPU for tens of ms, and a full queue drops legitimate knocks with the junk
            // (BENCHMARKS.md: a 113 ms backlog at 150 000/s, i.e. ~17 000 packets, with no
            // drop; 4 096 dropped 7 722 packets and 2 of 27 knocks at 116 000/s).
            max_len: 32_768,
            // A queued knock costs ~1 KiB of socket buffer (skb truesize), so 32 MiB holds
            // the whole queue; it is kernel memory, used only while a backlog exists.
            rcvbuf: 32 << 20,
            copy_range: 1600,
        }
    }
}

/// Errors of the queue shell, each naming the operation and the queue. The OS error is the
/// source, not repeated in the message (`main` prints the cause chain).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot {op} NFQUEUE {queue}")]
    Io {
        op: &'static str,
        queue: u16,
        #[source]
        source: std::io::Error,
    },
    /// `EPERM` from the bind while `/proc/net/netfilter/nfnetlink_queue` shows another owner.
    #[error(
        "cannot bind NFQUEUE {queue}: another process holds it (netlink port {portid}); stop that \
         process (a second nfknock, fwknopd or an IDS in NFQUEUE mode) or configure another queue number"
    )]
    Busy { queue: u16, portid: u32 },
    /// `EPERM` from the bind with no other owner in sight.
    #[error(
        "cannot bind NFQUEUE {queue}: permission denied; nfknock needs CAP_NET_ADMIN in this network \
         namespace (run it as root or give the service AmbientCapabilities=CAP_NET_ADMIN)"
    )]
    Permission { queue: u16 },
    /// Opening the socket was refused by a sandbox or security policy (EPERM/EACCES).
    #[error(
        "cannot open a netlink socket for NFQUEUE {queue}; the sandbox must allow \
         AF_NETLINK (systemd: RestrictAddressFamilies=AF_NETLINK ...) and the security policy \
         NETLINK_NETFILTER sockets"
    )]
    Socket {
        queue: u16,
        #[source]
        source: std::io::Error,
    },
    /// The kernel has no nfnetlink_queue subsystem.
    #[error(
        "cannot bind NFQUEUE {queue}: the kernel has no NFQUEUE support; load it with \
         `modprobe nfnetlink_queue`"
    )]
    Unsupported {
        queue: u16,
        #[source]
        source: std::io::Error,
    },
}

/// What failing to open the socket for queue `num` means to the user.
fn open_error(num: u16, e: OpenError) -> QueueError {
    let source = e.source;
    let io_err = |op, source| QueueError::Io {
        op,
        queue: num,
        source,
    };
    match (e.step, source.raw_os_error()) {
        // No nfnetlink in this kernel.
        (OpenStep::Socket, Some(libc::EPROTONOSUPPORT)) => {
            QueueError::Unsupported { queue: num, source }
        }
        // systemd's RestrictAddressFamilies= answers EAFNOSUPPORT; LSMs answer EACCES.
        (OpenStep::Socket, Some(libc::EAFNOSUPPORT | libc::EACCES | libc::EPERM)) => {
            QueueError::Socket { queue: num, source }
        }
        (OpenStep::Socket, _) => io_err("open a netlink socket for", source),
        (OpenStep::Bind, _) => io_err("bind the netlink socket for", source),
        (OpenStep::PortId, _) => io_err("read the netlink port id for", source),
    }
}

/// A bound NFQUEUE.
pub struct Queue {
    sock: NlSocket,
    num: u16,
    seq: u32,
    buf: Box<[u8]>,
    /// Verdict and config messages are built here: no allocation per verdict.
    out: MsgBuf,
    /// Highest packet id received and not yet covered by a batch verdict (wrap-aware).
    pending: Option<u32>,
    overruns: u64,
    verdict_errors: u64,
    last_verdict_errno: i32,
    malformed: u64,
    rcvbuf: usize,
}

impl Queue {
    /// Open a netlink socket, bind queue `cfg.num` (copy-packet mode), set its length and buffer.
    /// Fails with a clear message if another process holds the queue.
    ///
    /// Packets that reach the queue before the kernel has acknowledged the bind are dropped
    /// (fail-closed; a client simply knocks again).
    pub fn open(cfg: QueueConfig) -> Result<Queue, QueueError> {
        let num = cfg.num;
        let io_err = |op: &'static str| {
            move |source| QueueError::Io {
                op,
                queue: num,
                source,
            }
        };

        // Port id 0 in the bind: the kernel assigns a unique one, which we read back so an EPERM
        // can be told apart ("held by someone else" vs "no CAP_NET_ADMIN").
        let sock = NlSocket::open(0).map_err(|e| open_error(num, e))?;

        // Overruns must be visible: ENOBUFS is how we learn that the kernel dropped packets
        // because the socket buffer was full (netlink_overrun() sets it unless NO_ENOBUFS).
        sock.setsockopt_int(libc::SOL_NETLINK, libc::NETLINK_NO_ENOBUFS, 0)
            .map_err(io_err("configure the socket (NETLINK_NO_ENOBUFS) for"))?;
        sock.set_rcvbuf(cfg.rcvbuf)
            .map_err(io_err("set the receive buffer (SO_RCVBUF) of"))?;
        let rcvbuf = sock
            .rcvbuf()
            .map_err(io_err("read the receive buffer size of"))?;

        let mut q = Queue {
            sock,
            num,
            seq: 0,
            buf: vec![0u8; RECV_BUF_LEN].into_boxed_slice(),
            out: MsgBuf::with_capacity(OUT_BUF_LEN),
            pending: None,
            overruns: 0,
            verdict_errors: 0,
            last_verdict_errno: 0,
            malformed: 0,
            rcvbuf,
        };

        // Bind, copy mode, copy range and queue length in one message: `nfqnl_recv_config`
        // handles the command first, then the parameters, so the queue never exists for long in
        // the default meta-only mode. One bind serves IPv4 and IPv6: since Linux 3.8 the
        // PF_BIND/PF_UNBIND commands are no-ops. NFQA_CFG_F_FAIL_OPEN is deliberately not
        // sent: a fresh instance has no flags, so a full queue drops (fail-closed).
        q.seq = q.seq.wrapping_add(1);
        let seq = q.seq;
        config_msg(
            &mut q.out,
            num,
            seq,
            NFQNL_CFG_CMD_BIND,
            Some((cfg.copy_range, cfg.max_len)),
        );
        q.sock
            .send(q.out.bytes())
            .map_err(io_err("send the bind request for"))?;
        match q.wait_ack(seq) {
            Ok(()) => {}
            Err(AckError::Io(e)) => return Err(io_err("wait for the bind acknowledgement of")(e)),
            Err(AckError::Kernel(errno)) => return Err(q.bind_error(errno)),
        }
        Ok(q)
    }

    fn bind_error(&self, errno: i32) -> QueueError {
        let source = io::Error::from_raw_os_error(errno);
        match errno {
            // `nfqnl_recv_config`: EPERM when the queue exists for another port id; nfnetlink
            // also answers EPERM when the sender lacks CAP_NET_ADMIN.
            libc::EPERM => match kernel_stats(self.num) {
                Some(s) if s.portid != self.sock.portid() => QueueError::Busy {
                    queue: self.num,
                    portid: s.portid,
                },
                _ => QueueError::Permission { queue: self.num },
            },
            libc::EOPNOTSUPP | libc::EPROTONOSUPPORT | ENOTSUPP => QueueError::Unsupported {
                queue: self.num,
                source,
            },
            _ => QueueError::Io {
                op: "bind",
                queue: self.num,
                source,
            },
        }
    }

    /// Wait for the acknowledgement of request `seq`. Packets that arrive meanwhile are dropped
    /// with one batch verdict once the acknowledgement is in.
    fn wait_ack(&mut self, seq: u32) -> Result<(), AckError> {
        let mut early: Option<u32> = None;
        let overruns = &mut self.overruns;
        let result = self
            .sock
            .recv_until(&mut self.buf, ACK_TIMEOUT, |r| {
                let Recv::Datagram(data) = r else {
                    *overruns += 1;
                    return None;
                };
                let mut result = None;
                for m in messages(data) {
                    match m {
                        Message::Error { seq: s, errno } if s == seq => {
                            result = Some(if errno == 0 {
                                Ok(())
                            } else {
                                Err(AckError::Kernel(errno))
                            });
                        }
                        Message::Packet { id, .. } => early = Some(newest(early, id)),
                        _ => {}
                    }
                }
                result
            })
            .map_err(AckError::Io)
            .and_then(|r| r);
        if let Some(id) = early {
            // Best effort: if this fails the packets are dropped when the socket closes.
            let _ = self.send_verdict(NFQNL_MSG_VERDICT_BATCH, id, NF_DROP);
        }
        result
    }

    /// The socket, for `poll(2)`.
    pub fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Without blocking, receive up to `max` queued packets and call `f(packet_id, ip_packet)`
    /// for each. Returns how many were received (0 when none is waiting). A socket overrun
    /// (`ENOBUFS`) is counted in [`Queue::overruns`], not returned as an error.
    ///
    /// The kernel sends one datagram per queued packet; should a datagram ever carry several,
    /// all of them are delivered, so the count can then exceed `max`.
    ///
    /// `ip_packet` is the raw IPv4/IPv6 packet (no link-layer header), at most `copy_range`
    /// bytes; it borrows the queue's one receive buffer. Every packet handed to `f` must get a
    /// verdict ([`Queue::drop_upto`], [`Queue::drop_pending`] or [`Queue::verdict`]), or it
    /// stays queued until this `Queue` is dropped. Kernel error messages for earlier verdicts are
    /// counted in [`Queue::verdict_errors`].
    pub fn recv_batch(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<usize, QueueError> {
        let mut got = 0usize;
        // Bounded by reads as well as packets, so a flood of ENOBUFS/acks cannot keep us here.
        let mut reads = 0usize;
        while got < max && reads < max {
            reads += 1;
            let data = match self.sock.try_recv(&mut self.buf) {
                Ok(Some(Recv::Datagram(data))) => data,
                Ok(None) => break,
                Ok(Some(Recv::Overrun)) => {
                    self.overruns += 1;
                    continue;
                }
                Err(e) => {
                    return Err(QueueError::Io {
                        op: "receive from",
                        queue: self.num,
                        source: e,
                    })
                }
            };
            // A datagram longer than the buffer (MSG_TRUNC) cannot occur with copy_range ≤ 64 KiB;
            // if it did, the cut message fails its length check below.
            for m in messages(data) {
                match m {
                    Message::Packet { id, payload } => {
                        got += 1;
                        self.pending = Some(newest(self.pending, id));
                        f(id, payload);
                    }
                    // An acknowledgement (errno 0) needs nothing.
                    Message::Error { errno: 0, .. } | Message::Other => {}
                    Message::Error { errno, .. } => {
                        self.verdict_errors += 1;
                        self.last_verdict_errno = errno;
                    }
                    Message::Malformed => self.malformed += 1,
                }
            }
        }
        Ok(got)
    }

    /// Verdict DROP for every queued packet with an id up to and including `id`
    /// (`NFQNL_MSG_VERDICT_BATCH`).
    pub fn drop_upto(&mut self, id: u32) -> Result<(), QueueError> {
        self.send_verdict(NFQNL_MSG_VERDICT_BATCH, id, NF_DROP)
            .map_err(|source| QueueError::Io {
                op: "send a batch verdict to",
                queue: self.num,
                source,
            })?;
        if self.pending.is_some_and(|p| !id_after(p, id)) {
            self.pending = None;
        }
        Ok(())
    }

    /// Drop every packet received by [`Queue::recv_batch`] that no batch verdict covered yet, in
    /// one message. Returns whether there was anything to drop.
    pub fn drop_pending(&mut self) -> Result<bool, QueueError> {
        match self.pending {
            Some(id) => self.drop_upto(id).map(|()| true),
            None => Ok(false),
        }
    }

    /// Verdict for one packet: accept (deliver it on) or drop.
    pub fn verdict(&mut self, id: u32, accept: bool) -> Result<(), QueueError> {
        let v = if accept { NF_ACCEPT } else { NF_DROP };
        self.send_verdict(NFQNL_MSG_VERDICT, id, v)
            .map_err(|source| QueueError::Io {
                op: "send a verdict to",
                queue: self.num,
                source,
            })
    }

    /// Socket overruns seen so far (`ENOBUFS` events). One event can stand for several lost
    /// packets; the exact number is [`QueueStats::user_dropped`] from [`kernel_stats`].
    pub fn overruns(&self) -> u64 {
        self.overruns
    }

    /// Error messages the kernel sent back for verdicts (e.g. `ENOENT` for an id that was no
    /// longer queued). They arrive with the next [`Queue::recv_batch`].
    pub fn verdict_errors(&self) -> u64 {
        self.verdict_errors
    }

    /// The errno of the last verdict error, if any.
    pub fn last_verdict_error(&self) -> Option<io::Error> {
        (self.last_verdict_errno != 0)
            .then(|| io::Error::from_raw_os_error(self.last_verdict_errno))
    }

    /// Netlink messages from the kernel that failed their length checks (should stay 0).
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// The receive buffer the kernel granted, bytes (the kernel doubles the requested value for
    /// its bookkeeping; `SO_RCVBUF` without CAP_NET_ADMIN is capped at `net.core.rmem_max`).
    pub fn rcvbuf(&self) -> usize {
        self.rcvbuf
    }

    /// The queue number.
    pub fn num(&self) -> u16 {
        self.num
    }

    /// Netlink port id of the socket, as shown in `/proc/net/netfilter/nfnetlink_queue`.
    pub fn portid(&self) -> u32 {
        self.sock.portid()
    }

    fn send_verdict(&mut self, msg_type: u16, id: u32, verdict: u32) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        verdict_msg(&mut self.out, msg_type, self.num, self.seq, verdict, id);
        self.sock.send(self.out.bytes())
    }
}

impl Drop for Queue {
    /// Unbind explicitly, then close. Closing alone would also do (the kernel destroys a
    /// socket's queues on `NETLINK_URELEASE`); either way packets still queued are dropped.
    fn drop(&mut self) {
        self.seq = self.seq.wrapping_add(1);
        config_msg(
            &mut self.out,
            self.num,
            self.seq,
            NFQNL_CFG_CMD_UNBIND,
            None,
        );
        let _ = self.sock.send(self.out.bytes());
    }
}

enum AckError {
    Io(io::Error),
    Kernel(i32),
}

#[cfg(test)]
mod tests;
