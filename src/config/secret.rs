//! Key material in configs: base64 decoding, key files and their permissions.
//!
//! A key file (or a config holding an inline key) must be private: no group/world bits, owned by
//! the user nfknock runs as (or root, unless a daemon started as root switches to another user:
//! it reads the file again on every reload, after the switch). fwknopd refuses the same (`fwknopd.c` `check_file_perms`
//! warns on anything but 0600); we refuse, because a readable key is a published key.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use zeroize::Zeroizing;

use super::files::{is_link_refused, FileMeta, Files};
use super::RunAs;
use crate::crypto::SECRET_LEN;

/// Standard alphabet; `=` padding optional (fwknop writes `KEY_BASE64` with padding, people copy
/// keys without it). Trailing bits must be zero, so each key has one spelling.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decode standard base64, padding optional.
pub(crate) fn decode_base64(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    B64.decode(text.as_bytes()).ok().map(Zeroizing::new)
}

/// Decode a native 256-bit secret as printed by `nfknock keygen`. The error says what to do.
pub fn decode_native_secret(text: &str) -> Result<Zeroizing<[u8; SECRET_LEN]>, String> {
    let bytes = decode_base64(text.trim()).ok_or_else(|| {
        "is not valid base64; paste the whole line printed by `nfknock keygen`".to_string()
    })?;
    let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
    if bytes.len() != SECRET_LEN {
        return Err(format!(
            "decodes to {} bytes, a native key is exactly {SECRET_LEN}; generate one with `nfknock keygen`",
            bytes.len()
        ));
    }
    secret.copy_from_slice(&bytes);
    Ok(secret)
}

/// Quote a path for a shell command in a message (single quotes unless it is plain).
pub(crate) fn shell_quote(path: &Path) -> String {
    let s = path.display().to_string();
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+@:,=".contains(&b))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The user a file holding secrets must belong to: the one nfknock reads it as, at start and
/// again on every reload (SIGHUP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    uid: u32,
    /// The account's name, for messages and `chown` (the uid when unknown).
    name: Option<String>,
    /// nfknock is root now and switches to `uid` once started (`[server] user`): a file root
    /// can read now would be unreadable on a reload, so root's files do not do.
    switching: bool,
}

impl Owner {
    /// Whoever nfknock runs as now (the effective user `euid`), with no switch ahead: the
    /// knock client.
    pub(crate) fn running_as(euid: u32) -> Owner {
        Owner {
            uid: euid,
            name: None,
            switching: false,
        }
    }

    /// For a server config: the user the daemon will read its files as, when running as `euid`
    /// with `[server] user` resolved to `user`.
    pub(crate) fn for_server(user: &RunAs, euid: u32) -> Owner {
        if let Some(account) = user.switch_to(euid) {
            return Owner {
                uid: account.uid,
                name: Some(account.name.clone()),
                switching: true,
            };
        }
        let name = match user {
            RunAs::User { account, .. } if account.uid == euid => Some(account.name.clone()),
            _ => None,
        };
        Owner {
            uid: euid,
            name,
            switching: false,
        }
    }

    /// May a file owned by `uid` hold secrets?
    fn accepts(&self, uid: u32) -> bool {
        uid == self.uid || (uid == 0 && !self.switching)
    }

    /// The `chown` argument that hands a file to this user.
    fn chown(&self) -> String {
        match (&self.name, self.uid) {
            (_, 0) => "root:root".to_string(),
            (Some(name), _) => format!("{name}:"),
            (None, uid) => uid.to_string(),
        }
    }

    /// "`nfknock` (uid 998)" or "uid 998".
    fn describe(&self) -> String {
        match &self.name {
            Some(name) => format!("`{name}` (uid {})", self.uid),
            None => format!("uid {}", self.uid),
        }
    }
}

/// Refuse a file holding secrets unless it is private: no group/world permission bits, owned by
/// root or the user nfknock reads it as (`owner`). `what` names it in the message ("key file",
/// "config file"); the message gives the exact command that fixes it. `meta` is the opened
/// file's (`fstat`), not the path's.
pub(crate) fn check_private(
    path: &Path,
    what: &str,
    meta: FileMeta,
    owner: &Owner,
) -> Result<(), String> {
    check_private_meta(path, what, meta.mode, meta.uid, owner)
}

/// "cannot read {what} {path}: {e}", with the fix for the common cases.
fn open_error(what: &str, path: &Path, e: &std::io::Error, owner: &Owner) -> String {
    let q = shell_quote(path);
    let hint = match e.kind() {
        _ if is_link_refused(e) => {
            format!("; point `key_file` at the file itself (`readlink -f {q}` names it)")
        }
        std::io::ErrorKind::NotFound if what == "key file" => format!(
            "; fix the path, or create the file with the key on one line and run `chmod 600 {q}`"
        ),
        // A root-owned 0600 key cannot be read by the service user the shipped unit runs as
        // (User=nfknock).
        std::io::ErrorKind::PermissionDenied => format!(
            "; nfknock reads it as {}: give it the file with `chown {} {q}` (mode 0600)",
            owner.describe(),
            owner.chown()
        ),
        _ => String::new(),
    };
    format!("cannot read {what} {}: {e}{hint}", path.display())
}

/// [`check_private`] on given mode/owner (pure, for tests).
fn check_private_meta(
    path: &Path,
    what: &str,
    mode: u32,
    uid: u32,
    owner: &Owner,
) -> Result<(), String> {
    let q = shell_quote(path);
    if mode & 0o077 != 0 {
        return Err(format!(
            "{what} {} holds a secret but is accessible to group or others (mode {:04o}); run `chmod 600 {q}`",
            path.display(),
            mode & 0o7777
        ));
    }
    if !owner.accepts(uid) {
        let chown = owner.chown();
        let (path, who) = (path.display(), owner.describe());
        return Err(if owner.switching {
            // Started as root, the daemon could read it now but not on a reload after the
            // switch: hand the file to the user it switches to.
            format!(
                "{what} {path} holds a secret but is owned by uid {uid}, not by {who}, the user nfknock switches to once started (`[server] user`) and reads it as on a reload; run `chown {chown} {q}`"
            )
        } else {
            // Running as a service user (systemd `User=nfknock`), a root-owned 0600 file would
            // pass this check but be unreadable: hand the file to that user instead.
            format!(
                "{what} {path} holds a secret but is owned by uid {uid}, neither root nor the user nfknock runs as ({who}); run `chown {chown} {q}`"
            )
        });
    }
    Ok(())
}

/// Resolve a `key_file` value: `~` / `~/…` against `home` (when given), then relative to the
/// config file's directory.
pub(crate) fn resolve(
    value: &str,
    config_path: &Path,
    home: Option<&Path>,
) -> Result<PathBuf, String> {
    let expanded = match (value.strip_prefix('~'), home) {
        (Some(rest), _) if !(rest.is_empty() || rest.starts_with('/')) => {
            return Err("`~user/` paths are not supported; write the path out in full".to_string())
        }
        (Some(rest), Some(home)) => home.join(rest.trim_start_matches('/')),
        (Some(_), None) => {
            return Err(
                "starts with `~` but $HOME is not set; write the path out in full".to_string(),
            )
        }
        (None, _) => PathBuf::from(value),
    };
    if expanded.is_absolute() {
        return Ok(expanded);
    }
    let dir = config_path.parent().unwrap_or(Path::new(""));
    Ok(dir.join(expanded))
}

/// Read a native key file (as written by `nfknock keygen --out`) for the client: private, one
/// line of base64, exactly 256 bits; it must belong to `euid` (or root), who reads it.
pub fn read_native_key_file(
    files: &dyn Files,
    path: &Path,
    euid: u32,
) -> Result<crate::crypto::NativeKey, String> {
    let text = read_key_file(files, path, &Owner::running_as(euid))?;
    let secret =
        decode_native_secret(&text).map_err(|e| format!("key file {}: {e}", path.display()))?;
    Ok(crate::crypto::NativeKey::derive(&secret))
}

/// Read a key file through `files` ([`Files::read_key`]: a regular file, not a symbolic
/// link, size-capped), private and `owner`'s (see [`check_private`]; checked on what was
/// read), one line of text, surrounding whitespace trimmed. The content is returned
/// zeroizing; decoding is the caller's.
pub(crate) fn read_key_file(
    files: &dyn Files,
    path: &Path,
    owner: &Owner,
) -> Result<Zeroizing<String>, String> {
    let what = "key file";
    let loaded = files
        .read_key(path)
        .map_err(|e| open_error(what, path, &e, owner))?;
    check_private(path, what, loaded.meta, owner)?;
    let text = std::str::from_utf8(&loaded.bytes).map_err(|_| {
        format!(
            "key file {} is not text; it must hold one line of base64",
            path.display()
        )
    })?;
    let text = text.trim();
    if text.is_empty() {
        return Err(format!(
            "key file {} is empty; it must hold one line of base64",
            path.display()
        ));
    }
    if text.contains('\n') {
        return Err(format!(
            "key file {} holds more than one line; it must hold exactly one line of base64",
            path.display()
        ));
    }
    Ok(Zeroizing::new(text.to_string()))
}

#[cfg(test)]
mod tests {
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
}
