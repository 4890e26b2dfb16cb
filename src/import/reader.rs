//! Reading the stored upload on a blocking thread: its header row, then batches of
//! prepared rows (the column contract applied) over a small channel, so reading
//! and writing overlap and memory stays flat.

use std::path::Path;

use tokio::sync::mpsc;

use super::csv_file::{self, Layout};
use super::entity::{self, Prepared};
use super::plan::Catalogue;
use super::spec::ImportSpec;
use crate::jobs::JobError;

/// The header row of the stored upload.
pub(super) async fn read_layout(upload: &Path, spec: &ImportSpec) -> Result<Layout, JobError> {
    let (path, column_map) = (upload.to_path_buf(), spec.column_map.clone());
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(|e| JobError::Transient(e.to_string()))?;
        let mut reader = csv_file::reader(file);
        let mut record = csv::ByteRecord::new();
        let read = reader
            .read_byte_record(&mut record)
            .map_err(|e| JobError::Transient(e.to_string()))?;
        let invalid = |message: String| JobError::Permanent {
            reason: "INVALID_IMPORT_FILE".into(),
            message,
        };
        if !read {
            return Err(invalid("the stored file is empty".into()));
        }
        Layout::from_header(&record, &column_map).map_err(|v| {
            invalid(
                v.first()
                    .map(|v| v.message.clone())
                    .unwrap_or_else(|| "the header row cannot be read".into()),
            )
        })
    })
    .await
    .map_err(|e| JobError::Transient(e.to_string()))?
}

/// Batches of prepared rows from a blocking reader thread.
pub(super) struct Batches {
    receiver: mpsc::Receiver<Vec<Prepared>>,
    reader: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

impl Batches {
    /// The next batch; `None` at the end of the file. A read error fails the run
    /// (transient: the stored file did pass pre-flight).
    pub(super) async fn next(&mut self) -> Result<Option<Vec<Prepared>>, JobError> {
        if let Some(batch) = self.receiver.recv().await {
            return Ok(Some(batch));
        }
        if let Some(reader) = self.reader.take() {
            reader
                .await
                .map_err(|e| JobError::Transient(e.to_string()))?
                .map_err(JobError::Transient)?;
        }
        Ok(None)
    }
}

pub(super) fn read_batches(
    upload: &Path,
    layout: &Layout,
    spec: &ImportSpec,
    catalogue: &Catalogue,
    skip: u64,
    batch_rows: usize,
) -> Batches {
    let (sender, receiver) = mpsc::channel(2);
    let (path, layout, spec, catalogue) = (
        upload.to_path_buf(),
        layout.clone(),
        spec.clone(),
        catalogue.clone(),
    );
    let batch_rows = batch_rows.max(1);
    let reader = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
        let mut reader = csv_file::reader(std::io::BufReader::new(file));
        let mut record = csv::ByteRecord::new();
        // The header row.
        reader.read_byte_record(&mut record).map_err(|e| e.to_string())?;
        let mut index = 0u64;
        let mut batch = Vec::with_capacity(batch_rows);
        while reader.read_byte_record(&mut record).map_err(|e| e.to_string())? {
            if csv_file::is_blank(&record) {
                continue;
            }
            index += 1;
            if index <= skip {
                continue;
            }
            batch.push(entity::prepare(&record, &layout, &spec, &catalogue));
            // A closed channel means the job stopped: stop reading too.
            if batch.len() >= batch_rows && sender.blocking_send(std::mem::take(&mut batch)).is_err() {
                return Ok(());
            }
        }
        if !batch.is_empty() {
            let _ = sender.blocking_send(batch);
        }
        Ok(())
    });
    Batches {
        receiver,
        reader: Some(reader),
    }
}
