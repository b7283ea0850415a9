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
    /// Re-read the overlap at most this often (zero: every window).
    pub overlap_every: Duration,
}

/// The next window `[from, to)` after a completed watermark, or `None` when there is no
/// new time to read yet; and whether it re-reads the overlap (a sweep).
///
/// `polled` is when the window that ended at `watermark` started being read. Only events
/// that were not yet visible then can have been missed, so the re-read reaches back
/// `overlap` before the watermark only as far as that window was close to real time:
/// in live polling the full `overlap` is re-read, while catching up on old history (read
/// long after the fact) re-reads nothing. In live polling the overlap is re-read at most
/// every `overlap_every` (`last_sweep` is when it last was): an event that reaches the API
/// up to `overlap + settle_lag - overlap_every - poll interval` after its timestamp is
/// still caught, at a fraction of the requests of re-reading it on every poll.
pub fn next_window(
    watermark: UnixMs,
    polled: UnixMs,
    now: UnixMs,
    policy: &WindowPolicy,
    last_sweep: Option<UnixMs>,
) -> Option<(UnixMs, UnixMs, bool)> {
    let end = now.minus(policy.settle_lag);
    if end <= watermark {
        return None;
    }
    let floor = watermark.minus(policy.overlap);
    let mut from = polled
        .minus(policy.settle_lag)
        .minus(policy.overlap)
        .clamp(floor, watermark);
    let swept_recently = last_sweep.is_some_and(|s| now.since(s) < policy.overlap_every);
    if from < watermark && swept_recently {
        from = watermark;
    }
    let to = end.min(watermark.plus(policy.max_window));
    Some((from, to, from < watermark))
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
            overlap_every: Duration::ZERO,
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
            None,
        );
        assert_eq!(
            w,
            Some((UnixMs(85 * MIN), UnixMs(100 * MIN + 30_000), true))
        );
    }

    #[test]
    fn the_overlap_is_reread_at_most_every_overlap_every() {
        let p = WindowPolicy {
            overlap_every: Duration::from_secs(300),
            ..policy()
        };
        let (wm, polled, now) = (
            UnixMs(100 * MIN),
            UnixMs(101 * MIN),
            UnixMs(101 * MIN + 30_000),
        );
        // Swept 2 minutes ago: only new time.
        let w = next_window(wm, polled, now, &p, Some(UnixMs(99 * MIN)));
        assert_eq!(w, Some((wm, UnixMs(100 * MIN + 30_000), false)));
        // Swept 6 minutes ago, or never: the full overlap.
        let w = next_window(wm, polled, now, &p, Some(UnixMs(95 * MIN)));
        assert_eq!(
            w,
            Some((UnixMs(85 * MIN), UnixMs(100 * MIN + 30_000), true))
        );
        assert!(next_window(wm, polled, now, &p, None).unwrap().2);
    }

    #[test]
    fn catching_up_on_old_history_rereads_nothing() {
        let w = next_window(
            UnixMs(100 * MIN),
            UnixMs(10_000 * MIN),
            UnixMs(10_000 * MIN),
            &policy(),
            None,
        );
        assert_eq!(w, Some((UnixMs(100 * MIN), UnixMs(160 * MIN), false)));
    }

    #[test]
    fn nothing_to_do_before_the_settle_lag_passes() {
        let p = policy();
        assert_eq!(
            next_window(
                UnixMs(100 * MIN),
                UnixMs(101 * MIN),
                UnixMs(101 * MIN),
                &p,
                None
            ),
            None
        );
        assert_eq!(
            next_window(
                UnixMs(100 * MIN),
                UnixMs(101 * MIN),
                UnixMs(100 * MIN),
                &p,
                None
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
            overlap_every: Duration::ZERO,
        };
        let w = next_window(
            UnixMs(100 * MIN),
            UnixMs(100 * MIN),
            UnixMs(110 * MIN),
            &p,
            None,
        );
        assert_eq!(w, Some((UnixMs(100 * MIN), UnixMs(105 * MIN), false)));
    }

    /// Live polling every `poll` ms from `start`: whether the event at `t`, visible at
    /// `visible`, lies in a window read after it became visible.
    fn caught(p: &WindowPolicy, poll: Duration, start: UnixMs, t: UnixMs, visible: UnixMs) -> bool {
        let poll_ms = i64::try_from(poll.as_millis()).unwrap();
        let (mut watermark, mut polled, mut now) = (start, start, start);
        let mut last_sweep = None;
        while now.0 < visible.0 + 4 * 3_600_000 {
            now = UnixMs(now.0 + poll_ms);
            if let Some((from, to, sweep)) = next_window(watermark, polled, now, p, last_sweep) {
                if now >= visible && from <= t && t < to {
                    return true;
                }
                if sweep {
                    last_sweep = Some(now);
                }
                watermark = to;
                polled = now;
            }
        }
        false
    }

    /// The guarantee the README states for the default settings: an audit event that
    /// reaches the API up to 13m55s after its timestamp, a content item up to 11 minutes,
    /// is read after it appeared, wherever it falls between polls and sweeps.
    #[test]
    fn the_default_settings_catch_events_as_late_as_the_readme_says() {
        let config =
            crate::config::Config::from_toml("", std::path::Path::new("/tmp/mirotrail.toml"))
                .unwrap();
        for (kind, bound_s) in [
            (crate::config::SourceKind::AuditLogs, 13 * 60 + 55_u64),
            (crate::config::SourceKind::ContentLogs, 11 * 60),
        ] {
            let s = config.source(kind);
            let p = WindowPolicy {
                settle_lag: s.settle_lag,
                overlap: s.overlap,
                max_window: s.max_window,
                overlap_every: s.overlap_every,
            };
            let bound = s.overlap + s.settle_lag - s.overlap_every - s.poll_interval;
            assert_eq!(bound, Duration::from_secs(bound_s), "{kind}");
            let start = UnixMs(10_000_000);
            let poll_ms = i64::try_from(s.poll_interval.as_millis()).unwrap();
            // Events at every offset within a few polls and a sweep period, each as late
            // as the bound allows (and some less).
            let span = 3 * poll_ms + i64::try_from(s.overlap_every.as_millis()).unwrap();
            for offset in (0..span).step_by(997) {
                let t = UnixMs(start.0 + 600_000 + offset);
                for delay_ms in [
                    0,
                    4_000,
                    30_000,
                    300_000,
                    i64::try_from(bound_s).unwrap() * 1000,
                ] {
                    let visible = UnixMs(t.0 + delay_ms);
                    assert!(
                        caught(&p, s.poll_interval, start, t, visible),
                        "{kind}: event at +{offset} ms, {delay_ms} ms late, never read after it appeared"
                    );
                }
            }
        }
    }

    proptest! {
        /// Consecutive windows cover time without a gap, never reach past now - lag,
        /// re-read at most `overlap`, and always advance.
        #[test]
        fn windows_cover_time_without_gaps(
            start in 0i64..10_000_000,
            steps in proptest::collection::vec(0i64..7_200_000, 1..40),
            lag_s in 0u64..600, overlap_s in 0u64..3600, max_s in 1u64..7200, every_s in 0u64..900,
        ) {
            let p = WindowPolicy {
                settle_lag: Duration::from_secs(lag_s),
                overlap: Duration::from_secs(overlap_s),
                max_window: Duration::from_secs(max_s),
                overlap_every: Duration::from_secs(every_s),
            };
            let mut watermark = UnixMs(start);
            let mut polled = UnixMs(start);
            let mut now = UnixMs(start);
            let mut last_sweep = None;
            for step in steps {
                now = UnixMs(now.0 + step);
                if let Some((from, to, sweep)) = next_window(watermark, polled, now, &p, last_sweep) {
                    prop_assert!(from <= watermark, "gap: from {from:?} after watermark {watermark:?}");
                    prop_assert!(watermark.0 - from.0 <= i64::try_from(overlap_s).unwrap() * 1000);
                    prop_assert!(to > watermark);
                    prop_assert!(to <= now.minus(p.settle_lag));
                    prop_assert!(to.0 - watermark.0 <= i64::try_from(max_s).unwrap() * 1000);
                    prop_assert_eq!(sweep, from < watermark);
                    if sweep {
                        last_sweep = Some(now);
                    }
                    watermark = to;
                    polled = now;
                }
            }
        }

        /// Live polling every `poll` ms: every event that becomes visible at most
        /// `overlap + lag - overlap_every - poll` after its timestamp lies in a window read
        /// after it became visible.
        #[test]
        fn late_events_within_the_bound_are_read_after_they_appear(
            poll_s in 1u64..120, lag_s in 0u64..120, overlap_s in 60u64..1800, every_s in 0u64..600,
            event_at in 0i64..3_000_000, delay_frac in 0.0f64..1.0,
        ) {
            let slack = i64::try_from(overlap_s + lag_s).unwrap() - i64::try_from(every_s).unwrap() - i64::try_from(poll_s).unwrap();
            prop_assume!(slack > 0);
            #[expect(clippy::cast_possible_truncation, reason = "a few seconds in milliseconds")]
            let delay_ms = (slack as f64 * 1000.0 * delay_frac) as i64;
            let p = WindowPolicy {
                settle_lag: Duration::from_secs(lag_s),
                overlap: Duration::from_secs(overlap_s),
                max_window: Duration::from_secs(86_400),
                overlap_every: Duration::from_secs(every_s),
            };
            let t = UnixMs(10_000_000 + event_at);
            let visible = UnixMs(t.0 + delay_ms);
            let (mut watermark, mut polled, mut now) = (UnixMs(10_000_000), UnixMs(10_000_000), UnixMs(10_000_000));
            let mut last_sweep = None;
            let mut caught = false;
            while now.0 < t.0 + delay_ms + 4 * 3_600_000 && !caught {
                now = UnixMs(now.0 + i64::try_from(poll_s).unwrap() * 1000);
                if let Some((from, to, sweep)) = next_window(watermark, polled, now, &p, last_sweep) {
                    caught = now >= visible && from <= t && t < to;
                    if sweep {
                        last_sweep = Some(now);
                    }
                    watermark = to;
                    polled = now;
                }
            }
            prop_assert!(caught, "event at {t:?} visible at {visible:?} never read after it appeared");
        }
    }
}
