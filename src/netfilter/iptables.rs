//! The capture and the gate of an iptables host (`backend = "ipset"`), as `iptables-restore`
//! text: what `nfknock ruleset --iptables` / `--ip6tables` prints and what the shipped
//! `iptables/nfknock.rules` and `iptables/nfknock6.rules` hold (a test keeps those equal to
//! [`render`] of the defaults). Pure: builds text, runs nothing. The daemon never loads these
//! rules: iptables and firewalld hosts own their rulesets; it fills the ipsets they match.
//!
//! The rules mirror the nftables table of [`super::nft`]:
//! - `raw` PREROUTING: the knock port is `NOTRACK`ed (a flood fills no conntrack table), a
//!   packet of a length that is not a knock is dropped, and so is a source over its rate
//!   (`hashlimit` per address or prefix, fail closed when its table is full);
//! - `filter` INPUT: the knock port goes to `NFQUEUE` (without `--queue-bypass`: with the
//!   daemon down, knocks are dropped), and a new flow to a protected proto/port whose
//!   `source,proto:port` is not in the ipset is dropped. Like the nftables gate it only drops,
//!   so it composes with the host's own rules, which must still accept the protected ports.
//!
//! `-m length` matches the whole IP packet: the lengths assume an IPv4 header of 20 bytes (no
//! options) and an IPv6 header of 40 (no extension headers); a knock with options or extension
//! headers is dropped (fail closed). The DNAT-published ports the nftables table gates in its
//! forward hook are not gated here.

use std::fmt::Write;

use crate::access::{Access, Proto};
use crate::config;
use crate::wire::fwknop::{MAX_WIRE_LEN, MIN_WIRE_LEN};

/// The chain of the knock rules, in table `raw`.
pub const CHAIN_KNOCK: &str = "nfknock-knock";
/// The chain of the per-source rate limit, in table `raw`.
pub const CHAIN_RATE: &str = "nfknock-rate";
/// The chain of the queue rule and the gate, in table `filter`.
pub const CHAIN_GATE: &str = "nfknock-gate";
/// Entries of each `hashlimit` table: sources metered at once (as the nftables rate sets).
const RATE_SIZE: u32 = 65_535;
/// How long a source's `hashlimit` entry lives without knocks, ms (the nftables sets' 1 min).
const RATE_EXPIRE_MS: u32 = 60_000;
const UDP_HDR: usize = 8;

/// What the rules of one family must contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptablesSpec {
    /// `ip6tables` (IPv6) rather than `iptables`.
    pub v6: bool,
    pub knock_port: u16,
    pub queue: u16,
    pub protect: Vec<Access>,
    /// UDP payload length of a native knock.
    pub native_len: u16,
    /// Also let through the payload lengths of fwknop knocks.
    pub fwknop: bool,
    /// Knocks per second per source (burst 2×); 0 = no limit.
    pub rate_limit: u32,
    /// The prefix length a source is metered by.
    pub rate_limit_prefix: u8,
    /// The ipset of this family.
    pub set: String,
}

impl IptablesSpec {
    /// The defaults of the shipped files: the nftables snippet's (port 62201, queue 0, tcp/22,
    /// native knocks of 128 bytes, fwknop on, 20/s per IPv4 address or IPv6 /64) and the
    /// default ipset names.
    pub fn default_for(v6: bool) -> IptablesSpec {
        IptablesSpec {
            v6,
            knock_port: config::DEFAULT_PORT,
            queue: config::DEFAULT_QUEUE,
            protect: vec![Access {
                proto: Proto::Tcp,
                port: 22,
            }],
            native_len: crate::wire::native::PACKET_LEN as u16,
            fwknop: true,
            rate_limit: config::DEFAULT_RATE_LIMIT,
            rate_limit_prefix: if v6 {
                config::DEFAULT_RATE_LIMIT_V6_PREFIX
            } else {
                config::DEFAULT_RATE_LIMIT_V4_PREFIX
            },
            set: config::IpsetNames::default().of(v6).to_string(),
        }
    }

    /// The rules `config` asks for, for the family of `v6`.
    pub fn from_config(config: &config::Config, v6: bool) -> IptablesSpec {
        let s = &config.server;
        IptablesSpec {
            v6,
            knock_port: s.port,
            queue: s.queue,
            protect: s.protect.clone(),
            native_len: crate::wire::native::PACKET_LEN as u16,
            fwknop: config
                .clients
                .iter()
                .any(|c| matches!(c.credential, config::Credential::Fwknop(_))),
            rate_limit: s.rate_limit,
            rate_limit_prefix: if v6 {
                s.rate_limit_v6_prefix
            } else {
                s.rate_limit_v4_prefix
            },
            set: s.ipset.of(v6).to_string(),
        }
    }
}

/// The `iptables-restore --noflush` text of `spec`.
pub fn render(spec: &IptablesSpec) -> String {
    let (tool, family, ip_hdr, fam) = if spec.v6 {
        ("ip6tables", "inet6", 40, "IPv6")
    } else {
        ("iptables", "inet", 20, "IPv4")
    };
    let port = spec.knock_port;
    let native = usize::from(spec.native_len) + UDP_HDR + ip_hdr;
    let (lo, hi) = (
        MIN_WIRE_LEN + UDP_HDR + ip_hdr,
        MAX_WIRE_LEN + UDP_HDR + ip_hdr,
    );
    let set = &spec.set;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# nfknock — capture and gate of an {tool} host ({fam}), for `backend = \"ipset\"`.\n\
         # `nfknock ruleset --{tool}` prints these rules for your config; a unit test keeps this\n\
         # file equal to its defaults. Load with `{tool}-restore --noflush FILE` (the host's own\n\
         # rules stay; loading twice adds the two jumps twice). The ipset must exist first:\n\
         # `nfknock serve` creates it, or\n\
         #   ipset create {set} {} family {family} timeout {} maxelem {} -exist\n\
         # The gate only drops: the host's own rules must still accept the protected ports.",
        super::ipset::SET_TYPE,
        super::ipset::SET_TIMEOUT_S,
        super::ipset::SET_MAXELEM,
    );
    let _ = writeln!(s, "*raw\n:{CHAIN_KNOCK} - [0:0]");
    if spec.rate_limit > 0 {
        let _ = writeln!(s, ":{CHAIN_RATE} - [0:0]");
    }
    let _ = writeln!(
        s,
        "-I PREROUTING 1 -p udp -m udp --dport {port} -j {CHAIN_KNOCK}"
    );
    let _ = writeln!(
        s,
        "# Knocks never create conntrack entries.\n-A {CHAIN_KNOCK} -j CT --notrack"
    );
    // A knock's length, to the rate limit (`-g`: its end returns to PREROUTING) or back.
    let next = if spec.rate_limit > 0 {
        format!("-g {CHAIN_RATE}")
    } else {
        "-j RETURN".to_string()
    };
    let _ = writeln!(
        s,
        "# IP length {native} = a native knock; {lo}-{hi} = an fwknop one. Anything else: drop."
    );
    let _ = writeln!(s, "-A {CHAIN_KNOCK} -m length --length {native} {next}");
    if spec.fwknop {
        let _ = writeln!(s, "-A {CHAIN_KNOCK} -m length --length {lo}:{hi} {next}");
    }
    let _ = writeln!(s, "-A {CHAIN_KNOCK} -j DROP");
    if spec.rate_limit > 0 {
        let _ = writeln!(
            s,
            "# Over {}/s (burst {}) per source /{}: drop; a full table drops new sources too.",
            spec.rate_limit,
            spec.rate_limit.saturating_mul(2),
            spec.rate_limit_prefix
        );
        let _ = writeln!(
            s,
            "-A {CHAIN_RATE} -m hashlimit --hashlimit-above {}/sec --hashlimit-burst {} --hashlimit-mode srcip --hashlimit-srcmask {} --hashlimit-name nfknock{} --hashlimit-htable-max {RATE_SIZE} --hashlimit-htable-expire {RATE_EXPIRE_MS} -j DROP",
            spec.rate_limit,
            spec.rate_limit.saturating_mul(2),
            spec.rate_limit_prefix,
            if spec.v6 { 6 } else { 4 },
        );
    }
    let _ = writeln!(s, "COMMIT");
    let _ = writeln!(s, "*filter\n:{CHAIN_GATE} - [0:0]");
    let _ = writeln!(s, "-I INPUT 1 -j {CHAIN_GATE}");
    let _ = writeln!(
        s,
        "# Knocks go to the daemon; with the daemon down they are dropped (no --queue-bypass).\n\
         -A {CHAIN_GATE} -p udp -m udp --dport {port} -j NFQUEUE --queue-num {}",
        spec.queue
    );
    let _ = writeln!(
        s,
        "# A new flow to a protected port from a source,proto:port not in the set: drop."
    );
    for a in &spec.protect {
        let p = a.proto.name();
        let _ = writeln!(
            s,
            "-A {CHAIN_GATE} -p {p} -m {p} --dport {} -m conntrack ! --ctstate ESTABLISHED,RELATED -m set ! --match-set {set} src,dst -j DROP",
            a.port
        );
    }
    let _ = writeln!(s, "COMMIT");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped files are `render` of the defaults, byte for byte: they cannot drift.
    #[test]
    fn shipped_files_are_render_of_defaults() {
        for (v6, file) in [(false, "nfknock.rules"), (true, "nfknock6.rules")] {
            let path = format!("{}/iptables/{file}", env!("CARGO_MANIFEST_DIR"));
            let shipped = std::fs::read_to_string(&path).unwrap();
            assert_eq!(shipped, render(&IptablesSpec::default_for(v6)), "{path}");
        }
    }

    #[test]
    fn render_follows_the_spec() {
        let spec = IptablesSpec {
            v6: true,
            knock_port: 1000,
            queue: 3,
            protect: vec!["tcp/2222".parse().unwrap(), "udp/53".parse().unwrap()],
            native_len: 128,
            fwknop: false,
            rate_limit: 0,
            rate_limit_prefix: 48,
            set: "s6".into(),
        };
        let text = render(&spec);
        assert!(text.contains("-I PREROUTING 1 -p udp -m udp --dport 1000 -j nfknock-knock\n"));
        assert!(text.contains("-A nfknock-knock -m length --length 176 -j RETURN\n"));
        assert!(!text.contains("hashlimit") && !text.contains(":nfknock-rate"));
        assert_eq!(text.matches("-m length").count(), 1, "no fwknop lengths");
        assert!(text.contains("-j NFQUEUE --queue-num 3\n"));
        assert!(text.contains("-A nfknock-gate -p tcp -m tcp --dport 2222 -m conntrack ! --ctstate ESTABLISHED,RELATED -m set ! --match-set s6 src,dst -j DROP\n"));
        assert!(text.contains("-p udp -m udp --dport 53 -m conntrack"));
        assert!(text.contains("family inet6"));
        let v4 = render(&IptablesSpec::default_for(false));
        assert!(v4.contains("-m length --length 156 -g nfknock-rate\n"));
        assert!(v4.contains("-m length --length 168:1527 -g nfknock-rate\n"));
        assert!(v4.contains("--hashlimit-above 20/sec --hashlimit-burst 40 --hashlimit-mode srcip --hashlimit-srcmask 32 --hashlimit-name nfknock4"));
    }
}
