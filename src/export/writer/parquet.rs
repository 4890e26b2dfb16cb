//! Parquet: a typed Arrow schema (timestamps in UTC, dates, booleans, strings; nested
//! JSON as string columns), zstd, row groups of 64k rows so memory stays bounded.
//! Encodings are chosen per column ([`tune`]): a dictionary only where values
//! repeat, since a dictionary over unique values leaves ~2 bytes of incompressible
//! index per row (that alone doubled the file against DuckDB's).

use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Date32Builder, StringBuilder, TimestampMillisecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;

use super::{Record, RowSource, WriteError};
use crate::export::columns::{self, CellRef, Column, Kind};

const ROW_GROUP_ROWS: usize = 64 * 1024;

pub fn data_type(kind: Kind) -> DataType {
    match kind {
        Kind::Bool => DataType::Boolean,
        Kind::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        Kind::Date => DataType::Date32,
        Kind::Uuid | Kind::Text | Kind::Json | Kind::Dynamic => DataType::Utf8,
    }
}

/// Writes every row as Parquet into `out` and returns the rows written and `out`
/// (so the caller can finish the file). Rows are any [`Record`]: built cells, or
/// entities read in place.
pub fn write<R: Record, W: Write + Send>(
    columns: &[Column],
    rows: &mut dyn RowSource<R>,
    out: W,
) -> Result<(u64, W), WriteError> {
    let err = |e: parquet::errors::ParquetError| WriteError::encode("Parquet", e);
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| Field::new(c.key(), data_type(c.kind()), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let level = ZstdLevel::try_new(3).map_err(err)?;
    let props = columns
        .iter()
        .fold(
            WriterProperties::builder()
                .set_compression(Compression::ZSTD(level))
                .set_max_row_group_row_count(Some(ROW_GROUP_ROWS)),
            tune,
        )
        .build();
    let mut writer = ArrowWriter::try_new(out, schema.clone(), Some(props)).map_err(err)?;
    let mut written = 0u64;
    while let Some(batch) = rows.next_batch() {
        if batch.is_empty() {
            continue;
        }
        let mut builders: Vec<ColumnBuilder> = columns
            .iter()
            .map(|c| ColumnBuilder::new(c.kind(), batch.len()))
            .collect();
        for row in &batch {
            let mut index = 0;
            row.each_cell(columns, &mut |cell| {
                if let Some(builder) = builders.get_mut(index) {
                    builder.append(cell);
                }
                index += 1;
                Ok(())
            })?;
        }
        let arrays: Vec<ArrayRef> = builders.into_iter().map(ColumnBuilder::finish).collect();
        let record =
            RecordBatch::try_new(schema.clone(), arrays).map_err(|e| WriteError::encode("Arrow", e))?;
        writer.write(&record).map_err(err)?;
        written += batch.len() as u64;
    }
    // Writes the footer too.
    let out = writer.into_inner().map_err(err)?;
    Ok((written, out))
}

/// A column's encoding by what it holds. Ids are UUIDv7 in creation order (the
/// export's order), so consecutive ids share their time prefix: DELTA_BYTE_ARRAY
/// stores each once. Timestamps grow with the same order: DELTA_BINARY_PACKED
/// leaves a few bits a row. Tax IDs, names, e-mails, phones and external ids are
/// mostly unique: plain, for zstd to compress. Everything else (types, countries,
/// statuses, dates, JSON that repeats) keeps the writer's dictionary, which falls
/// back to plain when a chunk's values do not repeat.
fn tune(builder: WriterPropertiesBuilder, column: &Column) -> WriterPropertiesBuilder {
    let path = ColumnPath::new(vec![column.key()]);
    let plain = |b: WriterPropertiesBuilder, encoding| {
        b.set_column_dictionary_enabled(path.clone(), false)
            .set_column_encoding(path.clone(), encoding)
    };
    use columns::Field as F;
    match column {
        Column::Field(F::Id) => plain(builder, Encoding::DELTA_BYTE_ARRAY),
        Column::Field(F::CreatedAt | F::UpdatedAt) => plain(builder, Encoding::DELTA_BINARY_PACKED),
        Column::Field(F::TaxId | F::Name | F::Email | F::Phone | F::ExternalId) => {
            plain(builder, Encoding::PLAIN)
        }
        _ => builder,
    }
}

/// One column of a batch being built, typed by the column's kind.
enum ColumnBuilder {
    Bool(BooleanBuilder),
    Timestamp(TimestampMillisecondBuilder),
    Date(Date32Builder),
    Text(StringBuilder, String),
}

impl ColumnBuilder {
    fn new(kind: Kind, rows: usize) -> ColumnBuilder {
        match kind {
            Kind::Bool => ColumnBuilder::Bool(BooleanBuilder::with_capacity(rows)),
            Kind::Timestamp => ColumnBuilder::Timestamp(TimestampMillisecondBuilder::with_capacity(rows)),
            Kind::Date => ColumnBuilder::Date(Date32Builder::with_capacity(rows)),
            Kind::Uuid | Kind::Text | Kind::Json | Kind::Dynamic => {
                ColumnBuilder::Text(StringBuilder::with_capacity(rows, rows * 16), String::new())
            }
        }
    }

    /// A cell of another type than the column's is null (the column's kind fixes
    /// the cell's type, except for path columns, which are text).
    fn append(&mut self, cell: CellRef<'_>) {
        match self {
            ColumnBuilder::Bool(b) => b.append_option(if let CellRef::Bool(v) = cell {
                Some(v)
            } else {
                None
            }),
            ColumnBuilder::Timestamp(b) => b.append_option(if let CellRef::Timestamp(v) = cell {
                Some(v)
            } else {
                None
            }),
            ColumnBuilder::Date(b) => b.append_option(if let CellRef::Date(v) = cell {
                Some(v)
            } else {
                None
            }),
            ColumnBuilder::Text(b, scratch) => match cell {
                CellRef::Null => b.append_null(),
                CellRef::Text(s) | CellRef::RawJson(s) => b.append_value(s),
                other => {
                    scratch.clear();
                    other.push_text(scratch);
                    b.append_value(&*scratch)
                }
            },
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            ColumnBuilder::Bool(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(mut b) => Arc::new(b.finish().with_timezone("UTC")),
            ColumnBuilder::Date(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Text(mut b, _) => Arc::new(b.finish()),
        }
    }
}
