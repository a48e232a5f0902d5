//! Files read with their checks made on the open descriptor, and [`FsLoader`]: the one
//! implementation of [`crate::config::Files`], through which the config (server and knock
//! profile), its key files and the fwknop importer read the file system.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use std::os::unix::fs::MetadataExt;

use zeroize::Zeroizing;

use crate::config::{FileMeta, Files, Loaded, MAX_CONFIG_LEN, MAX_KEY_FILE_LEN};

/// What to do when the last component of a path is a symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Open what it points to (a config file may be a link into a configuration tree).
    Follow,
    /// Refuse it (`O_NOFOLLOW`): a key file is opened as exactly the file that was named.
    Refuse,
}

/// A regular file open for reading, with the metadata of the open descriptor (`fstat(2)`): what
/// is checked (owner, mode, size) is the file that is read, even if the path changes meanwhile.
#[derive(Debug)]
pub struct RegularFile {
    file: File,
    meta: Metadata,
}

/// Open `path` for reading if it is a regular file.
///
/// A socket cannot be opened at all (`ENXIO`), and a symbolic link is followed or refused
/// (`ELOOP`), so what is open is a directory, a FIFO, a device or a regular file.
/// `O_NONBLOCK` makes opening a FIFO return at once instead of waiting for a writer (it is
/// then refused as not a regular file); on a regular file the flag changes nothing. With
/// [`Links::Refuse`] a symbolic link is refused (`O_NOFOLLOW`). The descriptor is `O_CLOEXEC`
/// (Rust's default) and `O_NOCTTY`.
pub fn open_regular(path: &Path, links: Links) -> io::Result<RegularFile> {
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if links == Links::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| {
            if links == Links::Refuse && e.raw_os_error() == Some(libc::ELOOP) {
                crate::config::link_refused()
            } else {
                e
            }
        })?;
    let meta = file.metadata()?;
    let ty = meta.file_type();
    if !ty.is_file() {
        let kind = if ty.is_dir() {
            "a directory"
        } else if ty.is_fifo() {
            "a FIFO"
        } else if ty.is_char_device() || ty.is_block_device() {
            "a device"
        } else {
            "not a file"
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is not a regular file but {kind}"),
        ));
    }
    Ok(RegularFile { file, meta })
}

impl RegularFile {
    /// The open descriptor's metadata (`fstat(2)` at open).
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// The open file and its metadata, for a caller that reads it its own way.
    pub fn into_parts(self) -> (File, Metadata) {
        (self.file, self.meta)
    }

    /// Read the whole file into one zeroizing buffer allocated once, sized from `fstat` (+1
    /// byte to notice a file that grows while it is read): no reallocation ever leaves a copy
    /// of a secret in freed memory. A file longer than `limit` is refused before it is read.
    pub fn read_all(&mut self, limit: u64) -> io::Result<Zeroizing<Vec<u8>>> {
        let len = self.meta.len();
        if len > limit {
            return Err(crate::config::too_long(limit));
        }
        // `len <= limit`, and every limit used fits in memory many times over.
        let len = len as usize;
        let mut buf = Zeroizing::new(vec![0u8; len + 1]);
        let mut n = 0;
        while n < buf.len() {
            match self.file.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n > len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "it grew while it was being read; try again once nothing is writing to it",
            ));
        }
        // Shrinks the length only: the capacity (wiped on drop) stays where it is.
        buf.truncate(n);
        Ok(buf)
    }
}

/// The file system behind [`Files`]: every file opened once with [`open_regular`] (a FIFO,
/// device or directory refused at once), its size capped before it is read, its metadata
/// taken from the open descriptor.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsLoader;

impl FsLoader {
    fn load(path: &Path, links: Links, limit: u64) -> io::Result<Loaded> {
        let mut file = open_regular(path, links)?;
        let bytes = file.read_all(limit)?;
        let meta = FileMeta {
            mode: file.meta.mode(),
            uid: file.meta.uid(),
        };
        Ok(Loaded { bytes, meta })
    }
}

impl Files for FsLoader {
    fn read_config(&self, path: &Path) -> io::Result<Loaded> {
        FsLoader::load(path, Links::Follow, MAX_CONFIG_LEN)
    }

    fn read_key(&self, path: &Path) -> io::Result<Loaded> {
        FsLoader::load(path, Links::Refuse, MAX_KEY_FILE_LEN)
    }

    fn list_conf(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            // `is_file` follows a link to its target, as reading the file will.
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
    use crate::fwknop_import::Loader;

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
        let real = Files::canonical(&FsLoader, &d.join("a.conf"));
        assert_eq!(Files::canonical(&FsLoader, &d.join("link.conf")), real);
        assert_eq!(
            Files::canonical(&FsLoader, &d.join(".").join("a.conf")),
            real
        );
        // A path that does not exist keeps its name (the read reports the error).
        assert_eq!(
            Files::canonical(&FsLoader, &d.join("gone.conf")),
            d.join("gone.conf")
        );
    }
}

#[cfg(test)]
mod fs_loader_refuses_tests {
    use super::*;
    use crate::fwknop_import::Loader;

    /// Run `f` on a thread; fail (instead of hanging the test run) if it takes over 5 s.
    fn within_5s<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("{what} hung"))
    }

    /// `nfknock import-fwknop --access-conf /dev/zero` (or a FIFO) must not hang or eat memory.
    #[test]
    fn import_loader_refuses_a_fifo_and_dev_zero_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("access.conf");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = within_5s("reading a FIFO", move || FsLoader.read(&fifo).map(|_| ())).unwrap_err();
        assert!(
            e.contains("not a regular file") && e.contains("FIFO"),
            "{e}"
        );
        let e = within_5s("reading /dev/zero", || {
            FsLoader.read(Path::new("/dev/zero")).map(|_| ())
        })
        .unwrap_err();
        assert!(
            e.contains("not a regular file") && e.contains("device"),
            "{e}"
        );
        // ... and a directory listing skips a FIFO named *.conf.
        assert!(FsLoader.conf_files(dir.path()).unwrap().is_empty());
    }
}

#[cfg(test)]
mod open_checks_tests {
    use super::*;

    /// The kind of non-file named in the refusal is the one the user pointed at.
    #[test]
    fn refusals_name_the_kind_of_thing_that_is_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let e = FsLoader.read_config(d).unwrap_err().to_string();
        assert_eq!(e, "it is not a regular file but a directory");
        let sock = d.join("nfknock.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        // A socket cannot be opened at all (ENXIO): the error is the OS's, never a hang.
        let e = FsLoader.read_key(&sock).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENXIO), "{e}");
        let e = FsLoader.read_key(Path::new("/dev/null")).unwrap_err();
        assert_eq!(e.to_string(), "it is not a regular file but a device");
    }

    /// A key file is exactly the file named: a link is refused with [`is_link_refused`]; a
    /// config file may be a link.
    #[test]
    fn a_key_file_link_is_refused_and_a_config_link_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("real"), "k").unwrap();
        std::os::unix::fs::symlink(d.join("real"), d.join("link")).unwrap();
        let e = FsLoader.read_key(&d.join("link")).unwrap_err();
        assert!(crate::config::is_link_refused(&e), "{e}");
        assert_eq!(
            e.to_string(),
            "it is a symbolic link, which nfknock does not follow"
        );
        let loaded = FsLoader.read_config(&d.join("link")).unwrap();
        assert_eq!(&loaded.bytes[..], b"k");
        // Other errors pass through unchanged.
        let e = FsLoader.read_key(&d.join("missing")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(!crate::config::is_link_refused(&e));
    }

    /// A key file the size of a wrong file is refused before it is read, with the limit.
    #[test]
    fn a_file_over_its_limit_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, vec![b'A'; MAX_KEY_FILE_LEN as usize + 1]).unwrap();
        let e = FsLoader.read_key(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("it is longer than {MAX_KEY_FILE_LEN} bytes; is this the right file?")
        );
        std::fs::write(&path, vec![b'A'; MAX_KEY_FILE_LEN as usize]).unwrap();
        let loaded = FsLoader.read_key(&path).unwrap();
        assert_eq!(loaded.bytes.len(), MAX_KEY_FILE_LEN as usize);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(loaded.meta.mode, mode);
    }

    /// The parts and metadata of an open file are those of the descriptor.
    #[test]
    fn an_open_file_hands_out_its_descriptor_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "abc").unwrap();
        let f = open_regular(&path, Links::Refuse).unwrap();
        assert_eq!(f.metadata().len(), 3);
        let (mut file, meta) = f.into_parts();
        assert_eq!(meta.len(), 3);
        let mut s = String::new();
        file.read_to_string(&mut s).unwrap();
        assert_eq!(s, "abc");
    }
}

#[cfg(test)]
mod read_race_tests {
    use super::*;
    use std::io::Write;

    /// A file that grows between `fstat` and the read (a key being written) is refused, not
    /// read in part or reallocated.
    #[test]
    fn a_file_that_grows_while_it_is_read_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "abc").unwrap();
        let mut f = open_regular(&path, Links::Refuse).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"def")
            .unwrap();
        let e = f.read_all(MAX_KEY_FILE_LEN).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            e.to_string(),
            "it grew while it was being read; try again once nothing is writing to it"
        );
    }
}
