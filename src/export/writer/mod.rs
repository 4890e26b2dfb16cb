//! Format writers. Each runs on a blocking thread, pulls row batches from a
//! [`RowSource`] and writes a file on local disk; memory stays bounded by one batch
//! (one row group for Parquet) whatever the row count.

pub mod avro;
pub mod csv;
pub mod file_sink;
pub mod json;
pub mod parquet;
pub mod xlsx;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use flate2::write::GzEncoder;

use self::file_sink::PipedFile;

use super::columns::{Cell, CellRef, Column, headers};
use super::format::{Compression, Format};
use crate::db::entity_source::StoredEntity;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("writing the export file failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("{format} encoding failed: {message}")]
    Encode { format: &'static str, message: String },
}

impl WriteError {
    pub(crate) fn encode(format: &'static str, err: impl std::fmt::Display) -> WriteError {
        WriteError::Encode {
            format,
            message: err.to_string(),
        }
    }
}

/// Batches of rows, `None` at the end (or when the producer stopped). Rows are
/// built cells by default; the CSV and Parquet writers take any [`Record`].
pub trait RowSource<R = Vec<Cell>> {
    fn next_batch(&mut self) -> Option<Vec<R>>;
}

impl<R> RowSource<R> for tokio::sync::mpsc::Receiver<Vec<R>> {
    fn next_batch(&mut self) -> Option<Vec<R>> {
        self.blocking_recv()
    }
}

impl<R> RowSource<R> for std::vec::IntoIter<Vec<R>> {
    fn next_batch(&mut self) -> Option<Vec<R>> {
        self.next()
    }
}

/// A row the CSV and Parquet writers read cell by cell without it being built first.
pub trait Record {
    /// Calls `each` with the row's cells in the order of `columns`.
    fn each_cell(
        &self,
        columns: &[Column],
        each: &mut dyn FnMut(CellRef<'_>) -> Result<(), WriteError>,
    ) -> Result<(), WriteError>;
}

/// An entity as read, handed to the CSV or Parquet writer where it lies.
impl Record for StoredEntity {
    fn each_cell(
        &self,
        columns: &[Column],
        each: &mut dyn FnMut(CellRef<'_>) -> Result<(), WriteError>,
    ) -> Result<(), WriteError> {
        let entity = self.view().map_err(|e| WriteError::encode("entity row", e))?;
        super::columns::each_cell(&entity, columns, each)
    }
}

impl Record for Vec<Cell> {
    fn each_cell(
        &self,
        _columns: &[Column],
        each: &mut dyn FnMut(CellRef<'_>) -> Result<(), WriteError>,
    ) -> Result<(), WriteError> {
        self.iter().try_for_each(|cell| each(cell.as_ref()))
    }
}

#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub format: Format,
    pub compression: Compression,
    pub csv_bom: bool,
    pub neutralize_formulas: bool,
    /// Index into the columns of the one `expand_array` expands.
    pub expand_array: Option<usize>,
    pub avro_codec: avro::AvroCodec,
}

impl WriterOptions {
    /// The options an export asked for.
    pub fn of(spec: &super::spec::ExportSpec) -> WriterOptions {
        WriterOptions {
            format: spec.format,
            compression: spec.compression,
            csv_bom: spec.csv_bom,
            neutralize_formulas: spec.neutralize_formulas,
            expand_array: spec.expand_array,
            avro_codec: spec.avro_codec.unwrap_or_default(),
        }
    }
}

/// What a writer leaves: rows written and, for CSV, JSON, NDJSON and Parquet (hashed
/// while written by [`PipedFile`], which saves reading the file again), the file's
/// SHA-256.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub rows: u64,
    pub sha256: Option<String>,
}

/// Writes every row of `rows` to `path`. `bytes` follows the file's size as it
/// grows (for progress).
pub fn write_file(
    options: &WriterOptions,
    columns: &[Column],
    rows: &mut dyn RowSource,
    path: &Path,
    bytes: Arc<AtomicU64>,
) -> Result<Written, WriteError> {
    let unhashed = |rows| Written { rows, sha256: None };
    match options.format {
        Format::Xlsx => xlsx::write(&headers(columns, options.expand_array), rows, path).map(unhashed),
        Format::Csv | Format::Parquet | Format::Avro => write_records(options, columns, rows, path, bytes),
        Format::Json | Format::Ndjson => {
            let mut sink = TextSink::new(PipedFile::create(path, bytes)?, options.compression);
            let headers = headers(columns, options.expand_array);
            let rows = json::write(&headers, rows, &mut sink, options.format == Format::Ndjson)?;
            let sha256 = Some(sink.finish()?.finish()?);
            Ok(Written { rows, sha256 })
        }
    }
}

/// Whether [`write_records`] writes the format: it reads rows cell by cell, so the
/// job can hand it entities as read instead of building cells first.
pub fn reads_records(format: Format) -> bool {
    matches!(format, Format::Csv | Format::Parquet | Format::Avro)
}

/// [`write_file`] for the formats of [`reads_records`], from rows of any [`Record`].
pub fn write_records<R: Record>(
    options: &WriterOptions,
    columns: &[Column],
    rows: &mut dyn RowSource<R>,
    path: &Path,
    bytes: Arc<AtomicU64>,
) -> Result<Written, WriteError> {
    let file = PipedFile::create(path, bytes)?;
    let (rows, file) = match options.format {
        Format::Parquet => parquet::write(columns, rows, file)?,
        Format::Avro => avro::write(columns, rows, file, options.avro_codec)?,
        Format::Csv => {
            let mut sink = TextSink::new(file, options.compression);
            let rows = csv::write(
                columns,
                &headers(columns, options.expand_array),
                rows,
                &mut sink,
                options.csv_bom,
                options.neutralize_formulas,
            )?;
            (rows, sink.finish()?)
        }
        other => {
            return Err(WriteError::Encode {
                format: other.extension(),
                message: "this format is written from built cells".into(),
            });
        }
    };
    Ok(Written {
        rows,
        sha256: Some(file.finish()?),
    })
}

/// The output of a text format, gzipped or not.
pub enum TextSink<W: Write> {
    Plain(W),
    Gzip(Box<GzEncoder<W>>),
}

impl<W: Write> TextSink<W> {
    pub fn new(inner: W, compression: Compression) -> TextSink<W> {
        match compression {
            Compression::None => TextSink::Plain(inner),
            Compression::Gzip => TextSink::Gzip(Box::new(GzEncoder::new(inner, flate2::Compression::fast()))),
        }
    }

    /// Flushes everything, writing the gzip trailer; returns the file's writer.
    pub fn finish(self) -> std::io::Result<W> {
        let mut inner = match self {
            TextSink::Plain(w) => w,
            TextSink::Gzip(gz) => gz.finish()?,
        };
        inner.flush()?;
        Ok(inner)
    }
}

impl<W: Write> Write for TextSink<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            TextSink::Plain(w) => w.write(buf),
            TextSink::Gzip(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            TextSink::Plain(w) => w.flush(),
            TextSink::Gzip(w) => w.flush(),
        }
    }
}
