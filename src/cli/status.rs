//! `nfknock status`: the live grants, read from the kernel.

use clap::Args;

use super::{ConfigArg, EXIT_OK};
use crate::grants::{self, LiveGrant};

#[derive(Debug, Args)]
#[command(mut_arg("config", |a| {
    a.help("The server's config file: its `backend` (and ipset names) say where the grants are; if the default file does not exist, they are read from table `inet nfknock`")
}))]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

pub(super) fn status(config: &std::path::Path, json: bool) -> anyhow::Result<i32> {
    let (backend, ipset) = super::table::backend_of(config)?;
    let mut grants = grants::existing(backend, &ipset)?.list()?;
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
