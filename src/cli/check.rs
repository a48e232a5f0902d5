//! `nfknock check`: validate a server config and print every problem with file, line and key.

use std::path::Path;

use super::{EXIT_FAIL, EXIT_OK};
use crate::access;
use crate::config;

pub(super) fn check(path: &Path) -> anyhow::Result<i32> {
    match config::load(path, &crate::sys::FsLoader, &crate::sys::SystemAccounts) {
        Ok(c) => {
            for w in config::warnings(&c) {
                eprintln!("warning: {w}");
            }
            // The ipset backend installs no gate: say where the grants go and what to load.
            let backend = match c.server.backend {
                config::Backend::Nftables => String::new(),
                config::Backend::Ipset => format!(
                    ", grants in ipsets `{}` and `{}`: gate them with `nfknock ruleset --iptables` and `--ip6tables`",
                    c.server.ipset.v4, c.server.ipset.v6
                ),
            };
            println!(
                "{}: OK ({} client{}, port {}, protecting {}{backend})",
                path.display(),
                c.clients.len(),
                if c.clients.len() == 1 { "" } else { "s" },
                c.server.port,
                access::format_list(&c.server.protect)
            );
            Ok(EXIT_OK)
        }
        Err(errors) => {
            for p in &errors.0 {
                eprintln!("{p}");
            }
            eprintln!(
                "{} problem{} found",
                errors.0.len(),
                if errors.0.len() == 1 { "" } else { "s" }
            );
            Ok(EXIT_FAIL)
        }
    }
}
