//! Which live connection was updated least recently: the eviction order.
//!
//! Each update takes the next value of a 32-bit counter, stored in the
//! connection ([`Connection::update_stamp`], in what would otherwise be
//! padding; a u64 beside it took 8 bytes a slot). Before the counter would
//! wrap, the stamps are renumbered in the order they had, so the order
//! stays exact however long the model runs.
//!
//! [`Connection::update_stamp`]: super::Connection

#[derive(Debug)]
pub(crate) struct Recency {
    clock: u32,
    /// Renumber once the counter reaches this (tests lower it).
    limit: u32,
}

impl Default for Recency {
    fn default() -> Self {
        Self::with_limit(u32::MAX)
    }
}

impl Recency {
    pub(super) fn with_limit(limit: u32) -> Self {
        Self { clock: 0, limit }
    }

    /// The stamp of an update now: larger than every stamp given before.
    /// `stamps` gives every stamp in use, called only to renumber them.
    pub fn next<'a>(&mut self, stamps: impl FnOnce() -> Vec<&'a mut u32>) -> u32 {
        if self.clock >= self.limit {
            let mut stamps = stamps();
            stamps.sort_unstable_by_key(|stamp| **stamp);
            for (rank, stamp) in stamps.iter_mut().enumerate() {
                **stamp = rank as u32 + 1;
            }
            self.clock = u32::try_from(stamps.len())
                .ok()
                .filter(|&n| n < self.limit)
                .expect("fewer live connections than the update counter's range");
        }
        self.clock += 1;
        self.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots updated in a pseudo-random order, stamped by `recency`: the
    /// slots from least to most recently updated after each step.
    fn orders(mut recency: Recency, steps: u32) -> Vec<Vec<usize>> {
        let mut stamps = [0u32; 8];
        let mut x = 7u64;
        let mut seen = Vec::new();
        for step in 0..steps {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let slot = if step < 8 {
                step as usize
            } else {
                (x >> 40) as usize % 8
            };
            let stamp = recency.next(|| stamps.iter_mut().collect());
            stamps[slot] = stamp;
            let mut order: Vec<usize> = (0..8).collect();
            order.sort_by_key(|&s| stamps[s]);
            seen.push(order);
        }
        seen
    }

    #[test]
    fn the_order_survives_the_counter_renumbering_many_times() {
        let renumbering = orders(Recency::with_limit(12), 5_000);
        let wide = orders(Recency::default(), 5_000);
        assert_eq!(renumbering, wide);
    }

    #[test]
    fn stamps_grow_between_renumberings() {
        let mut r = Recency::with_limit(3);
        let mut a = 0;
        assert_eq!(r.next(Vec::new), 1);
        assert_eq!(r.next(Vec::new), 2);
        assert_eq!(r.next(Vec::new), 3);
        // Renumbered: one stamp in use, so the counter restarts after it.
        assert_eq!(r.next(|| vec![&mut a]), 2);
        assert_eq!(a, 1);
    }
}
