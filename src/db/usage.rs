//! Queries on `usage_events` (billing).

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::schema::usage_events;
use crate::with_conn;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = usage_events)]
pub struct UsageEventRow {
    pub id: String,
    pub organization_id: String,
    pub kind: String,
    pub quantity: i64,
    pub job_id: String,
    pub created_at: i64,
}

/// Records an event once per (job, kind): a retried job never bills twice.
/// Returns whether the event was new.
pub async fn record_once(conn: &mut Conn, row: &UsageEventRow) -> QueryResult<bool> {
    with_conn!(conn, |c| {
        diesel::insert_into(usage_events::table)
            .values(row)
            .on_conflict((usage_events::job_id, usage_events::kind))
            .do_nothing()
            .execute(c)
            .await
            .map(|n| n == 1)
    })
}

pub async fn list_for_org(conn: &mut Conn, organization_id: &str) -> QueryResult<Vec<UsageEventRow>> {
    with_conn!(conn, |c| {
        usage_events::table
            .filter(usage_events::organization_id.eq(organization_id))
            .order((usage_events::created_at, usage_events::id))
            .select(UsageEventRow::as_select())
            .load(c)
            .await
    })
}
