//! XLSX through calamine: the first sheet, read cell by cell in file order (never
//! as a dense range, so a stray cell at XFD1048576 costs nothing), its first row
//! with a value the header. XLSX cannot be streamed as it arrives (a zip's index is
//! at its end), so uploads are capped by `bulk_import.max_xlsx_bytes`. Cells become
//! the text the contract expects: text as is (a spreadsheet never runs it as a
//! formula, so nothing is unescaped), booleans `true` / `false`, whole numbers with
//! all their digits (no `2.01E+10`, no `.0`), dates `YYYY-MM-DD`; a whole number
//! past 2^53, which a spreadsheet cannot hold exactly, fails its row.

use std::io::{Read, Seek};

use calamine::{DataRef, Reader, Xlsx, XlsxCellReader};

use super::{CellIssue, Header, MAX_FIELD_BYTES, Table, TableError, TableRow, too_large};
use crate::import::layout::{FileNotice, Violation};

/// Largest whole number a spreadsheet (a 64-bit float) holds exactly.
const EXACT_LIMIT: f64 = 9_007_199_254_740_992.0;

/// Runs `read` over the workbook's first sheet.
pub(super) fn read<RS, T>(
    input: RS,
    read: impl FnOnce(&mut dyn Table) -> Result<T, TableError>,
) -> Result<T, TableError>
where
    RS: Read + Seek,
{
    let refused = |e: calamine::XlsxError| {
        TableError::Refused(Violation::file(
            "INVALID_XLSX",
            format!("the file is not a readable XLSX workbook: {e}"),
        ))
    };
    let mut workbook = Xlsx::new(input).map_err(refused)?;
    let sheets = workbook.sheet_names();
    let Some(sheet) = sheets.first().cloned() else {
        return read(&mut XlsxTable::<RS> {
            cells: None,
            sheet: String::new(),
            other_sheets: 0,
            width: 0,
            names: Vec::new(),
            pending: None,
        });
    };
    let cells = workbook.worksheet_cells_reader(&sheet).map_err(refused)?;
    read(&mut XlsxTable {
        cells: Some(cells),
        sheet,
        other_sheets: sheets.len() - 1,
        width: 0,
        names: Vec::new(),
        pending: None,
    })
}

struct XlsxTable<'a, RS: Read + Seek> {
    cells: Option<XlsxCellReader<'a, RS>>,
    sheet: String,
    other_sheets: usize,
    /// Columns of the header (up to its last name).
    width: usize,
    names: Vec<String>,
    /// The first cell of the next row, read while finishing the one before.
    pending: Option<ReadCell>,
}

/// A cell as read: (row, column), both from 0, and its text or what is wrong
/// with it.
struct ReadCell {
    row: u32,
    column: u32,
    text: Result<String, (&'static str, String)>,
}

/// The text the contract reads from a cell.
fn text(value: &DataRef<'_>) -> Result<String, (&'static str, String)> {
    Ok(match value {
        DataRef::Empty => String::new(),
        DataRef::String(s) => s.clone(),
        DataRef::SharedString(s) => (*s).to_string(),
        DataRef::Bool(b) => b.to_string(),
        DataRef::Int(i) => i.to_string(),
        DataRef::Float(f) => number(*f)?,
        DataRef::DateTime(dt) => {
            let (y, mo, d, h, mi, s, ms) = dt.to_ymd_hms_milli();
            match (h, mi, s, ms) {
                (0, 0, 0, 0) => format!("{y:04}-{mo:02}-{d:02}"),
                (_, _, _, 0) => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}"),
                _ => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}"),
            }
        }
        DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => s.clone(),
        DataRef::Error(e) => {
            return Err((
                "INVALID_CELL",
                format!("the cell holds the spreadsheet error {e}"),
            ));
        }
    })
}

/// A number as its shortest exact text: whole numbers without `.0` or an exponent.
fn number(f: f64) -> Result<String, (&'static str, String)> {
    if !f.is_finite() {
        return Err((
            "INVALID_CELL",
            format!("the cell holds {f}, which is not a number"),
        ));
    }
    if f.fract() != 0.0 {
        return Ok(f.to_string());
    }
    if f.abs() > EXACT_LIMIT {
        return Err((
            "INEXACT_NUMBER",
            format!("the number {f:e} has more digits than a spreadsheet keeps exactly; store it as text"),
        ));
    }
    Ok(format!("{}", f as i64))
}

/// Column letters of a 0-based index (`0` -> `A`, `27` -> `AB`).
fn column_name(mut index: u32) -> String {
    let mut letters = Vec::new();
    loop {
        letters.push(b'A' + (index % 26) as u8);
        if index < 26 {
            break;
        }
        index = index / 26 - 1;
    }
    letters.reverse();
    String::from_utf8_lossy(&letters).into_owned()
}

impl<RS: Read + Seek> XlsxTable<'_, RS> {
    fn next_cell(&mut self) -> Result<Option<ReadCell>, TableError> {
        if let Some(cell) = self.pending.take() {
            return Ok(Some(cell));
        }
        let Some(cells) = self.cells.as_mut() else {
            return Ok(None);
        };
        let cell = cells.next_cell().map_err(|e| {
            TableError::Refused(Violation::file(
                "INVALID_XLSX",
                format!("the sheet {:?} cannot be read: {e}", self.sheet),
            ))
        })?;
        if cell.is_none() {
            // The sheet ended: the reader must not be asked again.
            self.cells = None;
        }
        Ok(cell.map(|cell| {
            let (row, column) = cell.get_position();
            ReadCell {
                row,
                column,
                text: text(cell.get_value()),
            }
        }))
    }

    /// The next row with a cell that is not empty: its index and cells.
    fn next_filled_row(&mut self) -> Result<Option<(u32, Vec<ReadCell>)>, TableError> {
        loop {
            let Some(first) = self.next_cell()? else {
                return Ok(None);
            };
            let row = first.row;
            let mut cells = vec![first];
            while let Some(cell) = self.next_cell()? {
                if cell.row != row {
                    self.pending = Some(cell);
                    break;
                }
                cells.push(cell);
            }
            if cells.iter().any(|c| !matches!(&c.text, Ok(t) if t.is_empty())) {
                return Ok(Some((row, cells)));
            }
        }
    }
}

impl<RS: Read + Seek> Table for XlsxTable<'_, RS> {
    fn header(&mut self) -> Result<Option<Header>, TableError> {
        let Some((row, cells)) = self.next_filled_row()? else {
            return Ok(None);
        };
        self.width = cells
            .iter()
            .filter(|c| !matches!(&c.text, Ok(t) if t.is_empty()))
            .map(|c| c.column as usize + 1)
            .max()
            .unwrap_or(0);
        if self.width > crate::import::layout::MAX_COLUMNS {
            // Names past the limit are not kept; the layout refuses the width.
            self.width = crate::import::layout::MAX_COLUMNS + 1;
        }
        let mut names = vec![Some(String::new()); self.width];
        for cell in cells {
            if let Some(name) = names.get_mut(cell.column as usize) {
                *name = cell.text.ok();
            }
        }
        self.names = names
            .iter()
            .enumerate()
            .map(|(i, n)| n.clone().unwrap_or_else(|| column_name(i as u32)))
            .collect();
        Ok(Some(Header {
            line: Some(u64::from(row) + 1),
            names,
        }))
    }

    fn next_row(&mut self) -> Result<Option<TableRow>, TableError> {
        let Some((row, cells)) = self.next_filled_row()? else {
            return Ok(None);
        };
        let line = u64::from(row) + 1;
        let mut out = vec![String::new(); self.width];
        let mut issues = Vec::new();
        for cell in cells {
            let column = cell.column as usize;
            let place = || format!("{}{line}", column_name(cell.column));
            let text = match cell.text {
                Ok(text) => text,
                Err((code, message)) if column < self.width => {
                    issues.push(CellIssue {
                        column,
                        code,
                        message: format!("cell {}: {message}", place()),
                    });
                    continue;
                }
                Err((code, message)) => {
                    return Ok(Some(refused(line, code, format!("cell {}: {message}", place()))));
                }
            };
            if column >= self.width {
                if text.is_empty() {
                    continue;
                }
                return Ok(Some(refused(
                    line,
                    "RAGGED_ROW",
                    format!(
                        "cell {} holds a value past the header's {} columns",
                        place(),
                        self.width
                    ),
                )));
            }
            if text.len() > MAX_FIELD_BYTES {
                return Ok(Some(TableRow::unreadable(too_large(
                    line,
                    &self.names[column],
                    text.len(),
                ))));
            }
            out[column] = text;
        }
        let mut row = TableRow::typed(line, out);
        row.issues = issues;
        Ok(Some(row))
    }

    fn notices(&self) -> Vec<FileNotice> {
        if self.other_sheets == 0 {
            return Vec::new();
        }
        vec![FileNotice {
            line: 0,
            column: String::new(),
            code: "OTHER_SHEETS_NOT_READ".into(),
            message: format!(
                "only the first sheet, {:?}, is imported; the workbook's {} other sheet(s) were not read",
                self.sheet, self.other_sheets
            ),
        }]
    }

    fn sheet(&self) -> Option<&str> {
        (!self.sheet.is_empty()).then_some(self.sheet.as_str())
    }
}

fn refused(line: u64, code: &'static str, message: String) -> TableRow {
    TableRow::unreadable(Violation::at(line, code, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_every_digit_and_refuse_what_a_float_cannot_hold() {
        assert_eq!(number(20123456786.0).unwrap(), "20123456786");
        assert_eq!(number(-5.0).unwrap(), "-5");
        assert_eq!(number(12.5).unwrap(), "12.5");
        assert_eq!(number(0.1).unwrap(), "0.1");
        assert_eq!(number(9_007_199_254_740_992.0).unwrap(), "9007199254740992");
        assert_eq!(number(12345678901234567890.0).unwrap_err().0, "INEXACT_NUMBER");
    }

    #[test]
    fn columns_are_named_as_a_spreadsheet_names_them() {
        assert_eq!(
            [0, 25, 26, 27, 701, 702].map(column_name),
            ["A", "Z", "AA", "AB", "ZZ", "AAA"]
        );
    }
}
