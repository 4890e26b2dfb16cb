//! Queries on `organizations`.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::schema::organizations;
use crate::with_conn;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = organizations)]
pub struct OrganizationRow {
    pub id: String,
    pub name: String,
    pub plan: String,
    /// JSON array of enabled feature flags.
    pub features: String,
    pub created_at: i64,
    pub updated_at: i64,
}

pub async fn insert(conn: &mut Conn, row: &OrganizationRow) -> QueryResult<()> {
    with_conn!(conn, |c| {
        diesel::insert_into(organizations::table)
            .values(row)
            .execute(c)
            .await
            .map(drop)
    })
}

pub async fn find(conn: &mut Conn, id: &str) -> QueryResult<Option<OrganizationRow>> {
    with_conn!(conn, |c| {
        organizations::table
            .find(id)
            .select(OrganizationRow::as_select())
            .first(c)
            .await
            .optional()
    })
}

pub async fn list(conn: &mut Conn) -> QueryResult<Vec<OrganizationRow>> {
    with_conn!(conn, |c| {
        organizations::table
            .order((organizations::created_at, organizations::id))
            .select(OrganizationRow::as_select())
            .load(c)
            .await
    })
}

pub async fn count(conn: &mut Conn) -> QueryResult<i64> {
    with_conn!(conn, |c| organizations::table.count().get_result(c).await)
}

/// Sets the plan; returns the number of organizations changed (0 when unknown).
pub async fn set_plan(conn: &mut Conn, id: &str, plan: &str, now: i64) -> QueryResult<usize> {
    with_conn!(conn, |c| {
        diesel::update(organizations::table.find(id))
            .set((organizations::plan.eq(plan), organizations::updated_at.eq(now)))
            .execute(c)
            .await
    })
}

/// Replaces the feature list (a JSON array).
pub async fn set_features(conn: &mut Conn, id: &str, features: &str, now: i64) -> QueryResult<usize> {
    with_conn!(conn, |c| {
        diesel::update(organizations::table.find(id))
            .set((
                organizations::features.eq(features),
                organizations::updated_at.eq(now),
            ))
            .execute(c)
            .await
    })
}
