//! Queries on `staged_uploads` (files uploaded ahead of their import).

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::schema::staged_uploads;
use crate::with_conn;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = staged_uploads)]
pub struct StagedRow {
    pub id: String,
    pub organization_id: String,
    /// Where the file is stored (the storage backend, like an import's upload).
    pub object_key: String,
    pub file_name: String,
    pub size_bytes: i64,
    pub created_at: i64,
    pub expires_at: i64,
}

pub async fn insert(conn: &mut Conn, row: &StagedRow) -> QueryResult<()> {
    with_conn!(conn, |c| {
        diesel::insert_into(staged_uploads::table)
            .values(row)
            .execute(c)
            .await
            .map(drop)
    })
}

/// Removes and returns the organization's staged upload `id` when it has not
/// expired at `now`: of two imports naming it, one gets it.
pub async fn take(
    conn: &mut Conn,
    organization_id: &str,
    id: &str,
    now: i64,
) -> QueryResult<Option<StagedRow>> {
    with_conn!(conn, |c| {
        diesel::delete(
            staged_uploads::table
                .filter(staged_uploads::organization_id.eq(organization_id))
                .filter(staged_uploads::id.eq(id))
                .filter(staged_uploads::expires_at.gt(now)),
        )
        .returning(StagedRow::as_returning())
        .get_result(c)
        .await
        .optional()
    })
}

/// How many unexpired staged uploads the organization holds.
pub async fn held(conn: &mut Conn, organization_id: &str, now: i64) -> QueryResult<i64> {
    with_conn!(conn, |c| {
        staged_uploads::table
            .filter(staged_uploads::organization_id.eq(organization_id))
            .filter(staged_uploads::expires_at.gt(now))
            .count()
            .get_result(c)
            .await
    })
}

/// Up to `limit` staged uploads expired at `now`, oldest first.
pub async fn expired(conn: &mut Conn, now: i64, limit: i64) -> QueryResult<Vec<StagedRow>> {
    with_conn!(conn, |c| {
        staged_uploads::table
            .filter(staged_uploads::expires_at.le(now))
            .order(staged_uploads::expires_at)
            .limit(limit)
            .select(StagedRow::as_select())
            .load(c)
            .await
    })
}

pub async fn delete(conn: &mut Conn, id: &str) -> QueryResult<()> {
    with_conn!(conn, |c| {
        diesel::delete(staged_uploads::table.filter(staged_uploads::id.eq(id)))
            .execute(c)
            .await
            .map(drop)
    })
}
