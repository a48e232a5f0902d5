//! Files: key files and config files, read through `Files`, private, size-capped; config
//! itself reads nothing.

use super::*;

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

/// config/ is pure: it reads files only through the `Files` it is given and the user database
/// through `Accounts` (the real ones are in `sys`). Test modules may touch the disk.
#[test]
fn config_reads_nothing_by_itself() {
    const SOURCES: &[(&str, &str)] = &[
        ("mod.rs", include_str!("../mod.rs")),
        ("files.rs", include_str!("../files.rs")),
        ("raw.rs", include_str!("../raw.rs")),
        ("values.rs", include_str!("../values.rs")),
        ("secret.rs", include_str!("../secret.rs")),
        ("knock_profile.rs", include_str!("../knock_profile.rs")),
        ("server/mod.rs", include_str!("../server/mod.rs")),
        ("server/settings.rs", include_str!("../server/settings.rs")),
        (
            "server/client_entry.rs",
            include_str!("../server/client_entry.rs"),
        ),
        (
            "server/fwknop_key.rs",
            include_str!("../server/fwknop_key.rs"),
        ),
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
