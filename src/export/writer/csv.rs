//! CSV: RFC 4180 via the `csv` crate, a header row, UTF-8, an optional BOM for Excel,
//! and cells that a spreadsheet would run as formulas guarded
//! ([`crate::formula_guard`], reversible by a CSV import).

use std::io::Write;

use super::{Record, RowSource, WriteError};
use crate::export::columns::{CellRef, Column};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Writes `rows` (cells in the order of `columns`) under a header row of `headers`.
pub fn write<R: Record>(
    columns: &[Column],
    headers: &[String],
    rows: &mut dyn RowSource<R>,
    out: &mut impl Write,
    bom: bool,
    neutralize_formulas: bool,
) -> Result<u64, WriteError> {
    if bom {
        out.write_all(BOM)?;
    }
    let mut writer = csv::WriterBuilder::new().from_writer(out);
    writer.write_record(headers).map_err(csv_err)?;
    let mut written = 0;
    let mut scratch = String::new();
    while let Some(batch) = rows.next_batch() {
        for row in &batch {
            row.each_cell(columns, &mut |cell| {
                write_cell(&mut writer, cell, neutralize_formulas, &mut scratch)
            })?;
            writer.write_record(None::<&[u8]>).map_err(csv_err)?;
            written += 1;
        }
    }
    writer.flush()?;
    Ok(written)
}

fn csv_err(e: csv::Error) -> WriteError {
    WriteError::encode("CSV", e)
}

/// One field: text as is (or neutralised); other cells in their text form, written
/// through `scratch` (no allocation per cell).
fn write_cell<W: Write>(
    writer: &mut csv::Writer<W>,
    cell: CellRef<'_>,
    neutralize_formulas: bool,
    scratch: &mut String,
) -> Result<(), WriteError> {
    match cell {
        CellRef::Text(s) if neutralize_formulas => {
            writer.write_field(crate::formula_guard::escape(s).as_bytes())
        }
        CellRef::Text(s) | CellRef::RawJson(s) => writer.write_field(s),
        CellRef::Null => writer.write_field(""),
        other => {
            scratch.clear();
            other.push_text(scratch);
            writer.write_field(&*scratch)
        }
    }
    .map_err(csv_err)
}
