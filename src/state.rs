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
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};

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
    /// The thread that runs [`sync_in_background`](Self::sync_in_background)'s `fdatasync`;
    /// started on first use.
    syncer: Option<Syncer>,
    /// A compaction running on another thread ([`start_compaction`](Self::start_compaction)).
    compaction: Option<Compaction>,
}

/// A compaction writing the new journal on another thread.
struct Compaction {
    /// The new journal, written and synced as `replay.journal.tmp`, and its length.
    done: mpsc::Receiver<Result<(File, u64), StateError>>,
    /// What was appended to the old journal since the snapshot: written to the new one before
    /// it takes the old one's name.
    since: Vec<u8>,
}

/// The journal's `fdatasync(2)` off the packet loop. One sync takes 7–11 ms after a burst of
/// grants here (`perf trace` of the daemon in the bench's scale scenario, issue 11 §3); on the
/// loop that held every knock queued meanwhile for as long.
struct Syncer {
    /// A descriptor of the journal to sync; room for one, so syncs never pile up.
    jobs: mpsc::SyncSender<File>,
    /// A sync is queued or running.
    busy: Arc<AtomicBool>,
    /// How the last background sync failed, until the next call reports it.
    failed: Arc<Mutex<Option<StateError>>>,
}

impl Syncer {
    fn start(path: PathBuf) -> io::Result<Syncer> {
        let (jobs, rx) = mpsc::sync_channel::<File>(1);
        let busy = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(Mutex::new(None));
        let (b, f) = (busy.clone(), failed.clone());
        std::thread::Builder::new()
            .name("nfknock-sync".into())
            .spawn(move || {
                // Ends when the journal (the sender) is dropped.
                for file in rx {
                    if let Err(e) = file.sync_data() {
                        *f.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(io_err("sync", &path)(e));
                    }
                    b.store(false, Ordering::Release);
                }
            })?;
        Ok(Syncer { jobs, busy, failed })
    }
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
                        syncer: None,
                        compaction: None,
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
                if let Some(c) = &mut self.compaction {
                    c.since.extend_from_slice(&buf);
                }
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

    /// Start flushing appended entries to stable storage (`fdatasync` on another thread) and
    /// return at once: the packet loop calls this once a second and must not wait for the
    /// disk. If the previous sync is still running, this one is skipped (the next call covers
    /// what it would have). A failed background sync is reported by the next call.
    ///
    /// Durability only: [`append`](Self::append) has already put the records in the page
    /// cache before any grant they lead to, so a crash of the process loses nothing; what a
    /// crash of the machine can lose is what was appended since the last completed sync, as
    /// with a sync on the loop.
    pub fn sync_in_background(&mut self) -> Result<(), StateError> {
        let syncer = match &mut self.syncer {
            Some(s) => s,
            None => self.syncer.insert(
                Syncer::start(self.path.clone())
                    .map_err(io_err("start the sync thread for", &self.path))?,
            ),
        };
        let failed = syncer
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(e) = failed {
            return Err(e);
        }
        if syncer.busy.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let queued = self
            .file
            .try_clone()
            .map_err(io_err("sync", &self.path))
            .and_then(|f| {
                syncer.jobs.try_send(f).map_err(|_| {
                    io_err("sync", &self.path)(io::Error::other("the sync thread ended"))
                })
            });
        if queued.is_err() {
            syncer.busy.store(false, Ordering::Release);
            self.syncer = None;
        }
        queued
    }

    /// Wait until no background sync is queued or running (tests).
    #[cfg(test)]
    fn wait_background_sync(&self) {
        while self
            .syncer
            .as_ref()
            .is_some_and(|s| s.busy.load(Ordering::Acquire))
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Rewrite the journal with only `cache`'s live entries (write-then-rename, fsync).
    ///
    /// Writes every entry `cache` holds: prune it first.
    pub fn compact(&mut self, cache: &ReplayCache) -> Result<(), StateError> {
        // One at a time: a background compaction writes the same temporary file.
        if let Some(c) = self.compaction.take() {
            let _ = c.done.recv();
        }
        let fresh = ReplayJournal::rewrite(&self.dir, self.path.clone(), cache)?;
        let syncer = self.syncer.take();
        *self = fresh;
        self.syncer = syncer;
        Ok(())
    }

    /// Start rewriting the journal with only `cache`'s live entries on another thread, and
    /// return at once (`false` if one is still running). The packet loop calls this every
    /// 10 minutes: at 100 000 live entries the rewrite is 2.4 MB and its fsync 20–40 ms here,
    /// which the loop must not wait for. [`finish_compaction`](Self::finish_compaction) puts
    /// the new journal in place. Until then every append goes to the old journal (which stays
    /// whole, so a crash loses nothing) and is kept for the new one.
    ///
    /// Writes every entry `cache` holds: prune it first.
    pub fn start_compaction(&mut self, cache: &ReplayCache) -> Result<bool, StateError> {
        if self.compaction.is_some() {
            return Ok(false);
        }
        let bytes = replay::encode_journal(cache.refuse_before(), cache.iter());
        let tmp = self.dir.join(JOURNAL_TMP_FILE);
        let (tx, done) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("nfknock-compact".into())
            .spawn(move || {
                let r = write_synced(&tmp, &bytes).map(|f| (f, bytes.len() as u64));
                let _ = tx.send(r);
            })
            .map_err(io_err("start the compaction thread for", &self.path))?;
        self.compaction = Some(Compaction {
            done,
            since: Vec::new(),
        });
        Ok(true)
    }

    /// If the background compaction has written the new journal: append to it what came since,
    /// rename it over the journal and append to it from now on (`true`). Without waiting: a
    /// compaction still running returns `false`. On an error the old journal stays in use,
    /// whole.
    pub fn finish_compaction(&mut self) -> Result<bool, StateError> {
        let got = match &self.compaction {
            None => return Ok(false),
            Some(c) => c.done.try_recv(),
        };
        let (mut file, len) = match got {
            Err(mpsc::TryRecvError::Empty) => return Ok(false),
            Err(mpsc::TryRecvError::Disconnected) => {
                self.compaction = None;
                return Err(io_err("compact", &self.path)(io::Error::other(
                    "the compaction thread ended without a result",
                )));
            }
            Ok(Err(e)) => {
                self.compaction = None;
                return Err(e);
            }
            Ok(Ok(done)) => done,
        };
        let since = self.compaction.take().map(|c| c.since).unwrap_or_default();
        let tmp = self.dir.join(JOURNAL_TMP_FILE);
        let abandon = |e: StateError| {
            let _ = fs::remove_file(&tmp);
            e
        };
        file.write_all(&since)
            .map_err(io_err("write", &tmp))
            .map_err(abandon)?;
        // The new journal's descriptor becomes the appending one (`O_APPEND`, as
        // `open_append` opens it): no reopen that could fail after the rename.
        // SAFETY: fcntl(2) F_SETFL on a descriptor we own.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, libc::O_APPEND) } != 0 {
            return Err(abandon(io_err("set append mode on", &tmp)(
                io::Error::last_os_error(),
            )));
        }
        fs::rename(&tmp, &self.path)
            .map_err(io_err("rename compacted", &self.path))
            .map_err(abandon)?;
        self.file = file;
        self.len = len + since.len() as u64;
        // The rename is durable once the directory is synced: on another thread too. Until
        // then a crash of the machine (not of the process) may bring back the old journal,
        // which lacks only what was appended since, as after a late journal sync.
        let (dir, path, failed) = (
            self.dir.clone(),
            self.path.clone(),
            self.syncer.as_ref().map(|s| s.failed.clone()),
        );
        let _ = std::thread::Builder::new()
            .name("nfknock-sync-dir".into())
            .spawn(move || {
                if let Err(e) = File::open(&dir).and_then(|d| d.sync_all()) {
                    if let Some(f) = failed {
                        *f.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(io_err("sync the directory of", &path)(e));
                    }
                }
            });
        Ok(true)
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
        drop(write_synced(&tmp, &bytes)?);
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
            syncer: None,
            compaction: None,
        })
    }
}

/// Write `bytes` to a new file `tmp` (mode 0600) and fsync it.
///
/// A leftover from a crash is removed (unlink removes a link, never its target), and the file is
/// created afresh: O_EXCL fails rather than open anything already there, link or not, so the
/// mode is the file's mode.
fn write_synced(tmp: &Path, bytes: &[u8]) -> Result<File, StateError> {
    match fs::remove_file(tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove the stale", tmp)(e)),
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tmp)
        .map_err(io_err("create", tmp))?;
    f.write_all(bytes).map_err(io_err("write", tmp))?;
    f.sync_all().map_err(io_err("sync", tmp))?;
    Ok(f)
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
mod tests;
