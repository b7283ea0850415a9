//! The integration tests: the real `mirotrail` binary and library against the emulators,
//! over loopback HTTP.

mod cli;
mod collect;
mod support;
