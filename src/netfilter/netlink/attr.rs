//! Parsing what the kernel sends: the messages of a datagram and the attributes of a message.
//! Pure: no I/O, no allocation (everything borrows the receive buffer).
//!
//! Contract: no bytes make these functions panic. Every read is length-checked; a message
//! whose length does not fit ends the parse of its datagram (reported once as [`Malformed`]),
//! an attribute whose length does not fit ends the parse of its message.

use super::msg::{align4, NFGENMSG_LEN, NLA_HDRLEN, NLA_TYPE_MASK, NLMSG_HDRLEN};

/// One netlink message of a receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    /// Port id of the sender: 0 for the kernel itself, else the socket whose request caused
    /// the message (events carry it too).
    pub pid: u32,
    /// Everything after the `nlmsghdr`.
    pub payload: &'a [u8],
}

impl Msg<'_> {
    /// The nfnetlink subsystem (`NFNL_SUBSYS_*`) of the message.
    pub fn subsys(&self) -> u16 {
        self.ty >> 8
    }

    /// The message type within its subsystem (`NFT_MSG_*`, `NFQNL_MSG_*`, `IPSET_CMD_*`).
    pub fn nfnl_msg(&self) -> u16 {
        self.ty & 0xff
    }
}

/// A message header that does not fit its datagram; the rest of the datagram is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Iterator over the messages of one received datagram. Yields `Err(Malformed)` once for a
/// header that does not fit, then ends. The last message need not be padded.
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: &'a [u8],
}

/// The messages of `datagram`; `.map_while(Result::ok)` for the well-formed ones only.
pub fn messages(datagram: &[u8]) -> Messages<'_> {
    Messages { rest: datagram }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Msg<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.rest);
        let len = ne_u32(rest, 0).map(|l| l as usize);
        let (Some(len), Some(ty), Some(flags), Some(seq), Some(pid)) = (
            len,
            ne_u16(rest, 4),
            ne_u16(rest, 6),
            ne_u32(rest, 8),
            ne_u32(rest, 12),
        ) else {
            return Some(Err(Malformed));
        };
        if len < NLMSG_HDRLEN {
            return Some(Err(Malformed));
        }
        let Some(payload) = rest.get(NLMSG_HDRLEN..len) else {
            return Some(Err(Malformed));
        };
        self.rest = rest.get(align4(len)..).unwrap_or(&[]);
        Some(Ok(Msg {
            ty,
            flags,
            seq,
            pid,
            payload,
        }))
    }
}

/// Iterator over `(type without flags, value)` of the attributes in a buffer; ends at the
/// first attribute whose length does not fit.
#[derive(Debug, Clone)]
pub struct Attrs<'a> {
    rest: &'a [u8],
}

/// The attributes of `buf` (a message body after its fixed header, or a nested attribute).
pub fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs { rest: buf }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<(u16, &'a [u8])> {
        let rest = std::mem::take(&mut self.rest);
        let len = usize::from(ne_u16(rest, 0)?);
        let ty = ne_u16(rest, 2)? & NLA_TYPE_MASK;
        if len < NLA_HDRLEN {
            return None;
        }
        let value = rest.get(NLA_HDRLEN..len)?;
        self.rest = rest.get(align4(len)..).unwrap_or(&[]);
        Some((ty, value))
    }
}

/// The value of the first attribute `ty` in `buf`.
pub fn attr(buf: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(buf).find(|(t, _)| *t == ty).map(|(_, v)| v)
}

/// A big-endian u32 attribute value (exactly 4 bytes).
pub fn be_u32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

/// A big-endian u64 attribute value (exactly 8 bytes).
pub fn be_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

/// A NUL-terminated string attribute, without its NUL.
pub fn str_attr(v: &[u8]) -> &[u8] {
    v.split(|b| *b == 0).next().unwrap_or(v)
}

/// The errno of an `NLMSG_ERROR` payload: 0 for an acknowledgement, else a positive errno.
/// (`struct nlmsgerr { int error; struct nlmsghdr msg; }` holds it negated; `wrapping_neg`
/// so that a bogus `i32::MIN` cannot overflow.)
pub fn nlmsgerr(payload: &[u8]) -> Option<i32> {
    let e = payload.get(0..4)?;
    Some(i32::from_ne_bytes(e.try_into().ok()?).wrapping_neg())
}

/// The family of an nfnetlink message (`nfgenmsg.nfgen_family`) and its attributes after the
/// `nfgenmsg`.
pub fn nfgen(payload: &[u8]) -> Option<(u8, &[u8])> {
    Some((*payload.first()?, payload.get(NFGENMSG_LEN..)?))
}

fn ne_u16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes([s[0], s[1]]))
}

fn ne_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}
