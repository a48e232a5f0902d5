//! The command line: raw arguments are parsed by clap, then each subcommand resolves them into
//! validated settings and calls the library. Exit codes are documented in `--help`.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::access::{self, Access};
use crate::config::{self, AllowIp};
use crate::crypto::{self, NativeKey};
use crate::daemon;
use crate::engine::Engine;
use crate::netfilter::nft::{Nft, QueueBackend};
use crate::policy::{Decision, Packet};
use crate::replay::ReplayCache;
use crate::sys::OsRng;
use crate::wire::native;

/// Where the server config lives unless `--config` says otherwise (the systemd unit's path).
pub const DEFAULT_CONFIG: &str = "/etc/nfknock/nfknock.toml";

/// Exit codes.
pub const EXIT_OK: i32 = 0;
/// `check` found problems; `verify` decided "reject"; a runtime failure.
pub const EXIT_FAIL: i32 = 1;
/// Bad command line or unusable config; or `serve`/`uninstall` found another nfknock daemon
/// (or another program on the NFQUEUE) and changed nothing.
pub const EXIT_USAGE: i32 = 2;

/// The exit code for the error that ended a command: [`EXIT_USAGE`] when it stopped before
/// changing anything because the table or the queue is someone else's (another nfknock daemon,
/// another program on the NFQUEUE), [`EXIT_FAIL`] for every other failure.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    use crate::netfilter::queue::QueueError;
    let conflict = e.chain().any(|c| {
        c.is::<daemon::AlreadyRunning>()
            || matches!(c.downcast_ref(), Some(QueueError::Busy { .. }))
    });
    if conflict {
        EXIT_USAGE
    } else {
        EXIT_FAIL
    }
}

const AFTER_HELP: &str = "\
Exit status: 0 success; 1 failure (check found problems, verify rejected, runtime error);
2 usage or configuration error, or `serve`/`uninstall` found another nfknock daemon (or
another program on the NFQUEUE) and changed nothing.

Quick start (server):  nfknock keygen --out /etc/nfknock/alice.key      (mode 0600)
                       name it in /etc/nfknock/nfknock.toml (see examples/server.toml)
                       nfknock check --config /etc/nfknock/nfknock.toml
                       systemctl enable --now nfknock
Quick start (client):  nfknock knock --server HOST --key-file alice.key --access tcp/22
                       ssh HOST     (within the grant's timeout)
Logs: stderr (journald under systemd); NFKNOCK_LOG=debug shows every rejected knock.";

#[derive(Debug, Parser)]
#[command(
    name = "nfknock",
    version,
    about = "Single Packet Authorization for nftables hosts",
    long_about = "nfknock opens firewall ports for one encrypted UDP packet.\n\n\
        The server (`nfknock serve`) receives knocks through an NFQUEUE, authenticates them \
        in-process and adds `source . proto . port` to an nftables set with a timeout; a \
        drop-only gate in table `inet nfknock` keeps protected ports closed to everyone else. \
        Native knocks (`nfknock knock`) and fwknop 2.x clients are accepted on the same port.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a new random 256-bit client key (base64) for a `[[client]]` entry and its key file.
    Keygen {
        /// Write the key to this file (mode 0600, refused if it exists) instead of stdout.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
    },
    /// Run the daemon in the foreground (logs to stderr; journald-friendly).
    Serve {
        #[arg(
            long,
            short = 'c',
            value_name = "PATH",
            default_value = DEFAULT_CONFIG
        )]
        config: PathBuf,
        /// Decide and log every knock ("dry run: would add grant"), but write no grant to the
        /// allow sets. Installs no gate either, so nothing that was open closes.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: install the gate too (protected ports close; knocks still open nothing).
        #[arg(long, requires = "dry_run")]
        with_gate: bool,
    },
    /// Declare a new state directory, so the first `serve` there grants knocks at once.
    ///
    /// A state directory without a replay journal is otherwise taken for one whose journal was
    /// lost (wiped, on a tmpfs, or `state_dir` changed): knocks stamped before start + max_age
    /// are refused, because knocks accepted before could be replayed. This creates the
    /// directory (0700) if needed and puts the `first-start` marker in it; the daemon removes
    /// the marker once its journal exists. scripts/install runs it when it creates
    /// /var/lib/nfknock.
    ///
    /// Run it only for a directory that never served, or after giving every client a new key:
    /// knocks captured while the old journal existed would be accepted again. Refused (exit
    /// status 1) if the directory holds a replay journal.
    InitState {
        /// Take `state_dir` from this config.
        #[arg(
            long,
            short = 'c',
            value_name = "PATH",
            default_value = DEFAULT_CONFIG
        )]
        config: PathBuf,
        /// The state directory itself, without reading a config (what the installer uses).
        #[arg(long, value_name = "DIR", conflicts_with = "config")]
        state_dir: Option<PathBuf>,
    },
    /// Validate a server config; print every problem with file, line and key.
    Check {
        #[arg(
            long,
            short = 'c',
            value_name = "PATH",
            default_value = DEFAULT_CONFIG
        )]
        config: PathBuf,
    },
    /// Send one knock (native format).
    Knock(KnockArgs),
    /// List live grants from the kernel: source, proto/port, seconds left.
    Status {
        /// Accepted for symmetry with the other server commands; the grants are read from the kernel.
        #[arg(long, short = 'c', value_name = "PATH")]
        config: Option<PathBuf>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Explain offline what the daemon would do with one packet (no kernel, no replay cache).
    Verify(VerifyArgs),
    /// Print the nftables ruleset the daemon installs for a config (to load it yourself with
    /// `nft -f` and `manage_ruleset = false`, or to review it).
    Ruleset {
        #[arg(
            long,
            short = 'c',
            value_name = "PATH",
            default_value = DEFAULT_CONFIG
        )]
        config: PathBuf,
        /// Divert knocks with the xt NFQUEUE target (kernels without nft_queue) instead of the
        /// native `queue` expression. Only the daemon can load that form; `nft` prints it alike.
        #[arg(long)]
        compat: bool,
    },
    /// Remove table `inet nfknock` (the gate and every grant) from the kernel. Refused (exit 2)
    /// while `nfknock serve` runs in this network namespace: it would re-create the table.
    Uninstall,
    /// Convert fwknopd's access.conf (and fwknopd.conf) into an nfknock config on stdout.
    ///
    /// The output holds the keys: `umask 077; nfknock import-fwknop ... > /etc/nfknock/nfknock.toml`.
    /// Exit status: 0 everything converted (warnings on stderr); 1 some stanza could not be
    /// converted (the rest is printed); 2 a file could not be read, or a bad command line.
    ImportFwknop(ImportFwknopArgs),
}

#[derive(Debug, Args)]
pub struct ImportFwknopArgs {
    /// fwknopd's access file (its %include, %include_folder and %include_keys are followed).
    #[arg(long, value_name = "PATH")]
    pub access_conf: PathBuf,
    /// fwknopd.conf, for the knock port (PCAP_FILTER, UDPSERV_PORT, NFQ_PORT) and MAX_SPA_PACKET_AGE.
    #[arg(long, value_name = "PATH")]
    pub fwknopd_conf: Option<PathBuf>,
    /// The `allow` list for stanzas without OPEN_PORTS (fwknopd let those open any port),
    /// e.g. `tcp/22,tcp/443`.
    #[arg(long, value_name = "LIST")]
    pub protect: Option<String>,
}

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
    /// Client config file [default: ~/.config/nfknock/client.toml].
    #[arg(long, value_name = "PATH")]
    pub client_config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[arg(
        long,
        short = 'c',
        value_name = "PATH",
        default_value = DEFAULT_CONFIG
    )]
    pub config: PathBuf,
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

/// Run a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Keygen { out } => keygen(out.as_deref()),
        Command::Serve {
            config,
            dry_run,
            with_gate,
        } => {
            daemon::serve(&daemon::Options {
                config,
                dry_run,
                with_gate,
            })?;
            Ok(EXIT_OK)
        }
        Command::InitState { config, state_dir } => init_state(&config, state_dir),
        Command::Check { config } => check(&config),
        Command::Knock(args) => knock(args),
        Command::Status { json, .. } => status(json),
        Command::Verify(args) => verify(args),
        Command::Ruleset { config, compat } => {
            let config = daemon::load_config(&config)?;
            let backend = if compat {
                QueueBackend::Compat
            } else {
                QueueBackend::Native
            };
            print!(
                "{}",
                crate::netfilter::nft::render(&daemon::ruleset_spec(&config, backend))
            );
            Ok(EXIT_OK)
        }
        Command::Uninstall => {
            // Held while the table goes, so no daemon starts half-way through.
            let _lock = daemon::InstanceLock::acquire(daemon::Action::Uninstall)?;
            let mut nft = Nft::open()?;
            nft.remove_table()?;
            eprintln!("table `inet nfknock` removed");
            Ok(EXIT_OK)
        }
        Command::ImportFwknop(args) => import_fwknop(&args),
    }
}

fn import_fwknop(args: &ImportFwknopArgs) -> anyhow::Result<i32> {
    use crate::fwknop_import as fi;
    let protect = match &args.protect {
        None => None,
        Some(list) => match access::parse_list(list) {
            Ok(v) if !v.is_empty() => Some(v),
            Ok(_) | Err(_) => {
                eprintln!("nfknock: --protect `{list}`: expected a list such as `tcp/22,tcp/443`");
                return Ok(EXIT_USAGE);
            }
        },
    };
    let opts = fi::Options { protect };
    let import = match fi::import(
        &crate::sys::FsLoader,
        &args.access_conf,
        args.fwknopd_conf.as_deref(),
        &opts,
    ) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("nfknock: {e}");
            return Ok(EXIT_USAGE);
        }
    };
    for d in &import.diags {
        eprintln!("{d}");
    }
    if let Some(text) = &import.toml {
        std::io::stdout()
            .write_all(text.as_bytes())
            .context("cannot write the config to stdout")?;
        eprintln!("{}", fi::secrecy_reminder(&args.access_conf));
    }
    eprintln!(
        "imported {} client{}{}",
        import.clients.len(),
        if import.clients.len() == 1 { "" } else { "s" },
        if import.failed > 0 {
            format!(
                "; {} stanza(s) could not be converted (see the errors above)",
                import.failed
            )
        } else {
            String::new()
        }
    );
    Ok(if import.complete() {
        EXIT_OK
    } else {
        EXIT_FAIL
    })
}

fn init_state(config: &Path, state_dir: Option<PathBuf>) -> anyhow::Result<i32> {
    use crate::state::{mark_first_start, MarkOutcome, StateError};
    let dir = match state_dir {
        Some(dir) => dir,
        None => daemon::load_config(config)?.server.state_dir,
    };
    match mark_first_start(&dir) {
        Ok(MarkOutcome::Marked) => eprintln!(
            "{} is marked as a new state directory: the next `nfknock serve` starts a new replay journal there and grants at once",
            dir.display()
        ),
        Ok(MarkOutcome::AlreadyMarked) => eprintln!(
            "{} is already marked as a new state directory; nothing changed",
            dir.display()
        ),
        Err(e @ StateError::HasJournal { .. }) => {
            eprintln!("nfknock: {e}");
            return Ok(EXIT_FAIL);
        }
        Err(e) => return Err(e.into()),
    }
    Ok(EXIT_OK)
}

fn keygen(out: Option<&Path>) -> anyhow::Result<i32> {
    let key = crypto::generate_secret_base64(&mut OsRng);
    match out {
        None => println!("{}", key.as_str()),
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| {
                    format!(
                        "cannot create key file {} (it must not exist yet)",
                        path.display()
                    )
                })?;
            writeln!(f, "{}", key.as_str())
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote a new key to {} (mode 0600)", path.display());
        }
    }
    Ok(EXIT_OK)
}

fn check(path: &Path) -> anyhow::Result<i32> {
    match config::load(path) {
        Ok(c) => {
            for w in config::warnings(&c) {
                eprintln!("warning: {w}");
            }
            println!(
                "{}: OK ({} client{}, port {}, protecting {})",
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

/// Everything a knock needs, resolved from flags and the optional client-config stanza.
struct KnockPlan {
    server: SocketAddr,
    key: NativeKey,
    access: Vec<Access>,
    timeout: u32,
    allow_ip: AllowIp,
}

fn knock(args: KnockArgs) -> anyhow::Result<i32> {
    let plan = resolve_knock(&args)?;
    let allow_ip = match plan.allow_ip {
        AllowIp::Source => None,
        AllowIp::Addr(ip) => Some(ip),
        AllowIp::Auto => Some(local_addr_towards(plan.server)?),
    };
    let req = native::Request {
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
                None => config::default_client_config_path().ok_or_else(|| {
                    anyhow!("cannot find the client config: set --client-config PATH")
                })?,
            };
            let cc = config::load_client(&path).map_err(|e| anyhow!("{e}"))?;
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
        .ok_or_else(|| anyhow!("no server given: use --server HOST or -n NAME"))?;
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
        (Some(path), _) => config::read_native_key_file(path).map_err(|p| anyhow!("{p}"))?,
        (None, Some(p)) => p.key.clone(),
        (None, None) => {
            bail!("no key given: use --key-file PATH (made by `nfknock keygen --out PATH`)")
        }
    };
    let access = match (&args.access, &profile) {
        (Some(list), _) => {
            access::parse_list(list).map_err(|e| anyhow!("--access `{list}`: {e}"))?
        }
        (None, Some(p)) => p.access.clone(),
        (None, None) => bail!("nothing to open: use --access tcp/22[,udp/53,...]"),
    };
    if access.is_empty() || access.len() > native::MAX_ACCESS {
        bail!("--access must list 1 to {} entries", native::MAX_ACCESS);
    }
    let timeout = args
        .timeout
        .or(profile.as_ref().and_then(|p| p.timeout))
        .unwrap_or(0);
    let allow_ip = match args.allow_ip.as_deref() {
        Some("source") => AllowIp::Source,
        Some(ip) => AllowIp::Addr(
            ip.parse()
                .map_err(|_| anyhow!("--allow-ip `{ip}`: expected an IP address or `source`"))?,
        ),
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

fn status(json: bool) -> anyhow::Result<i32> {
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

fn verify(args: VerifyArgs) -> anyhow::Result<i32> {
    let config = match config::load(&args.config) {
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
            "skew": k.map(|k| crate::policy::skew(k.timestamp, now)),
            "message_type": k.and_then(|k| k.message_type),
            "allow_ip": k.map(|k| k.allow_ip.map_or_else(|| "0.0.0.0".to_string(), |ip| ip.to_string())),
            "grant_ip": granted.map(|g| g.addr.to_string()),
            "access": k.map(|k| k.access.iter().map(Access::to_string).collect::<Vec<_>>()),
            "timeout": timeout,
            "requested_timeout": k.map(|k| k.timeout),
            "nat_access": k.and_then(|k| k.nat_access.clone()),
        });
        println!("{v}");
    } else {
        match &out.decision {
            Decision::Grant(g) => println!(
                "grant: client {} ({}), open {} for {} during {}s",
                client.as_deref().unwrap_or("?"),
                out.format.map_or("?", |f| f.name()),
                access::format_list(&g.access),
                g.addr,
                g.ttl
            ),
            Decision::Reject(r) => println!(
                "reject: {r} (format {}, client {})",
                out.format.map_or("unknown", |f| f.name()),
                client.as_deref().unwrap_or("-")
            ),
        }
    }
    Ok(if decision == "grant" {
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
