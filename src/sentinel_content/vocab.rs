//! The Miro audit vocabulary the views and the ASIM parsers rely on: which event names
//! are sign-ins and sign-outs, which categories are administrative, which `details` keys
//! carry the sign-in method and a change's old and new value.
//!
//! Miro publishes no catalogue of event names (docs/miro-api.md, "Event names"): each
//! name says whether a public source confirms it. Unconfirmed names and keys are the
//! first thing to check against a real store (`mirotrail query "SELECT event, category,
//! count(*) FROM MiroAuditLogs_CL GROUP BY 1, 2"`).

/// An event name and whether a public source confirms Miro sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventName {
    pub name: &'static str,
    pub confirmed: bool,
}

const fn confirmed(name: &'static str) -> EventName {
    EventName {
        name,
        confirmed: true,
    }
}

/// A successful sign-in (ASIM: Logon, Success).
pub const SIGN_IN_SUCCEEDED: &[EventName] = &[confirmed("sign_in_succeeded")];
/// A failed sign-in (ASIM: Logon, Failure).
pub const SIGN_IN_FAILED: &[EventName] = &[confirmed("sign_in_failed")];
/// A sign-out (ASIM: Logoff, Success).
pub const SIGN_OUT: &[EventName] = &[confirmed("sign_out_succeeded")];

/// The `details` key naming a sign-in's method (ASIM `LogonMethod`). Unconfirmed: no
/// public sample shows its values.
pub const AUTH_METHOD_KEY: &str = "authType";

/// Categories whose events are administrative changes (the help centre's
/// "Administration" family; the lowercase category strings are unconfirmed).
pub const ADMIN_CATEGORIES: &[&str] = &[
    "administration",
    "security",
    "organization",
    "users",
    "teams",
];

/// `details` keys holding the value before a change, first present wins (unconfirmed).
pub const OLD_VALUE_KEYS: &[&str] = &["oldValue", "oldRole", "previousAccess"];
/// `details` keys holding the value after a change, first present wins (unconfirmed).
pub const NEW_VALUE_KEYS: &[&str] = &["newValue", "newRole", "access", "value"];

/// The bare names of a list.
pub fn names(list: &[EventName]) -> Vec<&'static str> {
    list.iter().map(|e| e.name).collect()
}
