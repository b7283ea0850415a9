//! `mirotrail emulate miro`: the Miro API emulator, standalone on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::anyhow;
use clap::{Args, Subcommand};

use super::Failure;
use crate::emulator::miro::{Faults, MiroEmulator, MiroEmulatorConfig, RateLimit};
use crate::timefmt::UnixMs;

#[derive(Debug, Args)]
pub(crate) struct EmulateArgs {
    #[command(subcommand)]
    service: Service,
}

#[derive(Debug, Subcommand)]
enum Service {
    /// The Miro REST API: audit logs, content logs, token introspection.
    Miro(MiroArgs),
}

#[derive(Debug, Args)]
struct MiroArgs {
    /// Address to listen on (loopback).
    #[arg(long, default_value = "127.0.0.1:8089")]
    listen: SocketAddr,
    /// Seed of the generated organisation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Days of history up to now.
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// Audit events over those days.
    #[arg(long, default_value_t = 100_000)]
    audit_events: u64,
    /// Content log items over those days.
    #[arg(long, default_value_t = 20_000)]
    content_items: u64,
    /// The accepted bearer token (both scopes).
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
}

pub(crate) async fn run(args: EmulateArgs) -> Result<(), Failure> {
    match args.service {
        Service::Miro(a) => {
            for (name, v) in [
                ("--late-share", a.late_share),
                ("--fault-5xx", a.fault_5xx),
                ("--fault-truncate", a.fault_truncate),
                ("--fault-slow", a.fault_slow),
                ("--fault-expire-cursor", a.fault_expire_cursor),
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
            config.seed = a.seed;
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
                ..Faults::default()
            };
            let org_id = config.org_id.clone();
            let handle = MiroEmulator::start(config, a.listen)
                .await
                .map_err(|e| Failure::runtime(anyhow!("cannot listen on {}: {e}", a.listen)))?;
            eprintln!(
                "Miro emulator on {} (organization {org_id}); token: the value of --token. Ctrl-C stops it.",
                handle.base_url()
            );
            let _ = tokio::signal::ctrl_c().await;
            handle.shutdown().await;
            Ok(())
        }
    }
}
