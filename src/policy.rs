//! `(request, packet, client, now) -> Decision`. Pure: no I/O, no clock, never panics.
//!
//! The engine calls this once a packet has authenticated under `client`'s key; everything here
//! is about what the authenticated request may have.

use std::fmt;
use std::net::IpAddr;

use crate::access::Access;
use crate::config::ClientEntry;
use crate::wire::ip::is_ipv4_mapped;

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

/// Decide what an authenticated request gets.
pub fn evaluate(
    req: &Request<'_>,
    packet: &Packet,
    client: &ClientEntry,
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
    client: &ClientEntry,
    max_age: u64,
    now: u64,
) -> Result<Grant, Reason> {
    if is_ipv4_mapped(packet.src) {
        return Err(Reason::MappedSource);
    }
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
    let src = packet.src;
    let addr = match req.allow_ip {
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

    pub(crate) fn client() -> ClientEntry {
        ClientEntry {
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

    /// Security issue item 8: `::ffff:192.0.2.7` in an IPv6 header is not 192.0.2.7. It used to
    /// be matched as IPv4 (this test asserted so); now it is refused whatever `sources` say.
    #[test]
    fn ipv4_mapped_sources_are_refused_even_by_v6_networks() {
        let a = ssh();
        let p = Packet {
            src: "::ffff:192.0.2.7".parse().unwrap(),
            dst: "fd00::1".parse().unwrap(),
        };
        for sources in [
            vec!["192.0.2.0/24"],
            vec!["::ffff:0:0/96"],
            vec!["::/0", "0.0.0.0/0"],
        ] {
            let mut c = client();
            c.sources = sources.iter().map(|n| n.parse().unwrap()).collect();
            assert!(!addresses_permitted(&c, &p), "{sources:?}");
            let mut r = req(&a);
            r.allow_ip = Some(p.src);
            assert_eq!(
                evaluate(&r, &p, &c, 120, NOW),
                Decision::Reject(Reason::MappedSource),
                "{sources:?}"
            );
            r.allow_ip = None;
            c.require_source_match = false;
            assert_eq!(
                evaluate(&r, &p, &c, 120, NOW),
                Decision::Reject(Reason::MappedSource),
                "{sources:?}"
            );
        }
        assert_eq!(Reason::MappedSource.code(), "mapped-source");
        assert!(
            !Reason::MappedSource.is_noise(),
            "worth a (rate-limited) warning"
        );
    }

    /// IPv4-compatible, NAT64 and 6to4 addresses embed an IPv4 address but are IPv6 to
    /// nfknock: they never satisfy an IPv4 network, only an IPv6 one.
    #[test]
    fn other_ipv6_forms_are_never_read_as_ipv4() {
        let mut c = client();
        c.sources = vec!["10.77.0.0/24".parse().unwrap()];
        let v6net = "::/0".parse().unwrap();
        for src in ["::10.77.0.2", "64:ff9b::a4d:2", "2002:a4d:2::1"] {
            let p = Packet {
                src: src.parse().unwrap(),
                dst: "fd00::1".parse().unwrap(),
            };
            assert!(!addresses_permitted(&c, &p), "{src}");
            let mut wide = c.clone();
            wide.sources.push(v6net);
            assert!(addresses_permitted(&wide, &p), "{src}");
        }
        // Destinations are matched as they are too.
        let mut c = client();
        c.destinations = vec!["192.0.2.1/32".parse().unwrap()];
        let p = Packet {
            src: "2001:db8::7".parse().unwrap(),
            dst: "::ffff:192.0.2.1".parse().unwrap(),
        };
        assert!(!addresses_permitted(&c, &p));
    }

    /// An authenticated allow-IP `::ffff:a.b.c.d` (native family 6) is refused, not read as
    /// a.b.c.d nor granted in the IPv6 set.
    #[test]
    fn ipv4_mapped_allow_ip_is_refused() {
        let a = ssh();
        let mut r = req(&a);
        r.allow_ip = Some("::ffff:192.0.2.7".parse().unwrap());
        let mut c = client();
        for strict in [true, false] {
            c.require_source_match = strict;
            assert!(
                matches!(evaluate(&r, &packet(), &c, 120, NOW), Decision::Reject(Reason::Malformed(m)) if m.contains("IPv4-mapped")),
                "require_source_match = {strict}"
            );
        }
    }
}
