//! Which window a source reads next. Pure: a function of the checkpoint, the clock and
//! the policy, so it is tested without a server.
//!
//! Two kinds of window, both deduplicated by the store:
//! - a **poll** reads the new time `[watermark, now - settle_lag)`, reaching back
//!   `recent_overlap` before the watermark: an event that became visible up to
//!   `recent_overlap + settle_lag - poll_interval` after its timestamp is stored by the next
//!   poll after it appeared, and while a poll's events fit in one page this costs no
//!   request;
//! - a **late re-read** reads each slice of time once more when it is `overlap` old
//!   (`[reread_through, now - settle_lag - overlap)`), in batches of at least
//!   `overlap_every`: every event that became visible at most `overlap + settle_lag` after
//!   its timestamp is stored, for one extra read of each event instead of one per poll.
//!
//! Invariants: polls cover time without gaps (the watermark); late re-reads cover, without
//! gaps, all time up to `overlap` before the watermark (`reread_through` moves only when
//! a re-read window's last page is committed, in the same transaction, so a crash never
//! skips a re-read that was due); time that was first read when it was already `overlap`
//! old needs no late re-read and is skipped ([`reread_after_poll`]).

use std::time::Duration;

use crate::timefmt::UnixMs;

/// How windows are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowPolicy {
    /// Windows end this far before now: events reach the API after their timestamp.
    pub settle_lag: Duration,
    /// Each poll also re-reads this much before the watermark.
    pub recent_overlap: Duration,
    /// How late an event may become visible and still be caught: each slice of time is
    /// read once more when it is this old (none when not longer than `recent_overlap`).
    pub overlap: Duration,
    /// Longest window read in one go.
    pub max_window: Duration,
    /// A late re-read waits until at least this much time is due (zero: every poll).
    pub overlap_every: Duration,
}

impl WindowPolicy {
    /// Whether slices are re-read when `overlap` old.
    pub fn late_rereads(&self) -> bool {
        self.overlap > self.recent_overlap
    }
}

/// A window to read: `[from, to)`, and whether it is a late re-read (which moves
/// `reread_through`, not the watermark, when done).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextWindow {
    pub from: UnixMs,
    pub to: UnixMs,
    pub reread: bool,
}

/// The next window after a completed `watermark`, or `None` when there is nothing to read
/// yet. New time comes first; a late re-read comes when the source is caught up.
///
/// `polled` is when the window that ended at `watermark` started being read: a poll reaches
/// back `recent_overlap` only as far as that window was close to real time, so catching up
/// on old history re-reads nothing.
pub fn next_window(
    watermark: UnixMs,
    polled: UnixMs,
    reread_through: UnixMs,
    now: UnixMs,
    policy: &WindowPolicy,
) -> Option<NextWindow> {
    let end = now.minus(policy.settle_lag);
    if end > watermark {
        let from = polled
            .minus(policy.settle_lag)
            .minus(policy.recent_overlap)
            .clamp(watermark.minus(policy.recent_overlap), watermark);
        return Some(NextWindow {
            from,
            to: end.min(watermark.plus(policy.max_window)),
            reread: false,
        });
    }
    if !policy.late_rereads() {
        return None;
    }
    let due = watermark.min(end.minus(policy.overlap));
    if due <= reread_through || due.since(reread_through) < policy.overlap_every {
        return None;
    }
    Some(NextWindow {
        from: reread_through,
        to: due.min(reread_through.plus(policy.max_window)),
        reread: true,
    })
}

/// `reread_through` after the poll window `[from, to)`, read at `started`, completed: the
/// part of it that was already `overlap` old when read needs no late re-read, and is
/// skipped when the late re-reads had reached the window (a fresh store, a backfill-like
/// catch-up). Time still due before `from` keeps it where it is.
pub fn reread_after_poll(
    reread_through: UnixMs,
    from: UnixMs,
    to: UnixMs,
    started: UnixMs,
    policy: &WindowPolicy,
) -> UnixMs {
    if reread_through < from {
        return reread_through;
    }
    let old_when_read = started.minus(policy.settle_lag).minus(policy.overlap);
    reread_through.max(to.min(old_when_read))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIN: i64 = 60_000;

    fn policy() -> WindowPolicy {
        WindowPolicy {
            settle_lag: Duration::from_secs(60),
            recent_overlap: Duration::from_secs(20),
            overlap: Duration::from_secs(15 * 60),
            max_window: Duration::from_secs(3600),
            overlap_every: Duration::from_secs(300),
        }
    }

    fn poll(from: i64, to: i64) -> Option<NextWindow> {
        Some(NextWindow {
            from: UnixMs(from),
            to: UnixMs(to),
            reread: false,
        })
    }

    #[test]
    fn a_poll_reads_new_time_and_the_recent_overlap() {
        // Last window ended at 100 min, read at 101 min (1 min settle lag); now 101.5 min.
        let w = next_window(
            UnixMs(100 * MIN),
            UnixMs(101 * MIN),
            UnixMs(80 * MIN),
            UnixMs(101 * MIN + 30_000),
            &policy(),
        );
        assert_eq!(w, poll(100 * MIN - 20_000, 100 * MIN + 30_000));
    }

    #[test]
    fn a_late_reread_comes_once_caught_up_and_a_batch_is_due() {
        let p = policy();
        let (wm, polled, now) = (UnixMs(100 * MIN), UnixMs(101 * MIN), UnixMs(101 * MIN));
        // Due up to now - lag - overlap = 85 min; re-read through 80 min: 5 minutes due.
        assert_eq!(
            next_window(wm, polled, UnixMs(80 * MIN), now, &p),
            Some(NextWindow {
                from: UnixMs(80 * MIN),
                to: UnixMs(85 * MIN),
                reread: true
            })
        );
        // Less than `overlap_every` due: nothing yet.
        assert_eq!(next_window(wm, polled, UnixMs(81 * MIN), now, &p), None);
        // With `overlap_every` zero, whatever is due.
        let every_poll = WindowPolicy {
            overlap_every: Duration::ZERO,
            ..p
        };
        assert_eq!(
            next_window(wm, polled, UnixMs(84 * MIN), now, &every_poll),
            Some(NextWindow {
                from: UnixMs(84 * MIN),
                to: UnixMs(85 * MIN),
                reread: true
            })
        );
        // New time first.
        assert!(
            !next_window(wm, polled, UnixMs(80 * MIN), UnixMs(102 * MIN), &p)
                .unwrap()
                .reread
        );
        // No late re-read when every poll re-reads the whole overlap.
        let short = WindowPolicy {
            recent_overlap: p.overlap,
            ..p
        };
        assert_eq!(next_window(wm, polled, UnixMs(80 * MIN), now, &short), None);
    }

    #[test]
    fn catching_up_on_old_history_rereads_nothing() {
        let p = policy();
        let (wm, polled, now) = (
            UnixMs(100 * MIN),
            UnixMs(10_000 * MIN),
            UnixMs(10_000 * MIN),
        );
        let w = next_window(wm, polled, wm, now, &p).unwrap();
        assert_eq!(Some(w), poll(100 * MIN, 160 * MIN));
        // The whole window was older than the overlap when read: no late re-read is due.
        assert_eq!(
            reread_after_poll(wm, w.from, w.to, now, &p),
            UnixMs(160 * MIN)
        );
        // A live poll's window was young: the re-reads stay where they were.
        assert_eq!(
            reread_after_poll(
                UnixMs(85 * MIN),
                UnixMs(100 * MIN),
                UnixMs(101 * MIN),
                UnixMs(102 * MIN),
                &p
            ),
            UnixMs(85 * MIN)
        );
        // Re-reads still due before the window are not skipped.
        assert_eq!(
            reread_after_poll(UnixMs(50 * MIN), wm, UnixMs(160 * MIN), now, &p),
            UnixMs(50 * MIN)
        );
    }

    #[test]
    fn nothing_to_do_before_the_settle_lag_passes() {
        let p = policy();
        let wm = UnixMs(100 * MIN);
        for now in [UnixMs(101 * MIN), UnixMs(100 * MIN)] {
            assert_eq!(
                next_window(wm, UnixMs(101 * MIN), UnixMs(86 * MIN), now, &p),
                None
            );
        }
    }

    #[test]
    fn zero_overlap_and_lag_are_the_sentinel_poller() {
        let p = WindowPolicy {
            settle_lag: Duration::ZERO,
            recent_overlap: Duration::ZERO,
            overlap: Duration::ZERO,
            max_window: Duration::from_secs(300),
            overlap_every: Duration::ZERO,
        };
        let w = next_window(
            UnixMs(100 * MIN),
            UnixMs(100 * MIN),
            UnixMs(100 * MIN),
            UnixMs(110 * MIN),
            &p,
        );
        assert_eq!(w, poll(100 * MIN, 105 * MIN));
        assert_eq!(
            next_window(
                UnixMs(110 * MIN),
                UnixMs(110 * MIN),
                UnixMs(0),
                UnixMs(110 * MIN),
                &p
            ),
            None
        );
    }

    /// Live polling every `poll` from `start`, each cycle reading windows until caught up
    /// (as `Collector::cycle` does): when the event at `t`, visible at `visible`, is
    /// first read in a window read after it became visible; `None`: never.
    fn stored_at(
        p: &WindowPolicy,
        poll: Duration,
        start: UnixMs,
        t: UnixMs,
        visible: UnixMs,
    ) -> Option<UnixMs> {
        let poll_ms = i64::try_from(poll.as_millis()).unwrap();
        let (mut watermark, mut polled, mut reread) = (start, start, start);
        let mut now = start;
        while now.0 < visible.0 + 4 * 3_600_000 {
            now = UnixMs(now.0 + poll_ms);
            while let Some(w) = next_window(watermark, polled, reread, now, p) {
                if now >= visible && w.from <= t && t < w.to {
                    return Some(now);
                }
                if w.reread {
                    reread = w.to;
                } else {
                    reread = reread_after_poll(reread, w.from, w.to, now, p);
                    watermark = w.to;
                    polled = now;
                }
            }
        }
        None
    }

    /// The guarantees the README states for the default settings: an audit event or a
    /// content item that reaches the API up to `overlap + settle_lag` after its timestamp
    /// is read after it appeared, wherever it falls between polls and re-reads; an audit
    /// event up to `recent_overlap + settle_lag - poll_interval` late, within
    /// `settle_lag + poll_interval` of appearing, like one on time.
    #[test]
    fn the_default_settings_catch_events_as_late_as_the_readme_says() {
        let config =
            crate::config::Config::from_toml("", std::path::Path::new("/tmp/mirotrail.toml"))
                .unwrap();
        for (kind, bound_s, quick_s) in [
            (crate::config::SourceKind::AuditLogs, 15 * 60 + 5_u64, 5_u64),
            (crate::config::SourceKind::ContentLogs, 21 * 60, 0),
        ] {
            let s = config.source(kind);
            let p = WindowPolicy {
                settle_lag: s.settle_lag,
                recent_overlap: s.recent_overlap,
                overlap: s.overlap,
                max_window: s.max_window,
                overlap_every: s.overlap_every,
            };
            assert_eq!(
                s.overlap + s.settle_lag,
                Duration::from_secs(bound_s),
                "{kind}"
            );
            assert_eq!(
                (s.recent_overlap + s.settle_lag).saturating_sub(s.poll_interval),
                Duration::from_secs(quick_s),
                "{kind}"
            );
            let start = UnixMs(10_000_000);
            let poll_ms = i64::try_from(s.poll_interval.as_millis()).unwrap();
            // Events at every offset within a few polls and a re-read batch, each as late
            // as the bound allows (and some less).
            let span = 3 * poll_ms + i64::try_from(s.overlap_every.as_millis()).unwrap();
            for offset in (0..span).step_by(997) {
                let t = UnixMs(start.0 + 600_000 + offset);
                for delay_ms in [
                    0,
                    i64::try_from(quick_s).unwrap() * 1000,
                    30_000,
                    300_000,
                    i64::try_from(bound_s).unwrap() * 1000,
                ] {
                    let visible = UnixMs(t.0 + delay_ms);
                    let at = stored_at(&p, s.poll_interval, start, t, visible);
                    assert!(
                        at.is_some(),
                        "{kind}: event at +{offset} ms, {delay_ms} ms late, never read after it appeared"
                    );
                    if delay_ms <= i64::try_from(quick_s).unwrap() * 1000 {
                        let lag_ms = i64::try_from(s.settle_lag.as_millis()).unwrap();
                        assert!(
                            at.unwrap().0 - visible.0 <= poll_ms + lag_ms,
                            "{kind}: event at +{offset} ms, {delay_ms} ms late, not read by the next poll"
                        );
                    }
                }
            }
        }
    }

    proptest! {
        /// Consecutive polls cover time without a gap, never reach past now - lag, reach
        /// back at most `recent_overlap`, and always advance; late re-reads cover time
        /// without a gap and never pass the watermark or now - lag - overlap.
        #[test]
        fn windows_cover_time_without_gaps(
            start in 0i64..10_000_000,
            steps in proptest::collection::vec(0i64..7_200_000, 1..40),
            lag_s in 0u64..600, recent_s in 0u64..120, overlap_s in 0u64..3600,
            max_s in 1u64..7200, every_s in 0u64..900,
        ) {
            let p = WindowPolicy {
                settle_lag: Duration::from_secs(lag_s),
                recent_overlap: Duration::from_secs(recent_s),
                overlap: Duration::from_secs(overlap_s),
                max_window: Duration::from_secs(max_s),
                overlap_every: Duration::from_secs(every_s),
            };
            let (mut watermark, mut polled, mut reread) = (UnixMs(start), UnixMs(start), UnixMs(start));
            let mut now = UnixMs(start);
            for step in steps {
                now = UnixMs(now.0 + step);
                let mut windows = 0;
                while let Some(w) = next_window(watermark, polled, reread, now, &p) {
                    windows += 1;
                    prop_assert!(windows < 1_000_000, "never caught up");
                    prop_assert!(w.to > w.from);
                    if w.reread {
                        prop_assert_eq!(w.from, reread, "gap in the late re-reads");
                        prop_assert!(w.to <= watermark);
                        prop_assert!(w.to <= now.minus(p.overlap).minus(p.settle_lag));
                        reread = w.to;
                    } else {
                        prop_assert!(w.from <= watermark, "gap: from {:?} after watermark {:?}", w.from, watermark);
                        prop_assert!(watermark.0 - w.from.0 <= i64::try_from(recent_s).unwrap() * 1000);
                        prop_assert!(w.to > watermark);
                        prop_assert!(w.to <= now.minus(p.settle_lag));
                        prop_assert!(w.to.0 - watermark.0 <= i64::try_from(max_s).unwrap() * 1000);
                        reread = reread_after_poll(reread, w.from, w.to, now, &p);
                        prop_assert!(reread <= w.to);
                        watermark = w.to;
                        polled = now;
                    }
                }
            }
        }

        /// Live polling every `poll`: every event that becomes visible at most
        /// `overlap + lag` after its timestamp is read after it became visible.
        #[test]
        fn late_events_within_the_bound_are_read_after_they_appear(
            poll_s in 1u64..120, lag_s in 0u64..120, recent_s in 0u64..60,
            overlap_s in 60u64..1800, every_s in 0u64..600,
            event_at in 0i64..3_000_000, delay_frac in 0.0f64..1.0,
        ) {
            let bound = i64::try_from(overlap_s + lag_s).unwrap();
            #[expect(clippy::cast_possible_truncation, reason = "a few seconds in milliseconds")]
            let delay_ms = (bound as f64 * 1000.0 * delay_frac) as i64;
            let p = WindowPolicy {
                settle_lag: Duration::from_secs(lag_s),
                recent_overlap: Duration::from_secs(recent_s),
                overlap: Duration::from_secs(overlap_s),
                max_window: Duration::from_secs(86_400),
                overlap_every: Duration::from_secs(every_s),
            };
            let t = UnixMs(10_000_000 + event_at);
            let visible = UnixMs(t.0 + delay_ms);
            let at = stored_at(&p, Duration::from_secs(poll_s), UnixMs(10_000_000), t, visible);
            prop_assert!(at.is_some(), "event at {t:?} visible at {visible:?} never read after it appeared");
        }
    }
}
