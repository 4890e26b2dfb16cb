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

/// The one definition of the `entities` columns, in table order: each column's
/// owned type, borrowed type and PostgreSQL wire type. It generates [`EntityRow`]
/// (diesel's row), [`EntityView`] (the borrowed row the export writers and the
/// import writers read), [`ENTITY_COLUMNS`], [`ENTITY_COLUMN_NAMES`],
/// [`ENTITY_COLUMN_TYPES`], the bind lists of both import writers and the row
/// decoders of the raw PostgreSQL and SQLite paths. A new column is added here,
/// in `schema.rs` and in the two migrations.
macro_rules! entity_columns {
    ($(
        $(#[$doc:meta])*
        $name:ident: $owned:ty, $borrowed:ty, $wire:ident, $cell:ident;
    )+) => {
        #[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
        #[diesel(table_name = entities, treat_none_as_default_value = false)]
        pub struct EntityRow {
            $($(#[$doc])* pub $name: $owned,)+
        }

        /// A borrowed [`EntityRow`]: the export's PostgreSQL read path
        /// ([`super::export_rows`]) decodes rows into this without copying a string.
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub struct EntityView<'a> {
            $(pub $name: $borrowed,)+
        }

        /// The column names in table order.
        pub const ENTITY_COLUMN_NAMES: &[&str] = &[$(stringify!($name)),+];

        const ENTITY_COLUMNS_AND_COMMA: &str = concat!($(stringify!($name), ", "),+);

        /// PostgreSQL types of the columns in table order, for the raw
        /// tokio-postgres paths (the import's binary COPY, the export's row reader).
        pub const ENTITY_COLUMN_TYPES: &[Type] = &[$(Type::$wire),+];

        impl EntityRow {
            pub fn view(&self) -> EntityView<'_> {
                EntityView {
                    $($name: Viewed::viewed(&self.$name),)+
                }
            }

            /// A row of a raw PostgreSQL query selecting [`ENTITY_COLUMNS`].
            pub fn from_pg(row: &tokio_postgres::Row) -> Result<EntityRow, tokio_postgres::Error> {
                let mut index = 0..;
                Ok(EntityRow {
                    $($name: row.try_get(index.next().unwrap_or_default())?,)+
                })
            }

            /// A row of a rusqlite query selecting [`ENTITY_COLUMNS`].
            pub fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<EntityRow> {
                let mut index = 0..;
                Ok(EntityRow {
                    $($name: row.get(index.next().unwrap_or_default())?,)+
                })
            }
        }

        impl<'a> EntityView<'a> {
            /// The values in table order, for tokio-postgres (`$1` … or a COPY row).
            pub fn pg_values(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); ENTITY_COLUMN_COUNT] {
                [$(&self.$name),+]
            }

            /// The values in table order, for rusqlite (`?1` …).
            pub fn sqlite_values(&self) -> [&dyn rusqlite::ToSql; ENTITY_COLUMN_COUNT] {
                [$(&self.$name),+]
            }

            /// The owned row.
            pub fn to_row(&self) -> EntityRow {
                EntityRow {
                    $($name: Owned::owned(self.$name),)+
                }
            }

            /// A row of the export's raw PostgreSQL reader, its strings borrowed.
            pub fn from_cells(cells: &super::export_rows::Cells<'a>) -> Result<EntityView<'a>, super::export_rows::ViewError> {
                let mut index = 0..;
                Ok(EntityView {
                    $($name: cells.$cell(index.next().unwrap_or_default())?,)+
                })
            }
        }
    };
}

/// An owned column value and its borrowed form in [`EntityView`].
trait Viewed<'a, V> {
    fn viewed(&'a self) -> V;
}

impl<'a> Viewed<'a, &'a str> for String {
    fn viewed(&'a self) -> &'a str {
        self
    }
}

impl<'a> Viewed<'a, Option<&'a str>> for Option<String> {
    fn viewed(&'a self) -> Option<&'a str> {
        self.as_deref()
    }
}

impl Viewed<'_, bool> for bool {
    fn viewed(&self) -> bool {
        *self
    }
}

impl Viewed<'_, i64> for i64 {
    fn viewed(&self) -> i64 {
        *self
    }
}

/// A borrowed column value and its owned form in [`EntityRow`].
trait Owned<O> {
    fn owned(self) -> O;
}

impl Owned<String> for &str {
    fn owned(self) -> String {
        self.to_string()
    }
}

impl Owned<Option<String>> for Option<&str> {
    fn owned(self) -> Option<String> {
        self.map(str::to_string)
    }
}

impl Owned<bool> for bool {
    fn owned(self) -> bool {
        self
    }
}

impl Owned<i64> for i64 {
    fn owned(self) -> i64 {
        self
    }
}

entity_columns! {
    id: String, &'a str, TEXT, text;
    organization_id: String, &'a str, TEXT, text;
    entity_type: String, &'a str, TEXT, text;
    tax_id: String, &'a str, TEXT, text;
    country: String, &'a str, TEXT, text;
    name: String, &'a str, TEXT, text;
    gender: Option<String>, Option<&'a str>, TEXT, text_or_null;
    external_id: Option<String>, Option<&'a str>, TEXT, text_or_null;
    email: Option<String>, Option<&'a str>, TEXT, text_or_null;
    phone: Option<String>, Option<&'a str>, TEXT, text_or_null;
    registration_date: Option<String>, Option<&'a str>, TEXT, text_or_null;
    status: String, &'a str, TEXT, text;
    is_client: bool, bool, BOOL, boolean;
    nationality: Option<String>, Option<&'a str>, TEXT, text_or_null;
    risk_matrix_id: Option<String>, Option<&'a str>, TEXT, text_or_null;
    /// JSON object.
    attributes: String, &'a str, TEXT, text;
    /// JSON object: `{"person": {...}}` or `{"company": {...}}`.
    entity_data: String, &'a str, TEXT, text;
    enrichment_plan: Option<String>, Option<&'a str>, TEXT, text_or_null;
    skip_rules_execution: bool, bool, BOOL, boolean;
    created_at: i64, i64, INT8, int8;
    updated_at: i64, i64, INT8, int8;
}

pub const ENTITY_COLUMN_COUNT: usize = ENTITY_COLUMN_NAMES.len();

/// Columns an import's update of a stored entity keeps: its identity, key and
/// creation time.
pub const KEPT_ON_UPDATE: [&str; 5] = ["id", "organization_id", "country", "tax_id", "created_at"];

/// The `entities` columns in [`EntityRow`] order, for raw SQL.
pub const ENTITY_COLUMNS: &str = {
    let (names, _comma) = ENTITY_COLUMNS_AND_COMMA
        .as_bytes()
        .split_at(ENTITY_COLUMNS_AND_COMMA.len() - 2);
    match std::str::from_utf8(names) {
        Ok(names) => names,
        Err(_) => panic!("column names are ASCII"),
    }
};

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

/// Adds the superset conditions of a filter's search and attribute equalities
/// that the `entities_search` and `entities_attributes` GIN indexes answer
/// (PostgreSQL); the exact conditions stay, so the meaning does not change.
macro_rules! apply_supersets {
    ($query:expr, $f:expr) => {{
        let f: &EntityFilter = $f;
        let mut q = $query;
        for (path, value) in &f.attributes {
            let contains = |document: &String| {
                sql::<Bool>("(entities.attributes::jsonb) @> CAST(")
                    .bind::<Text, _>(document.clone())
                    .sql(" AS jsonb)")
            };
            match containing_documents(path, value).as_deref() {
                Some([text]) => q = q.filter(contains(text)),
                Some([text, spelled]) => q = q.filter(contains(text).or(contains(spelled))),
                _ => {}
            }
        }
        if let Some(term) = &f.search {
            q = q.filter(
                sql::<Bool>(SEARCH_DOCUMENT)
                    .sql(" LIKE ")
                    .bind::<Text, _>(like_pattern(term))
                    .sql(" ESCAPE '\\'"),
            );
        }
        q
    }};
}

/// Applies an [`EntityFilter`] to a boxed query on `entities`, with the index
/// supersets when `$supersets` (see [`supersets_pay`]). A macro, because the
/// boxed query's type differs per backend and per select clause.
macro_rules! apply_filter {
    ($query:expr, $org:expr, $f:expr, $backend:expr) => {
        apply_filter!($query, $org, $f, $backend, false)
    };
    ($query:expr, $org:expr, $f:expr, $backend:expr, $supersets:expr) => {{
        let f: &EntityFilter = $f;
        let mut q = $query.filter(entities::organization_id.eq($org));
        if $supersets {
            q = apply_supersets!(q, f);
        }
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

/// The text the `entities_search` trigram index holds (PostgreSQL): the three
/// searched fields joined, lower-cased. A term found in one field is found here,
/// so `SEARCH_DOCUMENT LIKE '%term%'` is a superset of the search the index serves.
const SEARCH_DOCUMENT: &str =
    "lower(entities.name || ' ' || entities.tax_id || ' ' || coalesce(entities.external_id, ''))";

/// JSON documents `attributes` contains (`@>`, which the `entities_attributes`
/// index answers) whenever `attributes.<path>` reads as `value` through `#>>`: the
/// value as a JSON string, and as the JSON it spells when it is a number, a boolean,
/// an object or an array (one or two documents). `None` when a segment could be an
/// array index (`#>>`
/// indexes arrays by number, containment does not), and then only the exact
/// comparison applies.
pub fn containing_documents(path: &[String], value: &str) -> Option<Vec<String>> {
    if path.is_empty() || path.iter().any(|s| s.parse::<i64>().is_ok()) {
        return None;
    }
    let nest = |leaf: serde_json::Value| {
        path.iter().rev().fold(leaf, |inner, key| {
            let mut object = serde_json::Map::new();
            object.insert(key.clone(), inner);
            serde_json::Value::Object(object)
        })
    };
    let mut documents = vec![nest(serde_json::Value::String(value.to_string())).to_string()];
    match serde_json::from_str::<serde_json::Value>(value) {
        Ok(serde_json::Value::String(_) | serde_json::Value::Null) | Err(_) => {}
        Ok(spelled) => documents.push(nest(spelled).to_string()),
    }
    Some(documents)
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

/// Matches (over every organization) under which a filter's index supersets are
/// worth using: a bitmap of that many rows is read in milliseconds.
const SUPERSET_ROWS: i64 = 10_000;

/// Whether a listing should add its filter's index supersets (PostgreSQL): only
/// when the planner expects them to narrow the table to a few rows. Beside the
/// exact conditions, a superset makes the planner multiply two selectivities of
/// the same condition and trust a GIN bitmap that, for a common value (a fifth of
/// two million rows), it must read whole before the first page: 3.6 s p95,
/// against milliseconds walking the organization's creation order. A rare value
/// is the other way round, so the superset's own estimate decides.
pub async fn supersets_pay(conn: &mut Conn, filter: &EntityFilter) -> QueryResult<bool> {
    let Conn::Pg(c) = conn else {
        return Ok(false);
    };
    let applies = filter.search.is_some()
        || filter
            .attributes
            .iter()
            .any(|(path, value)| containing_documents(path, value).is_some());
    if !applies {
        return Ok(false);
    }
    let query = apply_supersets!(
        entities::table
            .select(sql::<diesel::sql_types::Integer>("1"))
            .into_boxed::<diesel::pg::Pg>(),
        filter
    );
    let plan: String = super::explain::Explain(query).get_result(&mut **c).await?;
    Ok(super::explain::estimated_rows(&plan) <= SUPERSET_ROWS)
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
    let supersets = supersets_pay(conn, filter).await?;
    page(conn, organization_id, filter, supersets, order, after, limit).await
}

/// A listing's page and its `total_size` ([`count_for_listing`]), with the index
/// supersets decided once for both.
pub async fn list_with_total(
    conn: &mut Conn,
    organization_id: &str,
    filter: &EntityFilter,
    order: EntityOrder,
    after: Option<(CursorValue, String)>,
    limit: i64,
) -> QueryResult<(Vec<EntityRow>, i64)> {
    let supersets = supersets_pay(conn, filter).await?;
    let rows = page(conn, organization_id, filter, supersets, order, after, limit).await?;
    let total = total_of(conn, organization_id, filter, supersets).await?;
    Ok((rows, total))
}

async fn page(
    conn: &mut Conn,
    organization_id: &str,
    filter: &EntityFilter,
    supersets: bool,
    order: EntityOrder,
    after: Option<(CursorValue, String)>,
    limit: i64,
) -> QueryResult<Vec<EntityRow>> {
    with_conn!(conn, |c, backend| {
        let q = apply_filter!(
            entities::table.into_boxed(),
            organization_id,
            filter,
            backend,
            supersets
        );
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

/// Matches a listing counts one by one; above this, its `total_size` is the
/// planner's estimate on PostgreSQL (AIP-158 allows one): an exact count of two
/// million rows costs a scan of two million index entries on every page, and even
/// counting to 10,000 under a 10 % filter read 100,000 rows (220 ms, measured).
pub const EXACT_COUNT_LIMIT: i64 = 1_000;

/// A listing's `total_size`: exact up to [`EXACT_COUNT_LIMIT`] matches; above it,
/// PostgreSQL's estimate for the filter (never below the limit + 1), and on SQLite
/// (one tenant's file) the exact count.
pub async fn count_for_listing(
    conn: &mut Conn,
    organization_id: &str,
    filter: &EntityFilter,
) -> QueryResult<i64> {
    let supersets = supersets_pay(conn, filter).await?;
    total_of(conn, organization_id, filter, supersets).await
}

async fn total_of(
    conn: &mut Conn,
    organization_id: &str,
    filter: &EntityFilter,
    supersets: bool,
) -> QueryResult<i64> {
    let seen = with_conn!(conn, |c, backend| {
        apply_filter!(
            entities::table
                .select(sql::<diesel::sql_types::Integer>("1"))
                .into_boxed(),
            organization_id,
            filter,
            backend,
            supersets
        )
        .limit(EXACT_COUNT_LIMIT + 1)
        .load::<i32>(c)
        .await
    })?
    .len() as i64;
    if seen <= EXACT_COUNT_LIMIT {
        return Ok(seen);
    }
    match conn {
        Conn::Pg(c) => {
            let query = apply_filter!(
                entities::table
                    .select(sql::<diesel::sql_types::Integer>("1"))
                    .into_boxed::<diesel::pg::Pg>(),
                organization_id,
                filter,
                Backend::Postgres,
                supersets
            );
            let plan: String = super::explain::Explain(query).get_result(&mut **c).await?;
            Ok(super::explain::estimated_rows(&plan).max(seen))
        }
        Conn::Sqlite(_) => count(conn, organization_id, filter).await,
    }
}

/// Refreshes the planner's statistics of `entities` (PostgreSQL) after a big
/// import: autovacuum analyzes a table once a tenth of it changed, so a new
/// organization's first hundred thousand rows in a table of millions would stay
/// unknown to the planner (and to [`count_for_listing`]'s estimate) for days.
/// Skipped if another ANALYZE or a VACUUM holds the table for over two seconds.
pub async fn refresh_statistics(url: &str) {
    let result = async {
        let client = super::postgres::client(url, "statistics").await?;
        client
            .batch_execute("SET lock_timeout = '2s'; ANALYZE entities")
            .await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(err) = result {
        tracing::info!(error = %err, "entities statistics not refreshed after an import");
    }
}

/// How many entities match the filter, exactly.
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

#[cfg(test)]
mod tests {
    use diesel::prelude::*;

    use super::*;

    /// Whatever `#>>` reads as the value is contained in one of the documents.
    #[test]
    fn an_attribute_value_is_looked_for_as_text_and_as_the_json_it_spells() {
        let path = |p: &str| p.split('.').map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            containing_documents(&path("tier"), "gold"),
            Some(vec![r#"{"tier":"gold"}"#.to_string()])
        );
        assert_eq!(
            containing_documents(&path("tags.score"), "42"),
            Some(vec![
                r#"{"tags":{"score":"42"}}"#.to_string(),
                r#"{"tags":{"score":42}}"#.to_string()
            ])
        );
        assert_eq!(
            containing_documents(&path("vip"), "true"),
            Some(vec![
                r#"{"vip":"true"}"#.to_string(),
                r#"{"vip":true}"#.to_string()
            ])
        );
        assert_eq!(
            containing_documents(&path("a"), "null"),
            Some(vec![r#"{"a":"null"}"#.to_string()])
        );
        assert_eq!(containing_documents(&path("tags.0"), "vip"), None);
    }

    /// The column list that generates the raw paths' SQL and binds is the table's,
    /// in the table's order: a column added to `schema.rs` but not to the list (or
    /// the other way round) fails here, not in production.
    #[test]
    fn the_entity_column_list_is_the_tables() {
        let table =
            diesel::debug_query::<diesel::sqlite::Sqlite, _>(&entities::table.select(entities::all_columns))
                .to_string();
        let row =
            diesel::debug_query::<diesel::sqlite::Sqlite, _>(&entities::table.select(EntityRow::as_select()))
                .to_string();
        assert_eq!(table, row);
        let listed: Vec<String> = ENTITY_COLUMN_NAMES
            .iter()
            .map(|name| format!("`entities`.`{name}`"))
            .collect();
        assert!(table.contains(&listed.join(", ")), "{table}");
        assert_eq!(ENTITY_COLUMNS, ENTITY_COLUMN_NAMES.join(", "));
        assert_eq!(ENTITY_COLUMN_TYPES.len(), ENTITY_COLUMN_COUNT);
    }
}
