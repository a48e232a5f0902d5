//! What tells the loop to stop or reload: signals in production, a handle in tests.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;

/// What tells the loop to stop or reload: SIGTERM/SIGINT/SIGHUP in production, a
/// [`ControlHandle`] in tests. Flags plus a wake-up pipe that `poll(2)` watches, so neither
/// waits for a packet.
pub struct Control {
    terminate: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    read: UnixStream,
    write: UnixStream,
}

/// Asks a running [`Daemon`](super::Daemon) to stop or reload, from another thread.
#[derive(Clone)]
pub struct ControlHandle {
    terminate: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    write: Arc<UnixStream>,
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

    pub(super) fn take_reload(&self) -> bool {
        self.reload.swap(false, Ordering::SeqCst)
    }
}
