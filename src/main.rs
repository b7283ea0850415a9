//! The `mirotrail` binary: the allocator's settings, then the command line (`cli`).

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    mirotrail::cli::main()
}

/// glibc's malloc gives a thread that finds the arenas busy an arena of its own (up to 8
/// per core) and keeps the memory freed into it: the tokio workers and the store's
/// blocking thread, each allocating a batch's worth in turn, made the peak RSS of a
/// delivery swing between 46 and 62 MB from run to run. Two arenas keep it at 40-42 MB
/// and backfill's at 44-52 MB instead of 64-66, at the same CPU (BENCHMARKS.md, "Delivery
/// CPU and the Azure emulator"). A `MALLOC_ARENA_MAX` set in the environment is left to
/// glibc, so an operator can still choose another limit.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    #[expect(
        clippy::disallowed_methods,
        reason = "glibc's own variable, read before any config: it is not a mirotrail setting"
    )]
    let set_by_operator = std::env::var_os("MALLOC_ARENA_MAX").is_some();
    if set_by_operator {
        return;
    }
    // SAFETY: `mallopt` sets a parameter of the allocator and is called before any
    // other thread of the process exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
