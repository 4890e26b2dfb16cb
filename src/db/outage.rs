//! The database's breaker: while a probe finds the database refusing or hanging,
//! every request for a connection fails at once with [`DbError::Unavailable`]
//! instead of waiting out the pool's timeout, and callers already waiting are
//! released when the outage is seen. Calls are shed in microseconds, so an outage
//! does not fill every admission slot with calls that cannot be served.
//!
//! The breaker is fed only by the [`Prober`] (on its own connection, outside the
//! pool: a pool full of busy connections is not an outage). It closes when the
//! probe answers again.

use std::sync::Arc;

use diesel_async::SimpleAsyncConnection;

use super::{Conn, Db, DbError};

/// What the breaker knows: `None` while the database answers, else why not.
pub(super) type State = Option<Arc<str>>;

/// The shared breaker of one [`Db`] and its clones.
#[derive(Clone)]
pub(super) struct Breaker(Arc<tokio::sync::watch::Sender<State>>);

impl Breaker {
    pub(super) fn new() -> Breaker {
        Breaker(Arc::new(tokio::sync::watch::channel(None).0))
    }

    /// Why the database is out right now, if it is.
    pub(super) fn outage(&self) -> State {
        self.0.borrow().clone()
    }

    /// Resolves when an outage begins (at once if one is under way).
    pub(super) async fn opened(&self) -> Arc<str> {
        let mut seen = self.0.subscribe();
        let cause = seen
            .wait_for(Option::is_some)
            .await
            .map(|state| state.clone().unwrap_or_else(|| Arc::from("")));
        match cause {
            Ok(cause) => cause,
            // The sender lives as long as the Db: never closed while awaited.
            Err(_) => std::future::pending().await,
        }
    }

    /// Records the probe's finding; `true` when it changed.
    pub(super) fn set(&self, outage: State) -> bool {
        self.0.send_if_modified(|state| {
            let changed = state.is_some() != outage.is_some();
            *state = outage;
            changed
        })
    }

    pub(super) fn subscribe(&self) -> tokio::sync::watch::Receiver<State> {
        self.0.subscribe()
    }
}

impl Db {
    /// Why the database is out (as the last probe found), or `None`.
    pub fn outage(&self) -> Option<Arc<str>> {
        self.breaker.outage()
    }

    /// Resolves when the database is found out (at once during an outage): calls in
    /// flight race it, so a query hanging on a frozen database is cut.
    pub async fn outage_begins(&self) -> Arc<str> {
        self.breaker.opened().await
    }

    /// Follows the breaker: `Some(cause)` while the database is out.
    pub fn watch_outage(&self) -> tokio::sync::watch::Receiver<Option<Arc<str>>> {
        self.breaker.subscribe()
    }

    /// Refuses at once while the breaker is open.
    pub(super) fn check_breaker(&self) -> Result<(), DbError> {
        match self.breaker.outage() {
            Some(cause) => Err(DbError::Unavailable(cause.to_string())),
            None => Ok(()),
        }
    }
}

/// The pause before a quick probe error is asked again.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// Checks the database on a connection of its own and opens or closes the
/// breaker with what it finds.
pub struct Prober {
    db: Db,
    conn: Option<Conn>,
    timeout: std::time::Duration,
}

impl Prober {
    /// A probe that gives the database `timeout` to connect and to answer.
    pub fn new(db: Db, timeout: std::time::Duration) -> Prober {
        Prober {
            db,
            conn: None,
            timeout,
        }
    }

    /// One check: `SELECT 1`, on the probe's connection (opened again after any
    /// failure, since a connection that timed out may still have an answer on its
    /// way). Updates the breaker; `Err` says why the database is out.
    ///
    /// A quick error is asked again once, on a new connection, before it counts:
    /// one refused attempt can be a moment's contention (SQLite busy while the
    /// last connection of a stopped process checkpoints its WAL), and opening the
    /// breaker refuses every call. A refused connection fails twice in
    /// milliseconds, so an outage is still seen at once; a timeout counts at once.
    pub async fn check(&mut self) -> Result<(), String> {
        let mut result = self.attempt().await;
        if let Err((_, false)) = result {
            tokio::time::sleep(RETRY_AFTER).await;
            result = self.attempt().await;
        }
        let result = result.map_err(|(cause, _)| cause);
        // The readiness module logs the transition.
        self.db
            .breaker
            .set(result.as_ref().err().map(|cause| Arc::from(cause.as_str())));
        result
    }

    /// One `SELECT 1` within the timeout; the error says whether it timed out.
    async fn attempt(&mut self) -> Result<(), (String, bool)> {
        let result = match tokio::time::timeout(self.timeout, self.ask()).await {
            Ok(result) => result.map_err(|cause| (cause, false)),
            Err(_) => Err((format!("no answer within {} ms", self.timeout.as_millis()), true)),
        };
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn ask(&mut self) -> Result<(), String> {
        if self.conn.is_none() {
            self.conn = Some(self.db.open_unpooled().await.map_err(|err| err.to_string())?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err("no connection".into());
        };
        crate::with_conn!(conn, |c| c.batch_execute("SELECT 1").await).map_err(|err| err.to_string())
    }
}
