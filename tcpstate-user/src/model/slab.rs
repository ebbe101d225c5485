//! Dense storage addressed by small indexes: values live in one vector, and
//! a freed slot is reused by the next insertion, so indexes stay valid while
//! their value lives and an index costs 4 bytes wherever it is kept.
use std::mem;

#[derive(Debug)]
pub struct Slab<T> {
    slots: Vec<Option<T>>,
    /// Indexes of the empty slots.
    free: Vec<u32>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Stores `value`; returns its index, valid until it is removed.
    ///
    /// Panics past `u32::MAX` values (the model bounds its tables far below).
    pub fn insert(&mut self, value: T) -> u32 {
        if let Some(index) = self.free.pop() {
            self.slots[index as usize] = Some(value);
            return index;
        }
        let index = u32::try_from(self.slots.len()).expect("slab indexes fit in u32");
        self.slots.push(Some(value));
        index
    }

    pub fn remove(&mut self, index: u32) -> Option<T> {
        let value = mem::take(self.slots.get_mut(index as usize)?)?;
        self.free.push(index);
        Some(value)
    }

    pub fn get(&self, index: u32) -> Option<&T> {
        self.slots.get(index as usize)?.as_ref()
    }

    pub fn get_mut(&mut self, index: u32) -> Option<&mut T> {
        self.slots.get_mut(index as usize)?.as_mut()
    }

    /// The values with their indexes, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| Some((i as u32, slot.as_ref()?)))
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().filter_map(Option::as_mut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn freed_slots_are_reused_and_indexes_stay_valid() {
        let mut slab = Slab::default();
        let a = slab.insert("a");
        let b = slab.insert("b");
        let c = slab.insert("c");
        assert_eq!(slab.remove(b), Some("b"));
        assert_eq!(slab.remove(b), None, "removed twice");
        assert_eq!(slab.get(b), None);
        let d = slab.insert("d");
        assert_eq!(d, b, "the free slot is reused");
        assert_eq!(
            (slab.get(a), slab.get(c), slab.get(d)),
            (Some(&"a"), Some(&"c"), Some(&"d"))
        );
        assert_eq!(slab.len(), 3);
        assert_eq!(slab.get(99), None);
        assert_eq!(slab.remove(99), None);
    }

    #[test]
    fn matches_a_map_under_churn() {
        // A deterministic mix of inserts and removals, checked against a map.
        let mut slab = Slab::default();
        let mut reference: BTreeMap<u32, u64> = BTreeMap::new();
        let mut x = 12_345u64;
        for step in 0..20_000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            if (x >> 33).is_multiple_of(3) && !reference.is_empty() {
                let nth = (x >> 40) as usize % reference.len();
                let index = *reference.keys().nth(nth).unwrap();
                assert_eq!(slab.remove(index), reference.remove(&index));
            } else {
                let index = slab.insert(step);
                assert!(reference.insert(index, step).is_none(), "index in use");
            }
            assert_eq!(slab.len(), reference.len());
        }
        let held: BTreeMap<u32, u64> = slab.iter().map(|(i, v)| (i, *v)).collect();
        assert_eq!(held, reference);
        for v in slab.values_mut() {
            *v += 1;
        }
        assert!(slab.iter().all(|(i, v)| *v == reference[&i] + 1));
        // Never more slots than were live at once.
        let peak = slab.slots.len();
        assert!(peak <= 20_000 && slab.free.len() == peak - reference.len());
    }
}
