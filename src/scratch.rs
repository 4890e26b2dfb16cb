//! Each running process's own temp folder, `<data_dir>/tmp/<instance>/`, held by an
//! exclusive lock on its `.lock` file for as long as the process lives. A process
//! that dies, even by `kill -9`, loses the lock with its file descriptors; the next
//! process to start removes every folder whose lock it can take, and never one
//! whose owner is alive, so processes sharing a data folder stay safe. Upload copies
//! and export `.part` files of crashed attempts thus go at the next start instead of
//! at the janitor's 24-hour sweep.

use std::fs::{self, File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

const LOCK_FILE: &str = ".lock";

/// A folder without a lock file is another process between creating it and locking
/// it; one older than this was abandoned there.
const UNLOCKED_GRACE: Duration = Duration::from_secs(3600);

/// This process's temp folder; removed when dropped (a clean stop).
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
    /// Held for the process's lifetime: the lock is the liveness signal.
    _lock: File,
}

impl Scratch {
    /// Removes the folders of instances that are gone, then creates and locks this
    /// process's own below `root`. Also returns the names of the instances found
    /// gone: their workers' jobs can be taken back at once (see [`Scratch::name`]).
    pub fn claim(root: &Path) -> io::Result<(Scratch, Vec<String>)> {
        fs::create_dir_all(root)?;
        let gone = sweep(root);
        if !gone.is_empty() {
            tracing::info!(removed = gone.len(), root = %root.display(), "removed temp folders of stopped instances");
        }
        let name = format!("{}-{}", std::process::id(), uuid::Uuid::now_v7().simple());
        // The folder appears under its name already locked: it is made (and its lock
        // taken) under a hidden name first, then renamed. A process killed between
        // the two steps leaves a hidden folder, which the sweep treats like any
        // unlocked one.
        let staging = root.join(format!(".{name}"));
        fs::create_dir(&staging)?;
        let lock = File::create(staging.join(LOCK_FILE))?;
        lock.lock()?;
        let dir = root.join(&name);
        fs::rename(&staging, &dir)?;
        Ok((Scratch { dir, _lock: lock }, gone))
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The instance's name (`<pid>-<uuid>`), unique across processes and restarts;
    /// workers end their lease owner with it.
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Removes every instance folder below `root` whose owner is gone; returns their
/// names.
pub fn sweep(root: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut gone = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() || is_alive(&path) {
            continue;
        }
        if fs::remove_dir_all(&path).is_ok() {
            gone.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    gone
}

/// Whether a process still holds the folder's lock (or may be about to).
fn is_alive(dir: &Path) -> bool {
    match File::open(dir.join(LOCK_FILE)) {
        // The lock is released when this probe's file is closed.
        Ok(file) => matches!(file.try_lock(), Err(TryLockError::WouldBlock)),
        Err(_) => fs::metadata(dir)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age < UNLOCKED_GRACE),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test setup")]

    use super::*;

    #[test]
    fn a_live_instance_folder_is_kept_and_a_released_one_is_removed() {
        let root = tempfile::tempdir().unwrap();
        let (live, _) = Scratch::claim(root.path()).unwrap();
        fs::write(live.path().join("upload.csv"), "x").unwrap();
        // What a killed process leaves: its folder, its file, a lock nobody holds.
        let dead = root.path().join("4242-dead");
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join(LOCK_FILE), "").unwrap();
        fs::write(dead.join("export.part"), "x").unwrap();
        let (next, gone) = Scratch::claim(root.path()).unwrap();
        assert!(!dead.exists(), "a dead instance's folder was kept");
        assert_eq!(gone, ["4242-dead"]);
        assert!(
            live.path().join("upload.csv").exists(),
            "a live instance's file was removed"
        );
        let next_path = next.path().to_path_buf();
        drop(next);
        assert!(!next_path.exists(), "a clean stop leaves its folder behind");
    }
}
