//! Queries on `api_keys`.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::schema::api_keys;
use crate::with_conn;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_keys)]
pub struct ApiKeyRow {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    /// Hex SHA-256 of the secret part; the secret itself is never stored.
    pub secret_hash: String,
    /// JSON array of permissions.
    pub permissions: String,
    /// JSON array of other organizations a service key may act for (`"*"`: any).
    pub allowed_organizations: String,
    pub created_at: i64,
    /// When a key stops working by itself, or (a future time) when a rotated key's
    /// grace period ends.
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    /// When the key expires (`--expires-in`); `None`: never.
    pub expires_at: Option<i64>,
}

pub async fn insert(conn: &mut Conn, row: &ApiKeyRow) -> QueryResult<()> {
    with_conn!(conn, |c| {
        diesel::insert_into(api_keys::table)
            .values(row)
            .execute(c)
            .await
            .map(drop)
    })
}

pub async fn find(conn: &mut Conn, id: &str) -> QueryResult<Option<ApiKeyRow>> {
    with_conn!(conn, |c| {
        api_keys::table
            .find(id)
            .select(ApiKeyRow::as_select())
            .first(c)
            .await
            .optional()
    })
}

pub async fn list_for_org(conn: &mut Conn, organization_id: &str) -> QueryResult<Vec<ApiKeyRow>> {
    with_conn!(conn, |c| {
        api_keys::table
            .filter(api_keys::organization_id.eq(organization_id))
            .order((api_keys::created_at, api_keys::id))
            .select(ApiKeyRow::as_select())
            .load(c)
            .await
    })
}

/// Revokes a key at `at` (now, or the end of a rotation's grace period); returns 0
/// when it is unknown or already revoked by then.
pub async fn revoke(conn: &mut Conn, id: &str, at: i64) -> QueryResult<usize> {
    with_conn!(conn, |c| {
        diesel::update(
            api_keys::table
                .find(id)
                .filter(api_keys::revoked_at.is_null().or(api_keys::revoked_at.gt(at))),
        )
        .set(api_keys::revoked_at.eq(at))
        .execute(c)
        .await
    })
}

/// Records use; callers throttle this so a busy key does not write on every call.
pub async fn touch(conn: &mut Conn, id: &str, now: i64) -> QueryResult<usize> {
    with_conn!(conn, |c| {
        diesel::update(api_keys::table.find(id))
            .set(api_keys::last_used_at.eq(now))
            .execute(c)
            .await
    })
}

/// The names of the keys among `ids` (ids that are not keys are left out).
pub async fn names(conn: &mut Conn, ids: &[String]) -> QueryResult<Vec<(String, String)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    with_conn!(conn, |c| {
        api_keys::table
            .filter(api_keys::id.eq_any(ids))
            .select((api_keys::id, api_keys::name))
            .load(c)
            .await
    })
}
