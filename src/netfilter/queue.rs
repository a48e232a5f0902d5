//! NFQUEUE over a raw `NETLINK_NETFILTER` socket: bind a queue, receive queued packets in
//! batches without blocking, and give verdicts (one batch verdict per burst).
//!
//! Own implementation rather than the `nfq` crate: we need the file descriptor (poll together
//! with the signal pipe and nftables events, so shutdown never waits for a packet), a large
//! `SO_RCVBUFFORCE`, `ENOBUFS` accounting and batch verdicts.
//!
//! The message layouts are the kernel's UAPI: `include/uapi/linux/netlink.h` (message and
//! attribute headers), `include/uapi/linux/netfilter/nfnetlink.h` (`struct nfgenmsg`) and
//! `include/uapi/linux/netfilter/nfnetlink_queue.h` (commands, attributes, verdict header).
//! The kernel side is `net/netfilter/nfnetlink_queue.c`; the behaviour cited below is from there.
//!
//! Contract of the parser: bytes read from the socket are parsed by length and named offsets and
//! never make it panic. A message with a bogus length ends the parse of that datagram; an
//! attribute with a bogus length ends the parse of that message.
//!
//! Fail-closed: the queue is bound without `NFQA_CFG_F_FAIL_OPEN`, so a full queue or a full socket
//! buffer drops packets in the kernel, and when this process goes away the kernel drops whatever is
//! still queued (`instance_destroy` → `nfqnl_flush` with `NF_DROP`). Without a listener at all the
//! `NFQUEUE` target (no `--queue-bypass`) drops too.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

// --- Kernel ABI -------------------------------------------------------------------------------

/// `struct nlmsghdr`: len u32, type u16, flags u16, seq u32, pid u32 (host byte order).
const NLMSG_HDRLEN: usize = 16;
/// `struct nlattr`: len u16, type u16 (host byte order); payload padded to 4 bytes.
const NLA_HDRLEN: usize = 4;
/// `struct nfgenmsg`: family u8, version u8, res_id be16 (the queue number).
const NFGENMSG_LEN: usize = 4;

const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
/// The attribute type without `NLA_F_NESTED` / `NLA_F_NET_BYTEORDER`.
const NLA_TYPE_MASK: u16 = !(0x8000 | 0x4000);

const NFNETLINK_V0: u8 = 0;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQNL_MSG_VERDICT_BATCH: u16 = 3;

/// `struct nfqnl_msg_packet_hdr { __be32 packet_id; __be16 hw_protocol; __u8 hook; }`.
const NFQA_PACKET_HDR: u16 = 1;
/// `struct nfqnl_msg_verdict_hdr { __be32 verdict; __be32 id; }`.
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_PAYLOAD: u16 = 10;

/// `struct nfqnl_msg_config_cmd { __u8 command; __u8 _pad; __be16 pf; }`.
const NFQA_CFG_CMD: u16 = 1;
/// `struct nfqnl_msg_config_params { __be32 copy_range; __u8 copy_mode; } __packed`.
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;

const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_CFG_CMD_UNBIND: u8 = 2;
const NFQNL_COPY_PACKET: u8 = 2;
/// The kernel clamps a larger copy range to this (`NFQNL_MAX_COPY_RANGE`).
const MAX_COPY_RANGE: u32 = 0xffff;

const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;

/// `NETLINK_CAP_ACK` / `NETLINK_EXT_ACK` (`include/uapi/linux/netlink.h`), `SOL_NETLINK` options.
const NETLINK_NO_ENOBUFS: libc::c_int = 5;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;
/// The kernel-internal `ENOTSUPP`, which `nfqnl_recv_config` returns for an unknown command and
/// which leaks to user space as 524.
const ENOTSUPP: i32 = 524;

/// Size of a verdict message: header, nfgenmsg, one `NFQA_VERDICT_HDR` attribute of 8 bytes.
const VERDICT_MSG_LEN: usize = NLMSG_HDRLEN + NFGENMSG_LEN + NLA_HDRLEN + 8;

// --- Our choices ------------------------------------------------------------------------------

/// The one receive buffer, allocated at open and reused. A queued packet arrives as one netlink
/// datagram of at most `copy_range` (≤ 64 KiB) plus ~100 bytes of headers, so it always fits.
const RECV_BUF_LEN: usize = 256 << 10;
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

/// Errors of the queue shell, each naming the operation and the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot {op} NFQUEUE {queue}: {source}")]
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
    /// socket(2) refused by a sandbox or security policy.
    #[error(
        "cannot open a netlink socket for NFQUEUE {queue}: {source}; the sandbox must allow \
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
        "cannot bind NFQUEUE {queue}: the kernel has no NFQUEUE support ({source}); load it with \
         `modprobe nfnetlink_queue`"
    )]
    Unsupported {
        queue: u16,
        #[source]
        source: std::io::Error,
    },
}

/// One line of `/proc/net/netfilter/nfnetlink_queue` (`seq_show` in `nfnetlink_queue.c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    pub queue: u16,
    /// Netlink port id of the socket that holds the queue.
    pub portid: u32,
    /// Packets waiting for a verdict right now.
    pub queue_total: u32,
    /// 0 none, 1 meta, 2 packet.
    pub copy_mode: u8,
    pub copy_range: u32,
    /// Packets dropped because the queue was full (`max_len`).
    pub queue_dropped: u32,
    /// Packets dropped because they could not be sent to the socket (receive buffer full).
    pub user_dropped: u32,
    /// The last packet id handed out.
    pub id_sequence: u32,
}

/// The kernel's counters for queue `queue` in the calling thread's network namespace, or `None`
/// when the queue is not bound (or the file is unreadable).
pub fn kernel_stats(queue: u16) -> Option<QueueStats> {
    // /proc/net follows the thread group leader's namespace; /proc/thread-self/net follows this
    // thread's, which matters for a thread that entered another namespace with setns(2).
    [
        "/proc/thread-self/net/netfilter/nfnetlink_queue",
        "/proc/net/netfilter/nfnetlink_queue",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .and_then(|text| parse_stats(&text, queue))
}

fn parse_stats(text: &str, queue: u16) -> Option<QueueStats> {
    text.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let mut next = || f.next();
        let num: u16 = next()?.parse().ok()?;
        if num != queue {
            return None;
        }
        Some(QueueStats {
            queue: num,
            portid: next()?.parse().ok()?,
            queue_total: next()?.parse().ok()?,
            copy_mode: next()?.parse().ok()?,
            copy_range: next()?.parse().ok()?,
            queue_dropped: next()?.parse().ok()?,
            user_dropped: next()?.parse().ok()?,
            id_sequence: next()?.parse().ok()?,
        })
    })
}

/// A bound NFQUEUE.
pub struct Queue {
    fd: OwnedFd,
    num: u16,
    seq: u32,
    buf: Box<[u8]>,
    /// Highest packet id received and not yet covered by a batch verdict (wrap-aware).
    pending: Option<u32>,
    overruns: u64,
    verdict_errors: u64,
    last_verdict_errno: i32,
    malformed: u64,
    rcvbuf: usize,
    portid: u32,
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

        // SAFETY: plain socket(2); the descriptor is owned by `OwnedFd` right after.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                // No nfnetlink in this kernel.
                Some(libc::EPROTONOSUPPORT) => QueueError::Unsupported {
                    queue: num,
                    source: e,
                },
                // systemd's RestrictAddressFamilies= answers EAFNOSUPPORT; LSMs answer EACCES.
                Some(libc::EAFNOSUPPORT) | Some(libc::EACCES) | Some(libc::EPERM) => {
                    QueueError::Socket {
                        queue: num,
                        source: e,
                    }
                }
                _ => QueueError::Io {
                    op: "open a netlink socket for",
                    queue: num,
                    source: e,
                },
            });
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        // Overruns must be visible: ENOBUFS is how we learn that the kernel dropped packets
        // because the socket buffer was full (netlink_overrun() sets it unless NO_ENOBUFS).
        setsockopt_int(&fd, libc::SOL_NETLINK, NETLINK_NO_ENOBUFS, 0)
            .map_err(io_err("configure the socket (NETLINK_NO_ENOBUFS) for"))?;
        // Optional niceties; older kernels lack them. CAP_ACK keeps error messages short (no
        // copy of our request), EXT_ACK lets the kernel say why it refused.
        let _ = setsockopt_int(&fd, libc::SOL_NETLINK, NETLINK_CAP_ACK, 1);
        let _ = setsockopt_int(&fd, libc::SOL_NETLINK, NETLINK_EXT_ACK, 1);

        let want = i32::try_from(cfg.rcvbuf).unwrap_or(i32::MAX);
        // SO_RCVBUFFORCE ignores net.core.rmem_max but needs CAP_NET_ADMIN; without it fall back
        // to SO_RCVBUF, which the kernel silently caps at rmem_max.
        if setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, want).is_err() {
            setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, want)
                .map_err(io_err("set the receive buffer (SO_RCVBUF) of"))?;
        }
        let rcvbuf = getsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF)
            .map_err(io_err("read the receive buffer size of"))?;

        // Bind with port id 0: the kernel assigns a unique one, which we read back so an EPERM
        // can be told apart ("held by someone else" vs "no CAP_NET_ADMIN").
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let addr_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: `addr` is a valid sockaddr_nl of `addr_len` bytes.
        let rc = unsafe { libc::bind(fd.as_raw_fd(), std::ptr::addr_of!(addr).cast(), addr_len) };
        if rc != 0 {
            return Err(io_err("bind the netlink socket for")(
                io::Error::last_os_error(),
            ));
        }
        let mut len = addr_len;
        // SAFETY: `addr` has room for `len` bytes and `len` is updated by the kernel.
        let rc = unsafe {
            libc::getsockname(
                fd.as_raw_fd(),
                std::ptr::addr_of_mut!(addr).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io_err("read the netlink port id for")(
                io::Error::last_os_error(),
            ));
        }

        let mut q = Queue {
            fd,
            num,
            seq: 0,
            buf: vec![0u8; RECV_BUF_LEN].into_boxed_slice(),
            pending: None,
            overruns: 0,
            verdict_errors: 0,
            last_verdict_errno: 0,
            malformed: 0,
            rcvbuf: usize::try_from(rcvbuf).unwrap_or(0),
            portid: addr.nl_pid,
        };

        // Bind, copy mode, copy range and queue length in one message: `nfqnl_recv_config`
        // handles the command first, then the parameters, so the queue never exists for long in
        // the default meta-only mode. One bind serves IPv4 and IPv6: since Linux 3.8 the
        // PF_BIND/PF_UNBIND commands are no-ops. NFQA_CFG_F_FAIL_OPEN is deliberately not
        // sent: a fresh instance has no flags, so a full queue drops (fail-closed).
        q.seq = q.seq.wrapping_add(1);
        let seq = q.seq;
        let msg = config_msg(
            num,
            seq,
            NFQNL_CFG_CMD_BIND,
            Some((cfg.copy_range, cfg.max_len)),
        );
        q.send(&msg).map_err(io_err("send the bind request for"))?;
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
                Some(s) if s.portid != self.portid => QueueError::Busy {
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
        let deadline = Instant::now() + ACK_TIMEOUT;
        let mut early: Option<u32> = None;
        let mut result: Option<Result<(), AckError>> = None;
        while result.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(AckError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no acknowledgement from the kernel within 5 s",
                )));
            }
            let n = match recv_once(&self.fd, &mut self.buf) {
                Ok(n) => n,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => {
                        poll_in(&self.fd, left).map_err(AckError::Io)?;
                        continue;
                    }
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => {
                        self.overruns += 1;
                        continue;
                    }
                    _ => return Err(AckError::Io(e)),
                },
            };
            let data = self.buf.get(..n).unwrap_or(&self.buf[..]);
            for m in Messages::new(data) {
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
        }
        if let Some(id) = early {
            // Best effort: if this fails the packets are dropped when the socket closes.
            let _ = self.send_verdict(NFQNL_MSG_VERDICT_BATCH, id, NF_DROP);
        }
        result.unwrap_or(Ok(()))
    }

    /// The socket, for `poll(2)`.
    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
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
            let n = match recv_once(&self.fd, &mut self.buf) {
                Ok(n) => n,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => {
                        self.overruns += 1;
                        continue;
                    }
                    _ => {
                        return Err(QueueError::Io {
                            op: "receive from",
                            queue: self.num,
                            source: e,
                        })
                    }
                },
            };
            // A datagram longer than the buffer (MSG_TRUNC) cannot occur with copy_range ≤ 64 KiB;
            // if it did, the cut message fails its length check below.
            let data = self.buf.get(..n).unwrap_or(&self.buf[..]);
            for m in Messages::new(data) {
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
        self.portid
    }

    fn send_verdict(&mut self, msg_type: u16, id: u32, verdict: u32) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let msg = verdict_msg(msg_type, self.num, self.seq, verdict, id);
        self.send(&msg)
    }

    fn send(&self, msg: &[u8]) -> io::Result<()> {
        loop {
            // SAFETY: `msg` is a valid buffer of `msg.len()` bytes. The socket is unconnected,
            // so the destination is the kernel (port id 0).
            let rc = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
            if rc >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
    }
}

impl Drop for Queue {
    /// Unbind explicitly, then close. Closing alone would also do (the kernel destroys a
    /// socket's queues on `NETLINK_URELEASE`); either way packets still queued are dropped.
    fn drop(&mut self) {
        self.seq = self.seq.wrapping_add(1);
        let msg = config_msg(self.num, self.seq, NFQNL_CFG_CMD_UNBIND, None);
        let _ = self.send(&msg);
    }
}

enum AckError {
    Io(io::Error),
    Kernel(i32),
}

/// `a` is after `b` in the kernel's wrapping id sequence (`nfq_id_after`).
fn id_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

fn newest(current: Option<u32>, id: u32) -> u32 {
    match current {
        Some(c) if !id_after(id, c) => c,
        _ => id,
    }
}

fn setsockopt_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a c_int that lives for the call; the length matches.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::addr_of!(value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn getsockopt_int(fd: &OwnedFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` has room for `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::addr_of_mut!(value).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One non-blocking recv(2) into `buf`; returns the bytes available in `buf` (a longer datagram
/// is cut to the buffer).
fn recv_once(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let rc = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(rc).unwrap_or(0).min(buf.len()))
}

/// poll(2) for input, up to `timeout`.
fn poll_in(fd: &OwnedFd, timeout: Duration) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis())
        .unwrap_or(libc::c_int::MAX)
        .max(1);
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    Ok(())
}

// --- Message building -------------------------------------------------------------------------

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn nfq_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_QUEUE << 8) | msg
}

/// Write the netlink header and `struct nfgenmsg` into the first 20 bytes of `out`.
fn put_headers(out: &mut [u8], total: usize, msg: u16, flags: u16, seq: u32, queue: u16) {
    out[0..4].copy_from_slice(&(total as u32).to_ne_bytes());
    out[4..6].copy_from_slice(&nfq_type(msg).to_ne_bytes());
    out[6..8].copy_from_slice(&flags.to_ne_bytes());
    out[8..12].copy_from_slice(&seq.to_ne_bytes());
    out[12..16].copy_from_slice(&0u32.to_ne_bytes()); // port id 0: addressed to the kernel
    out[16] = libc::AF_UNSPEC as u8;
    out[17] = NFNETLINK_V0;
    out[18..20].copy_from_slice(&queue.to_be_bytes());
}

/// A verdict (`NFQNL_MSG_VERDICT`) or batch verdict (`NFQNL_MSG_VERDICT_BATCH`) message. Built on
/// the stack: the hot path allocates nothing. No `NLM_F_ACK`: the kernel reports failures anyway
/// (`netlink_rcv_skb` acks on error), and success needs no answer.
fn verdict_msg(msg: u16, queue: u16, seq: u32, verdict: u32, id: u32) -> [u8; VERDICT_MSG_LEN] {
    let mut out = [0u8; VERDICT_MSG_LEN];
    put_headers(&mut out, VERDICT_MSG_LEN, msg, NLM_F_REQUEST, seq, queue);
    let a = NLMSG_HDRLEN + NFGENMSG_LEN;
    out[a..a + 2].copy_from_slice(&((NLA_HDRLEN + 8) as u16).to_ne_bytes());
    out[a + 2..a + 4].copy_from_slice(&NFQA_VERDICT_HDR.to_ne_bytes());
    out[a + 4..a + 8].copy_from_slice(&verdict.to_be_bytes());
    out[a + 8..a + 12].copy_from_slice(&id.to_be_bytes());
    out
}

/// A config message with `command` and, for a bind, the copy parameters and queue length. Sent
/// with `NLM_F_ACK` so the bind's outcome is known.
fn config_msg(queue: u16, seq: u32, command: u8, params: Option<(u32, u32)>) -> Vec<u8> {
    let mut out = vec![0u8; NLMSG_HDRLEN + NFGENMSG_LEN];
    let attr = |out: &mut Vec<u8>, ty: u16, data: &[u8]| {
        out.extend_from_slice(&((NLA_HDRLEN + data.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&ty.to_ne_bytes());
        out.extend_from_slice(data);
        out.resize(align4(out.len()), 0);
    };
    // pf is ignored for BIND/UNBIND (one instance serves every family).
    attr(&mut out, NFQA_CFG_CMD, &[command, 0, 0, 0]);
    if let Some((copy_range, max_len)) = params {
        let mut p = [0u8; 5];
        p[0..4].copy_from_slice(&copy_range.min(MAX_COPY_RANGE).to_be_bytes());
        p[4] = NFQNL_COPY_PACKET;
        attr(&mut out, NFQA_CFG_PARAMS, &p);
        attr(&mut out, NFQA_CFG_QUEUE_MAXLEN, &max_len.to_be_bytes());
    }
    let total = out.len();
    put_headers(
        &mut out,
        total,
        NFQNL_MSG_CONFIG,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        queue,
    );
    out
}

// --- Message parsing --------------------------------------------------------------------------

/// One netlink message from the socket, as far as the queue shell cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message<'a> {
    /// `NFQNL_MSG_PACKET`: packet id and the copied IP packet (empty if the kernel sent none).
    Packet { id: u32, payload: &'a [u8] },
    /// `NLMSG_ERROR`: `errno` 0 is an acknowledgement, otherwise a positive errno.
    Error { seq: u32, errno: i32 },
    /// Anything else (`NLMSG_DONE`, `NLMSG_NOOP`, other nfnetlink messages).
    Other,
    /// A message that failed a length check (the rest of its datagram is skipped), or a packet
    /// message without a usable `NFQA_PACKET_HDR`.
    Malformed,
}

/// Iterator over the netlink messages of one received datagram.
struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    fn new(data: &'a [u8]) -> Messages<'a> {
        Messages { rest: data }
    }
}

fn ne_u16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes([s[0], s[1]]))
}

fn ne_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

impl<'a> Iterator for Messages<'a> {
    type Item = Message<'a>;

    fn next(&mut self) -> Option<Message<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = self.rest;
        let len = ne_u32(rest, 0).map(|l| l as usize);
        let (Some(len), Some(ty), Some(seq)) = (len, ne_u16(rest, 4), ne_u32(rest, 8)) else {
            self.rest = &[];
            return Some(Message::Malformed);
        };
        let Some(body) = rest.get(NLMSG_HDRLEN..len).filter(|_| len >= NLMSG_HDRLEN) else {
            self.rest = &[];
            return Some(Message::Malformed);
        };
        // The last message of a datagram need not be padded.
        self.rest = rest.get(align4(len)..).unwrap_or(&[]);
        Some(match ty {
            NLMSG_ERROR => match ne_u32(body, 0) {
                // `struct nlmsgerr { int error; struct nlmsghdr msg; }`, error ≤ 0.
                Some(e) => Message::Error {
                    seq,
                    errno: (e as i32).wrapping_neg(),
                },
                None => Message::Malformed,
            },
            t if t == nfq_type(NFQNL_MSG_PACKET) => parse_packet(body),
            _ => Message::Other,
        })
    }
}

/// The body of an `NFQNL_MSG_PACKET`: `struct nfgenmsg`, then attributes.
fn parse_packet(body: &[u8]) -> Message<'_> {
    let mut id = None;
    let mut payload: &[u8] = &[];
    for (ty, data) in Attrs::new(body.get(NFGENMSG_LEN..).unwrap_or(&[])) {
        match ty {
            NFQA_PACKET_HDR => id = be_u32(data, 0),
            NFQA_PAYLOAD => payload = data,
            _ => {}
        }
    }
    match id {
        Some(id) => Message::Packet { id, payload },
        None => Message::Malformed,
    }
}

/// Iterator over netlink attributes; stops at the first one whose length does not fit.
struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Attrs<'a> {
    fn new(data: &'a [u8]) -> Attrs<'a> {
        Attrs { rest: data }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<(u16, &'a [u8])> {
        let rest = self.rest;
        let len = usize::from(ne_u16(rest, 0)?);
        let ty = ne_u16(rest, 2)? & NLA_TYPE_MASK;
        let data = rest.get(NLA_HDRLEN..len).filter(|_| len >= NLA_HDRLEN);
        let Some(data) = data else {
            self.rest = &[];
            return None;
        };
        self.rest = rest.get(align4(len)..).unwrap_or(&[]);
        Some((ty, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // --- Hand-built kernel messages (written from the UAPI headers, not from our builders) ---

    fn nlmsg(ty: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(body);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn attr(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(data);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    /// What the kernel sends for a queued IPv4 packet: nfgenmsg, PACKET_HDR, MARK, IFINDEX_INDEV,
    /// PAYLOAD (the order of `nfqnl_build_packet_message`, with the attributes we skip).
    fn packet(id: u32, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![2, 0, 0, 3]; // AF_INET, NFNETLINK_V0, queue 3
        let mut hdr = id.to_be_bytes().to_vec();
        hdr.extend_from_slice(&0x0800u16.to_be_bytes());
        hdr.push(1); // NF_INET_LOCAL_IN
        body.extend(attr(1, &hdr));
        body.extend(attr(3 | 0x4000, &7u32.to_be_bytes())); // NFQA_MARK, net byte order flag
        body.extend(attr(5, &1u32.to_be_bytes()));
        body.extend(attr(10, payload));
        nlmsg(0x0300, 0, &body)
    }

    fn error(seq: u32, errno: i32) -> Vec<u8> {
        let mut body = (-errno).to_ne_bytes().to_vec();
        body.extend_from_slice(&[0u8; 16]); // the request's header (NETLINK_CAP_ACK: no payload)
        nlmsg(2, seq, &body)
    }

    fn parse_all(b: &[u8]) -> Vec<Message<'_>> {
        Messages::new(b).collect()
    }

    #[test]
    fn several_messages_in_one_datagram() {
        let mut buf = packet(7, b"abc");
        buf.extend(error(5, 0));
        buf.extend(error(6, libc::ENOENT));
        buf.extend(nlmsg(3, 9, &[0, 0, 0, 0])); // NLMSG_DONE
        buf.extend(packet(8, &[1, 2, 3, 4, 5]));
        assert_eq!(
            parse_all(&buf),
            vec![
                Message::Packet {
                    id: 7,
                    payload: b"abc"
                },
                Message::Error { seq: 5, errno: 0 },
                Message::Error {
                    seq: 6,
                    errno: libc::ENOENT
                },
                Message::Other,
                Message::Packet {
                    id: 8,
                    payload: &[1, 2, 3, 4, 5]
                },
            ]
        );
    }

    #[test]
    fn last_message_need_not_be_padded() {
        let mut buf = packet(1, b"x");
        // Shrink nlmsg_len to the unpadded size and cut the padding off.
        let unpadded = buf.len() - 3;
        buf.truncate(unpadded);
        buf[0..4].copy_from_slice(&(unpadded as u32).to_ne_bytes());
        assert_eq!(
            parse_all(&buf),
            vec![Message::Packet {
                id: 1,
                payload: b"x"
            }]
        );
    }

    #[test]
    fn attribute_longer_than_its_message_is_not_read() {
        let mut body = vec![2, 0, 0, 3];
        body.extend(attr(1, &[0, 0, 0, 9, 8, 0, 1]));
        // NFQA_PAYLOAD claiming 200 bytes with 4 present.
        body.extend_from_slice(&204u16.to_ne_bytes());
        body.extend_from_slice(&10u16.to_ne_bytes());
        body.extend_from_slice(&[0x45, 0, 0, 0]);
        assert_eq!(
            parse_all(&nlmsg(0x0300, 0, &body)),
            vec![Message::Packet {
                id: 9,
                payload: &[]
            }]
        );

        // Packet header cut to 2 bytes: no id, nothing to give a verdict for.
        let mut body = vec![2, 0, 0, 3];
        body.extend(attr(1, &[0, 0]));
        assert_eq!(
            parse_all(&nlmsg(0x0300, 0, &body)),
            vec![Message::Malformed]
        );

        // Attribute length below its own header.
        let mut body = vec![2, 0, 0, 3];
        body.extend_from_slice(&[2, 0, 1, 0, 0, 0, 0, 1]);
        assert_eq!(
            parse_all(&nlmsg(0x0300, 0, &body)),
            vec![Message::Malformed]
        );

        // No nfgenmsg at all.
        assert_eq!(
            parse_all(&nlmsg(0x0300, 0, &[2, 0])),
            vec![Message::Malformed]
        );
    }

    #[test]
    fn bogus_message_lengths_end_the_datagram() {
        let good = packet(1, b"ok");
        for bogus in [0u32, 1, 15, 10_000, u32::MAX] {
            let mut buf = good.clone();
            let mut bad = packet(2, b"bad");
            bad[0..4].copy_from_slice(&bogus.to_ne_bytes());
            buf.extend(&bad);
            buf.extend(packet(3, b"never reached"));
            assert_eq!(
                parse_all(&buf),
                vec![
                    Message::Packet {
                        id: 1,
                        payload: b"ok"
                    },
                    Message::Malformed
                ],
                "nlmsg_len {bogus}"
            );
        }
        // A header cut short, and an error message without its error code.
        assert_eq!(parse_all(&good[..10]), vec![Message::Malformed]);
        assert_eq!(parse_all(&nlmsg(2, 1, &[])), vec![Message::Malformed]);
    }

    #[test]
    fn every_prefix_parses_without_panic() {
        let mut buf = packet(7, &[0x45; 61]);
        buf.extend(error(5, libc::EPERM));
        buf.extend(packet(8, &[0x60; 48]));
        for cut in 0..=buf.len() {
            let msgs = parse_all(&buf[..cut]);
            assert!(msgs.len() <= 3, "cut {cut}");
        }
        // Every single-byte corruption, too.
        for at in 0..buf.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut b = buf.clone();
                b[at] = v;
                let _ = parse_all(&b);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let n = parse_all(&b).len();
            proptest::prop_assert!(n <= b.len() / 16 + 1);
        }
    }

    #[test]
    fn batch_verdict_message_bytes() {
        let m = verdict_msg(NFQNL_MSG_VERDICT_BATCH, 3, 42, NF_DROP, 0x0102_0304);
        let mut want = Vec::new();
        want.extend_from_slice(&32u32.to_ne_bytes()); // nlmsg_len
        want.extend_from_slice(&0x0303u16.to_ne_bytes()); // NFNL_SUBSYS_QUEUE << 8 | VERDICT_BATCH
        want.extend_from_slice(&1u16.to_ne_bytes()); // NLM_F_REQUEST
        want.extend_from_slice(&42u32.to_ne_bytes()); // seq
        want.extend_from_slice(&0u32.to_ne_bytes()); // to the kernel
        want.extend_from_slice(&[0, 0, 0, 3]); // AF_UNSPEC, v0, queue 3 big-endian
        want.extend_from_slice(&12u16.to_ne_bytes()); // nla_len
        want.extend_from_slice(&2u16.to_ne_bytes()); // NFQA_VERDICT_HDR
        want.extend_from_slice(&[0, 0, 0, 0]); // NF_DROP big-endian
        want.extend_from_slice(&[1, 2, 3, 4]); // id big-endian
        assert_eq!(m.to_vec(), want);

        let single = verdict_msg(NFQNL_MSG_VERDICT, 0x1234, 1, NF_ACCEPT, 9);
        assert_eq!(ne_u16(&single, 4), Some(0x0301));
        assert_eq!(&single[18..20], &[0x12, 0x34]);
        assert_eq!(&single[24..32], &[0, 0, 0, 1, 0, 0, 0, 9]);
    }

    #[test]
    fn bind_message_bytes() {
        let m = config_msg(5, 1, NFQNL_CFG_CMD_BIND, Some((1600, 4096)));
        assert_eq!(ne_u32(&m, 0), Some(m.len() as u32));
        assert_eq!(ne_u16(&m, 4), Some(0x0302)); // NFQNL_MSG_CONFIG
        assert_eq!(ne_u16(&m, 6), Some(NLM_F_REQUEST | NLM_F_ACK));
        assert_eq!(&m[16..20], &[0, 0, 0, 5]);
        let attrs: Vec<(u16, Vec<u8>)> =
            Attrs::new(&m[20..]).map(|(t, d)| (t, d.to_vec())).collect();
        assert_eq!(
            attrs,
            vec![
                (NFQA_CFG_CMD, vec![1, 0, 0, 0]),
                (NFQA_CFG_PARAMS, vec![0, 0, 0x06, 0x40, 2]), // 1600, NFQNL_COPY_PACKET
                (NFQA_CFG_QUEUE_MAXLEN, vec![0, 0, 0x10, 0]),
            ]
        );
        // Nothing that could switch on fail-open.
        assert!(attrs.iter().all(|(t, _)| *t != 4 && *t != 5));
        // The 5-byte params attribute is padded, so the message stays 4-aligned.
        assert_eq!(m.len() % 4, 0);
        // Copy range clamped to the kernel's maximum.
        let big = config_msg(5, 1, NFQNL_CFG_CMD_BIND, Some((1 << 20, 1)));
        assert!(big.windows(4).any(|w| w == [0, 0, 0xff, 0xff]));

        let unbind = config_msg(5, 2, NFQNL_CFG_CMD_UNBIND, None);
        assert_eq!(unbind.len(), 28);
        let attrs: Vec<(u16, &[u8])> = Attrs::new(&unbind[20..]).collect();
        assert_eq!(attrs, vec![(NFQA_CFG_CMD, &[2u8, 0, 0, 0][..])]);
    }

    #[test]
    fn proc_stats_line() {
        // Format of seq_show(): "%5u %6u %5u %1u %5u %5u %5u %8u %2d".
        let text = "    0 2154742     0 2  1600     0     0        4  1\n    \
                    3   4711    12 2 65535     5     6    10000  1\n";
        assert_eq!(
            parse_stats(text, 3),
            Some(QueueStats {
                queue: 3,
                portid: 4711,
                queue_total: 12,
                copy_mode: 2,
                copy_range: 65535,
                queue_dropped: 5,
                user_dropped: 6,
                id_sequence: 10000,
            })
        );
        assert_eq!(parse_stats(text, 0).map(|s| s.portid), Some(2154742));
        assert_eq!(parse_stats(text, 1), None);
        assert_eq!(parse_stats("    3 garbage", 3), None);
        assert_eq!(parse_stats("", 3), None);
    }

    #[test]
    fn ids_compare_across_wraparound() {
        assert!(id_after(5, 4));
        assert!(!id_after(4, 5));
        assert!(!id_after(4, 4));
        assert!(id_after(2, u32::MAX - 1));
        assert_eq!(newest(None, 9), 9);
        assert_eq!(newest(Some(u32::MAX), 1), 1);
        assert_eq!(newest(Some(10), 3), 10);
    }

    #[test]
    fn errors_say_what_to_do() {
        let busy = QueueError::Busy {
            queue: 3,
            portid: 99,
        }
        .to_string();
        assert!(
            busy.contains("NFQUEUE 3") && busy.contains("another process holds it"),
            "{busy}"
        );
        let perm = QueueError::Permission { queue: 3 }.to_string();
        assert!(perm.contains("CAP_NET_ADMIN"), "{perm}");
    }

    // --- Real kernel, inside private network namespaces (root only) ---

    mod kernel {
        use super::super::*;
        use std::net::{IpAddr, SocketAddr, UdpSocket};
        use std::process::Command;
        use std::sync::atomic::{AtomicU32, Ordering};

        const PORT: u16 = 62201;

        /// A private network namespace with loopback up, deleted on drop (also on failure).
        struct NetNs {
            name: String,
        }

        fn is_root() -> bool {
            // SAFETY: geteuid has no preconditions.
            unsafe { libc::geteuid() == 0 }
        }

        impl NetNs {
            /// `None` (test skipped) without root or without `ip`.
            fn new() -> Option<NetNs> {
                static N: AtomicU32 = AtomicU32::new(0);
                if !is_root() {
                    eprintln!("skipped: needs root (network namespaces)");
                    return None;
                }
                let name = format!(
                    "nfk-queue-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                );
                let ok = Command::new("ip")
                    .args(["netns", "add", &name])
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    eprintln!("skipped: `ip netns add` failed");
                    return None;
                }
                let ns = NetNs { name };
                ns.run(&["ip", "link", "set", "lo", "up"]);
                Some(ns)
            }

            fn run(&self, cmd: &[&str]) {
                let out = Command::new("ip")
                    .args(["netns", "exec", &self.name])
                    .args(cmd)
                    .output()
                    .expect("run ip netns exec");
                assert!(
                    out.status.success(),
                    "{cmd:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }

            /// Queue UDP to PORT (IPv4 and IPv6) to queue `num` with the xt NFQUEUE target (this
            /// kernel has no nft_queue).
            fn queue_udp(&self, num: u16) {
                let num = num.to_string();
                for tool in ["iptables-nft", "ip6tables-nft"] {
                    self.run(&[
                        tool,
                        "-A",
                        "INPUT",
                        "-p",
                        "udp",
                        "--dport",
                        "62201",
                        "-j",
                        "NFQUEUE",
                        "--queue-num",
                        &num,
                    ]);
                }
            }

            /// Run `f` on a thread that has entered the namespace.
            fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
                std::thread::scope(|s| {
                    s.spawn(|| {
                        self.enter();
                        f()
                    })
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
                })
            }

            fn enter(&self) {
                let f =
                    std::fs::File::open(format!("/run/netns/{}", self.name)).expect("open netns");
                // SAFETY: a valid namespace fd; setns only affects the calling thread.
                let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
            }
        }

        impl Drop for NetNs {
            fn drop(&mut self) {
                let _ = Command::new("ip")
                    .args(["netns", "del", &self.name])
                    .status();
            }
        }

        /// Wait up to `within` for at least `want` packets; copies them (test only).
        fn collect(q: &mut Queue, want: usize, within: Duration) -> Vec<(u32, Vec<u8>)> {
            let deadline = Instant::now() + within;
            let mut got = Vec::new();
            while got.len() < want && Instant::now() < deadline {
                let n = q
                    .recv_batch(64, &mut |id, p| got.push((id, p.to_vec())))
                    .expect("recv_batch");
                if n == 0 {
                    let mut pfd = libc::pollfd {
                        fd: q.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, 50) };
                }
            }
            got
        }

        fn assert_nothing_delivered(listener: &UdpSocket) {
            let mut b = [0u8; 256];
            match listener.recv_from(&mut b) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => panic!("a dropped packet reached the socket: {other:?}"),
            }
        }

        #[test]
        fn receives_ipv4_and_ipv6_and_drops_them() {
            let Some(ns) = NetNs::new() else { return };
            ns.queue_udp(3);
            ns.within(|| {
                let l4 = UdpSocket::bind(("127.0.0.1", PORT)).unwrap();
                let l6 = UdpSocket::bind(("::1", PORT)).unwrap();
                l4.set_nonblocking(true).unwrap();
                l6.set_nonblocking(true).unwrap();
                let mut q = Queue::open(QueueConfig {
                    num: 3,
                    ..QueueConfig::default()
                })
                .unwrap();

                let s4 = UdpSocket::bind("127.0.0.1:0").unwrap();
                let s6 = UdpSocket::bind("[::1]:0").unwrap();
                s4.send_to(b"knock over IPv4", ("127.0.0.1", PORT)).unwrap();
                s6.send_to(b"knock over IPv6, a bit longer", ("::1", PORT))
                    .unwrap();

                let got = collect(&mut q, 2, Duration::from_secs(3));
                assert_eq!(got.len(), 2, "both knocks queued");
                for (_, pkt) in &got {
                    let d = crate::wire::ip::parse(pkt).expect("a UDP datagram");
                    let from: SocketAddr = match d.src {
                        IpAddr::V4(_) => s4.local_addr().unwrap(),
                        IpAddr::V6(_) => s6.local_addr().unwrap(),
                    };
                    assert_eq!(SocketAddr::new(d.src, d.src_port), from);
                    assert_eq!(d.dst, from.ip());
                    assert_eq!(d.dst_port, PORT);
                    let want: &[u8] = if d.src.is_ipv4() {
                        b"knock over IPv4"
                    } else {
                        b"knock over IPv6, a bit longer"
                    };
                    assert_eq!(d.payload, want);
                }
                let newest_id = got.iter().map(|(id, _)| *id).max().unwrap();
                q.drop_upto(newest_id).unwrap();
                assert!(!q.drop_pending().unwrap(), "drop_upto covered both");

                std::thread::sleep(Duration::from_millis(100));
                assert_nothing_delivered(&l4);
                assert_nothing_delivered(&l6);
                let st = kernel_stats(3).expect("queue listed in /proc");
                assert_eq!(
                    (st.portid, st.queue_total, st.copy_mode, st.copy_range),
                    (q.portid(), 0, 2, 1600)
                );

                // Control: the same path with ACCEPT does deliver, so the silence above is the drop.
                s4.send_to(b"let this one in", ("127.0.0.1", PORT)).unwrap();
                let got = collect(&mut q, 1, Duration::from_secs(3));
                assert_eq!(got.len(), 1);
                q.verdict(got[0].0, true).unwrap();
                l4.set_nonblocking(false).unwrap();
                l4.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                let mut b = [0u8; 64];
                let (n, _) = l4.recv_from(&mut b).unwrap();
                assert_eq!(&b[..n], b"let this one in");

                // Any kernel complaint about our verdicts would show up on the next receive.
                assert_eq!(q.recv_batch(16, &mut |_, _| {}).unwrap(), 0);
                assert_eq!(q.verdict_errors(), 0, "{:?}", q.last_verdict_error());
                assert_eq!((q.overruns(), q.malformed()), (0, 0));
            });
        }

        #[test]
        fn poll_returns_without_packets_and_queue_is_exclusive() {
            let Some(ns) = NetNs::new() else { return };
            ns.within(|| {
                let mut q = Queue::open(QueueConfig {
                    num: 4,
                    ..QueueConfig::default()
                })
                .unwrap();
                let mut pfd = libc::pollfd {
                    fd: q.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                let t = Instant::now();
                // SAFETY: one valid pollfd.
                let rc = unsafe { libc::poll(&mut pfd, 1, 200) };
                let waited = t.elapsed();
                assert_eq!(rc, 0);
                assert!(waited < Duration::from_secs(1), "poll took {waited:?}");
                let t = Instant::now();
                assert_eq!(
                    q.recv_batch(64, &mut |_, _| panic!("no packet expected"))
                        .unwrap(),
                    0
                );
                assert!(
                    t.elapsed() < Duration::from_millis(100),
                    "recv_batch must not block"
                );

                // A verdict for an id that is not queued: the kernel's error message is counted.
                q.verdict(999, false).unwrap();
                assert_eq!(
                    q.recv_batch(64, &mut |_, _| panic!("no packet expected"))
                        .unwrap(),
                    0
                );
                assert_eq!(q.verdict_errors(), 1);
                assert_eq!(
                    q.last_verdict_error().and_then(|e| e.raw_os_error()),
                    Some(libc::ENOENT)
                );

                match Queue::open(QueueConfig {
                    num: 4,
                    ..QueueConfig::default()
                }) {
                    Err(QueueError::Busy { queue: 4, portid }) => assert_eq!(portid, q.portid()),
                    Err(e) => panic!("want Busy, got {e}"),
                    Ok(_) => panic!("a second bind of the same queue succeeded"),
                }
                drop(q);
                assert_eq!(kernel_stats(4), None, "Drop unbinds");
                let again = Queue::open(QueueConfig {
                    num: 4,
                    ..QueueConfig::default()
                })
                .unwrap();
                assert_eq!(kernel_stats(4).map(|s| s.portid), Some(again.portid()));
            });
        }

        /// Without CAP_NET_ADMIN the bind is refused, and the error says which capability.
        #[test]
        fn bind_without_cap_net_admin_says_so() {
            let Some(ns) = NetNs::new() else { return };
            ns.within(|| {
                // Capabilities are per thread: only this (scoped, short-lived) thread loses it.
                caps::drop(
                    None,
                    caps::CapSet::Effective,
                    caps::Capability::CAP_NET_ADMIN,
                )
                .unwrap();
                match Queue::open(QueueConfig {
                    num: 8,
                    ..QueueConfig::default()
                }) {
                    Err(e @ QueueError::Permission { queue: 8 }) => {
                        assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}")
                    }
                    Err(e) => panic!("want Permission, got {e}"),
                    Ok(_) => panic!("bound without CAP_NET_ADMIN"),
                }
            });
        }

        fn send_burst(n: usize, payload: &[u8]) {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            for _ in 0..n {
                s.send_to(payload, ("127.0.0.1", PORT)).unwrap();
            }
        }

        /// Drain everything that arrives until `idle` passes without a packet. Returns the
        /// count and the time from the first packet to the last verdict.
        fn drain(q: &mut Queue, idle: Duration, stop_at: usize) -> (usize, Duration) {
            let mut total = 0usize;
            let mut first: Option<Instant> = None;
            let mut last = Instant::now();
            let mut quiet_since = Instant::now();
            loop {
                let n = q
                    .recv_batch(512, &mut |_, p| debug_assert!(!p.is_empty()))
                    .unwrap();
                if n > 0 {
                    first.get_or_insert_with(Instant::now);
                    total += n;
                    q.drop_pending().unwrap();
                    last = Instant::now();
                    quiet_since = last;
                    if total >= stop_at {
                        break;
                    }
                    continue;
                }
                if quiet_since.elapsed() > idle {
                    break;
                }
                let mut pfd = libc::pollfd {
                    fd: q.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, 20) };
            }
            (total, first.map(|f| last - f).unwrap_or_default())
        }

        const BURST: usize = 10_000;

        /// Receive+verdict rate with the queue preloaded, so the sender's speed does not count.
        #[test]
        fn burst_preloaded_rate() {
            let Some(ns) = NetNs::new() else { return };
            ns.queue_udp(5);
            ns.within(|| {
                let cfg = QueueConfig { num: 5, max_len: 2 * BURST as u32, rcvbuf: 64 << 20, copy_range: 1600 };
                let mut q = Queue::open(cfg).unwrap();
                send_burst(BURST, &[0xa5; 64]);
                // Loopback delivery runs in softirq; wait until the queue stops growing.
                let mut queued = 0;
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                    let now = kernel_stats(5).map_or(0, |s| s.queue_total);
                    if now == queued && now > 0 {
                        break;
                    }
                    queued = now;
                }
                let (got, took) = drain(&mut q, Duration::from_millis(500), queued as usize);
                let st = kernel_stats(5).unwrap();
                let rate = got as f64 / took.as_secs_f64().max(1e-9);
                eprintln!(
                    "preloaded burst: sent {BURST}, queued {queued}, received+dropped {got} in {took:?} \
                     = {rate:.0} packets/s; overruns {}, kernel queue_dropped {}, user_dropped {}, rcvbuf {}",
                    q.overruns(),
                    st.queue_dropped,
                    st.user_dropped,
                    q.rcvbuf()
                );
                assert_eq!(got, queued as usize);
                assert_eq!(got + st.queue_dropped as usize + st.user_dropped as usize, BURST);
                assert_eq!(st.queue_total, 0, "every packet got its verdict");
            });
        }

        /// A tiny socket buffer and nobody reading: the kernel drops (fail-closed), and the
        /// overrun is visible to us as ENOBUFS rather than silently swallowed.
        #[test]
        fn overrun_is_counted_and_fails_closed() {
            let Some(ns) = NetNs::new() else { return };
            ns.queue_udp(7);
            ns.within(|| {
                let l4 = UdpSocket::bind(("127.0.0.1", PORT)).unwrap();
                l4.set_nonblocking(true).unwrap();
                // The kernel raises this to its minimum (a few KiB).
                let cfg = QueueConfig {
                    num: 7,
                    max_len: 10_000,
                    rcvbuf: 1,
                    copy_range: 1600,
                };
                let mut q = Queue::open(cfg).unwrap();
                send_burst(1000, &[0x11; 64]);
                std::thread::sleep(Duration::from_millis(100));
                let (got, _) = drain(&mut q, Duration::from_millis(300), usize::MAX);
                let st = kernel_stats(7).unwrap();
                eprintln!(
                    "overrun: rcvbuf {}, received {got}, overruns {}, kernel user_dropped {}",
                    q.rcvbuf(),
                    q.overruns(),
                    st.user_dropped
                );
                assert!(st.user_dropped > 0, "a tiny buffer must overflow");
                assert!(q.overruns() >= 1, "ENOBUFS must reach us");
                assert_eq!(
                    got + st.user_dropped as usize + st.queue_dropped as usize,
                    1000
                );
                assert_nothing_delivered(&l4);
            });
        }

        /// Sender and receiver at the same time, with the default queue settings.
        #[test]
        fn burst_concurrent_with_defaults() {
            let Some(ns) = NetNs::new() else { return };
            ns.queue_udp(6);
            ns.within(|| {
                let mut q = Queue::open(QueueConfig { num: 6, ..QueueConfig::default() }).unwrap();
                let (got, took) = std::thread::scope(|s| {
                    s.spawn(|| {
                        ns.enter();
                        send_burst(BURST, &[0x5a; 64]);
                    });
                    drain(&mut q, Duration::from_millis(500), BURST)
                });
                let st = kernel_stats(6).unwrap();
                let rate = got as f64 / took.as_secs_f64().max(1e-9);
                eprintln!(
                    "concurrent burst: sent {BURST}, received+dropped {got} in {took:?} = {rate:.0} packets/s; \
                     overruns {}, kernel queue_dropped {}, user_dropped {}, rcvbuf {}",
                    q.overruns(),
                    st.queue_dropped,
                    st.user_dropped,
                    q.rcvbuf()
                );
                // Every packet is accounted for: received by us or counted as dropped by the kernel.
                assert_eq!(got + st.queue_dropped as usize + st.user_dropped as usize, BURST);
                assert_eq!(st.queue_total, 0);
                assert!(got >= BURST / 2, "most of the burst should get through, got {got}");
            });
        }
    }
}
