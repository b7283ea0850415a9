//! Readiness: a pure function of what the collectors and delivery tasks last reported.
//!
//! A source is ready when its last poll cycle completed within
//! `READY_POLLS * poll_interval + SLACK` and it is not blocked by a permanent error; a
//! sink is ready unless it has been failing (with rows waiting) for longer than `SLACK`,
//! or at once when its failure is permanent.

use std::time::{Duration, Instant};

/// Poll intervals a source may go without completing a cycle.
pub const READY_POLLS: u32 = 3;
/// Added to the above for slow cycles (rate-limit waits up to 2 minutes), and the time
/// a sink may fail transiently before it is reported as not draining.
pub const SLACK: Duration = Duration::from_secs(120);

/// What a source last reported.
#[derive(Debug, Clone)]
pub struct SourceHealth {
    pub poll_interval: Duration,
    pub started: Instant,
    pub last_poll_completed: Option<Instant>,
    /// The last cycle's error (cleared by a completed cycle) and whether it is permanent.
    pub error: Option<(String, bool)>,
}

/// What a sink last reported.
#[derive(Debug, Clone, Default)]
pub struct SinkHealth {
    pub last_delivery: Option<Instant>,
    /// Since when deliveries fail without any acknowledged in between.
    pub failing_since: Option<Instant>,
    pub error: Option<(String, bool)>,
}

fn ago(d: Duration) -> String {
    format!("{}s ago", d.as_secs())
}

impl SourceHealth {
    pub fn new(poll_interval: Duration, started: Instant) -> Self {
        SourceHealth {
            poll_interval,
            started,
            last_poll_completed: None,
            error: None,
        }
    }

    /// Why the source is not ready, or `None` when it is.
    pub fn not_ready(&self, now: Instant) -> Option<String> {
        if let Some((message, true)) = &self.error {
            return Some(format!("blocked until fixed: {message}"));
        }
        let window = self.poll_interval * READY_POLLS + SLACK;
        let last_error = self
            .error
            .as_ref()
            .map(|(m, _)| format!("; last error: {m}"))
            .unwrap_or_default();
        match self.last_poll_completed {
            Some(t) if now.duration_since(t) <= window => None,
            Some(t) => Some(format!(
                "no poll completed for {} (last {}){last_error}",
                ago(window),
                ago(now.duration_since(t))
            )),
            None => Some(format!(
                "the first poll has not completed yet (started {}){last_error}",
                ago(now.duration_since(self.started))
            )),
        }
    }
}

impl SinkHealth {
    /// Why the sink is not draining its backlog, or `None` when it is.
    pub fn not_ready(&self, now: Instant) -> Option<String> {
        let since = self.failing_since?;
        let (message, permanent) = self.error.as_ref()?;
        if *permanent {
            Some(format!("blocked until fixed: {message}"))
        } else if now.duration_since(since) > SLACK {
            Some(format!(
                "failing for {}s: {message}",
                now.duration_since(since).as_secs()
            ))
        } else {
            None
        }
    }

    pub fn delivered(&mut self, now: Instant) {
        self.last_delivery = Some(now);
        self.failing_since = None;
        self.error = None;
    }

    pub fn failed(&mut self, now: Instant, message: &str, permanent: bool) {
        self.failing_since.get_or_insert(now);
        self.error = Some((message.to_string(), permanent));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_ready_after_a_recent_poll_and_not_when_blocked_or_stale() {
        let t0 = Instant::now();
        let mut s = SourceHealth::new(Duration::from_secs(30), t0);
        assert!(s.not_ready(t0).unwrap().contains("first poll"));
        s.last_poll_completed = Some(t0);
        assert_eq!(s.not_ready(t0 + Duration::from_secs(200)), None);
        let stale = s.not_ready(t0 + Duration::from_secs(211)).unwrap();
        assert!(stale.contains("no poll completed for 210s"), "{stale}");
        s.error = Some(("Miro rejected the token (401)".into(), true));
        let blocked = s.not_ready(t0).unwrap();
        assert!(
            blocked.starts_with("blocked until fixed: Miro rejected"),
            "{blocked}"
        );
        s.error = Some(("HTTP 503".into(), false));
        assert_eq!(s.not_ready(t0 + Duration::from_secs(10)), None);
        assert!(
            s.not_ready(t0 + Duration::from_secs(300))
                .unwrap()
                .contains("last error: HTTP 503")
        );
    }

    #[test]
    fn a_sink_is_not_ready_when_blocked_or_failing_for_long() {
        let t0 = Instant::now();
        let mut s = SinkHealth::default();
        assert_eq!(s.not_ready(t0), None);
        s.failed(t0, "503", false);
        assert_eq!(s.not_ready(t0 + Duration::from_secs(60)), None);
        s.failed(t0 + Duration::from_secs(60), "503 again", false);
        let m = s.not_ready(t0 + Duration::from_secs(121)).unwrap();
        assert!(m.contains("failing for 121s: 503 again"), "{m}");
        s.delivered(t0 + Duration::from_secs(122));
        assert_eq!(s.not_ready(t0 + Duration::from_secs(500)), None);
        s.failed(t0, "role missing", true);
        assert!(
            s.not_ready(t0)
                .unwrap()
                .contains("blocked until fixed: role missing")
        );
    }
}
