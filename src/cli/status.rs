//! `nfknock status`: the live grants, read from the kernel.

use anyhow::bail;
use clap::Args;

use super::{ConfigArg, EXIT_OK};
use crate::netfilter::nft::Nft;

#[derive(Debug, Args)]
#[command(mut_arg("config", |a| {
    a.help("Accepted for symmetry with the other server commands; the grants are read from the kernel")
        .hide_default_value(true)
}))]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

pub(super) fn status(json: bool) -> anyhow::Result<i32> {
    let mut nft = Nft::open()?;
    if !nft.table_exists()? {
        bail!("table `inet nfknock` is not loaded: start `nfknock serve` or load nft/nfknock.nft");
    }
    let mut grants = nft.list()?;
    grants.sort_by_key(|g| (g.addr, g.access));
    if json {
        for g in &grants {
            println!(
                "{}",
                serde_json::json!({
                    "source": g.addr.to_string(),
                    "access": g.access.to_string(),
                    "timeout": g.timeout_ms / 1000,
                    "seconds_left": g.expires_ms.div_ceil(1000),
                })
            );
        }
    } else if grants.is_empty() {
        println!("no live grants");
    } else {
        println!(
            "{:<40} {:<12} {:>8} {:>10}",
            "SOURCE", "ACCESS", "TIMEOUT", "LEFT"
        );
        for g in &grants {
            println!(
                "{:<40} {:<12} {:>7}s {:>9}s",
                g.addr.to_string(),
                g.access.to_string(),
                g.timeout_ms / 1000,
                g.expires_ms.div_ceil(1000)
            );
        }
    }
    Ok(EXIT_OK)
}
