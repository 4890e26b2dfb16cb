//! One pool over PostgreSQL or SQLite, and the macro that runs each query body
//! against whichever backend is configured, so every query is written once and
//! type-checked against both.

pub mod api_keys;
pub mod email;
pub mod email_deliveries;
pub mod enrichments;
pub mod entities;
pub mod export_rows;
pub mod import_copy;
pub mod import_errors;
pub mod import_sqlite;
pub mod jobs;
pub mod mappings;
pub mod migrate;
pub mod organizations;
pub mod schema;
pub mod usage;

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
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    url: String,
}

/// A pooled connection of either backend.
#[expect(
    clippy::large_enum_variant,
    reason = "checked out once per operation and never moved around; boxing would add an allocation to every checkout"
)]
pub enum Conn {
    Pg(PooledConnection<'static, AsyncPgConnection>),
    Sqlite(PooledConnection<'static, SqliteConn>),
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
        let pool = if is_postgres_url(url) {
            let manager = PgManager::new(url);
            Pool::Pg(build_pool(manager, max_connections).await?)
        } else {
            let path = sqlite_path(url).to_string();
            let mut config = ManagerConfig::<SqliteConn>::default();
            config.custom_setup = Box::new(|url| establish_sqlite(url.to_string()).boxed());
            let manager = SqliteManager::new_with_config(path, config);
            Pool::Sqlite(build_pool(manager, max_connections).await?)
        };
        Ok(Db {
            pool,
            url: url.to_string(),
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

    /// Checks a connection out of the pool.
    pub async fn conn(&self) -> Result<Conn, DbError> {
        match &self.pool {
            Pool::Pg(p) => p
                .get_owned()
                .await
                .map(Conn::Pg)
                .map_err(|e| DbError::Pool(e.to_string())),
            Pool::Sqlite(p) => p
                .get_owned()
                .await
                .map(Conn::Sqlite)
                .map_err(|e| DbError::Pool(e.to_string())),
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

async fn build_pool<C>(
    manager: AsyncDieselConnectionManager<C>,
    max_connections: u32,
) -> Result<Bb8Pool<C>, DbError>
where
    AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C>,
{
    Bb8Pool::builder()
        .max_size(max_connections.max(1))
        .connection_timeout(std::time::Duration::from_secs(10))
        .build(manager)
        .await
        .map_err(|e| DbError::Connect(format!("{e:?}")))
}

/// What every SQLite connection sets: the migrations', the pool's, and the
/// import's own ([`import_sqlite`]), which adds its own foreign-key setting.
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

/// A new time-ordered id (UUIDv7, text form).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
