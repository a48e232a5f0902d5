//! nftables over netlink (libnftnl + libmnl): the owned `inet nfknock` table built in one atomic
//! batch, grants as set elements with timeouts (upsert without `NLM_F_EXCL`, expiration sent so a
//! refresh restarts the timer on kernels ≥ 6.12), listing live grants, and ruleset events.
//!
//! Every table, chain and set name is a constant here and matches `nft/nfknock.nft`.
//!
//! SKELETON: the nft helper owns this file.

use std::net::IpAddr;
use std::os::fd::RawFd;

use crate::access::Access;

pub const TABLE: &str = "nfknock";
pub const SET_ALLOW_V4: &str = "allow_v4";
pub const SET_ALLOW_V6: &str = "allow_v6";
pub const SET_PROTECTED: &str = "protected";
pub const CHAIN_KNOCK: &str = "knock";
pub const CHAIN_INPUT: &str = "gate_input";
pub const CHAIN_FORWARD: &str = "gate_forward";

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
    /// Gate DNAT-published ports in the forward hook.
    pub gate_forward: bool,
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

/// Errors of the nftables shell: which operation failed on which object, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot {op} {object}: {source}")]
    Io { op: &'static str, object: String, #[source] source: std::io::Error },
}

/// A netlink socket speaking nftables.
pub struct Nft {
    _private: (),
}

impl Nft {
    pub fn open() -> Result<Nft, NftError> {
        unimplemented!("nft helper")
    }

    /// Does this kernel have `nft_queue`? (Probe in a throw-away table.)
    pub fn detect_queue_backend(&mut self) -> Result<QueueBackend, NftError> {
        unimplemented!("nft helper")
    }

    /// Create or refresh the owned table in one atomic batch. Existing grants are kept.
    pub fn install(&mut self, spec: &RulesetSpec, restore: &[Element]) -> Result<(), NftError> {
        let _ = (spec, restore);
        unimplemented!("nft helper")
    }

    /// Add or refresh grants in one batch.
    pub fn upsert(&mut self, elems: &[Element]) -> Result<(), NftError> {
        let _ = elems;
        unimplemented!("nft helper")
    }

    /// Live grants of both allow sets.
    pub fn list(&mut self) -> Result<Vec<LiveElement>, NftError> {
        unimplemented!("nft helper")
    }

    /// Is the owned table present?
    pub fn table_exists(&mut self) -> Result<bool, NftError> {
        unimplemented!("nft helper")
    }
}

/// Subscription to nftables ruleset events (`NFNLGRP_NFTABLES`), to notice a flush.
pub struct NftEvents {
    _private: (),
}

impl NftEvents {
    pub fn open() -> Result<NftEvents, NftError> {
        unimplemented!("nft helper")
    }

    pub fn as_raw_fd(&self) -> RawFd {
        unimplemented!("nft helper")
    }

    /// Drain pending events without blocking; true if our table (or anything in it) was deleted.
    pub fn drain(&mut self) -> Result<bool, NftError> {
        unimplemented!("nft helper")
    }
}
