//! The control socket: requests to the running daemon over its instance lock (an abstract
//! `AF_UNIX` socket, [`InstanceLock`]), and the client side `nfknock reload` uses.
//!
//! Why a socket and not a signal: a signal carries no answer. `systemctl reload` (the unit's
//! `ExecReload=nfknock reload`) must fail, with the reason on the terminal, when the daemon
//! refused the new config; with `kill -HUP` it reported success and only the journal said
//! otherwise (and minimal systems have no `/bin/kill`).
//!
//! The protocol is one line each way, then the answer's text:
//! - request: `reload\n`
//! - answer: `ok\n` then one line per note (a warning to show), or `error\n` then the reason.
//!
//! One thread accepts, reads the request (for at most [`READ_LIMIT`]), checks who asks and
//! waits for the loop's answer: the packet loop itself never blocks on a requester. Connections
//! that send nothing (probes of who holds the lock, [`InstanceLock::acquire`]) are closed.
//! Only root and the daemon's own user may ask: the abstract name has no file permissions.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use tracing::{info, warn};

use super::control::{ControlHandle, ReloadOutcome};
use super::instance::{peer_cred, InstanceLock};

/// How long `nfknock reload` waits for the daemon's answer. The loop serves a reload within
/// one turn (50 ms) plus the reload itself (a config of 10 000 clients parses in about a
/// second); systemd gives `ExecReload=` 90 s by default.
pub const RELOAD_WAIT: Duration = Duration::from_secs(30);
/// How long the daemon's request thread waits for the loop (less than [`RELOAD_WAIT`], so the
/// requester hears "no answer" rather than a timeout of its own).
const LOOP_WAIT: Duration = Duration::from_secs(25);
/// How long a connection may take to send its request.
const READ_LIMIT: Duration = Duration::from_secs(1);
/// The longest request line.
const MAX_REQUEST: usize = 64;
/// The longest answer a requester reads.
const MAX_ANSWER: u64 = 64 * 1024;

const REQ_RELOAD: &str = "reload";
const ANS_OK: &str = "ok";
const ANS_ERROR: &str = "error";

/// Answer requests on `lock`'s socket for the rest of the process's life, on a thread of its
/// own. Start it after the privileges are dropped: a thread keeps the capabilities of its
/// creator.
pub fn spawn(lock: InstanceLock, handle: ControlHandle) -> anyhow::Result<()> {
    let listener = lock.into_listener();
    listener.set_nonblocking(false)?;
    // SAFETY: geteuid has no preconditions.
    let own_uid = unsafe { libc::geteuid() };
    std::thread::Builder::new()
        .name("nfknock-control".into())
        .spawn(move || loop {
            match listener.accept() {
                Ok((stream, _)) => serve_one(stream, &handle, own_uid),
                // EMFILE and the like: do not spin.
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        })
        .map_err(|e| anyhow::anyhow!("cannot start the control socket's thread: {e}"))?;
    Ok(())
}

fn serve_one(mut stream: UnixStream, handle: &ControlHandle, own_uid: u32) {
    let _ = stream.set_read_timeout(Some(READ_LIMIT));
    let _ = stream.set_write_timeout(Some(READ_LIMIT));
    let Some(line) = read_request(&mut stream) else {
        return; // a probe of who holds the lock, or a requester that sent nothing
    };
    let cred = peer_cred(stream.as_raw_fd());
    let answer = match cred {
        Some(c) if c.uid == 0 || c.uid == own_uid => match line.as_str() {
            REQ_RELOAD => {
                info!(
                    pid = c.pid,
                    uid = c.uid,
                    "reload requested over the control socket"
                );
                match handle.reload_and_wait(LOOP_WAIT) {
                    Some(outcome) => outcome,
                    None => Err(format!(
                        "the daemon did not finish the reload within {}s; see its log \
                         (journalctl -u nfknock)",
                        LOOP_WAIT.as_secs()
                    )),
                }
            }
            other => Err(format!(
                "unknown request `{}`; this daemon knows `{REQ_RELOAD}`",
                other.escape_debug()
            )),
        },
        _ => {
            warn!(
                pid = cred.map(|c| c.pid),
                uid = cred.map(|c| c.uid),
                "control request refused: only root and the daemon's user may ask"
            );
            Err(format!(
                "refused: only root or the daemon's user (uid {own_uid}) may ask this daemon \
                 to reload"
            ))
        }
    };
    let _ = stream.write_all(encode(&answer).as_bytes());
}

/// The request line, or `None` if the peer sent none (closed, timed out, too long, not UTF-8).
fn read_request(stream: &mut UnixStream) -> Option<String> {
    let mut buf = [0u8; MAX_REQUEST];
    let mut len = 0;
    while len < buf.len() {
        let n = stream.read(&mut buf[len..]).ok()?;
        if n == 0 {
            return None;
        }
        len += n;
        if let Some(end) = buf[..len].iter().position(|&b| b == b'\n') {
            return std::str::from_utf8(&buf[..end]).ok().map(str::to_string);
        }
    }
    None
}

/// The answer's bytes.
fn encode(answer: &ReloadOutcome) -> String {
    match answer {
        Ok(notes) => {
            let mut s = format!("{ANS_OK}\n");
            for n in notes {
                s.push_str(n);
                s.push('\n');
            }
            s
        }
        Err(reason) => format!("{ANS_ERROR}\n{reason}\n"),
    }
}

/// What went wrong asking the daemon (not the daemon's refusal, which is an `Err` outcome).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no nfknock daemon runs in this network namespace (nobody holds its control socket); start it with `systemctl start nfknock`")]
    NotRunning,
    #[error("cannot reach the nfknock daemon's control socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error("no answer from the nfknock daemon within {}s (it may still apply the new config); see its log: journalctl -u nfknock", RELOAD_WAIT.as_secs())]
    Timeout,
    #[error("the nfknock daemon closed the control connection without a proper answer ({0}); see its log: journalctl -u nfknock")]
    BadAnswer(String),
}

/// Ask the daemon of this network namespace to reload its config, and wait for its outcome.
pub fn request_reload() -> Result<ReloadOutcome, RequestError> {
    let mut stream = InstanceLock::connect().map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => {
            RequestError::NotRunning
        }
        _ => RequestError::Connect(e),
    })?;
    stream
        .set_read_timeout(Some(RELOAD_WAIT))
        .map_err(RequestError::Connect)?;
    stream
        .write_all(format!("{REQ_RELOAD}\n").as_bytes())
        .map_err(RequestError::Connect)?;
    let mut text = String::new();
    match (&mut stream).take(MAX_ANSWER).read_to_string(&mut text) {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Err(RequestError::Timeout)
        }
        Err(e) => return Err(RequestError::BadAnswer(e.to_string())),
    }
    decode(&text)
}

fn decode(text: &str) -> Result<ReloadOutcome, RequestError> {
    let (head, rest) = text.split_once('\n').unwrap_or((text, ""));
    match head {
        ANS_OK => Ok(Ok(rest.lines().map(str::to_string).collect())),
        ANS_ERROR => Ok(Err(rest.trim_end().to_string())),
        "" => Err(RequestError::BadAnswer("empty answer".into())),
        other => Err(RequestError::BadAnswer(format!(
            "unexpected answer `{}`",
            other.chars().take(40).collect::<String>().escape_debug()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip_and_junk_is_a_bad_answer() {
        for a in [
            Ok(vec![]),
            Ok(vec!["note one".to_string(), "note two".to_string()]),
            Err("line 3: `port`: not a number\nline 4: unknown key".to_string()),
        ] {
            assert_eq!(decode(&encode(&a)).unwrap(), a);
        }
        assert!(matches!(decode(""), Err(RequestError::BadAnswer(_))));
        assert!(matches!(decode("yes\n"), Err(RequestError::BadAnswer(_))));
    }

    /// Over the real socket (in a network namespace of its own, root only): the daemon's
    /// refusal reaches the requester with its reason, a success with its notes, a probe of
    /// who holds the lock (connect, send nothing) does not stall the thread, and a user who is
    /// neither root nor the daemon's is refused without a reload.
    #[test]
    fn a_request_gets_the_loops_answer_over_the_socket() {
        use super::super::control::Control;
        use super::super::instance::Action;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        std::thread::spawn(|| {
            // SAFETY: unshare(CLONE_NEWNET) moves only this thread to a new network namespace.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            assert!(matches!(request_reload(), Err(RequestError::NotRunning)));
            let control = Control::new().unwrap();
            let lock = InstanceLock::acquire(Action::Serve).unwrap();
            spawn(lock, control.handle().unwrap()).unwrap();
            // The "loop": answers two reloads, then stops.
            let answers = [
                Err("line 2: bad".to_string()),
                Ok(vec!["a note".to_string()]),
            ];
            let requests = std::thread::spawn(|| {
                let probe = InstanceLock::connect().unwrap();
                drop(probe);
                [request_reload().unwrap(), request_reload().unwrap()]
            });
            for a in answers.clone() {
                let ticket = loop {
                    if let Some(t) = control.take_reload() {
                        break t;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                };
                control.post_reload(ticket, a);
            }
            assert_eq!(requests.join().unwrap(), answers);
            // Anyone else is refused, and the loop is not asked. (setresuid(2) through the raw
            // syscall changes this one thread's ids only; glibc's wrapper would change all.)
            let refused = std::thread::spawn(|| {
                // SAFETY: a plain syscall on this thread's credentials.
                let rc = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
                assert_eq!(rc, 0);
                request_reload().unwrap()
            })
            .join()
            .unwrap();
            let reason = refused.unwrap_err();
            assert!(reason.contains("refused: only root"), "{reason}");
            assert_eq!(control.take_reload(), None, "the loop was asked");
        })
        .join()
        .unwrap();
    }
}
