//! XLSX with `rust_xlsxwriter` in constant-memory mode: a bold header, typed cells
//! (timestamps and dates as Excel dates, numbers as numbers, booleans as booleans),
//! and a new sheet every 1,048,575 data rows (Excel's row limit less the header).
//! Cells longer than Excel's 32,767 characters are cut to fit.

use std::path::Path;

use rust_xlsxwriter::{ExcelDateTime, Format, Workbook, Worksheet, XlsxError};
use serde_json::Value;

use super::{RowSource, WriteError};
use crate::export::columns::Cell;

pub const ROWS_PER_SHEET: u32 = 1_048_575;
const MAX_CELL_CHARS: usize = 32_767;
/// Excel's serial number of 1970-01-01.
const EPOCH_SERIAL: f64 = 25_569.0;

fn err(e: XlsxError) -> WriteError {
    WriteError::encode("XLSX", e)
}

struct Formats {
    header: Format,
    timestamp: Format,
    date: Format,
}

/// Writes `rows` under a header row of `headers` ([`crate::export::columns::headers`]).
pub fn write(headers: &[String], rows: &mut dyn RowSource, path: &Path) -> Result<u64, WriteError> {
    write_with_sheet_limit(headers, rows, path, ROWS_PER_SHEET)
}

/// [`write`] with a smaller sheet size, so the sheet roll-over can be tested.
pub fn write_with_sheet_limit(
    headers: &[String],
    rows: &mut dyn RowSource,
    path: &Path,
    rows_per_sheet: u32,
) -> Result<u64, WriteError> {
    let formats = Formats {
        header: Format::new().set_bold(),
        timestamp: Format::new().set_num_format("yyyy-mm-dd hh:mm:ss.000"),
        date: Format::new().set_num_format("yyyy-mm-dd"),
    };
    let mut workbook = Workbook::new();
    if let Some(dir) = path.parent() {
        workbook.set_tempdir(dir).map_err(err)?;
    }
    let mut sheets = 0usize;
    let mut row_in_sheet = rows_per_sheet; // forces the first sheet
    let mut written = 0u64;
    while let Some(batch) = rows.next_batch() {
        for row in batch {
            if row_in_sheet == rows_per_sheet {
                let sheet = workbook.add_worksheet_with_constant_memory().map_err(err)?;
                sheets += 1;
                let name = if sheets == 1 {
                    "entities".to_string()
                } else {
                    format!("entities ({sheets})")
                };
                sheet.set_name(name).map_err(err)?;
                header(sheet, headers, &formats)?;
                row_in_sheet = 0;
            }
            let sheet = workbook.worksheet_from_index(sheets - 1).map_err(err)?;
            row_in_sheet += 1;
            for (col, cell) in row.iter().enumerate() {
                write_cell(sheet, row_in_sheet, col as u16, cell, &formats)?;
            }
            written += 1;
        }
    }
    if sheets == 0 {
        let sheet = workbook.add_worksheet_with_constant_memory().map_err(err)?;
        sheet.set_name("entities").map_err(err)?;
        header(sheet, headers, &formats)?;
    }
    workbook.save(path).map_err(err)?;
    Ok(written)
}

fn header(sheet: &mut Worksheet, headers: &[String], formats: &Formats) -> Result<(), WriteError> {
    for (col, header) in headers.iter().enumerate() {
        sheet
            .write_string_with_format(0, col as u16, header, &formats.header)
            .map_err(err)?;
    }
    Ok(())
}

fn fit(text: &str) -> &str {
    match text.char_indices().nth(MAX_CELL_CHARS / 2) {
        // Cheap check first: short strings always fit (UTF-16 units <= 2 per char).
        None => text,
        Some(_) => {
            let mut units = 0;
            for (i, ch) in text.char_indices() {
                units += ch.len_utf16();
                if units > MAX_CELL_CHARS {
                    return &text[..i];
                }
            }
            text
        }
    }
}

/// Excel dates start in 1900; earlier (or absurd) ones are written as text.
fn write_serial(
    sheet: &mut Worksheet,
    row: u32,
    col: u16,
    serial: f64,
    cell: &Cell,
    format: &Format,
) -> Result<(), WriteError> {
    match ExcelDateTime::from_serial_datetime(serial) {
        Ok(value) if serial >= 1.0 => sheet
            .write_datetime_with_format(row, col, &value, format)
            .map(drop)
            .map_err(err),
        _ => sheet
            .write_string(row, col, cell.to_text().unwrap_or_default())
            .map(drop)
            .map_err(err),
    }
}

fn write_cell(
    sheet: &mut Worksheet,
    row: u32,
    col: u16,
    cell: &Cell,
    formats: &Formats,
) -> Result<(), WriteError> {
    match cell {
        Cell::Null => Ok(()),
        Cell::Text(s) | Cell::RawJson(s) => sheet.write_string(row, col, fit(s)).map(drop).map_err(err),
        Cell::Bool(b) => sheet.write_boolean(row, col, *b).map(drop).map_err(err),
        Cell::Timestamp(ms) => {
            let serial = *ms as f64 / 86_400_000.0 + EPOCH_SERIAL;
            write_serial(sheet, row, col, serial, cell, &formats.timestamp)
        }
        Cell::Date(days) => write_serial(
            sheet,
            row,
            col,
            f64::from(*days) + EPOCH_SERIAL,
            cell,
            &formats.date,
        ),
        Cell::Json(Value::Number(n)) => match n.as_f64() {
            Some(f) => sheet.write_number(row, col, f).map(drop).map_err(err),
            None => sheet.write_string(row, col, n.to_string()).map(drop).map_err(err),
        },
        Cell::Json(Value::Bool(b)) => sheet.write_boolean(row, col, *b).map(drop).map_err(err),
        Cell::Json(value) => sheet
            .write_string(row, col, fit(&value.to_string()))
            .map(drop)
            .map_err(err),
    }
}
