//! The kernel's counters of a queue, read from `/proc/net/netfilter/nfnetlink_queue`. Reads
//! that one file; the line parser is pure.

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

pub(super) fn parse_stats(text: &str, queue: u16) -> Option<QueueStats> {
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
