//! NFQUEUE over a raw `NETLINK_NETFILTER` socket: bind a queue, receive queued packets in
//! batches without blocking, and give verdicts (one batch verdict per burst).
//!
//! Own implementation rather than the `nfq` crate: we need the file descriptor (poll together
//! with the signal pipe and nftables events, so shutdown never waits for a packet), a large
//! `SO_RCVBUFFORCE`, `ENOBUFS` accounting and batch verdicts.
//!
//! SKELETON: the queue helper owns this file.

use std::os::fd::RawFd;

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
        QueueConfig { num: 0, max_len: 4096, rcvbuf: 8 << 20, copy_range: 1600 }
    }
}

/// Errors of the queue shell, each naming the operation and the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot {op} NFQUEUE {queue}: {source}")]
    Io { op: &'static str, queue: u16, #[source] source: std::io::Error },
}

/// A bound NFQUEUE.
pub struct Queue {
    _private: (),
}

impl Queue {
    /// Open a netlink socket, bind queue `cfg.num` (copy-packet mode), set its length and buffer.
    /// Fails with a clear message if another process holds the queue.
    pub fn open(cfg: QueueConfig) -> Result<Queue, QueueError> {
        let _ = cfg;
        unimplemented!("queue helper")
    }

    /// The socket, for `poll(2)`.
    pub fn as_raw_fd(&self) -> RawFd {
        unimplemented!("queue helper")
    }

    /// Without blocking, receive up to `max` queued packets and call `f(packet_id, ip_packet)`
    /// for each. Returns how many were received (0 when none is waiting). A socket overrun
    /// (`ENOBUFS`) is counted in [`Queue::overruns`], not returned as an error.
    pub fn recv_batch(&mut self, max: usize, f: &mut dyn FnMut(u32, &[u8])) -> Result<usize, QueueError> {
        let _ = (max, f);
        unimplemented!("queue helper")
    }

    /// Verdict DROP for every queued packet with an id up to and including `id`
    /// (`NFQNL_MSG_VERDICT_BATCH`).
    pub fn drop_upto(&mut self, id: u32) -> Result<(), QueueError> {
        let _ = id;
        unimplemented!("queue helper")
    }

    /// Socket overruns seen so far.
    pub fn overruns(&self) -> u64 {
        unimplemented!("queue helper")
    }
}
