//! One pool over PostgreSQL or SQLite, and the macro that runs each query body
//! against whichever backend is configured, so every query is written once and
//! type-checked against both.

pub mod api_keys;
pub mod audit;
pub mod email;
pub mod email_deliveries;
pub mod enrichments;
pub mod entities;
pub mod entity_source;
pub mod explain;
pub mod export_rows;
pub mod import_errors;
pub mod import_sink;
pub mod jobs;
pub mod liveness;
pub mod mappings;
pub mod migrate;
pub mod notify;
pub mod organizations;
pub mod outage;
pub mod postgres;
pub mod schema;
pub mod sqlite_reserve;
pub mod staged_uploads;
pub mod usage;

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use diesel::SqliteConnection;
use diesel_async::pooled_connection::bb8::{Pool as Bb8Pool, PooledConnection};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{
    AnsiTransactionManager, AsyncConnection, AsyncPgConnection, SimpleAsyncConnection, TransactionManager,
};
use futures::FutureExt;
use futures::future::BoxFuture;

/// The SQLite connection as diesel-async drives it (blocking calls on a thread pool).
pub type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

type PgManager = AsyncDieselConnectionManager<AsyncPgConnection>;
type SqliteManager = AsyncDieselConnectionManager<SqliteConn>;

/// Errors of the persistence layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("could not get a database connection: {0}")]
    Pool(String),
    #[error("could not connect to the database: {0}")]
    Connect(String),
    #[error("migration failed: {0}")]
    Migration(String),
    /// The breaker is open: the last probe found the database refusing or not
    /// answering (see [`outage`]).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A task asked the pool for a second connection while holding one: with every
    /// connection held that way, all such tasks wait on each other until the pool's
    /// timeout. Refused at once in debug builds (tests), logged in release builds.
    #[error("a task asked for a second pooled connection while holding one (nested acquisition)")]
    NestedAcquisition,
}

/// Which SQL dialect a query body runs against, for the few fragments that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

#[derive(Clone)]
enum Pool {
    Pg(Bb8Pool<AsyncPgConnection>),
    Sqlite(Bb8Pool<SqliteConn>),
}

/// A cloneable handle on the database: pool plus the URL (for dedicated connections).
/// Connections checked out, open and idle, and callers waiting for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    pub in_use: u32,
    pub idle: u32,
    pub waiting: usize,
}

#[derive(Clone)]
pub struct Db {
    pool: Pool,
    url: String,
    /// Callers waiting for a pooled connection right now (load shedding reads it).
    waiting: Arc<AtomicUsize>,
    /// Change notices within this process ([`notify`]): what PostgreSQL's `NOTIFY`
    /// carries between replicas, for listeners on any backend.
    notices: tokio::sync::broadcast::Sender<notify::Notice>,
    /// Open while the database is out ([`outage`]).
    breaker: outage::Breaker,
}

/// A connection of either backend: checked out of the pool, or dedicated (opened
/// for one long-lived user and closed when dropped). Every query takes `&mut Conn`,
/// so a function either takes its caller's connection or checks out its own.
#[expect(
    clippy::large_enum_variant,
    reason = "checked out once per operation and never moved around; boxing would add an allocation to every checkout"
)]
pub enum Conn {
    Pg(Handle<AsyncPgConnection>),
    Sqlite(Handle<SqliteConn>),
}

/// One connection: pooled (with its mark in the nested-acquisition ledger), or owned.
pub enum Handle<C: 'static>
where
    AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C>,
{
    Pooled(PooledConnection<'static, C>, HeldMark),
    Dedicated(Box<C>),
}

impl<C: 'static> Deref for Handle<C>
where
    AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C>,
{
    type Target = C;

    fn deref(&self) -> &C {
        match self {
            Handle::Pooled(pooled, _) => pooled,
            Handle::Dedicated(own) => own,
        }
    }
}

impl<C: 'static> DerefMut for Handle<C>
where
    AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C>,
{
    fn deref_mut(&mut self) -> &mut C {
        match self {
            Handle::Pooled(pooled, _) => &mut *pooled,
            Handle::Dedicated(own) => own,
        }
    }
}

/// Pooled connections held per tokio task. A task that holds one and asks for
/// another is the deadlock the first wave shipped (ten calls each holding one
/// connection and waiting for a second); the ledger makes it visible at the
/// second request instead of at the pool's timeout under load.
static HELD: LazyLock<Mutex<HashMap<Holder, usize>>> = LazyLock::new(Default::default);

/// Who holds a connection: a tokio task, or code outside any task (a `block_on`,
/// such as a test's body), which stays on its thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Holder {
    Task(tokio::task::Id),
    Thread(std::thread::ThreadId),
}

/// A pooled connection's entry in [`HELD`], removed when the connection returns.
pub struct HeldMark(Option<Holder>);

impl HeldMark {
    /// Records a checkout by the current task; `Err` when it already holds one.
    fn check_and_take() -> Result<HeldMark, DbError> {
        let task = match tokio::task::try_id() {
            Some(id) => Holder::Task(id),
            None => Holder::Thread(std::thread::current().id()),
        };
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(task).or_insert(0);
        if *count > 0 {
            if cfg!(debug_assertions) {
                return Err(DbError::NestedAcquisition);
            }
            tracing::error!("{}", DbError::NestedAcquisition);
        }
        *count += 1;
        Ok(HeldMark(Some(task)))
    }
}

impl Drop for HeldMark {
    fn drop(&mut self) {
        let Some(task) = self.0 else { return };
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&task) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&task);
            }
        }
    }
}

/// Counts a caller waiting for the pool while it exists.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(counter: &'a AtomicUsize) -> Waiting<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        Waiting(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `$body` with `$c` bound to the concrete connection of the active backend and
/// `$backend` to its [`Backend`]. The body is compiled once per backend.
#[macro_export]
macro_rules! with_conn {
    ($conn:expr, |$c:ident, $backend:ident| $body:expr) => {
        match $conn {
            $crate::db::Conn::Pg(pooled) => {
                let $c: &mut diesel_async::AsyncPgConnection = &mut *pooled;
                #[allow(unused_variables)]
                let $backend = $crate::db::Backend::Postgres;
                $body
            }
            $crate::db::Conn::Sqlite(pooled) => {
                let $c: &mut $crate::db::SqliteConn = &mut *pooled;
                #[allow(unused_variables)]
                let $backend = $crate::db::Backend::Sqlite;
                $body
            }
        }
    };
    ($conn:expr, |$c:ident| $body:expr) => {
        $crate::with_conn!($conn, |$c, _backend| $body)
    };
}

/// The keyset cursor `(sort, id) > (value, last_id)` (`<` when descending) as a SQL
/// filter. A row-value comparison is an index range scan on both backends; the
/// `a > x OR (a = x AND …)` spelling is not, and makes every page rescan from the start.
macro_rules! after_cursor {
    ($sort:expr, $id:expr, $descending:expr, $value_type:ty, $value:expr, $last_id:expr) => {
        diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
            "({}, {}) {} (",
            $sort,
            $id,
            if $descending { "<" } else { ">" }
        ))
        .bind::<$value_type, _>($value)
        .sql(", ")
        .bind::<diesel::sql_types::Text, _>($last_id)
        .sql(")")
    };
}
pub(crate) use after_cursor;

impl Db {
    /// Opens a pool: `postgres://…` selects PostgreSQL, anything else is a SQLite
    /// file path (an optional `sqlite://` prefix is stripped).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, DbError> {
        Db::connect_with(url, max_connections, DEFAULT_ACQUIRE_TIMEOUT).await
    }

    /// [`Db::connect`], with the longest a caller waits for a pooled connection
    /// (`database.acquire_timeout_millis`) when the breaker is closed.
    pub async fn connect_with(
        url: &str,
        max_connections: u32,
        acquire_timeout: std::time::Duration,
    ) -> Result<Db, DbError> {
        let pool = if is_postgres_url(url) {
            // Every pooled connection opens over TLS as the URL's sslmode says.
            let mut config = ManagerConfig::<AsyncPgConnection>::default();
            config.custom_setup = Box::new(|url| postgres::establish(url).boxed());
            let manager = PgManager::new_with_config(url, config);
            Pool::Pg(build_pool(manager, max_connections, acquire_timeout).await?)
        } else {
            let path = sqlite_path(url).to_string();
            let database = path.clone();
            // Best effort; a failure is logged (see `sqlite_reserve`).
            let _ = tokio::task::spawn_blocking(move || sqlite_reserve::keep(&database)).await;
            let mut config = ManagerConfig::<SqliteConn>::default();
            config.custom_setup = Box::new(|url| establish_sqlite(url.to_string()).boxed());
            let manager = SqliteManager::new_with_config(path, config);
            Pool::Sqlite(build_pool(manager, max_connections, acquire_timeout).await?)
        };
        Ok(Db {
            pool,
            url: url.to_string(),
            waiting: Arc::new(AtomicUsize::new(0)),
            notices: tokio::sync::broadcast::channel(notify::LOCAL_BUFFER).0,
            breaker: outage::Breaker::new(),
        })
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Pg(_) => Backend::Postgres,
            Pool::Sqlite(_) => Backend::Sqlite,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Checks a connection out of the pool. A task that already holds a pooled
    /// connection must pass that one down instead (see [`HeldMark`]).
    pub async fn conn(&self) -> Result<Conn, DbError> {
        let mark = HeldMark::check_and_take()?;
        self.check_breaker()?;
        let _waiting = Waiting::new(&self.waiting);
        // Waiters are released when an outage is found, not at the pool's timeout.
        let checkout = async {
            match &self.pool {
                Pool::Pg(p) => p
                    .get_owned()
                    .await
                    .map(|c| Conn::Pg(Handle::Pooled(c, mark)))
                    .map_err(|e| DbError::Pool(e.to_string())),
                Pool::Sqlite(p) => p
                    .get_owned()
                    .await
                    .map(|c| Conn::Sqlite(Handle::Pooled(c, mark)))
                    .map_err(|e| DbError::Pool(e.to_string())),
            }
        };
        tokio::select! {
            conn = checkout => conn,
            cause = self.breaker.opened() => Err(DbError::Unavailable(cause.to_string())),
        }
    }

    /// Opens a connection outside the pool, closed when dropped: for a job's
    /// long-lived read, so a running job never sits on one of the pool's
    /// connections while its progress writes check out another.
    pub async fn dedicated(&self) -> Result<Conn, DbError> {
        self.check_breaker()?;
        self.open_unpooled().await
    }

    /// A connection outside the pool whatever the breaker says (the probe's).
    pub(crate) async fn open_unpooled(&self) -> Result<Conn, DbError> {
        match &self.pool {
            Pool::Pg(_) => postgres::establish(&self.url)
                .await
                .map(|c| Conn::Pg(Handle::Dedicated(Box::new(c))))
                .map_err(|e| DbError::Connect(e.to_string())),
            Pool::Sqlite(_) => establish_sqlite(sqlite_path(&self.url).to_string())
                .await
                .map(|c| Conn::Sqlite(Handle::Dedicated(Box::new(c))))
                .map_err(|e| DbError::Connect(e.to_string())),
        }
    }

    /// Hears the notices sent through this handle (or a clone) in this process.
    pub fn local_notices(&self) -> tokio::sync::broadcast::Receiver<notify::Notice> {
        self.notices.subscribe()
    }

    /// Sends a notice to this process's listeners.
    pub(crate) fn notice_locally(&self, notice: notify::Notice) {
        let _ = self.notices.send(notice);
    }

    /// Callers waiting for a pooled connection at this instant.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The pool at this instant, for metrics.
    pub fn pool_state(&self) -> PoolState {
        let state = match &self.pool {
            Pool::Pg(p) => p.state(),
            Pool::Sqlite(p) => p.state(),
        };
        PoolState {
            in_use: state.connections.saturating_sub(state.idle_connections),
            idle: state.idle_connections,
            waiting: self.waiting(),
        }
    }

    /// Runs `f` inside one transaction: committed when it returns `Ok`, rolled back
    /// otherwise (including when the error is the caller's own).
    pub async fn transaction<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<R, E>>,
        E: From<DbError>,
    {
        let mut conn = self.conn().await?;
        conn.begin().await.map_err(DbError::from)?;
        match f(&mut conn).await {
            Ok(value) => {
                conn.commit().await.map_err(DbError::from)?;
                Ok(value)
            }
            Err(err) => {
                // The caller's error is the one worth reporting; a failed rollback
                // leaves the connection marked broken and the pool discards it.
                let _ = conn.rollback().await;
                Err(err)
            }
        }
    }
}

impl Conn {
    async fn begin(&mut self) -> diesel::QueryResult<()> {
        match self {
            Conn::Pg(c) => AnsiTransactionManager::begin_transaction(&mut **c).await,
            // IMMEDIATE takes the write lock up front, so two writers never deadlock
            // upgrading read locks; busy_timeout makes the second one wait.
            // The sync connection's own transaction manager tracks the state, so
            // the wrapper's commit and rollback (and the pool's broken check) see it.
            Conn::Sqlite(c) => {
                c.spawn_blocking(|conn| {
                    diesel::connection::AnsiTransactionManager::begin_transaction_sql(conn, "BEGIN IMMEDIATE")
                })
                .await
            }
        }
    }

    async fn commit(&mut self) -> diesel::QueryResult<()> {
        with_conn!(self, |c| commit_on(c).await)
    }

    async fn rollback(&mut self) -> diesel::QueryResult<()> {
        with_conn!(self, |c| rollback_on(c).await)
    }
}

async fn commit_on<C: AsyncConnection>(c: &mut C) -> diesel::QueryResult<()> {
    C::TransactionManager::commit_transaction(c).await
}

async fn rollback_on<C: AsyncConnection>(c: &mut C) -> diesel::QueryResult<()> {
    C::TransactionManager::rollback_transaction(c).await
}

/// The default of `database.acquire_timeout_millis`.
pub const DEFAULT_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn build_pool<C>(
    manager: AsyncDieselConnectionManager<C>,
    max_connections: u32,
    acquire_timeout: std::time::Duration,
) -> Result<Bb8Pool<C>, DbError>
where
    AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C>,
{
    Bb8Pool::builder()
        .max_size(max_connections.max(1))
        .connection_timeout(acquire_timeout.max(std::time::Duration::from_millis(100)))
        .build(manager)
        .await
        .map_err(|e| DbError::Connect(format!("{e:?}")))
}

/// What every SQLite connection sets: the migrations', the pool's, and the
/// import's own ([`import_sink`]), which adds its own foreign-key setting.
///
/// The page size comes first because it only takes effect on a database not yet
/// created (and before WAL mode is set); on an existing database it is a no-op, so
/// databases made before keep 4 KiB pages. With 16 KiB pages SQLite itself inserts
/// into `entities` (a table and four indexes) 1.6–2× faster
/// (`scripts/sqlite_insert_ceiling.py --page-size`; fewer page splits and WAL frames
/// per row, shallower b-trees), and a 1M-row import runs 1.1–1.3× faster.
pub(crate) const SQLITE_SETTINGS: &str = "PRAGMA page_size = 16384; PRAGMA journal_mode = WAL; \
    PRAGMA busy_timeout = 10000; PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY;";

async fn establish_sqlite(path: String) -> diesel::ConnectionResult<SqliteConn> {
    let mut conn = SqliteConn::establish(&path).await?;
    conn.batch_execute(&format!("{SQLITE_SETTINGS} PRAGMA foreign_keys = ON;"))
        .await
        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}

pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

pub fn sqlite_path(url: &str) -> &str {
    url.strip_prefix("sqlite://").unwrap_or(url)
}

/// Milliseconds since the Unix epoch: the timestamp format of every table.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A duration in the tables' millisecond unit, saturating (an absurd setting or
/// flag stays a large number rather than wrapping).
pub fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A new time-ordered id (UUIDv7, text form).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test setup")]

    use super::*;

    #[tokio::test]
    async fn a_task_holding_a_pooled_connection_is_refused_a_second_one_but_not_a_dedicated_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&dir.path().join("t.db").display().to_string(), 4)
            .await
            .unwrap();
        let held = db.conn().await.unwrap();
        // In a debug build the second checkout fails at once instead of waiting,
        // under load, for a connection that the waiting tasks themselves hold.
        assert!(matches!(db.conn().await, Err(DbError::NestedAcquisition)));
        let _dedicated = db.dedicated().await.unwrap();
        drop(held);
        let _again = db.conn().await.unwrap();
        // Other tasks are not affected by this one's connection.
        let other = tokio::spawn({
            let db = db.clone();
            async move { db.conn().await.map(|_| ()) }
        });
        assert!(other.await.unwrap().is_ok());
    }
}
