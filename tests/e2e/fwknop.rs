//! End-to-end fwknop compatibility: the REAL Debian fwknop client (`fwknop`, package
//! fwknop-client 2.6.x; `scripts/test` installs it) knocks on `nfknock serve` in the namespace
//! lab, and every test asserts what an admin would check — a real TCP connection to the gated
//! port that fails before the knock, succeeds after it, and fails again after expiry.
//!
//! The client runs with `--no-rc-file --no-save-args` and `HOME` set to the lab's temporary
//! directory, so nothing is written to the real home directory.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::*;

/// How the fwknop client is given its keys (and the matching `[client.fwknop]` lines).
#[derive(Clone)]
pub(super) enum Keys {
    /// `fwknop --key-gen` output: `--key-base64-rijndael K --key-base64-hmac H`.
    Base64 {
        key: String,
        hmac: String,
        hmac_type: &'static str,
    },
    /// Passphrases: `--key-rijndael P --key-hmac Q`.
    Pass { key: String, hmac: String },
    /// No HMAC (`no_hmac = true`): `--key-base64-rijndael K` alone.
    NoHmac { key: String },
}

impl Keys {
    pub(super) fn client_args(&self) -> Vec<String> {
        match self {
            Keys::Base64 {
                key,
                hmac,
                hmac_type,
            } => vec![
                "--key-base64-rijndael".into(),
                key.clone(),
                "--key-base64-hmac".into(),
                hmac.clone(),
                "--hmac-digest-type".into(),
                (*hmac_type).into(),
            ],
            Keys::Pass { key, hmac } => {
                vec![
                    "--key-rijndael".into(),
                    key.clone(),
                    "--key-hmac".into(),
                    hmac.clone(),
                ]
            }
            Keys::NoHmac { key } => vec!["--key-base64-rijndael".into(), key.clone()],
        }
    }

    pub(super) fn toml(&self) -> String {
        match self {
            Keys::Base64 {
                key,
                hmac,
                hmac_type,
            } => {
                format!("key_base64 = \"{key}\"\nhmac_key_base64 = \"{hmac}\"\nhmac = \"{hmac_type}\"\n")
            }
            Keys::Pass { key, hmac } => format!("key = \"{key}\"\nhmac_key = \"{hmac}\"\n"),
            Keys::NoHmac { key } => format!("key_base64 = \"{key}\"\nno_hmac = true\n"),
        }
    }
}

/// Run the real fwknop client in namespace `ns` with `HOME` in the lab's directory.
pub(super) fn fwknop(lab: &Lab, ns: &str, args: &[String]) -> Output {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "fwknop",
            "--no-rc-file",
            "--no-save-args",
        ])
        .args(args)
        .env("HOME", lab.dir.path())
        .output()
        .expect("run fwknop (apt-get install fwknop-client; scripts/test does it)")
}

/// `fwknop --key-gen [extra]`: parse the `KEY_BASE64:` / `HMAC_KEY_BASE64:` lines it prints.
pub(super) fn key_gen(lab: &Lab, hmac_type: &'static str) -> Keys {
    let mut args: Vec<String> = vec!["--key-gen".into()];
    if hmac_type != "sha256" {
        args.extend(["--hmac-digest-type".into(), hmac_type.into()]);
    }
    let out = fwknop(lab, &lab.srv, &args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "fwknop --key-gen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no `{name}` line in:\n{text}"))
    };
    Keys::Base64 {
        key: field("KEY_BASE64:"),
        hmac: field("HMAC_KEY_BASE64:"),
        hmac_type,
    }
}

/// Knock with the real client from `ns` to `server` for `tcp/2222`; `allow` is `-a IP`, or
/// `None` for `-s` (allow IP 0.0.0.0, "use my source").
fn knock(
    lab: &Lab,
    ns: &str,
    server: &str,
    allow: Option<&str>,
    keys: &Keys,
    extra: &[&str],
) -> Output {
    let mut args: Vec<String> = vec![
        "-A".into(),
        format!("tcp/{HOST_PORT}"),
        "-D".into(),
        server.into(),
    ];
    match allow {
        Some(ip) => args.extend(["-a".into(), ip.into()]),
        None => args.push("-s".into()),
    }
    args.extend(keys.client_args());
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = fwknop(lab, ns, &args);
    assert!(
        out.status.success(),
        "fwknop {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Knock from the client namespace for its own address.
fn knock_cli(lab: &Lab, keys: &Keys, extra: &[&str]) -> Output {
    knock(lab, &lab.cli, SRV4, Some(CLI4), keys, extra)
}

/// One `[[client]]` with fwknop credentials and any extra client keys.
fn fw_client(name: &str, keys: &Keys, client_extra: &str, fwknop_extra: &str) -> String {
    format!(
        "[[client]]\nname = \"{name}\"\nallow = [\"tcp/{HOST_PORT}\"]\n{client_extra}\n[client.fwknop]\n{}{fwknop_extra}\n",
        keys.toml()
    )
}

/// Write the daemon's config (private: it holds inline keys) and start it.
fn start(lab: &mut Lab, clients: &str) {
    start_with(lab, "", clients);
}

/// [`start`] with `server_extra` lines in `[server]`.
fn start_with(lab: &mut Lab, server_extra: &str, clients: &str) {
    let p = lab.write_config(server_extra, clients);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    lab.start_daemon();
}

fn host(ip: &str) -> SocketAddr {
    sock(ip, HOST_PORT)
}

/// Does `ns` reach the host service at `ip` within a second?
fn host_opens(ns: &str, ip: &str) -> bool {
    opens(ns, host(ip))
}

fn host_closed(ns: &str, ip: &str) -> bool {
    !tcp_open(ns, host(ip), CLOSED_WITHIN)
}

/// Wait until the daemon has logged a refusal with reason `code`.
fn refused(lab: &Lab, code: &str) -> bool {
    wait_until(Duration::from_secs(2), || rejections(&lab.log(), code) > 0).is_some()
}

/// The live grant for `addr` from `nfknock status --json`: (timeout, seconds left).
fn status_of(lab: &Lab, addr: &str) -> Option<(u64, u64)> {
    let grants = status_json(lab).unwrap_or_else(|e| panic!("status: {e}"));
    grants.iter().find(|v| v["source"] == addr).map(|v| {
        (
            v["timeout"].as_u64().unwrap(),
            v["seconds_left"].as_u64().unwrap(),
        )
    })
}

#[test]
fn keygen_keys_open_the_gate_for_that_source_and_it_expires_on_time() {
    let mut lab = Lab::new();
    let keys = key_gen(&lab, "sha256");
    start(&mut lab, &fw_client("laptop", &keys, "timeout = 2", ""));
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    assert!(host_closed(&lab.cli, SRV4), "port open before any knock");

    let t0 = Instant::now();
    knock_cli(&lab, &keys, &[]);
    assert!(
        host_opens(&lab.cli, SRV4),
        "fwknop knock did not open the port:\n{}",
        lab.log()
    );
    assert!(
        host_closed(&lab.oth, SRV_OTH4),
        "port opened for a stranger"
    );
    assert!(
        lab.log().contains("format=\"fwknop\"") || lab.log().contains("format=fwknop"),
        "{}",
        lab.log()
    );
    assert!(
        lab.log().contains("client=\"laptop\"") || lab.log().contains("client=laptop"),
        "{}",
        lab.log()
    );
    assert_eq!(
        status_of(&lab, CLI4).map(|(t, _)| t),
        Some(2),
        "grant timeout in the kernel"
    );

    let gone = wait_until(Duration::from_secs(5), || {
        !tcp_open(&lab.cli, host(SRV4), PROBE)
    });
    assert!(gone.is_some(), "grant did not expire");
    let life = t0.elapsed();
    assert!(
        life >= Duration::from_millis(1500),
        "grant of 2 s closed after {life:?}"
    );
    assert!(
        life <= Duration::from_secs(5),
        "grant of 2 s lived {life:?}"
    );
}

#[test]
fn hmac_sha512_keys_from_keygen() {
    let mut lab = Lab::new();
    let keys = key_gen(&lab, "sha512");
    start(&mut lab, &fw_client("laptop", &keys, "timeout = 2", ""));
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    assert!(host_closed(&lab.cli, SRV4));
    knock_cli(&lab, &keys, &[]);
    assert!(host_opens(&lab.cli, SRV4), "{}", lab.log());
}

#[test]
fn passphrase_keys() {
    let mut lab = Lab::new();
    let keys = Keys::Pass {
        key: "correct horse".into(),
        hmac: "battery staple".into(),
    };
    start(&mut lab, &fw_client("laptop", &keys, "timeout = 2", ""));
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    assert!(host_closed(&lab.cli, SRV4));
    knock_cli(&lab, &keys, &[]);
    assert!(host_opens(&lab.cli, SRV4), "{}", lab.log());
}

#[test]
fn ctr_mode() {
    let mut lab = Lab::new();
    let keys = key_gen(&lab, "sha256");
    start(
        &mut lab,
        &fw_client("laptop", &keys, "timeout = 2", "mode = \"ctr\""),
    );
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    // The mode is not on the wire: a CBC packet to a CTR client fails (its HMAC is fine, so
    // this is the decryption check refusing it).
    knock_cli(&lab, &keys, &[]);
    assert!(refused(&lab, "auth-failed"), "{}", lab.log());
    assert!(
        host_closed(&lab.cli, SRV4),
        "a CBC packet opened a CTR client's port"
    );
    knock_cli(&lab, &keys, &["-M", "ctr"]);
    assert!(host_opens(&lab.cli, SRV4), "{}", lab.log());
}

/// `fwknop -f 3` with a longer default: the grant is 3 s, not the default.
#[test]
fn client_timeout_is_honoured() {
    let mut lab = Lab::new();
    let keys = key_gen(&lab, "sha256");
    start(
        &mut lab,
        &fw_client("laptop", &keys, "timeout = 30\nmax_timeout = 60", ""),
    );
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let t0 = Instant::now();
    knock_cli(&lab, &keys, &["-f", "3"]);
    assert!(host_opens(&lab.cli, SRV4), "{}", lab.log());
    assert_eq!(
        status_of(&lab, CLI4).map(|(t, _)| t),
        Some(3),
        "grant timeout in the kernel"
    );
    let gone = wait_until(Duration::from_secs(6), || {
        !tcp_open(&lab.cli, host(SRV4), PROBE)
    });
    assert!(
        gone.is_some(),
        "a 3 s grant was still open after {:?}",
        t0.elapsed()
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(2500),
        "closed early: {:?}",
        t0.elapsed()
    );
}

/// `fwknop -s` asks for "my source address" (allow IP 0.0.0.0): granted to the packet's source
/// when the client may do that, refused when it must name its address.
#[test]
fn source_flag_depends_on_require_source_match() {
    let mut lab = Lab::new();
    let lax = key_gen(&lab, "sha256");
    let strict = key_gen(&lab, "sha256");
    let clients = fw_client("lax", &lax, "timeout = 2\nrequire_source_match = false", "")
        + &fw_client(
            "strict",
            &strict,
            "timeout = 2\nrequire_source_match = true",
            "",
        );
    start(&mut lab, &clients);
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));

    knock(&lab, &lab.cli, SRV4, None, &strict, &[]);
    assert!(refused(&lab, "source-required"), "{}", lab.log());
    assert!(
        host_closed(&lab.cli, SRV4),
        "-s opened the port of a require_source_match client"
    );

    knock(&lab, &lab.cli, SRV4, None, &lax, &[]);
    assert!(host_opens(&lab.cli, SRV4), "{}", lab.log());
    assert!(
        status_of(&lab, CLI4).is_some(),
        "grant not for the packet's source"
    );
    assert!(host_closed(&lab.oth, SRV_OTH4), "opened for a stranger");
}

/// The exact bytes the client sent, sent again from the same place: refused. The packet is
/// saved by the client itself (`-B FILE`).
#[test]
fn replayed_fwknop_packet_is_refused() {
    let mut lab = Lab::new();
    let keys = key_gen(&lab, "sha256");
    start(&mut lab, &fw_client("laptop", &keys, "timeout = 1", ""));
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let saved = lab.path("spa.txt");
    knock_cli(&lab, &keys, &["-B", saved.to_str().unwrap()]);
    assert!(host_opens(&lab.cli, SRV4), "{}", lab.log());
    assert!(wait_until(Duration::from_secs(4), || !tcp_open(
        &lab.cli,
        host(SRV4),
        PROBE
    ))
    .is_some());

    let text = std::fs::read_to_string(&saved).unwrap();
    let packet = text.trim_end().as_bytes().to_vec(); // `-B` adds a newline; the wire has none
    assert!(packet.len() >= 140, "saved packet: {text:?}");
    let before = rejections(&lab.log(), "replay");
    send_udp(&lab.cli, sock(SRV4, KNOCK_PORT), packet);
    assert!(
        wait_until(Duration::from_secs(2), || rejections(&lab.log(), "replay")
            > before)
        .is_some(),
        "{}",
        lab.log()
    );
    assert!(host_closed(&lab.cli, SRV4), "the replay opened the port");
}

#[test]
fn wrong_hmac_key_is_refused() {
    let mut lab = Lab::new();
    let keys = key_gen(&lab, "sha256");
    start(&mut lab, &fw_client("laptop", &keys, "timeout = 2", ""));
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let (
        Keys::Base64 { key, .. },
        Keys::Base64 {
            hmac: other_hmac, ..
        },
    ) = (&keys, key_gen(&lab, "sha256"))
    else {
        unreachable!()
    };
    let forged = Keys::Base64 {
        key: key.clone(),
        hmac: other_hmac,
        hmac_type: "sha256",
    };
    knock_cli(&lab, &forged, &[]);
    assert!(refused(&lab, "auth-failed"), "{}", lab.log());
    assert!(
        host_closed(&lab.cli, SRV4),
        "a wrong HMAC key opened the port"
    );
    // The right keys still work: the refusal was about the HMAC key.
    knock_cli(&lab, &keys, &[]);
    assert!(host_opens(&lab.cli, SRV4), "{}", lab.log());
}

/// One daemon, one knock port: a native knock and an fwknop knock, each for its own source.
#[test]
fn native_and_fwknop_knocks_on_the_same_port() {
    let mut lab = Lab::new();
    let keys = key_gen(&lab, "sha256");
    let native_key = lab.keygen("alice.key");
    let clients = format!(
        "[[client]]\nname = \"alice\"\nkey_file = \"{}\"\nallow = [\"tcp/{HOST_PORT}\"]\ntimeout = 5\n\n{}",
        native_key.display(),
        fw_client("bob-phone", &keys, "timeout = 5", "")
    );
    start(&mut lab, &clients);
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    assert!(host_closed(&lab.cli, SRV4) && host_closed(&lab.oth, SRV_OTH4));

    lab.knock(
        &lab.cli,
        SRV4,
        &[
            "--key-file",
            native_key.to_str().unwrap(),
            "--access",
            "tcp/2222",
        ],
    );
    assert!(host_opens(&lab.cli, SRV4), "native knock: {}", lab.log());
    assert!(
        host_closed(&lab.oth, SRV_OTH4),
        "native knock opened for the other host"
    );

    knock(&lab, &lab.oth, SRV_OTH4, Some(OTH4), &keys, &[]);
    assert!(
        host_opens(&lab.oth, SRV_OTH4),
        "fwknop knock: {}",
        lab.log()
    );
    let log = lab.log();
    for (who, fmt) in [("alice", "native"), ("bob-phone", "fwknop")] {
        assert!(
            log.lines()
                .any(|l| l.contains("grant") && l.contains(who) && l.contains(fmt)),
            "no {fmt} grant for {who}:\n{log}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Migrating an fwknopd access.conf.

/// An fwknopd `access.conf` with three stanzas, one of them pulled in with `%include`.
struct AccessConf {
    path: PathBuf,
    /// SOURCE 10.78.0.0/24 (the `oth` host only), base64 keys, 2 s.
    office: Keys,
    /// SOURCE 10.77.0.0/24 (the `cli` host only), passphrases, REQUIRE_USERNAME alice, 2 s.
    home: Keys,
    /// SOURCE ANY, CTR mode, SHA-512 HMAC, max 3 s for client timeouts.
    roaming: Keys,
}

fn write_access_conf(lab: &Lab) -> AccessConf {
    let office = key_gen(lab, "sha256");
    let home = Keys::Pass {
        key: "home passphrase".into(),
        hmac: "home hmac secret".into(),
    };
    let roaming = key_gen(lab, "sha512");
    let b = |k: &Keys| match k {
        Keys::Base64 { key, hmac, .. } => (key.clone(), hmac.clone()),
        Keys::Pass { .. } | Keys::NoHmac { .. } => unreachable!(),
    };
    let (ok, oh) = b(&office);
    let (rk, rh) = b(&roaming);
    let included = lab.path("home.conf");
    std::fs::write(
        &included,
        "# home network, kept in its own file\n\
         SOURCE              10.77.0.0/24\n\
         KEY                 home passphrase\n\
         HMAC_KEY            home hmac secret\n\
         OPEN_PORTS          tcp/2222\n\
         REQUIRE_USERNAME    alice\n\
         FW_ACCESS_TIMEOUT   2\n",
    )
    .unwrap();
    let path = lab.path("access.conf");
    std::fs::write(
        &path,
        format!(
            "# fwknopd access.conf\n\
             SOURCE              10.78.0.0/24\n\
             KEY_BASE64          {ok}\n\
             HMAC_KEY_BASE64     {oh}\n\
             HMAC_DIGEST_TYPE    sha256\n\
             OPEN_PORTS          tcp/2222\n\
             FW_ACCESS_TIMEOUT   2\n\
             REQUIRE_SOURCE_ADDRESS Y\n\
             \n\
             %include {}\n\
             \n\
             SOURCE              ANY\n\
             KEY_BASE64          {rk}\n\
             HMAC_KEY_BASE64     {rh}\n\
             HMAC_DIGEST_TYPE    sha512\n\
             ENCRYPTION_MODE     CTR\n\
             OPEN_PORTS          tcp/2222\n\
             FW_ACCESS_TIMEOUT   2\n\
             MAX_FW_TIMEOUT      3\n",
            included.display()
        ),
    )
    .unwrap();
    for p in [&path, &included] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    AccessConf {
        path,
        office,
        home,
        roaming,
    }
}

/// The `[[client]]` entries for `conf`, as `nfknock import-fwknop` converts them (its
/// `[server]` table is replaced by the lab's). The importer must succeed without `--protect`:
/// every stanza has OPEN_PORTS.
fn clients_from_access_conf(conf: &AccessConf) -> String {
    let out = std::process::Command::new(bin())
        .args(["import-fwknop", "--access-conf"])
        .arg(&conf.path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "import-fwknop failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = stdout
        .find("[[client]]")
        .unwrap_or_else(|| panic!("no client in:\n{stdout}"));
    stdout[first..].to_string()
}

#[test]
fn migrated_access_conf_serves_the_same_clients() {
    let mut lab = Lab::new();
    let conf = write_access_conf(&lab);
    start(&mut lab, &clients_from_access_conf(&conf));
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    assert!(host_closed(&lab.cli, SRV4) && host_closed(&lab.oth, SRV_OTH4));

    // The office keys from the home network: that stanza's SOURCE excludes it.
    knock(&lab, &lab.cli, SRV4, Some(CLI4), &conf.office, &[]);
    // The home keys with the wrong user name (from the included file's REQUIRE_USERNAME).
    knock(
        &lab,
        &lab.cli,
        SRV4,
        Some(CLI4),
        &conf.home,
        &["-U", "mallory"],
    );
    assert!(refused(&lab, "username-mismatch"), "{}", lab.log());
    // The home keys from the office network.
    knock(
        &lab,
        &lab.oth,
        SRV_OTH4,
        Some(OTH4),
        &conf.home,
        &["-U", "alice"],
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        host_closed(&lab.cli, SRV4) && host_closed(&lab.oth, SRV_OTH4),
        "{}",
        lab.log()
    );

    // Each stanza's own client, from where it is allowed.
    knock(&lab, &lab.oth, SRV_OTH4, Some(OTH4), &conf.office, &[]);
    assert!(
        host_opens(&lab.oth, SRV_OTH4),
        "office stanza: {}",
        lab.log()
    );
    knock(
        &lab,
        &lab.cli,
        SRV4,
        Some(CLI4),
        &conf.home,
        &["-U", "alice"],
    );
    assert!(
        host_opens(&lab.cli, SRV4),
        "included home stanza: {}",
        lab.log()
    );
    // Roaming (SOURCE ANY, CTR): asks for 60 s, MAX_FW_TIMEOUT caps it at 3.
    assert!(wait_until(Duration::from_secs(5), || host_closed(&lab.cli, SRV4)).is_some());
    knock(
        &lab,
        &lab.cli,
        SRV4,
        None,
        &conf.roaming,
        &["-M", "ctr", "-f", "60"],
    );
    assert!(host_opens(&lab.cli, SRV4), "roaming stanza: {}", lab.log());
    assert_eq!(status_of(&lab, CLI4).map(|(t, _)| t), Some(3));
    let log = lab.log();
    for n in 1..=3 {
        assert!(
            log.contains(&format!("fwknop-{n}")),
            "stanza {n} never granted:\n{log}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Security issue: re-spelled knocks (item 1), grants by a later stanza (item 2), IPv4-mapped
// IPv6 sources (item 8).

/// Grants the daemon logged (grant lines carry `ttl=`; refusals never do).
fn grants(lab: &Lab) -> usize {
    lab.log()
        .lines()
        .filter(|l| l.contains("grant") && l.contains("ttl="))
        .count()
}

/// Refusals the daemon logged, whatever their reason (`NFKNOCK_LOG=debug` logs every one).
fn all_rejections(lab: &Lab) -> usize {
    lab.log().matches("rejected knock").count()
}

/// Knock from the client namespace and return the exact wire string (`-B FILE` writes it with
/// a newline the wire does not have).
fn knock_saving(lab: &Lab, keys: &Keys, extra: &[&str], name: &str) -> String {
    let saved = lab.path(name);
    let mut args = extra.to_vec();
    args.extend(["-B", saved.to_str().unwrap()]);
    knock_cli(lab, keys, &args);
    let text = std::fs::read_to_string(&saved).unwrap();
    let packet = text.trim_end().to_string();
    assert!(packet.len() >= 140, "saved packet: {text:?}");
    packet
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Spellings of `text`, the end of a base64 string of `unit_len` characters, that libfko's
/// lenient decoder reads as the same bytes: spare low bits of the last character set, or one
/// character appended where it would be a lone final character.
fn respellings(text: &str, unit_len: usize) -> Vec<String> {
    let spare_bits = match unit_len % 4 {
        2 => 4,
        3 => 2,
        _ => 0,
    };
    let (head, last) = text.split_at(text.len() - 1);
    let v = B64.iter().position(|&c| c == last.as_bytes()[0]).unwrap();
    let mut out: Vec<String> = (1..(1usize << spare_bits))
        .map(|x| format!("{head}{}", B64[v ^ x] as char))
        .collect();
    if unit_len % 4 == 0 {
        out.extend(["A", "Q", "/"].map(|c| format!("{text}{c}")));
    }
    out
}

/// The no-HMAC packet `wire` with its PKCS#7 padding re-spelled: for each guess p of the
/// padding length, the byte p from the end XOR p, which a stream mode turns into a NUL that
/// ends libfko's C string right after the message.
fn padding_respellings(wire: &str) -> Vec<String> {
    use base64::Engine as _;
    let std = base64::engine::general_purpose::STANDARD_NO_PAD;
    let raw = std.decode(format!("U2FsdGVkX1{wire}")).unwrap();
    (1..=16u8)
        .map(|p| {
            let mut v = raw.clone();
            let at = v.len() - usize::from(p);
            v[at] ^= p;
            std.encode(&v)[10..].to_string()
        })
        .collect()
}

/// Item 1 against the real client and daemon: a captured no-HMAC knock re-spelled so that
/// libfko's lenient base64 reads the same ciphertext, a CTR no-HMAC knock with its padding
/// re-spelled, and an HMAC knock with its tag re-spelled: none is granted a second time.
#[test]
fn respelled_fwknop_knocks_are_never_granted_again() {
    let mut lab = Lab::new();
    let Keys::Base64 { key, .. } = key_gen(&lab, "sha256") else {
        unreachable!()
    };
    let nohmac = Keys::NoHmac { key };
    let hmac = key_gen(&lab, "sha256");
    let clients = fw_client("old-phone", &nohmac, "timeout = 1", "")
        + &fw_client("old-phone-ctr", &nohmac, "timeout = 1", "mode = \"ctr\"")
        + &fw_client("laptop", &hmac, "timeout = 1", "");
    start(&mut lab, &clients);
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let cases: [(&str, &Keys, &[&str]); 3] = [
        ("no HMAC, CBC", &nohmac, &[]),
        ("no HMAC, CTR", &nohmac, &["-M", "ctr"]),
        ("HMAC", &hmac, &[]),
    ];
    for (n, (name, keys, extra)) in cases.into_iter().enumerate() {
        let packet = knock_saving(&lab, keys, extra, &format!("spa{n}.txt"));
        assert!(
            host_opens(&lab.cli, SRV4),
            "{name}: knock refused:\n{}",
            lab.log()
        );
        assert!(
            wait_until(Duration::from_secs(4), || host_closed(&lab.cli, SRV4)).is_some(),
            "{name}: grant did not expire"
        );
        let variants = match n {
            0 => respellings(&packet, 10 + packet.len()),
            1 => padding_respellings(&packet),
            _ => {
                let (body, tag) = packet.split_at(packet.len() - 43);
                let mut v: Vec<String> = respellings(tag, tag.len())
                    .into_iter()
                    .map(|t| format!("{body}{t}"))
                    .collect();
                v.extend(
                    respellings(body, 10 + body.len())
                        .into_iter()
                        .map(|b| format!("{b}{tag}")),
                );
                v
            }
        };
        assert!(!variants.is_empty(), "{name}");
        let (granted, refused, replays) = (
            grants(&lab),
            all_rejections(&lab),
            rejections(&lab.log(), "replay"),
        );
        for v in &variants {
            send_udp(&lab.cli, sock(SRV4, KNOCK_PORT), v.clone().into_bytes());
        }
        // Every copy is answered one way or the other; then none may have been a grant.
        let answered = || all_rejections(&lab) + grants(&lab) >= refused + granted + variants.len();
        assert!(
            wait_until(Duration::from_secs(3), answered).is_some(),
            "{name}: the daemon did not answer every copy:\n{}",
            lab.log()
        );
        assert_eq!(
            grants(&lab),
            granted,
            "{name}: re-spelled copy granted:\n{}",
            lab.log()
        );
        assert!(
            host_closed(&lab.cli, SRV4),
            "{name}: a re-spelled copy opened the port"
        );
        if n == 1 {
            // The variant that still decrypts to the same message is known for what it is.
            assert!(rejections(&lab.log(), "replay") > replays, "{}", lab.log());
        }
    }
}

/// Item 2: two stanzas with the same keys; the first (`web`) authenticates the knock and
/// refuses tcp/2222, the second (`admin`) grants it, as fwknopd would. That grant is journaled
/// like any other: after a restart inside max_age, the captured packet is a replay.
#[test]
fn grant_by_a_later_stanza_is_still_a_replay_after_a_restart() {
    let mut lab = Lab::new();
    let keys = key_gen(&lab, "sha256");
    let web = format!(
        "[[client]]\nname = \"web\"\nallow = [\"tcp/{PUBLISHED_PORT}\"]\ntimeout = 1\n\n[client.fwknop]\n{}\n",
        keys.toml()
    );
    start(
        &mut lab,
        &(web + &fw_client("admin", &keys, "timeout = 1", "")),
    );
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let packet = knock_saving(&lab, &keys, &[], "spa.txt");
    assert!(host_opens(&lab.cli, SRV4), "{}", lab.log());
    assert!(
        lab.log().lines().any(|l| l.contains("ttl=")
            && (l.contains("client=\"admin\"") || l.contains("client=admin"))),
        "not granted by the second stanza:\n{}",
        lab.log()
    );
    assert!(wait_until(Duration::from_secs(4), || host_closed(&lab.cli, SRV4)).is_some());

    let (_, status) = lab.stop_daemon();
    assert!(status.success(), "daemon exit: {status}");
    lab.start_daemon();
    let (granted, replays) = (grants(&lab), rejections(&lab.log(), "replay"));
    send_udp(&lab.cli, sock(SRV4, KNOCK_PORT), packet.into_bytes());
    let answered = || rejections(&lab.log(), "replay") > replays || grants(&lab) > granted;
    assert!(
        wait_until(Duration::from_secs(2), answered).is_some(),
        "no answer to the replay:\n{}",
        lab.log()
    );
    assert_eq!(
        grants(&lab),
        granted,
        "granted again after the restart:\n{}",
        lab.log()
    );
    assert!(rejections(&lab.log(), "replay") > replays, "{}", lab.log());
    assert!(host_closed(&lab.cli, SRV4), "the replay opened the port");
}

/// Internet checksum over `chunks` (RFC 1071).
fn checksum(chunks: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = chunks.concat();
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Send one UDP datagram from `ns` in an IPv6 packet whose source address we write ourselves
/// (a raw `IPPROTO_RAW` socket sends the IPv6 header as given).
fn send_udp6_raw(ns: &str, src: Ipv6Addr, dst: Ipv6Addr, port: u16, payload: Vec<u8>) {
    let mut pkt = nfknock::wire::ip::build(src.into(), dst.into(), 40000, port, &payload);
    // IPv6 requires the UDP checksum: over the pseudo-header and the datagram.
    let udp_len = (pkt.len() - 40) as u32;
    let sum = checksum(&[
        &src.octets(),
        &dst.octets(),
        &udp_len.to_be_bytes(),
        &[0, 0, 0, 17],
        &pkt[40..],
    ]);
    let sum = if sum == 0 { 0xffff } else { sum };
    pkt[46..48].copy_from_slice(&sum.to_be_bytes());
    in_ns(ns, move || {
        // SAFETY: plain socket calls on a descriptor this closure owns; `sa` and `pkt` outlive
        // the `sendto` that reads them.
        unsafe {
            let fd = libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_RAW);
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_addr.s6_addr = dst.octets();
            let n = libc::sendto(
                fd,
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&sa as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            );
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            assert_eq!(n, pkt.len() as isize, "raw sendto: {err}");
        }
    })
}

/// Item 8: a valid knock for 10.77.0.2, sent from the client's host in a UDPv6 packet whose
/// source is `::ffff:10.77.0.2` (Linux ≥ 5.12 hands such packets to UDP and the queue), is
/// refused as `mapped-source` although the client's `sources` admit 10.77.0.0/24; nothing opens
/// and nothing is recorded: the same packet over IPv4 then opens the port.
#[test]
fn ipv4_mapped_ipv6_source_is_refused() {
    let mut lab = Lab::new();
    let keys = key_gen(&lab, "sha256");
    // The daemon's own refusal. With the prefilter on, the kernel drops this packet before
    // (no IPv6 fwknop source admits ::ffff:10.77.0.2): both refuse it.
    start_with(
        &mut lab,
        NO_PREFILTER,
        &fw_client(
            "laptop",
            &keys,
            "timeout = 2\nsources = [\"10.77.0.0/24\"]\nrequire_source_match = true",
            "",
        ),
    );
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    // `-T`: build the packet (saved by `-B`) without sending it.
    let packet = knock_saving(&lab, &keys, &["-T"], "spa.txt");
    assert!(host_closed(&lab.cli, SRV4), "-T sent the knock");

    let mapped = CLI4.parse::<Ipv4Addr>().unwrap().to_ipv6_mapped();
    let srv6: Ipv6Addr = SRV6.parse().unwrap();
    // The first packet to a new neighbour can be lost while it is resolved: send until the
    // daemon reports it (each copy is refused the same way).
    let refused = (0..5).any(|_| {
        send_udp6_raw(
            &lab.cli,
            mapped,
            srv6,
            KNOCK_PORT,
            packet.clone().into_bytes(),
        );
        wait_until(Duration::from_secs(1), || {
            rejections(&lab.log(), "mapped-source") > 0 || grants(&lab) > 0
        })
        .is_some()
    });
    assert_eq!(
        grants(&lab),
        0,
        "the mapped source was granted:\n{}",
        lab.log()
    );
    assert!(refused, "no mapped-source refusal:\n{}", lab.log());
    assert!(
        host_closed(&lab.cli, SRV4),
        "a mapped source opened the port"
    );

    send_udp(&lab.cli, sock(SRV4, KNOCK_PORT), packet.into_bytes());
    assert!(
        host_opens(&lab.cli, SRV4),
        "the IPv4 knock was refused:\n{}",
        lab.log()
    );
}
