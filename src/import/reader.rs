//! Reading the stored upload (any format, [`super::table`]) on a blocking thread:
//! its header, then batches of prepared rows (the column contract applied) over a small channel, so reading
//! and writing overlap and memory stays flat.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::entity::{self, Prepared};
use super::layout::Layout;
use super::plan::Catalogue;
use super::spec::ImportSpec;
use super::table::{self, TableError};
use crate::jobs::JobError;

/// The header of the stored upload.
pub(super) async fn read_layout(upload: &Path, spec: &ImportSpec) -> Result<Layout, JobError> {
    let (path, format, column_map) = (upload.to_path_buf(), spec.format, spec.column_map.clone());
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(|e| JobError::Transient(e.to_string()))?;
        let invalid = |message: String| JobError::Permanent {
            reason: "INVALID_IMPORT_FILE".into(),
            message,
        };
        let header = table::read(format, std::io::BufReader::new(file), |table| table.header())
            .map_err(|e| match e {
                TableError::Refused(v) => invalid(v.message),
                TableError::Io(e) => JobError::Transient(e.to_string()),
            })?
            .ok_or_else(|| invalid("the stored file is empty".into()))?;
        Layout::from_header(header.line, &header.names, &column_map).map_err(|v| {
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

/// The stored upload and what reading it needs.
pub(super) struct Upload {
    pub path: PathBuf,
    pub layout: Layout,
    pub spec: ImportSpec,
    pub catalogue: Catalogue,
    /// Rows a batch holds (a transaction's worth).
    pub batch_rows: usize,
}

/// The upload's data rows after the first `skip`, in batches of prepared rows.
pub(super) fn read_batches(upload: &Arc<Upload>, skip: u64) -> Batches {
    let (sender, receiver) = mpsc::channel(2);
    let upload = upload.clone();
    let batch_rows = upload.batch_rows.max(1);
    let reader = tokio::task::spawn_blocking(move || {
        let (layout, spec, catalogue) = (&upload.layout, &upload.spec, &upload.catalogue);
        let file = std::fs::File::open(&upload.path).map_err(|e| e.to_string())?;
        table::read(spec.format, std::io::BufReader::new(file), |table| {
            table.header()?;
            let mut index = 0u64;
            let mut batch = Vec::with_capacity(batch_rows);
            while let Some(row) = table.next_row()? {
                index += 1;
                if index <= skip {
                    continue;
                }
                batch.push(entity::prepare(row, layout, spec, catalogue));
                // A closed channel means the job stopped: stop reading too.
                if batch.len() >= batch_rows && sender.blocking_send(std::mem::take(&mut batch)).is_err() {
                    return Ok(());
                }
            }
            if !batch.is_empty() {
                let _ = sender.blocking_send(batch);
            }
            Ok(())
        })
        .map_err(|e| e.to_string())
    });
    Batches {
        receiver,
        reader: Some(reader),
    }
}
