//! `POST /dataCollectionRules/{dcr}/streams/{stream}?api-version=2023-01-01`: the checks
//! Azure makes, in its order, then the DCR transformation into the table.

use std::borrow::Cow;
use std::io::Read;
use std::time::Instant;

use serde_json::{Value, json};

use super::http::{Reply, Request, Response};
use super::records::{self, Refusal};
use super::{Shared, Stream, chance};

/// An ingestion error: `{"error":{"code","message"}}` and `x-ms-error-code`.
pub(super) fn error(status: u16, code: &str, message: &str) -> Response {
    Response::json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
    .with_header("x-ms-error-code", code)
}

pub(super) async fn upload(state: &Shared, dcr: &str, stream: &str, request: &Request) -> Reply {
    let reply = upload_inner(state, dcr, stream, request).await;
    let mut s = state.lock().expect("emulator state");
    s.stats.bytes_received += request.body.len() as u64;
    if let Reply::Respond(r) = &reply {
        *s.stats.ingestion_by_status.entry(r.status).or_default() += 1;
    }
    reply
}

async fn upload_inner(state: &Shared, dcr: &str, stream: &str, request: &Request) -> Reply {
    let respond =
        |status: u16, code: &str, message: &str| Reply::Respond(error(status, code, message));
    let config = state.lock().expect("emulator state").config.clone();

    let bearer = request
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "));
    let valid = bearer.is_some_and(|t| {
        let s = state.lock().expect("emulator state");
        s.tokens
            .get(t)
            .is_some_and(|expiry| Instant::now() < *expiry)
    });
    if !valid {
        return respond(
            401,
            "InvalidAuthenticationToken",
            "The access token is missing, invalid or expired.",
        );
    }
    let faults = &config.faults;
    if faults.error_gzip_bomb_mib > 0 {
        return Reply::Respond(Response {
            status: 503,
            headers: vec![
                (
                    "Content-Type".into(),
                    "application/json; charset=utf-8".into(),
                ),
                ("Content-Encoding".into(), "gzip".into()),
            ],
            body: crate::miro::gzip_bomb(faults.error_gzip_bomb_mib)
                .flat_map(|b| b.to_vec())
                .collect(),
        });
    }
    if chance(faults.slow_share) {
        tokio::time::sleep(faults.slow_delay).await;
    }
    if chance(faults.throttle_share) {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a configured Retry-After: a few seconds, never negative"
        )]
        let secs = faults.retry_after.as_secs_f64().ceil() as u64;
        return Reply::Respond(
            error(
                429,
                "TooManyRequests",
                "Too many requests; retry after the Retry-After interval.",
            )
            .with_header("Retry-After", &secs.to_string()),
        );
    }
    if chance(faults.server_error_share) {
        return respond(
            503,
            "ServiceUnavailable",
            "The service is temporarily unavailable.",
        );
    }
    if !matches!(
        request.query("api-version"),
        Some("2023-01-01" | "2021-11-01-preview")
    ) {
        return respond(
            400,
            "InvalidApiVersion",
            "The api-version query parameter is missing or unsupported.",
        );
    }
    let Some((_, declared)) = config.dcrs.iter().find(|(id, _)| id == dcr) else {
        return respond(
            404,
            "NotFound",
            &format!("Data collection rule with immutable Id '{dcr}' not found."),
        );
    };
    if !config.roles_granted {
        return respond(
            403,
            "OperationFailed",
            &format!(
                "The authentication token provided does not have access to ingest data for the data collection rule with immutable Id '{dcr}'."
            ),
        );
    }
    if declared != stream {
        return respond(
            400,
            "InvalidStream",
            &format!(
                "Data collection rule with immutable Id '{dcr}' does not have stream '{stream}'."
            ),
        );
    }
    let Some(source) = Stream::from_name(stream) else {
        return respond(
            400,
            "InvalidStream",
            &format!("The emulator only knows the Miro streams, not '{stream}'."),
        );
    };
    if !request
        .header("content-type")
        .is_some_and(|v| v.starts_with("application/json"))
    {
        return respond(
            415,
            "UnsupportedMediaType",
            "Content-Type must be application/json.",
        );
    }
    let body = match request.header("content-encoding") {
        Some(e) if e.eq_ignore_ascii_case("gzip") => {
            let limit = config.max_body_bytes + 1;
            let mut out = Vec::with_capacity(request.body.len().saturating_mul(8).min(limit));
            if flate2::read::GzDecoder::new(&request.body[..])
                .take(limit as u64)
                .read_to_end(&mut out)
                .is_err()
            {
                return respond(
                    400,
                    "InvalidContentEncoding",
                    "The gzip body cannot be decompressed.",
                );
            }
            Cow::Owned(out)
        }
        None => Cow::Borrowed(&request.body[..]),
        Some(other) => {
            return respond(
                400,
                "InvalidContentEncoding",
                &format!("Unsupported Content-Encoding '{other}'."),
            );
        }
    };
    {
        let mut s = state.lock().expect("emulator state");
        s.stats.max_body_bytes = s.stats.max_body_bytes.max(body.len() as u64);
    }
    if body.len() > config.max_body_bytes {
        return respond(
            413,
            "ContentLengthLimitExceeded",
            "The request body is larger than 1 MB; send smaller batches.",
        );
    }
    // An empty array passes every check above and writes nothing (204). Microsoft does
    // not document this case; `mirotrail check` relies on it (as Vector's healthcheck
    // does) and reports any other answer as "not verified".
    // The records are built only when the transformed rows are kept (or their ids, for
    // the acknowledgement times); the checks are the same either way (`records`).
    let keep = config.keep_rows || config.record_ack_times;
    let checked = match records::check(
        &body,
        source.declared_columns(),
        &config.faults.reject_ids,
        keep,
    ) {
        Ok(checked) => checked,
        Err(records::NotAnArray) => {
            return respond(
                400,
                "InvalidPayload",
                "The body must be a JSON array of objects.",
            );
        }
    };
    match checked.refusal {
        None => {}
        Some(Refusal::NotObject { index }) => {
            return respond(
                400,
                "InvalidPayload",
                &format!("Record {index} is not a JSON object."),
            );
        }
        Some(Refusal::Undeclared { index, column }) => {
            return respond(
                400,
                "InvalidPayload",
                &format!(
                    "Record {index} has column '{column}', which stream '{stream}' does not declare."
                ),
            );
        }
        Some(Refusal::Rejected { index, id }) => {
            return respond(
                400,
                "InvalidPayload",
                &format!("Record {index} (id '{id}') was refused (injected fault)."),
            );
        }
    }
    let count = checked.count;
    let rows: Vec<Value> = checked.kept.iter().map(|r| source.transform(r)).collect();
    let lost = chance(config.faults.lost_ack_share);
    let mut s = state.lock().expect("emulator state");
    s.stats.records_accepted += count as u64;
    s.stats.batches_accepted += 1;
    if lost {
        s.stats.lost_acks += 1;
        s.stats.lost_ack_records += count as u64;
    }
    if !lost && config.record_ack_times {
        let now = crate::time::UnixMs::now();
        for row in &rows {
            let id = row.get("id").and_then(Value::as_str).unwrap_or_default();
            s.acked.push((id.to_string(), now));
        }
    }
    if config.keep_rows {
        s.tables.entry(source.table()).or_default().extend(rows);
    }
    if lost {
        Reply::Drop
    } else {
        Reply::Respond(Response::empty(204))
    }
}
