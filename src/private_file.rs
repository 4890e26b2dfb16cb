//! Secrets on disk (the bootstrap key, the URL signing key): files only their owner
//! can read.

use std::io::Write;
use std::path::Path;

/// Writes `contents` to `path` with mode 0600 (on Unix).
pub fn write(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    // The mode above applies only to a new file: one that was already there
    // (created by hand, or by an older version) is narrowed too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents.as_bytes())
}
