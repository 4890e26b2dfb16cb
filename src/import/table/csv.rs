//! CSV through the `csv` crate over bytes (invalid UTF-8 is reported per line, not
//! as a crash), ragged rows reported with their line, an unclosed quote found at the
//! end, and a CSV export's formula guard removed from the cells the contract reads
//! ([`crate::formula_guard`]).

use std::io::Read;

use csv::ByteRecord;

use super::{Header, Table, TableError, TableRow, too_large};
use crate::formula_guard;
use crate::import::layout::Violation;

/// A CSV reader over bytes that tolerates ragged rows (they are reported, with
/// their line, instead of stopping the read).
fn reader<R: Read>(input: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(64 * 1024)
        .from_reader(input)
}

/// The line a record starts on.
fn line_of(record: &ByteRecord) -> u64 {
    record.position().map_or(0, |p| p.line())
}

/// A record with only empty cells (a trailing `,,,` line) is not a row.
fn is_blank(record: &ByteRecord) -> bool {
    record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace))
}

pub(super) struct CsvTable<R> {
    reader: csv::Reader<QuoteTracker<R>>,
    record: ByteRecord,
    /// Header names, for messages, once read.
    names: Vec<String>,
}

impl<R: Read> CsvTable<R> {
    pub(super) fn new(input: R) -> CsvTable<R> {
        CsvTable {
            reader: reader(QuoteTracker::new(input)),
            record: ByteRecord::new(),
            names: Vec::new(),
        }
    }

    fn read_record(&mut self) -> Result<bool, TableError> {
        self.reader
            .read_byte_record(&mut self.record)
            .map_err(|e| TableError::Io(std::io::Error::other(e.to_string())))
    }
}

impl<R: Read> Table for CsvTable<R> {
    fn header(&mut self) -> Result<Option<Header>, TableError> {
        if !self.read_record()? {
            return Ok(None);
        }
        let names: Vec<Option<String>> = self
            .record
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                let text = std::str::from_utf8(raw).ok()?;
                Some(
                    if i == 0 {
                        text.trim_start_matches('\u{feff}')
                    } else {
                        text
                    }
                    .to_string(),
                )
            })
            .collect();
        self.names = names
            .iter()
            .enumerate()
            .map(|(i, n)| n.clone().unwrap_or_else(|| format!("column {}", i + 1)))
            .collect();
        Ok(Some(Header {
            line: Some(line_of(&self.record).max(1)),
            names,
        }))
    }

    fn next_row(&mut self) -> Result<Option<TableRow>, TableError> {
        loop {
            if !self.read_record()? {
                return Ok(None);
            }
            if is_blank(&self.record) {
                continue;
            }
            let line = line_of(&self.record);
            return Ok(Some(match cells(&self.record, &self.names) {
                Ok(cells) if cells.iter().any(|c| formula_guard::unescape(c).len() != c.len()) => {
                    let unguarded = cells
                        .iter()
                        .map(|c| formula_guard::unescape(c).to_string())
                        .collect();
                    TableRow {
                        line,
                        cells: Ok(unguarded),
                        raw: Some(cells),
                        issues: Vec::new(),
                    }
                }
                Ok(cells) => TableRow {
                    line,
                    cells: Ok(cells),
                    raw: None,
                    issues: Vec::new(),
                },
                Err(violation) => TableRow {
                    line,
                    cells: Err(violation),
                    raw: Some(
                        self.record
                            .iter()
                            .map(|f| String::from_utf8_lossy(f).into_owned())
                            .collect(),
                    ),
                    issues: Vec::new(),
                },
            }));
        }
    }

    fn end_problem(&self) -> Option<Violation> {
        self.reader.get_ref().unclosed_quote().map(|opened| {
            Violation::at(
                opened,
                "UNCLOSED_QUOTE",
                "a quoted cell opened on this line is never closed, so it would swallow the rest of the file",
            )
        })
    }
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
fn cells(record: &ByteRecord, headers: &[String]) -> Result<Vec<String>, Violation> {
    let line = line_of(record);
    if record.len() != headers.len() {
        return Err(Violation::at(
            line,
            "RAGGED_ROW",
            format!(
                "the row has {} cells; the header has {}",
                record.len(),
                headers.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(record.len());
    for (i, raw) in record.iter().enumerate() {
        if raw.len() > super::MAX_FIELD_BYTES {
            return Err(too_large(line, &headers[i], raw.len()));
        }
        match std::str::from_utf8(raw) {
            Ok(text) => out.push(text.to_string()),
            Err(_) => {
                return Err(Violation::at(
                    line,
                    "INVALID_UTF8",
                    format!("column `{}` is not valid UTF-8", headers[i]),
                ));
            }
        }
    }
    Ok(out)
}
