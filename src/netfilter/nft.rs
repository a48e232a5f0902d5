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

pub mod wire;

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;
use std::time::Duration;

use super::netlink::*;
use crate::access::{Access, Proto};
use wire::*;

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
/// fwknop payload lengths accepted when `fwknop` is on (fwknop's `MIN_SPA_DATA_SIZE` and
/// `MAX_SPA_PACKET_LEN` - 1, lib/fko_limits.h of fwknop 2.6).
pub const FWKNOP_MIN_LEN: u16 = 140;
pub const FWKNOP_MAX_LEN: u16 = 1499;

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
    /// Also let through fwknop lengths (140..=1499 bytes of payload).
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

/// Errors of the nftables shell: which operation failed on which object, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot {op} the nftables netlink socket: {source}")]
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
    #[error("cannot {op} {object}: {source}")]
    Kernel {
        op: &'static str,
        object: Object,
        #[source]
        source: io::Error,
    },
}

/// Port ids of the command sockets of this process: their own changes are not "external".
static OWN_PORTIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn own_portids() -> Vec<u32> {
    OWN_PORTIDS.lock().map(|v| v.clone()).unwrap_or_default()
}

/// Name of the throw-away table used to probe for `nft_queue`.
const PROBE_TABLE: &str = "nfknock_probe";

/// What one message of a batch does, to what: a refusal names it.
#[derive(Debug, Clone, Copy)]
struct Op {
    op: &'static str,
    object: Object,
}

type BatchFail = BatchError<Op>;

/// A netlink socket speaking nftables.
pub struct Nft {
    sock: NlSocket,
    /// The batch being built (in one reused buffer); also numbers the requests.
    batch: Batch<Op>,
    /// A get or dump request.
    req: MsgBuf,
    rbuf: Vec<u8>,
}

impl Drop for Nft {
    fn drop(&mut self) {
        if let Ok(mut v) = OWN_PORTIDS.lock() {
            v.retain(|p| *p != self.sock.portid());
        }
    }
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
        if let Ok(mut v) = OWN_PORTIDS.lock() {
            v.push(sock.portid());
        }
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

    /// The netlink port id of this socket (events it causes carry it).
    pub fn portid(&self) -> u32 {
        self.sock.portid()
    }

    // ---- batch building ----

    fn batch_start(&mut self) {
        self.batch.start();
    }

    /// Begin an nf_tables message of the batch; remembers what it does for error messages.
    fn begin(
        &mut self,
        msg: u16,
        flags: u16,
        family: u8,
        op: &'static str,
        object: Object,
    ) -> usize {
        self.batch.begin(msg, flags, family, Op { op, object })
    }

    fn add_table(&mut self, family: u8, name: &str, object: Object) {
        let s = self.begin(NFT_MSG_NEWTABLE, NLM_F_CREATE, family, "create", object);
        self.batch.msg().attr_str(NFTA_TABLE_NAME, name);
        self.batch.msg().end(s);
    }

    fn del_table(&mut self, family: u8, name: &str, object: Object) {
        let s = self.begin(NFT_MSG_DELTABLE, 0, family, "delete", object);
        self.batch.msg().attr_str(NFTA_TABLE_NAME, name);
        self.batch.msg().end(s);
    }

    fn add_chain(&mut self, table: &str, name: &'static str, hook: Option<(u32, i32)>) {
        let s = self.begin(
            NFT_MSG_NEWCHAIN,
            NLM_F_CREATE,
            NFPROTO_INET,
            "create",
            Object::Chain(name),
        );
        self.batch.msg().attr_str(NFTA_CHAIN_TABLE, table);
        self.batch.msg().attr_str(NFTA_CHAIN_NAME, name);
        if let Some((hooknum, prio)) = hook {
            self.batch.msg().attr_str(NFTA_CHAIN_TYPE, "filter");
            self.batch.msg().attr_u32(NFTA_CHAIN_POLICY, NF_ACCEPT);
            let h = self.batch.msg().nest(NFTA_CHAIN_HOOK);
            self.batch.msg().attr_u32(NFTA_HOOK_HOOKNUM, hooknum);
            self.batch
                .msg()
                .attr(NFTA_HOOK_PRIORITY, &prio.to_be_bytes());
            self.batch.msg().nest_end(h);
        }
        self.batch.msg().end(s);
    }

    fn del_chain(&mut self, name: &'static str) {
        let s = self.begin(
            NFT_MSG_DELCHAIN,
            0,
            NFPROTO_INET,
            "delete",
            Object::Chain(name),
        );
        self.batch.msg().attr_str(NFTA_CHAIN_TABLE, TABLE);
        self.batch.msg().attr_str(NFTA_CHAIN_NAME, name);
        self.batch.msg().end(s);
    }

    /// `flush chain`: a DELRULE naming only the chain deletes all its rules.
    fn flush_chain(&mut self, name: &'static str) {
        let s = self.begin(
            NFT_MSG_DELRULE,
            0,
            NFPROTO_INET,
            "flush",
            Object::Chain(name),
        );
        self.batch.msg().attr_str(NFTA_RULE_TABLE, TABLE);
        self.batch.msg().attr_str(NFTA_RULE_CHAIN, name);
        self.batch.msg().end(s);
    }

    fn add_rule(&mut self, table: &str, chain: &'static str, exprs: impl FnOnce(&mut MsgBuf)) {
        let s = self.begin(
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            NFPROTO_INET,
            "add a rule to",
            Object::Chain(chain),
        );
        self.batch.msg().attr_str(NFTA_RULE_TABLE, table);
        self.batch.msg().attr_str(NFTA_RULE_CHAIN, chain);
        let n = self.batch.msg().nest(NFTA_RULE_EXPRESSIONS);
        exprs(self.batch.msg());
        self.batch.msg().nest_end(n);
        self.batch.msg().end(s);
    }

    fn add_set(&mut self, def: &SetDef) {
        let s = self.begin(
            NFT_MSG_NEWSET,
            NLM_F_CREATE,
            NFPROTO_INET,
            "create",
            Object::Set(def.name),
        );
        self.batch.msg().attr_str(NFTA_SET_TABLE, TABLE);
        self.batch.msg().attr_str(NFTA_SET_NAME, def.name);
        self.batch.msg().attr_u32(NFTA_SET_FLAGS, def.flags);
        self.batch.msg().attr_u32(NFTA_SET_KEY_TYPE, def.key_type);
        self.batch.msg().attr_u32(NFTA_SET_KEY_LEN, def.key_len);
        // Required by nf_tables_newset even when nothing refers to the set by id.
        self.batch.msg().attr_u32(NFTA_SET_ID, def.id);
        if let Some((timeout_ms, size)) = def.dynamic {
            let d = self.batch.msg().nest(NFTA_SET_DESC);
            self.batch.msg().attr_u32(NFTA_SET_DESC_SIZE, size);
            self.batch.msg().nest_end(d);
            self.batch.msg().attr_u64(NFTA_SET_TIMEOUT, timeout_ms);
        }
        self.batch.msg().attr(NFTA_SET_USERDATA, def.userdata);
        self.batch.msg().end(s);
    }

    /// `flush set`: a DELSETELEM without an element list removes every element.
    fn flush_set(&mut self, name: &'static str) {
        let s = self.begin(
            NFT_MSG_DELSETELEM,
            0,
            NFPROTO_INET,
            "flush",
            Object::Set(name),
        );
        self.batch.msg().attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
        self.batch.msg().attr_str(NFTA_SET_ELEM_LIST_SET, name);
        self.batch.msg().end(s);
    }

    /// One NEWSETELEM message with `NLM_F_CREATE` and without `NLM_F_EXCL`: adding an element
    /// that exists is not an error. With a timeout, `NFTA_SET_ELEM_EXPIRATION` = timeout is
    /// sent too: since Linux 6.12 (`nft_set_elem_update_timeout` path of nft_add_set_elem),
    /// re-adding an element updates its timeout/expiration only when they are given, so a
    /// re-knock restarts the timer; older kernels keep the old expiry.
    fn add_elements<'k>(
        &mut self,
        set: &'static str,
        keys: impl Iterator<Item = (&'k [u8], Option<u64>)>,
    ) {
        let s = self.begin(
            NFT_MSG_NEWSETELEM,
            NLM_F_CREATE,
            NFPROTO_INET,
            "add elements to",
            Object::Set(set),
        );
        self.batch.msg().attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
        self.batch.msg().attr_str(NFTA_SET_ELEM_LIST_SET, set);
        let list = self.batch.msg().nest(NFTA_SET_ELEM_LIST_ELEMENTS);
        for (key, timeout) in keys {
            let e = self.batch.msg().nest(NFTA_LIST_ELEM);
            self.batch.msg().data_value(NFTA_SET_ELEM_KEY, key);
            if let Some(ms) = timeout {
                self.batch.msg().attr_u64(NFTA_SET_ELEM_TIMEOUT, ms);
                self.batch.msg().attr_u64(NFTA_SET_ELEM_EXPIRATION, ms);
            }
            self.batch.msg().nest_end(e);
        }
        self.batch.msg().nest_end(list);
        self.batch.msg().end(s);
    }

    /// Add `elems` (all of one family) to their allow set, [`ELEMS_PER_MSG`] per message.
    fn add_grants(&mut self, elems: &[Element], v6: bool) {
        let set = if v6 { SET_ALLOW_V6 } else { SET_ALLOW_V4 };
        let mut it = elems.iter().filter(|e| e.addr.is_ipv6() == v6).peekable();
        while it.peek().is_some() {
            let chunk = it.by_ref().take(ELEMS_PER_MSG);
            // Keys are built on the stack one by one: no allocation on the hot path.
            let s = self.begin(
                NFT_MSG_NEWSETELEM,
                NLM_F_CREATE,
                NFPROTO_INET,
                "add elements to",
                Object::Set(set),
            );
            self.batch.msg().attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
            self.batch.msg().attr_str(NFTA_SET_ELEM_LIST_SET, set);
            let list = self.batch.msg().nest(NFTA_SET_ELEM_LIST_ELEMENTS);
            for e in chunk {
                let (key, len) = element_key(e.addr, e.access);
                let n = self.batch.msg().nest(NFTA_LIST_ELEM);
                self.batch
                    .msg()
                    .data_value(NFTA_SET_ELEM_KEY, key.get(..len).unwrap_or(&[]));
                self.batch
                    .msg()
                    .attr_u64(NFTA_SET_ELEM_TIMEOUT, e.timeout_ms);
                self.batch
                    .msg()
                    .attr_u64(NFTA_SET_ELEM_EXPIRATION, e.timeout_ms);
                self.batch.msg().nest_end(n);
            }
            self.batch.msg().nest_end(list);
            self.batch.msg().end(s);
        }
    }

    /// Remove `elems` (all of one family) from their allow set, [`ELEMS_PER_MSG`] per message:
    /// a DELSETELEM naming each element's key (without an element list it would flush the set).
    fn del_grants(&mut self, elems: &[Element], v6: bool) {
        let set = if v6 { SET_ALLOW_V6 } else { SET_ALLOW_V4 };
        let mut it = elems.iter().filter(|e| e.addr.is_ipv6() == v6).peekable();
        while it.peek().is_some() {
            let chunk = it.by_ref().take(ELEMS_PER_MSG);
            let s = self.begin(
                NFT_MSG_DELSETELEM,
                0,
                NFPROTO_INET,
                "delete elements from",
                Object::Set(set),
            );
            self.batch.msg().attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
            self.batch.msg().attr_str(NFTA_SET_ELEM_LIST_SET, set);
            let list = self.batch.msg().nest(NFTA_SET_ELEM_LIST_ELEMENTS);
            for e in chunk {
                let (key, len) = element_key(e.addr, e.access);
                let n = self.batch.msg().nest(NFTA_LIST_ELEM);
                self.batch
                    .msg()
                    .data_value(NFTA_SET_ELEM_KEY, key.get(..len).unwrap_or(&[]));
                self.batch.msg().nest_end(n);
            }
            self.batch.msg().nest_end(list);
            self.batch.msg().end(s);
        }
    }

    /// Close the batch, send it, and wait for the kernel's verdict on it (see
    /// [`Batch::commit`]).
    fn commit(&mut self) -> Result<(), BatchFail> {
        self.batch.commit(&self.sock, &mut self.rbuf, REPLY_TIMEOUT)
    }

    // ---- requests (get/dump) ----

    /// Send the request in `self.req` (sequence number `seq`) and hand every reply message to
    /// `each`. Returns the errno of a failed request.
    fn request(
        &mut self,
        seq: u32,
        dump: bool,
        each: impl FnMut(&Msg<'_>),
    ) -> Result<Result<(), i32>, io::Error> {
        self.sock.request(
            self.req.bytes(),
            seq,
            dump,
            &mut self.rbuf,
            REPLY_TIMEOUT,
            each,
        )
    }

    /// Start a get/dump request of nf_tables message `msg` in `self.req` (closed with
    /// `self.req.end(0)`); returns its sequence number.
    fn begin_request(&mut self, msg: u16, flags: u16) -> u32 {
        let seq = self.batch.next_seq();
        self.req.clear();
        self.req.begin(
            nfnl_type(NFNL_SUBSYS_NFTABLES, msg),
            flags,
            seq,
            NFPROTO_INET,
            0,
        );
        seq
    }

    fn get_object(
        &mut self,
        msg: u16,
        name_attr: u16,
        chain_or_set: Option<&str>,
    ) -> Result<Result<(), i32>, io::Error> {
        let seq = self.begin_request(msg, NLM_F_ACK);
        match chain_or_set {
            None => self.req.attr_str(NFTA_TABLE_NAME, TABLE),
            Some(name) => {
                self.req.attr_str(1, TABLE); // NFTA_{CHAIN,SET}_TABLE
                self.req.attr_str(name_attr, name);
            }
        }
        self.req.end(0);
        self.request(seq, false, |_| {})
    }

    /// Is the owned table present?
    pub fn table_exists(&mut self) -> Result<bool, NftError> {
        let op = "look up";
        match self.get_object(NFT_MSG_GETTABLE, NFTA_TABLE_NAME, None) {
            Ok(Ok(())) => Ok(true),
            Ok(Err(e)) if e == libc::ENOENT => Ok(false),
            Ok(Err(e)) => Err(kernel_error(op, Object::Table, e)),
            Err(source) => Err(NftError::Socket { op: "use", source }),
        }
    }

    fn chain_exists(&mut self, chain: &'static str) -> Result<bool, NftError> {
        match self.get_object(NFT_MSG_GETCHAIN, NFTA_CHAIN_NAME, Some(chain)) {
            Ok(Ok(())) => Ok(true),
            Ok(Err(e)) if e == libc::ENOENT => Ok(false),
            Ok(Err(e)) => Err(kernel_error("look up", Object::Chain(chain), e)),
            Err(source) => Err(NftError::Socket { op: "use", source }),
        }
    }

    /// `(key type, key length, flags)` of an existing set of our table, `None` if absent.
    fn set_shape(&mut self, set: &'static str) -> Result<Option<(u32, u32, u32)>, NftError> {
        let seq = self.begin_request(NFT_MSG_GETSET, NLM_F_ACK);
        self.req.attr_str(NFTA_SET_TABLE, TABLE);
        self.req.attr_str(NFTA_SET_NAME, set);
        self.req.end(0);
        let mut shape = None;
        let r = self.request(seq, false, |m| {
            let Some((_, body)) = nfgen(m.payload) else {
                return;
            };
            let u = |t| attr(body, t).and_then(be_u32);
            if let (Some(kt), Some(kl), Some(fl)) =
                (u(NFTA_SET_KEY_TYPE), u(NFTA_SET_KEY_LEN), u(NFTA_SET_FLAGS))
            {
                shape = Some((kt, kl, fl));
            }
        });
        match r {
            Ok(Ok(())) => Ok(shape),
            Ok(Err(e)) if e == libc::ENOENT => Ok(None),
            Ok(Err(e)) => Err(kernel_error("look up", Object::Set(set), e)),
            Err(source) => Err(NftError::Socket { op: "use", source }),
        }
    }

    // ---- public operations ----

    /// Does this kernel have `nft_queue`? Probes in one self-cleaning batch (create a
    /// throw-away table with a `queue` rule, then delete the table): the kernel answers
    /// `ENOENT` for an expression type it cannot load, and aborts the whole batch, so nothing
    /// is left behind either way. If `queue` is missing, the xt `NFQUEUE` target is probed the
    /// same way; if both are missing, [`NftError::NoQueueSupport`].
    pub fn detect_queue_backend(&mut self) -> Result<QueueBackend, NftError> {
        for backend in [QueueBackend::Native, QueueBackend::Compat] {
            self.batch_start();
            self.add_table(NFPROTO_INET, PROBE_TABLE, Object::ProbeTable);
            let s = self.begin(
                NFT_MSG_NEWCHAIN,
                NLM_F_CREATE,
                NFPROTO_INET,
                "create a chain in",
                Object::ProbeTable,
            );
            self.batch.msg().attr_str(NFTA_CHAIN_TABLE, PROBE_TABLE);
            self.batch.msg().attr_str(NFTA_CHAIN_NAME, "probe");
            let n = self.batch.msg().nest(NFTA_CHAIN_HOOK);
            self.batch
                .msg()
                .attr_u32(NFTA_HOOK_HOOKNUM, NF_INET_LOCAL_IN);
            self.batch
                .msg()
                .attr(NFTA_HOOK_PRIORITY, &0i32.to_be_bytes());
            self.batch.msg().nest_end(n);
            self.batch.msg().attr_str(NFTA_CHAIN_TYPE, "filter");
            self.batch.msg().end(s);
            let s = self.begin(
                NFT_MSG_NEWRULE,
                NLM_F_CREATE | NLM_F_APPEND,
                NFPROTO_INET,
                "add a queue rule to",
                Object::ProbeTable,
            );
            self.batch.msg().attr_str(NFTA_RULE_TABLE, PROBE_TABLE);
            self.batch.msg().attr_str(NFTA_RULE_CHAIN, "probe");
            let n = self.batch.msg().nest(NFTA_RULE_EXPRESSIONS);
            match backend {
                QueueBackend::Native => self.batch.msg().e_queue(0),
                QueueBackend::Compat => self.batch.msg().e_compat_nfqueue(0),
            }
            self.batch.msg().nest_end(n);
            self.batch.msg().end(s);
            self.del_table(NFPROTO_INET, PROBE_TABLE, Object::ProbeTable);
            match self.commit() {
                Ok(()) => return Ok(backend),
                // ENOENT: no such expression/target; EOPNOTSUPP/EINVAL: compat refused here.
                Err(BatchError::Kernel { errno, .. })
                    if errno == libc::ENOENT
                        || errno == libc::EOPNOTSUPP
                        || errno == libc::EINVAL => {}
                Err(f) => return Err(batch_error(f)),
            }
        }
        Err(NftError::NoQueueSupport)
    }

    /// Create or refresh the owned table in one atomic batch: the table and its sets are
    /// created if absent (existing allow-set elements, i.e. live grants, survive), each chain's
    /// rules are made exactly `spec` (flush + add in the same batch), the `protected` set's
    /// elements are replaced, and `restore` grants are added (after someone flushed the
    /// ruleset). Idempotent.
    pub fn install(&mut self, spec: &RulesetSpec, restore: &[Element]) -> Result<(), NftError> {
        if let Some(e) = restore.iter().find(|e| e.timeout_ms == 0) {
            return Err(NftError::ZeroTimeout {
                addr: e.addr,
                access: e.access,
            });
        }
        // The kernel accepts a NEWSET for an existing set of another shape silently on older
        // kernels (6.x compares; earlier ones just return 0), so compare ourselves first.
        for def in SETS {
            if let Some((kt, kl, fl)) = self.set_shape(def.name)? {
                if kt != def.key_type || kl != def.key_len || fl != def.flags {
                    return Err(NftError::Incompatible {
                        object: Object::Set(def.name),
                    });
                }
            }
        }
        let drop_forward = !spec.gate_forward && self.chain_exists(CHAIN_FORWARD)?;

        self.batch_start();
        self.add_table(NFPROTO_INET, TABLE, Object::Table);
        for def in SETS {
            self.add_set(def);
        }
        self.add_chain(
            TABLE,
            CHAIN_KNOCK,
            Some((NF_INET_PRE_ROUTING, PRIORITY_KNOCK)),
        );
        self.flush_chain(CHAIN_KNOCK);
        self.add_chain(TABLE, CHAIN_INPUT, Some((NF_INET_LOCAL_IN, PRIORITY_GATE)));
        self.flush_chain(CHAIN_INPUT);
        if spec.gate_forward {
            self.add_chain(TABLE, CHAIN_FORWARD, Some((NF_INET_FORWARD, PRIORITY_GATE)));
            self.flush_chain(CHAIN_FORWARD);
        } else if drop_forward {
            self.flush_chain(CHAIN_FORWARD);
            self.del_chain(CHAIN_FORWARD);
        }
        rules::add_all(self, spec);

        self.flush_set(SET_PROTECTED);
        if !spec.protect.is_empty() {
            let keys: Vec<[u8; 8]> = spec.protect.iter().map(|a| protected_key(*a)).collect();
            self.add_elements(SET_PROTECTED, keys.iter().map(|k| (&k[..], None)));
        }
        self.add_grants(restore, false);
        self.add_grants(restore, true);
        self.commit().map_err(batch_error)
    }

    /// Add or refresh grants: one batch per [`UPSERT_BATCH`] grants (atomic within a batch).
    /// IPv4 grants go to `allow_v4`, IPv6 grants to `allow_v6`. A grant that exists gets the
    /// new timeout (and, on kernels ≥ 6.12, a restarted timer).
    pub fn upsert(&mut self, elems: &[Element]) -> Result<(), NftError> {
        if let Some(e) = elems.iter().find(|e| e.timeout_ms == 0) {
            return Err(NftError::ZeroTimeout {
                addr: e.addr,
                access: e.access,
            });
        }
        for chunk in elems.chunks(UPSERT_BATCH) {
            self.batch_start();
            self.add_grants(chunk, false);
            self.add_grants(chunk, true);
            self.commit().map_err(batch_error)?;
        }
        Ok(())
    }

    /// Remove grants from the allow sets (a revocation): one batch per [`UPSERT_BATCH`] grants.
    /// A grant that is not there (the kernel expired it a moment before our own clock did, or
    /// an admin deleted it) is no error: DELSETELEM answers ENOENT for it and aborts its whole
    /// batch, so that batch is retried one grant at a time and the absent ones are skipped.
    /// (`NFT_MSG_DESTROYSETELEM`, which ignores absent elements, needs Linux 6.3.)
    pub fn delete(&mut self, elems: &[Element]) -> Result<(), NftError> {
        for chunk in elems.chunks(UPSERT_BATCH) {
            match self.delete_batch(chunk) {
                Err(BatchError::Kernel { errno, .. }) if errno == libc::ENOENT => {
                    for e in chunk {
                        match self.delete_batch(std::slice::from_ref(e)) {
                            Err(BatchError::Kernel { errno, .. }) if errno == libc::ENOENT => {}
                            r => r.map_err(batch_error)?,
                        }
                    }
                }
                r => r.map_err(batch_error)?,
            }
        }
        Ok(())
    }

    fn delete_batch(&mut self, elems: &[Element]) -> Result<(), BatchFail> {
        self.batch_start();
        self.del_grants(elems, false);
        self.del_grants(elems, true);
        self.commit()
    }

    /// Live grants of both allow sets.
    pub fn list(&mut self) -> Result<Vec<LiveElement>, NftError> {
        let mut out = Vec::new();
        for (set, v6) in [(SET_ALLOW_V4, false), (SET_ALLOW_V6, true)] {
            let seq = self.begin_request(NFT_MSG_GETSETELEM, NLM_F_DUMP);
            self.req.attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
            self.req.attr_str(NFTA_SET_ELEM_LIST_SET, set);
            self.req.end(0);
            let r = self.request(seq, true, |m| {
                let Some((_, body)) = nfgen(m.payload) else {
                    return;
                };
                let Some(list) = attr(body, NFTA_SET_ELEM_LIST_ELEMENTS) else {
                    return;
                };
                for (_, elem) in attrs(list) {
                    if let Some(live) = parse_live(elem, v6) {
                        out.push(live);
                    }
                }
            });
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(kernel_error("list the elements of", Object::Set(set), e))
                }
                Err(source) => return Err(NftError::Socket { op: "use", source }),
            }
        }
        Ok(out)
    }

    /// Delete the owned table (and with it every grant). Absent already is fine.
    pub fn remove_table(&mut self) -> Result<(), NftError> {
        self.batch_start();
        self.del_table(NFPROTO_INET, TABLE, Object::Table);
        match self.commit() {
            Ok(()) => Ok(()),
            Err(BatchError::Kernel { errno, .. }) if errno == libc::ENOENT => Ok(()),
            Err(f) => Err(batch_error(f)),
        }
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

fn batch_error(f: BatchFail) -> NftError {
    match f {
        BatchError::Send(source) => NftError::Socket {
            op: "send a batch on",
            source,
        },
        BatchError::Recv(source) => NftError::Socket {
            op: "receive the answer on",
            source,
        },
        BatchError::Kernel { errno, tag } => {
            let Op { op, object } = tag.unwrap_or(Op {
                op: "commit",
                object: Object::Batch,
            });
            kernel_error(op, object, errno)
        }
    }
}

/// One element of a GETSETELEM dump → a grant, if its key is one of ours.
fn parse_live(elem: &[u8], v6: bool) -> Option<LiveElement> {
    let key = attr(attr(elem, NFTA_SET_ELEM_KEY)?, NFTA_DATA_VALUE)?;
    let (addr, access) = decode_key(key, v6)?;
    let timeout_ms = attr(elem, NFTA_SET_ELEM_TIMEOUT)
        .and_then(be_u64)
        .unwrap_or(0);
    let expires_ms = attr(elem, NFTA_SET_ELEM_EXPIRATION)
        .and_then(be_u64)
        .unwrap_or(0);
    Some(LiveElement {
        addr,
        access,
        timeout_ms,
        expires_ms,
    })
}

/// The key of an allow-set element: `addr . proto . port`, each field padded to 4 bytes as
/// the kernel lays out concatenations in 32-bit registers: v4 = addr(4) | proto(1)+pad(3) |
/// port big-endian(2)+pad(2) = 12 bytes; v6 = 16 + 4 + 4 = 24 bytes. Returns the buffer and the
/// used length.
pub fn element_key(addr: IpAddr, access: Access) -> ([u8; 24], usize) {
    let mut k = [0u8; 24];
    let a = match addr {
        IpAddr::V4(a) => {
            k[..4].copy_from_slice(&a.octets());
            4
        }
        IpAddr::V6(a) => {
            k[..16].copy_from_slice(&a.octets());
            16
        }
    };
    k[a] = access.proto.number();
    k[a + 4..a + 6].copy_from_slice(&access.port.to_be_bytes());
    (k, a + 8)
}

/// The inverse of [`element_key`]; `None` for a key that is not one of ours.
pub fn decode_key(key: &[u8], v6: bool) -> Option<(IpAddr, Access)> {
    let a = if v6 { 16 } else { 4 };
    if key.len() != a + 8 {
        return None;
    }
    let addr = if v6 {
        IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(key.get(..16)?).ok()?))
    } else {
        IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(key.get(..4)?).ok()?))
    };
    let proto = Proto::from_number(*key.get(a)?)?;
    let port = u16::from_be_bytes(key.get(a + 4..a + 6)?.try_into().ok()?);
    Some((addr, Access::new(proto, port)?))
}

/// The key of a `protected` element: proto(1)+pad(3) | port big-endian(2)+pad(2).
pub fn protected_key(access: Access) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[0] = access.proto.number();
    k[4..6].copy_from_slice(&access.port.to_be_bytes());
    k
}

/// A set of the owned table.
struct SetDef {
    name: &'static str,
    /// Transaction-local id (`NFTA_SET_ID`).
    id: u32,
    /// nft's datatype ids, concatenated 6 bits apart (nftables `concat_subtype_add`):
    /// ipv4_addr 7, ipv6_addr 8, inet_proto 12, inet_service 13.
    key_type: u32,
    key_len: u32,
    flags: u32,
    /// `(default timeout ms, size)` of a dynamic set.
    dynamic: Option<(u64, u32)>,
    /// nft's `NFTNL_UDATA_SET_*` TLVs (key byte order, concatenation info), byte for byte what
    /// nft 1.0.6 sends for the same declaration, so `nft list` prints these sets as it would
    /// have printed its own. The kernel stores them opaquely.
    userdata: &'static [u8],
}

const UDATA_CONCAT: &[u8] = &[
    0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x03, 0x08, 0x00, 0x04, 0x0d, 0x00, 0x00, 0x00, 0x01, 0x00,
];
const UDATA_ADDR: &[u8] = &[0x00, 0x04, 0x02, 0x00, 0x00, 0x00];
const fn concat3(a: u32, b: u32, c: u32) -> u32 {
    (a << 12) | (b << 6) | c
}

const SETS: &[SetDef] = &[
    SetDef {
        name: SET_ALLOW_V4,
        id: 1,
        key_type: concat3(7, 12, 13),
        key_len: 12,
        flags: NFT_SET_TIMEOUT,
        dynamic: None,
        userdata: UDATA_CONCAT,
    },
    SetDef {
        name: SET_ALLOW_V6,
        id: 2,
        key_type: concat3(8, 12, 13),
        key_len: 24,
        flags: NFT_SET_TIMEOUT,
        dynamic: None,
        userdata: UDATA_CONCAT,
    },
    SetDef {
        name: SET_PROTECTED,
        id: 3,
        key_type: (12 << 6) | 13,
        key_len: 8,
        flags: 0,
        dynamic: None,
        userdata: UDATA_CONCAT,
    },
    SetDef {
        name: SET_KNOCK_RATE_V4,
        id: 4,
        key_type: 7,
        key_len: 4,
        flags: NFT_SET_TIMEOUT | NFT_SET_EVAL,
        dynamic: Some((KNOCK_RATE_TIMEOUT_MS, KNOCK_RATE_SIZE)),
        userdata: UDATA_ADDR,
    },
    SetDef {
        name: SET_KNOCK_RATE_V6,
        id: 5,
        key_type: 8,
        key_len: 16,
        flags: NFT_SET_TIMEOUT | NFT_SET_EVAL,
        dynamic: Some((KNOCK_RATE_TIMEOUT_MS, KNOCK_RATE_SIZE)),
        userdata: UDATA_ADDR,
    },
];

mod rules;

pub use rules::render;

/// Subscription to nftables ruleset events (`NFNLGRP_NFTABLES`), to notice a flush.
pub struct NftEvents {
    sock: NlSocket,
    buf: Vec<u8>,
}

impl NftEvents {
    /// Subscribe. A socket filter drops, in the kernel, every event caused by an [`Nft`] of
    /// this process opened before this call (our own grants and installs), so draining stays
    /// cheap however many grants are written; [`NftEvents::drain`] ignores the others by port.
    pub fn open() -> Result<NftEvents, NftError> {
        let sock = NlSocket::open(1 << (NFNLGRP_NFTABLES - 1)).map_err(|e| NftError::Socket {
            op: "subscribe to nftables events with",
            source: e.source,
        })?;
        let _ = sock.set_rcvbuf(1 << 20);
        let own = own_portids();
        if !own.is_empty() {
            sock.ignore_senders(&own)
                .map_err(|source| NftError::Socket {
                    op: "attach the event filter to",
                    source,
                })?;
        }
        Ok(NftEvents {
            sock,
            buf: vec![0; RECV_BUF],
        })
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Drain pending events without blocking; true if our table (or a chain, rule or set of
    /// it, or the `protected` set's elements) was deleted or flushed by someone else — or if
    /// events were lost (`ENOBUFS`), since then nobody knows.
    pub fn drain(&mut self) -> Result<bool, NftError> {
        let own = own_portids();
        let mut hit = false;
        loop {
            match self.sock.try_recv(&mut self.buf) {
                Ok(None) => return Ok(hit),
                Ok(Some(Recv::Overrun)) => hit = true,
                Ok(Some(Recv::Datagram(d))) => {
                    hit |= messages(d)
                        .map_while(Result::ok)
                        .any(|m| is_external_removal(&m, &own));
                }
                Err(source) => {
                    return Err(NftError::Socket {
                        op: "read nftables events from",
                        source,
                    })
                }
            }
        }
    }
}

/// Is `m` the deletion of our table or of something in it, by someone other than us?
fn is_external_removal(m: &Msg<'_>, own: &[u32]) -> bool {
    if m.subsys() != NFNL_SUBSYS_NFTABLES || (m.pid != 0 && own.contains(&m.pid)) {
        return false;
    }
    let msg = m.nfnl_msg();
    let Some((family, body)) = nfgen(m.payload) else {
        return false;
    };
    if family != NFPROTO_INET || attr(body, 1).map(str_attr) != Some(TABLE.as_bytes()) {
        return false; // attribute 1 is the table name in table, chain, rule, set and element messages
    }
    match msg {
        NFT_MSG_DELTABLE | NFT_MSG_DELCHAIN | NFT_MSG_DELRULE | NFT_MSG_DELSET => true,
        // Elements leaving an allow set are expiries or an admin's revocation: fine. Elements
        // leaving `protected` open a port: re-assert.
        NFT_MSG_DELSETELEM => {
            attr(body, NFTA_SET_ELEM_LIST_SET).map(str_attr) == Some(SET_PROTECTED.as_bytes())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
