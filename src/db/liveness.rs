//! Liveness of worker processes on PostgreSQL: each worker holds a session-level
//! advisory lock named by its lease owner on a connection of its own. The database
//! releases the lock when that connection dies (`kill -9`, a lost host), so another
//! replica can tell in a second that the owner of a running job is gone, instead of
//! waiting for its lease to expire. SQLite has no such lock; leases decide there.

use std::time::Duration;

use diesel::sql_types::{Bool, Text};
use diesel_async::RunQueryDsl;
use tokio_util::sync::CancellationToken;

use super::Conn;

/// Owners that announce their liveness with a lock start with this; others (older
/// versions, SQLite) are judged by their leases alone.
pub const LIVE_PREFIX: &str = "live:";

/// Whether `owner` announces its liveness with a lock.
pub fn is_live_owner(owner: &str) -> bool {
    owner.starts_with(LIVE_PREFIX)
}

/// How often the holder checks that its connection (and so its lock) is alive.
const CHECK_EVERY: Duration = Duration::from_millis(500);

#[derive(diesel::QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    flag: bool,
}

/// The lock's key: the owner's 64-bit hash, seeded apart from other advisory locks.
const KEY_SQL: &str = "hashtextextended($1, 1801)";

/// Takes `owner`'s lock on a connection of its own, calls `held` once it is held,
/// and keeps it until `stop`. When the connection fails, `lost` is called (the jobs
/// must stop: another replica may take them now) and the lock is taken again.
pub async fn hold(url: &str, owner: &str, stop: CancellationToken, held: impl Fn(), lost: impl Fn()) {
    loop {
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            result = hold_once(url, owner, &held) => result,
        };
        if let Err(err) = result {
            tracing::error!(error = %err, "lost the worker's liveness lock; stopping its jobs");
        }
        lost();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn hold_once(url: &str, owner: &str, held: &impl Fn()) -> Result<(), String> {
    let mut conn = crate::db::postgres::establish(url)
        .await
        .map_err(|e| e.to_string())?;
    diesel::sql_query(format!("SELECT pg_advisory_lock({KEY_SQL})"))
        .bind::<Text, _>(owner)
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    held();
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        diesel::sql_query("SELECT 1")
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
    }
}

/// Whether a live process holds `owner`'s lock. Probes with a try-lock that is
/// released at once.
pub async fn is_alive(conn: &mut Conn, owner: &str) -> diesel::QueryResult<bool> {
    let Conn::Pg(c) = conn else { return Ok(true) };
    let taken: Flag = diesel::sql_query(format!("SELECT pg_try_advisory_lock({KEY_SQL}) AS flag"))
        .bind::<Text, _>(owner)
        .get_result(&mut **c)
        .await?;
    if taken.flag {
        diesel::sql_query(format!("SELECT pg_advisory_unlock({KEY_SQL}) AS flag"))
            .bind::<Text, _>(owner)
            .get_result::<Flag>(&mut **c)
            .await?;
    }
    Ok(!taken.flag)
}
