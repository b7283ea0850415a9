//! The `mirotrail` binary: the allocator's settings, then the command line (`cli`).

fn main() -> std::process::ExitCode {
    mirotrail::cli::main()
}

/// jemalloc is the allocator of the whole process on Linux (the `unprefixed` build also
/// serves SQLite's and zstd's `malloc`). glibc's malloc kept what a backfill frees in
/// fragmented per-thread arenas: its peak RSS crept up with the span (43 MB after 1.2
/// million events, 48 MB after 4.8 million, even with two arenas). With one arena, freed
/// pages given back to the system after 300 ms, and no lazy (`MADV_FREE`) stage whose pages
/// the kernel still counts as resident, a backfill's peak stays at 42-44 MB at every span
/// and a delivery's is 4 MB lower, at the same CPU but for the first detection pass over a
/// fresh store (6% more; BENCHMARKS.md, "jemalloc: peak RSS flat in the span").
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its first allocation (its `malloc_conf`); an operator can
/// add to them with `MALLOC_CONF` in the environment, which jemalloc reads after these.
#[cfg(target_os = "linux")]
#[unsafe(export_name = "malloc_conf")]
static MALLOC_CONF: MallocConf =
    MallocConf(c"narenas:1,dirty_decay_ms:300,muzzy_decay_ms:0".as_ptr());

/// A C string pointer in a static: jemalloc declares `const char *malloc_conf`.
#[cfg(target_os = "linux")]
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: the pointer is to a string literal, never written, so sharing it between
// threads is sound.
#[cfg(target_os = "linux")]
unsafe impl Sync for MallocConf {}
