//! Queries on `entities`: lookup, filtered and keyset-paged listing, counting.

use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Text};
use diesel_async::RunQueryDsl;
use tokio_postgres::types::Type;

use super::schema::entities;
use super::{Backend, Conn};
use crate::with_conn;

diesel::define_sql_function!(fn lower(x: Text) -> Text);

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = entities, treat_none_as_default_value = false)]
pub struct EntityRow {
    pub id: String,
    pub organization_id: String,
    pub entity_type: String,
    pub tax_id: String,
    pub country: String,
    pub name: String,
    pub gender: Option<String>,
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub registration_date: Option<String>,
    pub status: String,
    pub is_client: bool,
    pub nationality: Option<String>,
    pub risk_matrix_id: Option<String>,
    /// JSON object.
    pub attributes: String,
    /// JSON object: `{"person": {...}}` or `{"company": {...}}`.
    pub entity_data: String,
    pub enrichment_plan: Option<String>,
    pub skip_rules_execution: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The `entities` columns in [`EntityRow`] order, for the raw SQL of the import's
/// write paths.
pub const ENTITY_COLUMNS: &str = "id, organization_id, entity_type, tax_id, country, name, gender, \
    external_id, email, phone, registration_date, status, is_client, nationality, risk_matrix_id, \
    attributes, entity_data, enrichment_plan, skip_rules_execution, created_at, updated_at";

/// PostgreSQL types of the `entities` columns in [`EntityRow`] order, for the raw
/// tokio-postgres paths (the import's binary COPY, the export's row reader).
pub const ENTITY_COLUMN_TYPES: [Type; 21] = [
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::BOOL,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::BOOL,
    Type::INT8,
    Type::INT8,
];

/// A borrowed [`EntityRow`]: the export's PostgreSQL read path
/// ([`super::export_rows`]) decodes rows into this without copying a string.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EntityView<'a> {
    pub id: &'a str,
    pub organization_id: &'a str,
    pub entity_type: &'a str,
    pub tax_id: &'a str,
    pub country: &'a str,
    pub name: &'a str,
    pub gender: Option<&'a str>,
    pub external_id: Option<&'a str>,
    pub email: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub registration_date: Option<&'a str>,
    pub status: &'a str,
    pub is_client: bool,
    pub nationality: Option<&'a str>,
    pub risk_matrix_id: Option<&'a str>,
    pub attributes: &'a str,
    pub entity_data: &'a str,
    pub enrichment_plan: Option<&'a str>,
    pub skip_rules_execution: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl EntityRow {
    pub fn view(&self) -> EntityView<'_> {
        EntityView {
            id: &self.id,
            organization_id: &self.organization_id,
            entity_type: &self.entity_type,
            tax_id: &self.tax_id,
            country: &self.country,
            name: &self.name,
            gender: self.gender.as_deref(),
            external_id: self.external_id.as_deref(),
            email: self.email.as_deref(),
            phone: self.phone.as_deref(),
            registration_date: self.registration_date.as_deref(),
            status: &self.status,
            is_client: self.is_client,
            nationality: self.nationality.as_deref(),
            risk_matrix_id: self.risk_matrix_id.as_deref(),
            attributes: &self.attributes,
            entity_data: &self.entity_data,
            enrichment_plan: self.enrichment_plan.as_deref(),
            skip_rules_execution: self.skip_rules_execution,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// Values one filter may list in all (types, countries, statuses, tax IDs, external
/// IDs, attribute pairs together). Each becomes a bound parameter, and SQLite takes at
/// most 32,766 per statement (PostgreSQL 65,535); a listing binds the filter twice
/// (page and count), so the same documented limit holds on both backends.
pub const MAX_FILTER_VALUES: usize = 10_000;

/// Which entities a query covers; validated by the caller. Empty lists do not filter.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EntityFilter {
    pub types: Vec<String>,
    pub countries: Vec<String>,
    pub statuses: Vec<String>,
    pub created_from: Option<i64>,
    pub created_to: Option<i64>,
    pub updated_from: Option<i64>,
    pub updated_to: Option<i64>,
    pub tax_ids: Vec<String>,
    pub external_ids: Vec<String>,
    pub is_client: Option<bool>,
    /// (dotted path below `attributes`, segments already checked, value as text).
    pub attributes: Vec<(Vec<String>, String)>,
    pub risk_matrix_id: Option<String>,
    pub search: Option<String>,
}

/// The sort column of a listing; ties are broken by id in the same direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    CreatedAt,
    UpdatedAt,
    Name,
    TaxId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityOrder {
    pub key: SortKey,
    pub descending: bool,
}

/// Where the previous page ended: the sort value and id of its last row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CursorValue {
    Int(i64),
    Text(String),
}

impl EntityOrder {
    /// The cursor value of `row` for this order.
    pub fn cursor_value(&self, row: &EntityRow) -> CursorValue {
        match self.key {
            SortKey::CreatedAt => CursorValue::Int(row.created_at),
            SortKey::UpdatedAt => CursorValue::Int(row.updated_at),
            SortKey::Name => CursorValue::Text(row.name.clone()),
            SortKey::TaxId => CursorValue::Text(row.tax_id.clone()),
        }
    }
}

/// Orders by `$col` then id, starting after the cursor when there is one.
macro_rules! keyset {
    ($q:expr, $col:expr, $name:literal, $sql_type:ty, $order:expr, $after:expr) => {{
        let mut q = $q;
        if let Some((v, id)) = $after {
            q = q.filter(super::after_cursor!(
                concat!("entities.", $name),
                "entities.id",
                $order.descending,
                $sql_type,
                v,
                id
            ));
        }
        if $order.descending {
            q.order(($col.desc(), entities::id.desc()))
        } else {
            q.order(($col.asc(), entities::id.asc()))
        }
    }};
}

/// `attributes.<path> = value`, compared as text. JSON is stored as text on both
/// backends, so the extraction is the one dialect-specific fragment. A macro so the
/// expression keeps one concrete type whichever arm builds it.
macro_rules! attribute_equals {
    ($backend:expr, $path:expr, $value:expr) => {{
        let (prefix, path, infix) = match $backend {
            Backend::Postgres => (
                "(entities.attributes::jsonb #>> ",
                format!("{{{}}}", $path.join(",")),
                "::text[]) = ",
            ),
            Backend::Sqlite => (
                "CAST(json_extract(entities.attributes, ",
                format!("$.{}", $path.join(".")),
                ") AS TEXT) = ",
            ),
        };
        sql::<Bool>(prefix)
            .bind::<Text, _>(path)
            .sql(infix)
            .bind::<Text, _>($value.to_string())
    }};
}

/// Applies an [`EntityFilter`] to a boxed query on `entities`. A macro, because the
/// boxed query's type differs per backend and per select clause.
macro_rules! apply_filter {
    ($query:expr, $org:expr, $f:expr, $backend:expr) => {{
        let f: &EntityFilter = $f;
        let mut q = $query.filter(entities::organization_id.eq($org));
        if !f.types.is_empty() {
            q = q.filter(entities::entity_type.eq_any(&f.types));
        }
        if !f.countries.is_empty() {
            q = q.filter(entities::country.eq_any(&f.countries));
        }
        if !f.statuses.is_empty() {
            q = q.filter(entities::status.eq_any(&f.statuses));
        }
        if let Some(t) = f.created_from {
            q = q.filter(entities::created_at.ge(t));
        }
        if let Some(t) = f.created_to {
            q = q.filter(entities::created_at.le(t));
        }
        if let Some(t) = f.updated_from {
            q = q.filter(entities::updated_at.ge(t));
        }
        if let Some(t) = f.updated_to {
            q = q.filter(entities::updated_at.le(t));
        }
        if !f.tax_ids.is_empty() {
            q = q.filter(entities::tax_id.eq_any(&f.tax_ids));
        }
        if !f.external_ids.is_empty() {
            q = q.filter(entities::external_id.eq_any(&f.external_ids));
        }
        if let Some(v) = f.is_client {
            q = q.filter(entities::is_client.eq(v));
        }
        if let Some(id) = &f.risk_matrix_id {
            q = q.filter(entities::risk_matrix_id.eq(id));
        }
        for (path, value) in &f.attributes {
            q = q.filter(attribute_equals!($backend, path, value));
        }
        if let Some(term) = &f.search {
            let pattern = like_pattern(term);
            q = q.filter(
                lower(entities::name)
                    .like(pattern.clone())
                    .escape('\\')
                    .or(lower(entities::tax_id).like(pattern.clone()).escape('\\'))
                    .or(lower(entities::external_id.assume_not_null())
                        .like(pattern)
                        .escape('\\')),
            );
        }
        q
    }};
}

/// `%term%` in lower case, with LIKE's wildcards escaped.
fn like_pattern(term: &str) -> String {
    let mut out = String::with_capacity(term.len() + 2);
    out.push('%');
    for ch in term.to_lowercase().chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('%');
    out
}

pub async fn find(conn: &mut Conn, organization_id: &str, id: &str) -> QueryResult<Option<EntityRow>> {
    with_conn!(conn, |c| {
        entities::table
            .filter(entities::organization_id.eq(organization_id))
            .filter(entities::id.eq(id))
            .select(EntityRow::as_select())
            .first(c)
            .await
            .optional()
    })
}

/// One page of entities in `order`, after `after` (the previous page's last row).
pub async fn list(
    conn: &mut Conn,
    organization_id: &str,
    filter: &EntityFilter,
    order: EntityOrder,
    after: Option<(CursorValue, String)>,
    limit: i64,
) -> QueryResult<Vec<EntityRow>> {
    with_conn!(conn, |c, backend| {
        let q = apply_filter!(entities::table.into_boxed(), organization_id, filter, backend);
        let (int_after, text_after) = match after {
            Some((CursorValue::Int(v), id)) => (Some((v, id)), None),
            Some((CursorValue::Text(v), id)) => (None, Some((v, id))),
            None => (None, None),
        };
        let q = match order.key {
            SortKey::CreatedAt => keyset!(q, entities::created_at, "created_at", BigInt, order, int_after),
            SortKey::UpdatedAt => keyset!(q, entities::updated_at, "updated_at", BigInt, order, int_after),
            SortKey::Name => keyset!(q, entities::name, "name", Text, order, text_after),
            SortKey::TaxId => keyset!(q, entities::tax_id, "tax_id", Text, order, text_after),
        };
        q.limit(limit).select(EntityRow::as_select()).load(c).await
    })
}

/// Every matching entity in `(created_at, id)` order as one streamed query, for
/// exports on PostgreSQL: the server produces rows while the caller consumes them,
/// from one consistent snapshot, with no page round trips.
pub async fn stream_in_creation_order<'c>(
    c: &'c mut diesel_async::AsyncPgConnection,
    organization_id: &'c str,
    filter: &'c EntityFilter,
) -> QueryResult<impl futures::Stream<Item = QueryResult<EntityRow>> + Send + 'c> {
    creation_order_pg(organization_id, filter).load_stream(c).await
}

/// Every matching entity's [`EntityRow`] columns in `(created_at, id)` order, on
/// PostgreSQL; also rendered to SQL for the export's raw reader.
pub fn creation_order_pg<'a>(
    organization_id: &'a str,
    filter: &'a EntityFilter,
) -> entities::BoxedQuery<
    'a,
    diesel::pg::Pg,
    diesel::dsl::SqlTypeOf<diesel::dsl::AsSelect<EntityRow, diesel::pg::Pg>>,
> {
    let query = apply_filter!(
        entities::table.into_boxed(),
        organization_id,
        filter,
        Backend::Postgres
    );
    query
        .order((entities::created_at.asc(), entities::id.asc()))
        .select(EntityRow::as_select())
}

/// Every matching entity in `(created_at, id)` order through one SQLite statement,
/// stepped lazily on the calling (blocking) thread; `each` returns `false` to stop.
/// SQLite's async wrapper would buffer a stream whole, hence this blocking form.
pub fn each_in_creation_order_sqlite(
    c: &mut diesel::SqliteConnection,
    organization_id: &str,
    filter: &EntityFilter,
    mut each: impl FnMut(EntityRow) -> bool,
) -> QueryResult<()> {
    let query = apply_filter!(
        entities::table.into_boxed(),
        organization_id,
        filter,
        Backend::Sqlite
    );
    let rows = diesel::RunQueryDsl::load_iter::<EntityRow, diesel::connection::DefaultLoadingMode>(
        query
            .order((entities::created_at.asc(), entities::id.asc()))
            .select(EntityRow::as_select()),
        c,
    )?;
    for row in rows {
        if !each(row?) {
            break;
        }
    }
    Ok(())
}

/// How many entities match the filter (AIP-158 `total_size`).
pub async fn count(conn: &mut Conn, organization_id: &str, filter: &EntityFilter) -> QueryResult<i64> {
    with_conn!(conn, |c, backend| {
        apply_filter!(
            entities::table.count().into_boxed(),
            organization_id,
            filter,
            backend
        )
        .get_result(c)
        .await
    })
}

/// Inserts rows: one multi-row statement on PostgreSQL; one statement per row on
/// SQLite, where diesel-async has no multi-row insert (call inside a transaction).
pub async fn insert(conn: &mut Conn, rows: &[EntityRow]) -> QueryResult<usize> {
    match conn {
        Conn::Pg(c) => {
            diesel::insert_into(entities::table)
                .values(rows)
                .execute(&mut **c)
                .await
        }
        Conn::Sqlite(c) => {
            let mut inserted = 0;
            for row in rows {
                inserted += diesel::insert_into(entities::table)
                    .values(row)
                    .execute(&mut **c)
                    .await?;
            }
            Ok(inserted)
        }
    }
}
