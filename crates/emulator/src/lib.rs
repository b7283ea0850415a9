//! Emulators of the services mirotrail talks to, faithful to the public contracts
//! written up in mirotrail's `docs/` (`miro-api.md`, `sentinel-contract.md`,
//! `azure-logs-ingestion.md`, `splunk-hec.md`, `elasticsearch.md`) and speaking their real protocols over
//! loopback HTTP, for the test suite, the benchmarks and `mirotrail demo`: `miro` (the two
//! log endpoints and token introspection), `azure` (Entra token endpoint, managed identity
//! endpoint and the Logs Ingestion API), `splunk` (the HTTP Event Collector with indexer
//! acknowledgement) and `elastic` (the Elasticsearch / OpenSearch `_bulk` API).
//!
//! This crate depends on nothing of mirotrail itself: it has its own time type ([`UnixMs`])
//! and its own implementation of the Sentinel DCR transformation (`azure::Stream`), so it
//! checks mirotrail against the contracts rather than against mirotrail's own code.

pub mod azure;
pub mod elastic;
pub mod miro;
pub mod splunk;
pub mod time;

pub use time::UnixMs;
