//! The tricky fields of the OCSF encoding. The schema itself is checked by a real OCSF
//! validator in the integration tests (`tests/it/ocsf.rs`).

use super::*;

fn encoded(source: SourceKind, raw: &str) -> Value {
    let mut out = Vec::new();
    encode(source, raw, &mut out).unwrap();
    assert!(!out.contains(&b'\n'), "one object, no newline");
    serde_json::from_slice(&out).unwrap()
}

const SIGN_IN_FAILED: &str = r#"{"id":"2023-09-01T09:30:10.840687Z#1234567890123456789-DDB","type":"event","event":"sign_in_failed","category":"authentication","createdAt":"2023-09-01T09:30:10.840+0000","createdBy":{"type":"user","id":"3074457345821141000","name":"Ada Berg","email":"ada@acme.example"},"object":{"id":"3074457345821141000","name":"Ada Berg"},"context":{"ip":"198.18.7.7","organization":{"id":"1","name":"Acme","type":"organization"}},"details":{"reason":"INVALID_PASSWORD","big":30744573469876543210123}}"#;

#[test]
fn a_failed_sign_in_is_an_authentication_logon_that_failed() {
    let e = encoded(SourceKind::AuditLogs, SIGN_IN_FAILED);
    assert_eq!(e["class_uid"], 3002);
    assert_eq!(e["category_uid"], 3);
    assert_eq!(e["activity_id"], 1);
    assert_eq!(e["activity_name"], "Logon");
    assert_eq!(e["type_uid"], 300201);
    assert_eq!(e["status_id"], 2);
    assert_eq!(e["status"], "Failure");
    assert_eq!(e["status_detail"], "INVALID_PASSWORD");
    assert_eq!(e["user"]["uid"], "3074457345821141000");
    assert_eq!(e["user"]["email_addr"], "ada@acme.example");
    assert_eq!(e["actor"]["user"]["name"], "Ada Berg");
    assert_eq!(e["actor"]["user"]["type_id"], 1);
    assert_eq!(e["src_endpoint"]["ip"], "198.18.7.7");
    assert_eq!(e["service"]["name"], "Miro");
    assert_eq!(e["metadata"]["version"], OCSF_VERSION);
    assert_eq!(e["metadata"]["product"]["name"], "Miro");
    assert_eq!(e["metadata"]["product"]["vendor_name"], "Miro");
    assert_eq!(e["metadata"]["log_name"], "audit_logs");
    assert_eq!(e["metadata"]["event_code"], "sign_in_failed");
    assert_eq!(
        e["metadata"]["uid"],
        "2023-09-01T09:30:10.840687Z#1234567890123456789-DDB"
    );
    // Authentication has its own actor: no profile needed.
    assert!(e["metadata"].get("profiles").is_none());
}

#[test]
fn time_is_epoch_ms_from_every_form_miro_sends_and_the_text_is_kept() {
    // 2023-09-01T09:30:10.840Z
    let expected = 1_693_560_610_840_i64;
    for text in [
        "2023-09-01T09:30:10.840+0000",
        "2023-09-01T09:30:10.840Z",
        "2023-09-01T11:30:10.840+02:00",
        "2023-09-01T09:30:10.840999Z",
    ] {
        let raw = format!(r#"{{"id":"1","event":"board_opened","createdAt":"{text}"}}"#);
        let e = encoded(SourceKind::AuditLogs, &raw);
        assert_eq!(e["time"].as_i64(), Some(expected), "{text}");
        assert_eq!(e["metadata"]["original_time"], text);
    }
    let content = r#"{"id":"c1","actionType":"update","actionTime":"2023-09-01T09:30:10.840Z"}"#;
    assert_eq!(
        encoded(SourceKind::ContentLogs, content)["time"].as_i64(),
        Some(expected)
    );
}

#[test]
fn numbers_beyond_2_pow_53_and_numeric_ids_keep_every_digit() {
    let e = encoded(SourceKind::AuditLogs, SIGN_IN_FAILED);
    let text = e.to_string();
    assert!(
        text.contains(r#""big":30744573469876543210123"#),
        "unmapped keeps the digits: {text}"
    );
    assert_eq!(
        e["raw_data"], SIGN_IN_FAILED,
        "raw_data is the item as sent"
    );
    let raw = r#"{"id":30744573458211410001234,"event":"board_opened","createdAt":"2024-01-01T00:00:00Z","createdBy":{"id":3074457345821141000123}}"#;
    let e = encoded(SourceKind::AuditLogs, raw);
    assert_eq!(e["metadata"]["uid"], "30744573458211410001234");
    assert_eq!(e["actor"]["user"]["uid"], "3074457345821141000123");
}

#[test]
fn type_uid_is_class_uid_times_100_plus_activity_id_for_every_mapped_event() {
    for (name, mapping) in AUDIT_EVENTS {
        let raw = format!(
            r#"{{"id":"1","event":"{name}","createdAt":"2024-01-01T00:00:00Z","createdBy":{{"id":"1"}}}}"#
        );
        let e = encoded(SourceKind::AuditLogs, &raw);
        assert_eq!(e["class_uid"], mapping.class.uid(), "{name}");
        assert_eq!(e["activity_id"], mapping.activity_id, "{name}");
        assert_eq!(
            e["type_uid"].as_u64(),
            Some(u64::from(mapping.class.uid()) * 100 + u64::from(mapping.activity_id)),
            "{name}"
        );
        assert_eq!(
            e["metadata"].get("profiles").is_some(),
            mapping.class.needs_host_profile(),
            "{name}: the host profile is declared exactly where actor needs it"
        );
    }
}

#[test]
fn an_unknown_event_is_a_base_event_with_activity_other_never_dropped() {
    let raw = r#"{"id":"x1","event":"quantum_board_teleported","category":"wormholes","createdAt":"2024-01-01T00:00:00Z","createdBy":{"type":"application","id":"7","name":"Acme Sync"},"context":{"ip":"10.0.0.1"}}"#;
    let e = encoded(SourceKind::AuditLogs, raw);
    assert_eq!(e["class_uid"], 0);
    assert_eq!(e["category_uid"], 0);
    assert_eq!(e["activity_id"], 99);
    assert_eq!(e["type_uid"], 99);
    assert_eq!(e["status_id"], 0);
    assert_eq!(e["message"], "quantum_board_teleported");
    // Base Event has no actor in OCSF 1.1: Miro's stays in `unmapped`.
    assert!(e.get("actor").is_none());
    assert_eq!(e["unmapped"]["createdBy"]["name"], "Acme Sync");
    // Base Event has no src_endpoint: the address stays in `unmapped`.
    assert_eq!(e["unmapped"]["context"]["ip"], "10.0.0.1");
    assert_eq!(e["unmapped"]["category"], "wormholes");
}

#[test]
fn an_application_actor_is_a_user_of_type_other_with_miros_word() {
    let raw = r#"{"id":"a1","event":"user_role_changed","createdAt":"2024-01-01T00:00:00Z","createdBy":{"type":"application","id":"7","name":"Acme Sync","email":""},"object":{"id":"9"}}"#;
    let e = encoded(SourceKind::AuditLogs, raw);
    assert!(
        e["actor"]["user"].get("email_addr").is_none(),
        "an empty address is no address"
    );
    assert_eq!(e["actor"]["user"]["type_id"], 99);
    assert_eq!(e["actor"]["user"]["type"], "application");
}

#[test]
fn a_role_change_assigns_the_new_role_to_the_object_user() {
    let raw = r#"{"id":"r1","event":"user_role_changed","category":"users","createdAt":"2024-01-01T00:00:00Z","createdBy":{"type":"user","id":"1","email":"ada@acme.example"},"object":{"id":"9","name":"Zoe Costa"},"details":{"oldRole":"MEMBER","newRole":"ADMIN"}}"#;
    let e = encoded(SourceKind::AuditLogs, raw);
    assert_eq!(e["class_uid"], 3005);
    assert_eq!(e["type_uid"], 300501);
    assert_eq!(e["user"]["uid"], "9");
    assert_eq!(e["user"]["name"], "Zoe Costa");
    assert_eq!(e["privileges"], json!(["ADMIN"]));
    assert_eq!(e["actor"]["user"]["email_addr"], "ada@acme.example");
    assert_eq!(e["metadata"]["profiles"], json!(["host"]));
    assert_eq!(e["unmapped"]["details"]["oldRole"], "MEMBER");
}

#[test]
fn content_actions_are_web_resource_activities_on_the_item_and_its_board() {
    let raw = r#"{"id":"c1","contentId":"uXjVOD6LSME=","actionType":"delete","actionTime":"2024-01-01T00:00:00Z","actor":{"id":"5","email":"bo@acme.example","name":"Bo"},"itemType":"widget","itemId":"3458764512345678901","state":null,"relationships":[]}"#;
    let e = encoded(SourceKind::ContentLogs, raw);
    assert_eq!(e["class_uid"], 6001);
    assert_eq!(e["activity_id"], 4);
    assert_eq!(e["activity_name"], "Delete");
    assert_eq!(e["type_uid"], 600104);
    assert_eq!(
        e["web_resources"],
        json!([{"uid": "3458764512345678901", "type": "widget"}, {"uid": "uXjVOD6LSME=", "type": "board"}])
    );
    assert_eq!(e["actor"]["user"]["email_addr"], "bo@acme.example");
    assert_eq!(e["metadata"]["log_name"], "content_logs");
    assert_eq!(e["unmapped"]["state"], Value::Null);
    let odd = r#"{"id":"c2","actionType":"archive","actionTime":"2024-01-01T00:00:00Z"}"#;
    let e = encoded(SourceKind::ContentLogs, odd);
    assert_eq!(e["activity_id"], 99);
    assert_eq!(e["type_uid"], 600199);
}

#[test]
fn ai_entries_keep_when_they_happened_and_when_miro_logged_them() {
    let raw = r#"{"id":"5b7c0e4e-1d2a-4f1e-9d6a-0b0c7e3f1a2b","createdAt":"2024-05-01T12:00:00.000Z","storedAt":"2024-05-01T12:00:02.500Z","sessionId":"s1","messageId":"m1","aiFeatureName":"ai_generate_sticky_notes","logType":"request","object":{"id":"uXjVOD6LSME=","type":"board"},"actor":{"id":"u1","email":"ada@acme.example"},"details":{"big":30744573469876543210123}}"#;
    let e = encoded(SourceKind::AiInteractionLogs, raw);
    assert_eq!(e["class_uid"], 6001);
    assert_eq!(e["activity_id"], 99);
    assert_eq!(e["activity_name"], "ai_generate_sticky_notes");
    assert_eq!(e["type_name"], "Web Resources Activity: Other");
    assert_eq!(e["time"].as_i64(), Some(1_714_564_800_000));
    assert_eq!(
        e["metadata"]["logged_time"].as_i64(),
        Some(1_714_564_802_500)
    );
    assert_eq!(e["metadata"]["correlation_uid"], "s1");
    assert_eq!(e["metadata"]["log_name"], "ai_interaction_logs");
    assert_eq!(
        e["web_resources"],
        json!([{"uid": "uXjVOD6LSME=", "type": "board"}])
    );
    assert_eq!(e["unmapped"]["logType"], "request");
    assert!(e.to_string().contains("30744573469876543210123"));
}

#[test]
fn an_item_without_a_time_or_not_an_object_is_refused_with_the_reason() {
    let mut out = Vec::new();
    let err = encode(
        SourceKind::AuditLogs,
        r#"{"id":"n1","event":"board_opened","createdAt":"2024-01-01T00:00:00"}"#,
        &mut out,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("n1") && text.contains("createdAt"), "{text}");
    let err = encode(SourceKind::ContentLogs, "[1,2]", &mut out).unwrap_err();
    assert!(err.to_string().contains("an array"), "{err}");
    assert!(out.is_empty(), "nothing is written for a refused item");
}

#[test]
fn an_address_or_email_ocsf_would_refuse_is_left_out_not_written() {
    let raw = r#"{"id":"1","event":"sign_in_succeeded","createdAt":"2024-01-01T00:00:00Z","createdBy":{"email":"zoë@acme.example"},"context":{"ip":"unknown"}}"#;
    let e = encoded(SourceKind::AuditLogs, raw);
    assert!(e.get("src_endpoint").is_none());
    assert_eq!(e["unmapped"]["context"]["ip"], "unknown");
    assert!(e["user"].get("email_addr").is_none());
    // An address alone still names the user, as OCSF requires one.
    assert_eq!(e["user"]["name"], "zoë@acme.example");
    for good in ["ada.berg+x@acme.example", "a_b-c@sub.acme.example"] {
        assert!(is_email(good), "{good}");
    }
    for bad in [
        "",
        "ada",
        "ada@",
        "@acme.example",
        "ada@acme",
        "zoë@acme.example",
        "a b@c.d",
    ] {
        assert!(!is_email(bad), "{bad}");
    }
    let raw = r#"{"id":"2","event":"board_opened","createdAt":"2024-01-01T00:00:00Z","context":{"ip":"2001:db8::7"}}"#;
    assert_eq!(
        encoded(SourceKind::AuditLogs, raw)["src_endpoint"]["ip"],
        "2001:db8::7"
    );
}
