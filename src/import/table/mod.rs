//! An upload read as a table, whatever its format (CSV, XLSX, NDJSON): a header of
//! column names, then data rows as the text cells the column contract reads, each
//! with the line (or sheet row) it came from. Pre-flight and the import job read
//! every format through [`Table`], so the contract, the positions in errors and
//! the limits are the same for all.

mod csv;
mod ndjson;
mod xlsx;

use std::io::{Read, Seek};

use serde::{Deserialize, Serialize};

use super::layout::Violation;
use crate::formula_guard;

/// Largest cell, bytes.
pub const MAX_FIELD_BYTES: usize = 1 << 20;

/// The formats an import reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Csv,
    Xlsx,
    Ndjson,
}

impl Format {
    /// The format a file name suggests: `.xlsx`, `.ndjson` / `.jsonl`, else CSV.
    pub fn of_file_name(name: &str) -> Format {
        let lower = name.trim().to_ascii_lowercase();
        if lower.ends_with(".xlsx") {
            Format::Xlsx
        } else if lower.ends_with(".ndjson") || lower.ends_with(".jsonl") {
            Format::Ndjson
        } else {
            Format::Csv
        }
    }

    /// The stored upload's extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Xlsx => "xlsx",
            Format::Ndjson => "ndjson",
        }
    }
}

/// The header: its line (`None` when the format has no header row) and its cells
/// (`None`: a name that is not valid UTF-8).
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub line: Option<u64>,
    pub names: Vec<Option<String>>,
}

/// One data row.
#[derive(Debug, Clone, PartialEq)]
pub struct TableRow {
    pub line: u64,
    /// The cells as the contract reads them, one per header column; or why the row
    /// cannot be read.
    pub cells: Result<Vec<String>, Violation>,
    /// The cells as a CSV file holds them, for the error report (a CSV report of
    /// any upload imports again as is), when they differ from `cells`: a CSV
    /// upload's cells as uploaded (formula guard included), another format's cells
    /// with the guard added.
    pub raw: Option<Vec<String>>,
    /// Cells read but refused (XLSX: a number a spreadsheet cannot hold exactly,
    /// an error value): the row fails with these, the file is not refused.
    pub issues: Vec<CellIssue>,
}

/// A cell that could be read but not used.
#[derive(Debug, Clone, PartialEq)]
pub struct CellIssue {
    pub column: usize,
    pub code: &'static str,
    pub message: String,
}

impl TableRow {
    /// The cells for the error report.
    pub fn raw_cells(&self) -> Vec<String> {
        match (&self.raw, &self.cells) {
            (Some(raw), _) => raw.clone(),
            (None, Ok(cells)) => cells.clone(),
            (None, Err(_)) => Vec::new(),
        }
    }

    /// A row of another format than CSV: its text cells, and their guarded CSV
    /// form for the report when that differs.
    fn typed(line: u64, cells: Vec<String>) -> TableRow {
        let raw = cells
            .iter()
            .any(|c| formula_guard::escape(c).len() != c.len())
            .then(|| {
                cells
                    .iter()
                    .map(|c| formula_guard::escape(c).into_owned())
                    .collect()
            });
        TableRow {
            line,
            cells: Ok(cells),
            raw,
            issues: Vec::new(),
        }
    }

    /// A row that cannot be read.
    fn unreadable(violation: Violation) -> TableRow {
        TableRow {
            line: violation.line.unwrap_or(0),
            cells: Err(violation),
            raw: None,
            issues: Vec::new(),
        }
    }
}

/// Why a file cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The file is not of its format (a broken workbook, an NDJSON file without
    /// one object): pre-flight refuses it with this problem.
    #[error("{}", .0.message)]
    Refused(Violation),
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
}

/// An upload read row by row.
pub trait Table {
    /// The header; `None` for an empty file.
    fn header(&mut self) -> Result<Option<Header>, TableError>;
    /// The next data row (blank rows are skipped); `None` at the end.
    fn next_row(&mut self) -> Result<Option<TableRow>, TableError>;
    /// A problem only the end of the file shows (CSV: a quote never closed).
    fn end_problem(&self) -> Option<Violation> {
        None
    }
    /// Facts about the file worth telling the uploader (XLSX: which sheet was read).
    fn notices(&self) -> Vec<super::layout::FileNotice> {
        Vec::new()
    }
    /// The sheet an XLSX file's rows come from.
    fn sheet(&self) -> Option<&str> {
        None
    }
}

/// Runs `read` over `input` read as `format`. A closure, not a returned reader:
/// an XLSX reader borrows the workbook it reads.
pub fn read<R, T>(
    format: Format,
    input: R,
    read: impl FnOnce(&mut dyn Table) -> Result<T, TableError>,
) -> Result<T, TableError>
where
    R: Read + Seek,
{
    match format {
        Format::Csv => read(&mut csv::CsvTable::new(input)),
        Format::Ndjson => read(&mut ndjson::NdjsonTable::new(input)?),
        Format::Xlsx => xlsx::read(input, read),
    }
}

/// A cell over [`MAX_FIELD_BYTES`].
fn too_large(line: u64, column: &str, bytes: usize) -> Violation {
    Violation::at(
        line,
        "FIELD_TOO_LARGE",
        format!("column `{column}` holds {bytes} bytes; at most {MAX_FIELD_BYTES}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(format: Format, input: &[u8]) -> (Option<Header>, Vec<TableRow>) {
        read(format, std::io::Cursor::new(input), |table| {
            let header = table.header()?;
            let mut rows = Vec::new();
            while let Some(row) = table.next_row()? {
                rows.push(row);
            }
            Ok((header, rows))
        })
        .unwrap()
    }

    fn names(header: Option<Header>) -> Vec<String> {
        header.unwrap().names.into_iter().map(Option::unwrap).collect()
    }

    #[test]
    fn the_format_follows_the_file_name() {
        assert_eq!(Format::of_file_name("Clients.XLSX"), Format::Xlsx);
        assert_eq!(Format::of_file_name("a.jsonl"), Format::Ndjson);
        assert_eq!(Format::of_file_name("a.ndjson"), Format::Ndjson);
        assert_eq!(Format::of_file_name("a.txt"), Format::Csv);
    }

    #[test]
    fn ndjson_columns_are_every_key_and_values_become_text() {
        let input = br#"{"tax_id": "1", "type": "pf", "n": 12, "ok": true}

{"tax_id": "2", "type": "pj", "attributes": {"a": [1, 2]}, "x": null}
"#;
        let (header, rows) = rows(Format::Ndjson, input);
        assert_eq!(names(header), ["tax_id", "type", "n", "ok", "attributes", "x"]);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].line, rows[1].line), (1, 3));
        assert_eq!(
            rows[0].cells.as_ref().unwrap(),
            &["1", "pf", "12", "true", "", ""]
        );
        assert_eq!(
            rows[1].cells.as_ref().unwrap(),
            &["2", "pj", "", "", r#"{"a":[1,2]}"#, ""]
        );
    }

    #[test]
    fn ndjson_lines_that_are_not_objects_are_named() {
        let input = b"{\"tax_id\": \"1\"}\n[1]\n{\"tax_id\": \n\xff\n";
        let (_, rows) = rows(Format::Ndjson, input);
        let codes: Vec<(u64, &str)> = rows
            .iter()
            .filter_map(|r| r.cells.as_ref().err().map(|v| (r.line, v.code)))
            .collect();
        assert_eq!(
            codes,
            [(2, "INVALID_JSON"), (3, "INVALID_JSON"), (4, "INVALID_UTF8")]
        );
        let refused = read(Format::Ndjson, std::io::Cursor::new(&b"[1]\n"[..]), |t| {
            t.header()
        });
        assert!(
            matches!(refused, Err(TableError::Refused(v)) if v.code == "INVALID_JSON" && v.line == Some(1))
        );
    }

    #[test]
    fn an_ndjson_line_over_the_limit_is_refused_without_being_held() {
        let mut input = b"{\"tax_id\": \"1\"}\n{\"tax_id\": \"".to_vec();
        input.extend(std::iter::repeat_n(b'x', ndjson::MAX_LINE_BYTES + 10));
        input.extend(b"\"}\n{\"tax_id\": \"3\"}\n");
        let (_, rows) = rows(Format::Ndjson, &input);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].cells.as_ref().unwrap_err().code, "LINE_TOO_LARGE");
        assert_eq!(rows[2].cells.as_ref().unwrap(), &["3"]);
    }

    #[test]
    fn typed_cells_carry_their_guarded_csv_form_for_the_report() {
        let row = TableRow::typed(2, vec!["=1+1".into(), "plain".into()]);
        assert_eq!(row.raw_cells(), ["'=1+1", "plain"]);
        assert_eq!(row.cells.unwrap(), ["=1+1", "plain"]);
    }

    #[test]
    fn xlsx_cells_become_the_text_the_contract_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("people.xlsx");
        let mut workbook = rust_xlsxwriter::Workbook::new();
        let sheet = workbook.add_worksheet();
        sheet.set_name("clients").unwrap();
        for (col, name) in ["tax_id", "type", "registration_date", "is_client", "name"]
            .iter()
            .enumerate()
        {
            sheet.write_string(2, col as u16, *name).unwrap();
        }
        sheet.write_number(3, 0, 20123456786.0).unwrap();
        sheet.write_string(3, 1, "pf").unwrap();
        let date = rust_xlsxwriter::ExcelDateTime::from_ymd(2021, 3, 4).unwrap();
        let format = rust_xlsxwriter::Format::new().set_num_format("yyyy-mm-dd");
        sheet.write_datetime_with_format(3, 2, &date, &format).unwrap();
        sheet.write_boolean(3, 3, true).unwrap();
        sheet.write_string(3, 4, "=Ana").unwrap();
        sheet.write_number(5, 0, 1e20).unwrap();
        sheet.write_string(6, 7, "stray").unwrap();
        workbook.add_worksheet().set_name("notes").unwrap();
        workbook.save(&path).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let (header, rows, notices) = read(Format::Xlsx, file, |table| {
            let header = table.header()?;
            let mut rows = Vec::new();
            while let Some(row) = table.next_row()? {
                rows.push(row);
            }
            Ok((header, rows, table.notices()))
        })
        .unwrap();
        let header = header.unwrap();
        assert_eq!(header.line, Some(3));
        assert_eq!(rows[0].line, 4);
        assert_eq!(
            rows[0].cells.as_ref().unwrap(),
            &["20123456786", "pf", "2021-03-04", "true", "=Ana"]
        );
        // Nothing is unescaped in a workbook; the CSV report guards the formula.
        assert_eq!(rows[0].raw_cells()[4], "'=Ana");
        assert_eq!(rows[1].line, 6);
        assert_eq!(rows[1].issues[0].code, "INEXACT_NUMBER");
        assert_eq!(rows[1].issues[0].column, 0);
        assert_eq!(rows[2].line, 7);
        assert_eq!(rows[2].cells.as_ref().unwrap_err().code, "RAGGED_ROW");
        assert_eq!(notices[0].code, "OTHER_SHEETS_NOT_READ");
    }

    #[test]
    fn a_file_that_is_not_a_workbook_is_refused() {
        let refused = read(Format::Xlsx, std::io::Cursor::new(&b"tax_id,type\n"[..]), |t| {
            t.header()
        });
        assert!(matches!(refused, Err(TableError::Refused(v)) if v.code == "INVALID_XLSX"));
    }
}
