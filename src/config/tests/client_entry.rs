//! One `[[client]]`: name, credential, access lists, networks, user name, expiry.

use super::*;

#[test]
fn client_names_are_required_valid_and_unique() {
    let two = format!(
        "{}{}",
        native_client(""),
        native_client("").replace(&native_key(), &STANDARD.encode([5u8; 32]))
    );
    let ps = problems(&two);
    let p = at(&ps, "client[2].name");
    assert_eq!(p.line, Some(6));
    assert!(p.message.contains("line 2"), "{}", p.message);

    let ps = problems(&native_client("").replace("alice", "al ice"));
    assert!(at(&ps, "client[1].name")
        .message
        .contains("letters, digits"));
    let ps = problems(&native_client("").replace("alice", &"a".repeat(65)));
    assert!(at(&ps, "client[1].name")
        .message
        .contains("not a valid client name"));
    let ps = problems(&native_client("").replace("name = \"alice\"\n", ""));
    let p = at(&ps, "client[1].name");
    assert_eq!(p.line, Some(1));
    assert!(p.message.contains("add e.g. `name = \"alice\"`"));
}

#[test]
fn allow_is_required_and_not_empty() {
    let ps = problems(&native_client("").replace("allow = [\"tcp/22\"]\n", ""));
    assert!(at(&ps, "client[1].allow")
        .message
        .contains("has no `allow`"));
    let ps = problems(&native_client("").replace("[\"tcp/22\"]", "[]"));
    let p = at(&ps, "client[1].allow");
    assert_eq!(p.line, Some(4));
    assert!(p.message.contains("is empty"));
}

#[test]
fn bad_access_strings_are_reported_item_by_item() {
    let text = native_client("deny = [\"tcp/22\",\n  \"icmp/0\",\n  \"tcp/0\"]\n");
    let ps = problems(&text);
    let p = at(&ps, "client[1].deny[2]");
    assert_eq!(p.line, Some(6));
    assert!(
        p.message.contains("`icmp/0`") && p.message.contains("`tcp` or `udp`"),
        "{}",
        p.message
    );
    assert_eq!(at(&ps, "client[1].deny[3]").line, Some(7));
}

#[test]
fn networks_are_cidr_or_addresses() {
    let p = plan(&native_client(
        "sources = [\"10.0.0.0/8\", \"2001:db8::1\"]\ndestinations = [\"192.0.2.1\"]\n",
    ));
    let c = &p.clients[0];
    assert_eq!(
        c.sources.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        ["10.0.0.0/8", "2001:db8::1/128"]
    );
    assert_eq!(c.destinations[0].to_string(), "192.0.2.1/32");

    let ps = problems(&native_client("sources = [\"10.1.2.3/24\", \"nope\"]\n"));
    assert!(at(&ps, "client[1].sources[1]")
        .message
        .contains("host bits"));
    assert!(at(&ps, "client[1].sources[2]")
        .message
        .contains("neither an address"));
    let ps = problems(&native_client("sources = []\n"));
    assert!(at(&ps, "client[1].sources")
        .message
        .contains("no knock could ever be accepted"));
}

#[test]
fn exactly_one_credential() {
    let ps = problems("[[client]]\nname = \"a\"\nallow = [\"tcp/22\"]\n");
    let p = at(&ps, "client[1].key");
    assert!(
        p.message.contains("no key") && p.message.contains("nfknock keygen"),
        "{}",
        p.message
    );

    let ps = problems(&native_client("key_file = \"/x\"\n"));
    let p = at(&ps, "client[1].key_file");
    assert_eq!(p.line, Some(5));
    assert!(p.message.contains("exactly one of"), "{}", p.message);

    let ps = problems(&native_client(&format!(
        "[client.fwknop]\nkey_base64 = \"{}\"\nno_hmac = true\n",
        fw_key()
    )));
    assert!(at(&ps, "client[1].fwknop")
        .message
        .contains("already has `key`"));
}

#[test]
fn native_keys_are_32_bytes_of_base64() {
    let ps = problems(&native_client("").replace(&native_key(), &STANDARD.encode([1u8; 16])));
    let p = at(&ps, "client[1].key");
    assert_eq!(p.line, Some(3));
    assert!(
        p.message.contains("16 bytes") && p.message.contains("exactly 32"),
        "{}",
        p.message
    );
    let ps = problems(&native_client("").replace(&native_key(), "!!!"));
    assert!(at(&ps, "client[1].key")
        .message
        .contains("not valid base64"));
    // No padding is fine.
    let p = plan(&native_client("").replace(&native_key(), native_key().trim_end_matches('=')));
    match &p.clients[0].secret {
        Secret::Native(b) => assert_eq!(***b, [1u8; 32]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn require_username_is_for_fwknop_clients_only() {
    let ps = problems(&native_client("require_username = \"bob\"\n"));
    let p = at(&ps, "client[1].require_username");
    assert_eq!(p.line, Some(5));
    assert!(
        p.message.contains("only to fwknop clients"),
        "{}",
        p.message
    );
    let text = fwknop_client("b", "").replace(
        "[client.fwknop]",
        "require_username = \"bob\"\n[client.fwknop]",
    );
    assert_eq!(
        plan(&text).clients[0].require_username.as_deref(),
        Some("bob")
    );
}

#[test]
fn expiry_as_date_string_toml_date_or_unix_time() {
    assert_eq!(
        plan(&native_client("expires = \"2027-01-31\"\n")).clients[0].expires_at,
        Some(1_801_353_600)
    );
    assert_eq!(
        plan(&native_client("expires = 2027-01-31\n")).clients[0].expires_at,
        Some(1_801_353_600)
    );
    assert_eq!(
        plan(&native_client("expires_at = 1801353600\n")).clients[0].expires_at,
        Some(1_801_353_600)
    );

    for bad in [
        "expires = \"2027-02-30\"",
        "expires = \"31.01.2027\"",
        "expires = 2027-01-31T10:00:00Z",
        "expires = 5",
    ] {
        let ps = problems(&native_client(&format!("{bad}\n")));
        let p = at(&ps, "client[1].expires");
        assert_eq!(p.line, Some(5), "{bad}");
        assert!(
            p.message.contains("expires = \"2027-01-31\""),
            "{bad}: {}",
            p.message
        );
    }
    let ps = problems(&native_client("expires = \"2027-01-31\"\nexpires_at = 1\n"));
    assert!(at(&ps, "client[1].expires_at").message.contains("not both"));
    let ps = problems(&native_client("expires_at = -1\n"));
    assert!(at(&ps, "client[1].expires_at")
        .message
        .contains("not negative"));
}

/// A value of the wrong type names what the key must be, with an example, for every key of a
/// `[[client]]` and of its `[client.fwknop]`.
#[test]
fn a_wrong_type_in_a_client_says_what_each_key_must_be() {
    let cases: &[(&str, &str, &str)] = &[
        ("name", "7", "a quoted name of 1 to 64 letters"),
        (
            "key",
            "7",
            "the quoted base64 line printed by `nfknock keygen`",
        ),
        (
            "key_file",
            "7",
            "e.g. `key_file = \"/etc/nfknock/alice.key\"`",
        ),
        ("allow", "7", "a list of accesses"),
        ("deny", "7", "a list of accesses"),
        ("timeout", "\"x\"", "a number of seconds"),
        ("max_timeout", "\"x\"", "a number of seconds"),
        ("sources", "7", "a list of quoted networks or addresses"),
        (
            "destinations",
            "7",
            "a list of quoted networks or addresses",
        ),
        ("require_source_match", "7", "`true` or `false`"),
        ("require_username", "7", "e.g. `require_username = \"bob\"`"),
        ("expires_at", "\"x\"", "a Unix time"),
    ];
    for (key, value, hint) in cases {
        let text = format!("[[client]]\n{key} = {value}\n");
        let ps = problems(&text);
        let p = at(&ps, &format!("client[1].{key}"));
        assert!(
            p.message.contains(&format!("; `{key}` must be ")) && p.message.contains(hint),
            "{key}: {}",
            p.message
        );
        assert_eq!(p.line, Some(2), "{key}");
    }
    let ps = problems("[[client]]\nfwknop = 7\n");
    assert_eq!(
        at(&ps, "client[1].fwknop").message,
        "must be a table, found integer; write it as a `[client.fwknop]` section"
    );
    let cases: &[(&str, &str, &str)] = &[
        ("key_base64", "7", "printed by `fwknop --key-gen`"),
        ("hmac_key_base64", "7", "printed by `fwknop --key-gen`"),
        ("key", "7", "a quoted passphrase"),
        ("hmac_key", "7", "a quoted passphrase"),
        ("key_file", "7", "a file holding one line of base64"),
        ("hmac_key_file", "7", "a file holding one line of base64"),
        ("hmac", "7", "one of \"md5\", \"sha1\""),
        ("mode", "7", "one of \"cbc\", \"ctr\""),
        ("no_hmac", "7", "`true` or `false`"),
    ];
    for (key, value, hint) in cases {
        let text = format!(
            "[[client]]\nname = \"bob\"\nallow = [\"tcp/22\"]\n[client.fwknop]\n{key} = {value}\n"
        );
        let ps = problems(&text);
        let p = at(&ps, &format!("client[1].fwknop.{key}"));
        assert!(
            p.message.contains(&format!("; `{key}` must be ")) && p.message.contains(hint),
            "{key}: {}",
            p.message
        );
        assert_eq!(p.line, Some(5), "{key}");
    }
}

/// `[client]` (one bracket) or `client = 5` are not a list of clients: the fix is `[[client]]`.
#[test]
fn clients_must_be_an_array_of_tables() {
    let ps = problems("[client]\nname = \"alice\"\n");
    let p = at(&ps, "client");
    assert_eq!(
        p.message,
        "`[client]` is a single table; write `[[client]]` (two brackets) before each client"
    );
    assert_eq!(p.line, Some(1));
    let ps = problems("client = 5\n");
    assert_eq!(
        at(&ps, "client").message,
        "must be a list of tables, found integer; write `[[client]]` before each client"
    );
}

/// A client without a (valid) name is still named, by its place, when `protect` lacks its port.
#[test]
fn an_unnamed_client_outside_protect_is_named_by_its_place() {
    let text = format!(
        "[server]\nprotect = [\"tcp/22\"]\n{}",
        native_client("")
            .replace("name = \"alice\"\n", "")
            .replace("tcp/22", "tcp/443")
    );
    let ps = problems(&text);
    assert!(
        at(&ps, "client[1].allow").message.starts_with(
            "client[1] may be granted tcp/443 but `[server] protect` (line 2) does not include it"
        ),
        "{}",
        at(&ps, "client[1].allow").message
    );
}

/// A secret never reaches a log through `{:?}`.
#[test]
fn a_native_secret_prints_redacted() {
    let s = Secret::Native(Box::new(zeroize::Zeroizing::new([9u8; 32])));
    assert_eq!(format!("{s:?}"), "Native(<redacted>)");
}

/// A `require_username` no fwknop message could carry is refused.
#[test]
fn require_username_must_be_a_name_a_knock_can_carry() {
    for bad in ["", "bo:b"] {
        let text = fwknop_client("b", "").replace(
            "[client.fwknop]",
            &format!("require_username = \"{bad}\"\n[client.fwknop]"),
        );
        let ps = problems(&text);
        let p = at(&ps, "client[1].require_username");
        assert_eq!(p.message, "must be a non-empty user name without `:`");
        assert_eq!(p.line, Some(4));
    }
}

/// `n` fwknop clients named `fw0`.., each with `sources(i)` (a TOML list's inside).
fn fwknop_clients(n: usize, sources: impl Fn(usize) -> String) -> String {
    (0..n)
        .map(|i| {
            format!(
                "[[client]]\nname = \"fw{i}\"\nallow = [\"tcp/22\"]\nsources = [{}]\n[client.fwknop]\nkey_base64 = \"{}\"\nhmac_key_base64 = \"{}\"\n\n",
                sources(i),
                fw_key(),
                fw_hmac()
            )
        })
        .collect()
}

/// Issue 11 §2: an fwknop packet is tried under at most `MAX_FWKNOP_CANDIDATES` clients. A
/// client that would come later for some source address is refused by name (never loaded
/// unreachable), also when the crowd is of narrower networks inside its own `sources`; many
/// fwknop clients with their own networks are fine.
#[test]
fn more_fwknop_clients_per_source_than_are_tried_are_refused_by_name() {
    let cap = crate::config::MAX_FWKNOP_CANDIDATES;
    let all = |_| "\"0.0.0.0/0\", \"::/0\"".to_string();
    assert_eq!(plan(&fwknop_clients(cap, all)).clients.len(), cap);

    let ps = problems(&fwknop_clients(cap + 2, all));
    assert_eq!(ps.len(), 2, "{ps:?}");
    let p = at(&ps, &format!("client[{}].sources", cap + 1));
    assert!(
        p.message.starts_with(&format!(
            "client `fw{cap}` comes after {cap} other fwknop clients whose `sources` admit 0.0.0.0"
        )) && p.message.contains("narrow the `sources`")
            && p.message.contains("nfknock keygen"),
        "{}",
        p.message
    );

    // 256 clients on one /32, then one on 0.0.0.0/0: it is the 257th for that address.
    let mut text = fwknop_clients(cap, |_| "\"192.0.2.7/32\"".into());
    text.push_str(&fwknop_clients(1, all).replace("fw0", "wide"));
    let ps = problems(&text);
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert!(ps[0].message.contains("client `wide`") && ps[0].message.contains("admit 192.0.2.7"));

    // 1000 clients, each on its own /24: never more than one candidate.
    let own = |i: usize| format!("\"10.{}.{}.0/24\"", i / 256, i % 256);
    assert_eq!(plan(&fwknop_clients(1000, own)).clients.len(), 1000);
}

/// Issue 10 §1: `nat` entries forward ports of `allow`; every mistake is named with its line
/// and what to write instead.
#[test]
fn nat_entries_forward_allowed_ports_to_one_target_per_family() {
    use crate::access::SourceNat;
    use crate::config::NatTo;
    let ok = plan(&native_client(
        "nat = [{ port = \"tcp/22\", to = \"192.168.10.2:2222\", snat = \"192.168.10.1\" },\n  { port = \"tcp/22\", to = \"[fd10::2]:22\", masquerade = true }]\n",
    ));
    let got: Vec<_> = ok.clients[0]
        .nat
        .iter()
        .map(|r| (r.to.to_string(), r.source))
        .collect();
    assert_eq!(
        got,
        [
            (
                "192.168.10.2:2222".to_string(),
                SourceNat::To("192.168.10.1".parse().unwrap())
            ),
            ("[fd10::2]:22".to_string(), SourceNat::Masquerade)
        ]
    );
    let nat = |text: &str| problems(&native_client(&format!("nat = [{text}]\n")));
    // Two IPv4 targets for one port: the second is refused.
    let ps = nat("{ port = \"tcp/22\", to = \"192.168.10.2:22\" }, { port = \"tcp/22\", to = \"192.168.10.3:22\" }");
    assert!(at(&ps, "client[1].nat[2].port")
        .message
        .contains("already forwards to 192.168.10.2:22"));
    // A port the client may not open.
    let ps = nat("{ port = \"tcp/2222\", to = \"192.168.10.2:22\" }");
    let p = at(&ps, "client[1].nat[1].port");
    assert_eq!(p.line, Some(5));
    assert!(
        p.message
            .contains("tcp/2222 is not in this client's `allow`; add \"tcp/2222\""),
        "{}",
        p.message
    );
    for (entry, key, needle) in [
        ("{ port = \"tcp/22\", to = \"internal:22\" }", "to", "host names are not resolved"),
        ("{ port = \"tcp/22\", to = \"127.0.0.1:22\" }", "to", "other than loopback"),
        ("{ port = \"tcp/0\", to = \"192.168.10.2:22\" }", "port", "is not an access"),
        ("{ port = \"tcp/22\", to = \"192.168.10.2:22\", snat = \"x\" }", "snat", "is not an IP address"),
        ("{ port = \"tcp/22\", to = \"192.168.10.2:22\", snat = \"fd10::1\" }", "snat", "not of the family"),
        ("{ port = \"tcp/22\", to = \"192.168.10.2:22\", snat = \"10.0.0.1\", masquerade = true }", "snat", "exclude each other"),
    ] {
        let ps = nat(entry);
        let p = at(&ps, &format!("client[1].nat[1].{key}"));
        assert!(p.message.contains(needle), "{entry}: {}", p.message);
    }
    let ps = nat("{ port = \"tcp/22\", to = \"192.168.10.2:22\", tos = 1 }");
    assert!(
        ps.iter().any(|p| p.message.contains("unknown field `tos`")),
        "{ps:?}"
    );
    let c = crate::config::parse_str(
        &format!(
            "[server]\n{}",
            native_client("nat = [{ port = \"tcp/22\", to = \":2200\" }]\n")
        ),
        Path::new(PATH),
    )
    .unwrap();
    assert_eq!(c.clients[0].nat[0].to, NatTo::Local(2200));
    assert_eq!(c.clients[0].nat[0].source, SourceNat::Keep);
}

/// `dnat = false` (fwknop DISABLE_DNAT): a routed target on another host whose port is the
/// access itself, without source NAT, and only with the forward gate on.
#[test]
fn routed_nat_entries_name_the_target_port_and_need_the_forward_gate() {
    let ok = plan(&native_client(
        "nat = [{ port = \"tcp/22\", to = \"192.168.10.2:22\", dnat = false }]\n",
    ));
    assert!(!ok.clients[0].nat[0].dnat);
    for (entry, needle) in [
        (
            "{ port = \"tcp/22\", to = \"192.168.10.2:2222\", dnat = false }",
            "so `port` must be tcp/2222",
        ),
        (
            "{ port = \"tcp/22\", to = \":2222\", dnat = false }",
            "needs a target on another host",
        ),
        (
            "{ port = \"tcp/22\", to = \"192.168.10.2:22\", dnat = false, masquerade = true }",
            "rewrite only translated flows",
        ),
    ] {
        let ps = problems(&native_client(&format!("nat = [{entry}]\n")));
        let p = at(&ps, "client[1].nat[1].dnat");
        assert!(p.message.contains(needle), "{entry}: {}", p.message);
    }
    let ps = problems(&format!(
        "[server]\ngate_forward = false\n{}",
        native_client("nat = [{ port = \"tcp/22\", to = \"192.168.10.2:22\", dnat = false }]\n")
    ));
    assert!(at(&ps, "client[1].nat")
        .message
        .contains("set `gate_forward = true`"));
}

/// The ipset backend has no DNAT maps: a client with `nat` is refused there, saying why.
#[test]
fn nat_needs_the_nftables_backend() {
    let ps = problems(&format!(
        "[server]\nbackend = \"ipset\"\ngate_forward = false\n{}",
        native_client("nat = [{ port = \"tcp/22\", to = \"192.168.10.2:22\" }]\n")
    ));
    let p = at(&ps, "client[1].nat");
    assert!(
        p.message
            .contains("`nat` needs `[server] backend = \"nftables\"`"),
        "{}",
        p.message
    );
}
