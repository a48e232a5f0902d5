//! The Debian package's sources stay in step with the tree: the packaged unit is the one unit
//! with its Exec paths in /usr/sbin, every asset `cargo deb` packs exists, and the maintainer
//! scripts parse. The package itself is tested under a real systemd by `scripts/test-package`
//! (run by `./scripts/test`).

use std::path::Path;
use std::process::Command;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `debian/nfknock.service` is what `scripts/package unit` makes of `systemd/nfknock.service`:
/// the same unit, `ExecStart=`, `ExecStartPre=` and `ExecReload=` in /usr/sbin.
#[test]
fn the_packaged_unit_is_the_shipped_unit_with_usr_sbin_paths() {
    for name in ["nfknock", "nfknock-fleet"] {
        let out = Command::new(repo("scripts/package"))
            .args(["unit", name])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let made = String::from_utf8(out.stdout).unwrap();
        let packaged = std::fs::read_to_string(repo(&format!("debian/{name}.service"))).unwrap();
        assert_eq!(
            packaged, made,
            "debian/{name}.service is stale: run ./scripts/package unit {name} > debian/{name}.service"
        );
        for exec in packaged.lines().filter(|l| l.starts_with("Exec")) {
            assert!(exec.contains("=/usr/sbin/"), "{name}: {exec}");
        }
    }
    let packaged = std::fs::read_to_string(repo("debian/nfknock.service")).unwrap();
    for key in ["ExecStartPre=", "ExecStart=", "ExecReload="] {
        let line = packaged
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key}"));
        assert!(
            line.starts_with(&format!("{key}/usr/sbin/nfknock ")),
            "{line}"
        );
    }
    let reload = packaged
        .lines()
        .find(|l| l.starts_with("ExecReload="))
        .unwrap();
    assert!(reload.contains("nfknock reload --config"), "{reload}");
}

/// Every file `[package.metadata.deb] assets` names exists (except the binary cargo builds), and
/// the maintainer scripts are valid `sh`.
#[test]
fn the_package_metadata_names_existing_files_and_its_scripts_parse() {
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(repo("Cargo.toml")).unwrap()).unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    let assets = deb["assets"].as_array().unwrap();
    assert!(!assets.is_empty());
    for a in assets {
        let src = a[0].as_str().unwrap();
        // The binary cargo builds; the man pages and completions scripts/package generates
        // (tests/docs.rs checks the package names what the generator writes).
        if src.starts_with("target/") || src.starts_with("debian/gen/") {
            continue;
        }
        assert!(repo(src).exists(), "asset {src} is missing");
    }
    for f in ["debian/copyright", "debian/changelog"] {
        assert!(repo(f).exists(), "{f}");
    }
    let copyright = std::fs::read_to_string(repo("debian/copyright")).unwrap();
    assert!(
        copyright.starts_with(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
        ),
        "debian/copyright is not DEP-5"
    );
    for s in ["postinst", "prerm", "postrm"] {
        let path = repo(&format!("debian/{s}"));
        let out = Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(out.status.success(), "{s}: {out:?}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{s} is not executable");
    }
}

/// The shipped `/etc/nfknock/nfknock.toml` does nothing dangerous: it names no client, so
/// `nfknock check` (the unit's `ExecStartPre=`) refuses it with that one reason and the daemon
/// never starts, and nothing is gated.
#[test]
fn the_shipped_default_config_starts_nothing() {
    let out = Command::new(super::bin())
        .args(["check", "--config"])
        .arg(repo("debian/nfknock.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no client is configured") && stderr.contains("1 problem found"),
        "{stderr}"
    );
}

/// The Debian changelog's newest entry is for the crate's version (cargo-deb takes the
/// package's version from Cargo.toml, the changelog does not follow by itself).
#[test]
fn the_debian_changelog_names_the_crate_version() {
    let changelog = std::fs::read_to_string(repo("debian/changelog")).unwrap();
    let first = changelog.lines().next().unwrap();
    let want = format!("nfknock ({}-", env!("CARGO_PKG_VERSION"));
    assert!(
        first.starts_with(&want),
        "debian/changelog starts with `{first}`; add an entry for {}",
        env!("CARGO_PKG_VERSION")
    );
}
