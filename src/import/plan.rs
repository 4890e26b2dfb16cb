//! The enrichment plan of a row (IMPORT_CONTRACT.md, "Enrichment plan of a row"):
//! the batch selection, replaced by the row's own selection or merged with its
//! omissions; children's enrichments by the batch policy or the row's
//! `relationship_*` columns; manual mode without depth, relationships or
//! shareholders.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value};

use super::row::{Mode, parse_bool};

/// Left out of shareholders' enrichments under BY_ROOT_TYPE for company roots.
pub const SANCTIONS: &str = "global_gueno_sanctions_enrichment";
pub const MAX_DEPTH: i64 = 5;

/// A choice of enrichments, from the batch options or a row.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, Serialize)]
pub struct Selection {
    pub execute_all: bool,
    pub enrichments: Vec<String>,
    pub group_refs: Vec<String>,
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildPolicy {
    #[default]
    AllActive,
    ByRootType,
    BasicOnly,
}

/// The organization's enrichment catalogue.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    /// Active codes and the entity type they apply to (`person`, `company`, `any`).
    pub active: BTreeMap<String, String>,
    pub groups: BTreeMap<String, Vec<String>>,
}

impl Catalogue {
    fn all_for(&self, entity_type: &str) -> BTreeSet<String> {
        self.active
            .iter()
            .filter(|(_, t)| t.as_str() == "any" || t.as_str() == entity_type)
            .map(|(c, _)| c.clone())
            .collect()
    }
}

/// Batch options that shape every row's plan.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, Serialize)]
pub struct BatchPlan {
    pub mode: Option<Mode>,
    pub selection: Option<Selection>,
    pub shareholders: Option<Selection>,
    pub child_policy: ChildPolicy,
    pub depth: i64,
    pub skip_rules_execution: bool,
    pub monitoring_main: Value,
    pub monitoring_relationships: Value,
    pub monitoring_apply_to_relationships: Option<bool>,
}

/// Enrichments for one kind of related entity.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ChildEnrichments {
    Codes(Vec<String>),
    /// The literal `"basic_data_only"`.
    Basic(&'static str),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub enrichments: Vec<String>,
    pub depth: i64,
    pub create_relationships: bool,
    /// Per child entity type; empty in manual mode and at depth 0.
    pub children: BTreeMap<String, ChildEnrichments>,
    pub shareholders: Option<Vec<String>>,
    pub monitoring: Value,
    pub skip_rules_execution: bool,
}

/// Why a row's plan cannot be built: (column, code, message).
pub type PlanIssue = (String, &'static str, String);

fn codes(text: &str) -> Vec<String> {
    text.split([',', ';'])
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

fn text(columns: &Map<String, Value>, name: &str) -> Option<String> {
    columns.get(name).and_then(Value::as_str).map(str::to_string)
}

/// The codes a selection names, checked against the catalogue.
fn resolve(
    selection: &Selection,
    catalogue: &Catalogue,
    entity_type: &str,
    column: &str,
) -> Result<BTreeSet<String>, PlanIssue> {
    let mut chosen = BTreeSet::new();
    if selection.execute_all {
        chosen.extend(catalogue.all_for(entity_type));
    }
    for code in &selection.enrichments {
        if !catalogue.active.contains_key(code) {
            return Err((
                column.to_string(),
                "UNKNOWN_ENRICHMENT",
                format!("`{code}` is not an active enrichment of the organization"),
            ));
        }
        chosen.insert(code.clone());
    }
    for slug in &selection.group_refs {
        let group = catalogue.groups.get(slug).ok_or_else(|| {
            (
                column.to_string(),
                "UNKNOWN_ENRICHMENT_GROUP",
                format!("`{slug}` is not an enrichment group of the organization"),
            )
        })?;
        chosen.extend(
            group
                .iter()
                .filter(|c| catalogue.active.contains_key(*c))
                .cloned(),
        );
    }
    for code in &selection.exclude {
        chosen.remove(code);
    }
    Ok(chosen)
}

/// The row's own main selection: `Some` when it sets any selecting column; an
/// omit-only row merges its omissions onto the batch selection.
fn main_selection(batch: &Selection, columns: &Map<String, Value>) -> Result<Selection, PlanIssue> {
    let execute_all = match text(columns, "execute_all_active_enrichments") {
        Some(raw) => Some(parse_bool(&raw).ok_or_else(|| {
            (
                "execute_all_active_enrichments".to_string(),
                "INVALID_BOOLEAN",
                format!("`{raw}` is not true, false, 1 or 0"),
            )
        })?),
        None => None,
    };
    let enrichments = text(columns, "enrichments").map(|t| codes(&t));
    let groups = text(columns, "enrichment_group_refs").map(|t| codes(&t));
    let omit = text(columns, "omit_enrichments")
        .map(|t| codes(&t))
        .unwrap_or_default();
    if execute_all.is_some() || enrichments.is_some() || groups.is_some() {
        return Ok(Selection {
            execute_all: execute_all.unwrap_or(false),
            enrichments: enrichments.unwrap_or_default(),
            group_refs: groups.unwrap_or_default(),
            exclude: omit,
        });
    }
    let mut merged = batch.clone();
    merged.exclude.extend(omit);
    Ok(merged)
}

/// Builds the plan of a row of `entity_type` from its plan columns.
pub fn plan(
    batch: &BatchPlan,
    catalogue: &Catalogue,
    entity_type: &str,
    columns: &Map<String, Value>,
) -> Result<Plan, PlanIssue> {
    let mode = batch.mode.unwrap_or(Mode::Manual);
    let batch_selection = match (&batch.selection, mode) {
        (Some(selection), _) => selection.clone(),
        // Automatic with no selection: every active enrichment.
        (None, Mode::Automatic) => Selection {
            execute_all: true,
            ..Default::default()
        },
        (None, Mode::Manual) => Selection::default(),
    };
    let selection = main_selection(&batch_selection, columns)?;
    let enrichments: Vec<String> = resolve(&selection, catalogue, entity_type, "enrichments")?
        .into_iter()
        .collect();

    if mode == Mode::Manual {
        return Ok(Plan {
            enrichments,
            depth: 0,
            create_relationships: false,
            children: BTreeMap::new(),
            shareholders: None,
            monitoring: serde_json::json!({ "main": batch.monitoring_main }),
            skip_rules_execution: batch.skip_rules_execution,
        });
    }

    let depth = match text(columns, "depth") {
        Some(raw) => match raw.trim().parse::<i64>() {
            Ok(d) if (0..=MAX_DEPTH).contains(&d) => d,
            _ => {
                return Err((
                    "depth".into(),
                    "INVALID_DEPTH",
                    format!("`{raw}` is not a whole number from 0 to {MAX_DEPTH}"),
                ));
            }
        },
        None => batch.depth,
    };
    let create_relationships = match text(columns, "create_relationships") {
        Some(raw) => parse_bool(&raw).ok_or_else(|| {
            (
                "create_relationships".to_string(),
                "INVALID_BOOLEAN",
                format!("`{raw}` is not true, false, 1 or 0"),
            )
        })?,
        None => depth > 0,
    };
    let (children, shareholders) = if depth > 0 {
        (
            children(batch, catalogue, entity_type, columns)?,
            shareholders(batch, catalogue)?,
        )
    } else {
        (BTreeMap::new(), None)
    };
    let relationships_monitored = depth > 0 && batch.monitoring_apply_to_relationships.unwrap_or(true);
    let monitoring = if relationships_monitored {
        serde_json::json!({ "main": batch.monitoring_main, "relationships": batch.monitoring_relationships })
    } else {
        serde_json::json!({ "main": batch.monitoring_main })
    };
    Ok(Plan {
        enrichments,
        depth,
        create_relationships,
        children,
        shareholders,
        monitoring,
        skip_rules_execution: batch.skip_rules_execution,
    })
}

fn batch_children(
    policy: ChildPolicy,
    catalogue: &Catalogue,
    root_type: &str,
) -> BTreeMap<String, ChildEnrichments> {
    let mut out = BTreeMap::new();
    for child in ["person", "company"] {
        let enrichments = match (policy, root_type) {
            (ChildPolicy::AllActive, _) => {
                ChildEnrichments::Codes(catalogue.all_for(child).into_iter().collect())
            }
            (ChildPolicy::ByRootType, "company") => ChildEnrichments::Codes(
                catalogue
                    .all_for(child)
                    .into_iter()
                    .filter(|c| c != SANCTIONS)
                    .collect(),
            ),
            (ChildPolicy::ByRootType, _) | (ChildPolicy::BasicOnly, _) => {
                ChildEnrichments::Basic("basic_data_only")
            }
        };
        out.insert(child.to_string(), enrichments);
    }
    out
}

fn children(
    batch: &BatchPlan,
    catalogue: &Catalogue,
    root_type: &str,
    columns: &Map<String, Value>,
) -> Result<BTreeMap<String, ChildEnrichments>, PlanIssue> {
    let execute_all = match text(columns, "relationship_execute_all_active_enrichments") {
        Some(raw) => Some(parse_bool(&raw).ok_or_else(|| {
            (
                "relationship_execute_all_active_enrichments".to_string(),
                "INVALID_BOOLEAN",
                format!("`{raw}` is not true, false, 1 or 0"),
            )
        })?),
        None => None,
    };
    let company = text(columns, "relationship_enrichments_company").map(|t| codes(&t));
    let person = text(columns, "relationship_enrichments_person").map(|t| codes(&t));
    let groups = text(columns, "relationship_enrichment_group_refs").map(|t| codes(&t));
    let omit = text(columns, "relationship_omit_enrichments")
        .map(|t| codes(&t))
        .unwrap_or_default();
    let replaces = execute_all.is_some() || company.is_some() || person.is_some() || groups.is_some();
    if !replaces {
        // The batch policy, with an omit-only row's omissions merged onto it.
        let mut policy = batch_children(batch.child_policy, catalogue, root_type);
        for enrichments in policy.values_mut() {
            if let ChildEnrichments::Codes(codes) = enrichments {
                codes.retain(|c| !omit.contains(c));
            }
        }
        return Ok(policy);
    }
    let mut out = BTreeMap::new();
    for (child, own) in [("person", &person), ("company", &company)] {
        let selection = Selection {
            execute_all: execute_all.unwrap_or(false),
            enrichments: own.clone().unwrap_or_default(),
            group_refs: groups.clone().unwrap_or_default(),
            exclude: omit.clone(),
        };
        let column = format!("relationship_enrichments_{child}");
        let codes = resolve(&selection, catalogue, child, &column)?;
        out.insert(
            child.to_string(),
            ChildEnrichments::Codes(codes.into_iter().collect()),
        );
    }
    Ok(out)
}

fn shareholders(batch: &BatchPlan, catalogue: &Catalogue) -> Result<Option<Vec<String>>, PlanIssue> {
    match &batch.shareholders {
        Some(selection) => {
            let codes = resolve(
                selection,
                catalogue,
                "any",
                "auto_execute_integrations_shareholders",
            )?;
            Ok(Some(codes.into_iter().collect()))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalogue() -> Catalogue {
        let mut active = BTreeMap::new();
        for (code, t) in [
            ("basic", "any"),
            ("pep", "person"),
            ("credit", "company"),
            (SANCTIONS, "any"),
        ] {
            active.insert(code.to_string(), t.to_string());
        }
        let mut groups = BTreeMap::new();
        groups.insert("kyc".to_string(), vec!["pep".to_string(), "basic".to_string()]);
        Catalogue { active, groups }
    }

    fn columns(pairs: &[(&str, &str)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect()
    }

    fn automatic(depth: i64) -> BatchPlan {
        BatchPlan {
            mode: Some(Mode::Automatic),
            depth,
            ..Default::default()
        }
    }

    #[test]
    fn automatic_without_a_batch_selection_runs_every_active_enrichment_for_the_type() {
        let plan = plan(&automatic(0), &catalogue(), "person", &Map::new()).unwrap();
        assert_eq!(plan.enrichments, ["basic", SANCTIONS, "pep"]);
    }

    #[test]
    fn a_row_selection_replaces_the_batch_and_an_omit_only_row_merges() {
        let mut batch = automatic(0);
        batch.selection = Some(Selection {
            enrichments: vec!["basic".into(), "pep".into()],
            ..Default::default()
        });
        let replaced = plan(
            &batch,
            &catalogue(),
            "person",
            &columns(&[("enrichment_group_refs", "kyc"), ("omit_enrichments", "basic")]),
        )
        .unwrap();
        assert_eq!(replaced.enrichments, ["pep"]);
        let merged = plan(
            &batch,
            &catalogue(),
            "person",
            &columns(&[("omit_enrichments", "pep")]),
        )
        .unwrap();
        assert_eq!(merged.enrichments, ["basic"]);
        let all = plan(
            &batch,
            &catalogue(),
            "company",
            &columns(&[("execute_all_active_enrichments", "1")]),
        )
        .unwrap();
        assert_eq!(all.enrichments, ["basic", "credit", SANCTIONS]);
    }

    #[test]
    fn unknown_codes_and_groups_are_row_errors() {
        let err = plan(
            &automatic(0),
            &catalogue(),
            "person",
            &columns(&[("enrichments", "basic;nope")]),
        )
        .unwrap_err();
        assert_eq!((err.0.as_str(), err.1), ("enrichments", "UNKNOWN_ENRICHMENT"));
        let err = plan(
            &automatic(0),
            &catalogue(),
            "person",
            &columns(&[("enrichment_group_refs", "ghost")]),
        )
        .unwrap_err();
        assert_eq!(err.1, "UNKNOWN_ENRICHMENT_GROUP");
    }

    #[test]
    fn manual_mode_has_no_depth_relationships_or_shareholders() {
        let batch = BatchPlan {
            mode: Some(Mode::Manual),
            depth: 3,
            ..Default::default()
        };
        let p = plan(
            &batch,
            &catalogue(),
            "company",
            &columns(&[
                ("depth", "2"),
                ("create_relationships", "true"),
                ("enrichments", "credit"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (p.depth, p.create_relationships, p.children.len(), p.shareholders),
            (0, false, 0, None)
        );
        assert_eq!(p.enrichments, ["credit"]);
        assert!(p.monitoring.get("relationships").is_none());
    }

    #[test]
    fn child_policies_follow_the_root_type() {
        let mut batch = automatic(1);
        batch.child_policy = ChildPolicy::ByRootType;
        let company_root = plan(&batch, &catalogue(), "company", &Map::new()).unwrap();
        assert_eq!(
            company_root.children["person"],
            ChildEnrichments::Codes(vec!["basic".into(), "pep".into()])
        );
        let person_root = plan(&batch, &catalogue(), "person", &Map::new()).unwrap();
        assert_eq!(
            person_root.children["company"],
            ChildEnrichments::Basic("basic_data_only")
        );
        batch.child_policy = ChildPolicy::BasicOnly;
        assert_eq!(
            plan(&batch, &catalogue(), "company", &Map::new())
                .unwrap()
                .children["person"],
            ChildEnrichments::Basic("basic_data_only")
        );
    }

    #[test]
    fn relationship_columns_replace_the_policy_except_omit_only_which_merges() {
        let batch = automatic(2);
        let replaced = plan(
            &batch,
            &catalogue(),
            "company",
            &columns(&[("relationship_enrichments_person", "pep")]),
        )
        .unwrap();
        assert_eq!(
            replaced.children["person"],
            ChildEnrichments::Codes(vec!["pep".into()])
        );
        assert_eq!(replaced.children["company"], ChildEnrichments::Codes(vec![]));
        let merged = plan(
            &batch,
            &catalogue(),
            "company",
            &columns(&[("relationship_omit_enrichments", SANCTIONS)]),
        )
        .unwrap();
        assert_eq!(
            merged.children["company"],
            ChildEnrichments::Codes(vec!["basic".into(), "credit".into()])
        );
    }

    #[test]
    fn depth_is_checked_and_relationships_are_monitored_unless_turned_off() {
        let err = plan(&automatic(0), &catalogue(), "person", &columns(&[("depth", "6")])).unwrap_err();
        assert_eq!(err.1, "INVALID_DEPTH");
        let mut batch = automatic(1);
        batch.monitoring_relationships = serde_json::json!({"daily": true});
        assert!(
            plan(&batch, &catalogue(), "person", &Map::new())
                .unwrap()
                .monitoring
                .get("relationships")
                .is_some()
        );
        batch.monitoring_apply_to_relationships = Some(false);
        assert!(
            plan(&batch, &catalogue(), "person", &Map::new())
                .unwrap()
                .monitoring
                .get("relationships")
                .is_none()
        );
    }
}
