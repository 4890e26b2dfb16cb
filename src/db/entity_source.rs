//! The entities an export reads: every match of a filter in creation order, from
//! one snapshot, in batches, with the count of them read first. Each backend reads
//! its own fastest way, on a connection of its own (never a pooled one held for
//! the whole export):
//! - PostgreSQL: one streamed query on a dedicated tokio-postgres connection
//!   ([`super::export_rows`]); rows stay as the server sent them and are read in
//!   place ([`StoredEntity::view`]);
//! - SQLite: one statement stepped on a blocking thread (diesel-async's wrapper
//!   would buffer a whole stream), decoded into [`EntityRow`]s.

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::entities::{self, EntityFilter, EntityRow, EntityView};
use super::export_rows::{self, ExportReader, ViewError};
use super::{Conn, Db};

/// Batches buffered between the reader and the export.
const BUFFERED_BATCHES: usize = 2;

/// Reading failed (the database went away, or refused the query).
#[derive(Debug, thiserror::Error)]
#[error("reading entities failed: {0}")]
pub struct SourceError(String);

impl SourceError {
    fn of(err: impl std::fmt::Display) -> SourceError {
        SourceError(err.to_string())
    }
}

/// One entity as its backend delivered it.
pub struct StoredEntity(Stored);

#[expect(
    clippy::large_enum_variant,
    reason = "a batch holds one backend's rows; boxing would allocate once more per SQLite row"
)]
enum Stored {
    Row(EntityRow),
    Pg(tokio_postgres::Row),
}

impl StoredEntity {
    /// The entity's columns, borrowed.
    pub fn view(&self) -> Result<EntityView<'_>, ViewError> {
        match &self.0 {
            Stored::Row(row) => Ok(row.view()),
            Stored::Pg(row) => export_rows::view(row),
        }
    }

    pub fn into_row(self) -> Result<EntityRow, ViewError> {
        match self.0 {
            Stored::Row(row) => Ok(row),
            Stored::Pg(row) => Ok(export_rows::view(&row)?.to_row()),
        }
    }
}

type Batch = Result<Vec<StoredEntity>, SourceError>;

/// How long an export waits for its count before it streams: a small export
/// reports its total from its first progress, and a big one (counting two million
/// rows took 0.9–5.6 s) starts at once and learns the total on the way.
const TOTAL_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// The entities of one export, in batches; dropping it stops the read.
pub struct EntitySource {
    total: watch::Receiver<Option<i64>>,
    batches: mpsc::Receiver<Batch>,
    reader: JoinHandle<()>,
    counter: Option<JoinHandle<()>>,
}

impl Drop for EntitySource {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(counter) = &self.counter {
            counter.abort();
        }
    }
}

impl EntitySource {
    /// Starts reading the matches, `batch_rows` at a time, and counts them beside
    /// the read (on PostgreSQL; see [`TOTAL_WAIT`]).
    pub async fn open(
        db: &Db,
        organization_id: &str,
        filter: &EntityFilter,
        batch_rows: usize,
    ) -> Result<EntitySource, SourceError> {
        let batch_rows = batch_rows.max(1);
        let (sender, batches) = mpsc::channel(BUFFERED_BATCHES);
        let (organization_id, filter) = (organization_id.to_string(), filter.clone());
        let (total, reader, counter) = match db.backend() {
            super::Backend::Postgres => {
                let reader = ExportReader::connect(db.url()).await.map_err(SourceError::of)?;
                // The count runs beside the read, on a pooled connection of its own.
                let (known, total) = watch::channel(None);
                let (count_db, count_org, count_filter) =
                    (db.clone(), organization_id.clone(), filter.clone());
                let counter = tokio::spawn(async move {
                    let counted = async {
                        let mut conn = count_db.conn().await.map_err(SourceError::of)?;
                        entities::count(&mut conn, &count_org, &count_filter)
                            .await
                            .map_err(SourceError::of)
                    };
                    match counted.await {
                        Ok(rows) => {
                            let _ = known.send(Some(rows));
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "cannot count an export's rows; its progress shows no total")
                        }
                    }
                });
                let rows = match reader.rows(&organization_id, &filter).await {
                    Ok(rows) => rows,
                    Err(err) => {
                        counter.abort();
                        return Err(SourceError::of(err));
                    }
                };
                let task = tokio::spawn(async move {
                    // The connection lives as long as its stream.
                    let _reader = reader;
                    let mut chunks = std::pin::pin!(rows.chunks(batch_rows));
                    while let Some(chunk) = chunks.next().await {
                        let batch = chunk
                            .into_iter()
                            .map(|row| row.map(|r| StoredEntity(Stored::Pg(r))))
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(SourceError::of);
                        let failed = batch.is_err();
                        if sender.send(batch).await.is_err() || failed {
                            return;
                        }
                    }
                });
                let mut waiting = total.clone();
                let _ = tokio::time::timeout(TOTAL_WAIT, waiting.wait_for(Option::is_some)).await;
                (total, task, Some(counter))
            }
            super::Backend::Sqlite => {
                let mut conn = db.dedicated().await.map_err(SourceError::of)?;
                let total = entities::count(&mut conn, &organization_id, &filter)
                    .await
                    .map_err(SourceError::of)?;
                let task = tokio::spawn(read_sqlite(conn, organization_id, filter, batch_rows, sender));
                (watch::channel(Some(total)).1, task, None)
            }
        };
        Ok(EntitySource {
            total,
            batches,
            reader,
            counter,
        })
    }

    /// How many entities matched when the count ran; `None` while it runs.
    pub fn total(&self) -> Option<i64> {
        *self.total.borrow()
    }

    /// The total as it becomes known (`None` until the count ends).
    pub fn total_rows(&self) -> watch::Receiver<Option<i64>> {
        self.total.clone()
    }

    /// The next batch; `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Vec<StoredEntity>>, SourceError> {
        self.batches.recv().await.transpose()
    }
}

/// Steps one SQLite statement on a blocking thread, sending batches until the
/// export stops listening.
async fn read_sqlite(
    mut conn: Conn,
    organization_id: String,
    filter: EntityFilter,
    batch_rows: usize,
    sender: mpsc::Sender<Batch>,
) {
    let Conn::Sqlite(sqlite) = &mut conn else {
        return;
    };
    let rows = sender.clone();
    let read = sqlite
        .spawn_blocking(move |c| {
            let mut batch = Vec::with_capacity(batch_rows);
            entities::each_in_creation_order_sqlite(c, &organization_id, &filter, |row| {
                batch.push(StoredEntity(Stored::Row(row)));
                if batch.len() < batch_rows {
                    return true;
                }
                // A closed channel means the export stopped: stop reading too.
                rows.blocking_send(Ok(std::mem::take(&mut batch))).is_ok()
            })?;
            if !batch.is_empty() {
                let _ = rows.blocking_send(Ok(batch));
            }
            Ok(())
        })
        .await;
    if let Err(err) = read {
        let _ = sender.send(Err(SourceError::of(err))).await;
    }
}
