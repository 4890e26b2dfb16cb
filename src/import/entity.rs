//! From an upload's row to the entity row that is written: the column contract and the
//! enrichment plan ([`prepare`]), then the merge with the entity already stored
//! under the same (organization, country, tax ID) ([`merge`]).

use serde_json::{Map, Value};

use super::headers::Target;
use super::json_object;
use super::layout::Layout;
use super::plan::{self, Catalogue};
use super::row::{self, Draft, RowIssue};
use super::spec::ImportSpec;
use super::table::TableRow;
use crate::db::entities::{EntityRow, EntityView};

/// A row ready to write, or its problems; warnings either way.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub line: u64,
    /// The row's cells as a CSV file holds them, for the error report.
    pub raw: Vec<String>,
    pub outcome: Result<Ready, Vec<RowIssue>>,
    pub warnings: Vec<RowIssue>,
}

impl Prepared {
    /// (country, normalised tax ID) of a valid row.
    pub fn key(&self) -> Option<(&str, &str)> {
        self.outcome.as_ref().ok().map(Ready::key)
    }
}

/// A valid row with everything a new entity needs already built (its id, its
/// attributes, entity data and plan as JSON). Built on the reader thread, so the
/// writer, the import's bottleneck, only binds it; a row whose key is stored is
/// merged over the stored entity instead ([`merge`]).
#[derive(Debug, Clone)]
pub struct Ready {
    /// The row's values; its `attributes` and `entity_data` maps are moved out into
    /// the JSON fields below.
    pub draft: Draft,
    /// The id of the entity if it is new.
    pub id: String,
    pub attributes: String,
    pub entity_data: String,
    pub plan: String,
}

impl Ready {
    pub fn new(mut draft: Draft, plan: String) -> Ready {
        let attributes = Value::Object(std::mem::take(&mut draft.attributes)).to_string();
        let entity_data = Value::Object(std::mem::take(&mut draft.entity_data)).to_string();
        draft.plan_columns = Map::new();
        Ready {
            draft,
            id: crate::db::new_id(),
            attributes,
            entity_data,
            plan,
        }
    }

    /// (country, normalised tax ID).
    pub fn key(&self) -> (&str, &str) {
        (self.draft.country.as_str(), self.draft.tax_id.as_str())
    }

    /// The entity to write when none is stored under the key, borrowed.
    pub fn as_new<'a>(&'a self, organization_id: &'a str, skip_rules: bool, now: i64) -> EntityView<'a> {
        let d = &self.draft;
        EntityView {
            id: &self.id,
            organization_id,
            entity_type: &d.entity_type,
            tax_id: &d.tax_id,
            country: &d.country,
            name: &d.name,
            gender: d.gender.as_deref(),
            external_id: d.external_id.as_deref(),
            email: d.email.as_deref(),
            phone: d.phone.as_deref(),
            registration_date: d.registration_date.as_deref(),
            status: d.status.as_deref().unwrap_or("active"),
            is_client: d.is_client.unwrap_or(false),
            nationality: d.nationality.as_deref(),
            risk_matrix_id: d.risk_matrix_id.as_ref().and_then(|r| r.as_deref()),
            attributes: &self.attributes,
            entity_data: &self.entity_data,
            enrichment_plan: Some(&self.plan),
            skip_rules_execution: d.skip_rules_execution.unwrap_or(skip_rules),
            created_at: now,
            updated_at: now,
        }
    }
}

/// Applies the contract and the plan to one data row.
pub fn prepare(row: TableRow, layout: &Layout, spec: &ImportSpec, catalogue: &Catalogue) -> Prepared {
    let line = row.line;
    // The report's cells: the row's CSV form when it differs, else the cells
    // themselves, moved in once the contract has read them (not copied per row).
    let raw = row.raw;
    let cells = match row.cells {
        Ok(cells) => cells,
        Err(v) => {
            let issue = RowIssue {
                column: String::new(),
                code: v.code,
                message: v.message,
                raw_value: String::new(),
            };
            return Prepared {
                line,
                raw: raw.unwrap_or_default(),
                outcome: Err(vec![issue]),
                warnings: Vec::new(),
            };
        }
    };
    let mut unstorable: Vec<RowIssue> = row
        .issues
        .into_iter()
        .map(|issue| RowIssue {
            column: layout.headers.get(issue.column).cloned().unwrap_or_default(),
            code: issue.code,
            message: issue.message,
            raw_value: String::new(),
        })
        .collect();
    unstorable.extend(nul_cells(layout, &cells));
    if !unstorable.is_empty() {
        return Prepared {
            line,
            raw: raw.unwrap_or(cells),
            outcome: Err(unstorable),
            warnings: Vec::new(),
        };
    }
    let converted = row::convert(&layout.targets, &cells, spec.mode, &spec.defaults);
    let outcome = converted.draft.and_then(|draft| {
        match plan::plan(&spec.batch, catalogue, &draft.entity_type, &draft.plan_columns) {
            Ok(mut plan) => {
                if let Some(skip) = draft.skip_rules_execution {
                    plan.skip_rules_execution = skip;
                }
                let json = serde_json::to_string(&plan).unwrap_or_default();
                Ok(Ready::new(draft, json))
            }
            Err((column, code, message)) => {
                let raw_value = draft
                    .plan_columns
                    .get(&column)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                Err(vec![RowIssue {
                    column,
                    code,
                    message,
                    raw_value,
                }])
            }
        }
    });
    Prepared {
        line,
        raw: raw.unwrap_or(cells),
        outcome,
        warnings: converted.warnings,
    }
}

/// The cells holding a NUL character (U+0000): PostgreSQL cannot store one in text
/// or JSON, and SQLite would keep what the other backend refuses, so the row fails
/// on both (`INVALID_CHARACTER`) instead of failing its whole batch on one.
fn nul_cells(layout: &Layout, cells: &[String]) -> Vec<RowIssue> {
    layout
        .headers
        .iter()
        .zip(&layout.targets)
        .zip(cells)
        .filter(|((_, target), cell)| **target != Target::Ignored && cell.contains('\0'))
        .map(|((header, _), cell)| RowIssue {
            column: header.clone(),
            code: "INVALID_CHARACTER",
            message: "the cell contains a NUL character (U+0000), which cannot be stored".into(),
            raw_value: cell.replace('\0', "\\0"),
        })
        .collect()
}

fn object(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// The stored entity with the row's values over it (a new entity is
/// [`Ready::as_new`]); `None` when that changes nothing (an unchanged row is not
/// written and counts as `unchanged`). Cells the row leaves empty keep what is
/// stored; attributes and entity data merge key by key (the row wins).
pub fn merge(ready: Ready, skip_rules: bool, stored: &EntityRow, now: i64) -> Option<EntityRow> {
    let Ready {
        draft,
        attributes: row_attributes,
        entity_data: row_entity_data,
        plan,
        ..
    } = ready;
    let keep = |new: Option<String>, old: &Option<String>| new.or_else(|| old.clone());
    let merged = EntityRow {
        id: stored.id.clone(),
        organization_id: stored.organization_id.clone(),
        entity_type: draft.entity_type,
        tax_id: stored.tax_id.clone(),
        country: stored.country.clone(),
        name: if draft.name.is_empty() {
            stored.name.clone()
        } else {
            draft.name
        },
        gender: keep(draft.gender, &stored.gender),
        external_id: keep(draft.external_id, &stored.external_id),
        email: keep(draft.email, &stored.email),
        phone: keep(draft.phone, &stored.phone),
        registration_date: keep(draft.registration_date, &stored.registration_date),
        status: draft.status.unwrap_or_else(|| stored.status.clone()),
        is_client: draft.is_client.unwrap_or(stored.is_client),
        nationality: keep(draft.nationality, &stored.nationality),
        risk_matrix_id: match draft.risk_matrix_id {
            Some(set_or_clear) => set_or_clear,
            None => stored.risk_matrix_id.clone(),
        },
        attributes: merged_json(&stored.attributes, &row_attributes),
        entity_data: merged_json(&stored.entity_data, &row_entity_data),
        enrichment_plan: Some(plan),
        skip_rules_execution: draft.skip_rules_execution.unwrap_or(skip_rules),
        created_at: stored.created_at,
        updated_at: stored.updated_at,
    };
    (merged != *stored).then_some(EntityRow {
        updated_at: now,
        ..merged
    })
}

/// `row` merged over `stored` (both JSON object text); the stored text itself when
/// the merge changes nothing, so an unchanged entity compares equal.
fn merged_json(stored: &str, row: &str) -> String {
    let before = object(stored);
    let mut after = before.clone();
    json_object::merge(&mut after, object(row));
    if after == before {
        stored.to_string()
    } else {
        Value::Object(after).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored() -> EntityRow {
        EntityRow {
            id: "e1".into(),
            organization_id: "o".into(),
            entity_type: "person".into(),
            tax_id: "1".into(),
            country: "MX".into(),
            name: "Ana".into(),
            gender: Some("female".into()),
            external_id: None,
            email: Some("ana@example.com".into()),
            phone: None,
            registration_date: None,
            status: "blocked".into(),
            is_client: true,
            nationality: None,
            risk_matrix_id: Some("rm".into()),
            attributes: json!({"tags": {"tier": "gold", "seg": "a"}, "keep": 1}).to_string(),
            entity_data: "{}".into(),
            enrichment_plan: None,
            skip_rules_execution: false,
            created_at: 5,
            updated_at: 5,
        }
    }

    #[test]
    fn a_reimport_keeps_what_the_row_leaves_empty_and_merges_attributes() {
        let draft = Draft {
            entity_type: "person".into(),
            tax_id: "1".into(),
            country: "MX".into(),
            phone: Some("555".into()),
            attributes: json!({"tags": {"tier": "silver"}}).as_object().cloned().unwrap(),
            ..Default::default()
        };
        let row = merge(Ready::new(draft, "{}".into()), true, &stored(), 9).unwrap();
        assert_eq!(
            (
                row.id.as_str(),
                row.name.as_str(),
                row.status.as_str(),
                row.is_client
            ),
            ("e1", "Ana", "blocked", true)
        );
        assert_eq!(
            (
                row.email.as_deref(),
                row.phone.as_deref(),
                row.risk_matrix_id.as_deref()
            ),
            (Some("ana@example.com"), Some("555"), Some("rm"))
        );
        assert_eq!(
            serde_json::from_str::<Value>(&row.attributes).unwrap(),
            json!({"tags": {"tier": "silver", "seg": "a"}, "keep": 1})
        );
        assert_eq!(
            (row.created_at, row.updated_at, row.skip_rules_execution),
            (5, 9, true)
        );
    }

    #[test]
    fn an_empty_or_null_risk_matrix_clears_the_stored_one() {
        let draft = Draft {
            risk_matrix_id: Some(None),
            ..Default::default()
        };
        let row = merge(Ready::new(draft, "{}".into()), false, &stored(), 9).unwrap();
        assert_eq!(row.risk_matrix_id, None);
    }

    #[test]
    fn a_row_that_changes_nothing_is_not_merged() {
        let stored = EntityRow {
            enrichment_plan: Some("{}".into()),
            ..stored()
        };
        let draft = Draft {
            entity_type: "person".into(),
            name: "Ana".into(),
            attributes: json!({"tags": {"tier": "gold"}}).as_object().cloned().unwrap(),
            ..Default::default()
        };
        assert_eq!(
            merge(Ready::new(draft.clone(), "{}".into()), false, &stored, 9),
            None
        );
        let renamed = Draft {
            name: "Ana María".into(),
            ..draft
        };
        assert!(merge(Ready::new(renamed, "{}".into()), false, &stored, 9).is_some());
    }
}
