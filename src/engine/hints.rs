//! The native key-hint index ([`HintIndex`]): which clients a native packet's key hint names.
//! Pure: the window of epochs it covers follows the `now` it is given.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use crate::config::{Config, Credential};
use crate::wire::native;

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
