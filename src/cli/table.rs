//! The table nfknock owns, as a whole: `nfknock ruleset` prints what the daemon installs for a
//! config, `nfknock uninstall` removes it (the gate and every grant) from the kernel.

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
    #[arg(long)]
    pub compat: bool,
}

pub(super) fn ruleset(config: &Path, compat: bool) -> anyhow::Result<i32> {
    let config = daemon::load_config(config)?;
    let backend = if compat {
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

pub(super) fn uninstall() -> anyhow::Result<i32> {
    // Held while the table goes, so no daemon starts half-way through.
    let _lock = daemon::InstanceLock::acquire(daemon::Action::Uninstall)?;
    // No config is read: the default backend's objects are removed.
    let mut store = crate::grants::existing(crate::config::Backend::default())?;
    store.remove()?;
    eprintln!("{} removed", store.objects());
    Ok(EXIT_OK)
}
