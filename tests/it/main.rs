//! The integration tests: one binary, one module per area, each driving the library over
//! loopback HTTP against the emulators.

mod sentinel;
