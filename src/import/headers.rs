//! Import headers: normalisation (case-insensitive, trimmed, inner spaces to `_`,
//! BOM stripped), aliases, dotted paths, and the columns that were removed.

use crate::exchange::EXPANDED_SUFFIX;

/// Levels an attribute or entity-data path may nest (a header's dotted segments,
/// and the JSON options' objects): deeper data made some protobuf clients refuse a
/// whole page of entities.
pub const MAX_DEPTH: usize = 32;

/// Where a column's values go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A platform column by its canonical name (`tax_id`, `country_code`, …).
    Platform(&'static str),
    /// A dotted path below `attributes` (also `metadata.*` and unknown headers).
    Attribute(Vec<String>),
    /// Below `entity_data`; `bucket` is `person`, `company`, or `None` for the
    /// bucket of the row's type.
    EntityData {
        bucket: Option<String>,
        path: Vec<String>,
    },
    /// The whole `attributes` object as JSON (an export's `attributes` column),
    /// merged like dotted columns; a dotted column under it wins for its path.
    AttributesObject,
    /// The whole `entity_data` object as JSON, buckets included.
    EntityDataObject,
    /// A column the importer reads past: the `error_*` columns of an error report,
    /// so a fixed report can be uploaded again as is, and the export columns in
    /// [`EXPORT_ONLY`].
    Ignored,
}

/// Columns an export writes that an import reads past (and names once in the
/// import's notices): ferry keeps its own ids and timestamps, and recomputes the
/// enrichment plan from the import's options and plan columns. `id` is not checked
/// against the entity the row's key finds: a file exported from one organization
/// imports into another.
pub const EXPORT_ONLY: [&str; 4] = ["id", "created_at", "updated_at", "enrichment_plan"];

/// Columns an error report adds after the original ones.
pub const REPORT_COLUMNS: [&str; 4] = ["error_line", "error_column", "error_code", "error_message"];

/// Canonical platform columns.
pub const PLATFORM: &[&str] = &[
    "tax_id",
    "type",
    "country_code",
    "suggested_name",
    "gender",
    "external_id",
    "email",
    "phone",
    "registration_date",
    "risk_matrix_id",
    "execute_all_active_enrichments",
    "enrichments",
    "enrichment_group_refs",
    "omit_enrichments",
    "create_relationships",
    "depth",
    "status",
    "relationship_execute_all_active_enrichments",
    "relationship_enrichments_company",
    "relationship_enrichments_person",
    "relationship_enrichment_group_refs",
    "relationship_omit_enrichments",
    "is_client",
    "nationality",
    "skip_rules_execution",
];

/// Input names (normalised) and the canonical column they stand for.
const ALIASES: &[(&str, &str)] = &[
    ("taxid", "tax_id"),
    ("tipo", "type"),
    ("country", "country_code"),
    ("name", "suggested_name"),
    ("nombre", "suggested_name"),
    ("externalid", "external_id"),
    ("exclude_enrichments", "omit_enrichments"),
    (
        "relationship_exclude_enrichments",
        "relationship_omit_enrichments",
    ),
];

/// Columns that were removed, and what replaces them.
pub const REMOVED: &[&str] = &["execute_all_active_checks", "checks"];
pub const REMOVED_REPLACEMENTS: &str = "execute_all_active_enrichments, enrichments, enrichment_group_refs";

/// Why a header cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("column `{0}` was removed; use {REMOVED_REPLACEMENTS}")]
    Removed(String),
    #[error("header `{0}` is empty")]
    Empty(String),
    #[error("header `{0}` has an empty path segment")]
    BadPath(String),
    #[error(
        "header `{0}` comes from an export with expand_array, which splits one entity over several rows; export without expand_array to import the file"
    )]
    Expanded(String),
}

/// Trimmed, lower-cased, inner whitespace runs replaced by `_`, BOM removed.
pub fn normalize(header: &str) -> String {
    let header = header.trim_start_matches('\u{feff}').trim().to_lowercase();
    header.split_whitespace().collect::<Vec<_>>().join("_")
}

fn path(rest: &str, original: &str) -> Result<Vec<String>, HeaderError> {
    let segments: Vec<String> = rest.split('.').map(str::to_string).collect();
    if segments.iter().any(String::is_empty) {
        return Err(HeaderError::BadPath(original.to_string()));
    }
    Ok(segments)
}

/// Where a header's values go. Any header that is not a platform column (after
/// aliases) becomes an attribute of that name.
pub fn resolve(header: &str) -> Result<Target, HeaderError> {
    let name = normalize(header);
    if name.is_empty() {
        return Err(HeaderError::Empty(header.to_string()));
    }
    if REPORT_COLUMNS.contains(&name.as_str()) || EXPORT_ONLY.contains(&name.as_str()) {
        return Ok(Target::Ignored);
    }
    if name.ends_with(EXPANDED_SUFFIX) {
        return Err(HeaderError::Expanded(header.to_string()));
    }
    match name.as_str() {
        "attributes" => return Ok(Target::AttributesObject),
        "entity_data" | "entitydata" => return Ok(Target::EntityDataObject),
        _ => {}
    }
    if REMOVED.contains(&name.as_str()) {
        return Err(HeaderError::Removed(name));
    }
    let name = match name.strip_prefix("relationships_") {
        Some(rest) => format!("relationship_{rest}"),
        None => name,
    };
    if let Some((_, canonical)) = ALIASES.iter().find(|(alias, _)| *alias == name) {
        return Ok(Target::Platform(canonical));
    }
    if let Some(canonical) = PLATFORM.iter().find(|c| **c == name) {
        return Ok(Target::Platform(canonical));
    }
    if let Some(rest) = name
        .strip_prefix("attributes.")
        .or_else(|| name.strip_prefix("metadata."))
    {
        return Ok(Target::Attribute(path(rest, header)?));
    }
    if let Some(rest) = name
        .strip_prefix("entitydata.")
        .or_else(|| name.strip_prefix("entity_data."))
    {
        let mut segments = path(rest, header)?;
        let bucket = match segments.first().map(String::as_str) {
            Some("person" | "company") if segments.len() > 1 => Some(segments.remove(0)),
            _ => None,
        };
        return Ok(Target::EntityData {
            bucket,
            path: segments,
        });
    }
    Ok(Target::Attribute(path(&name, header)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(name: &'static str) -> Result<Target, HeaderError> {
        Ok(Target::Platform(name))
    }

    #[test]
    fn headers_are_case_insensitive_trimmed_and_spaced_with_underscores() {
        assert_eq!(normalize("\u{feff} Country  Code "), "country_code");
        assert_eq!(resolve("Country Code"), platform("country_code"));
        assert_eq!(resolve("TAX_ID"), platform("tax_id"));
    }

    #[test]
    fn every_alias_of_the_contract_resolves() {
        for (input, canonical) in [
            ("taxId", "tax_id"),
            ("tipo", "type"),
            ("country", "country_code"),
            ("name", "suggested_name"),
            ("nombre", "suggested_name"),
            ("externalId", "external_id"),
            ("exclude_enrichments", "omit_enrichments"),
            (
                "relationships_enrichments_company",
                "relationship_enrichments_company",
            ),
            (
                "relationship_exclude_enrichments",
                "relationship_omit_enrichments",
            ),
            (
                "relationships_exclude_enrichments",
                "relationship_omit_enrichments",
            ),
        ] {
            assert_eq!(resolve(input), platform(canonical), "{input}");
        }
    }

    #[test]
    fn dotted_columns_build_paths_and_other_columns_become_attributes() {
        let attr = |p: &[&str]| Ok(Target::Attribute(p.iter().map(|s| s.to_string()).collect()));
        assert_eq!(resolve("attributes.tags.tier"), attr(&["tags", "tier"]));
        assert_eq!(resolve("metadata.source"), attr(&["source"]));
        assert_eq!(resolve("segment_tag"), attr(&["segment_tag"]));
        assert_eq!(
            resolve("entityData.person.birth_city"),
            Ok(Target::EntityData {
                bucket: Some("person".into()),
                path: vec!["birth_city".into()]
            })
        );
        assert_eq!(
            resolve("entityData.legal_name"),
            Ok(Target::EntityData {
                bucket: None,
                path: vec!["legal_name".into()]
            })
        );
        assert!(matches!(resolve("attributes..x"), Err(HeaderError::BadPath(_))));
    }

    #[test]
    fn removed_columns_name_their_replacements() {
        for removed in ["execute_all_active_checks", "Checks"] {
            let err = resolve(removed).unwrap_err().to_string();
            assert!(
                err.contains("execute_all_active_enrichments") && err.contains("enrichment_group_refs"),
                "{err}"
            );
        }
    }
}
