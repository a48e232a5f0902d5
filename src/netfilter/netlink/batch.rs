//! nfnetlink batches: messages of one subsystem between `NFNL_MSG_BATCH_BEGIN` and `_END`,
//! which the kernel applies as one transaction (all or nothing). Building is pure;
//! [`Batch::commit`] sends and waits for the kernel's verdict on the socket it is given.
//!
//! Each message is remembered with a tag of the caller's (what it does to which object), so a
//! refusal names the operation that failed rather than a sequence number.

use std::io;
use std::time::Duration;

use super::attr::{messages, nlmsgerr};
use super::msg::{
    nfnl_type, MsgBuf, NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFPROTO_UNSPEC, NLMSG_ERROR,
    NLM_F_ACK,
};
use super::socket::{NlSocket, Recv};

/// Why [`Batch::commit`] failed.
#[derive(Debug)]
pub enum BatchError<T> {
    /// The batch could not be sent.
    Send(io::Error),
    /// No answer could be read (or none came in time).
    Recv(io::Error),
    /// The kernel refused the batch: the first error, and the tag of the message it answers
    /// (`None`: the batch as a whole, e.g. its header).
    Kernel { errno: i32, tag: Option<T> },
}

/// A batch being built, in one reusable buffer. Also hands out the sequence numbers of
/// requests sent outside batches on the same socket, so answers are never confused.
#[derive(Debug)]
pub struct Batch<T> {
    msg: MsgBuf,
    subsys: u16,
    tags: Vec<(u32, T)>,
    seq: u32,
    begin_seq: u32,
    last_msg: Option<usize>,
}

impl<T: Copy> Batch<T> {
    /// A batch of subsystem `subsys` (`NFNL_SUBSYS_*`), its buffer sized for `capacity` bytes,
    /// sequence numbers starting after `seed`.
    pub fn new(subsys: u16, capacity: usize, seed: u32) -> Batch<T> {
        Batch {
            msg: MsgBuf::with_capacity(capacity),
            subsys,
            tags: Vec::with_capacity(64),
            seq: seed,
            begin_seq: 0,
            last_msg: None,
        }
    }

    /// The next sequence number (never 0).
    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Forget what was built and open a new batch.
    pub fn start(&mut self) {
        self.msg.clear();
        self.tags.clear();
        self.last_msg = None;
        self.begin_seq = self.next_seq();
        let s = self.msg.begin(
            NFNL_MSG_BATCH_BEGIN,
            0,
            self.begin_seq,
            NFPROTO_UNSPEC,
            self.subsys,
        );
        self.msg.end(s);
    }

    /// Begin message `msg` of the subsystem, remembered as `tag`; add its attributes with
    /// [`Batch::msg`], close it with `msg().end(offset)`.
    pub fn begin(&mut self, msg: u16, flags: u16, family: u8, tag: T) -> usize {
        let seq = self.next_seq();
        self.tags.push((seq, tag));
        let start = self
            .msg
            .begin(nfnl_type(self.subsys, msg), flags, seq, family, 0);
        self.last_msg = Some(start);
        start
    }

    /// The buffer, to add attributes to the message being built.
    pub fn msg(&mut self) -> &mut MsgBuf {
        &mut self.msg
    }

    /// Everything built so far (without the `_END` marker until [`Batch::commit`]).
    pub fn bytes(&self) -> &[u8] {
        self.msg.bytes()
    }

    /// Close the batch, send it, and wait up to `timeout` for the kernel's verdict. Only the last
    /// message asks for an ack (`NLM_F_ACK`): the kernel reports every failing message anyway and
    /// processes the whole batch before answering, so on success one `recv` ends the exchange.
    /// An empty batch is not sent.
    pub fn commit(
        &mut self,
        sock: &NlSocket,
        rbuf: &mut [u8],
        timeout: Duration,
    ) -> Result<(), BatchError<T>> {
        let Some(last) = self.last_msg else {
            return Ok(());
        };
        self.msg.add_flags(last, NLM_F_ACK);
        let last_seq = self.seq;
        let end_seq = self.next_seq();
        let s = self
            .msg
            .begin(NFNL_MSG_BATCH_END, 0, end_seq, NFPROTO_UNSPEC, self.subsys);
        self.msg.end(s);
        sock.send(self.msg.bytes()).map_err(BatchError::Send)?;

        let begin_seq = self.begin_seq;
        let mut first_err: Option<(i32, u32)> = None;
        sock.recv_until(rbuf, timeout, |r| {
            let Recv::Datagram(d) = r else {
                return Some(Err(io::Error::from_raw_os_error(libc::ENOBUFS)));
            };
            let mut done = false;
            for m in messages(d).map_while(Result::ok) {
                // Not ours, or a stale answer to an earlier, timed-out batch.
                if m.ty != NLMSG_ERROR || m.seq < begin_seq || m.seq > end_seq {
                    continue;
                }
                let errno = nlmsgerr(m.payload).unwrap_or(libc::EPROTO);
                if errno != 0 && first_err.is_none() {
                    first_err = Some((errno, m.seq));
                }
                if m.seq == last_seq || (errno != 0 && m.seq == begin_seq) {
                    done = true;
                }
            }
            done.then_some(Ok(()))
        })
        .and_then(|r| r)
        .map_err(BatchError::Recv)?;
        match first_err {
            None => Ok(()),
            Some((errno, seq)) => Err(BatchError::Kernel {
                errno,
                tag: self.tags.iter().find(|(s, _)| *s == seq).map(|(_, t)| *t),
            }),
        }
    }
}
