//! The crash harness: the real binary against both emulators with a large org, killed
//! with SIGKILL at random moments (between and during page commits, during concurrent
//! uploads), restarted each time, then checked: every emulated event is in the store
//! exactly once, every stored row reached Azure and Splunk HEC at least once, and duplicates
//! in Azure are explained by lost acknowledgements or by batches in flight at a kill (in
//! Splunk, by lost answers or by requests not yet confirmed indexed at a kill). The
//! Elasticsearch sink, whose `create` with the Miro id as `_id` makes resends harmless,
//! must hold every stored row exactly once; so must the S3 bucket (moto's server), whose
//! object keys come from the recorded batch ranges, so a resend rewrites the same objects.
//!
//! Size it with `MIROTRAIL_HARNESS_KILLS` (default 20) and `MIROTRAIL_HARNESS_EVENTS`
//! (default 20000 audit events, a quarter as many content items); `scripts/crash-harness`
//! runs a long one.

use std::time::{Duration, Instant};

use mirotrail::config::SourceKind;
use mirotrail_emulator::UnixMs;
use mirotrail_emulator::azure::{
    AUDIT_DCR, AzureEmulator, AzureEmulatorConfig, AzureFaults, CONTENT_DCR,
};
use mirotrail_emulator::elastic::{ElasticEmulator, ElasticEmulatorConfig, ElasticFaults};
use mirotrail_emulator::miro::Faults;
use mirotrail_emulator::splunk::{SplunkEmulator, SplunkEmulatorConfig, SplunkFaults};

use crate::support::*;

/// A small deterministic generator for kill times (no dependency needed for this).
struct Jitter(u64);
impl Jitter {
    fn next_ms(&mut self, max: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % max
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_harness_kills_and_restarts_lose_and_duplicate_nothing() {
    let kills_wanted = env_u64("MIROTRAIL_HARNESS_KILLS", 20);
    let audit_events = env_u64("MIROTRAIL_HARNESS_EVENTS", 20_000);
    let content_items = audit_events / 4;
    let seed = env_u64("MIROTRAIL_HARNESS_SEED", UnixMs::now().0.unsigned_abs() | 1);

    let now = UnixMs::now();
    let (start, end) = (now.minus(minutes(6 * 60)), now.minus(minutes(5)));
    let mut miro = org(audit_events, content_items, start, end);
    miro.faults = Faults {
        server_error_share: 0.03,
        truncate_share: 0.02,
        expire_cursor_share: 0.02,
        slow_share: 0.3,
        slow_delay: Duration::from_millis(30),
        ..Faults::default()
    };
    let env = Env::start(miro).await;
    let secret = "harness-secret-8b1f";
    let azure_config = AzureEmulatorConfig {
        client_secret: secret.into(),
        token_lifetime: Duration::from_secs(5),
        faults: AzureFaults {
            throttle_share: 0.05,
            retry_after: Duration::from_secs(1),
            server_error_share: 0.05,
            lost_ack_share: 0.03,
            slow_share: 0.5,
            slow_delay: Duration::from_millis(40),
            ..AzureFaults::default()
        },
        ..AzureEmulatorConfig::default()
    };
    let azure = AzureEmulator::start(azure_config.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let splunk_config = SplunkEmulatorConfig {
        faults: SplunkFaults {
            busy_share: 0.05,
            lost_ack_share: 0.03,
            index_delay: Duration::from_millis(40),
            ..SplunkFaults::default()
        },
        ..SplunkEmulatorConfig::default()
    };
    let splunk = SplunkEmulator::start(splunk_config.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let es_config = ElasticEmulatorConfig {
        faults: ElasticFaults {
            busy_share: 0.05,
            item_reject_share: 0.05,
            lost_response_share: 0.03,
            ..ElasticFaults::default()
        },
        ..ElasticEmulatorConfig::default()
    };
    let es = ElasticEmulator::start(es_config.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let moto = crate::s3::Moto::start().await;
    moto.create_bucket("harness").await;
    std::fs::write(env.dir.path().join("s3-id"), "AKIAHARNESS0000001").unwrap();
    std::fs::write(env.dir.path().join("s3-secret"), "harness-s3-secret-2c7e").unwrap();
    std::fs::write(env.dir.path().join("azure-secret"), secret).unwrap();
    std::fs::write(env.dir.path().join("hec-token"), &splunk_config.token).unwrap();
    std::fs::write(env.dir.path().join("es-key"), &es_config.api_key).unwrap();
    for file in ["azure-secret", "hec-token", "es-key", "s3-id", "s3-secret"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            env.dir.path().join(file),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    let cfg = env.config(&format!(
        "[sources.audit_logs]\ninitial_lookback = \"7h\"\npage_size = 200\nmax_window = \"2h\"\n\
         [sources.content_logs]\nenabled = true\ninitial_lookback = \"7h\"\npage_size = 250\n\
         [sinks.sentinel]\ntype = \"azure_logs_ingestion\"\nendpoint = \"{base}\"\n\
         audit_logs_dcr = \"{AUDIT_DCR}\"\ncontent_logs_dcr = \"{CONTENT_DCR}\"\n\
         authority_host = \"{base}\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\n\
         client_secret_file = \"azure-secret\"\nbatch_rows = 1000\nmax_concurrency = 4\nmax_batch_bytes = 150000\n\
         [sinks.archive]\ntype = \"file\"\npath = \"archive\"\nbatch_rows = 700\n\
         [sinks.splunk]\ntype = \"splunk_hec\"\nendpoint = \"{hec}\"\ntoken_file = \"hec-token\"\n\
         index = \"miro\"\nbatch_rows = 800\nmax_batch_bytes = 100000\nack_poll_interval = \"50ms\"\n\
         [sinks.elastic]\ntype = \"elasticsearch\"\nendpoint = \"{es}\"\napi_key_file = \"es-key\"\n\
         batch_rows = 900\nmax_batch_bytes = 120000\n\
         [sinks.s3]\ntype = \"s3\"\nbucket = \"harness\"\nprefix = \"miro\"\nendpoint = \"{s3}\"\n\
         region = \"us-east-1\"\nforce_path_style = true\naccess_key_id_file = \"s3-id\"\n\
         secret_access_key_file = \"s3-secret\"\nbatch_rows = 600\nmax_object_bytes = 60000\n",
        azure_config.tenant_id,
        azure_config.client_id,
        base = azure.base_url(),
        hec = splunk.base_url(),
        es = es.base_url(),
        s3 = moto.url,
    ));
    let args = ["run", "--config", cfg.to_str().unwrap(), "--once"];

    let began = Instant::now();
    let mut jitter = Jitter(seed);
    let mut kills = 0u64;
    let mut runs = 0u64;
    let mut finished = false;
    while kills < kills_wanted {
        let mut child = env.spawn(env.command(&args, TOKEN));
        runs += 1;
        // Early kills land in collection, later ones in delivery: spread them over both.
        let wait = 50 + jitter.next_ms(900);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "a run failed on its own: {status:?}");
            finished = true;
            break;
        }
        child.start_kill().unwrap();
        let _ = child.wait().await;
        kills += 1;
    }
    // Quiet the faults and let it finish.
    azure.set_faults(AzureFaults::default());
    splunk.set_faults(SplunkFaults::default());
    es.set_faults(ElasticFaults::default());
    env.emu.set_faults(Faults::default());
    let out = env.run(&args, TOKEN).await;
    runs += 1;
    assert!(out.status.success(), "{}", text(&out));

    let audit = expected_audit(&env.emu, start, end);
    let content = expected_content(&env.emu, start, end);
    assert_exactly_once(&env.db(), "MiroAuditLogs_CL", &audit);
    assert_exactly_once(&env.db(), "MiroContentLogs_CL", &content);

    let mut azure_dups = 0u64;
    for source in [SourceKind::AuditLogs, SourceKind::ContentLogs] {
        azure_dups += assert_all_in_azure(&env, &azure, source) as u64;
    }
    let stats = azure.stats();
    let by_lost_acks = azure_dups.min(stats.lost_ack_records);
    let by_kills = azure_dups - by_lost_acks;
    // At each kill at most `max_concurrency` batches of at most `batch_rows` rows were in
    // flight and may come again.
    assert!(
        by_kills <= kills * 4 * 1000,
        "{by_kills} duplicates not explained by lost acks after {kills} kills"
    );
    // The file sink rotates by size: read every audit file of the archive.
    let mut file_lines = 0usize;
    let mut file_ids = std::collections::HashSet::new();
    for entry in std::fs::read_dir(env.dir.path().join("archive")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("MiroAuditLogs_CL") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            file_lines += 1;
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            file_ids.insert(v["id"].as_str().unwrap().to_string());
        }
    }
    let missing_in_files = audit.keys().filter(|id| !file_ids.contains(*id)).count();
    assert_eq!(
        missing_in_files, 0,
        "the file sink misses {missing_in_files} audit rows"
    );
    // Splunk: every stored row indexed at least once (indexer acknowledgement on).
    let mut indexed: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for e in splunk.indexed() {
        *indexed
            .entry(e["event"]["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for id in audit.keys().chain(content.keys()) {
        assert!(indexed.contains_key(id), "{id} never reached Splunk");
    }
    let splunk_dups: u64 = indexed.values().map(|n| n - 1).sum();
    // At each kill at most one round of `batch_rows` rows was unconfirmed; each lost answer
    // resends one request (at most `batch_rows` rows).
    let splunk_stats = splunk.stats();
    assert!(
        splunk_dups <= (kills + splunk_stats.lost_acks) * 800,
        "{splunk_dups} Splunk duplicates after {kills} kills and {} lost answers",
        splunk_stats.lost_acks
    );
    // Elasticsearch: every stored row exactly once (`create` with the Miro id as `_id`).
    let mut written: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for (_, id, _) in es.stored() {
        *written.entry(id).or_default() += 1;
    }
    for id in audit.keys().chain(content.keys()) {
        assert_eq!(
            written.get(id),
            Some(&1),
            "{id} not exactly once in Elasticsearch"
        );
    }
    assert_eq!(written.len(), audit.len() + content.len());
    // S3: every stored row in exactly one object, once.
    let objects = moto.objects("harness").await;
    let mut in_s3: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for lines in objects.values() {
        for line in lines {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            *in_s3
                .entry(v["id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    for id in audit.keys().chain(content.keys()) {
        assert_eq!(in_s3.get(id), Some(&1), "{id} not exactly once in S3");
    }
    assert_eq!(in_s3.len(), audit.len() + content.len());
    let es_stats = es.stats();
    eprintln!(
        "crash harness (seed {seed}): {kills} SIGKILLs over {runs} runs{}, {} audit + {} content events stored exactly once; \
         Azure: {} rows, {azure_dups} duplicates ({by_lost_acks} from {} lost acknowledgements, {by_kills} from batches in flight at a kill); \
         file sink: {file_lines} audit lines; Splunk HEC: {} events, {splunk_dups} duplicates ({} lost answers, {} busy answers); \
         Elasticsearch: {} documents, 0 duplicates ({} resent items answered 409, {} items 429, {} lost answers); \
         S3: {} objects, {} rows, 0 duplicates; {:.1}s",
        if finished {
            " (a run finished before the last kill)"
        } else {
            ""
        },
        audit.len(),
        content.len(),
        azure.rows("MiroAuditLogs_CL").len() + azure.rows("MiroContentLogs_CL").len(),
        stats.lost_acks,
        indexed.values().sum::<u64>(),
        splunk_stats.lost_acks,
        splunk_stats.events(503),
        written.len(),
        es_stats.items(409),
        es_stats.items(429),
        es_stats.lost_responses,
        objects.len(),
        in_s3.len(),
        began.elapsed().as_secs_f64(),
    );
}
