//! Emulators of the services mirotrail talks to, faithful to the public contracts
//! written up in `docs/` (`miro-api.md`, `sentinel-contract.md`, `azure-logs-ingestion.md`)
//! and speaking their real protocols over loopback HTTP, for the test suite, the
//! benchmarks and `mirotrail demo`: `miro` (the two log endpoints and token introspection)
//! and `azure` (Entra token endpoint, managed identity endpoint and the Logs Ingestion API).

pub mod azure;
pub mod miro;
