//! The native path: the key hint names the candidate clients in O(1) ([`super::hints`]), the
//! replay cache is looked up on the wire bytes (one spelling per packet), then AES-256-GCM is
//! tried under each candidate's key.

use super::{Engine, Outcome};
use crate::config::Credential;
use crate::policy::{self, Knock, Packet, Reason};
use crate::wire::{native, Format};

impl Engine {
    /// Decide a native-shaped payload: version, key hint, replay lookup, then AES-GCM under
    /// each candidate client.
    pub(super) fn native(&mut self, payload: &[u8], packet: Packet, now: u64) -> Outcome {
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
            let plaintext = match native::open(key, payload) {
                Ok(p) => p,
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
            let record = self.remember(replay_key, plaintext.timestamp);
            return Outcome {
                record,
                ..self.decide(f, i as usize, knock_of(plaintext), packet, now)
            };
        }
        Outcome::reject(f, first_reject)
    }
}

/// What an authenticated native plaintext asks for, in the terms policy judges.
fn knock_of(p: native::Plaintext) -> Knock {
    Knock {
        command: None,
        timestamp: p.timestamp,
        allow_ip: p.allow_ip,
        access: p.access,
        timeout: p.timeout,
        username: None,
        message_type: None,
        nat_access: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tests::{config, engine, knock, native_client, packet, NOW};
    use crate::policy::Decision;
    use crate::replay::ReplayCache;

    #[test]
    fn native_knock_is_granted_to_its_client_once() {
        let mut e = engine();
        let p = knock(1, NOW, 0);
        let out = e.handle(&p, packet(), NOW);
        assert_eq!(out.client, Some(1));
        assert_eq!(out.format, Some(Format::Native));
        match &out.decision {
            Decision::Grant(g) => assert_eq!((g.addr, g.ttl), (packet().src, 30)),
            d => panic!("{d:?}"),
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
    fn source_outside_the_clients_networks_is_refused_before_crypto() {
        let mut c = native_client("alice", 1);
        c.sources = vec!["10.0.0.0/8".parse().unwrap()];
        let mut e = Engine::new(config(vec![c]), ReplayCache::new(), 0, NOW);
        assert_eq!(
            e.handle(&knock(1, NOW, 0), packet(), NOW).decision,
            Decision::Reject(Reason::SourceNotAllowed)
        );
    }
}
