//! Parquet: a typed Arrow schema (timestamps in UTC, dates, booleans, strings; nested
//! JSON as string columns), zstd, row groups of 64k rows so memory stays bounded.

use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Date32Builder, StringBuilder, TimestampMillisecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::{RowSource, WriteError};
use crate::export::columns::{Cell, Column, Kind};

const ROW_GROUP_ROWS: usize = 64 * 1024;

pub fn data_type(kind: Kind) -> DataType {
    match kind {
        Kind::Bool => DataType::Boolean,
        Kind::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        Kind::Date => DataType::Date32,
        Kind::Uuid | Kind::Text | Kind::Json | Kind::Dynamic => DataType::Utf8,
    }
}

pub fn write<W: Write + Send>(
    columns: &[Column],
    rows: &mut dyn RowSource,
    out: W,
) -> Result<u64, WriteError> {
    let err = |e: parquet::errors::ParquetError| WriteError::encode("Parquet", e);
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| Field::new(c.key(), data_type(c.kind()), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let level = ZstdLevel::try_new(3).map_err(err)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let mut writer = ArrowWriter::try_new(out, schema.clone(), Some(props)).map_err(err)?;
    let mut written = 0u64;
    while let Some(batch) = rows.next_batch() {
        if batch.is_empty() {
            continue;
        }
        let arrays: Vec<ArrayRef> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| array(c.kind(), &batch, i))
            .collect();
        let record =
            RecordBatch::try_new(schema.clone(), arrays).map_err(|e| WriteError::encode("Arrow", e))?;
        writer.write(&record).map_err(err)?;
        written += batch.len() as u64;
    }
    writer.close().map_err(err)?;
    Ok(written)
}

/// Column `index` of a batch as an Arrow array of the column's type.
fn array(kind: Kind, rows: &[Vec<Cell>], index: usize) -> ArrayRef {
    let cells = rows.iter().map(|row| &row[index]);
    match kind {
        Kind::Bool => {
            let mut b = BooleanBuilder::with_capacity(rows.len());
            cells.for_each(|c| b.append_option(if let Cell::Bool(v) = c { Some(*v) } else { None }));
            Arc::new(b.finish())
        }
        Kind::Timestamp => {
            let mut b = TimestampMillisecondBuilder::with_capacity(rows.len());
            cells.for_each(|c| {
                b.append_option(if let Cell::Timestamp(v) = c {
                    Some(*v)
                } else {
                    None
                })
            });
            Arc::new(b.finish().with_timezone("UTC"))
        }
        Kind::Date => {
            let mut b = Date32Builder::with_capacity(rows.len());
            cells.for_each(|c| b.append_option(if let Cell::Date(v) = c { Some(*v) } else { None }));
            Arc::new(b.finish())
        }
        Kind::Uuid | Kind::Text | Kind::Json | Kind::Dynamic => {
            let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 16);
            cells.for_each(|c| match c {
                Cell::Null => b.append_null(),
                Cell::Text(s) | Cell::RawJson(s) => b.append_value(s),
                other => b.append_option(other.to_text()),
            });
            Arc::new(b.finish())
        }
    }
}
