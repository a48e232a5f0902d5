//! Unit tests of `engine`.

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

/// A client whose `sources` exclude the knock's source is refused as such, not as a bad key.
#[test]
fn a_knock_from_outside_the_clients_sources_is_refused_as_such() {
    let mut alice = native_client("alice", 1);
    alice.sources = vec!["10.0.0.0/8".parse().unwrap()];
    let mut e = Engine::new(config(vec![alice]), ReplayCache::new(), 0, NOW);
    let out = e.handle(&knock(1, NOW, 5), packet(), NOW);
    assert_eq!(out.decision, Decision::Reject(Reason::SourceNotAllowed));
    assert!(e.replay().is_empty());
}

/// `native` holds its own contract even if a caller skipped `wire::detect`: a payload of the
/// wrong length or version is refused before any lookup.
#[test]
fn native_refuses_a_wrong_length_or_version_by_itself() {
    let mut e = engine();
    let out = e.native(&[native::VERSION; 10], packet(), NOW);
    assert_eq!(out.decision, Decision::Reject(Reason::BadLength));
    let mut p = knock(1, NOW, 6);
    p[0] = 0x7f;
    let out = e.native(&p, packet(), NOW);
    assert_eq!(
        out.decision,
        Decision::Reject(Reason::BadHeader("unknown native version"))
    );
}

/// Two clients with the same key share every hint: both stay reachable while the index rolls
/// through epochs, and the collision list empties as old epochs go.
#[test]
fn clients_sharing_a_key_stay_reachable_across_epochs() {
    let mut e = Engine::new(
        config(vec![native_client("a", 1), native_client("b", 1)]),
        ReplayCache::new(),
        0,
        NOW,
    );
    let mut ts = NOW;
    for rng in 0..4u8 {
        let out = e.handle(&knock(1, ts, 10 + rng), packet(), ts);
        assert!(granted(&out), "{:?} at {ts}", out.decision);
        assert_eq!(out.client, Some(0));
        ts += native::EPOCH_SECS;
        e.tick(ts, ts - NOW);
    }
}
