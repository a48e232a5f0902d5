//! The clocks the daemon reads: the wall clock its decisions use and one that never steps.
//! The pure core never reads them; `now` and the monotonic seconds are passed in.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (the one clock read of the daemon's decisions).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seconds on a clock that never steps (`CLOCK_BOOTTIME`: like `CLOCK_MONOTONIC`, but it keeps
/// counting through a suspend, which is time passing, not a step). Only the replay cache uses
/// it, to tell a step of the wall clock from time passing.
pub fn monotonic_secs() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through the valid pointer it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } == 0 {
        return u64::try_from(ts.tv_sec).unwrap_or(0);
    }
    // Kernels before 2.6.39 lack CLOCK_BOOTTIME; CLOCK_MONOTONIC (Instant) stops during a
    // suspend, which only makes replay entries stay longer.
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs()
}
