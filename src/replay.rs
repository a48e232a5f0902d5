//! Replay cache bounded by time, not by count, and the byte encoding of its on-disk journal.
//! Pure: `now` is passed in; file I/O lives in [`crate::state`].
//!
//! SKELETON: the native-format helper owns this file.

/// Identity of an authenticated packet: SHA-256 over its exact wire bytes (both formats).
pub type ReplayKey = [u8; 32];

/// Authenticated packet identities, each kept until its expiry (`timestamp + max_age`).
#[derive(Debug, Default, Clone)]
pub struct ReplayCache {
    entries: std::collections::HashMap<ReplayKey, u64>,
}

impl ReplayCache {
    pub fn new() -> ReplayCache {
        ReplayCache::default()
    }

    /// Is `key` recorded and not yet expired at `now`?
    pub fn contains(&self, key: &ReplayKey, now: u64) -> bool {
        self.entries.get(key).is_some_and(|&exp| exp >= now)
    }

    /// Record `key` until `expires_at` (Unix seconds).
    pub fn insert(&mut self, key: ReplayKey, expires_at: u64) {
        let e = self.entries.entry(key).or_insert(expires_at);
        *e = (*e).max(expires_at);
    }

    /// Forget everything that expired before `now`.
    pub fn prune(&mut self, now: u64) {
        self.entries.retain(|_, &mut exp| exp >= now);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ReplayKey, u64)> {
        self.entries.iter().map(|(k, &v)| (k, v))
    }
}
