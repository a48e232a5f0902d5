use std::collections::BTreeMap;

use super::fwknopd_conf::{parse_fwknopd_conf, DaemonSettings};
use super::syntax::{is_yes, split_line};
use super::values::{parse_net, parse_ports};
use super::*;
use crate::config::{Config, Credential};
use crate::wire::fwknop::{EncMode, HmacType};

// Keyset `A_keygen_default` of shared/fwknop-vectors.jsonl (made by `fwknop --key-gen`).
const A_KEY: &str = "oQIY1T7kis/kyV9QHh/Fe2cpnA0SvOAy995h7HWCMvE=";
const A_HMAC: &str =
    "0XEuKA+PgGJcbHwjdGciHsjUhYIJGf2UD5OL69B+LyH8miyYeRuszycx4IFY3WPAnPwAO26cYeBjysAkd116QQ==";

/// In-memory files; a path ending in `/` listed by `conf_files` is a directory.
#[derive(Default)]
struct Mem(BTreeMap<PathBuf, String>);

impl Mem {
    fn with(files: &[(&str, &str)]) -> Mem {
        Mem(files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect())
    }
}

impl Loader for Mem {
    fn read(&self, path: &Path) -> Result<Zeroizing<String>, String> {
        self.0
            .get(path)
            .map(|t| Zeroizing::new(t.clone()))
            .ok_or_else(|| "No such file or directory (os error 2)".to_string())
    }
    fn conf_files(&self, dir: &Path) -> Result<Vec<PathBuf>, String> {
        let v: Vec<PathBuf> = self
            .0
            .keys()
            .filter(|p| p.parent() == Some(dir) && p.extension().is_some_and(|e| e == "conf"))
            .cloned()
            .collect();
        if v.is_empty() {
            Err("No such file or directory (os error 2)".to_string())
        } else {
            Ok(v)
        }
    }
}

const ACCESS: &str = "/etc/fwknop/access.conf";

fn run_opts(files: &[(&str, &str)], daemon: Option<&str>, opts: &Options) -> Import {
    let mem = Mem::with(files);
    import(&mem, Path::new(ACCESS), daemon.map(Path::new), opts).unwrap_or_else(|e| panic!("{e}"))
}

fn run(access: &str) -> Import {
    run_opts(&[(ACCESS, access)], None, &Options::default())
}

/// A stanza with keyset A, explicit ports and REQUIRE_SOURCE_ADDRESS, plus `extra` lines.
fn stanza(extra: &str) -> String {
    format!("SOURCE ANY\nKEY_BASE64 {A_KEY}\nHMAC_KEY_BASE64 {A_HMAC}\nOPEN_PORTS tcp/22\nREQUIRE_SOURCE_ADDRESS Y\n{extra}")
}

/// The rendered config, checked by the real checker.
fn config(i: &Import) -> Config {
    let text = i
        .toml
        .as_ref()
        .unwrap_or_else(|| panic!("no output; diags: {:#?}", i.diags));
    crate::config::parse_str(text, Path::new("/tmp/imported.toml")).unwrap_or_else(|e| {
        panic!(
            "the imported config is refused:\n{e}\n---\n{}",
            text.as_str()
        )
    })
}

fn messages(i: &Import, level: Level) -> Vec<String> {
    i.diags
        .iter()
        .filter(|d| d.level == level)
        .map(Diag::to_string)
        .collect()
}

fn has(i: &Import, level: Level, needle: &str) -> bool {
    messages(i, level).iter().any(|m| m.contains(needle))
}

fn fwknop_key(c: &crate::config::ClientEntry) -> &crate::wire::fwknop::FwknopKey {
    match &c.credential {
        Credential::Fwknop(k) => k,
        Credential::Native(_) => panic!("native credential"),
    }
}

// --- line syntax ---------------------------------------------------------------------------

#[test]
fn lines_follow_fwknopd_sscanf() {
    assert_eq!(split_line("SOURCE ANY"), Some(("SOURCE", "ANY")));
    assert_eq!(split_line("SOURCE: ANY"), Some(("SOURCE", "ANY")));
    assert_eq!(
        split_line("KEY   abc def  ;  # tail"),
        Some(("KEY", "abc def"))
    );
    assert_eq!(split_line("KEY\tvalue\r"), Some(("KEY", "value")));
    assert_eq!(
        split_line("OPEN_PORTS tcp/22;udp/53"),
        Some(("OPEN_PORTS", "tcp/22"))
    );
    assert_eq!(split_line("# SOURCE ANY"), None);
    assert_eq!(split_line("   # indented comment"), None);
    assert_eq!(split_line(""), None);
    assert_eq!(split_line("   "), None);
    // No value: fwknopd's sscanf returns 1 and the line is skipped.
    assert_eq!(split_line("SOURCE"), None);
    assert_eq!(split_line("SOURCE   ;"), None);
}

#[test]
fn booleans_are_the_first_character() {
    for yes in ["Y", "y", "yes", "Yep", "y;"] {
        assert!(is_yes(yes), "{yes}");
    }
    for no in ["N", "no", "true", "1", " Y", ""] {
        assert!(!is_yes(no), "{no}");
    }
    let i = run(&stanza("").replace("REQUIRE_SOURCE_ADDRESS Y", "REQUIRE_SOURCE_ADDRESS yes"));
    assert!(config(&i).clients[0].require_source_match);
    let i = run(&stanza("").replace("REQUIRE_SOURCE_ADDRESS Y", "REQUIRE_SOURCE_ADDRESS true"));
    assert!(!config(&i).clients[0].require_source_match);
}

#[test]
fn trailing_colon_semicolon_comments_and_lines_before_the_first_source() {
    let text = format!(
        "# fwknopd access.conf\nKEY_BASE64 {A_HMAC}\n\nSOURCE: 10.0.0.0/8 ;comment\nKEY_BASE64: {A_KEY};\nHMAC_KEY_BASE64 {A_HMAC}   \n# OPEN_PORTS tcp/1\nOPEN_PORTS: tcp/22, udp/53;\nREQUIRE_SOURCE_ADDRESS: Y\n"
    );
    let i = run(&text);
    let c = config(&i);
    let [client] = c.clients.as_slice() else {
        panic!("one client")
    };
    assert_eq!(client.sources[0].to_string(), "10.0.0.0/8");
    assert_eq!(crate::access::format_list(&client.allow), "tcp/22,udp/53");
    assert_eq!(
        *fwknop_key(client).key,
        crate::wire::fwknop::decode_key_base64(A_KEY)
            .unwrap()
            .to_vec()
    );
    assert!(has(
        &i,
        Level::Warning,
        "/etc/fwknop/access.conf:2: `KEY_BASE64` comes before the first SOURCE"
    ));
    assert!(i.complete(), "{:#?}", i.diags);
}

// --- SOURCE / DESTINATION ------------------------------------------------------------------

#[test]
fn networks_any_netmask_prefix_and_host_bits() {
    let net = |s: &str| parse_net(s).map(|(n, note)| (n.map(|n| n.to_string()), note.is_some()));
    assert_eq!(net("ANY"), Ok((None, false)));
    assert_eq!(net("any"), Ok((None, false)));
    assert_eq!(net("10.1.2.3"), Ok((Some("10.1.2.3/32".into()), false)));
    assert_eq!(net("10.0.0.0/8"), Ok((Some("10.0.0.0/8".into()), false)));
    assert_eq!(
        net("192.168.10.0/255.255.255.0"),
        Ok((Some("192.168.10.0/24".into()), false))
    );
    assert_eq!(
        net("0.0.0.0/0.0.0.0"),
        Ok((Some("0.0.0.0/0".into()), false))
    );
    assert_eq!(
        net("10.1.2.3/255.255.255.255"),
        Ok((Some("10.1.2.3/32".into()), false))
    );
    // fwknopd masks host bits (`maddr = addr & mask`); so does the import, with a note.
    assert_eq!(net("10.1.2.3/24"), Ok((Some("10.1.2.0/24".into()), true)));
    assert!(net("10.0.0.0/255.0.255.0")
        .unwrap_err()
        .contains("not contiguous"));
    assert!(net("10.0.0.0/33").unwrap_err().contains("0 to 32"));
    assert!(net("2001:db8::/32").unwrap_err().contains("IPv4-only"));
    assert!(net("host.example").unwrap_err().contains("dotted quad"));
    assert!(net("10.1").is_err(), "inet_aton shorthand is refused");
}

#[test]
fn source_any_is_ipv4_everything_and_lists_are_trimmed() {
    let i = run(&stanza(
        "DESTINATION 192.0.2.1, 198.51.100.0/255.255.255.0\n",
    ));
    let c = &config(&i).clients[0];
    assert_eq!(
        c.sources.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        ["0.0.0.0/0"]
    );
    assert_eq!(
        c.destinations
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>(),
        ["192.0.2.1/32", "198.51.100.0/24"]
    );
    let i = run(
        &stanza("DESTINATION ANY\n").replace("SOURCE ANY", "SOURCE 10.1.2.3/24, 172.16.0.0/12")
    );
    let c = &config(&i).clients[0];
    assert_eq!(
        c.sources.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        ["10.1.2.0/24", "172.16.0.0/12"]
    );
    assert!(c.destinations.is_empty());
    assert!(has(
        &i,
        Level::Warning,
        "host bits set; fwknopd masks them and matches 10.1.2.0/24"
    ));
}

/// `DESTINATION 192.0.2.77/24` is read as fwknopd reads it (host bits masked), with a warning
/// on the DESTINATION line, like SOURCE.
#[test]
fn destination_host_bits_are_masked_with_a_warning() {
    let i = run(&stanza("DESTINATION 192.0.2.77/24\n"));
    let c = &config(&i).clients[0];
    assert_eq!(c.destinations[0].to_string(), "192.0.2.0/24");
    assert!(has(
        &i,
        Level::Warning,
        "access.conf:6: stanza `fwknop-1`: DESTINATION `192.0.2.77/24` has host bits set; fwknopd masks them and matches 192.0.2.0/24"
    ));
}

#[test]
fn a_bad_source_refuses_that_stanza_only() {
    let text = format!(
        "{}\n{}",
        stanza("").replace("SOURCE ANY", "SOURCE 10.0.0.0/255.0.255.0"),
        stanza("")
    );
    let i = run(&text);
    assert_eq!((i.clients.len(), i.failed), (1, 1));
    assert_eq!(i.clients, ["fwknop-2"]);
    assert!(has(
        &i,
        Level::Error,
        "stanza `fwknop-1`: SOURCE `10.0.0.0/255.0.255.0`: netmask"
    ));
    assert!(!i.complete());
}

// --- includes ------------------------------------------------------------------------------

#[test]
fn include_adds_stanzas_and_the_outer_stanza_goes_on_after_it() {
    // Verified with `fwknopd -D`: MAX_FW_TIMEOUT before the included file's first SOURCE is
    // ignored; FW_ACCESS_TIMEOUT after the %include still belongs to the outer stanza.
    let outer = format!("{}%include inc.conf\nFW_ACCESS_TIMEOUT 77\n", stanza(""));
    let inner = format!(
        "MAX_FW_TIMEOUT 111\n{}",
        stanza("").replace("SOURCE ANY", "SOURCE 192.168.0.0/16")
    );
    let i = run_opts(
        &[(ACCESS, &outer), ("/etc/fwknop/inc.conf", &inner)],
        None,
        &Options::default(),
    );
    let c = config(&i);
    assert_eq!(c.clients.len(), 2);
    assert_eq!((c.clients[0].timeout, c.clients[0].max_timeout), (77, 300));
    assert_eq!((c.clients[1].timeout, c.clients[1].max_timeout), (30, 300));
    assert_eq!(c.clients[1].sources[0].to_string(), "192.168.0.0/16");
    assert!(has(
        &i,
        Level::Warning,
        "/etc/fwknop/inc.conf:1: `MAX_FW_TIMEOUT` comes before the first SOURCE"
    ));
}

#[test]
fn include_folder_reads_every_conf_file_sorted() {
    let a = stanza("").replace("SOURCE ANY", "SOURCE 10.0.0.1");
    let b = stanza("").replace("SOURCE ANY", "SOURCE 10.0.0.2");
    let i = run_opts(
        &[
            (ACCESS, "%include_folder /etc/fwknop/access.d\n"),
            ("/etc/fwknop/access.d/20-b.conf", &b),
            ("/etc/fwknop/access.d/10-a.conf", &a),
            (
                "/etc/fwknop/access.d/30-c.conf.disabled",
                "SOURCE 10.0.0.3\n",
            ),
        ],
        None,
        &Options::default(),
    );
    let c = config(&i);
    let srcs: Vec<String> = c.clients.iter().map(|c| c.sources[0].to_string()).collect();
    assert_eq!(srcs, ["10.0.0.1/32", "10.0.0.2/32"]);
}

/// A folder that cannot be listed stops the import (nothing half-converted is printed), and
/// the message names the line of the `%include_folder` and the folder.
#[test]
fn an_unlistable_include_folder_is_fatal() {
    let e = import(
        &Mem::with(&[(ACCESS, &format!("{}%include_folder access.d\n", stanza("")))]),
        Path::new(ACCESS),
        None,
        &Options::default(),
    )
    .unwrap_err();
    assert!(matches!(e, ImportError::Include { line: 6, .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "/etc/fwknop/access.conf:6: cannot list `/etc/fwknop/access.d`: No such file or directory (os error 2)"
    );
}

#[test]
fn include_keys_reads_only_key_variables() {
    let outer = "SOURCE ANY\n%include_keys /etc/fwknop/keys/alice\nOPEN_PORTS tcp/22\nREQUIRE_SOURCE_ADDRESS Y\n";
    let keys = format!("KEY_BASE64 {A_KEY}\nHMAC_KEY_BASE64 {A_HMAC}\nHMAC_DIGEST_TYPE sha512\nENCRYPTION_MODE ctr\nOPEN_PORTS tcp/1-65535\nSOURCE 1.2.3.4\n");
    let i = run_opts(
        &[(ACCESS, outer), ("/etc/fwknop/keys/alice", &keys)],
        None,
        &Options::default(),
    );
    let c = config(&i);
    let k = fwknop_key(&c.clients[0]);
    // HMAC_DIGEST_TYPE and ENCRYPTION_MODE were ignored there (as fwknopd 2.6.10 does).
    assert_eq!((k.hmac_type, k.mode), (HmacType::Sha256, EncMode::Cbc));
    assert!(k.hmac_key.is_some());
    assert_eq!(c.clients[0].sources[0].to_string(), "0.0.0.0/0");
    assert_eq!(crate::access::format_list(&c.clients[0].allow), "tcp/22");
    for var in [
        "HMAC_DIGEST_TYPE",
        "ENCRYPTION_MODE",
        "OPEN_PORTS",
        "SOURCE",
    ] {
        assert!(
            has(
                &i,
                Level::Warning,
                &format!("`{var}` in an %include_keys file is ignored")
            ),
            "{var}: {:#?}",
            i.diags
        );
    }
    // Outside a stanza it does nothing.
    let i = run_opts(
        &[(ACCESS, &format!("%include_keys /k\n{}", stanza("")))],
        None,
        &Options::default(),
    );
    assert!(has(
        &i,
        Level::Warning,
        "`%include_keys` outside a stanza is ignored"
    ));
}

#[test]
fn include_depth_is_three_levels() {
    let s = |n: u8| stanza("").replace("SOURCE ANY", &format!("SOURCE 10.0.{n}.0/24"));
    let three = [
        (ACCESS, format!("{}%include /e/2.conf\n", s(1))),
        ("/e/2.conf", format!("{}%include /e/3.conf\n", s(2))),
        ("/e/3.conf", s(3)),
    ];
    let files: Vec<(&str, &str)> = three.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let i = run_opts(&files, None, &Options::default());
    assert_eq!(config(&i).clients.len(), 3);

    let mut four = three.to_vec();
    four[2].1 = format!("{}%include /e/4.conf\n", s(3));
    four.push(("/e/4.conf", s(4)));
    let files: Vec<(&str, &str)> = four.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let e = import(
        &Mem::with(&files),
        Path::new(ACCESS),
        None,
        &Options::default(),
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(text.starts_with("/e/3.conf:6: "), "{text}");
    assert!(text.contains("more than 3 levels"), "{text}");
}

#[test]
fn include_loops_are_named() {
    let a = format!("{}%include /etc/fwknop/b.conf\n", stanza(""));
    let b = "%include /etc/fwknop/access.conf\n";
    let e = import(
        &Mem::with(&[(ACCESS, &a), ("/etc/fwknop/b.conf", b)]),
        Path::new(ACCESS),
        None,
        &Options::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/fwknop/b.conf:1: include loop: /etc/fwknop/access.conf -> /etc/fwknop/b.conf -> /etc/fwknop/access.conf; remove the `%include` that leads back"
    );
    let self_loop = format!("{}%include access.conf\n", stanza(""));
    assert!(import(
        &Mem::with(&[(ACCESS, &self_loop)]),
        Path::new(ACCESS),
        None,
        &Options::default()
    )
    .unwrap_err()
    .to_string()
    .contains("include loop"));
}

#[test]
fn unreadable_files_are_fatal() {
    let e = import(
        &Mem::default(),
        Path::new(ACCESS),
        None,
        &Options::default(),
    )
    .unwrap_err();
    assert!(matches!(e, ImportError::Read { .. }));
    assert!(
        e.to_string()
            .starts_with("cannot read /etc/fwknop/access.conf: No such file"),
        "{e}"
    );
    let e = import(
        &Mem::with(&[(ACCESS, "SOURCE ANY\n%include /nope.conf\n")]),
        Path::new(ACCESS),
        None,
        &Options::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("/etc/fwknop/access.conf:2: cannot read included `/nope.conf`"),
        "{e}"
    );
    let e = import(
        &Mem::with(&[(ACCESS, &stanza(""))]),
        Path::new(ACCESS),
        Some(Path::new("/etc/fwknop/fwknopd.conf")),
        &Options::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("/etc/fwknop/fwknopd.conf"), "{e}");
}

// --- variable mapping ----------------------------------------------------------------------

#[test]
fn every_mapped_variable_lands_in_its_key() {
    let text = "# name: bob-laptop\nSOURCE 203.0.113.0/24\nDESTINATION 192.0.2.10\nKEY fwknoptest\nHMAC_KEY hmactest\nHMAC_DIGEST_TYPE SHA512\nENCRYPTION_MODE ctr\nOPEN_PORTS tcp/22,UDP/53\nRESTRICT_PORTS tcp/23\nFW_ACCESS_TIMEOUT 45\nMAX_FW_TIMEOUT 900\nREQUIRE_USERNAME bob\nREQUIRE_SOURCE Y\nACCESS_EXPIRE 01/31/2027\n";
    let i = run(text);
    assert!(i.complete(), "{:#?}", i.diags);
    let c = config(&i);
    let [b] = c.clients.as_slice() else {
        panic!("one client")
    };
    assert_eq!(b.name, "bob-laptop");
    assert_eq!(b.sources[0].to_string(), "203.0.113.0/24");
    assert_eq!(b.destinations[0].to_string(), "192.0.2.10/32");
    assert_eq!(crate::access::format_list(&b.allow), "tcp/22,udp/53");
    assert_eq!(crate::access::format_list(&b.deny), "tcp/23");
    assert_eq!((b.timeout, b.max_timeout), (45, 900));
    assert_eq!(b.require_username.as_deref(), Some("bob"));
    assert!(b.require_source_match);
    assert_eq!(b.expires_at, Some(1_801_353_600));
    let k = fwknop_key(b);
    assert_eq!(k.key.as_slice(), b"fwknoptest");
    assert_eq!(
        k.hmac_key.as_deref().map(Vec::as_slice),
        Some(&b"hmactest"[..])
    );
    assert_eq!((k.hmac_type, k.mode), (HmacType::Sha512, EncMode::Ctr));
    let text = i.toml.as_ref().unwrap();
    assert!(
        text.contains(
            "key = \"fwknoptest\"\nhmac_key = \"hmactest\"\nhmac = \"sha512\"\nmode = \"ctr\"\n"
        ),
        "{}",
        text.as_str()
    );
    assert!(text.contains("# ACCESS_EXPIRE 01/31/2027 (UTC midnight; fwknopd used local time)"));
}

#[test]
fn defaults_are_fwknopds() {
    let i = run(&stanza(""));
    let c = config(&i);
    let a = &c.clients[0];
    assert_eq!(a.name, "fwknop-1");
    assert_eq!((a.timeout, a.max_timeout), (30, 300));
    assert_eq!((c.server.port, c.server.max_age), (62201, 120));
    let k = fwknop_key(a);
    assert_eq!((k.hmac_type, k.mode), (HmacType::Sha256, EncMode::Cbc));
    assert!(a.require_username.is_none() && a.expires_at.is_none() && a.deny.is_empty());
    // FW_ACCESS_TIMEOUT 0 means "use the default" in fwknopd (set_acc_defaults).
    assert_eq!(
        config(&run(&stanza("FW_ACCESS_TIMEOUT 0\n"))).clients[0].timeout,
        30
    );
}

#[test]
fn keys_repeated_or_in_both_forms_last_line_wins() {
    // `fwknopd -D`: a KEY line after KEY_BASE64 replaces it, and vice versa.
    let i = run(&stanza("KEY abcdefgh\n"));
    assert_eq!(
        fwknop_key(&config(&i).clients[0]).key.as_slice(),
        b"abcdefgh"
    );
    assert!(has(
        &i,
        Level::Warning,
        "both KEY and KEY_BASE64 are set; fwknopd uses the last one (KEY)"
    ));
}

#[test]
fn expiry_forms() {
    let at = |extra: &str| config(&run(&stanza(extra))).clients[0].expires_at;
    assert_eq!(
        at("ACCESS_EXPIRE 1/5/2027\n"),
        crate::config::date_to_unix(2027, 1, 5)
    );
    assert_eq!(at("ACCESS_EXPIRE 01/31/27\n"), Some(1_801_353_600));
    assert_eq!(at("ACCESS_EXPIRE_EPOCH 1900000000\n"), Some(1_900_000_000));
    // Both set: the later line wins (one field in fwknopd).
    assert_eq!(
        at("ACCESS_EXPIRE_EPOCH 1900000000\nACCESS_EXPIRE 01/31/2027\n"),
        Some(1_801_353_600)
    );
    for bad in [
        "ACCESS_EXPIRE 2027-01-31\n",
        "ACCESS_EXPIRE 02/30/2027\n",
        "ACCESS_EXPIRE 01/31/2027/1\n",
        "ACCESS_EXPIRE_EPOCH soon\n",
    ] {
        let i = run(&stanza(bad));
        assert!(i.toml.is_none() && i.failed == 1, "{bad}");
    }
}

#[test]
fn timeouts_are_made_consistent() {
    let i = run(&stanza("FW_ACCESS_TIMEOUT 600\nMAX_FW_TIMEOUT 300\n"));
    let c = &config(&i).clients[0];
    assert_eq!((c.timeout, c.max_timeout), (600, 600));
    assert!(has(
        &i,
        Level::Warning,
        "FW_ACCESS_TIMEOUT 600 is more than MAX_FW_TIMEOUT 300"
    ));
    let i = run(&stanza("MAX_FW_TIMEOUT 99999999\n"));
    assert_eq!(
        config(&i).clients[0].max_timeout,
        crate::config::MAX_MAX_TIMEOUT
    );
    assert!(has(
        &i,
        Level::Warning,
        "more than nfknock's limit of one week"
    ));
    let i = run(&stanza("FW_ACCESS_TIMEOUT 30s\n"));
    assert!(has(
        &i,
        Level::Error,
        "FW_ACCESS_TIMEOUT `30s` is not a number of seconds"
    ));
}

/// An `FW_ACCESS_TIMEOUT` beyond nfknock's one-week limit becomes one week, said on its line;
/// `max_timeout` follows it up (nfknock needs timeout <= max_timeout).
#[test]
fn an_access_timeout_over_a_week_is_capped() {
    let week = crate::config::MAX_MAX_TIMEOUT;
    let i = run(&stanza("FW_ACCESS_TIMEOUT 99999999\n"));
    let c = &config(&i).clients[0];
    assert_eq!((c.timeout, c.max_timeout), (week, week));
    assert!(has(
        &i,
        Level::Warning,
        &format!("access.conf:6: stanza `fwknop-1`: FW_ACCESS_TIMEOUT 99999999 is more than nfknock's limit of one week; timeout = {week}")
    ));
}

#[test]
fn ports_are_case_insensitive_and_strict() {
    assert_eq!(
        crate::access::format_list(&parse_ports("TCP/22, udp/53 ,tcp/22").unwrap()),
        "tcp/22,udp/53"
    );
    for bad in ["tcp/0", "icmp/0", "tcp/65536", "tcp/22,", "22", "tcp/ssh"] {
        assert!(parse_ports(bad).is_err(), "{bad}");
    }
    let i = run(&stanza("RESTRICT_PORTS tcp/0\n"));
    assert!(has(
        &i,
        Level::Error,
        "RESTRICT_PORTS `tcp/0` is not a proto/port"
    ));
}

#[test]
fn a_stanza_without_open_ports_needs_protect() {
    let text = stanza("").replace("OPEN_PORTS tcp/22\n", "");
    let i = run(&text);
    assert!(i.toml.is_none());
    let e = messages(&i, Level::Error);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].contains("has no OPEN_PORTS, so fwknopd let it open any port")
            && e[0].contains("`--protect tcp/22,...`"),
        "{}",
        e[0]
    );

    let opts = Options {
        protect: Some(crate::access::parse_list("tcp/22,tcp/443").unwrap()),
    };
    let i = run_opts(&[(ACCESS, &text)], None, &opts);
    assert!(i.complete(), "{:#?}", i.diags);
    assert_eq!(
        crate::access::format_list(&config(&i).clients[0].allow),
        "tcp/22,tcp/443"
    );
    assert!(i
        .toml
        .as_ref()
        .unwrap()
        .contains("allow = [\"tcp/22\", \"tcp/443\"]   # no OPEN_PORTS: the --protect list"));
}

#[test]
fn no_hmac_key_means_no_hmac_with_a_warning() {
    let i = run("SOURCE ANY\nKEY fwknoptest\nOPEN_PORTS tcp/22\nREQUIRE_SOURCE_ADDRESS Y\nHMAC_DIGEST_TYPE sha1\n");
    let c = config(&i);
    assert!(fwknop_key(&c.clients[0]).hmac_key.is_none());
    assert!(i.toml.as_ref().unwrap().contains("no_hmac = true"));
    assert!(!i.toml.as_ref().unwrap().contains("\nhmac ="));
    assert!(has(
        &i,
        Level::Warning,
        "has no HMAC key: imported with `no_hmac = true`"
    ));
    assert!(has(
        &i,
        Level::Warning,
        "HMAC_DIGEST_TYPE without an HMAC key is ignored"
    ));
    assert!(i.complete());
}

#[test]
fn require_source_address_default_is_off_with_a_recommendation() {
    let i = run(&stanza("").replace("REQUIRE_SOURCE_ADDRESS Y\n", ""));
    assert!(!config(&i).clients[0].require_source_match);
    assert!(has(&i, Level::Warning, "REQUIRE_SOURCE_ADDRESS is off (fwknop's default): imported as `require_source_match = false`"));
    assert!(has(&i, Level::Warning, "set REQUIRE_SOURCE_ADDRESS Y"));
    assert!(i.complete(), "a warning, not an error");
}

#[test]
fn key_problems_refuse_the_stanza() {
    let cases = [
        (
            stanza("").replace(A_KEY, "__CHANGEME__"),
            "KEY_BASE64 is fwknop's placeholder `__CHANGEME__`",
        ),
        (
            stanza("").replace(A_KEY, "not*base64"),
            "KEY_BASE64 is not valid base64",
        ),
        (
            stanza("KEY 0123456789abcdef0123456789abcdefX\n"),
            "KEY is 33 bytes long; an fwknop key is 1 to 32 bytes",
        ),
        (
            stanza(&format!("HMAC_KEY_BASE64 {A_KEY}\n")),
            "HMAC_KEY_BASE64 equals the encryption key",
        ),
        (
            stanza("ENCRYPTION_MODE legacy\n"),
            "legacy cannot be combined with an HMAC key",
        ),
        (
            stanza("ENCRYPTION_MODE PCBC\n"),
            "ENCRYPTION_MODE `PCBC` is not one of",
        ),
        (
            stanza("HMAC_DIGEST_TYPE sha224\n"),
            "HMAC_DIGEST_TYPE `sha224` is not one of",
        ),
        (
            stanza("REQUIRE_USERNAME a:b\n"),
            "REQUIRE_USERNAME contains `:`",
        ),
        (
            "SOURCE ANY\nOPEN_PORTS tcp/22\n".to_string(),
            "has no KEY or KEY_BASE64; add the client's Rijndael key",
        ),
    ];
    for (text, needle) in cases {
        let i = run(&text);
        assert!(i.toml.is_none() && i.failed == 1, "{needle}");
        assert!(has(&i, Level::Error, needle), "{needle}: {:#?}", i.diags);
        // No key material in any message.
        for d in &i.diags {
            assert!(
                !d.message.contains(A_KEY) && !d.message.contains(A_HMAC),
                "{d}"
            );
        }
    }
    // Legacy without HMAC converts (with the checker's own warning left to `nfknock check`).
    let i = run("SOURCE ANY\nKEY fwknoptest\nENCRYPTION_MODE legacy\nOPEN_PORTS tcp/22\nREQUIRE_SOURCE_ADDRESS Y\n");
    assert_eq!(fwknop_key(&config(&i).clients[0]).mode, EncMode::Legacy);
}

/// The key limits are the wire format's (`wire::fwknop`, fwknop's `RIJNDAEL_MAX_KEYSIZE` and
/// `MAX_DIGEST_BLOCK_LEN`), not a copy: a key of the longest length converts, one byte more is
/// refused with the limit in the message.
#[test]
fn key_limits_are_the_wire_formats() {
    use crate::wire::fwknop::{MAX_HMAC_KEY_LEN, MAX_KEY_LEN};
    let access = |key_len: usize, hmac_len: usize| {
        format!(
            "SOURCE ANY\nKEY {}\nHMAC_KEY {}\nOPEN_PORTS tcp/22\nREQUIRE_SOURCE_ADDRESS Y\n",
            "k".repeat(key_len),
            "h".repeat(hmac_len)
        )
    };
    let i = run(&access(MAX_KEY_LEN, MAX_HMAC_KEY_LEN));
    let k = fwknop_key(&config(&i).clients[0]).clone();
    assert_eq!(
        (k.key.len(), k.hmac_key.map(|h| h.len())),
        (MAX_KEY_LEN, Some(MAX_HMAC_KEY_LEN))
    );
    let i = run(&access(MAX_KEY_LEN + 1, MAX_HMAC_KEY_LEN));
    assert!(i.toml.is_none(), "{:#?}", i.diags);
    assert!(has(
        &i,
        Level::Error,
        &format!(
            "KEY is {} bytes long; an fwknop key is 1 to {MAX_KEY_LEN} bytes",
            MAX_KEY_LEN + 1
        )
    ));
    let i = run(&access(MAX_KEY_LEN, MAX_HMAC_KEY_LEN + 1));
    assert!(i.toml.is_none(), "{:#?}", i.diags);
    assert!(has(
        &i,
        Level::Error,
        &format!(
            "HMAC_KEY is {} bytes long; an fwknop HMAC key is 1 to {MAX_HMAC_KEY_LEN} bytes",
            MAX_HMAC_KEY_LEN + 1
        )
    ));
}

#[test]
fn unsupported_variables_are_named_with_what_to_do() {
    let text = stanza(
        "GPG_DECRYPT_ID ABCD1234\nGPG_DECRYPT_PW s3cret-gpg-pass\nFORCE_SNAT 192.0.2.1\nFORCE_MASQUERADE Y\nDISABLE_DNAT N\nFORWARD_ALL N\nWHATEVER 1\n",
    );
    let i = run(&text);
    assert!(i.complete(), "warnings only: {:#?}", i.diags);
    for needle in [
        "GPG_DECRYPT_ID: GnuPG SPA is not supported; issue Rijndael+HMAC keys with `fwknop --key-gen`",
        "GPG_DECRYPT_PW: GnuPG SPA is not supported",
        "FORCE_SNAT without FORCE_NAT: nothing is forwarded",
        "FORCE_MASQUERADE without FORCE_NAT",
        "unknown access.conf variable `WHATEVER`",
    ] {
        assert!(has(&i, Level::Warning, needle), "{needle}: {:#?}", i.diags);
    }
    // `N` is what nfknock does anyway: nothing to say.
    assert!(
        !has(&i, Level::Warning, "DISABLE_DNAT N") && !has(&i, Level::Warning, "FORWARD_ALL N")
    );
    // A GPG passphrase is never echoed.
    assert!(!i
        .diags
        .iter()
        .any(|d| d.message.contains("s3cret-gpg-pass")));
}

/// Issue 10 §1: FORCE_NAT becomes the client's `nat` (every allowed port forwarded to the
/// host), with FORCE_SNAT / FORCE_MASQUERADE as its source translation; the checker accepts
/// the output.
#[test]
fn force_nat_stanzas_become_nat_entries() {
    use crate::access::SourceNat;
    use crate::config::NatTo;
    for (extra, source) in [
        ("", SourceNat::Keep),
        (
            "FORCE_SNAT 192.168.10.1\n",
            SourceNat::To("192.168.10.1".parse().unwrap()),
        ),
        ("FORCE_MASQUERADE Y\n", SourceNat::Masquerade),
        (
            "FORCE_SNAT 192.168.10.1\nFORCE_MASQUERADE Y\n",
            SourceNat::Masquerade,
        ),
    ] {
        let text = format!(
            "SOURCE ANY\nKEY_BASE64 {A_KEY}\nHMAC_KEY_BASE64 {A_HMAC}\nOPEN_PORTS tcp/22,tcp/80\nREQUIRE_SOURCE_ADDRESS Y\nFORCE_NAT 192.168.10.2 2222\n{extra}"
        );
        let i = run(&text);
        let c = &config(&i).clients[0];
        let to = NatTo::Host("192.168.10.2:2222".parse().unwrap());
        let got: Vec<_> = c
            .nat
            .iter()
            .map(|r| (r.access.to_string(), r.to, r.source))
            .collect();
        assert_eq!(
            got,
            [
                ("tcp/22".to_string(), to, source),
                ("tcp/80".to_string(), to, source)
            ],
            "{extra}"
        );
        assert!(has(&i, Level::Warning, "FORCE_NAT 192.168.10.2 2222: every port of this client's `allow` is forwarded to 192.168.10.2:2222"));
    }
    for bad in [
        "FORCE_NAT 192.168.10.2\n",
        "FORCE_NAT host 22\n",
        "FORCE_NAT 192.168.10.2 0\n",
        "FORCE_NAT 192.168.10.2 22\nFORCE_SNAT nowhere\n",
    ] {
        let i = run(&stanza(bad));
        assert!(i.toml.is_none(), "{bad}");
        assert!(has(&i, Level::Error, "FORCE_"), "{bad}: {:#?}", i.diags);
    }
}

/// FORCE_NAT with DISABLE_DNAT Y: a routed target (`dnat = false`).
#[test]
fn disable_dnat_becomes_a_routed_nat_entry() {
    let i = run(&stanza("FORCE_NAT 192.168.10.2 22\nDISABLE_DNAT Y\n"));
    let c = &config(&i).clients[0];
    assert_eq!(c.nat.len(), 1);
    assert!(!c.nat[0].dnat);
    assert_eq!(c.nat[0].to.to_string(), "192.168.10.2:22");
    assert!(has(
        &i,
        Level::Warning,
        "with DISABLE_DNAT: the client routes to 192.168.10.2:22"
    ));
    // Without FORCE_NAT there is nothing to route.
    let i = run(&stanza("DISABLE_DNAT Y\n"));
    assert!(has(&i, Level::Warning, "DISABLE_DNAT without FORCE_NAT"));
}

#[test]
fn gateway_stanzas_are_refused() {
    for (extra, needle) in [
        ("FORWARD_ALL Y\n", "FORWARD_ALL Y without a FORCE_NAT host"),
        (
            "FORWARD_ALL Y\nFORCE_NAT 0.0.0.0 0\n",
            "FORWARD_ALL Y without a FORCE_NAT host",
        ),
        (
            "FORCE_NAT 192.168.1.5 2222\nDISABLE_DNAT Y\n",
            "DISABLE_DNAT: the client connects to 192.168.1.5:2222 itself",
        ),
        (
            "FORCE_NAT 192.168.1.5 22\nDISABLE_DNAT Y\nFORCE_MASQUERADE Y\n",
            "DISABLE_DNAT with FORCE_SNAT/FORCE_MASQUERADE",
        ),
        (
            "ENCRYPTION_MODE asymmetric\n",
            "ENCRYPTION_MODE asymmetric: GnuPG SPA is not supported",
        ),
    ] {
        let i = run(&stanza(extra));
        assert!(i.toml.is_none(), "{extra}");
        assert!(has(&i, Level::Error, needle), "{needle}: {:#?}", i.diags);
    }
    let i = run("SOURCE ANY\nGPG_DECRYPT_ID ABCD\nGPG_REMOTE_ID EF01\nOPEN_PORTS tcp/22\n");
    assert!(has(
        &i,
        Level::Error,
        "has no KEY or KEY_BASE64, only GnuPG settings: GnuPG SPA is not supported"
    ));
}

#[test]
fn names_from_comments() {
    let text = format!(
        "# name: alice\n\n{}# name: bad name!\n{}{}# name: alice\n{}",
        stanza(""),
        stanza(""),
        stanza("").replace("SOURCE ANY\n", "SOURCE ANY\n# name: carol\nKEY x\n"),
        stanza("")
    );
    let i = run(&text);
    let c = config(&i);
    let names: Vec<&str> = c.clients.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["alice", "fwknop-2", "carol", "fwknop-4"]);
    assert!(has(
        &i,
        Level::Warning,
        "`# name: bad name!` is not a valid client name"
    ));
    assert!(has(
        &i,
        Level::Warning,
        "`# name: alice` is already taken; using `fwknop-4`"
    ));
}

/// A `# name:` that is another stanza's fallback name (`fwknop-<n>`) must not be handed out
/// twice: stanza 2 below needs its fallback (its own name is invalid, then taken), so stanza
/// 1 may not have it. Two clients with one name made the whole import fail `nfknock check`.
#[test]
fn a_name_comment_never_takes_another_stanzas_fallback_name() {
    for second in ["# name: bad name!\n", "# name: fwknop-2\n"] {
        let text = format!("# name: fwknop-2\n{}{second}{}", stanza(""), stanza(""));
        let i = run(&text);
        assert!(
            !has(&i, Level::Error, "refused by `nfknock check`"),
            "{second:?}: {:#?}",
            i.diags
        );
        let c = config(&i);
        let names: Vec<&str> = c.clients.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["fwknop-1", "fwknop-2"], "{second:?}");
        assert!(
            has(
                &i,
                Level::Warning,
                "`# name: fwknop-2` is already taken; using `fwknop-1`"
            ),
            "{second:?}: {:#?}",
            i.diags
        );
        assert!(i.complete(), "{second:?}");
    }
    // A stanza may carry its own fallback name.
    let i = run(&format!("{}# name: fwknop-2\n{}", stanza(""), stanza("")));
    let names: Vec<String> = config(&i).clients.iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, ["fwknop-1", "fwknop-2"]);
    assert!(messages(&i, Level::Warning)
        .iter()
        .all(|m| !m.contains("# name")));
}

/// nfknock's checker judges each converted client. `KEY_BASE64` decoding to fwknop's
/// placeholder `__CHANGEME__` passes the stanza's own checks (its text is not the placeholder)
/// but `nfknock check` refuses it: the stanza is reported with the checker's words and left
/// out, the others are imported, and the import is not complete (exit status 1).
#[test]
fn the_checker_judges_each_converted_client() {
    let placeholder =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "__CHANGEME__");
    let bad = stanza("").replace(A_KEY, &placeholder);
    let i = run(&format!("{}# name: good\n{}", bad, stanza("")));
    assert_eq!(i.clients, ["good"]);
    assert_eq!(i.failed, 1);
    assert!(!i.complete());
    let errors = messages(&i, Level::Error);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with("error: /etc/fwknop/access.conf:1: stanza `fwknop-1`: the converted client would be refused by `nfknock check`: `client[1].fwknop.key_base64`: is fwknop's placeholder `__CHANGEME__`"),
        "{}",
        errors[0]
    );
    assert_eq!(config(&i).clients.len(), 1);
}

#[test]
fn an_empty_file_is_an_error() {
    let i = run("# nothing here\n");
    assert!(i.toml.is_none() && !i.complete());
    assert!(has(&i, Level::Error, "no SOURCE line found"));
}

// --- fwknopd.conf --------------------------------------------------------------------------

fn daemon(text: &str) -> DaemonSettings {
    parse_fwknopd_conf(text, Path::new("/etc/fwknop/fwknopd.conf"))
}

#[test]
fn knock_port_from_the_capture_mode() {
    assert_eq!(daemon("").port, 62201);
    assert_eq!(daemon("PCAP_FILTER udp port 40001;").port, 40001);
    assert_eq!(daemon("PCAP_FILTER udp dst port 40002;").port, 40002);
    assert_eq!(daemon("PCAP_FILTER   udp port 40003 ;\n").port, 40003);
    let d = daemon("PCAP_FILTER udp port 40004 and not src host 192.0.2.1;");
    assert_eq!(d.port, 40004);
    assert!(
        d.diags[0]
            .message
            .contains("only the UDP port 40004 was taken"),
        "{:?}",
        d.diags
    );
    let d = daemon("PCAP_FILTER tcp port 80;");
    assert_eq!(d.port, 62201);
    assert!(d.diags[0].message.contains("names no `udp port N`"));
    assert_eq!(
        daemon("ENABLE_UDP_SERVER Y;\nUDPSERV_PORT 40005;\nPCAP_FILTER udp port 1;").port,
        40005
    );
    assert_eq!(
        daemon("ENABLE_UDP_SERVER N;\nUDPSERV_PORT 40005;\nPCAP_FILTER udp port 40006;").port,
        40006
    );
    assert_eq!(daemon("ENABLE_NFQ_CAPTURE Y;\nNFQ_PORT 40007;").port, 40007);
    assert_eq!(daemon("ENABLE_NFQ_CAPTURE Y;").port, 62201);
    assert!(daemon("ENABLE_UDP_SERVER Y;\nUDPSERV_PORT 0;").diags[0]
        .message
        .contains("not a port"));
}

/// A `PCAP_FILTER` whose `udp` is not followed by `port N` / `dst port N` (here `udp and port
/// N`) gives no port: fwknopd's default is written, with a warning naming the filter.
#[test]
fn pcap_filter_without_udp_port_falls_back_with_a_warning() {
    let d = daemon("PCAP_FILTER udp and port 40008;");
    assert_eq!(d.port, 62201);
    assert_eq!(d.diags.len(), 1, "{:?}", d.diags);
    assert!(
        d.diags[0].message.contains("names no `udp port N`"),
        "{:?}",
        d.diags
    );
}

#[test]
fn packet_age_and_aging() {
    let d = daemon("MAX_SPA_PACKET_AGE 90;");
    assert_eq!((d.max_age, d.diags.len()), (90, 0));
    let d = daemon("ENABLE_SPA_PACKET_AGING N;\nMAX_SPA_PACKET_AGE 60;");
    assert_eq!(d.max_age, 60);
    assert!(
        d.diags[0].message.starts_with(
            "ENABLE_SPA_PACKET_AGING N: nfknock always checks the knock's age (max_age = 60)"
        ),
        "{:?}",
        d.diags
    );
    let d = daemon("MAX_SPA_PACKET_AGE 86400;");
    assert_eq!(d.max_age, crate::config::MAX_MAX_AGE);
    assert_eq!(daemon("MAX_SPA_PACKET_AGE 0;").max_age, 120);
}

#[test]
fn fwknopd_features_without_equivalent_are_named() {
    let d = daemon("ENABLE_SPA_OVER_HTTP Y;\nENABLE_TCP_SERVER Y;\nENABLE_IPT_FORWARDING Y;\nENABLE_DIGEST_PERSISTENCE N;\nENABLE_IPT_OUTPUT N;\nPCAP_INTF eth0;\n");
    let all: Vec<&str> = d.diags.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(all.len(), 4, "{all:#?}");
    assert!(all[0].starts_with("ENABLE_SPA_OVER_HTTP Y: SPA over HTTP is not supported"));
    assert!(all[1].starts_with("ENABLE_TCP_SERVER Y: knocks over TCP"));
    assert!(all[2].starts_with("ENABLE_IPT_FORWARDING Y: NAT access messages"));
    assert!(all[3].starts_with("ENABLE_DIGEST_PERSISTENCE N: nfknock always keeps a replay cache"));
}

#[test]
fn fwknopd_conf_settings_reach_the_server_section() {
    let i = run_opts(
        &[
            (ACCESS, &stanza("")),
            (
                "/etc/fwknop/fwknopd.conf",
                "PCAP_FILTER udp dst port 40000;\nMAX_SPA_PACKET_AGE 90;\n",
            ),
        ],
        Some("/etc/fwknop/fwknopd.conf"),
        &Options::default(),
    );
    let c = config(&i);
    assert_eq!((c.server.port, c.server.max_age), (40000, 90));
    let t = i.toml.as_ref().unwrap();
    assert!(
        t.contains("port = 40000          # PCAP_FILTER \"udp dst port 40000\""),
        "{}",
        t.as_str()
    );
}

/// The seed's CMD_CYCLE example becomes a command cycle: argv split as fwknopd's execvpe
/// does, `$SRC`/`$CLIENT_TIMEOUT` kept, `NONE` → no `on_expire`, the timer the grant length;
/// ENABLE_CMD_EXEC and sudo become an (empty) allow-list with the sudo user/group. The output
/// passes the real checker.
#[test]
fn command_variables_are_imported() {
    let text = stanza(
        "CMD_CYCLE_OPEN /usr/sbin/ipset add whitelist $SRC timeout $CLIENT_TIMEOUT -exist\nCMD_CYCLE_CLOSE NONE\nCMD_CYCLE_TIMER 60\nENABLE_CMD_EXEC Y\nCMD_EXEC_USER fwk\nENABLE_CMD_SUDO_EXEC Y\nCMD_SUDO_EXEC_USER www\nCMD_SUDO_EXEC_GROUP web\n",
    );
    let i = run(&text);
    assert!(i.complete(), "{:#?}", i.diags);
    let toml = i.toml.as_ref().unwrap();
    for line in [
        "grant = \"command\"",
        "on_grant = [\"/usr/sbin/ipset\", \"add\", \"whitelist\", \"$SRC\", \"timeout\", \"$CLIENT_TIMEOUT\", \"-exist\"]",
        "commands = []",
        "command_sudo_user = \"www\"",
        "command_sudo_group = \"web\"",
        "command_user = \"fwk\"",
        "command_net_admin = true",
        "timeout = 60",
        "max_timeout = 60",
    ] {
        assert!(toml.contains(line), "{line}:\n{}", toml.as_str());
    }
    assert!(!toml.contains("on_expire"));
    assert!(has(&i, Level::Warning, "fill in the exact argv"));
    assert!(has(
        &i,
        Level::Warning,
        "runs them as `command_user` with CAP_NET_ADMIN"
    ));
}

/// A command line written for a shell cannot be carried over: refused, naming the stanza, the
/// line and what the syntax would have meant.
#[test]
fn shell_command_lines_are_refused_with_the_line() {
    for (line, what) in [
        (
            "CMD_CYCLE_OPEN /usr/sbin/ipset add wl $SRC && /bin/x",
            "`&&`",
        ),
        ("CMD_CYCLE_OPEN /bin/rm /tmp/$SRC*", "a glob"),
        (
            "CMD_CYCLE_OPEN /usr/sbin/ipset add wl $SRC | /usr/bin/logger",
            "a pipe",
        ),
        (
            "CMD_CYCLE_OPEN /usr/sbin/ipset add wl $SRC > /tmp/x",
            "a redirection",
        ),
        ("CMD_CYCLE_OPEN ipset add wl $SRC", "absolute path"),
        (
            "CMD_CYCLE_OPEN /usr/sbin/ipset add wl $PKT_SRC",
            "no nfknock equivalent",
        ),
    ] {
        let i = run(&stanza(&format!("{line}\nCMD_CYCLE_CLOSE NONE\n")));
        assert_eq!(i.failed, 1, "{line}");
        let e = i
            .diags
            .iter()
            .find(|d| d.level == Level::Error)
            .unwrap_or_else(|| panic!("{line}: {:#?}", i.diags));
        assert!(
            e.message.starts_with("CMD_CYCLE_OPEN cannot be imported: ")
                && e.message.contains(what),
            "{line}: {}",
            e.message
        );
        assert_eq!(e.origin.as_ref().map(|o| o.1), Some(6), "{line}");
        assert_eq!(e.stanza.as_deref(), Some("fwknop-1"));
    }
    let i = run(&stanza("CMD_CYCLE_OPEN /bin/true\n"));
    assert!(has(
        &i,
        Level::Error,
        "CMD_CYCLE_OPEN without CMD_CYCLE_CLOSE"
    ));
    let i = run(&stanza(
        "CMD_CYCLE_OPEN /bin/true\nCMD_CYCLE_CLOSE /bin/false\n",
    ));
    assert!(has(
        &i,
        Level::Error,
        "CMD_CYCLE_CLOSE without CMD_CYCLE_TIMER"
    ));
}

#[test]
fn the_reminder_says_umask() {
    let r = secrecy_reminder(Path::new("/etc/fwknop/access.conf"));
    assert!(r.contains("umask 077; nfknock import-fwknop --access-conf /etc/fwknop/access.conf ... > /etc/nfknock/nfknock.toml"), "{r}");
}

// --- purity --------------------------------------------------------------------------------

/// The importer's source files, for the purity check below.
const SOURCES: &[(&str, &str)] = &[
    ("mod.rs", include_str!("mod.rs")),
    ("access_conf.rs", include_str!("access_conf.rs")),
    ("commands.rs", include_str!("commands.rs")),
    ("convert.rs", include_str!("convert.rs")),
    ("fwknopd_conf.rs", include_str!("fwknopd_conf.rs")),
    ("render.rs", include_str!("render.rs")),
    ("stanza.rs", include_str!("stanza.rs")),
    ("syntax.rs", include_str!("syntax.rs")),
    ("values.rs", include_str!("values.rs")),
    ("variables.rs", include_str!("variables.rs")),
];

/// The importer is pure (architecture issue: reading files belongs to the edge, `sys`): no
/// file of it names the file system, the environment, a clock or a process, so every file it
/// reads comes through the `Loader` it is given. Every `mod` of mod.rs is checked.
#[test]
fn the_importer_reads_files_only_through_its_loader() {
    let (_, root) = SOURCES[0];
    for line in root.lines() {
        if let Some(m) = line.strip_prefix("mod ").and_then(|m| m.strip_suffix(';')) {
            let file = format!("{m}.rs");
            assert!(
                m == "tests" || SOURCES.iter().any(|(f, _)| *f == file),
                "src/fwknop_import/{file} is not in SOURCES; add it so its purity is checked"
            );
        }
    }
    let forbidden = [
        "std::fs",
        "std::env",
        "std::io",
        "std::process",
        "std::time",
        "File::",
        "read_dir",
        "canonicalize",
        "libc::",
        "unsafe",
    ];
    for (file, text) in SOURCES {
        for (n, line) in text.lines().enumerate() {
            for f in forbidden {
                assert!(
                    !line.contains(f),
                    "src/fwknop_import/{file}:{}: `{f}` in the pure importer; read through the `Loader` (the file system one is `sys::FsLoader`)",
                    n + 1
                );
            }
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Importing never panics, and whatever it prints is a config `nfknock check` accepts.
    #[test]
    fn import_never_panics_and_output_always_checks(
        lines in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::string::string_regex("(SOURCE|DESTINATION|OPEN_PORTS|RESTRICT_PORTS|KEY|HMAC_KEY|HMAC_DIGEST_TYPE|ENCRYPTION_MODE|FW_ACCESS_TIMEOUT|MAX_FW_TIMEOUT|REQUIRE_USERNAME|REQUIRE_SOURCE_ADDRESS|ACCESS_EXPIRE|ACCESS_EXPIRE_EPOCH|GPG_HOME_DIR|FORCE_NAT)(:)? [ -~]{0,40}").unwrap(),
                proptest::string::string_regex("[ -~\t]{0,60}").unwrap(),
                proptest::strategy::Just(format!("KEY_BASE64 {A_KEY}")),
                proptest::strategy::Just(format!("HMAC_KEY_BASE64 {A_HMAC}")),
                proptest::strategy::Just("OPEN_PORTS tcp/22".to_string()),
                proptest::strategy::Just("SOURCE ANY".to_string()),
            ],
            0..24,
        )
    ) {
        let text = lines.join("\n");
        if let Ok(i) = import(&Mem::with(&[(ACCESS, &text)]), Path::new(ACCESS), None, &Options::default()) {
            if let Some(t) = &i.toml {
                proptest::prop_assert!(crate::config::parse(t, Path::new("/x.toml"), &crate::config::MemFiles::new(), &crate::config::AnyUser).is_ok(), "{}", t.as_str());
            }
        }
    }
}

/// Issue 10 §1: `FORWARD_ALL Y` (fwknopd's SPA gateway) becomes a `gateway` whose one network
/// is the FORCE_NAT host, with a warning to widen it; fwknopd masquerades unless FORCE_SNAT
/// names an address; the config it writes passes the real checker; no `nat` entries.
#[test]
fn forward_all_stanzas_become_gateways_to_the_force_nat_host() {
    use crate::access::SourceNat;
    for (extra, source) in [
        ("", SourceNat::Masquerade),
        ("DISABLE_DNAT Y\n", SourceNat::Masquerade),
        ("FORCE_MASQUERADE Y\n", SourceNat::Masquerade),
        (
            "FORCE_SNAT 192.168.10.1\n",
            SourceNat::To("192.168.10.1".parse().unwrap()),
        ),
    ] {
        let i = run(&stanza(&format!(
            "FORWARD_ALL Y\nFORCE_NAT 192.168.10.2 0\n{extra}"
        )));
        let c = &config(&i).clients[0];
        let g = c.gateway.as_ref().unwrap_or_else(|| panic!("{extra}"));
        assert_eq!(
            (g.networks[0].to_string(), g.networks.len(), g.source),
            ("192.168.10.2/32".to_string(), 1, source),
            "{extra}"
        );
        assert!(c.nat.is_empty(), "{extra}");
        assert!(
            has(&i, Level::Warning, "FORWARD_ALL Y with FORCE_NAT 192.168.10.2 0")
                && has(&i, Level::Warning, "widen `networks` to the internal networks the client should reach (e.g. \"192.168.10.0/24\")"),
            "{extra}: {:#?}",
            i.diags
        );
        assert!(
            i.toml.as_ref().unwrap().contains("# FORWARD_ALL: widen"),
            "{extra}"
        );
    }
    let i = run(&stanza("FORWARD_ALL N\nFORCE_NAT 192.168.10.2 22\n"));
    let c = &config(&i).clients[0];
    assert!(c.gateway.is_none() && !c.nat.is_empty());
    let i = run(&stanza(
        "FORWARD_ALL Y\nFORCE_NAT 192.168.10.2 0\nFORCE_SNAT x\n",
    ));
    assert!(i.toml.is_none());
    assert!(has(
        &i,
        Level::Error,
        "FORCE_SNAT `x` is not an IPv4 address"
    ));
}
