//! `nfknock status`: the live grants, read from the kernel; with `--metrics`, the daemon's
//! Prometheus metrics, read from the `[server] metrics_file` it writes (docs/METRICS.md says
//! why the file and not a socket).

use clap::Args;

use super::{ConfigArg, EXIT_OK};
use crate::grants::{self, LiveGrant, PrefilterStats};

#[derive(Debug, Args)]
#[command(mut_arg("config", |a| {
    a.help("The server's config file: its `backend` (and ipset names) say where the grants are, and its `metrics_file` where --metrics reads; if the default file does not exist, grants are read from table `inet nfknock`")
}))]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// One JSON object per line.
    #[arg(long, conflicts_with = "metrics")]
    pub json: bool,
    /// Print the daemon's Prometheus metrics (the `[server] metrics_file` it rewrites every 5 s)
    /// instead of the grants; fails if the file is unset, missing or older than 30 s.
    #[arg(long)]
    pub metrics: bool,
}

/// A metrics file older than this was not written by a running daemon (it rewrites it every
/// 5 s).
const METRICS_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// `status --metrics`: the metrics file named by the config, if the daemon keeps it fresh.
pub(super) fn metrics(config: &std::path::Path) -> anyhow::Result<i32> {
    use anyhow::Context;
    let cfg = crate::daemon::load_config(config)?;
    let Some(path) = cfg.server.metrics_file.as_ref() else {
        anyhow::bail!(
            "{} sets no `metrics_file` in [server], so the daemon writes no metrics; add e.g. \
             `metrics_file = \"{}\"` and reload it (`systemctl reload nfknock`)",
            config.display(),
            crate::config::NODE_EXPORTER_METRICS_FILE
        );
    };
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read metrics file {}; is the daemon running (`systemctl status nfknock`), \
             and does its log say it cannot write there?",
            path.display()
        )
    })?;
    let age = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .unwrap_or_default();
    if age > METRICS_STALE_AFTER {
        anyhow::bail!(
            "metrics file {} was last written {}s ago (the daemon rewrites it every 5 s): the \
             daemon is not running or cannot write it; see `systemctl status nfknock`",
            path.display(),
            age.as_secs()
        );
    }
    print!("{text}");
    Ok(EXIT_OK)
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
                    // A forwarded grant (`nat`): where its new flows are translated to.
                    "forwarded_to": g.grant.nat.map(|n| n.to.to_string()),
                    // A gateway grant: the network the source may forward into (any port).
                    "gateway": g.grant.gateway.map(|w| w.net.to_string()),
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
            let to = match (g.grant.nat, g.grant.gateway) {
                (Some(n), _) => format!("  -> {}", n.to),
                (None, Some(w)) => format!("  -> gateway {} (any port)", w.net),
                (None, None) => String::new(),
            };
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
