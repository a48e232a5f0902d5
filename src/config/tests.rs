//! Tests of the server config: one per rule, each checking the line and the message a person
//! would read. Native keys are checked as bytes ([`check_str`]'s plan) because key
//! derivation lives in `crypto` and is tested there; full builds use fwknop clients.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::server::{Checked, Plan, Secret};
use super::*;
use crate::access::Proto;
use crate::sys::{FsLoader, SystemAccounts};
use crate::wire::fwknop::{EncMode, HmacType};

const PATH: &str = "/etc/nfknock/nfknock.toml";

/// The server config check reading the real file system and user database.
fn check_str(text: &str, path: &Path) -> Checked {
    server::check_text(text, path, &FsLoader, &SystemAccounts)
}

/// [`check_str`] with `[server] user` resolved against `accounts`.
fn check_str_with(text: &str, path: &Path, accounts: &dyn Accounts) -> Checked {
    server::check_text(text, path, &FsLoader, accounts)
}

/// [`super::load`] from the real file system and user database.
fn load(path: &Path) -> Result<Config, ConfigErrors> {
    super::load(path, &FsLoader, &SystemAccounts)
}

/// [`super::load`] from the real file system, `[server] user` resolved against `accounts`.
fn load_with(path: &Path, accounts: &dyn Accounts) -> Result<Config, ConfigErrors> {
    super::load(path, &FsLoader, accounts)
}

fn native_key() -> String {
    STANDARD.encode([1u8; 32])
}
fn fw_key() -> String {
    STANDARD.encode([2u8; 32])
}
fn fw_hmac() -> String {
    STANDARD.encode([3u8; 64])
}

/// Every problem of a text.
fn problems(text: &str) -> Vec<Problem> {
    let c = check_str(text, Path::new(PATH));
    assert!(!c.problems.is_empty(), "expected problems in:\n{text}");
    c.problems
}

/// The plan of a text that must be valid.
fn plan(text: &str) -> Plan {
    let c = check_str(text, Path::new(PATH));
    assert!(
        c.problems.is_empty(),
        "unexpected problems: {}",
        ConfigErrors(c.problems)
    );
    c.plan.expect("plan")
}

/// The one problem whose key is `key`.
fn at<'a>(ps: &'a [Problem], key: &str) -> &'a Problem {
    ps.iter()
        .find(|p| p.key.as_deref() == Some(key))
        .unwrap_or_else(|| panic!("no problem at `{key}` in:\n{}", ConfigErrors(ps.to_vec())))
}

fn a(s: &str) -> Access {
    s.parse().unwrap()
}

fn native_client(extra: &str) -> String {
    format!(
        "[[client]]\nname = \"alice\"\nkey = \"{}\"\nallow = [\"tcp/22\"]\n{extra}",
        native_key()
    )
}

fn fwknop_client(name: &str, fw_extra: &str) -> String {
    format!(
        "[[client]]\nname = \"{name}\"\nallow = [\"tcp/22\"]\n[client.fwknop]\nkey_base64 = \"{}\"\nhmac_key_base64 = \"{}\"\n{fw_extra}",
        fw_key(),
        fw_hmac()
    )
}

#[test]
fn the_example_is_valid_and_means_what_it_says() {
    let p = plan(render_example());
    assert_eq!(p.server.port, 62201);
    assert_eq!(
        (p.server.rate_limit_v4_prefix, p.server.rate_limit_v6_prefix),
        (32, 64)
    );
    assert_eq!(p.server.protect, vec![a("tcp/22"), a("tcp/443")]);
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
    assert!(s.manage_ruleset && s.gate_forward && s.revoke_on_reload);
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

#[test]
fn fwknop_needs_an_hmac_key_unless_told_otherwise() {
    let no_hmac =
        fwknop_client("b", "").replace(&format!("hmac_key_base64 = \"{}\"\n", fw_hmac()), "");
    let ps = problems(&no_hmac);
    let p = at(&ps, "client[1].fwknop.hmac_key_base64");
    assert_eq!(p.line, Some(4));
    assert!(p.message.contains("no_hmac = true"), "{}", p.message);

    let config = parse_str(&format!("{no_hmac}no_hmac = true\n"), Path::new(PATH)).unwrap();
    let w = warnings(&config);
    assert!(
        w.iter()
            .any(|w| w.contains("client `b`: no HMAC") && w.contains("any address")),
        "{w:?}"
    );

    let ps = problems(&fwknop_client("b", "no_hmac = true\n"));
    assert!(at(&ps, "client[1].fwknop.no_hmac")
        .message
        .contains("contradicts"));
}

#[test]
fn fwknop_key_limits() {
    let long_key = fwknop_client("b", "").replace(&fw_key(), &STANDARD.encode([2u8; 33]));
    let p = problems(&long_key);
    let p = at(&p, "client[1].fwknop.key_base64");
    assert_eq!(p.line, Some(5));
    assert!(
        p.message.contains("33 bytes") && p.message.contains("1 to 32"),
        "{}",
        p.message
    );

    let long_hmac = fwknop_client("b", "").replace(&fw_hmac(), &STANDARD.encode([3u8; 137]));
    assert!(
        at(&problems(&long_hmac), "client[1].fwknop.hmac_key_base64")
            .message
            .contains("1 to 136")
    );
    let ok = fwknop_client("b", "").replace(&fw_hmac(), &STANDARD.encode([3u8; 136]));
    plan(&ok);

    let same = fwknop_client("b", "").replace(&fw_hmac(), &fw_key());
    assert!(at(&problems(&same), "client[1].fwknop.hmac_key_base64")
        .message
        .contains("same as the encryption key"));

    let both = fwknop_client("b", "key = \"pass\"\n");
    assert!(at(&problems(&both), "client[1].fwknop.key")
        .message
        .contains("exactly one of"));

    let placeholder =
        "[[client]]\nname = \"b\"\nallow = [\"tcp/22\"]\n[client.fwknop]\nkey = \"__CHANGEME__\"\nhmac_key = \"h\"\n";
    assert!(at(&problems(placeholder), "client[1].fwknop.key")
        .message
        .contains("placeholder"));

    let bad_hmac = fwknop_client("b", "hmac = \"sha2\"\n");
    let ps = problems(&bad_hmac);
    let p = at(&ps, "client[1].fwknop.hmac");
    assert!(p.message.contains("sha3_256"), "{}", p.message);

    let legacy = fwknop_client("b", "mode = \"legacy\"\n");
    assert!(at(&problems(&legacy), "client[1].fwknop.hmac_key_base64")
        .message
        .contains("legacy"));
}

#[test]
fn fwknop_passphrases_are_taken_as_bytes() {
    let text = "[[client]]\nname = \"b\"\nallow = [\"tcp/22\"]\n[client.fwknop]\nkey = \"correct horse\"\nhmac_key = \"battery staple\"\nhmac = \"sha1\"\n";
    let config = parse_str(text, Path::new(PATH)).unwrap();
    let Credential::Fwknop(k) = &config.clients[0].credential else {
        panic!()
    };
    assert_eq!(k.key.as_slice(), b"correct horse");
    assert_eq!(
        k.hmac_key.as_deref().map(|v| v.as_slice()),
        Some(&b"battery staple"[..])
    );
    assert!(warnings(&config).iter().any(|w| w.contains("weak digest")));
}

fn write_private(path: &Path, content: &str, mode: u32) {
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn key_files_are_read_relative_to_the_config_and_must_be_private() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("nfknock.toml");
    write_private(
        &dir.path().join("alice.key"),
        &format!("\n  {}  \n", native_key()),
        0o600,
    );
    let text = "[[client]]\nname = \"alice\"\nkey_file = \"alice.key\"\nallow = [\"tcp/22\"]\n";
    let c = check_str(text, &cfg);
    assert!(c.problems.is_empty(), "{}", ConfigErrors(c.problems));
    assert!(!c.inline_secret);
    match &c.plan.unwrap().clients[0].secret {
        Secret::Native(b) => assert_eq!(***b, [1u8; 32]),
        other => panic!("{other:?}"),
    }

    std::fs::set_permissions(
        dir.path().join("alice.key"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let ps = check_str(text, &cfg).problems;
    let p = at(&ps, "client[1].key_file");
    assert_eq!(p.line, Some(3));
    let want = format!("`chmod 600 {}`", dir.path().join("alice.key").display());
    assert!(p.message.contains(&want), "{}", p.message);

    let ps = check_str(&text.replace("alice.key", "missing.key"), &cfg).problems;
    assert!(at(&ps, "client[1].key_file")
        .message
        .contains("cannot read"));

    // fwknop key files hold base64.
    write_private(&dir.path().join("fw.key"), &fw_key(), 0o600);
    write_private(&dir.path().join("fw.hmac"), &fw_hmac(), 0o400);
    let text = "[[client]]\nname = \"b\"\nallow = [\"tcp/22\"]\n[client.fwknop]\nkey_file = \"fw.key\"\nhmac_key_file = \"fw.hmac\"\n";
    let config = parse(text, &cfg, &FsLoader, &SystemAccounts).unwrap();
    let Credential::Fwknop(k) = &config.clients[0].credential else {
        panic!()
    };
    assert_eq!(k.key.as_slice(), [2u8; 32]);
}

#[test]
fn load_refuses_a_readable_config_with_inline_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("nfknock.toml");
    write_private(&cfg, &fwknop_client("b", ""), 0o644);
    let err = load(&cfg).unwrap_err();
    let p = &err.0[0];
    assert_eq!((p.line, p.key.as_deref()), (None, None));
    assert!(
        p.message
            .contains(&format!("`chmod 600 {}`", cfg.display())),
        "{}",
        p.message
    );

    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = load(&cfg).unwrap();
    assert_eq!(config.clients[0].name, "b");

    // Keys in files only: the config may be world-readable.
    write_private(&dir.path().join("fw.key"), &fw_key(), 0o600);
    write_private(&dir.path().join("fw.hmac"), &fw_hmac(), 0o600);
    write_private(&cfg, "[[client]]\nname = \"b\"\nallow = [\"tcp/22\"]\n[client.fwknop]\nkey_file = \"fw.key\"\nhmac_key_file = \"fw.hmac\"\n", 0o644);
    assert!(load(&cfg).is_ok());

    let err = load(&dir.path().join("nope.toml")).unwrap_err();
    assert!(err.0[0].message.contains("cannot read the config file"));
    std::fs::write(&cfg, b"a = 1\n\xff\n").unwrap();
    assert_eq!(load(&cfg).unwrap_err().0[0].line, Some(2));
}

/// A user database of `users`, seen by a process whose effective uid is `euid`.
struct FakeAccounts {
    euid: u32,
    users: Vec<Account>,
}

impl Accounts for FakeAccounts {
    fn euid(&self) -> u32 {
        self.euid
    }
    fn by_name(&self, name: &str) -> std::io::Result<Option<Account>> {
        Ok(self.users.iter().find(|a| a.name == name).cloned())
    }
}

fn account(name: &str, uid: u32) -> Account {
    Account {
        name: name.into(),
        uid,
        gid: uid + 1,
    }
}

/// Root, on a system with `users`.
fn as_root(users: &[Account]) -> FakeAccounts {
    FakeAccounts {
        euid: 0,
        users: users.to_vec(),
    }
}

#[test]
fn user_defaults_to_nfknock_if_it_exists_else_nfknock_stays_who_it_is() {
    let text = native_client("");
    let path = Path::new(PATH);
    let nfknock = account("nfknock", 998);
    let c = check_str_with(&text, path, &as_root(std::slice::from_ref(&nfknock)));
    assert!(c.problems.is_empty(), "{}", ConfigErrors(c.problems));
    assert_eq!(
        c.plan.unwrap().server.user,
        RunAs::User {
            account: nfknock.clone(),
            explicit: false
        }
    );
    let c = check_str_with(&text, path, &as_root(&[]));
    assert_eq!(c.plan.unwrap().server.user, RunAs::Unchanged);

    let text = format!("[server]\nuser = \"svc\"\n{}", native_client(""));
    let svc = account("svc", 4242);
    let c = check_str_with(&text, path, &as_root(&[nfknock, svc.clone()]));
    let user = c.plan.unwrap().server.user;
    assert_eq!(
        user,
        RunAs::User {
            account: svc.clone(),
            explicit: true
        }
    );
    // Root switches to it; a daemon already running as someone else cannot.
    assert_eq!(user.switch_to(0), Some(&svc));
    assert_eq!(user.switch_to(4242), None);
    assert_eq!(user.switch_to(998), None);
    let root = RunAs::User {
        account: account("root", 0),
        explicit: true,
    };
    assert_eq!(root.switch_to(0), None);
}

#[test]
fn an_unknown_or_malformed_user_is_an_error_at_its_line_with_the_fix() {
    let path = Path::new(PATH);
    let text = format!(
        "[server]\nport = 62201\nuser = \"nfknock-typo\"\n{}",
        native_client("")
    );
    let c = check_str_with(&text, path, &as_root(&[account("nfknock", 998)]));
    let p = at(&c.problems, "server.user");
    assert_eq!(p.line, Some(3));
    assert!(
        p.message.contains("there is no user `nfknock-typo`")
            && p.message.contains("`useradd --system --user-group --no-create-home --shell /usr/sbin/nologin nfknock-typo`"),
        "{}",
        p.message
    );
    for (bad, says) in [
        ("998", "not a uid"),
        ("", "1 to 32"),
        ("-x", "1 to 32"),
        ("a b", "1 to 32"),
    ] {
        let text = format!("[server]\nuser = \"{bad}\"\n{}", native_client(""));
        let c = check_str_with(&text, path, &as_root(&[]));
        let p = at(&c.problems, "server.user");
        assert!(p.message.contains(says), "{bad:?}: {}", p.message);
    }
    let ps = problems(&format!("[server]\nuser = 0\n{}", native_client("")));
    assert!(at(&ps, "server.user")
        .message
        .contains("a quoted user name"));
}

/// Started as root with `user = "svc"`, key files and a config holding keys must be `svc`'s:
/// after the switch a reload reads them as `svc`.
#[test]
fn files_holding_keys_must_belong_to_the_user_the_daemon_switches_to() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("nfknock.toml");
    let key = dir.path().join("alice.key");
    write_private(&key, &native_key(), 0o600);
    let svc = account("svc", 4242);
    // This test's files belong to whoever runs it; `svc` is never that user.
    let text = "[server]\nuser = \"svc\"\n[[client]]\nname = \"alice\"\nkey_file = \"alice.key\"\nallow = [\"tcp/22\"]\n";
    let c = check_str_with(text, &cfg, &as_root(std::slice::from_ref(&svc)));
    let p = at(&c.problems, "client[1].key_file");
    let want = format!("`chown svc: {}`", key.display());
    assert!(p.message.contains(&want), "{}", p.message);

    write_private(
        &cfg,
        &format!("[server]\nuser = \"svc\"\n{}", native_client("")),
        0o600,
    );
    let err = load_with(&cfg, &as_root(&[svc])).unwrap_err();
    let want = format!("`chown svc: {}`", cfg.display());
    assert!(err.0[0].message.contains(&want), "{err}");

    // Without a switch (the user it runs as already), its own files do.
    let me = account("me", crate::sys::euid());
    let text = text.replace("\"svc\"", "\"me\"");
    let accounts = FakeAccounts {
        euid: me.uid,
        users: vec![me],
    };
    let c = check_str_with(&text, &cfg, &accounts);
    assert!(c.problems.is_empty(), "{}", ConfigErrors(c.problems));
}

/// A FIFO at the config path would block a reload (and with it the daemon) until someone writes
/// to it: it is refused at once, as is anything but a regular file.
#[test]
fn load_refuses_a_fifo_without_waiting_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("nfknock.toml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let (tx, rx) = std::sync::mpsc::channel();
    let p = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(load(&p).map(|_| ()));
    });
    let err = rx
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("loading a FIFO as the config hung")
        .unwrap_err();
    let m = &err.0[0].message;
    assert!(
        m.contains("cannot read the config file") && m.contains("not a regular file but a FIFO"),
        "{m}"
    );
}

#[test]
fn syntax_errors_have_lines() {
    let ps = problems("[server]\nport = 62201\nqueue = \n");
    assert_eq!(ps[0].line, Some(3));
    assert!(
        ps[0].message.contains("TOML syntax error"),
        "{}",
        ps[0].message
    );
    let ps = problems("[server]\nport = 1\nport = 2\n");
    assert_eq!(ps[0].line, Some(3), "{}", ConfigErrors(ps.clone()));
}

/// Regression (fuzz target `config_server`, docs/FUZZING.md): random text has a syntax error
/// every few bytes; reporting each one, with its line counted from the start of the file, took
/// seconds for 100 KB and grew the problem list to many times the file size.
#[test]
fn fuzz_many_syntax_errors_are_capped_and_lines_stay_right() {
    let text = "= x\n".repeat(1000);
    let ps = problems(&text);
    assert_eq!(
        ps.len(),
        raw::MAX_SYNTAX_ERRORS + 1,
        "{}",
        ConfigErrors(ps.clone())
    );
    // Each `= x` line holds up to three errors: the first 20 cover lines 1..=7.
    let lines: Vec<_> = ps.iter().map(|p| p.line.unwrap_or(0)).collect();
    assert!(
        lines.windows(2).all(|w| w[0] <= w[1] && w[1] - w[0] <= 1),
        "{lines:?}"
    );
    assert_eq!(
        (lines[0], lines[raw::MAX_SYNTAX_ERRORS - 1]),
        (1, 7),
        "{lines:?}"
    );
    let last = &ps[raw::MAX_SYNTAX_ERRORS].message;
    assert!(last.contains("more TOML syntax errors"), "{last}");
    // Lines asked out of order (stage 2 may go back) are still counted right.
    let sink = raw::Sink::new("a\nb\nc\n", Path::new("x.toml"));
    assert_eq!(
        [sink.line(4), sink.line(0), sink.line(2), sink.line(99)],
        [3, 1, 2, 4]
    );
}

#[test]
fn structure_mistakes_say_how_to_write_it() {
    let ps = problems(&native_client("").replace("[[client]]", "[client]"));
    assert!(at(&ps, "client")
        .message
        .contains("`[[client]]` (two brackets)"));
    let ps = problems("server = 5\n[[client]]\n");
    assert!(at(&ps, "server").message.contains("`[server]`"));
    let ps = problems("");
    assert!(at(&ps, "client")
        .message
        .contains("no client is configured"));
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

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    /// Deep nesting must not exhaust the stack (the parser has a depth limit).
    #[test]
    fn on_deep_nesting() {
        for open in ["[", "{a="] {
            let text = format!("a = {}", open.repeat(100_000));
            assert!(parse_str(&text, Path::new(PATH)).is_err());
        }
        let text = format!("[a{}]\n", ".a".repeat(50_000));
        assert!(parse_str(&text, Path::new(PATH)).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn on_any_text(text in "(?s).{0,400}") {
            let _ = parse_str(&text, Path::new("/nonexistent/nfknock.toml"));
            let _ = parse_knock_profiles(&text, Path::new("/nonexistent/client.toml"));
        }

        /// Text made of the config's own vocabulary reaches stage 2.
        #[test]
        fn on_config_shaped_text(lines in prop::collection::vec(
            prop::sample::select(vec![
                "[server]", "[[client]]", "[client.fwknop]", "[default]", "[server.home]", "[client]",
                "port = 0", "port = 62201", "port = \"x\"", "queue = 70000", "max_age = -1",
                "protect = [\"tcp/22\"]", "protect = []", "state_dir = \"rel\"",
                "name = \"alice\"", "name = \"\"", "key = \"AAAA\"", "key_file = \"nope\"",
                "allow = [\"tcp/22\", \"udp/0\"]", "allow = []", "deny = [1]", "timeout = 99999999999",
                "max_timeout = 5", "sources = [\"10.0.0.1/8\", \"::/0\"]", "destinations = \"x\"",
                "require_username = \"bob\"", "expires = 2027-02-29", "expires = \"2027-01-31\"",
                "expires_at = -9223372036854775808", "key_base64 = \"AAAA\"", "hmac_key = \"AAAA\"",
                "hmac = \"md5\"", "mode = \"legacy\"", "no_hmac = true", "server = \"-bad-\"",
                "access = [\"tcp/22\"]", "allow_ip = \"::\"", "x = { y = [1, {z = 2}] }", "= =",
            ]),
            0..24,
        )) {
            let text = lines.join("\n");
            let _ = check_str(&text, Path::new("/nonexistent/nfknock.toml"));
            let env = KnockEnv { files: &MemFiles::new(), euid: 0, home: None };
            let _ = knock_profile::check_client(&text, Path::new("/nonexistent/client.toml"), &env);
        }
    }
}

#[test]
fn oversized_key_files_are_refused_before_they_are_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.key");
    std::fs::write(&path, vec![b'A'; 5000]).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err =
        crate::config::read_native_key_file(&FsLoader, &path, crate::sys::euid()).unwrap_err();
    assert!(err.contains("longer than 4096 bytes"), "{err}");
}

/// Parsing reads only through the `Files` it is given: a key file held in memory is read,
/// checked (mode and owner from its metadata) and decoded as one on disk would be.
#[test]
fn key_files_are_read_through_the_files_given() {
    let text = "[[client]]\nname = \"alice\"\nkey_file = \"alice.key\"\nallow = [\"tcp/22\"]\n";
    let cfg = Path::new("/etc/nfknock/nfknock.toml");
    let key = format!("{}\n", native_key());
    let files = |mode| {
        MemFiles::new().with(
            "/etc/nfknock/alice.key",
            key.clone(),
            FileMeta { mode, uid: 0 },
        )
    };
    let config = parse(text, cfg, &files(0o100600), &NoAccounts).unwrap();
    assert_eq!(config.clients[0].name, "alice");
    let err = parse(text, cfg, &files(0o100640), &NoAccounts).unwrap_err();
    assert!(
        err.to_string()
            .contains("`chmod 600 /etc/nfknock/alice.key`"),
        "{err}"
    );
    // `parse_str` has no files at all: the key file is missing, and says so.
    let err = parse_str(text, cfg).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot read key file /etc/nfknock/alice.key"),
        "{err}"
    );
}

/// fwknopd reads `KEY_BASE64` with libfko's `b64_decode` after checking every character is in
/// `[A-Za-z0-9+/=]` (server/access.c, `is_base64`): decoding stops at the first `=` and a
/// final lone character is dropped. A key fwknopd accepts is read here to the same bytes; a
/// character fwknopd refuses is refused.
#[test]
fn fwknop_base64_keys_decode_as_fwknopd_does() {
    let key = |b64: &str| {
        let text = fwknop_client("b", "").replace(&fw_key(), b64);
        match &parse_str(&text, Path::new(PATH))
            .unwrap_or_else(|e| panic!("{b64}: {e}"))
            .clients[0]
            .credential
        {
            Credential::Fwknop(k) => k.key.to_vec(),
            Credential::Native(_) => unreachable!("an fwknop client"),
        }
    };
    let full = STANDARD.encode([2u8; 32]);
    // Characters after the padding are ignored, as by fwknopd.
    assert_eq!(key(&format!("{full}==AAAA")), [2u8; 32]);
    // A final lone character (5 mod 4) is dropped: "cm9vZ" is "roo".
    assert_eq!(key("cm9vZ"), b"roo");
    // fwknopd refuses a character outside the base64 alphabet, even after `=`.
    let text = fwknop_client("b", "").replace(&fw_key(), &format!("{full}=!"));
    assert!(at(&problems(&text), "client[1].fwknop.key_base64")
        .message
        .contains("base64"));
}

/// config/ is pure: it reads files only through the `Files` it is given and the user database
/// through `Accounts` (the real ones are in `sys`). Test modules may touch the disk.
#[test]
fn config_reads_nothing_by_itself() {
    const SOURCES: &[(&str, &str)] = &[
        ("mod.rs", include_str!("mod.rs")),
        ("files.rs", include_str!("files.rs")),
        ("raw.rs", include_str!("raw.rs")),
        ("values.rs", include_str!("values.rs")),
        ("secret.rs", include_str!("secret.rs")),
        ("knock_profile.rs", include_str!("knock_profile.rs")),
        ("server/mod.rs", include_str!("server/mod.rs")),
        ("server/settings.rs", include_str!("server/settings.rs")),
        (
            "server/client_entry.rs",
            include_str!("server/client_entry.rs"),
        ),
        ("server/fwknop_key.rs", include_str!("server/fwknop_key.rs")),
    ];
    let forbidden = [
        "std::fs",
        "std::env",
        "std::process",
        "std::time",
        "File::",
        "OpenOptions",
        "read_dir",
        "canonicalize",
        "libc::",
        "crate::sys",
        "unsafe",
    ];
    for (file, text) in SOURCES {
        // Everything after the test module's `#[cfg(test)]` is test code.
        let code = text.split("#[cfg(test)]").next().unwrap_or(text);
        for (n, line) in code.lines().enumerate() {
            for f in forbidden {
                assert!(
                    !line.contains(f) || line.trim_start().starts_with("//"),
                    "src/config/{file}:{}: `{f}` in pure config; read through `Files`/`Accounts` (the real ones are `sys::FsLoader`/`sys::SystemAccounts`)",
                    n + 1
                );
            }
        }
    }
}
