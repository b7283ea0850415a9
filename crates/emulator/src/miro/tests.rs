//! The emulator over real loopback HTTP, with a minimal HTTP/1.1 client.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::time::UnixMs;

const ORG: &str = "3074457345821141000";
const ALL: &str = "tok-all";
const AUDIT_ONLY: &str = "tok-audit";
const CONTENT_ONLY: &str = "tok-content";

fn config(now: UnixMs) -> MiroEmulatorConfig {
    let start = now.minus(Duration::from_secs(2 * 3600));
    let end = now.minus(Duration::from_secs(3600));
    let token = |t: &str, scopes: &[&str]| EmulatedToken {
        token: t.to_owned(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
    };
    MiroEmulatorConfig {
        seed: 42,
        org_id: ORG.to_owned(),
        org_name: "Test Org".to_owned(),
        team_id: "3074457345821141001".to_owned(),
        enterprise_guard: true,
        tokens: vec![
            token(
                ALL,
                &[
                    "auditlogs:read",
                    "contentlogs:export",
                    "aiinteractionlogs:read",
                ],
            ),
            token(AUDIT_ONLY, &["auditlogs:read"]),
            token(CONTENT_ONLY, &["contentlogs:export"]),
        ],
        audit: StreamShape {
            count: 300,
            start,
            end,
        },
        content: StreamShape {
            count: 300,
            start,
            end,
        },
        ai: StreamShape {
            count: 300,
            start,
            end,
        },
        late: LateArrival {
            share: 0.1,
            max_delay: Duration::from_secs(30),
        },
        rate_limit: None,
        audit_max_limit: 500,
        last_page_cursor: LastPageCursor::Omit,
        audit_time_form: super::config::TimeForm::MillisPlus0000,
        content_time_form: super::config::TimeForm::MillisZ,
        faults: Faults::default(),
        scenarios: Vec::new(),
    }
}

async fn start(config: MiroEmulatorConfig) -> MiroEmulatorHandle {
    MiroEmulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

#[derive(Debug)]
struct HttpReply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    /// Asserts Miro's error shape and returns the message.
    fn miro_error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.header("content-type"), Some("application/json"));
        let v = self.json();
        let obj = v.as_object().unwrap();
        assert_eq!(v["status"], status);
        assert_eq!(v["type"], "error");
        assert!(v["code"].is_string() && v["message"].is_string(), "{v}");
        assert!(
            obj.keys()
                .all(|k| ["status", "code", "message", "type", "context"].contains(&k.as_str()))
        );
        v["message"].as_str().unwrap().to_owned()
    }
}

/// A raw `GET` with `Connection: close`, read to the end.
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> HttpReply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let reply = HttpReply {
        status,
        headers,
        body: body.to_owned(),
    };
    assert_ne!(
        reply.header("transfer-encoding"),
        Some("chunked"),
        "client reads fixed bodies only"
    );
    if let Some(len) = reply.header("content-length") {
        assert_eq!(len.parse::<usize>().unwrap(), reply.body.len());
    }
    reply
}

/// A query value URL-encoded, as every client must send it (cursors hold `#`).
fn enc(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn audit_path(from: UnixMs, to: UnixMs, extra: &str) -> String {
    format!("/v2/audit/logs?createdAfter={from}&createdBefore={to}{extra}")
}

fn content_path(org: &str, from: UnixMs, to: UnixMs, extra: &str) -> String {
    format!("/v2/orgs/{org}/content-logs/items?from={from}&to={to}{extra}")
}

/// Follows cursors from `first` and returns all ids, in order.
async fn collect_ids(addr: SocketAddr, first: &str, token: &str, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut path = first.to_owned();
    for _ in 0..10_000 {
        let reply = get(addr, &path, Some(token)).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let page = reply.json();
        assert_eq!(page["type"], "cursor-list");
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= limit);
        assert_eq!(page["size"], data.len());
        assert_eq!(page["limit"], limit);
        ids.extend(data.iter().map(|d| d["id"].as_str().unwrap().to_owned()));
        match page.get("cursor").and_then(Value::as_str) {
            Some(c) if !c.is_empty() => path = format!("{first}&cursor={}", enc(c)),
            _ => return ids,
        }
    }
    panic!("paging did not end");
}

#[tokio::test]
async fn paging_with_limit_7_yields_each_visible_item_exactly_once() {
    let now = UnixMs::now();
    let emu = start(config(now)).await;
    let org = emu.org();
    let from = org.audit_time(40);
    let to = org.audit_time(200);
    let expected: Vec<String> = org
        .audit_range(from, to)
        .map(|i| org.audit_event(i)["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(expected.len(), 160);

    let asc = collect_ids(emu.addr(), &audit_path(from, to, "&limit=7"), ALL, 7).await;
    assert_eq!(asc, expected);
    let mut desc = collect_ids(
        emu.addr(),
        &audit_path(from, to, "&limit=7&sorting=DESC"),
        ALL,
        7,
    )
    .await;
    desc.reverse();
    assert_eq!(desc, expected);
    let default_limit = collect_ids(emu.addr(), &audit_path(from, to, ""), ALL, 100).await;
    assert_eq!(default_limit, expected);

    // Content logs, with and without filters (repeated keys).
    let (cf, ct) = (org.content_time(10), org.content_time(290));
    let all: Vec<Value> = org
        .content_range(cf, ct)
        .map(|i| org.content_item(i))
        .collect();
    let ids = |items: &[&Value]| -> Vec<String> {
        items
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let got = collect_ids(emu.addr(), &content_path(ORG, cf, ct, "&limit=7"), ALL, 7).await;
    assert_eq!(got, ids(&all.iter().collect::<Vec<_>>()));

    let b1 = all[0]["contentId"].as_str().unwrap().to_owned();
    let b2 = all[1]["contentId"].as_str().unwrap().to_owned();
    let on_boards: Vec<&Value> = all
        .iter()
        .filter(|v| v["contentId"] == b1 || v["contentId"] == b2)
        .collect();
    let extra = format!("&limit=7&sorting=asc&board_ids={b1}&board_ids={b2}");
    let got = collect_ids(emu.addr(), &content_path(ORG, cf, ct, &extra), ALL, 7).await;
    assert_eq!(got, ids(&on_boards));

    let email = all
        .iter()
        .find_map(|v| v["actor"]["email"].as_str())
        .unwrap()
        .to_owned();
    let by_email: Vec<&Value> = all
        .iter()
        .filter(|v| v["actor"]["email"] == email.as_str())
        .collect();
    let extra = format!("&limit=3&emails={}", email.replace('@', "%40"));
    let got = collect_ids(emu.addr(), &content_path(ORG, cf, ct, &extra), ALL, 3).await;
    assert_eq!(got, ids(&by_email));

    let stats = emu.stats();
    assert_eq!(stats.by_status.get(&200).copied(), Some(stats.requests));
    assert_eq!(
        stats.credits_spent,
        stats.audit_requests * 100 + stats.content_requests * 2000
    );
    assert!(stats.items_served >= 160 * 3);
    emu.shutdown().await;
}

#[tokio::test]
async fn late_events_are_served_only_once_visible() {
    let now = UnixMs::now();
    let mut cfg = config(now);
    cfg.audit = StreamShape {
        count: 200,
        start: now.minus(Duration::from_secs(60)),
        end: now,
    };
    cfg.late = LateArrival {
        share: 0.5,
        max_delay: Duration::from_secs(3600),
    };
    let emu = start(cfg).await;
    let org = emu.org();
    let (from, to) = (
        now.minus(Duration::from_secs(120)),
        now.plus(Duration::from_secs(120)),
    );
    let before = UnixMs::now();
    let got: HashSet<String> =
        collect_ids(emu.addr(), &audit_path(from, to, "&limit=500"), ALL, 500)
            .await
            .into_iter()
            .collect();
    let after = UnixMs::now();
    let id = |i: u64| org.audit_event(i)["id"].as_str().unwrap().to_owned();
    for i in 0..200 {
        if org.audit_visible_at(i) <= before {
            assert!(got.contains(&id(i)), "visible event {i} missing");
        }
        if org.audit_visible_at(i) > after {
            assert!(!got.contains(&id(i)), "invisible event {i} served");
        }
    }
    assert!(
        got.len() < 150,
        "about half the events are hours late: {}",
        got.len()
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn bad_parameters_are_400_naming_the_parameter() {
    let now = UnixMs::now();
    let emu = start(config(now)).await;
    let a = emu.addr();
    let (from, to) = (now.minus(Duration::from_secs(7200)), now);

    let m = get(
        a,
        &format!("/v2/audit/logs?createdAfter=2024-01-01&createdBefore={to}"),
        Some(ALL),
    )
    .await
    .miro_error(400);
    assert!(m.contains("createdAfter"), "{m}");
    let m = get(a, &format!("/v2/audit/logs?createdAfter={from}"), Some(ALL))
        .await
        .miro_error(400);
    assert!(m.contains("createdBefore"), "{m}");
    let m = get(a, "/v2/audit/logs?createdAfter=2024-01-01T00:00:00%2B02:00&createdBefore=2024-01-02T00:00:00Z", Some(ALL)).await.miro_error(400);
    assert!(
        m.contains("createdAfter"),
        "offsets other than Z are refused: {m}"
    );
    for extra in ["&limit=0", "&limit=501", "&limit=ten"] {
        let m = get(a, &audit_path(from, to, extra), Some(ALL))
            .await
            .miro_error(400);
        assert!(m.contains("limit"), "{m}");
    }
    let m = get(a, &audit_path(from, to, "&sorting=asc"), Some(ALL))
        .await
        .miro_error(400);
    assert!(m.contains("sorting"), "{m}");
    let m = get(a, &content_path(ORG, from, to, "&sorting=DESC"), Some(ALL))
        .await
        .miro_error(400);
    assert!(m.contains("sorting"), "{m}");
    let m = get(a, &content_path(ORG, from, to, "&limit=1001"), Some(ALL))
        .await
        .miro_error(400);
    assert!(m.contains("limit"), "{m}");
    let m = get(
        a,
        &format!("/v2/orgs/{ORG}/content-logs/items?to={to}"),
        Some(ALL),
    )
    .await
    .miro_error(400);
    assert!(m.contains("from"), "{m}");
    let sixteen: String = (0..16).map(|i| format!("&board_ids=b{i}")).collect();
    let m = get(a, &content_path(ORG, from, to, &sixteen), Some(ALL))
        .await
        .miro_error(400);
    assert!(m.contains("board_ids"), "{m}");
    let sixteen: String = (0..16)
        .map(|i| format!("&emails=u{i}%40x.example"))
        .collect();
    let m = get(a, &content_path(ORG, from, to, &sixteen), Some(ALL))
        .await
        .miro_error(400);
    assert!(m.contains("emails"), "{m}");
    let m = get(a, &audit_path(to, from, ""), Some(ALL))
        .await
        .miro_error(400);
    assert!(m.contains("createdBefore"), "{m}");

    // Cursors: garbage, and a real cursor used with another window.
    let m = get(a, &audit_path(from, to, "&cursor=not-a-cursor"), Some(ALL))
        .await
        .miro_error(400);
    assert!(m.contains("cursor"), "{m}");
    let page = get(a, &audit_path(from, to, "&limit=5"), Some(ALL))
        .await
        .json();
    let c = page["cursor"].as_str().unwrap();
    let other_window = audit_path(
        from.plus(Duration::from_secs(1)),
        to,
        &format!("&limit=5&cursor={}", enc(c)),
    );
    get(a, &other_window, Some(ALL)).await.miro_error(400);
    let other_order = audit_path(
        from,
        to,
        &format!("&limit=5&sorting=DESC&cursor={}", enc(c)),
    );
    get(a, &other_order, Some(ALL)).await.miro_error(400);
    let on_content = content_path(ORG, from, to, &format!("&cursor={}", enc(c)));
    get(a, &on_content, Some(ALL)).await.miro_error(400);

    // Accepted time forms: milliseconds, none, two digits (the Sentinel poller's).
    for (f, t) in [
        ("2024-01-01T00:00:00.000Z", "2024-01-02T00:00:00.000Z"),
        ("2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"),
        ("2024-01-01T00:00:00.00Z", "2024-01-02T00:00:00.00Z"),
    ] {
        let r = get(
            a,
            &format!("/v2/audit/logs?createdAfter={f}&createdBefore={t}"),
            Some(ALL),
        )
        .await;
        assert_eq!(r.status, 200, "{f}: {}", r.body);
        assert_eq!(r.json()["size"], 0);
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn auth_scope_guard_and_org_errors() {
    let now = UnixMs::now();
    let emu = start(config(now)).await;
    let a = emu.addr();
    let (from, to) = (now.minus(Duration::from_secs(7200)), now);
    let audit = audit_path(from, to, "");
    let content = content_path(ORG, from, to, "");

    let r = get(a, &audit, None).await;
    r.miro_error(401);
    assert!(
        r.header("x-ratelimit-limit").is_some(),
        "errors carry rate-limit headers"
    );
    get(a, &audit, Some("who-knows")).await.miro_error(401);
    get(a, "/v1/oauth-token", Some("who-knows"))
        .await
        .miro_error(401);
    assert_eq!(emu.stats().credits_spent, 0, "auth failures cost nothing");

    get(a, &content, Some(AUDIT_ONLY)).await.miro_error(403);
    get(a, &audit, Some(CONTENT_ONLY)).await.miro_error(403);
    assert_eq!(get(a, &audit, Some(AUDIT_ONLY)).await.status, 200);
    assert_eq!(get(a, &content, Some(CONTENT_ONLY)).await.status, 200);

    let wrong_org = content_path("3074457345821149999", from, to, "");
    get(a, &wrong_org, Some(ALL)).await.miro_error(404);

    emu.set_enterprise_guard(false);
    let m = get(a, &content, Some(ALL)).await.miro_error(403);
    assert!(m.contains("Enterprise Guard"), "{m}");
    assert_eq!(
        get(a, &audit, Some(ALL)).await.status,
        200,
        "audit logs need no Guard"
    );
    emu.set_enterprise_guard(true);
    assert_eq!(get(a, &content, Some(ALL)).await.status, 200);

    let info = get(a, "/v1/oauth-token", Some(AUDIT_ONLY)).await;
    assert_eq!(info.status, 200);
    let info = info.json();
    assert_eq!(info["type"], "oauth-token");
    assert_eq!(info["scopes"], serde_json::json!(["auditlogs:read"]));
    assert_eq!(info["organization"]["id"], ORG);
    assert_eq!(info["team"]["id"], "3074457345821141001");
    assert_eq!(info["user"]["type"], "user");
    assert!(info["createdBy"]["id"].is_string());

    emu.revoke_token(ALL);
    get(a, &audit, Some(ALL)).await.miro_error(401);
    get(a, "/v1/oauth-token", Some(ALL)).await.miro_error(401);
    get(a, "/v2/nothing-here", Some(AUDIT_ONLY))
        .await
        .miro_error(404);

    let stats = emu.stats();
    assert_eq!(stats.by_status.get(&401).copied(), Some(5));
    assert_eq!(stats.by_status.get(&403).copied(), Some(3));
    assert_eq!(stats.by_status.get(&404).copied(), Some(2));
    emu.shutdown().await;
}

#[tokio::test]
async fn over_budget_is_429_with_rate_limit_headers_and_costs_nothing() {
    // A minute boundary inside the test would refill the budget: retry on a fresh emulator then.
    for _attempt in 0..3 {
        let now = UnixMs::now();
        let mut cfg = config(now);
        cfg.rate_limit = Some(RateLimit {
            credits_per_minute: 350,
            retry_after_header: true,
        });
        let emu = start(cfg).await;
        let a = emu.addr();
        let audit = audit_path(now.minus(Duration::from_secs(7200)), now, "");
        let mut replies = Vec::new();
        for _ in 0..4 {
            replies.push(get(a, &audit, Some(ALL)).await);
        }
        replies.push(get(a, "/v1/oauth-token", Some(ALL)).await);
        replies.push(get(a, "/v1/oauth-token", Some(ALL)).await);
        let other = get(a, &audit, Some(AUDIT_ONLY)).await;
        let stats = emu.stats();
        emu.shutdown().await;

        let resets: HashSet<&str> = replies
            .iter()
            .map(|r| r.header("x-ratelimit-reset").unwrap())
            .collect();
        if resets.len() > 1 {
            continue;
        }
        let reset: i64 = resets.into_iter().next().unwrap().parse().unwrap();
        assert_eq!(reset % 60, 0, "windows are aligned to minutes");
        let now_secs = UnixMs::now().0 / 1000;
        assert!(
            reset > now_secs - 1 && reset <= now_secs + 60,
            "{reset} vs {now_secs}"
        );

        let status: Vec<u16> = replies.iter().map(|r| r.status).collect();
        assert_eq!(status, [200, 200, 200, 429, 200, 429]);
        let remaining: Vec<&str> = replies
            .iter()
            .map(|r| r.header("x-ratelimit-remaining").unwrap())
            .collect();
        assert_eq!(remaining, ["250", "150", "50", "50", "0", "0"]);
        assert!(
            replies
                .iter()
                .all(|r| r.header("x-ratelimit-limit") == Some("350"))
        );
        let limited = &replies[3];
        assert_eq!(
            limited.body,
            r#"{"status":429,"code":"tooManyRequests","message":"Request rate limit exceed","context":null,"type":"error"}"#
        );
        assert_eq!(limited.header("content-type"), Some("application/json"));
        let retry: i64 = limited.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        assert!(replies[0].header("retry-after").is_none());
        assert_eq!(other.status, 200, "budgets are per token");
        assert_eq!(other.header("x-ratelimit-remaining"), Some("250"));
        assert_eq!(stats.rate_limited, 2);
        assert_eq!(stats.credits_spent, 3 * 100 + 50 + 100);
        return;
    }
    panic!("crossed a minute boundary three times");
}

#[tokio::test]
async fn faults_at_share_one_are_injected_and_counted() {
    let now = UnixMs::now();
    let emu = start(config(now)).await;
    let a = emu.addr();
    let audit = audit_path(now.minus(Duration::from_secs(7200)), now, "&limit=10");

    emu.set_faults(Faults {
        truncate_share: 1.0,
        ..Faults::default()
    });
    let r = get(a, &audit, Some(ALL)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(
        r.body.starts_with("{\"type\":\"cursor-list\""),
        "{}",
        r.body
    );
    assert!(
        serde_json::from_str::<Value>(&r.body).is_err(),
        "body must be cut: {}",
        r.body
    );
    assert_eq!(
        get(a, "/v1/oauth-token", Some(ALL)).await.status,
        200,
        "no faults on oauth-token"
    );
    get(a, "/v1/oauth-token", Some(ALL)).await.json();

    emu.set_faults(Faults {
        html_share: 1.0,
        ..Faults::default()
    });
    let r = get(a, &audit, Some(ALL)).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.body.contains("<html>"));

    emu.set_faults(Faults {
        server_error_share: 1.0,
        ..Faults::default()
    });
    let r = get(a, &audit, Some(ALL)).await;
    assert!([500, 502, 503, 504].contains(&r.status));
    r.miro_error(r.status);

    emu.set_faults(Faults::default());
    let first = get(a, &audit, Some(ALL)).await.json();
    let cursor = first["cursor"].as_str().unwrap().to_owned();
    let next = format!("{audit}&cursor={}", enc(&cursor));
    let normal = get(a, &next, Some(ALL)).await.json();
    assert_ne!(normal["cursor"], cursor.as_str());

    emu.set_faults(Faults {
        repeat_cursor_share: 1.0,
        ..Faults::default()
    });
    let repeated = get(a, &next, Some(ALL)).await.json();
    assert_eq!(repeated["cursor"], cursor.as_str());
    assert_eq!(repeated["data"], normal["data"]);

    emu.set_faults(Faults {
        expire_cursor_share: 1.0,
        ..Faults::default()
    });
    let m = get(a, &next, Some(ALL)).await.miro_error(400);
    assert!(m.contains("cursor"), "{m}");
    assert_eq!(
        get(a, &audit, Some(ALL)).await.status,
        200,
        "first pages carry no cursor to expire"
    );

    emu.set_faults(Faults {
        duplicate_item_share: 1.0,
        ..Faults::default()
    });
    let dup = get(a, &audit, Some(ALL)).await.json();
    let ids: Vec<&str> = dup["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 11);
    assert_eq!(dup["size"], 11);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 10);

    emu.set_faults(Faults {
        slow_share: 1.0,
        slow_delay: Duration::from_millis(1),
        ..Faults::default()
    });
    assert_eq!(get(a, &audit, Some(ALL)).await.status, 200);

    let f = emu.stats().faults;
    for (kind, n) in [
        ("truncate", 1),
        ("html", 1),
        ("server_error", 1),
        ("repeat_cursor", 1),
        ("expire_cursor", 1),
        ("duplicate_item", 1),
        ("slow", 1),
    ] {
        assert_eq!(f.get(kind).copied(), Some(n), "{kind}: {f:?}");
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn last_page_cursor_variants() {
    let now = UnixMs::now();
    for (variant, expected) in [
        (LastPageCursor::Omit, None),
        (LastPageCursor::Empty, Some(Value::from(""))),
        (LastPageCursor::Null, Some(Value::Null)),
    ] {
        let mut cfg = config(now);
        cfg.last_page_cursor = variant;
        let emu = start(cfg).await;
        let page = get(
            emu.addr(),
            &audit_path(now.minus(Duration::from_secs(7200)), now, "&limit=500"),
            Some(ALL),
        )
        .await
        .json();
        assert_eq!(page["size"], 300);
        assert_eq!(page.get("cursor").cloned(), expected, "{variant:?}");
        emu.shutdown().await;
    }
}

#[tokio::test]
async fn serves_concurrent_connections_and_stops_on_shutdown() {
    let now = UnixMs::now();
    let emu = start(config(now)).await;
    let addr = emu.addr();
    assert_eq!(emu.base_url(), format!("http://127.0.0.1:{}", addr.port()));
    let path = audit_path(now.minus(Duration::from_secs(7200)), now, "&limit=50");
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let path = path.clone();
            tokio::spawn(async move { get(addr, &path, Some(ALL)).await.status })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(emu.stats().requests, 64);
    emu.clone().shutdown().await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still listening after shutdown"
    );
}

#[test]
fn demo_config_spans_the_last_days() {
    let now = UnixMs(1_700_000_000_000);
    let cfg = MiroEmulatorConfig::demo(now, 7, 5_000, 2_000, "t");
    let org = MiroOrg::new(&cfg);
    assert_eq!((org.audit_count(), org.content_count()), (5_000, 2_000));
    assert_eq!(
        org.audit_range(now.minus(Duration::from_secs(7 * 86_400)), now),
        0..5_000
    );
    assert_eq!(cfg.rate_limit.unwrap().credits_per_minute, 100_000);
    assert_eq!(cfg.tokens[0].scopes.len(), 3);
    assert_eq!(org.ai_count(), 40, "a fiftieth of the content items");
    assert!(cfg.enterprise_guard);
}

fn is_digits(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

/// `YYYY-MM-DDTHH:MM:SS.mmm` followed by `suffix`.
fn is_millis_time_with(s: &str, suffix: &str) -> bool {
    let Some(base) = s.strip_suffix(suffix) else {
        return false;
    };
    let b = base.as_bytes();
    base.len() == 23
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            _ => c.is_ascii_digit(),
        })
        && UnixMs::parse(s).is_some()
}

/// An audit event per the published contract (docs/miro-api.md).
fn check_audit_event(e: &Value) {
    let o = e.as_object().unwrap();
    // `2023-09-01T09:30:10.840687Z#1234567890123456789-DDB`
    let id = e["id"].as_str().unwrap();
    let (stamp, number) = id.split_once('#').unwrap();
    assert!(
        stamp.len() == 27 && stamp.ends_with('Z') && UnixMs::parse(stamp).is_some(),
        "{id}"
    );
    assert!(
        is_digits(&Value::from(number.strip_suffix("-DDB").unwrap())),
        "{id}"
    );
    assert_eq!(e["type"], "event");
    assert!(e["event"].as_str().is_some_and(|s| !s.is_empty()), "{e}");
    assert!(e["category"].is_string(), "{e}");
    // Miro's own form: milliseconds and `+0000`.
    let created = e["createdAt"].as_str().unwrap();
    assert!(is_millis_time_with(created, "+0000"), "{created}");
    assert_eq!(
        UnixMs::parse(stamp).map(|t| t.0),
        UnixMs::parse(created).map(|t| t.0),
        "the id starts with the event time"
    );
    assert!(e["details"].is_object(), "{e}");
    if let Some(by) = o.get("createdBy") {
        let kind = by["type"].as_str().unwrap();
        assert!(
            ["user", "application", "scim_provisioner", "miro_automation"].contains(&kind),
            "{by}"
        );
        assert!(is_digits(&by["id"]) && by["name"].is_string(), "{by}");
        if kind == "user" {
            assert!(by["email"].as_str().unwrap().contains('@'), "{by}");
        }
    }
    if let Some(object) = o.get("object") {
        assert!(
            object["id"].is_string() && object["name"].is_string(),
            "{object}"
        );
    }
    let context = &e["context"];
    assert!(context["ip"].is_string(), "{context}");
    if let Some(team) = context.get("team") {
        assert_eq!(team["type"], "team");
        assert!(is_digits(&team["id"]) && team["name"].is_string(), "{team}");
    }
    let org = &context["organization"];
    assert_eq!(org["type"], "organization");
    assert!(is_digits(&org["id"]) && org["name"].is_string(), "{org}");
    for key in o.keys() {
        assert!(
            [
                "id",
                "type",
                "event",
                "category",
                "createdAt",
                "details",
                "createdBy",
                "object",
                "context"
            ]
            .contains(&key.as_str()),
            "undocumented field {key}"
        );
    }
}

/// A content log item per the published contract (docs/miro-api.md).
fn check_content_item(c: &Value) {
    let o = c.as_object().unwrap();
    assert!(is_digits(&c["id"]), "{c}");
    assert!(
        c["contentId"].as_str().is_some_and(|b| !b.is_empty()),
        "{c}"
    );
    assert!(["create", "update", "delete"].contains(&c["actionType"].as_str().unwrap()));
    assert!(
        is_millis_time_with(c["actionTime"].as_str().unwrap(), "Z"),
        "{c}"
    );
    if let Some(actor) = o.get("actor") {
        assert!(actor["id"].is_string() && actor["email"].is_string() && actor["name"].is_string());
    }
    assert!(c["itemType"].is_string() && c["itemId"].is_string(), "{c}");
    assert!(c["state"].is_object() || c["state"].is_null(), "{c}");
    for r in c["relationships"].as_array().unwrap() {
        assert!(r["type"].is_string() && r["itemType"].is_string() && r["itemId"].is_string());
    }
    for key in o.keys() {
        assert!(
            [
                "id",
                "contentId",
                "actionType",
                "actionTime",
                "actor",
                "itemType",
                "itemId",
                "state",
                "relationships"
            ]
            .contains(&key.as_str()),
            "undocumented field {key}"
        );
    }
}

/// The emulator serves Miro's published shapes: the `cursor-list` envelope, every item's
/// field names, types and formats (audit `createdAt` with `+0000`, ids and cursors holding
/// `#`), and cursors that work only URL-encoded, as on the real server where a raw `#`
/// starts a URL fragment and the rest of the cursor is never sent.
#[tokio::test]
async fn pages_follow_the_documented_shapes_and_cursors_need_encoding() {
    let now = UnixMs::now();
    let emu = start(config(now)).await;
    let a = emu.addr();
    let (from, to) = (now.minus(Duration::from_secs(3 * 3600)), now);
    for (first, audit) in [
        (audit_path(from, to, "&limit=50"), true),
        (content_path(ORG, from, to, "&limit=50"), false),
    ] {
        let mut path = first.clone();
        let mut pages = 0;
        loop {
            let reply = get(a, &path, Some(ALL)).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            assert_eq!(reply.header("content-type"), Some("application/json"));
            let page = reply.json();
            assert_eq!(page["type"], "cursor-list");
            assert_eq!(page["limit"], 50);
            let data = page["data"].as_array().unwrap();
            assert_eq!(page["size"].as_u64(), Some(data.len() as u64));
            for item in data {
                if audit {
                    check_audit_event(item);
                } else {
                    check_content_item(item);
                }
            }
            pages += 1;
            let Some(cursor) = page["cursor"].as_str().filter(|c| !c.is_empty()) else {
                break;
            };
            assert!(cursor.contains('#') && cursor.ends_with("-DDB"), "{cursor}");
            if pages == 1 {
                // Sent raw, the cursor is cut at `#` by the client's URL parser: refused.
                let url = format!("http://{a}{first}&cursor={cursor}");
                let raw = reqwest::Client::new()
                    .get(&url)
                    .bearer_auth(ALL)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(raw.status().as_u16(), 400, "{url}");
            }
            path = format!("{first}&cursor={}", enc(cursor));
        }
        assert!(pages > 2, "several pages were followed");
    }

    // 409 (documented for the audit logs) has Miro's error shape.
    emu.set_faults(Faults {
        conflict_share: 1.0,
        ..Faults::default()
    });
    get(a, &audit_path(from, to, ""), Some(ALL))
        .await
        .miro_error(409);
    let content = get(a, &content_path(ORG, from, to, ""), Some(ALL)).await;
    assert_eq!(content.status, 200, "409 is for the audit logs only");
    assert_eq!(emu.stats().faults.get("conflict"), Some(&1));
}

fn ai_path(org: &str, from: UnixMs, to: UnixMs, extra: &str) -> String {
    format!("/v2/orgs/{org}/ai-interaction-logs?from={from}&to={to}{extra}")
}

/// `8-4-4-4-12` lowercase hex digits.
fn is_uuid(v: &Value) -> bool {
    let Some(s) = v.as_str() else {
        return false;
    };
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| {
            g.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// An AI interaction log entry per the published contract (docs/miro-api.md).
fn check_ai_entry(e: &Value, org_id: &str) {
    let o = e.as_object().unwrap();
    assert!(is_uuid(&e["id"]), "{e}");
    let created = e["createdAt"].as_str().unwrap();
    let stored = e["storedAt"].as_str().unwrap();
    assert!(is_millis_time_with(created, "Z"), "{created}");
    assert!(is_millis_time_with(stored, "Z"), "{stored}");
    assert!(
        UnixMs::parse(created) <= UnixMs::parse(stored),
        "stored after it happened: {e}"
    );
    assert!(is_uuid(&e["sessionId"]) && is_uuid(&e["messageId"]), "{e}");
    assert!(
        e["aiFeatureName"]
            .as_str()
            .is_some_and(|f| f.starts_with("ai_")),
        "{e}"
    );
    assert!(["request", "response"].contains(&e["logType"].as_str().unwrap()));
    let object = &e["object"];
    match object["type"].as_str().unwrap() {
        "board" => assert!(object["id"].as_str().unwrap().starts_with("uXjV"), "{e}"),
        "organization" => assert_eq!(object["id"], org_id),
        other => panic!("object type {other}"),
    }
    assert_eq!(object.as_object().unwrap().len(), 2, "{object}");
    let actor = &e["actor"];
    assert!(is_digits(&actor["id"]), "{actor}");
    assert!(actor["email"].as_str().unwrap().contains('@'), "{actor}");
    assert!(actor["name"].is_string(), "{actor}");
    assert!(e["details"].is_object(), "{e}");
    for key in o.keys() {
        assert!(
            [
                "id",
                "createdAt",
                "storedAt",
                "sessionId",
                "messageId",
                "aiFeatureName",
                "logType",
                "object",
                "actor",
                "details"
            ]
            .contains(&key.as_str()),
            "undocumented field {key}"
        );
    }
}

/// `GET /v2/orgs/{org_id}/ai-interaction-logs` as documented: every field of every page,
/// `limit` 1..=100 (default 100), `sorting` asc/desc, `object_ids`/`emails` filters of at
/// most 15, cursors that need encoding, the scope, the add-on, the org, and Level 4
/// credits; the window is on `storedAt`, so an entry that happened before the window but
/// was stored in it is served in it.
#[tokio::test]
async fn ai_interaction_logs_follow_the_documented_contract() {
    let now = UnixMs::now();
    let mut cfg = config(now);
    cfg.late = LateArrival {
        share: 0.3,
        max_delay: Duration::from_secs(3 * 3600),
    };
    cfg.rate_limit = Some(RateLimit {
        credits_per_minute: 10_000_000,
        retry_after_header: false,
    });
    let emu = start(cfg).await;
    let a = emu.addr();
    let org = emu.org();
    assert_eq!(org.ai_count(), 300);
    let (from, to) = (org.ai_stored_at(20), org.ai_stored_at(280));
    let expected: Vec<String> = org
        .ai_range(from, to)
        .map(|i| org.ai_entry(i)["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(expected.len(), 260);

    // Every page and every entry, cursors only working URL-encoded.
    let first = ai_path(ORG, from, to, "&limit=50");
    let mut path = first.clone();
    let (mut pages, mut ids) = (0, Vec::new());
    loop {
        let reply = get(a, &path, Some(ALL)).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let page = reply.json();
        assert_eq!(page["type"], "cursor-list");
        assert_eq!(page["limit"], 50);
        let data = page["data"].as_array().unwrap();
        assert_eq!(page["size"].as_u64(), Some(data.len() as u64));
        assert!(data.len() <= 50);
        for entry in data {
            check_ai_entry(entry, ORG);
            let stored = UnixMs::parse(entry["storedAt"].as_str().unwrap()).unwrap();
            assert!(from <= stored && stored < to, "{entry}");
            ids.push(entry["id"].as_str().unwrap().to_owned());
        }
        pages += 1;
        let Some(cursor) = page["cursor"].as_str().filter(|c| !c.is_empty()) else {
            break;
        };
        assert!(cursor.contains('#'), "{cursor}");
        if pages == 1 {
            let raw = reqwest::Client::new()
                .get(format!("http://{a}{first}&cursor={cursor}"))
                .bearer_auth(ALL)
                .send()
                .await
                .unwrap();
            assert_eq!(raw.status().as_u16(), 400);
            // A cursor of another stream is not one of this query.
            let other = get(
                a,
                &content_path(ORG, from, to, &format!("&limit=50&cursor={}", enc(cursor))),
                Some(ALL),
            )
            .await;
            other.miro_error(400);
        }
        path = format!("{first}&cursor={}", enc(cursor));
    }
    assert_eq!(pages, 6);
    assert_eq!(ids, expected, "each entry once, ascending by storedAt");

    // The window is on `storedAt`: late entries happened before it began.
    let late_in_window = org
        .ai_range(from, to)
        .filter(|&i| org.ai_created_at(i) < from)
        .count();
    assert!(late_in_window > 0, "some entries were stored late");

    // Default limit, descending order.
    assert_eq!(
        collect_ids(a, &ai_path(ORG, from, to, ""), ALL, 100).await,
        expected
    );
    let mut desc = collect_ids(a, &ai_path(ORG, from, to, "&limit=7&sorting=desc"), ALL, 7).await;
    desc.reverse();
    assert_eq!(desc, expected);

    // Filters: a board (or the organization itself), an actor.
    let all: Vec<Value> = org.ai_range(from, to).map(|i| org.ai_entry(i)).collect();
    let board = all.iter().find(|e| e["object"]["type"] == "board").unwrap()["object"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let want: Vec<String> = all
        .iter()
        .filter(|e| e["object"]["id"] == board.as_str() || e["object"]["id"] == ORG)
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(all.iter().any(|e| e["object"]["type"] == "organization"));
    let extra = format!("&limit=5&object_ids={}&object_ids={ORG}", enc(&board));
    assert_eq!(
        collect_ids(a, &ai_path(ORG, from, to, &extra), ALL, 5).await,
        want
    );
    let email = all[0]["actor"]["email"].as_str().unwrap().to_owned();
    let want: Vec<String> = all
        .iter()
        .filter(|e| e["actor"]["email"] == email.as_str())
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let extra = format!("&emails={}", enc(&email));
    assert_eq!(
        collect_ids(a, &ai_path(ORG, from, to, &extra), ALL, 100).await,
        want
    );

    // Parameters.
    for (extra, key) in [
        ("&limit=101", "limit"),
        ("&limit=0", "limit"),
        ("&sorting=ASC", "sorting"),
        (&*"&object_ids=x".repeat(16), "object_ids"),
        (&*"&emails=a%40b.c".repeat(16), "emails"),
    ] {
        let m = get(a, &ai_path(ORG, from, to, extra), Some(ALL))
            .await
            .miro_error(400);
        assert!(m.contains(key), "{extra}: {m}");
    }
    let m = get(
        a,
        &format!("/v2/orgs/{ORG}/ai-interaction-logs?from={from}"),
        Some(ALL),
    )
    .await
    .miro_error(400);
    assert!(m.contains("to"), "{m}");
    let m = get(
        a,
        &format!("/v2/orgs/{ORG}/ai-interaction-logs?from=2024-01-01T00:00:00%2B02:00&to={to}"),
        Some(ALL),
    )
    .await
    .miro_error(400);
    assert!(m.contains("from"), "{m}");

    // Auth, scope, org, add-on.
    get(a, &ai_path(ORG, from, to, ""), None)
        .await
        .miro_error(401);
    let m = get(a, &ai_path(ORG, from, to, ""), Some(AUDIT_ONLY))
        .await
        .miro_error(403);
    assert!(m.contains("aiinteractionlogs:read"), "{m}");
    get(a, &ai_path("1", from, to, ""), Some(ALL))
        .await
        .miro_error(404);
    emu.set_enterprise_guard(false);
    let m = get(a, &ai_path(ORG, from, to, ""), Some(ALL))
        .await
        .miro_error(403);
    assert!(m.contains("Enterprise Guard"), "{m}");
    emu.set_enterprise_guard(true);

    // Level 4: 2000 credits a call, like content logs.
    let one = get(a, &ai_path(ORG, from, to, "&limit=1"), Some(ALL)).await;
    let two = get(a, &ai_path(ORG, from, to, "&limit=1"), Some(ALL)).await;
    let remaining =
        |r: &HttpReply| -> i64 { r.header("x-ratelimit-remaining").unwrap().parse().unwrap() };
    if one.header("x-ratelimit-reset") == two.header("x-ratelimit-reset") {
        assert_eq!(remaining(&one) - remaining(&two), 2000);
    }
    let stats = emu.stats();
    assert!(stats.ai_requests > 10);
    assert_eq!(
        stats.credits_spent,
        // Every AI call but the one without a token was charged.
        stats.audit_requests * 100 + (stats.content_requests + stats.ai_requests - 1) * 2000
    );
    emu.shutdown().await;
}

/// Entries are served from their `storedAt` on, whatever their `createdAt`.
#[tokio::test]
async fn ai_entries_are_served_once_stored() {
    let now = UnixMs::now();
    let mut cfg = config(now);
    cfg.ai = StreamShape {
        count: 200,
        start: now.minus(Duration::from_secs(60)),
        end: now.plus(Duration::from_secs(60)),
    };
    let emu = start(cfg).await;
    let org = emu.org();
    let (from, to) = (
        now.minus(Duration::from_secs(120)),
        now.plus(Duration::from_secs(120)),
    );
    let before = UnixMs::now();
    let got: HashSet<String> = collect_ids(emu.addr(), &ai_path(ORG, from, to, ""), ALL, 100)
        .await
        .into_iter()
        .collect();
    let after = UnixMs::now();
    for i in 0..200 {
        let id = org.ai_entry(i)["id"].as_str().unwrap().to_owned();
        if org.ai_stored_at(i) <= before {
            assert!(got.contains(&id), "stored entry {i} missing");
        }
        if org.ai_stored_at(i) > after {
            assert!(!got.contains(&id), "entry {i} served before it was stored");
        }
    }
    assert!((60..=140).contains(&got.len()), "{}", got.len());
    emu.shutdown().await;
}

fn oauth_app(lifetime: Duration) -> OAuthApp {
    OAuthApp {
        client_id: "3458764500000000001".to_owned(),
        client_secret: "emu-client-secret".to_owned(),
        scopes: vec!["auditlogs:read".to_owned()],
        access_lifetime: lifetime,
    }
}

async fn token_request(base: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let reply = reqwest::Client::new()
        .post(format!("{base}/v1/oauth/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = reply.status().as_u16();
    (status, reply.json().await.unwrap())
}

#[tokio::test]
async fn refresh_rotates_the_pair_and_the_old_refresh_token_dies() {
    let emu = start(config(UnixMs::now())).await;
    let app = oauth_app(Duration::from_secs(2));
    emu.enable_oauth(app.clone());
    let base = emu.base_url();
    let first = emu.issue_refresh_token();
    let refresh = |rt: String| {
        let (base, app) = (base.clone(), app.clone());
        async move {
            token_request(
                &base,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &rt),
                    ("client_id", &app.client_id),
                    ("client_secret", &app.client_secret),
                ],
            )
            .await
        }
    };
    let (status, body) = refresh(first.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 1);
    assert!(body["team_id"].is_u64(), "team_id is a number: {body}");
    let access = body["access_token"].as_str().unwrap().to_owned();
    let second = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);

    let info = get(emu.addr(), "/v1/oauth-token", Some(&access)).await;
    assert_eq!(info.status, 200, "the new access token works");

    let (status, body) = refresh(first).await;
    assert_eq!(status, 400, "a used refresh token is refused");
    assert_eq!(body["error"], "invalid_grant");

    let (status, body) = token_request(
        &base,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &second),
            ("client_id", &app.client_id),
            ("client_secret", "wrong"),
        ],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_client");
    let (status, body) = refresh(second).await;
    assert_eq!(
        status, 200,
        "a refused client does not spend the refresh token"
    );
    let info = get(emu.addr(), "/v1/oauth-token", Some(&access)).await;
    assert_eq!(
        info.status, 401,
        "a refresh invalidates the old access token too"
    );
    let access = body["access_token"].as_str().unwrap().to_owned();
    let info = get(emu.addr(), "/v1/oauth-token", Some(&access)).await;
    assert_eq!(info.status, 200);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let info = get(emu.addr(), "/v1/oauth-token", Some(&access)).await;
    assert_eq!(info.status, 401, "the access token expired");
    let stats = emu.oauth_stats();
    assert_eq!((stats.refreshes, stats.rejected_refresh_tokens), (2, 1));
}

#[tokio::test]
async fn authorize_redirects_with_a_code_that_works_once_for_its_redirect_uri() {
    let emu = start(config(UnixMs::now())).await;
    let app = oauth_app(Duration::from_secs(3600));
    emu.enable_oauth(app.clone());
    let base = emu.base_url();
    let redirect = "http://127.0.0.1:9/callback";
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let reply = client
        .get(format!("{base}/oauth/authorize"))
        .query(&[
            ("response_type", "code"),
            ("client_id", app.client_id.as_str()),
            ("redirect_uri", redirect),
            ("state", "s1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 302);
    let location = url::Url::parse(reply.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(location.path(), "/callback");
    let pairs: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(pairs["state"], "s1");
    let code = pairs["code"].clone();
    let exchange = |uri: &'static str| {
        let (base, app, code) = (base.clone(), app.clone(), code.clone());
        async move {
            token_request(
                &base,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", uri),
                    ("client_id", &app.client_id),
                    ("client_secret", &app.client_secret),
                ],
            )
            .await
        }
    };
    let (status, body) = exchange("http://127.0.0.1:9/other").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, body) = exchange(redirect).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["refresh_token"].is_string());
    let (status, _) = exchange(redirect).await;
    assert_eq!(status, 400, "a code works once");
}

/// Asserts two replies are the same status, content type and body, byte for byte; on a
/// difference shows where the bodies part.
fn assert_same_reply(fast: &HttpReply, oracle: &HttpReply, what: &str) {
    assert_eq!(fast.status, oracle.status, "{what}");
    assert_eq!(
        fast.header("content-type"),
        oracle.header("content-type"),
        "{what}"
    );
    if fast.body != oracle.body {
        let (a, b) = (fast.body.as_bytes(), oracle.body.as_bytes());
        let at = a.iter().zip(b).take_while(|(x, y)| x == y).count();
        let window = |s: &[u8]| {
            String::from_utf8_lossy(&s[at.saturating_sub(80)..(at + 80).min(s.len())]).into_owned()
        };
        panic!(
            "{what}: bodies differ at byte {at} (lengths {} and {})\n served: {}\n oracle: {}",
            a.len(),
            b.len(),
            window(a),
            window(b)
        );
    }
}

/// Follows one query's cursors on both emulators with the same requests in the same
/// order (faults are a function of the request number, so both draw the same), retrying
/// a request that failed; compares every reply. Returns the number of items compared.
async fn walk_both(fast: SocketAddr, oracle: SocketAddr, first: &str) -> usize {
    let mut path = first.to_owned();
    let mut items = 0;
    for _ in 0..3_000 {
        let a = get(fast, &path, Some(ALL)).await;
        let b = get(oracle, &path, Some(ALL)).await;
        assert_same_reply(&a, &b, &path);
        if a.status != 200 {
            continue;
        }
        // The hostile value nests beyond serde_json's depth limit: read it as a number.
        let hostile = serde_json::to_string(super::org::hostile_value()).unwrap();
        let Ok(page) = serde_json::from_str::<Value>(&a.body.replace(&hostile, "0")) else {
            continue; // a truncated or HTML page: asked again
        };
        items += page["data"].as_array().map_or(0, Vec::len);
        match page.get("cursor").and_then(Value::as_str) {
            // An oversized cursor cannot be sent back: start the query again.
            Some(c) if c.len() > 4096 => path = first.to_owned(),
            Some(c) if !c.is_empty() => path = format!("{first}&cursor={}", enc(c)),
            _ => return items,
        }
    }
    panic!("paging of {first} did not end");
}

#[tokio::test]
async fn served_pages_match_the_value_oracle_byte_for_byte() {
    let now = UnixMs::now();
    let forms = [
        TimeForm::MillisPlus0000,
        TimeForm::MillisZ,
        TimeForm::MillisColonOffset,
        TimeForm::NoFraction,
        TimeForm::MicrosZ,
        TimeForm::NanosAtOffset,
        TimeForm::Mixed,
    ];
    let mixed = Faults {
        server_error_share: 0.05,
        truncate_share: 0.1,
        html_share: 0.05,
        expire_cursor_share: 0.1,
        repeat_cursor_share: 0.1,
        duplicate_item_share: 0.3,
        throttle_share: 0.05,
        stray_items_share: 0.3,
        empty_page_share: 0.1,
        hostile_item_share: 0.05,
        conflict_share: 0.05,
        markup_in_names: true,
        ..Faults::default()
    };
    let every_page = Faults {
        duplicate_item_share: 1.0,
        stray_items_share: 1.0,
        hostile_item_share: 0.5,
        ..Faults::default()
    };
    let names = [
        "Test Org",
        "Ünïcödé \"Quoted\" \\ Org\t✓ 😀",
        "<b>Acme</b> & Co\u{1}\u{7f}",
    ];
    let mut compared = 0;
    for (round, form) in forms.into_iter().enumerate() {
        let mut c = config(now);
        let span = Duration::from_secs(3 * 86_400);
        let begin = now.minus(span).minus(Duration::from_secs(3600));
        let end = now.minus(Duration::from_secs(3600));
        let round_u64 = u64::try_from(round).unwrap();
        c.seed = 1000 + round_u64 * 7919;
        c.org_id = format!("30744573458211410{round:02}");
        c.org_name = names[round % names.len()].to_owned();
        for shape in [&mut c.audit, &mut c.content, &mut c.ai] {
            *shape = StreamShape {
                count: 1500 + 250 * round_u64,
                start: begin,
                end,
            };
        }
        // Dense milliseconds (several items per ms) in one round.
        if round == 3 {
            c.content.end = begin.plus(Duration::from_millis(300));
        }
        c.late = LateArrival {
            share: [0.0, 0.1, 0.5][round % 3],
            max_delay: Duration::from_secs(30),
        };
        c.audit_time_form = form;
        c.content_time_form = forms[(round + 3) % forms.len()];
        c.scenarios = Scenario::ALL.to_vec();
        c.faults = match round % 3 {
            0 => Faults::default(),
            1 => mixed.clone(),
            _ => every_page.clone(),
        };
        c.last_page_cursor = [
            LastPageCursor::Omit,
            LastPageCursor::Empty,
            LastPageCursor::Null,
        ][round % 3];
        let org_id = c.org_id.clone();
        let fast = start(c.clone()).await;
        let oracle = start(c).await;
        oracle.serve_from_value_oracle();
        if round == 1 {
            fast.hand_out_oversized_cursors(1);
            oracle.hand_out_oversized_cursors(1);
        }
        let (from, to) = (begin, now);
        let (f, o) = (fast.addr(), oracle.addr());
        let limit = [7, 100, 500][round % 3];
        let sorting = ["ASC", "DESC"][round % 2];
        let audit = walk_both(
            f,
            o,
            &audit_path(from, to, &format!("&limit={limit}&sorting={sorting}")),
        )
        .await;
        let content_sorting = ["asc", "desc"][round % 2];
        let content = walk_both(
            f,
            o,
            &content_path(&org_id, from, to, &format!("&sorting={content_sorting}")),
        )
        .await;
        let ai = walk_both(f, o, &ai_path(&org_id, from, to, "&limit=100")).await;
        let org = fast.org();
        // Every scenario's burst is among the items served (not in the dense round's
        // content, whose 300 ms hold no scenario hour).
        for (sc, burst) in org.scenario_ranges() {
            let count = if sc.in_content() {
                org.content_count()
            } else {
                org.audit_count()
            };
            assert!(
                burst.end <= count || (round == 3 && sc.in_content()),
                "round {round}: {sc:?} at {burst:?}"
            );
        }
        assert!(audit as u64 >= org.audit_count(), "round {round}: {audit}");
        assert!(
            content as u64 >= org.content_count(),
            "round {round}: {content}"
        );
        assert!(ai as u64 >= org.ai_count(), "round {round}: {ai}");
        // A filtered content query, and a body fault that replaces a page (sent with
        // its length: the test client reads no chunked bodies).
        let board = org.audit_event(0)["object"]["id"]
            .as_str()
            .map(str::to_owned);
        if let Some(board) = board {
            let filtered = content_path(&org_id, from, to, &format!("&board_ids={}", enc(&board)));
            compared += walk_both(f, o, &filtered).await;
        }
        let fault = BodyFault::Huge {
            bytes: 100_000,
            announce_length: true,
        };
        fast.set_body_fault(Some(fault));
        oracle.set_body_fault(Some(fault));
        let path = audit_path(from, to, "&limit=10");
        let (a, b) = (
            get(f, &path, Some(ALL)).await,
            get(o, &path, Some(ALL)).await,
        );
        assert_same_reply(&a, &b, "body fault");
        fast.set_body_fault(None);
        oracle.set_body_fault(None);
        compared += audit + content + ai;
        assert_eq!(fast.stats().faults, oracle.stats().faults, "round {round}");
        assert_eq!(fast.stats().items_served, oracle.stats().items_served);
        fast.shutdown().await;
        oracle.shutdown().await;
    }
    assert!(compared > 40_000, "{compared}");
}
