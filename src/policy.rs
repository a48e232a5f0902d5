//! `(request, packet, client, now) -> Decision`. Pure: no I/O, no clock, never panics.
//!
//! The engine calls this once a packet has authenticated under `client`'s key; everything here
//! is about what the authenticated request may have.

use std::fmt;
use std::net::IpAddr;

use crate::access::Access;
use crate::config::Client;

/// What an authenticated knock asks for, whatever its wire format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The client's clock, Unix seconds.
    pub timestamp: u64,
    /// Address to open for; `None` = "the packet's source" (native family 0, fwknop `0.0.0.0`).
    pub allow_ip: Option<IpAddr>,
    pub access: &'a [Access],
    /// Requested grant length, seconds; 0 = the client's default.
    pub timeout: u32,
    /// fwknop username, if the format has one.
    pub username: Option<&'a str>,
}

/// Where the packet came from and went to, as the kernel saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
}

/// Open `access` for `addr` for `ttl` seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub addr: IpAddr,
    pub access: Vec<Access>,
    pub ttl: u32,
}

/// The outcome for one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Grant(Grant),
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
    /// A feature nfknock does not serve (fwknop command or NAT messages, GPG).
    Unsupported(&'static str),
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
        }
    }
}

/// May `client` knock from `packet.src` to `packet.dst`? Checked before any crypto, so a
/// packet from elsewhere costs nothing (fwknop `SOURCE` / `DESTINATION`).
pub fn addresses_permitted(client: &Client, packet: &Packet) -> bool {
    let src = canonical(packet.src);
    let dst = canonical(packet.dst);
    client.sources.iter().any(|net| net.contains(&src))
        && (client.destinations.is_empty() || client.destinations.iter().any(|n| n.contains(&dst)))
}

/// IPv4-mapped IPv6 addresses are matched as IPv4.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// Decide what an authenticated request gets.
pub fn evaluate(
    req: &Request<'_>,
    packet: &Packet,
    client: &Client,
    max_age: u64,
    now: u64,
) -> Decision {
    match check(req, packet, client, max_age, now) {
        Ok(grant) => Decision::Grant(grant),
        Err(reason) => Decision::Reject(reason),
    }
}

fn check(
    req: &Request<'_>,
    packet: &Packet,
    client: &Client,
    max_age: u64,
    now: u64,
) -> Result<Grant, Reason> {
    if client.expires_at.is_some_and(|t| now >= t) {
        return Err(Reason::ClientExpired);
    }
    let skew = skew(req.timestamp, now);
    if skew.unsigned_abs() > max_age {
        return Err(Reason::Stale { skew });
    }
    if !addresses_permitted(client, packet) {
        return Err(Reason::SourceNotAllowed);
    }
    let src = canonical(packet.src);
    let addr = match req.allow_ip.map(canonical) {
        None => {
            if client.require_source_match {
                return Err(Reason::SourceRequired);
            }
            src
        }
        Some(ip) if ip.is_unspecified() || ip.is_multicast() => {
            return Err(Reason::Malformed("allow-IP is not a unicast address"))
        }
        Some(ip) => {
            if client.require_source_match && ip != src {
                return Err(Reason::SourceMismatch);
            }
            ip
        }
    };
    if let Some(required) = &client.require_username {
        if req.username != Some(required.as_str()) {
            return Err(Reason::UsernameMismatch);
        }
    }
    if req.access.is_empty() {
        return Err(Reason::NoAccess);
    }
    let mut access = Vec::with_capacity(req.access.len());
    for a in req.access {
        if !client.allow.contains(a) || client.deny.contains(a) {
            return Err(Reason::NotAllowed(*a));
        }
        if !access.contains(a) {
            access.push(*a);
        }
    }
    let ttl = match req.timeout {
        0 => client.timeout,
        asked => asked.min(client.max_timeout),
    };
    Ok(Grant { addr, access, ttl })
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
pub(crate) mod tests {
    use super::*;
    use crate::config::Credential;
    use crate::wire::fwknop::{EncMode, FwknopKey, HmacType};

    pub(crate) fn client() -> Client {
        Client {
            name: "alice".into(),
            credential: Credential::Fwknop(FwknopKey {
                key: zeroize::Zeroizing::new(b"k".to_vec()),
                hmac_key: None,
                hmac_type: HmacType::Sha256,
                mode: EncMode::Cbc,
            }),
            allow: vec!["tcp/22".parse().unwrap(), "udp/53".parse().unwrap()],
            deny: vec![],
            timeout: 30,
            max_timeout: 300,
            sources: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
            destinations: vec![],
            require_source_match: true,
            require_username: None,
            expires_at: None,
        }
    }

    const NOW: u64 = 1_800_000_000;
    const SRC: &str = "192.0.2.7";

    fn packet() -> Packet {
        Packet {
            src: SRC.parse().unwrap(),
            dst: "192.0.2.1".parse().unwrap(),
        }
    }

    fn req(access: &[Access]) -> Request<'_> {
        Request {
            timestamp: NOW,
            allow_ip: Some(SRC.parse().unwrap()),
            access,
            timeout: 0,
            username: None,
        }
    }

    fn ssh() -> Vec<Access> {
        vec!["tcp/22".parse().unwrap()]
    }

    #[test]
    fn grants_allowed_access_for_the_default_timeout() {
        let a = ssh();
        let d = evaluate(&req(&a), &packet(), &client(), 120, NOW);
        assert_eq!(
            d,
            Decision::Grant(Grant {
                addr: SRC.parse().unwrap(),
                access: a,
                ttl: 30
            })
        );
    }

    #[test]
    fn requested_timeout_is_capped() {
        let a = ssh();
        let mut r = req(&a);
        r.timeout = 10;
        let ttl = |d| match d {
            Decision::Grant(g) => g.ttl,
            Decision::Reject(r) => panic!("{r}"),
        };
        assert_eq!(ttl(evaluate(&r, &packet(), &client(), 120, NOW)), 10);
        r.timeout = 100_000;
        assert_eq!(ttl(evaluate(&r, &packet(), &client(), 120, NOW)), 300);
    }

    #[test]
    fn stale_timestamps_report_the_skew_both_ways() {
        let a = ssh();
        let mut r = req(&a);
        r.timestamp = NOW - 121;
        assert_eq!(
            evaluate(&r, &packet(), &client(), 120, NOW),
            Decision::Reject(Reason::Stale { skew: -121 })
        );
        r.timestamp = NOW + 500;
        assert_eq!(
            evaluate(&r, &packet(), &client(), 120, NOW),
            Decision::Reject(Reason::Stale { skew: 500 })
        );
        r.timestamp = NOW - 120;
        assert!(matches!(
            evaluate(&r, &packet(), &client(), 120, NOW),
            Decision::Grant(_)
        ));
    }

    #[test]
    fn source_rules() {
        let a = ssh();
        let mut r = req(&a);
        r.allow_ip = None;
        assert_eq!(
            evaluate(&r, &packet(), &client(), 120, NOW),
            Decision::Reject(Reason::SourceRequired)
        );
        let mut c = client();
        c.require_source_match = false;
        assert!(
            matches!(evaluate(&r, &packet(), &c, 120, NOW), Decision::Grant(g) if g.addr == packet().src)
        );
        r.allow_ip = Some("198.51.100.1".parse().unwrap());
        assert_eq!(
            evaluate(&r, &packet(), &client(), 120, NOW),
            Decision::Reject(Reason::SourceMismatch)
        );
        // Without the requirement, the allow-IP is what opens (fwknop semantics).
        assert!(
            matches!(evaluate(&r, &packet(), &c, 120, NOW), Decision::Grant(g) if g.addr == r.allow_ip.unwrap())
        );
        c.sources = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            evaluate(&r, &packet(), &c, 120, NOW),
            Decision::Reject(Reason::SourceNotAllowed)
        );
    }

    #[test]
    fn access_must_all_be_allowed_and_not_denied() {
        let c = client();
        let bad: Vec<Access> = vec!["tcp/22".parse().unwrap(), "tcp/23".parse().unwrap()];
        assert_eq!(
            evaluate(&req(&bad), &packet(), &c, 120, NOW),
            Decision::Reject(Reason::NotAllowed(bad[1]))
        );
        let mut c = client();
        c.deny = ssh();
        assert_eq!(
            evaluate(&req(&ssh()), &packet(), &c, 120, NOW),
            Decision::Reject(Reason::NotAllowed(ssh()[0]))
        );
        assert_eq!(
            evaluate(&req(&[]), &packet(), &client(), 120, NOW),
            Decision::Reject(Reason::NoAccess)
        );
    }

    #[test]
    fn username_and_expiry() {
        let a = ssh();
        let mut c = client();
        c.require_username = Some("bob".into());
        let mut r = req(&a);
        assert_eq!(
            evaluate(&r, &packet(), &c, 120, NOW),
            Decision::Reject(Reason::UsernameMismatch)
        );
        r.username = Some("bob");
        assert!(matches!(
            evaluate(&r, &packet(), &c, 120, NOW),
            Decision::Grant(_)
        ));
        c.expires_at = Some(NOW);
        assert_eq!(
            evaluate(&r, &packet(), &c, 120, NOW),
            Decision::Reject(Reason::ClientExpired)
        );
    }

    #[test]
    fn mapped_v4_sources_match_v4_networks() {
        let mut c = client();
        c.sources = vec!["192.0.2.0/24".parse().unwrap()];
        let p = Packet {
            src: "::ffff:192.0.2.7".parse().unwrap(),
            dst: "::1".parse().unwrap(),
        };
        assert!(addresses_permitted(&c, &p));
    }
}
