//! `[server]` and the config as a whole: the example, defaults, ranges, types, warnings.

use super::*;

#[test]
fn the_example_is_valid_and_means_what_it_says() {
    let p = plan(render_example());
    assert_eq!(p.server.port, 62201);
    assert_eq!(
        (p.server.rate_limit_v4_prefix, p.server.rate_limit_v6_prefix),
        (32, 64)
    );
    assert_eq!(p.server.protect, vec![a("tcp/22"), a("tcp/443")]);
    assert!(p.server.prefilter);
    assert_eq!(p.clients.len(), 2);
    let alice = &p.clients[0];
    assert_eq!(alice.name, "alice");
    assert!(matches!(alice.secret, Secret::Native(_)));
    assert_eq!(alice.expires_at, Some(1_801_353_600));
    let bob = &p.clients[1];
    assert_eq!(bob.require_username.as_deref(), Some("bob"));
    match &bob.secret {
        Secret::Fwknop(k) => {
            assert_eq!(k.key.len(), 32);
            assert_eq!(k.hmac_key.as_ref().map(|h| h.len()), Some(64));
            assert_eq!((k.hmac_type, k.mode), (HmacType::Sha256, EncMode::Cbc));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn defaults_fill_everything_not_given() {
    let p = plan(&native_client(""));
    let s = &p.server;
    assert_eq!(
        (s.port, s.queue, s.max_age, s.rate_limit),
        (62201, 0, 120, 20)
    );
    assert_eq!((s.rate_limit_v4_prefix, s.rate_limit_v6_prefix), (32, 64));
    assert_eq!(s.state_dir, Path::new("/var/lib/nfknock"));
    assert!(s.manage_ruleset && s.gate_forward && s.revoke_on_reload && s.prefilter);
    let c = &p.clients[0];
    assert_eq!((c.timeout, c.max_timeout), (30, 3600));
    let sources: Vec<String> = c.sources.iter().map(|n| n.to_string()).collect();
    assert_eq!(sources, ["0.0.0.0/0", "::/0"]);
    assert!(c.destinations.is_empty() && c.deny.is_empty());
    assert!(c.require_source_match);
    assert_eq!((c.require_username.as_deref(), c.expires_at), (None, None));
}

#[test]
fn a_small_max_timeout_caps_the_default_timeout() {
    let p = plan(&native_client("max_timeout = 10\n"));
    assert_eq!((p.clients[0].timeout, p.clients[0].max_timeout), (10, 10));
}

#[test]
fn fwknop_clients_build_a_full_config() {
    let text = fwknop_client("bob", "hmac = \"sha512\"\nmode = \"ctr\"\n");
    let config = parse_str(&text, Path::new(PATH)).unwrap();
    assert_eq!(config.path, Path::new(PATH));
    let c = &config.clients[0];
    match &c.credential {
        Credential::Fwknop(k) => {
            assert_eq!(k.key.as_slice(), [2u8; 32]);
            assert_eq!(
                k.hmac_key.as_deref().map(|v| v.as_slice()),
                Some(&[3u8; 64][..])
            );
            assert_eq!((k.hmac_type, k.mode), (HmacType::Sha512, EncMode::Ctr));
        }
        Credential::Native(_) => panic!("native"),
    }
    assert!(warnings(&config).is_empty(), "{:?}", warnings(&config));
}

#[test]
fn protect_defaults_to_the_sorted_union_of_every_allow() {
    let text = format!(
        "{}\n[[client]]\nname = \"b\"\nkey = \"{}\"\nallow = [\"udp/53\", \"tcp/443\", \"tcp/22\", \"tcp/22\"]\n",
        native_client(""),
        STANDARD.encode([9u8; 32])
    );
    let p = plan(&text);
    assert_eq!(
        p.server.protect,
        vec![a("tcp/22"), a("tcp/443"), a("udp/53")]
    );
    assert_eq!(
        p.clients[1].allow,
        vec![a("udp/53"), a("tcp/443"), a("tcp/22")]
    );
}

#[test]
fn explicit_protect_must_cover_every_allow() {
    let text = format!(
        "[server]\nprotect = [\"tcp/22\"]\n[[client]]\nname = \"alice\"\nkey = \"{}\"\nallow = [\"tcp/22\",\n  \"tcp/443\"]\n",
        native_key()
    );
    let ps = problems(&text);
    let p = at(&ps, "client[1].allow");
    assert_eq!(p.line, Some(7));
    assert!(
        p.message.contains("tcp/443") && p.message.contains("line 2"),
        "{}",
        p.message
    );
    assert!(
        p.message.contains("add \"tcp/443\" to `protect`"),
        "{}",
        p.message
    );

    let ok = plan(&text.replace(
        "protect = [\"tcp/22\"]",
        "protect = [\"tcp/443\", \"tcp/22\", \"udp/9\", \"tcp/22\"]",
    ));
    assert_eq!(
        ok.server.protect,
        vec![a("tcp/22"), a("tcp/443"), a("udp/9")]
    );
}

#[test]
fn unknown_keys_are_errors_with_their_line_and_the_valid_keys() {
    let text = format!(
        "[server]\nport = 62201\nprot = 1\n{}",
        native_client("timout = 5\n")
    );
    let ps = problems(&text);
    assert_eq!(ps.len(), 2, "{}", ConfigErrors(ps.clone()));
    let p = at(&ps, "server.prot");
    assert_eq!(p.line, Some(3));
    assert!(
        p.message.contains("unknown field `prot`") && p.message.contains("`port`"),
        "{}",
        p.message
    );
    assert!(p.message.contains("correct the spelling"), "{}", p.message);
    let p = at(&ps, "client[1].timout");
    assert_eq!(p.line, Some(8));
    assert!(
        p.message.contains("`timeout`") && p.message.contains("`max_timeout`"),
        "{}",
        p.message
    );

    let ps = problems(&format!(
        "{}[client.fwknop]\nkey = \"x\"\nhmac_kye = \"y\"\n",
        "[[client]]\nname = \"x\"\nallow = [\"tcp/22\"]\n"
    ));
    let p = at(&ps, "client[1].fwknop.hmac_kye");
    assert_eq!(p.line, Some(6));
    assert!(p.message.contains("`hmac_key_base64`"), "{}", p.message);

    let ps = problems(&format!("servers = 1\n{}", native_client("")));
    assert_eq!(at(&ps, "servers").line, Some(1));
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let text = format!(
        "[server]\nport = 0\nmax_age = 99999\n{}\n[[client]]\nname = \"alice\"\nkey = \"short\"\nallow = []\nsources = [\"10.0.0.0/33\"]\n",
        native_client("timeout = \"30\"\n")
    );
    let ps = problems(&text);
    let keys: Vec<_> = ps
        .iter()
        .map(|p| (p.line, p.key.clone().unwrap_or_default()))
        .collect();
    for (line, key) in [
        (2, "server.port"),
        (3, "server.max_age"),
        (8, "client[1].timeout"),
        (11, "client[2].name"),
        (12, "client[2].key"),
        (13, "client[2].allow"),
        (14, "client[2].sources[1]"),
    ] {
        assert!(
            keys.contains(&(Some(line), key.to_string())),
            "missing {key} at {line}: {keys:?}"
        );
    }
    // Sorted by line.
    let lines: Vec<_> = ps.iter().map(|p| p.line.unwrap_or(0)).collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
}

#[test]
fn ranges_are_checked_with_the_allowed_range_in_the_message() {
    for (setting, key, range) in [
        ("port = 0", "server.port", "from 1 to 65535"),
        ("port = 70000", "server.port", "from 1 to 65535"),
        ("queue = -1", "server.queue", "from 0 to 65535"),
        ("max_age = 0", "server.max_age", "from 1 to 3600"),
        ("max_age = 3601", "server.max_age", "from 1 to 3600"),
        ("rate_limit = -5", "server.rate_limit", "from 0 to"),
        (
            "rate_limit_v4_prefix = 0",
            "server.rate_limit_v4_prefix",
            "from 1 to 32",
        ),
        (
            "rate_limit_v4_prefix = 33",
            "server.rate_limit_v4_prefix",
            "from 1 to 32",
        ),
        (
            "rate_limit_v6_prefix = 0",
            "server.rate_limit_v6_prefix",
            "from 1 to 128",
        ),
        (
            "rate_limit_v6_prefix = 129",
            "server.rate_limit_v6_prefix",
            "from 1 to 128",
        ),
    ] {
        let ps = problems(&format!("[server]\n{setting}\n{}", native_client("")));
        let p = at(&ps, key);
        assert_eq!(p.line, Some(2), "{setting}");
        assert!(p.message.contains(range), "{setting}: {}", p.message);
    }
    let ps = problems(&native_client("max_timeout = 604801\n"));
    assert!(at(&ps, "client[1].max_timeout")
        .message
        .contains("from 1 to 604800"));
    let ps = problems(&native_client("timeout = 0\n"));
    assert!(at(&ps, "client[1].timeout").message.contains("from 1"));
    let ps = problems(&format!(
        "[server]\nstate_dir = \"var/lib\"\n{}",
        native_client("")
    ));
    assert!(at(&ps, "server.state_dir").message.contains("absolute"));
}

#[test]
fn wrong_types_say_what_the_key_must_be() {
    let ps = problems(&format!(
        "[server]\nport = \"62201\"\n{}",
        native_client("")
    ));
    let p = at(&ps, "server.port");
    assert_eq!(p.line, Some(2));
    assert!(
        p.message.contains("invalid type") && p.message.contains("e.g. `port = 62201`"),
        "{}",
        p.message
    );
}

#[test]
fn timeout_may_not_exceed_max_timeout() {
    let ps = problems(&native_client("timeout = 600\nmax_timeout = 60\n"));
    let p = at(&ps, "client[1].timeout");
    assert_eq!(p.line, Some(5));
    assert!(
        p.message.contains("more than max_timeout = 60"),
        "{}",
        p.message
    );
}

#[test]
fn revoke_on_reload_is_a_switch() {
    let p = plan(&format!(
        "[server]\nrevoke_on_reload = false\n{}",
        native_client("")
    ));
    assert!(!p.server.revoke_on_reload);
    let ps = problems(&format!(
        "[server]\nrevoke_on_reload = \"no\"\n{}",
        native_client("")
    ));
    let shown = ConfigErrors(ps).to_string();
    assert!(
        shown.contains("revoke_on_reload") && shown.contains("`true` or `false`"),
        "{shown}"
    );
}

#[test]
fn problems_print_as_path_line_key_message() {
    let ps = problems(&format!("[server]\nport = 0\n{}", native_client("")));
    let shown = ps[0].to_string();
    assert!(
        shown.starts_with("/etc/nfknock/nfknock.toml:2: `server.port`: 0 is out of range"),
        "{shown}"
    );
}

#[test]
fn warnings_name_risky_but_legal_settings() {
    let text = format!(
        "[server]\nrate_limit = 0\nprotect = [\"tcp/22\", \"udp/62201\"]\n{}",
        fwknop_client("b", "hmac = \"md5\"\nmode = \"ecb\"\n")
            .replace("allow = [\"tcp/22\"]", "allow = [\"tcp/22\"]\ndeny = [\"tcp/22\"]\nrequire_source_match = false\nexpires = \"2000-01-01\"")
    );
    let config = parse_str(&text, Path::new(PATH)).unwrap();
    let w = warnings(&config).join("\n");
    for needle in [
        "rate_limit = 0",
        "udp/62201",
        "\"ecb\"",
        "weak digest",
        "require_source_match = false",
        "both `allow` and `deny`",
    ] {
        assert!(w.contains(needle), "{needle} not in\n{w}");
    }
    assert!(!w.contains("expired"));
    let w = warnings_at(&config, 2_000_000_000).join("\n");
    assert!(w.contains("client `b` expired"), "{w}");
    assert_eq!(config.clients[0].deny, vec![a("tcp/22")]);
    assert_eq!(config.clients[0].allow[0].proto, Proto::Tcp);
}

/// Issue item 7: the knock rate limit's unit of "source" is a prefix per family.
#[test]
fn rate_limit_prefixes_are_read_and_a_per_address_ipv6_meter_is_warned_about() {
    let p = plan(&format!(
        "[server]\nrate_limit_v4_prefix = 24\nrate_limit_v6_prefix = 48\n{}",
        native_client("")
    ));
    assert_eq!(
        (p.server.rate_limit_v4_prefix, p.server.rate_limit_v6_prefix),
        (24, 48)
    );
    let text = format!(
        "[server]\nrate_limit_v6_prefix = 128\n{}",
        fwknop_client("b", "")
    );
    let config = parse_str(&text, Path::new(PATH)).unwrap();
    let w = warnings(&config).join("\n");
    assert!(
        w.contains("rate_limit_v6_prefix = 128") && w.contains("`rate_limit_v6_prefix = 64`"),
        "{w}"
    );
    // With the limit off the prefix does nothing: no warning about it.
    let config = parse_str(
        &text.replace("[server]\n", "[server]\nrate_limit = 0\n"),
        Path::new(PATH),
    )
    .unwrap();
    assert!(!warnings(&config)
        .join("\n")
        .contains("rate_limit_v6_prefix"));
}

/// `[server] backend` picks where grants are written: `nftables` (the default) or `ipset`;
/// anything else is refused on its line, naming the choices.
#[test]
fn backend_is_nftables_by_default_and_a_wrong_one_names_the_choices() {
    assert_eq!(plan(&native_client("")).server.backend, Backend::Nftables);
    let p = plan(&format!(
        "[server]\nbackend = \"nftables\"\n{}",
        native_client("")
    ));
    assert_eq!(p.server.backend, Backend::Nftables);
    let p = plan(&format!(
        "[server]\nbackend = \"ipset\"\n{}",
        native_client("")
    ));
    assert_eq!(p.server.backend, Backend::Ipset);
    assert_eq!(p.server.ipset, IpsetNames::default());
    let ps = problems(&format!(
        "[server]\nport = 62201\nbackend = \"iptables\"\n{}",
        native_client("")
    ));
    let p = at(&ps, "server.backend");
    assert_eq!(p.line, Some(3));
    assert!(
        p.message.contains("iptables")
            && p.message.contains("`nftables`")
            && p.message.contains("`ipset`"),
        "{}",
        p.message
    );
    let ps = problems(&format!("[server]\nbackend = 1\n{}", native_client("")));
    let p = at(&ps, "server.backend");
    assert!(
        p.message.contains("backend = \"nftables\"") && p.message.contains("backend = \"ipset\""),
        "{}",
        p.message
    );
}

/// `ipset_v4` / `ipset_v6` name the ipsets of `backend = "ipset"`: taken as given when they
/// are ipset names (≤ 31 printable bytes, no space, no leading `-`), refused on their line
/// otherwise, refused when both name one set, and refused with another backend (where they
/// would do nothing).
#[test]
fn ipset_names_are_checked_and_only_go_with_the_ipset_backend() {
    let cfg = |lines: &str| {
        format!(
            "[server]\nbackend = \"ipset\"\n{lines}{}",
            native_client("")
        )
    };
    let p = plan(&cfg("ipset_v4 = \"grants4\"\nipset_v6 = \"grants6\"\n"));
    assert_eq!(
        p.server.ipset,
        IpsetNames {
            v4: "grants4".into(),
            v6: "grants6".into()
        }
    );
    let long = "x".repeat(32);
    for (bad, why) in [
        ("", "is empty"),
        (long.as_str(), "longer than the kernel's 31 bytes"),
        ("my set", "holds a space"),
        ("-set", "starts with `-`"),
        ("s\\u00e9t", "non-ASCII"),
    ] {
        let ps = problems(&cfg(&format!("ipset_v4 = \"{bad}\"\n")));
        let p = at(&ps, "server.ipset_v4");
        assert_eq!(p.line, Some(3), "{bad:?}");
        assert!(
            p.message.contains(why) && p.message.contains("ipset_v4 = \"nfknock_allow_v4\""),
            "{bad:?}: {}",
            p.message
        );
    }
    assert_eq!(
        plan(&cfg(&format!("ipset_v4 = \"{}\"\n", "x".repeat(31))))
            .server
            .ipset
            .v4
            .len(),
        31
    );
    let ps = problems(&cfg("ipset_v4 = \"same\"\nipset_v6 = \"same\"\n"));
    let p = at(&ps, "server.ipset_v6");
    assert!(
        p.message.contains("each family needs its own set"),
        "{}",
        p.message
    );
    // The nftables table's forward gate does not exist with this backend.
    let ps = problems(&cfg("gate_forward = true\n"));
    assert!(
        at(&ps, "server.gate_forward")
            .message
            .contains("does not install"),
        "{ps:?}"
    );
    assert!(!plan(&cfg("gate_forward = false\n")).server.gate_forward);
    let ps = problems(&format!(
        "[server]\nipset_v6 = \"g6\"\n{}",
        native_client("")
    ));
    let p = at(&ps, "server.ipset_v6");
    assert_eq!(p.line, Some(2));
    assert!(
        p.message.contains("only with `backend = \"ipset\"`") && p.message.contains("`nftables`"),
        "{}",
        p.message
    );
}

/// Issue 12 §4: `[server] metrics_file` is off unless set, and must be an absolute path to a
/// `.prom` file (node_exporter's textfile collector reads only those).
#[test]
fn metrics_file_is_off_by_default_and_an_absolute_prom_path() {
    assert_eq!(plan(&native_client("")).server.metrics_file, None);
    let p = plan(&format!(
        "[server]\nmetrics_file = \"{}\"\n{}",
        crate::config::NODE_EXPORTER_METRICS_FILE,
        native_client("")
    ));
    assert_eq!(
        p.server.metrics_file.as_deref(),
        Some(Path::new("/var/lib/prometheus/node-exporter/nfknock.prom"))
    );
    for bad in ["nfknock.prom", "/var/lib/nfknock/metrics.txt", "/"] {
        let ps = problems(&format!(
            "[server]\nmetrics_file = \"{bad}\"\n{}",
            native_client("")
        ));
        let m = &at(&ps, "server.metrics_file").message;
        assert!(
            m.contains("metrics_file = \"/var/lib/prometheus/node-exporter/nfknock.prom\""),
            "{m}"
        );
    }
}

/// Issue 11: `prefilter = false` turns the kernel's junk filter off (clock-skew debugging);
/// the ipset backend has no knock chain to filter in: off there, and `true` is refused.
#[test]
fn prefilter_can_be_turned_off() {
    let p = plan(&format!(
        "[server]\nprefilter = false\n{}",
        native_client("")
    ));
    assert!(!p.server.prefilter);
    let p = plan(&format!(
        "[server]\nbackend = \"ipset\"\n{}",
        native_client("")
    ));
    assert!(!p.server.prefilter);
    let ps = problems(&format!(
        "[server]\nbackend = \"ipset\"\nprefilter = true\n{}",
        native_client("")
    ));
    assert!(at(&ps, "server.prefilter")
        .message
        .contains("backend = \"nftables\""));
}

/// Issue 11 §4: `queue = "0-3"` is a range of queues, one worker each; a number is one queue.
#[test]
fn queue_takes_a_number_or_a_range_of_queues() {
    for (setting, first, count) in [
        ("queue = 5", 5, 1),
        ("queue = \"5\"", 5, 1),
        ("queue = \"0-3\"", 0, 4),
        ("queue = \"7-8\"", 7, 2),
        ("queue = \"65534-65535\"", 65534, 2),
    ] {
        let p = plan(&format!("[server]\n{setting}\n{}", native_client("")));
        assert_eq!(
            (p.server.queue, p.server.queue_count),
            (first, count),
            "{setting}"
        );
    }
    for (setting, says) in [
        ("queue = \"3-1\"", "first"),
        ("queue = \"0-70000\"", "from 0 to 65535"),
        ("queue = \"a-b\"", "`queue = \"0-3\"`"),
        ("queue = \"0-\"", "`queue = \"0-3\"`"),
        ("queue = \"0-64\"", "at most 64"),
        ("queue = true", "queue"),
    ] {
        let ps = problems(&format!("[server]\n{setting}\n{}", native_client("")));
        let p = at(&ps, "server.queue");
        assert_eq!(p.line, Some(2), "{setting}");
        assert!(p.message.contains(says), "{setting}: {}", p.message);
    }
}
