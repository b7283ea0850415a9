//! One credit budget per Miro token, shared by every source that uses the token.
//!
//! Miro charges credits per call (audit logs 100, content logs 2000) against a per-minute
//! budget per token. `CreditBudget` keeps mirotrail within `share` of that budget over
//! any sliding minute (an exact log of the last minute's spending, bounded in size), and
//! also obeys what the server says: when `X-RateLimit-Remaining` is below the next call's
//! cost, or after a 429, callers wait for the reset.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(60);

/// The shared budget. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct CreditBudget {
    share: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The token's credits per minute (config, then `X-RateLimit-Limit`).
    limit_per_minute: u64,
    /// What we spent in the last minute, oldest first.
    spent: VecDeque<(Instant, u64)>,
    spent_total_in_window: u64,
    /// What the server last said is left, and until when that holds.
    server_remaining: Option<(u64, Instant)>,
    /// No calls before this instant (after a 429).
    paused_until: Option<Instant>,
    /// Until when the latest caller that had to wait for credits is waiting.
    waiting_until: Option<Instant>,
    credits_used_total: u64,
}

/// A snapshot for status output and metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetSnapshot {
    pub limit_per_minute: u64,
    pub allowance_per_minute: u64,
    pub spent_last_minute: u64,
    pub server_remaining: Option<u64>,
    pub credits_used_total: u64,
}

impl CreditBudget {
    pub fn new(limit_per_minute: u64, share: f64) -> Self {
        CreditBudget {
            share,
            state: Mutex::new(State {
                limit_per_minute,
                spent: VecDeque::new(),
                spent_total_in_window: 0,
                server_remaining: None,
                paused_until: None,
                waiting_until: None,
                credits_used_total: 0,
            }),
        }
    }

    /// How long a call of `cost` credits must wait now; zero means it was charged.
    fn try_acquire(&self, cost: u64, now: Instant) -> Duration {
        let mut s = self.state.lock().expect("budget lock");
        while let Some(&(at, c)) = s.spent.front() {
            if now.duration_since(at) >= WINDOW {
                s.spent.pop_front();
                s.spent_total_in_window -= c;
            } else {
                break;
            }
        }
        if let Some(until) = s.paused_until {
            if until > now {
                return until - now;
            }
            s.paused_until = None;
        }
        if let Some((remaining, until)) = s.server_remaining {
            if until <= now {
                s.server_remaining = None;
            } else if remaining < cost {
                return until - now;
            }
        }
        // A call costlier than the whole allowance still goes through alone.
        let allowance = self.allowance(s.limit_per_minute).max(cost);
        if s.spent_total_in_window + cost > allowance {
            // Wait until enough of the oldest spending leaves the window.
            let mut freed = 0;
            let need = s.spent_total_in_window + cost - allowance;
            for &(at, c) in &s.spent {
                freed += c;
                if freed >= need {
                    return (at + WINDOW)
                        .saturating_duration_since(now)
                        .max(Duration::from_millis(1));
                }
            }
            return Duration::from_millis(1);
        }
        s.spent.push_back((now, cost));
        s.spent_total_in_window += cost;
        s.credits_used_total += cost;
        if let Some((remaining, _)) = s.server_remaining.as_mut() {
            *remaining = remaining.saturating_sub(cost);
        }
        Duration::ZERO
    }

    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a share in (0, 1] of a u64 limit, floored: in [0, limit]"
    )]
    fn allowance(&self, limit: u64) -> u64 {
        ((limit as f64) * self.share).floor() as u64
    }

    /// Waits until a call of `cost` credits fits, then charges it.
    pub async fn acquire(&self, cost: u64) {
        loop {
            let wait = self.try_acquire(cost, Instant::now());
            if wait.is_zero() {
                return;
            }
            tracing::debug!(
                cost,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "waiting for Miro credits"
            );
            {
                let mut s = self.state.lock().expect("budget lock");
                let until = Instant::now() + wait;
                s.waiting_until = Some(s.waiting_until.map_or(until, |u| u.max(until)));
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Records the `X-RateLimit-*` headers of a response. `reset_in` is the time until
    /// `X-RateLimit-Reset`.
    pub fn observe(&self, limit: Option<u64>, remaining: Option<u64>, reset_in: Option<Duration>) {
        let mut s = self.state.lock().expect("budget lock");
        if let Some(limit) = limit.filter(|l| *l > 0) {
            s.limit_per_minute = limit;
        }
        if let Some(remaining) = remaining {
            let reset_in = reset_in.unwrap_or(WINDOW).min(WINDOW * 2);
            s.server_remaining = Some((remaining, Instant::now() + reset_in));
        }
    }

    /// After a 429: nobody calls before `wait` has passed.
    pub fn pause(&self, wait: Duration) {
        let mut s = self.state.lock().expect("budget lock");
        let until = Instant::now() + wait;
        s.paused_until = Some(s.paused_until.map_or(until, |u| u.max(until)));
    }

    /// How long callers still wait for credits (the share or Miro's budget to free up,
    /// or a pause after a 429), or `None` when nobody is waiting: for progress displays.
    pub fn waiting_for(&self) -> Option<Duration> {
        let s = self.state.lock().expect("budget lock");
        s.waiting_until
            .map(|u| u.saturating_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }

    pub fn snapshot(&self) -> BudgetSnapshot {
        let s = self.state.lock().expect("budget lock");
        BudgetSnapshot {
            limit_per_minute: s.limit_per_minute,
            allowance_per_minute: self.allowance(s.limit_per_minute),
            spent_last_minute: s.spent_total_in_window,
            server_remaining: s.server_remaining.map(|(r, _)| r),
            credits_used_total: s.credits_used_total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stays_within_the_share_over_any_minute() {
        let budget = CreditBudget::new(10_000, 0.5); // 5,000 credits per minute for us
        let start = Instant::now();
        let mut calls = Vec::new();
        for _ in 0..120 {
            budget.acquire(100).await;
            calls.push(Instant::now());
        }
        // Any sliding minute holds at most 50 calls of 100 credits.
        for (i, t) in calls.iter().enumerate() {
            let in_window = calls[i..]
                .iter()
                .filter(|u| u.duration_since(*t) < WINDOW)
                .count();
            assert!(
                in_window <= 50,
                "{in_window} calls within a minute of call {i}"
            );
        }
        // And it does not dawdle: 120 calls take a little over two minutes.
        let took = Instant::now() - start;
        assert!(
            took >= Duration::from_secs(120) && took <= Duration::from_secs(121),
            "{took:?}"
        );
        assert_eq!(budget.snapshot().credits_used_total, 12_000);
    }

    #[tokio::test(start_paused = true)]
    async fn audit_and_content_share_one_budget() {
        let budget = std::sync::Arc::new(CreditBudget::new(100_000, 0.5));
        let start = Instant::now();
        // 30 content calls (60,000) + 100 audit calls (10,000) = 70,000 > 50,000 a minute.
        let b = budget.clone();
        let content = tokio::spawn(async move {
            for _ in 0..30 {
                b.acquire(2000).await;
            }
        });
        for _ in 0..100 {
            budget.acquire(100).await;
        }
        content.await.unwrap();
        assert!(Instant::now() - start >= WINDOW);
    }

    #[tokio::test(start_paused = true)]
    async fn server_remaining_below_cost_waits_for_reset() {
        let budget = CreditBudget::new(100_000, 1.0);
        budget.observe(Some(100_000), Some(1500), Some(Duration::from_secs(20)));
        let start = Instant::now();
        budget.acquire(100).await; // fits in what the server says is left
        assert_eq!(Instant::now(), start);
        budget.acquire(2000).await; // does not: wait for the reset
        assert!(Instant::now() - start >= Duration::from_secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn pause_after_429_holds_everyone() {
        let budget = CreditBudget::new(100_000, 1.0);
        budget.pause(Duration::from_secs(9));
        let start = Instant::now();
        budget.acquire(100).await;
        assert!(Instant::now() - start >= Duration::from_secs(9));
    }

    #[tokio::test(start_paused = true)]
    async fn limit_header_changes_the_allowance() {
        let budget = CreditBudget::new(100_000, 0.5);
        budget.observe(Some(10_000), None, None);
        assert_eq!(budget.snapshot().allowance_per_minute, 5_000);
    }
}
