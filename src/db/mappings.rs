//! Queries on `mappings` (saved header mappings for imports).

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::schema::mappings;
use crate::with_conn;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = mappings)]
pub struct MappingRow {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    /// `entity_person`, `entity_company` or `entity_mixed`.
    pub kind: String,
    /// JSON object: custom header (normalised) -> platform column.
    pub column_map: String,
    pub created_at: i64,
    pub updated_at: i64,
}

pub async fn insert(conn: &mut Conn, row: &MappingRow) -> QueryResult<()> {
    with_conn!(conn, |c| {
        diesel::insert_into(mappings::table)
            .values(row)
            .execute(c)
            .await
            .map(drop)
    })
}

pub async fn find(conn: &mut Conn, organization_id: &str, id: &str) -> QueryResult<Option<MappingRow>> {
    with_conn!(conn, |c| {
        mappings::table
            .filter(mappings::organization_id.eq(organization_id))
            .filter(mappings::id.eq(id))
            .select(MappingRow::as_select())
            .first(c)
            .await
            .optional()
    })
}

/// Newest first; `before` is the (created_at, id) where the previous page ended.
pub async fn list(
    conn: &mut Conn,
    organization_id: &str,
    before: Option<(i64, String)>,
    limit: i64,
) -> QueryResult<Vec<MappingRow>> {
    with_conn!(conn, |c| {
        let mut q = mappings::table
            .filter(mappings::organization_id.eq(organization_id))
            .into_boxed();
        if let Some((created, id)) = before {
            q = q.filter(super::after_cursor!(
                "mappings.created_at",
                "mappings.id",
                true,
                diesel::sql_types::BigInt,
                created,
                id
            ));
        }
        q.order((mappings::created_at.desc(), mappings::id.desc()))
            .limit(limit)
            .select(MappingRow::as_select())
            .load(c)
            .await
    })
}

pub async fn count(conn: &mut Conn, organization_id: &str) -> QueryResult<i64> {
    with_conn!(conn, |c| {
        mappings::table
            .filter(mappings::organization_id.eq(organization_id))
            .count()
            .get_result(c)
            .await
    })
}

pub async fn delete(conn: &mut Conn, organization_id: &str, id: &str) -> QueryResult<bool> {
    with_conn!(conn, |c| {
        diesel::delete(
            mappings::table
                .filter(mappings::organization_id.eq(organization_id))
                .filter(mappings::id.eq(id)),
        )
        .execute(c)
        .await
        .map(|n| n > 0)
    })
}

/// Replaces a mapping's name, kind and columns; `false` when it no longer exists.
pub async fn update(conn: &mut Conn, row: &MappingRow) -> QueryResult<bool> {
    with_conn!(conn, |c| {
        diesel::update(
            mappings::table
                .filter(mappings::organization_id.eq(&row.organization_id))
                .filter(mappings::id.eq(&row.id)),
        )
        .set((
            mappings::name.eq(&row.name),
            mappings::kind.eq(&row.kind),
            mappings::column_map.eq(&row.column_map),
            mappings::updated_at.eq(row.updated_at),
        ))
        .execute(c)
        .await
        .map(|n| n > 0)
    })
}
