//! `nfknock status`: the live grants, read from the kernel.

use clap::Args;

use super::{ConfigArg, EXIT_OK};
use crate::grants::{self, LiveGrant, PrefilterStats};

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
    let mut store = grants::existing(backend, &ipset)?;
    let mut grants = store.list()?;
    let prefilter = store.prefilter()?;
    grants.sort_by_key(|g| (g.grant.addr, g.grant.access));
    let seconds_left = |g: &LiveGrant| g.left.as_millis().div_ceil(1000);
    if json {
        if let Some(p) = prefilter {
            println!(
                "{}",
                serde_json::json!({
                    "prefilter": {
                        "hints": p.hints,
                        "junk_native_packets": p.junk_native.0,
                        "junk_native_bytes": p.junk_native.1,
                        "junk_fwknop_packets": p.junk_fwknop.0,
                        "junk_fwknop_bytes": p.junk_fwknop.1,
                    }
                })
            );
        }
        for g in &grants {
            println!(
                "{}",
                serde_json::json!({
                    "source": g.grant.addr.to_string(),
                    "access": g.grant.access.to_string(),
                    "timeout": g.grant.timeout.as_secs(),
                    "seconds_left": seconds_left(g) as u64,
                })
            );
        }
    } else if grants.is_empty() {
        print_prefilter(prefilter);
        println!("no live grants");
    } else {
        print_prefilter(prefilter);
        println!(
            "{:<40} {:<12} {:>8} {:>10}",
            "SOURCE", "ACCESS", "TIMEOUT", "LEFT"
        );
        for g in &grants {
            println!(
                "{:<40} {:<12} {:>7}s {:>9}s",
                g.grant.addr.to_string(),
                g.grant.access.to_string(),
                g.grant.timeout.as_secs(),
                seconds_left(g)
            );
        }
    }
    Ok(EXIT_OK)
}

/// The kernel's junk filter (issue 11), one line each, before the grants.
fn print_prefilter(p: Option<PrefilterStats>) {
    if let Some(p) = p {
        println!("key hints in the kernel: {}", p.hints);
        println!(
            "junk dropped in the kernel: {} native ({} bytes), {} fwknop ({} bytes)",
            p.junk_native.0, p.junk_native.1, p.junk_fwknop.0, p.junk_fwknop.1
        );
    }
}
