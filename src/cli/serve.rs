//! `nfknock serve`: the daemon in the foreground; its flags become [`daemon::Options`].

use clap::Args;

use super::{ConfigArg, EXIT_OK};
use crate::daemon;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Decide and log every knock ("dry run: would add grant"), but write no grant to the
    /// allow sets. Installs no gate either, so nothing that was open closes.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: install the gate too (protected ports close; knocks still open nothing).
    #[arg(long, requires = "dry_run")]
    pub with_gate: bool,
}

impl From<ServeArgs> for daemon::Options {
    fn from(args: ServeArgs) -> Self {
        daemon::Options {
            config: args.config.config,
            dry_run: args.dry_run,
            with_gate: args.with_gate,
        }
    }
}

pub(super) fn serve(args: ServeArgs) -> anyhow::Result<i32> {
    daemon::serve(&daemon::Options::from(args))?;
    Ok(EXIT_OK)
}
