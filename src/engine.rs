//! The per-packet pipeline, pure: cheap checks → key lookup → replay lookup → authenticate →
//! policy. The daemon hands each queued packet to [`Engine::handle`] with the current time and
//! acts on the returned [`Outcome`]; `nfknock verify` calls the same code offline.
//!
//! Order (STYLE.md habit 3): length/format and the source address, then the key lookup that
//! needs no crypto (the native key hint in O(1); fwknop clients filtered by source address),
//! then the replay cache, then crypto. State is recorded only after a packet authenticated.
//!
//! One exception: an fwknop packet's replay identity is its authenticated message
//! ([`fwknop::Opened::replay_id`]), because its wire text has more than one spelling, so it is
//! looked up right after authentication. A replayed fwknop packet therefore costs what a forged
//! one from the same source costs (each candidate client's HMAC), plus one decryption.

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

    /// Make the index cover exactly the epochs of the window around `now`: drop the epochs
    /// that left it at either end and add those that entered it at either end.
    ///
    /// Time normally moves forward by a second per call, so this adds or drops one epoch every
    /// ten minutes. A clock step is just a bigger move: forward, the old epochs all leave and
    /// the new window is built; backward, the newest epochs leave and the older ones are added
    /// in front. Either way the index matches `now` after one call (issue "security", item 6:
    /// a step back used to leave it empty until a reload).
    fn refresh(&mut self, config: &Config, now: u64) {
        let window =
            native::epochs_within(now, config.server.max_age.max(native::SKEW_DIAGNOSIS_SECS));
        let (lo, hi) = (*window.start(), *window.end());
        let outside = |e: &(u64, Vec<u64>)| e.0 < lo || e.0 > hi;
        while self.epochs.front().is_some_and(outside) {
            if let Some((epoch, hints)) = self.epochs.pop_front() {
                self.remove_epoch(epoch, hints);
            }
        }
        while self.epochs.back().is_some_and(outside) {
            if let Some((epoch, hints)) = self.epochs.pop_back() {
                self.remove_epoch(epoch, hints);
            }
        }
        let natives = config
            .clients
            .iter()
            .filter(|c| matches!(c.credential, Credential::Native(_)))
            .count();
        // What is left is contiguous and inside [lo, hi]; if nothing is, build it all.
        let (front, back) = match (self.epochs.front(), self.epochs.back()) {
            (Some((f, _)), Some((b, _))) => (*f, *b),
            _ => (hi.saturating_add(1), hi),
        };
        let missing = front.saturating_sub(lo) + hi.saturating_sub(back);
        self.map.reserve(natives * missing as usize);
        for epoch in (lo..front).rev() {
            let hints = self.add_epoch(config, natives, epoch);
            self.epochs.push_front((epoch, hints));
        }
        for epoch in back.saturating_add(1)..=hi {
            let hints = self.add_epoch(config, natives, epoch);
            self.epochs.push_back((epoch, hints));
        }
    }

    /// Index every native client's hint for `epoch`; returns the hints added.
    fn add_epoch(&mut self, config: &Config, natives: usize, epoch: u64) -> Vec<u64> {
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
        hints
    }

    fn remove_epoch(&mut self, epoch: u64, hints: Vec<u64>) {
        let epoch = epoch as u32;
        for h in hints {
            self.remove(h, epoch);
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
    /// source rule (addresses as they are; an IPv4-mapped source never), without its
    /// destination rule.
    fn admits(&self, src: IpAddr) -> bool {
        if wire::ip::is_ipv4_mapped(src) {
            return false;
        }
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
    /// Latest expiry among the replay entries loaded at start. Until then, fwknop packets are
    /// also looked up under the identity nfknock journaled before message identities (SHA-256
    /// of the wire, [`fwknop::replay_key`]): a journal written by that version must not open a
    /// replay window after an upgrade. After it, no such entry can be live.
    legacy_until: u64,
}

impl Engine {
    pub fn new(config: Arc<Config>, replay: ReplayCache, refuse_before: u64, now: u64) -> Engine {
        let hints = HintIndex::build(&config, now);
        let fwknop_clients = fwknop_clients(&config);
        let legacy_until = replay.iter().map(|(_, exp)| exp).max().unwrap_or(0);
        Engine {
            config,
            hints,
            fwknop_clients,
            replay,
            refuse_before,
            legacy_until,
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
    ///
    /// `now` is the wall clock (what knocks are judged by), `mono` a clock that never steps
    /// (seconds from any origin): the replay cache forgets an entry only when both say it
    /// expired. Returns the wall clock's step, in seconds, if it stepped since the last tick
    /// (see [`ReplayCache::prune`]).
    pub fn tick(&mut self, now: u64, mono: u64) -> Option<i64> {
        self.hints.refresh(&self.config, now);
        self.replay.prune(now, mono)
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
        let format = wire::detect(payload);
        // An IPv4-mapped source in an IPv6 header would pass for an IPv4 host that IPv4's
        // rp_filter never checked (`wire::ip::is_ipv4_mapped`): refused before anything else.
        if wire::ip::is_ipv4_mapped(packet.src) {
            return Outcome::reject(format, Reason::MappedSource);
        }
        match format {
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
            let record = self.remember(replay_key, knock.timestamp);
            return Outcome {
                record,
                ..self.decide(f, i as usize, knock, None, packet, now)
            };
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
        if now <= self.legacy_until {
            let legacy = crate::replay::key_from_digest(&fwknop::replay_key(payload));
            if self.replay.contains(&legacy, now) {
                return Outcome::reject(f, Reason::Replay);
            }
        }
        // fwknopd 2.6.10 (server/incoming_spa.c, `incoming_spa()`) tries the access.conf
        // stanzas in file order. A stanza whose SOURCE excludes the packet is skipped before any
        // crypto; one that authenticates the packet but then refuses it (age, allow IP,
        // username, message type, ports) also hands it on to the next stanza (`continue`); only
        // a stanza that acts on the packet ends the loop (`break`). The replay digest is stored
        // once, by the first stanza that authenticates (`add_replay_cache()`). So: the first
        // grant wins; without one, the first authenticated refusal is the answer. Whichever it
        // is carries the replay record, which the daemon journals before any grant.
        let mut result: Option<Outcome> = None;
        let mut record: Option<(ReplayKey, u64)> = None;
        let mut seen: Option<ReplayKey> = None;
        let mut any_source = false;
        let mut non_canonical = false;
        for idx in 0..self.fwknop_clients.len() {
            let entry = &self.fwknop_clients[idx];
            let i = entry.index as usize;
            if !entry.admits(packet.src)
                || !policy::addresses_permitted(&self.config.clients[i], &packet)
            {
                continue;
            }
            any_source = true;
            let opened = match fwknop::open_prepared(&entry.key, wire) {
                Ok(o) => o,
                Err(fwknop::FwknopError::NonCanonical) => {
                    non_canonical = true;
                    continue;
                }
                Err(_) => continue,
            };
            let msg = opened.message;
            let id = crate::replay::key_from_digest(&opened.replay_id);
            if seen != Some(id) {
                if self.replay.contains(&id, now) {
                    return Outcome {
                        record,
                        ..Outcome::reject(f, Reason::Replay)
                    };
                }
                record = self.remember(id, msg.timestamp).or(record);
                seen = Some(id);
            }
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
            let out = self.decide(f, i, knock, unsupported, packet, now);
            if matches!(out.decision, Decision::Grant(_)) {
                return Outcome { record, ..out };
            }
            result.get_or_insert(out);
        }
        match result {
            Some(out) => Outcome { record, ..out },
            None => Outcome::reject(
                f,
                if non_canonical {
                    Reason::BadHeader("fwknop base64 is not canonical (a re-spelled packet)")
                } else if any_source {
                    Reason::AuthFailed
                } else {
                    Reason::SourceNotAllowed
                },
            ),
        }
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
        early: Option<Reason>,
        packet: Packet,
        now: u64,
    ) -> Outcome {
        let decision = if let Some(reason) = early {
            Decision::Reject(reason)
        } else if knock.timestamp < self.refuse_before() {
            Decision::Reject(Reason::StateLost)
        } else {
            let req = Request {
                timestamp: knock.timestamp,
                allow_ip: knock.allow_ip,
                access: &knock.access,
                timeout: knock.timeout,
                username: knock.username.as_deref(),
            };
            policy::evaluate(
                &req,
                &packet,
                &self.config.clients[i],
                self.config.server.max_age,
                now,
            )
        };
        Outcome {
            format,
            client: Some(i),
            knock: Some(knock),
            decision,
            record: None,
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
    use crate::config::{ClientEntry, Server};
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

    fn config(clients: Vec<ClientEntry>) -> Arc<Config> {
        config_with_max_age(clients, 120)
    }

    fn config_with_max_age(clients: Vec<ClientEntry>, max_age: u64) -> Arc<Config> {
        Arc::new(Config {
            path: "test.toml".into(),
            server: Server {
                port: 62201,
                queue: 0,
                state_dir: "/nonexistent".into(),
                protect: vec!["tcp/22".parse().unwrap()],
                max_age,
                manage_ruleset: true,
                gate_forward: true,
                rate_limit: 20,
                rate_limit_v4_prefix: 32,
                rate_limit_v6_prefix: 64,
                revoke_on_reload: true,
                user: crate::config::RunAs::Unchanged,
            },
            clients,
        })
    }

    fn native_client(name: &str, n: u8) -> ClientEntry {
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
        assert_eq!(
            out.record.map(|(_, exp)| exp),
            Some(NOW + crate::replay::KEEP_SECS),
            "kept for the largest max_age, not the current 120 s"
        );
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
        e.tick(later, later);
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

    fn granted(out: &Outcome) -> bool {
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

    /// Issue "security", item 6: after the wall clock steps back by more than the hint window
    /// the native hint index must cover the new `now` at once, not only after a reload.
    #[test]
    fn hint_index_follows_clock_steps_in_both_directions() {
        let mut e = engine();
        for (i, now) in [
            NOW - 2 * 3600,       // back, further than the window
            NOW - 2 * 3600 - 601, // back across one epoch boundary
            NOW + 5 * 86_400,     // forward, far
            NOW,                  // back, far
        ]
        .into_iter()
        .enumerate()
        {
            e.tick(now, i as u64);
            let out = e.handle(&knock(1, now, i as u8 * 10), packet(), now);
            assert!(granted(&out), "step to {now}: {:?}", out.decision);
            let window = native::epochs_within(now, native::SKEW_DIAGNOSIS_SECS);
            let epochs: Vec<u64> = e.hints.epochs.iter().map(|(ep, _)| *ep).collect();
            assert_eq!(epochs, window.collect::<Vec<_>>(), "step to {now}");
            assert_eq!(e.hints.len(), 2 * epochs.len(), "step to {now}");
        }
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
    /// `destinations` here), host bits in the config, IPv4-mapped and other IPv4-embedding
    /// IPv6 forms and mixed families included.
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
            "::ffff:192.0.2.7",
            "::10.1.2.9",
            "64:ff9b::a01:209",
            "2002:a01:209::1",
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
}
