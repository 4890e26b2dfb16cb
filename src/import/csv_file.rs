//! Reading an uploaded CSV the same way in pre-flight and in the job: the `csv`
//! crate over bytes (so invalid UTF-8 is reported per line, not as a crash), a
//! header row resolved through the saved mapping and the column contract, and
//! limits that keep one hostile file from taking the service down.

use std::collections::BTreeMap;
use std::io::Read;

use csv::ByteRecord;

use super::headers::{self, HeaderError, Target};

/// More columns than this is refused (the contract has about 25 platform columns).
pub const MAX_COLUMNS: usize = 1_000;
/// Largest cell, bytes.
pub const MAX_FIELD_BYTES: usize = 1 << 20;

/// A problem of the file found before any row is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// 1-based line (the header is line 1); `None` for the file as a whole.
    pub line: Option<u64>,
    pub code: &'static str,
    pub message: String,
}

impl Violation {
    pub fn at(line: u64, code: &'static str, message: impl Into<String>) -> Violation {
        Violation {
            line: Some(line),
            code,
            message: message.into(),
        }
    }

    pub fn file(code: &'static str, message: impl Into<String>) -> Violation {
        Violation {
            line: None,
            code,
            message: message.into(),
        }
    }

    /// The BadRequest field: `line 7`, or `file`.
    pub fn field(&self) -> String {
        match self.line {
            Some(line) => format!("line {line}"),
            None => "file".into(),
        }
    }
}

/// A CSV reader over bytes that tolerates ragged rows (they are reported, with
/// their line, instead of stopping the read).
pub fn reader<R: Read>(input: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(64 * 1024)
        .from_reader(input)
}

/// The line a record starts on.
pub fn line_of(record: &ByteRecord) -> u64 {
    record.position().map_or(0, |p| p.line())
}

/// The header row: original names (for the error report) and where each column goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
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

impl Layout {
    /// Resolves the header row: the saved mapping first (custom header -> platform
    /// column), then aliases and dotted paths. Every problem is listed.
    pub fn from_header(
        record: &ByteRecord,
        column_map: &BTreeMap<String, String>,
    ) -> Result<Layout, Vec<Violation>> {
        let line = line_of(record).max(1);
        let mut problems = Vec::new();
        if record.len() > MAX_COLUMNS {
            return Err(vec![Violation::at(
                line,
                "TOO_MANY_COLUMNS",
                format!("the file has {} columns; at most {MAX_COLUMNS}", record.len()),
            )]);
        }
        let mut headers = Vec::with_capacity(record.len());
        let mut targets = Vec::with_capacity(record.len());
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (i, raw) in record.iter().enumerate() {
            let Ok(text) = std::str::from_utf8(raw) else {
                problems.push(Violation::at(
                    line,
                    "INVALID_UTF8",
                    format!("header {} is not valid UTF-8", i + 1),
                ));
                continue;
            };
            if text.contains('\0') {
                problems.push(Violation::at(
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
            let mapped = column_map.get(&normalized).map_or(original, String::as_str);
            let target = match headers::resolve(mapped) {
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
                    problems.push(Violation::at(line, code, message));
                    continue;
                }
            };
            let depth = match &target {
                Target::Attribute(path) => path.len(),
                Target::EntityData { path, .. } => path.len() + 1,
                _ => 0,
            };
            if depth > headers::MAX_DEPTH {
                problems.push(Violation::at(
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
                problems.push(Violation::at(
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
                problems.push(Violation::at(
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
            headers,
            targets,
            country_column,
        })
    }
}

impl Layout {
    /// One notice per export column the import reads past ([`headers::EXPORT_ONLY`]).
    pub fn notices(&self) -> Vec<super::spec::Notice> {
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
                super::spec::Notice {
                    line: 1,
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
fn conflicting_paths(headers: &[String], targets: &[Target], line: u64) -> Vec<Violation> {
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
                problems.push(Violation::at(
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

/// Follows a CSV reader's input the way the reader splits it, to tell at the end
/// whether the file stopped inside a quoted field: an unclosed quote makes the
/// reader take the rest of the file as one cell, silently.
pub struct QuoteTracker<R> {
    inner: R,
    state: QuoteState,
    line: u64,
    /// The line of the quote that opened the field being read, if inside one.
    opened_on: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuoteState {
    StartOfField,
    Unquoted,
    Quoted,
    QuoteInQuoted,
}

impl<R> QuoteTracker<R> {
    pub fn new(inner: R) -> QuoteTracker<R> {
        QuoteTracker {
            inner,
            state: QuoteState::StartOfField,
            line: 1,
            opened_on: 0,
        }
    }

    /// The line of a quoted field still open at the end of the input.
    pub fn unclosed_quote(&self) -> Option<u64> {
        (self.state == QuoteState::Quoted).then_some(self.opened_on)
    }

    fn step(&mut self, byte: u8) {
        use QuoteState::*;
        let ends_field = matches!(byte, b',' | b'\n' | b'\r');
        self.state = match (self.state, byte) {
            (StartOfField, b'"') => {
                self.opened_on = self.line;
                Quoted
            }
            (StartOfField | Unquoted, _) if ends_field => StartOfField,
            (StartOfField | Unquoted, _) => Unquoted,
            (Quoted, b'"') => QuoteInQuoted,
            (Quoted, _) => Quoted,
            (QuoteInQuoted, b'"') => Quoted,
            (QuoteInQuoted, _) if ends_field => StartOfField,
            (QuoteInQuoted, _) => Unquoted,
        };
        if byte == b'\n' {
            self.line += 1;
        }
    }
}

impl<R: Read> Read for QuoteTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &byte in &buf[..n] {
            self.step(byte);
        }
        Ok(n)
    }
}

/// The cells of a data row as text, or why the row cannot be read.
pub fn cells(record: &ByteRecord, layout: &Layout) -> Result<Vec<String>, Violation> {
    let line = line_of(record);
    if record.len() != layout.headers.len() {
        return Err(Violation::at(
            line,
            "RAGGED_ROW",
            format!(
                "the row has {} cells; the header has {}",
                record.len(),
                layout.headers.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(record.len());
    for (i, raw) in record.iter().enumerate() {
        if raw.len() > MAX_FIELD_BYTES {
            return Err(Violation::at(
                line,
                "FIELD_TOO_LARGE",
                format!(
                    "column `{}` holds {} bytes; at most {MAX_FIELD_BYTES}",
                    layout.headers[i],
                    raw.len()
                ),
            ));
        }
        match std::str::from_utf8(raw) {
            Ok(text) => out.push(text.to_string()),
            Err(_) => {
                return Err(Violation::at(
                    line,
                    "INVALID_UTF8",
                    format!("column `{}` is not valid UTF-8", layout.headers[i]),
                ));
            }
        }
    }
    Ok(out)
}

/// The cells as the contract reads them: a CSV export's formula guard removed
/// ([`crate::formula_guard`]). The original cells stay the row's raw record, so
/// its error report reproduces the file as uploaded.
pub fn values(cells: &[String]) -> std::borrow::Cow<'_, [String]> {
    use crate::formula_guard::unescape;
    if cells.iter().any(|c| unescape(c).len() != c.len()) {
        std::borrow::Cow::Owned(cells.iter().map(|c| unescape(c).to_string()).collect())
    } else {
        std::borrow::Cow::Borrowed(cells)
    }
}

/// A record with only empty cells (a trailing `,,,` line) is not a row.
pub fn is_blank(record: &ByteRecord) -> bool {
    record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace))
}
