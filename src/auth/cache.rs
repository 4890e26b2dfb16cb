//! Verified API keys and organizations, kept in process for `auth.cache_ttl_millis`
//! so a call costs no database round trip. Concurrent misses of one key are one
//! read. Changes reach the cache two ways: on PostgreSQL every replica hears
//! `key:<id>` / `org:<id>` on the [`notify::AUTH`] channel and forgets the entry
//! at once; changes made through this process's `Db` are applied before the next
//! lookup on any backend; on SQLite another process's (`ferry admin`) are seen
//! within the entry's lifetime.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use moka::future::Cache;
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::db::api_keys::{self, ApiKeyRow};
use crate::db::{Backend, Db, DbError, notify};
use crate::orgs::{self, OrgError, Organization};

/// Entries kept at most; the least used go first.
const CAPACITY: u64 = 100_000;

/// Why an entry could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("not found")]
    NotFound,
    /// The database error's text: one failed read is shared by every caller that
    /// waited for it.
    #[error("{0}")]
    Unavailable(String),
}

impl LoadError {
    fn from_shared(err: Arc<LoadError>) -> LoadError {
        Arc::unwrap_or_clone(err)
    }
}

#[derive(Clone)]
pub struct AuthCache {
    db: Db,
    keys: Cache<String, Arc<ApiKeyRow>>,
    orgs: Cache<String, Arc<Organization>>,
    /// Changes announced through this process's `Db` (any backend).
    local: Arc<Mutex<broadcast::Receiver<notify::Notice>>>,
}

impl AuthCache {
    pub fn new(db: Db, ttl: Duration) -> AuthCache {
        let ttl = ttl.max(Duration::from_millis(1));
        AuthCache {
            local: Arc::new(Mutex::new(db.local_notices())),
            db,
            keys: Cache::builder().max_capacity(CAPACITY).time_to_live(ttl).build(),
            orgs: Cache::builder().max_capacity(CAPACITY).time_to_live(ttl).build(),
        }
    }

    /// Listens for other processes' changes (PostgreSQL only) until `stop`. The flag
    /// turns true once the LISTEN is in place (at once on SQLite): the server waits
    /// for it before serving, so what it caches is never older than its listener.
    pub fn start(&self, stop: CancellationToken) -> watch::Receiver<bool> {
        if self.db.backend() != Backend::Postgres {
            return watch::channel(true).1;
        }
        let (listening, flag) = watch::channel(false);
        let cache = self.clone();
        tokio::spawn(async move {
            let url = cache.db.url().to_string();
            notify::listen(
                &url,
                notify::AUTH,
                stop,
                |what| {
                    let cache = cache.clone();
                    let what = what.to_string();
                    tokio::spawn(async move { cache.forget(&what).await });
                },
                // Anything cached before the LISTEN was in place may have missed
                // its change notice.
                || {
                    cache.forget_all();
                    listening.send_replace(true);
                },
            )
            .await;
        });
        flag
    }

    /// Applies the changes this process announced since the last call, before
    /// anything is read from the cache: a change is seen by the next call after it.
    async fn catch_up(&self) {
        let mut pending = Vec::new();
        {
            let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                match local.try_recv() {
                    Ok((channel, what)) if channel == notify::AUTH => pending.push(what),
                    Ok(_) => {}
                    Err(TryRecvError::Lagged(_)) => {
                        pending.clear();
                        self.forget_all();
                    }
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
        }
        for what in pending {
            self.forget(&what).await;
        }
    }

    /// The key row with this id (revoked ones too: the caller checks).
    pub async fn key(&self, id: &str) -> Result<Arc<ApiKeyRow>, LoadError> {
        self.catch_up().await;
        let db = self.db.clone();
        let key_id = id.to_string();
        self.keys
            .try_get_with(id.to_string(), async move {
                let mut conn = db.conn().await.map_err(unavailable)?;
                match api_keys::find(&mut conn, &key_id).await {
                    Ok(Some(row)) => Ok(Arc::new(row)),
                    Ok(None) => Err(LoadError::NotFound),
                    Err(err) => Err(unavailable(DbError::Query(err))),
                }
            })
            .await
            .map_err(LoadError::from_shared)
    }

    /// The organization with this id.
    pub async fn organization(&self, id: &str) -> Result<Arc<Organization>, LoadError> {
        self.catch_up().await;
        let db = self.db.clone();
        let org_id = id.to_string();
        self.orgs
            .try_get_with(id.to_string(), async move {
                match orgs::find(&db, &org_id).await {
                    Ok(org) => Ok(Arc::new(org)),
                    Err(OrgError::NotFound(_)) => Err(LoadError::NotFound),
                    Err(OrgError::Db(err)) => Err(unavailable(err)),
                }
            })
            .await
            .map_err(LoadError::from_shared)
    }

    /// Drops the entry a change notice names (`key:<id>` or `org:<id>`).
    async fn forget(&self, what: &str) {
        match what.split_once(':') {
            Some(("key", id)) => self.keys.invalidate(id).await,
            Some(("org", id)) => self.orgs.invalidate(id).await,
            _ => tracing::warn!(notice = what, "unknown auth change notice"),
        }
    }

    /// After missed notices: nothing cached can be trusted.
    fn forget_all(&self) {
        self.keys.invalidate_all();
        self.orgs.invalidate_all();
    }
}

fn unavailable(err: DbError) -> LoadError {
    LoadError::Unavailable(err.to_string())
}
