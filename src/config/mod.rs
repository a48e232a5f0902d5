//! Configuration: the daemon's (`[server]` + `[[client]]` → [`Config`], one [`ClientEntry`] per
//! `[[client]]`) and the knock client's own file ([`KnockProfiles`]). Every error names the
//! file, the line and the key, and says what to do.
//!
//! Two stages (STYLE.md habit 7): `raw` deserializes the TOML into serde structs with
//! `deny_unknown_fields`, keeping byte spans; `server` (`settings`, `client_entry`,
//! `fwknop_key`) and `knock_profile` check ranges, keys and references and build the types
//! below. Checking does not stop at the first problem: a person fixing a config wants the
//! whole list at once.
//!
//! Pure: parsing never panics on any input (a proptest holds it to that) and reads nothing by
//! itself. Files (the config, key files) come through the [`Files`] it is given and users
//! through [`Accounts`]; the daemon and the CLI pass `sys::FsLoader` and
//! `sys::SystemAccounts`, tests and fuzz targets [`MemFiles`] and [`NoAccounts`].

mod files;
mod knock_profile;
mod raw;
mod secret;
mod server;
mod values;

// Shared with the fwknop importer, so its keys and dates are read exactly as a config's are.
pub(crate) use secret::shell_quote;
pub(crate) use values::date_to_unix;

use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::access::Access;
use crate::crypto::NativeKey;
use crate::wire::fwknop::FwknopKey;
pub(crate) use files::too_long;
pub use files::{
    is_link_refused, link_refused, Account, Accounts, AnyUser, FileMeta, Files, Loaded, MemFiles,
    NoAccounts, MAX_CONFIG_LEN, MAX_KEY_FILE_LEN,
};

/// Defaults (also documented in the example config and `--help`).
pub const DEFAULT_PORT: u16 = 62201;
pub const DEFAULT_QUEUE: u16 = 0;
/// Most queues (and so worker threads) `queue = "a-b"` may name.
pub const MAX_QUEUES: u16 = 64;
pub const DEFAULT_STATE_DIR: &str = "/var/lib/nfknock";
/// The `metrics_file` the docs, the example and the AppArmor profile suggest: the directory
/// Debian's prometheus-node-exporter reads textfiles from. Not a default: unset, no file.
pub const NODE_EXPORTER_METRICS_FILE: &str = "/var/lib/prometheus/node-exporter/nfknock.prom";
pub const DEFAULT_MAX_AGE: u64 = 120;
pub const DEFAULT_TIMEOUT: u32 = 30;
pub const DEFAULT_MAX_TIMEOUT: u32 = 3600;
pub const DEFAULT_RATE_LIMIT: u32 = 20;
/// At most this many fwknop clients may admit one source address (issue 11 §2). An fwknop
/// packet carries no key hint, so it is tried under each such client in turn, one HMAC each:
/// this bounds what one forged packet costs (about 0.36 µs per client measured, so under
/// 0.1 ms). A config in which a client would come later than this for some address is refused
/// rather than loaded with that client unreachable from there: no client is silently locked
/// out. The engine stops at the same bound whatever it is given.
pub const MAX_FWKNOP_CANDIDATES: usize = 256;
/// The knock rate limit meters an IPv4 source per address...
pub const DEFAULT_RATE_LIMIT_V4_PREFIX: u8 = 32;
/// ... and an IPv6 source per /64: one host commonly holds a whole /64, so per-address
/// buckets would give it 2^64 of them.
pub const DEFAULT_RATE_LIMIT_V6_PREFIX: u8 = 64;
/// The user a daemon started as root switches to when `[server] user` is not set (and the
/// account exists in [`LOCAL_USERS`]): the one `scripts/install` creates and the systemd unit
/// runs as.
pub const DEFAULT_USER: &str = "nfknock";
/// The local user database, the only place [`DEFAULT_USER`] is looked up (`useradd` writes it).
pub const LOCAL_USERS: &str = "/etc/passwd";
/// How messages say to create a service user (`useradd` USER): a system account that cannot
/// log in, as `scripts/install` creates [`DEFAULT_USER`].
pub const USERADD: &str =
    "useradd --system --user-group --no-create-home --shell /usr/sbin/nologin";

/// The validated server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    pub server: Server,
    pub clients: Vec<ClientEntry>,
}

#[derive(Debug, Clone)]
pub struct Server {
    /// UDP port knocks arrive on.
    pub port: u16,
    /// NFQUEUE number (the first of the range).
    pub queue: u16,
    /// Queues `queue .. queue + queue_count`, one worker thread each; the kernel spreads
    /// knocks over them by flow (`queue = "0-3"`). 1 = one queue, served by the main loop.
    pub queue_count: u16,
    pub state_dir: PathBuf,
    /// Protected proto/ports (default: union of all clients' `allow`), sorted, deduplicated.
    pub protect: Vec<Access>,
    /// Seconds a knock's timestamp may differ from now (either direction).
    pub max_age: u64,
    /// Create/refresh the `inet nfknock` table at start (else it must be loaded by the admin).
    pub manage_ruleset: bool,
    /// Gate DNAT-published ports in the forward hook too.
    pub gate_forward: bool,
    /// Per-source knock rate limit in the kernel, packets per second (burst = 2×).
    pub rate_limit: u32,
    /// The rate limit's "source": an IPv4 address masked to this prefix length (1..=32).
    pub rate_limit_v4_prefix: u8,
    /// The rate limit's "source": an IPv6 address masked to this prefix length (1..=128).
    pub rate_limit_v6_prefix: u8,
    /// On a reload, remove the live grants the new config no longer authorises (client
    /// removed, its key changed, it expired, the access left its `allow` or entered its
    /// `deny`, or the address left its `sources`). `false` lets them run out their time.
    pub revoke_on_reload: bool,
    /// Drop native-length packets whose key hint is not valid right now, and fwknop-length
    /// packets from outside every fwknop client's `sources`, in the kernel, before the queue
    /// (`prefilter`, default on). Off: every knock-shaped packet reaches the daemon, which
    /// then can tell a skewed client's clock from junk (`stale by N seconds`).
    pub prefilter: bool,
    /// Where grants are written ([`crate::grants`] opens it).
    pub backend: Backend,
    /// The ipsets of `backend = "ipset"` (`ipset_v4`, `ipset_v6`).
    pub ipset: IpsetNames,
    /// Who the daemon runs as once set up (`user`), resolved when the config was read.
    pub user: RunAs,
    /// Commands running at once in the command runner (`max_commands`).
    pub max_commands: u32,
    /// Where the daemon writes its Prometheus metrics every few seconds (`metrics_file`), for
    /// node_exporter's textfile collector; `None`: no metrics file.
    pub metrics_file: Option<PathBuf>,
}

/// `[server] backend`: where grants are written. Each variant is one file under `src/grants/`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Elements with timeouts in the allow sets of table `inet nfknock`, gated by its chains.
    #[default]
    Nftables,
    /// Elements with timeouts in two ipsets of type `hash:ip,port` (one per family), for hosts
    /// that filter with iptables or firewalld; their gate is `nfknock ruleset --iptables`.
    Ipset,
}

impl Backend {
    /// As written in `[server] backend`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Nftables => "nftables",
            Backend::Ipset => "ipset",
        }
    }
}

/// Default `[server] ipset_v4`: the IPv4 ipset of `backend = "ipset"`.
pub const DEFAULT_IPSET_V4: &str = "nfknock_allow_v4";
/// Default `[server] ipset_v6`.
pub const DEFAULT_IPSET_V6: &str = "nfknock_allow_v6";
/// Longest ipset name, bytes: the kernel's `IPSET_MAXNAMELEN` (32) holds the terminating NUL
/// (`include/uapi/linux/netfilter/ipset/ip_set.h`).
pub const IPSET_NAME_MAX: usize = 31;

/// The two ipsets of `backend = "ipset"`, one per address family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpsetNames {
    pub v4: String,
    pub v6: String,
}

impl Default for IpsetNames {
    fn default() -> IpsetNames {
        IpsetNames {
            v4: DEFAULT_IPSET_V4.to_string(),
            v6: DEFAULT_IPSET_V6.to_string(),
        }
    }
}

impl IpsetNames {
    /// The set of `v6`'s family.
    pub fn of(&self, v6: bool) -> &str {
        if v6 {
            &self.v6
        } else {
            &self.v4
        }
    }
}

/// Why `name` cannot be an ipset name (`None`: it can): 1 to [`IPSET_NAME_MAX`] bytes of
/// printable ASCII without spaces, as the `ipset` tool and iptables' `--match-set` take it.
pub fn ipset_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > IPSET_NAME_MAX {
        Some("is longer than the kernel's 31 bytes")
    } else if !name.bytes().all(|b| b.is_ascii_graphic()) {
        Some("holds a space, a control character or a non-ASCII character")
    } else if name.starts_with('-') {
        Some("starts with `-` (the ipset and iptables tools would take it for an option)")
    } else {
        None
    }
}

/// `[server] user`, resolved against the user database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunAs {
    /// `user` is not set and there is no account [`DEFAULT_USER`]: nfknock stays the user it
    /// was started as.
    Unchanged,
    /// This account. `explicit` when the config names it, not when it is [`DEFAULT_USER`].
    User { account: Account, explicit: bool },
}

impl RunAs {
    /// The account a daemon running as `euid` switches to: one other than root, when it runs
    /// as root. (A daemon started as another user cannot switch; systemd's `User=` already did.)
    pub fn switch_to(&self, euid: u32) -> Option<&Account> {
        match self {
            RunAs::User { account, .. } if euid == 0 && account.uid != 0 => Some(account),
            _ => None,
        }
    }
}

/// One `[[client]]` of the daemon's config: who may knock, with which key, for what. (The
/// knock client's own file is [`KnockProfiles`].)
#[derive(Debug, Clone)]
pub struct ClientEntry {
    pub name: String,
    pub credential: Credential,
    /// Accesses this client may open. A knock asking for anything else is refused whole.
    pub allow: Vec<Access>,
    /// Accesses never granted (fwknop `RESTRICT_PORTS`).
    pub deny: Vec<Access>,
    /// Grant length when the knock asks for none.
    pub timeout: u32,
    /// Cap on what a knock may ask for.
    pub max_timeout: u32,
    /// Knocks are accepted only from these source networks.
    pub sources: Vec<IpNet>,
    /// If non-empty, knocks must be addressed to one of these (fwknop `DESTINATION`).
    pub destinations: Vec<IpNet>,
    /// The allow-IP inside the packet must equal the packet's source.
    pub require_source_match: bool,
    /// fwknop `REQUIRE_USERNAME`.
    pub require_username: Option<String>,
    /// Unix time after which this client is refused (fwknop `ACCESS_EXPIRE(_EPOCH)`).
    pub expires_at: Option<u64>,
    /// Command cycles and command messages (`grant`, `on_grant`, `commands`, ...).
    pub commands: crate::command::ClientCommands,
    /// Ports of `allow` whose grants are forwarded elsewhere (`nat`; fwknop `FORCE_NAT`).
    pub nat: Vec<NatRule>,
    /// Networks a grant of this client also opens for forwarding from its source (`gateway`;
    /// fwknop `FORWARD_ALL`).
    pub gateway: Option<Gateway>,
}

/// `gateway` (fwknop `FORWARD_ALL`): a grant of the client also lets its source open new
/// forwarded flows, any protocol and port, into `networks`, for the grant's time. The forward
/// gate closes these networks to every source without such a grant; others are untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// Never empty, never a /0.
    pub networks: Vec<IpNet>,
    /// What the source of those flows becomes (masquerade, SNAT, kept).
    pub source: crate::access::SourceNat,
}

impl ClientEntry {
    /// The `nat` rule that forwards `access` for a grant to an address of `addr`'s family.
    pub fn nat_for(&self, access: Access, addr: std::net::IpAddr) -> Option<&NatRule> {
        self.nat
            .iter()
            .find(|r| r.access == access && r.fits_family(addr))
    }
}

/// One `nat` entry: a grant of `access` is forwarded to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatRule {
    /// The port the client connects to on this host (one of its `allow`).
    pub access: Access,
    pub to: NatTo,
    pub source: crate::access::SourceNat,
    /// `false` (`dnat = false`, fwknop `DISABLE_DNAT`): no translation; the client connects
    /// to the target itself (then `port` is the target's), and the forward gate closes the
    /// target to everyone else.
    pub dnat: bool,
}

/// Where a `nat` entry forwards to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatTo {
    /// An internal host (fwknop NAT access, `FORCE_NAT`).
    Host(std::net::SocketAddr),
    /// A port of this host, at the address the knock was sent to (fwknop local NAT).
    Local(u16),
}

impl std::fmt::Display for NatTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatTo::Host(a) => write!(f, "{a}"),
            NatTo::Local(p) => write!(f, ":{p}"),
        }
    }
}

impl NatRule {
    /// Can a grant for `addr` use this rule? (A local target fits both families.)
    pub fn fits_family(&self, addr: std::net::IpAddr) -> bool {
        match self.to {
            NatTo::Host(t) => t.is_ipv4() == addr.is_ipv4(),
            NatTo::Local(_) => match self.source {
                crate::access::SourceNat::To(s) => s.is_ipv4() == addr.is_ipv4(),
                _ => true,
            },
        }
    }

    /// Would both rules serve a grant of the same family?
    pub(crate) fn same_family(&self, other: &NatRule) -> bool {
        match (self.to, other.to) {
            (NatTo::Host(a), NatTo::Host(b)) => a.is_ipv4() == b.is_ipv4(),
            _ => true,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Credential {
    Native(NativeKey),
    Fwknop(FwknopKey),
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted key, e.g. `client[2].key_file`.
    pub key: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found (loading does not stop at the first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<Problem>);

pub use knock_profile::{
    knock_profiles_path, load_knock_profiles, parse_knock_profiles, AllowIp, FwknopProfile,
    KnockEnv, KnockProfile, KnockProfiles, ProfileKey,
};
pub use secret::{decode_native_secret, read_fwknop_key_file, read_native_key_file};
pub use server::{MAX_MAX_AGE, MAX_MAX_TIMEOUT};
pub use values::valid_name;

/// The example server config shipped as `examples/server.toml` (for `nfknock` to print).
pub fn render_example() -> &'static str {
    include_str!("../../examples/server.toml")
}

/// Read and validate a server config, reading it and the key files it names through
/// `files` and resolving `[server] user` against `accounts` (the daemon and the CLI pass
/// `sys::FsLoader` and `sys::SystemAccounts`).
///
/// Besides everything [`parse`] checks, a config that holds an inline key must itself be
/// private: no group/world bits, owned by the user nfknock reads it as (checked on the file
/// that was read).
pub fn load(
    path: &Path,
    files: &dyn Files,
    accounts: &dyn Accounts,
) -> Result<Config, ConfigErrors> {
    let (text, meta) = read_config(files, path)?;
    let checked = server::check_text(&text, path, files, accounts);
    let mut problems = checked.problems;
    if checked.inline_secret {
        if let Err(problem) = inline_secrets_private(path, meta, &checked.owner) {
            problems.insert(0, problem);
        }
    }
    match checked.plan {
        Some(plan) if problems.is_empty() => Ok(plan.build()),
        _ => Err(ConfigErrors(problems)),
    }
}

/// A config file that holds inline keys must be private (`meta`: the file that was read) and
/// belong to `owner`.
fn inline_secrets_private(
    path: &Path,
    meta: FileMeta,
    owner: &secret::Owner,
) -> Result<(), Problem> {
    secret::check_private(path, "config file", meta, owner).map_err(|message| Problem {
        path: path.to_path_buf(),
        line: None,
        key: None,
        message: format!(
            "{message} (it holds inline keys; or move them to key files with `key_file = PATH`)"
        ),
    })
}

/// Validate a server config given as text. `path` is used in messages and to resolve relative
/// `key_file`s, which are read through `files`; `[server] user` is resolved against
/// `accounts`. The config file's own permissions are [`load`]'s business.
pub fn parse(
    text: &str,
    path: &Path,
    files: &dyn Files,
    accounts: &dyn Accounts,
) -> Result<Config, ConfigErrors> {
    let checked = server::check_text(text, path, files, accounts);
    match checked.plan {
        Some(plan) if checked.problems.is_empty() => Ok(plan.build()),
        _ => Err(ConfigErrors(checked.problems)),
    }
}

/// [`parse`] of the text alone: no file can be read (a `key_file` is reported as missing) and
/// the user database is empty (an explicit `[server] user` is reported as unknown). For text
/// that carries its keys inline: fuzz targets, the importer's output, tests.
pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    parse(text, path, &MemFiles::new(), &NoAccounts)
}

/// Read a config file through `files` as UTF-8 (zeroized after use: it may hold keys), with
/// the metadata of what was read for the privacy check. `files` follows a symbolic link and
/// refuses anything but a regular file (a FIFO would block the daemon's reload forever).
fn read_config(
    files: &dyn Files,
    path: &Path,
) -> Result<(zeroize::Zeroizing<String>, FileMeta), ConfigErrors> {
    let cannot = |e: std::io::Error| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            "; create it (start from examples/server.toml) or pass the right path with --config"
        } else {
            ""
        };
        ConfigErrors(vec![Problem {
            path: path.to_path_buf(),
            line: None,
            key: None,
            message: format!("cannot read the config file: {e}{hint}"),
        }])
    };
    let loaded = files.read_config(path).map_err(cannot)?;
    let bytes = &loaded.bytes;
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok((zeroize::Zeroizing::new(text.to_string()), loaded.meta)),
        Err(e) => {
            let line = bytes
                .get(..e.valid_up_to())
                .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
                + 1;
            Err(ConfigErrors(vec![Problem {
                path: path.to_path_buf(),
                line: Some(line),
                key: None,
                message: "the file is not valid UTF-8; TOML files must be UTF-8 text".to_string(),
            }]))
        }
    }
}

/// Things that are legal but risky, one sentence each with what to do. Pure: the daemon logs
/// them at `warn` when it starts and on reload; `nfknock check` prints them.
pub fn warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let s = &config.server;
    if s.rate_limit == 0 {
        out.push(
            "[server] rate_limit = 0: knocks are not rate limited in the kernel, a flood reaches the daemon; set e.g. `rate_limit = 20`"
                .to_string(),
        );
    }
    if s.rate_limit > 0 && s.rate_limit_v6_prefix > DEFAULT_RATE_LIMIT_V6_PREFIX {
        out.push(format!(
            "[server] rate_limit_v6_prefix = {}: a host holding a /64 gets a knock budget per address, and can fill the rate set so that knocks from new sources are dropped; use `rate_limit_v6_prefix = {DEFAULT_RATE_LIMIT_V6_PREFIX}`",
            s.rate_limit_v6_prefix
        ));
    }
    if let Some(a) = s
        .protect
        .iter()
        .find(|a| a.proto == crate::access::Proto::Udp && a.port == s.port)
    {
        out.push(format!(
            "[server] protect contains {a}, the knock port itself: the gate may drop knocks before they reach the queue; remove it from `protect`"
        ));
    }
    for c in &config.clients {
        let n = &c.name;
        if let Credential::Fwknop(k) = &c.credential {
            let open_to_all = c.sources.iter().any(|net| net.prefix_len() == 0);
            if k.hmac_key.is_none() {
                let whom = if open_to_all {
                    "from any address on the internet"
                } else {
                    "from its `sources`"
                };
                out.push(format!(
                    "client `{n}`: no HMAC (no_hmac = true), so fwknop packets {whom} are decrypted before they are authenticated; generate an HMAC key with `fwknop --key-gen` and set `hmac_key_base64` on both ends"
                ));
            }
            match k.mode {
                crate::wire::fwknop::EncMode::Ecb => out.push(format!(
                    "client `{n}`: mode = \"ecb\" leaks patterns of the plaintext; use \"cbc\" (the fwknop default) on both ends"
                )),
                crate::wire::fwknop::EncMode::Legacy => out.push(format!(
                    "client `{n}`: mode = \"legacy\" is for fwknop < 2.5 clients and cannot use an HMAC; upgrade the client and switch to \"cbc\" with an HMAC key"
                )),
                _ => {}
            }
            if k.hmac_key.is_some()
                && matches!(
                    k.hmac_type,
                    crate::wire::fwknop::HmacType::Md5 | crate::wire::fwknop::HmacType::Sha1
                )
            {
                out.push(format!(
                    "client `{n}`: hmac = \"{}\" is a weak digest; use \"sha256\" on both ends",
                    if k.hmac_type == crate::wire::fwknop::HmacType::Md5 {
                        "md5"
                    } else {
                        "sha1"
                    }
                ));
            }
        }
        if !c.require_source_match {
            out.push(format!(
                "client `{n}`: require_source_match = false lets a knock open access for an address other than its source (anyone who captures it can aim it elsewhere); set it to true unless the client knocks for another host on purpose"
            ));
        }
        if let Some(u) = c.commands.user.as_ref().filter(|u| u.net_admin) {
            out.push(format!(
                "client `{n}`: command_net_admin = true: its commands (as `{}`) may change any firewall rule, set and route of this host; keep them to fixed programs such as ipset or nft",
                u.account.name
            ));
        }
        if c.commands
            .exec
            .as_ref()
            .is_some_and(|e| !e.prefixes.is_empty())
        {
            out.push(format!(
                "client `{n}`: command_prefixes lets a knock add arguments after each prefix; prefer exact `commands` where the arguments are known"
            ));
        }
        for a in c.allow.iter().filter(|a| c.deny.contains(a)) {
            out.push(format!("client `{n}`: {a} is in both `allow` and `deny`; deny wins, so remove it from one of them"));
        }
    }
    out
}

/// [`warnings`] plus clients whose `expires` is already past at `now` (Unix seconds).
pub fn warnings_at(config: &Config, now: u64) -> Vec<String> {
    let mut out = warnings(config);
    for c in &config.clients {
        if let Some(t) = c.expires_at.filter(|&t| t <= now) {
            out.push(format!(
                "client `{}` expired at Unix time {t}: its knocks are refused; remove the client or move `expires` forward",
                c.name
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
