//! What the client prints: aligned tables for people, JSON for scripts, and errors
//! with their reason and violations (never a debug dump).
//!
//! JSON is the proto3 JSON mapping of the message, made from the compiled descriptor
//! set (the names grpcurl prints), with every field present (zeros included) and
//! 64-bit counts as numbers.

use std::io::Write;

use tonic_types::StatusExt;

use super::ClientError;
use crate::proto;
pub use crate::proto::{Described, to_json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// An enum value's name without its type prefix (`JOB_STATE_COMPLETED` →
/// `COMPLETED`).
pub fn short(name: &'static str, prefix: &str) -> &'static str {
    name.strip_prefix(prefix).unwrap_or(name)
}

pub fn job_state(value: i32) -> &'static str {
    proto::JobState::try_from(value)
        .map(|state| short(state.as_str_name(), "JOB_STATE_"))
        .unwrap_or("UNKNOWN")
}

/// `500 / 1000` rows done (or `500` while the total is unknown).
pub fn rows(progress: Option<&proto::Progress>) -> String {
    match progress {
        Some(progress) => match progress.rows_total {
            Some(total) => format!("{} / {}", progress.rows_done, total),
            None => progress.rows_done.to_string(),
        },
        None => String::new(),
    }
}

pub fn time(timestamp: &Option<prost_types::Timestamp>) -> String {
    timestamp.as_ref().map(ToString::to_string).unwrap_or_default()
}

/// Prints a line to stdout; a closed pipe (`| head`) ends the output quietly.
fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

/// Columns padded to their widest cell (by characters), two spaces apart.
pub fn aligned(headers: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let render = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut text = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            text.push_str(&cell);
            if i < last {
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(cell.chars().count());
                text.push_str(&" ".repeat(pad + 2));
            }
        }
        text
    };
    std::iter::once(render(headers.iter().map(|h| h.to_string()).collect()))
        .chain(rows.iter().cloned().map(render))
        .collect()
}

impl Output {
    /// One message: `name  value` lines, or one JSON object.
    pub fn one<M: Described>(&self, message: &M, fields: Vec<(&str, String)>) {
        match self {
            Output::Json => line(&to_json(message).to_string()),
            Output::Table => {
                let width = fields.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
                for (name, value) in fields.into_iter().filter(|(_, value)| !value.is_empty()) {
                    line(&format!("{name:width$}  {value}"));
                }
            }
        }
    }

    /// Several messages: a table with a header row, or one JSON object per line.
    pub fn list<M: Described>(&self, items: &[M], headers: &[&str], row: impl Fn(&M) -> Vec<String>) {
        match self {
            Output::Json => items.iter().for_each(|item| line(&to_json(item).to_string())),
            Output::Table => {
                let rows: Vec<Vec<String>> = items.iter().map(row).collect();
                aligned(headers, &rows).iter().for_each(|text| line(text));
            }
        }
    }

    /// A plain confirmation (`deleted …`): a line for people, `{"id": …}` for scripts.
    pub fn done(&self, what: &str, id: &str) {
        match self {
            Output::Json => line(&serde_json::json!({ "id": id, "result": what }).to_string()),
            Output::Table => line(&format!("{what} {id}")),
        }
    }

    pub fn caller(&self, caller: &proto::Caller) {
        self.one(
            caller,
            vec![
                (
                    "organization",
                    format!("{} ({})", caller.organization_name, caller.organization_id),
                ),
                ("plan", caller.plan.clone()),
                ("features", caller.features.join(", ")),
                ("key", caller.key_id.clone()),
                ("permissions", caller.permissions.join(", ")),
                ("import rows", caller.import_row_limit.to_string()),
            ],
        );
    }

    /// Prints why a command stopped, to stderr: status, reason and message on the
    /// first line, then each field violation, metadata entry and the request id on
    /// lines of their own. With `--output json`, one JSON object.
    pub fn error(&self, err: &ClientError) {
        let report = ErrorReport::of(err);
        let mut out = std::io::stderr().lock();
        let _ = match self {
            Output::Json => writeln!(out, "{}", serde_json::json!({ "error": report })),
            Output::Table => writeln!(out, "{}", report.text()),
        };
    }
}

/// An error as the client shows it.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorReport {
    /// gRPC code name (`INVALID_ARGUMENT`), empty for local errors.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub code: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metadata: std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<f64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub request_id: String,
}

#[derive(Debug, serde::Serialize)]
pub struct Violation {
    pub field: String,
    pub description: String,
}

impl ErrorReport {
    pub fn of(err: &ClientError) -> ErrorReport {
        let mut report = ErrorReport {
            code: String::new(),
            reason: String::new(),
            message: err.to_string(),
            violations: Vec::new(),
            metadata: Default::default(),
            retry_after_secs: None,
            request_id: String::new(),
        };
        if let ClientError::Call(status) = err {
            report.code = crate::proto::code_name(status.code()).to_string();
            let details = status.get_error_details();
            if let Some(info) = details.error_info() {
                report.reason = info.reason.clone();
                report.metadata = info.metadata.clone().into_iter().collect();
            }
            if let Some(bad) = details.bad_request() {
                report.violations = bad
                    .field_violations
                    .iter()
                    .map(|v| Violation {
                        field: v.field.clone(),
                        description: v.description.clone(),
                    })
                    .collect();
            }
            if let Some(request) = details.request_info() {
                report.request_id = request.request_id.clone();
            }
            report.retry_after_secs = details
                .retry_info()
                .and_then(|retry| retry.retry_delay)
                .map(|delay| delay.as_secs_f64());
        }
        report
    }

    /// `error: INVALID_ARGUMENT MISSING_COUNTRY: message`, then indented lines.
    pub fn text(&self) -> String {
        let mut head = String::from("error:");
        for part in [&self.code, &self.reason] {
            if !part.is_empty() {
                head.push(' ');
                head.push_str(part);
            }
        }
        let mut lines = vec![if head == "error:" {
            format!("error: {}", self.message)
        } else {
            format!("{head}: {}", self.message)
        }];
        lines.extend(
            self.violations
                .iter()
                .map(|v| format!("  {}: {}", v.field, v.description)),
        );
        lines.extend(
            self.metadata
                .iter()
                .map(|(key, value)| format!("  {key}: {value}")),
        );
        if let Some(secs) = self.retry_after_secs {
            lines.push(format!("  retry after: {secs:.1} s"));
        }
        if !self.request_id.is_empty() {
            lines.push(format!("  request id: {}", self.request_id));
        }
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_to_the_widest_cell() {
        let lines = aligned(
            &["ID", "STATE"],
            &[
                vec!["a".into(), "QUEUED".into()],
                vec!["long-id".into(), "x".into()],
            ],
        );
        assert_eq!(lines, vec!["ID       STATE", "a        QUEUED", "long-id  x"]);
    }

    #[test]
    fn json_uses_proto_names_and_keeps_zero_counts() {
        let import = proto::Import {
            id: "i1".into(),
            state: proto::JobState::Completed as i32,
            total_items: 3,
            ..Default::default()
        };
        let json = to_json(&import);
        assert_eq!(json["id"], "i1");
        assert_eq!(json["state"], "JOB_STATE_COMPLETED");
        assert_eq!(json["totalItems"], 3);
        assert_eq!(json["failedItems"], 0);
    }

    #[test]
    fn a_call_error_shows_its_reason_and_each_violation_on_a_line() {
        let mut details = tonic_types::ErrorDetails::new();
        details.set_error_info("MISSING_COUNTRY", "ferry", std::collections::HashMap::new());
        details.add_bad_request_violation("line 4", "MISSING_COUNTRY: no country");
        details.set_request_info("r1", "");
        let status =
            tonic::Status::with_error_details(tonic::Code::InvalidArgument, "pre-flight failed", details);
        let text = ErrorReport::of(&ClientError::Call(status)).text();
        assert_eq!(
            text,
            "error: INVALID_ARGUMENT MISSING_COUNTRY: pre-flight failed\n  line 4: MISSING_COUNTRY: no country\n  request id: r1"
        );
    }
}
