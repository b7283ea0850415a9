//! The Elasticsearch sink against the Elasticsearch emulator: rows from a real store,
//! delivered by the real delivery loop over loopback HTTP, with faults injected on the
//! cluster side (lost answers, items refused with 429, mapping errors, 413, 503).

use std::collections::HashMap;
use std::time::Duration;

use mirotrail::config::{Config, SinkKindConfig, SourceKind};
use mirotrail::sink::{DeliveryReport, ElasticSink};
use mirotrail_emulator::elastic::{
    ElasticEmulator, ElasticEmulatorConfig, ElasticEmulatorHandle, ElasticFaults,
};

use crate::support::{BIG, SinkWorld, capture_logs, commit_items, fill_store, sink_item as item};

const SINK: &str = "elastic";

type World = SinkWorld<ElasticEmulatorHandle, ElasticEmulatorConfig>;

async fn world(es_config: ElasticEmulatorConfig) -> World {
    let es = ElasticEmulator::start(es_config.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    SinkWorld::new(es, es_config)
}

fn fill(w: &World, source: SourceKind, n: usize) {
    fill_store(&w.store, source, n);
}

/// The sink's config through the real config file path; the API key comes from a file.
fn sink_config(w: &World, api_key: &str, extra: &str) -> Config {
    std::fs::write(w.dir.path().join("es-key"), api_key).unwrap();
    let text = format!(
        "[miro]\norg_id = \"1\"\n[sources.content_logs]\nenabled = true\n\
         [sinks.{SINK}]\ntype = \"elasticsearch\"\nendpoint = \"{}\"\napi_key_file = \"es-key\"\n\
         {extra}",
        w.server.base_url()
    );
    Config::from_toml(&text, &w.dir.path().join("mirotrail.toml")).unwrap()
}

fn elastic(config: &Config) -> ElasticSink {
    match &config.sinks[0].kind {
        SinkKindConfig::Elastic(c) => ElasticSink::new((**c).clone())
            .unwrap()
            .with_backoff_base(Duration::from_millis(5)),
        other => panic!("{other:?}"),
    }
}

async fn drain(w: &World, sink: ElasticSink, batch_rows: usize) -> DeliveryReport {
    w.drain(SINK, Box::new(sink), batch_rows, Duration::from_secs(20))
        .await
}

/// How often each Miro id was written (every write the emulator accepted, so an
/// overwrite would count twice).
fn written_ids(w: &World) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for (_, id, doc) in w.server.stored() {
        assert_eq!(
            doc["miro"]["id"].as_str(),
            Some(id.as_str()),
            "_id is the Miro id"
        );
        *out.entry(id).or_default() += 1;
    }
    out
}

fn dead_letters(w: &World) -> i64 {
    let conn = rusqlite::Connection::open(w.dir.path().join("m.db")).unwrap();
    conn.query_row(
        "SELECT count(*) FROM dead_letters WHERE sink = ?1",
        [SINK],
        |r| r.get(0),
    )
    .unwrap()
}

fn assert_exactly_once(w: &World) {
    let ids = written_ids(w);
    let expected = w.all_ids();
    assert_eq!(ids.len(), expected.len(), "every row stored");
    for id in &expected {
        assert_eq!(ids.get(id), Some(&1), "{id} stored exactly once");
    }
    for source in SourceKind::ALL {
        assert_eq!(
            w.offset(SINK, source),
            w.stored(source).last().map_or(0, |r| r.seq),
            "{source}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_becomes_one_ecs_document_in_its_streams_data_stream() {
    let w = world(ElasticEmulatorConfig::default()).await;
    fill(&w, SourceKind::AuditLogs, 700);
    fill(&w, SourceKind::ContentLogs, 300);
    fill(&w, SourceKind::AiInteractionLogs, 60);
    let config = sink_config(&w, &w.server_config.api_key, "max_batch_bytes = 100000\n");
    let report = drain(&w, elastic(&config), 500).await;
    assert!(report.gave_up.is_none(), "{report:?}");
    assert_exactly_once(&w);
    let stats = w.server.stats();
    assert!(
        stats.bulk_by_status[&200] > 3,
        "several requests: {stats:?}"
    );
    assert_eq!(
        stats.gzip_requests, stats.bulk_by_status[&200],
        "gzip by default"
    );
    for (target, id, doc) in w.server.stored() {
        let (dataset, action) = match id.chars().next().unwrap() {
            'a' if id.starts_with("ai") => ("miro.ai", "ai_generate_sticky_notes"),
            'a' => ("miro.audit", "board_opened"),
            _ => ("miro.content", "update"),
        };
        assert_eq!(target, format!("logs-{dataset}-default"));
        assert_eq!(doc["event"]["dataset"], dataset);
        assert_eq!(doc["event"]["action"], action);
        assert_eq!(doc["event"]["kind"], "event");
        assert_eq!(doc["user"]["id"], "u1");
        assert!(
            doc["@timestamp"]
                .as_str()
                .unwrap()
                .starts_with("2024-05-01T1"),
            "{doc}"
        );
        let big = if dataset == "miro.content" {
            &doc["miro"]["state"]["big"]
        } else {
            &doc["miro"]["details"]["big"]
        };
        assert_eq!(big.to_string(), BIG, "digit for digit");
    }
    w.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_busy_requests_and_refused_items_lose_and_duplicate_nothing() {
    let w = world(ElasticEmulatorConfig {
        faults: ElasticFaults {
            busy_share: 0.1,
            item_reject_share: 0.2,
            lost_response_share: 0.3,
            ..ElasticFaults::default()
        },
        ..ElasticEmulatorConfig::default()
    })
    .await;
    fill(&w, SourceKind::AuditLogs, 600);
    fill(&w, SourceKind::ContentLogs, 200);
    let config = sink_config(&w, &w.server_config.api_key, "max_batch_bytes = 20000\n");
    let report = drain(&w, elastic(&config), 300).await;
    assert!(report.gave_up.is_none(), "{report:?}");
    assert_exactly_once(&w);
    let stats = w.server.stats();
    assert!(stats.lost_responses > 0, "{stats:?}");
    assert!(stats.items(429) > 0, "{stats:?}");
    // Resent batches met documents already there: counted as delivered (not set aside),
    // not written again.
    assert!(stats.items(409) > 0, "{stats:?}");
    assert_eq!(dead_letters(&w), 0);
    w.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_error_is_set_aside_and_the_rest_is_delivered() {
    let w = world(ElasticEmulatorConfig {
        faults: ElasticFaults {
            mapping_error_ids: vec!["a000037".into()],
            ..ElasticFaults::default()
        },
        ..ElasticEmulatorConfig::default()
    })
    .await;
    fill(&w, SourceKind::AuditLogs, 100);
    let config = sink_config(&w, &w.server_config.api_key, "max_batch_bytes = 10000\n");
    let report = drain(&w, elastic(&config), 500).await;
    assert!(report.gave_up.is_none(), "{report:?}");
    let rows = w.stored(SourceKind::AuditLogs);
    let conn = rusqlite::Connection::open(w.dir.path().join("m.db")).unwrap();
    let letters: Vec<(i64, String)> = conn
        .prepare("SELECT seq, reason FROM dead_letters WHERE sink = ?1")
        .unwrap()
        .query_map([SINK], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].0, rows[37].seq);
    assert!(
        letters[0].1.contains("mapper_parsing_exception"),
        "{letters:?}"
    );
    let ids = written_ids(&w);
    assert_eq!(ids.len(), 99);
    assert!(!ids.contains_key("a000037"));
    assert_eq!(
        w.offset(SINK, SourceKind::AuditLogs),
        rows.last().unwrap().seq
    );
    w.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_after_the_acknowledged_rows() {
    let w = world(ElasticEmulatorConfig::default()).await;
    fill(&w, SourceKind::AuditLogs, 50);
    let config = sink_config(&w, &w.server_config.api_key, "");
    drain(&w, elastic(&config), 500).await;
    fill_more(&w, 50);
    drain(&w, elastic(&config), 500).await;
    assert_exactly_once(&w);
    assert_eq!(
        w.server.stats().items(409),
        0,
        "nothing acknowledged was sent again"
    );
    assert_eq!(w.server.stats().items(201), 100);
    w.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_too_large_for_the_cluster_is_split() {
    let w = world(ElasticEmulatorConfig {
        max_content_length: 8_000,
        ..ElasticEmulatorConfig::default()
    })
    .await;
    fill(&w, SourceKind::AuditLogs, 120);
    let config = sink_config(&w, &w.server_config.api_key, "gzip = false\n");
    let report = drain(&w, elastic(&config), 500).await;
    assert!(report.gave_up.is_none(), "{report:?}");
    assert_exactly_once(&w);
    assert!(w.server.stats().bulk_by_status[&413] > 0);
    w.server.shutdown().await;
}

/// `n` more audit items, after the first thousand.
fn fill_more(w: &World, n: usize) {
    let items: Vec<String> = (1000..1000 + n)
        .map(|i| item(SourceKind::AuditLogs, i))
        .collect();
    commit_items(&w.store, SourceKind::AuditLogs, &items);
}

#[tokio::test(flavor = "current_thread")]
async fn bad_credentials_and_missing_privileges_give_one_clear_error_and_no_secret() {
    let (captured, _guard) = capture_logs();

    let w = world(ElasticEmulatorConfig::default()).await;
    fill(&w, SourceKind::AuditLogs, 10);
    let wrong = "d3JvbmdrZXk6d3JvbmdzZWNyZXQtMDAwMDA0Mg==";
    let config = sink_config(&w, wrong, "");
    let debug = format!("{:?} {config:?}", elastic(&config));
    let report = drain(&w, elastic(&config), 500).await;
    let m = report.gave_up.expect("a permanent error");
    assert!(m.contains("401") && m.contains("API key"), "{m}");
    assert_eq!(w.offset(SINK, SourceKind::AuditLogs), 0);
    let check = elastic(&config).check().await.unwrap_err();
    assert!(check.contains("401"), "{check}");
    let mut errors = format!("{m}\n{check}");

    // Basic authentication, with the password from a file.
    let password = w.server_config.user.1.clone();
    std::fs::write(w.dir.path().join("es-password"), &password).unwrap();
    let text = format!(
        "[miro]\norg_id = \"1\"\n[sinks.{SINK}]\ntype = \"elasticsearch\"\nendpoint = \"{}\"\n\
         username = \"elastic\"\npassword_file = \"es-password\"\n",
        w.server.base_url()
    );
    let basic = Config::from_toml(&text, &w.dir.path().join("mirotrail.toml")).unwrap();
    let outcomes = elastic(&basic).check().await.unwrap();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert!(w.server.stored().is_empty(), "check writes nothing");
    let report = drain(&w, elastic(&basic), 500).await;
    assert!(report.gave_up.is_none(), "{report:?}");
    assert_eq!(written_ids(&w).len(), 10);
    w.server.shutdown().await;

    // A credential without `create_doc`.
    let w = world(ElasticEmulatorConfig {
        create_doc: false,
        ..ElasticEmulatorConfig::default()
    })
    .await;
    fill(&w, SourceKind::AuditLogs, 10);
    let config = sink_config(&w, &w.server_config.api_key, "");
    let check = elastic(&config).check().await.unwrap_err();
    assert!(check.contains("create_doc"), "{check}");
    let report = drain(&w, elastic(&config), 500).await;
    let m = report.gave_up.expect("a permanent error");
    assert!(m.contains("create_doc") && m.contains("403"), "{m}");
    errors.push_str(&m);
    drop(_guard);

    let logs = captured.text();
    for needle in [wrong, w.server_config.api_key.as_str(), password.as_str()] {
        assert!(!logs.contains(needle), "leaked into logs: {needle}");
        assert!(!errors.contains(needle), "leaked into errors: {needle}");
        assert!(!debug.contains(needle), "leaked into Debug: {needle}");
    }
    w.server.shutdown().await;
}

/// The real binary: `run --once` from the Miro emulator to the Elasticsearch emulator
/// (with lost answers and items refused with 429), then `check`, at trace level; every
/// row stored once, and the API key in no output and no file (the key file aside).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_delivers_to_elasticsearch_and_never_prints_the_key() {
    use crate::support::{
        Env, assert_every_stored_row_once, assert_secret_nowhere, minutes, org, private_file,
        run_once_then_check, text,
    };
    let now = mirotrail_emulator::UnixMs::now();
    let (start, end) = (now.minus(minutes(90)), now.minus(minutes(5)));
    let env = Env::start(org(800, 300, start, end)).await;
    let es_config = ElasticEmulatorConfig {
        api_key: "bWlyb3RyYWlsLWl0OnNlY3JldC1rZXktMDA0Mi1lbGFzdGlj".into(),
        faults: ElasticFaults {
            lost_response_share: 0.2,
            item_reject_share: 0.1,
            ..ElasticFaults::default()
        },
        ..ElasticEmulatorConfig::default()
    };
    let es = ElasticEmulator::start(es_config.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let key_file = private_file(&env, "es-key", &es_config.api_key);
    let sink = format!(
        "[sinks.elastic]\ntype = \"elasticsearch\"\nendpoint = \"{}\"\napi_key_file = \"es-key\"\n\
         max_batch_bytes = 200000\n",
        es.base_url()
    );
    let outputs = run_once_then_check(&env, &sink).await;
    let check = text(&outputs[1]);
    assert!(
        check.contains("sink elastic") && check.contains("`create_doc`"),
        "{check}"
    );

    let mut ids: HashMap<String, usize> = HashMap::new();
    for (_, id, _) in es.stored() {
        *ids.entry(id).or_default() += 1;
    }
    assert_every_stored_row_once(&env, &ids);
    assert_secret_nowhere(&env, &outputs, &es_config.api_key, &key_file);
    es.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_answer_is_passed_over_for_the_next() {
    let w = world(ElasticEmulatorConfig::default()).await;
    fill(&w, SourceKind::AuditLogs, 200);
    // A port nothing listens on: bound, then released.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    std::fs::write(w.dir.path().join("es-key"), &w.server_config.api_key).unwrap();
    let text = format!(
        "[miro]\norg_id = \"1\"\n[sinks.{SINK}]\ntype = \"elasticsearch\"\n\
         endpoint = [\"http://{dead}\", \"{}\"]\napi_key_file = \"es-key\"\nmax_batch_bytes = 20000\n",
        w.server.base_url()
    );
    let config = Config::from_toml(&text, &w.dir.path().join("mirotrail.toml")).unwrap();
    let report = drain(&w, elastic(&config), 500).await;
    assert!(report.gave_up.is_none(), "{report:?}");
    assert_exactly_once(&w);
    assert!(
        w.server.stats().bulk_by_status[&200] > 1,
        "several requests, all to the live node"
    );
    // `check` names the node that does not answer.
    let m = elastic(&config).check().await.unwrap_err();
    assert!(m.contains(&dead.to_string()), "{m}");
    w.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_on_opensearch_says_the_privilege_is_not_verified_and_writes_nothing() {
    use mirotrail::sink::elasticsearch::CheckOutcome;
    let w = world(ElasticEmulatorConfig {
        distribution: "opensearch".into(),
        ..ElasticEmulatorConfig::default()
    })
    .await;
    let outcomes = elastic(&sink_config(&w, &w.server_config.api_key, ""))
        .check()
        .await
        .unwrap();
    assert!(
        matches!(&outcomes[..], [CheckOutcome::Ok(root), CheckOutcome::NotVerified(why)]
            if root.contains("OpenSearch") && why.contains("OpenSearch")),
        "{outcomes:?}"
    );
    assert!(w.server.stored().is_empty());
    assert!(
        w.server.stats().bulk_by_status.is_empty(),
        "no bulk request"
    );
    w.server.shutdown().await;
}

/// With several organisations (`[[orgs]]`), two organisations' items of the same Miro id
/// are two documents: `_id` carries the organisation (`create` would otherwise call the
/// second one already stored and it would never reach the cluster).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_organisations_items_of_the_same_id_are_two_documents() {
    let w = world(ElasticEmulatorConfig::default()).await;
    let orgs = [
        ("emea", "3074457345000000001"),
        ("apac", "3074457345000000002"),
    ];
    let identities: Vec<_> = orgs
        .iter()
        .map(|(name, id)| mirotrail::store::OrgIdentity {
            name: (*name).into(),
            org_id: Some((*id).into()),
        })
        .collect();
    let keys = w.store.register_orgs(&identities, true).unwrap();
    let items: Vec<String> = (0..40).map(|i| item(SourceKind::AuditLogs, i)).collect();
    for key in &keys {
        crate::support::commit_org_items(&w.store, *key, SourceKind::AuditLogs, &items);
    }
    std::fs::write(w.dir.path().join("es-key"), &w.server_config.api_key).unwrap();
    let mut text = format!(
        "[sinks.{SINK}]\ntype = \"elasticsearch\"\nendpoint = \"{}\"\napi_key_file = \"es-key\"\n\n",
        w.server.base_url()
    );
    for (name, id) in &orgs {
        text.push_str(&format!(
            "[[orgs]]\nname = \"{name}\"\norg_id = \"{id}\"\n\n"
        ));
    }
    let config = Config::from_toml(&text, &w.dir.path().join("mirotrail.toml")).unwrap();
    let report = drain(&w, elastic(&config), 500).await;
    assert!(report.gave_up.is_none(), "{report:?}");
    let mut per_org: HashMap<String, usize> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for (_, id, doc) in w.server.stored() {
        let org = doc["organization"]["id"].as_str().unwrap().to_string();
        assert_eq!(
            id,
            format!("{org}:{}", doc["miro"]["id"].as_str().unwrap()),
            "_id is the organisation and the Miro id"
        );
        assert!(ids.insert(id.clone()), "{id} written once");
        *per_org.entry(org).or_default() += 1;
    }
    for (_, org_id) in &orgs {
        assert_eq!(per_org.get(*org_id), Some(&items.len()), "{per_org:?}");
    }
    w.server.shutdown().await;
}
