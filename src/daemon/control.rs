//! What tells the loop to stop or reload: signals in production, a handle in tests and for
//! the control socket's reload requests; and where the loop posts each reload's outcome, so a
//! requester (`nfknock reload`, systemd's `ExecReload=`) learns whether the new config is in
//! force.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

/// What tells the loop to stop or reload: SIGTERM/SIGINT/SIGHUP in production, a
/// [`ControlHandle`] in tests. Flags plus a wake-up pipe that `poll(2)` watches, so neither
/// waits for a packet.
pub struct Control {
    terminate: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    board: Arc<ReloadBoard>,
    read: UnixStream,
    write: UnixStream,
}

/// Asks a running [`Daemon`](super::Daemon) to stop or reload, from another thread.
#[derive(Clone)]
pub struct ControlHandle {
    terminate: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    board: Arc<ReloadBoard>,
    write: Arc<UnixStream>,
}

/// The outcome of one reload as the loop saw it: `Ok` with notes (warnings the operator should
/// read, e.g. a `queue` change that waits for a restart) when the new config is in force;
/// `Err` with the reason when it was refused and the running config stays.
pub type ReloadOutcome = Result<Vec<String>, String>;

/// Reload requests and the outcome of the last reload. A request takes a ticket (`requested`);
/// the loop notes the newest ticket before it reads the config file, and posts the outcome
/// under that ticket (`done`). A reload that noted ticket `t` read the file after request `t`
/// was made, so its outcome answers every request up to `t`.
#[derive(Default)]
struct ReloadBoard {
    state: Mutex<Board>,
    posted: Condvar,
}

#[derive(Default)]
struct Board {
    requested: u64,
    done: u64,
    last: Option<ReloadOutcome>,
}

impl ControlHandle {
    pub fn terminate(&self) {
        self.terminate.store(true, Ordering::SeqCst);
        self.wake();
    }

    pub fn reload(&self) {
        self.reload.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Ask for a reload and wait up to `limit` for its outcome. `None`: the loop did not
    /// answer in time (it may still reload later).
    pub fn reload_and_wait(&self, limit: Duration) -> Option<ReloadOutcome> {
        let ticket = {
            let mut b = lock(&self.board.state);
            b.requested += 1;
            b.requested
        };
        self.reload();
        let deadline = Instant::now() + limit;
        let mut b = lock(&self.board.state);
        while b.done < ticket {
            let left = deadline.checked_duration_since(Instant::now())?;
            b = match self.board.posted.wait_timeout(b, left) {
                Ok((b, _)) => b,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        b.last.clone()
    }

    fn wake(&self) {
        use std::io::Write;
        let _ = (&*self.write).write(&[1]);
    }
}

impl Control {
    /// Flags and pipe, no signal handlers (tests; see [`Control::handle`]).
    pub fn new() -> anyhow::Result<Control> {
        let (read, write) = UnixStream::pair().context("cannot create the control pipe")?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        Ok(Control {
            terminate: Arc::new(AtomicBool::new(false)),
            reload: Arc::new(AtomicBool::new(false)),
            board: Arc::default(),
            read,
            write,
        })
    }

    /// Flags and pipe driven by SIGTERM/SIGINT (terminate) and SIGHUP (reload).
    pub fn register() -> anyhow::Result<Control> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let control = Control::new()?;
        for sig in [SIGTERM, SIGINT] {
            signal_hook::flag::register(sig, control.terminate.clone())?;
        }
        signal_hook::flag::register(SIGHUP, control.reload.clone())?;
        for sig in [SIGTERM, SIGINT, SIGHUP] {
            signal_hook::low_level::pipe::register(sig, control.write.try_clone()?)?;
        }
        Ok(control)
    }

    pub fn handle(&self) -> anyhow::Result<ControlHandle> {
        Ok(ControlHandle {
            terminate: self.terminate.clone(),
            reload: self.reload.clone(),
            board: self.board.clone(),
            write: Arc::new(self.write.try_clone()?),
        })
    }

    pub(super) fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    fn drain(&self) {
        use std::io::Read;
        let mut buf = [0u8; 64];
        while let Ok(n) = (&self.read).read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    }

    pub(super) fn take_terminate(&self) -> bool {
        self.drain();
        self.terminate.load(Ordering::SeqCst)
    }

    /// A reload was asked for (SIGHUP or a request): the ticket its outcome answers (see
    /// [`ReloadBoard`]), to give back to [`Control::post_reload`]. Taken before the config
    /// file is read.
    pub(super) fn take_reload(&self) -> Option<u64> {
        if !self.reload.swap(false, Ordering::SeqCst) {
            return None;
        }
        Some(lock(&self.board.state).requested)
    }

    /// Post the outcome of the reload that took `ticket`; wakes every requester it answers.
    pub(super) fn post_reload(&self, ticket: u64, outcome: ReloadOutcome) {
        let mut b = lock(&self.board.state);
        b.done = b.done.max(ticket);
        b.last = Some(outcome);
        drop(b);
        self.board.posted.notify_all();
    }
}

/// A poisoned board still holds consistent counters (they are written under the lock in one
/// step): take it.
fn lock(m: &Mutex<Board>) -> std::sync::MutexGuard<'_, Board> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
