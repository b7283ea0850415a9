//! Emulators of the services mirotrail talks to, faithful to the public contracts in
//! `reference/`: they serve the tests, the benchmarks and `mirotrail demo` over loopback.

pub mod miro;
