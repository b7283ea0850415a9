//! The one retry loop of mirotrail's HTTP calls (Miro pages and token introspection,
//! Azure log uploads), its decision type and its backoff.
//!
//! Each side keeps the meaning of its own answers: a pure function there (Miro's
//! `miro::status::classify_status`, Azure's `sink::sentinel::upload::classify`) turns a
//! status and headers into a [`Decision`]; this module only decides how long to wait and
//! when to give up. It is hand-written on purpose: every request goes through the
//! caller's [`Exchange::acquire`] (Miro's credit budget), so no retry escapes it.
//!
//! Invariants: a transient failure is retried at most `Policy::max_retries` times, with
//! jittered exponential backoff; a 429 waits for what the server asked and counts apart
//! (bounded only when `Policy::max_throttled` says so); every wait ends early when the
//! caller's [`Exchange::sleep`] says it is shutting down.

use std::time::Duration;

/// What to do after one exchange. `F` is how an exchange ends for good (the side's own
/// verdict on an answer, or the loop's result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<F> {
    /// Retrying changes nothing: stop with this.
    Finish(F),
    /// Send again at once, not counted as a failure (the caller just fixed something,
    /// such as renewing a refused token).
    Again,
    /// The server is rate limiting (429): wait this long, then send again.
    Throttled { wait: Duration },
    /// A transient failure (5xx, timeouts, broken connections): back off and retry.
    Retry { reason: String },
}

/// How patient the loop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Transient failures retried before giving up.
    pub max_retries: u32,
    /// 429s waited out before giving up (`None`: wait them out forever).
    pub max_throttled: Option<u32>,
    /// The first backoff step (see [`backoff`]).
    pub backoff_base: Duration,
    /// The longest backoff step.
    pub backoff_cap: Duration,
}

/// Why the loop gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GiveUp {
    /// More than `max_retries` transient failures; `reason` is the last one.
    Failures { failures: u32, reason: String },
    /// More than `max_throttled` 429s; `wait` is what the last one asked for.
    Throttled {
        failures: u32,
        throttled: u32,
        wait: Duration,
    },
}

/// One kind of request, as the retry loop drives it.
// Every implementation is a concrete type whose futures the compiler sees through, so
// the missing `Send` bound on the trait's futures costs nothing.
#[allow(async_fn_in_trait)]
pub trait Exchange {
    type Output;
    type Error;

    /// Waits for what one request needs (Miro credits, an Azure token); `Err` stops
    /// the loop (shutting down, no token).
    async fn acquire(&mut self) -> Result<(), Self::Error>;

    /// Sends one request and decides what its answer means.
    async fn send(&mut self) -> Decision<Result<Self::Output, Self::Error>>;

    /// A 429 asked for `wait` (and the loop is not giving up): wait it out, or arrange
    /// for the next `acquire` to.
    async fn throttled(&mut self, wait: Duration) -> Result<(), Self::Error>;

    /// The `failures`-th transient failure will be retried after `wait` (log and count).
    fn retrying(&mut self, failures: u32, wait: Duration, reason: &str);

    /// Sleeps unless shutting down; `Err` stops the loop.
    async fn sleep(&mut self, wait: Duration) -> Result<(), Self::Error>;

    /// The error the loop ends with when it gives up.
    fn give_up(&mut self, why: GiveUp) -> Self::Error;
}

/// Runs `exchange` until it finishes, is stopped, or the `policy` gives up.
pub async fn run<X: Exchange>(policy: &Policy, exchange: &mut X) -> Result<X::Output, X::Error> {
    let mut failures: u32 = 0;
    let mut throttled: u32 = 0;
    loop {
        exchange.acquire().await?;
        match exchange.send().await {
            Decision::Finish(result) => return result,
            Decision::Again => {}
            Decision::Throttled { wait } => {
                throttled += 1;
                if policy.max_throttled.is_some_and(|max| throttled > max) {
                    return Err(exchange.give_up(GiveUp::Throttled {
                        failures,
                        throttled,
                        wait,
                    }));
                }
                exchange.throttled(wait).await?;
            }
            Decision::Retry { reason } => {
                failures += 1;
                if failures > policy.max_retries {
                    return Err(exchange.give_up(GiveUp::Failures { failures, reason }));
                }
                let wait = backoff(failures - 1, policy.backoff_base, policy.backoff_cap);
                exchange.retrying(failures, wait, &reason);
                exchange.sleep(wait).await?;
            }
        }
    }
}

/// Jittered exponential backoff for transient failures: full jitter over
/// `base * 2^attempt`, capped.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16));
    let ceiling = exp.min(cap);
    let jitter: f64 = rand::random();
    // Never less than half the ceiling, so retries do spread out.
    ceiling.mul_f64(0.5 + jitter * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        for attempt in 0..20 {
            let d = backoff(attempt, base, cap);
            assert!(d <= cap, "{attempt}: {d:?}");
            let ceiling = base.saturating_mul(1 << attempt.min(16)).min(cap);
            assert!(d >= ceiling / 2, "{attempt}: {d:?}");
        }
    }

    /// A scripted exchange: answers in order, records what the loop did.
    struct Script {
        answers: Vec<Decision<Result<u32, String>>>,
        sent: u32,
        slept: Vec<Duration>,
        throttled: Vec<Duration>,
        stop_sleeping: bool,
    }

    impl Script {
        fn new(mut answers: Vec<Decision<Result<u32, String>>>) -> Self {
            answers.reverse();
            Script {
                answers,
                sent: 0,
                slept: Vec::new(),
                throttled: Vec::new(),
                stop_sleeping: false,
            }
        }
    }

    impl Exchange for Script {
        type Output = u32;
        type Error = String;
        async fn acquire(&mut self) -> Result<(), String> {
            Ok(())
        }
        async fn send(&mut self) -> Decision<Result<u32, String>> {
            self.sent += 1;
            self.answers.pop().expect("no more answers")
        }
        async fn throttled(&mut self, wait: Duration) -> Result<(), String> {
            self.throttled.push(wait);
            Ok(())
        }
        fn retrying(&mut self, _failures: u32, _wait: Duration, _reason: &str) {}
        async fn sleep(&mut self, wait: Duration) -> Result<(), String> {
            self.slept.push(wait);
            if self.stop_sleeping {
                Err("stopped".into())
            } else {
                Ok(())
            }
        }
        fn give_up(&mut self, why: GiveUp) -> String {
            format!("{why:?}")
        }
    }

    const POLICY: Policy = Policy {
        max_retries: 2,
        max_throttled: Some(1),
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(15),
    };

    fn retry() -> Decision<Result<u32, String>> {
        Decision::Retry {
            reason: "503".into(),
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_up_to_the_limit() {
        let mut s = Script::new(vec![retry(), retry(), Decision::Finish(Ok(7))]);
        assert_eq!(run(&POLICY, &mut s).await, Ok(7));
        assert_eq!(s.sent, 3);
        assert_eq!(s.slept.len(), 2);
        assert!(s.slept.iter().all(|d| *d <= Duration::from_millis(15)));

        let mut s = Script::new(vec![retry(), retry(), retry()]);
        let err = run(&POLICY, &mut s).await.unwrap_err();
        assert!(err.contains("Failures { failures: 3"), "{err}");
    }

    #[tokio::test]
    async fn throttles_count_apart_and_again_is_free() {
        let wait = Duration::from_secs(3);
        let mut s = Script::new(vec![
            Decision::Again,
            Decision::Throttled { wait },
            retry(),
            Decision::Finish(Ok(1)),
        ]);
        assert_eq!(run(&POLICY, &mut s).await, Ok(1));
        assert_eq!(s.throttled, vec![wait]);

        let mut s = Script::new(vec![
            Decision::Throttled { wait },
            Decision::Throttled { wait },
        ]);
        let err = run(&POLICY, &mut s).await.unwrap_err();
        assert!(err.contains("throttled: 2"), "{err}");
    }

    #[tokio::test]
    async fn a_sleep_interrupted_by_shutdown_stops_the_loop() {
        let mut s = Script::new(vec![retry()]);
        s.stop_sleeping = true;
        assert_eq!(run(&POLICY, &mut s).await, Err("stopped".into()));
        assert_eq!(s.sent, 1);
    }
}
