//! `nfknock knock`: resolve the flags and the optional client-config stanza into one knock —
//! native, or fwknop 2.x with `--fwknop` / `format = "fwknop"` — seal it and send it (or only
//! save it).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::Args;

use super::EXIT_OK;
use crate::access::{self, Access};
use crate::config::{self, AllowIp, FwknopProfile, ProfileKey};
use crate::crypto::NativeKey;
use crate::daemon;
use crate::sys::OsRng;
use crate::wire::fwknop::{self, DigestType, EncMode, FwknopKey, HmacType};
use crate::wire::native;

#[derive(Debug, Args)]
#[command(after_help = "\
fwknop packets (--fwknop): for fwknopd 2.x servers, or an nfknock [client.fwknop] entry.
  nfknock keygen --fwknop --out ~/.config/nfknock/home.key     (writes home.key, home.key.hmac)
  nfknock knock --fwknop -s HOST --key-file ~/.config/nfknock/home.key \\
      --hmac-key-file ~/.config/nfknock/home.key.hmac -A tcp/22 -a 198.51.100.7
  fwknop -A tcp/22 -a IP -D HOST -f 60 -U alice -m sha512 --hmac-digest-type sha512 -M ctr
  is      -A tcp/22 -a IP -s HOST --fw-timeout 60 --user alice --digest-type sha512
          --hmac-digest-type sha512 --encryption-mode ctr   (+ the two key files).
  fwknop's -s (allow IP 0.0.0.0: the server uses the packet's source) is `-a source`; fwknop's
  -R (ask a web service for your address) is not done: give the address with -a.
  Keys come from files (mode 0600), never from the command line. A `format = \"fwknop\"`
  stanza of the client config holds the same settings (see examples/client.toml).")]
pub struct KnockArgs {
    /// Server host name or address.
    #[arg(long, short = 's', value_name = "HOST")]
    pub server: Option<String>,
    /// Server UDP port [default: 62201, or the stanza's].
    #[arg(long, short = 'p')]
    pub port: Option<u16>,
    /// File holding the base64 key (mode 0600); with --fwknop, the Rijndael key
    /// (KEY_BASE64).
    #[arg(long, short = 'k', value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// What to open, e.g. `tcp/22` or `tcp/22,udp/53`.
    #[arg(long, short = 'A', value_name = "LIST")]
    pub access: Option<String>,
    /// Requested grant length in seconds (the server caps it); default: the server's. In an
    /// fwknop packet this is the client timeout (message type 3), at most 65536.
    #[arg(
        long,
        short = 't',
        value_name = "SECS",
        visible_alias = "fw-timeout",
        short_alias = 'f'
    )]
    pub timeout: Option<u32>,
    /// Address to open for: an IP, or `source` to let the server use the packet's source
    /// [default: this host's address on the route to the server; --fwknop needs it said: an
    /// IPv4 address, or `source` (fwknop's -s)].
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
    /// Send an fwknop 2.x SPA packet (Rijndael + HMAC, as the `fwknop` client does) instead of
    /// a native one: for fwknopd, or an nfknock `[client.fwknop]` entry. Implied by a
    /// `format = "fwknop"` stanza.
    #[arg(long)]
    pub fwknop: bool,
    /// fwknop: file holding the HMAC key (HMAC_KEY_BASE64, mode 0600).
    #[arg(long, value_name = "PATH")]
    pub hmac_key_file: Option<PathBuf>,
    /// fwknop: HMAC algorithm, as the server's HMAC_DIGEST_TYPE: md5, sha1, sha256, sha384,
    /// sha512, sha3_256, sha3_512 [default: sha256, or the stanza's].
    #[arg(long, value_name = "NAME")]
    pub hmac_digest_type: Option<HmacType>,
    /// fwknop: inner digest (fwknop's -m/--digest-type), same names [default: sha256, or the
    /// stanza's]. The server finds it by its length; any works.
    #[arg(long, value_name = "NAME")]
    pub digest_type: Option<DigestType>,
    /// fwknop: Rijndael mode, as the server's ENCRYPTION_MODE: cbc, ctr, cfb, ofb, ecb
    /// [default: cbc, or the stanza's].
    #[arg(long, value_name = "NAME")]
    pub encryption_mode: Option<EncMode>,
    /// fwknop: user name in the packet (fwknop's -U; the server's REQUIRE_USERNAME)
    /// [default: the stanza's, else $LOGNAME, else $USER].
    #[arg(long, short = 'U', value_name = "NAME")]
    pub user: Option<String>,
}

/// The packet a knock sends.
enum Sender {
    Native(NativeKey),
    Fwknop(FwknopProfile),
}

/// Everything a knock needs, resolved from flags and the optional client-config stanza.
struct KnockPlan {
    server: SocketAddr,
    sender: Sender,
    access: Vec<Access>,
    timeout: u32,
    allow_ip: AllowIp,
}

pub(super) fn knock(args: KnockArgs) -> anyhow::Result<i32> {
    let plan = resolve_knock(&args)?;
    let timestamp = daemon::unix_now().saturating_add_signed(args.time_offset);
    let (packet, allow_ip) = match &plan.sender {
        Sender::Native(key) => {
            let allow_ip = match plan.allow_ip {
                AllowIp::Source => None,
                AllowIp::Addr(ip) => Some(ip),
                AllowIp::Auto => Some(local_addr_towards(plan.server)?),
            };
            let req = native::Plaintext {
                timestamp,
                timeout: plan.timeout,
                allow_ip,
                access: plan.access.clone(),
            };
            let packet = native::seal(key, &req, &mut OsRng)
                .map_err(|e| anyhow!("cannot build the knock: {e}"))?;
            (packet.to_vec(), allow_ip)
        }
        Sender::Fwknop(f) => {
            let (packet, allow_ip) = fwknop_packet(f, &plan, timestamp)?;
            (packet.into_bytes(), allow_ip.map(IpAddr::V4))
        }
    };
    if let Some(path) = &args.save_packet {
        std::fs::write(path, &packet)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let what = format!(
        "{}{} for {} to {}",
        if matches!(plan.sender, Sender::Fwknop(_)) {
            "fwknop "
        } else {
            ""
        },
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

/// fwknop resolves "my address" over the internet (`-R`); nfknock does not guess it.
const NEED_ALLOW_IP: &str = "an fwknop knock needs the address to open for: --allow-ip IP (an IPv4 address), or --allow-ip source to let the server use the packet's source (fwknop's -s)";

/// An fwknop access message (type 1, or 3 with a client timeout) as the fwknop client builds
/// it (FWKNOP-WIRE.md §2): the allow IP first (`0.0.0.0` for "the packet's source").
fn fwknop_packet(
    f: &FwknopProfile,
    plan: &KnockPlan,
    timestamp: u64,
) -> anyhow::Result<(String, Option<std::net::Ipv4Addr>)> {
    let allow_ip = match plan.allow_ip {
        AllowIp::Source => None,
        AllowIp::Addr(IpAddr::V4(ip)) => Some(ip),
        AllowIp::Addr(IpAddr::V6(ip)) => {
            return Err(usage(format!(
                "--allow-ip {ip}: fwknop packets carry only an IPv4 allow IP; give an IPv4 address, or `source`"
            )))
        }
        AllowIp::Auto => return Err(usage(NEED_ALLOW_IP.into())),
    };
    let user = match &f.user {
        Some(u) => u.clone(),
        None => login_name(),
    };
    let req = fwknop::SealRequest::access(
        &user,
        timestamp,
        allow_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
        &plan.access,
        plan.timeout,
    );
    let packet = fwknop::seal_random(&f.key, &req, f.digest, &mut OsRng).map_err(|e| {
        anyhow!("cannot build the fwknop knock: {e}; ask for fewer ports, or a shorter --user")
    })?;
    if packet.len() >= fwknop::MIN_GNUPG_LEN {
        eprintln!(
            "warning: this fwknop packet is {} characters long; fwknopd takes packets of {} or more for GnuPG and ignores it (nfknock accepts it). Ask for fewer ports, or a shorter digest and HMAC.",
            packet.len(),
            fwknop::MIN_GNUPG_LEN
        );
    }
    Ok((packet, allow_ip))
}

/// The user name an fwknop packet carries when none is given: $LOGNAME, else $USER (as the
/// fwknop client looks, client/fwknop.c `get_user`), else `NO_USER`; one fwknop would refuse
/// is replaced by `NO_USER` too.
fn login_name() -> String {
    ["LOGNAME", "USER"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|n| n.len() <= fwknop::MAX_USERNAME_LEN && fwknop::valid_username(n.as_bytes()))
        .unwrap_or_else(|| "NO_USER".to_string())
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
    let sender = resolve_sender(args, profile.as_ref())?;
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
    let fw = matches!(sender, Sender::Fwknop(_));
    if access.is_empty() || (!fw && access.len() > native::MAX_ACCESS) {
        return Err(usage(format!(
            "--access must list 1 to {} entries",
            native::MAX_ACCESS
        )));
    }
    let timeout = args
        .timeout
        .or(profile.as_ref().and_then(|p| p.timeout))
        .unwrap_or(0);
    if fw && timeout > fwknop::MAX_CLIENT_TIMEOUT {
        return Err(usage(format!(
            "--fw-timeout {timeout}: an fwknop packet asks for at most {} seconds",
            fwknop::MAX_CLIENT_TIMEOUT
        )));
    }
    let allow_ip = match args.allow_ip.as_deref() {
        Some("source") => AllowIp::Source,
        Some(ip) => AllowIp::Addr(ip.parse().map_err(|_| {
            usage(format!(
                "--allow-ip `{ip}`: expected an IP address or `source`"
            ))
        })?),
        None => profile.as_ref().map_or(AllowIp::Auto, |p| p.allow_ip),
    };
    if fw && allow_ip == AllowIp::Auto {
        return Err(usage(match &profile {
            Some(p) => format!(
                "an fwknop knock needs the address to open for: add `allow_ip = \"IP\"` (an IPv4 address) or `allow_ip = \"source\"` to stanza `[server.{}]`, or pass --allow-ip",
                p.name
            ),
            None => NEED_ALLOW_IP.into(),
        }));
    }
    Ok(KnockPlan {
        server,
        sender,
        access,
        timeout,
        allow_ip,
    })
}

/// The key and format of the knock: the flags over the stanza's settings.
fn resolve_sender(
    args: &KnockArgs,
    profile: Option<&config::KnockProfile>,
) -> anyhow::Result<Sender> {
    let files = &crate::sys::FsLoader;
    let euid = crate::sys::euid();
    let from_profile = profile.map(|p| &p.key);
    let fwknop_flags = [
        ("--hmac-key-file", args.hmac_key_file.is_some()),
        ("--hmac-digest-type", args.hmac_digest_type.is_some()),
        ("--digest-type", args.digest_type.is_some()),
        ("--encryption-mode", args.encryption_mode.is_some()),
        ("--user", args.user.is_some()),
    ];
    let fw = args.fwknop || matches!(from_profile, Some(ProfileKey::Fwknop(_)));
    if !fw {
        if let Some((flag, _)) = fwknop_flags.iter().find(|(_, given)| *given) {
            return Err(usage(format!(
                "{flag} applies to fwknop knocks only; add --fwknop (or use a `format = \"fwknop\"` stanza)"
            )));
        }
        let key = match (&args.key_file, from_profile) {
            (Some(path), _) => {
                config::read_native_key_file(files, path, euid).map_err(|p| anyhow!("{p}"))?
            }
            (None, Some(ProfileKey::Native(k))) => k.clone(),
            (None, _) => {
                return Err(usage(
                    "no key given: use --key-file PATH (made by `nfknock keygen --out PATH`)"
                        .into(),
                ))
            }
        };
        return Ok(Sender::Native(key));
    }
    let base = match from_profile {
        Some(ProfileKey::Fwknop(f)) => Some(f),
        Some(ProfileKey::Native(_)) if args.key_file.is_none() || args.hmac_key_file.is_none() => {
            return Err(usage(format!(
                "--fwknop: stanza `{}` holds a native key; give --key-file and --hmac-key-file, or set `format = \"fwknop\"` with its keys in the stanza",
                args.name.as_deref().unwrap_or_default()
            )))
        }
        _ => None,
    };
    let read = |path: &PathBuf| {
        config::read_fwknop_key_file(files, path, euid).map_err(|p| anyhow!("{p}"))
    };
    let key = match (&args.key_file, base) {
        (Some(p), _) => read(p)?,
        (None, Some(f)) => f.key.key.clone(),
        (None, None) => {
            return Err(usage(
                "no key given: use --key-file PATH and --hmac-key-file PATH (made by `nfknock keygen --fwknop --out PATH`)".into(),
            ))
        }
    };
    let hmac_key = match (&args.hmac_key_file, base.and_then(|f| f.key.hmac_key.as_ref())) {
        (Some(p), _) => read(p)?,
        (None, Some(h)) => h.clone(),
        (None, None) => {
            return Err(usage(
                "no HMAC key given: use --hmac-key-file PATH (the PATH.hmac `nfknock keygen --fwknop --out PATH` wrote); fwknop knocks are always sent with an HMAC".into(),
            ))
        }
    };
    let hmac = args
        .hmac_digest_type
        .or(base.map(|f| f.key.hmac_type))
        .unwrap_or(HmacType::Sha256);
    let mode = args
        .encryption_mode
        .or(base.map(|f| f.key.mode))
        .unwrap_or(EncMode::Cbc);
    if mode == EncMode::Legacy {
        return Err(usage(
            "--encryption-mode legacy cannot be used with an HMAC (fwknop refuses it too); use cbc and update the server's stanza".into(),
        ));
    }
    let key = FwknopKey::new(key, Some(hmac_key), hmac, mode).map_err(|e| {
        let from = match (&args.key_file, &args.hmac_key_file) {
            (Some(k), Some(h)) => format!("{} and {}", k.display(), h.display()),
            (Some(k), None) | (None, Some(k)) => k.display().to_string(),
            (None, None) => format!(
                "stanza `[server.{}]`",
                args.name.as_deref().unwrap_or_default()
            ),
        };
        anyhow!("fwknop keys from {from}: {e}")
    })?;
    let user = match &args.user {
        Some(u) if u.len() > fwknop::MAX_USERNAME_LEN || !fwknop::valid_username(u.as_bytes()) => {
            return Err(usage(format!(
                "--user `{u}`: fwknop accepts 1 to {} letters, digits and `_.-@`",
                fwknop::MAX_USERNAME_LEN
            )))
        }
        Some(u) => Some(u.clone()),
        None => base.and_then(|f| f.user.clone()),
    };
    Ok(Sender::Fwknop(FwknopProfile {
        key,
        digest: args
            .digest_type
            .or(base.map(|f| f.digest))
            .unwrap_or(DigestType::Sha256),
        user,
    }))
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
