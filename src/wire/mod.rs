//! Packet formats. Every parser here borrows its input, checks lengths before it reads, and
//! never panics: that is the module's contract, held by the fuzz targets in `fuzz/`.
//!
//! - [`ip`]: the IPv4/IPv6 + UDP headers of a queued packet (NFQUEUE hands over raw IP
//!   packets, no link-layer header — unlike fwknopd's NFQ code, fwknop issue #377).
//! - [`native`]: nfknock v1, one fixed-length AES-256-GCM datagram (docs/PROTOCOL.md).
//! - [`fwknop`]: fwknop 2.x SPA packets (shared/FWKNOP-WIRE.md).

pub mod fwknop;
pub mod ip;
pub mod native;

/// Which format a UDP payload is, judged from its first byte and length only (no crypto).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Native,
    Fwknop,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Native => "native",
            Format::Fwknop => "fwknop",
        }
    }
}

/// Detect the format of a knock payload. Native packets start with a version byte that is not
/// a base64 character and have one fixed length; fwknop packets are base64 text of 140..=1499
/// bytes. Anything else is `None` and is dropped before any crypto.
pub fn detect(payload: &[u8]) -> Option<Format> {
    match payload.first() {
        Some(&native::VERSION) if payload.len() == native::PACKET_LEN => Some(Format::Native),
        Some(_) if fwknop::plausible_len(payload.len()) => Some(Format::Fwknop),
        _ => None,
    }
}
