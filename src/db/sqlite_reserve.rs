//! Room kept aside on SQLite's disk so a job that fills it can still say so.
//!
//! When an import fills the disk under the SQLite database, the write that fails
//! leaves the disk full: the write-ahead log cannot be folded into the database
//! (that grows the file), and recording the import's failure, a few pages, has
//! nowhere to go. The job then stayed RUNNING for as long as the disk stayed full.
//! So ferry keeps a file of [`RESERVE_BYTES`] beside the database
//! (`<database>.reserve`): the write that finds the disk full deletes it, and the
//! failure is recorded in the room it leaves. The file is made again when the
//! database is opened and before every import run, once there is room for it.

use std::io::Write;
use std::path::{Path, PathBuf};

/// What the reserve holds: enough for the few commits that end a job (a commit
/// appends every page it touches, 16 KiB each, to the write-ahead log).
pub const RESERVE_BYTES: usize = 2 * 1024 * 1024;

/// The reserve's file beside the database at `database` (`None` for an in-memory
/// database, which has no disk to fill).
fn reserve_path(database: &str) -> Option<PathBuf> {
    if database.is_empty() || database == ":memory:" || database.starts_with("file:") {
        return None;
    }
    Some(PathBuf::from(format!("{database}.reserve")))
}

/// Makes the reserve unless it is there; on a disk without room for it, leaves
/// nothing and says so once (the next attempt comes with the next import).
pub fn keep(database: &str) {
    let Some(path) = reserve_path(database) else {
        return;
    };
    if path.metadata().is_ok_and(|m| m.len() as usize >= RESERVE_BYTES) {
        return;
    }
    if let Err(err) = write_reserve(&path) {
        let _ = std::fs::remove_file(&path);
        tracing::warn!(
            path = %path.display(),
            error = %err,
            "no room for the SQLite disk's reserve; a job that fills the disk may not be able to record its failure"
        );
    }
}

fn write_reserve(path: &Path) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    // Written, not just sized: a sparse file would free nothing when deleted.
    file.write_all(&vec![0u8; RESERVE_BYTES])?;
    file.sync_all()
}

/// Frees the reserve, after a write found the disk full; true when there was one.
pub fn release(database: &str) -> bool {
    let Some(path) = reserve_path(database) else {
        return false;
    };
    match std::fs::remove_file(&path) {
        Ok(()) => {
            tracing::warn!(path = %path.display(), "the SQLite disk is full; its reserve is freed so the failure can be recorded");
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_made_once_and_freed_on_demand() {
        let folder = tempfile::tempdir().unwrap();
        let database = folder.path().join("ferry.db").display().to_string();
        keep(&database);
        let path = reserve_path(&database).unwrap();
        assert_eq!(path.metadata().unwrap().len() as usize, RESERVE_BYTES);
        assert!(release(&database));
        assert!(!path.exists());
        assert!(!release(&database), "a second release has nothing to free");
        assert_eq!(reserve_path(":memory:"), None);
    }
}
