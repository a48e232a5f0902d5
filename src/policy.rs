//! `(knock, packet, client, now) -> Decision`. Pure: no I/O, no clock, never panics.
//!
//! The engine calls this once a packet has authenticated under `client`'s key; everything here
//! is about what the authenticated knock may have, in the order an operator should hear it.
//!
//! One name per layer for what a knock asks: the wire layer says what a packet says in its own
//! terms ([`wire::native::Plaintext`](crate::wire::native::Plaintext),
//! [`wire::fwknop::SpaMessage`](crate::wire::fwknop::SpaMessage)); the engine turns either,
//! once authenticated, into one [`Knock`]; [`evaluate`] judges the knock and returns a
//! [`Decision`].

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::access::{Access, GatewayTo, NatTarget};
use crate::config::{ClientEntry, NatRule, NatTo};
use crate::wire::ip::is_ipv4_mapped;

/// What an authenticated knock asks for, whatever its wire format. The engine builds it from
/// a native plaintext or an fwknop message, [`evaluate`] judges it, and the engine's `Outcome`
/// carries it for logs and `verify --json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Knock {
    /// The client's clock, Unix seconds.
    pub timestamp: u64,
    /// Address to open for; `None` = "the packet's source" (native family 0, fwknop `0.0.0.0`).
    pub allow_ip: Option<IpAddr>,
    pub access: Vec<Access>,
    /// Requested grant length, seconds; 0 = the client's default.
    pub timeout: u32,
    /// fwknop username; native knocks have none.
    pub username: Option<String>,
    /// fwknop message type (`fko_message_type_t`, lib/fko.h); native knocks have none (every
    /// native knock is an access request).
    pub message_type: Option<u8>,
    /// fwknop NAT target as sent, `host,port` (NAT messages, types 2, 4, 5, 6 only). Judged
    /// against the client's `nat` list; never used as a destination itself.
    pub nat_access: Option<String>,
    /// The command text of an fwknop command message (type 0), as sent.
    pub command: Option<String>,
}

/// Where the packet came from and went to, as the kernel saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
}

/// Open `access` for `addr` for `ttl` seconds; those of `access` named in `nat` are forwarded
/// to their target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub addr: IpAddr,
    pub access: Vec<Access>,
    pub ttl: u32,
    /// Forwarded accesses (each also in `access`) and where to: from the client's `nat`.
    pub nat: Vec<(Access, NatTarget)>,
    /// The client's `gateway` networks of `addr`'s family (fwknop `FORWARD_ALL`): `addr` may
    /// also open new forwarded flows into each of them, any port, for `ttl`. Empty for a
    /// client without `gateway`.
    pub gateway: Vec<GatewayTo>,
}

/// Run a command message's `argv` (already split and matched against the client's
/// allow-list; the runner checks it again) for the knock from `addr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRun {
    pub addr: IpAddr,
    pub argv: Vec<String>,
}

/// The outcome for one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Grant(Grant),
    /// An allowed fwknop command message (type 0).
    Command(CommandRun),
    Reject(Reason),
}

/// Why a packet was refused. Allocation-free: it is built on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Not an IP/UDP packet we can read (never happens with the shipped ruleset).
    NotUdp,
    /// A payload length no accepted format has.
    BadLength,
    /// Cheap pre-crypto checks failed (native version; fwknop charset or salted prefix).
    BadHeader(&'static str),
    /// No configured key matches (native hint unknown; no fwknop client for this source).
    UnknownKey,
    /// A key matched but the packet's source (or destination) is not permitted for it.
    SourceNotAllowed,
    /// The packet's source is an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`): an IPv6 header
    /// never legitimately carries one ([`is_ipv4_mapped`]). Refused before any crypto.
    MappedSource,
    /// The AEAD tag / HMAC did not verify under any candidate key.
    AuthFailed,
    /// Authenticated, but the content is invalid.
    Malformed(&'static str),
    /// This exact packet was already accepted.
    Replay,
    /// Stamped before the oldest time the replay records still cover (the journal was lost,
    /// corrupt or old, or the clock stepped back past forgotten records): it may be a replay.
    StateLost,
    /// The timestamp differs from now by more than `max_age`; `skew` = timestamp − now.
    Stale { skew: i64 },
    /// The client's access has expired (`expires`).
    ClientExpired,
    /// The packet asks for "my source address" but the client must name it.
    SourceRequired,
    /// The allow-IP inside the packet is not the packet's source.
    SourceMismatch,
    /// fwknop `REQUIRE_USERNAME` mismatch.
    UsernameMismatch,
    /// The knock asks for no access at all.
    NoAccess,
    /// The client may not open this access.
    NotAllowed(Access),
    /// A feature nfknock does not serve (fwknop command messages, GPG).
    Unsupported(&'static str),
    /// A command message whose command is not in the client's `commands`/`command_prefixes`,
    /// or cannot be split without a shell.
    CommandNotAllowed,
    /// A NAT request for this access that the client's `nat` list does not allow: no entry
    /// for it, or not to the target the packet names (the packet never picks a destination).
    NatNotAllowed(Access),
    /// The client's `nat` forwards this access only to addresses of the other IP family.
    NatFamily(Access),
}

impl Reason {
    /// Stable short name, for logs, `verify --json` and counters.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::NotUdp => "not-udp",
            Reason::BadLength => "bad-length",
            Reason::BadHeader(_) => "bad-header",
            Reason::UnknownKey => "unknown-key",
            Reason::SourceNotAllowed => "source-not-allowed",
            Reason::MappedSource => "mapped-source",
            Reason::AuthFailed => "auth-failed",
            Reason::Malformed(_) => "malformed",
            Reason::Replay => "replay",
            Reason::StateLost => "state-lost",
            Reason::Stale { .. } => "stale",
            Reason::ClientExpired => "client-expired",
            Reason::SourceRequired => "source-required",
            Reason::SourceMismatch => "source-mismatch",
            Reason::UsernameMismatch => "username-mismatch",
            Reason::NoAccess => "no-access",
            Reason::NotAllowed(_) => "not-allowed",
            Reason::Unsupported(_) => "unsupported",
            Reason::CommandNotAllowed => "command-not-allowed",
            Reason::NatNotAllowed(_) => "nat-not-allowed",
            Reason::NatFamily(_) => "nat-family",
        }
    }

    /// Failures that say nothing about a configured client (junk, floods): logged at `debug`.
    pub fn is_noise(&self) -> bool {
        matches!(
            self,
            Reason::NotUdp | Reason::BadLength | Reason::BadHeader(_) | Reason::UnknownKey
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotUdp => write!(f, "not a UDP packet"),
            Reason::BadLength => write!(f, "payload length matches no knock format"),
            Reason::BadHeader(what) => write!(f, "bad header: {what}"),
            Reason::UnknownKey => write!(f, "no configured key matches"),
            Reason::SourceNotAllowed => write!(f, "source address not allowed for this client"),
            Reason::MappedSource => write!(
                f,
                "IPv4-mapped IPv6 source address (::ffff:a.b.c.d) in an IPv6 packet; clients must knock over IPv4 or from a real IPv6 address"
            ),
            Reason::AuthFailed => write!(f, "authentication failed (wrong key or tampered packet)"),
            Reason::Malformed(what) => write!(f, "malformed request: {what}"),
            Reason::Replay => write!(f, "replayed packet"),
            Reason::StateLost => write!(
                f,
                "timestamp older than the replay records reach (journal lost, or a clock stepped); knock again, from a correct clock"
            ),
            Reason::Stale { skew } => write!(
                f,
                "timestamp {} by {}s, more than max_age; check the client's clock",
                if *skew < 0 { "behind" } else { "ahead" },
                skew.unsigned_abs()
            ),
            Reason::ClientExpired => write!(f, "client access expired"),
            Reason::SourceRequired => write!(
                f,
                "knock asks for its source address but the client requires an explicit allow-IP"
            ),
            Reason::SourceMismatch => write!(
                f,
                "allow-IP inside the knock differs from the packet source"
            ),
            Reason::UsernameMismatch => write!(f, "username does not match require_username"),
            Reason::NoAccess => write!(f, "knock requests no access"),
            Reason::NotAllowed(a) => write!(f, "{a} is not allowed for this client"),
            Reason::Unsupported(what) => write!(f, "unsupported: {what}"),
            Reason::CommandNotAllowed => write!(
                f,
                "command not in this client's `commands`/`command_prefixes` (or written with shell syntax)"
            ),
            Reason::NatNotAllowed(a) => write!(
                f,
                "NAT request for {a} names a target this client's `nat` does not list for {a}; add the target to its `nat` if it should be reachable"
            ),
            Reason::NatFamily(a) => write!(
                f,
                "{a} is forwarded only to addresses of the other IP family; add a `nat` target of this family or knock over the other one"
            ),
        }
    }
}

/// May `client` knock from `packet.src` to `packet.dst`? Checked before any crypto, so a
/// packet from elsewhere costs nothing (fwknop `SOURCE` / `DESTINATION`).
///
/// Addresses are matched as they are, family included: an IPv4-mapped IPv6 source is never
/// permitted (not even by `::/0`), and no other IPv6 form is read as IPv4.
pub fn addresses_permitted(client: &ClientEntry, packet: &Packet) -> bool {
    !is_ipv4_mapped(packet.src)
        && client.sources.iter().any(|net| net.contains(&packet.src))
        && (client.destinations.is_empty()
            || client.destinations.iter().any(|n| n.contains(&packet.dst)))
}

/// Decide what an authenticated knock gets.
///
/// `max_age` is the server's timestamp window; a knock stamped before `not_before` is refused
/// as [`Reason::StateLost`] (the replay records do not reach back that far, so it may be a
/// replay). The checks run in the order their refusals help an operator most: what nfknock
/// never serves, lost replay state, a mapped source, the client's expiry, the age, the packet's
/// addresses, then what the knock asks for.
pub fn evaluate(
    knock: &Knock,
    packet: &Packet,
    client: &ClientEntry,
    max_age: u64,
    not_before: u64,
    now: u64,
) -> Decision {
    match check(knock, packet, client, max_age, not_before, now) {
        Ok(d) => d,
        Err(reason) => Decision::Reject(reason),
    }
}

/// The fwknop message types nfknock serves (`fko_message_type_t`, lib/fko.h): access requests,
/// `FKO_ACCESS_MSG` (1) and `FKO_CLIENT_TIMEOUT_ACCESS_MSG` (3); NAT access, types 2 and 4, and
/// local NAT, 5 and 6 (judged against the client's `nat`, [`nat_request`]); command messages
/// (0) only for a client with an allow-list (`commands`/`command_prefixes`; refused by
/// default, as fwknopd refuses them without `ENABLE_CMD_EXEC Y`).
fn served_message_type(message_type: u8, client: &ClientEntry) -> Result<(), Reason> {
    match message_type {
        1..=6 => Ok(()),
        0 if client.commands.exec.is_some() && client.commands.user.is_some() => Ok(()),
        _ => Err(Reason::Unsupported(
            "fwknop command messages (type 0): this client has no `commands` allow-list",
        )),
    }
}

/// fwknop's NAT message kinds (`fko_message_type_t`, lib/fko.h).
#[derive(Clone, Copy, PartialEq, Eq)]
enum NatKind {
    /// 2 `FKO_NAT_ACCESS_MSG`, 4 `FKO_CLIENT_TIMEOUT_NAT_ACCESS_MSG`: forward to a host.
    Forward,
    /// 5 `FKO_LOCAL_NAT_ACCESS_MSG`, 6 `FKO_CLIENT_TIMEOUT_LOCAL_NAT_ACCESS_MSG`: to a local port.
    Local,
}

fn nat_kind(message_type: Option<u8>) -> Option<NatKind> {
    match message_type? {
        2 | 4 => Some(NatKind::Forward),
        5 | 6 => Some(NatKind::Local),
        _ => None,
    }
}

/// An fwknop NAT message asks to forward `access` (the first spec of its access message:
/// fwknopd forwards that one only, server/fw_util_ipt.c) to the `host,port` of its NAT field.
/// Allowed only when the client's `nat` names exactly that target for `access` (local NAT:
/// that port of this host); the packet's target is compared, never used.
fn nat_request(
    kind: NatKind,
    field: Option<&str>,
    access: Access,
    client: &ClientEntry,
    addr: IpAddr,
) -> Result<(), Reason> {
    let refused = Reason::NatNotAllowed(access);
    let (host, port) = field
        .and_then(|f| f.split_once(','))
        .ok_or(Reason::Malformed(
            "NAT message without a `host,port` NAT field",
        ))?;
    let port: u16 = port
        .parse()
        .map_err(|_| Reason::Malformed("NAT field port is not a number from 1 to 65535"))?;
    let rule = client.nat_for(access, addr).ok_or(refused)?;
    let allowed = match (kind, rule.to) {
        // A host name would have to be resolved (fwknop ENABLE_NAT_DNS): refused, as is any
        // address other than the configured one.
        (NatKind::Forward, NatTo::Host(to)) => host
            .parse::<IpAddr>()
            .is_ok_and(|ip| SocketAddr::new(ip, port) == to),
        // fwknop's client names the server as it was told (`-D`), maybe by name: the port is
        // what the request is about.
        (NatKind::Local, NatTo::Local(to)) => to == port,
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(refused)
    }
}

/// Where `rule` forwards a grant whose knock reached this host at `dst`.
fn nat_target(rule: &NatRule, dst: IpAddr) -> NatTarget {
    let to = match rule.to {
        NatTo::Host(to) => to,
        NatTo::Local(port) => SocketAddr::new(dst, port),
    };
    NatTarget {
        to,
        source: rule.source,
        dnat: rule.dnat,
    }
}

fn check(
    knock: &Knock,
    packet: &Packet,
    client: &ClientEntry,
    max_age: u64,
    not_before: u64,
    now: u64,
) -> Result<Decision, Reason> {
    if let Some(t) = knock.message_type {
        served_message_type(t, client)?;
    }
    if knock.timestamp < not_before {
        return Err(Reason::StateLost);
    }
    if is_ipv4_mapped(packet.src) {
        return Err(Reason::MappedSource);
    }
    if client.expires_at.is_some_and(|t| now >= t) {
        return Err(Reason::ClientExpired);
    }
    let skew = skew(knock.timestamp, now);
    if skew.unsigned_abs() > max_age {
        return Err(Reason::Stale { skew });
    }
    if !addresses_permitted(client, packet) {
        return Err(Reason::SourceNotAllowed);
    }
    let src = packet.src;
    let addr = match knock.allow_ip {
        None => {
            if client.require_source_match {
                return Err(Reason::SourceRequired);
            }
            src
        }
        Some(ip) if ip.is_unspecified() || ip.is_multicast() => {
            return Err(Reason::Malformed("allow-IP is not a unicast address"))
        }
        // A grant for `::ffff:a.b.c.d` would sit in the IPv6 set where no packet ever matches it;
        // reading it as a.b.c.d would be a second spelling of an IPv4 allow-IP.
        Some(ip) if is_ipv4_mapped(ip) => {
            return Err(Reason::Malformed(
                "allow-IP is an IPv4-mapped IPv6 address; name the IPv4 address itself",
            ))
        }
        Some(ip) => {
            if client.require_source_match && ip != src {
                return Err(Reason::SourceMismatch);
            }
            ip
        }
    };
    if let Some(required) = &client.require_username {
        if knock.username.as_deref() != Some(required.as_str()) {
            return Err(Reason::UsernameMismatch);
        }
    }
    if knock.message_type == Some(0) {
        return command(knock, client, addr);
    }
    if knock.access.is_empty() {
        return Err(Reason::NoAccess);
    }
    let mut access = Vec::with_capacity(knock.access.len());
    for a in &knock.access {
        if !client.allow.contains(a) || client.deny.contains(a) {
            return Err(Reason::NotAllowed(*a));
        }
        if !access.contains(a) {
            access.push(*a);
        }
    }
    if let Some(kind) = nat_kind(knock.message_type) {
        // fwknopd forwards the first spec only; so do we, and grant nothing else.
        access.truncate(1);
        let first = *access.first().ok_or(Reason::NoAccess)?;
        nat_request(kind, knock.nat_access.as_deref(), first, client, addr)?;
    }
    // Every access the client's `nat` names is forwarded, whatever the knock's format
    // (fwknop FORCE_NAT): the config picks the target, the knock only the port.
    let mut nat = Vec::new();
    for a in access.clone() {
        match client.nat_for(a, addr) {
            Some(rule) => {
                let target = nat_target(rule, packet.dst);
                if target.to.is_ipv4() != addr.is_ipv4() {
                    return Err(Reason::NatFamily(a));
                }
                // Local NAT: the flow arrives at the local port, which the input gate judges
                // by that port too (fwknopd adds an INPUT accept for it, fw_util_ipt.c).
                if let NatTo::Local(port) = rule.to {
                    let local = Access { port, ..a };
                    if !access.contains(&local) {
                        access.push(local);
                    }
                }
                nat.push((a, target));
            }
            None if client.nat.iter().any(|r| r.access == a) => return Err(Reason::NatFamily(a)),
            None => {}
        }
    }
    let ttl = match knock.timeout {
        0 => client.timeout,
        asked => asked.min(client.max_timeout),
    };
    // A gateway opens with any granted knock of its client (fwknopd's FORWARD_ALL accepts
    // the source in FORWARD whatever port it asked for), for the address granted.
    let gateway = client
        .gateway
        .iter()
        .flat_map(|g| {
            g.networks.iter().map(|&net| GatewayTo {
                net,
                source: g.source,
            })
        })
        .filter(|g| g.net.addr().is_ipv4() == addr.is_ipv4())
        .collect();
    Ok(Decision::Grant(Grant {
        addr,
        access,
        ttl,
        nat,
        gateway,
    }))
}

/// A command message: split without a shell, then matched against the allow-list.
fn command(knock: &Knock, client: &ClientEntry, addr: IpAddr) -> Result<Decision, Reason> {
    let exec = client
        .commands
        .exec
        .as_ref()
        .ok_or(Reason::CommandNotAllowed)?;
    let text = knock
        .command
        .as_deref()
        .ok_or(Reason::Malformed("command message without a command"))?;
    let argv = crate::command::split::split(text, false).map_err(|_| Reason::CommandNotAllowed)?;
    if !exec.permits(&argv) {
        return Err(Reason::CommandNotAllowed);
    }
    Ok(Decision::Command(CommandRun { addr, argv }))
}

/// `timestamp − now` as a signed number of seconds, saturating.
pub fn skew(timestamp: u64, now: u64) -> i64 {
    if timestamp >= now {
        i64::try_from(timestamp - now).unwrap_or(i64::MAX)
    } else {
        i64::try_from(now - timestamp).map_or(i64::MIN, |d| -d)
    }
}

#[cfg(test)]
pub(crate) mod tests;
