//! The native key-hint index ([`HintIndex`]): which clients a native packet's key hint names.
//! Pure: the window of epochs it covers follows the `now` it is given.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use crate::config::{Config, Credential};
use crate::wire::native;

/// How long before an epoch's hints can first be needed the daemon writes them to the kernel's
/// prefilter set (issue 11): its tick runs once a second, so a minute is ample even for a busy
/// daemon, and costs 10 % more elements on average.
pub const KERNEL_HINT_LEAD_SECS: u64 = 60;
/// Extra life of a hint element in the kernel: the kernel counts a timeout from the instant it
/// got the element, the daemon's `now` is whole seconds (rounded down).
const KERNEL_HINT_SLACK_SECS: u64 = 1;

/// The epochs whose hints the kernel's prefilter set holds at `now`: those a timestamp within
/// `max_age` of now can fall in (the knocks the engine can grant), plus the next one
/// [`KERNEL_HINT_LEAD_SECS`] before it is needed. Not the engine's wider skew-diagnosis window
/// (`SKEW_DIAGNOSIS_SECS`): in the kernel each epoch costs one element per native client, and
/// a knock outside `max_age` is refused anyway; what is lost is the "stale by N seconds" log
/// line for it (`prefilter = false` brings it back).
pub fn kernel_epochs(now: u64, max_age: u64) -> std::ops::RangeInclusive<u64> {
    let lo = native::epoch_of(now.saturating_sub(max_age));
    let hi = native::epoch_of(
        now.saturating_add(max_age)
            .saturating_add(KERNEL_HINT_LEAD_SECS),
    );
    lo..=hi
}

/// Milliseconds from `now` until `epoch` leaves the acceptance window: its last second,
/// `(epoch + 1) × EPOCH_SECS − 1`, is then more than `max_age` in the past. The element's
/// timeout in the kernel, so the kernel expires hints as it expires grants.
pub fn kernel_hint_timeout_ms(epoch: u64, max_age: u64, now: u64) -> u64 {
    let end = epoch
        .saturating_add(1)
        .saturating_mul(native::EPOCH_SECS)
        .saturating_add(max_age)
        .saturating_add(KERNEL_HINT_SLACK_SECS);
    end.saturating_sub(now).saturating_mul(1000)
}

/// Native key hints for every epoch inside the timestamp window, so a packet's client is found
/// with one hash lookup (DESIGN.md: no per-client trial decryption).
///
/// Flat on purpose: with 10 000 clients and 13 epochs the index holds 130 000 hints, so each
/// costs one 16-byte bucket, not a heap allocation. Two (client, epoch) pairs sharing a 64-bit
/// hint are a freak event; the extra ones go to `collisions`.
#[derive(Debug, Default)]
pub(super) struct HintIndex {
    /// hint → (client index, epoch).
    map: HashMap<u64, (u32, u32)>,
    /// Further candidates for a hint already in `map`.
    collisions: HashMap<u64, Vec<(u32, u32)>>,
    /// Epochs present, oldest first, with the hints each added.
    epochs: VecDeque<(u64, Vec<u64>)>,
}

impl HintIndex {
    pub(super) fn build(config: &Config, now: u64) -> HintIndex {
        let mut idx = HintIndex::default();
        idx.refresh(config, now);
        idx
    }

    /// Make the index cover exactly the epochs of the window around `now`: drop the epochs
    /// that left it at either end and add those that entered it at either end.
    ///
    /// Time normally moves forward by a second per call, so this adds or drops one epoch every
    /// ten minutes. A clock step is just a bigger move: forward, the old epochs all leave and
    /// the new window is built; backward, the newest epochs leave and the older ones are added
    /// in front. Either way the index matches `now` after one call (issue "security", item 6:
    /// a step back used to leave it empty until a reload).
    pub(super) fn refresh(&mut self, config: &Config, now: u64) {
        let window =
            native::epochs_within(now, config.server.max_age.max(native::SKEW_DIAGNOSIS_SECS));
        let (lo, hi) = (*window.start(), *window.end());
        let outside = |e: &(u64, Vec<u64>)| e.0 < lo || e.0 > hi;
        while self.epochs.front().is_some_and(outside) {
            if let Some((epoch, hints)) = self.epochs.pop_front() {
                self.remove_epoch(epoch, hints);
            }
        }
        while self.epochs.back().is_some_and(outside) {
            if let Some((epoch, hints)) = self.epochs.pop_back() {
                self.remove_epoch(epoch, hints);
            }
        }
        let natives = config
            .clients
            .iter()
            .filter(|c| matches!(c.credential, Credential::Native(_)))
            .count();
        // What is left is contiguous and inside [lo, hi]; if nothing is, build it all.
        let (front, back) = match (self.epochs.front(), self.epochs.back()) {
            (Some((f, _)), Some((b, _))) => (*f, *b),
            _ => (hi.saturating_add(1), hi),
        };
        let missing = front.saturating_sub(lo) + hi.saturating_sub(back);
        self.map.reserve(natives * missing as usize);
        for epoch in (lo..front).rev() {
            let hints = self.add_epoch(config, natives, epoch);
            self.epochs.push_front((epoch, hints));
        }
        for epoch in back.saturating_add(1)..=hi {
            let hints = self.add_epoch(config, natives, epoch);
            self.epochs.push_back((epoch, hints));
        }
    }

    /// Index every native client's hint for `epoch`; returns the hints added.
    fn add_epoch(&mut self, config: &Config, natives: usize, epoch: u64) -> Vec<u64> {
        let mut hints = Vec::with_capacity(natives);
        for (i, client) in config.clients.iter().enumerate() {
            if let Credential::Native(key) = &client.credential {
                let h = u64::from_be_bytes(native::hint(key, epoch));
                // Epochs are Unix time / 600: u32 lasts until the year 80 000.
                let entry = (i as u32, epoch as u32);
                match self.map.entry(h) {
                    Entry::Vacant(v) => {
                        v.insert(entry);
                    }
                    Entry::Occupied(_) => self.collisions.entry(h).or_default().push(entry),
                }
                hints.push(h);
            }
        }
        hints
    }

    fn remove_epoch(&mut self, epoch: u64, hints: Vec<u64>) {
        let epoch = epoch as u32;
        for h in hints {
            self.remove(h, epoch);
        }
    }

    fn remove(&mut self, h: u64, epoch: u32) {
        if let Some(extra) = self.collisions.get_mut(&h) {
            extra.retain(|&(_, e)| e != epoch);
            if self.map.get(&h).is_some_and(|&(_, e)| e == epoch) {
                match extra.pop() {
                    Some(next) => {
                        self.map.insert(h, next);
                    }
                    None => {
                        self.map.remove(&h);
                    }
                }
            }
            if extra.is_empty() {
                self.collisions.remove(&h);
            }
        } else if self.map.get(&h).is_some_and(|&(_, e)| e == epoch) {
            self.map.remove(&h);
        }
    }

    /// Every native client's hint for `epoch`: from the index when it holds the epoch, else
    /// computed (one HMAC per client).
    pub(super) fn hints_of_epoch(&self, config: &Config, epoch: u64) -> Vec<u64> {
        if let Some((_, hints)) = self.epochs.iter().find(|(e, _)| *e == epoch) {
            return hints.clone();
        }
        config
            .clients
            .iter()
            .filter_map(|c| match &c.credential {
                Credential::Native(key) => Some(u64::from_be_bytes(native::hint(key, epoch))),
                _ => None,
            })
            .collect()
    }

    /// The (client, epoch) pairs whose hint is `hint`.
    pub(super) fn get(
        &self,
        hint: &[u8; native::HINT_LEN],
    ) -> impl Iterator<Item = (u32, u32)> + '_ {
        let h = u64::from_be_bytes(*hint);
        let extra = if self.collisions.is_empty() {
            None
        } else {
            self.collisions.get(&h)
        };
        self.map
            .get(&h)
            .copied()
            .into_iter()
            .chain(extra.into_iter().flatten().copied())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len() + self.collisions.values().map(Vec::len).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tests::{engine, granted, knock, packet, NOW};
    use crate::policy::{Decision, Reason};

    #[test]
    fn hint_window_moves_with_time() {
        let mut e = engine();
        let later = NOW + 3 * 3600;
        assert_eq!(
            e.handle(&knock(1, later, 0), packet(), later).decision,
            Decision::Reject(Reason::UnknownKey)
        );
        e.tick(later, later);
        assert!(matches!(
            e.handle(&knock(1, later, 0), packet(), later).decision,
            Decision::Grant(_)
        ));
        assert!(
            e.hints.epochs.len() <= 14,
            "old epochs not dropped: {}",
            e.hints.epochs.len()
        );
        assert_eq!(
            e.hints.len(),
            2 * e.hints.epochs.len(),
            "one hint per native client and epoch"
        );
    }

    /// Issue "security", item 6: after the wall clock steps back by more than the hint window
    /// the native hint index must cover the new `now` at once, not only after a reload.
    #[test]
    fn hint_index_follows_clock_steps_in_both_directions() {
        let mut e = engine();
        for (i, now) in [
            NOW - 2 * 3600,       // back, further than the window
            NOW - 2 * 3600 - 601, // back across one epoch boundary
            NOW + 5 * 86_400,     // forward, far
            NOW,                  // back, far
        ]
        .into_iter()
        .enumerate()
        {
            e.tick(now, i as u64);
            let out = e.handle(&knock(1, now, i as u8 * 10), packet(), now);
            assert!(granted(&out), "step to {now}: {:?}", out.decision);
            let window = native::epochs_within(now, native::SKEW_DIAGNOSIS_SECS);
            let epochs: Vec<u64> = e.hints.epochs.iter().map(|(ep, _)| *ep).collect();
            assert_eq!(epochs, window.collect::<Vec<_>>(), "step to {now}");
            assert_eq!(e.hints.len(), 2 * epochs.len(), "step to {now}");
        }
    }

    /// Issue 11: every timestamp the engine can grant at `now` (within `max_age`) has its
    /// epoch in the kernel window, written at least a minute before it was first needed; each
    /// element lives exactly until its epoch's last second is `max_age` old (+ 1 s of slack).
    #[test]
    fn kernel_window_covers_every_grantable_timestamp_and_no_more() {
        let e = 3_000_000u64; // an epoch
        assert_eq!(kernel_epochs(e * 600 + 300, 120), e..=e);
        assert_eq!(
            kernel_epochs(e * 600 + 420, 120),
            e..=e + 1,
            "next epoch, 60 s ahead"
        );
        assert_eq!(kernel_epochs(e * 600 + 50, 120), e - 1..=e);
        assert_eq!(kernel_hint_timeout_ms(e, 120, e * 600 + 300), 421_000);
        for max_age in [1, 120, 599, 600, 3600] {
            for now in e * 600 - 1300..e * 600 + 1300 {
                let w = kernel_epochs(now, max_age);
                let early = kernel_epochs(now - KERNEL_HINT_LEAD_SECS + 1, max_age);
                for t in [now - max_age, now, now + max_age] {
                    let ep = native::epoch_of(t);
                    assert!(
                        w.contains(&ep) && early.contains(&ep),
                        "{max_age} {now} {t}"
                    );
                    assert!(kernel_hint_timeout_ms(ep, max_age, now) > 0);
                }
                // The oldest epoch of the window still has a grantable second; an element
                // expires within the slack after its epoch's last grantable instant.
                let last = (w.start() + 1) * 600 - 1;
                assert!(last + max_age >= now, "{max_age} {now}");
                let dies = now * 1000 + kernel_hint_timeout_ms(*w.start(), max_age, now);
                assert_eq!(dies, (last + max_age + 2) * 1000);
            }
        }
    }

    /// Issue 11: the engine hands out the whole window at start (all native clients' hints),
    /// then only what enters the window, then the whole window again after a loss.
    #[test]
    fn kernel_hints_are_the_window_then_only_new_epochs() {
        let mut e = engine(); // two native clients, max_age 120
        let now = (NOW / 600) * 600 + 300;
        let all = e.kernel_hints(now, true);
        assert_eq!(all.len(), 2, "one epoch, two clients: {all:?}");
        let hint_of = |p: &[u8]| <[u8; 8]>::try_from(&p[1..9]).unwrap();
        for n in [1, 9] {
            let h = hint_of(&knock(n, now, 0));
            let ms = all.iter().find(|(k, _)| *k == h).map(|(_, ms)| *ms);
            assert_eq!(ms, Some(421_000), "client {n}");
        }
        assert!(e.kernel_hints(now + 1, false).is_empty());
        let ahead = now + 120; // 420 s into the epoch: the next one is 60 s away from needed
        e.tick(ahead, 1);
        let next = e.kernel_hints(ahead, false);
        let h = hint_of(&knock(1, (NOW / 600 + 1) * 600, 0));
        assert_eq!(next.len(), 2);
        assert!(next
            .iter()
            .any(|(k, ms)| *k == h && *ms == (600 + 120 + 1 + 180) * 1000));
        assert!(e.kernel_hints(ahead + 1, false).is_empty());
        e.kernel_hints_lost();
        assert_eq!(e.kernel_hints(ahead + 1, false).len(), 4);
        assert_eq!(e.kernel_hints(ahead + 1, true).len(), 4);
    }

    #[test]
    fn colliding_hints_keep_every_candidate_until_their_epoch_leaves() {
        let mut idx = HintIndex::default();
        let h = 0xfeed_u64;
        idx.map.insert(h, (0, 10));
        idx.collisions.insert(h, vec![(1, 10), (2, 11)]);
        let all = |idx: &HintIndex| {
            let mut v: Vec<_> = idx.get(&h.to_be_bytes()).collect();
            v.sort();
            v
        };
        assert_eq!(all(&idx), vec![(0, 10), (1, 10), (2, 11)]);
        idx.remove(h, 10);
        assert_eq!(all(&idx), vec![(2, 11)]);
        assert!(idx.collisions.is_empty());
        idx.remove(h, 11);
        assert_eq!(idx.len(), 0);
    }
}
