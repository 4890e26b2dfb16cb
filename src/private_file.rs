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
    file.write_all(contents.as_bytes())
}
