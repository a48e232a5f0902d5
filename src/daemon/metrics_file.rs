//! The metrics file for node_exporter's textfile collector (`[server] metrics_file`): written
//! whole to `PATH.tmp` beside it (mode 0644, whatever the umask: node_exporter runs as another
//! user), then renamed over `PATH`, so a reader sees the old file or the new one, never half.
//! The collector reads only `*.prom`, so it never reads the temporary file.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::{error, info};

/// The writer; remembers the last failure so a lasting one is logged once, not every 5 s.
#[derive(Default)]
pub(super) struct MetricsFile {
    last_error: Option<String>,
}

impl MetricsFile {
    /// Replace `path` with `text`; log a failure (once until it changes) and a recovery.
    pub(super) fn write(&mut self, path: &Path, text: &str) {
        match write_atomic(path, text) {
            Ok(()) => {
                if self.last_error.take().is_some() {
                    info!(path = %path.display(), "metrics file written again");
                }
            }
            Err(e) => {
                if self.last_error.as_deref() != Some(e.as_str()) {
                    error!("{e}");
                    self.last_error = Some(e);
                }
            }
        }
    }
}

/// The temporary file `write_atomic` writes first.
pub(super) fn tmp_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".tmp");
    PathBuf::from(p)
}

/// Write `text` to `PATH.tmp` (not following a symlink there), make it 0644, rename it over
/// `path`. The error names the file, the failed step and what to do.
pub(super) fn write_atomic(path: &Path, text: &str) -> Result<(), String> {
    let tmp = tmp_path(path);
    let fail = |op: &str, file: &Path, e: std::io::Error| {
        let dir = path.parent().unwrap_or(Path::new("/"));
        format!(
            "cannot {op} metrics file {}: {e}; create directory {} and let the daemon's user write \
             there (e.g. `setfacl -m u:nfknock:rwx {}`; under systemd also `ReadWritePaths={}`), \
             or remove `metrics_file` from [server]",
            file.display(),
            dir.display(),
            dir.display(),
            dir.display()
        )
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(|e| fail("create", &tmp, e))?;
    f.set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(|e| fail("chmod", &tmp, e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| fail("write", &tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| fail("rename over", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_whole_with_mode_0644_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nfknock.prom");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&path, "new 1\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new 1\n");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert!(!tmp_path(&path).exists());
    }

    #[test]
    fn a_symlink_in_place_of_the_temporary_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nfknock.prom");
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, tmp_path(&path)).unwrap();
        let e = write_atomic(&path, "x\n").unwrap_err();
        assert!(e.contains("cannot create metrics file"), "{e}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
    }

    #[test]
    fn a_missing_directory_says_what_to_do() {
        let e = write_atomic(Path::new("/nonexistent-nfknock/x.prom"), "x").unwrap_err();
        assert!(
            e.contains("/nonexistent-nfknock/x.prom.tmp")
                && e.contains("create directory /nonexistent-nfknock")
                && e.contains("remove `metrics_file`"),
            "{e}"
        );
    }

    /// The cost of one write of a full metrics file (docs/METRICS.md quotes it):
    /// `cargo test --lib metrics_file_write_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn metrics_file_write_cost() {
        let mut m = crate::metrics::Metrics::new("0.1.0", 0);
        for reason in [
            "replay",
            "stale",
            "unknown-key",
            "bad-header",
            "not-allowed",
        ] {
            m.knock(Some(reason), Some("native"));
            m.knock(Some(reason), Some("fwknop"));
        }
        let text = m.render(&crate::metrics::Snapshot::default());
        let dir = tempfile::tempdir_in(std::env::var("METRICS_DIR").unwrap_or("/var/tmp".into()))
            .unwrap();
        let path = dir.path().join("nfknock.prom");
        let n = 2000;
        let start = std::time::Instant::now();
        for _ in 0..n {
            let t = m.render(&crate::metrics::Snapshot::default());
            write_atomic(&path, &t).unwrap();
        }
        let each = start.elapsed() / n;
        eprintln!(
            "render + write_atomic of {} bytes: {each:?} each",
            text.len()
        );
    }
}
