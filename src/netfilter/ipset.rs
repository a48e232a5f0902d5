//! ipset over netlink (`NFNL_SUBSYS_IPSET`): the `hash:ip,port` sets of the ipset grant
//! backend, their elements with timeouts, and the listing of them. Messages are built with the
//! shared [`MsgBuf`] and sent as requests on the one [`NlSocket`] type; each is acknowledged.
//!
//! The numbers are the kernel's UAPI, `include/uapi/linux/netfilter/ipset/ip_set.h` (protocol
//! 7, 6 still accepted). What the kernel does with them:
//!
//! - Every message carries `IPSET_ATTR_PROTOCOL` first; the `nfgenmsg` family is `NFPROTO_IPV4`
//!   whatever the set's family (as the `ipset` tool sends it: the kernel reads the family of a
//!   set from `IPSET_ATTR_FAMILY` at CREATE only).
//! - ADD and DEL without `NLM_F_EXCL` get `IPSET_FLAG_EXIST` (`flag_exist()` in
//!   `net/netfilter/ipset/ip_set_core.c`): an element already there is no error and, for ADD,
//!   its timeout is set anew (the `-exist` of `ipset add`), so a re-knock restarts the timer;
//!   DEL of an element that is gone is no error. CREATE without `NLM_F_EXCL` accepts a set of
//!   the same name, type and family that exists already.
//! - Integer attributes are big-endian with `NLA_F_NET_BYTEORDER` set; the kernel refuses them
//!   without the flag. The protocol, revision, family and L4 protocol are single bytes.
//! - A timeout of 0 means "never expires": nfknock never sends one.
//!
//! Golden bytes of every message, captured from `ipset` 7.17 with `strace -e write=3`, are in
//! the unit tests.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::netlink::*;
use crate::access::{Access, Proto};

pub const IPSET_PROTOCOL: u8 = 7;
pub const IPSET_PROTOCOL_MIN: u8 = 6;

pub const IPSET_CMD_PROTOCOL: u16 = 1;
pub const IPSET_CMD_CREATE: u16 = 2;
pub const IPSET_CMD_DESTROY: u16 = 3;
pub const IPSET_CMD_LIST: u16 = 7;
pub const IPSET_CMD_ADD: u16 = 9;
pub const IPSET_CMD_DEL: u16 = 10;
pub const IPSET_CMD_HEADER: u16 = 12;
pub const IPSET_CMD_TYPE: u16 = 13;

// Command level attributes.
pub const IPSET_ATTR_PROTOCOL: u16 = 1;
pub const IPSET_ATTR_SETNAME: u16 = 2;
pub const IPSET_ATTR_TYPENAME: u16 = 3;
pub const IPSET_ATTR_REVISION: u16 = 4;
pub const IPSET_ATTR_FAMILY: u16 = 5;
pub const IPSET_ATTR_DATA: u16 = 7;
pub const IPSET_ATTR_ADT: u16 = 8;
pub const IPSET_ATTR_LINENO: u16 = 9;
pub const IPSET_ATTR_PROTOCOL_MIN: u16 = 10;
// Inside IPSET_ATTR_DATA (create and add/del/test).
pub const IPSET_ATTR_IP: u16 = 1;
pub const IPSET_ATTR_PORT: u16 = 4;
pub const IPSET_ATTR_TIMEOUT: u16 = 6;
pub const IPSET_ATTR_PROTO: u16 = 7;
pub const IPSET_ATTR_MAXELEM: u16 = 19;
pub const IPSET_ATTR_REFERENCES: u16 = 25;
// Inside IPSET_ATTR_IP.
pub const IPSET_ATTR_IPADDR_IPV4: u16 = 1;
pub const IPSET_ATTR_IPADDR_IPV6: u16 = 2;

/// Errors of the ipset subsystem beyond the errnos (`enum ipset_errno`).
pub const IPSET_ERR_PROTOCOL: i32 = 4097;
pub const IPSET_ERR_FIND_TYPE: i32 = 4098;
pub const IPSET_ERR_MAX_SETS: i32 = 4099;
pub const IPSET_ERR_BUSY: i32 = 4100;
pub const IPSET_ERR_TYPE_MISMATCH: i32 = 4102;
pub const IPSET_ERR_EXIST: i32 = 4103;
pub const IPSET_ERR_INVALID_FAMILY: i32 = 4106;
pub const IPSET_ERR_TIMEOUT: i32 = 4107;
pub const IPSET_ERR_REFERENCED: i32 = 4108;
/// The first of the set-type specific errors (`IPSET_ERR_TYPE_SPECIFIC`); for a hash type,
/// `IPSET_ERR_HASH_FULL` is this one.
pub const IPSET_ERR_HASH_FULL: i32 = 4352;

/// The set type of the grant sets: source address, L4 protocol and destination port, matched
/// by iptables' `-m set --match-set NAME src,dst`.
pub const SET_TYPE: &str = "hash:ip,port";
/// Default timeout of the sets, seconds. Every element carries its own; a set needs one to
/// hold timeouts at all.
pub const SET_TIMEOUT_S: u32 = 300;
/// Most grants one set holds (the kernel refuses more with "set is full").
pub const SET_MAXELEM: u32 = 262_144;
/// Longest element timeout the kernel takes (`IPSET_MAX_TIMEOUT`, `(UINT_MAX >> 1) / 1000`).
pub const MAX_TIMEOUT_S: u32 = (u32::MAX >> 1) / 1000;
/// Elements per ADD/DEL message (inside `IPSET_ATTR_ADT`): each is at most 60 bytes, so a
/// message stays far below the 64 KiB of a nested attribute's length field.
const ELEMS_PER_MSG: usize = 256;
/// How long to wait for the kernel's answer before calling it lost.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
const RECV_BUF: usize = 64 * 1024;

/// An element to write: `addr,proto:port` with a timeout in seconds (1 ..= [`MAX_TIMEOUT_S`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element {
    pub addr: IpAddr,
    pub access: Access,
    pub timeout_s: u32,
}

/// An element read back: its seconds left (the kernel keeps no original timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveElement {
    pub addr: IpAddr,
    pub access: Access,
    pub left_s: u32,
}

/// What HEADER says of an existing set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub type_name: String,
    /// `NFPROTO_IPV4` or `NFPROTO_IPV6`.
    pub family: u8,
    /// iptables rules (or other sets) that use it: a referenced set cannot be destroyed.
    pub references: u32,
}

/// The timeout the kernel gets for `timeout`: whole seconds rounded up, at least 1 (0 would
/// never expire), at most [`MAX_TIMEOUT_S`].
pub fn timeout_secs(timeout: Duration) -> u32 {
    let s = timeout.as_nanos().div_ceil(1_000_000_000);
    u32::try_from(s).unwrap_or(u32::MAX).clamp(1, MAX_TIMEOUT_S)
}

/// Errors of the ipset shell: which operation failed on which set, and what to do. The OS error
/// is the source where there is one.
#[derive(Debug, thiserror::Error)]
pub enum IpsetError {
    #[error("cannot {op} the ipset netlink socket")]
    Socket {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot {op} ipset `{set}`: permission denied; nfknock needs CAP_NET_ADMIN (run it as root or grant the capability)")]
    Permission { op: &'static str, set: String },
    #[error("cannot {op} ipset `{set}`: it does not exist; start `nfknock serve` with backend = \"ipset\" (it creates it), or `ipset create {set} {SET_TYPE} family {} timeout {SET_TIMEOUT_S}`", if *.v6 { "inet6" } else { "inet" })]
    NoSet {
        op: &'static str,
        set: String,
        v6: bool,
    },
    #[error("ipset `{set}` exists but is not a {SET_TYPE} set of family {} with timeouts; remove it with `ipset destroy {set}` (after removing the iptables rules that use it) or choose another name with `[server] {}`", if *.v6 { "inet6" } else { "inet" }, if *.v6 { "ipset_v6" } else { "ipset_v4" })]
    Incompatible { set: String, v6: bool },
    #[error("ipset `{set}` is in use by {references} iptables rule(s) or set(s), so it cannot be destroyed; remove those rules first (`iptables-save | grep -- '--match-set {set} '`, then `iptables -D ...`, or `iptables-restore` a ruleset without them) and run this again")]
    Busy { set: String, references: u32 },
    #[error(
        "ipset `{set}` is full ({SET_MAXELEM} elements); grants will fit again as others expire"
    )]
    Full { set: String },
    #[error("cannot talk to the kernel's ipset subsystem: permission denied; nfknock needs CAP_NET_ADMIN (run it as root or grant the capability)")]
    NotPermitted,
    #[error("this kernel has no ipset subsystem; load it with `modprobe ip_set ip_set_hash_ipport` (or choose `backend = \"nftables\"`)")]
    NoSubsystem,
    #[error("the kernel speaks ipset protocol {kernel}, nfknock needs {IPSET_PROTOCOL_MIN} or later (Linux 3.11+); load a newer `ip_set` module")]
    Protocol { kernel: u8 },
    #[error("this kernel has no ipset type {SET_TYPE} for family {}; load the `ip_set_hash_ipport` module (`modprobe ip_set_hash_ipport`)", if *.v6 { "inet6" } else { "inet" })]
    NoType { v6: bool },
    #[error("cannot {op} ipset `{set}`")]
    Kernel {
        op: &'static str,
        set: String,
        #[source]
        source: IpsetErrno,
    },
    #[error("cannot {op}")]
    Request {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

/// An errno, or an ipset error code (4096 and up) with the `ipset` tool's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpsetErrno(pub i32);

impl fmt::Display for IpsetErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self.0 {
            IPSET_ERR_PROTOCOL => "kernel error received: ipset protocol error",
            IPSET_ERR_FIND_TYPE => "kernel error received: set type not supported",
            IPSET_ERR_MAX_SETS => "kernel error received: maximal number of sets reached",
            IPSET_ERR_BUSY => "set is in use by a kernel component",
            IPSET_ERR_TYPE_MISMATCH => "the set type, family or revision differs",
            IPSET_ERR_EXIST => "element or set already exists",
            IPSET_ERR_INVALID_FAMILY => "invalid protocol family",
            IPSET_ERR_TIMEOUT => "timeout is not supported by the set",
            IPSET_ERR_REFERENCED => "set is referenced",
            IPSET_ERR_HASH_FULL => "hash is full, cannot add more elements",
            e if e >= 4096 => return write!(f, "ipset error {e}"),
            e => return write!(f, "{}", io::Error::from_raw_os_error(e)),
        };
        f.write_str(text)
    }
}

impl std::error::Error for IpsetErrno {}

fn family_of(v6: bool) -> u8 {
    if v6 {
        NFPROTO_IPV6
    } else {
        NFPROTO_IPV4
    }
}

// ---- message builders (pure) ----

/// Start message `cmd` with `flags`, its `IPSET_ATTR_PROTOCOL` and (if any) `IPSET_ATTR_SETNAME`.
fn begin(m: &mut MsgBuf, cmd: u16, flags: u16, seq: u32, set: Option<&str>) -> usize {
    let s = m.begin(
        nfnl_type(NFNL_SUBSYS_IPSET, cmd),
        flags,
        seq,
        NFPROTO_IPV4,
        0,
    );
    m.attr(IPSET_ATTR_PROTOCOL, &[IPSET_PROTOCOL]);
    if let Some(set) = set {
        m.attr_str(IPSET_ATTR_SETNAME, set);
    }
    s
}

/// `ipset -v`'s opening question: which protocol does the kernel speak?
pub fn build_protocol(m: &mut MsgBuf, seq: u32) {
    let s = begin(m, IPSET_CMD_PROTOCOL, 0, seq, None);
    m.end(s);
}

/// Which revisions of [`SET_TYPE`] for this family does the kernel have?
pub fn build_type(m: &mut MsgBuf, seq: u32, v6: bool) {
    let s = begin(m, IPSET_CMD_TYPE, 0, seq, None);
    m.attr_str(IPSET_ATTR_TYPENAME, SET_TYPE);
    m.attr(IPSET_ATTR_FAMILY, &[family_of(v6)]);
    m.end(s);
}

/// `ipset create SET hash:ip,port family inet|inet6 timeout 300 maxelem 262144 -exist`.
pub fn build_create(m: &mut MsgBuf, seq: u32, set: &str, v6: bool, revision: u8) {
    let s = begin(
        m,
        IPSET_CMD_CREATE,
        NLM_F_ACK | NLM_F_CREATE,
        seq,
        Some(set),
    );
    m.attr_str(IPSET_ATTR_TYPENAME, SET_TYPE);
    m.attr(IPSET_ATTR_REVISION, &[revision]);
    m.attr(IPSET_ATTR_FAMILY, &[family_of(v6)]);
    let d = m.nest(IPSET_ATTR_DATA);
    m.attr_u32(IPSET_ATTR_TIMEOUT | NLA_F_NET_BYTEORDER, SET_TIMEOUT_S);
    m.attr_u32(IPSET_ATTR_MAXELEM | NLA_F_NET_BYTEORDER, SET_MAXELEM);
    m.nest_end(d);
    m.end(s);
}

/// HEADER (`ipset list -t SET` asks it first), acknowledged.
pub fn build_header(m: &mut MsgBuf, seq: u32, set: &str) {
    let s = begin(m, IPSET_CMD_HEADER, NLM_F_ACK, seq, Some(set));
    m.end(s);
}

/// LIST as a dump: the header, then the elements in as many messages as they need.
pub fn build_list(m: &mut MsgBuf, seq: u32, set: &str) {
    let s = begin(m, IPSET_CMD_LIST, NLM_F_ACK | NLM_F_DUMP, seq, Some(set));
    m.end(s);
}

/// `ipset destroy SET`.
pub fn build_destroy(m: &mut MsgBuf, seq: u32, set: &str) {
    // `NLM_F_EXCL` as the `ipset` tool sends it (the kernel does not look at it here).
    let s = begin(m, IPSET_CMD_DESTROY, NLM_F_ACK | NLM_F_EXCL, seq, Some(set));
    m.end(s);
}

/// One element's data: `IP { IPADDR_IPV4|6 }, PORT, [TIMEOUT], PROTO, LINENO`.
fn element_data(m: &mut MsgBuf, addr: IpAddr, access: Access, timeout_s: Option<u32>, lineno: u32) {
    let d = m.nest(IPSET_ATTR_DATA);
    let ip = m.nest(IPSET_ATTR_IP);
    match addr {
        IpAddr::V4(a) => m.attr(IPSET_ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER, &a.octets()),
        IpAddr::V6(a) => m.attr(IPSET_ATTR_IPADDR_IPV6 | NLA_F_NET_BYTEORDER, &a.octets()),
    }
    m.nest_end(ip);
    m.attr_u16(IPSET_ATTR_PORT | NLA_F_NET_BYTEORDER, access.port);
    if let Some(t) = timeout_s {
        m.attr_u32(IPSET_ATTR_TIMEOUT | NLA_F_NET_BYTEORDER, t);
    }
    m.attr(IPSET_ATTR_PROTO, &[access.proto.number()]);
    m.attr_u32(IPSET_ATTR_LINENO | NLA_F_NET_BYTEORDER, lineno);
    m.nest_end(d);
}

/// ADD (`add`, each element with its timeout) or DEL of `elems` in `set`, without
/// `NLM_F_EXCL` (see the module: an existing element is refreshed, a missing one is no error).
/// One element is sent as `ipset add` sends it (`IPSET_ATTR_DATA`, line 0); several go in one
/// `IPSET_ATTR_ADT` list numbered from 1, as `ipset restore` sends the lines of a file.
pub fn build_adt(m: &mut MsgBuf, seq: u32, add: bool, set: &str, elems: &[Element]) {
    let cmd = if add { IPSET_CMD_ADD } else { IPSET_CMD_DEL };
    let s = begin(m, cmd, NLM_F_ACK, seq, Some(set));
    let timeout = |e: &Element| add.then_some(e.timeout_s.clamp(1, MAX_TIMEOUT_S));
    if let [e] = elems {
        element_data(m, e.addr, e.access, timeout(e), 0);
    } else {
        // `ip_set_ad` refuses an ADT list without a command-level LINENO (IPSET_ERR_PROTOCOL).
        m.attr_u32(IPSET_ATTR_LINENO | NLA_F_NET_BYTEORDER, 1);
        let list = m.nest(IPSET_ATTR_ADT);
        for (i, e) in elems.iter().enumerate() {
            let lineno = u32::try_from(i + 1).unwrap_or(u32::MAX);
            element_data(m, e.addr, e.access, timeout(e), lineno);
        }
        m.nest_end(list);
    }
    m.end(s);
}

// ---- parsing what the kernel sends (pure, never panics) ----

/// `(protocol, protocol_min)` of a PROTOCOL reply body (after `nfgenmsg`).
pub fn parse_protocol(body: &[u8]) -> Option<(u8, u8)> {
    let p = *attr(body, IPSET_ATTR_PROTOCOL)?.first()?;
    let min = attr(body, IPSET_ATTR_PROTOCOL_MIN)
        .and_then(|v| v.first().copied())
        .unwrap_or(p);
    Some((p, min))
}

/// `(revision max, revision min)` of a TYPE reply body.
pub fn parse_type(body: &[u8]) -> Option<(u8, u8)> {
    let max = *attr(body, IPSET_ATTR_REVISION)?.first()?;
    let min = attr(body, IPSET_ATTR_PROTOCOL_MIN)
        .and_then(|v| v.first().copied())
        .unwrap_or(max);
    Some((max, min))
}

/// A HEADER or LIST reply body's header.
pub fn parse_header(body: &[u8]) -> Option<Header> {
    let type_name = String::from_utf8_lossy(str_attr(attr(body, IPSET_ATTR_TYPENAME)?)).into();
    let family = *attr(body, IPSET_ATTR_FAMILY)?.first()?;
    let references = attr(body, IPSET_ATTR_DATA)
        .and_then(|d| attr(d, IPSET_ATTR_REFERENCES))
        .and_then(be_u32)
        .unwrap_or(0);
    Some(Header {
        type_name,
        family,
        references,
    })
}

/// The elements of a LIST reply body (`IPSET_ATTR_ADT` of `IPSET_ATTR_DATA`s); an element that
/// is not a well-formed `ip,proto:port` of a protocol nfknock gates is skipped.
pub fn parse_elements(body: &[u8]) -> impl Iterator<Item = LiveElement> + '_ {
    attr(body, IPSET_ATTR_ADT)
        .into_iter()
        .flat_map(attrs)
        .filter(|(t, _)| *t == IPSET_ATTR_DATA)
        .filter_map(|(_, d)| parse_element(d))
}

fn parse_element(d: &[u8]) -> Option<LiveElement> {
    let ip = attr(d, IPSET_ATTR_IP)?;
    let addr = match attrs(ip).next()? {
        (IPSET_ATTR_IPADDR_IPV4, v) => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(v).ok()?)),
        (IPSET_ATTR_IPADDR_IPV6, v) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(v).ok()?)),
        _ => return None,
    };
    let port = u16::from_be_bytes(attr(d, IPSET_ATTR_PORT)?.try_into().ok()?);
    let proto = Proto::from_number(*attr(d, IPSET_ATTR_PROTO)?.first()?)?;
    let left_s = attr(d, IPSET_ATTR_TIMEOUT).and_then(be_u32).unwrap_or(0);
    Some(LiveElement {
        addr,
        access: Access { proto, port },
        left_s,
    })
}

// ---- the socket ----

/// A netlink socket speaking ipset, with the kernel's protocol checked.
pub struct Ipset {
    sock: NlSocket,
    seq: u32,
    msg: MsgBuf,
    rbuf: Vec<u8>,
    /// The newest revision of [`SET_TYPE`] the kernel has, per family (asked once).
    revision: [Option<u8>; 2],
}

impl Ipset {
    /// Open the socket and check that the kernel speaks ipset protocol 6 or later.
    pub fn open() -> Result<Ipset, IpsetError> {
        let sock = NlSocket::open(0).map_err(|e| IpsetError::Socket {
            op: "open",
            source: e.source,
        })?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        let mut ipset = Ipset {
            sock,
            seq: seed,
            msg: MsgBuf::with_capacity(ELEMS_PER_MSG * 64 + 64),
            rbuf: vec![0; RECV_BUF],
            revision: [None; 2],
        };
        let seq = ipset.next_seq();
        build_protocol(&mut ipset.msg, seq);
        let mut got = None;
        // PROTOCOL is answered with a message, not an ack.
        ipset
            .sock
            .send(ipset.msg.bytes())
            .map_err(|source| IpsetError::Request {
                op: "ask the kernel for its ipset protocol",
                source,
            })?;
        let answer = ipset.sock.recv_until(&mut ipset.rbuf, REPLY_TIMEOUT, |r| {
            let Recv::Datagram(d) = r else {
                return Some(Err(libc::ENOBUFS));
            };
            for m in messages(d).map_while(Result::ok) {
                if m.seq != seq {
                    continue;
                }
                if m.ty == NLMSG_ERROR {
                    return Some(Err(nlmsgerr(m.payload).unwrap_or(libc::EPROTO)));
                }
                got = nfgen(m.payload).and_then(|(_, b)| parse_protocol(b));
                return Some(Ok(()));
            }
            None
        });
        let fail = |source| IpsetError::Request {
            op: "ask the kernel for its ipset protocol",
            source,
        };
        match answer.map_err(fail)? {
            Ok(()) => {}
            Err(libc::EPERM) | Err(libc::EACCES) => return Err(IpsetError::NotPermitted),
            // nfnetlink answers EINVAL for a subsystem it has not got (and could not load).
            Err(libc::EINVAL) | Err(libc::EOPNOTSUPP) => return Err(IpsetError::NoSubsystem),
            Err(e) => return Err(fail(io::Error::from_raw_os_error(e))),
        }
        match got {
            Some((p, _)) if p >= IPSET_PROTOCOL_MIN => Ok(ipset),
            Some((p, _)) => Err(IpsetError::Protocol { kernel: p }),
            None => Err(fail(io::Error::from_raw_os_error(libc::EPROTO))),
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Send what [`Ipset::msg`] holds as request `seq`; hand reply bodies to `each`.
    fn request(
        &mut self,
        seq: u32,
        dump: bool,
        op: &'static str,
        mut each: impl FnMut(&[u8]),
    ) -> Result<Result<(), i32>, IpsetError> {
        self.sock
            .request(
                self.msg.bytes(),
                seq,
                dump,
                &mut self.rbuf,
                REPLY_TIMEOUT,
                |m| {
                    if let Some((_, body)) = nfgen(m.payload) {
                        each(body);
                    }
                },
            )
            .map_err(|source| IpsetError::Request { op, source })
    }

    fn refused(op: &'static str, set: &str, v6: bool, errno: i32) -> IpsetError {
        let set = set.to_string();
        match errno {
            libc::EPERM | libc::EACCES => IpsetError::Permission { op, set },
            libc::ENOENT => IpsetError::NoSet { op, set, v6 },
            // CREATE without NLM_F_EXCL answers EEXIST for a set of that name whose type,
            // family or options differ (`ip_set_create`, net/netfilter/ipset/ip_set_core.c).
            libc::EEXIST
            | IPSET_ERR_EXIST
            | IPSET_ERR_TYPE_MISMATCH
            | IPSET_ERR_TIMEOUT
            | IPSET_ERR_INVALID_FAMILY
                if op == "create" || op == "add elements to" =>
            {
                IpsetError::Incompatible { set, v6 }
            }
            IPSET_ERR_HASH_FULL => IpsetError::Full { set },
            _ => IpsetError::Kernel {
                op,
                set,
                source: IpsetErrno(errno),
            },
        }
    }

    /// The newest revision of [`SET_TYPE`] for the family (what `ipset create` uses).
    fn type_revision(&mut self, v6: bool) -> Result<u8, IpsetError> {
        if let Some(r) = self.revision[usize::from(v6)] {
            return Ok(r);
        }
        self.msg.clear();
        let seq = self.next_seq();
        build_type(&mut self.msg, seq, v6);
        self.msg.add_flags(0, NLM_F_ACK);
        let mut got = None;
        let r = self.request(seq, false, "look up the ipset type hash:ip,port", |b| {
            got = parse_type(b);
        })?;
        match (r, got) {
            (Ok(()), Some((max, _))) => {
                self.revision[usize::from(v6)] = Some(max);
                Ok(max)
            }
            (Err(IPSET_ERR_FIND_TYPE), _) | (Ok(()), None) => Err(IpsetError::NoType { v6 }),
            (Err(e), _) => Err(Self::refused("create", "*", v6, e)),
        }
    }

    /// Create `set` (family of `v6`) unless it exists with the same type and family.
    pub fn create(&mut self, set: &str, v6: bool) -> Result<(), IpsetError> {
        let revision = self.type_revision(v6)?;
        self.msg.clear();
        let seq = self.next_seq();
        build_create(&mut self.msg, seq, set, v6, revision);
        match self.request(seq, false, "create an ipset", |_| {})? {
            Ok(()) => Ok(()),
            Err(e) => Err(Self::refused("create", set, v6, e)),
        }
    }

    /// The header of `set`; `None` if there is no such set.
    pub fn header(&mut self, set: &str) -> Result<Option<Header>, IpsetError> {
        self.msg.clear();
        let seq = self.next_seq();
        build_header(&mut self.msg, seq, set);
        let mut got = None;
        match self.request(seq, false, "look up an ipset", |b| got = parse_header(b))? {
            Ok(()) => Ok(got),
            Err(libc::ENOENT) => Ok(None),
            Err(e) => Err(Self::refused("look up", set, false, e)),
        }
    }

    /// Add (`add`: with their timeouts, refreshing those present) or delete `elems` in `set`,
    /// 256 per request (`ELEMS_PER_MSG`). Stops at the first refused request.
    pub fn write(
        &mut self,
        add: bool,
        set: &str,
        v6: bool,
        elems: &[Element],
    ) -> Result<(), IpsetError> {
        let op = if add {
            "add elements to"
        } else {
            "delete elements from"
        };
        for chunk in elems.chunks(ELEMS_PER_MSG) {
            self.msg.clear();
            let seq = self.next_seq();
            build_adt(&mut self.msg, seq, add, set, chunk);
            if let Err(e) = self.request(seq, false, "write an ipset", |_| {})? {
                return Err(Self::refused(op, set, v6, e));
            }
        }
        Ok(())
    }

    /// Every element of `set` with its seconds left; `None` if there is no such set.
    pub fn list(&mut self, set: &str) -> Result<Option<Vec<LiveElement>>, IpsetError> {
        self.msg.clear();
        let seq = self.next_seq();
        build_list(&mut self.msg, seq, set);
        let mut out = Vec::new();
        match self.request(seq, true, "list an ipset", |b| {
            out.extend(parse_elements(b))
        })? {
            Ok(()) => Ok(Some(out)),
            Err(libc::ENOENT) => Ok(None),
            Err(e) => Err(Self::refused("list", set, false, e)),
        }
    }

    /// How many iptables rules (or list sets) use `set`: LIST's header says it (HEADER's
    /// does not).
    fn references(&mut self, set: &str) -> Result<u32, IpsetError> {
        self.msg.clear();
        let seq = self.next_seq();
        build_list(&mut self.msg, seq, set);
        let mut refs = None;
        let r = self.request(seq, true, "list an ipset", |b| {
            if refs.is_none() {
                refs = parse_header(b).map(|h| h.references);
            }
        })?;
        r.map_err(|e| Self::refused("list", set, false, e))?;
        Ok(refs.unwrap_or(0))
    }

    /// Destroy `set`: `false` if there was none. A set still used by an iptables rule is
    /// refused with [`IpsetError::Busy`].
    pub fn destroy(&mut self, set: &str) -> Result<bool, IpsetError> {
        self.msg.clear();
        let seq = self.next_seq();
        build_destroy(&mut self.msg, seq, set);
        match self.request(seq, false, "destroy an ipset", |_| {})? {
            Ok(()) => Ok(true),
            Err(libc::ENOENT) => Ok(false),
            Err(IPSET_ERR_BUSY) | Err(IPSET_ERR_REFERENCED) => {
                let references = self.references(set).unwrap_or(0).max(1);
                Err(IpsetError::Busy {
                    set: set.to_string(),
                    references,
                })
            }
            Err(e) => Err(Self::refused("destroy", set, false, e)),
        }
    }
}

#[cfg(test)]
mod tests;
