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
//! | `gateway.rs` | gateway grants (`FORWARD_ALL`): their sets, `source . network` elements | none |
//! | `prefilter.rs` | the junk filter's sets and counters: key hints, fwknop source intervals, stats | yes |
//! | `rules.rs` | the rules (the knock chain and the gate), as netlink and as nft text | none |
//! | `events.rs` | [`NftEvents`]: notice a flush of our table by someone else | yes |
//! | `batch.rs` | message builders on [`Nft`], batch commit, get/dump requests | commit, request |
//! | `expr.rs` | nf_tables expressions | none |
//! | `uapi.rs` | nf_tables numbers | none |

mod batch;
mod events;
mod expr;
mod gateway;
mod nat;
mod prefilter;
mod rules;
mod sets;
mod table;
pub mod uapi;

pub use events::ElemEvent;
pub use events::NftEvents;
pub use gateway::gateway_keys;
pub use prefilter::{interval_elements, merged_ranges};
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
use crate::access::{Access, GatewayTo, NatTarget, Proto};
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
/// The key hints valid right now (`typeof @th,72,64`: the 8 bytes after a native knock's
/// version byte), each with the timeout of its epoch; filled by the daemon.
pub const SET_KNOCK_HINTS: &str = "knock_hints";
/// The union of the fwknop clients' `sources`, per family (`flags interval`).
pub const SET_FWKNOP_SRC_V4: &str = "fwknop_src_v4";
pub const SET_FWKNOP_SRC_V6: &str = "fwknop_src_v6";
/// Named counters of the packets the knock chain drops as junk before the queue: native-length
/// ones whose hint is not in [`SET_KNOCK_HINTS`], fwknop-length ones from outside the fwknop
/// sources.
pub const COUNTER_JUNK_NATIVE: &str = "junk_native";
pub const COUNTER_JUNK_FWKNOP: &str = "junk_fwknop";
pub const CHAIN_KNOCK: &str = "knock";
pub const CHAIN_INPUT: &str = "gate_input";
pub const CHAIN_FORWARD: &str = "gate_forward";
/// NAT grants (only while some client has `nat`): `source . proto . port` → target address and
/// port, each element with the grant's timeout.
pub const MAP_NAT_V4: &str = "nat_v4";
pub const MAP_NAT_V6: &str = "nat_v6";
/// Forwarded flows whose source is masqueraded: `source . proto . port` (the port connected to,
/// as the grant), with timeouts.
pub const SET_MASQUERADE_V4: &str = "masquerade_v4";
pub const SET_MASQUERADE_V6: &str = "masquerade_v6";
/// Forwarded flows whose source is rewritten: `source . proto . port` → address.
pub const MAP_SNAT_V4: &str = "snat_v4";
pub const MAP_SNAT_V6: &str = "snat_v6";
/// Routed NAT grants (`dnat = false`): `source . target . proto . port`, with timeouts...
pub const SET_FORWARD_V4: &str = "forward_v4";
pub const SET_FORWARD_V6: &str = "forward_v6";
/// ... and the targets the forward gate closes to everyone else: `target . proto . port`.
pub const SET_FORWARD_PROTECTED_V4: &str = "forward_protected_v4";
pub const SET_FORWARD_PROTECTED_V6: &str = "forward_protected_v6";
/// Gateway grants (config `gateway`, fwknop `FORWARD_ALL`): the union of the gateway networks,
/// which the forward gate closes to every source without a gateway grant (`flags interval`)...
pub const SET_GATEWAY_NETS_V4: &str = "gateway_nets_v4";
pub const SET_GATEWAY_NETS_V6: &str = "gateway_nets_v6";
/// ... the grants, `source . network` with timeouts (`flags interval, timeout`) ...
pub const SET_GATEWAY_V4: &str = "gateway_v4";
pub const SET_GATEWAY_V6: &str = "gateway_v6";
/// ... and those whose flows are masqueraded, the same keys.
pub const SET_GATEWAY_MASQUERADE_V4: &str = "gateway_masquerade_v4";
pub const SET_GATEWAY_MASQUERADE_V6: &str = "gateway_masquerade_v6";
/// ... and those whose source is rewritten: `source . network` → address.
pub const MAP_GATEWAY_SNAT_V4: &str = "gateway_snat_v4";
pub const MAP_GATEWAY_SNAT_V6: &str = "gateway_snat_v6";
pub const CHAIN_NAT_PREROUTING: &str = "nat_prerouting";
pub const CHAIN_NAT_POSTROUTING: &str = "nat_postrouting";
/// `priority dstnat` and `priority srcnat` (nft's names for NF_IP_PRI_NAT_DST/SRC).
pub const PRIORITY_DSTNAT: i32 = -100;
pub const PRIORITY_SRCNAT: i32 = 100;
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
/// Byte offset of the key hint in the transport header of a native knock: the 8-byte UDP
/// header, then the version byte (docs/PROTOCOL.md): nft's `@th,72,64`.
const HINT_TH_OFFSET: u32 = 9;
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
    /// Queues `queue .. queue + queue_total`; the kernel picks one per flow (1 = just `queue`).
    pub queue_total: u16,
    pub backend: QueueBackend,
    /// Protected proto/ports (elements of the `protected` set).
    pub protect: Vec<Access>,
    /// UDP payload length of a native knock (every other length is dropped, unless fwknop).
    pub native_len: u16,
    /// Also let through the payload lengths the fwknop parser accepts (`FWKNOP_UDP_LEN`).
    pub fwknop: bool,
    /// Drop native-length packets whose key hint is not in [`SET_KNOCK_HINTS`] before the
    /// queue (`prefilter`).
    pub prefilter: bool,
    /// With `fwknop` and `prefilter`: the fwknop clients' `sources`; fwknop-length packets from
    /// elsewhere are dropped before the queue. Elements of [`SET_FWKNOP_SRC_V4`]/`_V6`.
    pub fwknop_sources: Vec<ipnet::IpNet>,
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
    /// The NAT maps and chains (some client has `nat`): grants may carry a NAT target.
    pub nat: bool,
    /// Routed targets (`dnat = false`) the forward gate closes (with `nat` and `gate_forward`).
    pub forward_targets: Vec<(IpAddr, Access)>,
    /// The union of the clients' `gateway` networks (sorted, no repeats): with `gate_forward`,
    /// the gateway sets and the forward gate that closes these networks to every source
    /// without a gateway grant; with `nat` (which a gateway implies), its masquerade rules.
    pub gateway_nets: Vec<ipnet::IpNet>,
}

impl Default for RulesetSpec {
    /// The defaults of the shipped `nft/nfknock.nft`: port 62201, queue 0, protect tcp/22,
    /// native knocks of 128 bytes, the key-hint prefilter on, fwknop lengths on from anywhere, 20 knocks/s per IPv4 address and per IPv6
    /// /64, forward gate on.
    fn default() -> RulesetSpec {
        RulesetSpec {
            knock_port: 62201,
            queue: 0,
            queue_total: 1,
            backend: QueueBackend::Native,
            protect: vec![Access {
                proto: Proto::Tcp,
                port: 22,
            }],
            native_len: 128,
            fwknop: true,
            prefilter: true,
            fwknop_sources: vec![
                ipnet::IpNet::V4(ipnet::Ipv4Net::default()),
                ipnet::IpNet::V6(ipnet::Ipv6Net::default()),
            ],
            rate_limit: 20,
            rate_limit_v4_prefix: crate::config::DEFAULT_RATE_LIMIT_V4_PREFIX,
            rate_limit_v6_prefix: crate::config::DEFAULT_RATE_LIMIT_V6_PREFIX,
            gate_input: true,
            gate_forward: true,
            nat: false,
            forward_targets: Vec::new(),
            gateway_nets: Vec::new(),
        }
    }
}

/// A grant to write: `addr . proto . port` with a timeout; with `nat`, also its translation
/// (DNAT map element, and masquerade/SNAT element) with the same timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element {
    pub addr: IpAddr,
    pub access: Access,
    pub timeout_ms: u64,
    pub nat: Option<NatTarget>,
    /// A gateway grant: only `addr . network` goes in (the gateway sets), nothing else.
    pub gateway: Option<GatewayTo>,
}

/// One key hint for [`SET_KNOCK_HINTS`]: the 8 bytes, and the milliseconds until its epoch
/// leaves the acceptance window (the element's timeout).
pub type HintElement = ([u8; 8], u64);

/// The prefilter as the kernel sees it, for `nfknock status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrefilterStats {
    /// Elements in [`SET_KNOCK_HINTS`].
    pub hints: usize,
    /// (packets, bytes) dropped by the hint rule ([`COUNTER_JUNK_NATIVE`]).
    pub junk_native: (u64, u64),
    /// (packets, bytes) dropped by the fwknop source rule ([`COUNTER_JUNK_FWKNOP`]).
    pub junk_fwknop: (u64, u64),
}

/// A grant read back from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveElement {
    pub addr: IpAddr,
    pub access: Access,
    pub timeout_ms: u64,
    /// Milliseconds until the kernel removes it.
    pub expires_ms: u64,
    /// Its target, if the `nat_v4`/`nat_v6` map holds one, or a routed grant's from the
    /// `forward_v4`/`forward_v6` set (the source translation is not read back: `Keep`).
    pub nat: Option<NatTarget>,
    /// A gateway grant from `gateway_v4`/`gateway_v6`: its network (the source translation is
    /// not read back: `Keep`); `access` is the one its element's comment names.
    pub gateway: Option<GatewayTo>,
}

/// An nftables object, for error messages: ``set `inet nfknock allow_v4` ``.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    Table,
    Chain(&'static str),
    Set(&'static str),
    /// A named counter.
    Counter(&'static str),
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
            Object::Counter(c) => write!(f, "counter `{FAMILY} {TABLE} {c}`"),
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
