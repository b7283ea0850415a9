//! OCSF output checked by an independent OCSF implementation: the real binary collects an
//! emulated organisation (every event of the emulator's vocabulary, every attack scenario,
//! content and AI interaction logs) into a `file` sink with `format = "ocsf"`, and every
//! line is validated against the OCSF 1.1.0 schema by `tests/ocsf_validate.py` (the
//! `ocsf-json-schema` package's JSON Schemas with `jsonschema`). The event names the
//! detection rules use, their samples and unknown names are validated the same way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use mirotrail::config::SourceKind;
use mirotrail::detect::samples::sample_items;
use mirotrail_emulator::UnixMs;
use mirotrail_emulator::miro::{Scenario, StreamShape, audit_event_names};
use serde_json::Value;

use crate::support::*;

/// Runs the validator on `files`; returns its summary (`valid`, `invalid`, `classes`) and
/// its output, or fails naming what to install.
fn validate(files: &[PathBuf]) -> (Value, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ocsf_validate.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(mirotrail::ocsf::OCSF_VERSION)
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 for the OCSF validator: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ne!(
        out.status.code(),
        Some(3),
        "the OCSF validator needs the Python packages `ocsf-json-schema` and `jsonschema` \
         (python3 -m pip install ocsf-json-schema jsonschema), as .ci/run installs them: {stderr}"
    );
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "the validator failed: {stdout}{stderr}"
    );
    let summary = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no summary from the validator: {stdout}{stderr}"));
    (summary, stdout)
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_the_emulator_and_the_rules_know_is_valid_ocsf() {
    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(120)), now.minus(minutes(5)));
    let mut config = org(5_000, 1_500, start, end);
    config.ai = StreamShape {
        count: 300,
        start,
        end,
    };
    config.scenarios = Scenario::ALL.to_vec();
    let env = Env::start(config).await;
    let cfg = env.config(
        "[sources.audit_logs]\ninitial_lookback = \"3h\"\n\
         [sources.content_logs]\nenabled = true\ninitial_lookback = \"3h\"\n\
         [sources.ai_interaction_logs]\nenabled = true\ninitial_lookback = \"3h\"\n\
         [detect]\nenabled = false\n\
         [sinks.ocsf]\ntype = \"file\"\npath = \"ocsf\"\nformat = \"ocsf\"\n",
    );
    let out = env
        .run(&["run", "--config", cfg.to_str().unwrap(), "--once"], TOKEN)
        .await;
    assert!(out.status.success(), "{}", text(&out));

    // One event per stored row, each naming its row and its stream.
    let dir = env.dir.path().join("ocsf");
    let mut files = Vec::new();
    let mut audit_names = BTreeSet::new();
    for source in SourceKind::ALL {
        let path = dir.join(format!("{}.ocsf.ndjson", source.table()));
        let events = lines(&path);
        let stored = local_rows(&env, source);
        assert!(!stored.is_empty(), "{source}: rows were collected");
        let uids: HashMap<String, usize> = events.iter().fold(HashMap::new(), |mut m, e| {
            assert_eq!(e["metadata"]["log_name"], source.name());
            *m.entry(e["metadata"]["uid"].as_str().unwrap().to_string())
                .or_default() += 1;
            m
        });
        assert_eq!(uids.len(), stored.len(), "{source}: one event per row");
        assert!(uids.values().all(|&n| n == 1), "{source}: no event twice");
        assert!(
            stored.keys().all(|id| uids.contains_key(id)),
            "{source}: every stored row has its event"
        );
        if source == SourceKind::AuditLogs {
            audit_names.extend(
                events
                    .iter()
                    .filter_map(|e| e["metadata"]["event_code"].as_str().map(str::to_string)),
            );
        }
        files.push(path);
    }
    for name in audit_event_names() {
        assert!(
            audit_names.contains(name),
            "the emulator's `{name}` is not among the events written: {audit_names:?}"
        );
    }

    // The rules' event names (with their alternatives), their samples as the API sends
    // them, and names nobody knows.
    let mut extra = String::new();
    let mut push = |source: SourceKind, raw: &str| {
        let mut line = Vec::new();
        mirotrail::ocsf::encode(source, raw, &mut line).unwrap();
        extra.push_str(std::str::from_utf8(&line).unwrap());
        extra.push('\n');
    };
    let mut rule_names = BTreeSet::new();
    for rule in mirotrail::detect::pack().unwrap() {
        for step in std::iter::once(&rule.matcher).chain(rule.then.as_ref()) {
            for (name, _) in &step.events {
                rule_names.insert((name.clone(), step.categories.first().cloned()));
            }
        }
        for sample in &rule.samples {
            for item in sample_items(rule.source, sample).unwrap() {
                push(rule.source, &item);
            }
        }
    }
    assert!(rule_names.len() > 20, "{rule_names:?}");
    for (name, category) in &rule_names {
        let category = category
            .as_deref()
            .map_or(String::new(), |c| format!(r#","category":"{c}""#));
        push(
            SourceKind::AuditLogs,
            &format!(
                r#"{{"id":"r-{name}","type":"event","event":"{name}"{category},"createdAt":"2024-05-01T10:00:00.123+0000","createdBy":{{"type":"user","id":"3074457345000000001","name":"Ada Berg","email":"ada.berg@acme.example"}},"object":{{"id":"3074457345000000009","name":"Zoe Costa"}},"context":{{"ip":"198.18.7.7"}},"details":{{"newRole":"ADMIN","big":30744573469876543210123}}}}"#
            ),
        );
    }
    for (event, category) in [
        ("quantum_board_teleported", "boards"),
        ("password_policy_changed", "security"),
        ("something_new", "brand_new_category"),
        ("mfa_challenge_failed", "authentication"),
        ("user_merged", "users"),
    ] {
        push(
            SourceKind::AuditLogs,
            &format!(
                r#"{{"id":"u-{event}","event":"{event}","category":"{category}","createdAt":"2024-05-01T10:00:00Z","createdBy":{{"type":"application","id":"7","name":"Acme Sync","email":""}},"context":{{"ip":"2001:db8::1"}}}}"#
            ),
        );
    }
    push(
        SourceKind::ContentLogs,
        r#"{"id":"c-odd","contentId":"uXjVOD6LSME=","actionType":"archive","actionTime":"2024-05-01T10:00:00Z","itemType":"mindmap_node","itemId":"3458764500000000001"}"#,
    );
    push(
        SourceKind::AuditLogs,
        r#"{"id":"bare","createdAt":"2024-05-01T10:00:00Z"}"#,
    );
    let extra_path = env.dir.path().join("extra.ocsf.ndjson");
    std::fs::write(&extra_path, &extra).unwrap();
    files.push(extra_path);

    let (summary, output) = validate(&files);
    eprintln!("OCSF validation: {summary}");
    let total: usize = files.iter().map(|f| lines(f).len()).sum();
    assert_eq!(summary["invalid"], 0, "{output}");
    assert_eq!(summary["valid"].as_u64(), Some(total as u64), "{output}");
    let classes: BTreeMap<String, Value> =
        serde_json::from_value(summary["classes"].clone()).unwrap();
    for class in ["0", "3001", "3002", "3004", "3005", "6001"] {
        assert!(classes.contains_key(class), "no class {class}: {output}");
    }
}

/// The validator is not a rubber stamp: events missing a required attribute, with an
/// attribute the class does not have, or a wrong `type_uid` are refused.
#[test]
fn the_ocsf_validator_refuses_what_the_schema_does_not_allow() {
    let dir = tempfile::tempdir().unwrap();
    let good = mirotrail::ocsf::event(
        SourceKind::AuditLogs,
        r#"{"id":"1","event":"sign_in_succeeded","createdAt":"2024-05-01T10:00:00Z","createdBy":{"id":"1","name":"Ada"}}"#,
    )
    .unwrap();
    let mut no_user = good.clone();
    no_user.as_object_mut().unwrap().remove("user");
    let mut foreign = good.clone();
    foreign["web_resources"] = serde_json::json!([{"uid": "b"}]);
    let mut wrong_type = good.clone();
    wrong_type["type_uid"] = serde_json::json!(300202);
    let mut text = String::new();
    for e in [&good, &no_user, &foreign, &wrong_type] {
        text.push_str(&e.to_string());
        text.push('\n');
    }
    let path = dir.path().join("probe.ndjson");
    std::fs::write(&path, text).unwrap();
    let (summary, output) = validate(&[path]);
    assert_eq!(summary["valid"], 1, "{output}");
    assert_eq!(summary["invalid"], 3, "{output}");
    assert!(output.contains("'user' is a required property"), "{output}");
    assert!(output.contains("web_resources"), "{output}");
    assert!(output.contains("type_uid"), "{output}");
}
