//! Netlink and nfnetlink numbers, and the one message builder. Pure: no I/O.
//!
//! The numbers are the kernel's UAPI, each once: `include/uapi/linux/netlink.h` (message and
//! attribute headers, flags), `include/uapi/linux/netfilter/nfnetlink.h` (`struct nfgenmsg`,
//! subsystems, batches, groups) and `include/uapi/linux/netfilter.h` (families, verdicts).
//! Byte order: netlink headers and attribute headers are host order; nfnetlink integer
//! attributes (every subsystem: queue, nf_tables, ipset) are big-endian.

// ---- netlink (linux/netlink.h) ----

/// `struct nlmsghdr`: len u32, type u16, flags u16, seq u32, pid u32.
pub const NLMSG_HDRLEN: usize = 16;
/// `struct nlattr`: len u16, type u16; the value is padded to 4 bytes.
pub const NLA_HDRLEN: usize = 4;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
/// `NLM_F_ROOT | NLM_F_MATCH`.
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLA_F_NESTED: u16 = 0x8000;
/// Set on integer attributes in network byte order; ipset insists on it.
pub const NLA_F_NET_BYTEORDER: u16 = 0x4000;
/// The attribute type without `NLA_F_NESTED` / `NLA_F_NET_BYTEORDER`.
pub const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

// ---- nfnetlink (linux/netfilter/nfnetlink.h) ----

/// `struct nfgenmsg`: family u8, version u8, res_id be16 (queue number, batch subsystem).
pub const NFGENMSG_LEN: usize = 4;
pub const NFNETLINK_V0: u8 = 0;
pub const NFNL_SUBSYS_QUEUE: u16 = 3;
pub const NFNL_SUBSYS_IPSET: u16 = 6;
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub const NFNL_MSG_BATCH_END: u16 = 0x11;
/// `NFNLGRP_NFTABLES`: the multicast group of nf_tables ruleset change events.
pub const NFNLGRP_NFTABLES: u32 = 7;

// ---- netfilter (linux/netfilter.h) ----

pub const NFPROTO_UNSPEC: u8 = 0;
pub const NFPROTO_INET: u8 = 1;
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;
pub const NF_DROP: u32 = 0;
pub const NF_ACCEPT: u32 = 1;

/// `n` rounded up to the 4-byte alignment of netlink messages and attributes.
pub const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The `nlmsg_type` of message `msg` of nfnetlink subsystem `subsys`.
pub const fn nfnl_type(subsys: u16, msg: u16) -> u16 {
    (subsys << 8) | msg
}

/// A builder of nfnetlink messages over one growable buffer that is cleared, never shrunk, so
/// a hot path does not allocate once the buffer has warmed up. Messages are appended one after
/// the other (a batch is several messages in one buffer); attributes nest.
#[derive(Debug, Default)]
pub struct MsgBuf {
    buf: Vec<u8>,
}

impl MsgBuf {
    pub fn with_capacity(bytes: usize) -> MsgBuf {
        MsgBuf {
            buf: Vec::with_capacity(bytes),
        }
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The messages built so far, ready to send.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Start a message: `nlmsghdr` (with `NLM_F_REQUEST` added to `flags`, port id 0 = to the
    /// kernel) and `nfgenmsg`. `ty` is [`nfnl_type`] or a batch marker. Returns the message's
    /// offset for [`MsgBuf::end`].
    pub fn begin(&mut self, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in `end`
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf
            .extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.push(family);
        self.buf.push(NFNETLINK_V0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    /// Close the message begun at `start`: write its length.
    pub fn end(&mut self, start: usize) {
        let len = u32::try_from(self.buf.len().saturating_sub(start)).unwrap_or(u32::MAX);
        if let Some(dst) = self.buf.get_mut(start..start + 4) {
            dst.copy_from_slice(&len.to_ne_bytes());
        }
    }

    /// Add `flags` to the header of the message begun at `start` (e.g. `NLM_F_ACK` on the last
    /// message of a batch).
    pub fn add_flags(&mut self, start: usize, flags: u16) {
        if let Some(dst) = self.buf.get_mut(start + 6..start + 8) {
            let f = u16::from_ne_bytes([dst[0], dst[1]]) | flags;
            dst.copy_from_slice(&f.to_ne_bytes());
        }
    }

    /// An attribute of type `ty` (flags such as [`NLA_F_NET_BYTEORDER`] included as given).
    pub fn attr(&mut self, ty: u16, data: &[u8]) {
        self.attr_parts(ty, data, &[]);
    }

    /// A NUL-terminated string attribute.
    pub fn attr_str(&mut self, ty: u16, s: &str) {
        self.attr_parts(ty, s.as_bytes(), &[0]);
    }

    pub fn attr_u16(&mut self, ty: u16, v: u16) {
        self.attr(ty, &v.to_be_bytes());
    }

    pub fn attr_u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    pub fn attr_u64(&mut self, ty: u16, v: u64) {
        self.attr(ty, &v.to_be_bytes());
    }

    fn attr_parts(&mut self, ty: u16, a: &[u8], b: &[u8]) {
        // Attribute lengths are u16: callers keep values far below 64 KiB.
        let len = (NLA_HDRLEN + a.len() + b.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(a);
        self.buf.extend_from_slice(b);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    /// Open a nested attribute (`NLA_F_NESTED` set); close it with [`MsgBuf::nest_end`].
    pub fn nest(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        start
    }

    pub fn nest_end(&mut self, start: usize) {
        // Attribute lengths are u16; callers chunk so a nest never reaches 64 KiB.
        let len = self.buf.len().saturating_sub(start) as u16;
        if let Some(dst) = self.buf.get_mut(start..start + 2) {
            dst.copy_from_slice(&len.to_ne_bytes());
        }
    }
}
