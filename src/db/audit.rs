//! Queries on `audit_events`.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::schema::audit_events;
use crate::with_conn;

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_events)]
pub struct AuditRow {
    pub id: String,
    pub at: i64,
    pub organization_id: String,
    /// An API key id, `jwt:<subject>`, `cert:<identity>`, `admin:<user>` or `system:mail`.
    pub principal: String,
    /// `grpc`, `rest`, `email` or `admin`.
    pub door: String,
    /// The gRPC method, the REST route, the e-mail or the admin command.
    pub method: String,
    pub target_id: String,
    pub request_id: String,
    /// `OK`, or the refusal's gRPC code name (`NOT_FOUND`, `FAILED_PRECONDITION`, …).
    pub outcome: String,
    /// A refusal's message, an e-mail's recipient, an admin command's arguments.
    pub detail: String,
}

pub async fn insert(conn: &mut Conn, row: &AuditRow) -> QueryResult<()> {
    with_conn!(conn, |c| {
        diesel::insert_into(audit_events::table)
            .values(row)
            .execute(c)
            .await
            .map(drop)
    })
}

/// The organization's events at or after `since`, oldest first, at most `limit`.
pub async fn list(
    conn: &mut Conn,
    organization_id: &str,
    since: i64,
    limit: i64,
) -> QueryResult<Vec<AuditRow>> {
    with_conn!(conn, |c| {
        audit_events::table
            .filter(audit_events::organization_id.eq(organization_id))
            .filter(audit_events::at.ge(since))
            .order((audit_events::at.asc(), audit_events::id.asc()))
            .limit(limit)
            .select(AuditRow::as_select())
            .load(c)
            .await
    })
}

/// Removes up to `limit` of the oldest events older than `before`; how many went.
/// The purge calls it until it removes fewer, so no statement holds the table long.
pub async fn delete_before(conn: &mut Conn, before: i64, limit: i64) -> QueryResult<usize> {
    with_conn!(conn, |c| {
        let due: Vec<String> = audit_events::table
            .filter(audit_events::at.lt(before))
            .order(audit_events::at.asc())
            .select(audit_events::id)
            .limit(limit)
            .load(c)
            .await?;
        if due.is_empty() {
            return Ok(0);
        }
        diesel::delete(audit_events::table.filter(audit_events::id.eq_any(&due)))
            .execute(c)
            .await
    })
}
