//! One page of a time window: which indices it holds and where the next page starts.
//!
//! Pure functions of the org, the query and `now`. Items not yet visible (`visible_at >
//! now`) are skipped; a page announces a next position only if a visible item remains.

use std::collections::HashSet;
use std::ops::Range;

use super::org::{MiroOrg, Stream};
use crate::time::UnixMs;

/// The content-log filters (`board_ids`, `emails`) and AI interaction log filters
/// (`object_ids`, `emails`); `None` = no filter on that field.
#[derive(Debug, Default)]
pub(super) struct ContentFilter {
    pub boards: Option<HashSet<usize>>,
    /// With `boards`: the organization itself is one of the wanted objects (AI
    /// interaction entries whose object is the organization).
    pub organization: bool,
    pub users: Option<HashSet<usize>>,
}

#[derive(Debug)]
pub(super) struct PageRequest<'a> {
    pub stream: Stream,
    pub from: UnixMs,
    pub to: UnixMs,
    pub descending: bool,
    pub limit: u32,
    /// From the cursor; `None` on the first page.
    pub position: Option<u64>,
    pub filter: Option<&'a ContentFilter>,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct Page {
    pub indices: Vec<u64>,
    /// Where the next page starts, if a visible item remains.
    pub next: Option<u64>,
}

/// The cursor's position does not belong to this window.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct PositionOutOfWindow;

fn matches(org: &MiroOrg, req: &PageRequest<'_>, now: UnixMs, i: u64) -> bool {
    if org.visible_at(req.stream, i) > now {
        return false;
    }
    let Some(filter) = req.filter else {
        return true;
    };
    let facts = org.filter_facts(req.stream, i);
    let board_ok = filter.boards.as_ref().is_none_or(|b| match facts.board {
        Some(board) => b.contains(&board),
        None => filter.organization,
    });
    let user_ok = filter
        .users
        .as_ref()
        .is_none_or(|u| facts.actor.is_some_and(|a| u.contains(&a)));
    board_ok && user_ok
}

/// The window's indices that can be visible at `now` (none lies after `now`).
fn servable(org: &MiroOrg, req: &PageRequest<'_>, now: UnixMs) -> (Range<u64>, u64) {
    let full = org.range(req.stream, req.from, req.to);
    let not_future = org.first_at_or_after(req.stream, UnixMs(now.0.saturating_add(1)));
    let end = full.end.min(not_future).max(full.start);
    (full, end)
}

pub(super) fn page(
    org: &MiroOrg,
    req: &PageRequest<'_>,
    now: UnixMs,
) -> Result<Page, PositionOutOfWindow> {
    let (full, end) = servable(org, req, now);
    if let Some(p) = req.position
        && !(full.start..=full.end).contains(&p)
    {
        return Err(PositionOutOfWindow);
    }
    let limit = req.limit as usize;
    let mut indices = Vec::with_capacity(limit.min(1024));
    let next = if req.descending {
        let mut i = req.position.unwrap_or(end).min(end);
        while i > full.start && indices.len() < limit {
            i -= 1;
            if matches(org, req, now, i) {
                indices.push(i);
            }
        }
        (full.start..i)
            .rev()
            .any(|j| matches(org, req, now, j))
            .then_some(i)
    } else {
        let mut i = req.position.unwrap_or(full.start);
        while i < end && indices.len() < limit {
            if matches(org, req, now, i) {
                indices.push(i);
            }
            i += 1;
        }
        (i..end).any(|j| matches(org, req, now, j)).then_some(i)
    };
    Ok(Page { indices, next })
}

#[cfg(test)]
mod tests {
    use super::super::config::{
        Faults, LastPageCursor, LateArrival, MiroEmulatorConfig, StreamShape,
    };
    use super::*;
    use std::time::Duration;

    fn org(count: u64, late_share: f64) -> MiroOrg {
        MiroOrg::new(&MiroEmulatorConfig {
            seed: 11,
            org_id: "1".into(),
            org_name: "O".into(),
            team_id: "2".into(),
            enterprise_guard: true,
            tokens: vec![],
            audit: StreamShape {
                count,
                start: UnixMs(0),
                end: UnixMs(100_000),
            },
            content: StreamShape {
                count,
                start: UnixMs(0),
                end: UnixMs(100_000),
            },
            ai: StreamShape {
                count,
                start: UnixMs(0),
                end: UnixMs(100_000),
            },
            late: LateArrival {
                share: late_share,
                max_delay: Duration::from_secs(20),
            },
            rate_limit: None,
            audit_max_limit: 500,
            last_page_cursor: LastPageCursor::Omit,
            audit_time_form: super::super::config::TimeForm::MillisPlus0000,
            content_time_form: super::super::config::TimeForm::MillisZ,
            faults: Faults::default(),
            scenarios: Vec::new(),
        })
    }

    fn all_pages(
        org: &MiroOrg,
        descending: bool,
        limit: u32,
        now: UnixMs,
        filter: Option<&ContentFilter>,
    ) -> Vec<u64> {
        let mut req = PageRequest {
            stream: Stream::Content,
            from: UnixMs(10_000),
            to: UnixMs(90_000),
            descending,
            limit,
            position: None,
            filter,
        };
        let mut out = vec![];
        loop {
            let p = page(org, &req, now).unwrap();
            assert!(p.indices.len() <= limit as usize);
            out.extend(p.indices);
            match p.next {
                Some(n) => req.position = Some(n),
                None => return out,
            }
        }
    }

    #[test]
    fn pages_cover_each_visible_item_once_in_order() {
        let org = org(1000, 0.3);
        let now = UnixMs(80_000);
        let expected: Vec<u64> = org
            .range(Stream::Content, UnixMs(10_000), UnixMs(90_000))
            .filter(|&i| org.visible_at(Stream::Content, i) <= now)
            .collect();
        assert!(expected.len() > 500);
        for limit in [1, 7, 100, 1000] {
            assert_eq!(
                all_pages(&org, false, limit, now, None),
                expected,
                "asc limit {limit}"
            );
            let mut desc = all_pages(&org, true, limit, now, None);
            desc.reverse();
            assert_eq!(desc, expected, "desc limit {limit}");
        }
    }

    #[test]
    fn filters_keep_only_matching_items() {
        let org = org(2000, 0.0);
        let board = org.content_facts(1234).board;
        let filter = ContentFilter {
            boards: Some(HashSet::from([board])),
            organization: false,
            users: None,
        };
        let got = all_pages(&org, false, 5, UnixMs(1_000_000), Some(&filter));
        let expected: Vec<u64> = (200..1800)
            .filter(|&i| org.content_facts(i).board == board)
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(got, expected);
        let nobody = ContentFilter {
            boards: None,
            organization: false,
            users: Some(HashSet::new()),
        };
        assert!(all_pages(&org, false, 5, UnixMs(1_000_000), Some(&nobody)).is_empty());
    }

    #[test]
    fn rejects_positions_outside_the_window() {
        let org = org(1000, 0.0);
        let req = PageRequest {
            stream: Stream::Audit,
            from: UnixMs(10_000),
            to: UnixMs(20_000),
            descending: false,
            limit: 10,
            position: Some(999),
            filter: None,
        };
        assert_eq!(
            page(&org, &req, UnixMs(1_000_000)),
            Err(PositionOutOfWindow)
        );
    }
}
