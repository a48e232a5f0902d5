//! `nfknock verify`: explain offline what the daemon would do with one packet (no kernel, no
//! replay cache).

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use super::{ConfigArg, EXIT_FAIL, EXIT_OK, EXIT_USAGE};
use crate::access::{self, Access};
use crate::config;
use crate::daemon;
use crate::engine::Engine;
use crate::policy::{Decision, Packet};
use crate::replay::ReplayCache;
use crate::wire::native;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The packet's source address.
    #[arg(long, value_name = "IP")]
    pub source: IpAddr,
    /// The packet's destination address [default: unspecified, matches any `destinations`-free client].
    #[arg(long, value_name = "IP")]
    pub dest: Option<IpAddr>,
    /// Judge as if the clock read this Unix time.
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub now: Option<u64>,
    /// The UDP payload: fwknop base64 text, or a native packet as hex.
    #[arg(
        long,
        value_name = "STRING",
        conflicts_with = "packet_file",
        required_unless_present = "packet_file"
    )]
    pub packet: Option<String>,
    /// A file with the exact UDP payload (as written by `knock --save-packet` or `fwknop -B`).
    #[arg(long, value_name = "PATH")]
    pub packet_file: Option<PathBuf>,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

pub(super) fn verify(args: VerifyArgs) -> anyhow::Result<i32> {
    let config = match config::load(
        args.config.path(),
        &crate::sys::FsLoader,
        &crate::sys::SystemAccounts,
    ) {
        Ok(c) => std::sync::Arc::new(c),
        Err(e) => {
            eprintln!("{e}");
            return Ok(EXIT_USAGE);
        }
    };
    let payload = match (&args.packet, &args.packet_file) {
        (Some(text), _) => packet_from_text(text.trim()),
        (None, Some(path)) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        (None, None) => bail!("give --packet STRING or --packet-file PATH"),
    };
    let now = args.now.unwrap_or_else(daemon::unix_now);
    let dst = args.dest.unwrap_or(match args.source {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    });
    // A fresh, empty replay cache: verify never records anything.
    let mut engine = Engine::new(config.clone(), ReplayCache::new(), 0, now);
    let out = engine.handle(
        &payload,
        Packet {
            src: args.source,
            dst,
        },
        now,
    );
    let client = out.client.map(|i| config.clients[i].name.clone());
    let (decision, reason, timeout, granted) = match &out.decision {
        Decision::Grant(g) => ("grant", None, Some(g.ttl), Some(g)),
        Decision::Command(_) => ("command", None, None, None),
        Decision::Reject(r) => ("reject", Some(*r), None, None),
    };
    if args.json {
        let k = out.knock.as_ref();
        let v = serde_json::json!({
            "decision": decision,
            "reason": reason.map(|r| r.code()),
            "detail": reason.map(|r| r.to_string()),
            "format": out.format.map(|f| f.name()),
            "client": client,
            "username": k.and_then(|k| k.username.clone()),
            "timestamp": k.map(|k| k.timestamp),
            "skew": out.skew,
            "message_type": k.and_then(|k| k.message_type),
            "allow_ip": k.map(|k| k.allow_ip.map_or_else(|| "0.0.0.0".to_string(), |ip| ip.to_string())),
            "grant_ip": granted.map(|g| g.addr.to_string()),
            "access": k.map(|k| k.access.iter().map(Access::to_string).collect::<Vec<_>>()),
            "timeout": timeout,
            "requested_timeout": k.map(|k| k.timeout),
            "nat_access": k.and_then(|k| k.nat_access.clone()),
            "command": match &out.decision {
                Decision::Command(c) => Some(c.argv.clone()),
                _ => None,
            },
            // The ports the grant forwards, and where to (the client's `nat`).
            "forwarded": granted.map(|g| g.nat.iter().map(|(a, t)| serde_json::json!({"access": a.to_string(), "to": t.to.to_string()})).collect::<Vec<_>>()),
        });
        println!("{v}");
    } else {
        match &out.decision {
            Decision::Grant(g) => {
                println!(
                    "grant: client {} ({}), open {} for {} during {}s",
                    client.as_deref().unwrap_or("?"),
                    out.format.map_or("?", |f| f.name()),
                    access::format_list(&g.access),
                    g.addr,
                    g.ttl
                );
                for (a, t) in &g.nat {
                    println!("  {a} forwarded to {t}");
                }
            }
            Decision::Command(c) => println!(
                "command: client {} ({}), run {:?} for {}",
                client.as_deref().unwrap_or("?"),
                out.format.map_or("?", |f| f.name()),
                c.argv,
                c.addr
            ),
            Decision::Reject(r) => println!(
                "reject: {r} (format {}, client {})",
                out.format.map_or("unknown", |f| f.name()),
                client.as_deref().unwrap_or("-")
            ),
        }
    }
    Ok(if decision == "grant" || decision == "command" {
        EXIT_OK
    } else {
        EXIT_FAIL
    })
}

/// `--packet` text: a native packet given as hex, otherwise the bytes of the text (fwknop).
fn packet_from_text(text: &str) -> Vec<u8> {
    if text.len() == native::PACKET_LEN * 2 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        let bytes: Option<Vec<u8>> = (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
            .collect();
        if let Some(b) = bytes.filter(|b| b.first() == Some(&native::VERSION)) {
            return b;
        }
    }
    text.as_bytes().to_vec()
}
