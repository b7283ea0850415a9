//! What commands print on standard output goes through here, so that every command
//! treats a reader that went away (`mirotrail status | head -1`) the same way: the
//! command stops printing and ends quietly with exit 0, instead of panicking in
//! `println!`. Other write errors (a full disk behind a redirection) are runtime
//! failures that say so.

use std::io::Write;

use anyhow::anyhow;

use super::Failure;

/// Writes `text` to standard output and flushes it.
pub(crate) fn print(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// Writes `text` and a newline.
pub(crate) fn println(text: &str) -> Result<(), Failure> {
    print(&format!("{text}\n"))
}

/// The failure for a write to standard output that did not succeed.
pub(crate) fn stdout_error(e: std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Failure::stdout_closed()
    } else {
        Failure::runtime(anyhow!("cannot write to standard output: {e}"))
    }
}
