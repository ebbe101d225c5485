//! Transitions lost because the kernel ran neither set_state program, from
//! two counters that cannot be read at one instant.
//!
//! With the raw program attached, a transition is lost when the kernel
//! skipped the raw program for it (its `recursion_misses`) and no stand-in
//! answered for it (the `RESCUED` map): lost = misses - rescued. For one
//! hit the kernel counts the miss a moment before the stand-in counts the
//! rescue, and the two counters are read by two system calls. Read
//! rescued-then-misses, a skip between the reads showed as a loss (seen
//! 2026-12-07: "4 lost so far" during saturating churn, 1 at the end).
//! So the misses are read first: `misses - rescued` is then a lower bound
//! of the losses at that moment (the rescues of skips counted after the
//! first read only lower it), exact when no skip came between the reads,
//! as the rescue of a skip comes within the same tracepoint call, far
//! sooner than the next system call. A reported count only ever grows, and
//! a rise is reported once two readings in a row show it, so that a rescue
//! delayed past the reads (an interrupt storm) never shows as a loss.

/// One reading: the raw program's misses, then the rescued count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkipReading {
    pub misses: u64,
    pub rescued: u64,
}

impl SkipReading {
    /// At most the losses at the moment of the reading; exactly them when
    /// no skip came between the two reads.
    fn lower_bound(&self) -> u64 {
        self.misses.saturating_sub(self.rescued)
    }
}

/// The reported count of transitions the kernel skipped for both programs.
#[derive(Debug, Default)]
pub struct SkippedTally {
    reported: u64,
    previous: Option<u64>,
}

impl SkippedTally {
    /// Takes a reading; returns the count to report (never less than the
    /// last one).
    pub fn update(&mut self, reading: SkipReading) -> u64 {
        let now = reading.lower_bound();
        if let Some(previous) = self.previous {
            self.reported = self.reported.max(previous.min(now));
        }
        self.previous = Some(now);
        self.reported
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(misses: u64, rescued: u64) -> SkipReading {
        SkipReading { misses, rescued }
    }

    #[test]
    fn a_loss_is_reported_once_two_readings_show_it() {
        let mut tally = SkippedTally::default();
        assert_eq!(tally.update(reading(10, 10)), 0);
        assert_eq!(tally.update(reading(12, 11)), 0, "seen once: not yet");
        assert_eq!(tally.update(reading(12, 11)), 1);
        assert_eq!(tally.update(reading(15, 14)), 1);
    }

    #[test]
    fn a_rescue_late_for_one_reading_is_no_loss() {
        let mut tally = SkippedTally::default();
        tally.update(reading(5, 5));
        // The miss was counted, its rescue not yet.
        assert_eq!(tally.update(reading(6, 5)), 0);
        assert_eq!(tally.update(reading(6, 6)), 0);
        assert_eq!(tally.update(reading(6, 6)), 0);
    }

    #[test]
    fn rescues_of_skips_after_the_first_read_only_lower_the_count() {
        // 2 lost by the first read; 3 skips came before the second read
        // and were all rescued.
        let mut tally = SkippedTally::default();
        tally.update(reading(10, 8));
        assert_eq!(tally.update(reading(10, 11)), 0);
        assert_eq!(tally.update(reading(13, 11)), 0);
        assert_eq!(tally.update(reading(13, 11)), 2);
    }

    #[test]
    fn the_reported_count_never_goes_down() {
        let mut tally = SkippedTally::default();
        tally.update(reading(4, 1));
        assert_eq!(tally.update(reading(4, 1)), 3);
        // Hostile: counters that went backwards (a program replaced).
        assert_eq!(tally.update(reading(0, 9)), 3);
        assert_eq!(tally.update(reading(0, 9)), 3);
    }
}
