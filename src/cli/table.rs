//! The objects nfknock owns, as a whole: `nfknock ruleset` prints what the daemon installs for
//! a config (or, `--iptables`, the rules an iptables host loads), `nfknock uninstall` removes
//! the backend's objects (the table, or the ipsets) and every grant from the kernel.

use std::path::Path;

use clap::Args;

use super::{ConfigArg, EXIT_OK};
use crate::daemon;
use crate::netfilter::nft::QueueBackend;

#[derive(Debug, Args)]
pub struct RulesetArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Divert knocks with the xt NFQUEUE target (kernels without nft_queue) instead of the
    /// native `queue` expression. Only the daemon can load that form; `nft` prints it alike.
    #[arg(long, conflicts_with_all = ["iptables", "ip6tables"])]
    pub compat: bool,
    /// Print instead the IPv4 rules of an iptables host, for `backend = "ipset"`: the knock
    /// capture (NFQUEUE) and the gate matching the ipset, to load with
    /// `iptables-restore --noflush` (as iptables/nfknock.rules ships them).
    #[arg(long, conflicts_with = "ip6tables")]
    pub iptables: bool,
    /// As `--iptables`, for ip6tables (`ip6tables-restore --noflush`; iptables/nfknock6.rules).
    #[arg(long)]
    pub ip6tables: bool,
}

/// `nfknock uninstall`.
#[derive(Debug, Args)]
#[command(mut_arg("config", |a| {
    a.help("The server's config file: its `backend` (and ipset names) say what to remove; if the default file does not exist, table `inet nfknock` is removed")
}))]
pub struct UninstallArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

pub(super) fn ruleset(args: &RulesetArgs) -> anyhow::Result<i32> {
    let config = daemon::load_config(args.config.path())?;
    if args.iptables || args.ip6tables {
        if config.server.backend != crate::config::Backend::Ipset {
            eprintln!(
                "warning: {} has backend = \"{}\": nothing fills the ipsets these rules match, so they close the protected ports to everyone; set `backend = \"ipset\"` in [server]",
                args.config.path().display(),
                config.server.backend.name()
            );
        }
        let spec = crate::netfilter::iptables::IptablesSpec::from_config(&config, args.ip6tables);
        print!("{}", crate::netfilter::iptables::render(&spec));
        return Ok(EXIT_OK);
    }
    let backend = if args.compat {
        QueueBackend::Compat
    } else {
        QueueBackend::Native
    };
    print!(
        "{}",
        crate::netfilter::nft::render(&crate::grants::nft_set::ruleset_spec(&config, backend))
    );
    Ok(EXIT_OK)
}

/// The backend (and ipset names) of the config at `path`, for the commands that look at what
/// a backend left in the kernel: the defaults if `path` is the default config and it does not
/// exist (a host set up without one), else what the config says.
pub(super) fn backend_of(
    path: &Path,
) -> anyhow::Result<(crate::config::Backend, crate::config::IpsetNames)> {
    if path == Path::new(super::DEFAULT_CONFIG) && !path.exists() {
        return Ok(Default::default());
    }
    let config = daemon::load_config(path)?;
    Ok((config.server.backend, config.server.ipset))
}

pub(super) fn uninstall(config: &Path) -> anyhow::Result<i32> {
    let (backend, ipset) = backend_of(config)?;
    // Held while the objects go, so no daemon starts half-way through.
    let _lock = daemon::InstanceLock::acquire(daemon::Action::Uninstall)?;
    let mut store = crate::grants::existing(backend, &ipset)?;
    store.remove()?;
    eprintln!("{} removed", store.objects());
    Ok(EXIT_OK)
}
