//! Tests of the knock client's own file ([`super`]).

use super::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::os::unix::fs::PermissionsExt;

use crate::wire::fwknop::{EncMode, HmacType};

const PATH: &str = "/home/u/.config/nfknock/client.toml";

fn key() -> String {
    STANDARD.encode([4u8; 32])
}

/// Reading the real file system as whoever runs the tests, `~` being `home`.
fn env(home: Option<&Path>) -> KnockEnv<'_> {
    KnockEnv {
        files: &crate::sys::FsLoader,
        euid: crate::sys::euid(),
        home,
    }
}

fn ok(text: &str, home: Option<&Path>) -> ClientPlan {
    let c = check_client(text, Path::new(PATH), &env(home));
    assert!(c.problems.is_empty(), "{}", ConfigErrors(c.problems));
    c.plan.unwrap()
}

fn errs(text: &str) -> Vec<Problem> {
    let c = check_client(text, Path::new(PATH), &env(None));
    assert!(!c.problems.is_empty(), "expected problems in:\n{text}");
    c.problems
}

fn at<'a>(ps: &'a [Problem], key: &str) -> &'a Problem {
    ps.iter()
        .find(|p| p.key.as_deref() == Some(key))
        .unwrap_or_else(|| panic!("no problem at `{key}` in:\n{}", ConfigErrors(ps.to_vec())))
}

/// Whether `crypto::NativeKey::derive` is implemented in this tree (it is written in another
/// branch); tests that build a `KnockProfiles` run their assertions only then.
fn native_keys_ready() -> bool {
    std::panic::catch_unwind(|| NativeKey::derive(&[0u8; SECRET_LEN])).is_ok()
}

#[test]
fn the_example_is_valid() {
    let plan = ok(include_str!("../../../examples/client.toml"), None);
    let [home] = plan.profiles.as_slice() else {
        panic!("one stanza")
    };
    assert_eq!(
        (home.name.as_str(), home.server.as_str(), home.port),
        ("home", "203.0.113.10", 62201)
    );
    assert_eq!(home.access, vec!["tcp/22".parse::<Access>().unwrap()]);
    assert_eq!(
        (home.timeout, home.allow_ip, &home.key_file),
        (Some(60), AllowIp::Auto, &None)
    );
    assert_eq!(home.secret.native().len(), SECRET_LEN);
    let c = check_client(
        include_str!("../../../examples/client.toml"),
        Path::new(PATH),
        &env(None),
    );
    assert!(c.inline_secret);
}

#[test]
fn default_applies_to_every_stanza_and_a_stanza_overrides_it() {
    let text = format!(
        "[default]\nport = 1000\naccess = [\"tcp/22\"]\nkey = \"{}\"\n[server.a]\nserver = \"a.example.org\"\n[server.b]\nserver = \"2001:db8::10\"\nport = 2000\naccess = [\"udp/53\"]\nallow_ip = \"198.51.100.7\"\n",
        key()
    );
    let plan = ok(&text, None);
    let [a, b] = plan.profiles.as_slice() else {
        panic!("two stanzas")
    };
    assert_eq!(
        (a.name.as_str(), a.port, a.access[0].port, a.timeout),
        ("a", 1000, 22, None)
    );
    assert_eq!((b.name.as_str(), b.port, b.access[0].port), ("b", 2000, 53));
    assert_eq!(b.allow_ip, AllowIp::Addr("198.51.100.7".parse().unwrap()));
    assert_eq!(b.allow_ip.to_string(), "198.51.100.7");
}

#[test]
fn port_defaults_to_62201() {
    let text = format!(
        "[server.a]\nserver = \"h\"\nkey = \"{}\"\naccess = [\"tcp/22\"]\n",
        key()
    );
    assert_eq!(ok(&text, None).profiles[0].port, super::super::DEFAULT_PORT);
}

#[test]
fn key_files_expand_tilde_and_must_be_private() {
    let dir = tempfile::tempdir().unwrap();
    let kdir = dir.path().join(".config/nfknock");
    std::fs::create_dir_all(&kdir).unwrap();
    let kpath = kdir.join("home.key");
    std::fs::write(&kpath, format!("{}\n", key())).unwrap();
    std::fs::set_permissions(&kpath, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = "[server.home]\nserver = \"h\"\nkey_file = \"~/.config/nfknock/home.key\"\naccess = [\"tcp/22\"]\n";
    let plan = ok(text, Some(dir.path()));
    assert_eq!(plan.profiles[0].key_file.as_deref(), Some(kpath.as_path()));
    assert_eq!(*plan.profiles[0].secret.native(), [4u8; 32]);

    std::fs::set_permissions(&kpath, std::fs::Permissions::from_mode(0o604)).unwrap();
    let c = check_client(text, Path::new(PATH), &env(Some(dir.path())));
    let p = at(&c.problems, "server.home.key_file");
    assert_eq!(p.line, Some(3));
    assert!(
        p.message
            .contains(&format!("`chmod 600 {}`", kpath.display())),
        "{}",
        p.message
    );

    // Relative: next to the config file.
    std::fs::set_permissions(&kpath, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = check_client(
        &text.replace("~/.config/nfknock/", ""),
        &kdir.join("client.toml"),
        &env(None),
    );
    assert!(c.problems.is_empty(), "{}", ConfigErrors(c.problems));
}

#[test]
fn missing_and_wrong_values_are_all_reported() {
    let ps = errs("[server.a]\nport = 0\n[server.b]\nserver = \"-x-\"\nkey = \"AAAA\"\naccess = [\"tcp/99999\"]\ntimeout = 0\nallow_ip = \"0.0.0.0\"\nkey_file = \"/k\"\n");
    for (key, line, needle) in [
        ("server.a.server", 1, "has no `server`"),
        ("server.a.key_file", 1, "has no `key_file`"),
        ("server.a.access", 1, "has no `access`"),
        ("server.a.port", 2, "from 1 to 65535"),
        ("server.b.server", 4, "neither a host name"),
        ("server.b.access[1]", 6, "not an access"),
        ("server.b.timeout", 7, "out of range"),
        ("server.b.allow_ip", 8, "neither \"source\""),
        ("server.b.key_file", 9, "either `key` or `key_file`"),
    ] {
        let p = at(&ps, key);
        assert_eq!(p.line, Some(line), "{key}");
        assert!(p.message.contains(needle), "{key}: {}", p.message);
    }
}

#[test]
fn unknown_keys_and_bad_shapes() {
    let ps = errs("[server.a]\nsrever = \"h\"\n");
    let p = at(&ps, "server.a.srever");
    assert_eq!(p.line, Some(2));
    assert!(p.message.contains("`server`, `port`"), "{}", p.message);
    // The misspelt key is not taken for `server`, which is then missing too.
    assert!(at(&ps, "server.a.server")
        .message
        .contains("has no `server`"));
    assert!(at(&errs("profile = 1\n[server.a]\n"), "profile")
        .message
        .contains("unknown field"));
    assert!(at(&errs("server = \"h\"\n"), "server")
        .message
        .contains("`[server.NAME]`"));
    assert!(at(&errs("[server.\"a b\"]\n"), "server.a b")
        .message
        .contains("not a valid stanza name"));
    assert!(at(&errs("[default]\nport = 1\n"), "server")
        .message
        .contains("no server is configured"));
}

#[test]
fn hosts_are_names_or_addresses() {
    for good in [
        "knock.example.org",
        "203.0.113.10",
        "2001:db8::10",
        "localhost",
        "a-b.c.",
    ] {
        assert!(check_host(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "a b",
        "[::1]",
        "h:62201",
        "-a.b",
        &"a".repeat(64),
        "a..b",
    ] {
        assert!(check_host(bad).is_err(), "{bad}");
    }
}

#[test]
fn default_path_follows_xdg() {
    use std::ffi::OsStr;
    let p = |x: Option<&str>, h: Option<&str>| {
        knock_profiles_path(x.map(OsStr::new), h.map(OsStr::new))
    };
    assert_eq!(
        p(Some("/x"), Some("/home/u")).unwrap(),
        Path::new("/x/nfknock/client.toml")
    );
    assert_eq!(
        p(None, Some("/home/u")).unwrap(),
        Path::new("/home/u/.config/nfknock/client.toml")
    );
    assert_eq!(
        p(Some("rel"), Some("/home/u")).unwrap(),
        Path::new("/home/u/.config/nfknock/client.toml")
    );
    assert_eq!(p(None, None), None);
    assert_eq!(p(Some(""), Some("")), None);
}

#[test]
fn load_knock_profiles_refuses_a_readable_file_with_an_inline_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("client.toml");
    std::fs::write(&cfg, include_str!("../../../examples/client.toml")).unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = load_knock_profiles(&cfg, &env(None)).unwrap_err();
    assert!(
        err.0[0]
            .message
            .contains(&format!("`chmod 600 {}`", cfg.display())),
        "{err}"
    );

    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    if native_keys_ready() {
        let config = load_knock_profiles(&cfg, &env(None)).unwrap();
        assert_eq!(config.stanza("home").map(|p| p.port), Some(62201));
        assert!(config.stanza("work").is_none());
        assert_eq!(config.names().collect::<Vec<_>>(), ["home"]);
    }
}

/// A wrong type in a knock profile names what the key must be, with an example.
#[test]
fn a_wrong_type_in_a_profile_says_what_each_key_must_be() {
    for (key, value, hint) in [
        ("server", "7", "a quoted host name or address"),
        ("port", "\"x\"", "the server's knock port, from 1 to 65535"),
        (
            "key",
            "7",
            "the quoted base64 line printed by `nfknock keygen`",
        ),
        (
            "key_file",
            "7",
            "a quoted path to the key from `nfknock keygen`",
        ),
        ("access", "7", "a list of accesses"),
        ("timeout", "\"x\"", "seconds, e.g. `timeout = 60`"),
        ("allow_ip", "7", "\"source\" or a quoted address"),
    ] {
        let ps = errs(&format!("[server.a]\n{key} = {value}\n"));
        let p = at(&ps, &format!("server.a.{key}"));
        assert!(
            p.message.contains(&format!("; `{key}` must be ")) && p.message.contains(hint),
            "{key}: {}",
            p.message
        );
        assert_eq!(p.line, Some(2), "{key}");
    }
}

/// An empty access list would knock for nothing.
#[test]
fn an_empty_access_list_is_refused_with_an_example() {
    let ps = errs("[server.a]\naccess = []\n");
    let p = at(&ps, "server.a.access");
    assert_eq!(
        p.message,
        "is empty; list what to open, e.g. `access = [\"tcp/22\"]`"
    );
    assert_eq!(p.line, Some(2));
}

/// `allow_ip` prints as it is written.
#[test]
fn allow_ip_displays_as_written() {
    assert_eq!(AllowIp::Auto.to_string(), "auto");
    assert_eq!(AllowIp::Source.to_string(), "source");
    assert_eq!(
        AllowIp::Addr("2001:db8::7".parse().unwrap()).to_string(),
        "2001:db8::7"
    );
}

/// An inline key that is not a `nfknock keygen` key says so, at its line.
#[test]
fn a_bad_inline_key_names_what_keygen_prints() {
    let ps = errs("[server.a]\nserver = \"h\"\nkey = \"AAAA\"\naccess = [\"tcp/22\"]\n");
    let p = at(&ps, "server.a.key");
    assert!(p.message.starts_with("the key "), "{}", p.message);
    assert!(p.message.contains("nfknock keygen"), "{}", p.message);
    assert_eq!(p.line, Some(3));
}

/// fwknop keys as `nfknock keygen --fwknop` prints them (32-byte key, 64-byte HMAC key).
fn fw_keys() -> (String, String) {
    (STANDARD.encode([5u8; 32]), STANDARD.encode([6u8; 64]))
}

fn fw_stanza(extra: &str) -> String {
    let (k, h) = fw_keys();
    format!("[server.gw]\nformat = \"fwknop\"\nserver = \"gw.example.org\"\nkey = \"{k}\"\nhmac_key = \"{h}\"\naccess = [\"tcp/22\"]\n{extra}")
}

#[test]
fn fwknop_stanza_carries_its_keys_and_algorithms() {
    let text = fw_stanza("hmac = \"sha512\"\ndigest = \"sha3_256\"\nmode = \"ctr\"\nuser = \"alice\"\nallow_ip = \"source\"\ntimeout = 90\n");
    let plan = ok(&text, None);
    let PlanSecret::Fwknop(f) = &plan.profiles[0].secret else {
        panic!("not an fwknop stanza")
    };
    assert_eq!(f.key.key.as_slice(), &[5u8; 32]);
    assert_eq!(
        f.key.hmac_key.as_deref().map(Vec::as_slice),
        Some(&[6u8; 64][..])
    );
    assert_eq!(f.key.hmac_type, HmacType::Sha512);
    assert_eq!(f.key.mode, EncMode::Ctr);
    assert_eq!(f.digest, DigestType::Sha3_256);
    assert_eq!(f.user.as_deref(), Some("alice"));
    assert_eq!(plan.profiles[0].allow_ip, AllowIp::Source);

    // Defaults: SHA-256 HMAC and digest, CBC, the login name.
    let plan = ok(&fw_stanza(""), None);
    let PlanSecret::Fwknop(f) = &plan.profiles[0].secret else {
        panic!("not an fwknop stanza")
    };
    assert_eq!(
        (f.key.hmac_type, f.key.mode, f.digest, f.user.as_deref()),
        (HmacType::Sha256, EncMode::Cbc, DigestType::Sha256, None)
    );
}

#[test]
fn fwknop_stanza_mistakes_are_named() {
    let (k, _) = fw_keys();
    let cases: &[(&str, &str, &str)] = &[
        (&fw_stanza("").replace("format = \"fwknop\"", "format = \"gpg\""), "server.gw.format", "not a knock format"),
        (&format!("[server.gw]\nformat = \"fwknop\"\nserver = \"h\"\nkey = \"{k}\"\naccess = [\"tcp/22\"]\n"), "server.gw.hmac_key_file", "no HMAC key"),
        (&fw_stanza("mode = \"legacy\"\n"), "server.gw.mode", "legacy"),
        (&fw_stanza("user = \"a:b\"\n"), "server.gw.user", "user name"),
        (&fw_stanza("allow_ip = \"2001:db8::7\"\n"), "server.gw.allow_ip", "IPv4"),
        (&fw_stanza("timeout = 70000\n"), "server.gw.timeout", "65536"),
        (&fw_stanza("").replace(&fw_keys().1, &k), "server.gw.hmac_key", "same as the encryption key"),
        (&fw_stanza("").replace(&k, &STANDARD.encode([5u8; 33])), "server.gw.key", "1 to 32 bytes"),
        (&fw_stanza("").replace(&k, "not base64!"), "server.gw.key", "not valid base64"),
        (&format!("[server.n]\nserver = \"h\"\nkey = \"{}\"\naccess = [\"tcp/22\"]\nhmac = \"sha1\"\n", key()), "server.n.hmac", "fwknop stanzas"),
    ];
    for (text, key, needle) in cases {
        let ps = errs(text);
        let p = at(&ps, key);
        assert!(p.message.contains(needle), "{key}: {}", p.message);
    }
}

#[test]
fn fwknop_key_files_must_be_private() {
    let dir = tempfile::tempdir().unwrap();
    let (k, h) = fw_keys();
    let (kp, hp) = (dir.path().join("gw.key"), dir.path().join("gw.key.hmac"));
    for (p, v) in [(&kp, &k), (&hp, &h)] {
        std::fs::write(p, format!("{v}\n")).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let text = format!(
        "[server.gw]\nformat = \"fwknop\"\nserver = \"h\"\nkey_file = \"{}\"\nhmac_key_file = \"{}\"\naccess = [\"tcp/22\"]\n",
        kp.display(),
        hp.display()
    );
    let plan = ok(&text, None);
    let PlanSecret::Fwknop(f) = &plan.profiles[0].secret else {
        panic!("not an fwknop stanza")
    };
    assert_eq!(f.key.key.as_slice(), &[5u8; 32]);
    std::fs::set_permissions(&hp, std::fs::Permissions::from_mode(0o640)).unwrap();
    let c = check_client(&text, Path::new(PATH), &env(None));
    let p = at(&c.problems, "server.gw.hmac_key_file");
    assert!(
        p.message.contains(&format!("`chmod 600 {}`", hp.display())),
        "{}",
        p.message
    );
}
