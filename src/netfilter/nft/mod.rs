//! nftables over netlink: the owned `inet nfknock` table built in one atomic batch, grants as
//! set elements with timeouts (upsert without `NLM_F_EXCL`, expiration sent so a refresh
//! restarts the timer on kernels ≥ 6.12), listing live grants, and ruleset events.
//!
//! Messages are built by hand over the shared [`netlink`](super::netlink) layer rather than
//! through libnftnl: the hot path (one grant) is then one `send` of a reused buffer and one
//! `recv`, with no allocation and no FFI, the flags of every message are ours to choose
//! (libnftnl's element message forces `NLM_F_EXCL`), and the exact bytes are unit-testable
//! without root.
//!
//! Every table, chain and set name is a constant here and matches `nft/nfknock.nft`; a test
//! keeps [`render`] and that file equal.
//!
//! | file | what | I/O |
//! | --- | --- | --- |
//! | `mod.rs` | names, the public types and errors, the [`Nft`] handle | opens its socket |
//! | `table.rs` | the owned table as a whole: exists?, queue backend probe, install, remove | yes |
//! | `sets.rs` | set definitions, element keys, grants: upsert, delete, list | yes |
//! | `rules.rs` | the rules (the knock chain and the gate), as netlink and as nft text | none |
//! | `events.rs` | [`NftEvents`]: notice a flush of our table by someone else | yes |
//! | `batch.rs` | message builders on [`Nft`], batch commit, get/dump requests | commit, request |
//! | `expr.rs` | nf_tables expressions | none |
//! | `uapi.rs` | nf_tables numbers | none |

mod batch;
mod events;
mod expr;
mod rules;
mod sets;
mod table;
pub mod uapi;

pub use events::ElemEvent;
pub use events::NftEvents;
pub use rules::render;
pub use sets::{
    decode_key, decode_protected_key, element_comment, element_comment_text, element_key,
    protected_key,
};

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use super::netlink::*;
use crate::access::{Access, Proto};
use batch::Op;
use uapi::*;

/// Address family of the owned table, as `nft` spells it.
pub const FAMILY: &str = "inet";
pub const TABLE: &str = "nfknock";
pub const SET_ALLOW_V4: &str = "allow_v4";
pub const SET_ALLOW_V6: &str = "allow_v6";
pub const SET_PROTECTED: &str = "protected";
pub const SET_KNOCK_RATE_V4: &str = "knock_rate_v4";
pub const SET_KNOCK_RATE_V6: &str = "knock_rate_v6";
pub const CHAIN_KNOCK: &str = "knock";
pub const CHAIN_INPUT: &str = "gate_input";
pub const CHAIN_FORWARD: &str = "gate_forward";
/// Name of the throw-away table used to probe for `nft_queue`.
const PROBE_TABLE: &str = "nfknock_probe";

/// `priority raw`: before conntrack (-200), so `notrack` keeps knocks out of the ct table.
pub const PRIORITY_KNOCK: i32 = -300;
/// `priority filter - 10`: the gates run before the usual filter chains; they only drop.
pub const PRIORITY_GATE: i32 = -10;
/// Lifetime of a source's entry in the knock rate sets (`timeout 60s`).
pub const KNOCK_RATE_TIMEOUT_MS: u64 = 60_000;
/// Size of each knock rate set: at most this many sources are tracked at once. While a set is
/// full, knocks from a source it does not hold are dropped (fail closed) until elements expire.
pub const KNOCK_RATE_SIZE: u32 = 65_535;
/// UDP header length: `udp length` counts it, the knock lengths below do not.
const UDP_HDR: u16 = 8;
/// UDP lengths (header included) of the fwknop payloads let through when `fwknop` is on: the
/// range the fwknop parser accepts ([`crate::wire::fwknop::MIN_WIRE_LEN`] ..= `MAX_WIRE_LEN`),
/// which must fit `udp length` (16 bits).
const FWKNOP_UDP_LEN: (u16, u16) = {
    use crate::wire::fwknop::{MAX_WIRE_LEN, MIN_WIRE_LEN};
    assert!(MIN_WIRE_LEN <= MAX_WIRE_LEN && MAX_WIRE_LEN + (UDP_HDR as usize) <= u16::MAX as usize);
    (MIN_WIRE_LEN as u16 + UDP_HDR, MAX_WIRE_LEN as u16 + UDP_HDR)
};

/// Grants per batch in [`Nft::upsert`], and per element message: keeps a batch well under the
/// socket's send buffer and every nested attribute under its 64 KiB length field.
const UPSERT_BATCH: usize = 1024;
const ELEMS_PER_MSG: usize = 512;
/// How long to wait for the kernel's answer before calling it lost.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
const RECV_BUF: usize = 64 * 1024;

/// How knocks are diverted to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueBackend {
    /// The `queue` expression (`nft_queue`), on most production kernels.
    Native,
    /// The xt `NFQUEUE` target (rev 3) through `nft_compat`, for kernels without `nft_queue`.
    Compat,
}

/// What the owned table must contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesetSpec {
    pub knock_port: u16,
    pub queue: u16,
    pub backend: QueueBackend,
    /// Protected proto/ports (elements of the `protected` set).
    pub protect: Vec<Access>,
    /// UDP payload length of a native knock (every other length is dropped, unless fwknop).
    pub native_len: u16,
    /// Also let through the payload lengths the fwknop parser accepts (`FWKNOP_UDP_LEN`).
    pub fwknop: bool,
    /// Per-source knock rate, packets per second (burst 2×); 0 = no limit.
    pub rate_limit: u32,
    /// What one "source" of the rate limit is: the IPv4 source address masked to this prefix
    /// length (32 = each address)...
    pub rate_limit_v4_prefix: u8,
    /// ... and the IPv6 source address masked to this one (64 = each /64).
    pub rate_limit_v6_prefix: u8,
    /// Gate protected ports in the input hook (host services). `false` only for
    /// `nfknock serve --dry-run` without `--with-gate`: the `gate_input` chain then holds just
    /// the knock → queue rule, so a dry run closes nothing that was open.
    pub gate_input: bool,
    /// Gate DNAT-published ports in the forward hook.
    pub gate_forward: bool,
}

impl Default for RulesetSpec {
    /// The defaults of the shipped `nft/nfknock.nft`: port 62201, queue 0, protect tcp/22,
    /// native knocks of 128 bytes, fwknop lengths on, 20 knocks/s per IPv4 address and per IPv6
    /// /64, forward gate on.
    fn default() -> RulesetSpec {
        RulesetSpec {
            knock_port: 62201,
            queue: 0,
            backend: QueueBackend::Native,
            protect: vec![Access {
                proto: Proto::Tcp,
                port: 22,
            }],
            native_len: 128,
            fwknop: true,
            rate_limit: 20,
            rate_limit_v4_prefix: crate::config::DEFAULT_RATE_LIMIT_V4_PREFIX,
            rate_limit_v6_prefix: crate::config::DEFAULT_RATE_LIMIT_V6_PREFIX,
            gate_input: true,
            gate_forward: true,
        }
    }
}

/// A grant to write: `addr . proto . port` with a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element {
    pub addr: IpAddr,
    pub access: Access,
    pub timeout_ms: u64,
}

/// A grant read back from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveElement {
    pub addr: IpAddr,
    pub access: Access,
    pub timeout_ms: u64,
    /// Milliseconds until the kernel removes it.
    pub expires_ms: u64,
}

/// An nftables object, for error messages: ``set `inet nfknock allow_v4` ``.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    Table,
    Chain(&'static str),
    Set(&'static str),
    /// A whole batch (the kernel refused it before looking at its messages).
    Batch,
    /// The throw-away table of [`Nft::detect_queue_backend`].
    ProbeTable,
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Object::Table => write!(f, "table `{FAMILY} {TABLE}`"),
            Object::Chain(c) => write!(f, "chain `{FAMILY} {TABLE} {c}`"),
            Object::Set(s) => write!(f, "set `{FAMILY} {TABLE} {s}`"),
            Object::Batch => write!(f, "the nftables batch"),
            Object::ProbeTable => write!(f, "probe table `{FAMILY} {PROBE_TABLE}`"),
        }
    }
}

/// Errors of the nftables shell: which operation failed on which object, and what to do. The OS
/// error is the source, not repeated in the message (the daemon logs the chain on one line).
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot {op} the nftables netlink socket")]
    Socket {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot {op} {object}: permission denied; nfknock needs CAP_NET_ADMIN (run it as root or grant the capability)")]
    Permission { op: &'static str, object: Object },
    #[error("cannot {op} {object}: not found; load nft/nfknock.nft or run `nfknock serve` with manage_ruleset = true")]
    NotFound { op: &'static str, object: Object },
    #[error("{object} exists but not with the type and flags nfknock needs; remove the old table with `nft delete table inet nfknock` and start nfknock again")]
    Incompatible { object: Object },
    #[error("this kernel can queue packets neither with the `queue` expression (nft_queue) nor with the xt NFQUEUE target (nft_compat, xt_NFQUEUE); load one of those modules")]
    NoQueueSupport,
    #[error("grant {addr} {access} has timeout 0; a grant must expire")]
    ZeroTimeout { addr: IpAddr, access: Access },
    #[error("cannot {op} {object}")]
    Kernel {
        op: &'static str,
        object: Object,
        #[source]
        source: io::Error,
    },
}

/// A netlink socket speaking nftables.
pub struct Nft {
    sock: NlSocket,
    /// The batch being built (in one reused buffer); also numbers the requests.
    batch: Batch<Op>,
    /// A get or dump request.
    req: MsgBuf,
    rbuf: Vec<u8>,
}

impl Nft {
    /// Open the command socket (not subscribed to any event group).
    pub fn open() -> Result<Nft, NftError> {
        let sock = NlSocket::open(0).map_err(|e| NftError::Socket {
            op: "open",
            source: e.source,
        })?;
        // A restore batch after a flush may carry every live grant in one atomic message; let
        // it be larger than the default send buffer (best effort: needs CAP_NET_ADMIN).
        let _ = sock.set_sndbuf(8 << 20);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Nft {
            sock,
            batch: Batch::new(NFNL_SUBSYS_NFTABLES, UPSERT_BATCH * 64 + 256, seed),
            req: MsgBuf::with_capacity(256),
            rbuf: vec![0; RECV_BUF],
        })
    }

    /// The netlink port id of this socket: the events it causes carry it, and
    /// [`NftEvents::open`] is given it so that they are not taken for someone else's.
    pub fn portid(&self) -> u32 {
        self.sock.portid()
    }
}

fn kernel_error(op: &'static str, object: Object, errno: i32) -> NftError {
    match errno {
        libc::EPERM | libc::EACCES => NftError::Permission { op, object },
        libc::ENOENT => NftError::NotFound { op, object },
        libc::EEXIST if matches!(object, Object::Set(_)) && op == "create" => {
            NftError::Incompatible { object }
        }
        _ => NftError::Kernel {
            op,
            object,
            source: io::Error::from_raw_os_error(errno),
        },
    }
}

#[cfg(test)]
mod tests;
