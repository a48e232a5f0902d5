//! Replacing a file whole (write a temporary beside it, rename it over): the one way the
//! shells rewrite a file others read — the replay journal's compaction ([`crate::state`]), the
//! pending closes ([`crate::command::pending`]), the metrics file (`[server] metrics_file`).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// How far [`replace_file`] makes a replacement survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fsync` the new file before the rename and the directory after it: once the call
    /// returns, a crash leaves the new content (the replay journal, the pending closes).
    Synced,
    /// No `fsync`: a crash may leave the old content; for a file rewritten every few seconds
    /// (the metrics file), where a sync per write would cost more than a lost write.
    Unsynced,
}

/// A failed step of [`replace_file`]: which step (`op`, e.g. `"create"`, `"rename over"`), on
/// which path. Each caller maps it into its own error, naming its own file kind.
#[derive(Debug)]
pub struct ReplaceError {
    pub op: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

/// Replace `path` whole with `bytes`, so a reader sees the old file or the new one, never
/// half of one: write `tmp` (in the same directory) with [`write_new`], then rename it over
/// `path`; with [`Durability::Synced`] the directory is synced after the rename, so the rename
/// itself survives a crash.
pub fn replace_file(
    path: &Path,
    tmp: &Path,
    bytes: &[u8],
    mode: u32,
    durability: Durability,
) -> Result<(), ReplaceError> {
    drop(write_new(tmp, bytes, mode, durability)?);
    std::fs::rename(tmp, path).map_err(fail("rename over", path))?;
    if durability == Durability::Synced {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(fail("sync the directory of", path))?;
    }
    Ok(())
}

/// Write `bytes` to a new file `tmp` and return it open for writing, for a caller that renames
/// it itself (the journal's compaction off the packet loop, which appends to it first).
///
/// A `tmp` left by a crash is removed first (`unlink` removes a link, never its target), then
/// `tmp` is created afresh with `O_EXCL | O_NOFOLLOW`: nothing already there (a planted
/// symbolic or hard link) is opened, so nothing outside is written or truncated. The file gets
/// exactly `mode` (`fchmod` after the create, whatever the umask). With
/// [`Durability::Synced`] it is synced before this returns.
pub fn write_new(
    tmp: &Path,
    bytes: &[u8],
    mode: u32,
    durability: Durability,
) -> Result<File, ReplaceError> {
    match std::fs::remove_file(tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail("remove the stale", tmp)(e)),
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tmp)
        .map_err(fail("create", tmp))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(fail("chmod", tmp))?;
    f.write_all(bytes).map_err(fail("write", tmp))?;
    if durability == Durability::Synced {
        f.sync_all().map_err(fail("sync", tmp))?;
    }
    Ok(f)
}

fn fail(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ReplaceError {
    let path = path.to_path_buf();
    move |source| ReplaceError { op, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    fn mode_of(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn replaces_the_file_whole_with_exactly_its_mode_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let (path, tmp) = (dir.path().join("f"), dir.path().join("f.tmp"));
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        // The umask cannot take bits away: the mode is set on the descriptor.
        let old = unsafe { libc::umask(0o077) };
        let r = replace_file(&path, &tmp, b"new", 0o644, Durability::Unsynced);
        unsafe { libc::umask(old) };
        r.unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(mode_of(&path), 0o644);
        assert!(fs::symlink_metadata(&tmp).is_err());
        replace_file(&path, &tmp, b"newer", 0o600, Durability::Synced).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"newer");
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn a_planted_symlink_or_hard_link_at_the_temporary_is_removed_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let (path, tmp) = (dir.path().join("f"), dir.path().join("f.tmp"));
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o640)).unwrap();
        for durability in [Durability::Synced, Durability::Unsynced] {
            std::os::unix::fs::symlink(&victim, &tmp).unwrap();
            replace_file(&path, &tmp, b"x", 0o600, durability).unwrap();
            fs::hard_link(&victim, &tmp).unwrap();
            replace_file(&path, &tmp, b"y", 0o644, durability).unwrap();
            assert_eq!(fs::read(&victim).unwrap(), b"keep");
            assert_eq!(mode_of(&victim), 0o640);
            assert_eq!(fs::read(&path).unwrap(), b"y");
            assert!(fs::symlink_metadata(&path).unwrap().file_type().is_file());
        }
    }

    #[test]
    fn each_failure_names_its_step_and_path_and_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such");
        let e = replace_file(
            &missing.join("f"),
            &missing.join("f.tmp"),
            b"x",
            0o600,
            Durability::Synced,
        )
        .unwrap_err();
        assert_eq!((e.op, e.path), ("create", missing.join("f.tmp")));
        assert_eq!(e.source.kind(), io::ErrorKind::NotFound);

        // A directory in place of the temporary cannot be removed as a stale file.
        let (path, tmp) = (dir.path().join("f"), dir.path().join("f.tmp"));
        fs::write(&path, "old").unwrap();
        fs::create_dir(&tmp).unwrap();
        let e = replace_file(&path, &tmp, b"x", 0o600, Durability::Synced).unwrap_err();
        assert_eq!((e.op, e.path), ("remove the stale", tmp.clone()));
        fs::remove_dir(&tmp).unwrap();

        // A directory in place of the target: the rename fails, the temporary is complete.
        let target = dir.path().join("d");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), "x").unwrap();
        let e = replace_file(&target, &tmp, b"x", 0o600, Durability::Synced).unwrap_err();
        assert_eq!((e.op, e.path), ("rename over", target));
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn write_new_hands_back_the_file_for_its_caller_to_finish() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("j.tmp");
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        let mut f = write_new(&tmp, b"head", 0o600, Durability::Synced).unwrap();
        // What the caller writes next lands after the content, in the new file only.
        f.write_all(b"+tail").unwrap();
        drop(f);
        assert_eq!(fs::read(&tmp).unwrap(), b"head+tail");
        assert_eq!(mode_of(&tmp), 0o600);
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
    }
}
