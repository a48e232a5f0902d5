//! nfknock native wire format v1 (docs/PROTOCOL.md): one fixed-length UDP datagram,
//! AES-256-GCM, versioned header as AAD, an epoch key hint for O(1) key lookup.
//!
//! SKELETON: the native-format helper owns this file.

use std::net::IpAddr;

use crate::access::Access;
use crate::crypto::{NativeKey, Rng};

/// First byte of every native packet. Not a base64 character, so it never looks like fwknop.
pub const VERSION: u8 = 0x01;
/// Every native packet has exactly this many bytes of UDP payload.
pub const PACKET_LEN: usize = 128;
/// Length of the key hint.
pub const HINT_LEN: usize = 8;
/// Seconds per key-hint epoch.
pub const EPOCH_SECS: u64 = 60;
/// Most accesses one knock can carry.
pub const MAX_ACCESS: usize = 16;

/// The decoded, authenticated content of a native knock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Client's clock, Unix seconds.
    pub timestamp: u64,
    /// Requested grant length in seconds; 0 = the server's default for this client.
    pub timeout: u32,
    /// Address to open for; `None` = the packet's source address.
    pub allow_ip: Option<IpAddr>,
    /// 1..=MAX_ACCESS accesses.
    pub access: Vec<Access>,
}

/// Why a native packet was refused. Small and allocation-free (hot path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NativeError {
    #[error("wrong length")]
    Length,
    #[error("unknown version")]
    Version,
    #[error("authentication failed")]
    Auth,
    #[error("malformed plaintext: {0}")]
    Malformed(&'static str),
    #[error("request cannot be encoded: {0}")]
    Encode(&'static str),
}

/// Cheap pre-crypto check: length and version. Returns the key hint.
pub fn hint_of(packet: &[u8]) -> Result<[u8; HINT_LEN], NativeError> {
    let _ = packet;
    unimplemented!("native helper")
}

/// The key hint a client with `key` uses in `epoch` (= timestamp / EPOCH_SECS).
pub fn hint(key: &NativeKey, epoch: u64) -> [u8; HINT_LEN] {
    let _ = (key, epoch);
    unimplemented!("native helper")
}

/// Authenticate and decrypt, then parse the plaintext strictly.
pub fn open(key: &NativeKey, packet: &[u8]) -> Result<Request, NativeError> {
    let _ = (key, packet);
    unimplemented!("native helper")
}

/// Build a packet for `req` (client side).
pub fn seal(key: &NativeKey, req: &Request, rng: &mut dyn Rng) -> Result<[u8; PACKET_LEN], NativeError> {
    let _ = (key, req, rng);
    unimplemented!("native helper")
}
