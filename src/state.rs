//! The replay journal on disk, in `state_dir`. Shell: file I/O only; the encoding is in
//! [`crate::replay`].
//!
//! SKELETON: the native-format helper owns this file.

use std::path::Path;

use crate::replay::{ReplayCache, ReplayKey};

/// What loading the journal found; the daemon logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadReport {
    /// No journal yet.
    Fresh,
    /// Loaded this many live entries.
    Loaded { live: usize, torn_tail: bool },
    /// The journal was unreadable; the daemon must refuse every knock whose timestamp is before
    /// `refuse_before` (the safe fallback: no replay window opens).
    Corrupt { reason: String, refuse_before: u64 },
}

/// Errors of the journal shell, each naming the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {op} replay journal {path}: {source}")]
    Io { op: &'static str, path: std::path::PathBuf, #[source] source: std::io::Error },
}

/// The open journal.
pub struct ReplayJournal {
    _private: (),
}

impl ReplayJournal {
    /// Open (creating `dir` if needed) and load the journal, dropping entries expired at `now`.
    pub fn open(dir: &Path, now: u64) -> Result<(ReplayJournal, ReplayCache, LoadReport), StateError> {
        let _ = (dir, now);
        unimplemented!("native helper")
    }

    /// Append entries (one `write(2)`; survives a crash of the process).
    pub fn append(&mut self, entries: &[(ReplayKey, u64)]) -> Result<(), StateError> {
        let _ = entries;
        unimplemented!("native helper")
    }

    /// Flush appended entries to stable storage (`fdatasync`).
    pub fn sync(&mut self) -> Result<(), StateError> {
        unimplemented!("native helper")
    }

    /// Rewrite the journal with only `cache`'s live entries (write-then-rename, fsync).
    pub fn compact(&mut self, cache: &ReplayCache) -> Result<(), StateError> {
        let _ = cache;
        unimplemented!("native helper")
    }
}
