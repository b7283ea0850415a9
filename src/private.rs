//! Audit logs are private to the user running mirotrail: folders it creates are 0700 and
//! files it creates 0600, whatever the umask (SQLite gives `-wal` and `-shm` the mode of
//! the database file, which is created here first).
//!
//! Existing files of mirotrail's own (the database, its `-wal`/`-shm`, lock files, NDJSON
//! archive files) with wider modes are tightened to 0600 when opened, with a warning.
//! Existing folders are only warned about: they may be shared (the config file's folder
//! holds the store by default), and the files in them are private anyway.

use std::fs::OpenOptions;
use std::path::Path;

/// Mode of the folders mirotrail creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files mirotrail creates.
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` and missing parents as private folders; warns when `path` already
/// exists and others may read it.
pub fn create_dir_all(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        warn_if_shared_dir(path);
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder.create(path)
}

/// Open options that create the file as 0600.
pub fn file_options() -> OpenOptions {
    #[allow(unused_mut)]
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    options
}

/// Sets an existing file of mirotrail's to 0600 if group or others have any access;
/// logs what it did. A missing file is fine; a file it may not change gets a warning.
pub fn tighten_file(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return;
        };
        let mode = meta.permissions().mode() & 0o777;
        if !meta.is_file() || mode & 0o077 == 0 {
            return;
        }
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE)) {
            Ok(()) => tracing::warn!(
                path = %path.display(),
                was = format!("{mode:o}"),
                "the file was readable by other users; it is now private (600)"
            ),
            Err(e) => tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                error = %e,
                "the file is readable by other users and cannot be made private; run `chmod 600` on it"
            ),
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

fn warn_if_shared_dir(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:o}"),
                    "other users may list this folder (its mirotrail files are private, 600); \
                     run `chmod 700` on it unless it is shared on purpose"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
