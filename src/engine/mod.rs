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
    /// The newest epoch whose hints were handed out for the kernel's prefilter set
    /// ([`Engine::kernel_hints`]); `None`: none yet, or they must all be written again.
    kernel_through: Option<u64>,
}

/// One key hint for the kernel's prefilter set: its 8 bytes, and the milliseconds until its
/// epoch leaves the acceptance window (the element's timeout).
pub type KernelHint = ([u8; wire::native::HINT_LEN], u64);

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
            kernel_through: None,
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

    /// The key hints the kernel's prefilter set should get at `now` (issue 11): with `all`,
    /// every hint of the window ([`hints::kernel_epochs`]) — at start, after a reload, a flush
    /// repair or a clock step, written over the set's old content; otherwise only the epochs
    /// that entered the window since the last call (normally nothing, or one epoch's hints
    /// every ten minutes, [`hints::KERNEL_HINT_LEAD_SECS`] before they can be needed), added
    /// beside what the kernel holds. Each with its timeout from `now`.
    pub fn kernel_hints(&mut self, now: u64, all: bool) -> Vec<KernelHint> {
        let max_age = self.config.server.max_age;
        let window = hints::kernel_epochs(now, max_age);
        let (lo, hi) = (*window.start(), *window.end());
        let from = match self.kernel_through {
            Some(t) if !all => t.saturating_add(1).max(lo),
            _ => lo,
        };
        let mut out = Vec::new();
        for epoch in from..=hi {
            let ms = hints::kernel_hint_timeout_ms(epoch, max_age, now);
            let hints = self.hints.hints_of_epoch(&self.config, epoch);
            out.extend(hints.into_iter().map(|h| (h.to_be_bytes(), ms)));
        }
        self.kernel_through = Some(hi);
        out
    }

    /// The kernel did not take the last [`Engine::kernel_hints`]: hand out the whole window
    /// at the next call.
    pub fn kernel_hints_lost(&mut self) {
        self.kernel_through = None;
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
mod tests;
