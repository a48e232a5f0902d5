//! The fwknop path: fwknop packets carry no key hint, so each is tried under every fwknop client
//! whose `sources` admit its source, in file order, as fwknopd tries its `access.conf` stanzas.
//! Holds the candidate table ([`FwknopEntry`]: flat source masks, the HMAC key prepared once)
//! and the stanza loop.

use std::net::IpAddr;

use super::{Engine, Outcome};
use crate::config::{Config, Credential};
use crate::policy::{self, Decision, Knock, Packet, Reason};
use crate::replay::ReplayKey;
use crate::wire::fwknop::{self, SpaMessage};
use crate::wire::{self, Format};

/// One fwknop client as the per-packet loop needs it. fwknop packets carry no key hint, so a
/// packet is tried under every client whose `sources` admit it (fwknopd's stanza loop): the
/// source networks are kept as flat integer masks so skipping a client costs a few
/// comparisons, and the HMAC key is prepared once instead of per packet.
#[derive(Debug)]
pub(super) struct FwknopEntry {
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

impl Engine {
    /// Decide an fwknop-shaped payload: cheap checks, then fwknopd's stanza loop.
    pub(super) fn fwknop(&mut self, payload: &[u8], packet: Packet, now: u64) -> Outcome {
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
        // Issue 11 §2: at most MAX_FWKNOP_CANDIDATES HMACs per packet. A config that loaded
        // never has more candidates for one source (the config refuses it, naming the client
        // that would be cut off); this bound holds whatever the engine is given.
        let mut tried = 0usize;
        for idx in 0..self.fwknop_clients.len() {
            let entry = &self.fwknop_clients[idx];
            let i = entry.index as usize;
            if !entry.admits(packet.src)
                || !policy::addresses_permitted(&self.config.clients[i], &packet)
            {
                continue;
            }
            if tried == crate::config::MAX_FWKNOP_CANDIDATES {
                break;
            }
            tried += 1;
            any_source = true;
            let opened = match fwknop::open_prepared(&entry.key, wire) {
                Ok(o) => o,
                Err(fwknop::FwknopError::NonCanonical) => {
                    non_canonical = true;
                    continue;
                }
                Err(_) => continue,
            };
            let id = crate::replay::key_from_digest(&opened.replay_id);
            if seen != Some(id) {
                if self.replay.contains(&id, now) {
                    return Outcome {
                        record,
                        ..Outcome::reject(f, Reason::Replay)
                    };
                }
                record = self.remember(id, opened.message.timestamp).or(record);
                seen = Some(id);
            }
            let out = self.decide(f, i, knock_of(opened.message), packet, now);
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
}

/// What an authenticated fwknop message asks for, in the terms policy judges. Allow IP
/// `0.0.0.0` means "the packet's source" (fwknop `-s`); the message type stays for policy to
/// judge ([`policy::evaluate`] serves access messages only).
fn knock_of(msg: SpaMessage) -> Knock {
    let command = msg.command().map(str::to_string);
    Knock {
        command,
        timestamp: msg.timestamp,
        allow_ip: (!msg.allow_ip.is_unspecified()).then_some(IpAddr::V4(msg.allow_ip)),
        access: msg.access,
        timeout: msg.client_timeout,
        username: Some(msg.username),
        message_type: Some(msg.message_type),
        nat_access: msg.nat_access,
    }
}

/// The fwknop clients of `config`, in file order (fwknopd's stanza order).
pub(super) fn table(config: &Config) -> Vec<FwknopEntry> {
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
    use crate::engine::tests::{config, packet};

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
            let entry = &table(&cfg)[0];
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
}
