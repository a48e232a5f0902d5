//! The fleet relay (`nfknock-fleet`, docs/FLEET.md): a grant made on one host appears on every
//! host of its fleet, through etcd leases, while the SPA daemon itself stays offline-only.
//!
//! The relay is a separate process. It follows this host's allow sets through nf_tables
//! netlink events (the kernel is the interface: there is no channel to the daemon), publishes
//! each grant the daemon writes under `/<prefix>/<fleet>/grants/...` with a lease of its
//! remaining time, watches that prefix, and writes other hosts' grants into the local allow
//! sets with their remaining time and an origin mark (the element comment `fleet:<host>`), so
//! it never publishes them back.
//!
//! | file | what | I/O |
//! | --- | --- | --- |
//! | `record.rs` | keys, values, the checks a remote grant must pass, lease arithmetic | pure |
//! | `settings.rs` | `fleet.toml` text → validated [`FleetConfig`] | pure |
//! | `relay.rs` | the relay: etcd client, kernel events, the loop (feature `fleet`) | yes |

pub mod record;
#[cfg(feature = "fleet")]
pub mod relay;
pub mod settings;

pub use settings::FleetConfig;
