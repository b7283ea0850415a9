//! The one place that decides what a Miro response means for the caller: use it, wait
//! and retry, restart the window, or give up with a message a Miro admin can act on.
//! The waiting and retrying itself is `crate::retry`'s.
//!
//! A 429 waits (Retry-After, else until the budget resets) and never counts against the
//! retry limit; 5xx, 408, 409, timeouts, connection errors, truncated or non-JSON bodies
//! are retried with backoff, up to the configured limit.

use std::time::Duration;

use crate::config::SourceKind;
use crate::retry::Decision;

/// How a Miro answer ends the request, when retrying cannot change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx with a usable body.
    Success,
    /// The cursor was refused (400 on a request that carried one): restart the window.
    CursorRejected,
    /// Retrying cannot help; the message says what to change.
    Permanent(Permanent),
}

/// A failure that needs a human.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Permanent {
    #[error(
        "Miro rejected the token (401{detail}): it is invalid or was revoked. If it came from \
         Company settings > Apps and integrations > Enterprise integrations, check that the \
         {toggle} toggle is still on, then copy the token again"
    )]
    Unauthorized {
        toggle: &'static str,
        detail: String,
    },
    #[error("Miro refused access to {kind} (403{detail}): {advice}")]
    Forbidden {
        kind: SourceKind,
        advice: &'static str,
        detail: String,
    },
    #[error(
        "Miro does not know organization `{org_id}` (404{detail}): set `miro.org_id` to your \
         organization id (`mirotrail check` shows the token's organization)"
    )]
    NotFound { org_id: String, detail: String },
    #[error("Miro rejected the request as invalid (400{detail})")]
    BadRequest { detail: String },
    #[error("no request to Miro can be built ({reason}): check `miro.api_base` and `miro.org_id`")]
    Unsendable { reason: String },
    /// The expiring access token could not be refreshed (see `miro::token`).
    #[error("{reason}")]
    Token { reason: String },
    #[error("Miro answered with unexpected status {status}{detail}")]
    Unexpected { status: u16, detail: String },
    /// Retrying would download the same oversized answer again, so the source stops
    /// here (reported by `status` and `/readyz`) instead of looping on it.
    #[error(
        "Miro's answer for {kind} is larger than `miro.max_response_bytes` ({max_bytes} \
         bytes){declared}; it was not read further. Lower `sources.{kind}.page_size` so \
         each page holds fewer items, or raise `miro.max_response_bytes` if pages are \
         really this large"
    )]
    TooLarge {
        kind: SourceKind,
        max_bytes: usize,
        declared: String,
    },
}

/// Classifies an HTTP status. `body_message` is Miro's `message` field when the body
/// had one; `retry_after` is the `Retry-After` header, `reset_in` the time until
/// `X-RateLimit-Reset`.
pub fn classify_status(
    source: SourceKind,
    status: u16,
    had_cursor: bool,
    body_message: Option<&str>,
    retry_after: Option<Duration>,
    reset_in: Option<Duration>,
    org_id: &str,
) -> Decision<Verdict> {
    let detail = body_message
        .map(|m| format!(": \"{}\"", truncate(m, 300)))
        .unwrap_or_default();
    match status {
        200..=299 => Decision::Finish(Verdict::Success),
        429 => Decision::Throttled {
            wait: retry_after
                .or(reset_in)
                .unwrap_or(Duration::from_secs(60))
                .clamp(Duration::from_secs(1), Duration::from_secs(120)),
        },
        // Miro documents 409 for the audit logs without saying when: a conflict with the
        // server's state is not fixed by a human, so it is retried like a 5xx.
        408 | 409 | 500..=599 => Decision::Retry {
            reason: format!("HTTP {status}{detail}"),
        },
        400 if had_cursor => Decision::Finish(Verdict::CursorRejected),
        400 => Decision::Finish(Verdict::Permanent(Permanent::BadRequest { detail })),
        401 => Decision::Finish(Verdict::Permanent(Permanent::Unauthorized {
            toggle: toggle_of(source),
            detail,
        })),
        403 => Decision::Finish(Verdict::Permanent(Permanent::Forbidden {
            kind: source,
            advice: forbidden_advice(source),
            detail,
        })),
        404 if source.needs_org_id() => Decision::Finish(Verdict::Permanent(Permanent::NotFound {
            org_id: org_id.to_string(),
            detail,
        })),
        _ => Decision::Finish(Verdict::Permanent(Permanent::Unexpected { status, detail })),
    }
}

/// The Enterprise integrations toggle that issues a token for `source`.
pub fn toggle_of(source: SourceKind) -> &'static str {
    match source {
        SourceKind::AuditLogs => "\"SIEM\"",
        SourceKind::ContentLogs => "\"eDiscovery\"",
        // Miro names no toggle for this beta stream.
        SourceKind::AiInteractionLogs => "integration's",
    }
}

/// The scope a token needs for `source`.
pub fn scope_of(source: SourceKind) -> &'static str {
    match source {
        SourceKind::AuditLogs => "auditlogs:read",
        SourceKind::ContentLogs => "contentlogs:export",
        SourceKind::AiInteractionLogs => "aiinteractionlogs:read",
    }
}

/// What a 403 on `source` asks the Miro admin to fix.
pub fn forbidden_advice(source: SourceKind) -> &'static str {
    match source {
        SourceKind::AuditLogs => {
            "the token needs the `auditlogs:read` scope, the organization needs the \
             Enterprise plan, and the app must be installed by a Company Admin"
        }
        SourceKind::ContentLogs => {
            "the token needs the `contentlogs:export` scope, the organization needs the \
             Enterprise plan with the Enterprise Guard add-on, and the app must be \
             installed by a Company Admin"
        }
        SourceKind::AiInteractionLogs => {
            "the token needs the `aiinteractionlogs:read` scope, the organization needs the \
             Enterprise plan with the Enterprise Guard add-on (AI interaction logs are in \
             beta), and the app must be installed by a Company Admin"
        }
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text.to_string()
    } else {
        text.chars().take(max_chars).collect::<String>() + "…"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(status: u16, had_cursor: bool) -> Decision<Verdict> {
        classify_status(
            SourceKind::AuditLogs,
            status,
            had_cursor,
            Some("msg"),
            None,
            Some(Duration::from_secs(7)),
            "1",
        )
    }

    /// A 409 (documented for the audit logs) blocked the source as an unexpected status.
    #[test]
    fn conflict_409_is_retried() {
        assert!(matches!(c(409, false), Decision::Retry { .. }));
        assert!(matches!(c(409, true), Decision::Retry { .. }));
    }

    #[test]
    fn success_statuses() {
        assert_eq!(c(200, false), Decision::Finish(Verdict::Success));
        assert_eq!(c(204, true), Decision::Finish(Verdict::Success));
    }

    #[test]
    fn rate_limit_waits_for_retry_after_then_reset() {
        assert_eq!(
            c(429, false),
            Decision::Throttled {
                wait: Duration::from_secs(7)
            }
        );
        let d = classify_status(
            SourceKind::AuditLogs,
            429,
            false,
            None,
            Some(Duration::from_secs(3)),
            Some(Duration::from_secs(50)),
            "1",
        );
        assert_eq!(
            d,
            Decision::Throttled {
                wait: Duration::from_secs(3)
            }
        );
        let d = classify_status(SourceKind::AuditLogs, 429, false, None, None, None, "1");
        assert_eq!(
            d,
            Decision::Throttled {
                wait: Duration::from_secs(60)
            }
        );
    }

    #[test]
    fn server_errors_and_timeouts_are_transient() {
        for s in [408, 500, 502, 503, 504, 599] {
            assert!(matches!(c(s, false), Decision::Retry { .. }), "{s}");
        }
    }

    #[test]
    fn bad_request_with_cursor_restarts_the_window() {
        assert_eq!(c(400, true), Decision::Finish(Verdict::CursorRejected));
        assert!(matches!(
            c(400, false),
            Decision::Finish(Verdict::Permanent(Permanent::BadRequest { .. }))
        ));
    }

    #[test]
    fn permanent_errors_tell_the_admin_what_to_do() {
        let msg = c(401, false).permanent_message();
        assert!(msg.contains("SIEM"), "{msg}");
        let content401 =
            classify_status(SourceKind::ContentLogs, 401, false, None, None, None, "9");
        assert!(content401.permanent_message().contains("eDiscovery"));
        let msg = c(403, false).permanent_message();
        assert!(msg.contains("auditlogs:read"), "{msg}");
        let content403 =
            classify_status(SourceKind::ContentLogs, 403, false, None, None, None, "9");
        let msg = content403.permanent_message();
        assert!(
            msg.contains("contentlogs:export") && msg.contains("Enterprise Guard"),
            "{msg}"
        );
        let content404 =
            classify_status(SourceKind::ContentLogs, 404, false, None, None, None, "9");
        assert!(content404.permanent_message().contains("`9`"));
        assert!(c(400, false).permanent_message().contains("\"msg\""));
        assert!(matches!(
            c(404, false),
            Decision::Finish(Verdict::Permanent(Permanent::Unexpected {
                status: 404,
                ..
            }))
        ));
        assert!(matches!(
            c(302, false),
            Decision::Finish(Verdict::Permanent(Permanent::Unexpected {
                status: 302,
                ..
            }))
        ));
    }

    trait PermanentMessage {
        fn permanent_message(&self) -> String;
    }

    impl PermanentMessage for Decision<Verdict> {
        fn permanent_message(&self) -> String {
            match self {
                Decision::Finish(Verdict::Permanent(p)) => p.to_string(),
                other => panic!("not permanent: {other:?}"),
            }
        }
    }
}
