//! The one `NETLINK_NETFILTER` socket type: open and bind, socket options, send, receive
//! without blocking (with `ENOBUFS` reported, not swallowed), wait for an answer with a
//! deadline, request/dump, and a kernel-side filter on the sender. Does I/O; decides nothing.
//!
//! Every socket is non-blocking: the daemon polls the queue, the event watcher and its control
//! pipe together, and a wait for the kernel's answer is a `poll(2)` with a deadline, so a reply
//! that never comes cannot hang the daemon.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::attr::{messages, nlmsgerr, Msg};
use super::msg::{NLMSG_DONE, NLMSG_ERROR};

/// Which step of [`NlSocket::open`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenStep {
    /// `socket(2)`: no nfnetlink in the kernel, or refused by a sandbox or security policy.
    Socket,
    /// `bind(2)`, e.g. to a multicast group.
    Bind,
    /// `getsockname(2)`, to learn the port id.
    PortId,
}

/// [`NlSocket::open`] failed at `step`; the OS error is the source, not repeated in the message.
#[derive(Debug, thiserror::Error)]
#[error("cannot {} a netlink socket", match .step {
    OpenStep::Socket => "open",
    OpenStep::Bind => "bind",
    OpenStep::PortId => "read the port id of",
})]
pub struct OpenError {
    pub step: OpenStep,
    #[source]
    pub source: io::Error,
}

/// What one receive brought.
#[derive(Debug)]
pub enum Recv<'b> {
    /// One datagram (cut to the buffer, should it ever be longer).
    Datagram(&'b [u8]),
    /// `ENOBUFS`: the kernel dropped messages for this socket because its receive buffer was
    /// full (`netlink_overrun`). Events or queued packets were lost; nothing else is wrong.
    Overrun,
}

/// A bound `NETLINK_NETFILTER` socket (non-blocking, close-on-exec).
#[derive(Debug)]
pub struct NlSocket {
    fd: OwnedFd,
    portid: u32,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl NlSocket {
    /// Open and bind, subscribed to `groups` (a bitmask of `1 << (group - 1)`, 0 for none). The
    /// kernel assigns the port id. Acks carry only the header of a failed request
    /// (`NETLINK_CAP_ACK`: a refused batch of 1000 elements is not echoed back whole) and may say
    /// why (`NETLINK_EXT_ACK`); both best effort, older kernels lack them.
    pub fn open(groups: u32) -> Result<NlSocket, OpenError> {
        let fail = |step| move |source| OpenError { step, source };
        // SAFETY: plain socket(2); the descriptor is owned right away.
        let raw = cvt(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_NETFILTER,
            )
        })
        .map_err(fail(OpenStep::Socket))?;
        // SAFETY: `raw` is a fresh, valid descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = groups;
        let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: `addr` is a valid sockaddr_nl of `len` bytes.
        cvt(unsafe { libc::bind(fd.as_raw_fd(), std::ptr::addr_of!(addr).cast(), len) })
            .map_err(fail(OpenStep::Bind))?;
        let mut got_len = len;
        // SAFETY: `addr` has room for `got_len` bytes, which the kernel updates.
        cvt(unsafe {
            libc::getsockname(
                fd.as_raw_fd(),
                std::ptr::addr_of_mut!(addr).cast(),
                &mut got_len,
            )
        })
        .map_err(fail(OpenStep::PortId))?;
        let sock = NlSocket {
            fd,
            portid: addr.nl_pid,
        };
        let _ = sock.setsockopt_int(libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1);
        let _ = sock.setsockopt_int(libc::SOL_NETLINK, libc::NETLINK_EXT_ACK, 1);
        Ok(sock)
    }

    /// The port id the kernel assigned; messages caused by this socket carry it.
    pub fn portid(&self) -> u32 {
        self.portid
    }

    pub fn setsockopt_int(
        &self,
        level: libc::c_int,
        name: libc::c_int,
        value: libc::c_int,
    ) -> io::Result<()> {
        // SAFETY: `value` is a c_int that lives for the call; the length matches.
        cvt(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                std::ptr::addr_of!(value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })
        .map(|_| ())
    }

    pub fn getsockopt_int(&self, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` has room for `len` bytes.
        cvt(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                std::ptr::addr_of_mut!(value).cast(),
                &mut len,
            )
        })
        .map(|_| value)
    }

    /// Ask for a receive buffer of `bytes`: `SO_RCVBUFFORCE` ignores `net.core.rmem_max` but
    /// needs CAP_NET_ADMIN; without it, `SO_RCVBUF`, which the kernel silently caps. The error is
    /// that of `SO_RCVBUF`.
    pub fn set_rcvbuf(&self, bytes: usize) -> io::Result<()> {
        self.set_buf(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, bytes)
    }

    /// [`NlSocket::set_rcvbuf`] for the send buffer (a large batch is one datagram).
    pub fn set_sndbuf(&self, bytes: usize) -> io::Result<()> {
        self.set_buf(libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, bytes)
    }

    fn set_buf(&self, force: libc::c_int, plain: libc::c_int, bytes: usize) -> io::Result<()> {
        let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        if self.setsockopt_int(libc::SOL_SOCKET, force, want).is_ok() {
            return Ok(());
        }
        self.setsockopt_int(libc::SOL_SOCKET, plain, want)
    }

    /// The receive buffer the kernel granted, bytes (it doubles the requested value for its
    /// bookkeeping).
    pub fn rcvbuf(&self) -> io::Result<usize> {
        self.getsockopt_int(libc::SOL_SOCKET, libc::SO_RCVBUF)
            .map(|v| usize::try_from(v).unwrap_or(0))
    }

    /// Drop, in the kernel, every datagram whose first message comes from one of the port ids
    /// `senders` (see [`sender_filter`]); replaces any earlier filter.
    pub fn ignore_senders(&self, senders: &[u32]) -> io::Result<()> {
        let prog = sender_filter(senders);
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut _,
        };
        // SAFETY: fprog points at `prog`, which outlives the call; the kernel copies it.
        cvt(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                std::ptr::addr_of!(fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        })
        .map(|_| ())
    }

    /// Send one buffer (a request, or a whole batch) to the kernel.
    pub fn send(&self, buf: &[u8]) -> io::Result<()> {
        loop {
            // SAFETY: `buf` is valid for `buf.len()` bytes. The socket is unconnected, so the
            // destination is the kernel (port id 0).
            let rc = unsafe { libc::send(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
            if rc >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Receive one datagram into `buf` without blocking; `None` when nothing is waiting.
    pub fn try_recv<'b>(&self, buf: &'b mut [u8]) -> io::Result<Option<Recv<'b>>> {
        loop {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
            let rc = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if rc >= 0 {
                let n = usize::try_from(rc).unwrap_or(0).min(buf.len());
                return Ok(Some(Recv::Datagram(buf.get(..n).unwrap_or(&[]))));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(None),
                Some(libc::EINTR) => continue,
                Some(libc::ENOBUFS) => return Ok(Some(Recv::Overrun)),
                _ => return Err(e),
            }
        }
    }

    /// Wait up to `timeout` for the socket to become readable (`EINTR` counts as a wake-up).
    pub fn poll_in(&self, timeout: Duration) -> io::Result<()> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis())
            .unwrap_or(libc::c_int::MAX)
            .max(1);
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, ms) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Receive datagrams, handing each to `each`, until it returns `Some` (its answer is
    /// returned) or `timeout` passes (`TimedOut`). The deadline holds even while unrelated
    /// messages keep arriving.
    pub fn recv_until<T>(
        &self,
        buf: &mut [u8],
        timeout: Duration,
        mut each: impl FnMut(Recv<'_>) -> Option<T>,
    ) -> io::Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no answer from the kernel within {} s",
                        timeout.as_secs_f32()
                    ),
                ));
            }
            match self.try_recv(buf)? {
                Some(r) => {
                    if let Some(t) = each(r) {
                        return Ok(t);
                    }
                }
                None => self.poll_in(left)?,
            }
        }
    }

    /// Send request `req` (sequence number `seq`) and hand every reply message to `each` until
    /// the request is done: `NLMSG_DONE` for a `dump`, the acknowledgement otherwise (send it
    /// with `NLM_F_ACK`). Returns the kernel's errno for a refused request.
    pub fn request(
        &self,
        req: &[u8],
        seq: u32,
        dump: bool,
        buf: &mut [u8],
        timeout: Duration,
        mut each: impl FnMut(&Msg<'_>),
    ) -> io::Result<Result<(), i32>> {
        self.send(req)?;
        self.recv_until(buf, timeout, |r| {
            let Recv::Datagram(d) = r else {
                return Some(Err(io::Error::from_raw_os_error(libc::ENOBUFS)));
            };
            for m in messages(d).map_while(Result::ok) {
                if m.seq != seq {
                    continue; // a stale answer to an earlier, timed-out request
                }
                match m.ty {
                    NLMSG_ERROR => {
                        let errno = nlmsgerr(m.payload).unwrap_or(libc::EPROTO);
                        if errno != 0 || !dump {
                            return Some(Ok(if errno == 0 { Ok(()) } else { Err(errno) }));
                        }
                    }
                    NLMSG_DONE => return Some(Ok(Ok(()))),
                    _ => each(&m),
                }
            }
            None
        })?
    }
}

impl AsRawFd for NlSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Most port ids one [`sender_filter`] compares (a classic BPF jump reaches 255 instructions).
const MAX_FILTERED_SENDERS: usize = 200;

/// Classic BPF: drop a datagram whose first message comes from one of `senders` (the kernel
/// coalesces the notifications of one transaction, so a datagram holds one sender's events),
/// keep the rest. `ld [12]` reads `nlmsg_pid` in network order, so the constants are the
/// host-order bytes read big-endian. At most the first 200 port ids are compared.
pub fn sender_filter(senders: &[u32]) -> Vec<libc::sock_filter> {
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let n = senders.len().min(MAX_FILTERED_SENDERS);
    let mut prog = Vec::with_capacity(n + 3);
    prog.push(op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 12));
    for (i, p) in senders.iter().take(n).enumerate() {
        // Jump to the "drop" return, which follows the "keep" return.
        let jt = (n - i) as u8;
        prog.push(op(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            jt,
            0,
            u32::from_be_bytes(p.to_ne_bytes()),
        ));
    }
    prog.push(op(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX));
    prog.push(op(libc::BPF_RET | libc::BPF_K, 0, 0, 0));
    prog
}
