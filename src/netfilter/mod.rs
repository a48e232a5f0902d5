//! Shells over the kernel's netfilter netlink interfaces. Nothing clever lives here: the
//! decisions are made in [`crate::engine`]; [`crate::daemon`] calls [`queue`], the grant
//! backends [`crate::grants::nft_set`] and [`crate::grants::ipset`] call [`nft`] and [`ipset`]
//! (and the CLI's `ruleset` renders with [`nft`] and [`iptables`]).
//!
//! [`netlink`] is the one netlink layer: the only place a `NETLINK_NETFILTER` socket is opened,
//! one set of netlink numbers, one parser. [`queue`] (NFQUEUE), [`nft`] (nf_tables and its
//! events) and [`ipset`] (`NFNL_SUBSYS_IPSET`) are built on it; [`iptables`] is pure text (the
//! rules of an iptables host, for the ipset backend).

pub mod ipset;
pub mod iptables;
pub mod netlink;
pub mod nft;
pub mod queue;
