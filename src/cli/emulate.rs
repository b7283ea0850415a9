//! `mirotrail emulate miro|azure|splunk|elasticsearch`: the emulators, standalone on loopback. For the
//! pipeline bench, which runs them as their own processes to measure each apart,
//! `--stats-out` (miro, azure) and `--acks-out` (azure) write what they saw when they
//! stop, and `--start-ms`/`--end-ms` give the Miro org an exact span the bench can rebuild.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use clap::{Args, Subcommand};

use super::Failure;
use mirotrail_emulator::UnixMs;
use mirotrail_emulator::azure::{
    AI_DCR, AUDIT_DCR, AzureEmulator, AzureEmulatorConfig, AzureFaults, CONTENT_DCR,
};
use mirotrail_emulator::elastic::{ElasticEmulator, ElasticEmulatorConfig, ElasticFaults};
use mirotrail_emulator::miro::{
    BodyFault, Faults, MiroEmulator, MiroEmulatorConfig, RateLimit, Scenario, TimeForm,
};
use mirotrail_emulator::splunk::{SplunkEmulator, SplunkEmulatorConfig, SplunkFaults};

#[derive(Debug, Args)]
pub(crate) struct EmulateArgs {
    #[command(subcommand)]
    service: Service,
}

#[derive(Debug, Subcommand)]
enum Service {
    /// The Miro REST API: audit logs, content logs, AI interaction logs, token introspection.
    Miro(MiroArgs),
    /// Azure: the Entra token endpoint, the managed identity endpoint and the Logs
    /// Ingestion API with the two Miro DCRs; it applies the DCR transformation and keeps
    /// the rows in memory.
    Azure(AzureArgs),
    /// Splunk's HTTP Event Collector: the event endpoint, indexer acknowledgement
    /// (channels, `/services/collector/ack`) and the health endpoint; it keeps the indexed
    /// events in memory.
    Splunk(SplunkArgs),
    /// Elasticsearch's `_bulk` API (also OpenSearch's): `create` with `_id`, per-item
    /// results, data stream rules, API key and basic authentication, `GET /` and
    /// `_security/user/_has_privileges`; it keeps the documents in memory.
    Elasticsearch(ElasticArgs),
}

#[derive(Debug, Args)]
struct ElasticArgs {
    /// Address to listen on: IP:PORT or HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:9200")]
    listen: String,
    /// Share of `_bulk` requests answered 503 as a whole.
    #[arg(long, default_value_t = 0.0)]
    fault_busy: f64,
    /// Share of items refused with 429 `es_rejected_execution_exception`.
    #[arg(long, default_value_t = 0.0)]
    fault_item_429: f64,
    /// Share of `_bulk` requests whose documents are stored but whose answer is lost.
    #[arg(long, default_value_t = 0.0)]
    fault_lost_response: f64,
    /// A document `_id` (Miro id) refused with a mapping error; repeat for more.
    #[arg(long, value_name = "ID")]
    fault_mapping_error: Vec<String>,
    /// On stop, write what the emulator saw to this file as JSON (`_bulk` requests and
    /// items by status), for benchmarks.
    #[arg(long, value_name = "PATH")]
    stats_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct SplunkArgs {
    /// Address to listen on: IP:PORT or HOST:PORT (`0.0.0.0:8088` listens on every
    /// interface).
    #[arg(long, default_value = "127.0.0.1:8088")]
    listen: String,
    /// The token turns indexer acknowledgement off (a 200 is then the acknowledgement).
    #[arg(long)]
    no_ack: bool,
    /// Share of event requests answered 503 "Server is busy" (code 9).
    #[arg(long, default_value_t = 0.0)]
    fault_busy: f64,
    /// Share of event requests whose events are indexed but whose answer is lost
    /// (connection dropped).
    #[arg(long, default_value_t = 0.0)]
    fault_lost_ack: f64,
    /// Share of event requests answered 200 with an ackId that never turns true (the
    /// events are lost before indexing).
    #[arg(long, default_value_t = 0.0)]
    fault_never_indexed: f64,
    /// Milliseconds between accepting events and reporting them indexed.
    #[arg(long, default_value_t = 0)]
    index_delay_ms: u64,
    /// On stop, write what the emulator saw to this file as JSON (events indexed, event
    /// requests by status, acknowledgement queries), for benchmarks.
    #[arg(long, value_name = "PATH")]
    stats_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct AzureArgs {
    /// Address to listen on: IP:PORT or HOST:PORT (`localhost:8090`; `0.0.0.0:8090`
    /// listens on every interface).
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: String,
    /// Share of uploads answered 429 (Retry-After: 1).
    #[arg(long, default_value_t = 0.0)]
    fault_429: f64,
    /// Share of uploads answered 503.
    #[arg(long, default_value_t = 0.0)]
    fault_503: f64,
    /// Share of uploads accepted whose acknowledgement is lost (connection dropped).
    #[arg(long, default_value_t = 0.0)]
    fault_lost_ack: f64,
    /// Answer 403 (the "Monitoring Metrics Publisher" role is missing).
    #[arg(long)]
    no_role: bool,
    /// Count the accepted rows without keeping them in memory (for benchmarks of
    /// millions of records).
    #[arg(long)]
    discard_rows: bool,
    /// On stop, write what the emulator saw to this file as JSON (records accepted,
    /// bytes received, requests by status), for benchmarks.
    #[arg(long, value_name = "PATH")]
    stats_out: Option<PathBuf>,
    /// On stop, write one line `ID<TAB>UNIX_MS` per acknowledged record to this file: when
    /// each record was accepted, for freshness figures.
    #[arg(long, value_name = "PATH")]
    acks_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct MiroArgs {
    /// Address to listen on: IP:PORT or HOST:PORT (`localhost:8089`; `0.0.0.0:8089`
    /// listens on every interface).
    #[arg(long, default_value = "127.0.0.1:8089")]
    listen: String,
    /// Seed of the generated organisation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Days of history up to now.
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// Start of the organisation's history as Unix milliseconds, instead of `--days`
    /// before now (with `--end-ms`; an end in the future makes events appear live).
    #[arg(long, requires = "end_ms", conflicts_with = "days")]
    start_ms: Option<i64>,
    /// End of the organisation's history as Unix milliseconds (with `--start-ms`).
    #[arg(long, requires = "start_ms")]
    end_ms: Option<i64>,
    /// Audit events over those days.
    #[arg(long, default_value_t = 100_000)]
    audit_events: u64,
    /// Content log items over those days.
    #[arg(long, default_value_t = 20_000)]
    content_items: u64,
    /// AI interaction log entries over those days (spread by `storedAt`).
    #[arg(long, default_value_t = 4_000)]
    ai_entries: u64,
    /// The accepted bearer token (the three log scopes).
    #[arg(long, default_value = "emulator-token")]
    token: String,
    /// Serve without a credit budget.
    #[arg(long)]
    no_rate_limit: bool,
    /// Share of events that become visible only some time after their timestamp.
    #[arg(long, default_value_t = 0.02)]
    late_share: f64,
    /// Share of requests answered with a 5xx.
    #[arg(long, default_value_t = 0.0)]
    fault_5xx: f64,
    /// Share of responses whose JSON body is cut short.
    #[arg(long, default_value_t = 0.0)]
    fault_truncate: f64,
    /// Share of responses delayed by 2 s.
    #[arg(long, default_value_t = 0.0)]
    fault_slow: f64,
    /// Share of cursors refused as expired.
    #[arg(long, default_value_t = 0.0)]
    fault_expire_cursor: f64,
    /// Answer every log page with a gzip bomb decoding to this many MiB (about 1 KB sent
    /// per MiB).
    #[arg(long, value_name = "MIB", conflicts_with = "fault_huge_body_mib")]
    fault_gzip_bomb_mib: Option<u64>,
    /// Answer every log page with a valid page of this many MiB, without Content-Length.
    #[arg(long, value_name = "MIB")]
    fault_huge_body_mib: Option<u64>,
    /// Share of audit requests answered 409 (documented by Miro, cause unstated).
    #[arg(long, default_value_t = 0.0)]
    fault_409: f64,
    /// Share of items whose `details`/`state` nest 200 levels deep and hold `1e400` and
    /// an integer beyond 2^64.
    #[arg(long, default_value_t = 0.0)]
    fault_hostile_items: f64,
    /// Every tenth user and board name holds a `<script>` and an `<img onerror>`, as an
    /// attacker may name an account or a board (to try `mirotrail report` on).
    #[arg(long)]
    fault_markup_names: bool,
    /// How audit `createdAt` is written: Miro's `+0000` form, or another ISO 8601 form.
    #[arg(long, value_enum, default_value_t = AuditTimeForm::Plus0000)]
    audit_time_form: AuditTimeForm,
    /// Attacks to inject into the organisation, comma-separated, or `all`: brute-force,
    /// password-spray, guessed-password, admin-grant, sso-disabled, scim-token,
    /// domain-allowlist, public-board, guest-sharing, mass-export, mass-deletion,
    /// active-after-deactivation, app-admin (one per detection rule). Each is a burst on
    /// the middle day of the span (`--days` 2 or more).
    #[arg(long, value_name = "LIST")]
    scenario: Option<String>,
    /// On stop, write what the emulator served to this file as JSON (requests by kind and
    /// status, credits spent, items served), for benchmarks.
    #[arg(long, value_name = "PATH")]
    stats_out: Option<PathBuf>,
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM (what systemd, `kill` and container runtimes send).
async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Resolves `--listen` (a host name is looked up; see `config::resolve_listen`).
fn listen_addr(text: &str) -> Result<SocketAddr, Failure> {
    crate::config::resolve_listen(text).map_err(|e| Failure::usage(anyhow!("--listen: {e}")))
}

/// Where the emulator listens, and the URL to reach it from this host: an emulator bound
/// to every interface (`0.0.0.0`) says so, and is reached on loopback here.
fn where_listening(bound: SocketAddr, base_url: &str) -> String {
    if bound.ip().is_unspecified() {
        format!("on {bound} (every interface; from this host: {base_url})")
    } else {
        format!("on {base_url}")
    }
}

pub(crate) async fn run(args: EmulateArgs) -> Result<(), Failure> {
    match args.service {
        Service::Azure(a) => {
            for (name, v) in [
                ("--fault-429", a.fault_429),
                ("--fault-503", a.fault_503),
                ("--fault-lost-ack", a.fault_lost_ack),
            ] {
                if !(0.0..=1.0).contains(&v) {
                    return Err(Failure::usage(anyhow!(
                        "{name} must be a share between 0 and 1, not {v}"
                    )));
                }
            }
            let config = AzureEmulatorConfig {
                roles_granted: !a.no_role,
                faults: AzureFaults {
                    throttle_share: a.fault_429,
                    retry_after: Duration::from_secs(1),
                    server_error_share: a.fault_503,
                    lost_ack_share: a.fault_lost_ack,
                    ..AzureFaults::default()
                },
                keep_rows: !a.discard_rows,
                record_ack_times: a.acks_out.is_some(),
                ..AzureEmulatorConfig::default()
            };
            let listen = listen_addr(&a.listen)?;
            let handle = AzureEmulator::start(config.clone(), listen)
                .await
                .map_err(|e| Failure::runtime(anyhow!("cannot listen on {listen}: {e}; choose another address or port with --listen")))?;
            let base = handle.base_url();
            eprintln!(
                "Azure emulator {}. Use in [sinks.NAME] (type = \"azure_logs_ingestion\"):\n  \
                 endpoint = \"{base}\"\n  authority_host = \"{base}\"\n  tenant_id = \"{}\"\n  \
                 client_id = \"{}\"\n  audit_logs_dcr = \"{AUDIT_DCR}\"\n  content_logs_dcr = \"{CONTENT_DCR}\"\n\
                 \x20 ai_interaction_logs_dcr = \"{AI_DCR}\"\n\
                 and the client secret `{}` in the variable named by client_secret_env. Ctrl-C (or SIGTERM) stops it.",
                where_listening(handle.addr(), &base),
                config.tenant_id,
                config.client_id,
                config.client_secret
            );
            stopped().await;
            if let Some(path) = &a.stats_out {
                let st = handle.stats();
                let stats = serde_json::json!({
                    "records_accepted": st.records_accepted,
                    "bytes_received": st.bytes_received,
                    "batches_accepted": st.batches_accepted,
                    "max_body_bytes": st.max_body_bytes,
                    "ingestion_by_status": st.ingestion_by_status,
                    "token_by_status": st.token_by_status,
                    "lost_acks": st.lost_acks,
                });
                write_out(path, &stats.to_string())?;
            }
            if let Some(path) = &a.acks_out {
                let mut lines = String::new();
                for (id, at) in handle.acknowledged() {
                    let _ = writeln!(lines, "{id}\t{}", at.0);
                }
                write_out(path, &lines)?;
            }
            handle.shutdown().await;
            Ok(())
        }
        Service::Elasticsearch(a) => {
            for (name, v) in [
                ("--fault-busy", a.fault_busy),
                ("--fault-item-429", a.fault_item_429),
                ("--fault-lost-response", a.fault_lost_response),
            ] {
                if !(0.0..=1.0).contains(&v) {
                    return Err(Failure::usage(anyhow!(
                        "{name} must be a share between 0 and 1, not {v}"
                    )));
                }
            }
            let config = ElasticEmulatorConfig {
                faults: ElasticFaults {
                    busy_share: a.fault_busy,
                    item_reject_share: a.fault_item_429,
                    lost_response_share: a.fault_lost_response,
                    mapping_error_ids: a.fault_mapping_error,
                },
                ..ElasticEmulatorConfig::default()
            };
            let listen = listen_addr(&a.listen)?;
            let handle = ElasticEmulator::start(config.clone(), listen)
                .await
                .map_err(|e| Failure::runtime(anyhow!("cannot listen on {listen}: {e}; choose another address or port with --listen")))?;
            let base = handle.base_url();
            eprintln!(
                "Elasticsearch emulator {}. Use in [sinks.NAME] (type = \"elasticsearch\"):\n  \
                 endpoint = \"{base}\"\n\
                 and the API key `{}` in ELASTICSEARCH_API_KEY (or the variable named by \
                 api_key_env), or username = \"{}\" with the password `{}`. Ctrl-C (or \
                 SIGTERM) stops it.",
                where_listening(handle.addr(), &base),
                config.api_key,
                config.user.0,
                config.user.1
            );
            stopped().await;
            if let Some(path) = &a.stats_out {
                write_json(path, &handle.stats())?;
            }
            handle.shutdown().await;
            Ok(())
        }
        Service::Splunk(a) => {
            for (name, v) in [
                ("--fault-busy", a.fault_busy),
                ("--fault-lost-ack", a.fault_lost_ack),
                ("--fault-never-indexed", a.fault_never_indexed),
            ] {
                if !(0.0..=1.0).contains(&v) {
                    return Err(Failure::usage(anyhow!(
                        "{name} must be a share between 0 and 1, not {v}"
                    )));
                }
            }
            let config = SplunkEmulatorConfig {
                ack_enabled: !a.no_ack,
                faults: SplunkFaults {
                    busy_share: a.fault_busy,
                    lost_ack_share: a.fault_lost_ack,
                    never_indexed_share: a.fault_never_indexed,
                    index_delay: Duration::from_millis(a.index_delay_ms),
                    ..SplunkFaults::default()
                },
                ..SplunkEmulatorConfig::default()
            };
            let listen = listen_addr(&a.listen)?;
            let handle = SplunkEmulator::start(config.clone(), listen)
                .await
                .map_err(|e| Failure::runtime(anyhow!("cannot listen on {listen}: {e}; choose another address or port with --listen")))?;
            let base = handle.base_url();
            eprintln!(
                "Splunk HEC emulator {}. Use in [sinks.NAME] (type = \"splunk_hec\"):\n  \
                 endpoint = \"{base}\"\n  index = \"miro\"\n\
                 and the token `{}` in SPLUNK_HEC_TOKEN (or the variable named by token_env). \
                 Indexer acknowledgement is {}. Ctrl-C (or SIGTERM) stops it.",
                where_listening(handle.addr(), &base),
                config.token,
                if config.ack_enabled { "on" } else { "off" }
            );
            stopped().await;
            if let Some(path) = &a.stats_out {
                write_json(path, &handle.stats())?;
            }
            handle.shutdown().await;
            Ok(())
        }
        Service::Miro(a) => {
            for (name, v) in [
                ("--late-share", a.late_share),
                ("--fault-5xx", a.fault_5xx),
                ("--fault-truncate", a.fault_truncate),
                ("--fault-slow", a.fault_slow),
                ("--fault-expire-cursor", a.fault_expire_cursor),
                ("--fault-409", a.fault_409),
                ("--fault-hostile-items", a.fault_hostile_items),
            ] {
                if !(0.0..=1.0).contains(&v) {
                    return Err(Failure::usage(anyhow!(
                        "{name} must be a share between 0 and 1, not {v}"
                    )));
                }
            }
            let mut config = MiroEmulatorConfig::demo(
                UnixMs::now(),
                a.days,
                a.audit_events,
                a.content_items,
                &a.token,
            );
            if let (Some(start), Some(end)) = (a.start_ms, a.end_ms) {
                if start >= end {
                    return Err(Failure::usage(anyhow!(
                        "--start-ms ({start}) must be before --end-ms ({end})"
                    )));
                }
                config.audit.start = UnixMs(start);
                config.audit.end = UnixMs(end);
                config.content.start = UnixMs(start);
                config.content.end = UnixMs(end);
            }
            config.seed = a.seed;
            config.ai.count = a.ai_entries;
            if let Some(list) = &a.scenario {
                config.scenarios = Scenario::parse_list(list)
                    .map_err(|e| Failure::usage(anyhow!("--scenario: {e}")))?;
            }
            config.late.share = a.late_share;
            if a.no_rate_limit {
                config.rate_limit = None;
            } else if config.rate_limit.is_none() {
                config.rate_limit = Some(RateLimit {
                    credits_per_minute: 100_000,
                    retry_after_header: false,
                });
            }
            config.faults = Faults {
                server_error_share: a.fault_5xx,
                truncate_share: a.fault_truncate,
                slow_share: a.fault_slow,
                slow_delay: Duration::from_secs(2),
                expire_cursor_share: a.fault_expire_cursor,
                conflict_share: a.fault_409,
                hostile_item_share: a.fault_hostile_items,
                markup_in_names: a.fault_markup_names,
                ..Faults::default()
            };
            config.audit_time_form = match a.audit_time_form {
                AuditTimeForm::Plus0000 => TimeForm::MillisPlus0000,
                AuditTimeForm::Z => TimeForm::MillisZ,
                AuditTimeForm::Colon => TimeForm::MillisColonOffset,
                AuditTimeForm::NoFraction => TimeForm::NoFraction,
                AuditTimeForm::Micros => TimeForm::MicrosZ,
                AuditTimeForm::NanosOffset => TimeForm::NanosAtOffset,
                AuditTimeForm::Mixed => TimeForm::Mixed,
            };
            let org_id = config.org_id.clone();
            let listen = listen_addr(&a.listen)?;
            let handle = MiroEmulator::start(config, listen).await.map_err(|e| {
                Failure::runtime(anyhow!(
                    "cannot listen on {listen}: {e}; choose another address or port with --listen"
                ))
            })?;
            let base = handle.base_url();
            handle.set_body_fault(match (a.fault_gzip_bomb_mib, a.fault_huge_body_mib) {
                (Some(mib), _) => Some(BodyFault::GzipBomb { decoded_mib: mib }),
                (None, Some(mib)) => Some(BodyFault::Huge {
                    bytes: mib.saturating_mul(1024 * 1024),
                    announce_length: false,
                }),
                (None, None) => None,
            });
            eprintln!(
                "{}",
                miro_banner(
                    &where_listening(handle.addr(), &base),
                    &base,
                    &org_id,
                    &a.token
                )
            );
            stopped().await;
            if let Some(path) = &a.stats_out {
                let st = handle.stats();
                let stats = serde_json::json!({
                    "requests": st.requests,
                    "by_status": st.by_status,
                    "audit_requests": st.audit_requests,
                    "content_requests": st.content_requests,
                    "credits_spent": st.credits_spent,
                    "items_served": st.items_served,
                    "rate_limited": st.rate_limited,
                    "faults": st.faults,
                });
                write_out(path, &stats.to_string())?;
            }
            handle.shutdown().await;
            Ok(())
        }
    }
}

/// Writes a `--stats-out` or `--acks-out` file.
/// Writes `value` to `path` as JSON.
fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string(value)
        .map_err(|e| Failure::runtime(anyhow!("cannot encode the stats as JSON: {e}")))?;
    write_out(path, &text)
}

fn write_out(path: &Path, text: &str) -> Result<(), Failure> {
    std::fs::write(path, text).map_err(|e| {
        Failure::runtime(anyhow!(
            "cannot write {}: {e}; choose a writable path",
            path.display()
        ))
    })
}

/// What `emulate miro` prints: a `[miro]` block to paste into a config and the token to
/// export, ready to use.
fn miro_banner(listening: &str, base: &str, org_id: &str, token: &str) -> String {
    format!(
        "Miro emulator {listening}, organization {org_id}. Use in the config:\n\
         \n\
         [miro]\n\
         api_base = \"{base}\"\n\
         token_env = \"MIRO_TOKEN\"\n\
         org_id = \"{org_id}\"\n\
         \n\
         with the token in that variable (the emulator accepts only this one, from --token):\n\
         \n\
         export MIRO_TOKEN={}\n\
         \n\
         Ctrl-C (or SIGTERM) stops it.",
        shell_word(token)
    )
}

/// `token` as one shell word: as is when it is plain, else single-quoted.
fn shell_word(token: &str) -> String {
    if !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b))
    {
        token.to_string()
    } else {
        format!("'{}'", token.replace('\'', "'\\''"))
    }
}

/// How the emulator writes audit `createdAt` (`--audit-time-form`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AuditTimeForm {
    /// Miro's own form: milliseconds and `+0000`.
    Plus0000,
    /// Milliseconds and `Z`.
    Z,
    /// Milliseconds and `+00:00`.
    Colon,
    /// No fraction, `Z`.
    NoFraction,
    /// Microseconds and `Z`.
    Micros,
    /// Nanoseconds at a non-UTC offset.
    NanosOffset,
    /// A different form per item.
    Mixed,
}
