//! Every shipped file that a system tool reads loads with the tool of this machine (CI's is a
//! fresh Debian 12): the nftables snippets under `nft/` and the example host rulesets under
//! `examples/` with `nft -c -f` (in a new, empty network namespace: nothing is changed), the
//! AppArmor profile under `apparmor/` with `apparmor_parser`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The files under `dir` (relative to the source tree) whose names end in one of `exts`,
/// sorted; at least one, or the test is looking in the wrong place.
fn shipped(dir: &str, exts: &[&str]) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            exts.iter().any(|x| name.ends_with(x))
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no {exts:?} file under {}",
        root.display()
    );
    files
}

/// `nft -c -f FILE` in a network namespace of its own (`unshare --net`): the check needs the
/// kernel (`-c` sends the batch with the check flag) but must not touch this machine's ruleset.
///
/// A kernel without `nft_queue` (this build machine's, DESIGN.md) refuses the `queue`
/// statement with ENOENT whatever the nft version; the daemon installs the xt NFQUEUE target
/// there, which no nft file can spell. On such a kernel (proved by a one-line probe) the file
/// is checked with its `queue num N` statements replaced by `drop`, and the test says so.
fn nft_check(file: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(file).unwrap();
    let text = if kernel_has_nft_queue() {
        text
    } else {
        eprintln!(
            "{}: this kernel has no nft_queue; checked with `queue num N` read as `drop`",
            file.display()
        );
        text.lines()
            .map(without_queue)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let out = nft_c(&text);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`nft -c -f {}` failed with {}:\n{}",
            file.display(),
            nft_version(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `unshare --net nft -c -f -` with `text` on its standard input.
fn nft_c(text: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new("unshare")
        .args(["--net", "nft", "-c", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run `unshare --net nft` (install nftables and util-linux): {e}")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn kernel_has_nft_queue() -> bool {
    nft_c("table inet probe { chain c { type filter hook input priority 0; queue num 0; } }")
        .status
        .success()
}

/// A rule line with its `queue num N` statement (the rule's verdict) read as `drop`.
fn without_queue(line: &str) -> String {
    match line.find("queue num ") {
        Some(i) if !line.trim_start().starts_with('#') => format!("{}drop", &line[..i]),
        _ => line.to_string(),
    }
}

fn nft_version() -> String {
    Command::new("nft")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("nft --version: {e}"))
}

/// Issue 12 §6: the shipped snippets load with the nft of the machine (1.0.6 on Debian 12),
/// not only with nft >= 1.0.7.
#[test]
fn shipped_nft_files_load_with_this_machines_nft() {
    let mut files = shipped("nft", &[".nft"]);
    // The example host firewall (issue 12 §8) is loaded by users as their nftables.conf.
    files.extend(shipped("examples", &[".conf"]));
    let failures: Vec<String> = files.iter().filter_map(|f| nft_check(f).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Issue 12 §5: the AppArmor profile parses with this machine's `apparmor_parser` (`-Q`: no
/// kernel load, which a kernel without AppArmor could not do; `-K`: no cache), and names the
/// paths the daemon uses by default.
#[test]
fn apparmor_profile_parses_and_names_the_daemons_paths() {
    let files = shipped("apparmor", &["usr.sbin.nfknock"]);
    for f in &files {
        let out = Command::new("apparmor_parser")
            .args(["-Q", "-K"])
            .arg(f)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run apparmor_parser (Debian package `apparmor`; scripts/common.sh installs it): {e}")
            });
        assert!(
            out.status.success(),
            "`apparmor_parser -Q -K {}` failed:\n{}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(f).unwrap();
        let config_dir = Path::new(nfknock::cli::DEFAULT_CONFIG).parent().unwrap();
        for needed in [
            format!("{}/** r,", config_dir.display()),
            format!("{}/** rwk,", nfknock::config::DEFAULT_STATE_DIR),
            format!("{} rw,", nfknock::config::NODE_EXPORTER_METRICS_FILE),
            "network netlink raw,".to_string(),
            "deny network inet,".to_string(),
            "deny network inet6,".to_string(),
            "capability net_admin,".to_string(),
        ] {
            assert!(text.contains(&needed), "{} lacks `{needed}`", f.display());
        }
    }
    // A profile that does not parse is refused: the check above can fail.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        bad.path(),
        "/usr/sbin/nfknock { capability no_such_cap, }\n",
    )
    .unwrap();
    let out = Command::new("apparmor_parser")
        .args(["-Q", "-K"])
        .arg(bad.path())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "apparmor_parser accepted a broken profile"
    );
}
