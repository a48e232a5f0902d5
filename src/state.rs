//! The replay journal on disk, in `state_dir`. Shell: file I/O only; the encoding is in
//! [`crate::replay`].
//!
//! `state_dir` must be a directory (not a symbolic link) owned by the user nfknock runs as and
//! writable by nobody else: whoever can write there can delete the journal (reopening the replay
//! window) or plant links for nfknock to write through. Files in `state_dir` (created 0700):
//!
//! - `replay.journal` (0600): header, then records appended one batch per `write(2)`.
//! - `replay.journal.tmp`: a compaction in progress; renamed over the journal when complete,
//!   so a crash leaves either the old or the new journal, never a mix.
//! - `replay.journal.corrupt-<unix time>`: a journal that failed to decode, kept for a person
//!   to look at; nfknock never reads it again.
//! - `first-start` ([`FIRST_START_MARKER`]): "this directory is new". Made by
//!   `nfknock init-state` (the installer runs it when it creates the directory); the daemon
//!   removes it once its first journal is on disk.
//!
//! # A missing journal is not a fresh one
//!
//! A directory without a journal is either new or one whose journal was lost: wiped, moved by a
//! changed `state_dir`, or on a tmpfs after a reboot. Only the second can hide knocks that were
//! accepted before, so only a marker someone had to put there on purpose makes it a first start
//! ([`LoadReport::FirstStart`]); without it the daemon refuses knocks stamped before
//! start + `max_age`, exactly as for a corrupt journal ([`LoadReport::Missing`]). Whoever can
//! create the marker can also delete the journal, so the marker gives an attacker nothing that
//! write access to the state directory did not; it is only honoured as a regular file (a
//! symlink or anything else named so is ignored: opened with `O_NOFOLLOW`, never followed),
//! and it is removed as soon as a journal exists, even if a crash left it behind.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::shell_quote;
use crate::replay::{self, ReplayCache, ReplayKey};
use crate::sys::{self, Links};

/// Name of the journal inside the state directory.
pub const JOURNAL_FILE: &str = "replay.journal";
/// Name of the compaction's temporary file inside the state directory.
pub const JOURNAL_TMP_FILE: &str = "replay.journal.tmp";
/// Name of the first-start marker inside the state directory (see the module documentation).
pub const FIRST_START_MARKER: &str = "first-start";

/// What the marker file says to a person who finds it.
const FIRST_START_TEXT: &str = "\
This state directory is new: the next `nfknock serve` creates its replay journal here and
removes this file. Made by `nfknock init-state`. Never create it in a directory that held a
replay journal: knocks accepted before would be accepted again.
";

/// What loading the journal found; the daemon logs it.
///
/// Where a variant has `refuse_before`, the returned cache already refuses knocks stamped
/// before it, and the journal on disk says so too (a crash and restart keeps the refusal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadReport {
    /// No journal, and the first-start marker was there: a new journal was created and the
    /// marker removed. Nothing is refused.
    FirstStart,
    /// No journal and no first-start marker: the journal was lost (directory wiped or on a
    /// tmpfs, or `state_dir` changed). An empty journal was created.
    Missing {
        refuse_before: u64,
        /// The directory itself did not exist before (rather than existing without a journal).
        dir_created: bool,
        /// Something named like the marker is there but is not a regular file; it was ignored.
        marker_ignored: bool,
    },
    /// Loaded this many live entries.
    Loaded { live: usize, torn_tail: bool },
    /// A journal in an older format, loaded and rewritten in the current one. It does not say
    /// which knocks it had already forgotten (format 1 kept them only for the `max_age` of the
    /// day), so knocks stamped before `refuse_before` are refused as after a loss.
    Upgraded {
        from_version: u16,
        live: usize,
        refuse_before: u64,
    },
    /// The journal was unreadable; it was set aside and an empty one created.
    Corrupt { reason: String, refuse_before: u64 },
}

/// What [`mark_first_start`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkOutcome {
    /// The marker was created.
    Marked,
    /// The marker was already there.
    AlreadyMarked,
}

/// Errors of the journal shell, each naming the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    // The OS error is part of the message, not also a `source`: the daemon logs these with
    // `{e}` alone, and `main` prints the cause chain, which would repeat it.
    #[error("cannot {op} replay journal {path}: {cause}")]
    Io {
        op: &'static str,
        path: std::path::PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot {op} first-start marker {path}: {cause}")]
    Marker {
        op: &'static str,
        path: std::path::PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "{path} exists: this state directory has served before, so it is not new; nothing was \
         changed (knocks accepted before are remembered there; to start afresh on purpose, give \
         every client a new key first, then remove the journal and run init-state again)"
    )]
    HasJournal { path: PathBuf },
    #[error("{path} exists and is not a regular file; remove it, then run init-state again")]
    MarkerNotAFile { path: PathBuf },
    /// `state_dir` or the journal is something nfknock must not trust; `fix` says what to do.
    #[error("{what} {path} {problem}; {fix}")]
    Unsafe {
        what: &'static str,
        path: PathBuf,
        problem: String,
        fix: String,
    },
}

/// The open journal.
pub struct ReplayJournal {
    dir: PathBuf,
    path: PathBuf,
    /// `O_WRONLY | O_APPEND`: every append lands at the end even if something else grew the file.
    file: File,
    /// Length of the file up to the last complete append; a failed append is cut back to it so
    /// a half-written batch cannot sit in the middle of later records.
    len: u64,
}

impl std::fmt::Debug for ReplayJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayJournal")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish()
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |cause| StateError::Io {
        op,
        path: path.to_path_buf(),
        cause,
    }
}

fn marker_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |cause| StateError::Marker {
        op,
        path: path.to_path_buf(),
        cause,
    }
}

impl ReplayJournal {
    /// Open (creating `dir` if needed) and load the journal, dropping entries expired at `now`.
    ///
    /// A journal with a torn tail, expired entries or an older format is compacted straight
    /// away (appending after a partial record would misalign every later one). A journal that
    /// fails to decode is renamed to `replay.journal.corrupt-<now>` and replaced by an empty
    /// one. No journal at all is a first start only with the first-start marker.
    ///
    /// `max_age` is how far ahead of the clock a knock accepted before this start may have been
    /// stamped: when the journal is lost, corrupt or in an older format, knocks stamped before
    /// `now + max_age` are refused, and the new journal's header says so at once.
    pub fn open(
        dir: &Path,
        now: u64,
        max_age: u64,
    ) -> Result<(ReplayJournal, ReplayCache, LoadReport), StateError> {
        let dir_created = !dir.exists();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("create directory for", dir))?;
        check_dir(dir, sys::euid(), None)?;
        let path = dir.join(JOURNAL_FILE);
        let mut cache = ReplayCache::new();
        let lost_until = now.saturating_add(max_age);

        let bytes = read_journal(&path)?;
        let Some(bytes) = bytes else {
            let marker = probe_marker(dir)?;
            if marker == Marker::File {
                // The journal first, durably (file and directory synced), then the marker: a
                // crash in between leaves both, and the next start removes the marker.
                let journal = ReplayJournal::rewrite(dir, path, &cache)?;
                remove_marker(dir)?;
                return Ok((journal, cache, LoadReport::FirstStart));
            }
            cache.raise_refuse_before(lost_until);
            let journal = ReplayJournal::rewrite(dir, path, &cache)?;
            let report = LoadReport::Missing {
                refuse_before: lost_until,
                dir_created,
                marker_ignored: marker == Marker::Other,
            };
            return Ok((journal, cache, report));
        };

        // A journal exists, so this is no first start: a marker left by a crash between
        // creating the journal and removing the marker must not outlive it.
        if probe_marker(dir)? == Marker::File {
            remove_marker(dir)?;
        }
        match replay::decode(&bytes, now) {
            Ok(decoded) => {
                for (key, expires_at) in decoded.entries {
                    cache.insert(key, expires_at);
                }
                cache.raise_refuse_before(decoded.refuse_before);
                let upgraded = decoded.format_version != replay::JOURNAL_VERSION;
                let report = if upgraded {
                    cache.raise_refuse_before(lost_until);
                    LoadReport::Upgraded {
                        from_version: decoded.format_version,
                        live: cache.len(),
                        refuse_before: lost_until,
                    }
                } else {
                    LoadReport::Loaded {
                        live: cache.len(),
                        torn_tail: decoded.torn_tail,
                    }
                };
                let journal = if decoded.torn_tail || decoded.expired > 0 || upgraded {
                    ReplayJournal::rewrite(dir, path, &cache)?
                } else {
                    let file = open_append(&path)?;
                    ReplayJournal {
                        dir: dir.to_path_buf(),
                        path,
                        file,
                        len: bytes.len() as u64,
                    }
                };
                Ok((journal, cache, report))
            }
            Err(corrupt) => {
                let aside = dir.join(format!("{JOURNAL_FILE}.corrupt-{now}"));
                fs::rename(&path, &aside).map_err(io_err("move aside corrupt", &path))?;
                cache.raise_refuse_before(lost_until);
                let journal = ReplayJournal::rewrite(dir, path, &cache)?;
                let report = LoadReport::Corrupt {
                    reason: corrupt.to_string(),
                    refuse_before: lost_until,
                };
                Ok((journal, cache, report))
            }
        }
    }

    /// Path of the journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append entries (one `write(2)`; survives a crash of the process).
    ///
    /// The records reach the page cache before this returns, so a crash of the process loses
    /// nothing; a crash of the machine can lose what was not yet [`sync`](Self::sync)ed. On a
    /// regular file Linux writes the whole buffer in one call unless the disk is full or the
    /// call is interrupted; if any part fails, the file is cut back to its previous length.
    pub fn append(&mut self, entries: &[(ReplayKey, u64)]) -> Result<(), StateError> {
        if entries.is_empty() {
            return Ok(());
        }
        let buf = replay::encode_records(entries.iter().map(|(k, e)| (k, *e)));
        match self.file.write_all(&buf) {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Best effort: if even the truncate fails, the next load sees a torn or
                // corrupt journal and takes the safe fallback.
                let _ = self.file.set_len(self.len);
                Err(io_err("append to", &self.path)(e))
            }
        }
    }

    /// Flush appended entries to stable storage (`fdatasync`).
    pub fn sync(&mut self) -> Result<(), StateError> {
        self.file.sync_data().map_err(io_err("sync", &self.path))
    }

    /// Rewrite the journal with only `cache`'s live entries (write-then-rename, fsync).
    ///
    /// Writes every entry `cache` holds: prune it first.
    pub fn compact(&mut self, cache: &ReplayCache) -> Result<(), StateError> {
        let fresh = ReplayJournal::rewrite(&self.dir, self.path.clone(), cache)?;
        *self = fresh;
        Ok(())
    }

    /// Write `cache` to `replay.journal.tmp`, fsync it, rename it over `path`, fsync the
    /// directory (so the rename itself is durable), and open the result for appending.
    fn rewrite(
        dir: &Path,
        path: PathBuf,
        cache: &ReplayCache,
    ) -> Result<ReplayJournal, StateError> {
        let tmp = dir.join(JOURNAL_TMP_FILE);
        let bytes = replay::encode_journal(cache.refuse_before(), cache.iter());
        {
            // A leftover from a crash is removed (unlink removes a link, never its target), and
            // the file is created afresh: O_EXCL fails rather than open anything already there,
            // link or not, so the mode below is the file's mode.
            match fs::remove_file(&tmp) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove the stale", &tmp)(e)),
            }
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)
                .map_err(io_err("create", &tmp))?;
            f.write_all(&bytes).map_err(io_err("write", &tmp))?;
            f.sync_all().map_err(io_err("sync", &tmp))?;
        }
        fs::rename(&tmp, &path).map_err(io_err("rename compacted", &path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync directory of", &path))?;
        let file = open_append(&path)?;
        Ok(ReplayJournal {
            dir: dir.to_path_buf(),
            path,
            file,
            len: bytes.len() as u64,
        })
    }
}

/// What is at the first-start marker's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    Absent,
    /// A regular file: the only thing honoured as the marker.
    File,
    /// A symlink, directory, FIFO, ...: ignored, never followed.
    Other,
}

/// Look at the marker without following a symlink (`O_PATH | O_NOFOLLOW` opens the link
/// itself) and without blocking on a FIFO (`O_PATH` reads nothing).
fn probe_marker(dir: &Path) -> Result<Marker, StateError> {
    let path = dir.join(FIRST_START_MARKER);
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Marker::Absent),
        Err(e) => return Err(marker_err("look at", &path)(e)),
    };
    let meta = file.metadata().map_err(marker_err("look at", &path))?;
    Ok(if meta.file_type().is_file() {
        Marker::File
    } else {
        Marker::Other
    })
}

/// Remove the marker (`unlink` never follows a symlink) and make the removal durable.
fn remove_marker(dir: &Path) -> Result<(), StateError> {
    let path = dir.join(FIRST_START_MARKER);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(marker_err("remove", &path)(e)),
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(marker_err("sync the directory of", &path))
}

/// Declare `dir` a new state directory (`nfknock init-state`; the installer runs it when it
/// creates the directory): create it (0700) if needed and put the first-start marker in it,
/// so the daemon's first start there grants at once instead of refusing knocks as after a
/// lost journal.
///
/// Refused if `dir` holds a journal: a directory that served before is not new.
pub fn mark_first_start(dir: &Path) -> Result<MarkOutcome, StateError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(marker_err("create the directory for", dir))?;
    let journal = dir.join(JOURNAL_FILE);
    if fs::symlink_metadata(&journal).is_ok() {
        return Err(StateError::HasJournal { path: journal });
    }
    let path = dir.join(FIRST_START_MARKER);
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path);
    let mut file = match created {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return match probe_marker(dir)? {
                Marker::File => Ok(MarkOutcome::AlreadyMarked),
                _ => Err(StateError::MarkerNotAFile { path }),
            };
        }
        Err(e) => return Err(marker_err("create", &path)(e)),
    };
    file.write_all(FIRST_START_TEXT.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(marker_err("write", &path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(marker_err("sync the directory of", &path))?;
    Ok(MarkOutcome::Marked)
}

/// Open the journal for appending (never through a link, never a FIFO or device: `O_NONBLOCK`
/// keeps the open from waiting on a FIFO, which `fstat` then refuses) and make sure nobody
/// else can read it.
fn open_append(path: &Path) -> Result<File, StateError> {
    let file = OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(io_err("open", path))?;
    let meta = file.metadata().map_err(io_err("inspect", path))?;
    if !meta.is_file() {
        return Err(StateError::Unsafe {
            what: "replay journal",
            path: path.to_path_buf(),
            problem: "is not a regular file".to_string(),
            fix: "remove it and restart nfknock".to_string(),
        });
    }
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_err("chmod", path))?;
    Ok(file)
}

/// The journal's bytes, or `None` if there is none yet. A link is refused (its target is
/// neither read nor, later, written); so is anything but a regular file.
fn read_journal(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    let file = match sys::open_regular(path, Links::Refuse) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if sys::is_link_refused(&e) => {
            return Err(StateError::Unsafe {
                what: "replay journal",
                path: path.to_path_buf(),
                problem: "is a symbolic link, which nfknock does not follow".to_string(),
                fix: "replace the link with the file it points to".to_string(),
            })
        }
        Err(e) => return Err(io_err("read", path)(e)),
    };
    let (mut file, meta) = file.into_parts();
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes).map_err(io_err("read", path))?;
    Ok(Some(bytes))
}

/// What `state_dir` is, as `lstat(2)` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DirKind {
    Dir,
    /// A symbolic link, and the directory it resolves to (if it does).
    Link(Option<PathBuf>),
    Other,
}

/// For a daemon started as root that is about to switch to `owner`: create `state_dir` for it
/// if it is missing (0700, owned by `owner`; missing parents 0755, root's), as systemd's
/// `StateDirectory=` does for the unit's `User=`, then check it as [`ReplayJournal::open`] will
/// after the switch. An existing directory is never handed over (`state_dir` may name one that
/// is not nfknock's): the message names the `chown` to run. True if it created the directory.
pub fn prepare_dir(dir: &Path, owner: &sys::Account) -> Result<bool, StateError> {
    let mut created = false;
    match fs::symlink_metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .map_err(io_err("create the parent of", dir))?;
            }
            match DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {
                    // Hand over exactly what was created: no link is followed.
                    let new = OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                        .open(dir)
                        .map_err(io_err("open the new directory of", dir))?;
                    std::os::unix::fs::fchown(&new, Some(owner.uid), Some(owner.gid))
                        .map_err(io_err("give its user the new directory of", dir))?;
                    created = true;
                }
                // Someone made it meanwhile: it is checked like any existing one.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("create directory for", dir)(e)),
            }
        }
        Err(e) => return Err(io_err("inspect the directory of", dir)(e)),
    }
    check_dir(dir, owner.uid, Some(&owner.name))?;
    Ok(created)
}

/// Refuse a `state_dir` someone other than `uid` (named `name`, if known) could tamper with
/// (see the module documentation).
fn check_dir(dir: &Path, uid: u32, name: Option<&str>) -> Result<(), StateError> {
    let meta = fs::symlink_metadata(dir).map_err(io_err("inspect the directory of", dir))?;
    let ty = meta.file_type();
    let kind = if ty.is_symlink() {
        DirKind::Link(fs::canonicalize(dir).ok())
    } else if ty.is_dir() {
        DirKind::Dir
    } else {
        DirKind::Other
    };
    match dir_problem(dir, kind, meta.mode(), meta.uid(), uid, name) {
        None => Ok(()),
        Some((problem, fix)) => Err(StateError::Unsafe {
            what: "state_dir",
            path: dir.to_path_buf(),
            problem,
            fix,
        }),
    }
}

/// What is wrong with a `state_dir` of this kind, mode and owner `uid` for a daemon running as
/// `euid` (named `name`, if known), and the fix; `None` if nothing is (pure, for tests).
fn dir_problem(
    dir: &Path,
    kind: DirKind,
    mode: u32,
    uid: u32,
    euid: u32,
    name: Option<&str>,
) -> Option<(String, String)> {
    let q = shell_quote(dir);
    match kind {
        DirKind::Link(target) => {
            let fix = match target {
                Some(t) => format!(
                    "set `state_dir = \"{}\"`, the directory itself",
                    t.display()
                ),
                None => format!("set `state_dir` to a directory, not a link (`readlink -f {q}`)"),
            };
            return Some((
                "is a symbolic link, which nfknock does not follow".to_string(),
                fix,
            ));
        }
        DirKind::Other => {
            return Some((
                "is not a directory".to_string(),
                "remove it, or set `state_dir` to a directory".to_string(),
            ))
        }
        DirKind::Dir => {}
    }
    if uid != euid {
        let (owner, who) = match (euid, name) {
            (0, _) => ("root:root".to_string(), "uid 0".to_string()),
            (_, Some(n)) => (format!("{n}:"), format!("`{n}` (uid {euid})")),
            (_, None) => (euid.to_string(), format!("uid {euid}")),
        };
        return Some((
            format!("is owned by uid {uid}, not by the user nfknock runs as ({who})"),
            format!("run `chown -R {owner} {q}`"),
        ));
    }
    if mode & 0o022 != 0 {
        return Some((
            format!(
                "is writable by group or others (mode {:04o}), who could delete the journal or plant links in it",
                mode & 0o7777
            ),
            format!("run `chmod 700 {q}`"),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: u8) -> ReplayKey {
        [n; replay::KEY_LEN]
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// `max_age` in these tests.
    const MAX_AGE: u64 = 120;

    /// Open `dir` the way an installed daemon first does: marked new, then a first start.
    fn first_open(dir: &Path, now: u64) -> (ReplayJournal, ReplayCache) {
        assert_eq!(mark_first_start(dir).unwrap(), MarkOutcome::Marked);
        let (j, cache, report) = ReplayJournal::open(dir, now, MAX_AGE).unwrap();
        assert_eq!(report, LoadReport::FirstStart);
        (j, cache)
    }

    #[test]
    fn fresh_directory_and_journal_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state/nested");
        let (j, cache) = first_open(&dir, 1000);
        assert!(cache.is_empty() && cache.refuse_before() == 0);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(j.path()), 0o600);
        assert_eq!(fs::read(j.path()).unwrap(), replay::encode_header(0));
        assert!(!dir.join(JOURNAL_TMP_FILE).exists());
        assert!(!dir.join(FIRST_START_MARKER).exists(), "marker not removed");
    }

    #[test]
    fn appended_entries_survive_a_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut j, _) = first_open(tmp.path(), 1000);
        j.append(&[(k(1), 2000), (k(2), 3000)]).unwrap();
        j.append(&[]).unwrap();
        j.append(&[(k(3), 4000)]).unwrap();
        j.sync().unwrap();
        drop(j);
        let (_, cache, report) = ReplayJournal::open(tmp.path(), 1500, MAX_AGE).unwrap();
        assert_eq!(
            report,
            LoadReport::Loaded {
                live: 3,
                torn_tail: false
            }
        );
        for (key, t) in [(k(1), 2000), (k(2), 3000), (k(3), 4000)] {
            assert!(cache.contains(&key, t));
            assert!(!cache.contains(&key, t + 1));
        }
    }

    #[test]
    fn expired_entries_are_dropped_and_compacted_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut j, _) = first_open(tmp.path(), 1000);
        j.append(&[(k(1), 2000), (k(2), 3000), (k(3), 4000)])
            .unwrap();
        drop(j);
        let (j, cache, report) = ReplayJournal::open(tmp.path(), 2500, MAX_AGE).unwrap();
        assert_eq!(
            report,
            LoadReport::Loaded {
                live: 2,
                torn_tail: false
            }
        );
        assert!(!cache.contains(&k(1), 0));
        let len = fs::metadata(j.path()).unwrap().len() as usize;
        assert_eq!(len, replay::HEADER_LEN + 2 * replay::RECORD_LEN);
        assert_eq!(mode(j.path()), 0o600);
    }

    #[test]
    fn torn_tail_is_reported_and_repaired() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut j, _) = first_open(tmp.path(), 0);
        j.append(&[(k(1), 100), (k(2), 200)]).unwrap();
        // Simulate a crash halfway through the next append.
        let half = &replay::encode_record(&k(3), 300)[..20];
        OpenOptions::new()
            .append(true)
            .open(j.path())
            .unwrap()
            .write_all(half)
            .unwrap();
        drop(j);

        let (mut j, cache, report) = ReplayJournal::open(tmp.path(), 0, MAX_AGE).unwrap();
        assert_eq!(
            report,
            LoadReport::Loaded {
                live: 2,
                torn_tail: true
            }
        );
        assert!(!cache.contains(&k(3), 0));
        // Appends after the repair line up again.
        j.append(&[(k(4), 400)]).unwrap();
        drop(j);
        let (_, cache, report) = ReplayJournal::open(tmp.path(), 0, MAX_AGE).unwrap();
        assert_eq!(
            report,
            LoadReport::Loaded {
                live: 3,
                torn_tail: false
            }
        );
        assert!(cache.contains(&k(4), 400));
    }

    #[test]
    fn compact_keeps_exactly_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut j, mut cache) = first_open(tmp.path(), 0);
        let batch: Vec<_> = (0..10).map(|i| (k(i), u64::from(i) * 100)).collect();
        j.append(&batch).unwrap();
        for &(key, e) in &batch {
            cache.insert(key, e);
        }
        cache.prune(500, 500);
        j.compact(&cache).unwrap();
        assert!(!tmp.path().join(JOURNAL_TMP_FILE).exists());
        let decoded = replay::decode(&fs::read(j.path()).unwrap(), 0).unwrap();
        assert!(cache.refuse_before() > 0);
        assert_eq!(
            decoded.refuse_before,
            cache.refuse_before(),
            "compaction drops records but keeps what their loss means"
        );
        let mut got = decoded.entries;
        got.sort();
        assert_eq!(got, batch[5..].to_vec());
        // The handle points at the new file: appends after compaction are kept.
        j.append(&[(k(42), 9999)]).unwrap();
        drop(j);
        let (_, cache, _) = ReplayJournal::open(tmp.path(), 500, MAX_AGE).unwrap();
        assert_eq!(cache.len(), 6);
        assert!(cache.contains(&k(42), 9999));
    }

    #[test]
    fn corrupt_journal_is_moved_aside_and_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut j, _) = first_open(tmp.path(), 0);
        j.append(&[(k(1), 100), (k(2), 200)]).unwrap();
        let path = j.path().to_path_buf();
        drop(j);
        let mut bytes = fs::read(&path).unwrap();
        bytes[replay::HEADER_LEN + 3] ^= 0x10; // inside the first (non-final) record
        fs::write(&path, &bytes).unwrap();

        let (j, cache, report) = ReplayJournal::open(tmp.path(), 777, MAX_AGE).unwrap();
        let LoadReport::Corrupt {
            reason,
            refuse_before,
        } = report
        else {
            panic!("expected Corrupt, got {report:?}");
        };
        assert_eq!(refuse_before, 777 + MAX_AGE);
        assert_eq!(cache.refuse_before(), 777 + MAX_AGE);
        assert!(reason.contains("checksum"), "{reason}");
        assert!(cache.is_empty());
        let aside = tmp.path().join("replay.journal.corrupt-777");
        assert_eq!(
            fs::read(&aside).unwrap(),
            bytes,
            "the damaged file is kept as it was"
        );
        assert_eq!(
            fs::read(j.path()).unwrap(),
            replay::encode_header(777 + MAX_AGE),
            "the refusal is on disk at once: a crash and restart keeps it"
        );
        drop(j);
        // The replacement loads cleanly, still refusing.
        let (_, cache, report) = ReplayJournal::open(tmp.path(), 800, MAX_AGE).unwrap();
        assert_eq!(cache.refuse_before(), 777 + MAX_AGE);
        assert_eq!(
            report,
            LoadReport::Loaded {
                live: 0,
                torn_tail: false
            }
        );
    }

    #[test]
    fn garbage_file_is_corrupt_not_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(JOURNAL_FILE), b"hello").unwrap();
        let (_, _, report) = ReplayJournal::open(tmp.path(), 5, MAX_AGE).unwrap();
        assert!(
            matches!(
                report,
                LoadReport::Corrupt {
                    refuse_before: 125,
                    ..
                }
            ),
            "{report:?}"
        );
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

    /// A file outside the state directory that a planted link points at.
    fn victim(content: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("victim");
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        (dir, path)
    }

    #[test]
    fn compaction_does_not_follow_a_planted_tmp_link() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut j, mut cache, _) = ReplayJournal::open(tmp.path(), 0, MAX_AGE).unwrap();
        j.append(&[(k(1), 100), (k(2), 200)]).unwrap();
        cache.insert(k(1), 100);
        cache.insert(k(2), 200);
        let (_keep, target) = victim(b"precious");
        std::os::unix::fs::symlink(&target, tmp.path().join(JOURNAL_TMP_FILE)).unwrap();

        j.compact(&cache).unwrap();
        assert_eq!(
            fs::read(&target).unwrap(),
            b"precious",
            "the link was written through"
        );
        assert_eq!(mode(&target), 0o644);
        let meta = fs::symlink_metadata(j.path()).unwrap();
        assert!(
            meta.file_type().is_file(),
            "the journal is not a regular file"
        );
        assert!(fs::symlink_metadata(tmp.path().join(JOURNAL_TMP_FILE)).is_err());
        drop(j);
        let (_, cache, _) = ReplayJournal::open(tmp.path(), 0, MAX_AGE).unwrap();
        assert!(cache.contains(&k(2), 200));
    }

    #[test]
    fn a_journal_that_is_a_symbolic_link_is_refused_and_its_target_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        // The target is a valid journal that would load cleanly (and be appended to).
        let header = replay::encode_header(0);
        let (_keep, target) = victim(&header);
        std::os::unix::fs::symlink(&target, tmp.path().join(JOURNAL_FILE)).unwrap();

        let err = ReplayJournal::open(tmp.path(), 0, MAX_AGE)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(JOURNAL_FILE) && err.contains("symbolic link"),
            "{err}"
        );
        assert_eq!(fs::read(&target).unwrap(), header);
        assert_eq!(mode(&target), 0o644, "the link's target was chmod'ed");
    }

    #[test]
    fn a_journal_that_is_a_fifo_is_refused_without_waiting_for_a_writer() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join(JOURNAL_FILE);
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let dir = tmp.path().to_path_buf();
        let err = within_5s("opening a FIFO as the journal", move || {
            ReplayJournal::open(&dir, 0, MAX_AGE).map(|_| ())
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("not a regular file but a FIFO"), "{err}");
    }

    #[test]
    fn a_state_dir_others_may_write_to_or_that_is_a_link_is_refused_with_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        fs::create_dir(&dir).unwrap();
        for m in [0o777, 0o770, 0o1777] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(m)).unwrap();
            let err = ReplayJournal::open(&dir, 0, MAX_AGE)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("writable by group or others")
                    && err.contains(&format!("`chmod 700 {}`", dir.display())),
                "mode {m:o}: {err}"
            );
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let err = ReplayJournal::open(&link, 0, MAX_AGE)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("symbolic link") && err.contains(&dir.display().to_string()),
            "{err}"
        );
        assert!(
            !dir.join(JOURNAL_FILE).exists(),
            "a journal was made through the link"
        );
        // 0750 and 0755 are fine: nobody else can add, remove or replace files.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        ReplayJournal::open(&dir, 0, MAX_AGE).unwrap();
    }

    #[test]
    fn a_state_dir_owned_by_another_user_is_refused_with_the_chown() {
        let p = Path::new("/var/lib/nfknock");
        let (problem, fix) = dir_problem(p, DirKind::Dir, 0o40700, 4242, 998, None).unwrap();
        assert!(problem.contains("owned by uid 4242"), "{problem}");
        assert!(fix.contains("`chown -R 998 /var/lib/nfknock`"), "{fix}");
        let (problem, fix) =
            dir_problem(p, DirKind::Dir, 0o40700, 0, 998, Some("nfknock")).unwrap();
        assert!(problem.contains("`nfknock` (uid 998)"), "{problem}");
        assert!(
            fix.contains("`chown -R nfknock: /var/lib/nfknock`"),
            "{fix}"
        );
        let (_, fix) = dir_problem(p, DirKind::Dir, 0o40700, 4242, 0, None).unwrap();
        assert!(
            fix.contains("`chown -R root:root /var/lib/nfknock`"),
            "{fix}"
        );
        assert!(dir_problem(p, DirKind::Dir, 0o40700, 998, 998, None).is_none());
        assert!(dir_problem(p, DirKind::Other, 0o100600, 998, 998, None).is_some());
    }

    /// A root daemon about to run as another user creates a missing `state_dir` for it (0700,
    /// its owner; missing parents 0755), never hands over one that exists, and names the
    /// `chown` to run when an existing one belongs to someone else.
    #[test]
    fn prepare_dir_creates_a_missing_state_dir_for_the_daemon_user_only() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let owner = sys::Account {
            name: "nfk-test".into(),
            uid: 4242,
            gid: 4343,
        };
        let dir = tmp.path().join("var/lib/nfknock");
        assert!(prepare_dir(&dir, &owner).unwrap(), "created");
        let meta = fs::metadata(&dir).unwrap();
        assert_eq!((meta.uid(), meta.gid(), mode(&dir)), (4242, 4343, 0o700));
        assert_eq!(mode(&tmp.path().join("var/lib")), 0o755);
        assert_eq!(fs::metadata(tmp.path().join("var/lib")).unwrap().uid(), 0);
        // Already there and right: nothing created, nothing changed.
        assert!(!prepare_dir(&dir, &owner).unwrap());
        // An existing directory of someone else's is refused with the fix, not handed over.
        let other = tmp.path().join("other");
        fs::create_dir(&other).unwrap();
        fs::set_permissions(&other, fs::Permissions::from_mode(0o700)).unwrap();
        let msg = prepare_dir(&other, &owner).unwrap_err().to_string();
        assert!(
            msg.contains(&format!("`chown -R nfk-test: {}`", other.display())),
            "{msg}"
        );
        assert_eq!(fs::metadata(&other).unwrap().uid(), 0);
        // Paths that cannot become a directory: the error names the path and the failed step.
        let file = tmp.path().join("file");
        fs::write(&file, b"").unwrap();
        let msg = prepare_dir(&file.join("state"), &owner)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("cannot inspect the directory of replay journal")
                && msg.contains(&file.join("state").display().to_string()),
            "{msg}"
        );
        let dangling = tmp.path().join("dangling");
        std::os::unix::fs::symlink(tmp.path().join("gone/away"), &dangling).unwrap();
        let msg = prepare_dir(&dangling.join("state"), &owner)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("cannot create the parent of replay journal")
                && msg.contains(&dangling.join("state").display().to_string()),
            "{msg}"
        );
        assert!(!tmp.path().join("gone").exists(), "a link was followed");
    }

    #[test]
    fn unusable_directory_names_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("not-a-dir");
        fs::write(&file, b"").unwrap();
        let err = ReplayJournal::open(&file, 0, MAX_AGE).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("not-a-dir"), "{msg}");
    }
    /// Issue "security", item 3: a state directory without a journal and without the marker
    /// (wiped, on a tmpfs, or a changed `state_dir`) is a lost journal, not a fresh one.
    #[test]
    fn missing_journal_without_the_marker_is_lost_not_fresh() {
        let tmp = tempfile::tempdir().unwrap();
        let (j, cache, report) = ReplayJournal::open(tmp.path(), 1000, MAX_AGE).unwrap();
        assert_eq!(
            report,
            LoadReport::Missing {
                refuse_before: 1000 + MAX_AGE,
                dir_created: false,
                marker_ignored: false
            }
        );
        assert_eq!(cache.refuse_before(), 1000 + MAX_AGE);
        // On disk at once: a crash and restart right after keeps refusing.
        drop(j);
        let (_, cache, report) = ReplayJournal::open(tmp.path(), 1001, MAX_AGE).unwrap();
        assert!(
            matches!(report, LoadReport::Loaded { live: 0, .. }),
            "{report:?}"
        );
        assert_eq!(cache.refuse_before(), 1000 + MAX_AGE);

        let gone = tmp.path().join("moved/state");
        let (_, _, report) = ReplayJournal::open(&gone, 1000, MAX_AGE).unwrap();
        assert!(
            matches!(
                report,
                LoadReport::Missing {
                    dir_created: true,
                    ..
                }
            ),
            "{report:?}"
        );
    }

    #[test]
    fn the_marker_makes_one_first_start() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("new");
        assert_eq!(mark_first_start(&dir).unwrap(), MarkOutcome::Marked);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(FIRST_START_MARKER)), 0o600);
        assert_eq!(mark_first_start(&dir).unwrap(), MarkOutcome::AlreadyMarked);
        let (_, cache, report) = ReplayJournal::open(&dir, 1000, MAX_AGE).unwrap();
        assert_eq!(report, LoadReport::FirstStart);
        assert_eq!(cache.refuse_before(), 0, "a first start refuses nothing");
        assert!(!dir.join(FIRST_START_MARKER).exists());
        let (_, _, report) = ReplayJournal::open(&dir, 1001, MAX_AGE).unwrap();
        assert!(matches!(report, LoadReport::Loaded { .. }), "{report:?}");
        // A directory that served is not new: init-state refuses and says why.
        let err = mark_first_start(&dir).unwrap_err();
        assert!(matches!(err, StateError::HasJournal { .. }), "{err}");
        assert!(err.to_string().contains("replay.journal"), "{err}");
        assert!(!dir.join(FIRST_START_MARKER).exists());
    }

    /// A crash between writing the first journal and removing the marker leaves both; the
    /// marker must go then, or deleting the journal later would pass for a first start.
    #[test]
    fn a_marker_beside_a_journal_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let (j, _) = first_open(tmp.path(), 1000);
        drop(j);
        fs::write(tmp.path().join(FIRST_START_MARKER), b"").unwrap();
        let (_, _, report) = ReplayJournal::open(tmp.path(), 1001, MAX_AGE).unwrap();
        assert!(matches!(report, LoadReport::Loaded { .. }), "{report:?}");
        assert!(!tmp.path().join(FIRST_START_MARKER).exists());
        fs::remove_file(tmp.path().join(JOURNAL_FILE)).unwrap();
        let (_, _, report) = ReplayJournal::open(tmp.path(), 1002, MAX_AGE).unwrap();
        assert!(matches!(report, LoadReport::Missing { .. }), "{report:?}");
    }

    /// Only a regular file counts: a symlink is neither followed nor honoured, a FIFO does not
    /// block the start, and init-state refuses to write through either.
    #[test]
    fn a_marker_that_is_not_a_regular_file_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("elsewhere");
        fs::write(&target, b"keep me").unwrap();
        let dir = tmp.path().join("state");
        fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&target, dir.join(FIRST_START_MARKER)).unwrap();
        let err = mark_first_start(&dir).unwrap_err();
        assert!(matches!(err, StateError::MarkerNotAFile { .. }), "{err}");
        let (_, cache, report) = ReplayJournal::open(&dir, 1000, MAX_AGE).unwrap();
        assert_eq!(
            report,
            LoadReport::Missing {
                refuse_before: 1000 + MAX_AGE,
                dir_created: false,
                marker_ignored: true
            }
        );
        assert_eq!(cache.refuse_before(), 1000 + MAX_AGE);
        assert_eq!(fs::read(&target).unwrap(), b"keep me");

        let dir = tmp.path().join("fifo");
        fs::create_dir(&dir).unwrap();
        let fifo = std::ffi::CString::new(
            dir.join(FIRST_START_MARKER)
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let (_, _, report) = ReplayJournal::open(&dir, 1000, MAX_AGE).unwrap();
        assert!(
            matches!(
                report,
                LoadReport::Missing {
                    marker_ignored: true,
                    ..
                }
            ),
            "{report:?}"
        );
    }

    /// A format-1 journal (records hold `timestamp + max_age`) loads without opening a window:
    /// its entries are kept for today's bound, knocks older than start + `max_age` are refused
    /// (it cannot say what it forgot under a smaller `max_age`), and it is rewritten at once.
    #[test]
    fn format_1_journal_is_upgraded_without_opening_a_window() {
        const NOW: u64 = 1_800_000_000;
        let tmp = tempfile::tempdir().unwrap();
        let mut v1 = b"NFKR\x00\x01\x00\x00".to_vec();
        v1.extend_from_slice(&replay::encode_record(&k(1), NOW - 10 + 60));
        v1.extend_from_slice(&replay::encode_record(&k(2), NOW - 500 + 60));
        fs::write(tmp.path().join(JOURNAL_FILE), &v1).unwrap();
        let (_, cache, report) = ReplayJournal::open(tmp.path(), NOW, MAX_AGE).unwrap();
        assert_eq!(
            report,
            LoadReport::Upgraded {
                from_version: 1,
                live: 2,
                refuse_before: NOW + MAX_AGE
            }
        );
        assert!(cache.contains(&k(1), replay::expiry_of(NOW - 10)));
        assert!(cache.contains(&k(2), replay::expiry_of(NOW - 500)));
        assert_eq!(cache.refuse_before(), NOW + MAX_AGE);
        let on_disk =
            replay::decode(&fs::read(tmp.path().join(JOURNAL_FILE)).unwrap(), NOW).unwrap();
        assert_eq!(on_disk.format_version, replay::JOURNAL_VERSION);
        assert_eq!(on_disk.refuse_before, NOW + MAX_AGE);
        assert_eq!(on_disk.entries.len(), 2);
    }
}
