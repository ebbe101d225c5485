//! The addresses of sockets that finished recently, and when.
//!
//! A transition that arrives after its socket's CLOSE (from another CPU, in
//! a later batch) would otherwise look like the first transition of a new
//! socket and leave a phantom connection behind. Anything older than the
//! CLOSE at its address belongs to the finished socket.
use foldhash::{HashMap, HashMapExt};
use std::collections::VecDeque;

#[derive(Debug)]
pub(crate) struct RecentlyClosed {
    ended: HashMap<u64, u64>,
    /// Oldest first, for forgetting; an address closed again appears again
    /// and is forgotten when its newest entry is.
    order: VecDeque<(u64, u64)>,
    capacity: usize,
}

impl RecentlyClosed {
    pub fn new(capacity: usize) -> Self {
        Self {
            ended: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    pub fn insert(&mut self, skaddr: u64, ended_ns: u64) {
        if self.capacity == 0 {
            return;
        }
        match self.ended.get_mut(&skaddr) {
            Some(latest) if *latest >= ended_ns => return,
            Some(latest) => *latest = ended_ns,
            None => {
                self.ended.insert(skaddr, ended_ns);
            }
        }
        self.order.push_back((skaddr, ended_ns));
        while self.order.len() > self.capacity {
            let Some((addr, ended)) = self.order.pop_front() else {
                break;
            };
            if self.ended.get(&addr) == Some(&ended) {
                self.ended.remove(&addr);
            }
        }
    }

    /// Whether a record at `ts` for `skaddr` predates the last CLOSE there.
    pub fn predates_close(&self, skaddr: u64, ts: u64) -> bool {
        self.ended.get(&skaddr).is_some_and(|&ended| ts < ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_latest_close_within_capacity() {
        let mut recent = RecentlyClosed::new(2);
        recent.insert(1, 100);
        assert!(recent.predates_close(1, 99));
        assert!(!recent.predates_close(1, 100));
        recent.insert(1, 50);
        assert!(recent.predates_close(1, 99), "the latest close counts");
        recent.insert(2, 10);
        recent.insert(3, 10);
        assert!(!recent.predates_close(1, 0), "forgotten");
        assert!(recent.predates_close(3, 0));
        assert!(recent.ended.len() <= 2 && recent.order.len() <= 2);
    }
}
