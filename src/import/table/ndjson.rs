//! NDJSON: one JSON object per line, its keys the columns. The columns are every key
//! of the file in first-seen order (a first pass collects them, so a key that first
//! appears late is still a column); a line is read with bounded memory. Values
//! become the text the contract reads: strings as they are, numbers and booleans as
//! JSON prints them, `null` as an empty cell, objects and arrays as JSON text (the
//! whole-object `attributes` and `entity_data` columns parse it back).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};

use serde_json::{Map, Value};

use super::{Header, MAX_FIELD_BYTES, Table, TableError, TableRow, too_large};
use crate::import::layout::{MAX_COLUMNS, Violation};

/// Longest line: the widest row of the largest cells the limits allow would not
/// fit, but no real row comes near.
pub const MAX_LINE_BYTES: usize = 16 * MAX_FIELD_BYTES;

pub(super) struct NdjsonTable<R> {
    input: BufReader<R>,
    /// The first line that is not an object, for a file without any.
    first_refused: Option<Violation>,
    keys: Vec<String>,
    index: HashMap<String, usize>,
    line: u64,
    buffer: Vec<u8>,
}

/// One line: its bytes (cut at [`MAX_LINE_BYTES`], then `too_long` is set).
struct Line {
    too_long: bool,
}

/// Reads the next line into `buffer` (without its end), keeping at most
/// [`MAX_LINE_BYTES`]; `None` at the end of the input.
fn read_line<R: BufRead>(input: &mut R, buffer: &mut Vec<u8>) -> std::io::Result<Option<Line>> {
    buffer.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let available = input.fill_buf()?;
        if available.is_empty() {
            return Ok(any.then_some(Line { too_long }));
        }
        any = true;
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(end) => (&available[..end], Some(end + 1)),
            None => (available, None),
        };
        let room = MAX_LINE_BYTES.saturating_sub(buffer.len());
        if chunk.len() > room {
            too_long = true;
        }
        buffer.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = done.unwrap_or(available.len());
        input.consume(used);
        if done.is_some() {
            if buffer.last() == Some(&b'\r') {
                buffer.pop();
            }
            return Ok(Some(Line { too_long }));
        }
    }
}

impl<R: Read + Seek> NdjsonTable<R> {
    /// Collects the file's keys in a first pass, then rewinds.
    pub(super) fn new(input: R) -> Result<NdjsonTable<R>, TableError> {
        let mut input = BufReader::with_capacity(64 * 1024, input);
        let mut keys = Vec::new();
        let mut index = HashMap::new();
        let mut buffer = Vec::new();
        let mut first_refused = None;
        let mut number = 0;
        while let Some(line) = read_line(&mut input, &mut buffer)? {
            number += 1;
            if line.too_long || index.len() > MAX_COLUMNS || buffer.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            // Lines that are not objects are rows with a problem (second pass).
            let object = match serde_json::from_slice::<Keys>(&buffer) {
                Ok(Keys(Some(keys))) => keys,
                Ok(Keys(None)) => {
                    first_refused.get_or_insert_with(|| {
                        Violation::at(number, "INVALID_JSON", "the line is not a JSON object")
                    });
                    continue;
                }
                Err(e) => {
                    if first_refused.is_none()
                        && let Err(v) = not_json(number, &buffer, &e).cells
                    {
                        first_refused = Some(v);
                    }
                    continue;
                }
            };
            for key in &object {
                if !index.contains_key(key) && index.len() <= MAX_COLUMNS {
                    index.insert(key.clone(), keys.len());
                    keys.push(key.clone());
                }
            }
        }
        input.seek(SeekFrom::Start(0))?;
        Ok(NdjsonTable {
            input,
            first_refused,
            keys,
            index,
            line: 0,
            buffer,
        })
    }

    /// The row of one line's object.
    fn row(&self, line: u64, object: Map<String, Value>) -> TableRow {
        let mut cells = vec![String::new(); self.keys.len()];
        for (key, value) in object {
            let Some(&i) = self.index.get(&key) else {
                continue;
            };
            let text = match value {
                Value::Null => String::new(),
                Value::String(text) => text,
                other => other.to_string(),
            };
            if text.len() > MAX_FIELD_BYTES {
                return TableRow::unreadable(too_large(line, &key, text.len()));
            }
            cells[i] = text;
        }
        TableRow::typed(line, cells)
    }
}

impl<R: Read + Seek> Table for NdjsonTable<R> {
    fn header(&mut self) -> Result<Option<Header>, TableError> {
        if self.keys.is_empty() {
            // No object anywhere: a file of blank lines, or of lines that are not objects.
            return match self.first_refused.take() {
                Some(problem) => Err(TableError::Refused(problem)),
                None => Ok(None),
            };
        }
        Ok(Some(Header {
            line: None,
            names: self.keys.iter().cloned().map(Some).collect(),
        }))
    }

    fn next_row(&mut self) -> Result<Option<TableRow>, TableError> {
        let mut buffer = std::mem::take(&mut self.buffer);
        let row = loop {
            let Some(line) = read_line(&mut self.input, &mut buffer)? else {
                break None;
            };
            self.line += 1;
            if buffer.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let at = self.line;
            if line.too_long {
                break Some(refused(
                    at,
                    "LINE_TOO_LARGE",
                    format!("the line is over {MAX_LINE_BYTES} bytes"),
                ));
            }
            break Some(match serde_json::from_slice::<Value>(&buffer) {
                Ok(Value::Object(object)) => self.row(at, object),
                Ok(_) => refused(at, "INVALID_JSON", "the line is not a JSON object"),
                Err(e) => not_json(at, &buffer, &e),
            });
        };
        self.buffer = buffer;
        Ok(row)
    }
}

/// The keys of a line's object in the order they are written (`None`: the line
/// holds another JSON value); values are skipped unparsed.
struct Keys(Option<Vec<String>>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Keys, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Keys;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(Keys(Some(keys)))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Keys, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Keys(None))
            }

            fn visit_bool<E>(self, _: bool) -> Result<Keys, E> {
                Ok(Keys(None))
            }

            fn visit_i64<E>(self, _: i64) -> Result<Keys, E> {
                Ok(Keys(None))
            }

            fn visit_u64<E>(self, _: u64) -> Result<Keys, E> {
                Ok(Keys(None))
            }

            fn visit_f64<E>(self, _: f64) -> Result<Keys, E> {
                Ok(Keys(None))
            }

            fn visit_str<E>(self, _: &str) -> Result<Keys, E> {
                Ok(Keys(None))
            }

            fn visit_unit<E>(self) -> Result<Keys, E> {
                Ok(Keys(None))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A line that is not JSON: named INVALID_UTF8 when its bytes are not text.
fn not_json(line: u64, bytes: &[u8], err: &serde_json::Error) -> TableRow {
    match std::str::from_utf8(bytes) {
        Ok(_) => refused(line, "INVALID_JSON", format!("the line is not valid JSON: {err}")),
        Err(_) => refused(line, "INVALID_UTF8", "the line is not valid UTF-8"),
    }
}

fn refused(line: u64, code: &'static str, message: impl Into<String>) -> TableRow {
    TableRow::unreadable(Violation::at(line, code, message))
}
