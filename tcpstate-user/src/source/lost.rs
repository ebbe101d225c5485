//! Why transitions were lost in the kernel, as the live source tells it.

/// Why transitions were lost in the kernel: each cause has its own remedy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LostCauses {
    /// The ring buffer had no room: the reader fell behind (a larger
    /// --ring-size or narrower filters help).
    pub ring_full: u64,
    /// The reserve failed with room left: the ring's lock was not taken
    /// (Linux 6.16+ gives up on a lock it finds deadlocked or held too long).
    pub ring_busy: u64,
    /// The kernel ran none of the programs for the transition: another
    /// tracing program was already running on that CPU.
    pub skipped: u64,
}

impl LostCauses {
    /// "3 ring full, 1 skipped by the kernel": the causes that happened.
    pub fn describe(&self) -> String {
        [
            (self.ring_full, "ring full"),
            (self.ring_busy, "ring lock busy"),
            (self.skipped, "skipped by the kernel"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect::<Vec<_>>()
        .join(", ")
    }

    /// What to do about them, for the warning shown while tracing.
    pub fn advice(&self) -> &'static str {
        if self.ring_full > 0 {
            "raise --ring-size, or narrow the filters"
        } else if self.ring_busy > 0 {
            "the ring buffer's lock gave up under contention; a larger ring does not help"
        } else {
            "another tracing program was running on that CPU when the tracepoint fired"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LostCauses;

    #[test]
    fn describe_names_only_the_causes_that_happened() {
        let causes = LostCauses {
            ring_full: 4,
            ring_busy: 0,
            skipped: 3,
        };
        assert_eq!(causes.describe(), "4 ring full, 3 skipped by the kernel");
        assert_eq!(LostCauses::default().describe(), "");
        let busy = LostCauses {
            ring_busy: 2,
            ..LostCauses::default()
        };
        assert_eq!(busy.describe(), "2 ring lock busy");
    }

    #[test]
    fn advice_follows_the_cause_a_larger_ring_would_help() {
        let full_and_busy = LostCauses {
            ring_full: 1,
            ring_busy: 5,
            skipped: 0,
        };
        assert!(full_and_busy.advice().contains("--ring-size"));
        let busy = LostCauses {
            ring_busy: 5,
            ..LostCauses::default()
        };
        assert!(
            !busy.advice().contains("raise --ring-size"),
            "{}",
            busy.advice()
        );
        let skipped = LostCauses {
            skipped: 1,
            ..LostCauses::default()
        };
        assert!(skipped.advice().contains("tracing program"));
    }
}
