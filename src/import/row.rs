//! One CSV row to an entity draft, by the column contract: type and status enums,
//! country priority (row, then batch), tax IDs per country, required names in manual
//! mode, genders, dates, risk matrices (an invalid one is a warning, not a failure),
//! batch defaults under row values, dotted paths building nested objects.

use serde_json::{Map, Value};

use super::headers::Target;
use super::{json_object, tax_id};

/// Automatic mode only runs for these countries.
pub const AUTOMATIC_COUNTRIES: [&str; 3] = ["AR", "BR", "CL"];

pub const STATUSES: [&str; 9] = [
    "active",
    "inactive",
    "blocked",
    "under_review",
    "suspended",
    "pending_verification",
    "expired",
    "deleted",
    "rejected",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Manual,
    Automatic,
}

/// Batch settings that apply to every row.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Defaults {
    pub country: Option<String>,
    pub is_client: Option<bool>,
    pub status: Option<String>,
    pub nationality: Option<String>,
    /// Merged under each row's attributes (the row wins on the same key).
    pub attributes: Map<String, Value>,
    pub risk_matrix_person_id: Option<String>,
    pub risk_matrix_company_id: Option<String>,
}

/// A problem with one cell (or the row, when `column` is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowIssue {
    pub column: String,
    pub code: &'static str,
    pub message: String,
    pub raw_value: String,
}

/// The entity a valid row describes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Draft {
    pub entity_type: String,
    pub tax_id: String,
    pub country: String,
    pub name: String,
    pub gender: Option<String>,
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub registration_date: Option<String>,
    /// `None`: not given (new entities are `active`; existing ones keep theirs).
    pub status: Option<String>,
    pub is_client: Option<bool>,
    pub nationality: Option<String>,
    /// The row's own `skip_rules_execution`; `None`: the import's option.
    pub skip_rules_execution: Option<bool>,
    /// `Some(None)`: clear it; `None`: leave as is.
    pub risk_matrix_id: Option<Option<String>>,
    pub attributes: Map<String, Value>,
    pub entity_data: Map<String, Value>,
    /// Enrichment-plan columns as given (`enrichments`, `depth`, `relationship_*` …).
    pub plan_columns: Map<String, Value>,
}

/// A row turned into a draft, or every problem it has; warnings either way.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    pub draft: Result<Draft, Vec<RowIssue>>,
    pub warnings: Vec<RowIssue>,
}

fn issue(column: &str, code: &'static str, message: impl Into<String>, raw: &str) -> RowIssue {
    RowIssue {
        column: column.to_string(),
        code,
        message: message.into(),
        raw_value: raw.to_string(),
    }
}

/// An ISO 3166-1 alpha-2 code, upper case.
pub fn is_iso2(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase())
}

pub fn parse_type(raw: &str) -> Option<&'static str> {
    match raw.trim().to_lowercase().as_str() {
        "person" | "persona" | "pf" => Some("person"),
        "company" | "empresa" | "pj" => Some("company"),
        _ => None,
    }
}

pub fn parse_gender(raw: &str) -> Option<&'static str> {
    match raw.trim().to_lowercase().as_str() {
        "m" | "male" => Some("male"),
        "f" | "female" => Some("female"),
        "other" => Some("other"),
        "unknown" => Some("unknown"),
        _ => None,
    }
}

pub fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

fn set_path(object: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = object;
    for segment in parents {
        let entry = current
            .entry(segment.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else { return };
        current = next;
    }
    current.insert(last.clone(), value);
}

/// Converts one row. `targets` and `values` are aligned with the CSV's columns.
pub fn convert(targets: &[Target], values: &[String], mode: Mode, defaults: &Defaults) -> Converted {
    let mut issues = Vec::new();
    let mut warnings = Vec::new();
    let mut draft = Draft::default();
    // The trimmed, non-empty value of a platform column.
    let cell = |name: &str| -> Option<(String, String)> {
        targets
            .iter()
            .zip(values)
            .find(|(t, _)| matches!(t, Target::Platform(p) if *p == name))
            .map(|(_, v)| (name.to_string(), v.trim().to_string()))
            .filter(|(_, v)| !v.is_empty())
    };
    // Type first: the entity-data bucket depends on it.
    match cell("type") {
        Some((_, raw)) => match parse_type(&raw) {
            Some(t) => draft.entity_type = t.into(),
            None => issues.push(issue(
                "type",
                "INVALID_TYPE",
                "type must be person or company (persona, empresa, pf, pj)",
                &raw,
            )),
        },
        None => issues.push(issue("type", "MISSING_TYPE", "type is required", "")),
    }
    let country = cell("country_code")
        .map(|(_, v)| v)
        .or_else(|| defaults.country.clone());
    match country.map(|c| c.to_ascii_uppercase()) {
        Some(c) if is_iso2(&c) => {
            if mode == Mode::Automatic && !AUTOMATIC_COUNTRIES.contains(&c.as_str()) {
                issues.push(issue(
                    "country_code",
                    "COUNTRY_NOT_SUPPORTED",
                    "automatic imports run for AR, BR and CL only",
                    &c,
                ));
            }
            draft.country = c;
        }
        Some(c) => issues.push(issue(
            "country_code",
            "INVALID_COUNTRY",
            "country must be an ISO 3166-1 alpha-2 code",
            &c,
        )),
        None => issues.push(issue(
            "country_code",
            "MISSING_COUNTRY",
            "no country_code and no batch country",
            "",
        )),
    }
    match cell("tax_id") {
        Some((_, raw)) if !draft.country.is_empty() => match tax_id::normalize(&draft.country, &raw) {
            Ok(t) => draft.tax_id = t,
            Err(e) => issues.push(issue("tax_id", "INVALID_TAX_ID", e.to_string(), &raw)),
        },
        Some(_) => {}
        None => issues.push(issue("tax_id", "MISSING_TAX_ID", "tax_id is required", "")),
    }
    match cell("suggested_name") {
        Some((_, name)) => draft.name = name,
        None if mode == Mode::Manual => issues.push(issue(
            "suggested_name",
            "MISSING_NAME",
            "suggested_name is required in manual mode",
            "",
        )),
        None => {}
    }
    if let Some((_, raw)) = cell("gender") {
        match parse_gender(&raw) {
            Some(g) => draft.gender = Some(g.into()),
            None => issues.push(issue(
                "gender",
                "INVALID_GENDER",
                "gender must be M, F, male, female, other or unknown",
                &raw,
            )),
        }
    }
    draft.external_id = cell("external_id").map(|(_, v)| v);
    draft.email = cell("email").map(|(_, v)| v);
    draft.phone = cell("phone").map(|(_, v)| v);
    if let Some((_, raw)) = cell("registration_date") {
        match crate::calendar::parse_date_prefix(&raw) {
            Some(_) => draft.registration_date = Some(raw),
            None => issues.push(issue(
                "registration_date",
                "INVALID_DATE",
                "registration_date must be an ISO date or date-time",
                &raw,
            )),
        }
    }
    let status = cell("status")
        .map(|(_, v)| v.to_lowercase())
        .or_else(|| defaults.status.clone());
    match status {
        Some(s) if STATUSES.contains(&s.as_str()) => draft.status = Some(s),
        Some(s) => issues.push(issue(
            "status",
            "INVALID_STATUS",
            format!("status must be one of {}", STATUSES.join(", ")),
            &s,
        )),
        None => {}
    }
    let mut boolean = |name: &str| match cell(name) {
        Some((_, raw)) => match parse_bool(&raw) {
            Some(b) => Some(b),
            None => {
                issues.push(issue(
                    name,
                    "INVALID_BOOLEAN",
                    "must be true, false, 1 or 0",
                    &raw,
                ));
                None
            }
        },
        None => None,
    };
    draft.is_client = boolean("is_client").or(defaults.is_client);
    draft.skip_rules_execution = boolean("skip_rules_execution");
    draft.nationality = match cell("nationality") {
        Some((_, raw)) if is_iso2(&raw.to_ascii_uppercase()) => Some(raw.to_ascii_uppercase()),
        Some((_, raw)) => {
            issues.push(issue(
                "nationality",
                "INVALID_NATIONALITY",
                "nationality must be an ISO 3166-1 alpha-2 code",
                &raw,
            ));
            None
        }
        None => defaults.nationality.clone(),
    };
    draft.risk_matrix_id = match cell("risk_matrix_id") {
        Some((_, raw)) if raw.eq_ignore_ascii_case("null") => Some(None),
        Some((_, raw)) if uuid::Uuid::parse_str(&raw).is_ok() => Some(Some(raw.to_lowercase())),
        Some((_, raw)) => {
            warnings.push(issue(
                "risk_matrix_id",
                "INVALID_RISK_MATRIX_ID",
                "not a UUID; the risk matrix was left unchanged",
                &raw,
            ));
            None
        }
        None => match draft.entity_type.as_str() {
            "person" => defaults.risk_matrix_person_id.clone().map(Some),
            "company" => defaults.risk_matrix_company_id.clone().map(Some),
            _ => None,
        },
    };
    let row_had_risk_cell = targets
        .iter()
        .zip(values)
        .any(|(t, v)| *t == Target::Platform("risk_matrix_id") && v.trim().is_empty());
    if row_had_risk_cell && draft.risk_matrix_id.is_none() {
        // An empty cell clears it, like `null`.
        draft.risk_matrix_id = Some(None);
    }
    draft.attributes = defaults.attributes.clone();
    // Whole objects first, so a dotted column under one wins for its path.
    for (target, value) in targets.iter().zip(values) {
        let into = match target {
            Target::AttributesObject => &mut draft.attributes,
            Target::EntityDataObject => &mut draft.entity_data,
            _ => continue,
        };
        match json_object::parse(value) {
            Ok(object) => json_object::merge(into, object),
            Err(refused) => {
                let column = if *target == Target::AttributesObject {
                    "attributes"
                } else {
                    "entity_data"
                };
                issues.push(issue(column, refused.code, refused.message, value));
            }
        }
    }
    for (target, value) in targets.iter().zip(values) {
        let value = value.trim();
        match target {
            Target::Attribute(path) if !value.is_empty() => {
                set_path(&mut draft.attributes, path, Value::String(value.into()))
            }
            Target::EntityData { bucket, path } if !value.is_empty() => {
                let bucket = bucket.clone().unwrap_or_else(|| draft.entity_type.clone());
                if !bucket.is_empty() {
                    let mut full = vec![bucket];
                    full.extend(path.iter().cloned());
                    set_path(&mut draft.entity_data, &full, Value::String(value.into()));
                }
            }
            Target::Platform(name) if is_plan_column(name) && !value.is_empty() => {
                draft
                    .plan_columns
                    .insert((*name).to_string(), Value::String(value.into()));
            }
            _ => {}
        }
    }
    Converted {
        draft: if issues.is_empty() { Ok(draft) } else { Err(issues) },
        warnings,
    }
}

fn is_plan_column(name: &str) -> bool {
    matches!(
        name,
        "execute_all_active_enrichments"
            | "enrichments"
            | "enrichment_group_refs"
            | "omit_enrichments"
            | "create_relationships"
            | "depth"
    ) || name.starts_with("relationship_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::headers::resolve;

    fn row(headers: &[&str], values: &[&str], mode: Mode, defaults: &Defaults) -> Converted {
        let targets: Vec<Target> = headers.iter().map(|h| resolve(h).unwrap()).collect();
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        convert(&targets, &values, mode, defaults)
    }

    fn codes(converted: &Converted) -> Vec<&'static str> {
        converted
            .draft
            .as_ref()
            .err()
            .map(|e| e.iter().map(|i| i.code).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_full_row_becomes_a_draft() {
        let c = row(
            &[
                "taxId",
                "Tipo",
                "Country",
                "Nombre",
                "gender",
                "attributes.tags.tier",
                "segment_tag",
                "entityData.birth_city",
                "status",
            ],
            &[
                "20-12345678-6",
                "PF",
                "ar",
                "Ana",
                "F",
                "gold",
                "retail",
                "Córdoba",
                "Under_Review",
            ],
            Mode::Manual,
            &Defaults::default(),
        );
        let draft = c.draft.unwrap();
        assert_eq!(
            (
                draft.entity_type.as_str(),
                draft.country.as_str(),
                draft.tax_id.as_str()
            ),
            ("person", "AR", "20-12345678-6")
        );
        assert_eq!(draft.gender.as_deref(), Some("female"));
        assert_eq!(draft.status.as_deref(), Some("under_review"));
        assert_eq!(
            Value::Object(draft.attributes),
            serde_json::json!({"tags": {"tier": "gold"}, "segment_tag": "retail"})
        );
        assert_eq!(
            Value::Object(draft.entity_data),
            serde_json::json!({"person": {"birth_city": "Córdoba"}})
        );
    }

    #[test]
    fn an_exports_own_columns_map_to_their_fields() {
        let c = row(
            &[
                "id",
                "type",
                "tax_id",
                "country",
                "name",
                "is_client",
                "nationality",
                "skip_rules_execution",
                "attributes",
                "attributes.tags.tier",
                "entity_data",
                "enrichment_plan",
                "created_at",
            ],
            &[
                "0190f000-1111-7000-8000-000000000001",
                "company",
                "X1",
                "MX",
                "Acme",
                "true",
                "ar",
                "1",
                r#"{"n": 5, "list": [1, "a"], "tags": {"tier": "gold", "since": 2020}}"#,
                "platinum",
                r#"{"company": {"employees": 12}}"#,
                r#"{"enrichments": []}"#,
                "2024-01-01T00:00:00.000Z",
            ],
            Mode::Manual,
            &Defaults {
                is_client: Some(false),
                ..Default::default()
            },
        );
        let draft = c.draft.unwrap();
        assert_eq!(
            (
                draft.is_client,
                draft.nationality.as_deref(),
                draft.skip_rules_execution
            ),
            (Some(true), Some("AR"), Some(true))
        );
        // JSON types survive, and the dotted column wins for its path.
        assert_eq!(
            Value::Object(draft.attributes),
            serde_json::json!({"n": 5, "list": [1, "a"], "tags": {"tier": "platinum", "since": 2020}})
        );
        assert_eq!(
            Value::Object(draft.entity_data),
            serde_json::json!({"company": {"employees": 12}})
        );
    }

    #[test]
    fn bad_field_cells_of_an_export_are_row_errors() {
        let c = row(
            &[
                "type",
                "tax_id",
                "name",
                "is_client",
                "nationality",
                "attributes",
                "entity_data",
            ],
            &["pf", "X1", "A", "yes", "Argentina", "[1]", "{"],
            Mode::Manual,
            &Defaults {
                country: Some("MX".into()),
                ..Default::default()
            },
        );
        assert_eq!(
            codes(&c),
            [
                "INVALID_BOOLEAN",
                "INVALID_NATIONALITY",
                "INVALID_JSON",
                "INVALID_JSON"
            ]
        );
    }

    #[test]
    fn the_row_country_wins_over_the_batch_and_every_row_needs_one() {
        let defaults = Defaults {
            country: Some("BR".into()),
            ..Default::default()
        };
        let c = row(
            &["tax_id", "type", "name", "country_code"],
            &["12.345.678-5", "persona", "A", "cl"],
            Mode::Manual,
            &defaults,
        );
        assert_eq!(c.draft.unwrap().country, "CL");
        let c = row(
            &["tax_id", "type", "name"],
            &["52998224725", "pf", "A"],
            Mode::Manual,
            &defaults,
        );
        assert_eq!(c.draft.unwrap().country, "BR");
        let c = row(
            &["tax_id", "type", "name"],
            &["X1", "pf", "A"],
            Mode::Manual,
            &Defaults::default(),
        );
        assert_eq!(codes(&c), ["MISSING_COUNTRY"]);
    }

    #[test]
    fn automatic_mode_runs_only_for_ar_br_cl_and_manual_needs_a_name() {
        let c = row(
            &["tax_id", "type", "country_code"],
            &["X1", "pj", "MX"],
            Mode::Automatic,
            &Defaults::default(),
        );
        assert_eq!(codes(&c), ["COUNTRY_NOT_SUPPORTED"]);
        let c = row(
            &["tax_id", "type", "country_code"],
            &["X1", "pj", "MX"],
            Mode::Manual,
            &Defaults::default(),
        );
        assert_eq!(codes(&c), ["MISSING_NAME"]);
    }

    #[test]
    fn a_bad_check_digit_fails_the_row_in_both_modes() {
        for mode in [Mode::Manual, Mode::Automatic] {
            let c = row(
                &["tax_id", "type", "country_code", "name"],
                &["20-12345678-5", "pf", "AR", "A"],
                mode,
                &Defaults::default(),
            );
            assert_eq!(codes(&c), ["INVALID_TAX_ID"]);
        }
    }

    #[test]
    fn an_invalid_risk_matrix_is_a_warning_and_empty_or_null_clears_it() {
        let headers = ["tax_id", "type", "country_code", "name", "risk_matrix_id"];
        let c = row(
            &headers,
            &["X1", "pf", "MX", "A", "not-a-uuid"],
            Mode::Manual,
            &Defaults::default(),
        );
        assert_eq!(c.warnings[0].code, "INVALID_RISK_MATRIX_ID");
        assert_eq!(c.draft.unwrap().risk_matrix_id, None);
        for clear in ["", "null", "NULL"] {
            let c = row(
                &headers,
                &["X1", "pf", "MX", "A", clear],
                Mode::Manual,
                &Defaults::default(),
            );
            assert_eq!(c.draft.unwrap().risk_matrix_id, Some(None), "{clear:?}");
        }
        let defaults = Defaults {
            risk_matrix_company_id: Some("rm-c".into()),
            ..Default::default()
        };
        let c = row(
            &["tax_id", "type", "country_code", "name"],
            &["X1", "pj", "MX", "A"],
            Mode::Manual,
            &defaults,
        );
        assert_eq!(c.draft.unwrap().risk_matrix_id, Some(Some("rm-c".into())));
    }

    #[test]
    fn batch_attributes_merge_under_the_rows() {
        let mut attributes = Map::new();
        attributes.insert("segment_tag".into(), Value::String("batch".into()));
        attributes.insert("source".into(), Value::String("crm".into()));
        let defaults = Defaults {
            attributes,
            is_client: Some(true),
            ..Default::default()
        };
        let c = row(
            &["tax_id", "type", "country_code", "name", "segment_tag"],
            &["X1", "pf", "MX", "A", "row"],
            Mode::Manual,
            &defaults,
        );
        let draft = c.draft.unwrap();
        assert_eq!(
            Value::Object(draft.attributes),
            serde_json::json!({"segment_tag": "row", "source": "crm"})
        );
        assert_eq!(draft.is_client, Some(true));
    }

    #[test]
    fn bad_enums_and_dates_are_named() {
        let c = row(
            &[
                "tax_id",
                "type",
                "country_code",
                "name",
                "gender",
                "status",
                "registration_date",
            ],
            &["X1", "alien", "MX", "A", "x", "asleep", "31/12/2020"],
            Mode::Manual,
            &Defaults::default(),
        );
        assert_eq!(
            codes(&c),
            ["INVALID_TYPE", "INVALID_GENDER", "INVALID_DATE", "INVALID_STATUS"]
        );
    }
}
