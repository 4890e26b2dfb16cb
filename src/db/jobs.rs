//! Queries on `jobs`, the queue every job kind shares. Every write a worker makes is
//! fenced by its lease id: a worker that lost its lease changes nothing.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable};
use diesel_async::RunQueryDsl;

use super::schema::jobs;
use super::{Conn, Db, DbError};
use crate::with_conn;

/// Where a job is in its life. Stored as text (`queued`, `running`, …), so the
/// rows stay readable in SQL and both backends share one representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, diesel::AsExpression, diesel::FromSqlRow)]
#[diesel(sql_type = diesel::sql_types::Text)]
pub enum JobState {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
    Expired,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Expired,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Expired => "expired",
        }
    }

    /// A state the job never leaves.
    pub fn is_terminal(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobState {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| format!("unknown job state `{name}`"))
    }
}

impl<DB> diesel::serialize::ToSql<diesel::sql_types::Text, DB> for JobState
where
    DB: diesel::backend::Backend,
    str: diesel::serialize::ToSql<diesel::sql_types::Text, DB>,
{
    fn to_sql<'b>(&'b self, out: &mut diesel::serialize::Output<'b, '_, DB>) -> diesel::serialize::Result {
        self.as_str().to_sql(out)
    }
}

impl<DB> diesel::deserialize::FromSql<diesel::sql_types::Text, DB> for JobState
where
    DB: diesel::backend::Backend,
    String: diesel::deserialize::FromSql<diesel::sql_types::Text, DB>,
{
    fn from_sql(bytes: DB::RawValue<'_>) -> diesel::deserialize::Result<Self> {
        Ok(String::from_sql(bytes)?.parse()?)
    }
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = jobs, treat_none_as_default_value = false)]
pub struct JobRow {
    pub id: String,
    pub organization_id: String,
    pub kind: String,
    pub state: JobState,
    /// Versioned JSON (`{"v":1,...}`) the job kind decodes.
    pub payload: String,
    /// Kind-specific JSON written on completion (file key, checksum, …).
    pub result: Option<String>,
    /// JSON of the failure: code, reason, message.
    pub error: Option<String>,
    pub request_id: Option<String>,
    /// Identifies "the same job" for conflict detection while one is active.
    pub dedupe_key: Option<String>,
    pub search_text: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_after: i64,
    pub lease_id: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub cancel_requested: bool,
    pub rows_done: i64,
    pub rows_total: Option<i64>,
    pub bytes_done: i64,
    /// Bumped by every write, so watchers can drop stale or repeated states.
    pub version: i64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub updated_at: i64,
    pub expires_at: Option<i64>,
    /// Who queued it (the audit trail's principal: an API key id, `jwt:<subject>`,
    /// `cert:<identity>`, `admin:<user>`); `None` for jobs ferry queued itself.
    pub created_by: Option<String>,
}

/// `state` is queued or running, written as the `jobs_active` partial index's own
/// predicate: a bound state list hides it from SQLite's planner and from a generic
/// PostgreSQL plan, and the query falls back to every job of the organization.
fn is_active() -> diesel::expression::SqlLiteral<diesel::sql_types::Bool> {
    diesel::dsl::sql("jobs.state IN ('queued', 'running')")
}

/// `state` is completed, as the `jobs_expiring` partial index's predicate.
fn is_completed() -> diesel::expression::SqlLiteral<diesel::sql_types::Bool> {
    diesel::dsl::sql("jobs.state = 'completed'")
}

/// `state` is one a job never leaves, as the `jobs_ended` partial index's predicate.
fn has_ended() -> diesel::expression::SqlLiteral<diesel::sql_types::Bool> {
    diesel::dsl::sql("jobs.state IN ('completed', 'failed', 'cancelled', 'expired')")
}

impl JobRow {
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }
}

/// Inserts a job. One due at once (`run_after` not after `created_at`) is due
/// on the database's clock, which claims compare with: a job queued by a
/// replica whose clock runs ahead would otherwise wait out the difference.
pub async fn insert(conn: &mut Conn, row: &JobRow) -> QueryResult<()> {
    let db_now = db_now_sql(conn);
    with_conn!(conn, |c| {
        diesel::insert_into(jobs::table).values(row).execute(c).await?;
        if row.run_after <= row.created_at {
            diesel::update(jobs::table.find(&row.id))
                .set(jobs::run_after.eq(diesel::dsl::sql::<BigInt>(db_now)))
                .execute(c)
                .await?;
        }
        Ok(())
    })
}

/// Serialises job creation per organization and kind for the rest of the
/// transaction (PostgreSQL: a transaction-level advisory lock), so two creations
/// cannot both pass the per-organization caps. SQLite transactions already hold
/// the write lock (`BEGIN IMMEDIATE`).
pub async fn lock_creations(conn: &mut Conn, organization_id: &str, kind: &str) -> QueryResult<()> {
    if let Conn::Pg(c) = conn {
        diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind::<diesel::sql_types::Text, _>(format!("{organization_id}/{kind}"))
            .execute(&mut **c)
            .await?;
    }
    Ok(())
}

/// A job by id, whatever its organization (workers and the event hub).
pub async fn find(conn: &mut Conn, id: &str) -> QueryResult<Option<JobRow>> {
    with_conn!(conn, |c| {
        jobs::table
            .find(id)
            .select(JobRow::as_select())
            .first(c)
            .await
            .optional()
    })
}

/// A job of one organization and kind; another organization's job is `None`.
pub async fn find_for_org(
    conn: &mut Conn,
    organization_id: &str,
    kind: &str,
    id: &str,
) -> QueryResult<Option<JobRow>> {
    with_conn!(conn, |c| {
        jobs::table
            .filter(jobs::id.eq(id))
            .filter(jobs::organization_id.eq(organization_id))
            .filter(jobs::kind.eq(kind))
            .select(JobRow::as_select())
            .first(c)
            .await
            .optional()
    })
}

/// The job created with this idempotency key since `since`, if any.
pub async fn find_by_request_id(
    conn: &mut Conn,
    organization_id: &str,
    kind: &str,
    request_id: &str,
    since: i64,
) -> QueryResult<Option<JobRow>> {
    with_conn!(conn, |c| {
        jobs::table
            .filter(jobs::organization_id.eq(organization_id))
            .filter(jobs::kind.eq(kind))
            .filter(jobs::request_id.eq(request_id))
            .filter(jobs::created_at.ge(since))
            .select(JobRow::as_select())
            .first(c)
            .await
            .optional()
    })
}

/// A queued or running job with the same dedupe key.
pub async fn find_active_duplicate(
    conn: &mut Conn,
    organization_id: &str,
    kind: &str,
    dedupe_key: &str,
) -> QueryResult<Option<JobRow>> {
    with_conn!(conn, |c| {
        jobs::table
            .filter(jobs::organization_id.eq(organization_id))
            .filter(jobs::kind.eq(kind))
            .filter(jobs::dedupe_key.eq(dedupe_key))
            .filter(is_active())
            .select(JobRow::as_select())
            .first(c)
            .await
            .optional()
    })
}

/// How many jobs of a kind are queued or running for the organization.
pub async fn count_active(conn: &mut Conn, organization_id: &str, kind: &str) -> QueryResult<i64> {
    with_conn!(conn, |c| {
        jobs::table
            .filter(jobs::organization_id.eq(organization_id))
            .filter(jobs::kind.eq(kind))
            .filter(is_active())
            .count()
            .get_result(c)
            .await
    })
}

/// The database's clock in the tables' unit (milliseconds since the epoch).
/// Leases are taken, renewed and judged expired on it, never on a process's own
/// clock: a replica whose wall clock runs ahead would otherwise see every other
/// replica's leases as run out and take their running jobs.
const PG_NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint";
const SQLITE_NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

/// A lease end that has passed on any clock: set when a lease's owner is known
/// to be gone, so the reaper takes its jobs in its next pass.
const EXPIRED: i64 = 0;

fn db_now_sql(conn: &Conn) -> &'static str {
    match conn {
        Conn::Pg(_) => PG_NOW_MS,
        Conn::Sqlite(_) => SQLITE_NOW_MS,
    }
}

/// `lease_for_ms` from now on the database's clock, as a column value.
fn lease_end(conn: &Conn, lease_for_ms: i64) -> diesel::expression::SqlLiteral<Nullable<BigInt>> {
    diesel::dsl::sql::<Nullable<BigInt>>(&format!("({} + {lease_for_ms})", db_now_sql(conn)))
}

/// Claims a runnable job of the given kinds, fairly across organizations: the
/// oldest runnable job of the organization whose last claim is oldest (never
/// claimed first). One transaction picks it (`FOR UPDATE SKIP LOCKED` on
/// PostgreSQL, so replicas take different jobs; the `BEGIN IMMEDIATE` write lock
/// on SQLite), takes the lease and records the organization's turn.
pub async fn claim_next(
    db: &Db,
    kinds: &[String],
    owner: &str,
    lease_id: &str,
    lease_for_ms: i64,
    now: i64,
) -> Result<Option<JobRow>, DbError> {
    let (kinds, owner, lease_id) = (kinds.to_vec(), owner.to_string(), lease_id.to_string());
    db.transaction(move |conn| {
        Box::pin(async move {
            let Some(id) = next_runnable_id(conn, &kinds).await? else {
                return Ok(None);
            };
            let lease_until = lease_end(conn, lease_for_ms);
            let row = with_conn!(conn, |c| {
                diesel::update(jobs::table.find(&id).filter(jobs::state.eq(JobState::Queued)))
                    .set((
                        jobs::state.eq(JobState::Running),
                        jobs::lease_id.eq(&lease_id),
                        jobs::lease_owner.eq(&owner),
                        jobs::lease_expires_at.eq(lease_until),
                        jobs::attempts.eq(jobs::attempts + 1),
                        jobs::started_at.eq(diesel::dsl::sql::<
                            diesel::sql_types::Nullable<diesel::sql_types::BigInt>,
                        >(&format!(
                            "COALESCE(started_at, {now})"
                        ))),
                        jobs::updated_at.eq(now),
                        jobs::version.eq(jobs::version + 1),
                    ))
                    .returning(JobRow::as_returning())
                    .get_result(c)
                    .await
                    .optional()
            })?;
            if let Some(row) = &row {
                take_turn(conn, &row.organization_id).await?;
            }
            Ok(row)
        })
    })
    .await
}

/// Records that `organization_id` just had a job claimed: its next job waits
/// behind every organization served earlier.
async fn take_turn(conn: &mut Conn, organization_id: &str) -> QueryResult<()> {
    use super::schema::queue_turns;
    let db_now = db_now_sql(conn);
    with_conn!(conn, |c| {
        diesel::insert_into(queue_turns::table)
            .values((
                queue_turns::organization_id.eq(organization_id),
                queue_turns::last_claimed_at.eq(diesel::dsl::sql::<BigInt>(db_now)),
            ))
            .on_conflict(queue_turns::organization_id)
            .do_update()
            .set(queue_turns::last_claimed_at.eq(diesel::dsl::sql::<BigInt>(db_now)))
            .execute(c)
            .await
    })?;
    Ok(())
}

/// The next job to claim (see [`claim_next`]). It orders every runnable job, which
/// the per-organization caps on active jobs keep to a few per organization.
async fn next_runnable_id(conn: &mut Conn, kinds: &[String]) -> QueryResult<Option<String>> {
    let db_now = db_now_sql(conn);
    let organization_turn = diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "COALESCE((SELECT t.last_claimed_at FROM queue_turns t \
         WHERE t.organization_id = jobs.organization_id), 0)",
    );
    let query = jobs::table
        .filter(jobs::state.eq(JobState::Queued))
        .filter(jobs::run_after.le(diesel::dsl::sql::<BigInt>(db_now)))
        .filter(jobs::kind.eq_any(kinds))
        .order((organization_turn, jobs::run_after, jobs::id))
        .select(jobs::id)
        .limit(1);
    match conn {
        Conn::Pg(c) => query.for_update().skip_locked().first(&mut **c).await.optional(),
        Conn::Sqlite(c) => query.first(&mut **c).await.optional(),
    }
}

/// Extends a lease to `lease_for_ms` from now on the database's clock.
/// `Ok(None)`: the lease is gone (reaped, or the job ended).
/// `Ok(Some(cancel_requested))` otherwise.
pub async fn renew_lease(
    conn: &mut Conn,
    id: &str,
    lease_id: &str,
    lease_for_ms: i64,
) -> QueryResult<Option<bool>> {
    let lease_until = lease_end(conn, lease_for_ms);
    with_conn!(conn, |c| {
        diesel::update(fenced(id, lease_id))
            .set(jobs::lease_expires_at.eq(lease_until))
            .returning(jobs::cancel_requested)
            .get_result(c)
            .await
            .optional()
    })
}

type Fenced<'a> = diesel::dsl::Filter<
    diesel::dsl::Filter<
        diesel::dsl::Filter<jobs::table, diesel::dsl::Eq<jobs::id, &'a str>>,
        diesel::dsl::Eq<jobs::lease_id, &'a str>,
    >,
    diesel::dsl::Eq<jobs::state, JobState>,
>;

/// The job row, only while `lease_id` still holds it.
fn fenced<'a>(id: &'a str, lease_id: &'a str) -> Fenced<'a> {
    jobs::table
        .filter(jobs::id.eq(id))
        .filter(jobs::lease_id.eq(lease_id))
        .filter(jobs::state.eq(JobState::Running))
}

/// Progress counters; returns 0 when the lease was lost.
pub async fn update_progress(
    conn: &mut Conn,
    id: &str,
    lease_id: &str,
    rows_done: i64,
    rows_total: Option<i64>,
    bytes_done: i64,
    now: i64,
) -> QueryResult<usize> {
    with_conn!(conn, |c| {
        diesel::update(fenced(id, lease_id))
            .set((
                jobs::rows_done.eq(rows_done),
                jobs::rows_total.eq(rows_total),
                jobs::bytes_done.eq(bytes_done),
                jobs::updated_at.eq(now),
                jobs::version.eq(jobs::version + 1),
            ))
            .execute(c)
            .await
    })
}

diesel::define_sql_function!(fn coalesce(x: diesel::sql_types::Nullable<diesel::sql_types::Text>, y: diesel::sql_types::Nullable<diesel::sql_types::Text>) -> diesel::sql_types::Nullable<diesel::sql_types::Text>);

/// Records how far a held job got (rows done and its kind's counters as `result`),
/// inside the transaction that wrote those rows; returns 0 when the lease was lost.
pub async fn checkpoint(
    conn: &mut Conn,
    id: &str,
    lease_id: &str,
    rows_done: i64,
    result: &str,
    now: i64,
) -> QueryResult<usize> {
    with_conn!(conn, |c| {
        diesel::update(fenced(id, lease_id))
            .set((
                jobs::rows_done.eq(rows_done),
                jobs::result.eq(result),
                jobs::updated_at.eq(now),
                jobs::version.eq(jobs::version + 1),
            ))
            .execute(c)
            .await
    })
}

/// Ends a job the worker still holds: `state` is completed, failed or cancelled.
/// Returns 0 when the lease was lost, so a job is never finished twice.
#[expect(clippy::too_many_arguments, reason = "one statement sets every final field")]
pub async fn finish(
    conn: &mut Conn,
    id: &str,
    lease_id: &str,
    state: JobState,
    result: Option<&str>,
    error: Option<&str>,
    expires_at: Option<i64>,
    now: i64,
) -> QueryResult<usize> {
    with_conn!(conn, |c| {
        diesel::update(fenced(id, lease_id))
            .set((
                jobs::state.eq(state),
                // No result keeps the one written while running (an import's counters).
                jobs::result.eq(coalesce(result, jobs::result)),
                jobs::error.eq(error),
                jobs::expires_at.eq(expires_at),
                jobs::lease_id.eq(None::<String>),
                jobs::lease_expires_at.eq(None::<i64>),
                jobs::finished_at.eq(now),
                jobs::updated_at.eq(now),
                jobs::version.eq(jobs::version + 1),
            ))
            .execute(c)
            .await
    })
}

/// Returns a held job to the queue to run `run_in_ms` from now on the
/// database's clock. With `refund_attempt` the attempt does not count (a graceful shutdown is not the job's fault).
pub async fn requeue(
    conn: &mut Conn,
    id: &str,
    lease_id: &str,
    run_in_ms: i64,
    error: Option<&str>,
    refund_attempt: bool,
    now: i64,
) -> QueryResult<usize> {
    let refund = i32::from(refund_attempt);
    let run_after = format!("({} + {run_in_ms})", db_now_sql(conn));
    with_conn!(conn, |c| {
        diesel::update(fenced(id, lease_id))
            .set((
                jobs::state.eq(JobState::Queued),
                jobs::run_after.eq(diesel::dsl::sql::<BigInt>(&run_after)),
                jobs::error.eq(error),
                jobs::attempts.eq(jobs::attempts - refund),
                jobs::lease_id.eq(None::<String>),
                jobs::lease_owner.eq(None::<String>),
                jobs::lease_expires_at.eq(None::<i64>),
                jobs::updated_at.eq(now),
                jobs::version.eq(jobs::version + 1),
            ))
            .execute(c)
            .await
    })
}

/// Cancels a queued job at once, or flags a running one for its worker to stop.
/// Returns the job after the change (`None`: not this organization's job).
pub async fn request_cancel(
    conn: &mut Conn,
    organization_id: &str,
    id: &str,
    now: i64,
) -> QueryResult<Option<JobRow>> {
    with_conn!(conn, |c| {
        diesel::update(
            jobs::table
                .filter(jobs::id.eq(id))
                .filter(jobs::organization_id.eq(organization_id))
                .filter(jobs::state.eq(JobState::Queued)),
        )
        .set((
            jobs::state.eq(JobState::Cancelled),
            jobs::finished_at.eq(now),
            jobs::updated_at.eq(now),
            jobs::version.eq(jobs::version + 1),
        ))
        .execute(c)
        .await?;
        diesel::update(
            jobs::table
                .filter(jobs::id.eq(id))
                .filter(jobs::organization_id.eq(organization_id))
                .filter(jobs::state.eq(JobState::Running))
                .filter(jobs::cancel_requested.eq(false)),
        )
        .set((
            jobs::cancel_requested.eq(true),
            jobs::updated_at.eq(now),
            jobs::version.eq(jobs::version + 1),
        ))
        .execute(c)
        .await?;
        jobs::table
            .filter(jobs::id.eq(id))
            .filter(jobs::organization_id.eq(organization_id))
            .select(JobRow::as_select())
            .first(c)
            .await
            .optional()
    })
}

/// Owners of running jobs that announce their liveness ([`super::liveness`]).
pub async fn live_owners_of_running_jobs(conn: &mut Conn) -> QueryResult<Vec<String>> {
    with_conn!(conn, |c| {
        jobs::table
            .filter(jobs::state.eq(JobState::Running))
            .filter(jobs::lease_owner.like(format!("{}%", super::liveness::LIVE_PREFIX)))
            .select(jobs::lease_owner.assume_not_null())
            .distinct()
            .load::<String>(c)
            .await
    })
}

/// Ends the leases of `owner`'s running jobs now (its process is gone), so the
/// reaper takes them in the same pass.
pub async fn expire_leases_of(conn: &mut Conn, owner: &str) -> QueryResult<usize> {
    with_conn!(conn, |c| {
        diesel::update(
            jobs::table
                .filter(jobs::state.eq(JobState::Running))
                .filter(jobs::lease_owner.eq(owner)),
        )
        .set(jobs::lease_expires_at.eq(EXPIRED))
        .execute(c)
        .await
    })
}

/// Ends the leases of running jobs whose owner ran in `instance` (a process found
/// gone, whose lease owners end with `@<instance>`).
pub async fn expire_leases_of_instance(conn: &mut Conn, instance: &str) -> QueryResult<usize> {
    with_conn!(conn, |c| {
        diesel::update(
            jobs::table
                .filter(jobs::state.eq(JobState::Running))
                .filter(jobs::lease_owner.like(format!("%@{instance}"))),
        )
        .set(jobs::lease_expires_at.eq(EXPIRED))
        .execute(c)
        .await
    })
}

/// Jobs whose lease ran out (their worker died): back to the queue, or FAILED /
/// CANCELLED when no attempt is left or a cancel was asked. Returns their ids.
pub async fn reap_expired_leases(conn: &mut Conn, now: i64, lost_error: &str) -> QueryResult<Vec<String>> {
    let db_now = db_now_sql(conn);
    with_conn!(conn, |c| {
        let expired = || {
            jobs::table
                .filter(jobs::state.eq(JobState::Running))
                .filter(jobs::lease_expires_at.lt(diesel::dsl::sql::<Nullable<BigInt>>(db_now)))
        };
        let mut ids: Vec<String> = diesel::update(expired().filter(jobs::cancel_requested.eq(true)))
            .set((
                jobs::state.eq(JobState::Cancelled),
                jobs::lease_id.eq(None::<String>),
                jobs::lease_expires_at.eq(None::<i64>),
                jobs::finished_at.eq(now),
                jobs::updated_at.eq(now),
                jobs::version.eq(jobs::version + 1),
            ))
            .returning(jobs::id)
            .get_results(c)
            .await?;
        ids.extend(
            diesel::update(expired().filter(jobs::attempts.ge(jobs::max_attempts)))
                .set((
                    jobs::state.eq(JobState::Failed),
                    jobs::error.eq(lost_error),
                    jobs::lease_id.eq(None::<String>),
                    jobs::lease_expires_at.eq(None::<i64>),
                    jobs::finished_at.eq(now),
                    jobs::updated_at.eq(now),
                    jobs::version.eq(jobs::version + 1),
                ))
                .returning(jobs::id)
                .get_results::<String>(c)
                .await?,
        );
        ids.extend(
            diesel::update(expired())
                .set((
                    jobs::state.eq(JobState::Queued),
                    jobs::run_after.eq(diesel::dsl::sql::<BigInt>(db_now)),
                    jobs::lease_id.eq(None::<String>),
                    jobs::lease_owner.eq(None::<String>),
                    jobs::lease_expires_at.eq(None::<i64>),
                    jobs::updated_at.eq(now),
                    jobs::version.eq(jobs::version + 1),
                ))
                .returning(jobs::id)
                .get_results::<String>(c)
                .await?,
        );
        Ok(ids)
    })
}

/// Deletes a job of the organization; returns whether it existed.
pub async fn delete(conn: &mut Conn, organization_id: &str, id: &str) -> QueryResult<bool> {
    with_conn!(conn, |c| {
        diesel::delete(
            jobs::table
                .filter(jobs::id.eq(id))
                .filter(jobs::organization_id.eq(organization_id)),
        )
        .execute(c)
        .await
        .map(|n| n > 0)
    })
}

/// Completed jobs of a kind whose output expired before `now`, oldest first.
pub async fn due_for_expiry(conn: &mut Conn, kind: &str, now: i64, limit: i64) -> QueryResult<Vec<JobRow>> {
    with_conn!(conn, |c| {
        jobs::table
            .filter(jobs::kind.eq(kind))
            .filter(is_completed())
            .filter(jobs::expires_at.lt(now))
            .order(jobs::expires_at)
            .limit(limit)
            .select(JobRow::as_select())
            .load(c)
            .await
    })
}

/// Replaces a completed job's output and clears its expiry (an import whose error
/// report expired stays COMPLETED); returns 0 if it is no longer completed.
pub async fn replace_output(conn: &mut Conn, id: &str, result: &str, now: i64) -> QueryResult<usize> {
    with_conn!(conn, |c| {
        diesel::update(jobs::table.filter(jobs::id.eq(id)).filter(is_completed()))
            .set((
                jobs::result.eq(Some(result)),
                jobs::expires_at.eq(None::<i64>),
                jobs::updated_at.eq(now),
                jobs::version.eq(jobs::version + 1),
            ))
            .execute(c)
            .await
    })
}

/// COMPLETED -> EXPIRED once its output is gone; returns 0 if it changed meanwhile.
pub async fn mark_expired(conn: &mut Conn, id: &str, now: i64) -> QueryResult<usize> {
    with_conn!(conn, |c| {
        diesel::update(jobs::table.find(id).filter(jobs::state.eq(JobState::Completed)))
            .set((
                jobs::state.eq(JobState::Expired),
                jobs::updated_at.eq(now),
                jobs::version.eq(jobs::version + 1),
            ))
            .execute(c)
            .await
    })
}

/// Up to `limit` jobs that ended before `before`, after `(finished_at, id)` (where
/// the previous batch stopped), in that order; completed jobs whose output has an
/// expiry wait for it (the export janitor turns them EXPIRED first).
pub async fn ended_before(
    conn: &mut Conn,
    before: i64,
    after: Option<(i64, String)>,
    limit: i64,
) -> QueryResult<Vec<JobRow>> {
    with_conn!(conn, |c| {
        let mut q = jobs::table
            .filter(has_ended())
            .filter(jobs::finished_at.lt(before))
            .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(
                "NOT (jobs.state = 'completed' AND jobs.expires_at IS NOT NULL)",
            ))
            .into_boxed();
        if let Some((finished_at, id)) = after {
            q = q.filter(super::after_cursor!(
                "jobs.finished_at",
                "jobs.id",
                false,
                diesel::sql_types::BigInt,
                finished_at,
                id
            ));
        }
        q.order((jobs::finished_at.asc(), jobs::id.asc()))
            .limit(limit)
            .select(JobRow::as_select())
            .load(c)
            .await
    })
}

/// Deletes these ended jobs with their e-mail ledger (import errors go by the
/// foreign key), in one transaction of the caller's; returns how many went.
pub async fn delete_ended(conn: &mut Conn, ids: &[String]) -> QueryResult<usize> {
    use super::schema::email_deliveries;
    with_conn!(conn, |c| {
        diesel::delete(email_deliveries::table.filter(email_deliveries::job_id.eq_any(ids)))
            .execute(c)
            .await?;
        diesel::delete(jobs::table.filter(jobs::id.eq_any(ids)).filter(has_ended()))
            .execute(c)
            .await
    })
}

/// Frees idempotency keys older than their 24 h window, so a key can be reused.
pub async fn release_request_ids(conn: &mut Conn, before: i64) -> QueryResult<usize> {
    with_conn!(conn, |c| {
        diesel::update(
            jobs::table
                .filter(jobs::request_id.is_not_null())
                .filter(jobs::created_at.lt(before)),
        )
        .set(jobs::request_id.eq(None::<String>))
        .execute(c)
        .await
    })
}

/// Filters of a job listing (AIP-158); the organization and kind always apply.
#[derive(Debug, Clone, Default)]
pub struct JobListFilter {
    pub states: Vec<JobState>,
    pub created_after: Option<i64>,
    pub created_before: Option<i64>,
    pub search: Option<String>,
}

/// One page of a job listing: filter, order (`created_at` or `updated_at`, then id),
/// the cursor `(sort value, id)` where the previous page ended, and its size.
#[derive(Debug, Clone, Default)]
pub struct JobPage {
    pub filter: JobListFilter,
    pub by_update_time: bool,
    pub descending: bool,
    pub after: Option<(i64, String)>,
    pub limit: i64,
    /// Rows skipped before the page: for the REST door's numbered pages (`?page=3`),
    /// which the seeds' clients send; gRPC pages by cursor and leaves it 0.
    pub offset: i64,
}

macro_rules! apply_job_filter {
    ($query:expr, $org:expr, $kind:expr, $f:expr) => {{
        let f: &JobListFilter = $f;
        let mut q = $query
            .filter(jobs::organization_id.eq($org))
            .filter(jobs::kind.eq($kind));
        if !f.states.is_empty() {
            q = q.filter(jobs::state.eq_any(&f.states));
        }
        if let Some(t) = f.created_after {
            q = q.filter(jobs::created_at.ge(t));
        }
        if let Some(t) = f.created_before {
            q = q.filter(jobs::created_at.le(t));
        }
        if let Some(term) = &f.search {
            let pattern = format!("%{}%", term.replace(['%', '_', '\\'], ""));
            q = q.filter(jobs::id.like(pattern.clone()).or(jobs::search_text.like(pattern)));
        }
        q
    }};
}

/// One page of jobs. The cursor is a row-value comparison, answered by an index
/// range scan on both backends.
pub async fn list(
    conn: &mut Conn,
    organization_id: &str,
    kind: &str,
    page: &JobPage,
) -> QueryResult<Vec<JobRow>> {
    with_conn!(conn, |c| {
        let mut q = apply_job_filter!(jobs::table.into_boxed(), organization_id, kind, &page.filter);
        let column = if page.by_update_time {
            "jobs.updated_at"
        } else {
            "jobs.created_at"
        };
        if let Some((value, id)) = &page.after {
            q = q.filter(super::after_cursor!(
                column,
                "jobs.id",
                page.descending,
                diesel::sql_types::BigInt,
                *value,
                id.clone()
            ));
        }
        let q = match (page.by_update_time, page.descending) {
            (false, true) => q.order((jobs::created_at.desc(), jobs::id.desc())),
            (false, false) => q.order((jobs::created_at.asc(), jobs::id.asc())),
            (true, true) => q.order((jobs::updated_at.desc(), jobs::id.desc())),
            (true, false) => q.order((jobs::updated_at.asc(), jobs::id.asc())),
        };
        q.limit(page.limit)
            .offset(page.offset)
            .select(JobRow::as_select())
            .load(c)
            .await
    })
}

pub async fn count(
    conn: &mut Conn,
    organization_id: &str,
    kind: &str,
    filter: &JobListFilter,
) -> QueryResult<i64> {
    with_conn!(conn, |c| {
        apply_job_filter!(jobs::table.count().into_boxed(), organization_id, kind, filter)
            .get_result(c)
            .await
    })
}

/// Jobs by kind and state, for `/metrics`.
pub async fn count_by_kind_and_state(conn: &mut Conn) -> QueryResult<Vec<(String, JobState, i64)>> {
    with_conn!(conn, |c| {
        jobs::table
            .group_by((jobs::kind, jobs::state))
            .select((jobs::kind, jobs::state, diesel::dsl::count_star()))
            .load(c)
            .await
    })
}
