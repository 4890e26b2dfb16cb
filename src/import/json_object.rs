//! A JSON object given as text, as the import options `attributes` and
//! `monitoring` and the whole-object cells `attributes` and `entity_data` are:
//! parsed, within the nesting limit and free of NUL characters, so what is stored
//! reads back on both backends and in every client.

use serde_json::{Map, Value};

use super::headers::MAX_DEPTH;

/// Why the text is not a usable JSON object: a row-error code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: &'static str,
    pub message: String,
}

fn refused(code: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        code,
        message: message.into(),
    }
}

/// The object `text` holds; an empty text is an empty object.
pub fn parse(text: &str) -> Result<Map<String, Value>, Refused> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| refused("INVALID_JSON", format!("is not valid JSON: {e}")))?;
    let depth = depth(&value);
    if depth > MAX_DEPTH {
        return Err(refused(
            "TOO_DEEP",
            format!("nests {depth} levels; at most {MAX_DEPTH} are allowed"),
        ));
    }
    if has_nul(&value) {
        return Err(refused(
            "INVALID_CHARACTER",
            "contains a NUL character (U+0000), which cannot be stored",
        ));
    }
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(refused("INVALID_JSON", "must be a JSON object")),
    }
}

/// Deep merge: `over`'s values win; objects on both sides merge key by key.
pub fn merge(base: &mut Map<String, Value>, over: Map<String, Value>) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Object(existing)), Value::Object(incoming)) => merge(existing, incoming),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Levels of objects and arrays, counting the outermost.
pub fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Whether a NUL character hides in any key or string.
pub fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_parse_and_other_json_is_refused_with_a_code() {
        assert_eq!(parse(" ").unwrap(), Map::new());
        assert_eq!(
            parse(r#"{"a":[1,true]}"#).unwrap()["a"],
            serde_json::json!([1, true])
        );
        assert_eq!(parse("[1]").unwrap_err().code, "INVALID_JSON");
        assert_eq!(parse("{").unwrap_err().code, "INVALID_JSON");
        assert_eq!(parse(r#"{"a":"x\u0000"}"#).unwrap_err().code, "INVALID_CHARACTER");
        let deep = format!(
            "{}1{}",
            r#"{"a":"#.repeat(MAX_DEPTH + 1),
            "}".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(parse(&deep).unwrap_err().code, "TOO_DEEP");
    }
}
