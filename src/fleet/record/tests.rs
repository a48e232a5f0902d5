use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

fn layout() -> Layout {
    Layout::new("nfknock", "prod").unwrap()
}

fn tcp(port: u16) -> Access {
    Access::new(Proto::Tcp, port).unwrap()
}

fn caps() -> Caps {
    Caps {
        protected: vec![tcp(22), Access::new(Proto::Udp, 500).unwrap()],
        max_timeout: 300,
    }
}

#[test]
fn keys_round_trip_for_both_families() {
    let l = layout();
    for addr in [
        IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
    ] {
        let g = GrantKey {
            addr,
            access: tcp(22),
        };
        let k = l.key(&g);
        assert_eq!(l.parse_key(k.as_bytes()), Ok(g), "{k}");
    }
    assert_eq!(
        l.key(&GrantKey {
            addr: "10.1.2.3".parse().unwrap(),
            access: tcp(22)
        }),
        "/nfknock/prod/grants/ipv4/10.1.2.3/tcp/22"
    );
}

#[test]
fn non_canonical_or_foreign_keys_are_refused() {
    let l = layout();
    for k in [
        "/nfknock/prod/grants/ipv4/10.1.2.3/tcp/022",
        "/nfknock/prod/grants/ipv4/10.1.2.3/tcp/+22",
        "/nfknock/prod/grants/ipv4/10.1.2.3/tcp/0",
        "/nfknock/prod/grants/ipv4/10.1.2.3/tcp/65536",
        "/nfknock/prod/grants/ipv4/10.1.2.3/icmp/22",
        "/nfknock/prod/grants/ipv6/10.1.2.3/tcp/22",
        "/nfknock/prod/grants/ipv4/2001:db8::7/tcp/22",
        "/nfknock/prod/grants/ipv6/2001:DB8::7/tcp/22",
        "/nfknock/prod/grants/ipv6/2001:db8:0::7/tcp/22",
        "/nfknock/prod/grants/ipv4/10.1.2.3/tcp/22/x",
        "/nfknock/prod/grants/ipv4/10.1.2.3/tcp",
        "/nfknock/other/grants/ipv4/10.1.2.3/tcp/22",
        "/nfknock/prod/grants/ipv4/0.0.0.0%2f0/tcp/22",
        "",
    ] {
        assert_eq!(l.parse_key(k.as_bytes()), Err(RecordError::Key), "{k}");
    }
    assert_eq!(l.parse_key(&[0xff; 40]), Err(RecordError::Key));
    assert_eq!(l.parse_key(&[b'/'; 4096]), Err(RecordError::Key));
}

#[test]
fn layout_refuses_segments_that_would_escape_the_prefix() {
    for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(65)] {
        assert!(Layout::new(bad, "prod").is_none(), "{bad:?}");
        assert!(Layout::new("nfknock", bad).is_none(), "{bad:?}");
    }
    assert_eq!(layout().fleet_prefix(), "/nfknock/prod/");
}

#[test]
fn values_round_trip_and_are_parsed_strictly() {
    let v = GrantValue::new("host-a", 30_000);
    assert_eq!(
        v.encode(),
        r#"{"v":1,"origin":"host-a","remaining_ms":30000}"#
    );
    assert_eq!(GrantValue::parse(v.encode().as_bytes()), Ok(v));
    for bad in [
        "",
        "not json",
        r#"{"v":1,"origin":"a"}"#,
        r#"{"v":1,"origin":"a","remaining_ms":-1}"#,
        r#"{"v":1,"origin":"a","remaining_ms":1,"extra":true}"#,
        r#"{"v":1,"origin":"a","remaining_ms":"5"}"#,
    ] {
        assert!(
            matches!(
                GrantValue::parse(bad.as_bytes()),
                Err(RecordError::Value(_))
            ),
            "{bad}"
        );
    }
    assert_eq!(
        GrantValue::parse(br#"{"v":2,"origin":"a","remaining_ms":1}"#),
        Err(RecordError::Version(2))
    );
    assert!(matches!(
        GrantValue::parse(br#"{"v":1,"origin":"a/../b","remaining_ms":1}"#),
        Err(RecordError::Origin(_))
    ));
    assert!(GrantValue::parse(&[b' '; 600]).is_err());
}

#[test]
fn remote_grants_are_capped_by_this_hosts_protect_and_max_timeout() {
    let g = |port| GrantKey {
        addr: "10.0.0.9".parse().unwrap(),
        access: tcp(port),
    };
    assert_eq!(check_remote(&g(22), 300_000, &caps()), Ok(()));
    assert_eq!(
        check_remote(&g(22), 300_001, &caps()),
        Err(RecordError::TooLong(300_001, 300))
    );
    assert_eq!(
        check_remote(&g(80), 1_000, &caps()),
        Err(RecordError::NotProtected(tcp(80)))
    );
    assert_eq!(check_remote(&g(22), 0, &caps()), Err(RecordError::Expired));
}

#[test]
fn lease_ttl_rounds_up_so_the_key_outlives_its_grant() {
    assert_eq!(lease_ttl_secs(1), 1);
    assert_eq!(lease_ttl_secs(999), 1);
    assert_eq!(lease_ttl_secs(1000), 1);
    assert_eq!(lease_ttl_secs(1001), 2);
    assert_eq!(lease_ttl_secs(30_000), 30);
    assert_eq!(lease_ttl_secs(0), 1);
}

#[test]
fn remaining_from_lease_never_stretches_a_grant() {
    // Published with 30 000 ms left (lease 30 s); the true time left is t, etcd reports
    // ceil(t) of the lease (lease left = grant left, no surplus). The estimate is ≤ t always.
    for t_ms in [100u64, 999, 1_000, 1_001, 15_500, 29_999, 30_000] {
        let ttl = t_ms.div_ceil(1000) as i64;
        if let Some(left) = remaining_from_lease(30_000, 30, ttl) {
            assert!(left <= t_ms, "t={t_ms} estimate={left}");
            assert!(t_ms - left <= 1_000, "t={t_ms} estimate={left}");
        }
    }
    // Published with 2 500 ms left, lease granted 3 s (rounded up) or raised to etcd's
    // minimum of 5 s: the surplus is taken off.
    assert_eq!(remaining_from_lease(2_500, 3, 3), Some(1_500));
    assert_eq!(remaining_from_lease(2_500, 5, 5), Some(1_500));
    assert_eq!(remaining_from_lease(2_500, 5, 3), None);
    // A lease granted longer than the grant (an operator's hand-written key): the surplus is
    // taken off too; nothing for a dead lease.
    assert_eq!(remaining_from_lease(10_000, 3600, 3600), Some(9_000));
    assert_eq!(remaining_from_lease(10_000, 5, 5), Some(4_000));
    assert_eq!(remaining_from_lease(10_000, 30, 0), None);
    assert_eq!(remaining_from_lease(10_000, 30, -1), None);
    assert_eq!(remaining_from_lease(10_000, 0, 5), None);
}

#[test]
fn marks_name_their_origin() {
    assert_eq!(mark("b"), "fleet:b");
    assert!(is_mark(Some("fleet:b")));
    assert!(!is_mark(Some("ssh for alice")));
    assert!(!is_mark(None));
}
