//! The export job: reads the matching entities in creation order
//! ([`EntitySource`], each backend its own way), streams them through the format
//! writer (on a blocking thread) into a local temp file, then stores the file
//! (multipart on S3). Memory stays flat: a few batches in flight.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use super::columns::{self, Cell};
use super::format::file_name_and_type;
use super::spec::{Export, ExportResult, ExportSpec};
use super::writer::file_sink::{file_size, hash_file};
use super::writer::{self, WriterOptions};
use crate::db::entity_source::{EntitySource, StoredEntity};
use crate::db::now_ms;
use crate::jobs::{Job, JobContext, JobError, NewJob, Outcome, RunJob};
use crate::storage::Storage;

/// Batches buffered between the reader and the writer thread.
const CHANNEL_BATCHES: usize = 4;

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

impl RunJob for ExportJob {
    type Kind = Export;

    async fn run(&self, job: Job<Export>, ctx: JobContext) -> Result<Outcome<ExportResult>, JobError> {
        self.export(&job.spec, ctx).await
    }

    /// A failed export with delivery settings sends its recipients a short notice.
    fn on_failure(&self, job: &Job<Export>) -> Option<NewJob> {
        super::notice::follow_up(job)
    }
}

/// The stem of export file names: `entities-<job id>`.
pub fn file_stem(job_id: &str) -> String {
    format!("entities-{job_id}")
}

impl ExportJob {
    async fn export(&self, spec: &ExportSpec, ctx: JobContext) -> Result<Outcome<ExportResult>, JobError> {
        tokio::fs::create_dir_all(&self.temp_dir)
            .await
            .map_err(|e| JobError::Transient(format!("cannot create {}: {e}", self.temp_dir.display())))?;
        let temp = self
            .temp_dir
            .join(format!("{}-{}.part", ctx.job().id, ctx.job().attempts));
        let result = self.write_and_store(&ctx, spec, &temp).await;
        // The temp file goes whatever happened (cancelled, failed or stored).
        let _ = tokio::fs::remove_file(&temp).await;
        result
    }

    async fn write_and_store(
        &self,
        ctx: &JobContext,
        spec: &ExportSpec,
        temp: &Path,
    ) -> Result<Outcome<ExportResult>, JobError> {
        let job = ctx.job().clone();
        let (file_name, content_type) =
            file_name_and_type(spec.format, spec.compression, &file_stem(&job.id));
        let started = std::time::Instant::now();
        let (written, entities_done) = self.write_rows(ctx, spec, temp).await?;
        let row_count = written.rows;
        let write_time = started.elapsed();
        ctx.check()?;
        let (size, sha256) = match written.sha256 {
            Some(sha256) => (file_size(temp).await.map_err(unreadable)?, sha256),
            None => hash_file(temp.to_path_buf()).await.map_err(unreadable)?,
        };
        let hashed = started.elapsed();
        let object_key = format!("exports/{}/{}/{}", job.organization_id, job.id, file_name);
        self.storage.put_file(&object_key, temp, content_type).await?;
        tracing::info!(
            rows = row_count,
            bytes = size,
            write_ms = write_time.as_millis() as u64,
            hash_ms = (hashed - write_time).as_millis() as u64,
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
        Ok(Outcome {
            output: Some(result),
            expires_at: Some(now_ms() + self.retention_ms),
            follow_up: spec
                .delivery
                .is_some()
                .then(|| crate::notifications::follow_up(&job)),
        })
    }

    /// Streams the matching entities through the writer into `temp`; returns what
    /// the writer wrote (rows after `expand_array`) and the number of entities read.
    /// CSV and Parquet writers read each entity where it lies; the other formats
    /// (and `expand_array`) get cells.
    async fn write_rows(
        &self,
        ctx: &JobContext,
        spec: &ExportSpec,
        temp: &Path,
    ) -> Result<(writer::Written, i64), JobError> {
        let organization_id = &ctx.job().organization_id;
        let mut source =
            EntitySource::open(ctx.db(), organization_id, &spec.filter, self.batch_rows as usize)
                .await
                .map_err(read_error)?;
        let total = source.total_rows();
        ctx.progress(0, source.total(), 0, true).await?;
        let options = WriterOptions::of(spec);
        let columns = spec.columns.clone();
        if writer::reads_records(spec.format) && spec.expand_array.is_none() {
            let (mut feed, writer) = self.start_writer(ctx, spec, temp, total, {
                move |rows: &mut mpsc::Receiver<Vec<StoredEntity>>, path, counter| {
                    writer::write_records(&options, &columns, rows, path, counter)
                }
            });
            let read = feed.pump(&mut source, |_, batch| Ok(batch)).await;
            return finish_writer(feed, writer, read).await;
        }
        let (mut feed, writer) = self.start_writer(ctx, spec, temp, total, {
            move |rows: &mut mpsc::Receiver<Vec<Vec<Cell>>>, path, counter| {
                writer::write_file(&options, &columns, rows, path, counter)
            }
        });
        let read = feed.pump(&mut source, entity_cells).await;
        finish_writer(feed, writer, read).await
    }

    /// Starts the writer thread on a channel of row batches.
    fn start_writer<'a, R: Send + 'static>(
        &self,
        ctx: &'a JobContext,
        spec: &'a ExportSpec,
        temp: &Path,
        total: tokio::sync::watch::Receiver<Option<i64>>,
        write: impl FnOnce(
            &mut mpsc::Receiver<Vec<R>>,
            &Path,
            Arc<AtomicU64>,
        ) -> Result<writer::Written, writer::WriteError>
        + Send
        + 'static,
    ) -> (Feed<'a, R>, WriterThread) {
        let (sender, mut receiver) = mpsc::channel::<Vec<R>>(CHANNEL_BATCHES);
        let bytes = Arc::new(AtomicU64::new(0));
        let path = temp.to_path_buf();
        let counter = bytes.clone();
        let writer = tokio::task::spawn_blocking(move || write(&mut receiver, &path, counter));
        let feed = Feed {
            ctx,
            spec,
            sender,
            bytes,
            total,
            done: 0,
            pause: self.batch_pause,
        };
        (feed, writer)
    }
}

type WriterThread = tokio::task::JoinHandle<Result<writer::Written, writer::WriteError>>;

/// Ends the writer (the feed's channel closes) and returns what it wrote and the
/// entities read; a read error wins over what the writer says about the cut input.
async fn finish_writer<R>(
    feed: Feed<'_, R>,
    writer: WriterThread,
    read: Result<(), JobError>,
) -> Result<(writer::Written, i64), JobError> {
    let done = feed.done;
    drop(feed);
    let written = writer
        .await
        .map_err(|e| JobError::Transient(format!("the writer thread failed: {e}")))?;
    read?;
    let written = written.map_err(|e| match e {
        // A full disk fails now, named (retries seconds apart would not free it);
        // other disk trouble may pass; a value the format cannot hold will not.
        writer::WriteError::Io(ref io) if crate::storage::is_full(io) => JobError::Permanent {
            reason: "STORAGE_FULL".into(),
            message: format!("no space left for the export's temp file (server.data_dir): {e}"),
        },
        writer::WriteError::Io(_) => JobError::Transient(e.to_string()),
        writer::WriteError::Encode { .. } => JobError::Permanent {
            reason: "EXPORT_ENCODING_FAILED".into(),
            message: e.to_string(),
        },
    })?;
    Ok((written, done))
}

/// The finished file could not be read back (disk trouble may pass).
fn unreadable(err: std::io::Error) -> JobError {
    JobError::Transient(format!("cannot read the export file: {err}"))
}

/// A lost or refused database connection may pass: the queue retries the export.
fn read_error(err: impl std::fmt::Display) -> JobError {
    JobError::Transient(err.to_string())
}

/// The cells of each entity, `expand_array` applied.
fn entity_cells(spec: &ExportSpec, batch: Vec<StoredEntity>) -> Result<Vec<Vec<Cell>>, JobError> {
    let mut rows = Vec::with_capacity(batch.len());
    for entity in batch {
        let entity = entity.into_row().map_err(read_error)?;
        columns::expand(
            columns::cells(entity, &spec.columns),
            spec.expand_array,
            &mut rows,
        );
    }
    Ok(rows)
}

/// Hands row batches to the writer thread, reporting progress and honouring
/// cancellation and the pause between batches.
struct Feed<'a, R> {
    ctx: &'a JobContext,
    spec: &'a ExportSpec,
    sender: mpsc::Sender<Vec<R>>,
    bytes: Arc<AtomicU64>,
    /// The source's count, once known.
    total: tokio::sync::watch::Receiver<Option<i64>>,
    done: i64,
    pause: std::time::Duration,
}

impl<R> Feed<'_, R> {
    /// Moves every batch of `source` to the writer; `convert` turns a batch of
    /// entities into the writer's rows.
    async fn pump(
        &mut self,
        source: &mut EntitySource,
        convert: fn(&ExportSpec, Vec<StoredEntity>) -> Result<Vec<R>, JobError>,
    ) -> Result<(), JobError> {
        while let Some(batch) = source.next().await.map_err(read_error)? {
            let entities = batch.len() as i64;
            if !self.push(convert(self.spec, batch)?, entities).await? {
                break;
            }
        }
        Ok(())
    }

    /// Sends one batch made of `entities` entities; `Ok(false)` when the writer
    /// stopped (its error is reported by the caller).
    async fn push(&mut self, rows: Vec<R>, entities: i64) -> Result<bool, JobError> {
        self.ctx.check()?;
        self.done += entities;
        if self.sender.send(rows).await.is_err() {
            return Ok(false);
        }
        let bytes = self.bytes.load(Ordering::Relaxed) as i64;
        let total = (*self.total.borrow()).map(|total| total.max(self.done));
        self.ctx.progress(self.done, total, bytes, false).await?;
        if !self.pause.is_zero() {
            tokio::select! {
                _ = self.ctx.stopped() => {}
                _ = tokio::time::sleep(self.pause) => {}
            }
        }
        Ok(true)
    }
}
