//! Running unattended: what the collectors, the Miro client and the delivery tasks report
//! (`Telemetry`) becomes Prometheus metrics and a readiness verdict, served on
//! `[service] listen` as `/metrics`, `/healthz` and `/readyz`.
//!
//! Invariants: reporting never blocks or fails the pipeline (counters are atomics, the
//! health state a short mutex); values that the store already knows (watermark lag,
//! backlog) are read from it at scrape time, so they are right after a restart too; they
//! are read on the blocking pool through the store's reader connection, so a write
//! waiting for the database lock never delays `/metrics` or `/healthz`.

mod health;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use health::{READY_POLLS, SLACK, SinkHealth, SourceHealth};

use crate::config::{Config, SourceKind};
use crate::miro::CreditBudget;
use crate::shutdown::Shutdown;
use crate::store::{OrgKey, StoreHandle};
use crate::timefmt::UnixMs;

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    org: String,
    source: String,
}

impl SourceLabel {
    fn new(org: &str, source: SourceKind) -> Self {
        SourceLabel {
            org: org.into(),
            source: source.name().into(),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OrgLabel {
    org: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    org: String,
    source: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    org: String,
    source: String,
    cause: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabel {
    sink: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkSourceLabels {
    sink: String,
    source: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkCauseLabels {
    sink: String,
    cause: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

/// The metric families (names are documented in the README, "Run as a service").
#[derive(Debug, Default)]
struct Families {
    events_collected: Family<SourceLabel, Counter>,
    items_partially_derived: Family<SourceLabel, Counter>,
    pages: Family<SourceLabel, Counter>,
    requests: Family<RequestLabels, Counter>,
    cycle_failures: Family<CauseLabels, Counter>,
    source_last_success: Family<SourceLabel, FloatGauge>,
    watermark_lag: Family<SourceLabel, FloatGauge>,
    credits_remaining: Family<OrgLabel, FloatGauge>,
    credits_allowance: Family<OrgLabel, FloatGauge>,
    delivered_rows: Family<SinkSourceLabels, Counter>,
    pending_rows: Family<SinkSourceLabels, Gauge>,
    dead_letter_rows: Family<SinkSourceLabels, Gauge>,
    delivery_failures: Family<SinkCauseLabels, Counter>,
    sink_last_success: Family<SinkLabel, FloatGauge>,
    ready: Gauge,
    build_info: Family<VersionLabel, Gauge>,
    alerts: Family<RuleLabel, Gauge>,
}

#[derive(Debug)]
struct HealthState {
    /// Per organisation name and source.
    sources: Vec<((String, SourceKind), SourceHealth)>,
    sinks: Vec<(String, SinkHealth)>,
}

/// What the pipeline reports, shared by every task.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    families: Families,
    health: Mutex<HealthState>,
    store: StoreHandle,
    orgs: Vec<OrgTelemetry>,
    sink_names: Vec<String>,
    /// The sources enabled in at least one organisation.
    source_kinds: Vec<SourceKind>,
    /// (organisation, source) pairs collected.
    feeds: Vec<(usize, SourceKind)>,
    /// (sink, source) pairs the sink does not take (`SinkConfig::skips`): no delivery
    /// series, so a backlog that is never sent does not look like one that is stuck.
    skipped: Vec<(String, SourceKind)>,
}

fn unix_secs(t: UnixMs) -> f64 {
    t.0 as f64 / 1000.0
}

/// One organisation as the metrics see it: its label, its key in the store, its token's
/// credit budget.
#[derive(Debug, Clone)]
pub struct OrgTelemetry {
    pub name: String,
    pub key: OrgKey,
    pub budget: Arc<CreditBudget>,
}

impl Telemetry {
    /// Registers the metrics of the enabled sources and configured sinks of a config
    /// with one organisation (its first, with the default key).
    pub fn new(config: &Config, store: StoreHandle, budget: Arc<CreditBudget>) -> Self {
        let name = config
            .orgs
            .first()
            .map_or(crate::config::DEFAULT_ORG_NAME, |o| o.name.as_str())
            .to_string();
        Telemetry::for_orgs(
            config,
            store,
            vec![OrgTelemetry {
                name,
                key: OrgKey::DEFAULT,
                budget,
            }],
        )
    }

    /// Registers the metrics of every organisation in `orgs` (in the config's order), their
    /// enabled sources, and the configured sinks of `config`.
    pub fn for_orgs(config: &Config, store: StoreHandle, orgs: Vec<OrgTelemetry>) -> Self {
        let mut registry = Registry::default();
        let f = Families::default();
        registry.register(
            "mirotrail_events_collected",
            "New events stored per source (re-read duplicates not counted)",
            f.events_collected.clone(),
        );
        registry.register(
            "mirotrail_items_partially_derived",
            "New rows stored with only some columns derived (the item is whole in _raw; see `status`)",
            f.items_partially_derived.clone(),
        );
        registry.register(
            "mirotrail_miro_pages",
            "Miro pages committed to the store per source",
            f.pages.clone(),
        );
        registry.register(
            "mirotrail_miro_requests",
            "Miro API requests per source and HTTP status (`error`: no answer)",
            f.requests.clone(),
        );
        registry.register(
            "mirotrail_source_cycle_failures",
            "Failed poll cycles per source and cause (`permanent`: needs a human)",
            f.cycle_failures.clone(),
        );
        registry.register(
            "mirotrail_source_last_success_timestamp_seconds",
            "When the source last completed a poll cycle (Unix time)",
            f.source_last_success.clone(),
        );
        registry.register(
            "mirotrail_watermark_lag_seconds",
            "How far the source's watermark (everything before it is stored) is behind now",
            f.watermark_lag.clone(),
        );
        registry.register(
            "mirotrail_miro_credits_remaining",
            "Miro credits left in the current minute (X-RateLimit-Remaining; -1 until known)",
            f.credits_remaining.clone(),
        );
        registry.register(
            "mirotrail_miro_credits_allowance_per_minute",
            "Credits per minute mirotrail allows itself (budget.share of the token's budget)",
            f.credits_allowance.clone(),
        );
        registry.register(
            "mirotrail_sink_delivered_rows",
            "Rows the destination acknowledged, per sink and source",
            f.delivered_rows.clone(),
        );
        registry.register(
            "mirotrail_sink_pending_rows",
            "Stored rows the sink has not delivered yet (its backlog)",
            f.pending_rows.clone(),
        );
        registry.register(
            "mirotrail_sink_dead_letter_rows",
            "Rows set aside because the destination will never accept them as they are \
             (`mirotrail deadletter list`), per sink and source",
            f.dead_letter_rows.clone(),
        );
        registry.register(
            "mirotrail_sink_delivery_failures",
            "Failed deliveries per sink and cause (`permanent`, `throttled`, `transient`)",
            f.delivery_failures.clone(),
        );
        registry.register(
            "mirotrail_sink_last_success_timestamp_seconds",
            "When the sink last had rows acknowledged (Unix time)",
            f.sink_last_success.clone(),
        );
        registry.register(
            "mirotrail_ready",
            "1 when /readyz answers 200: every source polls and every sink drains",
            f.ready.clone(),
        );
        registry.register(
            "mirotrail_alerts",
            "Alerts stored by the detection rules, per rule (`mirotrail status`)",
            f.alerts.clone(),
        );
        registry.register(
            "mirotrail_build_info",
            "The running version",
            f.build_info.clone(),
        );
        f.build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        let now = Instant::now();
        let mut feeds: Vec<(usize, SourceKind)> = Vec::new();
        let mut health_sources = Vec::new();
        for (i, org) in orgs.iter().enumerate() {
            f.credits_remaining
                .get_or_create(&OrgLabel {
                    org: org.name.clone(),
                })
                .set(-1.0);
            if let Some(oc) = config.orgs.iter().find(|o| o.name == org.name) {
                for s in oc.enabled_sources() {
                    feeds.push((i, s.kind));
                    health_sources.push((
                        (org.name.clone(), s.kind),
                        SourceHealth::new(s.poll_interval, now),
                    ));
                }
            }
        }
        let source_kinds: Vec<SourceKind> = config.enabled_kinds();
        let sink_names: Vec<String> = config.sinks.iter().map(|s| s.name.clone()).collect();
        let skipped: Vec<(String, SourceKind)> = config
            .sinks
            .iter()
            .flat_map(|sink| {
                source_kinds
                    .iter()
                    .filter(|k| sink.skips(**k).is_some())
                    .map(|k| (sink.name.clone(), *k))
            })
            .collect();
        // Every series exists from the start, at zero, so rates and alerts work at once.
        for (i, kind) in &feeds {
            let l = SourceLabel::new(&orgs[*i].name, *kind);
            let _ = f.events_collected.get_or_create(&l);
            let _ = f.items_partially_derived.get_or_create(&l);
            let _ = f.pages.get_or_create(&l);
            for cause in ["permanent", "transient"] {
                let _ = f.cycle_failures.get_or_create(&CauseLabels {
                    org: orgs[*i].name.clone(),
                    source: kind.name().into(),
                    cause: cause.into(),
                });
            }
        }
        for sink in &sink_names {
            for cause in ["permanent", "throttled", "transient"] {
                let _ = f.delivery_failures.get_or_create(&SinkCauseLabels {
                    sink: sink.clone(),
                    cause: cause.into(),
                });
            }
        }
        for sink in &sink_names {
            for kind in source_kinds
                .iter()
                .filter(|k| !skipped.contains(&(sink.clone(), **k)))
            {
                let _ = f.delivered_rows.get_or_create(&SinkSourceLabels {
                    sink: sink.clone(),
                    source: kind.name().into(),
                });
            }
        }
        Telemetry {
            registry,
            families: f,
            health: Mutex::new(HealthState {
                sources: health_sources,
                sinks: sink_names
                    .iter()
                    .map(|n| (n.clone(), SinkHealth::default()))
                    .collect(),
            }),
            store,
            orgs,
            sink_names,
            source_kinds,
            feeds,
            skipped,
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A Miro response (`status`) or a request without one (`None`).
    pub fn miro_request(&self, org: &str, source: SourceKind, status: Option<u16>) {
        self.families
            .requests
            .get_or_create(&RequestLabels {
                org: org.into(),
                source: source.name().into(),
                status: status.map_or("error".into(), |s| s.to_string()),
            })
            .inc();
    }

    /// A page committed with `inserted` new rows, `partial` of them partly derived.
    pub fn page_committed(&self, org: &str, source: SourceKind, inserted: u64, partial: u64) {
        let l = SourceLabel::new(org, source);
        self.families.pages.get_or_create(&l).inc();
        self.families
            .events_collected
            .get_or_create(&l)
            .inc_by(inserted);
        self.families
            .items_partially_derived
            .get_or_create(&l)
            .inc_by(partial);
    }

    /// A poll cycle that caught up.
    pub fn poll_completed(&self, org: &str, source: SourceKind) {
        self.families
            .source_last_success
            .get_or_create(&SourceLabel::new(org, source))
            .set(unix_secs(UnixMs::now()));
        let now = Instant::now();
        if let Some((_, h)) = self
            .health()
            .sources
            .iter_mut()
            .find(|((o, k), _)| o == org && *k == source)
        {
            h.last_poll_completed = Some(now);
            h.error = None;
        }
    }

    /// A poll cycle that failed; `permanent` when only a human can fix it.
    pub fn poll_failed(&self, org: &str, source: SourceKind, message: &str, permanent: bool) {
        self.families
            .cycle_failures
            .get_or_create(&CauseLabels {
                org: org.into(),
                source: source.name().into(),
                cause: if permanent { "permanent" } else { "transient" }.into(),
            })
            .inc();
        if let Some((_, h)) = self
            .health()
            .sources
            .iter_mut()
            .find(|((o, k), _)| o == org && *k == source)
        {
            h.error = Some((message.to_string(), permanent));
        }
    }

    /// Rows acknowledged by a sink.
    pub fn delivered(&self, sink: &str, source: SourceKind, rows: u64) {
        let f = &self.families;
        f.delivered_rows
            .get_or_create(&SinkSourceLabels {
                sink: sink.into(),
                source: source.name().into(),
            })
            .inc_by(rows);
        f.sink_last_success
            .get_or_create(&SinkLabel { sink: sink.into() })
            .set(unix_secs(UnixMs::now()));
        let now = Instant::now();
        if let Some((_, h)) = self.health().sinks.iter_mut().find(|(n, _)| n == sink) {
            h.delivered(now);
        }
    }

    /// A failed delivery; `cause` is `permanent`, `throttled` or `transient`.
    pub fn delivery_failed(&self, sink: &str, cause: &'static str, message: &str) {
        self.families
            .delivery_failures
            .get_or_create(&SinkCauseLabels {
                sink: sink.into(),
                cause: cause.into(),
            })
            .inc();
        let now = Instant::now();
        if let Some((_, h)) = self.health().sinks.iter_mut().find(|(n, _)| n == sink) {
            h.failed(now, message, cause == "permanent");
        }
    }

    /// Why the service is not ready (one line per source or sink), empty when it is.
    pub fn not_ready(&self) -> Vec<String> {
        let now = Instant::now();
        let h = self.health();
        let mut reasons: Vec<String> = h
            .sources
            .iter()
            .filter_map(|((o, k), s)| {
                s.not_ready(now).map(|r| {
                    if self.orgs.len() > 1 {
                        format!("source {k} of {o}: {r}")
                    } else {
                        format!("source {k}: {r}")
                    }
                })
            })
            .collect();
        reasons.extend(
            h.sinks
                .iter()
                .filter_map(|(n, s)| s.not_ready(now).map(|r| format!("sink {n}: {r}"))),
        );
        reasons
    }

    /// Reads the store and budget into the gauges (blocking: SQLite; `/metrics` calls it
    /// on the blocking pool).
    fn refresh(&self) {
        let store = self.store.blocking();
        let f = &self.families;
        let now = UnixMs::now();
        for &(i, kind) in &self.feeds {
            let org = &self.orgs[i];
            match store.observe_checkpoint(org.key, kind) {
                Ok(Some(cp)) => {
                    f.watermark_lag
                        .get_or_create(&SourceLabel::new(&org.name, kind))
                        .set(now.since(cp.watermark).as_secs_f64());
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "metrics: cannot read a checkpoint"),
            }
        }
        for &kind in &self.source_kinds {
            for sink in &self.sink_names {
                if self.skipped.contains(&(sink.clone(), kind)) {
                    continue;
                }
                match store.pending(sink, kind) {
                    Ok(n) => {
                        f.pending_rows
                            .get_or_create(&SinkSourceLabels {
                                sink: sink.clone(),
                                source: kind.name().into(),
                            })
                            .set(n);
                    }
                    Err(e) => tracing::warn!(error = %e, "metrics: cannot count a backlog"),
                }
            }
        }
        match store.dead_letter_counts() {
            Ok(counts) => {
                for sink in &self.sink_names {
                    for &kind in &self.source_kinds {
                        let rows = counts
                            .iter()
                            .find(|c| &c.sink == sink && c.source == kind)
                            .map_or(0, |c| c.rows);
                        f.dead_letter_rows
                            .get_or_create(&SinkSourceLabels {
                                sink: sink.clone(),
                                source: kind.name().into(),
                            })
                            .set(rows);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot count dead letters"),
        }
        match store.read("counting alerts", crate::detect::eval::alert_counts) {
            Ok(counts) => {
                for (rule, n) in counts.by_rule {
                    f.alerts.get_or_create(&RuleLabel { rule }).set(n);
                }
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot count alerts"),
        }
        for org in &self.orgs {
            let b = org.budget.snapshot();
            let l = OrgLabel {
                org: org.name.clone(),
            };
            if let Some(r) = b.server_remaining {
                f.credits_remaining.get_or_create(&l).set(r as f64);
            }
            f.credits_allowance
                .get_or_create(&l)
                .set(b.allowance_per_minute as f64);
        }
        f.ready.set(i64::from(self.not_ready().is_empty()));
    }

    /// The metrics in the OpenMetrics text format (which Prometheus reads). Blocking:
    /// call it off the async runtime.
    pub fn render(&self) -> String {
        self.refresh();
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {addr} for /metrics, /healthz and /readyz: {cause}; change \
     `service.listen` (or set it to \"\" to serve nothing)"
)]
pub struct ListenError {
    pub addr: SocketAddr,
    pub cause: std::io::Error,
}

async fn metrics(State(t): State<Arc<Telemetry>>) -> Response {
    let body = tokio::task::spawn_blocking(move || t.render())
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

async fn readyz(State(t): State<Arc<Telemetry>>) -> Response {
    let reasons = t.not_ready();
    if reasons.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{}\n", reasons.join("\n")),
        )
            .into_response()
    }
}

/// Binds `addr` and serves the endpoints until `shutdown`. Returns the bound address and
/// the server task.
pub async fn serve(
    addr: SocketAddr,
    telemetry: Arc<Telemetry>,
    mut shutdown: Shutdown,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ListenError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|cause| ListenError { addr, cause })?;
    let bound = listener
        .local_addr()
        .map_err(|cause| ListenError { addr, cause })?;
    if !bound.ip().is_loopback() {
        tracing::warn!(addr = %bound, "metrics and health are served beyond loopback, without authentication");
    }
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(telemetry);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the metrics and health listener stopped");
        }
    });
    tracing::info!(url = %format!("http://{bound}"), "serving /metrics, /healthz and /readyz");
    Ok((bound, task))
}

/// Waits at most `grace` for the server task to finish.
pub async fn stop(task: tokio::task::JoinHandle<()>, grace: Duration) {
    let mut task = task;
    if tokio::time::timeout(grace, &mut task).await.is_err() {
        task.abort();
    }
}
