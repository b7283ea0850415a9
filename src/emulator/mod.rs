//! Emulators of the services mirotrail talks to, speaking their real protocols over
//! loopback HTTP, for the test suite, benchmarks and `mirotrail demo`: `azure` (Entra
//! token endpoint, managed identity endpoint and the Logs Ingestion API).

pub mod azure;
