//! The per-packet pipeline, pure: cheap checks → key lookup → replay lookup → authenticate →
//! policy. The daemon hands each queued packet to [`Engine::handle_ip`] with the current time
//! and acts on the returned [`Outcome`]; `nfknock verify` calls [`Engine::handle`] offline. No
//! I/O and no clock: `now` (and `mono` for [`Engine::tick`]) are passed in.
//!
//! Names, one per layer: each format's path opens the packet into what it says in that
//! format's terms ([`wire::native::Plaintext`], [`wire::fwknop::SpaMessage`]) and turns that
//! into the one [`Knock`] that [`policy::evaluate`] judges; the [`Outcome`] carries the knock,
//! the decision, the replay record to journal, and what the daemon logs (source, skew).
//!
//! Order (STYLE.md habit 3): length/format and the source address, then the key lookup that
//! needs no crypto (the native key hint in O(1); fwknop clients filtered by source address),
//! then the replay cache, then crypto. State is recorded only after a packet authenticated.
//!
//! One exception: an fwknop packet's replay identity is its authenticated message
//! ([`wire::fwknop::Opened::replay_id`]), because its wire text has more than one spelling, so
//! it is looked up right after authentication. A replayed fwknop packet therefore costs what a
//! forged one from the same source costs (each candidate client's HMAC), plus one decryption.
//!
//! Files: this one holds [`Engine`] and [`Outcome`], the dispatch by format, the replay record
//! and the call into policy; `hints` is the native key-hint index; `native` and `fwknop` are the
//! two formats' paths (`fwknop` with its candidate table and fwknopd's stanza loop).

mod fwknop;
mod hints;
mod native;

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::policy::{self, Decision, Knock, Packet, Reason};
use crate::replay::{ReplayCache, ReplayKey};
use crate::wire::{self, Format};
use fwknop::FwknopEntry;
use hints::HintIndex;

/// Everything the daemon needs to act on one packet, and to log it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The packet's source address as its IP header says (`None`: not an IP/UDP packet).
    pub src: Option<IpAddr>,
    pub format: Option<Format>,
    /// Index into `config.clients` of the client whose key authenticated the packet.
    pub client: Option<usize>,
    /// What the packet asked for, once it authenticated.
    pub knock: Option<Knock>,
    /// `knock.timestamp − now` in seconds, for every knock that authenticated (a
    /// [`Reason::Stale`] refusal carries the same number).
    pub skew: Option<i64>,
    pub decision: Decision,
    /// A replay-cache entry to persist (already inserted in memory): key, expiry.
    pub record: Option<(ReplayKey, u64)>,
}

impl Outcome {
    /// A refusal before any client was identified.
    pub fn reject(format: Option<Format>, reason: Reason) -> Outcome {
        Outcome {
            src: None,
            format,
            client: None,
            knock: None,
            skew: None,
            decision: Decision::Reject(reason),
            record: None,
        }
    }
}

/// The pure per-packet state machine.
#[derive(Debug)]
pub struct Engine {
    config: Arc<Config>,
    hints: HintIndex,
    fwknop_clients: Vec<FwknopEntry>,
    replay: ReplayCache,
    /// Knocks with a timestamp before this are refused (the replay journal was lost).
    refuse_before: u64,
}

impl Engine {
    pub fn new(config: Arc<Config>, replay: ReplayCache, refuse_before: u64, now: u64) -> Engine {
        let hints = HintIndex::build(&config, now);
        let fwknop_clients = fwknop::table(&config);
        Engine {
            config,
            hints,
            fwknop_clients,
            replay,
            refuse_before,
        }
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn replay(&self) -> &ReplayCache {
        &self.replay
    }

    /// Swap in a new configuration (SIGHUP), keeping the replay cache.
    pub fn reconfigure(&mut self, config: Arc<Config>, now: u64) {
        self.hints = HintIndex::build(&config, now);
        self.fwknop_clients = fwknop::table(&config);
        self.config = config;
    }

    /// Once a second or so: move the hint window, forget expired replay entries.
    ///
    /// `now` is the wall clock (what knocks are judged by), `mono` a clock that never steps
    /// (seconds from any origin): the replay cache forgets an entry only when both say it
    /// expired. Returns the wall clock's step, in seconds, if it stepped since the last tick
    /// (see [`ReplayCache::prune`]).
    pub fn tick(&mut self, now: u64, mono: u64) -> Option<i64> {
        self.hints.refresh(&self.config, now);
        self.replay.prune(now, mono)
    }

    /// Decide one queued packet (a raw IP packet as NFQUEUE delivers it). The daemon's path.
    pub fn handle_ip(&mut self, ip_packet: &[u8], now: u64) -> Outcome {
        match wire::ip::parse(ip_packet) {
            Ok(d) => self.handle(
                d.payload,
                Packet {
                    src: d.src,
                    dst: d.dst,
                },
                now,
            ),
            Err(_) => Outcome::reject(None, Reason::NotUdp),
        }
    }

    /// Decide one knock payload that came from `packet.src` to `packet.dst`.
    pub fn handle(&mut self, payload: &[u8], packet: Packet, now: u64) -> Outcome {
        let format = wire::detect(payload);
        // An IPv4-mapped source in an IPv6 header would pass for an IPv4 host that IPv4's
        // rp_filter never checked (`wire::ip::is_ipv4_mapped`): refused before anything else.
        let mut out = if wire::ip::is_ipv4_mapped(packet.src) {
            Outcome::reject(format, Reason::MappedSource)
        } else {
            match format {
                Some(Format::Native) => self.native(payload, packet, now),
                Some(Format::Fwknop) => self.fwknop(payload, packet, now),
                None => Outcome::reject(None, Reason::BadLength),
            }
        };
        out.src = Some(packet.src);
        out
    }

    /// Knocks stamped before this may be replays nobody remembers (the journal was lost, or
    /// the cache forgot them and the clock stepped back): refused, and for good.
    fn refuse_before(&self) -> u64 {
        self.refuse_before.max(self.replay.refuse_before())
    }

    /// Record an authenticated packet's identity against replays and return the entry the
    /// daemon must journal before acting on the packet.
    ///
    /// Recorded as soon as it authenticated, before the age check (as fwknopd does): a packet
    /// stamped in the future cannot be replayed once it becomes fresh. Kept for the largest
    /// `max_age` there can be, not the current one (`replay::KEEP_SECS`). Even a packet that
    /// looks long expired is recorded: the wall clock may be wrong right now. A knock stamped
    /// before [`refuse_before`](Self::refuse_before) is refused for good: nothing to record.
    fn remember(&mut self, id: ReplayKey, timestamp: u64) -> Option<(ReplayKey, u64)> {
        if timestamp < self.refuse_before() {
            return None;
        }
        let expires = crate::replay::expiry_of(timestamp);
        self.replay.insert(id, expires);
        Some((id, expires))
    }

    /// The policy's answer once a packet authenticated under client `i` (no replay record: the
    /// caller attaches the one [`remember`](Self::remember) returned).
    fn decide(
        &self,
        format: Option<Format>,
        i: usize,
        knock: Knock,
        packet: Packet,
        now: u64,
    ) -> Outcome {
        let decision = policy::evaluate(
            &knock,
            &packet,
            &self.config.clients[i],
            self.config.server.max_age,
            self.refuse_before(),
            now,
        );
        Outcome {
            src: None,
            format,
            client: Some(i),
            skew: Some(policy::skew(knock.timestamp, now)),
            knock: Some(knock),
            decision,
            record: None,
        }
    }
}

/// What every engine test uses: a config, clients, a packet, native knocks.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientEntry, Credential};
    use crate::crypto::NativeKey;
    use crate::wire::native;

    pub(super) const NOW: u64 = 1_800_000_000;

    struct CountingRng(u8);
    impl crate::crypto::Rng for CountingRng {
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
        }
    }

    fn key(n: u8) -> NativeKey {
        NativeKey::derive(&[n; 32])
    }

    pub(super) fn config(clients: Vec<ClientEntry>) -> Arc<Config> {
        config_with_max_age(clients, 120)
    }

    pub(super) fn config_with_max_age(clients: Vec<ClientEntry>, max_age: u64) -> Arc<Config> {
        // Parsed from TOML, so a new `[server]` setting needs no edit here; the one client
        // the parser wants is replaced by the test's own.
        let text = "[server]\nprotect = [\"tcp/22\"]\n\n[[client]]\nname = \"x\"\n\
                    key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\nallow = [\"tcp/22\"]\n";
        let mut c = crate::config::parse_str(text, std::path::Path::new("/nonexistent/test.toml"))
            .expect("test config is valid");
        c.server.max_age = max_age;
        c.clients = clients;
        Arc::new(c)
    }

    pub(super) fn native_client(name: &str, n: u8) -> ClientEntry {
        let mut c = crate::policy::tests::client();
        c.name = name.into();
        c.credential = Credential::Native(key(n));
        c
    }

    pub(super) fn packet() -> Packet {
        Packet {
            src: "192.0.2.7".parse().unwrap(),
            dst: "192.0.2.1".parse().unwrap(),
        }
    }

    pub(super) fn knock(n: u8, ts: u64, rng: u8) -> [u8; native::PACKET_LEN] {
        let req = native::Plaintext {
            timestamp: ts,
            timeout: 0,
            allow_ip: Some(packet().src),
            access: vec!["tcp/22".parse().unwrap()],
        };
        native::seal(&key(n), &req, &mut CountingRng(rng)).unwrap()
    }

    pub(super) fn engine() -> Engine {
        Engine::new(
            config(vec![native_client("bob", 9), native_client("alice", 1)]),
            ReplayCache::new(),
            0,
            NOW,
        )
    }

    pub(super) fn granted(out: &Outcome) -> bool {
        matches!(out.decision, Decision::Grant(_))
    }

    /// Issue "security", item 6: a knock accepted under `max_age = 120` and forgotten after
    /// 120 s must not become fresh again when a reload raises `max_age`.
    #[test]
    fn raising_max_age_does_not_reopen_the_replay_window() {
        let mut e = engine();
        let p = knock(1, NOW, 0);
        assert!(granted(&e.handle(&p, packet(), NOW)));
        let later = NOW + 300;
        assert_eq!(e.tick(later, later), None);
        e.reconfigure(
            config_with_max_age(
                vec![native_client("bob", 9), native_client("alice", 1)],
                crate::config::MAX_MAX_AGE,
            ),
            later,
        );
        let again = e.handle(&p, packet(), later);
        assert!(
            matches!(again.decision, Decision::Reject(Reason::Replay)),
            "{:?}",
            again.decision
        );
    }

    /// Issue "security", item 6: the wall clock jumps a day ahead (a bad NTP server, a wrong
    /// RTC) and back. Entries must not be forgotten while the monotonic clock says only
    /// seconds passed.
    #[test]
    fn replay_entries_survive_a_forward_then_backward_clock_step() {
        let mut e = engine();
        let p = knock(1, NOW, 0);
        assert!(granted(&e.handle(&p, packet(), NOW)));
        // The monotonic clock reads 0 at NOW and runs on; the wall clock jumps.
        e.tick(NOW, 0);
        assert_eq!(e.tick(NOW + 86_400, 1), Some(86_399));
        assert_eq!(e.tick(NOW + 2, 2), Some(-86_399));
        assert!(
            e.replay().contains(&crate::replay::key_of(&p), NOW + 2),
            "forgotten during the forward excursion"
        );
        let again = e.handle(&p, packet(), NOW + 2);
        assert_eq!(again.decision, Decision::Reject(Reason::Replay));
        // Honest knocks still work on the stepped-back clock.
        assert!(granted(&e.handle(&knock(1, NOW + 2, 7), packet(), NOW + 2)));
    }

    /// Issue "security", item 6: a backward step of more than the replay bound after an entry
    /// was rightly forgotten must not make its packet acceptable again.
    #[test]
    fn backward_step_past_the_replay_bound_cannot_replay_a_forgotten_knock() {
        let mut e = engine();
        let p = knock(1, NOW, 0);
        assert!(granted(&e.handle(&p, packet(), NOW)));
        // Two hours pass normally: the entry is rightly pruned.
        e.tick(NOW, 0);
        assert_eq!(e.tick(NOW + 7_200, 7_200), None);
        assert!(e.replay().is_empty());
        // Then the wall clock is set back two hours.
        assert_eq!(e.tick(NOW + 10, 7_201), Some(-7_191));
        let again = e.handle(&p, packet(), NOW + 10);
        assert!(!granted(&again), "a forgotten knock was granted again");
        assert_eq!(again.decision, Decision::Reject(Reason::StateLost));
        // A knock stamped on the stepped-back clock, after the forgotten one, is fine.
        assert!(granted(&e.handle(
            &knock(1, NOW + 11, 7),
            packet(),
            NOW + 11
        )));
    }

    #[test]
    fn lost_journal_refuses_older_knocks() {
        let mut e = Engine::new(
            config(vec![native_client("alice", 1)]),
            ReplayCache::new(),
            NOW + 10,
            NOW,
        );
        assert_eq!(
            e.handle(&knock(1, NOW, 0), packet(), NOW).decision,
            Decision::Reject(Reason::StateLost)
        );
        assert!(matches!(
            e.handle(&knock(1, NOW + 10, 1), packet(), NOW + 10)
                .decision,
            Decision::Grant(_)
        ));
    }

    /// Security issue item 8: a native knock in a UDPv6 packet from `::ffff:192.0.2.7` is
    /// refused before any key lookup or crypto, and records nothing; over IPv4 it is granted.
    #[test]
    fn ipv4_mapped_source_is_refused_before_the_key_lookup() {
        let mut e = engine();
        let p = knock(1, NOW, 4);
        let mapped = wire::ip::build(
            "::ffff:192.0.2.7".parse().unwrap(),
            "fd00::1".parse().unwrap(),
            5555,
            62201,
            &p,
        );
        let out = e.handle_ip(&mapped, NOW);
        assert_eq!(out.decision, Decision::Reject(Reason::MappedSource));
        assert_eq!(out.format, Some(Format::Native));
        assert_eq!((out.client, out.record), (None, None));
        assert!(e.replay().is_empty());
        let v4 = wire::ip::build(packet().src, packet().dst, 5555, 62201, &p);
        assert!(matches!(e.handle_ip(&v4, NOW).decision, Decision::Grant(_)));
    }

    #[test]
    fn handles_raw_ip_packets() {
        let mut e = engine();
        let p = knock(1, NOW, 3);
        let ip = wire::ip::build(packet().src, packet().dst, 5555, 62201, &p);
        assert!(matches!(e.handle_ip(&ip, NOW).decision, Decision::Grant(_)));
    }

    /// The daemon logs every outcome with the packet's source: `handle_ip` says which source it
    /// read, for refused packets too, so the daemon need not parse the packet a second time.
    #[test]
    fn outcome_names_the_source_handle_ip_read() {
        let mut e = engine();
        let src = packet().src;
        let ip = wire::ip::build(src, packet().dst, 5555, 62201, &knock(1, NOW, 5));
        let out = e.handle_ip(&ip, NOW);
        assert!(granted(&out));
        assert_eq!(out.src, Some(src));
        let junk = wire::ip::build(src, packet().dst, 5555, 62201, &[1u8; 40]);
        let out = e.handle_ip(&junk, NOW);
        assert_eq!(out.decision, Decision::Reject(Reason::BadLength));
        assert_eq!(out.src, Some(src));
        let mapped: std::net::IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let ip = wire::ip::build(mapped, "fd00::1".parse().unwrap(), 5555, 62201, &[1u8; 40]);
        assert_eq!(e.handle_ip(&ip, NOW).src, Some(mapped));
        let out = e.handle_ip(&[0u8; 10], NOW);
        assert_eq!(
            (out.decision, out.src),
            (Decision::Reject(Reason::NotUdp), None)
        );
        assert_eq!(e.handle(&[1u8; 40], packet(), NOW).src, Some(src));
    }

    /// The skew logged for a refusal is computed once, by the engine, for every knock that
    /// authenticated (granted or not), and is the very number a `Stale` refusal carries.
    #[test]
    fn outcome_carries_the_skew_of_every_authenticated_knock() {
        let mut e = engine();
        let out = e.handle(&knock(1, NOW + 30, 0), packet(), NOW);
        assert!(granted(&out));
        assert_eq!(out.skew, Some(30));
        let out = e.handle(&knock(1, NOW - 600, 1), packet(), NOW);
        assert_eq!(out.decision, Decision::Reject(Reason::Stale { skew: -600 }));
        assert_eq!(out.skew, Some(-600));
        let mut lost = Engine::new(
            config(vec![native_client("alice", 1)]),
            ReplayCache::new(),
            NOW + 10,
            NOW,
        );
        let out = lost.handle(&knock(1, NOW - 5, 2), packet(), NOW);
        assert_eq!(out.decision, Decision::Reject(Reason::StateLost));
        assert_eq!(out.skew, Some(-5));
        // Nothing authenticated, nothing to say about the client's clock.
        let out = e.handle(&knock(5, NOW, 3), packet(), NOW);
        assert_eq!(
            (out.decision, out.skew),
            (Decision::Reject(Reason::UnknownKey), None)
        );
        let p = knock(1, NOW, 4);
        assert!(granted(&e.handle(&p, packet(), NOW)));
        let out = e.handle(&p, packet(), NOW);
        assert_eq!(
            (out.decision, out.skew),
            (Decision::Reject(Reason::Replay), None)
        );
    }
}
