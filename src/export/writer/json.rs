//! JSON (one array of objects) and NDJSON (one object per line). Objects keep the
//! column order; `attributes` and `entity_data` stay nested objects.

use std::io::Write;

use super::{RowSource, WriteError};
use crate::export::columns::Cell;

/// Writes `rows` as objects keyed by `headers` ([`crate::export::columns::headers`]).
pub fn write(
    headers: &[String],
    rows: &mut dyn RowSource,
    out: &mut impl Write,
    lines: bool,
) -> Result<u64, WriteError> {
    let keys: Vec<String> = headers
        .iter()
        .map(|h| serde_json::to_string(h).unwrap_or_default())
        .collect();
    let mut written = 0u64;
    if !lines {
        out.write_all(b"[")?;
    }
    let mut buffer = Vec::with_capacity(4096);
    while let Some(batch) = rows.next_batch() {
        for row in batch {
            buffer.clear();
            if !lines {
                buffer.extend_from_slice(if written == 0 { b"\n" } else { b",\n" });
            }
            object(&keys, &row, &mut buffer)?;
            if lines {
                buffer.push(b'\n');
            }
            out.write_all(&buffer)?;
            written += 1;
        }
    }
    if !lines {
        out.write_all(b"\n]\n")?;
    }
    Ok(written)
}

fn object(keys: &[String], row: &[Cell], out: &mut Vec<u8>) -> Result<(), WriteError> {
    let json_err = |e: serde_json::Error| WriteError::encode("JSON", e);
    out.push(b'{');
    for (i, (key, cell)) in keys.iter().zip(row).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(key.as_bytes());
        out.push(b':');
        match cell {
            Cell::Null => out.extend_from_slice(b"null"),
            Cell::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Cell::Json(value) => serde_json::to_writer(&mut *out, value).map_err(json_err)?,
            Cell::RawJson(text) => out.extend_from_slice(text.as_bytes()),
            Cell::Text(s) => serde_json::to_writer(&mut *out, s).map_err(json_err)?,
            other => serde_json::to_writer(&mut *out, &other.to_text()).map_err(json_err)?,
        }
    }
    out.push(b'}');
    Ok(())
}
