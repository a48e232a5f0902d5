//! fwknop compatibility through the whole pure core: every record of
//! `tests/vectors/fwknop-vectors.jsonl` (real packets from the Debian fwknop 2.6.10 client and
//! fwknop's own test suite; shared/FWKNOP-WIRE.md §13) goes through [`Engine::handle`] with a
//! server config written as TOML from the record's keys and parsed by `config::parse_str`, the
//! way an admin's file would be. `now` is the record's timestamp (the vectors are fixed in time).
//!
//! Then `nfknock verify --json` on a few records through the real binary: the JSON fields the
//! "fwknop compatibility" issue asks for, and the exit codes.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use nfknock::access::{parse_list, Access};
use nfknock::config::{self, Config};
use nfknock::engine::{Engine, Outcome};
use nfknock::policy::{Decision, Grant, Packet, Reason};
use nfknock::replay::{self, ReplayCache};
use nfknock::state::ReplayJournal;
use nfknock::wire::fwknop::{
    decode_b64_lenient, seal, DigestType, EncMode, FwknopKey, HmacType, SealRequest,
};
use nfknock::wire::Format;
use serde_json::Value;
use zeroize::Zeroizing;

const VECTORS: &str = include_str!("vectors/fwknop-vectors.jsonl");

/// Source used for records whose allow IP is `0.0.0.0` ("use the packet's source") and for
/// negative records (TEST-NET-2, never routed).
const LAB_SRC: &str = "198.51.100.7";
/// The server's address as the packet's destination (TEST-NET-1).
const SERVER: &str = "192.0.2.1";
const MAX_AGE: u64 = 120;
/// Deliberately different from fwknopd's defaults (30 / 300) and from every client timeout in
/// the vectors (2, 3, 30), so each ttl below says which rule produced it.
const DEFAULT_TIMEOUT: u32 = 10;
const MAX_TIMEOUT: u32 = 25;

fn records() -> Vec<Value> {
    VECTORS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

fn s<'a>(r: &'a Value, k: &str) -> Option<&'a str> {
    r.get(k).and_then(Value::as_str)
}

fn case(r: &Value) -> &str {
    s(r, "case").expect("case")
}

fn expected(r: &Value) -> &Value {
    &r["expected"]
}

/// The record's clock: its timestamp, or when it was generated (negative records have none).
fn now_of(r: &Value) -> u64 {
    r["timestamp"]
        .as_u64()
        .or_else(|| r["generated_at_unix"].as_u64())
        .unwrap_or_else(|| panic!("{}: no timestamp", case(r)))
}

fn allow_ip(r: &Value) -> Option<Ipv4Addr> {
    s(expected(r), "allow_ip").map(|ip| ip.parse().expect("allow ip"))
}

/// The packet's source: the allow IP, as a real client knocking for itself would send it.
fn source_of(r: &Value) -> IpAddr {
    match allow_ip(r) {
        Some(ip) if !ip.is_unspecified() => IpAddr::V4(ip),
        _ => LAB_SRC.parse().unwrap(),
    }
}

fn packet_from(src: IpAddr) -> Packet {
    Packet {
        src,
        dst: SERVER.parse().unwrap(),
    }
}

/// A TOML basic string (the keys and passphrases in the vectors are plain ASCII).
fn quoted(v: &str) -> String {
    serde_json::to_string(v).unwrap()
}

/// Per-test knobs for the `[[client]]` entry.
#[derive(Clone, Default)]
struct Opts {
    require_source_match: bool,
    /// Overrides the record's own `REQUIRE_USERNAME` stanza line.
    require_username: Option<String>,
    /// `sources = [...]`, default none given (= anywhere).
    sources: Option<&'static str>,
    /// `allow = [...]`, default `["tcp/22", "tcp/443"]`.
    allow: Option<&'static str>,
    /// `nat = [...]`, default none.
    nat: Option<&'static str>,
}

/// `REQUIRE_USERNAME` from the record's access.conf stanza, if any.
fn stanza_username(r: &Value) -> Option<String> {
    r["server_stanza"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find_map(|line| {
            line.strip_prefix("REQUIRE_USERNAME")
                .map(|u| u.trim().to_string())
        })
}

/// The `[[client]]` + `[client.fwknop]` an admin would write for this record's keys:
/// passphrases as `key`/`hmac_key`, generated keys as `key_base64`/`hmac_key_base64`.
fn client_toml(r: &Value, name: &str, o: &Opts) -> String {
    let mut t = format!(
        "[[client]]\nname = \"{name}\"\nallow = {}\n\
         timeout = {DEFAULT_TIMEOUT}\nmax_timeout = {MAX_TIMEOUT}\nrequire_source_match = {}\n",
        o.allow.unwrap_or("[\"tcp/22\", \"tcp/443\"]"),
        o.require_source_match
    );
    if let Some(src) = o.sources {
        t += &format!("sources = {src}\n");
    }
    if let Some(nat) = o.nat {
        t += &format!("nat = {nat}\n");
    }
    if let Some(u) = o.require_username.clone().or_else(|| stanza_username(r)) {
        t += &format!("require_username = {}\n", quoted(&u));
    }
    t += "[client.fwknop]\n";
    match s(r, "key_passphrase") {
        Some(p) => t += &format!("key = {}\n", quoted(p)),
        None => {
            t += &format!(
                "key_base64 = {}\n",
                quoted(s(r, "key_base64").expect("key"))
            )
        }
    }
    match (s(r, "hmac_key_passphrase"), s(r, "hmac_key_base64")) {
        (Some(p), _) => t += &format!("hmac_key = {}\n", quoted(p)),
        (None, Some(b)) => t += &format!("hmac_key_base64 = {}\n", quoted(b)),
        (None, None) => t += "no_hmac = true\n",
    }
    if let Some(h) = s(r, "hmac_type") {
        t += &format!("hmac = \"{h}\"\n");
    }
    let mode = s(r, "encryption_mode").expect("mode").to_ascii_lowercase();
    t += &format!("mode = \"{mode}\"\n");
    t
}

const SERVER_TOML: &str =
    "[server]\nport = 62201\nstate_dir = \"/nonexistent\"\nprotect = [\"tcp/22\", \"tcp/443\"]\nmax_age = 120\n";

fn parse(text: &str) -> Arc<Config> {
    let c = config::parse_str(text, Path::new("fwknop-engine-test.toml"))
        .unwrap_or_else(|e| panic!("config refused:\n{e}\n---\n{text}"));
    assert_eq!(c.server.max_age, MAX_AGE);
    Arc::new(c)
}

fn config_for(r: &Value, o: &Opts) -> Arc<Config> {
    parse(&format!("{SERVER_TOML}\n{}", client_toml(r, "fw", o)))
}

fn engine(config: Arc<Config>, now: u64) -> Engine {
    Engine::new(config, ReplayCache::new(), 0, now)
}

fn grant_of(r: &Value, out: &Outcome) -> Grant {
    match &out.decision {
        Decision::Grant(g) => g.clone(),
        Decision::Reject(reason) => panic!("{}: refused: {reason} ({})", case(r), reason.code()),
        Decision::Command(c) => panic!("{}: a command: {c:?}", case(r)),
    }
}

/// What a record asks for, as nfknock accesses.
fn access_of(r: &Value) -> Vec<Access> {
    parse_list(s(expected(r), "access").expect("access")).expect("access list")
}

/// fwknopd's timeout rule (FWKNOP-WIRE.md §7 step 4.7): the client's, capped; else the default.
fn ttl_of(r: &Value) -> u32 {
    match expected(r)["client_timeout"].as_u64().unwrap_or(0) {
        0 => DEFAULT_TIMEOUT,
        t => u32::try_from(t).unwrap().min(MAX_TIMEOUT),
    }
}

fn message_type(r: &Value) -> u64 {
    expected(r)["message_type"].as_u64().expect("message_type")
}

fn valid(r: &Value) -> bool {
    r["valid"].as_bool().expect("valid")
}

fn is_access(r: &Value) -> bool {
    valid(r) && matches!(message_type(r), 1 | 3)
}

/// Does this record ask for "the packet's source" (`fwknop -s`, allow IP 0.0.0.0)?
fn asks_for_source(r: &Value) -> bool {
    allow_ip(r).is_some_and(|ip| ip.is_unspecified())
}

/// Run one record once through a fresh engine; returns the engine for follow-up packets.
fn handle(r: &Value, o: &Opts, src: IpAddr, now: u64) -> (Engine, Outcome) {
    let mut e = engine(config_for(r, o), now);
    let out = e.handle(s(r, "packet").unwrap().as_bytes(), packet_from(src), now);
    (e, out)
}

#[test]
fn vectors_cover_what_this_file_tests() {
    let rs = records();
    let count = |f: &dyn Fn(&Value) -> bool| rs.iter().filter(|r| f(r)).count();
    assert!(count(&|r| is_access(r)) >= 10, "too few access records");
    assert!(
        count(&|r| is_access(r) && asks_for_source(r)) >= 2,
        "no 0.0.0.0 records"
    );
    assert!(
        count(&|r| valid(r) && message_type(r) == 0) >= 1,
        "no command record"
    );
    assert!(
        count(&|r| valid(r) && matches!(message_type(r), 2 | 4 | 5 | 6)) >= 1,
        "no NAT record"
    );
    assert!(count(&|r| !valid(r)) >= 4, "no negative records");
    assert!(rs.iter().any(|r| case(r) == "spoof_user"));
}

/// Valid access records (types 1 and 3) are granted: the allow IP, exactly the requested
/// accesses, and the timeout fwknopd would give. The same packet a second time is a replay.
#[test]
fn access_records_are_granted_once_with_fwknopds_timeout() {
    let o = Opts {
        require_source_match: true,
        ..Opts::default()
    };
    let mut n = 0;
    for r in records()
        .iter()
        .filter(|r| is_access(r) && !asks_for_source(r))
    {
        let (src, now) = (source_of(r), now_of(r));
        let (mut e, out) = handle(r, &o, src, now);
        let c = case(r);
        assert_eq!(out.format, Some(Format::Fwknop), "{c}");
        assert_eq!(out.client, Some(0), "{c}");
        let g = grant_of(r, &out);
        assert_eq!(
            g,
            Grant {
                addr: src,
                access: access_of(r),
                ttl: ttl_of(r),
                nat: vec![],
                gateway: Vec::new(),
            },
            "{c}"
        );
        let k = out.knock.as_ref().expect("knock details");
        assert_eq!(
            k.timestamp,
            expected(r)["timestamp"].as_u64().unwrap(),
            "{c}"
        );
        assert_eq!(k.username.as_deref(), s(expected(r), "username"), "{c}");
        assert_eq!(k.message_type.map(u64::from), Some(message_type(r)), "{c}");
        // Kept for the largest max_age a config allows, whatever MAX_AGE is here.
        assert_eq!(
            out.record.map(|(_, exp)| exp),
            Some(k.timestamp + nfknock::replay::KEEP_SECS),
            "{c}: replay record"
        );

        let again = e.handle(
            s(r, "packet").unwrap().as_bytes(),
            packet_from(src),
            now + 1,
        );
        assert_eq!(
            again.decision,
            Decision::Reject(Reason::Replay),
            "{c}: second copy"
        );
        assert_eq!(again.record, None, "{c}: a replay records nothing");
        n += 1;
    }
    assert!(n >= 10, "only {n} records tested");
}

/// `fwknop -s` (allow IP 0.0.0.0): refused when the client must name its address, else granted
/// to the packet's source (fwknopd `REQUIRE_SOURCE_ADDRESS`, FWKNOP-WIRE.md §7 step 4.10).
#[test]
fn zero_allow_ip_depends_on_require_source_match() {
    let mut n = 0;
    for r in records()
        .iter()
        .filter(|r| is_access(r) && asks_for_source(r))
    {
        let (src, now, c) = (source_of(r), now_of(r), case(r));
        let strict = Opts {
            require_source_match: true,
            ..Opts::default()
        };
        let (_, out) = handle(r, &strict, src, now);
        assert_eq!(
            out.decision,
            Decision::Reject(Reason::SourceRequired),
            "{c}"
        );
        assert_eq!(
            out.knock.as_ref().and_then(|k| k.allow_ip),
            None,
            "{c}: 0.0.0.0 is `None`"
        );

        let lax = Opts {
            require_source_match: false,
            ..Opts::default()
        };
        let (_, out) = handle(r, &lax, src, now);
        assert_eq!(
            grant_of(r, &out),
            Grant {
                addr: src,
                access: access_of(r),
                ttl: ttl_of(r),
                nat: vec![],
                gateway: Vec::new(),
            },
            "{c}"
        );
        n += 1;
    }
    assert!(n >= 2, "only {n} records tested");
}

/// An explicit allow IP that is not the packet's source: refused with require_source_match,
/// opened for the allow IP (not the source) without it — fwknopd's semantics.
#[test]
fn explicit_allow_ip_from_another_source() {
    let other: IpAddr = LAB_SRC.parse().unwrap();
    for r in records()
        .iter()
        .filter(|r| is_access(r) && !asks_for_source(r))
    {
        let (now, c) = (now_of(r), case(r));
        let strict = Opts {
            require_source_match: true,
            ..Opts::default()
        };
        let (_, out) = handle(r, &strict, other, now);
        assert_eq!(
            out.decision,
            Decision::Reject(Reason::SourceMismatch),
            "{c}"
        );
        let lax = Opts {
            require_source_match: false,
            ..Opts::default()
        };
        let (_, out) = handle(r, &lax, other, now);
        assert_eq!(
            grant_of(r, &out).addr,
            source_of(r),
            "{c}: the allow IP is opened"
        );
    }
}

/// Command (type 0) messages authenticate but are not served; NAT (2, 4, 5, 6) messages are
/// refused for a client without `nat` (issue 10). Both are still recorded against replays
/// (fwknopd stores the digest before acting on the type).
#[test]
fn command_records_are_unsupported_and_nat_records_need_nat() {
    let mut n = 0;
    for r in records().iter().filter(|r| valid(r) && !is_access(r)) {
        let (src, now, c) = (source_of(r), now_of(r), case(r));
        let o = Opts {
            require_source_match: true,
            ..Opts::default()
        };
        let (mut e, out) = handle(r, &o, src, now);
        match out.decision {
            Decision::Reject(Reason::Unsupported(what)) if message_type(r) == 0 => {
                assert!(what.contains("command"), "{c}: {what}");
            }
            Decision::Reject(Reason::NatNotAllowed(a)) if message_type(r) != 0 => {
                assert_eq!(vec![a], access_of(r), "{c}");
            }
            d => panic!("{c}: {d:?}"),
        }
        assert_eq!(out.client, Some(0), "{c}: authenticated under the client");
        let k = out.knock.as_ref().expect("knock");
        assert_eq!(k.message_type.map(u64::from), Some(message_type(r)), "{c}");
        assert_eq!(k.nat_access.as_deref(), s(expected(r), "nat_access"), "{c}");
        assert!(out.record.is_some(), "{c}: not recorded against replay");
        let again = e.handle(s(r, "packet").unwrap().as_bytes(), packet_from(src), now);
        assert_eq!(again.decision, Decision::Reject(Reason::Replay), "{c}");
        n += 1;
    }
    assert!(n >= 2, "only {n} records tested");
}

/// The real client's NAT access message (`fwknop -N 192.168.10.2:22`, type 2) is granted with
/// its translation when the client's `nat` names exactly that target for the port, and refused
/// when it names another (issue 10 §1: the packet never picks a destination).
#[test]
fn nat_records_are_granted_only_to_the_configured_target() {
    let r = records()
        .into_iter()
        .find(|r| valid(r) && matches!(message_type(r), 2 | 4))
        .expect("a NAT record");
    let (src, now, c) = (source_of(&r), now_of(&r), case(&r));
    let o = Opts {
        require_source_match: false,
        nat: Some("[{ port = \"tcp/22\", to = \"192.168.10.2:22\", masquerade = true }]"),
        ..Opts::default()
    };
    let (_, out) = handle(&r, &o, src, now);
    let g = grant_of(&r, &out);
    assert_eq!(g.access, access_of(&r), "{c}");
    assert_eq!(
        g.nat,
        [(
            access_of(&r)[0],
            nfknock::access::NatTarget {
                to: "192.168.10.2:22".parse().unwrap(),
                source: nfknock::access::SourceNat::Masquerade,
                dnat: true,
            }
        )],
        "{c}"
    );
    let other = Opts {
        nat: Some("[{ port = \"tcp/22\", to = \"192.168.10.3:22\" }]"),
        ..o
    };
    let (_, out) = handle(&r, &other, src, now);
    assert_eq!(
        out.decision,
        Decision::Reject(Reason::NatNotAllowed(access_of(&r)[0])),
        "{c}"
    );
}

/// An unsupported message is answered as such even when the journal was lost (every knock
/// stamped before `refuse_before` is refused): the operator learns the client sends something
/// nfknock never serves, not that it should knock again.
#[test]
fn unsupported_messages_say_so_even_after_a_lost_journal() {
    let mut n = 0;
    for r in records().iter().filter(|r| valid(r)) {
        let (src, now, c) = (source_of(r), now_of(r), case(r));
        let o = Opts {
            require_source_match: false,
            ..Opts::default()
        };
        let mut e = Engine::new(config_for(r, &o), ReplayCache::new(), now + 1, now);
        let out = e.handle(s(r, "packet").unwrap().as_bytes(), packet_from(src), now);
        if message_type(r) != 0 {
            assert_eq!(out.decision, Decision::Reject(Reason::StateLost), "{c}");
        } else {
            assert!(
                matches!(out.decision, Decision::Reject(Reason::Unsupported(_))),
                "{c}: {:?}",
                out.decision
            );
            n += 1;
        }
        assert_eq!(out.record, None, "{c}: refused for good, nothing to record");
    }
    assert!(n >= 1, "only {n} unsupported records tested");
}

/// What nfknock must answer for each kind of negative record (by the stage fwknop fails it at).
fn negative_reason(r: &Value) -> Reason {
    match (s(r, "failure_stage"), case(r)) {
        (Some("hmac" | "decrypt" | "digest"), _) => Reason::AuthFailed,
        (Some("preprocess"), "neg_salted_prefix_replay_bypass") => {
            Reason::BadHeader("fwknop packet starts with U2FsdGVkX1")
        }
        (Some("preprocess"), _) => Reason::BadHeader("not fwknop SPA data"),
        (stage, c) => panic!("{c}: no expectation for failure stage {stage:?}; add one here"),
    }
}

/// Negative records are refused for the right reason, and record nothing: the same packet
/// again gets the same answer, not "replay".
#[test]
fn negative_records_are_refused_for_the_right_reason() {
    let mut n = 0;
    for r in records().iter().filter(|r| !valid(r)) {
        let (now, c) = (now_of(r), case(r));
        let o = Opts {
            require_source_match: true,
            ..Opts::default()
        };
        // Sent from the allow IP the original packet names, where there is one.
        let src: IpAddr = "10.1.2.3".parse().unwrap();
        let (mut e, out) = handle(r, &o, src, now);
        let want = negative_reason(r);
        assert_eq!(out.decision, Decision::Reject(want), "{c}");
        assert_eq!(out.format, Some(Format::Fwknop), "{c}");
        assert_eq!((out.client, out.record), (None, None), "{c}");
        assert!(e.replay().is_empty(), "{c}: a refused packet was recorded");
        let again = e.handle(s(r, "packet").unwrap().as_bytes(), packet_from(src), now);
        assert_eq!(again.decision, Decision::Reject(want), "{c}: second copy");
        n += 1;
    }
    assert!(n >= 4, "only {n} records tested");
}

/// The salted-prefix record is the captured default packet with `U2FsdGVkX1` prepended: libfko
/// would accept it, fwknopd's pre-check does not, and neither do we — even after the original
/// was accepted (FWKNOP-WIRE.md §3.4).
#[test]
fn salted_prefix_cannot_dodge_the_replay_cache() {
    let rs = records();
    let bypass = rs
        .iter()
        .find(|r| case(r) == "neg_salted_prefix_replay_bypass")
        .unwrap();
    let orig = s(bypass, "packet")
        .unwrap()
        .strip_prefix("U2FsdGVkX1")
        .expect("prefixed");
    let r = rs
        .iter()
        .find(|r| s(r, "packet") == Some(orig))
        .expect("the original packet is a vector");
    let (src, now) = (source_of(r), now_of(r));
    let (mut e, out) = handle(
        r,
        &Opts {
            require_source_match: true,
            ..Opts::default()
        },
        src,
        now,
    );
    grant_of(r, &out);
    let out = e.handle(
        s(bypass, "packet").unwrap().as_bytes(),
        packet_from(src),
        now,
    );
    assert_eq!(out.decision, Decision::Reject(negative_reason(bypass)));
}

/// fwknopd `REQUIRE_USERNAME`: the `spoof_user` record (`-U alice`) is granted when alice is
/// required and refused for anyone else.
#[test]
fn spoofed_user_name_and_require_username() {
    let rs = records();
    let r = rs.iter().find(|r| case(r) == "spoof_user").unwrap();
    assert_eq!(s(expected(r), "username"), Some("alice"));
    let (src, now) = (source_of(r), now_of(r));
    let o = Opts {
        require_source_match: true,
        require_username: Some("alice".into()),
        ..Opts::default()
    };
    let (_, out) = handle(r, &o, src, now);
    grant_of(r, &out);
    let o = Opts {
        require_username: Some("root".into()),
        ..o
    };
    let (_, out) = handle(r, &o, src, now);
    assert_eq!(out.decision, Decision::Reject(Reason::UsernameMismatch));
    // Every other record was sent as `root` or an Android user: none passes as `bob`.
    for r in rs.iter().filter(|r| is_access(r) && !asks_for_source(r)) {
        let o = Opts {
            require_source_match: true,
            require_username: Some("bob".into()),
            ..Opts::default()
        };
        let (_, out) = handle(r, &o, source_of(r), now_of(r));
        assert_eq!(
            out.decision,
            Decision::Reject(Reason::UsernameMismatch),
            "{}",
            case(r)
        );
    }
}

/// One second past max_age: refused as stale with the skew, for every authenticated record.
/// It is still recorded (fwknopd stores the digest before the age check).
#[test]
fn stale_records_report_their_skew() {
    let o = Opts {
        require_source_match: false,
        ..Opts::default()
    };
    for r in records().iter().filter(|r| valid(r)) {
        let (src, c) = (source_of(r), case(r));
        let ts = expected(r)["timestamp"].as_u64().unwrap();
        let (_, out) = handle(r, &o, src, ts + MAX_AGE + 1);
        let want = if message_type(r) != 0 {
            Reason::Stale { skew: -121 }
        } else {
            // Unsupported types are refused before the age is looked at.
            match out.decision {
                Decision::Reject(Reason::Unsupported(w)) => Reason::Unsupported(w),
                ref d => panic!("{c}: {d:?}"),
            }
        };
        assert_eq!(out.decision, Decision::Reject(want), "{c}");
        // Exactly max_age old is still fresh.
        let (_, out) = handle(r, &o, src, ts + MAX_AGE);
        if is_access(r) {
            grant_of(r, &out);
        }
    }
}

/// Stanzas filtered by source: a client whose `sources` excludes the packet is never tried, and
/// with several fwknop clients the one whose key fits wins, whatever its position.
#[test]
fn sources_filter_and_the_matching_client_wins() {
    let rs = records();
    let r = rs
        .iter()
        .find(|r| case(r) == "default_cbc_hmac_sha256_tcp22")
        .unwrap();
    let other = rs.iter().find(|r| case(r) == "hmac_sha512").unwrap();
    let (src, now) = (source_of(r), now_of(r));
    let o = Opts {
        require_source_match: true,
        ..Opts::default()
    };

    let narrow = Opts {
        sources: Some("[\"203.0.113.0/24\"]"),
        ..o.clone()
    };
    let (_, out) = handle(r, &narrow, src, now);
    assert_eq!(out.decision, Decision::Reject(Reason::SourceNotAllowed));

    let text = format!(
        "{SERVER_TOML}\n{}\n{}\n{}",
        client_toml(other, "first", &o),
        client_toml(r, "elsewhere", &narrow),
        client_toml(r, "right", &o)
    );
    let mut e = engine(parse(&text), now);
    let out = e.handle(s(r, "packet").unwrap().as_bytes(), packet_from(src), now);
    grant_of(r, &out);
    assert_eq!(out.client, Some(2));
    // Under a key nobody holds: authentication fails (not "unknown source").
    let text = format!("{SERVER_TOML}\n{}", client_toml(other, "first", &o));
    let mut e = engine(parse(&text), now);
    let out = e.handle(s(r, "packet").unwrap().as_bytes(), packet_from(src), now);
    assert_eq!(out.decision, Decision::Reject(Reason::AuthFailed));
}

// ---------------------------------------------------------------------------------------------
// Replay identity independent of spelling (security issue, item 1).

/// A no-HMAC client's config, for records without an HMAC key.
fn has_hmac(r: &Value) -> bool {
    s(r, "hmac_key_base64").is_some() || s(r, "hmac_key_passphrase").is_some()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Spellings of `text`, the end of a base64 string of `unit_len` characters, that libfko's
/// lenient decoder reads as the same bytes: the unused low bits of the last character set, or
/// one character appended when that leaves a lone final character (which decodes to nothing).
fn respellings(text: &str, unit_len: usize) -> Vec<String> {
    let spare_bits = match unit_len % 4 {
        2 => 4,
        3 => 2,
        _ => 0,
    };
    let mut out = Vec::new();
    let (head, last) = text.split_at(text.len() - 1);
    let v = B64.iter().position(|&c| c == last.as_bytes()[0]).unwrap();
    for x in 1..(1usize << spare_bits) {
        out.push(format!("{head}{}", B64[v ^ x] as char));
    }
    if unit_len % 4 == 0 {
        for extra in ["A", "Q", "/"] {
            out.push(format!("{text}{extra}"));
        }
    }
    out
}

/// Re-spellings of a whole no-HMAC wire string (its base64 starts with `U2FsdGVkX1`).
fn wire_respellings(wire: &str) -> Vec<String> {
    respellings(wire, 10 + wire.len())
}

/// A no-HMAC knock captured on the wire and re-spelled (flipped spare bits in the last base64
/// character, one character appended) decrypts to the same message under libfko's lenient
/// decoding. Before the fix each spelling had its own replay key and was granted again; now a
/// non-canonical spelling is refused before decryption, whether it comes after the original or
/// before it.
#[test]
fn respelled_no_hmac_packets_are_never_granted() {
    let o = Opts {
        require_source_match: false,
        ..Opts::default()
    };
    let mut n = 0;
    for r in records().iter().filter(|r| is_access(r) && !has_hmac(r)) {
        let (src, now, c) = (source_of(r), now_of(r), case(r));
        let packet = s(r, "packet").unwrap();
        let mut spellings = wire_respellings(packet);
        assert!(!spellings.is_empty(), "{c}");
        // Spellings refused before any crypto since the start: `=` padding, trailing
        // whitespace or NUL, fwknop's own `U2FsdGVkX1` prefix put back.
        for tail in ["=", "==", "\n", " ", "\0"] {
            spellings.push(format!("{packet}{tail}"));
        }
        spellings.push(format!("U2FsdGVkX1{packet}"));
        let (mut e, out) = handle(r, &o, src, now);
        grant_of(r, &out);
        for v in &spellings {
            let again = e.handle(v.as_bytes(), packet_from(src), now + 1);
            assert!(
                !matches!(again.decision, Decision::Grant(_)),
                "{c}: re-spelled copy {v} granted again"
            );
            assert_eq!(again.record, None, "{c}: {v}");
        }
        // Sent before the original (a racing attacker): refused, and the original still works.
        let mut e = engine(config_for(r, &o), now);
        for v in &spellings {
            let first = e.handle(v.as_bytes(), packet_from(src), now);
            assert!(
                matches!(first.decision, Decision::Reject(ref why) if why.code() == "bad-header"),
                "{c}: {v}: {:?}",
                first.decision
            );
            assert_eq!(first.client, None, "{c}: {v}: authenticated");
            assert!(
                e.replay().is_empty(),
                "{c}: a refused spelling was recorded"
            );
        }
        let out = e.handle(packet.as_bytes(), packet_from(src), now);
        grant_of(r, &out);
        n += 1;
    }
    assert!(n >= 4, "only {n} no-HMAC records tested");
}

/// With an HMAC the tag covers the base64 text and is compared as text: no re-spelling of the
/// body or of the tag authenticates, so none is granted, before or after the original.
#[test]
fn respelled_hmac_packets_fail_authentication() {
    let o = Opts {
        require_source_match: false,
        ..Opts::default()
    };
    let mut n = 0;
    for r in records().iter().filter(|r| is_access(r) && has_hmac(r)) {
        let (src, now, c) = (source_of(r), now_of(r), case(r));
        let packet = s(r, "packet").unwrap();
        let (mut e, out) = handle(r, &o, src, now);
        grant_of(r, &out);
        // The tag's last character, and the body's last character with the tag kept.
        let tag_len = match s(r, "hmac_type").unwrap_or("sha256") {
            "md5" => 22,
            "sha1" => 27,
            "sha384" => 64,
            "sha512" | "sha3_512" => 86,
            _ => 43,
        };
        let (body, tag) = packet.split_at(packet.len() - tag_len);
        let mut spellings: Vec<String> = respellings(tag, tag_len)
            .into_iter()
            .map(|t| format!("{body}{t}"))
            .collect();
        spellings.extend(
            wire_respellings(body)
                .into_iter()
                .map(|b| format!("{b}{tag}")),
        );
        assert!(!spellings.is_empty(), "{c}");
        for v in spellings.iter().filter(|v| v.as_str() != packet) {
            for (label, e) in [
                ("after", &mut e),
                ("first", &mut engine(config_for(r, &o), now)),
            ] {
                let out = e.handle(v.as_bytes(), packet_from(src), now);
                assert!(
                    !matches!(out.decision, Decision::Grant(_)),
                    "{c}: {label}: re-spelled {v} granted"
                );
                assert_eq!(out.record, None, "{c}: {label}: {v}");
            }
        }
        n += 1;
    }
    assert!(n >= 10, "only {n} HMAC records tested");
}

/// The no-HMAC record's keys as a CTR-mode client (`fwknop -M ctr`, no HMAC).
fn ctr_no_hmac_key(r: &Value) -> FwknopKey {
    let key = decode_b64_lenient(s(r, "key_base64").unwrap()).unwrap();
    FwknopKey::new(Zeroizing::new(key), None, HmacType::Sha256, EncMode::Ctr).unwrap()
}

/// In a stream mode (CTR, CFB, OFB) without an HMAC, anyone can flip ciphertext bits of the
/// PKCS#7 padding: libfko's lenient unpadding plus its C-string cut still yield the very same
/// message, from a canonical base64 spelling of *different* ciphertext bytes. Only an identity
/// of the authenticated message catches that: the copy is a replay, never a second grant.
#[test]
fn ctr_padding_respelled_without_hmac_is_a_replay() {
    let rs = records();
    let r = rs.iter().find(|r| case(r) == "no_hmac_passphrase").unwrap();
    let (src, now) = (source_of(r), now_of(r));
    let key = ctr_no_hmac_key(r);
    let allow = match allow_ip(r) {
        Some(ip) if !ip.is_unspecified() => ip,
        _ => panic!("no_hmac_passphrase names its allow IP"),
    };
    let req = SealRequest::access("root", now, allow, &access_of(r), 0);
    let packet = seal(&key, &req, [7; 8], "1234567890123456", DigestType::Sha256).unwrap();
    let text = format!(
        "{SERVER_TOML}\n[[client]]\nname = \"ctr\"\nallow = [\"tcp/22\", \"tcp/443\"]\n\
         [client.fwknop]\nkey_base64 = {}\nno_hmac = true\nmode = \"ctr\"\n",
        quoted(s(r, "key_base64").unwrap())
    );
    let mut e = engine(parse(&text), now);
    let out = e.handle(packet.as_bytes(), packet_from(src), now);
    grant_of(r, &out);

    use base64::Engine as _;
    let std = base64::engine::general_purpose::STANDARD_NO_PAD;
    let raw = std.decode(format!("U2FsdGVkX1{packet}")).unwrap();
    // The attacker does not know the padding length p, so tries each: the first padding byte
    // (p from the end) XOR p becomes NUL, which ends libfko's C string right after the message;
    // whatever follows the NUL may be changed too.
    let mut replays = 0;
    for p in 1..=16u8 {
        let mut v = raw.clone();
        let at = v.len() - usize::from(p);
        v[at] ^= p;
        let mut variants = vec![v.clone()];
        if p > 1 {
            *v.last_mut().unwrap() ^= 0x55;
            variants.push(v);
        }
        for v in variants {
            let wire = std.encode(&v)[10..].to_string();
            let out = e.handle(wire.as_bytes(), packet_from(src), now + 1);
            match out.decision {
                Decision::Grant(_) | Decision::Command(_) => {
                    panic!("padding of length {p} re-spelled: granted again")
                }
                Decision::Reject(Reason::Replay) => replays += 1,
                Decision::Reject(_) => {}
            }
            assert_eq!(out.record, None, "{p}");
        }
    }
    assert!(
        replays >= 1,
        "no padding variant authenticated; the test proves nothing"
    );
}

/// A no-HMAC client that shares its Rijndael key with an HMAC client (a migration in progress)
/// opens the HMAC'd packet once its tag is cut off. The message is the same, so it is a replay.
#[test]
fn hmac_packet_with_its_tag_cut_off_is_a_replay_under_a_no_hmac_stanza() {
    let rs = records();
    let r = rs
        .iter()
        .find(|r| case(r) == "default_cbc_hmac_sha256_tcp22")
        .unwrap();
    let (src, now) = (source_of(r), now_of(r));
    let o = Opts {
        require_source_match: true,
        ..Opts::default()
    };
    let old_phone = format!(
        "[[client]]\nname = \"old-phone\"\nallow = [\"tcp/22\"]\n\
         [client.fwknop]\nkey_base64 = {}\nno_hmac = true\n",
        quoted(s(r, "key_base64").unwrap())
    );
    let text = format!(
        "{SERVER_TOML}\n{}\n{old_phone}",
        client_toml(r, "laptop", &o)
    );
    let mut e = engine(parse(&text), now);
    let packet = s(r, "packet").unwrap();
    let out = e.handle(packet.as_bytes(), packet_from(src), now);
    assert_eq!(out.client, Some(0));
    grant_of(r, &out);
    let stripped = &packet[..packet.len() - 43];
    let out = e.handle(stripped.as_bytes(), packet_from(src), now + 1);
    assert_eq!(out.decision, Decision::Reject(Reason::Replay));
    assert_eq!(out.record, None);
}

/// A fresh state directory, declared new so that its first open is a first start (not a lost
/// journal, which would refuse every knock stamped before start + max_age).
fn new_state_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    nfknock::state::mark_first_start(&state).unwrap();
    dir
}

/// Upgrade from the last release: its journal (format 1) holds, for fwknop packets, fwknopd's
/// identity (the first 128 bits of SHA-256 of the wire bytes, which is what `replay::key_of`
/// computes), not the message identity. It is loaded like a lost journal, so no spelling of a
/// packet stamped before the upgrade is granted at all.
#[test]
fn format_1_journal_lets_no_spelling_of_an_earlier_packet_through() {
    let o = Opts {
        require_source_match: false,
        ..Opts::default()
    };
    let mut n = 0;
    for r in records().iter().filter(|r| is_access(r)) {
        let (src, now, c) = (source_of(r), now_of(r), case(r));
        let packet = s(r, "packet").unwrap();
        let ts = expected(r)["timestamp"].as_u64().unwrap();
        let old = replay::key_of(packet.as_bytes());
        let mut spellings = vec![packet.to_string()];
        spellings.extend(wire_respellings(packet));

        // Format 1, as the release before wrote it (`timestamp + max_age`).
        let dir = tempfile::tempdir().unwrap();
        let mut v1 = b"NFKR\x00\x01\x00\x00".to_vec();
        v1.extend_from_slice(&replay::encode_record(&old, ts + MAX_AGE));
        std::fs::write(dir.path().join(nfknock::state::JOURNAL_FILE), v1).unwrap();
        let (_j, cache, _) = ReplayJournal::open(dir.path(), now + 1, MAX_AGE).unwrap();
        let mut e = Engine::new(config_for(r, &o), cache, 0, now + 1);
        for v in &spellings {
            let out = e.handle(v.as_bytes(), packet_from(src), now + 1);
            assert!(
                !matches!(out.decision, Decision::Grant(_)),
                "{c}: {v} granted after the upgrade from format 1"
            );
        }
        n += 1;
    }
    assert!(n >= 10, "only {n} records tested");
}

// ---------------------------------------------------------------------------------------------
// Several stanzas for one packet (security issue, item 2).

/// Two clients share keys; the first authenticates the packet and refuses it (tcp/22 is not in
/// its `allow`), the second grants it. fwknopd 2.6.10 goes on to the next stanza after an
/// authenticated refusal, so the second grants — and the grant must carry the replay record,
/// or the daemon never journals it and the packet is granted again after a restart.
#[test]
fn grant_by_a_later_stanza_is_journaled_and_stays_a_replay_after_a_restart() {
    let rs = records();
    let r = rs
        .iter()
        .find(|r| case(r) == "default_cbc_hmac_sha256_tcp22")
        .unwrap();
    let (src, now) = (source_of(r), now_of(r));
    let ts = expected(r)["timestamp"].as_u64().unwrap();
    let narrow = Opts {
        require_source_match: true,
        allow: Some("[\"tcp/443\"]"),
        ..Opts::default()
    };
    let wide = Opts {
        require_source_match: true,
        ..Opts::default()
    };
    let text = format!(
        "{SERVER_TOML}\n{}\n{}",
        client_toml(r, "web-only", &narrow),
        client_toml(r, "admin", &wide)
    );
    let packet = s(r, "packet").unwrap().as_bytes();
    let dir = new_state_dir();
    let state = dir.path().join("state");
    let (mut journal, cache, _) = ReplayJournal::open(&state, now, MAX_AGE).unwrap();
    let mut e = Engine::new(parse(&text), cache, 0, now);
    let out = e.handle(packet, packet_from(src), now);
    assert_eq!(out.client, Some(1), "the second stanza grants");
    grant_of(r, &out);
    let (_, expires) = out.record.expect("the grant carries its replay record");
    assert_eq!(expires, replay::expiry_of(ts));
    // What the daemon does with an outcome: journal its record, then grant.
    journal.append(&[out.record.unwrap()]).unwrap();
    journal.sync().unwrap();
    drop((journal, e));

    // Restart inside max_age: the same packet is a replay.
    let (_journal, cache, _) = ReplayJournal::open(&state, now + 5, MAX_AGE).unwrap();
    let mut e = Engine::new(parse(&text), cache, 0, now + 5);
    let again = e.handle(packet, packet_from(src), now + 5);
    assert_eq!(again.decision, Decision::Reject(Reason::Replay));

    // When no stanza grants, the first refusal is the answer, and it is recorded too.
    let text = format!(
        "{SERVER_TOML}\n{}\n{}",
        client_toml(r, "web-only", &narrow),
        client_toml(r, "web-too", &narrow)
    );
    let mut e = engine(parse(&text), now);
    let out = e.handle(packet, packet_from(src), now);
    assert_eq!(out.client, Some(0));
    assert_eq!(
        out.decision,
        Decision::Reject(Reason::NotAllowed("tcp/22".parse().unwrap()))
    );
    assert_eq!(out.record.map(|(_, exp)| exp), Some(replay::expiry_of(ts)));
}

// ---------------------------------------------------------------------------------------------
// IPv4-mapped IPv6 sources (security issue, item 8).

/// A UDPv6 packet whose source is `::ffff:a.b.c.d` (Linux ≥ 5.12 delivers them to UDP) must
/// not pass for IPv4 a.b.c.d: rp_filter never policed it. Refused before any crypto, with its
/// own reason, and nothing recorded; the same knock over IPv4 is then still granted.
#[test]
fn ipv4_mapped_source_is_refused_before_crypto() {
    let rs = records();
    let r = rs
        .iter()
        .find(|r| case(r) == "default_cbc_hmac_sha256_tcp22")
        .unwrap();
    let (src, now) = (source_of(r), now_of(r));
    let IpAddr::V4(v4) = src else { unreachable!() };
    let o = Opts {
        require_source_match: true,
        sources: Some("[\"10.1.2.0/24\"]"),
        ..Opts::default()
    };
    let mut e = engine(config_for(r, &o), now);
    let packet = s(r, "packet").unwrap().as_bytes();
    let mapped = Packet {
        src: IpAddr::V6(v4.to_ipv6_mapped()),
        dst: IpAddr::V6(SERVER.parse::<Ipv4Addr>().unwrap().to_ipv6_mapped()),
    };
    let mapped_refusal =
        |d: &Decision| matches!(d, Decision::Reject(r) if r.code() == "mapped-source");
    let out = e.handle(packet, mapped, now);
    assert!(mapped_refusal(&out.decision), "{:?}", out.decision);
    assert_eq!((out.client, out.record), (None, None));
    assert!(e.replay().is_empty());
    // Through the raw-IP path the daemon uses, too.
    let ip = nfknock::wire::ip::build(mapped.src, "fd00::1".parse().unwrap(), 40000, 62201, packet);
    let out = e.handle_ip(&ip, now);
    assert!(mapped_refusal(&out.decision), "{:?}", out.decision);
    // With a v6 `sources` that would contain it (`::/0`): still refused.
    let any = Opts {
        sources: Some("[\"0.0.0.0/0\", \"::/0\"]"),
        ..o.clone()
    };
    let mut e = engine(config_for(r, &any), now);
    let out = e.handle(packet, mapped, now);
    assert!(mapped_refusal(&out.decision), "{:?}", out.decision);
    grant_of(r, &e.handle(packet, packet_from(src), now));
}

// ---------------------------------------------------------------------------------------------
// `nfknock verify --json` through the real binary.

fn write_private(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let p = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
    p
}

/// Run `nfknock verify --json` for record `r` from `src`; returns (exit code, JSON).
fn verify(config: &Path, r: &Value, src: IpAddr, now: u64) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_nfknock"))
        .args(["verify", "--json", "--config"])
        .arg(config)
        .args(["--source", &src.to_string(), "--now", &now.to_string()])
        .args(["--packet", s(r, "packet").unwrap()])
        .output()
        .unwrap();
    let code = out.status.code().expect("exit code");
    let text = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{}: not JSON ({e}): {text}\n{}",
            case(r),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, json)
}

const VERIFY_FIELDS: [&str; 11] = [
    "decision",
    "reason",
    "format",
    "client",
    "username",
    "timestamp",
    "message_type",
    "allow_ip",
    "access",
    "timeout",
    "nat_access",
];

#[test]
fn verify_json_explains_fwknop_packets() {
    let dir = tempfile::tempdir().unwrap();
    let rs = records();
    let find = |c: &str| {
        rs.iter()
            .find(|r| case(r) == c)
            .unwrap_or_else(|| panic!("no record {c}"))
    };
    let o = Opts {
        require_source_match: true,
        ..Opts::default()
    };

    // A client-timeout knock: granted, capped to max_timeout.
    let r = find("client_timeout_30");
    let cfg = write_private(
        dir.path(),
        "a.toml",
        &format!("{SERVER_TOML}\n{}", client_toml(r, "laptop", &o)),
    );
    let (code, v) = verify(&cfg, r, source_of(r), now_of(r));
    for f in VERIFY_FIELDS {
        assert!(v.get(f).is_some(), "verify --json lacks `{f}`: {v}");
    }
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["decision"], "grant");
    assert_eq!(v["reason"], Value::Null);
    assert_eq!(v["format"], "fwknop");
    assert_eq!(v["client"], "laptop");
    assert_eq!(v["username"], "root");
    assert_eq!(v["timestamp"], expected(r)["timestamp"]);
    assert_eq!(v["message_type"], 3);
    assert_eq!(v["allow_ip"], "10.1.2.3");
    assert_eq!(v["access"], serde_json::json!(["tcp/22"]));
    assert_eq!(v["timeout"], MAX_TIMEOUT);
    assert_eq!(v["nat_access"], Value::Null);

    // A NAT knock to a client without `nat`: authenticated, refused, with its NAT target shown.
    let r = find("nat_access");
    let (code, v) = verify(&cfg, r, source_of(r), now_of(r));
    assert_eq!(code, 1, "{v}");
    assert_eq!(
        (v["decision"].as_str(), v["reason"].as_str()),
        (Some("reject"), Some("nat-not-allowed"))
    );
    assert_eq!(v["client"], "laptop");
    assert_eq!(v["message_type"], 2);
    assert_eq!(v["nat_access"], expected(r)["nat_access"]);
    assert_eq!(v["timeout"], Value::Null);

    // The same knock to a client whose `nat` lists that target: granted, forwarded there.
    let fwd = Opts {
        nat: Some("[{ port = \"tcp/22\", to = \"192.168.10.2:22\" }]"),
        ..o.clone()
    };
    let nat_cfg = write_private(
        dir.path(),
        "nat.toml",
        &format!("{SERVER_TOML}\n{}", client_toml(r, "laptop", &fwd)),
    );
    let (code, v) = verify(&nat_cfg, r, source_of(r), now_of(r));
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v["forwarded"],
        serde_json::json!([{"access": "tcp/22", "to": "192.168.10.2:22"}])
    );

    // `-s` to a client that requires its address; stale.
    let r = find("suite_android_v4_4_hmac");
    let cfg = write_private(
        dir.path(),
        "b.toml",
        &format!("{SERVER_TOML}\n{}", client_toml(r, "phone", &o)),
    );
    let (code, v) = verify(&cfg, r, LAB_SRC.parse().unwrap(), now_of(r));
    assert_eq!(
        (code, v["reason"].as_str()),
        (1, Some("source-required")),
        "{v}"
    );
    assert_eq!(
        (v["allow_ip"].as_str(), v["username"].as_str()),
        (Some("0.0.0.0"), Some("u0_a52"))
    );
    let (code, v) = verify(&cfg, r, LAB_SRC.parse().unwrap(), now_of(r) + 121);
    assert_eq!(
        (code, v["reason"].as_str(), v["skew"].as_i64()),
        (1, Some("stale"), Some(-121)),
        "{v}"
    );

    // Under a key the server does not have: no client, nothing decoded.
    let r = find("neg_wrong_hmac_key");
    let (code, v) = verify(&cfg, r, "10.1.2.3".parse().unwrap(), now_of(r));
    assert_eq!(
        (code, v["reason"].as_str(), v["format"].as_str()),
        (1, Some("auth-failed"), Some("fwknop")),
        "{v}"
    );
    assert_eq!(
        (v["client"].clone(), v["username"].clone()),
        (Value::Null, Value::Null)
    );

    // Bad config: exit 2. A world-readable file holding inline keys is one.
    let bad = write_private(dir.path(), "bad.toml", "[server]\nport = \"x\"\n");
    let (code, _) = verify_raw(&bad, r);
    assert_eq!(code, 2);
    let open = dir.path().join("open.toml");
    std::fs::write(&open, std::fs::read(&cfg).unwrap()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, stderr) = verify_raw(&open, r);
    assert_eq!(code, 2, "{stderr}");
}

fn verify_raw(config: &Path, r: &Value) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nfknock"))
        .args(["verify", "--json", "--config"])
        .arg(config)
        .args(["--source", "10.1.2.3", "--packet", s(r, "packet").unwrap()])
        .output()
        .unwrap();
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Keys of wide-open client `i` in [`at_most_the_candidate_bound_is_tried_per_packet`].
fn bound_keys(i: u16) -> (Vec<u8>, Vec<u8>) {
    let mut k = vec![0x5au8; 32];
    k[..2].copy_from_slice(&i.to_be_bytes());
    let mut h = vec![0xa5u8; 64];
    h[..2].copy_from_slice(&i.to_be_bytes());
    (k, h)
}

fn bound_client(name: &str, i: u16) -> String {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let (k, h) = bound_keys(i);
    format!(
        "[[client]]\nname = \"{name}\"\nallow = [\"tcp/22\"]\nrequire_source_match = false\n\
         [client.fwknop]\nkey_base64 = \"{}\"\nhmac_key_base64 = \"{}\"\nhmac = \"sha256\"\n\n",
        b64(&k),
        b64(&h)
    )
}

fn bound_knock(i: u16, now: u64) -> Vec<u8> {
    let (k, h) = bound_keys(i);
    let key = FwknopKey::new(
        Zeroizing::new(k),
        Some(Zeroizing::new(h)),
        HmacType::Sha256,
        EncMode::Cbc,
    )
    .unwrap();
    let ssh: Access = "tcp/22".parse().unwrap();
    let req = SealRequest::access("root", now, Ipv4Addr::UNSPECIFIED, &[ssh], 0);
    seal(
        &key,
        &req,
        [i as u8; 8],
        "1234567890123456",
        DigestType::Sha256,
    )
    .unwrap()
    .into_bytes()
}

/// Issue 11 §2: an fwknop packet is tried under at most `MAX_FWKNOP_CANDIDATES` clients,
/// whatever config the engine is given (a config that loads never has more per source: the
/// config check refuses it). The last client within the bound is granted; one past it, slipped
/// in behind the config check, is never tried.
#[test]
fn at_most_the_candidate_bound_is_tried_per_packet() {
    let cap = config::MAX_FWKNOP_CANDIDATES as u16;
    let mut text = SERVER_TOML.to_string();
    for i in 0..=cap {
        text += &bound_client(&format!("c{i}"), i);
    }
    assert!(
        config::parse_str(&text, Path::new("bound.toml")).is_err(),
        "the config check let a client past the bound"
    );
    let mut within = SERVER_TOML.to_string();
    for i in 0..cap {
        within += &bound_client(&format!("c{i}"), i);
    }
    let last = parse(&format!("{SERVER_TOML}{}", bound_client("late", cap)));
    let mut c = (*parse(&within)).clone();
    c.clients.push(last.clients[0].clone());
    let now = 1_800_000_000;
    let mut e = engine(Arc::new(c), now);
    let src = packet_from(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)));
    let out = e.handle(&bound_knock(cap - 1, now), src, now);
    assert!(matches!(out.decision, Decision::Grant(_)), "{out:?}");
    let out = e.handle(&bound_knock(cap, now), src, now);
    assert_eq!(
        out.decision,
        Decision::Reject(Reason::AuthFailed),
        "{out:?}"
    );
}
