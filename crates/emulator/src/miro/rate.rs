//! Miro's credit budget per token: fixed one-minute windows aligned to minute boundaries.

use std::collections::HashMap;
use std::sync::Mutex;

use super::config::RateLimit;
use crate::time::UnixMs;

/// The limit reported when no rate limit is configured.
const UNLIMITED_CREDITS: u64 = 1_000_000_000_000;

/// What the `X-RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RateStatus {
    pub limit: u64,
    pub remaining: u64,
    /// UNIX epoch seconds when the window resets.
    pub reset_epoch_secs: i64,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Charge {
    Charged(RateStatus),
    /// Over budget: nothing charged.
    Limited {
        status: RateStatus,
        retry_after_secs: u64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    minute: i64,
    spent: u64,
}

#[derive(Debug)]
pub(super) struct CreditBuckets {
    limit: u64,
    enforced: bool,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// Tokens whose budget someone else spent, until when ([`CreditBuckets::exhaust`]).
    exhausted: Mutex<HashMap<String, UnixMs>>,
}

fn minute_of(now: UnixMs) -> i64 {
    now.0.div_euclid(60_000)
}

impl CreditBuckets {
    pub(super) fn new(rate: Option<RateLimit>) -> Self {
        CreditBuckets {
            limit: rate.map_or(UNLIMITED_CREDITS, |r| r.credits_per_minute),
            enforced: rate.is_some(),
            buckets: Mutex::new(HashMap::new()),
            exhausted: Mutex::new(HashMap::new()),
        }
    }

    /// Another client of the same user and app (Miro's budget is per user per app) has
    /// spent the token's whole budget, and keeps it spent until `until`: every call with
    /// `token` is refused before then, with nothing remaining and the reset at `until`.
    pub(super) fn exhaust(&self, token: &str, until: UnixMs) {
        self.exhausted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_owned(), until);
    }

    /// While `token`'s budget is exhausted by someone else: its status (nothing left, the
    /// reset at the end of the exhaustion, in whole seconds rounded up) and the seconds
    /// to wait.
    fn exhausted_status(&self, token: &str, now: UnixMs) -> Option<(RateStatus, u64)> {
        let mut exhausted = self.exhausted.lock().unwrap_or_else(|e| e.into_inner());
        let until = *exhausted.get(token)?;
        if now >= until {
            exhausted.remove(token);
            return None;
        }
        let status = RateStatus {
            limit: self.limit,
            remaining: 0,
            reset_epoch_secs: (until.0 + 999).div_euclid(1000),
        };
        let wait_secs = ((until.0 - now.0 + 999) / 1000).max(1).unsigned_abs();
        Some((status, wait_secs))
    }

    fn status(&self, spent: u64, minute: i64) -> RateStatus {
        RateStatus {
            limit: self.limit,
            remaining: self.limit.saturating_sub(spent),
            reset_epoch_secs: (minute + 1) * 60,
        }
    }

    /// The budget of a token (or of an unknown caller) without charging anything.
    pub(super) fn peek(&self, token: Option<&str>, now: UnixMs) -> RateStatus {
        if let Some((status, _)) = token.and_then(|t| self.exhausted_status(t, now)) {
            return status;
        }
        let minute = minute_of(now);
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let spent = token
            .and_then(|t| buckets.get(t))
            .filter(|b| b.minute == minute)
            .map_or(0, |b| b.spent);
        self.status(spent, minute)
    }

    /// Charges `cost` credits to `token`, unless that would exceed what is left this minute.
    pub(super) fn charge(&self, token: &str, cost: u64, now: UnixMs) -> Charge {
        if let Some((status, retry_after_secs)) = self.exhausted_status(token, now) {
            return Charge::Limited {
                status,
                retry_after_secs,
            };
        }
        let minute = minute_of(now);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets
            .entry(token.to_owned())
            .or_insert(Bucket { minute, spent: 0 });
        if bucket.minute != minute {
            *bucket = Bucket { minute, spent: 0 };
        }
        if self.enforced && bucket.spent.saturating_add(cost) > self.limit {
            let status = self.status(bucket.spent, minute);
            let retry_after_ms = (minute + 1) * 60_000 - now.0;
            let retry_after_secs = ((retry_after_ms + 999) / 1000).max(1).unsigned_abs();
            return Charge::Limited {
                status,
                retry_after_secs,
            };
        }
        bucket.spent = bucket.spent.saturating_add(cost);
        Charge::Charged(self.status(bucket.spent, minute))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_until_the_budget_is_spent_then_resets_next_minute() {
        let b = CreditBuckets::new(Some(RateLimit {
            credits_per_minute: 250,
            retry_after_header: true,
        }));
        let t = UnixMs(120_000 + 45_500); // 45.5 s into a minute
        let reset = 180;
        assert_eq!(
            b.charge("a", 100, t),
            Charge::Charged(RateStatus {
                limit: 250,
                remaining: 150,
                reset_epoch_secs: reset
            })
        );
        assert_eq!(
            b.charge("a", 100, t),
            Charge::Charged(RateStatus {
                limit: 250,
                remaining: 50,
                reset_epoch_secs: reset
            })
        );
        assert_eq!(
            b.charge("a", 100, t),
            Charge::Limited {
                status: RateStatus {
                    limit: 250,
                    remaining: 50,
                    reset_epoch_secs: reset
                },
                retry_after_secs: 15
            }
        );
        assert_eq!(
            b.charge("a", 50, t),
            Charge::Charged(RateStatus {
                limit: 250,
                remaining: 0,
                reset_epoch_secs: reset
            })
        );
        assert_eq!(b.peek(Some("b"), t).remaining, 250, "budgets are per token");
        assert_eq!(
            b.charge("a", 100, UnixMs(180_000)),
            Charge::Charged(RateStatus {
                limit: 250,
                remaining: 150,
                reset_epoch_secs: 240
            })
        );
    }

    #[test]
    fn unlimited_never_limits() {
        let b = CreditBuckets::new(None);
        for _ in 0..1000 {
            assert!(matches!(b.charge("a", 2000, UnixMs(0)), Charge::Charged(_)));
        }
    }

    #[test]
    fn a_budget_spent_by_another_client_refuses_every_call_until_its_reset() {
        let b = CreditBuckets::new(Some(RateLimit {
            credits_per_minute: 100_000,
            retry_after_header: false,
        }));
        let t = UnixMs(600_000 + 10_250);
        b.exhaust("a", UnixMs(t.0 + 20_500));
        let refused = Charge::Limited {
            status: RateStatus {
                limit: 100_000,
                remaining: 0,
                reset_epoch_secs: 631,
            },
            retry_after_secs: 21,
        };
        assert_eq!(b.charge("a", 100, t), refused);
        assert_eq!(b.peek(Some("a"), t).remaining, 0);
        // Another token (another user or app) keeps its own budget.
        assert!(matches!(b.charge("b", 100, t), Charge::Charged(_)));
        // Nothing was charged while refused; from the reset on, calls are served again.
        assert!(matches!(
            b.charge("a", 100, UnixMs(t.0 + 20_499)),
            Charge::Limited { .. }
        ));
        assert_eq!(
            b.charge("a", 100, UnixMs(t.0 + 20_500)),
            Charge::Charged(RateStatus {
                limit: 100_000,
                remaining: 99_900,
                reset_epoch_secs: 660,
            })
        );
    }
}
