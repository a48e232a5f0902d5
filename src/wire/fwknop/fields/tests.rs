//! Unit tests of `wire::fwknop::fields`.

use super::*;

const R: &str = "5292463341042875";

fn enc(s: &str) -> String {
    b64::encode_string(s.as_bytes())
}

fn pt(user: &str, t: &str, msg: &str, rest: &[&str]) -> String {
    let mut s = format!("{R}:{}:1795566850:3.0.0:{t}:{}", enc(user), enc(msg));
    for r in rest {
        s.push(':');
        s.push_str(r);
    }
    s
}

#[test]
fn parses_the_spec_example() {
    let m = parse("5292463341042875:cm9vdA:1795566850:3.0.0:1:MTAuMS4yLjMsdGNwLzIy").unwrap();
    assert_eq!(m.rand_value, R);
    assert_eq!(m.username, "root");
    assert_eq!(m.timestamp, 1795566850);
    assert_eq!(m.version, "3.0.0");
    assert_eq!(m.message_type, 1);
    assert_eq!(m.message, "10.1.2.3,tcp/22");
    assert_eq!(m.allow_ip, Ipv4Addr::new(10, 1, 2, 3));
    assert_eq!(m.access, vec![Access::new(Proto::Tcp, 22).unwrap()]);
    assert_eq!(
        (m.nat_access, m.server_auth, m.client_timeout),
        (None, None, 0)
    );
}

#[test]
fn field_count_follows_the_message_type() {
    let auth = enc("crypt,pw");
    let nat = enc("192.168.10.2,22");
    // type 1: optional server auth only
    assert!(parse(&pt("root", "1", "1.2.3.4,tcp/22", &[])).is_ok());
    let m = parse(&pt("root", "1", "1.2.3.4,tcp/22", &[&auth])).unwrap();
    assert_eq!(m.server_auth.as_deref(), Some("crypt,pw"));
    assert!(parse(&pt("root", "1", "1.2.3.4,tcp/22", &[&auth, "30"])).is_err());
    // type 2/5: nat required
    for t in ["2", "5"] {
        assert!(parse(&pt("root", t, "1.2.3.4,tcp/22", &[])).is_err());
        let m = parse(&pt("root", t, "1.2.3.4,tcp/22", &[&nat])).unwrap();
        assert_eq!(m.nat_access.as_deref(), Some("192.168.10.2,22"));
        let m = parse(&pt("root", t, "1.2.3.4,tcp/22", &[&nat, &auth])).unwrap();
        assert!(m.server_auth.is_some());
    }
    // type 3: timeout required, auth optional before it
    assert!(parse(&pt("root", "3", "1.2.3.4,tcp/22", &[])).is_err());
    assert_eq!(
        parse(&pt("root", "3", "1.2.3.4,tcp/22", &["30"]))
            .unwrap()
            .client_timeout,
        30
    );
    let m = parse(&pt("root", "3", "1.2.3.4,tcp/22", &[&auth, "45"])).unwrap();
    assert_eq!(
        (m.client_timeout, m.server_auth.as_deref()),
        (45, Some("crypt,pw"))
    );
    // type 4/6: nat and timeout
    for t in ["4", "6"] {
        assert!(parse(&pt("root", t, "1.2.3.4,tcp/22", &[&nat])).is_err());
        let m = parse(&pt("root", t, "1.2.3.4,tcp/22", &[&nat, "60"])).unwrap();
        assert_eq!((m.client_timeout, m.nat_access.is_some()), (60, true));
        assert!(parse(&pt("root", t, "1.2.3.4,tcp/22", &[&nat, &auth, "60"])).is_ok());
        assert!(parse(&pt("root", t, "1.2.3.4,tcp/22", &[&nat, &auth, "60", "1"])).is_err());
    }
    // type 0: command, raw message kept, no access list
    let m = parse(&pt("root", "0", "10.1.2.3,echo hello", &[])).unwrap();
    assert_eq!(
        (m.message.as_str(), m.access.len()),
        ("10.1.2.3,echo hello", 0)
    );
    assert_eq!(m.allow_ip, Ipv4Addr::new(10, 1, 2, 3));
    // types out of range
    for t in ["7", "99", "-1", "", "001", "+1", "a"] {
        assert!(
            parse(&pt("root", t, "1.2.3.4,tcp/22", &[])).is_err(),
            "type {t:?}"
        );
    }
    assert!(
        parse(&pt("root", "1", "1.2.3.4,tcp/22", &[""])).is_err(),
        "empty field"
    );
}

#[test]
fn access_message_grammar() {
    let ok = |m: &str| parse(&pt("root", "1", m, &[]));
    let m = ok("10.1.2.3,tcp/22,udp/53,tcp/65535").unwrap();
    assert_eq!(m.access.len(), 3);
    assert_eq!(
        ok("0.0.0.0,tcp/022").unwrap().access[0].port,
        22,
        "leading zero like strtol"
    );
    for bad in [
        "10.1.2.3",
        "10.1.2.3,",
        "10.1.2.3,tcp/22,",
        "10.1.2.3,TCP/22",
        "10.1.2.3,tcp/0",
        "10.1.2.3,icmp/0",
        "10.1.2.3,none/0",
        "10.1.2.3,tcp/65536",
        "10.1.2.3,tcp/123456",
        "10.1.2.3,tcp/",
        "10.1.2.3,tcp22",
        "010.1.2.3,tcp/22",
        "10.1.2,tcp/22",
        "10.1.2.3.4,tcp/22",
        "256.1.2.3,tcp/22",
        "10.1.2.3 ,tcp/22",
        "host,tcp/22",
        ",tcp/22",
        "10.1.2.3,tcp/22 ",
        "10.1.2.3,tcp/-1",
        "10.1.2.3,tcp/+22",
    ] {
        assert!(ok(bad).is_err(), "{bad}");
    }
}

#[test]
fn nat_grammar() {
    assert_eq!(parse_nat("192.168.10.2,22").unwrap(), ("192.168.10.2", 22));
    assert_eq!(
        parse_nat("internal.example,2222").unwrap(),
        ("internal.example", 2222)
    );
    for bad in [
        "192.168.10.2",
        "192.168.10.2,22,",
        "a,b,22",
        ",22",
        "host,0",
        "host,65536",
        "ho st,22",
        "ho/st,22",
        "ho?st,22",
        "ho\"st,22",
        "ho'st,22",
        "ho\\st,22",
        "host,",
        &format!("{},22", "h".repeat(71)),
    ] {
        assert!(parse_nat(bad).is_err(), "{bad}");
    }
    assert!(parse_nat(&format!("{},22", "h".repeat(70))).is_ok());
}

#[test]
fn username_rule() {
    for good in [
        "root",
        "u0_a54",
        "NO_USER",
        "Administrator",
        "a b",
        "a.b-c~",
        "é".repeat(0).as_str(),
    ] {
        if good.is_empty() {
            continue;
        }
        assert!(valid_username(good.as_bytes()), "{good}");
    }
    for bad in [
        "", "a\"b", "a/b", "a\\b", "a[b", "a]b", "a:b", "a;b", "a|b", "a=b", "a,b", "a+b", "a*b",
        "a?b", "a<b", "a>b", "a\tb", "é", "a\x7fb",
    ] {
        assert!(!valid_username(bad.as_bytes()), "{bad:?}");
    }
    // base64 username field: 1..=64 chars
    assert!(parse(&pt(&"u".repeat(48), "1", "1.2.3.4,tcp/22", &[])).is_ok());
    assert!(parse(&pt(&"u".repeat(49), "1", "1.2.3.4,tcp/22", &[])).is_err());
    assert!(parse(&format!("{R}::1:3.0.0:1:{}", enc("1.2.3.4,tcp/22"))).is_err());
    // decoded NUL refused
    assert!(parse(&format!(
        "{R}:{}:1:3.0.0:1:{}",
        b64::encode_string(b"ro\0t"),
        enc("1.2.3.4,tcp/22")
    ))
    .is_err());
}

#[test]
fn timestamp_version_rand_limits() {
    let msg = enc("1.2.3.4,tcp/22");
    let p = |r: &str, ts: &str, v: &str| parse(&format!("{r}:cm9vdA:{ts}:{v}:1:{msg}"));
    assert_eq!(
        p(R, "999999999999", "3.0.0").unwrap().timestamp,
        999_999_999_999
    );
    assert_eq!(
        p(R, "4294967296", "3.0.0").unwrap().timestamp,
        4_294_967_296,
        "past 2106"
    );
    for ts in ["", "1234567890123", "-1", "+1", " 1", "1a", "0x10"] {
        assert!(p(R, ts, "3.0.0").is_err(), "ts {ts:?}");
    }
    assert!(p(R, "1", "12345678").is_ok());
    assert!(p(R, "1", "123456789").is_err());
    assert!(p(R, "1", "").is_err());
    assert!(p("529246334104287", "1", "3.0.0").is_err());
    assert!(p("52924633410428755", "1", "3.0.0").is_err());
    assert!(p("529246334104287a", "1", "3.0.0").is_err());
}

#[test]
fn client_timeout_limits() {
    let p = |t: &str| parse(&pt("root", "3", "1.2.3.4,tcp/22", &[t]));
    assert_eq!(p("65536").unwrap().client_timeout, 65536);
    assert_eq!(p("0").unwrap().client_timeout, 0);
    assert_eq!(p("00030").unwrap().client_timeout, 30);
    for bad in [
        "65537",
        "99999999999999999999",
        "-1",
        "3a",
        " 3",
        &"9".repeat(300),
    ] {
        assert!(p(bad).is_err(), "{bad}");
    }
}

/// A base64 field of one character decodes to nothing in libfko (a lone final character
/// carries no byte): an empty message or NAT field is refused by name, not read as "".
#[test]
fn a_field_that_decodes_to_nothing_is_refused() {
    let one_char = |t: &str, rest: &[&str]| {
        let mut s = format!("{R}:{}:1795566850:3.0.0:{t}:A", enc("root"));
        for r in rest {
            s.push(':');
            s.push_str(r);
        }
        parse(&s)
    };
    assert_eq!(
        one_char("1", &[]),
        Err(FwknopError::Malformed("message field length"))
    );
    assert_eq!(
        parse(&pt("root", "2", "1.2.3.4,tcp/22", &["Q"])),
        Err(FwknopError::Malformed("NAT field length"))
    );
}

/// The server-auth field is limited like the message (`MAX_SPA_MESSAGE_SIZE`); it is
/// kept only for the log.
#[test]
fn server_auth_field_length_limit() {
    let field = |n: usize| "QUJD".repeat(n / 4);
    let m = parse(&pt("root", "1", "1.2.3.4,tcp/22", &[&field(MAX_FIELD_B64)])).unwrap();
    assert_eq!(m.server_auth.map(|a| a.len()), Some(MAX_FIELD_RAW));
    assert_eq!(
        parse(&pt(
            "root",
            "1",
            "1.2.3.4,tcp/22",
            &[&field(MAX_FIELD_B64 + 4)]
        )),
        Err(FwknopError::Malformed("server-auth field length"))
    );
    assert_eq!(
        parse(&pt("root", "1", "1.2.3.4,tcp/22", &["QU*D"])),
        Err(FwknopError::Malformed("server-auth field is not base64"))
    );
}

/// `build` writes only what `parse` reads back as the same request. A version holding
/// `:` shifts the fields: `2:3:<an access message>` makes the packet a type-3 knock for
/// 1.2.3.4 (the real message, `㎸`, encodes as the digits `4464`, a valid client timeout).
/// Without the round-trip check, the encoder would seal a request nobody asked for.
#[test]
fn build_refuses_a_request_that_does_not_survive_encoding() {
    assert_eq!(enc("㎸"), "4464");
    let req = SealRequest {
        version: format!("2:3:{}", enc("1.2.3.4,tcp/22")),
        message: "㎸".into(),
        ..SealRequest::access("root", 42, Ipv4Addr::new(10, 1, 2, 3), &[], 0)
    };
    assert_eq!(
        build(&req, R),
        Err(FwknopError::Malformed("request does not survive encoding"))
    );
}

#[test]
fn field_length_limits() {
    // message: b64 field of 256 chars is the limit (192 raw bytes)
    let long_cmd = format!("1.2.3.4,{}", "x".repeat(192 - 8));
    assert!(parse(&pt("root", "0", &long_cmd, &[])).is_ok());
    let too_long = format!("1.2.3.4,{}", "x".repeat(193 - 8));
    assert!(parse(&pt("root", "0", &too_long, &[])).is_err());
    assert!(
        parse(&format!("{R}:cm9vdA:1:3.0.0:1")).is_err(),
        "too few fields"
    );
    assert!(parse(&format!(
        "{R}:cm9vdA:1:3.0.0:1:{}:a:b:c:d",
        enc("1.2.3.4,tcp/22")
    ))
    .is_err());
    // control characters in a command are refused
    assert!(parse(&pt("root", "0", "1.2.3.4,rm\n-rf", &[])).is_err());
    assert!(parse(&pt("root", "0", "1.2.3.4,", &[])).is_err());
}
