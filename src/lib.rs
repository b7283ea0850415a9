//! mirotrail: Miro Enterprise audit logs and board content logs, collected completely and
//! exactly once into a local SQLite store, and delivered from there to security tools.
//!
//! Data flow, one module each: `miro` (API client, credit budget) -> `collect` (windows,
//! checkpoints) -> `store` (SQLite tables in the Sentinel shape, outbox) -> `sink`
//! (destinations). `pipeline` wires them for `run` and `demo`; `cli` is the command line.
//! The emulators of Miro and Azure (for tests, benchmarks, `demo` and `emulate`) are the
//! `mirotrail-emulator` crate in `crates/emulator`.

pub mod check;
pub mod cli;
pub mod collect;
pub mod config;
pub mod detect;
pub mod miro;
pub mod net;
pub mod ocsf;
pub mod pipeline;
pub mod private;
pub mod report;
pub mod retry;
pub mod secret;
pub mod sentinel_content;
pub mod service;
pub mod settings;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod store;
pub mod timefmt;
