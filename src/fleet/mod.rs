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
//!
//! [`Cli`] is the `nfknock-fleet` command line, here so that its man page and completions are
//! generated from it like the daemon's (`examples/gen_docs.rs`).

pub mod record;
#[cfg(feature = "fleet")]
pub mod relay;
pub mod settings;

pub use settings::FleetConfig;

/// Share nfknock grants across a fleet of hosts through etcd (docs/FLEET.md).
///
/// Run beside `nfknock serve` on every host of the fleet (systemd unit nfknock-fleet.service).
/// It follows this host's grant sets through the kernel's nf_tables events, publishes each
/// grant with a lease of its remaining time, and writes the other hosts' grants here with
/// theirs. Exit status: 0 on a clean stop or a passing `--check`, 1 on any error (the reason
/// is printed).
#[derive(clap::Parser, Debug)]
#[command(name = "nfknock-fleet", version)]
pub struct Cli {
    /// The relay's config file (see examples/fleet.toml).
    #[arg(long, short = 'c', default_value = "/etc/nfknock/fleet.toml")]
    pub config: std::path::PathBuf,
    /// Check the config (and read the certificates it names), then exit.
    #[arg(long)]
    pub check: bool,
}
