//! `nfknock import-fwknop` as a user runs it: the real binary on fixture files under
//! `tests/fixtures/fwknop/` (keys from shared/fwknop-vectors.jsonl). Stdout must be a config the
//! checker accepts; stderr must name what was dropped; the exit status must say whether
//! everything was converted. The last test knocks the imported config with a real fwknop packet.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nfknock::access::format_list;
use nfknock::config::{self, Config, Credential};
use nfknock::wire::fwknop::{EncMode, HmacType};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fwknop")
        .join(name)
}

fn nfknock(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nfknock"))
        .args(args)
        .env("NFKNOCK_LOG", "warn")
        .output()
        .expect("run nfknock")
}

fn import(extra: &[&str]) -> (Option<i32>, String, String) {
    let access = fixture("access.conf");
    let mut args = vec!["import-fwknop", "--access-conf", access.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = nfknock(&args);
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn parse(stdout: &str) -> Config {
    // `command_user` names are looked up on the server by `nfknock check`; here any will do.
    config::parse(
        stdout,
        Path::new("/tmp/imported.toml"),
        &config::MemFiles::new(),
        &config::AnyUser,
    )
    .unwrap_or_else(|e| panic!("stdout is not a valid nfknock config:\n{e}\n---\n{stdout}"))
}

fn fwknop_key(c: &config::ClientEntry) -> &nfknock::wire::fwknop::FwknopKey {
    match &c.credential {
        Credential::Fwknop(k) => k,
        Credential::Native(_) => panic!("client {} is not an fwknop client", c.name),
    }
}

#[test]
fn imports_the_fixture_with_its_includes_and_names_what_it_dropped() {
    let fwknopd = fixture("fwknopd.conf");
    let (code, stdout, stderr) = import(&[
        "--fwknopd-conf",
        fwknopd.to_str().unwrap(),
        "--protect",
        "tcp/22",
    ]);
    // The FORWARD_ALL stanza names no network (no FORCE_NAT host): exit 1, the rest still printed.
    assert_eq!(code, Some(1), "stderr:\n{stderr}");
    let cfg = parse(&stdout);
    assert_eq!((cfg.server.port, cfg.server.max_age), (62202, 90));
    let names: Vec<&str> = cfg.clients.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["laptop", "fwknop-2", "fwknop-3", "fwknop-4"]);

    // Stanza 1: keys from the %include_keys file, netmask source, ports, policy.
    let laptop = &cfg.clients[0];
    let nets: Vec<String> = laptop.sources.iter().map(|n| n.to_string()).collect();
    assert_eq!(nets, ["10.0.0.0/8", "192.168.1.0/24"]);
    assert_eq!(format_list(&laptop.allow), "tcp/22,tcp/443");
    assert_eq!(format_list(&laptop.deny), "tcp/23");
    assert_eq!((laptop.timeout, laptop.max_timeout), (60, 600));
    assert_eq!(laptop.require_username.as_deref(), Some("root"));
    assert!(laptop.require_source_match);
    let k = fwknop_key(laptop);
    assert_eq!(
        (k.key.len(), k.hmac_key.as_ref().map(|h| h.len())),
        (32, Some(64))
    );
    assert_eq!((k.hmac_type, k.mode), (HmacType::Sha256, EncMode::Cbc));

    // Stanza 2: passphrases, expiry, fwknop's REQUIRE_SOURCE_ADDRESS default.
    let phone = &cfg.clients[1];
    assert_eq!(fwknop_key(phone).key.as_slice(), b"fwknoptest");
    assert_eq!(phone.sources[0].to_string(), "0.0.0.0/0");
    assert_eq!(phone.expires_at, Some(1_896_048_000)); // 2030-01-31 UTC
    assert!(!phone.require_source_match);
    // Its CMD_CYCLE_OPEN (an nft set element) is its grant, as fwknopd ran it: argv, no shell.
    let c = &phone.commands;
    assert_eq!(c.grant, nfknock::command::GrantMode::Command);
    assert_eq!(
        c.cycle.on_grant.as_ref().unwrap().source.join(" "),
        "/usr/sbin/nft add element inet filter fwknop { $SRC . $PORT timeout 30s }"
    );
    assert!(c.cycle.on_expire.is_none() && c.exec.is_some());

    // Stanza 4, FORCE_NAT with FORCE_SNAT: its port forwarded, the source rewritten.
    let nat = &cfg.clients[3].nat;
    assert_eq!(nat.len(), 1);
    assert_eq!(
        (nat[0].access.to_string(), nat[0].to, nat[0].source),
        (
            "tcp/22".to_string(),
            config::NatTo::Host("192.168.10.5:22".parse().unwrap()),
            nfknock::access::SourceNat::To("192.168.10.1".parse().unwrap())
        )
    );

    // Stanza 3, from the %include'd file: no OPEN_PORTS, so the --protect list.
    let third = &cfg.clients[2];
    assert_eq!(format_list(&third.allow), "tcp/22");
    assert_eq!(third.destinations[0].to_string(), "198.51.100.10/32");
    assert_eq!(fwknop_key(third).hmac_type, HmacType::Sha512);
    assert!(third.require_source_match, "REQUIRE_SOURCE is a synonym");

    for needle in [
        "GPG_DECRYPT_ID: GnuPG SPA is not supported; issue Rijndael+HMAC keys with `fwknop --key-gen`",
        "ENABLE_CMD_EXEC Y: fwknopd ran any command a client sent; nfknock runs only those listed",
        "CMD_CYCLE_OPEN: imported as `grant = \"command\"`",
        "error: ",
        "extra.conf:16: stanza `fwknop-4`: FORCE_NAT 192.168.10.5 22: every port of this client's `allow` is forwarded to 192.168.10.5:22",
        "extra.conf:25: stanza `fwknop-5`: FORWARD_ALL Y without a FORCE_NAT host",
        "keys/laptop.keys:4: stanza `laptop`: `OPEN_PORTS` in an %include_keys file is ignored",
        "fwknopd.conf:4: ENABLE_SPA_PACKET_AGING N: nfknock always checks the knock's age",
        "access.conf:3: `FW_ACCESS_TIMEOUT` comes before the first SOURCE",
        "REQUIRE_SOURCE_ADDRESS is off (fwknop's default)",
        "umask 077; nfknock import-fwknop",
        "imported 4 clients; 1 stanza(s) could not be converted",
    ] {
        assert!(stderr.contains(needle), "stderr lacks `{needle}`:\n{stderr}");
    }
    // Keys go to stdout only.
    assert!(
        !stderr.contains("fwknoptest") && !stderr.contains("oQIY1T7k"),
        "{stderr}"
    );
}

#[test]
fn without_protect_a_stanza_lacking_open_ports_says_what_to_pass() {
    let (code, stdout, stderr) = import(&[]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("stanza `fwknop-3`: has no OPEN_PORTS")
            && stderr.contains("`--protect tcp/22,...`"),
        "{stderr}"
    );
    let cfg = parse(&stdout);
    assert_eq!(cfg.clients.len(), 3);
    assert_eq!(
        (cfg.server.port, cfg.server.max_age),
        (62201, 120),
        "no fwknopd.conf: fwknopd's defaults"
    );
}

#[test]
fn unreadable_files_and_bad_protect_exit_2_with_nothing_on_stdout() {
    let out = nfknock(&["import-fwknop", "--access-conf", "/nonexistent/access.conf"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read /nonexistent/access.conf"),
        "{err}"
    );

    let access = fixture("access.conf");
    let out = nfknock(&[
        "import-fwknop",
        "--access-conf",
        access.to_str().unwrap(),
        "--fwknopd-conf",
        "/nonexistent/fwknopd.conf",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());

    let out = nfknock(&[
        "import-fwknop",
        "--access-conf",
        access.to_str().unwrap(),
        "--protect",
        "ssh",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--protect `ssh`"));

    let out = nfknock(&["import-fwknop"]);
    assert_eq!(out.status.code(), Some(2), "--access-conf is required");
}

/// The vector `default_cbc_hmac_sha256_tcp22` from shared/fwknop-vectors.jsonl.
fn vector(case: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/fwknop-vectors.jsonl");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["case"] == case)
        .unwrap_or_else(|| panic!("no vector {case}"))
}

#[test]
fn the_imported_config_checks_and_grants_a_real_fwknop_packet() {
    let access = fixture("access-vector.conf");
    let out = nfknock(&["import-fwknop", "--access-conf", access.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "everything converts: {stderr}");

    // As the admin is told to: a private file, then `nfknock check`.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("nfknock.toml");
    std::fs::write(&cfg, &out.stdout).unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let check = nfknock(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout)
        .contains("OK (1 client, port 62201, protecting tcp/22)"));

    // The packet fwknop 2.6.10 made with these keys opens tcp/22 for its allow IP.
    let v = vector("default_cbc_hmac_sha256_tcp22");
    let now = v["timestamp"].as_u64().unwrap().to_string();
    let verify = nfknock(&[
        "verify",
        "--config",
        cfg.to_str().unwrap(),
        "--source",
        "10.1.2.3",
        "--now",
        &now,
        "--packet",
        v["packet"].as_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{said}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        said.starts_with("grant: client fwknop-1 (fwknop), open tcp/22 for 10.1.2.3"),
        "{said}"
    );

    // REQUIRE_SOURCE_ADDRESS Y became require_source_match: the same knock from elsewhere is refused.
    let verify = nfknock(&[
        "verify",
        "--config",
        cfg.to_str().unwrap(),
        "--source",
        "10.9.9.9",
        "--now",
        &now,
        "--packet",
        v["packet"].as_str().unwrap(),
    ]);
    assert_eq!(verify.status.code(), Some(1));
}

/// `--access-conf /dev/zero` (or `--fwknopd-conf`) is refused at once with exit status 2; it
/// never hangs or reads without end.
#[test]
fn a_device_is_refused_at_once_not_read_forever() {
    for flag in ["--access-conf", "--fwknopd-conf"] {
        let access = fixture("access.conf");
        let mut args = vec!["import-fwknop", flag, "/dev/zero"];
        if flag == "--fwknopd-conf" {
            args.extend(["--access-conf", access.to_str().unwrap()]);
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_nfknock"))
            .args(&args)
            .env("NFKNOCK_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run nfknock");
        let start = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > std::time::Duration::from_secs(20) {
                let _ = child.kill();
                panic!("nfknock import-fwknop {flag} /dev/zero hung");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag}");
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cannot read /dev/zero") && err.contains("not a regular file"),
            "{flag}: {err}"
        );
    }
}
