//! The one netlink layer under every netfilter shell: NFQUEUE ([`super::queue`]), nf_tables and
//! its event watcher ([`super::nft`]), and ipset ([`super::ipset`], `NFNL_SUBSYS_IPSET`: its
//! messages are [`MsgBuf`] messages of that subsystem, its requests [`NlSocket::request`]s,
//! with `NLA_F_NET_BYTEORDER` on its integer attributes).
//!
//! | file | what | I/O |
//! | --- | --- | --- |
//! | `msg.rs` | netlink/nfnetlink numbers (each once), the message builder [`MsgBuf`] | none |
//! | `attr.rs` | parsing messages and attributes of a datagram, never panicking, borrowing | none |
//! | `batch.rs` | nfnetlink batches: build, commit, name the refused message | commit only |
//! | `socket.rs` | [`NlSocket`]: the only place a `NETLINK_NETFILTER` socket is opened | yes |
//!
//! Written by hand rather than over libmnl/libnftnl or the `nfq`/`nftnl` crates (measured in
//! DESIGN.md): the hot paths (a verdict, a grant) are one `send` of a reused buffer and one
//! `recv` into another, with no allocation and no FFI, every message's flags are ours to choose,
//! and the exact bytes are unit-testable without root.

mod attr;
mod batch;
mod msg;
mod socket;

pub use attr::*;
pub use batch::*;
pub use msg::*;
pub use socket::*;

#[cfg(test)]
mod tests;
