//! The operating system's CSPRNG behind the core's [`Rng`] trait.

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
