//! Job change events. Every state or progress write publishes the job id: in process
//! on SQLite, and through `NOTIFY` on PostgreSQL so every replica hears it. Each
//! replica keeps one topic per watched job: a change is read once and fanned out to
//! all its watchers, and a new watcher starts from the topic's newest state (read
//! once for all watchers that arrive together), so 10,000 watchers of one job cost
//! one query per change, not one per watcher.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

use crate::db::jobs::{self, JobRow};
use crate::db::{Backend, Conn, Db, DbError, notify};

/// Buffered updates per job before a slow watcher lags (it then jumps to the newest
/// state; a slow watcher never holds back the others or the job).
const WATCH_BUFFER: usize = 64;

#[derive(Clone)]
pub struct JobEvents {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    topics: Mutex<Topics>,
    /// Jobs this process is running, to stop one the moment it is cancelled here
    /// (on SQLite the cancel's write can wait behind the job's own writes).
    running: Mutex<HashMap<String, super::JobContext>>,
    wakeup: Notify,
    /// One permit per open watch stream (`server.max_watchers`).
    watchers: Arc<Semaphore>,
    max_watchers: usize,
}

#[derive(Default)]
struct Topics {
    by_job: HashMap<String, Arc<Topic>>,
    /// Size after the last sweep of topics nobody watches any more.
    swept_at: usize,
}

/// One watched job on this replica. Only the topic map holds the sender, so
/// dropping the topic (the job was deleted) ends its watchers' streams.
struct Topic {
    sender: broadcast::Sender<Arc<JobRow>>,
    latest: Arc<Latest>,
}

/// The newest state of a watched job read on this replica; the async lock makes
/// watchers that arrive together wait for one read instead of each taking a pooled
/// connection.
#[derive(Default)]
pub struct Latest(tokio::sync::Mutex<Option<Arc<JobRow>>>);

/// Every watch stream was already open (`server.max_watchers`).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("this server already serves its limit of {0} watch streams")]
pub struct TooManyWatchers(pub usize);

impl Latest {
    /// The newest state of the job (read now if no watcher read it yet); `None`
    /// when the job does not exist.
    pub async fn current(&self, db: &Db, id: &str) -> Result<Option<Arc<JobRow>>, DbError> {
        let mut latest = self.0.lock().await;
        if let Some(row) = latest.as_ref() {
            return Ok(Some(row.clone()));
        }
        let row = jobs::find(&mut db.conn().await?, id).await?.map(Arc::new);
        if let Some(row) = &row {
            *latest = Some(row.clone());
        }
        Ok(row)
    }

    /// The newest state read so far, if any.
    pub async fn get(&self) -> Option<Arc<JobRow>> {
        self.0.lock().await.clone()
    }

    /// Keeps `row` as the newest state unless a newer one is known already.
    async fn store(&self, row: &Arc<JobRow>) {
        let mut latest = self.0.lock().await;
        if latest.as_ref().is_none_or(|known| known.version <= row.version) {
            *latest = Some(row.clone());
        }
    }
}

impl JobEvents {
    pub fn new(db: Db, max_watchers: usize) -> JobEvents {
        JobEvents {
            inner: Arc::new(Inner {
                db,
                topics: Mutex::new(Topics::default()),
                running: Mutex::new(HashMap::new()),
                wakeup: Notify::new(),
                watchers: Arc::new(Semaphore::new(max_watchers)),
                max_watchers,
            }),
        }
    }

    /// Starts listening for other replicas' events (PostgreSQL only) until `stop`.
    pub fn start(&self, stop: CancellationToken) {
        if self.inner.db.backend() == Backend::Postgres {
            let events = self.clone();
            tokio::spawn(async move {
                let url = events.inner.db.url().to_string();
                notify::listen(
                    &url,
                    notify::JOBS,
                    stop,
                    |id| events.dispatch(id),
                    || events.refresh_all(),
                )
                .await
            });
        }
    }

    /// Announces that job `id` changed. Call after the write committed.
    pub async fn publish(&self, conn: &mut Conn, id: &str) {
        notify::send(conn, notify::JOBS, id).await;
        // Local watchers and workers hear it at once; on PostgreSQL the echo from
        // LISTEN arrives too and is dropped by the version check of each watcher.
        self.dispatch(id);
    }

    /// Records a job this process runs, until [`JobEvents::finished_running`].
    pub(crate) fn running(&self, ctx: &super::JobContext) {
        self.lock_running().insert(ctx.job().id.clone(), ctx.clone());
    }

    pub(crate) fn finished_running(&self, id: &str) {
        self.lock_running().remove(id);
    }

    /// Asks the job to stop now if this process runs it.
    pub(crate) fn stop_local(&self, id: &str, reason: super::context::StopReason) {
        let ctx = self.lock_running().get(id).cloned();
        if let Some(ctx) = ctx {
            ctx.request_stop(reason);
        }
    }

    /// Asks every job this process runs to stop.
    pub(crate) fn stop_all_local(&self, reason: super::context::StopReason) {
        let running: Vec<super::JobContext> = self.lock_running().values().cloned().collect();
        for ctx in running {
            ctx.request_stop(reason);
        }
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, super::JobContext>> {
        self.inner.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for one watch stream, held as long as the stream lives.
    pub fn watcher_permit(&self) -> Result<OwnedSemaphorePermit, TooManyWatchers> {
        self.inner
            .watchers
            .clone()
            .try_acquire_owned()
            .map_err(|_| TooManyWatchers(self.inner.max_watchers))
    }

    /// Interest in one job's changes. Subscribe before reading the current state
    /// ([`Latest::current`]), so no change can slip between the read and the
    /// subscription.
    pub fn subscribe(&self, id: &str) -> (broadcast::Receiver<Arc<JobRow>>, Arc<Latest>) {
        let mut topics = self.lock_topics();
        if topics.by_job.len() > 2 * topics.swept_at.max(512) {
            topics.by_job.retain(|_, t| t.sender.receiver_count() > 0);
            topics.swept_at = topics.by_job.len();
        }
        let topic = topics.by_job.entry(id.to_string()).or_insert_with(|| {
            Arc::new(Topic {
                sender: broadcast::channel(WATCH_BUFFER).0,
                latest: Arc::default(),
            })
        });
        (topic.sender.subscribe(), topic.latest.clone())
    }

    /// Resolves at the next event of any job: workers wait on it for new work.
    /// `enable()` it before looking for work so an event in between is not missed.
    pub fn wakeup(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.wakeup.notified()
    }

    fn lock_topics(&self) -> std::sync::MutexGuard<'_, Topics> {
        self.inner.topics.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes idle workers and, if anyone watches the job, reads it once (on a task
    /// of its own, with its own connection) and sends it to every watcher.
    fn dispatch(&self, id: &str) {
        self.inner.wakeup.notify_waiters();
        let topic = {
            let mut topics = self.lock_topics();
            match topics.by_job.get(id) {
                Some(t) if t.sender.receiver_count() > 0 => t.clone(),
                Some(_) => {
                    // Nobody watches any more; its newest state would go stale.
                    topics.by_job.remove(id);
                    return;
                }
                None => return,
            }
        };
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
                    let row = Arc::new(row);
                    topic.latest.store(&row).await;
                    let _ = topic.sender.send(row);
                }
                Ok(None) => {
                    // Deleted: dropping the topic closes its channel and ends the
                    // watchers' streams.
                    events.lock_topics().by_job.remove(&id);
                }
                Err(err) => tracing::warn!(job.id = %id, error = %err, "could not read a changed job"),
            }
        });
    }

    /// After the listener missed events: every watched job is read again and every
    /// idle worker looks for work.
    fn refresh_all(&self) {
        let ids: Vec<String> = self.lock_topics().by_job.keys().cloned().collect();
        self.inner.wakeup.notify_waiters();
        for id in ids {
            self.dispatch(&id);
        }
    }
}
