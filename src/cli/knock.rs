//! `nfknock knock`: resolve the flags and the optional client-config stanza into one native
//! knock, seal it and send it (or only save it).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::Args;

use super::EXIT_OK;
use crate::access::{self, Access};
use crate::config::{self, AllowIp};
use crate::crypto::NativeKey;
use crate::daemon;
use crate::sys::OsRng;
use crate::wire::native;

#[derive(Debug, Args)]
pub struct KnockArgs {
    /// Server host name or address.
    #[arg(long, short = 's', value_name = "HOST")]
    pub server: Option<String>,
    /// Server UDP port [default: 62201, or the stanza's].
    #[arg(long, short = 'p')]
    pub port: Option<u16>,
    /// File holding the base64 key (mode 0600).
    #[arg(long, short = 'k', value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// What to open, e.g. `tcp/22` or `tcp/22,udp/53`.
    #[arg(long, short = 'A', value_name = "LIST")]
    pub access: Option<String>,
    /// Requested grant length in seconds (the server caps it); default: the server's.
    #[arg(long, short = 't', value_name = "SECS")]
    pub timeout: Option<u32>,
    /// Address to open for: an IP, or `source` to let the server use the packet's source
    /// [default: this host's address on the route to the server].
    #[arg(long, short = 'a', value_name = "IP|source")]
    pub allow_ip: Option<String>,
    /// Add this many seconds (may be negative) to the knock's timestamp, for a clock you know
    /// to be off (fwknop's --time-offset-plus/minus).
    #[arg(
        long,
        value_name = "SECS",
        allow_negative_numbers = true,
        default_value_t = 0
    )]
    pub time_offset: i64,
    /// Also write the exact UDP payload to this file.
    #[arg(long, value_name = "PATH")]
    pub save_packet: Option<PathBuf>,
    /// Build (and save) the packet but do not send it.
    #[arg(long)]
    pub dry_run: bool,
    /// Use stanza NAME of the client config (`[server.NAME]`).
    #[arg(long, short = 'n', value_name = "NAME")]
    pub name: Option<String>,
    /// This client's own config, with the `[server.NAME]` stanzas `-n` picks (not a server's
    /// `--config`) [default: ~/.config/nfknock/client.toml].
    #[arg(long, value_name = "PATH")]
    pub client_config: Option<PathBuf>,
}

/// Everything a knock needs, resolved from flags and the optional client-config stanza.
struct KnockPlan {
    server: SocketAddr,
    key: NativeKey,
    access: Vec<Access>,
    timeout: u32,
    allow_ip: AllowIp,
}

pub(super) fn knock(args: KnockArgs) -> anyhow::Result<i32> {
    let plan = resolve_knock(&args)?;
    let allow_ip = match plan.allow_ip {
        AllowIp::Source => None,
        AllowIp::Addr(ip) => Some(ip),
        AllowIp::Auto => Some(local_addr_towards(plan.server)?),
    };
    let req = native::Plaintext {
        timestamp: daemon::unix_now().saturating_add_signed(args.time_offset),
        timeout: plan.timeout,
        allow_ip,
        access: plan.access.clone(),
    };
    let packet = native::seal(&plan.key, &req, &mut OsRng)
        .map_err(|e| anyhow!("cannot build the knock: {e}"))?;
    if let Some(path) = &args.save_packet {
        std::fs::write(path, packet).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let what = format!(
        "{} for {} to {}",
        access::format_list(&plan.access),
        allow_ip.map_or_else(|| "the packet's source".to_string(), |ip| ip.to_string()),
        plan.server
    );
    if args.dry_run {
        eprintln!("built knock ({what}); not sent (--dry-run)");
        return Ok(EXIT_OK);
    }
    let bind: SocketAddr = if plan.server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()?;
    let sock = UdpSocket::bind(bind).context("cannot open a UDP socket")?;
    sock.send_to(&packet, plan.server)
        .with_context(|| format!("cannot send the knock to {}", plan.server))?;
    eprintln!("knocked: {what}");
    Ok(EXIT_OK)
}

fn resolve_knock(args: &KnockArgs) -> anyhow::Result<KnockPlan> {
    let profile = match &args.name {
        None => None,
        Some(name) => {
            let path = match &args.client_config {
                Some(p) => p.clone(),
                None => config::knock_profiles_path(
                    std::env::var_os("XDG_CONFIG_HOME").as_deref(),
                    std::env::var_os("HOME").as_deref(),
                )
                .ok_or_else(|| {
                    anyhow!("cannot find the client config: set --client-config PATH")
                })?,
            };
            let home = std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(std::path::PathBuf::from);
            let env = config::KnockEnv {
                files: &crate::sys::FsLoader,
                euid: crate::sys::euid(),
                home: home.as_deref(),
            };
            let cc = config::load_knock_profiles(&path, &env).map_err(|e| anyhow!("{e}"))?;
            Some(
                cc.stanza(name)
                    .cloned()
                    .ok_or_else(|| anyhow!("no stanza `[server.{name}]` in {}", path.display()))?,
            )
        }
    };
    let host = args
        .server
        .clone()
        .or_else(|| profile.as_ref().map(|p| p.server.clone()))
        .ok_or_else(|| usage("no server given: use --server HOST or -n NAME".into()))?;
    let port = args
        .port
        .or(profile.as_ref().map(|p| p.port))
        .unwrap_or(config::DEFAULT_PORT);
    let server = (host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve server `{host}`"))?
        .next()
        .ok_or_else(|| anyhow!("server `{host}` has no address"))?;
    let key = match (&args.key_file, &profile) {
        (Some(path), _) => {
            config::read_native_key_file(&crate::sys::FsLoader, path, crate::sys::euid())
                .map_err(|p| anyhow!("{p}"))?
        }
        (None, Some(p)) => p.key.clone(),
        (None, None) => {
            return Err(usage(
                "no key given: use --key-file PATH (made by `nfknock keygen --out PATH`)".into(),
            ))
        }
    };
    let access = match (&args.access, &profile) {
        (Some(list), _) => {
            access::parse_list(list).map_err(|e| usage(format!("--access `{list}`: {e}")))?
        }
        (None, Some(p)) => p.access.clone(),
        (None, None) => {
            return Err(usage(
                "nothing to open: use --access tcp/22[,udp/53,...]".into(),
            ))
        }
    };
    if access.is_empty() || access.len() > native::MAX_ACCESS {
        return Err(usage(format!(
            "--access must list 1 to {} entries",
            native::MAX_ACCESS
        )));
    }
    let timeout = args
        .timeout
        .or(profile.as_ref().and_then(|p| p.timeout))
        .unwrap_or(0);
    let allow_ip = match args.allow_ip.as_deref() {
        Some("source") => AllowIp::Source,
        Some(ip) => AllowIp::Addr(ip.parse().map_err(|_| {
            usage(format!(
                "--allow-ip `{ip}`: expected an IP address or `source`"
            ))
        })?),
        None => profile.as_ref().map_or(AllowIp::Auto, |p| p.allow_ip),
    };
    Ok(KnockPlan {
        server,
        key,
        access,
        timeout,
        allow_ip,
    })
}

/// The address this host would use to reach `server` (no packet is sent: a connected UDP
/// socket only asks the routing table).
fn local_addr_towards(server: SocketAddr) -> anyhow::Result<IpAddr> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()?;
    let sock = UdpSocket::bind(bind)?;
    sock.connect(server)
        .with_context(|| format!("no route to {server}; pass --allow-ip"))?;
    Ok(sock.local_addr()?.ip())
}

/// A knock that cannot be built from these flags is a usage error (exit status 2).
fn usage(message: String) -> anyhow::Error {
    super::UsageError(message).into()
}
