//! Avro object container files: a record schema with logical types (uuid,
//! timestamp-millis, date), every field nullable, deflate-compressed blocks. Avro
//! names allow only `[A-Za-z0-9_]`, so `attributes.tags.tier` becomes
//! `attributes_tags_tier` (a clash gets a `_2` suffix).

use std::io::Write;

use apache_avro::types::Value;
use apache_avro::{Codec, DeflateSettings, Schema, Writer};

use super::{RowSource, WriteError};
use crate::export::columns::{Cell, Column, Kind};

fn err(e: apache_avro::Error) -> WriteError {
    WriteError::encode("Avro", e)
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

pub fn schema(columns: &[Column]) -> Result<Schema, WriteError> {
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
    let schema = serde_json::json!({
        "type": "record",
        "name": "Entity",
        "namespace": "ferry.export",
        "fields": fields,
    });
    Schema::parse(&schema).map_err(err)
}

pub fn write<W: Write>(columns: &[Column], rows: &mut dyn RowSource, out: W) -> Result<u64, WriteError> {
    let schema = schema(columns)?;
    let names = field_names(columns);
    let kinds: Vec<Kind> = columns.iter().map(Column::kind).collect();
    let mut writer =
        Writer::with_codec(&schema, out, Codec::Deflate(DeflateSettings::default())).map_err(err)?;
    let mut written = 0u64;
    while let Some(batch) = rows.next_batch() {
        for row in batch {
            let fields = names
                .iter()
                .zip(kinds.iter().zip(row))
                .map(|(name, (kind, cell))| (name.clone(), value(*kind, &cell)))
                .collect();
            writer.append_value_ref(&Value::Record(fields)).map_err(err)?;
            written += 1;
        }
    }
    writer.flush().map_err(err)?;
    writer.into_inner().map_err(err)?.flush()?;
    Ok(written)
}

/// A nullable union value: branch 0 is null, branch 1 the column's type.
fn value(kind: Kind, cell: &Cell) -> Value {
    let inner = match (kind, cell) {
        (_, Cell::Null) => None,
        (Kind::Uuid, Cell::Text(s)) => uuid::Uuid::parse_str(s).ok().map(Value::Uuid),
        (Kind::Bool, Cell::Bool(b)) => Some(Value::Boolean(*b)),
        (Kind::Timestamp, Cell::Timestamp(ms)) => Some(Value::TimestampMillis(*ms)),
        (Kind::Date, Cell::Date(days)) => Some(Value::Date(*days)),
        (_, Cell::Text(s) | Cell::RawJson(s)) => Some(Value::String(s.clone())),
        (_, other) => other.to_text().map(Value::String),
    };
    match inner {
        Some(v) => Value::Union(1, Box::new(v)),
        None => Value::Union(0, Box::new(Value::Null)),
    }
}
