//! The operating system's side of the core's inputs, for the shells: the CSPRNG ([`OsRng`]),
//! files read with their checks made on the open descriptor ([`FsLoader`], the one
//! implementation of [`crate::config::Files`]: config files, key files, the importer's files),
//! replacing a file whole ([`replace_file`]: the journal's compaction, the pending closes, the
//! metrics file), the user database, leaving root for the service user, and the clocks
//! ([`clock`]). The pure core only sees traits and values passed in: [`crate::crypto::Rng`],
//! [`crate::config::Files`], [`Accounts`].

pub mod clock;
mod files;
mod privilege;
mod replace;
mod rng;
mod user;

pub use crate::config::is_link_refused;
pub use files::{open_regular, FsLoader, Links, RegularFile};
pub use privilege::{switch_user, SwitchError};
pub use replace::{replace_file, write_new, Durability, ReplaceError};
pub use rng::OsRng;
pub use user::{euid, user_by_name, Account, Accounts, SystemAccounts};

/// For tests that change the process's ids or capabilities, which cannot be undone: run `f` in
/// a forked child, which has one thread as the daemon has when it drops privileges (glibc
/// applies `setgroups`/`setres[ug]id` to every thread and aborts if one thread fails where
/// another succeeded). `Err` with `f`'s message, or with how the child ended; a child that does
/// not finish within 10 s is killed.
/// (Test scaffolding, left out of the coverage figure: `cfg(not(tarpaulin_include))`.)
#[cfg(test)]
#[cfg(not(tarpaulin_include))]
pub(crate) fn in_forked_child(f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two descriptors for pipe(2) to fill.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child runs only `f` and exits; it never returns into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        #[cfg(tarpaulin)]
        open_coverage_profile_now();
        // SAFETY: the write end is ours alone in the child.
        let mut w = unsafe { std::fs::File::from_raw_fd(fds[1]) };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            Err(format!("the child panicked: {}", what.unwrap_or_default()))
        });
        let code = match r {
            Ok(()) => 0,
            Err(msg) => {
                let _ = w.write_all(msg.as_bytes());
                1
            }
        };
        // exit(3), not _exit(2): coverage counters are written at exit.
        std::process::exit(code);
    }
    // SAFETY: both descriptors came from pipe(2) above; the parent closes the write end.
    let mut r = unsafe {
        libc::close(fds[1]);
        std::fs::File::from_raw_fd(fds[0])
    };
    let mut status = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // SAFETY: `status` is a valid out-pointer; `pid` is our child.
    while unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == 0 {
        if std::time::Instant::now() > deadline {
            // SAFETY: `pid` is our child, not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Err("the child hung".to_string());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut msg = String::new();
    let _ = r.read_to_string(&mut msg);
    match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
        (true, 0) => Ok(()),
        (true, _) => Err(msg),
        _ => Err(format!("the child ended with wait status {status}")),
    }
}

/// Under `scripts/coverage` (cargo-tarpaulin, LLVM engine; it sets `--cfg tarpaulin`) the
/// profile runtime opens its output file at exit, which a child that has become `nobody`
/// cannot do in root's directory: hand it a file opened now, while still root.
#[cfg(all(test, tarpaulin))]
#[cfg(not(tarpaulin_include))]
fn open_coverage_profile_now() {
    extern "C" {
        /// compiler-rt's profile runtime (InstrProfiling.h).
        fn __llvm_profile_set_file_object(file: *mut libc::FILE, enable_merge: libc::c_int);
        fn __llvm_profile_reset_counters();
    }
    let Ok(pattern) = std::env::var("LLVM_PROFILE_FILE") else {
        return;
    };
    let name = pattern
        .replace("%m", "forked")
        .replace("%p", &std::process::id().to_string());
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: two valid NUL-terminated strings; the FILE is handed to the runtime for good.
    unsafe {
        let file = libc::fopen(name.as_ptr(), c"wb".as_ptr());
        if !file.is_null() {
            // Only what the child runs: the parent's own file counts the rest.
            __llvm_profile_reset_counters();
            __llvm_profile_set_file_object(file, 0);
        }
    }
}
