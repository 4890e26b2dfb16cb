//! Queries on the organization's enrichment catalogue (`enrichments`,
//! `enrichment_groups`).

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::schema::{enrichment_groups, enrichments};
use crate::with_conn;

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = enrichments)]
pub struct EnrichmentRow {
    pub organization_id: String,
    pub code: String,
    /// `person`, `company` or `any`.
    pub entity_type: String,
    pub active: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = enrichment_groups)]
pub struct EnrichmentGroupRow {
    pub organization_id: String,
    pub slug: String,
    /// JSON array of enrichment codes.
    pub codes: String,
    pub created_at: i64,
}

/// Inserts or updates one enrichment code.
pub async fn upsert(conn: &mut Conn, row: &EnrichmentRow) -> QueryResult<()> {
    with_conn!(conn, |c| {
        diesel::insert_into(enrichments::table)
            .values(row)
            .on_conflict((enrichments::organization_id, enrichments::code))
            .do_update()
            .set((
                enrichments::entity_type.eq(&row.entity_type),
                enrichments::active.eq(row.active),
            ))
            .execute(c)
            .await
            .map(drop)
    })
}

pub async fn list(conn: &mut Conn, organization_id: &str) -> QueryResult<Vec<EnrichmentRow>> {
    with_conn!(conn, |c| {
        enrichments::table
            .filter(enrichments::organization_id.eq(organization_id))
            .order(enrichments::code)
            .select(EnrichmentRow::as_select())
            .load(c)
            .await
    })
}

/// Inserts or replaces one enrichment group.
pub async fn upsert_group(conn: &mut Conn, row: &EnrichmentGroupRow) -> QueryResult<()> {
    with_conn!(conn, |c| {
        diesel::insert_into(enrichment_groups::table)
            .values(row)
            .on_conflict((enrichment_groups::organization_id, enrichment_groups::slug))
            .do_update()
            .set(enrichment_groups::codes.eq(&row.codes))
            .execute(c)
            .await
            .map(drop)
    })
}

pub async fn list_groups(conn: &mut Conn, organization_id: &str) -> QueryResult<Vec<EnrichmentGroupRow>> {
    with_conn!(conn, |c| {
        enrichment_groups::table
            .filter(enrichment_groups::organization_id.eq(organization_id))
            .order(enrichment_groups::slug)
            .select(EnrichmentGroupRow::as_select())
            .load(c)
            .await
    })
}
