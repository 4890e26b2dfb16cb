//! Where finished files live: a local folder (embedded default, served by ferry's own
//! HTTP route with HMAC-signed, expiring URLs) or S3 (presigned GET URLs). Keys are
//! stored on jobs, never URLs: a URL is signed fresh on every request.

pub mod key;
pub mod local;
pub mod s3;
pub mod signing;

use std::path::Path;
use std::time::Duration;

use crate::config::{Config, StorageBackend};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("file storage I/O failed: {0}")]
    Io(std::io::Error),
    /// No space left (or a quota reached) where files are written: calls get
    /// RESOURCE_EXHAUSTED and jobs fail with `STORAGE_FULL`, not after retries.
    #[error("file storage is full: {0}")]
    Full(std::io::Error),
    #[error("S3 request failed: {0}")]
    S3(String),
    /// The store did not answer within its timeout (`storage.s3_*_timeout_*`).
    #[error("S3 did not answer: {0}")]
    TimedOut(String),
    #[error("invalid object key `{0}`")]
    InvalidKey(String),
    #[error("invalid storage settings: {0}")]
    Config(String),
    /// The store refuses for a reason that no retry will fix (the bucket does not
    /// exist, the credentials are refused or lack access): an operator must change
    /// a setting. Jobs fail at once; calls get FAILED_PRECONDITION.
    #[error("file storage is misconfigured: {0}")]
    Misconfigured(String),
}

impl From<std::io::Error> for StorageError {
    fn from(err: std::io::Error) -> Self {
        if is_full(&err) {
            StorageError::Full(err)
        } else {
            StorageError::Io(err)
        }
    }
}

/// Whether an I/O error says the disk (or the user's quota) is full.
pub fn is_full(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

impl StorageError {
    /// The store did not answer in time (not a refusal).
    pub fn is_timeout(&self) -> bool {
        matches!(self, StorageError::TimedOut(_))
    }

    /// Whether trying again later can help.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            StorageError::Misconfigured(_) | StorageError::Config(_) | StorageError::InvalidKey(_)
        )
    }
}

impl From<StorageError> for crate::jobs::JobError {
    /// A misconfigured or full store fails the job now, naming the cause (retries
    /// seconds apart would not free space); anything else (a network hiccup, a
    /// stalled store) is retried with backoff.
    fn from(err: StorageError) -> Self {
        if err.is_permanent() {
            crate::jobs::JobError::Permanent {
                reason: "STORAGE_MISCONFIGURED".into(),
                message: err.to_string(),
            }
        } else if matches!(err, StorageError::Full(_)) {
            crate::jobs::JobError::Permanent {
                reason: "STORAGE_FULL".into(),
                message: err.to_string(),
            }
        } else {
            crate::jobs::JobError::Transient(err.to_string())
        }
    }
}

/// Bytes stored for one organization and kind (the key's first segment:
/// `exports`, `imports`, `staged`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub files: u64,
    pub bytes: u64,
}

/// Usage by (organization, kind), from keys `<kind>/<organization>/…`; keys of
/// another shape count under `("", "other")`.
pub type UsageTable = std::collections::BTreeMap<(String, String), Usage>;

/// Adds one stored object to `table`.
fn count_object(table: &mut UsageTable, key: &str, bytes: u64) {
    let mut parts = key.split('/');
    let slot = match (parts.next(), parts.next(), parts.next()) {
        (Some(kind), Some(org), Some(_)) if !kind.starts_with('.') => (org.to_string(), kind.to_string()),
        _ => (String::new(), "other".to_string()),
    };
    let usage = table.entry(slot).or_default();
    usage.files += 1;
    usage.bytes += bytes;
}

/// What a download link needs besides the key.
#[derive(Debug, Clone)]
pub struct Download<'a> {
    pub file_name: &'a str,
    pub content_type: &'a str,
    pub ttl: Duration,
}

#[derive(Clone)]
pub enum Storage {
    Local(local::LocalStore),
    S3(s3::S3Store),
}

impl Storage {
    /// The store the settings name (`storage.backend`).
    pub async fn from_config(config: &Config) -> Result<Storage, StorageError> {
        match config.storage.backend {
            StorageBackend::Local => Ok(Storage::Local(local::LocalStore::from_config(config)?)),
            StorageBackend::S3 => Ok(Storage::S3(s3::S3Store::from_config(&config.storage).await?)),
        }
    }

    /// Checked by `ferry serve` before it serves: the store is reachable and a small
    /// object can be written and removed there, so a wrong bucket, region or key
    /// stops the server at start instead of failing every job later.
    pub async fn check_writable(&self) -> Result<(), StorageError> {
        match self {
            Storage::Local(store) => store.check_writable().await,
            Storage::S3(store) => store.check_writable().await,
        }
    }

    /// Whether the store answers, for the readiness probe: the local folder can be
    /// read, or the bucket answers a bodiless HEAD. Cheap enough to run every
    /// probe interval; a full disk is not an outage (downloads still work).
    pub async fn probe(&self) -> Result<(), StorageError> {
        match self {
            Storage::Local(store) => store.probe().await,
            Storage::S3(store) => store.probe().await,
        }
    }

    /// Removes what a writer killed mid-write left behind, older than `age`: the
    /// local store's hidden `.partial-` copies, S3's open multipart uploads under
    /// the prefix (billed while open). Returns how many went.
    pub async fn remove_abandoned(&self, age: Duration) -> Result<usize, StorageError> {
        match self {
            Storage::Local(store) => store.remove_abandoned(age).await,
            Storage::S3(store) => store.remove_abandoned(age).await,
        }
    }

    /// Files and bytes stored per organization and kind: a full listing of the
    /// store (for `ferry admin storage usage`, not for a hot path).
    pub async fn usage(&self) -> Result<UsageTable, StorageError> {
        let mut table = UsageTable::new();
        let mut add = |key: &str, bytes: u64| count_object(&mut table, key, bytes);
        match self {
            Storage::Local(store) => store.each_object(&mut add).await?,
            Storage::S3(store) => store.each_object(&mut add).await?,
        }
        Ok(table)
    }

    /// Stores the file at `path` under a key no other writer uses (an upload's own
    /// id). When the store did not answer in time the write's outcome is unknown:
    /// a stalled store may still take it when it wakes, leaving a file no job
    /// owns. So the key is deleted again in the background at [`RETRACT_AFTER`].
    pub async fn put_new_file(
        &self,
        key: &str,
        path: &Path,
        content_type: &str,
    ) -> Result<u64, StorageError> {
        let stored = self.put_file(key, path, content_type).await;
        if let Err(err) = &stored
            && err.is_timeout()
        {
            let (storage, key) = (self.clone(), key.to_string());
            tokio::spawn(async move { storage.retract(&key).await });
        }
        stored
    }

    /// Deletes `key` at each of [`RETRACT_AFTER`] (a late write may land after an
    /// earlier delete succeeded).
    async fn retract(&self, key: &str) {
        let mut waited = Duration::ZERO;
        for at in RETRACT_AFTER {
            tokio::time::sleep(at.saturating_sub(waited)).await;
            waited = at;
            if let Err(err) = self.delete(key).await {
                tracing::warn!(key, error = %err, "cannot retract a write whose outcome was unknown; trying again");
            }
        }
    }

    /// Stores the file at `path` under `key`, streaming it (multipart on S3).
    /// Returns the stored size.
    pub async fn put_file(&self, key: &str, path: &Path, content_type: &str) -> Result<u64, StorageError> {
        check_key(key)?;
        match self {
            Storage::Local(store) => store.put_file(key, path).await,
            Storage::S3(store) => store.put_file(key, path, content_type).await,
        }
    }

    /// Copies an object into a local file (streamed; the import job reads its
    /// upload this way).
    pub async fn fetch_to_file(&self, key: &str, path: &Path) -> Result<u64, StorageError> {
        check_key(key)?;
        match self {
            Storage::Local(store) => Ok(tokio::fs::copy(store.path_of(key)?, path).await?),
            Storage::S3(store) => store.fetch_to_file(key, path).await,
        }
    }

    /// Removes an object; removing a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        check_key(key)?;
        match self {
            Storage::Local(store) => store.delete(key).await,
            Storage::S3(store) => store.delete(key).await,
        }
    }

    /// A time-limited URL that downloads the object.
    pub async fn download_url(&self, key: &str, download: &Download<'_>) -> Result<String, StorageError> {
        check_key(key)?;
        match self {
            Storage::Local(store) => Ok(store.download_url(key, download)),
            Storage::S3(store) => store.download_url(key, download).await,
        }
    }
}

/// When a write that timed out is deleted again (see [`Storage::put_new_file`]).
pub const RETRACT_AFTER: [Duration; 4] = [
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
];

/// Partial writes older than this belong to no running writer.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Hourly (and at start): removes partial writes a killed process left behind.
pub async fn keep_tidy(storage: Storage, stop: tokio_util::sync::CancellationToken) {
    crate::hourly::until_stopped(stop, || async {
        match storage.remove_abandoned(ABANDONED_AFTER).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed partial files abandoned in the store"),
            Err(err) => tracing::warn!(error = %err, "cannot sweep abandoned partial files now; next hour"),
        }
    })
    .await
}

/// Keys are ferry's own (`exports/<org>/<job>/<file>`); anything that could escape a
/// folder is refused.
pub fn check_key(key: &str) -> Result<(), StorageError> {
    if key::is_safe(key) {
        Ok(())
    } else {
        Err(StorageError::InvalidKey(key.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_could_escape_the_store_are_refused() {
        assert!(check_key("exports/org-1/job-2/entities.csv.gz").is_ok());
        for bad in ["", "/etc/passwd", "a/../b", "a//b", "a/./b", "a b", "a\\b"] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }
}
