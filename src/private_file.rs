//! Secrets on disk (the bootstrap key, the URL signing key): files only their owner
//! can read. The server commands go further and make every file they create so
//! ([`restrict_new_files`]): the data folder holds KYC data (the database, export
//! files, uploads, e-mails in the mail drop).

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

/// Sets the process's umask to 077, so every file the server creates from here on
/// (the SQLite database and its WAL, stored export and import files, temp files,
/// the mail drop) is mode 0600 and every folder 0700, whoever the files' readers
/// would otherwise have been. Not for client commands: their downloads belong to
/// the person running them, under that person's umask.
pub fn restrict_new_files() {
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}
