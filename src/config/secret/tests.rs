//! Unit tests of `config::secret`.

use super::*;
use base64::engine::general_purpose::STANDARD;
use std::os::unix::fs::PermissionsExt;

#[test]
fn native_secret_is_32_bytes_of_base64_padding_optional() {
    let text = STANDARD.encode([7u8; 32]);
    assert_eq!(*decode_native_secret(&text).unwrap(), [7u8; 32]);
    assert_eq!(
        *decode_native_secret(text.trim_end_matches('=')).unwrap(),
        [7u8; 32]
    );
    let short = decode_native_secret(&STANDARD.encode([7u8; 31])).unwrap_err();
    assert!(
        short.contains("31 bytes") && short.contains("nfknock keygen"),
        "{short}"
    );
    assert!(decode_native_secret("not base64!")
        .unwrap_err()
        .contains("not valid base64"));
    // URL-safe alphabet is not the standard one.
    assert!(decode_native_secret(&"_".repeat(43)).is_err());
}

/// Running as `uid`, no switch ahead, name unknown.
fn running_as(uid: u32) -> Owner {
    Owner {
        uid,
        name: None,
        switching: false,
    }
}

fn account(name: &str, uid: u32) -> crate::config::Account {
    crate::config::Account {
        name: name.into(),
        uid,
        gid: uid,
    }
}

fn read(path: &Path) -> Result<Zeroizing<String>, String> {
    read_key_file(
        &crate::sys::FsLoader,
        path,
        &Owner::running_as(crate::sys::euid()),
    )
}

#[test]
fn private_means_no_group_world_bits_and_root_or_self() {
    let p = Path::new("/etc/nfknock/a.key");
    let root = running_as(0);
    assert!(check_private_meta(p, "key file", 0o100600, 0, &root).is_ok());
    assert!(check_private_meta(p, "key file", 0o100400, 1000, &running_as(1000)).is_ok());
    let e = check_private_meta(p, "key file", 0o100644, 0, &root).unwrap_err();
    assert!(
        e.contains("mode 0644") && e.contains("`chmod 600 /etc/nfknock/a.key`"),
        "{e}"
    );
    assert!(check_private_meta(p, "key file", 0o100610, 0, &root).is_err());
    let e = check_private_meta(p, "key file", 0o100600, 1000, &root).unwrap_err();
    assert!(
        e.contains("uid 1000") && e.contains("`chown root:root /etc/nfknock/a.key`"),
        "{e}"
    );
    let e = check_private_meta(p, "key file", 0o100600, 1000, &running_as(998)).unwrap_err();
    assert!(e.contains("`chown 998 /etc/nfknock/a.key`"), "{e}");
}

/// Started as root with `[server] user = "svc"`, the daemon reads its key files as `svc`
/// on every reload: root's files are refused with the chown to `svc`.
#[test]
fn key_files_must_belong_to_the_user_the_daemon_switches_to() {
    let p = Path::new("/etc/nfknock/a.key");
    let svc = RunAs::User {
        account: account("svc", 4242),
        explicit: true,
    };
    let owner = Owner::for_server(&svc, 0);
    let e = check_private_meta(p, "key file", 0o100600, 0, &owner).unwrap_err();
    assert!(
        e.contains("owned by uid 0")
            && e.contains("`svc` (uid 4242)")
            && e.contains("`[server] user`")
            && e.contains("`chown svc: /etc/nfknock/a.key`"),
        "{e}"
    );
    assert!(check_private_meta(p, "key file", 0o100600, 4242, &owner).is_ok());

    // Already that user (systemd's User=): root's files pass the check (and are then
    // unreadable, which the read says), the user's own pass, others are refused by name.
    let owner = Owner::for_server(&svc, 4242);
    assert!(check_private_meta(p, "key file", 0o100600, 4242, &owner).is_ok());
    assert!(check_private_meta(p, "key file", 0o100600, 0, &owner).is_ok());
    let e = check_private_meta(p, "key file", 0o100600, 1000, &owner).unwrap_err();
    assert!(e.contains("`chown svc: /etc/nfknock/a.key`"), "{e}");

    // Root staying root (`user = "root"`, or no `nfknock` account): root's files do.
    for user in [
        RunAs::Unchanged,
        RunAs::User {
            account: account("root", 0),
            explicit: true,
        },
    ] {
        let owner = Owner::for_server(&user, 0);
        assert!(check_private_meta(p, "key file", 0o100600, 0, &owner).is_ok());
    }
}

#[test]
fn quotes_paths_with_spaces() {
    assert_eq!(shell_quote(Path::new("/a b/c")), "'/a b/c'");
    assert_eq!(shell_quote(Path::new("/it's")), r"'/it'\''s'");
}

#[test]
fn resolves_relative_and_tilde_paths() {
    let cfg = Path::new("/etc/nfknock/nfknock.toml");
    assert_eq!(
        resolve("a.key", cfg, None).unwrap(),
        Path::new("/etc/nfknock/a.key")
    );
    assert_eq!(
        resolve("/k/a.key", cfg, None).unwrap(),
        Path::new("/k/a.key")
    );
    let home = Path::new("/home/u");
    assert_eq!(
        resolve("~/x.key", cfg, Some(home)).unwrap(),
        Path::new("/home/u/x.key")
    );
    assert!(resolve("~/x.key", cfg, None).unwrap_err().contains("$HOME"));
    assert!(resolve("~bob/x.key", cfg, Some(home)).is_err());
}

/// Run `f` on a thread; fail (instead of hanging the test run) if it takes over 5 s.
fn within_5s<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("{what} hung"))
}

#[test]
fn a_symlink_to_a_private_key_file_is_refused_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.key");
    std::fs::write(&real, "abc=\n").unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = dir.path().join("link.key");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    // The target passes every check: only an open that refuses to follow the link (and
    // checks what it opened, not what the path named) refuses this.
    assert_eq!(read(&real).unwrap().as_str(), "abc=");
    let e = read(&link).unwrap_err();
    assert!(
        e.contains(&link.display().to_string()) && e.contains("symbolic link"),
        "{e}"
    );
}

#[test]
fn a_fifo_key_file_is_refused_without_waiting_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.key");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let p = fifo.clone();
    let e = within_5s("reading a FIFO as a key file", move || read(&p)).unwrap_err();
    assert!(
        e.contains("not a regular file") && e.contains("FIFO"),
        "{e}"
    );
    // A directory is not a key file either.
    let e = read(dir.path()).unwrap_err();
    assert!(e.contains("not a regular file"), "{e}");
}

#[test]
fn an_oversized_key_file_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.key");
    std::fs::write(
        &path,
        "A".repeat(super::super::files::MAX_KEY_FILE_LEN as usize + 1),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = read(&path).unwrap_err();
    assert!(e.contains("longer than 4096 bytes"), "{e}");
}

#[test]
fn reads_a_private_key_file_and_refuses_a_readable_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    std::fs::write(&path, "  abc=\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(read(&path).unwrap().as_str(), "abc=");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = read(&path).unwrap_err();
    assert!(
        e.contains(&format!("`chmod 600 {}`", path.display())),
        "{e}"
    );

    std::fs::write(&path, "a\nb\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(read(&path).unwrap_err().contains("more than one line"));
    assert!(read(&dir.path().join("missing"))
        .unwrap_err()
        .contains("cannot read"));
}

/// A key file the service user may not read says who reads it and the `chown` that fixes it.
#[test]
fn an_unreadable_key_file_names_the_reader_and_the_chown() {
    let owner = Owner {
        uid: 998,
        name: Some("nfknock".into()),
        switching: true,
    };
    let e = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
    assert_eq!(
        open_error("key file", Path::new("/etc/nfknock/a b.key"), &e, &owner),
        format!("cannot read key file /etc/nfknock/a b.key: {e}; nfknock reads it as `nfknock` (uid 998): give it the file with `chown nfknock: '/etc/nfknock/a b.key'` (mode 0600)")
    );
    let e = std::io::Error::other("disk on fire");
    assert_eq!(
        open_error("key file", Path::new("/k"), &e, &running_as(5)),
        "cannot read key file /k: disk on fire"
    );
}

/// A key file that is binary or blank is refused with what it must hold.
#[test]
fn a_binary_or_blank_key_file_says_it_must_hold_one_line_of_base64() {
    use crate::config::{FileMeta, MemFiles};
    let meta = FileMeta {
        mode: 0o100600,
        uid: 0,
    };
    let files = MemFiles::new()
        .with("/k/bin", b"\xff\xfe".to_vec(), meta)
        .with("/k/blank", " \n\n".as_bytes().to_vec(), meta);
    let root = Owner::running_as(0);
    assert_eq!(
        read_key_file(&files, Path::new("/k/bin"), &root).unwrap_err(),
        "key file /k/bin is not text; it must hold one line of base64"
    );
    assert_eq!(
        read_key_file(&files, Path::new("/k/blank"), &root).unwrap_err(),
        "key file /k/blank is empty; it must hold one line of base64"
    );
}
