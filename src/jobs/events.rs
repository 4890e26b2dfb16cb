//! Job change events. Every state or progress write publishes the job id: in process
//! on SQLite, and through `NOTIFY` on PostgreSQL so every replica hears it. Each
//! replica reads a changed job once and fans the row out to all its watchers of that
//! job, so many watchers cost one query, not one loop each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::StreamExt;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::db::jobs::{self, JobRow};
use crate::db::{Backend, Conn, Db};

/// The PostgreSQL channel carrying job ids.
pub const CHANNEL: &str = "ferry_jobs";

/// Buffered updates per job before a slow watcher lags (it then re-reads the job).
const WATCH_BUFFER: usize = 64;

#[derive(Clone)]
pub struct JobEvents {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    watchers: Mutex<HashMap<String, broadcast::Sender<Arc<JobRow>>>>,
    wakeup: Notify,
}

impl JobEvents {
    pub fn new(db: Db) -> JobEvents {
        JobEvents {
            inner: Arc::new(Inner {
                db,
                watchers: Mutex::new(HashMap::new()),
                wakeup: Notify::new(),
            }),
        }
    }

    /// Starts listening for other replicas' events (PostgreSQL only) until `stop`.
    pub fn start(&self, stop: CancellationToken) {
        if self.inner.db.backend() == Backend::Postgres {
            let events = self.clone();
            tokio::spawn(async move { events.listen(stop).await });
        }
    }

    /// Announces that job `id` changed. Call after the write committed.
    pub async fn publish(&self, conn: &mut Conn, id: &str) {
        if let Conn::Pg(c) = conn {
            let sent = diesel::sql_query("SELECT pg_notify($1, $2)")
                .bind::<diesel::sql_types::Text, _>(CHANNEL)
                .bind::<diesel::sql_types::Text, _>(id)
                .execute(&mut **c)
                .await;
            if let Err(err) = sent {
                tracing::warn!(job.id = id, error = %err, "could not notify other replicas");
            }
        }
        // Local watchers and workers hear it at once; on PostgreSQL the echo from
        // LISTEN arrives too and is dropped by the version check of each watcher.
        self.dispatch(id);
    }

    /// Interest in one job's changes. Register before reading the current state, so
    /// no change can slip between the read and the subscription.
    pub fn subscribe(&self, id: &str) -> broadcast::Receiver<Arc<JobRow>> {
        let mut watchers = self.lock_watchers();
        watchers.retain(|_, sender| sender.receiver_count() > 0);
        watchers
            .entry(id.to_string())
            .or_insert_with(|| broadcast::channel(WATCH_BUFFER).0)
            .subscribe()
    }

    /// Resolves at the next event of any job: workers wait on it for new work.
    /// `enable()` it before looking for work so an event in between is not missed.
    pub fn wakeup(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.wakeup.notified()
    }

    fn lock_watchers(&self) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<Arc<JobRow>>>> {
        self.inner.watchers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn dispatch(&self, id: &str) {
        self.inner.wakeup.notify_waiters();
        let sender = {
            let watchers = self.lock_watchers();
            watchers.get(id).filter(|s| s.receiver_count() > 0).cloned()
        };
        let Some(sender) = sender else { return };
        let db = self.inner.db.clone();
        let id = id.to_string();
        let events = self.clone();
        tokio::spawn(async move {
            let row = match db.conn().await {
                Ok(mut conn) => jobs::find(&mut conn, &id).await,
                Err(err) => {
                    tracing::warn!(job.id = %id, error = %err, "could not read a changed job");
                    return;
                }
            };
            match row {
                Ok(Some(row)) => {
                    let _ = sender.send(Arc::new(row));
                }
                Ok(None) => {
                    // Deleted: closing the channel ends its watchers' streams.
                    drop(sender);
                    events.lock_watchers().remove(&id);
                }
                Err(err) => tracing::warn!(job.id = %id, error = %err, "could not read a changed job"),
            }
        });
    }

    /// LISTEN on a dedicated connection; reconnects after a second on any failure.
    async fn listen(&self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                result = self.listen_once() => {
                    if let Err(err) = result {
                        tracing::warn!(error = %err, "job event listener lost its connection; reconnecting");
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            // Events may have been missed while disconnected: wake everyone up.
            self.inner.wakeup.notify_waiters();
        }
    }

    async fn listen_once(&self) -> Result<(), String> {
        let mut conn = AsyncPgConnection::establish(self.inner.db.url())
            .await
            .map_err(|e| e.to_string())?;
        diesel::sql_query(format!("LISTEN {CHANNEL}"))
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let stream = conn.notifications_stream();
        let mut stream = std::pin::pin!(stream);
        while let Some(notification) = stream.next().await {
            let notification = notification.map_err(|e| e.to_string())?;
            self.dispatch(&notification.payload);
        }
        Err("notification stream ended".into())
    }
}
