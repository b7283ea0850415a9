//! Which window a source reads next. Pure: a function of the checkpoint, the clock and
//! the policy, so it is tested without a server.

use std::time::Duration;

use crate::timefmt::UnixMs;

/// How windows are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowPolicy {
    /// Windows end this far before now: events reach the API after their timestamp.
    pub settle_lag: Duration,
    /// How late an event may become visible and still be caught by re-reading.
    pub overlap: Duration,
    /// Longest window read in one go.
    pub max_window: Duration,
}

/// The next window `[from, to)` after a completed watermark, or `None` when there is no
/// new time to read yet.
///
/// `polled` is when the window that ended at `watermark` started being read. Only events
/// that were not yet visible then can have been missed, so the re-read reaches back
/// `overlap` before the watermark only as far as that window was close to real time:
/// in live polling the full `overlap` is re-read, while catching up on old history (read
/// long after the fact) re-reads nothing.
pub fn next_window(
    watermark: UnixMs,
    polled: UnixMs,
    now: UnixMs,
    policy: &WindowPolicy,
) -> Option<(UnixMs, UnixMs)> {
    let end = now.minus(policy.settle_lag);
    if end <= watermark {
        return None;
    }
    let floor = watermark.minus(policy.overlap);
    let from = polled
        .minus(policy.settle_lag)
        .minus(policy.overlap)
        .clamp(floor, watermark);
    let to = end.min(watermark.plus(policy.max_window));
    Some((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIN: i64 = 60_000;

    fn policy() -> WindowPolicy {
        WindowPolicy {
            settle_lag: Duration::from_secs(60),
            overlap: Duration::from_secs(15 * 60),
            max_window: Duration::from_secs(3600),
        }
    }

    #[test]
    fn live_polling_rereads_the_full_overlap() {
        // Last window ended at 100 min, read at 101 min (1 min settle lag); now 101.5 min.
        let w = next_window(
            UnixMs(100 * MIN),
            UnixMs(101 * MIN),
            UnixMs(101 * MIN + 30_000),
            &policy(),
        );
        assert_eq!(w, Some((UnixMs(85 * MIN), UnixMs(100 * MIN + 30_000))));
    }

    #[test]
    fn catching_up_on_old_history_rereads_nothing() {
        let w = next_window(
            UnixMs(100 * MIN),
            UnixMs(10_000 * MIN),
            UnixMs(10_000 * MIN),
            &policy(),
        );
        assert_eq!(w, Some((UnixMs(100 * MIN), UnixMs(160 * MIN))));
    }

    #[test]
    fn nothing_to_do_before_the_settle_lag_passes() {
        assert_eq!(
            next_window(
                UnixMs(100 * MIN),
                UnixMs(101 * MIN),
                UnixMs(101 * MIN),
                &policy()
            ),
            None
        );
        assert_eq!(
            next_window(
                UnixMs(100 * MIN),
                UnixMs(101 * MIN),
                UnixMs(100 * MIN),
                &policy()
            ),
            None
        );
    }

    #[test]
    fn zero_overlap_and_lag_are_the_sentinel_poller() {
        let p = WindowPolicy {
            settle_lag: Duration::ZERO,
            overlap: Duration::ZERO,
            max_window: Duration::from_secs(300),
        };
        let w = next_window(UnixMs(100 * MIN), UnixMs(100 * MIN), UnixMs(110 * MIN), &p);
        assert_eq!(w, Some((UnixMs(100 * MIN), UnixMs(105 * MIN))));
    }

    proptest! {
        /// Consecutive windows cover time without a gap, never reach past now - lag,
        /// re-read at most `overlap`, and always advance.
        #[test]
        fn windows_cover_time_without_gaps(
            start in 0i64..10_000_000,
            steps in proptest::collection::vec(0i64..7_200_000, 1..40),
            lag_s in 0u64..600, overlap_s in 0u64..3600, max_s in 1u64..7200,
        ) {
            let p = WindowPolicy {
                settle_lag: Duration::from_secs(lag_s),
                overlap: Duration::from_secs(overlap_s),
                max_window: Duration::from_secs(max_s),
            };
            let mut watermark = UnixMs(start);
            let mut polled = UnixMs(start);
            let mut now = UnixMs(start);
            for step in steps {
                now = UnixMs(now.0 + step);
                if let Some((from, to)) = next_window(watermark, polled, now, &p) {
                    prop_assert!(from <= watermark, "gap: from {from:?} after watermark {watermark:?}");
                    prop_assert!(watermark.0 - from.0 <= overlap_s as i64 * 1000);
                    prop_assert!(to > watermark);
                    prop_assert!(to <= now.minus(p.settle_lag));
                    prop_assert!(to.0 - watermark.0 <= max_s as i64 * 1000);
                    watermark = to;
                    polled = now;
                }
            }
        }
    }
}
