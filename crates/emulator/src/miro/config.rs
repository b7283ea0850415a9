//! The emulator's configuration: the organisation's shape, tokens, limits and faults.

use std::time::Duration;

use crate::time::UnixMs;

/// Everything the emulator serves follows from this (and the wall clock).
#[derive(Debug, Clone)]
pub struct MiroEmulatorConfig {
    /// Seeds every generated name, id, event and fault decision.
    pub seed: u64,
    /// The organisation id, e.g. `3074457345821141000`; content logs of any other org 404.
    pub org_id: String,
    pub org_name: String,
    /// The team the token's app is installed in (shown by `/v1/oauth-token`).
    pub team_id: String,
    /// `false` makes content and AI interaction logs answer 403.
    pub enterprise_guard: bool,
    pub tokens: Vec<EmulatedToken>,
    pub audit: StreamShape,
    pub content: StreamShape,
    /// AI interaction log entries, spread evenly by `storedAt` (the time the endpoint
    /// filters on); a late entry's `createdAt` lies its delay before its `storedAt`.
    pub ai: StreamShape,
    /// Audit events and content items: served only from `time + delay`. AI interaction
    /// entries: `createdAt = storedAt - delay` (stored late, served from `storedAt`).
    pub late: LateArrival,
    /// `None`: no limit (the headers are still sent, with a huge limit).
    pub rate_limit: Option<RateLimit>,
    /// The largest audit-log `limit` accepted (the documented maximum is uncertain).
    pub audit_max_limit: u32,
    /// How the last page says it is the last.
    pub last_page_cursor: LastPageCursor,
    /// How audit `createdAt` is written (Miro's own form by default).
    pub audit_time_form: TimeForm,
    /// How content `actionTime` is written.
    pub content_time_form: TimeForm,
    pub faults: Faults,
    /// Attacks injected into the organisation (`scenario.rs`); none by default.
    pub scenarios: Vec<super::Scenario>,
}

/// How an item's time is written. Every form names the same instant (to the
/// millisecond: extra fraction digits come from a hash and never round up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeForm {
    /// `2023-09-01T09:30:10.840+0000`: Miro's audit `createdAt` (its OpenAPI spec), an
    /// offset without the colon RFC 3339 wants.
    #[default]
    MillisPlus0000,
    /// `2023-09-01T09:30:10.840Z`
    MillisZ,
    /// `2023-09-01T09:30:10.840+00:00`
    MillisColonOffset,
    /// `2023-09-01T09:30:10Z` (only for instants on a whole second; others keep `.mmm`)
    NoFraction,
    /// `2023-09-01T09:30:10.840687Z`
    MicrosZ,
    /// `2023-09-01T15:00:10.840687123+05:30`: local time at a non-UTC offset, 9 digits.
    NanosAtOffset,
    /// Each item in one of the forms above, picked by a hash of the item.
    Mixed,
}

/// A bearer token the emulator accepts, with its scopes (`auditlogs:read`,
/// `contentlogs:export`, `aiinteractionlogs:read`).
#[derive(Debug, Clone)]
pub struct EmulatedToken {
    pub token: String,
    pub scopes: Vec<String>,
}

/// `count` events spread evenly over `[start, end)`.
#[derive(Debug, Clone, Copy)]
pub struct StreamShape {
    pub count: u64,
    pub start: UnixMs,
    pub end: UnixMs,
}

/// A `share` of events become visible only some time (up to `max_delay`) after their timestamp.
#[derive(Debug, Clone, Copy)]
pub struct LateArrival {
    pub share: f64,
    pub max_delay: Duration,
}

/// Miro's per-token credit budget, in fixed windows aligned to minute boundaries.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub credits_per_minute: u64,
    /// Send `Retry-After` (seconds) on 429; whether Miro does is uncertain.
    pub retry_after_header: bool,
}

/// How the last page of a listing signals the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LastPageCursor {
    /// No `cursor` field.
    #[default]
    Omit,
    /// `"cursor": ""`.
    Empty,
    /// `"cursor": null`.
    Null,
}

/// Injected faults, each a share of requests in `0.0..=1.0`, decided per request by a hash
/// of `(seed, request number)`. They never apply to `/v1/oauth-token`.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// 500/502/503/504 (picked by hash) with Miro's error JSON.
    pub server_error_share: f64,
    /// The response is delayed by `slow_delay`.
    pub slow_share: f64,
    pub slow_delay: Duration,
    /// Status 200, the JSON body cut in the middle.
    pub truncate_share: f64,
    /// Status 200 with an HTML error page (`text/html`).
    pub html_share: f64,
    /// A request carrying a cursor is rejected as expired (400).
    pub expire_cursor_share: f64,
    /// A request carrying a cursor gets its own cursor back (so the same items again).
    pub repeat_cursor_share: f64,
    /// A page repeats one of its items (same id twice).
    pub duplicate_item_share: f64,
    /// A 429 storm: the request is refused with 429 and `Retry-After: 1` whatever the
    /// budget says (as a gateway in front of Miro may do); nothing is charged.
    pub throttle_share: f64,
    /// A hostile page: one item from before the window and one from after it (possibly
    /// in the future) are added, so the page also exceeds its `limit`.
    pub stray_items_share: f64,
    /// A request carrying a cursor gets an empty page and a new cursor that points to the
    /// same place (a page that does not advance).
    pub empty_page_share: f64,
    /// Share of items (decided per item, so a re-read serves the same text) whose
    /// `details` (audit) or `state` (content) is hostile: nested 200 levels deep, with a
    /// float beyond f64 (`1e400`) and an integer beyond 2^64.
    pub hostile_item_share: f64,
    /// Audit logs only: 409 with Miro's error JSON. Miro documents 409 for this endpoint
    /// without saying when it happens; the emulator sends it as a refusal of one request.
    pub conflict_share: f64,
    /// Names people choose hold markup: every tenth user and board of the organisation
    /// (the busiest user among them) gets [`MARKUP_NAME_SUFFIX`] appended to its name, as
    /// an attacker who names their account or board may do. Read when the organisation
    /// is built (at start), not per request.
    pub markup_in_names: bool,
}

/// What `markup_in_names` appends to names: a script and an image whose error handler
/// both change the page title, so a page that runs either shows it.
pub const MARKUP_NAME_SUFFIX: &str = "<script>document.title='markup ran'</script><img src=x onerror=\"document.title='markup ran'\">";

impl MiroEmulatorConfig {
    /// A realistic small org for `mirotrail demo`: the last `days` days up to `now`, about
    /// `audit_count` audit events and `content_count` content items (and a fiftieth as many AI
    /// interaction entries), one token `token` with the three scopes, Enterprise Guard on, the real rate limit (100,000 credits/min), late share
    /// 2% with 30 s max delay, no faults.
    pub fn demo(now: UnixMs, days: u32, audit_count: u64, content_count: u64, token: &str) -> Self {
        let start = now.minus(Duration::from_secs(u64::from(days) * 86_400));
        MiroEmulatorConfig {
            seed: 0x6d69_726f_7472_6169,
            org_id: "3074457345821141000".to_owned(),
            org_name: "Northwind Traders".to_owned(),
            team_id: "3074457345821141077".to_owned(),
            enterprise_guard: true,
            tokens: vec![EmulatedToken {
                token: token.to_owned(),
                scopes: vec![
                    "auditlogs:read".to_owned(),
                    "contentlogs:export".to_owned(),
                    "aiinteractionlogs:read".to_owned(),
                ],
            }],
            audit: StreamShape {
                count: audit_count,
                start,
                end: now,
            },
            content: StreamShape {
                count: content_count,
                start,
                end: now,
            },
            ai: StreamShape {
                // Few: one AI interaction logs call costs 2,000 credits (Level 4), and a
                // demo that used up the minute's budget would wait for the next one.
                count: content_count / 50,
                start,
                end: now,
            },
            late: LateArrival {
                share: 0.02,
                max_delay: Duration::from_secs(30),
            },
            rate_limit: Some(RateLimit {
                credits_per_minute: 100_000,
                retry_after_header: false,
            }),
            audit_max_limit: 500,
            last_page_cursor: LastPageCursor::Omit,
            audit_time_form: TimeForm::MillisPlus0000,
            content_time_form: TimeForm::MillisZ,
            faults: Faults::default(),
            scenarios: Vec::new(),
        }
    }
}
