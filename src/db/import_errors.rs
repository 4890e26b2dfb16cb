//! Queries on `import_errors`: the problems of an import's rows, in file order.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::schema::import_errors;
use crate::with_conn;

/// The row was not written.
pub const ERROR: &str = "error";
/// The row was written without the offending value (an invalid risk matrix id).
pub const WARNING: &str = "warning";

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = import_errors)]
pub struct ImportErrorRow {
    pub job_id: String,
    /// 1-based line of the CSV file where the row starts (the header is line 1).
    pub line: i64,
    /// Order of the problem within its line.
    pub seq: i32,
    pub severity: String,
    pub column_name: String,
    pub code: String,
    pub message: String,
    pub raw_value: String,
    /// JSON array of the row's original cells.
    pub raw_record: String,
}

/// Inserts problems; one already recorded (same job, line and order) is left as is,
/// so a batch replayed after a crash adds nothing twice.
pub async fn insert(conn: &mut Conn, rows: &[ImportErrorRow]) -> QueryResult<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    match conn {
        Conn::Pg(c) => {
            let mut inserted = 0;
            // Nine parameters a row: stay far below PostgreSQL's 65,535.
            for chunk in rows.chunks(5_000) {
                inserted += diesel::insert_into(import_errors::table)
                    .values(chunk)
                    .on_conflict_do_nothing()
                    .execute(&mut **c)
                    .await?;
            }
            Ok(inserted)
        }
        Conn::Sqlite(c) => {
            let mut inserted = 0;
            for row in rows {
                inserted += diesel::insert_into(import_errors::table)
                    .values(row)
                    .on_conflict_do_nothing()
                    .execute(&mut **c)
                    .await?;
            }
            Ok(inserted)
        }
    }
}

/// Problems in file order after `(line, seq)`; `only_errors` leaves warnings out.
pub async fn page(
    conn: &mut Conn,
    job_id: &str,
    after: Option<(i64, i32)>,
    only_errors: bool,
    limit: i64,
) -> QueryResult<Vec<ImportErrorRow>> {
    with_conn!(conn, |c| {
        let mut q = import_errors::table
            .filter(import_errors::job_id.eq(job_id))
            .into_boxed();
        if let Some((line, seq)) = after {
            q = q.filter(
                diesel::dsl::sql::<diesel::sql_types::Bool>("(import_errors.line, import_errors.seq) > (")
                    .bind::<diesel::sql_types::BigInt, _>(line)
                    .sql(", ")
                    .bind::<diesel::sql_types::Integer, _>(seq)
                    .sql(")"),
            );
        }
        if only_errors {
            q = q.filter(import_errors::severity.eq(ERROR));
        }
        q.order((import_errors::line, import_errors::seq))
            .limit(limit)
            .select(ImportErrorRow::as_select())
            .load(c)
            .await
    })
}

pub async fn count(conn: &mut Conn, job_id: &str) -> QueryResult<i64> {
    with_conn!(conn, |c| {
        import_errors::table
            .filter(import_errors::job_id.eq(job_id))
            .count()
            .get_result(c)
            .await
    })
}
