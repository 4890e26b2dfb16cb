//! Format writers. Each runs on a blocking thread, pulls row batches from a
//! [`RowSource`] and writes a file on local disk; memory stays bounded by one batch
//! (one row group for Parquet) whatever the row count.

pub mod avro;
pub mod csv;
pub mod json;
pub mod parquet;
pub mod xlsx;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::write::GzEncoder;

use super::columns::{Cell, Column};
use super::format::{Compression, Format};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("writing the export file failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("{format} encoding failed: {message}")]
    Encode { format: &'static str, message: String },
}

impl WriteError {
    fn encode(format: &'static str, err: impl std::fmt::Display) -> WriteError {
        WriteError::Encode {
            format,
            message: err.to_string(),
        }
    }
}

/// Batches of rows, `None` at the end (or when the producer stopped).
pub trait RowSource {
    fn next_batch(&mut self) -> Option<Vec<Vec<Cell>>>;
}

impl RowSource for tokio::sync::mpsc::Receiver<Vec<Vec<Cell>>> {
    fn next_batch(&mut self) -> Option<Vec<Vec<Cell>>> {
        self.blocking_recv()
    }
}

impl RowSource for std::vec::IntoIter<Vec<Vec<Cell>>> {
    fn next_batch(&mut self) -> Option<Vec<Vec<Cell>>> {
        self.next()
    }
}

#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub format: Format,
    pub compression: Compression,
    pub csv_bom: bool,
    pub neutralize_formulas: bool,
}

/// Writes every row of `rows` to `path`; returns the number of rows written.
/// `bytes` follows the file's size as it grows (for progress).
pub fn write_file(
    options: &WriterOptions,
    columns: &[Column],
    rows: &mut dyn RowSource,
    path: &Path,
    bytes: Arc<AtomicU64>,
) -> Result<u64, WriteError> {
    match options.format {
        Format::Xlsx => xlsx::write(columns, rows, path),
        Format::Parquet => parquet::write(columns, rows, counting_file(path, bytes)?),
        Format::Avro => avro::write(columns, rows, counting_file(path, bytes)?),
        Format::Csv | Format::Json | Format::Ndjson => {
            let mut sink = TextSink::new(counting_file(path, bytes)?, options.compression);
            let rows = match options.format {
                Format::Csv => csv::write(
                    columns,
                    rows,
                    &mut sink,
                    options.csv_bom,
                    options.neutralize_formulas,
                )?,
                Format::Json => json::write(columns, rows, &mut sink, false)?,
                _ => json::write(columns, rows, &mut sink, true)?,
            };
            sink.finish()?;
            Ok(rows)
        }
    }
}

fn counting_file(path: &Path, bytes: Arc<AtomicU64>) -> Result<CountingWriter<BufWriter<File>>, WriteError> {
    Ok(CountingWriter {
        inner: BufWriter::with_capacity(256 * 1024, File::create(path)?),
        bytes,
    })
}

/// Counts the bytes that reach the file.
pub struct CountingWriter<W> {
    inner: W,
    bytes: Arc<AtomicU64>,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
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

    /// Flushes everything, writing the gzip trailer.
    pub fn finish(self) -> std::io::Result<()> {
        match self {
            TextSink::Plain(mut w) => w.flush(),
            TextSink::Gzip(gz) => gz.finish()?.flush(),
        }
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
