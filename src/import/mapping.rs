//! Saved header mappings: custom headers (`Documento`) to platform columns
//! (`tax_id`), applied before header normalisation when an upload names one.

use std::collections::BTreeMap;

use super::headers::{self, HeaderError};

pub const KINDS: [&str; 3] = ["entity_person", "entity_company", "entity_mixed"];
pub const MAX_COLUMNS: usize = 500;

/// Checks a mapping; returns the column map keyed by normalised header, or the
/// violations (field, description).
pub fn check(
    name: &str,
    kind: Option<&str>,
    columns: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, Vec<(String, String)>> {
    let mut violations = Vec::new();
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        violations.push(("name".to_string(), "must be 1 to 200 characters".to_string()));
    }
    if kind.is_none() {
        violations.push((
            "kind".into(),
            "must be MAPPING_KIND_ENTITY_PERSON, _COMPANY or _MIXED".into(),
        ));
    }
    match check_columns(columns) {
        Ok(map) if violations.is_empty() => Ok(map),
        Ok(_) => Err(violations),
        Err(more) => {
            violations.extend(more);
            Err(violations)
        }
    }
}

/// Checks a column map alone (a draft the hub previews before it is named): 1 to
/// [`MAX_COLUMNS`] headers, each to a real platform column, no two the same once
/// normalised. Returns the map keyed by normalised header.
pub fn check_columns(
    columns: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, Vec<(String, String)>> {
    let mut violations = Vec::new();
    if columns.is_empty() || columns.len() > MAX_COLUMNS {
        violations.push(("columns".into(), format!("must map 1 to {MAX_COLUMNS} headers")));
    }
    let mut map = BTreeMap::new();
    for (source, target) in columns {
        let key = headers::normalize(source);
        if key.is_empty() {
            violations.push((format!("columns[{source}]"), "the custom header is empty".into()));
            continue;
        }
        match headers::resolve(target) {
            Ok(_) => {}
            Err(HeaderError::Empty(_)) => {
                violations.push((
                    format!("columns[{source}]"),
                    "the platform column is empty".into(),
                ));
                continue;
            }
            Err(err) => {
                violations.push((format!("columns[{source}]"), err.to_string()));
                continue;
            }
        }
        if map.insert(key, headers::normalize(target)).is_some() {
            violations.push((
                format!("columns[{source}]"),
                "two custom headers are the same once normalised".into(),
            ));
        }
    }
    if violations.is_empty() {
        Ok(map)
    } else {
        Err(violations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn a_mapping_is_keyed_by_normalised_header() {
        let map = check(
            "bank",
            Some("entity_mixed"),
            &columns(&[("Documento Nacional", "taxId"), ("Pais", "country")]),
        )
        .unwrap();
        assert_eq!(map["documento_nacional"], "taxid");
        assert_eq!(map["pais"], "country");
    }

    #[test]
    fn removed_targets_and_clashing_headers_are_refused() {
        let violations = check(
            "",
            None,
            &columns(&[("A B", "checks"), ("a  b", "tax_id"), ("x", "tax_id")]),
        )
        .unwrap_err();
        let fields: Vec<&str> = violations.iter().map(|(f, _)| f.as_str()).collect();
        assert!(fields.contains(&"name") && fields.contains(&"kind"), "{fields:?}");
        assert!(
            violations
                .iter()
                .any(|(_, d)| d.contains("execute_all_active_enrichments"))
        );
    }
}
