//! The error report: the failed rows with their original columns plus
//! `error_line`, `error_column`, `error_code`, `error_message`. The importer ignores
//! those four columns, so a fixed report can be uploaded again as is.

use std::path::Path;

use super::headers::{REPORT_COLUMNS, Target};
use super::layout::Layout;
use crate::db::import_errors::{self, ImportErrorRow};
use crate::db::jobs::JobRow;
use crate::jobs::{JobContext, JobError};
use crate::storage::Storage;

/// Problems read per query while writing the report.
const PAGE: i64 = 1_000;

/// Where a job's report is stored.
pub fn object_key(job: &JobRow) -> String {
    format!("imports/{}/{}/errors.csv", job.organization_id, job.id)
}

/// The name a downloaded report gets.
pub fn file_name(job_id: &str) -> String {
    format!("import-{job_id}-errors.csv")
}

fn io(e: impl std::fmt::Display) -> JobError {
    JobError::Transient(format!("cannot write the error report: {e}"))
}

/// One report line per failed row: its problems joined with `; `.
fn write_row(
    writer: &mut csv::Writer<std::fs::File>,
    layout: &Layout,
    problems: &[ImportErrorRow],
) -> Result<(), JobError> {
    let Some(first) = problems.first() else {
        return Ok(());
    };
    let raw: Vec<String> = serde_json::from_str(&first.raw_record).unwrap_or_default();
    let mut record: Vec<String> = layout
        .targets
        .iter()
        .enumerate()
        .filter(|(_, t)| **t != Target::Ignored)
        .map(|(i, _)| raw.get(i).cloned().unwrap_or_default())
        .collect();
    let join = |f: fn(&ImportErrorRow) -> &str| problems.iter().map(f).collect::<Vec<_>>().join("; ");
    record.push(first.line.to_string());
    record.push(join(|p| p.column_name.as_str()));
    record.push(join(|p| p.code.as_str()));
    record.push(join(|p| p.message.as_str()));
    writer.write_record(&record).map_err(io)
}

/// Writes the report of the job's failed rows to `temp` and stores it; returns the
/// key, size and number of rows.
pub async fn store(
    ctx: &JobContext,
    storage: &Storage,
    layout: &Layout,
    temp: &Path,
) -> Result<(String, u64, i64), JobError> {
    let job = ctx.job();
    let mut writer = csv::Writer::from_path(temp).map_err(io)?;
    let mut header: Vec<&str> = layout
        .headers
        .iter()
        .zip(&layout.targets)
        .filter(|(_, t)| **t != Target::Ignored)
        .map(|(h, _)| h.as_str())
        .collect();
    header.extend(REPORT_COLUMNS);
    writer.write_record(&header).map_err(io)?;
    let mut conn = ctx.db().conn().await?;
    let mut after = None;
    let mut pending: Vec<ImportErrorRow> = Vec::new();
    let mut rows = 0;
    loop {
        let page = import_errors::page(&mut conn, &job.id, after, true, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.line, last.seq));
        for problem in page {
            if pending.first().is_some_and(|p| p.line != problem.line) {
                write_row(&mut writer, layout, &pending)?;
                rows += 1;
                pending.clear();
            }
            pending.push(problem);
        }
    }
    // Not held while the report is stored.
    drop(conn);
    if !pending.is_empty() {
        write_row(&mut writer, layout, &pending)?;
        rows += 1;
    }
    writer.flush().map_err(io)?;
    drop(writer);
    let key = object_key(job);
    let size = storage.put_file(&key, temp, "text/csv").await?;
    Ok((key, size, rows))
}
