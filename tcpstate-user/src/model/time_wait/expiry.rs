//! The order in which TIME_WAIT entries expire.
//!
//! Nearly every entry expires a fixed time after it was made, and entries
//! are made in time order: they arrive already sorted. Those go to the back
//! of a queue (O(1), and the queue is read in memory order when they
//! expire); the few that do not (an expiry moved by the peer's FIN, an
//! estimate) go to a tree. An entry removed early leaves its queue item
//! behind, recognised as stale by the caller's `is_current` and skipped.
use std::collections::{BTreeSet, VecDeque};

/// When an entry expires, its insertion sequence number (unique: ties go by
/// insertion) and where the entry is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExpiryKey {
    pub expires_ns: u64,
    pub seq: u64,
    pub slot: u32,
}

#[derive(Debug, Default)]
pub struct ExpiryOrder {
    /// Ascending; may hold stale keys.
    queue: VecDeque<ExpiryKey>,
    /// Keys that came out of order.
    tree: BTreeSet<ExpiryKey>,
    /// Stale keys in `queue` (an upper bound: some may have been skipped).
    stale: usize,
}

impl ExpiryOrder {
    pub fn insert(&mut self, key: ExpiryKey) {
        match self.queue.back() {
            Some(back) if *back >= key => {
                self.tree.insert(key);
            }
            _ => self.queue.push_back(key),
        }
    }

    /// Forgets `key`, which `is_current` must no longer accept.
    pub fn remove(&mut self, key: ExpiryKey, is_current: impl Fn(&ExpiryKey) -> bool) {
        if self.tree.remove(&key) {
            return;
        }
        self.stale += 1;
        if self.stale > self.queue.len() / 2 + 64 {
            self.queue.retain(|k| is_current(k));
            self.stale = 0;
        }
    }

    /// The key that expires first.
    pub fn first(&mut self, is_current: impl Fn(&ExpiryKey) -> bool) -> Option<ExpiryKey> {
        while let Some(front) = self.queue.front() {
            if is_current(front) {
                break;
            }
            self.queue.pop_front();
            self.stale = self.stale.saturating_sub(1);
        }
        match (self.queue.front(), self.tree.first()) {
            (Some(q), Some(t)) => Some(*q.min(t)),
            (q, t) => q.or(t).copied(),
        }
    }

    /// Every current key, soonest first.
    pub fn iter<'a>(
        &'a self,
        is_current: impl Fn(&ExpiryKey) -> bool + 'a,
    ) -> impl Iterator<Item = ExpiryKey> + 'a {
        Merge {
            queue: self.queue.iter().copied().filter(is_current).peekable(),
            tree: self.tree.iter().copied().peekable(),
        }
    }
}

/// Two ascending sequences as one.
struct Merge<A: Iterator<Item = ExpiryKey>, B: Iterator<Item = ExpiryKey>> {
    queue: std::iter::Peekable<A>,
    tree: std::iter::Peekable<B>,
}

impl<A: Iterator<Item = ExpiryKey>, B: Iterator<Item = ExpiryKey>> Iterator for Merge<A, B> {
    type Item = ExpiryKey;

    fn next(&mut self) -> Option<ExpiryKey> {
        match (self.queue.peek(), self.tree.peek()) {
            (Some(q), Some(t)) if t < q => self.tree.next(),
            (Some(_), _) => self.queue.next(),
            (None, _) => self.tree.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn key(expires_ns: u64, seq: u64) -> ExpiryKey {
        ExpiryKey {
            expires_ns,
            seq,
            slot: seq as u32,
        }
    }

    #[test]
    fn matches_a_sorted_set_under_mixed_order_and_removals() {
        let mut order = ExpiryOrder::default();
        // seq → key of what is current.
        let mut current: BTreeMap<u64, ExpiryKey> = BTreeMap::new();
        let mut x = 7u64;
        let mut now = 1_000u64;
        let mut out_of_order = 0;
        for seq in 0..30_000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            now += (x >> 60) % 3;
            match (x >> 40) % 10 {
                // Mostly in order, sometimes earlier (out of order).
                0..=5 => {
                    let expires = if (x >> 20).is_multiple_of(5) {
                        now - (x >> 50) % 500
                    } else {
                        now + 100
                    };
                    let k = key(expires, seq);
                    let in_tree = order.tree.len();
                    order.insert(k);
                    out_of_order += order.tree.len() - in_tree;
                    current.insert(seq, k);
                }
                6 | 7 if !current.is_empty() => {
                    let nth = (x >> 30) as usize % current.len();
                    let (&s, &k) = current.iter().nth(nth).unwrap();
                    current.remove(&s);
                    order.remove(k, |k| current.get(&k.seq) == Some(k));
                }
                _ => {
                    // Expire what is due.
                    while let Some(first) = order.first(|k| current.get(&k.seq) == Some(k)) {
                        let expected = current.values().min().copied();
                        assert_eq!(Some(first), expected);
                        if first.expires_ns > now {
                            break;
                        }
                        current.remove(&first.seq);
                        order.remove(first, |k| current.get(&k.seq) == Some(k));
                    }
                }
            }
            if seq % 1_000 == 0 {
                let all: Vec<ExpiryKey> = order.iter(|k| current.get(&k.seq) == Some(k)).collect();
                let mut expected: Vec<ExpiryKey> = current.values().copied().collect();
                expected.sort();
                assert_eq!(all, expected);
            }
            // Stale queue items stay bounded.
            assert!(
                order.queue.len() <= 2 * current.len() + 200,
                "{}",
                order.queue.len()
            );
        }
        assert!(
            out_of_order > 1_000,
            "the out-of-order path: {out_of_order}"
        );
    }

    #[test]
    fn ties_go_by_sequence() {
        let mut order = ExpiryOrder::default();
        order.insert(key(10, 2));
        order.insert(key(10, 1));
        order.insert(key(5, 3));
        let all: Vec<u64> = order.iter(|_| true).map(|k| k.seq).collect();
        assert_eq!(all, vec![3, 1, 2]);
        assert_eq!(order.first(|_| true).map(|k| k.seq), Some(3));
    }
}
