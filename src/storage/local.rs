//! The local folder store of the embedded default. Files are served by ferry's HTTP
//! route `/files/<key>` when the URL's signature and expiry check out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::RngCore;

use super::signing::UrlSigner;
use super::{Download, StorageError};
use crate::config::Config;

/// What names a copy in progress: `.<name>.partial-<id>`, renamed once whole.
const PARTIAL_MARK: &str = ".partial-";

fn is_partial_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(PARTIAL_MARK)
}

#[derive(Clone)]
pub struct LocalStore {
    root: PathBuf,
    /// Shared by every clone: the server sets it once it knows its bound address.
    base_url: std::sync::Arc<std::sync::RwLock<String>>,
    signer: UrlSigner,
}

/// Query parameters of a signed local URL.
#[derive(Debug, serde::Deserialize)]
pub struct SignedQuery {
    pub expires: i64,
    pub name: String,
    #[serde(rename = "type")]
    pub content_type: String,
    pub sig: String,
}

impl LocalStore {
    pub fn from_config(config: &Config) -> Result<LocalStore, StorageError> {
        let root = if config.storage.local_dir.is_empty() {
            config.data_dir().join("files")
        } else {
            PathBuf::from(&config.storage.local_dir)
        };
        std::fs::create_dir_all(&root)?;
        let secret = signing_secret(config)?;
        let base_url = if config.server.public_url.is_empty() {
            format!("http://{}", config.server.http_addr)
        } else {
            config.server.public_url.trim_end_matches('/').to_string()
        };
        Ok(LocalStore {
            root,
            base_url: std::sync::Arc::new(std::sync::RwLock::new(base_url)),
            signer: UrlSigner::new(&secret),
        })
    }

    /// A probe file can be written to and removed from the folder.
    pub async fn check_writable(&self) -> Result<(), StorageError> {
        let probe = self.root.join(format!(".ferry-probe-{}", uuid::Uuid::now_v7()));
        let refused = |err: std::io::Error| {
            StorageError::Misconfigured(format!(
                "cannot write to the file folder {} (storage.local_dir, or server.data_dir): {err}",
                self.root.display()
            ))
        };
        tokio::fs::write(&probe, b"ferry start-up check")
            .await
            .map_err(refused)?;
        tokio::fs::remove_file(&probe).await.map_err(refused)
    }

    /// The folder is there and can be listed.
    pub async fn probe(&self) -> Result<(), StorageError> {
        let mut entries = tokio::fs::read_dir(&self.root).await?;
        entries.next_entry().await?;
        Ok(())
    }

    /// Calls `each` with the key and size of every stored file (hidden probe and
    /// partial files left out).
    pub async fn each_object(&self, each: &mut impl FnMut(&str, u64)) -> Result<(), StorageError> {
        let mut folders = vec![self.root.clone()];
        while let Some(folder) = folders.pop() {
            let mut entries = tokio::fs::read_dir(&folder).await?;
            while let Some(entry) = entries.next_entry().await? {
                let Ok(meta) = entry.metadata().await else {
                    continue;
                };
                let path = entry.path();
                if meta.is_dir() {
                    folders.push(path);
                } else if !entry.file_name().to_string_lossy().starts_with('.')
                    && let Ok(relative) = path.strip_prefix(&self.root)
                {
                    each(&relative.to_string_lossy(), meta.len());
                }
            }
        }
        Ok(())
    }

    /// Removes `.partial-` copies older than `age` anywhere in the store.
    pub async fn remove_abandoned(&self, age: Duration) -> Result<usize, StorageError> {
        let mut removed = 0;
        let mut folders = vec![self.root.clone()];
        while let Some(folder) = folders.pop() {
            let Ok(mut entries) = tokio::fs::read_dir(&folder).await else {
                continue;
            };
            while let Some(entry) = entries.next_entry().await? {
                let Ok(meta) = entry.metadata().await else {
                    continue;
                };
                if meta.is_dir() {
                    folders.push(entry.path());
                    continue;
                }
                let name = entry.file_name();
                let partial = name.to_str().is_some_and(is_partial_name);
                let old = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|elapsed| elapsed > age);
                if partial && old && tokio::fs::remove_file(entry.path()).await.is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Points download links at the address the HTTP listener actually bound (tests
    /// and `:0` ports).
    pub fn set_base_url(&self, base_url: &str) {
        let mut current = self
            .base_url
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = base_url.trim_end_matches('/').to_string();
    }

    pub fn path_of(&self, key: &str) -> Result<PathBuf, StorageError> {
        super::check_key(key)?;
        Ok(self.root.join(key))
    }

    pub async fn put_file(&self, key: &str, source: &Path) -> Result<u64, StorageError> {
        let target = self.path_of(key)?;
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        // Same file system: a rename, all or nothing. Otherwise a copy beside the
        // target, renamed once whole: a copy cut short (a full disk) is removed, so
        // no partial file is ever served or left to fill the store.
        if tokio::fs::rename(source, &target).await.is_err() {
            let partial = target.with_file_name(format!(
                ".{}{PARTIAL_MARK}{}",
                target.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
                uuid::Uuid::now_v7().simple()
            ));
            let copied = async {
                tokio::fs::copy(source, &partial).await?;
                tokio::fs::rename(&partial, &target).await
            };
            if let Err(err) = copied.await {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(err.into());
            }
        }
        Ok(tokio::fs::metadata(&target).await?.len())
    }

    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match tokio::fs::remove_file(self.path_of(key)?).await {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    pub fn download_url(&self, key: &str, download: &Download<'_>) -> String {
        let expires = crate::db::now_ms() / 1000 + download.ttl.as_secs() as i64;
        let sig = self
            .signer
            .sign(key, expires, download.file_name, download.content_type);
        let base_url = self
            .base_url
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        format!(
            "{}/files/{}?expires={}&name={}&type={}&sig={}",
            base_url,
            key,
            expires,
            encode(download.file_name),
            encode(download.content_type),
            sig
        )
    }

    /// The file behind a signed URL, or `None` when the signature is wrong or expired.
    pub fn verify(&self, key: &str, query: &SignedQuery, now_secs: i64) -> Option<PathBuf> {
        let valid = query.expires >= now_secs
            && self
                .signer
                .verify(key, query.expires, &query.name, &query.content_type, &query.sig);
        if valid { self.path_of(key).ok() } else { None }
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `storage.signing_key`, or a key generated once and kept in `<data_dir>/signing-key`.
pub(crate) fn signing_secret(config: &Config) -> Result<Vec<u8>, StorageError> {
    if !config.storage.signing_key.is_empty() {
        return Ok(config.storage.signing_key.as_bytes().to_vec());
    }
    let path = config.data_dir().join("signing-key");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim();
        if existing.len() >= 32 {
            return Ok(existing.as_bytes().to_vec());
        }
    }
    std::fs::create_dir_all(config.data_dir())?;
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let text = hex::encode(secret);
    crate::private_file::write(&path, &text)?;
    Ok(text.into_bytes())
}
