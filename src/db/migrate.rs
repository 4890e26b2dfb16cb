//! Embedded migrations, run at start and by `ferry migrate`.

use diesel::Connection;
use diesel::connection::SimpleConnection;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::{Backend, Db, DbError, SQLITE_SETTINGS, sqlite_path};

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// An arbitrary constant: replicas starting together take turns on this advisory lock.
const MIGRATION_LOCK_KEY: i64 = 0x6665_7272_7900;

/// Applies pending migrations; returns the versions applied (empty when up to date).
///
/// The migration harness is synchronous, so it runs on a blocking thread over a
/// dedicated connection rather than a pooled one.
pub async fn run(db: &Db) -> Result<Vec<String>, DbError> {
    let url = db.url().to_string();
    match db.backend() {
        Backend::Postgres => {
            // Opened here (over TLS as the URL says), driven by this runtime.
            let conn = super::postgres::establish(&url)
                .await
                .map_err(|e| DbError::Connect(e.to_string()))?;
            tokio::task::spawn_blocking(move || run_postgres(conn))
                .await
                .map_err(|e| DbError::Migration(e.to_string()))?
        }
        Backend::Sqlite => tokio::task::spawn_blocking(move || run_sqlite(sqlite_path(&url)))
            .await
            .map_err(|e| DbError::Migration(e.to_string()))?,
    }
}

fn run_postgres(conn: AsyncPgConnection) -> Result<Vec<String>, DbError> {
    let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
    conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))?;
    let applied = apply(&mut conn, PG_MIGRATIONS);
    conn.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))?;
    applied
}

fn run_sqlite(path: &str) -> Result<Vec<String>, DbError> {
    let mut conn = diesel::SqliteConnection::establish(path).map_err(|e| DbError::Connect(e.to_string()))?;
    conn.batch_execute(SQLITE_SETTINGS)?;
    apply(&mut conn, SQLITE_MIGRATIONS)
}

fn apply<DB: diesel::backend::Backend>(
    conn: &mut impl MigrationHarness<DB>,
    migrations: EmbeddedMigrations,
) -> Result<Vec<String>, DbError> {
    conn.run_pending_migrations(migrations)
        .map(|versions| versions.iter().map(|v| v.to_string()).collect())
        .map_err(|e| DbError::Migration(e.to_string()))
}

#[cfg(test)]
mod twins {
    /// The migrations of one backend, by name.
    fn names(backend: &str) -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(backend);
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Each schema change lands on both backends under the same name (the dialects
    /// differ, so the SQL itself cannot be one file).
    #[test]
    fn both_backends_have_the_same_migrations() {
        let postgres = names("postgres");
        assert!(!postgres.is_empty());
        assert_eq!(postgres, names("sqlite"));
    }
}
