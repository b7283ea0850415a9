//! The whole job, as `run` and `demo` use it: collectors for the enabled sources and one
//! delivery task per sink, over one store and one credit budget.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::collect::{CollectError, CollectReport, Collector};
use crate::config::{Config, ConfigError, SinkStart, SourceKind};
use crate::miro::{CreditBudget, MiroClient};
use crate::service::{self, OrgTelemetry, Telemetry};
use crate::shutdown::Shutdown;
use crate::sink::{Delivery, DeliveryMode, DeliveryReport, deliver};
use crate::store::{StoreError, StoreHandle};
use crate::timefmt::UnixMs;

/// Knobs that are not part of the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Catch up, deliver, exit.
    pub once: bool,
    /// Where a fresh store starts (instead of each source's `initial_lookback`).
    pub start: Option<UnixMs>,
    /// First backoff step after a transient failure (default 500 ms).
    pub backoff_base: Option<Duration>,
    /// With `once`: how long a sink may fail without delivering a row before the run
    /// gives up on it (default `sink::DEFAULT_ONCE_RETRY_FOR`).
    pub once_retry_for: Option<Duration>,
}

/// Why the job could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The client's error with its causes, as text (see `From<reqwest::Error>`).
    #[error("cannot set up the HTTP client: {0}")]
    Http(String),
    #[error("sink `{name}`: {message}")]
    Sink { name: String, message: String },
    #[error(transparent)]
    Listen(#[from] service::ListenError),
}

impl From<reqwest::Error> for StartError {
    /// Keeps the causes in the message rather than as `source()`, like every error here,
    /// so a printed chain says each thing once.
    fn from(e: reqwest::Error) -> Self {
        StartError::Http(crate::net::error_chain(&e))
    }
}

/// What a run did.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Per organisation name and source.
    pub sources: BTreeMap<(String, SourceKind), Result<CollectReport, String>>,
    pub sinks: BTreeMap<String, Result<DeliveryReport, String>>,
    pub requests: u64,
    pub by_status: BTreeMap<u16, u64>,
    pub rate_limited: u64,
    pub retries: u64,
    pub credits_used: u64,
    pub elapsed: Duration,
    /// Alerts raised by the detection rules (with `once`: at the end of collection).
    pub alerts: usize,
}

impl RunReport {
    /// True when every source and sink finished without error.
    pub fn ok(&self) -> bool {
        self.sources.values().all(Result::is_ok)
            && self
                .sinks
                .values()
                .all(|s| matches!(s, Ok(r) if r.gave_up.is_none()))
    }
}

/// Store maintenance: deletes rows and alerts past `store.retention` that every sink has.
async fn maintain(store: &StoreHandle, config: &Config) {
    let cutoff = UnixMs::now().minus(config.retention);
    let sinks: Vec<String> = config.sinks.iter().map(|s| s.name.clone()).collect();
    match store.apply_retention(cutoff, sinks).await {
        Ok(deleted) => {
            for (source, n) in deleted.into_iter().filter(|(_, n)| *n > 0) {
                tracing::info!(source = %source, rows = n, before = %cutoff, "retention: deleted old rows every sink has");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "retention could not run; it is tried again later")
        }
    }
    let alert_sinks: Vec<String> = config
        .sinks
        .iter()
        .filter(|s| s.kind.takes_alerts())
        .map(|s| s.name.clone())
        .collect();
    match store.apply_alert_retention(cutoff, alert_sinks).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(alerts = n, before = %cutoff, "retention: deleted old alerts every sink has")
        }
        Err(e) => {
            tracing::warn!(error = %e, "alert retention could not run; it is tried again later")
        }
    }
}

/// Evaluates the rules on rows stored since the last evaluation (one transaction: the
/// alerts and the evaluation offsets), logging each alert raised, then hands the alerts
/// the file and stdout sinks have not had yet to them. Returns how many were raised.
pub async fn detect_new(
    store: &StoreHandle,
    rules: Arc<Vec<crate::detect::Rule>>,
    sinks: Arc<Vec<crate::sink::SinkConfig>>,
) -> usize {
    let result = store
        .run(move |s| {
            s.write("evaluating detection rules", |tx| {
                crate::detect::eval::evaluate_new(tx, &rules, UnixMs::now())
            })
        })
        .await;
    match result {
        Ok(alerts) => {
            for a in &alerts {
                let group: Vec<String> = a.keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
                tracing::warn!(org_id = a.org_id.as_deref().unwrap_or("-"), rule = %a.rule, severity = %a.severity, group = %group.join(" "), window_start = %a.window_start, hits = a.hits, "alert: {}", a.rule_name);
            }
            let handle = store.clone();
            let delivered = tokio::task::spawn_blocking(move || {
                crate::detect::deliver::deliver_alerts(handle.blocking(), &sinks)
            })
            .await
            .expect("alert delivery task panicked");
            if let Err(e) = delivered {
                tracing::warn!(error = %e, "alerts could not be delivered to the sinks; they are tried again next time");
            }
            alerts.len()
        }
        Err(e) => {
            tracing::warn!(error = %e, "detection rules could not run; the same rows are evaluated again next time");
            0
        }
    }
}

/// How often `run` evaluates the rules on new rows.
const DETECT_EVERY: Duration = Duration::from_secs(15);

/// Runs the job until shutdown, or with `once` until caught up and delivered.
pub async fn run(
    config: &Config,
    opts: RunOptions,
    shutdown: Shutdown,
) -> Result<RunReport, StartError> {
    let started = Instant::now();
    let mut tokens = Vec::new();
    for org in &config.orgs {
        tokens.push(org.token_provider()?);
    }
    let mut sinks = Vec::new();
    for sink in &config.sinks {
        let built = crate::sink::build(sink).map_err(|e| StartError::Sink {
            name: sink.name.clone(),
            message: e.to_string(),
        })?;
        sinks.push((sink.name.clone(), sink.batch_rows, built, sink));
    }
    let store = StoreHandle::open(&config.store_path).await?;
    for sink in config.sinks.iter().filter(|s| s.start == SinkStart::Now) {
        for source in SourceKind::ALL {
            if let Some(skipped) = store.start_sink_now(&sink.name, source).await? {
                tracing::info!(sink = %sink.name, source = %source, skipped_rows = skipped, "new sink starts now (start = \"now\"): rows stored before are not sent to it");
            }
        }
    }
    let identities: Vec<_> = config.orgs.iter().map(|o| o.identity()).collect();
    let named = config.named_orgs;
    let keys = store
        .run(move |s| s.register_orgs(&identities, named))
        .await?;
    // One credit budget per token: two organisations never share credits.
    let budgets: Vec<Arc<CreditBudget>> = config
        .orgs
        .iter()
        .map(|o| {
            Arc::new(CreditBudget::new(
                o.budget.credits_per_minute,
                o.budget.share,
            ))
        })
        .collect();
    let telemetry = Arc::new(Telemetry::for_orgs(
        config,
        store.clone(),
        config
            .orgs
            .iter()
            .zip(&keys)
            .zip(&budgets)
            .map(|((o, key), budget)| OrgTelemetry {
                name: o.name.clone(),
                key: *key,
                budget: budget.clone(),
            })
            .collect(),
    ));
    let mut clients = Vec::new();
    for ((org, token), budget) in config.orgs.iter().zip(tokens).zip(&budgets) {
        let mut client = MiroClient::new(&org.miro, token, budget.clone())?
            .with_telemetry(telemetry.clone())
            .with_org_name(&org.name);
        if let Some(base) = opts.backoff_base {
            client = client.with_backoff_base(base);
        }
        clients.push(client);
    }
    let server = match config.service.listen {
        Some(addr) => Some(service::serve(addr, telemetry.clone(), shutdown.clone()).await?),
        None => None,
    };
    let new_rows = Arc::new(Notify::new());
    let collectors_done = Arc::new(AtomicBool::new(false));

    let mut collector_tasks = Vec::new();
    for ((org, key), client) in config.orgs.iter().zip(&keys).zip(&clients) {
        for source in org.enabled_sources() {
            let mut collector = Collector::new(source.clone(), client.clone(), store.clone())
                .with_org(*key, &org.name)
                .with_notify(new_rows.clone())
                .with_telemetry(telemetry.clone());
            if let Some(start) = opts.start {
                collector = collector.with_start(start);
            }
            let shutdown = shutdown.clone();
            let once = opts.once;
            tracing::info!(org = %org.name, source = %source.kind, "collector started");
            collector_tasks.push((
                (org.name.clone(), source.kind),
                tokio::spawn(async move { collector.run(once, shutdown).await }),
            ));
        }
    }
    let sources: Vec<SourceKind> = config.enabled_kinds();
    let mut sink_tasks = Vec::new();
    for (name, batch_rows, sink, sink_config) in sinks {
        // A source this sink does not take (a Sentinel sink without the optional AI
        // interaction logs DCR) is not delivered to it: its rows wait in the store.
        let sink_sources: Vec<SourceKind> = sources
            .iter()
            .copied()
            .filter(|s| match sink_config.skips(*s) {
                None => true,
                Some(why) => {
                    tracing::warn!(sink = %name, source = %s, "{why}");
                    false
                }
            })
            .collect();
        let mode = if opts.once {
            DeliveryMode::Drain {
                collectors_done: collectors_done.clone(),
                retry_for: opts
                    .once_retry_for
                    .unwrap_or(crate::sink::DEFAULT_ONCE_RETRY_FOR),
            }
        } else {
            DeliveryMode::Continuous
        };
        tracing::info!(sink = %name, "delivery started");
        sink_tasks.push((
            name.clone(),
            tokio::spawn(deliver(
                Delivery {
                    name,
                    sink,
                    batch_rows,
                    store: store.clone(),
                    sources: sink_sources,
                    mode,
                    new_rows: new_rows.clone(),
                    telemetry: Some(telemetry.clone()),
                },
                shutdown.clone(),
            )),
        ));
    }

    let maintenance = if opts.once {
        None
    } else {
        let (store, config, mut shutdown) = (store.clone(), config.clone(), shutdown.clone());
        Some(tokio::spawn(async move {
            // Shortly after start, then hourly.
            let mut wait = Duration::from_secs(60);
            while shutdown.sleep(wait).await {
                maintain(&store, &config).await;
                wait = Duration::from_secs(3600);
            }
        }))
    };

    let rules = Arc::new(if config.detect.enabled {
        crate::detect::active_rules(&config.detect)
    } else {
        Vec::new()
    });
    let alert_sinks = Arc::new(config.sinks.clone());
    let detector = if opts.once || rules.is_empty() {
        None
    } else {
        let (store, rules, sinks, mut shutdown) = (
            store.clone(),
            rules.clone(),
            alert_sinks.clone(),
            shutdown.clone(),
        );
        Some(tokio::spawn(async move {
            loop {
                detect_new(&store, rules.clone(), sinks.clone()).await;
                if !shutdown.sleep(DETECT_EVERY).await {
                    break;
                }
            }
        }))
    };

    let mut report = RunReport::default();
    for (kind, task) in collector_tasks {
        let result = task.await.expect("collector task panicked");
        report
            .sources
            .insert(kind, result.map_err(|e: CollectError| e.to_string()));
    }
    match detector {
        Some(task) => task.await.expect("detection task panicked"),
        None if !rules.is_empty() => {
            report.alerts = detect_new(&store, rules.clone(), alert_sinks.clone()).await;
        }
        None => {}
    }
    collectors_done.store(true, Ordering::Release);
    new_rows.notify_waiters();
    for (name, task) in sink_tasks {
        let mut result = task.await.expect("delivery task panicked");
        if let Ok(r) = &result {
            for (source, rows) in &r.rows_by_source {
                match store.pending(&name, *source).await {
                    Ok(pending) => {
                        tracing::info!(sink = %name, source = %source, rows, pending, "delivered this run")
                    }
                    Err(_) => {
                        tracing::info!(sink = %name, source = %source, rows, "delivered this run")
                    }
                }
            }
        }
        if let Ok(r) = result.as_mut()
            && r.gave_up.is_some()
        {
            let delivered: Vec<SourceKind> = r.rows_by_source.iter().map(|(s, _)| *s).collect();
            for source in delivered {
                match store.pending(&name, source).await {
                    Ok(n) => r.pending.push((source, n)),
                    Err(e) => {
                        tracing::warn!(sink = %name, error = %e, "cannot count the rows left")
                    }
                }
            }
        }
        report.sinks.insert(name, result.map_err(|e| e.to_string()));
    }
    match maintenance {
        Some(task) => task.await.expect("maintenance task panicked"),
        None => maintain(&store, config).await,
    }
    if let Some((_, task)) = server {
        // With `--once` the pipeline ends without a signal: the listener ends with it.
        service::stop(task, Duration::from_secs(2)).await;
    }
    for (client, budget) in clients.iter().zip(&budgets) {
        let stats = client.stats();
        report.requests += stats.requests.load(Ordering::Relaxed);
        report.rate_limited += stats.rate_limited.load(Ordering::Relaxed);
        report.retries += stats.retries.load(Ordering::Relaxed);
        for (status, n) in stats.by_status() {
            *report.by_status.entry(status).or_default() += n;
        }
        report.credits_used += budget.snapshot().credits_used_total;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}
