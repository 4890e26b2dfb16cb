//! What must hold for any input, however hostile, at each place ferry parses what a
//! caller sends: one function per fuzz target (`fuzz/`, run by `.ci/run`), each
//! panicking when a property breaks. Only light parsers are reached from here, so
//! the fuzz crate compiles these files by path without ferry's server stack. Every
//! input a fuzzer once crashed on is kept in `fuzz/regressions/<target>/` and
//! replayed by this module's tests.

use std::collections::BTreeMap;
use std::io::Cursor;

use crate::api::page_token;
use crate::import::headers;
use crate::import::json_object;
use crate::import::layout::Layout;
use crate::import::preflight::{self, Expect};
use crate::import::row::{self, Defaults, Mode};
use crate::import::table::{self, Format, Table};
use crate::import::tax_id;
use crate::storage::{key, signing::UrlSigner};

/// A fuzz target: any bytes in, a panic when a property breaks.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/<name>.rs` calls them.
pub const TARGETS: [(&str, Target); 8] = [
    ("csv_rows", csv_rows),
    ("ndjson_rows", ndjson_rows),
    ("preflight", preflight),
    ("row_convert", row_convert),
    ("tax_id", tax_id),
    ("json_options", json_options),
    ("page_token", page_token),
    ("download_url", download_url),
];

/// An upload read as CSV: the header resolved, every readable row converted.
pub fn csv_rows(data: &[u8]) {
    read_and_convert(Format::Csv, data);
}

/// An upload read as NDJSON, the same way.
pub fn ndjson_rows(data: &[u8]) {
    read_and_convert(Format::Ndjson, data);
}

fn read_and_convert(format: Format, data: &[u8]) {
    let mode = if data.first().is_some_and(|b| b % 2 == 1) {
        Mode::Automatic
    } else {
        Mode::Manual
    };
    let defaults = Defaults {
        country: Some("AR".into()),
        ..Default::default()
    };
    let _ = table::read(format, Cursor::new(data), |table: &mut dyn Table| {
        let Some(header) = table.header()? else {
            return Ok(());
        };
        let Ok(layout) = Layout::from_header(header.line, &header.names, &BTreeMap::new()) else {
            return Ok(());
        };
        while let Some(row) = table.next_row()? {
            let Ok(cells) = row.cells else { continue };
            assert_eq!(
                cells.len(),
                layout.headers.len(),
                "a row's cells follow its header"
            );
            check_draft(&row::convert(&layout.targets, &cells, mode, &defaults));
        }
        Ok(())
    });
}

/// A converted row that passed is in the contract's normal form.
fn check_draft(converted: &row::Converted) {
    let Ok(draft) = &converted.draft else { return };
    assert!(matches!(draft.entity_type.as_str(), "person" | "company"));
    assert!(row::is_iso2(&draft.country), "country {:?}", draft.country);
    assert!(!draft.tax_id.is_empty() && !draft.tax_id.contains(char::is_whitespace));
    let nested = serde_json::Value::Object(draft.attributes.clone());
    assert!(json_object::depth(&nested) <= headers::MAX_DEPTH + 1);
}

/// Pre-flight of any bytes as any format: a verdict, never a panic; a file that
/// passes has rows.
pub fn preflight(data: &[u8]) {
    let (format, rest) = match data.split_first() {
        Some((b, rest)) if b % 3 == 1 => (Format::Ndjson, rest),
        Some((b, rest)) if b % 3 == 2 => (Format::Xlsx, rest),
        Some((_, rest)) => (Format::Csv, rest),
        None => (Format::Csv, data),
    };
    let map = BTreeMap::new();
    let expect = Expect {
        format,
        column_map: &map,
        country: Some("BR"),
        mode: Mode::Manual,
    };
    if let Ok(checked) = preflight::check(Cursor::new(rest), &expect, 1_000) {
        assert!(checked.rows >= 1);
    }
}

/// Cells split on the unit separator (0x1f), headers from values on the record
/// separator (0x1e): any header text and any cell text.
pub fn row_convert(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (head, values) = text.split_once('\u{1e}').unwrap_or((&text, ""));
    let names: Vec<Option<String>> = head.split('\u{1f}').map(|h| Some(h.to_string())).collect();
    let Ok(layout) = Layout::from_header(Some(1), &names, &BTreeMap::new()) else {
        return;
    };
    let mut values: Vec<String> = values.split('\u{1f}').map(str::to_string).collect();
    values.resize(layout.targets.len(), String::new());
    for mode in [Mode::Manual, Mode::Automatic] {
        check_draft(&row::convert(
            &layout.targets,
            &values,
            mode,
            &Defaults::default(),
        ));
    }
}

/// A normalised tax ID normalises to itself.
pub fn tax_id(data: &[u8]) {
    let Some((choice, rest)) = data.split_first() else {
        return;
    };
    let country = ["AR", "BR", "CL", "US", "MX"][usize::from(*choice) % 5];
    let text = String::from_utf8_lossy(rest);
    if let Ok(normal) = tax_id::normalize(country, &text) {
        assert_eq!(
            tax_id::normalize(country, &normal).as_deref(),
            Ok(normal.as_str())
        );
    }
}

/// The `attributes` / `monitoring` options and whole-object cells: an accepted
/// object is within the nesting limit and free of NUL.
pub fn json_options(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(object) = json_object::parse(&text) {
        let value = serde_json::Value::Object(object);
        assert!(json_object::depth(&value) <= headers::MAX_DEPTH);
        // NUL itself, not the text `\u0000` (a backslash and "u0000" is fine: found
        // by the fuzzer when this property searched the printed JSON).
        assert!(!json_object::has_nul(&value));
    }
}

/// A page token: refused or decoded, and what decodes encodes back to a token that
/// decodes the same.
pub fn page_token(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    if let Ok(Some(cursor)) = page_token::decode::<(i64, String)>(&token, "fp") {
        let again = page_token::encode(&cursor, "fp");
        assert_eq!(
            page_token::decode::<(i64, String)>(&again, "fp"),
            Ok(Some(cursor))
        );
        assert!(page_token::decode::<(i64, String)>(&token, "other").is_err());
    }
}

/// A download URL's parts: a forged signature never verifies (hex case aside), a
/// signed one always does, and a key that passes the check never leaves the
/// store's folder.
pub fn download_url(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{1f}');
    let key_text = parts.next().unwrap_or_default();
    let expires: i64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let name = parts.next().unwrap_or_default();
    let content_type = parts.next().unwrap_or_default();
    let signature = parts.next().unwrap_or_default();
    let signer = UrlSigner::new(b"fuzzing secret");
    let genuine = signer.sign(key_text, expires, name, content_type);
    assert!(signer.verify(key_text, expires, name, content_type, &genuine));
    // The same MAC in upper-case hex is the same signature (found by the fuzzer),
    // not a forgery; any other text must fail.
    if !signature.eq_ignore_ascii_case(&genuine) {
        assert!(!signer.verify(key_text, expires, name, content_type, signature));
    }
    if key::is_safe(key_text) {
        let path = std::path::Path::new("/store").join(key_text);
        assert!(
            path.components()
                .skip(2)
                .all(|c| matches!(c, std::path::Component::Normal(_))),
            "{key_text:?} leaves the store"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input kept in `fuzz/regressions/<target>/` (crashes found once, and the
    /// seeds in `fuzz/seeds/<target>/`) still passes.
    #[test]
    fn every_kept_fuzz_input_passes_its_target() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut replayed = 0;
        for (name, target) in TARGETS {
            for folder in ["regressions", "seeds"] {
                let Ok(entries) = std::fs::read_dir(root.join(folder).join(name)) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let data = std::fs::read(entry.path()).unwrap();
                    target(&data);
                    replayed += 1;
                }
            }
        }
        assert!(
            replayed >= TARGETS.len(),
            "the seed corpus is missing ({replayed} inputs)"
        );
    }
}
