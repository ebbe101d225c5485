//! Values shared by many connections (owners, listeners), stored once.
//!
//! A process owns thousands of sockets and a listener has as many children:
//! each connection holds a shared pointer (8 bytes) instead of its own copy
//! (40 to 100 bytes). Values no connection holds any more are forgotten.
use foldhash::{HashMap, HashMapExt};
use std::{hash::Hash, sync::Arc};

/// Distinct values kept before the first sweep for unused ones.
const FIRST_SWEEP: usize = 64;

#[derive(Debug)]
pub struct Interner<T> {
    shared: HashMap<T, Arc<T>>,
    /// Sweep for values only the table holds when it reaches this size:
    /// twice what was in use at the last sweep, so sweeps cost O(1) per
    /// value interned and the table stays within twice what is in use.
    sweep_at: usize,
    /// The value interned last: consecutive connections often share one
    /// (children of one listener), and comparing is cheaper than hashing.
    last: Option<Arc<T>>,
}

impl<T: Copy + Eq + Hash> Default for Interner<T> {
    fn default() -> Self {
        Self {
            shared: HashMap::new(),
            sweep_at: FIRST_SWEEP,
            last: None,
        }
    }
}

impl<T: Copy + Eq + Hash> Interner<T> {
    /// The shared copy of `value`.
    pub fn intern(&mut self, value: T) -> Arc<T> {
        if let Some(last) = self.last.as_ref().filter(|last| ***last == value) {
            return Arc::clone(last);
        }
        let shared = match self.shared.get(&value) {
            Some(shared) => Arc::clone(shared),
            None => {
                if self.shared.len() >= self.sweep_at {
                    self.sweep();
                }
                let shared = Arc::new(value);
                self.shared.insert(value, Arc::clone(&shared));
                shared
            }
        };
        self.last = Some(Arc::clone(&shared));
        shared
    }

    /// Distinct values held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shared.len()
    }

    /// Forgets the values nothing else holds.
    fn sweep(&mut self) {
        self.shared
            .retain(|_, shared| Arc::strong_count(shared) > 1);
        self.sweep_at = (2 * self.shared.len()).max(FIRST_SWEEP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_copy() {
        let mut interner = Interner::default();
        let a = interner.intern((1u32, 2u64));
        let b = interner.intern((1u32, 2u64));
        let c = interner.intern((1u32, 3u64));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!((*a, *c), ((1, 2), (1, 3)));
        assert_eq!(interner.len(), 2);
    }

    #[test]
    fn unused_values_are_forgotten_and_used_ones_kept() {
        let mut interner = Interner::default();
        let kept: Vec<Arc<u64>> = (0..10).map(|v| interner.intern(v)).collect();
        // Many values, each dropped at once: the table must not grow with
        // them.
        for v in 1_000..100_000u64 {
            drop(interner.intern(v));
            assert!(
                interner.len() <= 2 * kept.len() + FIRST_SWEEP,
                "{}",
                interner.len()
            );
        }
        // The ones still held survive every sweep and are still shared.
        for (v, shared) in kept.iter().enumerate() {
            assert!(Arc::ptr_eq(shared, &interner.intern(v as u64)));
        }
    }

    #[test]
    fn a_forgotten_value_comes_back_equal() {
        let mut interner = Interner::default();
        let first = interner.intern(7u8);
        drop(first);
        for v in 100..=255u8 {
            interner.intern(v);
        }
        assert_eq!(*interner.intern(7u8), 7);
    }
}
