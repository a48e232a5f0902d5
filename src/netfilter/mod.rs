//! Shells over the kernel's netfilter netlink interfaces. Nothing clever lives here: the
//! decisions are made in [`crate::engine`], and only [`crate::daemon`] calls these.

pub mod netlink;
pub mod nft;
pub mod queue;
