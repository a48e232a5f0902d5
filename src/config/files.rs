//! What config reading needs from the outside world, as traits: [`Files`] (config files, key
//! files, the importer's directories) and [`Accounts`] (the user database). The file system
//! and the system's user database implement them once, at the edge (`sys::FsLoader`,
//! `sys::SystemAccounts`); [`MemFiles`] and [`NoAccounts`] are the in-memory ones for tests,
//! fuzz targets and [`super::parse_str`]. Parsing itself reads nothing.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// A config file larger than this is refused before it is parsed: parsing costs up to ~55 bytes
/// of memory per byte of TOML (docs/FUZZING.md), and 10 000 clients fit in about 1.5 MB.
pub const MAX_CONFIG_LEN: u64 = 16 << 20;

/// A key file is one line of base64; anything this long is the wrong file.
pub const MAX_KEY_FILE_LEN: u64 = 4096;

/// Who owns a file that was read and who may read it: what the privacy checks need, taken
/// from the open descriptor (`fstat(2)`), never from the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    /// `st_mode` (type and permission bits).
    pub mode: u32,
    /// `st_uid`.
    pub uid: u32,
}

/// A whole file, read into one zeroizing buffer, with the metadata of what was read.
#[derive(Debug)]
pub struct Loaded {
    pub bytes: Zeroizing<Vec<u8>>,
    pub meta: FileMeta,
}

/// The only way config parsing and the fwknop importer reach files. Every error is an
/// [`io::Error`] saying why (a caller adds what to do); nothing is read without a size cap and
/// only regular files are read (a FIFO or a device is refused at once, never waited on).
pub trait Files {
    /// A config file (server, knock profiles, fwknop's `access.conf`): a symbolic link is
    /// followed, at most [`MAX_CONFIG_LEN`] bytes.
    fn read_config(&self, path: &Path) -> io::Result<Loaded>;
    /// A key file: a symbolic link is refused (the file named is the file checked), at most
    /// [`MAX_KEY_FILE_LEN`] bytes.
    fn read_key(&self, path: &Path) -> io::Result<Loaded>;
    /// The regular `*.conf` files directly in `dir`, sorted by name.
    fn list_conf(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// A name that is equal for equal files (include-loop detection); `path` itself when it
    /// cannot be resolved (the read then says why).
    fn canonical(&self, path: &Path) -> PathBuf;
}

/// The error inside an [`io::Error`] from a key file read ([`Files::read_key`]) that met a
/// symbolic link; callers add what to do about it ([`is_link_refused`]).
#[derive(Debug)]
struct LinkRefused;

impl std::fmt::Display for LinkRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("it is a symbolic link, which nfknock does not follow")
    }
}

impl std::error::Error for LinkRefused {}

/// Was `e` a key file read refusing a symbolic link?
pub fn is_link_refused(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<LinkRefused>())
}

/// The error for a key file that is a symbolic link ([`Files::read_key`]).
pub fn link_refused() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, LinkRefused)
}

/// A user account from the user database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    /// The primary group.
    pub gid: u32,
}

/// Who nfknock is and which users exist: what resolving `[server] user` needs. The config
/// check takes it as an argument, so tests pass a fake user database.
pub trait Accounts {
    /// The effective user id.
    fn euid(&self) -> u32;
    /// The account named `name`, or `None` if there is none.
    fn by_name(&self, name: &str) -> io::Result<Option<Account>>;
    /// The account named `name` in the local user database (`/etc/passwd`) only, or `None`:
    /// for the default user, which no config names. Asking no NSS module (systemd, LDAP, sss)
    /// keeps a directory's account of that name from being picked up unasked, and keeps the
    /// module out of the daemon's memory for its whole life (~0.9 MiB of RSS).
    fn local_by_name(&self, name: &str) -> io::Result<Option<Account>>;
}

/// A user database in which every name but `root` is an unprivileged account (uid 65534) and
/// no default service user exists: for `nfknock import-fwknop`, which runs anywhere and checks
/// its output's `command_user` names only for form (`nfknock check` on the server looks them
/// up for real).
pub struct AnyUser;

impl Accounts for AnyUser {
    fn euid(&self) -> u32 {
        0
    }

    fn by_name(&self, name: &str) -> io::Result<Option<Account>> {
        let id = if name == "root" { 0 } else { 65534 };
        Ok(Some(Account {
            name: name.to_string(),
            uid: id,
            gid: id,
        }))
    }

    fn local_by_name(&self, _name: &str) -> io::Result<Option<Account>> {
        Ok(None)
    }
}

/// A user database with no accounts, seen by root: text parsed on its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAccounts;

impl Accounts for NoAccounts {
    fn euid(&self) -> u32 {
        0
    }

    fn by_name(&self, _name: &str) -> io::Result<Option<Account>> {
        Ok(None)
    }

    fn local_by_name(&self, _name: &str) -> io::Result<Option<Account>> {
        Ok(None)
    }
}

/// Files held in memory (for tests and fuzz targets): each path maps to its bytes and
/// metadata. The size caps of [`Files`] apply as on disk; a path not held is `NotFound`.
#[derive(Debug, Default)]
pub struct MemFiles {
    files: BTreeMap<PathBuf, (Vec<u8>, FileMeta)>,
}

impl MemFiles {
    /// No files at all.
    pub fn new() -> MemFiles {
        MemFiles::default()
    }

    /// Add (or replace) a file.
    pub fn with(
        mut self,
        path: impl Into<PathBuf>,
        bytes: impl Into<Vec<u8>>,
        meta: FileMeta,
    ) -> MemFiles {
        self.files.insert(path.into(), (bytes.into(), meta));
        self
    }

    fn read(&self, path: &Path, limit: u64) -> io::Result<Loaded> {
        let (bytes, meta) = self
            .files
            .get(path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "No such file or directory"))?;
        if bytes.len() as u64 > limit {
            return Err(too_long(limit));
        }
        Ok(Loaded {
            bytes: Zeroizing::new(bytes.clone()),
            meta: *meta,
        })
    }
}

/// The error for a file over its size cap.
pub(crate) fn too_long(limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("it is longer than {limit} bytes; is this the right file?"),
    )
}

impl Files for MemFiles {
    fn read_config(&self, path: &Path) -> io::Result<Loaded> {
        self.read(path, MAX_CONFIG_LEN)
    }

    fn read_key(&self, path: &Path) -> io::Result<Loaded> {
        self.read(path, MAX_KEY_FILE_LEN)
    }

    fn list_conf(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        Ok(self
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir) && p.extension().is_some_and(|e| e == "conf"))
            .cloned()
            .collect())
    }

    fn canonical(&self, path: &Path) -> PathBuf {
        path.to_path_buf()
    }
}
