//! The header row of an upload, whatever its format: each column resolved through
//! the saved mapping and the column contract ([`super::headers`]) to where its
//! values go, and the problems that refuse a file before any row is read.

use std::collections::BTreeMap;

use super::headers::{self, HeaderError, Target};
use serde::{Deserialize, Serialize};

/// More columns than this is refused (the contract has about 25 platform columns).
pub const MAX_COLUMNS: usize = 1_000;

/// A problem of the file found before any row is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// 1-based line (the header is line 1; in an XLSX file the row of its sheet);
    /// `None` for the file as a whole.
    pub line: Option<u64>,
    /// The sheet of an XLSX file's line.
    pub sheet: Option<String>,
    pub code: &'static str,
    pub message: String,
}

impl Violation {
    pub fn at(line: u64, code: &'static str, message: impl Into<String>) -> Violation {
        Violation {
            line: Some(line),
            sheet: None,
            code,
            message: message.into(),
        }
    }

    /// On `line`, or the file as a whole.
    pub fn on(line: Option<u64>, code: &'static str, message: impl Into<String>) -> Violation {
        Violation {
            line,
            sheet: None,
            code,
            message: message.into(),
        }
    }

    pub fn file(code: &'static str, message: impl Into<String>) -> Violation {
        Violation {
            line: None,
            sheet: None,
            code,
            message: message.into(),
        }
    }

    /// The BadRequest field: `line 7`, `sheet "entities" row 7`, or `file`.
    pub fn field(&self) -> String {
        match (self.line, &self.sheet) {
            (Some(row), Some(sheet)) => format!("sheet {sheet:?} row {row}"),
            (Some(line), None) => format!("line {line}"),
            (None, _) => "file".into(),
        }
    }
}

/// Something pre-flight tells the uploader once, about the file as a whole (the
/// export columns an import reads past, the sheet of a workbook that was read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileNotice {
    /// The header's line; 0 for the file as a whole.
    pub line: u64,
    pub column: String,
    pub code: String,
    pub message: String,
}

/// The header row: original names (for the error report) and where each column goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// The header row's line; `None` for NDJSON, whose columns are its keys.
    pub header_line: Option<u64>,
    pub headers: Vec<String>,
    pub targets: Vec<Target>,
    /// Index of the `country_code` column, if any.
    pub country_column: Option<usize>,
}

fn platform_name(target: &Target) -> Option<&'static str> {
    match target {
        Target::Platform(name) => Some(name),
        _ => None,
    }
}

/// Where one header's values go: through the saved mapping (custom header ->
/// platform column) first, then the column contract. Returns the name resolved
/// (the mapping's column, or the header itself) and its target. The import's layout
/// and the hub's preview both ask this, so they cannot disagree.
pub fn place<'a>(
    original: &'a str,
    column_map: &'a BTreeMap<String, String>,
) -> (&'a str, Result<Target, HeaderError>) {
    let mapped = column_map
        .get(&headers::normalize(original))
        .map_or(original, String::as_str);
    (mapped, headers::resolve(mapped))
}

impl Layout {
    /// Resolves the header row: the saved mapping first (custom header -> platform
    /// column), then aliases and dotted paths. Every problem is listed.
    /// `names` are the header's cells (`None`: not valid UTF-8), on `line` (`None`
    /// for a format without a header row, NDJSON, whose names are its keys).
    pub fn from_header(
        line: Option<u64>,
        names: &[Option<String>],
        column_map: &BTreeMap<String, String>,
    ) -> Result<Layout, Vec<Violation>> {
        let mut problems = Vec::new();
        if names.len() > MAX_COLUMNS {
            return Err(vec![Violation::on(
                line,
                "TOO_MANY_COLUMNS",
                format!("the file has {} columns; at most {MAX_COLUMNS}", names.len()),
            )]);
        }
        let mut headers = Vec::with_capacity(names.len());
        let mut targets = Vec::with_capacity(names.len());
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (i, name) in names.iter().enumerate() {
            let Some(text) = name.as_deref() else {
                problems.push(Violation::on(
                    line,
                    "INVALID_UTF8",
                    format!("header {} is not valid UTF-8", i + 1),
                ));
                continue;
            };
            if text.contains('\0') {
                problems.push(Violation::on(
                    line,
                    "INVALID_HEADER",
                    format!(
                        "header {} contains a NUL character (U+0000), which cannot be stored",
                        i + 1
                    ),
                ));
                continue;
            }
            let original = if i == 0 {
                text.trim_start_matches('\u{feff}')
            } else {
                text
            };
            let normalized = headers::normalize(original);
            let target = match place(original, column_map).1 {
                Ok(target) => target,
                Err(err) => {
                    let code = match err {
                        HeaderError::Removed(_) => "REMOVED_COLUMN",
                        HeaderError::Empty(_) | HeaderError::BadPath(_) => "INVALID_HEADER",
                        HeaderError::Expanded(_) => "EXPANDED_EXPORT",
                    };
                    let message = match err {
                        HeaderError::Empty(_) => format!("header {} is empty", i + 1),
                        other => other.to_string(),
                    };
                    problems.push(Violation::on(line, code, message));
                    continue;
                }
            };
            let depth = match &target {
                Target::Attribute(path) => path.len(),
                Target::EntityData { path, .. } => path.len() + 1,
                _ => 0,
            };
            if depth > headers::MAX_DEPTH {
                problems.push(Violation::on(
                    line,
                    "TOO_DEEP",
                    format!(
                        "header `{original}` nests {depth} levels; at most {} are allowed",
                        headers::MAX_DEPTH
                    ),
                ));
                continue;
            }
            // Two columns landing in the same place would silently overwrite each other.
            let destination = match &target {
                Target::Platform(name) => format!("platform:{name}"),
                Target::Attribute(path) => format!("attributes:{}", path.join(".")),
                Target::EntityData { bucket, path } => {
                    format!(
                        "entity_data:{}:{}",
                        bucket.as_deref().unwrap_or("*"),
                        path.join(".")
                    )
                }
                Target::AttributesObject => "attributes".into(),
                Target::EntityDataObject => "entity_data".into(),
                Target::Ignored => format!("ignored:{normalized}"),
            };
            if let Some(first) = seen.insert(destination, original.to_string()) {
                problems.push(Violation::on(
                    line,
                    "DUPLICATE_HEADER",
                    format!("headers `{first}` and `{original}` name the same column"),
                ));
            }
            headers.push(original.to_string());
            targets.push(target);
        }
        problems.extend(conflicting_paths(&headers, &targets, line));
        for required in ["tax_id", "type"] {
            if problems.is_empty() && !targets.iter().any(|t| platform_name(t) == Some(required)) {
                problems.push(Violation::on(
                    line,
                    "MISSING_HEADER",
                    format!(
                        "the required column `{required}` is missing; files with custom headers need a saved mapping (options.mapping_id)"
                    ),
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let country_column = targets
            .iter()
            .position(|t| platform_name(t) == Some("country_code"));
        Ok(Layout {
            header_line: line,
            headers,
            targets,
            country_column,
        })
    }

    /// One notice per export column the import reads past ([`headers::EXPORT_ONLY`]).
    pub fn notices(&self) -> Vec<FileNotice> {
        self.headers
            .iter()
            .filter(|h| headers::EXPORT_ONLY.contains(&headers::normalize(h).as_str()))
            .map(|header| {
                let why = match headers::normalize(header).as_str() {
                    "id" => "rows find their entity by country and tax ID; ferry keeps the ids it gave",
                    "enrichment_plan" => {
                        "each row's enrichment plan is computed again from the import's options and plan columns"
                    }
                    _ => "ferry keeps its own timestamps",
                };
                FileNotice {
                    line: self.header_line.unwrap_or(0),
                    column: header.clone(),
                    code: "COLUMN_NOT_IMPORTED".into(),
                    message: format!("`{header}` is not imported: {why}"),
                }
            })
            .collect()
    }
}

/// Two dotted headers where one is a prefix of the other (`attributes.a` and
/// `attributes.a.b`): a row with both would keep only one of them, depending on
/// the order of the columns, so the file is refused before anything is written.
fn conflicting_paths(headers: &[String], targets: &[Target], line: Option<u64>) -> Vec<Violation> {
    let place = |target: &Target| -> Option<(String, Vec<String>)> {
        match target {
            Target::Attribute(path) => Some(("attributes".into(), path.clone())),
            Target::EntityData { bucket, path } => Some((
                format!("entity_data:{}", bucket.as_deref().unwrap_or("*")),
                path.clone(),
            )),
            _ => None,
        }
    };
    let places: Vec<(usize, (String, Vec<String>))> = targets
        .iter()
        .enumerate()
        .filter_map(|(i, t)| place(t).map(|p| (i, p)))
        .collect();
    let mut problems = Vec::new();
    for (i, (root, path)) in &places {
        for (j, (other_root, other)) in &places {
            if root == other_root && path.len() < other.len() && other.starts_with(path) {
                problems.push(Violation::on(
                    line,
                    "CONFLICTING_HEADERS",
                    format!(
                        "headers `{}` and `{}` both write `{}`: one holds a value, the other a field inside it",
                        headers[*i],
                        headers[*j],
                        path.join(".")
                    ),
                ));
            }
        }
    }
    problems
}
