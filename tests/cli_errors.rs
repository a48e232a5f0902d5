//! The `nfknock` binary's error paths, as a user meets them: what it prints and the exit status
//! `--help` documents (0 success; 1 failure; 2 usage or configuration error). Nothing here
//! touches the kernel: the one test that starts `serve` runs it in a new, empty network
//! namespace (`unshare --net`, root like the other binary tests) and stops it before the queue.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EXIT_FAIL: i32 = 1;
const EXIT_USAGE: i32 = 2;

fn nfknock(args: &[&str]) -> Output {
    nfknock_env(args, &[])
}

fn nfknock_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nfknock"));
    cmd.args(args)
        .env_remove("JOURNAL_STREAM")
        .env_remove("NFKNOCK_LOG")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run nfknock")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Exit status, stdout, stderr.
fn run(out: Output) -> (i32, String, String) {
    (
        out.status.code().expect("exited, not killed"),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// A private (0600) server config in `dir`, with one native client whose key is inline.
fn write_config(dir: &Path, server: &str) -> PathBuf {
    let key = run(nfknock(&["keygen"])).1;
    let path = dir.join("nfknock.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\n{server}\n[[client]]\nname = \"alice\"\nkey = \"{}\"\nallow = [\"tcp/22\"]\n",
            key.trim()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn an_unknown_subcommand_is_a_usage_error() {
    let (code, stdout, stderr) = run(nfknock(&["frobnicate"]));
    assert_eq!(code, EXIT_USAGE, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("unrecognized subcommand 'frobnicate'") && stderr.contains("Usage:"),
        "{stderr}"
    );
}

#[test]
fn a_bad_argument_value_is_a_usage_error() {
    let (code, _, stderr) = run(nfknock(&["verify", "--source", "nope", "--packet", "x"]));
    assert_eq!(code, EXIT_USAGE, "{stderr}");
    assert!(
        stderr.contains("invalid value 'nope' for '--source <IP>'"),
        "{stderr}"
    );
    // `--with-gate` only means something with `--dry-run`.
    let (code, _, stderr) = run(nfknock(&["serve", "--with-gate"]));
    assert_eq!(code, EXIT_USAGE, "{stderr}");
    assert!(stderr.contains("--dry-run"), "{stderr}");
}

/// `--help` and `--version` are answers, not errors: stdout and exit status 0.
#[test]
fn help_and_version_succeed() {
    let (code, stdout, stderr) = run(nfknock(&["--help"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("Exit status: 0 success; 1 failure"),
        "{stdout}"
    );
    let (code, stdout, _) = run(nfknock(&["--version"]));
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        format!("nfknock {}", env!("CARGO_PKG_VERSION"))
    );
}

/// A config a command cannot use: every problem on its own line with file, line and key,
/// then what to run; exit status 2.
#[test]
fn an_invalid_config_lists_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "port = 0\nmax_age = 5000\n");
    let p = path.display().to_string();
    let (code, stdout, stderr) = run(nfknock(&["ruleset", "--config", &p]));
    assert_eq!(code, EXIT_USAGE, "{stderr}");
    assert!(stdout.is_empty(), "no ruleset is printed: {stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            "nfknock: error: the configuration is not valid:".to_string(),
            format!("  {p}:2: `server.port`: 0 is out of range: the knock port must be from 1 to 65535"),
            format!("  {p}:3: `server.max_age`: 5000 is out of range: max_age (seconds) must be from 1 to 3600"),
            format!("fix the problems above and run `nfknock check --config {p}`"),
        ],
        "{stderr}"
    );

    // A missing file is a configuration error too, and says what to do.
    let missing = dir.path().join("missing.toml").display().to_string();
    let (code, _, stderr) = run(nfknock(&["ruleset", "--config", &missing]));
    assert_eq!(code, EXIT_USAGE, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "  {missing}: cannot read the config file: No such file or directory"
        )) && stderr.contains("start from examples/server.toml"),
        "{stderr}"
    );
}

/// A failure at run time prints the error, then each cause on its own line; exit status 1.
#[test]
fn a_runtime_error_prints_its_causes_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("no-such-dir").join("alice.key");
    let o = out.display().to_string();
    let (code, stdout, stderr) = run(nfknock(&["keygen", "--out", &o]));
    assert_eq!(code, EXIT_FAIL, "{stderr}");
    assert!(stdout.is_empty(), "the key is never printed: {stdout}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            format!("nfknock: error: cannot create key file {o} (it must not exist yet)"),
            "  caused by: No such file or directory (os error 2)".to_string(),
        ],
        "{stderr}"
    );
    // An existing file is never overwritten.
    let existing = dir.path().join("existing.key");
    std::fs::write(&existing, "keep me\n").unwrap();
    let (code, _, stderr) = run(nfknock(&[
        "keygen",
        "--out",
        &existing.display().to_string(),
    ]));
    assert_eq!(code, EXIT_FAIL, "{stderr}");
    assert!(stderr.contains("  caused by: File exists"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "keep me\n");
}

/// Under systemd (JOURNAL_STREAM set) the journal stamps each line, so the daemon's log lines
/// carry no timestamp of their own; elsewhere they start with one. `serve` logs the config's
/// warnings, then fails on a `state_dir` that is a file: exit status 1 with the cause chain,
/// before any queue or table exists (and in a namespace of its own).
#[test]
fn under_journald_log_lines_carry_no_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::write(&state, "").unwrap();
    let path = write_config(
        dir.path(),
        &format!("rate_limit = 0\nstate_dir = \"{}\"\n", state.display()),
    );
    let serve = |env: &[(&str, &str)]| {
        let mut cmd = Command::new("unshare");
        cmd.args(["--net", env!("CARGO_BIN_EXE_nfknock"), "serve", "--config"])
            .arg(&path)
            .env_remove("JOURNAL_STREAM")
            .env_remove("NFKNOCK_LOG")
            .env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(cmd.output().expect("run unshare (util-linux) as root"))
    };
    let warning = "WARN [server] rate_limit = 0: knocks are not rate limited in the kernel";
    for (env, stamped) in [
        (&[][..], true),
        (&[("JOURNAL_STREAM", "8:1234")][..], false),
    ] {
        let (code, _, stderr) = serve(env);
        assert_eq!(code, EXIT_FAIL, "{stderr}");
        let line = stderr
            .lines()
            .find(|l| l.contains(warning))
            .unwrap_or_else(|| panic!("no warning logged: {stderr}"));
        let starts_with_time = line
            .get(..4)
            .is_some_and(|y| y.bytes().all(|b| b.is_ascii_digit()))
            && line.get(4..5) == Some("-");
        assert_eq!(starts_with_time, stamped, "{env:?}: {line:?}");
        assert!(
            stderr.contains("nfknock: error: cannot open the replay journal; check `state_dir` and its permissions\n  caused by: "),
            "{stderr}"
        );
    }
}

/// `init-state` on a `state_dir` that is a file: the OS error is printed once, as the cause,
/// not also inside the message (it used to appear twice); exit status 1, the file untouched.
#[test]
fn init_state_on_a_file_prints_the_os_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::write(&state, "keep me\n").unwrap();
    let s = state.display().to_string();
    let (code, stdout, stderr) = run(nfknock(&["init-state", "--state-dir", &s]));
    assert_eq!(code, EXIT_FAIL, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(
        stderr.matches("File exists (os error 17)").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.starts_with(&format!(
            "nfknock: error: cannot create the directory for first-start marker {s}"
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "keep me\n");
}

/// `init-state` marks a new state directory once (exit 0 both times, the second says nothing
/// changed), takes `state_dir` from `--config` alike, and refuses, exit status 1, a directory
/// that holds a replay journal: that one has served, and marking it would forget its knocks.
#[test]
fn init_state_marks_a_new_directory_and_never_one_that_served() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let s = state.display().to_string();
    let (code, stdout, stderr) = run(nfknock(&["init-state", "--state-dir", &s]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!("{s} is marked as a new state directory")),
        "{stderr}"
    );
    assert!(state.join("first-start").is_file());

    let config = write_config(dir.path(), &format!("state_dir = \"{s}\""));
    let c = config.display().to_string();
    let (code, _, stderr) = run(nfknock(&["init-state", "--config", &c]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{s} is already marked as a new state directory; nothing changed"
        )),
        "{stderr}"
    );

    std::fs::remove_file(state.join("first-start")).unwrap();
    std::fs::write(state.join("replay.journal"), "not empty").unwrap();
    let (code, _, stderr) = run(nfknock(&["init-state", "--state-dir", &s]));
    assert_eq!(code, EXIT_FAIL, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "nfknock: {s}/replay.journal exists: this state directory has served before"
        )) && stderr.contains("give every client a new key first"),
        "{stderr}"
    );
    assert!(!state.join("first-start").exists(), "marked anyway");

    // Something else named like the marker is not taken for one.
    let other = dir.path().join("other");
    std::fs::create_dir_all(other.join("first-start")).unwrap();
    let o = other.display().to_string();
    let (code, _, stderr) = run(nfknock(&["init-state", "--state-dir", &o]));
    assert_eq!(code, EXIT_FAIL, "{stderr}");
    assert_eq!(
        stderr,
        format!("nfknock: error: {o}/first-start exists and is not a regular file; remove it, then run init-state again\n")
    );
}

/// `ruleset` prints the table `serve` installs for the config: the protected ports, the knock
/// port diverted to the queue. `--compat` loads differently but prints alike.
#[test]
fn ruleset_prints_the_table_serve_installs() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "port = 40001\nqueue = 7\nprotect = [\"tcp/22\", \"tcp/2222\"]",
    );
    let c = config.display().to_string();
    let (code, native, stderr) = run(nfknock(&["ruleset", "--config", &c]));
    assert_eq!(code, 0, "{stderr}");
    assert!(native.starts_with("table inet nfknock {\n"), "{native}");
    assert!(
        native.contains("elements = { tcp . 22, tcp . 2222 }")
            && native.contains("udp dport 40001 queue num 7"),
        "{native}"
    );
    let (code, compat, stderr) = run(nfknock(&["ruleset", "--config", &c, "--compat"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(compat, native);
}

/// `ruleset --iptables` / `--ip6tables` print the rules of an iptables host for the config
/// (its knock port, queue, protected ports and ipset names); with a config whose backend is not
/// `ipset` they still print, with a warning that nothing would fill the sets; `--compat` does
/// not go with them (usage error).
#[test]
fn ruleset_iptables_prints_the_rules_for_the_config_and_warns_without_the_ipset_backend() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "port = 40001\nqueue = 7\nprotect = [\"tcp/22\"]\nbackend = \"ipset\"\nipset_v6 = \"g6\"",
    );
    let c = config.display().to_string();
    let (code, v6, stderr) = run(nfknock(&["ruleset", "--ip6tables", "--config", &c]));
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert!(
        v6.contains("-A nfknock-gate -p udp -m udp --dport 40001 -j NFQUEUE --queue-num 7\n")
            && v6.contains("--dport 22 -m conntrack ! --ctstate ESTABLISHED,RELATED -m set ! --match-set g6 src,dst -j DROP\n")
            && v6.contains("ipset create g6 hash:ip,port family inet6"),
        "{v6}"
    );
    let (code, v4, _) = run(nfknock(&["ruleset", "--iptables", "--config", &c]));
    assert_eq!(code, 0);
    assert!(v4.contains("--match-set nfknock_allow_v4 src,dst"), "{v4}");
    let (code, _, stderr) = run(nfknock(&[
        "ruleset",
        "--iptables",
        "--compat",
        "--config",
        &c,
    ]));
    assert_eq!(code, EXIT_USAGE, "{stderr}");

    let nft = write_config(dir.path(), "");
    let n = nft.display().to_string();
    let (code, v4, stderr) = run(nfknock(&["ruleset", "--iptables", "--config", &n]));
    assert_eq!(code, 0);
    assert!(v4.contains("*filter"), "{v4}");
    assert!(
        stderr.contains("has backend = \"nftables\": nothing fills the ipsets")
            && stderr.contains("set `backend = \"ipset\"`"),
        "{stderr}"
    );
}

/// `uninstall` removes table `inet nfknock`, gate and grants, and only it; run again (nothing
/// left) it succeeds alike. In a network namespace of its own (`unshare --net`, root).
#[test]
fn uninstall_removes_the_table_and_only_it() {
    let script = format!(
        "nft add table inet nfknock && nft add table inet other && {bin} uninstall && {bin} uninstall && nft list tables",
        bin = env!("CARGO_BIN_EXE_nfknock")
    );
    let out = Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .env_remove("NFKNOCK_LOG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run unshare (util-linux) as root");
    let (code, stdout, stderr) = run(out);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stderr,
        "table `inet nfknock` removed\ntable `inet nfknock` removed\n"
    );
    assert_eq!(stdout, "table inet other\n");
}

/// `knock` with a command line that cannot make a knock: each problem named with the flag that
/// fixes it, exit status 1, and nothing sent (every case fails before the socket is opened; and
/// it runs in an empty network namespace of its own, so nothing could leave if one did not).
#[test]
fn knock_names_the_missing_or_bad_flag_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("alice.key");
    let k = key.display().to_string();
    let (code, _, stderr) = run(nfknock(&["keygen", "--out", &k]));
    assert_eq!(code, 0, "{stderr}");
    let seventeen: Vec<String> = (1..=17).map(|p| format!("tcp/{p}")).collect();
    let seventeen = seventeen.join(",");
    let srv = ["--server", "192.0.2.1"];
    let cases: &[(&[&str], &str)] = &[
        (
            &["--key-file", &k, "-A", "tcp/22"],
            "no server given: use --server HOST or -n NAME",
        ),
        (
            &[&srv[..], &["-A", "tcp/22"]].concat(),
            "no key given: use --key-file PATH (made by `nfknock keygen --out PATH`)",
        ),
        (
            &[&srv[..], &["--key-file", &k]].concat(),
            "nothing to open: use --access tcp/22[,udp/53,...]",
        ),
        (
            &[
                &srv[..],
                &["--key-file", &k, "-A", "tcp/22", "--allow-ip", "me"],
            ]
            .concat(),
            "--allow-ip `me`: expected an IP address or `source`",
        ),
        (
            &[&srv[..], &["--key-file", &k, "-A", &seventeen]].concat(),
            "--access must list 1 to 16 entries",
        ),
    ];
    for (args, says) in cases {
        let mut cmd = Command::new("unshare");
        cmd.args(["--net", env!("CARGO_BIN_EXE_nfknock"), "knock"])
            .args(*args)
            .env_remove("NFKNOCK_LOG")
            .env_remove("RUST_LOG");
        let (code, stdout, stderr) = run(cmd.output().expect("run unshare (util-linux) as root"));
        assert_eq!(code, EXIT_USAGE, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert_eq!(stderr, format!("nfknock: error: {says}\n"), "{args:?}");
    }
}

#[test]
fn fwknop_knock_names_the_missing_or_bad_flag_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("gw.key");
    let k = key.display().to_string();
    let (code, _, stderr) = run(nfknock(&["keygen", "--fwknop", "--out", &k]));
    assert_eq!(code, 0, "{stderr}");
    let h = format!("{k}.hmac");
    let native = dir.path().join("n.key").display().to_string();
    assert_eq!(run(nfknock(&["keygen", "--out", &native])).0, 0);
    let srv = ["--server", "192.0.2.1", "-A", "tcp/22"];
    let fw = [&srv[..], &["--fwknop", "--key-file", &k]].concat();
    let both = [&fw[..], &["--hmac-key-file", &h]].concat();
    let cases: &[(&[&str], &str)] = &[
        (
            &[&srv[..], &["--key-file", &native, "--hmac-key-file", &h]].concat(),
            "--hmac-key-file applies to fwknop knocks only; add --fwknop (or use a `format = \"fwknop\"` stanza)",
        ),
        (
            &[&fw[..], &["-a", "10.0.0.2"]].concat(),
            "no HMAC key given: use --hmac-key-file PATH (the PATH.hmac `nfknock keygen --fwknop --out PATH` wrote); fwknop knocks are always sent with an HMAC",
        ),
        (
            &both,
            "an fwknop knock needs the address to open for: --allow-ip IP (an IPv4 address), or --allow-ip source to let the server use the packet's source (fwknop's -s)",
        ),
        (
            &[&both[..], &["-a", "2001:db8::2"]].concat(),
            "--allow-ip 2001:db8::2: fwknop packets carry only an IPv4 allow IP; give an IPv4 address, or `source`",
        ),
        (
            &[&both[..], &["-a", "source", "--encryption-mode", "legacy"]].concat(),
            "--encryption-mode legacy cannot be used with an HMAC (fwknop refuses it too); use cbc and update the server's stanza",
        ),
        (
            &[&both[..], &["-a", "source", "--fw-timeout", "70000"]].concat(),
            "--fw-timeout 70000: an fwknop packet asks for at most 65536 seconds",
        ),
        (
            &[&both[..], &["-a", "source", "--user", "a:b"]].concat(),
            "--user `a:b`: fwknop accepts 1 to 48 letters, digits and `_.-@`",
        ),
    ];
    for (args, says) in cases {
        let mut cmd = Command::new("unshare");
        cmd.args(["--net", env!("CARGO_BIN_EXE_nfknock"), "knock"])
            .args(*args)
            .env_remove("NFKNOCK_LOG")
            .env_remove("RUST_LOG");
        let (code, stdout, stderr) = run(cmd.output().expect("run unshare (util-linux) as root"));
        assert_eq!(code, EXIT_USAGE, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert_eq!(stderr, format!("nfknock: error: {says}\n"), "{args:?}");
    }

    // A `format = "fwknop"` stanza without `allow_ip` names the stanza and the key to add.
    let profile = dir.path().join("client.toml");
    std::fs::write(
        &profile,
        format!("[server.gw]\nformat = \"fwknop\"\nserver = \"192.0.2.1\"\nkey_file = \"{k}\"\nhmac_key_file = \"{h}\"\naccess = [\"tcp/22\"]\n"),
    )
    .unwrap();
    let p = profile.display().to_string();
    let (code, _, stderr) = run(nfknock(&["knock", "--client-config", &p, "-n", "gw"]));
    assert_eq!(code, EXIT_USAGE, "{stderr}");
    assert_eq!(stderr, "nfknock: error: an fwknop knock needs the address to open for: add `allow_ip = \"IP\"` (an IPv4 address) or `allow_ip = \"source\"` to stanza `[server.gw]`, or pass --allow-ip\n");
    let (code, _, stderr) = run(nfknock(&[
        "knock",
        "--client-config",
        &p,
        "-n",
        "gw",
        "-a",
        "source",
        "--dry-run",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("built knock (fwknop tcp/22 for the packet's source"),
        "{stderr}"
    );

    // A key file others can read is refused (exit 1), naming the fix.
    std::fs::set_permissions(&h, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, stderr) = run(nfknock(
        &[&["knock"][..], &both[..], &["-a", "source", "--dry-run"]].concat(),
    ));
    assert_eq!(code, EXIT_FAIL, "{stderr}");
    assert!(stderr.contains(&format!("chmod 600 {h}")), "{stderr}");
}

#[test]
fn keygen_fwknop_flags_need_fwknop_and_files_are_never_overwritten() {
    let (code, _, stderr) = run(nfknock(&["keygen", "--qr"]));
    assert_eq!(code, EXIT_USAGE, "{stderr}");
    assert!(stderr.contains("--fwknop"), "{stderr}");
    let (code, _, stderr) = run(nfknock(&[
        "keygen",
        "--fwknop",
        "--hmac-digest-type",
        "sha7",
    ]));
    assert_eq!(code, EXIT_USAGE, "{stderr}");
    assert!(stderr.contains("sha3_512"), "{stderr}");

    // HMAC key lengths as `fwknop --key-gen` draws them.
    for (hmac, len) in [
        ("md5", 16),
        ("sha1", 20),
        ("sha256", 64),
        ("sha384", 128),
        ("sha512", 128),
    ] {
        let (code, stdout, stderr) =
            run(nfknock(&["keygen", "--fwknop", "--hmac-digest-type", hmac]));
        assert_eq!(code, 0, "{stderr}");
        use base64::Engine as _;
        let field = |name: &str| {
            let v = stdout
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap()
                .trim();
            base64::engine::general_purpose::STANDARD
                .decode(v)
                .unwrap()
                .len()
        };
        assert_eq!(
            (field("KEY_BASE64:"), field("HMAC_KEY_BASE64:")),
            (32, len),
            "{hmac}"
        );
        assert!(
            stdout.contains(&format!("HMAC_DIGEST_TYPE    {hmac}\n")),
            "{stdout}"
        );
        assert!(stdout.contains(&format!("hmac = \"{hmac}\"\n")), "{stdout}");
    }

    // --out refuses an existing HMAC file and then writes neither.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("gw.key");
    std::fs::write(dir.path().join("gw.key.hmac"), "keep me\n").unwrap();
    let (code, _, stderr) = run(nfknock(&[
        "keygen",
        "--fwknop",
        "--out",
        key.to_str().unwrap(),
    ]));
    assert_eq!(code, EXIT_FAIL, "{stderr}");
    assert!(stderr.contains("must not exist"), "{stderr}");
    assert!(!key.exists(), "wrote the key without its HMAC key");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("gw.key.hmac")).unwrap(),
        "keep me\n"
    );
}
