//! The states a connection went through and when it entered each, stored
//! compactly: a visit ends when the next one begins, so only the state and
//! the time it was entered are kept, inline for an ordinary life and on the
//! heap only for longer ones.
use crate::tcp::TcpState;

/// States kept per connection; a socket bouncing between states (possible
/// only with inconsistent input) must not grow without limit.
pub const MAX_VISITS: usize = 32;

/// Visits kept without a heap allocation: a whole ordinary life fits
/// (SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE; or SYN_RECV,
/// ESTABLISHED, CLOSE_WAIT, LAST_ACK, CLOSE). With 4, every orderly close
/// would allocate.
pub const INLINE: usize = 5;

/// One state the connection was in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateVisit {
    pub state: TcpState,
    /// None when the connection was already in this state when first seen.
    pub entered_ns: Option<u64>,
    /// None while still in it.
    pub left_ns: Option<u64>,
}

impl StateVisit {
    /// None when either end is unknown, or when the timestamps are out of
    /// order.
    pub fn duration_ns(&self) -> Option<u64> {
        self.left_ns?.checked_sub(self.entered_ns?)
    }
}

/// The states visited, oldest first, the current one last. Only the first
/// visit can have an unknown start (the state a socket was in when first
/// seen); when more than [`MAX_VISITS`] were seen, the oldest after the
/// first are dropped and the first keeps the time it was really left.
#[derive(Clone, Debug)]
pub struct Visits {
    repr: Repr,
}

#[derive(Clone, Debug)]
enum Repr {
    Inline {
        len: u8,
        first_entered_known: bool,
        states: [TcpState; INLINE],
        /// The first one is meaningless when `first_entered_known` is false.
        entered: [u64; INLINE],
    },
    Spilled(Box<Spilled>),
}

#[derive(Clone, Debug)]
struct Spilled {
    visits: Vec<(TcpState, u64)>,
    first_entered_known: bool,
    /// Set once visits were dropped: the first visit's successor is gone.
    first_left_ns: Option<u64>,
    dropped: u32,
}

impl Default for Visits {
    fn default() -> Self {
        Self::new()
    }
}

impl Visits {
    /// No visit yet.
    pub fn new() -> Self {
        Visits {
            repr: Repr::Inline {
                len: 0,
                first_entered_known: false,
                states: [TcpState::Close; INLINE],
                entered: [0; INLINE],
            },
        }
    }

    /// One visit to `state`, entered at `entered_ns` when known.
    pub fn starting(state: TcpState, entered_ns: Option<u64>) -> Self {
        let mut visits = Self::new();
        visits.push_raw(state, entered_ns.unwrap_or(0));
        visits.set_first_entered_known(entered_ns.is_some());
        visits
    }

    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Inline { len, .. } => usize::from(*len),
            Repr::Spilled(s) => s.visits.len(),
        }
    }

    /// Visits dropped to stay within [`MAX_VISITS`].
    pub fn dropped(&self) -> u32 {
        match &self.repr {
            Repr::Inline { .. } => 0,
            Repr::Spilled(s) => s.dropped,
        }
    }

    /// Whether the visits live on the heap.
    pub fn spilled(&self) -> bool {
        matches!(self.repr, Repr::Spilled(_))
    }

    pub fn get(&self, i: usize) -> Option<StateVisit> {
        let (state, entered) = self.raw(i)?;
        let entered_ns = (i > 0 || self.first_entered_known()).then_some(entered);
        let left_ns = match self.first_left_ns() {
            Some(left) if i == 0 => Some(left),
            _ => self.raw(i + 1).map(|(_, next_entered)| next_entered),
        };
        Some(StateVisit {
            state,
            entered_ns,
            left_ns,
        })
    }

    pub fn last(&self) -> Option<StateVisit> {
        self.get(self.len().checked_sub(1)?)
    }

    pub fn iter(&self) -> Iter<'_> {
        Iter {
            visits: self,
            front: 0,
            back: self.len(),
        }
    }

    /// Enters `state` at `entered_ns`, which leaves the current state then.
    pub fn push(&mut self, state: TcpState, entered_ns: u64) {
        if self.len() >= MAX_VISITS {
            self.drop_second();
        }
        let first = self.len() == 0;
        self.push_raw(state, entered_ns);
        if first {
            self.set_first_entered_known(true);
        }
    }

    /// Fills in when the first state was entered (a late birth).
    pub fn set_first_entered(&mut self, entered_ns: u64) {
        match &mut self.repr {
            Repr::Inline { len: 0, .. } => return,
            Repr::Inline { entered, .. } => entered[0] = entered_ns,
            Repr::Spilled(s) => match s.visits.first_mut() {
                Some(first) => first.1 = entered_ns,
                None => return,
            },
        }
        self.set_first_entered_known(true);
    }

    fn raw(&self, i: usize) -> Option<(TcpState, u64)> {
        match &self.repr {
            Repr::Inline {
                len,
                states,
                entered,
                ..
            } => (i < usize::from(*len)).then(|| (states[i], entered[i])),
            Repr::Spilled(s) => s.visits.get(i).copied(),
        }
    }

    fn first_entered_known(&self) -> bool {
        match &self.repr {
            Repr::Inline {
                first_entered_known,
                ..
            } => *first_entered_known,
            Repr::Spilled(s) => s.first_entered_known,
        }
    }

    fn set_first_entered_known(&mut self, known: bool) {
        match &mut self.repr {
            Repr::Inline {
                first_entered_known,
                ..
            } => *first_entered_known = known,
            Repr::Spilled(s) => s.first_entered_known = known,
        }
    }

    fn first_left_ns(&self) -> Option<u64> {
        match &self.repr {
            Repr::Inline { .. } => None,
            Repr::Spilled(s) => s.first_left_ns,
        }
    }

    fn push_raw(&mut self, state: TcpState, entered_ns: u64) {
        match &mut self.repr {
            Repr::Inline {
                len,
                states,
                entered,
                ..
            } if usize::from(*len) < INLINE => {
                states[usize::from(*len)] = state;
                entered[usize::from(*len)] = entered_ns;
                *len += 1;
            }
            Repr::Inline { .. } => {
                self.spill();
                self.push_raw(state, entered_ns);
            }
            Repr::Spilled(s) => s.visits.push((state, entered_ns)),
        }
    }

    fn spill(&mut self) {
        let mut visits = Vec::with_capacity(2 * INLINE);
        visits.extend((0..self.len()).filter_map(|i| self.raw(i)));
        self.repr = Repr::Spilled(Box::new(Spilled {
            visits,
            first_entered_known: self.first_entered_known(),
            first_left_ns: None,
            dropped: 0,
        }));
    }

    /// Drops the oldest visit after the first (only called when full, so
    /// spilled); the first remembers when it was left.
    fn drop_second(&mut self) {
        if !self.spilled() {
            self.spill();
        }
        let Repr::Spilled(s) = &mut self.repr else {
            return;
        };
        if s.visits.len() < 2 {
            return;
        }
        let (_, second_entered) = s.visits.remove(1);
        s.first_left_ns.get_or_insert(second_entered);
        s.dropped = s.dropped.saturating_add(1);
    }
}

/// Equal when they hold the same visits, however stored.
impl PartialEq for Visits {
    fn eq(&self, other: &Self) -> bool {
        self.dropped() == other.dropped() && self.iter().eq(other.iter())
    }
}

/// The visits in order, as [`StateVisit`]s.
pub struct Iter<'a> {
    visits: &'a Visits,
    front: usize,
    back: usize,
}

impl Iterator for Iter<'_> {
    type Item = StateVisit;

    fn next(&mut self) -> Option<StateVisit> {
        if self.front >= self.back {
            return None;
        }
        self.front += 1;
        self.visits.get(self.front - 1)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.back - self.front;
        (n, Some(n))
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<StateVisit> {
        if self.front >= self.back {
            return None;
        }
        self.back -= 1;
        self.visits.get(self.back)
    }
}

impl ExactSizeIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use TcpState::*;

    /// The straightforward representation the compact one must match:
    /// every visit with both ends, dropping the oldest after the first.
    #[derive(Default)]
    struct Reference {
        visits: Vec<StateVisit>,
        dropped: u32,
    }

    impl Reference {
        fn push(&mut self, state: TcpState, ts: u64) {
            if let Some(last) = self.visits.last_mut() {
                last.left_ns = Some(ts);
            }
            if self.visits.len() >= MAX_VISITS {
                self.visits.remove(1);
                self.dropped += 1;
            }
            self.visits.push(StateVisit {
                state,
                entered_ns: Some(ts),
                left_ns: None,
            });
        }
    }

    fn assert_same(visits: &Visits, reference: &Reference) {
        assert_eq!(visits.iter().collect::<Vec<_>>(), reference.visits);
        assert_eq!(
            visits.iter().rev().collect::<Vec<_>>(),
            reference.visits.iter().rev().copied().collect::<Vec<_>>()
        );
        assert_eq!(visits.len(), reference.visits.len());
        assert_eq!(visits.iter().len(), reference.visits.len());
        assert_eq!(visits.dropped(), reference.dropped);
        assert_eq!(visits.last(), reference.visits.last().copied());
    }

    #[test]
    fn durations_are_unknown_rather_than_negative() {
        let visit = StateVisit {
            state: TcpState::Established,
            entered_ns: Some(10),
            left_ns: Some(5),
        };
        assert_eq!(visit.duration_ns(), None);
    }

    #[test]
    fn an_ordinary_life_stays_inline() {
        let mut visits = Visits::new();
        let mut reference = Reference::default();
        for (i, state) in [SynSent, Established, FinWait1, FinWait2, Close]
            .into_iter()
            .enumerate()
        {
            visits.push(state, 10 * i as u64);
            reference.push(state, 10 * i as u64);
            assert_same(&visits, &reference);
        }
        assert!(!visits.spilled());
        assert_eq!(visits.get(1).unwrap().duration_ns(), Some(10));
    }

    #[test]
    fn longer_lives_spill_and_keep_every_visit() {
        let mut visits = Visits::new();
        let mut reference = Reference::default();
        for i in 0..(MAX_VISITS as u64) {
            let state = if i % 2 == 0 { Established } else { CloseWait };
            visits.push(state, 100 + i);
            reference.push(state, 100 + i);
            assert_same(&visits, &reference);
        }
        assert!(visits.spilled());
        assert_eq!(visits.dropped(), 0);
    }

    #[test]
    fn many_visits_drop_the_oldest_after_the_first() {
        let mut visits = Visits::starting(Established, None);
        let mut reference = Reference::default();
        reference.visits.push(StateVisit {
            state: Established,
            entered_ns: None,
            left_ns: None,
        });
        for i in 0..1_000u64 {
            let state = TcpState::ALL[(i % 12) as usize];
            visits.push(state, 1_000 + i * 7);
            reference.push(state, 1_000 + i * 7);
            assert_same(&visits, &reference);
            assert!(visits.len() <= MAX_VISITS);
        }
        assert_eq!(visits.dropped(), 1_001 - MAX_VISITS as u32);
        // The first visit still says when it was really left.
        assert_eq!(visits.get(0).unwrap().left_ns, Some(1_000));
        assert_eq!(visits.get(0).unwrap().entered_ns, None);
    }

    #[test]
    fn the_first_start_can_be_unknown_and_filled_in_later() {
        let mut visits = Visits::starting(SynRecv, None);
        visits.push(Established, 50);
        assert_eq!(visits.get(0).unwrap().entered_ns, None);
        assert_eq!(visits.get(0).unwrap().duration_ns(), None);
        visits.set_first_entered(20);
        assert_eq!(visits.get(0).unwrap().entered_ns, Some(20));
        assert_eq!(visits.get(0).unwrap().duration_ns(), Some(30));
        // Spilled, the same.
        let mut long = Visits::starting(Established, None);
        for i in 0..10 {
            long.push(CloseWait, 100 + i);
        }
        assert!(long.spilled());
        assert_eq!(long.get(0).unwrap().entered_ns, None);
        long.set_first_entered(7);
        assert_eq!(long.get(0).unwrap().entered_ns, Some(7));
        assert_eq!(long.get(0).unwrap().left_ns, Some(100));
    }

    #[test]
    fn equality_ignores_how_they_are_stored() {
        let mut inline = Visits::new();
        inline.push(SynSent, 1);
        let mut spilled = Visits::new();
        spilled.push(SynSent, 1);
        spilled.spill();
        assert!(spilled.spilled() && !inline.spilled());
        assert_eq!(inline, spilled);
        spilled.push(Established, 2);
        assert_ne!(inline, spilled);
        assert!(Visits::new().len() == 0 && Visits::new().last().is_none());
    }
}
