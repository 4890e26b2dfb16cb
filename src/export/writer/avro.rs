//! Avro object container files, encoded straight from each row's cells by the
//! schema (no value tree per record): a record schema with logical types (uuid,
//! timestamp-millis, date), every field a nullable union, blocks of about 1 MiB
//! compressed with the chosen codec (deflate, the default for the widest reader
//! support; snappy; zstd; or none). Avro names allow only `[A-Za-z0-9_]`, so
//! `attributes.tags.tier` becomes `attributes_tags_tier` (a clash gets a `_2`
//! suffix; the column key is the field's `doc`).

use std::io::Write;

use serde::{Deserialize, Serialize};

use super::{Record, RowSource, WriteError};
use crate::export::columns::{CellRef, Column, Kind};

/// Uncompressed bytes a block collects before it is compressed and written.
const BLOCK_BYTES: usize = 1 << 20;
const MAGIC: &[u8; 4] = b"Obj\x01";
const DEFLATE_LEVEL: u32 = 6;
const ZSTD_LEVEL: i32 = 3;

/// The block codec of an Avro export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AvroCodec {
    /// Read by every Avro library.
    #[default]
    Deflate,
    Snappy,
    Zstd,
    Null,
}

impl AvroCodec {
    /// The name the file's `avro.codec` metadata gives it.
    fn name(self) -> &'static str {
        match self {
            AvroCodec::Deflate => "deflate",
            AvroCodec::Snappy => "snappy",
            AvroCodec::Zstd => "zstandard",
            AvroCodec::Null => "null",
        }
    }
}

fn err(format: &'static str) -> impl Fn(std::io::Error) -> WriteError {
    move |e| WriteError::encode(format, e)
}

/// Avro field names for the columns, unique.
pub fn field_names(columns: &[Column]) -> Vec<String> {
    let mut names: Vec<String> = Vec::with_capacity(columns.len());
    for column in columns {
        let mut base: String = column
            .key()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if base.starts_with(|c: char| c.is_ascii_digit()) {
            base.insert(0, '_');
        }
        let mut name = base.clone();
        let mut n = 2;
        while names.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        names.push(name);
    }
    names
}

fn avro_type(kind: Kind) -> serde_json::Value {
    match kind {
        Kind::Uuid => serde_json::json!({"type": "string", "logicalType": "uuid"}),
        Kind::Bool => serde_json::json!("boolean"),
        Kind::Timestamp => serde_json::json!({"type": "long", "logicalType": "timestamp-millis"}),
        Kind::Date => serde_json::json!({"type": "int", "logicalType": "date"}),
        Kind::Text | Kind::Json | Kind::Dynamic => serde_json::json!("string"),
    }
}

/// The file's schema, as JSON text.
pub fn schema(columns: &[Column]) -> String {
    let fields: Vec<serde_json::Value> = field_names(columns)
        .into_iter()
        .zip(columns)
        .map(|(name, c)| {
            serde_json::json!({
                "name": name,
                "type": ["null", avro_type(c.kind())],
                "default": null,
                "doc": c.key(),
            })
        })
        .collect();
    serde_json::json!({
        "type": "record",
        "name": "Entity",
        "namespace": "ferry.export",
        "fields": fields,
    })
    .to_string()
}

/// Avro's `long` and `int`: zig-zag, then a base-128 varint.
fn put_long(out: &mut Vec<u8>, value: i64) {
    let mut n = ((value << 1) ^ (value >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}

/// One cell as its nullable union: branch 0 (null) or branch 1 and the value. A
/// cell of another type than the column's is null (as in Parquet), except in text
/// columns, which take any cell as text.
fn put_cell(out: &mut Vec<u8>, kind: Kind, cell: CellRef<'_>, scratch: &mut String) {
    const NULL: u8 = 0;
    const VALUE: u8 = 2;
    match (kind, cell) {
        (_, CellRef::Null) => out.push(NULL),
        (Kind::Bool, CellRef::Bool(b)) => out.extend_from_slice(&[VALUE, u8::from(b)]),
        (Kind::Timestamp, CellRef::Timestamp(ms)) => {
            out.push(VALUE);
            put_long(out, ms);
        }
        (Kind::Date, CellRef::Date(days)) => {
            out.push(VALUE);
            put_long(out, i64::from(days));
        }
        (Kind::Bool | Kind::Timestamp | Kind::Date, _) => out.push(NULL),
        (_, CellRef::Text(s) | CellRef::RawJson(s)) => {
            out.push(VALUE);
            put_bytes(out, s.as_bytes());
        }
        (_, other) => {
            scratch.clear();
            other.push_text(scratch);
            out.push(VALUE);
            put_bytes(out, scratch.as_bytes());
        }
    }
}

/// Compresses and writes blocks of encoded records.
struct Blocks<W> {
    out: W,
    codec: AvroCodec,
    sync: [u8; 16],
    records: i64,
    data: Vec<u8>,
    compressed: Vec<u8>,
    header: Vec<u8>,
}

impl<W: Write> Blocks<W> {
    fn new(mut out: W, schema: &str, codec: AvroCodec) -> Result<Blocks<W>, WriteError> {
        let sync: [u8; 16] = rand::random();
        let mut header = Vec::with_capacity(schema.len() + 64);
        header.extend_from_slice(MAGIC);
        put_long(&mut header, 2);
        put_bytes(&mut header, b"avro.schema");
        put_bytes(&mut header, schema.as_bytes());
        put_bytes(&mut header, b"avro.codec");
        put_bytes(&mut header, codec.name().as_bytes());
        put_long(&mut header, 0);
        header.extend_from_slice(&sync);
        out.write_all(&header)?;
        Ok(Blocks {
            out,
            codec,
            sync,
            records: 0,
            data: Vec::with_capacity(BLOCK_BYTES + 64 * 1024),
            compressed: Vec::new(),
            header: Vec::with_capacity(20),
        })
    }

    /// Ends a record; a full block is written.
    fn record_done(&mut self) -> Result<(), WriteError> {
        self.records += 1;
        if self.data.len() >= BLOCK_BYTES {
            self.flush_block()?;
        }
        Ok(())
    }

    fn flush_block(&mut self) -> Result<(), WriteError> {
        if self.records == 0 {
            return Ok(());
        }
        self.compressed.clear();
        let body: &[u8] = match self.codec {
            AvroCodec::Null => &self.data,
            AvroCodec::Deflate => {
                let mut encoder = flate2::write::DeflateEncoder::new(
                    std::mem::take(&mut self.compressed),
                    flate2::Compression::new(DEFLATE_LEVEL),
                );
                encoder.write_all(&self.data).map_err(err("Avro deflate"))?;
                self.compressed = encoder.finish().map_err(err("Avro deflate"))?;
                &self.compressed
            }
            AvroCodec::Snappy => {
                let bound = snap::raw::max_compress_len(self.data.len());
                self.compressed.resize(bound, 0);
                let n = snap::raw::Encoder::new()
                    .compress(&self.data, &mut self.compressed)
                    .map_err(|e| WriteError::encode("Avro snappy", e))?;
                self.compressed.truncate(n);
                // Avro's snappy blocks end with the CRC-32 of the uncompressed data.
                self.compressed
                    .extend_from_slice(&crc32fast::hash(&self.data).to_be_bytes());
                &self.compressed
            }
            AvroCodec::Zstd => {
                self.compressed = zstd::bulk::compress(&self.data, ZSTD_LEVEL).map_err(err("Avro zstd"))?;
                &self.compressed
            }
        };
        self.header.clear();
        put_long(&mut self.header, self.records);
        put_long(&mut self.header, body.len() as i64);
        self.out.write_all(&self.header)?;
        self.out.write_all(body)?;
        self.out.write_all(&self.sync)?;
        self.records = 0;
        self.data.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<W, WriteError> {
        self.flush_block()?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Writes every row as an Avro container file into `out` and returns the rows
/// written and `out`. Rows are any [`Record`]: built cells, or entities read in
/// place.
pub fn write<R: Record, W: Write>(
    columns: &[Column],
    rows: &mut dyn RowSource<R>,
    out: W,
    codec: AvroCodec,
) -> Result<(u64, W), WriteError> {
    let kinds: Vec<Kind> = columns.iter().map(Column::kind).collect();
    let mut blocks = Blocks::new(out, &schema(columns), codec)?;
    let mut scratch = String::new();
    let mut written = 0u64;
    while let Some(batch) = rows.next_batch() {
        for row in &batch {
            let mut index = 0;
            row.each_cell(columns, &mut |cell| {
                let kind = kinds.get(index).copied().unwrap_or(Kind::Text);
                put_cell(&mut blocks.data, kind, cell, &mut scratch);
                index += 1;
                Ok(())
            })?;
            blocks.record_done()?;
            written += 1;
        }
    }
    Ok((written, blocks.finish()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longs_are_zig_zag_varints() {
        let encoded = |n: i64| {
            let mut out = Vec::new();
            put_long(&mut out, n);
            out
        };
        assert_eq!(encoded(0), [0]);
        assert_eq!(encoded(-1), [1]);
        assert_eq!(encoded(1), [2]);
        assert_eq!(encoded(64), [0x80, 0x01]);
        assert_eq!(
            encoded(i64::MIN),
            [0xff; 9].iter().copied().chain([1]).collect::<Vec<u8>>()
        );
    }
}
