//! The operating system's side of the core's inputs, for the shells: the CSPRNG. (The clock is
//! read in `daemon::unix_now`.) The pure core only sees the [`Rng`] trait.

use crate::crypto::Rng;

/// The operating system's CSPRNG (`getrandom(2)`).
pub struct OsRng;

impl Rng for OsRng {
    fn fill(&mut self, buf: &mut [u8]) {
        // getrandom(2) only fails before the kernel pool is initialised at early boot or with
        // invalid arguments; neither can be worked around safely, so a failure is fatal.
        getrandom::fill(buf).expect("getrandom(2) failed: the kernel has no entropy source");
    }
}

// ---------------------------------------------------------------------------------------------
// File loading for `nfknock import-fwknop`: the pure importer reads through this.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::fwknop_import::Loader;

/// The real file system behind the importer's [`Loader`]: whole files as UTF-8 text, the
/// `*.conf` files of a directory, canonical names for include-loop detection.
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

#[cfg(test)]
mod fs_loader_tests {
    use super::*;

    #[test]
    fn lists_only_conf_files_sorted_and_reads_utf8_text_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in ["b.conf", "a.conf", "c.txt", "conf"] {
            std::fs::write(d.join(name), "SOURCE ANY\n").unwrap();
        }
        std::fs::create_dir(d.join("sub.conf")).unwrap();
        std::fs::write(d.join("latin1.conf"), b"KEY caf\xe9\n").unwrap();
        assert_eq!(
            FsLoader.conf_files(d).unwrap(),
            [d.join("a.conf"), d.join("b.conf"), d.join("latin1.conf")]
        );
        assert_eq!(
            FsLoader.read(&d.join("a.conf")).unwrap().as_str(),
            "SOURCE ANY\n"
        );
        assert_eq!(
            FsLoader.read(&d.join("latin1.conf")).unwrap_err(),
            "the file is not UTF-8 text"
        );
        let missing = FsLoader.read(&d.join("missing.conf")).unwrap_err();
        assert!(missing.contains("No such file"), "{missing}");
        let not_dir = FsLoader.conf_files(&d.join("a.conf")).unwrap_err();
        assert!(not_dir.contains("Not a directory"), "{not_dir}");
    }

    #[test]
    fn canonical_names_are_equal_for_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.conf"), "").unwrap();
        std::os::unix::fs::symlink(d.join("a.conf"), d.join("link.conf")).unwrap();
        let real = FsLoader.canonical(&d.join("a.conf"));
        assert_eq!(FsLoader.canonical(&d.join("link.conf")), real);
        assert_eq!(FsLoader.canonical(&d.join(".").join("a.conf")), real);
        // A path that does not exist keeps its name (the read reports the error).
        assert_eq!(
            FsLoader.canonical(&d.join("gone.conf")),
            d.join("gone.conf")
        );
    }
}
