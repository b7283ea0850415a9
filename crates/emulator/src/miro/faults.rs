//! Which faults a request gets: a pure function of `(seed, request number, shares)`.

use std::time::Duration;

use super::config::Faults;
use super::hash::{chance, hash};

pub(super) const SERVER_ERROR: &str = "server_error";
pub(super) const SLOW: &str = "slow";
pub(super) const TRUNCATE: &str = "truncate";
pub(super) const HTML: &str = "html";
pub(super) const EXPIRE_CURSOR: &str = "expire_cursor";
pub(super) const REPEAT_CURSOR: &str = "repeat_cursor";
pub(super) const DUPLICATE_ITEM: &str = "duplicate_item";
pub(super) const THROTTLE: &str = "throttle";
pub(super) const STRAY_ITEMS: &str = "stray_items";
pub(super) const EMPTY_PAGE: &str = "empty_page";
pub(super) const OVERSIZED_CURSOR: &str = "oversized_cursor";
pub(super) const HOSTILE_ITEM: &str = "hostile_item";
pub(super) const CONFLICT: &str = "conflict";

/// The faults drawn for one request; the server applies those that fit the request and
/// counts exactly those.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct FaultPlan {
    pub slow: Option<Duration>,
    pub server_error: Option<u16>,
    pub html: bool,
    pub truncate: bool,
    pub expire_cursor: bool,
    pub repeat_cursor: bool,
    /// The hash that picks which item is repeated.
    pub duplicate_item: Option<u64>,
    /// A 429 regardless of the budget, with `Retry-After: 1`.
    pub throttle: bool,
    /// Items from outside the window added to the page, beyond its limit.
    pub stray_items: bool,
    /// An empty page whose (new) cursor points where the request started.
    pub empty_page: Option<u64>,
    /// A 409 (audit logs only).
    pub conflict: bool,
}

pub(super) fn plan(seed: u64, request_no: u64, faults: &Faults) -> FaultPlan {
    let h = |salt: u64| hash(&[seed, 0xFA_017, request_no, salt]);
    FaultPlan {
        slow: chance(h(1), faults.slow_share).then_some(faults.slow_delay),
        server_error: chance(h(2), faults.server_error_share)
            .then(|| [500, 502, 503, 504][(h(3) % 4) as usize]),
        html: chance(h(4), faults.html_share),
        truncate: chance(h(5), faults.truncate_share),
        expire_cursor: chance(h(6), faults.expire_cursor_share),
        repeat_cursor: chance(h(7), faults.repeat_cursor_share),
        duplicate_item: chance(h(8), faults.duplicate_item_share).then(|| h(9)),
        throttle: chance(h(10), faults.throttle_share),
        stray_items: chance(h(11), faults.stray_items_share),
        empty_page: chance(h(12), faults.empty_page_share).then(|| request_no % 0xFFFF + 1),
        conflict: chance(h(13), faults.conflict_share),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_zero_and_one_are_never_and_always_and_decisions_repeat() {
        assert_eq!(plan(1, 5, &Faults::default()), FaultPlan::default());
        let all = Faults {
            server_error_share: 1.0,
            slow_share: 1.0,
            slow_delay: Duration::from_millis(3),
            truncate_share: 1.0,
            html_share: 1.0,
            expire_cursor_share: 1.0,
            repeat_cursor_share: 1.0,
            duplicate_item_share: 1.0,
            throttle_share: 1.0,
            stray_items_share: 1.0,
            empty_page_share: 1.0,
            hostile_item_share: 1.0,
            conflict_share: 1.0,
            markup_in_names: true,
        };
        let p = plan(1, 5, &all);
        assert!(
            p.html
                && p.truncate
                && p.expire_cursor
                && p.repeat_cursor
                && p.throttle
                && p.stray_items
        );
        assert!(p.duplicate_item.is_some() && p.slow == Some(Duration::from_millis(3)));
        assert!(p.empty_page.is_some() && p.conflict);
        assert!(matches!(p.server_error, Some(500 | 502 | 503 | 504)));
        let half = Faults {
            server_error_share: 0.5,
            ..Faults::default()
        };
        let hits = (0..1000)
            .filter(|&n| plan(1, n, &half).server_error.is_some())
            .count();
        assert!((400..600).contains(&hits), "{hits}");
        assert_eq!(plan(9, 77, &half), plan(9, 77, &half));
    }
}
