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

/// Read an fwknop key file (as written by `nfknock keygen --fwknop --out`: one line of base64,
/// padded or not) for the client: private, `euid`'s or root's. Its length is the caller's to
/// check.
pub fn read_fwknop_key_file(
    files: &dyn Files,
    path: &Path,
    euid: u32,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let text = read_key_file(files, path, &Owner::running_as(euid))?;
    crate::wire::fwknop::decode_key_base64(&text).ok_or_else(|| {
        format!(
            "key file {} is not valid base64; it must hold one line as written by `nfknock keygen --fwknop --out` (or printed by `fwknop --key-gen`)",
            path.display()
        )
    })
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
mod tests;
