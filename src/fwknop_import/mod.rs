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
//! Everything here is pure except [`FsLoader`], the one place that touches the file system:
//! the parser asks a [`Loader`] for file contents and directory listings, so tests run on
//! in-memory files. Key material is kept in [`Zeroizing`] strings; the rendered TOML holds the
//! keys (that is the point: the admin redirects it into a private file).
//!
//! The rendered text is checked with [`crate::config::parse_str`] before it is returned, one
//! client at a time, so a stanza the nfknock checker would refuse is reported (and left out)
//! here rather than by `nfknock check` later.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use zeroize::Zeroizing;

use crate::access::Access;
use crate::wire::fwknop::{EncMode, HmacType};

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

/// The real file system.
pub struct FsLoader;

impl Loader for FsLoader {
    fn read(&self, path: &Path) -> Result<Zeroizing<String>, String> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| e.to_string())?);
        match std::str::from_utf8(&bytes) {
            Ok(text) => Ok(Zeroizing::new(text.to_string())),
            Err(_) => Err("the file is not UTF-8 text".to_string()),
        }
    }

    fn conf_files(&self, dir: &Path) -> Result<Vec<PathBuf>, String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.extension().is_some_and(|e| e == "conf") && path.is_file() {
                out.push(path);
            }
        }
        out.sort();
        Ok(out)
    }

    fn canonical(&self, path: &Path) -> PathBuf {
        std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
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
    let mut parsed = Parsed::default();
    let mut stack = Vec::new();
    parse_access_file(loader, access, None, &mut stack, &mut parsed)?;
    let daemon = match fwknopd {
        None => None,
        Some(path) => {
            let text = loader.read(path).map_err(|message| ImportError::Read {
                path: path.to_path_buf(),
                message,
            })?;
            Some(parse_fwknopd_conf(&text, path))
        }
    };
    Ok(convert(parsed, daemon.as_ref(), opts))
}

/// The reminder printed on stderr: the output holds keys.
pub fn secrecy_reminder(access: &Path) -> String {
    format!(
        "note: the output holds the fwknop keys; write it to a private file: `umask 077; nfknock import-fwknop --access-conf {} ... > /etc/nfknock/nfknock.toml`, then `nfknock check --config /etc/nfknock/nfknock.toml`",
        crate::config::shell_quote(access)
    )
}

// ---------------------------------------------------------------------------------------------
// Line syntax

/// `VAR value` from one line, or `None` for a blank line, a comment, or a line without a value
/// (fwknopd skips those: `sscanf` returns 1).
fn split_line(raw: &str) -> Option<(&str, &str)> {
    let line = raw.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let var_end = line.find(char::is_whitespace)?;
    let (var, rest) = line.split_at(var_end);
    let rest = rest.trim_start();
    let value = rest
        .split([';', '\n', '\r'])
        .next()
        .unwrap_or("")
        .trim_end();
    if value.is_empty() {
        return None;
    }
    // `SOURCE: ANY` — fwknopd strips one trailing ':' from the variable name.
    let var = var.strip_suffix(':').unwrap_or(var);
    Some((var, value))
}

/// fwknopd booleans: the first character is `Y` or `y` (`add_acc_bool`).
fn is_yes(value: &str) -> bool {
    value.starts_with(['Y', 'y'])
}

/// A `# name: NAME` comment (our extension, to name the client a stanza becomes).
fn name_comment(raw: &str) -> Option<&str> {
    let rest = raw.trim().strip_prefix('#')?.trim_start();
    let rest = rest.strip_prefix("name:")?;
    Some(rest.trim())
}

// ---------------------------------------------------------------------------------------------
// access.conf parsing

/// Where a line is.
type Origin = (PathBuf, usize);

/// One `VAR value` line of a stanza.
struct Setting {
    var: String,
    value: Zeroizing<String>,
    origin: Origin,
}

/// One stanza as read, before conversion.
struct Stanza {
    /// 1-based, in file order (after includes).
    index: usize,
    origin: Origin,
    name: Option<(String, Origin)>,
    settings: Vec<Setting>,
}

impl Stanza {
    /// The last line setting `var` (fwknopd: a repeated variable replaces the earlier one).
    fn get(&self, var: &str) -> Option<&Setting> {
        self.settings.iter().rev().find(|s| s.var == var)
    }

    /// The last of several alternative variables (e.g. `KEY` / `KEY_BASE64`).
    fn last_of(&self, vars: &[&str]) -> Option<&Setting> {
        self.settings
            .iter()
            .rev()
            .find(|s| vars.contains(&s.var.as_str()))
    }

    fn label(&self) -> String {
        self.name
            .as_ref()
            .map_or_else(|| format!("fwknop-{}", self.index), |(n, _)| n.clone())
    }
}

#[derive(Default)]
struct Parsed {
    stanzas: Vec<Stanza>,
    /// Problems found while reading (not tied to a converted stanza yet).
    diags: Vec<Diag>,
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

// ---------------------------------------------------------------------------------------------
// fwknopd.conf

/// What was taken from fwknopd.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DaemonSettings {
    port: u16,
    /// Where the port came from, for the comment in the output.
    port_from: String,
    max_age: u64,
    max_age_from: String,
    diags: Vec<Diag>,
}

/// `udp port N` / `udp dst port N` in a BPF filter; the first such port.
fn pcap_filter_port(filter: &str) -> Option<u16> {
    let words: Vec<&str> = filter
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter(|w| !w.is_empty())
        .collect();
    for (i, w) in words.iter().enumerate() {
        if !w.eq_ignore_ascii_case("udp") {
            continue;
        }
        let rest = words.get(i + 1..).unwrap_or(&[]);
        let port = match rest {
            [p, n, ..] if p.eq_ignore_ascii_case("port") => n,
            [d, p, n, ..] if d.eq_ignore_ascii_case("dst") && p.eq_ignore_ascii_case("port") => n,
            _ => continue,
        };
        if let Some(port) = parse_u16_nonzero(port) {
            return Some(port);
        }
    }
    None
}

fn parse_u16_nonzero(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().filter(|&p| p != 0)
}

fn parse_fwknopd_conf(text: &str, path: &Path) -> DaemonSettings {
    // Last line wins, as in fwknopd.
    let mut vars: Vec<(String, String, usize)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if let Some((var, value)) = split_line(raw) {
            vars.retain(|(v, _, _)| v != var);
            vars.push((var.to_string(), value.to_string(), i + 1));
        }
    }
    let get = |name: &str| vars.iter().find(|(v, _, _)| v == name);
    let mut diags = Vec::new();
    let mut warn = |line: usize, message: String| {
        diags.push(Diag {
            level: Level::Warning,
            origin: Some((path.to_path_buf(), line)),
            stanza: None,
            message,
        });
    };

    // The knock port, from the capture mode in use.
    let enabled = |name: &str| get(name).is_some_and(|(_, v, _)| is_yes(v));
    let (mode_port_var, mode) = if enabled("ENABLE_UDP_SERVER") {
        ("UDPSERV_PORT", "ENABLE_UDP_SERVER")
    } else if enabled("ENABLE_NFQ_CAPTURE") {
        ("NFQ_PORT", "ENABLE_NFQ_CAPTURE")
    } else {
        ("", "")
    };
    let mut port = FWKNOP_DEFAULT_PORT;
    let mut port_from = "fwknopd's default (udp port 62201)".to_string();
    if !mode_port_var.is_empty() {
        match get(mode_port_var) {
            Some((_, v, line)) => match parse_u16_nonzero(v) {
                Some(p) => {
                    port = p;
                    port_from = format!("{mode_port_var} {v} ({mode} Y)");
                }
                None => warn(*line, format!("{mode_port_var} `{v}` is not a port (1..65535); using {FWKNOP_DEFAULT_PORT}")),
            },
            None => port_from = format!("{mode_port_var} default ({mode} Y)"),
        }
    } else if let Some((_, filter, line)) = get("PCAP_FILTER") {
        match pcap_filter_port(filter) {
            Some(p) => {
                port = p;
                port_from = format!("PCAP_FILTER \"{filter}\"");
                let simple = filter
                    .split_whitespace()
                    .all(|w| ["udp", "dst", "port"].contains(&w) || parse_u16_nonzero(w).is_some());
                if !simple {
                    warn(*line, format!("PCAP_FILTER `{filter}`: only the UDP port {p} was taken; nfknock's kernel rules send every UDP packet to port {p} to the daemon, and the rest of the filter has no equivalent"));
                }
            }
            None => warn(*line, format!("PCAP_FILTER `{filter}` names no `udp port N`; nfknock receives knocks over UDP only, so the port is {FWKNOP_DEFAULT_PORT}; set `[server] port` if the clients use another")),
        }
    }

    let mut max_age = FWKNOP_DEFAULT_MAX_AGE;
    let mut max_age_from = "fwknopd's default MAX_SPA_PACKET_AGE".to_string();
    if let Some((_, v, line)) = get("MAX_SPA_PACKET_AGE") {
        match v.parse::<u64>() {
            Ok(0) | Err(_) => warn(*line, format!("MAX_SPA_PACKET_AGE `{v}` is not a positive number of seconds; using {FWKNOP_DEFAULT_MAX_AGE}")),
            Ok(n) if n > crate::config::MAX_MAX_AGE => {
                max_age = crate::config::MAX_MAX_AGE;
                max_age_from = format!("MAX_SPA_PACKET_AGE {v}, capped");
                warn(*line, format!("MAX_SPA_PACKET_AGE {n} is more than nfknock's limit; max_age = {} (the replay cache keeps each knock for max_age)", crate::config::MAX_MAX_AGE));
            }
            Ok(n) => {
                max_age = n;
                max_age_from = format!("MAX_SPA_PACKET_AGE {v}");
            }
        }
    }
    if let Some((_, v, line)) = get("ENABLE_SPA_PACKET_AGING") {
        if !is_yes(v) {
            warn(*line, format!("ENABLE_SPA_PACKET_AGING {v}: nfknock always checks the knock's age (max_age = {max_age}); sync the clients' clocks or use `fwknop --time-offset-plus/minus`"));
        }
    }

    // Settings that turn on something nfknock does not do.
    for (var, value, line) in &vars {
        let yes = is_yes(value);
        let msg = match var.as_str() {
            "ENABLE_DIGEST_PERSISTENCE" if !yes => Some("nfknock always keeps a replay cache (bounded by max_age, persisted in `state_dir`); nothing to do"),
            "ENABLE_SPA_OVER_HTTP" if yes => Some("SPA over HTTP is not supported: nfknock receives knocks as UDP datagrams; have the clients send UDP (`fwknop -P udp`, the default)"),
            "ENABLE_TCP_SERVER" if yes => Some("knocks over TCP are not supported: nfknock receives UDP only; have the clients send UDP (`fwknop -P udp`, the default)"),
            "ENABLE_X_FORWARDED_FOR" if yes => Some("only used for SPA over HTTP, which nfknock does not accept"),
            "ENABLE_IPT_FORWARDING" | "ENABLE_IPT_LOCAL_NAT" | "ENABLE_IPT_SNAT" if yes => Some("NAT access messages (types 2, 4, 5, 6) are refused by nfknock; publish the service with your own nft DNAT rule and let nfknock gate it (`gate_forward = true`)"),
            "ENABLE_IPT_OUTPUT" if yes => Some("nfknock adds no OUTPUT rules; the gate only drops new inbound flows, so replies are never blocked by it"),
            "ENABLE_DESTINATION_RULE" if yes => Some("nfknock grants `source . proto . port` for every local address; restrict by destination with a client's `destinations` (checked when the knock arrives)"),
            _ => None,
        };
        if let Some(m) = msg {
            warn(*line, format!("{var} {value}: {m}"));
        }
    }
    diags.sort_by_key(|d| d.origin.as_ref().map_or(0, |o| o.1));
    DaemonSettings {
        port,
        port_from,
        max_age,
        max_age_from,
        diags,
    }
}

// ---------------------------------------------------------------------------------------------
// Conversion

/// A key as written in access.conf.
enum KeyText {
    /// `KEY` / `HMAC_KEY`: the bytes of the string.
    Text(Zeroizing<String>),
    /// `KEY_BASE64` / `HMAC_KEY_BASE64`.
    Base64(Zeroizing<String>),
}

/// A stanza converted to an nfknock client.
struct ClientOut {
    name: String,
    origin: Origin,
    source_text: String,
    sources: Vec<Ipv4Net>,
    destinations: Vec<Ipv4Net>,
    allow: Vec<Access>,
    allow_comment: Option<String>,
    deny: Vec<Access>,
    timeout: u32,
    max_timeout: u32,
    require_source_match: bool,
    require_username: Option<String>,
    expires_at: Option<(u64, String)>,
    key: KeyText,
    hmac: Option<(KeyText, HmacType)>,
    mode: EncMode,
}

/// Collects the messages of one stanza.
struct StanzaDiags<'a> {
    label: String,
    out: &'a mut Vec<Diag>,
    errors: usize,
}

impl StanzaDiags<'_> {
    fn push(&mut self, level: Level, origin: &Origin, message: String) {
        if level == Level::Error {
            self.errors += 1;
        }
        self.out.push(Diag {
            level,
            origin: Some(origin.clone()),
            stanza: Some(self.label.clone()),
            message,
        });
    }
    fn warn(&mut self, origin: &Origin, message: String) {
        self.push(Level::Warning, origin, message);
    }
    fn error(&mut self, origin: &Origin, message: String) {
        self.push(Level::Error, origin, message);
    }
}

const GPG_ADVICE: &str = "GnuPG SPA is not supported; issue Rijndael+HMAC keys with `fwknop --key-gen` and give them to this client";

/// `a.b.c.d`, `a.b.c.d/NN`, `a.b.c.d/m.m.m.m` or `ANY`. `Ok(None)` = ANY.
fn parse_net(item: &str) -> Result<(Option<Ipv4Net>, Option<String>), String> {
    if item.eq_ignore_ascii_case("ANY") {
        return Ok((None, None));
    }
    let (addr, mask) = match item.split_once('/') {
        Some((a, m)) => (a, Some(m)),
        None => (item, None),
    };
    let ip: Ipv4Addr = addr.parse().map_err(|_| {
        if addr.contains(':') {
            format!("`{item}` is IPv6; fwknop's format is IPv4-only, so list IPv4 networks (nfknock accepts IPv6 for native clients)")
        } else {
            format!("`{item}` is not an IPv4 address or network; write a dotted quad such as `192.0.2.0/24`")
        }
    })?;
    let prefix = match mask {
        None => 32,
        Some(m) if m.contains('.') => {
            let mask: Ipv4Addr = m
                .parse()
                .map_err(|_| format!("`{item}`: `{m}` is not a netmask"))?;
            let bits = u32::from(mask);
            let ones = bits.leading_ones();
            if ones + bits.trailing_zeros() != 32 && bits != 0 {
                return Err(format!("`{item}`: netmask `{m}` is not contiguous; write the network as a prefix, e.g. `/24`"));
            }
            u8::try_from(ones).unwrap_or(32)
        }
        Some(m) => m
            .parse::<u8>()
            .ok()
            .filter(|&p| p <= 32 && !m.starts_with('+'))
            .ok_or_else(|| format!("`{item}`: `/{m}` is not a prefix length from 0 to 32"))?,
    };
    let net = Ipv4Net::new(ip, prefix).map_err(|_| format!("`{item}` is not a network"))?;
    let note = (net.trunc() != net).then(|| {
        format!(
            "`{item}` has host bits set; fwknopd masks them and matches {}, and so does the import",
            net.trunc()
        )
    });
    Ok((Some(net.trunc()), note))
}

/// A SOURCE/DESTINATION list. `Ok(None)` = ANY.
fn parse_nets(value: &str) -> Result<(Option<Vec<Ipv4Net>>, Vec<String>), String> {
    let mut nets = Vec::new();
    let mut any = false;
    let mut notes = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        match parse_net(item)? {
            (None, _) => any = true,
            (Some(n), note) => {
                notes.extend(note);
                if !nets.contains(&n) {
                    nets.push(n);
                }
            }
        }
    }
    Ok(((!any).then_some(nets), notes))
}

/// An OPEN_PORTS / RESTRICT_PORTS list: `proto/port` items, protocol case-insensitive
/// (fwknopd `parse_proto_and_port`).
fn parse_ports(value: &str) -> Result<Vec<Access>, String> {
    let mut out = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        let a: Access = item
            .to_ascii_lowercase()
            .parse()
            .map_err(|e| format!("`{item}` is not a proto/port: {e}"))?;
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

fn parse_seconds(value: &str) -> Option<u64> {
    (!value.is_empty() && value.len() <= 19 && value.bytes().all(|b| b.is_ascii_digit()))
        .then(|| value.parse().ok())
        .flatten()
}

/// `ACCESS_EXPIRE MM/DD/YYYY` (fwknopd: `sscanf("%2d/%2d/%4d")`, a year < 100 is 2000 + yy).
fn parse_expire_date(value: &str) -> Option<u64> {
    let mut parts = value.split('/');
    let (m, d, y) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let num = |s: &str, max_len: usize| -> Option<u32> {
        (!s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (month, day, year) = (num(m, 2)?, num(d, 2)?, num(y, 4)?);
    let year = if y.len() <= 2 { 2000 + year } else { year };
    crate::config::date_to_unix(i64::from(year), month, day)
}

/// `HMAC_DIGEST_TYPE`, case-insensitive as fwknopd's `hmac_digest_strtoint()`.
fn hmac_type(value: &str) -> Option<HmacType> {
    value.parse().ok()
}

/// The TOML spelling of a mode (`mode = "cbc"`).
fn mode_name(m: EncMode) -> String {
    m.name().to_ascii_lowercase()
}

/// What the import does with a variable it does not map.
enum Unmapped {
    /// Warn whenever it is present.
    Always(&'static str),
    /// Warn only when it says yes (`N` is what nfknock does anyway).
    IfYes(&'static str),
    /// The stanza cannot be converted when it is present (and says yes, for booleans).
    Refuse(&'static str),
    RefuseIfYes(&'static str),
}

fn unmapped(var: &str) -> Option<Unmapped> {
    use Unmapped::*;
    const CMD: &str = "only used for command messages (type 0), which nfknock refuses; dropped";
    Some(match var {
        "ENABLE_CMD_EXEC" => IfYes("command messages (type 0) are refused by nfknock, which never runs commands; run them from your own tooling (e.g. over ssh once the port is open)"),
        "ENABLE_CMD_SUDO_EXEC" | "CMD_EXEC_USER" | "CMD_EXEC_GROUP" | "CMD_SUDO_EXEC_USER"
        | "CMD_SUDO_EXEC_GROUP" | "CMD_REGEX" => Always(CMD),
        "CMD_CYCLE_OPEN" => Always("nfknock runs no commands: it adds `source . proto . port` to its own nftables set with a kernel timeout, which is what most CMD_CYCLE nft/ipset scripts emulate; this stanza is imported as a plain grant of its `allow` list, so check that this is what you want"),
        "CMD_CYCLE_CLOSE" => Always("nfknock runs no commands; the kernel removes each grant when its timeout ends"),
        "CMD_CYCLE_TIMER" => Always("nfknock runs no commands; if this was the grant length, set the client's `timeout` to it"),
        "FORCE_NAT" => Refuse("DNAT to an internal host is not supported: nfknock only opens ports on this host and gates ports you publish yourself; publish the service with your own nft DNAT rule, set `[server] gate_forward = true`, and add this client by hand with the published port in `allow`"),
        "FORWARD_ALL" => RefuseIfYes("SPA gateway mode (forward everything from the client) is not supported: nfknock grants single proto/ports; list the ports the client needs in a `[[client]]` by hand"),
        "FORCE_SNAT" => Always("only used with FORCE_NAT / FORWARD_ALL, which nfknock does not support; dropped"),
        "FORCE_MASQUERADE" | "DISABLE_DNAT" => IfYes("only used with FORCE_NAT / FORWARD_ALL, which nfknock does not support; dropped"),
        _ if var.starts_with("GPG_") => Always(GPG_ADVICE),
        _ => return None,
    })
}

/// Variables the converter maps.
const MAPPED: &[&str] = &[
    "SOURCE",
    "DESTINATION",
    "OPEN_PORTS",
    "RESTRICT_PORTS",
    "KEY",
    "KEY_BASE64",
    "HMAC_KEY",
    "HMAC_KEY_BASE64",
    "HMAC_DIGEST_TYPE",
    "ENCRYPTION_MODE",
    "FW_ACCESS_TIMEOUT",
    "MAX_FW_TIMEOUT",
    "REQUIRE_USERNAME",
    "REQUIRE_SOURCE_ADDRESS",
    "REQUIRE_SOURCE",
    "ACCESS_EXPIRE",
    "ACCESS_EXPIRE_EPOCH",
];

/// `[A-Za-z0-9_.@-]{1,64}`, nfknock's client name rule.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.@-".contains(&b))
}

/// Decoded bytes of a key (for length and equality checks).
fn key_bytes(k: &KeyText) -> Option<Zeroizing<Vec<u8>>> {
    match k {
        KeyText::Text(t) => Some(Zeroizing::new(t.as_bytes().to_vec())),
        KeyText::Base64(b) => crate::config::decode_fwknop_base64(b),
    }
}

fn key_text(setting: &Setting) -> KeyText {
    let v = Zeroizing::new(setting.value.to_string());
    if setting.var.ends_with("_BASE64") {
        KeyText::Base64(v)
    } else {
        KeyText::Text(v)
    }
}

/// Check one key's form and length; `max` in bytes.
fn check_key(
    d: &mut StanzaDiags<'_>,
    setting: &Setting,
    key: &KeyText,
    max: usize,
    what: &str,
) -> bool {
    let var = &setting.var;
    if setting.value.as_str() == "__CHANGEME__" {
        d.error(&setting.origin, format!("{var} is fwknop's placeholder `__CHANGEME__`; generate real keys with `fwknop --key-gen` and give them to the client"));
        return false;
    }
    match key_bytes(key) {
        None => {
            d.error(
                &setting.origin,
                format!("{var} is not valid base64; paste the value printed by `fwknop --key-gen`"),
            );
            false
        }
        Some(b) if b.is_empty() || b.len() > max => {
            d.error(&setting.origin, format!("{var} is {} bytes long; an fwknop {what} is 1 to {max} bytes; generate one with `fwknop --key-gen`", b.len()));
            false
        }
        Some(_) => true,
    }
}

fn convert_stanza(
    st: &Stanza,
    name: String,
    opts: &Options,
    diags: &mut Vec<Diag>,
) -> Option<ClientOut> {
    let mut d = StanzaDiags {
        label: name.clone(),
        out: diags,
        errors: 0,
    };

    // Unmapped variables first, in file order.
    let mut gpg = false;
    for s in &st.settings {
        if MAPPED.contains(&s.var.as_str()) {
            continue;
        }
        let v = s.value.as_str();
        match unmapped(&s.var) {
            Some(Unmapped::Always(m)) => {
                gpg |= s.var.starts_with("GPG_");
                // Never echo a value that may be a secret (GPG_DECRYPT_PW).
                d.warn(&s.origin, format!("{}: {m}", s.var));
            }
            Some(Unmapped::IfYes(m)) if is_yes(v) => d.warn(&s.origin, format!("{} {v}: {m}", s.var)),
            Some(Unmapped::RefuseIfYes(m)) if is_yes(v) => d.error(&s.origin, format!("{} {v}: {m}", s.var)),
            Some(Unmapped::IfYes(_)) | Some(Unmapped::RefuseIfYes(_)) => {}
            Some(Unmapped::Refuse(m)) => d.error(&s.origin, format!("{}: {m}", s.var)),
            None => d.warn(&s.origin, format!("unknown access.conf variable `{}`; fwknopd ignores it too, and so does the import", s.var)),
        }
    }

    // SOURCE (always present: it started the stanza).
    let source = st
        .get("SOURCE")
        .map_or("", |s| s.value.as_str())
        .to_string();
    let sources = match parse_nets(&source) {
        Ok((nets, notes)) => {
            for n in notes {
                d.warn(&st.origin, format!("SOURCE {n}"));
            }
            Some(nets.unwrap_or_else(|| vec![Ipv4Net::default()]))
        }
        Err(m) => {
            d.error(&st.origin, format!("SOURCE {m}"));
            None
        }
    };
    let destinations = match st.get("DESTINATION") {
        None => Some(Vec::new()),
        Some(s) => match parse_nets(&s.value) {
            Ok((nets, notes)) => {
                for n in notes {
                    d.warn(&s.origin, format!("DESTINATION {n}"));
                }
                Some(nets.unwrap_or_default())
            }
            Err(m) => {
                d.error(&s.origin, format!("DESTINATION {m}"));
                None
            }
        },
    };

    // Ports.
    let mut allow_comment = None;
    let allow = match st.get("OPEN_PORTS") {
        Some(s) => match parse_ports(&s.value) {
            Ok(v) => Some(v),
            Err(m) => {
                d.error(
                    &s.origin,
                    format!("OPEN_PORTS {m}; fix it (fwknopd refuses it too)"),
                );
                None
            }
        },
        None => match &opts.protect {
            Some(list) => {
                allow_comment = Some("no OPEN_PORTS: the --protect list".to_string());
                Some(list.clone())
            }
            None => {
                d.error(&st.origin, "has no OPEN_PORTS, so fwknopd let it open any port; an nfknock client needs an explicit allow list: pass the ports it may open with `--protect tcp/22,...` (or add OPEN_PORTS to the stanza)".to_string());
                None
            }
        },
    };
    let deny = match st.get("RESTRICT_PORTS") {
        None => Some(Vec::new()),
        Some(s) => match parse_ports(&s.value) {
            Ok(v) => Some(v),
            Err(m) => {
                d.error(
                    &s.origin,
                    format!("RESTRICT_PORTS {m}; fix it (fwknopd refuses it too)"),
                );
                None
            }
        },
    };

    // Timeouts.
    let seconds = |d: &mut StanzaDiags<'_>, var: &str, default: u32| -> Option<u32> {
        match st.get(var) {
            None => Some(default),
            Some(s) => match parse_seconds(&s.value) {
                Some(0) => Some(default),
                Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
                None => {
                    d.error(
                        &s.origin,
                        format!("{var} `{}` is not a number of seconds", s.value.as_str()),
                    );
                    None
                }
            },
        }
    };
    let timeout = seconds(&mut d, "FW_ACCESS_TIMEOUT", FWKNOP_DEFAULT_TIMEOUT);
    let mut max_timeout = seconds(&mut d, "MAX_FW_TIMEOUT", FWKNOP_DEFAULT_MAX_TIMEOUT);
    let mut timeout = timeout;
    let week = crate::config::MAX_MAX_TIMEOUT;
    if let Some(m) = max_timeout.filter(|&m| m > week) {
        let origin = st.get("MAX_FW_TIMEOUT").map_or(&st.origin, |s| &s.origin);
        d.warn(
            origin,
            format!(
                "MAX_FW_TIMEOUT {m} is more than nfknock's limit of one week; max_timeout = {week}"
            ),
        );
        max_timeout = Some(week);
    }
    if let Some(t) = timeout.filter(|&t| t > week) {
        let origin = st
            .get("FW_ACCESS_TIMEOUT")
            .map_or(&st.origin, |s| &s.origin);
        d.warn(
            origin,
            format!(
                "FW_ACCESS_TIMEOUT {t} is more than nfknock's limit of one week; timeout = {week}"
            ),
        );
        timeout = Some(week);
    }
    if let (Some(t), Some(m)) = (timeout, max_timeout) {
        if t > m {
            // fwknopd caps only client-requested timeouts; nfknock requires timeout <= max_timeout.
            let origin = st
                .get("FW_ACCESS_TIMEOUT")
                .map_or(&st.origin, |s| &s.origin);
            d.warn(origin, format!("FW_ACCESS_TIMEOUT {t} is more than MAX_FW_TIMEOUT {m}; nfknock needs timeout <= max_timeout, so max_timeout = {t} (a client asking with `fwknop -f` may now get up to {t}s)"));
            max_timeout = Some(t);
        }
    }

    // Policy.
    let require_username = match st.get("REQUIRE_USERNAME") {
        None => Some(None),
        Some(s) if s.value.contains(':') => {
            d.error(&s.origin, "REQUIRE_USERNAME contains `:`, which no fwknop user name can (it separates the packet's fields); fix the name".to_string());
            None
        }
        Some(s) => Some(Some(s.value.to_string())),
    };
    let require_source_match = match st.last_of(&["REQUIRE_SOURCE_ADDRESS", "REQUIRE_SOURCE"]) {
        Some(s) if is_yes(&s.value) => true,
        other => {
            let origin = other.map_or(&st.origin, |s| &s.origin);
            d.warn(origin, "REQUIRE_SOURCE_ADDRESS is off (fwknop's default): imported as `require_source_match = false`, so a knock may open access for an address other than its source and a captured knock can be aimed elsewhere; set REQUIRE_SOURCE_ADDRESS Y (here: `require_source_match = true`) once the clients send their own address (`fwknop -a IP` or `-R`, not `-s`)".to_string());
            false
        }
    };
    let expires_at = match st.last_of(&["ACCESS_EXPIRE", "ACCESS_EXPIRE_EPOCH"]) {
        None => Some(None),
        Some(s) if s.var == "ACCESS_EXPIRE" => match parse_expire_date(&s.value) {
            Some(t) => Some(Some((
                t,
                format!(
                    "ACCESS_EXPIRE {} (UTC midnight; fwknopd used local time)",
                    s.value.as_str()
                ),
            ))),
            None => {
                d.error(
                    &s.origin,
                    format!(
                        "ACCESS_EXPIRE `{}` is not a date MM/DD/YYYY",
                        s.value.as_str()
                    ),
                );
                None
            }
        },
        Some(s) => match parse_seconds(&s.value) {
            Some(t) if i64::try_from(t).is_ok() => Some(Some((
                t,
                format!("ACCESS_EXPIRE_EPOCH {}", s.value.as_str()),
            ))),
            _ => {
                d.error(
                    &s.origin,
                    format!(
                        "ACCESS_EXPIRE_EPOCH `{}` is not a Unix time",
                        s.value.as_str()
                    ),
                );
                None
            }
        },
    };

    // Credential.
    let mode = match st.get("ENCRYPTION_MODE") {
        None => Some(EncMode::Cbc),
        Some(s) => match s.value.to_ascii_lowercase().as_str() {
            known if known.parse::<EncMode>().is_ok() => known.parse().ok(),
            "asymmetric" => {
                d.error(
                    &s.origin,
                    format!("ENCRYPTION_MODE {}: {GPG_ADVICE}", s.value.as_str()),
                );
                None
            }
            _ => {
                d.error(&s.origin, format!("ENCRYPTION_MODE `{}` is not one of CBC, CTR, CFB, OFB, ECB, legacy (fwknop supports no other Rijndael mode)", s.value.as_str()));
                None
            }
        },
    };
    let key_setting = st.last_of(&["KEY", "KEY_BASE64"]);
    let key = match key_setting {
        None => {
            let msg = if gpg {
                format!("has no KEY or KEY_BASE64, only GnuPG settings: {GPG_ADVICE}")
            } else {
                "has no KEY or KEY_BASE64; add the client's Rijndael key (from `fwknop --key-gen`)"
                    .to_string()
            };
            d.error(&st.origin, msg);
            None
        }
        Some(s) => {
            if st.get("KEY").is_some() && st.get("KEY_BASE64").is_some() {
                d.warn(&s.origin, format!("both KEY and KEY_BASE64 are set; fwknopd uses the last one ({}), and so does the import; remove the other", s.var));
            }
            let k = key_text(s);
            check_key(&mut d, s, &k, crate::config::FWKNOP_MAX_KEY_LEN, "key").then_some(k)
        }
    };
    let hmac_setting = st.last_of(&["HMAC_KEY", "HMAC_KEY_BASE64"]);
    let digest = st.get("HMAC_DIGEST_TYPE");
    let hmac_type = match digest {
        None => Some(HmacType::Sha256),
        Some(s) => hmac_type(&s.value).or_else(|| {
            d.error(&s.origin, format!("HMAC_DIGEST_TYPE `{}` is not one of md5, sha1, sha256, sha384, sha512, sha3_256, sha3_512", s.value.as_str()));
            None
        }),
    };
    let hmac = match hmac_setting {
        None => {
            if let Some(s) = digest {
                d.warn(
                    &s.origin,
                    "HMAC_DIGEST_TYPE without an HMAC key is ignored (by fwknopd too)".to_string(),
                );
            }
            d.warn(&st.origin, "has no HMAC key: imported with `no_hmac = true`, so its packets are decrypted before they are authenticated; generate an HMAC key with `fwknop --key-gen` and use it on both ends (`fwknop --use-hmac`)".to_string());
            Some(None)
        }
        Some(s) => {
            if st.get("HMAC_KEY").is_some() && st.get("HMAC_KEY_BASE64").is_some() {
                d.warn(&s.origin, format!("both HMAC_KEY and HMAC_KEY_BASE64 are set; fwknopd uses the last one ({}), and so does the import; remove the other", s.var));
            }
            let k = key_text(s);
            let mut ok = check_key(
                &mut d,
                s,
                &k,
                crate::config::FWKNOP_MAX_HMAC_KEY_LEN,
                "HMAC key",
            );
            if ok {
                if let (Some(kb), Some(hb)) = (key.as_ref().and_then(key_bytes), key_bytes(&k)) {
                    if *kb == *hb {
                        d.error(&s.origin, format!("{} equals the encryption key; fwknopd refuses that too; generate two keys with `fwknop --key-gen`", s.var));
                        ok = false;
                    }
                }
            }
            if ok && mode == Some(EncMode::Legacy) {
                d.error(&s.origin, "ENCRYPTION_MODE legacy cannot be combined with an HMAC key (fwknop clients refuse it); upgrade the client and use CBC with HMAC".to_string());
                ok = false;
            }
            match (ok, hmac_type) {
                (true, Some(t)) => Some(Some((k, t))),
                _ => None,
            }
        }
    };

    if d.errors > 0 {
        return None;
    }
    Some(ClientOut {
        name,
        origin: st.origin.clone(),
        source_text: source,
        sources: sources?,
        destinations: destinations?,
        allow: allow?,
        allow_comment,
        deny: deny?,
        timeout: timeout?,
        max_timeout: max_timeout?,
        require_source_match,
        require_username: require_username?,
        expires_at: expires_at?,
        key: key?,
        hmac: hmac?,
        mode: mode?,
    })
}

/// Decide every stanza's client name: `# name:` if valid and unique, else `fwknop-<n>`.
fn names(stanzas: &[Stanza], diags: &mut Vec<Diag>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for st in stanzas {
        let fallback = format!("fwknop-{}", st.index);
        let name = match &st.name {
            None => fallback,
            Some((n, origin)) if !valid_name(n) => {
                diags.push(Diag {
                    level: Level::Warning,
                    origin: Some(origin.clone()),
                    stanza: Some(fallback.clone()),
                    message: format!("`# name: {n}` is not a valid client name (1 to 64 letters, digits and `_.@-`); using `{fallback}`"),
                });
                fallback
            }
            Some((n, origin))
                if out.contains(n)
                    || stanzas
                        .iter()
                        .any(|o| o.name.is_none() && format!("fwknop-{}", o.index) == *n) =>
            {
                diags.push(Diag {
                    level: Level::Warning,
                    origin: Some(origin.clone()),
                    stanza: Some(fallback.clone()),
                    message: format!("`# name: {n}` is already taken; using `{fallback}`"),
                });
                fallback
            }
            Some((n, _)) => n.clone(),
        };
        out.push(name);
    }
    out
}

fn convert(parsed: Parsed, daemon: Option<&DaemonSettings>, opts: &Options) -> Import {
    let Parsed { stanzas, mut diags } = parsed;
    if let Some(dm) = daemon {
        diags.extend(dm.diags.iter().cloned());
    }
    let names = names(&stanzas, &mut diags);
    let server = render_server(daemon);
    let mut clients = Vec::new();
    let mut failed = 0;
    for (st, name) in stanzas.iter().zip(names) {
        match convert_stanza(st, name, opts, &mut diags) {
            None => failed += 1,
            Some(c) => {
                // The checker is the judge: render this client alone and let it look.
                let text = render_client(&c);
                let doc = Zeroizing::new(format!("{server}\n{}", text.as_str()));
                match crate::config::parse_str(&doc, Path::new("<imported>")) {
                    Ok(_) => clients.push((c, text)),
                    Err(errs) => {
                        failed += 1;
                        for p in errs.0 {
                            diags.push(Diag {
                                level: Level::Error,
                                origin: Some(st.origin.clone()),
                                stanza: Some(c.name.clone()),
                                message: format!("the converted client would be refused by `nfknock check`: `{}`: {}", p.key.unwrap_or_default(), p.message),
                            });
                        }
                    }
                }
            }
        }
    }
    if stanzas.is_empty() {
        diags.push(Diag {
            level: Level::Error,
            origin: None,
            stanza: None,
            message: "no SOURCE line found, so there is no stanza to import; check that this is fwknopd's access.conf".to_string(),
        });
    }
    let toml = (!clients.is_empty()).then(|| {
        let mut out = Zeroizing::new(String::new());
        out.push_str(&render_header(daemon.is_some()));
        out.push_str(&server);
        for (_, text) in &clients {
            out.push('\n');
            out.push_str(text);
        }
        out
    });
    // The whole document is checked too (the clients together: names, protect).
    if let Some(t) = &toml {
        if let Err(errs) = crate::config::parse_str(t, Path::new("<imported>")) {
            for p in errs.0 {
                diags.push(Diag {
                    level: Level::Error,
                    origin: None,
                    stanza: None,
                    message: format!("the imported config is refused by `nfknock check`: {p}"),
                });
            }
        }
    }
    Import {
        toml,
        diags,
        clients: clients.into_iter().map(|(c, _)| c.name).collect(),
        failed,
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// A TOML basic or literal string, quoted and escaped by the toml crate.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn quote_list<T: ToString>(items: &[T]) -> String {
    let v: Vec<String> = items.iter().map(|i| quote(&i.to_string())).collect();
    format!("[{}]", v.join(", "))
}

fn render_header(with_daemon: bool) -> String {
    let from = if with_daemon {
        "fwknopd's access.conf and fwknopd.conf"
    } else {
        "fwknopd's access.conf"
    };
    format!(
        "# nfknock server configuration, imported from {from} by `nfknock import-fwknop`.\n\
         # It holds the fwknop keys: keep it private (chmod 600) and owned by root.\n\
         # Review it, then: nfknock check --config THIS_FILE\n\
         # The gate closes every port a client may open (`protect` defaults to the union of the\n\
         # clients' `allow` lists); fwknop clients keep their keys and need no change.\n\n"
    )
}

fn render_server(daemon: Option<&DaemonSettings>) -> String {
    let (port, port_from, max_age, max_age_from) = match daemon {
        Some(d) => (
            d.port,
            d.port_from.as_str(),
            d.max_age,
            d.max_age_from.as_str(),
        ),
        None => (
            FWKNOP_DEFAULT_PORT,
            "fwknopd's default (no fwknopd.conf given)",
            FWKNOP_DEFAULT_MAX_AGE,
            "fwknopd's default (no fwknopd.conf given)",
        ),
    };
    format!(
        "[server]\nport = {port}          # {}\nmax_age = {max_age}         # {}\n",
        comment(port_from),
        comment(max_age_from)
    )
}

/// Text safe inside a `#` comment (one line).
fn comment(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn render_client(c: &ClientOut) -> Zeroizing<String> {
    let mut o = Zeroizing::new(String::new());
    let line = |o: &mut Zeroizing<String>, s: String| {
        o.push_str(&s);
        o.push('\n');
    };
    line(
        &mut o,
        format!(
            "# {}:{}: SOURCE {}",
            c.origin.0.display(),
            c.origin.1,
            comment(&c.source_text)
        ),
    );
    line(&mut o, "[[client]]".to_string());
    line(&mut o, format!("name = {}", quote(&c.name)));
    line(&mut o, format!("sources = {}", quote_list(&c.sources)));
    if !c.destinations.is_empty() {
        line(
            &mut o,
            format!("destinations = {}", quote_list(&c.destinations)),
        );
    }
    match &c.allow_comment {
        Some(note) => line(
            &mut o,
            format!("allow = {}   # {note}", quote_list(&c.allow)),
        ),
        None => line(&mut o, format!("allow = {}", quote_list(&c.allow))),
    }
    if !c.deny.is_empty() {
        line(&mut o, format!("deny = {}", quote_list(&c.deny)));
    }
    line(&mut o, format!("timeout = {}", c.timeout));
    line(&mut o, format!("max_timeout = {}", c.max_timeout));
    line(
        &mut o,
        format!("require_source_match = {}", c.require_source_match),
    );
    if let Some(u) = &c.require_username {
        line(&mut o, format!("require_username = {}", quote(u)));
    }
    if let Some((t, note)) = &c.expires_at {
        line(&mut o, format!("expires_at = {t}   # {}", comment(note)));
    }
    line(&mut o, "[client.fwknop]".to_string());
    match &c.key {
        KeyText::Base64(k) => line(&mut o, format!("key_base64 = {}", quote(k))),
        KeyText::Text(k) => line(&mut o, format!("key = {}", quote(k))),
    }
    match &c.hmac {
        Some((KeyText::Base64(k), t)) => {
            line(&mut o, format!("hmac_key_base64 = {}", quote(k)));
            line(&mut o, format!("hmac = {}", quote(t.name())));
        }
        Some((KeyText::Text(k), t)) => {
            line(&mut o, format!("hmac_key = {}", quote(k)));
            line(&mut o, format!("hmac = {}", quote(t.name())));
        }
        None => line(&mut o, "no_hmac = true".to_string()),
    }
    line(&mut o, format!("mode = {}", quote(&mode_name(c.mode))));
    o
}

#[cfg(test)]
mod tests;
