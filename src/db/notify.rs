//! PostgreSQL `NOTIFY` channels between replicas: sending on a caller's connection,
//! and listening on a dedicated connection that reconnects by itself (`send` is a
//! no-op on SQLite). Auth changes are also announced within the process through the
//! `Db` ([`Db::local_notices`]), on any backend.

use std::time::Duration;

use diesel_async::RunQueryDsl;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{Conn, Db};

/// A notice within one process: its channel and payload.
pub type Notice = (&'static str, String);

/// Notices a slow local listener may fall behind by before it is told it missed some.
pub(crate) const LOCAL_BUFFER: usize = 1024;

/// Job ids whose row changed (watchers, idle workers).
pub const JOBS: &str = "ferry_jobs";
/// `key:<id>` or `org:<id>`: an API key or an organization changed (auth caches).
pub const AUTH: &str = "ferry_auth";

/// Sends `payload` on `channel` when the connection is PostgreSQL's. Failures are
/// logged, not returned: the write it announces has already committed.
pub async fn send(conn: &mut Conn, channel: &str, payload: &str) {
    if let Conn::Pg(c) = conn {
        let sent = diesel::sql_query("SELECT pg_notify($1, $2)")
            .bind::<diesel::sql_types::Text, _>(channel)
            .bind::<diesel::sql_types::Text, _>(payload)
            .execute(&mut **c)
            .await;
        if let Err(err) = sent {
            tracing::warn!(channel, payload, error = %err, "could not notify other replicas");
        }
    }
}

/// Tells the auth caches of this process (at once) and of every replica (through
/// `NOTIFY` on PostgreSQL) that API key `id` changed (revoked, new permissions).
pub async fn key_changed(db: &Db, conn: &mut Conn, id: &str) {
    announce(db, conn, AUTH, format!("key:{id}")).await;
}

/// Like [`key_changed`], for organization `id` (plan, features).
pub async fn organization_changed(db: &Db, conn: &mut Conn, id: &str) {
    announce(db, conn, AUTH, format!("org:{id}")).await;
}

async fn announce(db: &Db, conn: &mut Conn, channel: &'static str, payload: String) {
    send(conn, channel, &payload).await;
    db.notice_locally((channel, payload));
}

/// LISTENs on `channel` over its own connection until `stop`, calling `heard` with
/// each payload, and `listening` each time the LISTEN is in place (at start, and
/// after a lost connection, which it re-opens within a second): notifications sent
/// before that moment are lost, so the caller refreshes whatever it learned earlier
/// (a cache filled before the first LISTEN could otherwise keep a revoked key for
/// its whole lifetime).
pub async fn listen(
    url: &str,
    channel: &'static str,
    stop: CancellationToken,
    heard: impl Fn(&str),
    listening: impl Fn(),
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            result = listen_once(url, channel, &heard, &listening) => {
                if let Err(err) = result {
                    tracing::warn!(channel, error = %err, "listener lost its connection; reconnecting");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn listen_once(
    url: &str,
    channel: &str,
    heard: &impl Fn(&str),
    listening: &impl Fn(),
) -> Result<(), String> {
    let mut conn = crate::db::postgres::establish(url)
        .await
        .map_err(|e| e.to_string())?;
    diesel::sql_query(format!("LISTEN {channel}"))
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    // From here on nothing is missed; what happened before may have been.
    listening();
    let stream = conn.notifications_stream();
    let mut stream = std::pin::pin!(stream);
    while let Some(notification) = stream.next().await {
        let notification = notification.map_err(|e| e.to_string())?;
        heard(&notification.payload);
    }
    Err("notification stream ended".into())
}
