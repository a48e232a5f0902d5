//! The `on_expire` commands still to run, on disk in `state_dir/pending-closes`, so a close
//! runs after its timer even across a daemon restart (an overdue one runs at once).
//!
//! A small text file, rewritten whole (write `pending-closes.tmp`, fsync, rename, fsync the
//! directory: the replay journal's compaction) whenever it changes, at most once per burst of
//! knocks and once per tick:
//!
//! ```text
//! nfknock pending-closes 1
//! <deadline unix> <client> <address> <tcp|udp> <port> <timeout> <user|->
//! ```
//!
//! At most [`MAX_PENDING`] closes are kept: a grant whose close cannot be kept does not run its
//! `on_grant` (what is opened must be closable). A file that does not parse is not guessed at:
//! the daemon refuses to start and says which line is wrong and what to do (as it refuses a
//! state directory it cannot trust), because its closes might otherwise never run.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::template::{valid_user, Values};
use crate::access::Proto;
use crate::sys::{self, Links};

pub const FILE: &str = "pending-closes";
const TMP: &str = "pending-closes.tmp";
const HEADER: &str = "nfknock pending-closes 1";
/// Most closes kept at once.
pub const MAX_PENDING: usize = 65_536;
/// Largest file read back (a full file is about 6 MiB).
const MAX_FILE: u64 = 16 << 20;

/// One `on_expire` to run at `deadline` (Unix seconds, wall clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub deadline: u64,
    pub client: String,
    pub values: Values,
}

#[derive(Debug, thiserror::Error)]
pub enum PendingError {
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is corrupt (line {line}: {what}); the on_expire commands it held may not have run: run them by hand if needed (the file is text), then move the file away and start nfknock again", path.display())]
    Corrupt {
        path: PathBuf,
        line: usize,
        what: &'static str,
    },
}

/// The pending closes, in memory and on disk.
#[derive(Debug)]
pub struct Pending {
    dir: PathBuf,
    closes: Vec<Close>,
    dirty: bool,
}

impl Pending {
    /// Read `dir/pending-closes` (none yet: empty).
    pub fn open(dir: &Path) -> Result<Pending, PendingError> {
        let path = dir.join(FILE);
        let io = |op| {
            let path = path.clone();
            move |source| PendingError::Io { op, path, source }
        };
        let closes = match sys::open_regular(&path, Links::Refuse) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io("read")(e)),
            Ok(f) => {
                let (file, meta) = f.into_parts();
                if meta.len() > MAX_FILE {
                    return Err(PendingError::Corrupt {
                        path,
                        line: 0,
                        what: "larger than any file nfknock writes",
                    });
                }
                let mut text = String::new();
                file.take(MAX_FILE)
                    .read_to_string(&mut text)
                    .map_err(io("read"))?;
                parse(&text).map_err(|(line, what)| PendingError::Corrupt { path, line, what })?
            }
        };
        Ok(Pending {
            dir: dir.to_path_buf(),
            closes,
            dirty: false,
        })
    }

    pub fn len(&self) -> usize {
        self.closes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.closes.is_empty()
    }

    /// Keep `close`, replacing one for the same client, address, proto and port (a re-knock
    /// moves the close later). False when full.
    pub fn add(&mut self, close: Close) -> bool {
        let same = |c: &Close| {
            c.client == close.client
                && c.values.src == close.values.src
                && c.values.proto == close.values.proto
                && c.values.port == close.values.port
        };
        if let Some(c) = self.closes.iter_mut().find(|c| same(c)) {
            c.deadline = c.deadline.max(close.deadline);
            c.values = close.values;
            self.dirty = true;
            return true;
        }
        if self.closes.len() >= MAX_PENDING {
            return false;
        }
        self.closes.push(close);
        self.dirty = true;
        true
    }

    /// Remove and return the closes due at `now`.
    pub fn take_due(&mut self, now: u64) -> Vec<Close> {
        let (due, keep): (Vec<Close>, Vec<Close>) = std::mem::take(&mut self.closes)
            .into_iter()
            .partition(|c| c.deadline <= now);
        self.closes = keep;
        if !due.is_empty() {
            self.dirty = true;
        }
        due
    }

    /// Put back closes that could not be handed to the runner (they run at the next start).
    pub fn put_back(&mut self, closes: Vec<Close>) {
        for c in closes {
            self.add(c);
        }
    }

    /// Write the file if anything changed.
    pub fn save(&mut self) -> Result<(), PendingError> {
        if !self.dirty {
            return Ok(());
        }
        let path = self.dir.join(FILE);
        let tmp = self.dir.join(TMP);
        let io = |op, p: &Path| {
            let p = p.to_path_buf();
            move |source| PendingError::Io {
                op,
                path: p,
                source,
            }
        };
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove the stale", &tmp)(e)),
        }
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)
                .map_err(io("create", &tmp))?;
            f.write_all(render(&self.closes).as_bytes())
                .map_err(io("write", &tmp))?;
            f.sync_all().map_err(io("sync", &tmp))?;
        }
        fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync the directory of", &path))?;
        self.dirty = false;
        Ok(())
    }
}

fn render(closes: &[Close]) -> String {
    let mut s = format!("{HEADER}\n");
    for c in closes {
        let v = &c.values;
        s.push_str(&format!(
            "{} {} {} {} {} {} {}\n",
            c.deadline,
            c.client,
            v.src,
            v.proto.name(),
            v.port,
            v.timeout,
            v.user.as_deref().unwrap_or("-")
        ));
    }
    s
}

/// The closes of a file's text, or the 1-based line that is wrong.
fn parse(text: &str) -> Result<Vec<Close>, (usize, &'static str)> {
    let mut lines = text.split_terminator('\n');
    if lines.next() != Some(HEADER) {
        return Err((1, "not an nfknock pending-closes file of version 1"));
    }
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        if out.len() >= MAX_PENDING {
            return Err((n, "more closes than nfknock keeps"));
        }
        let f: Vec<&str> = line.split(' ').collect();
        let [deadline, client, src, proto, port, timeout, user] = f[..] else {
            return Err((n, "not 7 fields"));
        };
        let bad = |what| (n, what);
        let proto = match proto {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return Err(bad("protocol is not tcp or udp")),
        };
        let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
        if port == 0 || !crate::config::valid_name(client) {
            return Err(bad("bad port or client name"));
        }
        let user = match user {
            "-" => None,
            u if valid_user(u) => Some(u.to_string()),
            _ => return Err(bad("bad user name")),
        };
        out.push(Close {
            deadline: deadline.parse().map_err(|_| bad("bad deadline"))?,
            client: client.to_string(),
            values: Values {
                src: src.parse().map_err(|_| bad("bad address"))?,
                proto,
                port,
                timeout: timeout.parse().map_err(|_| bad("bad timeout"))?,
                user,
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(deadline: u64, src: &str, port: u16) -> Close {
        Close {
            deadline,
            client: "alice".into(),
            values: Values {
                src: src.parse().unwrap(),
                proto: Proto::Tcp,
                port,
                timeout: 30,
                user: Some("bob".into()),
            },
        }
    }

    #[test]
    fn closes_survive_a_restart_and_come_due_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Pending::open(dir.path()).unwrap();
        assert!(p.is_empty());
        assert!(p.add(close(100, "192.0.2.7", 22)));
        assert!(p.add(close(200, "2001:db8::1", 22)));
        // A re-knock moves the close later instead of adding a second one.
        assert!(p.add(close(150, "192.0.2.7", 22)));
        p.save().unwrap();
        let mut again = Pending::open(dir.path()).unwrap();
        assert_eq!(again.len(), 2);
        assert!(again.take_due(149).is_empty());
        assert_eq!(again.take_due(150), vec![close(150, "192.0.2.7", 22)]);
        again.save().unwrap();
        assert_eq!(Pending::open(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn a_corrupt_file_is_refused_with_its_line_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        for (text, line) in [
            ("garbage\n", 1),
            (
                "nfknock pending-closes 1\n100 alice 192.0.2.7 tcp 22 30 -\n1 2 3\n",
                3,
            ),
            (
                "nfknock pending-closes 1\n100 alice 192.0.2.7 icmp 22 30 -\n",
                2,
            ),
            (
                "nfknock pending-closes 1\n100 alice 192.0.2.7 tcp 22 30 -rf\n",
                2,
            ),
        ] {
            fs::write(&path, text).unwrap();
            let e = Pending::open(dir.path()).unwrap_err().to_string();
            assert!(
                e.contains(&format!("is corrupt (line {line}:"))
                    && e.contains("run them by hand")
                    && e.contains("move the file away"),
                "{e}"
            );
        }
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("x")).unwrap();
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        assert!(Pending::open(dir.path()).is_err());
    }
}
