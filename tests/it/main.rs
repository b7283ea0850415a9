//! The integration tests: one binary, one module per area, each driving the real
//! `mirotrail` binary or library over loopback HTTP against the emulators.

mod ai;
mod backfill;
mod cli;
mod collect;
mod detect;
mod e2e;
mod elastic;
mod faults;
mod firsthour;
mod getting_started;
mod harness;
mod limits;
mod ocsf;
mod ops;
mod orgs;
mod report;
mod s3;
mod sentinel;
mod splunk;
mod support;
mod tokens;
