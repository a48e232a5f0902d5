//! `nfknock import-fwknop`: fwknopd's `access.conf` (and optionally `fwknopd.conf`) → an
//! equivalent nfknock server config as TOML text, plus a list of warnings and errors that say
//! what could not be carried over and what to do about it.
//!
//! The syntax follows fwknopd 2.6 (`server/access.c`, `server/config_init.c`;
//! shared/FWKNOP-WIRE.md §8, §9), checked against `fwknopd 2.6.10 -D` (dump config) on Debian:
//!
//! * one `VAR value` per line; the value ends at `;` or the end of the line (`sscanf("%s
//!   %[^;\n\r]")`); trailing whitespace is chopped; a trailing `:` on VAR is removed
//!   (`SOURCE: ANY`); `#` and blank lines are ignored; variable names are case-sensitive;
//! * each `SOURCE` starts a stanza; lines before the first `SOURCE` *of each file* are ignored
//!   (an `%include`d file starts with no stanza; after it, the including file goes on filling
//!   its own current stanza — both verified with `fwknopd -D`);
//! * `%include FILE`, `%include_folder DIR` (every `*.conf`, sorted by name) and, inside a
//!   stanza, `%include_keys FILE`, from which only the key variables are read (fwknopd 2.6.10
//!   ignores `HMAC_DIGEST_TYPE`, `ENCRYPTION_MODE`, `GPG_HOME_DIR`, `OPEN_PORTS`, `SOURCE`, ...
//!   there: verified with `fwknopd -D`);
//! * at most 3 levels of files (fwknopd: "Refusing to go deeper than 3 levels"); a loop is
//!   reported as such rather than as a depth error;
//! * when a variable is repeated in a stanza the last line wins; a `KEY` line after a
//!   `KEY_BASE64` line replaces it and vice versa (verified with `fwknopd -D`).
//!
//! Everything here is pure: it reads no clock and no environment, and every file through the
//! [`Loader`] it is given (the command line gives [`crate::sys::FsLoader`]; tests and the fuzz
//! target give in-memory files). Key material is kept in [`Zeroizing`] strings; the rendered
//! TOML holds the keys (that is the point: the admin redirects it into a private file).
//!
//! The rendered text is checked with [`crate::config::parse_str`] before it is returned, one
//! client at a time, so a stanza the nfknock checker would refuse is reported (and left out)
//! here rather than by `nfknock check` later.
//!
//! The files, in the order an import runs:
//!
//! | file | role |
//! | --- | --- |
//! | `syntax` | one `VAR value` line, fwknopd's booleans, the `# name:` comment |
//! | `access_conf` | access.conf with its includes → the stanzas as written |
//! | `fwknopd_conf` | fwknopd.conf → the knock port and `max_age`, warnings for what has no equivalent |
//! | `variables` | which variables are mapped, and what happens to the others |
//! | `values` | networks, `proto/port` lists, seconds, dates, digest names |
//! | `stanza` | one stanza → one client, or the errors that say why not |
//! | `convert` | client names, every stanza, the checker as the judge → [`Import`] |
//! | `render` | the TOML text |

mod access_conf;
mod commands;
mod convert;
mod fwknopd_conf;
mod render;
mod stanza;
mod syntax;
mod values;
mod variables;

use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::access::Access;

/// fwknopd refuses to nest access files deeper than this (`server/access.c`, verified with
/// fwknopd 2.6.10: a chain of 3 files loads, a 4th is refused).
pub const MAX_INCLUDE_DEPTH: usize = 3;
/// fwknopd's `DEF_FW_ACCESS_TIMEOUT` (server/fwknopd_common.h).
pub const FWKNOP_DEFAULT_TIMEOUT: u32 = 30;
/// fwknopd's `DEF_MAX_FW_TIMEOUT` (server/fwknopd_common.h).
pub const FWKNOP_DEFAULT_MAX_TIMEOUT: u32 = 300;
/// fwknopd's default knock port (`udp port 62201`, server/fwknopd_common.h).
pub const FWKNOP_DEFAULT_PORT: u16 = 62201;
/// fwknopd's default `MAX_SPA_PACKET_AGE`.
pub const FWKNOP_DEFAULT_MAX_AGE: u64 = 120;

/// The only I/O of the importer: reading files and listing directories.
pub trait Loader {
    /// The whole file as UTF-8 text; the error says why it could not be read.
    fn read(&self, path: &Path) -> Result<Zeroizing<String>, String>;
    /// The `*.conf` files directly in `dir`, sorted by name.
    fn conf_files(&self, dir: &Path) -> Result<Vec<PathBuf>, String>;
    /// A name that is equal for equal files (for loop detection).
    fn canonical(&self, path: &Path) -> PathBuf {
        path.to_path_buf()
    }
}

/// Every [`crate::config::Files`] (the file system's is `sys::FsLoader`) is a [`Loader`]:
/// config files as UTF-8 text, with the same checks (regular files only, size-capped).
impl<F: crate::config::Files + ?Sized> Loader for F {
    fn read(&self, path: &Path) -> Result<Zeroizing<String>, String> {
        let loaded = self.read_config(path).map_err(|e| e.to_string())?;
        match std::str::from_utf8(&loaded.bytes) {
            Ok(text) => Ok(Zeroizing::new(text.to_string())),
            Err(_) => Err("the file is not UTF-8 text".to_string()),
        }
    }

    fn conf_files(&self, dir: &Path) -> Result<Vec<PathBuf>, String> {
        self.list_conf(dir).map_err(|e| e.to_string())
    }

    fn canonical(&self, path: &Path) -> PathBuf {
        crate::config::Files::canonical(self, path)
    }
}

/// A file that could not be used at all: nothing is rendered (exit status 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {}: {message}; check the path (and run as a user who may read it)", .path.display())]
    Read { path: PathBuf, message: String },
    #[error("{}:{line}: {message}", .path.display())]
    Include {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// How bad a [`Diag`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Converted, but something was dropped or behaves differently.
    Warning,
    /// This stanza (or setting) could not be converted.
    Error,
}

/// One message for the admin: where, which stanza, what, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub level: Level,
    /// File and 1-based line, when the message is about a line.
    pub origin: Option<(PathBuf, usize)>,
    /// The client name the stanza gets (or would have got).
    pub stanza: Option<String>,
    pub message: String,
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.level {
            Level::Warning => "warning: ",
            Level::Error => "error: ",
        })?;
        if let Some((path, line)) = &self.origin {
            write!(f, "{}:{line}: ", path.display())?;
        }
        if let Some(s) = &self.stanza {
            write!(f, "stanza `{s}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Command-line choices.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--protect LIST`: the `allow` list of stanzas without `OPEN_PORTS`.
    pub protect: Option<Vec<Access>>,
}

/// The result of an import.
#[derive(Debug)]
pub struct Import {
    /// The nfknock config; `None` when no stanza could be converted.
    pub toml: Option<Zeroizing<String>>,
    /// Every warning and error: reading problems first, then each stanza's in stanza order.
    pub diags: Vec<Diag>,
    /// Names of the clients in `toml`, in order.
    pub clients: Vec<String>,
    /// Stanzas that could not be converted.
    pub failed: usize,
}

impl Import {
    /// Was everything converted (warnings allowed)?
    pub fn complete(&self) -> bool {
        self.toml.is_some() && !self.diags.iter().any(|d| d.level == Level::Error)
    }
}

/// Read `access` (following includes) and optionally `fwknopd`, and convert. The only I/O is
/// through `loader`.
pub fn import(
    loader: &dyn Loader,
    access: &Path,
    fwknopd: Option<&Path>,
    opts: &Options,
) -> Result<Import, ImportError> {
    let parsed = access_conf::parse(loader, access)?;
    let daemon = match fwknopd {
        None => None,
        Some(path) => {
            let text = loader.read(path).map_err(|message| ImportError::Read {
                path: path.to_path_buf(),
                message,
            })?;
            Some(fwknopd_conf::parse_fwknopd_conf(&text, path))
        }
    };
    Ok(convert::convert(parsed, daemon.as_ref(), opts))
}

/// The reminder printed on stderr: the output holds keys.
pub fn secrecy_reminder(access: &Path) -> String {
    format!(
        "note: the output holds the fwknop keys; write it to a private file: `umask 077; nfknock import-fwknop --access-conf {} ... > /etc/nfknock/nfknock.toml`, then `nfknock check --config /etc/nfknock/nfknock.toml`",
        crate::config::shell_quote(access)
    )
}

#[cfg(test)]
mod tests;
