//! An HTTP emulator of the three Miro log endpoints (plus token introspection), for the
//! integration tests, the benchmarks and `mirotrail demo`.
//!
//! Served: `GET /v2/audit/logs`, `GET /v2/orgs/{org_id}/content-logs/items`,
//! `GET /v2/orgs/{org_id}/ai-interaction-logs` (windows on `storedAt`) and
//! `GET /v1/oauth-token`, plus (when enabled) `POST /v1/oauth/token` and a test
//! `GET /oauth/authorize` (see `oauth`), with Miro's auth, scopes, Enterprise Guard check, error shape,
//! cursor paging and per-token credit rate limit (see `docs/miro-api.md`).
//!
//! Invariants:
//! - The organisation (`MiroOrg`) is a pure function of the config: event `i` is computed
//!   in O(1) from `(seed, i)` and nothing per event is kept in memory, so a million events
//!   cost the same memory as ten.
//! - Items are written straight into the page body from borrowed structs (`items.rs`),
//!   never built as a `serde_json::Value`; the bytes are those of the `Value` the emulator
//!   used to build (keys sorted), which `org/oracle.rs` keeps for the tests to compare.
//! - Event `i`'s time is `start + floor(i * (end - start) / count)`: times never decrease
//!   with the index, so a time window is an index range found by arithmetic.
//! - Following cursors of one query yields every item visible at request time exactly
//!   once, unless a fault (`Faults`) says otherwise; every injected fault is counted.
//! - Faults are a function of `(seed, request number)`; they never hit `/v1/oauth-token`.
//!   A `BodyFault` (gzip bomb, huge page), when set, replaces every 200 log page.
//! - The bearer token is never logged.

mod body_faults;
mod config;
mod cursor;
mod faults;
mod hash;
mod items;
mod oauth;
mod org;
mod paging;
mod rate;
mod scenario;
mod server;
mod vocab;

#[cfg(test)]
mod tests;

pub use body_faults::BodyFault;
pub(crate) use body_faults::gzip_bomb;
pub use config::{
    EmulatedToken, Faults, LastPageCursor, LateArrival, MARKUP_NAME_SUFFIX, MiroEmulatorConfig,
    RateLimit, StreamShape, TimeForm,
};
pub use oauth::{OAuthApp, OAuthStats};
pub use org::MiroOrg;
pub use scenario::Scenario;
pub use server::{EmulatorStats, MiroEmulator, MiroEmulatorHandle, OVERSIZED_CURSOR_CHARS};

/// The audit event names of the generated organisation's everyday activity (the attack
/// scenarios add their own), for tests that must cover the whole vocabulary.
pub fn audit_event_names() -> Vec<&'static str> {
    vocab::AUDIT_KINDS.iter().map(|k| k.event).collect()
}
