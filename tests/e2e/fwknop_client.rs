//! `nfknock` as an fwknop client (issue 10 §5): `nfknock keygen --fwknop` makes the keys,
//! `nfknock knock --fwknop` sends fwknop 2.x packets, and both the REAL Debian `fwknopd`
//! (fwknop-server 2.6.10, `--test` mode: it decodes and logs, never touches a firewall) and
//! `nfknock serve` accept them. The QR code `keygen --qr` prints is decoded back with a real
//! decoder (`zbarimg`, Debian's zbar-tools; `scripts/test` installs both).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::*;

/// Run `nfknock ARGS` outside any namespace (keygen needs none).
fn nfknock(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run nfknock")
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `nfknock keygen --fwknop EXTRA` without `--out`: its stdout, and the `KEY_BASE64:` /
/// `HMAC_KEY_BASE64:` values it starts with (fwknop --key-gen's two lines).
fn keygen_printed(extra: &[&str]) -> (String, String, String) {
    let mut args = vec!["keygen", "--fwknop"];
    args.extend_from_slice(extra);
    let text = ok(&nfknock(&args), "keygen --fwknop");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no `{name}` line in:\n{text}"))
    };
    let (k, h) = (field("KEY_BASE64:"), field("HMAC_KEY_BASE64:"));
    (text, k, h)
}

/// The lines of the `access.conf` stanza keygen prints (from `SOURCE` to the blank line).
fn access_conf_of(keygen_out: &str) -> String {
    let mut lines = keygen_out
        .lines()
        .skip_while(|l| !l.starts_with("SOURCE"))
        .take_while(|l| !l.trim().is_empty());
    let mut s = String::new();
    for l in lines.by_ref() {
        s.push_str(l);
        s.push('\n');
    }
    assert!(
        s.starts_with("SOURCE"),
        "no access.conf stanza in:\n{keygen_out}"
    );
    s
}

/// The real fwknopd in the lab's server namespace: UDP server mode on the knock port (no pcap,
/// no firewall: `--test`), verbose, in the foreground, logging to a file; killed on drop.
struct Fwknopd {
    child: Child,
    log: PathBuf,
}

impl Fwknopd {
    fn start(lab: &Lab, access_conf: &str) -> Fwknopd {
        let dir = lab.path("fwknopd");
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("fwknopd.conf");
        let access = dir.join("access.conf");
        std::fs::write(
            &conf,
            format!("ENABLE_UDP_SERVER Y;\nUDPSERV_PORT {KNOCK_PORT};\n"),
        )
        .unwrap();
        std::fs::write(&access, access_conf).unwrap();
        use std::os::unix::fs::PermissionsExt;
        for f in [&conf, &access] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let log = dir.join("fwknopd.log");
        let file = std::fs::File::create(&log).unwrap();
        let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.srv, "fwknopd", "-f", "-t", "-v", "-U"])
            .args(["-c", &p("fwknopd.conf"), "-a", &p("access.conf")])
            .args([
                "-p",
                &p("fwknopd.pid"),
                "-d",
                &p("digest.cache"),
                "-r",
                &p("run"),
            ])
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("run fwknopd (apt-get install fwknop-server; scripts/test does it)");
        let d = Fwknopd { child, log };
        let up = wait_until(Duration::from_secs(10), || {
            d.log().contains("Kicking off UDP server")
        });
        assert!(up.is_some(), "fwknopd did not start:\n{}", d.log());
        // The socket is bound right after that line; give it a moment.
        std::thread::sleep(Duration::from_millis(200));
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until fwknopd has logged `needle` `n` times.
    fn saw(&self, needle: &str, n: usize) -> bool {
        wait_until(Duration::from_secs(3), || {
            self.log().matches(needle).count() >= n
        })
        .is_some()
    }
}

impl Drop for Fwknopd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nfknock knock --fwknop` from the client namespace to the server's first address.
fn knock_fwknop(lab: &Lab, args: &[&str]) -> Output {
    let mut all = vec!["knock", "--fwknop", "--server", SRV4, "--port", "62201"];
    all.extend_from_slice(args);
    lab.nfknock(&lab.cli, &all)
}

/// One key set per algorithm choice, each an `access.conf` stanza of its own with a distinct
/// user: fwknopd tries the stanzas in order and logs which one decoded the packet.
struct Case {
    hmac: &'static str,
    digest: &'static str,
    mode: &'static str,
    fw_timeout: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case {
        hmac: "sha256",
        digest: "sha256",
        mode: "cbc",
        fw_timeout: None,
    },
    Case {
        hmac: "sha512",
        digest: "sha3_512",
        mode: "ctr",
        fw_timeout: Some("45"),
    },
    Case {
        hmac: "md5",
        digest: "md5",
        mode: "cfb",
        fw_timeout: None,
    },
    Case {
        hmac: "sha1",
        digest: "sha1",
        mode: "ofb",
        fw_timeout: Some("7"),
    },
    Case {
        hmac: "sha384",
        digest: "sha384",
        mode: "ecb",
        fw_timeout: None,
    },
    Case {
        hmac: "sha3_256",
        digest: "sha3_256",
        mode: "cbc",
        fw_timeout: None,
    },
    Case {
        hmac: "sha3_512",
        digest: "sha512",
        mode: "cbc",
        fw_timeout: None,
    },
];

/// The real fwknopd decodes what `nfknock knock --fwknop` sends, with keys and `access.conf`
/// lines from `nfknock keygen --fwknop`, for every HMAC type, several digests and modes, and
/// message types 1 and 3 (`--fw-timeout`): username, message, type and timeout as sent. A knock
/// whose clock is a day behind (`--time-offset -86400`) is refused by fwknopd's packet aging.
#[test]
fn real_fwknopd_accepts_nfknock_fwknop_knocks() {
    let lab = Lab::new();
    let mut access = String::new();
    let mut keys = Vec::new();
    for (i, c) in CASES.iter().enumerate() {
        let (out, k, h) = keygen_printed(&["--hmac-digest-type", c.hmac]);
        let stanza = access_conf_of(&out);
        assert!(
            stanza.contains(&format!("KEY_BASE64          {k}")),
            "{stanza}"
        );
        // One user per stanza, so a packet can only decode under its own keys.
        access.push_str(&format!(
            "{stanza}ENCRYPTION_MODE     {}\nREQUIRE_USERNAME    case{i}\n\n",
            c.mode.to_uppercase()
        ));
        let kf = lab.path(&format!("case{i}.key"));
        let hf = lab.path(&format!("case{i}.hmac"));
        write_private(&kf, &k);
        write_private(&hf, &h);
        keys.push((kf, hf));
    }
    let fwknopd = Fwknopd::start(&lab, &access);
    for (i, (c, (kf, hf))) in CASES.iter().zip(&keys).enumerate() {
        let user = format!("case{i}");
        let mut args = vec![
            "--key-file",
            kf.to_str().unwrap(),
            "--hmac-key-file",
            hf.to_str().unwrap(),
            "--hmac-digest-type",
            c.hmac,
            "--digest-type",
            c.digest,
            "--encryption-mode",
            c.mode,
            "--user",
            &user,
            "--access",
            "tcp/22,udp/53",
            "--allow-ip",
            CLI4,
        ];
        if let Some(t) = c.fw_timeout {
            args.extend(["--fw-timeout", t]);
        }
        let before = fwknopd.log().len();
        ok(&knock_fwknop(&lab, &args), "knock --fwknop");
        let stanza = i + 1;
        assert!(
            fwknopd.saw(
                &format!("(stanza #{stanza}) --test mode enabled, skipping firewall manipulation."),
                1
            ),
            "fwknopd did not accept case {i} ({} / {} / {}):\n{}",
            c.hmac,
            c.digest,
            c.mode,
            fwknopd.log()
        );
        // What fwknopd logged for this knock alone.
        let log = fwknopd.log().split_off(before);
        assert!(log.contains(&format!("Username: {user}")), "{log}");
        assert!(
            log.contains(&format!("Message String: {CLI4},tcp/22,udp/53")),
            "{log}"
        );
        let (ty, timeout) = match c.fw_timeout {
            Some(t) => ("3 (Client timeout access msg)", t),
            None => ("1 (Access msg)", "0"),
        };
        assert!(log.contains(&format!("Message Type: {ty}")), "{log}");
        assert!(log.contains(&format!("Client Timeout: {timeout}")), "{log}");
    }

    // `--allow-ip source` is fwknop's `-s`: allow IP 0.0.0.0, the server uses the source.
    let (kf, hf) = &keys[0];
    let base = [
        "--key-file",
        kf.to_str().unwrap(),
        "--hmac-key-file",
        hf.to_str().unwrap(),
        "--user",
        "case0",
        "--access",
        "tcp/22",
    ];
    let mut args = base.to_vec();
    args.extend(["--allow-ip", "source"]);
    ok(
        &knock_fwknop(&lab, &args),
        "knock --fwknop --allow-ip source",
    );
    assert!(
        fwknopd.saw("Message String: 0.0.0.0,tcp/22", 1),
        "{}",
        fwknopd.log()
    );

    // A clock a day behind: fwknopd's ENABLE_SPA_PACKET_AGING (default 120 s) refuses it.
    let mut args = base.to_vec();
    args.extend(["--allow-ip", CLI4, "--time-offset", "-86400"]);
    ok(&knock_fwknop(&lab, &args), "knock --fwknop --time-offset");
    assert!(
        fwknopd.saw("SPA data time difference is too great", 1),
        "{}",
        fwknopd.log()
    );
}

fn write_private(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    writeln!(f, "{text}").unwrap();
}

/// `nfknock knock --fwknop` → `nfknock serve` with a `[client.fwknop]` entry whose key files
/// `nfknock keygen --fwknop --out` wrote (and whose TOML it printed): closed before, open
/// after, for the client's address only, with the client's requested timeout (message type 3).
#[test]
fn nfknock_serve_opens_the_gate_for_nfknock_fwknop_knocks() {
    let mut lab = Lab::new();
    let key = lab.path("phone.key");
    let out = nfknock(&[
        "keygen",
        "--fwknop",
        "--name",
        "phone",
        "--hmac-digest-type",
        "sha512",
        "--out",
        key.to_str().unwrap(),
    ]);
    let toml = ok(&out, "keygen --fwknop --out");
    let hmac = lab.path("phone.key.hmac");
    for f in [&key, &hmac] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", f.display());
    }
    assert!(
        !toml.contains(&std::fs::read_to_string(&key).unwrap().trim().to_string()),
        "keygen --out printed the key:\n{toml}"
    );
    // Refuses to overwrite either file.
    let again = nfknock(&["keygen", "--fwknop", "--out", key.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("must not exist"),
        "{again:?}"
    );

    // The printed `[[client]]` stanza, as printed, plus what to allow.
    let client: String = toml
        .lines()
        .skip_while(|l| !l.starts_with("[[client]]"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(client.contains("hmac_key_file"), "{toml}");
    assert!(client.contains("allow = [\"tcp/22\"]\n"), "{toml}");
    let client = client.replace(
        "allow = [\"tcp/22\"]\n",
        &format!("allow = [\"tcp/{HOST_PORT}\"]\ntimeout = 2\nmax_timeout = 60\n"),
    );
    lab.write_config("", &client);
    lab.start_daemon();
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    assert!(
        !tcp_open(&lab.cli, sock(SRV4, HOST_PORT), CLOSED_WITHIN),
        "open before a knock"
    );

    let args = [
        "--key-file",
        key.to_str().unwrap(),
        "--hmac-key-file",
        hmac.to_str().unwrap(),
        "--hmac-digest-type",
        "sha512",
        "--access",
        "tcp/2222",
        "--allow-ip",
        CLI4,
        "--fw-timeout",
        "5",
    ];
    ok(&knock_fwknop(&lab, &args), "knock --fwknop");
    assert!(
        opens(&lab.cli, sock(SRV4, HOST_PORT)),
        "not opened:\n{}",
        lab.log()
    );
    assert!(!stranger_open(&lab), "opened for a stranger");
    let log = lab.log();
    assert!(
        log.contains("format=\"fwknop\"") || log.contains("format=fwknop"),
        "{log}"
    );
    let grant = status_json(&lab)
        .unwrap()
        .into_iter()
        .find(|v| v["source"] == CLI4);
    assert_eq!(
        grant.map(|g| g["timeout"].as_u64()),
        Some(Some(5)),
        "grant timeout"
    );
}

/// A `format = "fwknop"` stanza of the knock client's own file (key files, algorithms, user,
/// allow IP) knocks on `nfknock serve`: `nfknock knock -n NAME` with nothing else.
#[test]
fn knock_profile_with_format_fwknop() {
    let mut lab = Lab::new();
    let key = lab.path("laptop.key");
    let out = nfknock(&[
        "keygen",
        "--fwknop",
        "--name",
        "laptop",
        "--hmac-digest-type",
        "sha384",
        "--out",
        key.to_str().unwrap(),
    ]);
    ok(&out, "keygen");
    let hmac = lab.path("laptop.key.hmac");
    lab.write_config(
        "",
        &format!(
            "[[client]]\nname = \"laptop\"\nallow = [\"tcp/{HOST_PORT}\"]\ntimeout = 3\n\
             require_username = \"alice\"\n[client.fwknop]\nkey_file = \"{}\"\n\
             hmac_key_file = \"{}\"\nhmac = \"sha384\"\nmode = \"ofb\"\n",
            key.display(),
            hmac.display()
        ),
    );
    lab.start_daemon();
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    let profile = lab.path("client.toml");
    std::fs::write(
        &profile,
        format!(
            "[server.home]\nformat = \"fwknop\"\nserver = \"{SRV4}\"\nkey_file = \"{}\"\n\
             hmac_key_file = \"{}\"\nhmac = \"sha384\"\ndigest = \"sha3_256\"\nmode = \"ofb\"\n\
             user = \"alice\"\naccess = [\"tcp/{HOST_PORT}\"]\nallow_ip = \"{CLI4}\"\n",
            key.display(),
            hmac.display()
        ),
    )
    .unwrap();
    let out = lab.nfknock(
        &lab.cli,
        &[
            "knock",
            "--client-config",
            profile.to_str().unwrap(),
            "-n",
            "home",
        ],
    );
    ok(&out, "knock -n home");
    assert!(
        opens(&lab.cli, sock(SRV4, HOST_PORT)),
        "not opened:\n{}",
        lab.log()
    );
}

/// Without an allow IP an fwknop knock is a usage error that says what to write (fwknop
/// resolves it over the internet with `-R`; nfknock does not guess).
#[test]
fn fwknop_knock_without_allow_ip_says_what_to_do() {
    let lab = Lab::new();
    let key = lab.path("k.key");
    ok(
        &nfknock(&["keygen", "--fwknop", "--out", key.to_str().unwrap()]),
        "keygen",
    );
    let hmac = format!("{}.hmac", key.display());
    let out = knock_fwknop(
        &lab,
        &[
            "--key-file",
            key.to_str().unwrap(),
            "--hmac-key-file",
            &hmac,
            "--access",
            "tcp/22",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--allow-ip"), "{err}");
}

/// Parse the QR code `keygen --qr` printed (Unicode half blocks) back into modules, draw it as
/// a PGM image and decode it with zbarimg: the payload is Fwknop2's
/// `KEY_BASE64:<key> HMAC_KEY_BASE64:<hmac>` with the keys printed above it. Both drawings: for
/// a dark terminal (light modules drawn, the default) and `--qr-light-background`.
#[test]
fn keygen_qr_decodes_to_fwknop2_payload() {
    let lab = Lab::new();
    let cases: [(&[&str], bool); 3] = [
        (&[], true),
        (&["--hmac-digest-type", "sha512"], true),
        (&["--qr-light-background"], false),
    ];
    for (extra, dark_terminal) in cases {
        let mut args = vec!["--qr"];
        args.extend_from_slice(extra);
        let (out, k, h) = keygen_printed(&args);
        let rows = qr_rows(&out, dark_terminal);
        let pgm = lab.path("qr.pgm");
        std::fs::write(&pgm, to_pgm(&rows, 4)).unwrap();
        let z = Command::new("zbarimg")
            .args(["--raw", "-q", "-Sdisable", "-Sqrcode.enable"])
            .arg(&pgm)
            .output()
            .expect("run zbarimg (apt-get install zbar-tools; scripts/test does it)");
        let payload = ok(&z, "zbarimg");
        assert_eq!(
            payload.trim_end_matches('\n'),
            format!("KEY_BASE64:{k} HMAC_KEY_BASE64:{h}"),
            "QR payload ({extra:?})"
        );
    }
}

/// Half-block rows → module rows (`true` = dark): the QR code is the run of lines made only of
/// ` █▀▄`. On a dark terminal the light modules are drawn (`█` = both halves light), on a light
/// one the dark modules.
fn qr_rows(text: &str, dark_terminal: bool) -> Vec<Vec<bool>> {
    let is_qr = |l: &str| !l.is_empty() && l.chars().all(|c| " █▀▄".contains(c));
    let lines: Vec<&str> = text
        .lines()
        .skip_while(|l| !(is_qr(l) && l.contains('█')))
        .take_while(|l| is_qr(l))
        .collect();
    assert!(lines.len() > 10, "no QR code in:\n{text}");
    let mut rows = Vec::new();
    for l in lines {
        let (mut top, mut bottom) = (Vec::new(), Vec::new());
        for c in l.chars() {
            let (t, b) = match c {
                '█' => (true, true),
                '▀' => (true, false),
                '▄' => (false, true),
                _ => (false, false),
            };
            // Drawn means light on a dark terminal, dark on a light one.
            top.push(t != dark_terminal);
            bottom.push(b != dark_terminal);
        }
        rows.push(top);
        rows.push(bottom);
    }
    rows
}

/// A binary PGM (P5), `scale` pixels per module, with a light margin of 4 modules.
fn to_pgm(rows: &[Vec<bool>], scale: usize) -> Vec<u8> {
    let w = rows.iter().map(Vec::len).max().unwrap() + 8;
    let h = rows.len() + 8;
    let mut img = format!("P5\n{} {}\n255\n", w * scale, h * scale).into_bytes();
    let dark = |x: usize, y: usize| {
        y >= 4
            && x >= 4
            && rows
                .get(y - 4)
                .and_then(|r| r.get(x - 4))
                .copied()
                .unwrap_or(false)
    };
    for y in 0..h * scale {
        for x in 0..w * scale {
            img.push(if dark(x / scale, y / scale) { 0 } else { 255 });
        }
    }
    img
}
