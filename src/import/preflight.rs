//! Pre-flight: the whole uploaded file checked before any job exists, in any of
//! the formats an import reads. Headers, every row's country, the row limit,
//! readable cells. One pass, bounded memory; at most [`MAX_VIOLATIONS`] problems are
//! listed, but every row is counted.

use std::collections::BTreeMap;
use std::io::{Read, Seek};

use super::layout::FileNotice;
use super::layout::{Layout, Violation};
use super::row::{AUTOMATIC_COUNTRIES, Mode};
use super::table::{self, Format, Table, TableError};

pub const MAX_VIOLATIONS: usize = 100;

/// What the file is checked against: the import's options that pre-flight reads.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    pub format: Format,
    /// Normalised custom header -> platform column (the saved mapping).
    pub column_map: &'a BTreeMap<String, String>,
    /// The batch country, for rows without their own.
    pub country: Option<&'a str>,
    pub mode: Mode,
}

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("the file did not pass pre-flight")]
    Invalid(Vec<Violation>),
    #[error("cannot read the uploaded file: {0}")]
    Io(String),
}

/// What a file that passed pre-flight holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// Data rows.
    pub rows: u64,
    /// Things worth knowing that are not problems (export columns read past, the
    /// sheet of a workbook that was read).
    pub notices: Vec<FileNotice>,
}

/// Checks the file, read as the spec's format.
pub fn check<R: Read + Seek>(
    input: R,
    expect: &Expect<'_>,
    row_limit: u64,
) -> Result<Checked, PreflightError> {
    let checked = table::read(expect.format, input, |table| {
        let sheet = table.sheet().map(str::to_string);
        Ok(check_table(table, expect, row_limit).map_err(|e| on_sheet(e, sheet)))
    });
    match checked {
        Ok(checked) => checked,
        Err(e) => Err(table_error(e)),
    }
}

/// An XLSX file's problems name the sheet of their rows.
fn on_sheet(err: PreflightError, sheet: Option<String>) -> PreflightError {
    match err {
        PreflightError::Invalid(mut violations) => {
            for v in violations.iter_mut().filter(|v| v.line.is_some()) {
                v.sheet.clone_from(&sheet);
            }
            PreflightError::Invalid(violations)
        }
        other => other,
    }
}

fn table_error(err: TableError) -> PreflightError {
    match err {
        TableError::Refused(v) => PreflightError::Invalid(vec![v]),
        TableError::Io(e) => PreflightError::Io(e.to_string()),
    }
}

fn check_table(
    table: &mut dyn Table,
    expect: &Expect<'_>,
    row_limit: u64,
) -> Result<Checked, PreflightError> {
    let Some(header) = table.header().map_err(table_error)? else {
        return Err(PreflightError::Invalid(vec![Violation::file(
            "EMPTY_FILE",
            "the file is empty; it needs a header row and at least one row",
        )]));
    };
    let layout = Layout::from_header(header.line, &header.names, expect.column_map)
        .map_err(PreflightError::Invalid)?;
    let mut violations = Vec::new();
    let mut total: u64 = 0;
    let mut add = |v: Violation| {
        if violations.len() < MAX_VIOLATIONS {
            violations.push(v);
        }
    };
    while let Some(row) = table.next_row().map_err(table_error)? {
        total += 1;
        match &row.cells {
            Ok(cells) => {
                if let Some(v) = country_problem(cells, &layout, expect, row.line) {
                    add(v);
                }
            }
            Err(v) => add(v.clone()),
        }
    }
    if let Some(v) = table.end_problem() {
        add(v);
    }
    if total == 0 {
        return Err(PreflightError::Invalid(vec![Violation::file(
            "NO_ROWS",
            "the file has a header row but no rows",
        )]));
    }
    if total > row_limit {
        violations.insert(
            0,
            Violation::file(
                "TOO_MANY_ITEMS",
                format!(
                    "the file has {total} rows; this organization may import at most {row_limit} at once"
                ),
            ),
        );
        violations.truncate(MAX_VIOLATIONS);
    }
    if !violations.is_empty() {
        return Err(PreflightError::Invalid(violations));
    }
    let mut notices = table.notices();
    notices.extend(layout.notices());
    Ok(Checked { rows: total, notices })
}

/// Every row needs a country (its own, else the batch's); automatic mode runs for
/// AR, BR and CL only.
fn country_problem(cells: &[String], layout: &Layout, expect: &Expect<'_>, line: u64) -> Option<Violation> {
    let own = layout
        .country_column
        .map(|i| cells[i].trim().to_ascii_uppercase())
        .filter(|c| !c.is_empty());
    let Some(country) = own.or_else(|| expect.country.map(str::to_string)) else {
        return Some(Violation::at(
            line,
            "MISSING_COUNTRY",
            "the row has no country_code and the upload has no batch country (options.country)",
        ));
    };
    if expect.mode == Mode::Automatic && !AUTOMATIC_COUNTRIES.contains(&country.as_str()) {
        return Some(Violation::at(
            line,
            "COUNTRY_NOT_SUPPORTED",
            format!("automatic imports run for AR, BR and CL only, not `{country}`"),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    static NO_MAPPING: BTreeMap<String, String> = BTreeMap::new();

    fn spec(mode: Mode, country: &'static str) -> Expect<'static> {
        Expect {
            format: Format::Csv,
            column_map: &NO_MAPPING,
            country: Some(country).filter(|c| !c.is_empty()),
            mode,
        }
    }

    fn codes(input: &[u8], spec: &Expect<'_>, limit: u64) -> Vec<(Option<u64>, &'static str)> {
        match check(std::io::Cursor::new(input), spec, limit) {
            Ok(_) => Vec::new(),
            Err(PreflightError::Invalid(v)) => v.into_iter().map(|v| (v.line, v.code)).collect(),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_good_file_counts_its_rows_with_bom_crlf_and_quoted_newlines() {
        let file = "\u{feff}tax_id,type,name\r\n1,pf,\"Ana\r\nMaria\"\r\n2,pj,Acme\r\n\r\n";
        assert_eq!(
            check(
                std::io::Cursor::new(file.as_bytes()),
                &spec(Mode::Manual, "MX"),
                10
            )
            .unwrap()
            .rows,
            2
        );
    }

    #[test]
    fn every_row_needs_a_country_and_lines_are_named() {
        let file = b"tax_id,type,country_code\n1,pf,AR\n2,pf,\n3,pf,MX\n";
        assert_eq!(
            codes(file, &spec(Mode::Manual, ""), 10),
            [(Some(3), "MISSING_COUNTRY")]
        );
        assert_eq!(
            codes(file, &spec(Mode::Automatic, "BR"), 10),
            [(Some(4), "COUNTRY_NOT_SUPPORTED")]
        );
    }

    #[test]
    fn rows_over_the_limit_are_too_many_items() {
        let file = b"tax_id,type\n1,pf\n2,pf\n3,pf\n";
        assert_eq!(
            codes(file, &spec(Mode::Manual, "MX"), 2),
            [(None, "TOO_MANY_ITEMS")]
        );
    }

    #[test]
    fn empty_files_header_only_files_and_bad_headers_are_refused() {
        let s = spec(Mode::Manual, "MX");
        assert_eq!(codes(b"", &s, 10), [(None, "EMPTY_FILE")]);
        assert_eq!(codes(b"tax_id,type\n", &s, 10), [(None, "NO_ROWS")]);
        assert_eq!(
            codes(b"tax_id,type,checks\n1,pf,x\n", &s, 10),
            [(Some(1), "REMOVED_COLUMN")]
        );
        assert_eq!(
            codes(b"tax_id,Type,tipo\n1,pf,pf\n", &s, 10),
            [(Some(1), "DUPLICATE_HEADER")]
        );
        assert_eq!(
            codes(b"documento,tipo\n1,pf\n", &s, 10),
            [(Some(1), "MISSING_HEADER")]
        );
    }

    #[test]
    fn the_malformed_csv_corpus_gets_clear_errors() {
        let s = spec(Mode::Manual, "MX");
        // Ragged rows and invalid UTF-8 name their lines.
        assert_eq!(
            codes(b"tax_id,type\n1,pf,extra\n2\n3,\xff\xfe\n", &s, 10),
            [
                (Some(2), "RAGGED_ROW"),
                (Some(3), "RAGGED_ROW"),
                (Some(4), "INVALID_UTF8")
            ]
        );
        // A 10 MiB field.
        let mut big = b"tax_id,type\n1,".to_vec();
        big.extend(std::iter::repeat_n(b'x', 10 << 20));
        big.push(b'\n');
        assert_eq!(codes(&big, &s, 10), [(Some(2), "FIELD_TOO_LARGE")]);
        // 10,000 columns.
        let wide: Vec<String> = (0..10_000).map(|i| format!("c{i}")).collect();
        let wide = format!("{}\n", wide.join(","));
        assert_eq!(codes(wide.as_bytes(), &s, 10), [(Some(1), "TOO_MANY_COLUMNS")]);
        // An unterminated quote would read to the end as one field: named by its line.
        assert_eq!(
            codes(b"tax_id,type\n1,\"pf\n2,pf\n", &s, 10),
            [(Some(2), "UNCLOSED_QUOTE")]
        );
        // Quotes that are closed, doubled, or inside an unquoted cell are fine.
        assert_eq!(
            codes(
                b"tax_id,type,name\n1,pf,\"say \"\"hi\"\"\"\n2,pf,5\" tall\n3,pf,\"a\nb\"\n",
                &s,
                10
            ),
            Vec::<(Option<u64>, &str)>::new()
        );
        // Colliding dotted headers and too deep a path are named before any row.
        assert_eq!(
            codes(b"tax_id,type,attributes.a,attributes.a.b\n1,pf,x,y\n", &s, 10),
            [(Some(1), "CONFLICTING_HEADERS")]
        );
        let deep = format!("tax_id,type,attributes.{}\n1,pf,x\n", vec!["k"; 33].join("."));
        assert_eq!(codes(deep.as_bytes(), &s, 10), [(Some(1), "TOO_DEEP")]);
        let fine = format!("tax_id,type,attributes.{}\n1,pf,x\n", vec!["k"; 32].join("."));
        assert_eq!(codes(fine.as_bytes(), &s, 10), Vec::<(Option<u64>, &str)>::new());
    }

    #[test]
    fn an_exports_own_columns_are_noticed_and_an_expanded_export_is_refused() {
        let s = spec(Mode::Manual, "MX");
        let file = b"id,type,tax_id,attributes,created_at,updated_at,enrichment_plan\n1,pf,A,{},x,y,{}\n";
        let checked = check(std::io::Cursor::new(&file[..]), &s, 10).unwrap();
        let noticed: Vec<(u64, &str, &str)> = checked
            .notices
            .iter()
            .map(|n| (n.line, n.column.as_str(), n.code.as_str()))
            .collect();
        assert_eq!(
            noticed,
            [
                (1, "id", "COLUMN_NOT_IMPORTED"),
                (1, "created_at", "COLUMN_NOT_IMPORTED"),
                (1, "updated_at", "COLUMN_NOT_IMPORTED"),
                (1, "enrichment_plan", "COLUMN_NOT_IMPORTED")
            ]
        );
        assert!(
            checked.notices[0].message.starts_with("`id`"),
            "{:?}",
            checked.notices
        );
        assert_eq!(
            codes(b"tax_id,type,attributes.tags[]\n1,pf,x\n", &s, 10),
            [(Some(1), "EXPANDED_EXPORT")]
        );
    }

    #[test]
    fn at_most_a_hundred_problems_are_listed() {
        let mut file = String::from("tax_id,type\n");
        for i in 0..500 {
            file.push_str(&format!("{i},pf\n"));
        }
        assert_eq!(codes(file.as_bytes(), &spec(Mode::Manual, ""), 1000).len(), 100);
    }
}
