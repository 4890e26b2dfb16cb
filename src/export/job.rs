//! The export job: reads the entities in keyset-ordered batches, streams them
//! through the format writer (on a blocking thread) into a local temp file, then
//! stores the file (multipart on S3). Memory stays flat: one batch in flight plus
//! the channel's few batches.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::columns::{self, Cell};
use super::format::file_name_and_type;
use super::spec::ExportSpec;
use super::writer::{self, WriterOptions};
use crate::db::Conn;
use crate::db::entities::{self, EntityRow};
use crate::db::now_ms;
use crate::jobs::{JobContext, JobError, JobHandler, JobOutcome};
use crate::storage::Storage;

/// Batches buffered between the reader and the writer thread.
const CHANNEL_BATCHES: usize = 4;

/// What a completed export leaves on its job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportResult {
    pub object_key: String,
    pub file_name: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
    pub row_count: u64,
}

#[derive(Clone)]
pub struct ExportJob {
    pub storage: Storage,
    pub temp_dir: PathBuf,
    pub retention_ms: i64,
    /// Entities read per query.
    pub batch_rows: i64,
    /// Pause between batches.
    pub batch_pause: std::time::Duration,
}

impl JobHandler for ExportJob {
    fn kind(&self) -> &'static str {
        super::KIND
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Result<JobOutcome, JobError>> {
        let job = self.clone();
        Box::pin(async move { job.export(ctx).await })
    }

    /// A failed export with delivery settings sends its recipients a short notice.
    fn on_failure(&self, job: &crate::db::jobs::JobRow) -> Option<crate::jobs::NewJob> {
        super::email_job::follow_up(job)
    }
}

/// The stem of export file names: `entities-<job id>`.
pub fn file_stem(job_id: &str) -> String {
    format!("entities-{job_id}")
}

impl ExportJob {
    async fn export(&self, ctx: JobContext) -> Result<JobOutcome, JobError> {
        let spec: ExportSpec = serde_json::from_str(&ctx.job().payload).map_err(|e| JobError::Permanent {
            reason: "INVALID_PAYLOAD".into(),
            message: format!("the export's stored request cannot be read: {e}"),
        })?;
        tokio::fs::create_dir_all(&self.temp_dir)
            .await
            .map_err(|e| JobError::Transient(format!("cannot create {}: {e}", self.temp_dir.display())))?;
        let temp = self
            .temp_dir
            .join(format!("{}-{}.part", ctx.job().id, ctx.job().attempts));
        let result = self.write_and_store(&ctx, &spec, &temp).await;
        // The temp file goes whatever happened (cancelled, failed or stored).
        let _ = tokio::fs::remove_file(&temp).await;
        result
    }

    async fn write_and_store(
        &self,
        ctx: &JobContext,
        spec: &ExportSpec,
        temp: &Path,
    ) -> Result<JobOutcome, JobError> {
        let job = ctx.job().clone();
        let (file_name, content_type) =
            file_name_and_type(spec.format, spec.compression, &file_stem(&job.id));
        let started = std::time::Instant::now();
        let (row_count, entities_done) = self.write_rows(ctx, spec, temp).await?;
        let written = started.elapsed();
        ctx.check()?;
        let (size, sha256) = hash_file(temp.to_path_buf()).await?;
        let hashed = started.elapsed();
        let object_key = format!("exports/{}/{}/{}", job.organization_id, job.id, file_name);
        self.storage
            .put_file(&object_key, temp, content_type)
            .await
            .map_err(|e| JobError::Transient(e.to_string()))?;
        tracing::info!(
            rows = row_count,
            bytes = size,
            write_ms = written.as_millis() as u64,
            hash_ms = (hashed - written).as_millis() as u64,
            store_ms = (started.elapsed() - hashed).as_millis() as u64,
            "export file stored"
        );
        // Cancelled or deleted while uploading: leave nothing behind.
        if let Err(stop) = ctx.check() {
            let _ = self.storage.delete(&object_key).await;
            return Err(stop);
        }
        ctx.progress(entities_done, Some(entities_done), size as i64, true)
            .await
            .inspect_err(|_| {
                let storage = self.storage.clone();
                let key = object_key.clone();
                tokio::spawn(async move { storage.delete(&key).await });
            })?;
        let result = ExportResult {
            object_key,
            file_name,
            content_type: content_type.to_string(),
            size,
            sha256,
            row_count,
        };
        Ok(JobOutcome {
            result: serde_json::to_value(&result).ok(),
            expires_at: Some(now_ms() + self.retention_ms),
            follow_up: super::email_job::follow_up(&job),
        })
    }

    /// Streams the matching entities through the writer into `temp`; returns the
    /// number of rows written (after `expand_array`) and of entities read.
    async fn write_rows(
        &self,
        ctx: &JobContext,
        spec: &ExportSpec,
        temp: &Path,
    ) -> Result<(u64, i64), JobError> {
        let job = ctx.job();
        let mut conn = ctx.db().conn().await?;
        let total = entities::count(&mut conn, &job.organization_id, &spec.filter).await?;
        ctx.progress(0, Some(total), 0, true).await?;

        let (sender, mut receiver) = mpsc::channel::<Vec<Vec<Cell>>>(CHANNEL_BATCHES);
        let bytes = Arc::new(AtomicU64::new(0));
        let options = WriterOptions {
            format: spec.format,
            compression: spec.compression,
            csv_bom: spec.csv_bom,
            neutralize_formulas: spec.neutralize_formulas,
        };
        let columns = spec.columns.clone();
        let path = temp.to_path_buf();
        let counter = bytes.clone();
        let writer = tokio::task::spawn_blocking(move || {
            writer::write_file(&options, &columns, &mut receiver, &path, counter)
        });
        let mut feed = Feed {
            ctx,
            spec,
            sender,
            bytes,
            total,
            done: 0,
            pause: self.batch_pause,
        };
        let read_result = self.read_into(&mut conn, &mut feed).await;
        let done = feed.done;
        drop(feed);
        let written = writer
            .await
            .map_err(|e| JobError::Transient(format!("the writer thread failed: {e}")))?;
        read_result?;
        let written = written.map_err(|e| match e {
            // Disk trouble may pass; a value the format cannot hold will not.
            writer::WriteError::Io(_) => JobError::Transient(e.to_string()),
            writer::WriteError::Encode { .. } => JobError::Permanent {
                reason: "EXPORT_ENCODING_FAILED".into(),
                message: e.to_string(),
            },
        })?;
        Ok((written, done))
    }

    /// Reads every matching entity in creation order into `feed` with one query and
    /// one snapshot: streamed by tokio-postgres on PostgreSQL; on SQLite stepped on a
    /// blocking thread (its async wrapper would buffer a whole stream).
    async fn read_into(&self, conn: &mut Conn, feed: &mut Feed<'_>) -> Result<(), JobError> {
        let organization_id = feed.ctx.job().organization_id.clone();
        let filter = &feed.spec.filter;
        if let Conn::Pg(pg) = conn {
            let filter = filter.clone();
            let stream = entities::stream_in_creation_order(pg, &organization_id, &filter).await?;
            let mut chunks = std::pin::pin!(stream.chunks(self.batch_rows as usize));
            while let Some(chunk) = chunks.next().await {
                let batch = chunk.into_iter().collect::<Result<Vec<_>, _>>()?;
                if !feed.push(batch).await? {
                    break;
                }
            }
            return Ok(());
        }
        // SQLite: one statement stepped on a blocking thread, batches over a channel.
        let Conn::Sqlite(sqlite) = conn else { return Ok(()) };
        let (sender, mut batches) = mpsc::channel::<Vec<EntityRow>>(2);
        let (filter, batch_rows) = (filter.clone(), self.batch_rows as usize);
        let reading = sqlite.spawn_blocking(move |c| {
            let mut batch = Vec::with_capacity(batch_rows);
            entities::each_in_creation_order_sqlite(c, &organization_id, &filter, |row| {
                batch.push(row);
                if batch.len() < batch_rows {
                    return true;
                }
                // A closed channel means the export stopped: stop reading too.
                sender.blocking_send(std::mem::take(&mut batch)).is_ok()
            })?;
            if !batch.is_empty() {
                let _ = sender.blocking_send(batch);
            }
            Ok(())
        });
        let consume = async {
            let mut result = Ok(());
            while let Some(batch) = batches.recv().await {
                match feed.push(batch).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(err) => {
                        result = Err(err);
                        break;
                    }
                }
            }
            // The reader sees the closed channel and stops, whatever ended the loop.
            batches.close();
            result
        };
        let (read, consumed) = tokio::join!(reading, consume);
        consumed?;
        read?;
        Ok(())
    }
}

/// Turns entity batches into rows for the writer thread, reporting progress and
/// honouring cancellation and the pause between batches.
struct Feed<'a> {
    ctx: &'a JobContext,
    spec: &'a ExportSpec,
    sender: mpsc::Sender<Vec<Vec<Cell>>>,
    bytes: Arc<AtomicU64>,
    total: i64,
    done: i64,
    pause: std::time::Duration,
}

impl Feed<'_> {
    /// Sends one batch; `Ok(false)` when the writer stopped (its error is reported
    /// by the caller).
    async fn push(&mut self, batch: Vec<EntityRow>) -> Result<bool, JobError> {
        self.ctx.check()?;
        self.done += batch.len() as i64;
        let mut rows = Vec::with_capacity(batch.len());
        for entity in batch {
            columns::expand(
                columns::cells(entity, &self.spec.columns),
                self.spec.expand_array,
                &mut rows,
            );
        }
        if self.sender.send(rows).await.is_err() {
            return Ok(false);
        }
        let bytes = self.bytes.load(Ordering::Relaxed) as i64;
        self.ctx
            .progress(self.done, Some(self.total.max(self.done)), bytes, false)
            .await?;
        if !self.pause.is_zero() {
            tokio::select! {
                _ = self.ctx.stopped() => {}
                _ = tokio::time::sleep(self.pause) => {}
            }
        }
        Ok(true)
    }
}

/// Size and SHA-256 of a file, read in a blocking thread.
async fn hash_file(path: PathBuf) -> Result<(u64, String), JobError> {
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        let size = std::io::copy(&mut file, &mut hasher)?;
        Ok::<_, std::io::Error>((size, hex::encode(hasher.finalize())))
    })
    .await
    .map_err(|e| JobError::Transient(e.to_string()))?
    .map_err(|e| JobError::Transient(format!("cannot read the export file: {e}")))
}
