//! The emulator against the documented HEC behaviour (`docs/splunk-hec.md`), over loopback.

use serde_json::{Value, json};

use super::*;

const CHANNEL: &str = "0aeeac95-ac74-4aa9-b30d-6c4c0ac581ba";

async fn start(config: SplunkEmulatorConfig) -> (SplunkEmulatorHandle, String) {
    let token = config.token.clone();
    let h = SplunkEmulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (h, token)
}

async fn post(
    h: &SplunkEmulatorHandle,
    path: &str,
    auth: Option<&str>,
    channel: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .post(format!("{}{path}", h.base_url()))
        .body(body.to_string());
    if let Some(a) = auth {
        r = r.header("Authorization", a);
    }
    if let Some(c) = channel {
        r = r.header("X-Splunk-Request-Channel", c);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn tokens_channels_and_bodies_are_checked_in_hec_order() {
    let (h, token) = start(SplunkEmulatorConfig::default()).await;
    let auth = format!("Splunk {token}");
    let ev = "/services/collector/event";
    let one = r#"{"event":{"id":"x"},"index":"miro"}"#;
    assert_eq!(
        post(&h, ev, None, None, one).await,
        (401, json!({"text":"Token is required","code":2}))
    );
    assert_eq!(
        post(&h, ev, Some(&format!("Bearer {token}")), None, one)
            .await
            .1["code"],
        3
    );
    assert_eq!(
        post(&h, ev, Some("Splunk nope"), None, one).await,
        (403, json!({"text":"Invalid token","code":4}))
    );
    // The token first, then the channel, then the body.
    assert_eq!(post(&h, ev, Some(&auth), None, "").await.1["code"], 10);
    assert_eq!(
        post(&h, ev, Some(&auth), Some("not-a-guid"), one).await.1["code"],
        11
    );
    assert_eq!(
        post(&h, ev, Some(&auth), Some(CHANNEL), "").await,
        (400, json!({"text":"No data","code":5}))
    );
    h.set_token_enabled(false);
    assert_eq!(
        post(&h, ev, Some(&auth), Some(CHANNEL), one).await.1["code"],
        1
    );
    h.set_token_enabled(true);
    assert!(h.indexed().is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn a_batch_stops_at_its_first_bad_event() {
    let (h, token) = start(SplunkEmulatorConfig {
        ack_enabled: false,
        ..SplunkEmulatorConfig::default()
    })
    .await;
    let auth = format!("Splunk {token}");
    let ev = "/services/collector/event";
    let body = r#"{"event":"a"}{"event":"b","index":"nope"}{"event":"c"}"#;
    assert_eq!(
        post(&h, ev, Some(&auth), None, body).await,
        (
            400,
            json!({"text":"Incorrect index","code":7,"invalid-event-number":1})
        )
    );
    let body = "{\"event\":\"d\"}\n{\"time\":1}\n";
    assert_eq!(post(&h, ev, Some(&auth), None, body).await.1["code"], 12);
    assert_eq!(
        post(&h, ev, Some(&auth), None, r#"{"event":""}"#).await.1["code"],
        13
    );
    assert_eq!(
        post(&h, ev, Some(&auth), None, r#"{"event":"e"} [1]"#)
            .await
            .1["invalid-event-number"],
        1
    );
    let events: Vec<Value> = h.indexed().iter().map(|e| e["event"].clone()).collect();
    assert_eq!(
        events,
        [json!("a"), json!("d"), json!("e")],
        "the events before each bad one"
    );
    assert_eq!(h.indexed()[0]["index"], "main", "the token's default index");
    // Without indexer acknowledgement: no ackId, and the ack endpoint says so.
    assert_eq!(
        post(&h, ev, Some(&auth), None, r#"{"event":"f"}"#).await,
        (200, json!({"text":"Success","code":0}))
    );
    assert_eq!(
        post(
            &h,
            "/services/collector/ack",
            Some(&auth),
            Some(CHANNEL),
            r#"{"acks":[0]}"#
        )
        .await
        .1["code"],
        14
    );
    h.shutdown().await;
}

#[tokio::test]
async fn ack_ids_count_per_channel_and_are_forgotten_once_reported() {
    let (h, token) = start(SplunkEmulatorConfig::default()).await;
    let auth = format!("Splunk {token}");
    let ev = "/services/collector/event";
    let other = "1aeeac95-ac74-4aa9-b30d-6c4c0ac581ba";
    assert_eq!(
        post(&h, ev, Some(&auth), Some(CHANNEL), r#"{"event":1}"#)
            .await
            .1["ackId"],
        0
    );
    assert_eq!(
        post(&h, ev, Some(&auth), Some(CHANNEL), r#"{"event":2}"#)
            .await
            .1["ackId"],
        1
    );
    assert_eq!(
        post(&h, ev, Some(&auth), Some(other), r#"{"event":3}"#)
            .await
            .1["ackId"],
        0
    );
    let ack = "/services/collector/ack";
    assert_eq!(
        post(&h, ack, Some(&auth), Some(CHANNEL), r#"{"acks":[0,1,7]}"#).await,
        (200, json!({"acks":{"0":true,"1":true,"7":false}}))
    );
    assert_eq!(
        post(&h, ack, Some(&auth), Some(CHANNEL), r#"{"acks":[0]}"#)
            .await
            .1,
        json!({"acks":{"0":false}}),
        "reported once, then forgotten"
    );
    assert_eq!(h.stats().channels, 2);
    // Accepted but never indexed: the ack stays false and nothing is indexed.
    h.set_faults(SplunkFaults {
        never_indexed_share: 1.0,
        ..SplunkFaults::default()
    });
    let id = post(&h, ev, Some(&auth), Some(CHANNEL), r#"{"event":4}"#)
        .await
        .1["ackId"]
        .clone();
    let body = json!({"acks": [id]}).to_string();
    assert_eq!(
        post(&h, ack, Some(&auth), Some(CHANNEL), &body).await.1["acks"]["2"],
        false
    );
    assert_eq!(h.indexed().len(), 3);
    h.shutdown().await;
}
