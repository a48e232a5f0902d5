//! `access.conf` as fwknopd reads it: stanzas, each started by a `SOURCE` line; `%include`,
//! `%include_folder` and (inside a stanza) `%include_keys`; at most [`MAX_INCLUDE_DEPTH`] levels
//! of files, and a loop named as such. Every file is read through the [`Loader`]. The result is
//! [`Parsed`]: the stanzas as written, before any conversion.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::syntax::{name_comment, split_line};
use super::{Diag, ImportError, Level, Loader, MAX_INCLUDE_DEPTH};

/// Where a line is.
pub(super) type Origin = (PathBuf, usize);

/// One `VAR value` line of a stanza.
pub(super) struct Setting {
    pub(super) var: String,
    pub(super) value: Zeroizing<String>,
    pub(super) origin: Origin,
}

/// One stanza as read, before conversion.
pub(super) struct Stanza {
    /// 1-based, in file order (after includes).
    pub(super) index: usize,
    pub(super) origin: Origin,
    pub(super) name: Option<(String, Origin)>,
    pub(super) settings: Vec<Setting>,
}

impl Stanza {
    /// The last line setting `var` (fwknopd: a repeated variable replaces the earlier one).
    pub(super) fn get(&self, var: &str) -> Option<&Setting> {
        self.settings.iter().rev().find(|s| s.var == var)
    }

    /// The last of several alternative variables (e.g. `KEY` / `KEY_BASE64`).
    pub(super) fn last_of(&self, vars: &[&str]) -> Option<&Setting> {
        self.settings
            .iter()
            .rev()
            .find(|s| vars.contains(&s.var.as_str()))
    }

    pub(super) fn label(&self) -> String {
        self.name
            .as_ref()
            .map_or_else(|| format!("fwknop-{}", self.index), |(n, _)| n.clone())
    }
}

#[derive(Default)]
pub(super) struct Parsed {
    pub(super) stanzas: Vec<Stanza>,
    /// Problems found while reading (not tied to a converted stanza yet).
    pub(super) diags: Vec<Diag>,
}

impl Parsed {
    fn warn(&mut self, origin: Origin, stanza: Option<String>, message: String) {
        self.diags.push(Diag {
            level: Level::Warning,
            origin: Some(origin),
            stanza,
            message,
        });
    }
}

/// Variables fwknopd 2.6.10 reads from an `%include_keys` file (verified with `fwknopd -D`:
/// `HMAC_DIGEST_TYPE`, `ENCRYPTION_MODE`, `GPG_HOME_DIR`, `GPG_EXE`, `OPEN_PORTS`,
/// `FW_ACCESS_TIMEOUT` and `SOURCE` there are ignored).
const KEYS_FILE_VARS: &[&str] = &[
    "KEY",
    "KEY_BASE64",
    "HMAC_KEY",
    "HMAC_KEY_BASE64",
    "GPG_DECRYPT_ID",
    "GPG_DECRYPT_PW",
    "GPG_REMOTE_ID",
    "GPG_FINGERPRINT_ID",
];

/// Resolve an include path. fwknopd opens it relative to its working directory; an importer
/// run from elsewhere can only guess, and the including file's directory is what such a path
/// almost always means.
fn include_path(from: &Path, value: &str) -> PathBuf {
    let p = Path::new(value);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        from.parent().unwrap_or(Path::new("")).join(p)
    }
}

/// Check depth and loops before opening `path` as the `stack.len() + 1`-th level.
fn enter(
    loader: &dyn Loader,
    path: &Path,
    via: Option<&Origin>,
    stack: &mut Vec<PathBuf>,
) -> Result<(), ImportError> {
    let canon = loader.canonical(path);
    let (at_path, at_line) = via.cloned().unwrap_or_else(|| (path.to_path_buf(), 0));
    if stack.contains(&canon) {
        let chain: Vec<String> = stack
            .iter()
            .chain(std::iter::once(&canon))
            .map(|p| p.display().to_string())
            .collect();
        return Err(ImportError::Include {
            path: at_path,
            line: at_line,
            message: format!(
                "include loop: {}; remove the `%include` that leads back",
                chain.join(" -> ")
            ),
        });
    }
    if stack.len() >= MAX_INCLUDE_DEPTH {
        return Err(ImportError::Include {
            path: at_path,
            line: at_line,
            message: format!(
                "`{}` would be the {}th level of included files; fwknopd refuses more than {MAX_INCLUDE_DEPTH} levels, so flatten the includes",
                path.display(),
                stack.len() + 1
            ),
        });
    }
    stack.push(canon);
    Ok(())
}

fn read(
    loader: &dyn Loader,
    path: &Path,
    via: Option<&Origin>,
) -> Result<Zeroizing<String>, ImportError> {
    loader.read(path).map_err(|message| match via {
        None => ImportError::Read {
            path: path.to_path_buf(),
            message,
        },
        Some((from, line)) => ImportError::Include {
            path: from.clone(),
            line: *line,
            message: format!("cannot read included `{}`: {message}", path.display()),
        },
    })
}

/// Read the access file at `path` and everything it includes, in fwknopd's order.
pub(super) fn parse(loader: &dyn Loader, path: &Path) -> Result<Parsed, ImportError> {
    let mut parsed = Parsed::default();
    parse_access_file(loader, path, None, &mut Vec::new(), &mut parsed)?;
    Ok(parsed)
}

/// Parse one access file (and what it includes) into `out`.
fn parse_access_file(
    loader: &dyn Loader,
    path: &Path,
    via: Option<&Origin>,
    stack: &mut Vec<PathBuf>,
    out: &mut Parsed,
) -> Result<(), ImportError> {
    enter(loader, path, via, stack)?;
    let text = read(loader, path, via)?;
    // Each file starts without a stanza (fwknopd's `curr_acc` is local to the file).
    let mut current: Option<usize> = None;
    let mut pending_name: Option<(String, Origin)> = None;
    let mut ignored_before_source = false;
    for (i, raw) in text.lines().enumerate() {
        let origin: Origin = (path.to_path_buf(), i + 1);
        if let Some(name) = name_comment(raw) {
            pending_name = Some((name.to_string(), origin));
            continue;
        }
        let Some((var, value)) = split_line(raw) else {
            continue;
        };
        match var {
            "%include" => {
                parse_access_file(loader, &include_path(path, value), Some(&origin), stack, out)?;
            }
            "%include_folder" => {
                let dir = include_path(path, value);
                let files = loader.conf_files(&dir).map_err(|m| ImportError::Include {
                    path: path.to_path_buf(),
                    line: i + 1,
                    message: format!("cannot list `{}`: {m}", dir.display()),
                })?;
                for f in files {
                    parse_access_file(loader, &f, Some(&origin), stack, out)?;
                }
            }
            "%include_keys" => match current {
                Some(idx) => {
                    let file = include_path(path, value);
                    parse_keys_file(loader, &file, &origin, stack, idx, out)?;
                }
                None => out.warn(
                    origin,
                    None,
                    "`%include_keys` outside a stanza is ignored (fwknopd reads it only after a SOURCE line); move it below the SOURCE it belongs to".to_string(),
                ),
            },
            "SOURCE" => {
                let index = out.stanzas.len() + 1;
                let name = pending_name.take();
                out.stanzas.push(Stanza {
                    index,
                    origin: origin.clone(),
                    name,
                    settings: vec![Setting {
                        var: var.to_string(),
                        value: Zeroizing::new(value.to_string()),
                        origin,
                    }],
                });
                current = Some(out.stanzas.len() - 1);
            }
            _ => match current.and_then(|c| out.stanzas.get_mut(c)) {
                Some(stanza) => {
                    // A `# name:` comment just above a variable names the current stanza.
                    if let Some(n) = pending_name.take() {
                        if stanza.name.is_none() {
                            stanza.name = Some(n);
                        }
                    }
                    stanza.settings.push(Setting {
                        var: var.to_string(),
                        value: Zeroizing::new(value.to_string()),
                        origin,
                    });
                }
                None => {
                    if !ignored_before_source {
                        ignored_before_source = true;
                        out.warn(
                            origin,
                            None,
                            format!("`{var}` comes before the first SOURCE line of this file; fwknopd ignores such lines and so does the import (the same holds for the following ones)"),
                        );
                    }
                }
            },
        }
    }
    stack.pop();
    Ok(())
}

/// `%include_keys FILE` inside stanza `idx`: only key variables.
fn parse_keys_file(
    loader: &dyn Loader,
    path: &Path,
    via: &Origin,
    stack: &mut Vec<PathBuf>,
    idx: usize,
    out: &mut Parsed,
) -> Result<(), ImportError> {
    enter(loader, path, Some(via), stack)?;
    let text = read(loader, path, Some(via))?;
    for (i, raw) in text.lines().enumerate() {
        let origin: Origin = (path.to_path_buf(), i + 1);
        let Some((var, value)) = split_line(raw) else {
            continue;
        };
        let label = out.stanzas.get(idx).map(Stanza::label);
        if KEYS_FILE_VARS.contains(&var) {
            if let Some(stanza) = out.stanzas.get_mut(idx) {
                stanza.settings.push(Setting {
                    var: var.to_string(),
                    value: Zeroizing::new(value.to_string()),
                    origin,
                });
            }
        } else {
            out.warn(
                origin,
                label,
                format!("`{var}` in an %include_keys file is ignored (only KEY, KEY_BASE64, HMAC_KEY, HMAC_KEY_BASE64 and GPG key IDs are read from it, by fwknopd too); move it to the access file"),
            );
        }
    }
    stack.pop();
    Ok(())
}
