//! The per-packet pipeline, pure: cheap checks → key lookup → replay lookup → authenticate →
//! policy. The daemon hands each queued packet to [`Engine::handle`] with the current time and
//! acts on the returned [`Outcome`]; `nfknock verify` calls the same code offline.
//!
//! Order (STYLE.md habit 3): length/format, then the key lookup that needs no crypto (the
//! native key hint in O(1); fwknop clients filtered by source address), then the replay cache,
//! then crypto. State is recorded only after a packet authenticated.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use crate::access::Access;
use crate::config::{Config, Credential};
use crate::policy::{self, Decision, Packet, Reason, Request};
use crate::replay::{ReplayCache, ReplayKey};
use crate::wire::{self, fwknop, native, Format};

/// What the engine learned about an authenticated knock (for logs and `verify --json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Knock {
    pub timestamp: u64,
    pub allow_ip: Option<IpAddr>,
    pub access: Vec<Access>,
    /// Requested timeout (0 = default).
    pub timeout: u32,
    pub username: Option<String>,
    /// fwknop message type.
    pub message_type: Option<u8>,
    pub nat_access: Option<String>,
}

/// Everything the daemon needs to act on one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub format: Option<Format>,
    /// Index into `config.clients` of the client whose key authenticated the packet.
    pub client: Option<usize>,
    pub knock: Option<Knock>,
    pub decision: Decision,
    /// A replay-cache entry to persist (already inserted in memory): key, expiry.
    pub record: Option<(ReplayKey, u64)>,
}

impl Outcome {
    /// A refusal before any client was identified.
    pub fn reject(format: Option<Format>, reason: Reason) -> Outcome {
        Outcome {
            format,
            client: None,
            knock: None,
            decision: Decision::Reject(reason),
            record: None,
        }
    }
}

/// Native key hints for every epoch inside the timestamp window, so a packet's client is found
/// with one hash lookup (DESIGN.md: no per-client trial decryption).
///
/// Flat on purpose: with 10 000 clients and 13 epochs the index holds 130 000 hints, so each
/// costs one 16-byte bucket, not a heap allocation. Two (client, epoch) pairs sharing a 64-bit
/// hint are a freak event; the extra ones go to `collisions`.
#[derive(Debug, Default)]
struct HintIndex {
    /// hint → (client index, epoch).
    map: HashMap<u64, (u32, u32)>,
    /// Further candidates for a hint already in `map`.
    collisions: HashMap<u64, Vec<(u32, u32)>>,
    /// Epochs present, oldest first, with the hints each added.
    epochs: VecDeque<(u64, Vec<u64>)>,
}

impl HintIndex {
    fn build(config: &Config, now: u64) -> HintIndex {
        let mut idx = HintIndex::default();
        idx.refresh(config, now);
        idx
    }

    /// Add epochs that entered the window and drop those that left it.
    fn refresh(&mut self, config: &Config, now: u64) {
        let window =
            native::epochs_within(now, config.server.max_age.max(native::SKEW_DIAGNOSIS_SECS));
        let (lo, hi) = (*window.start(), *window.end());
        while let Some((epoch, _)) = self.epochs.front() {
            if *epoch >= lo {
                break;
            }
            let Some((epoch, hints)) = self.epochs.pop_front() else {
                break;
            };
            let epoch = epoch as u32;
            for h in hints {
                self.remove(h, epoch);
            }
        }
        let start = self.epochs.back().map_or(lo, |(e, _)| e + 1).max(lo);
        let natives = config
            .clients
            .iter()
            .filter(|c| matches!(c.credential, Credential::Native(_)))
            .count();
        self.map
            .reserve(natives * (hi + 1).saturating_sub(start) as usize);
        for epoch in start..=hi {
            let mut hints = Vec::with_capacity(natives);
            for (i, client) in config.clients.iter().enumerate() {
                if let Credential::Native(key) = &client.credential {
                    let h = u64::from_be_bytes(native::hint(key, epoch));
                    // Epochs are Unix time / 600: u32 lasts until the year 80 000.
                    let entry = (i as u32, epoch as u32);
                    match self.map.entry(h) {
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(entry);
                        }
                        std::collections::hash_map::Entry::Occupied(_) => {
                            self.collisions.entry(h).or_default().push(entry)
                        }
                    }
                    hints.push(h);
                }
            }
            self.epochs.push_back((epoch, hints));
        }
    }

    fn remove(&mut self, h: u64, epoch: u32) {
        if let Some(extra) = self.collisions.get_mut(&h) {
            extra.retain(|&(_, e)| e != epoch);
            if self.map.get(&h).is_some_and(|&(_, e)| e == epoch) {
                match extra.pop() {
                    Some(next) => {
                        self.map.insert(h, next);
                    }
                    None => {
                        self.map.remove(&h);
                    }
                }
            }
            if extra.is_empty() {
                self.collisions.remove(&h);
            }
        } else if self.map.get(&h).is_some_and(|&(_, e)| e == epoch) {
            self.map.remove(&h);
        }
    }

    /// The (client, epoch) pairs whose hint is `hint`.
    fn get(&self, hint: &[u8; native::HINT_LEN]) -> impl Iterator<Item = (u32, u32)> + '_ {
        let h = u64::from_be_bytes(*hint);
        let extra = if self.collisions.is_empty() {
            None
        } else {
            self.collisions.get(&h)
        };
        self.map
            .get(&h)
            .copied()
            .into_iter()
            .chain(extra.into_iter().flatten().copied())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len() + self.collisions.values().map(Vec::len).sum::<usize>()
    }
}

/// One fwknop client as the per-packet loop needs it. fwknop packets carry no key hint, so a
/// packet is tried under every client whose `sources` admit it (fwknopd's stanza loop): the
/// source networks are kept as flat integer masks so skipping a client costs a few
/// comparisons, and the HMAC key is prepared once instead of per packet.
#[derive(Debug)]
struct FwknopEntry {
    /// Index into `config.clients`.
    index: u32,
    /// `sources` as (network, mask) pairs, per family.
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
    key: fwknop::PreparedKey,
}

impl FwknopEntry {
    /// Could this client's `sources` admit `src`? Exactly `policy::addresses_permitted`'s
    /// source rule (IPv4-mapped IPv6 matched as IPv4), without its destination rule.
    fn admits(&self, src: IpAddr) -> bool {
        let src = match src {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(src, IpAddr::V4),
            v4 => v4,
        };
        match src {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().any(|&(net, mask)| a & mask == net)
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.iter().any(|&(net, mask)| a & mask == net)
            }
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
        let fwknop_clients = fwknop_clients(&config);
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
        self.fwknop_clients = fwknop_clients(&config);
        self.config = config;
    }

    /// Once a second or so: move the hint window, forget expired replay entries.
    pub fn tick(&mut self, now: u64) {
        self.hints.refresh(&self.config, now);
        self.replay.prune(now);
    }

    /// Decide one queued packet (a raw IP packet as NFQUEUE delivers it).
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

    /// Decide one knock payload.
    pub fn handle(&mut self, payload: &[u8], packet: Packet, now: u64) -> Outcome {
        match wire::detect(payload) {
            Some(Format::Native) => self.native(payload, packet, now),
            Some(Format::Fwknop) => self.fwknop(payload, packet, now),
            None => Outcome::reject(None, Reason::BadLength),
        }
    }

    fn native(&mut self, payload: &[u8], packet: Packet, now: u64) -> Outcome {
        let f = Some(Format::Native);
        let hint = match native::hint_of(payload) {
            Ok(h) => h,
            Err(native::NativeError::Length) => return Outcome::reject(f, Reason::BadLength),
            Err(_) => return Outcome::reject(f, Reason::BadHeader("unknown native version")),
        };
        // Copied out (at most a few; more only if 64-bit hints collide en masse) so the loop
        // below may borrow `self` mutably.
        let mut candidates = [(0u32, 0u32); 8];
        let mut n = 0;
        for c in self.hints.get(&hint).take(candidates.len()) {
            candidates[n] = c;
            n += 1;
        }
        if n == 0 {
            return Outcome::reject(f, Reason::UnknownKey);
        }
        let replay_key = crate::replay::key_of(payload);
        if self.replay.contains(&replay_key, now) {
            return Outcome::reject(f, Reason::Replay);
        }
        let mut first_reject = Reason::AuthFailed;
        // `native::open` also checks that the hint belongs to the timestamp's epoch.
        for &(i, _epoch) in &candidates[..n] {
            let client = &self.config.clients[i as usize];
            if !policy::addresses_permitted(client, &packet) {
                first_reject = Reason::SourceNotAllowed;
                continue;
            }
            let Credential::Native(key) = &client.credential else {
                continue;
            };
            let req = match native::open(key, payload) {
                Ok(r) => r,
                Err(native::NativeError::Auth) => continue,
                Err(native::NativeError::Malformed(m)) => {
                    // Authenticated but invalid: the sender holds the key; record nothing.
                    return Outcome {
                        client: Some(i as usize),
                        ..Outcome::reject(f, Reason::Malformed(m))
                    };
                }
                Err(_) => continue,
            };
            let knock = Knock {
                timestamp: req.timestamp,
                allow_ip: req.allow_ip,
                access: req.access,
                timeout: req.timeout,
                username: None,
                message_type: None,
                nat_access: None,
            };
            return self.finish(f, i as usize, knock, replay_key, None, packet, now);
        }
        Outcome::reject(f, first_reject)
    }

    fn fwknop(&mut self, payload: &[u8], packet: Packet, now: u64) -> Outcome {
        let f = Some(Format::Fwknop);
        let wire = match fwknop::prechecked(payload) {
            Ok(w) => w,
            Err(e) => {
                let reason = match e {
                    fwknop::FwknopError::Length => Reason::BadLength,
                    fwknop::FwknopError::SaltedPrefix => {
                        Reason::BadHeader("fwknop packet starts with U2FsdGVkX1")
                    }
                    _ => Reason::BadHeader("not fwknop SPA data"),
                };
                return Outcome::reject(f, reason);
            }
        };
        if self.fwknop_clients.is_empty() {
            return Outcome::reject(f, Reason::UnknownKey);
        }
        let replay_key = crate::replay::key_from_digest(&fwknop::replay_key(payload));
        if self.replay.contains(&replay_key, now) {
            return Outcome::reject(f, Reason::Replay);
        }
        // fwknopd tries stanzas in file order and the first that fully succeeds wins; a stanza
        // whose SOURCE excludes the packet costs no crypto.
        let mut result: Option<Outcome> = None;
        let mut any_source = false;
        for idx in 0..self.fwknop_clients.len() {
            let entry = &self.fwknop_clients[idx];
            let i = entry.index as usize;
            if !entry.admits(packet.src)
                || !policy::addresses_permitted(&self.config.clients[i], &packet)
            {
                continue;
            }
            any_source = true;
            let msg = match fwknop::open_prepared(&entry.key, wire) {
                Ok(m) => m,
                Err(_) => continue,
            };
            let unsupported = match msg.message_type {
                1 | 3 => None,
                0 => Some(Reason::Unsupported("fwknop command messages (type 0)")),
                2 | 4 => Some(Reason::Unsupported(
                    "fwknop NAT access messages (types 2, 4)",
                )),
                _ => Some(Reason::Unsupported(
                    "fwknop local NAT messages (types 5, 6)",
                )),
            };
            let knock = Knock {
                timestamp: msg.timestamp,
                allow_ip: (!msg.allow_ip.is_unspecified()).then_some(IpAddr::V4(msg.allow_ip)),
                access: msg.access,
                timeout: msg.client_timeout,
                username: Some(msg.username),
                message_type: Some(msg.message_type),
                nat_access: msg.nat_access,
            };
            let out = self.finish(f, i, knock, replay_key, unsupported, packet, now);
            if matches!(out.decision, Decision::Grant(_)) {
                return out;
            }
            result.get_or_insert(out);
        }
        result.unwrap_or_else(|| {
            Outcome::reject(
                f,
                if any_source {
                    Reason::AuthFailed
                } else {
                    Reason::SourceNotAllowed
                },
            )
        })
    }

    /// Common tail once a packet authenticated under client `i`: record it against replays,
    /// then apply the policy.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        format: Option<Format>,
        i: usize,
        knock: Knock,
        replay_key: ReplayKey,
        early: Option<Reason>,
        packet: Packet,
        now: u64,
    ) -> Outcome {
        let max_age = self.config.server.max_age;
        // Recorded as soon as it authenticated, before the age check (as fwknopd does): a
        // packet stamped in the future cannot be replayed once it becomes fresh.
        let expires = knock.timestamp.saturating_add(max_age);
        let record = if self.replay.contains(&replay_key, now) || expires < now {
            None
        } else {
            self.replay.insert(replay_key, expires);
            Some((replay_key, expires))
        };
        let decision = if let Some(reason) = early {
            Decision::Reject(reason)
        } else if knock.timestamp < self.refuse_before {
            Decision::Reject(Reason::StateLost)
        } else {
            let req = Request {
                timestamp: knock.timestamp,
                allow_ip: knock.allow_ip,
                access: &knock.access,
                timeout: knock.timeout,
                username: knock.username.as_deref(),
            };
            policy::evaluate(&req, &packet, &self.config.clients[i], max_age, now)
        };
        Outcome {
            format,
            client: Some(i),
            knock: Some(knock),
            decision,
            record,
        }
    }
}

fn fwknop_clients(config: &Config) -> Vec<FwknopEntry> {
    let mut out = Vec::new();
    for (i, client) in config.clients.iter().enumerate() {
        let Credential::Fwknop(key) = &client.credential else {
            continue;
        };
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for net in &client.sources {
            match net {
                ipnet::IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.netmask()))),
                ipnet::IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.netmask()))),
            }
        }
        out.push(FwknopEntry {
            index: i as u32,
            v4,
            v6,
            key: fwknop::PreparedKey::new(key),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Client, Server};
    use crate::crypto::NativeKey;

    const NOW: u64 = 1_800_000_000;

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

    fn config(clients: Vec<Client>) -> Arc<Config> {
        Arc::new(Config {
            path: "test.toml".into(),
            server: Server {
                port: 62201,
                queue: 0,
                state_dir: "/nonexistent".into(),
                protect: vec!["tcp/22".parse().unwrap()],
                max_age: 120,
                manage_ruleset: true,
                gate_forward: true,
                rate_limit: 20,
                user: crate::config::RunAs::Unchanged,
            },
            clients,
        })
    }

    fn native_client(name: &str, n: u8) -> Client {
        let mut c = crate::policy::tests::client();
        c.name = name.into();
        c.credential = Credential::Native(key(n));
        c
    }

    fn packet() -> Packet {
        Packet {
            src: "192.0.2.7".parse().unwrap(),
            dst: "192.0.2.1".parse().unwrap(),
        }
    }

    fn knock(n: u8, ts: u64, rng: u8) -> [u8; native::PACKET_LEN] {
        let req = native::Request {
            timestamp: ts,
            timeout: 0,
            allow_ip: Some(packet().src),
            access: vec!["tcp/22".parse().unwrap()],
        };
        native::seal(&key(n), &req, &mut CountingRng(rng)).unwrap()
    }

    fn engine() -> Engine {
        Engine::new(
            config(vec![native_client("bob", 9), native_client("alice", 1)]),
            ReplayCache::new(),
            0,
            NOW,
        )
    }

    #[test]
    fn native_knock_is_granted_to_its_client_once() {
        let mut e = engine();
        let p = knock(1, NOW, 0);
        let out = e.handle(&p, packet(), NOW);
        assert_eq!(out.client, Some(1));
        assert_eq!(out.format, Some(Format::Native));
        match &out.decision {
            Decision::Grant(g) => assert_eq!((g.addr, g.ttl), (packet().src, 30)),
            Decision::Reject(r) => panic!("{r}"),
        }
        assert_eq!(out.record.map(|(_, exp)| exp), Some(NOW + 120));
        let again = e.handle(&p, packet(), NOW + 1);
        assert_eq!(again.decision, Decision::Reject(Reason::Replay));
        assert_eq!(again.record, None);
    }

    #[test]
    fn unknown_key_costs_no_crypto_and_records_nothing() {
        let mut e = engine();
        let out = e.handle(&knock(5, NOW, 0), packet(), NOW);
        assert_eq!(out.decision, Decision::Reject(Reason::UnknownKey));
        assert!(out.record.is_none() && e.replay().is_empty());
    }

    #[test]
    fn tampered_and_junk_packets_are_refused() {
        let mut e = engine();
        let mut p = knock(1, NOW, 0);
        p[50] ^= 1;
        assert_eq!(
            e.handle(&p, packet(), NOW).decision,
            Decision::Reject(Reason::AuthFailed)
        );
        assert_eq!(
            e.handle(&[1u8; 40], packet(), NOW).decision,
            Decision::Reject(Reason::BadLength)
        );
        assert_eq!(
            e.handle_ip(&[0u8; 10], NOW).decision,
            Decision::Reject(Reason::NotUdp)
        );
        assert!(e.replay().is_empty());
    }

    #[test]
    fn stale_knock_is_refused_with_its_skew() {
        let mut e = engine();
        let out = e.handle(&knock(1, NOW - 100, 0), packet(), NOW + 100);
        assert_eq!(out.decision, Decision::Reject(Reason::Stale { skew: -200 }));
        // Minutes off: still recognised, so the operator learns the skew.
        let out = e.handle(&knock(1, NOW - 600, 1), packet(), NOW);
        assert_eq!(out.decision, Decision::Reject(Reason::Stale { skew: -600 }));
        // A knock from the future by more than max_age is outside the hint window: unknown.
        let out = e.handle(&knock(1, NOW + 100_000, 0), packet(), NOW);
        assert_eq!(out.decision, Decision::Reject(Reason::UnknownKey));
    }

    #[test]
    fn hint_window_moves_with_time() {
        let mut e = engine();
        let later = NOW + 3 * 3600;
        assert_eq!(
            e.handle(&knock(1, later, 0), packet(), later).decision,
            Decision::Reject(Reason::UnknownKey)
        );
        e.tick(later);
        assert!(matches!(
            e.handle(&knock(1, later, 0), packet(), later).decision,
            Decision::Grant(_)
        ));
        assert!(
            e.hints.epochs.len() <= 14,
            "old epochs not dropped: {}",
            e.hints.epochs.len()
        );
        assert_eq!(
            e.hints.len(),
            2 * e.hints.epochs.len(),
            "one hint per native client and epoch"
        );
    }

    #[test]
    fn colliding_hints_keep_every_candidate_until_their_epoch_leaves() {
        let mut idx = HintIndex::default();
        let h = 0xfeed_u64;
        idx.map.insert(h, (0, 10));
        idx.collisions.insert(h, vec![(1, 10), (2, 11)]);
        let all = |idx: &HintIndex| {
            let mut v: Vec<_> = idx.get(&h.to_be_bytes()).collect();
            v.sort();
            v
        };
        assert_eq!(all(&idx), vec![(0, 10), (1, 10), (2, 11)]);
        idx.remove(h, 10);
        assert_eq!(all(&idx), vec![(2, 11)]);
        assert!(idx.collisions.is_empty());
        idx.remove(h, 11);
        assert_eq!(idx.len(), 0);
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

    #[test]
    fn source_outside_the_clients_networks_is_refused_before_crypto() {
        let mut c = native_client("alice", 1);
        c.sources = vec!["10.0.0.0/8".parse().unwrap()];
        let mut e = Engine::new(config(vec![c]), ReplayCache::new(), 0, NOW);
        assert_eq!(
            e.handle(&knock(1, NOW, 0), packet(), NOW).decision,
            Decision::Reject(Reason::SourceNotAllowed)
        );
    }

    /// The flat source masks answer exactly as `policy::addresses_permitted` does (no
    /// `destinations` here), host bits in the config, mapped IPv6 and mixed families included.
    #[test]
    fn fwknop_source_masks_match_the_policy_rule() {
        let nets = [
            "10.1.2.3/24",
            "0.0.0.0/0",
            "192.0.2.7/32",
            "2001:db8::1/48",
            "::/0",
            "::ffff:0:0/96",
        ];
        let addrs = [
            "10.1.2.200",
            "10.1.3.1",
            "192.0.2.7",
            "192.0.2.8",
            "2001:db8:0:5::9",
            "2001:db9::1",
            "::ffff:10.1.2.9",
            "::1",
        ];
        for k in 0..(1u32 << nets.len()) {
            let mut c = crate::policy::tests::client();
            c.sources = nets
                .iter()
                .enumerate()
                .filter(|(j, _)| k & (1 << j) != 0)
                .map(|(_, n)| n.parse().unwrap())
                .collect();
            let cfg = config(vec![c]);
            let entry = &fwknop_clients(&cfg)[0];
            for a in addrs {
                let p = Packet {
                    src: a.parse().unwrap(),
                    dst: packet().dst,
                };
                assert_eq!(
                    entry.admits(p.src),
                    policy::addresses_permitted(&cfg.clients[0], &p),
                    "{a} in {:?}",
                    cfg.clients[0].sources
                );
            }
        }
    }

    #[test]
    fn handles_raw_ip_packets() {
        let mut e = engine();
        let p = knock(1, NOW, 3);
        let ip = wire::ip::build(packet().src, packet().dst, 5555, 62201, &p);
        assert!(matches!(e.handle_ip(&ip, NOW).decision, Decision::Grant(_)));
    }
}
