//! The import's PostgreSQL connection (tokio-postgres, its own): per batch, in one transaction, the stored entities of the batch's
//! keys, a binary `COPY` of the merged rows into a temporary staging table, one
//! set-based `INSERT … SELECT … ON CONFLICT DO UPDATE` into `entities`, the batch's
//! problems, and the lease-fenced checkpoint ([`super::CHECKPOINT`]). A multi-row INSERT through diesel binds 21
//! parameters a row and has PostgreSQL parse and plan each one; COPY streams them.

use std::collections::HashMap;
use std::pin::pin;

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::{Client, Transaction};

use super::{BatchEnd, CHECKPOINT};
use crate::db::entities::{
    ENTITY_COLUMN_NAMES, ENTITY_COLUMN_TYPES, ENTITY_COLUMNS, EntityRow, EntityView, KEPT_ON_UPDATE,
};
use crate::db::import_errors::ImportErrorRow;

/// A dedicated connection for one import run.
pub struct CopyWriter {
    client: Client,
}

/// The session of an import's connection. Its statements are planned without
/// looking at their values (a generic plan): the values an import binds are those
/// of an organization the statistics may not know yet (a new customer's first
/// import into a database other organizations filled). A plan built for such a
/// value believes the organization has about one row and probes
/// `(organization_id, updated_at, id)`, filtering the rest, which turns every
/// batch's lookup into a scan of everything the import wrote so far (18 s for a
/// 2,000-key batch after 25,000 rows, beside 1M analyzed rows of another
/// organization). The generic plan prices `organization_id = $1` at the average
/// organization's size, so the unique `(organization_id, country, tax_id)` index,
/// which pins one row per key, wins (10 ms for the same batch).
/// `tests/it/plans.rs` holds it.
pub const SESSION: &str = "SET plan_cache_mode = force_generic_plan; \
    CREATE TEMP TABLE import_stage (LIKE entities INCLUDING DEFAULTS) ON COMMIT DELETE ROWS";

/// The stored entities of one country among a batch's tax IDs (`$1` organization,
/// `$2` country, `$3` tax IDs): one probe of the unique index per key. Planned
/// generically (see [`SESSION`]) and prepared anew for every batch: a generic plan
/// is made once per prepared statement, and one made while the table was still
/// empty (a fresh database) ties every index at one row and may keep walking the
/// organization's `updated_at` range for the whole import (773 rows/s measured);
/// from the first batch's rows on, the unique index wins. `LIMIT 1` keeps the
/// lateral subquery from being flattened into a hash join over the
/// organization's range, and each key's equality an index condition (with
/// `tax_id = ANY($3)` a generic plan may filter the country's range instead).
pub fn stored_lookup() -> String {
    format!(
        "SELECT e.* FROM unnest($3::text[]) AS k(tax_id) CROSS JOIN LATERAL \
         (SELECT {ENTITY_COLUMNS} FROM entities WHERE organization_id = $1 AND country = $2 \
         AND tax_id = k.tax_id LIMIT 1) e"
    )
}

impl CopyWriter {
    pub async fn connect(url: &str) -> Result<CopyWriter, crate::db::postgres::ConnectError> {
        let client = crate::db::postgres::client(url, "import").await?;
        client.batch_execute(SESSION).await?;
        Ok(CopyWriter { client })
    }

    /// The plan the run's key lookup gets for these values, as `EXPLAIN` prints it
    /// (for the plan test and `ferry bench shared`).
    pub async fn explain_lookup(
        &self,
        organization_id: &str,
        country: &str,
        tax_ids: &[String],
    ) -> Result<String, tokio_postgres::Error> {
        self.client
            .batch_execute(&format!("PREPARE ferry_explain_lookup AS {}", stored_lookup()))
            .await?;
        // EXPLAIN EXECUTE takes no bound parameters: the values go in as literals.
        let literal = |text: &str| format!("'{}'", text.replace('\'', "''"));
        let keys = tax_ids.iter().map(|k| literal(k)).collect::<Vec<_>>().join(",");
        let rows = self
            .client
            .query(
                &format!(
                    "EXPLAIN EXECUTE ferry_explain_lookup({}, {}, ARRAY[{keys}]::text[])",
                    literal(organization_id),
                    literal(country)
                ),
                &[],
            )
            .await;
        self.client
            .batch_execute("DEALLOCATE ferry_explain_lookup")
            .await?;
        let lines = rows?
            .iter()
            .map(|row| row.try_get::<_, String>(0))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(lines.join("\n"))
    }

    async fn begin(&mut self) -> Result<Transaction<'_>, tokio_postgres::Error> {
        let tx = self.client.transaction().await?;
        // The commit need not wait for the WAL flush: the checkpoint is in the same
        // transaction, so a batch lost in a database crash is lost with its
        // checkpoint, and the retried job writes it again.
        tx.batch_execute("SET LOCAL synchronous_commit = off").await?;
        Ok(tx)
    }
}

impl CopyWriter {
    /// The stored entities of `country` among `tax_ids`, by (country, tax ID),
    /// through [`stored_lookup`]; read outside the batch's transaction.
    pub async fn stored(
        &self,
        organization_id: &str,
        country: &str,
        tax_ids: &[String],
        into: &mut HashMap<(String, String), EntityRow>,
    ) -> Result<(), tokio_postgres::Error> {
        let lookup = self.client.prepare(&stored_lookup()).await?;
        for row in self
            .client
            .query(&lookup, &[&organization_id, &country, &tax_ids])
            .await?
        {
            let entity = EntityRow::from_pg(&row)?;
            into.insert((entity.country.clone(), entity.tax_id.clone()), entity);
        }
        Ok(())
    }

    /// Writes one batch and its checkpoint in one transaction and commits it. The
    /// checkpoint waits for `previous` (the batch before committed: `true`); `false`
    /// when that batch failed or the checkpoint did not apply (lease lost): then
    /// nothing is written.
    pub(crate) async fn write_batch(
        &mut self,
        rows: &[EntityView<'_>],
        problems: &[ImportErrorRow],
        end: &BatchEnd,
        previous: impl std::future::Future<Output = bool>,
    ) -> Result<bool, tokio_postgres::Error> {
        let tx = self.begin().await?;
        write(&tx, rows, problems).await?;
        if !previous.await || !checkpoint(&tx, end).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }
}

/// Writes the batch and its checkpoint; returns `false` when the lease was lost
/// (the caller rolls back).
async fn write(
    tx: &Transaction<'_>,
    rows: &[EntityView<'_>],
    problems: &[ImportErrorRow],
) -> Result<(), tokio_postgres::Error> {
    if !rows.is_empty() {
        let sink = tx
            .copy_in(&format!(
                "COPY import_stage ({ENTITY_COLUMNS}) FROM STDIN (FORMAT binary)"
            ))
            .await?;
        let mut writer = pin!(BinaryCopyInWriter::new(sink, ENTITY_COLUMN_TYPES));
        for r in rows {
            let values = r.pg_values();
            writer.as_mut().write(&values).await?;
        }
        writer.as_mut().finish().await?;
        let updates = ENTITY_COLUMN_NAMES
            .iter()
            .filter(|c| !KEPT_ON_UPDATE.contains(c))
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        tx.batch_execute(&format!(
            "INSERT INTO entities ({ENTITY_COLUMNS}) SELECT {ENTITY_COLUMNS} FROM import_stage \
             ON CONFLICT (organization_id, country, tax_id) DO UPDATE SET {updates}"
        ))
        .await?;
    }
    if !problems.is_empty() {
        let column = |f: fn(&ImportErrorRow) -> String| problems.iter().map(f).collect::<Vec<String>>();
        let lines: Vec<i64> = problems.iter().map(|p| p.line).collect();
        let seqs: Vec<i32> = problems.iter().map(|p| p.seq).collect();
        tx.execute(
            "INSERT INTO import_errors (job_id, line, seq, severity, column_name, code, message, raw_value, raw_record) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::int[], $4::text[], $5::text[], $6::text[], \
             $7::text[], $8::text[], $9::text[]) ON CONFLICT DO NOTHING",
            &[
                &column(|p| p.job_id.clone()),
                &lines,
                &seqs,
                &column(|p| p.severity.clone()),
                &column(|p| p.column_name.clone()),
                &column(|p| p.code.clone()),
                &column(|p| p.message.clone()),
                &column(|p| p.raw_value.clone()),
                &column(|p| p.raw_record.clone()),
            ],
        )
        .await?;
    }
    Ok(())
}

/// The lease-fenced checkpoint, applied only on top of the batch before; `false`
/// when it did not apply.
async fn checkpoint(tx: &Transaction<'_>, end: &BatchEnd) -> Result<bool, tokio_postgres::Error> {
    let fenced = tx
        .execute(
            CHECKPOINT,
            &[
                &end.rows_done,
                &end.result,
                &end.now,
                &end.job_id,
                &end.lease_id,
                &end.rows_before,
            ],
        )
        .await?;
    Ok(fenced > 0)
}
