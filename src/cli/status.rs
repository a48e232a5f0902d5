//! `nfknock status`: the live grants, read from the kernel.

use clap::Args;

use super::{ConfigArg, EXIT_OK};
use crate::grants::{self, LiveGrant};

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
    // The config is not read (see `--config`): the grants are where the default backend
    // keeps them.
    let mut grants = grants::existing(crate::config::Backend::default())?.list()?;
    grants.sort_by_key(|g| (g.grant.addr, g.grant.access));
    let seconds_left = |g: &LiveGrant| g.left.as_millis().div_ceil(1000);
    if json {
        for g in &grants {
            println!(
                "{}",
                serde_json::json!({
                    "source": g.grant.addr.to_string(),
                    "access": g.grant.access.to_string(),
                    "timeout": g.grant.timeout.as_secs(),
                    "seconds_left": seconds_left(g) as u64,
                    // A forwarded grant (`nat`): where its new flows are translated to.
                    "forwarded_to": g.grant.nat.map(|n| n.to.to_string()),
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
            let to = g
                .grant
                .nat
                .map(|n| format!("  -> {}", n.to))
                .unwrap_or_default();
            println!(
                "{:<40} {:<12} {:>7}s {:>9}s{to}",
                g.grant.addr.to_string(),
                g.grant.access.to_string(),
                g.grant.timeout.as_secs(),
                seconds_left(g)
            );
        }
    }
    Ok(EXIT_OK)
}
