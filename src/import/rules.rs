//! What the import decides about each row when it is written: its problems and
//! counters, its values as a new entity, its merge over a stored one. The import
//! sink ([`crate::db::import_sink`]) asks, in file order; how rows reach the
//! database is the sink's business.

use super::entity::{self, Prepared, Ready};
use super::row::RowIssue;
use super::spec::ImportResult;
use crate::db::entities::{EntityRow, EntityView};
use crate::db::import_errors::{self, ImportErrorRow};
use crate::db::import_sink::{ImportRules, Tally};

/// One import run's rules.
pub struct Rules {
    pub job_id: String,
    pub organization_id: String,
    /// The import's `skip_rules_execution`, written on every entity it touches
    /// whose row does not set its own.
    pub skip_rules: bool,
    /// `validate_only`: count what each row would do, write no entity.
    pub validate_only: bool,
    /// The running job, whose stop the sink checks before sending a batch.
    pub job: Option<crate::jobs::JobContext>,
}

impl ImportRules for Rules {
    type Row = Prepared;
    type Ready = Ready;
    type Tally = ImportResult;

    fn stopping(&self) -> bool {
        self.job.as_ref().is_some_and(|job| job.stop_reason().is_some())
    }

    fn organization_id(&self) -> &str {
        &self.organization_id
    }

    fn dry_run(&self) -> bool {
        self.validate_only
    }

    fn key(row: &Prepared) -> Option<(&str, &str)> {
        row.key()
    }

    fn settle(
        &self,
        row: Prepared,
        tally: &mut ImportResult,
        problems: &mut Vec<ImportErrorRow>,
    ) -> Option<Ready> {
        settle(row, tally, &self.job_id, problems)
    }

    fn ready_key(ready: &Ready) -> (&str, &str) {
        ready.key()
    }

    fn as_new<'a>(&'a self, ready: &'a Ready, now: i64) -> EntityView<'a> {
        ready.as_new(&self.organization_id, self.skip_rules, now)
    }

    fn merged(&self, ready: Ready, stored: &EntityRow, now: i64) -> Option<EntityRow> {
        entity::merge(ready, self.skip_rules, stored, now)
    }
}

impl Tally for ImportResult {
    fn created(&mut self) {
        self.created += 1;
    }

    fn updated(&mut self) {
        self.updated += 1;
    }

    fn unchanged(&mut self) {
        self.unchanged += 1;
    }
}

/// The rows recording `issues` of one CSV row, numbered from `first_seq` within
/// its line; `severity` is `import_errors::ERROR` or `WARNING`.
pub(super) fn problem_rows(
    job_id: &str,
    prepared: &Prepared,
    issues: &[RowIssue],
    first_seq: i32,
    severity: &str,
) -> Vec<ImportErrorRow> {
    let raw = serde_json::to_string(&prepared.raw).unwrap_or_else(|_| "[]".into());
    issues
        .iter()
        .enumerate()
        .map(|(i, issue)| ImportErrorRow {
            job_id: job_id.to_string(),
            line: prepared.line as i64,
            seq: first_seq + i as i32,
            severity: severity.to_string(),
            column_name: issue.column.clone(),
            code: issue.code.to_string(),
            message: issue.message.clone(),
            raw_value: issue.raw_value.clone(),
            raw_record: raw.clone(),
        })
        .collect()
}

/// Counts a row's problems and collects them; the row's values when it is valid.
fn settle(
    prepared: Prepared,
    counters: &mut ImportResult,
    job_id: &str,
    problems: &mut Vec<ImportErrorRow>,
) -> Option<Ready> {
    let mut seq = 0;
    if let Err(issues) = &prepared.outcome {
        counters.failed += 1;
        problems.extend(problem_rows(job_id, &prepared, issues, 0, import_errors::ERROR));
        seq = issues.len() as i32;
    }
    if !prepared.warnings.is_empty() {
        counters.warnings += prepared.warnings.len() as i64;
        problems.extend(problem_rows(
            job_id,
            &prepared,
            &prepared.warnings,
            seq,
            import_errors::WARNING,
        ));
    }
    prepared.outcome.ok()
}
