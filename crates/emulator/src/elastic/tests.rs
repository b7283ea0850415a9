//! The emulator over loopback HTTP, against the documented `_bulk` behaviour.

use super::*;

async fn start(config: ElasticEmulatorConfig) -> ElasticEmulatorHandle {
    ElasticEmulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

async fn bulk(h: &ElasticEmulatorHandle, auth: &str, body: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/_bulk", h.base_url()))
        .header("Authorization", auth)
        .header("Content-Type", "application/x-ndjson")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

fn key() -> String {
    format!("ApiKey {}", ElasticEmulatorConfig::default().api_key)
}

#[tokio::test]
async fn create_stores_once_and_answers_409_for_a_taken_id() {
    let h = start(ElasticEmulatorConfig::default()).await;
    let body = "{\"create\":{\"_index\":\"logs-miro.audit-default\",\"_id\":\"a#1\"}}\n\
                {\"@timestamp\":\"2024-05-01T10:00:00.000Z\",\"x\":1}\n\
                {\"create\":{\"_index\":\"logs-miro.audit-default\",\"_id\":\"a#2\"}}\n\
                {\"x\":2}\n";
    let (status, answer) = bulk(&h, &key(), body).await;
    assert_eq!(status, 200);
    assert_eq!(answer["errors"], true);
    assert_eq!(answer["items"][0]["create"]["status"], 201);
    // A data stream needs `@timestamp`.
    assert_eq!(answer["items"][1]["create"]["status"], 400);
    let (_, again) = bulk(&h, &key(), body).await;
    assert_eq!(again["items"][0]["create"]["status"], 409);
    assert_eq!(
        again["items"][0]["create"]["error"]["type"],
        "version_conflict_engine_exception"
    );
    assert_eq!(h.stored().len(), 1);
    // `index` into a data stream is refused: only `create` is allowed there.
    let (_, index) = bulk(
        &h,
        &key(),
        "{\"index\":{\"_index\":\"logs-miro.audit-default\",\"_id\":\"z\"}}\n{\"@timestamp\":\"2024-05-01T10:00:00.000Z\"}\n",
    )
    .await;
    assert_eq!(index["items"][0]["index"]["status"], 400);
    h.shutdown().await;
}

#[tokio::test]
async fn credentials_framing_and_faults_follow_the_contract() {
    let config = ElasticEmulatorConfig {
        faults: ElasticFaults {
            mapping_error_ids: vec!["bad".into()],
            ..ElasticFaults::default()
        },
        ..ElasticEmulatorConfig::default()
    };
    let basic = format!("Basic {}", base64(b"elastic:emulator-password"));
    let h = start(config).await;
    let one = "{\"create\":{\"_index\":\"miro\",\"_id\":\"bad\"}}\n{\"x\":1}\n";
    let (status, answer) = bulk(&h, "ApiKey wrong", one).await;
    assert_eq!(status, 401);
    assert_eq!(answer["error"]["type"], "security_exception");
    let (status, answer) = bulk(&h, &basic, one).await;
    assert_eq!(status, 200);
    assert_eq!(answer["items"][0]["create"]["status"], 400);
    assert_eq!(
        answer["items"][0]["create"]["error"]["type"],
        "mapper_parsing_exception"
    );
    let (status, _) = bulk(&h, &key(), one.trim_end()).await;
    assert_eq!(status, 400, "the body must end with a newline");
    h.set_faults(ElasticFaults {
        item_reject_share: 1.0,
        ..ElasticFaults::default()
    });
    let (_, answer) = bulk(
        &h,
        &key(),
        "{\"create\":{\"_index\":\"miro\",\"_id\":\"ok\"}}\n{}\n",
    )
    .await;
    assert_eq!(answer["items"][0]["create"]["status"], 429);
    assert!(h.stored().is_empty());
    h.shutdown().await;
}
