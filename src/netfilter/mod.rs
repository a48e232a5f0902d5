//! Shells over the kernel's netfilter netlink interfaces. Nothing clever lives here: the
//! decisions are made in [`crate::engine`]; [`crate::daemon`] calls [`queue`], the grant
//! backend [`crate::grants::nft_set`] calls [`nft`] (and the CLI's `ruleset` renders with it).
//!
//! [`netlink`] is the one netlink layer: the only place a `NETLINK_NETFILTER` socket is opened,
//! one set of netlink numbers, one parser. [`queue`] (NFQUEUE) and [`nft`] (nf_tables and its
//! events) are built on it, and so would be an ipset backend (`NFNL_SUBSYS_IPSET`).

pub mod netlink;
pub mod nft;
pub mod queue;
