//! Conversions between protobuf messages and domain values, with the validation that
//! turns bad input into field violations. Pure functions: tested without a server.

use prost_types::{Struct, Timestamp, Value, value::Kind};

use super::error::ApiError;
use crate::db::entities::{EntityFilter, EntityOrder, EntityRow, MAX_FILTER_VALUES, SortKey};
use crate::proto;

pub fn timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// Epoch milliseconds as RFC 3339 UTC text (`2026-12-04T05:11:27.152Z`), as the REST
/// door and the admin commands print times.
pub fn iso(ms: i64) -> String {
    timestamp(ms).to_string()
}

pub fn opt_timestamp(ms: Option<i64>) -> Option<Timestamp> {
    ms.map(timestamp)
}

/// Milliseconds since the epoch; sub-millisecond precision is dropped.
pub fn millis(ts: &Timestamp) -> i64 {
    ts.seconds.saturating_mul(1000) + i64::from(ts.nanos) / 1_000_000
}

/// A JSON value as a protobuf `Value` (grpcurl prints it back as JSON).
pub fn json_to_value(json: serde_json::Value) -> Value {
    let kind = match json {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(json_to_struct(map)),
    };
    Value { kind: Some(kind) }
}

pub fn json_to_struct(map: serde_json::Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: map.into_iter().map(|(k, v)| (k, json_to_value(v))).collect(),
    }
}

/// A stored JSON-object column as a `Struct`; anything else becomes empty.
pub fn json_text_to_struct(text: &str) -> Struct {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(map)) => json_to_struct(map),
        _ => Struct::default(),
    }
}

pub fn entity_type_name(value: i32) -> Option<&'static str> {
    match proto::EntityType::try_from(value).ok()? {
        proto::EntityType::Person => Some("person"),
        proto::EntityType::Company => Some("company"),
        proto::EntityType::Unspecified => None,
    }
}

pub fn entity_type_value(name: &str) -> proto::EntityType {
    match name {
        "person" => proto::EntityType::Person,
        "company" => proto::EntityType::Company,
        _ => proto::EntityType::Unspecified,
    }
}

const STATUSES: [(&str, proto::EntityStatus); 9] = [
    ("active", proto::EntityStatus::Active),
    ("inactive", proto::EntityStatus::Inactive),
    ("blocked", proto::EntityStatus::Blocked),
    ("under_review", proto::EntityStatus::UnderReview),
    ("suspended", proto::EntityStatus::Suspended),
    ("pending_verification", proto::EntityStatus::PendingVerification),
    ("expired", proto::EntityStatus::Expired),
    ("deleted", proto::EntityStatus::Deleted),
    ("rejected", proto::EntityStatus::Rejected),
];

pub fn status_name(value: i32) -> Option<&'static str> {
    let status = proto::EntityStatus::try_from(value).ok()?;
    STATUSES.iter().find(|(_, s)| *s == status).map(|(n, _)| *n)
}

pub fn status_value(name: &str) -> proto::EntityStatus {
    STATUSES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .unwrap_or(proto::EntityStatus::Unspecified)
}

pub fn entity(row: EntityRow) -> proto::Entity {
    proto::Entity {
        r#type: entity_type_value(&row.entity_type) as i32,
        status: status_value(&row.status) as i32,
        attributes: Some(json_text_to_struct(&row.attributes)),
        entity_data: Some(json_text_to_struct(&row.entity_data)),
        enrichment_plan: row.enrichment_plan.as_deref().map(json_text_to_struct),
        create_time: Some(timestamp(row.created_at)),
        update_time: Some(timestamp(row.updated_at)),
        id: row.id,
        organization_id: row.organization_id,
        tax_id: row.tax_id,
        country: row.country,
        name: row.name,
        gender: row.gender.unwrap_or_default(),
        external_id: row.external_id.unwrap_or_default(),
        email: row.email.unwrap_or_default(),
        phone: row.phone.unwrap_or_default(),
        registration_date: row.registration_date.unwrap_or_default(),
        is_client: row.is_client,
        nationality: row.nationality.unwrap_or_default(),
        risk_matrix_id: row.risk_matrix_id.unwrap_or_default(),
        skip_rules_execution: row.skip_rules_execution,
    }
}

/// Checks an `EntityFilter` and turns it into the query filter. `field` prefixes the
/// violation paths (`filter`).
pub fn entity_filter(filter: Option<&proto::EntityFilter>, field: &str) -> Result<EntityFilter, ApiError> {
    let Some(f) = filter else {
        return Ok(EntityFilter::default());
    };
    let mut violations = Vec::new();
    let mut out = EntityFilter::default();
    for (i, t) in f.types.iter().enumerate() {
        match entity_type_name(*t) {
            Some(name) => out.types.push(name.to_string()),
            None => violations.push((
                format!("{field}.types[{i}]"),
                "must be ENTITY_TYPE_PERSON or ENTITY_TYPE_COMPANY".into(),
            )),
        }
    }
    for (i, c) in f.countries.iter().enumerate() {
        let code = c.trim().to_ascii_uppercase();
        if code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()) {
            out.countries.push(code);
        } else {
            violations.push((
                format!("{field}.countries[{i}]"),
                format!("`{c}` is not an ISO 3166-1 alpha-2 code"),
            ));
        }
    }
    for (i, s) in f.statuses.iter().enumerate() {
        match status_name(*s) {
            Some(name) => out.statuses.push(name.to_string()),
            None => violations.push((
                format!("{field}.statuses[{i}]"),
                "must be a specified ENTITY_STATUS_* value".into(),
            )),
        }
    }
    (out.created_from, out.created_to) =
        time_range(f.created.as_ref(), &format!("{field}.created"), &mut violations);
    (out.updated_from, out.updated_to) =
        time_range(f.updated.as_ref(), &format!("{field}.updated"), &mut violations);
    out.tax_ids = f
        .tax_ids
        .iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    out.external_ids = f
        .external_ids
        .iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    out.is_client = f.is_client;
    for (i, a) in f.attributes.iter().enumerate() {
        let path = a.path.trim().strip_prefix("attributes.").unwrap_or(a.path.trim());
        let segments: Vec<String> = path.split('.').map(str::to_string).collect();
        let valid = segments.iter().all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if valid {
            out.attributes.push((segments, a.value.clone()));
        } else {
            violations.push((
                format!("{field}.attributes[{i}].path"),
                "must be dotted segments of letters, digits, `_` or `-` (`segment_tag`, `tags.tier`)".into(),
            ));
        }
    }
    let risk = f.risk_matrix_id.trim();
    if !risk.is_empty() {
        out.risk_matrix_id = Some(risk.to_string());
    }
    let listed = [
        ("types", f.types.len()),
        ("countries", f.countries.len()),
        ("statuses", f.statuses.len()),
        ("tax_ids", f.tax_ids.len()),
        ("external_ids", f.external_ids.len()),
        ("attributes", f.attributes.len()),
    ];
    let total: usize = listed.iter().map(|(_, n)| n).sum();
    if total > MAX_FILTER_VALUES {
        let (largest, count) = listed.iter().max_by_key(|(_, n)| *n).copied().unwrap_or_default();
        violations.push((
            format!("{field}.{largest}"),
            format!(
                "a filter may list at most {MAX_FILTER_VALUES} values in all; this one lists {total} ({count} here)"
            ),
        ));
    }
    let texts = f
        .tax_ids
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("{field}.tax_ids[{i}]"), t))
        .chain(
            f.external_ids
                .iter()
                .enumerate()
                .map(|(i, t)| (format!("{field}.external_ids[{i}]"), t)),
        )
        .chain(
            f.attributes
                .iter()
                .enumerate()
                .map(|(i, a)| (format!("{field}.attributes[{i}].value"), &a.value)),
        )
        .chain(std::iter::once((format!("{field}.search"), &f.search)));
    for (name, text) in texts {
        if text.contains('\0') {
            violations.push((name, "must not contain a NUL character (U+0000)".into()));
        }
    }
    let search = f.search.trim();
    if search.chars().count() > 200 {
        violations.push((format!("{field}.search"), "must be at most 200 characters".into()));
    } else if !search.is_empty() {
        out.search = Some(search.to_string());
    }
    if violations.is_empty() {
        Ok(out)
    } else {
        Err(ApiError::invalid(violations))
    }
}

fn time_range(
    range: Option<&proto::TimeRange>,
    field: &str,
    violations: &mut Vec<(String, String)>,
) -> (Option<i64>, Option<i64>) {
    let Some(range) = range else { return (None, None) };
    let start = range.start.as_ref().map(millis);
    let end = range.end.as_ref().map(millis);
    if let (Some(s), Some(e)) = (start, end)
        && s > e
    {
        violations.push((field.to_string(), "start is after end".into()));
    }
    (start, end)
}

/// Parses an entity listing's `order_by` (`create_time desc` by default).
pub fn entity_order(order_by: &str) -> Result<EntityOrder, ApiError> {
    let (key, descending) = sort_spec(order_by, "create_time desc")?;
    let key = match key.as_str() {
        "create_time" => SortKey::CreatedAt,
        "update_time" => SortKey::UpdatedAt,
        "name" => SortKey::Name,
        "tax_id" => SortKey::TaxId,
        _ => {
            return Err(ApiError::invalid(vec![(
                "order_by".into(),
                format!("cannot sort by `{key}`; use create_time, update_time, name or tax_id"),
            )]));
        }
    };
    Ok(EntityOrder { key, descending })
}

/// Splits `field [asc|desc]`; `default` applies to an empty text.
pub fn sort_spec(order_by: &str, default: &str) -> Result<(String, bool), ApiError> {
    let text = if order_by.trim().is_empty() {
        default
    } else {
        order_by.trim()
    };
    let parts: Vec<&str> = text.split_whitespace().collect();
    let descending = match parts.get(1).map(|d| d.to_ascii_lowercase()) {
        None => false,
        Some(d) if d == "asc" => false,
        Some(d) if d == "desc" => true,
        Some(_) => {
            return Err(ApiError::invalid(vec![(
                "order_by".into(),
                "direction must be `asc` or `desc`".into(),
            )]));
        }
    };
    if parts.len() > 2 {
        return Err(ApiError::invalid(vec![(
            "order_by".into(),
            "sort by one field: `field [asc|desc]`".into(),
        )]));
    }
    Ok((parts.first().unwrap_or(&"").to_ascii_lowercase(), descending))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_at_millisecond_precision() {
        for ms in [0, 1, 999, 1_700_000_000_123, -1] {
            assert_eq!(millis(&timestamp(ms)), ms);
        }
    }

    #[test]
    fn a_bad_filter_lists_every_offending_field() {
        let filter = proto::EntityFilter {
            countries: vec!["ar".into(), "Argentina".into()],
            types: vec![0],
            attributes: vec![proto::AttributeEquals {
                path: "a..b".into(),
                value: "x".into(),
            }],
            created: Some(proto::TimeRange {
                start: Some(timestamp(10)),
                end: Some(timestamp(5)),
            }),
            ..Default::default()
        };
        let err = entity_filter(Some(&filter), "filter").unwrap_err();
        let fields: Vec<&str> = err.violations.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "filter.types[0]",
                "filter.countries[1]",
                "filter.created",
                "filter.attributes[0].path"
            ]
        );
    }

    #[test]
    fn countries_are_upper_cased_and_attribute_paths_lose_their_prefix() {
        let filter = proto::EntityFilter {
            countries: vec![" br ".into()],
            attributes: vec![proto::AttributeEquals {
                path: "attributes.tags.tier".into(),
                value: "gold".into(),
            }],
            ..Default::default()
        };
        let out = entity_filter(Some(&filter), "filter").unwrap();
        assert_eq!(out.countries, ["BR"]);
        assert_eq!(
            out.attributes,
            [(vec!["tags".to_string(), "tier".to_string()], "gold".to_string())]
        );
    }

    #[test]
    fn order_by_defaults_to_newest_first_and_rejects_unknown_fields() {
        assert_eq!(
            entity_order("").unwrap(),
            EntityOrder {
                key: SortKey::CreatedAt,
                descending: true
            }
        );
        assert_eq!(
            entity_order("name").unwrap(),
            EntityOrder {
                key: SortKey::Name,
                descending: false
            }
        );
        assert!(entity_order("password desc").is_err());
        assert!(entity_order("name sideways").is_err());
    }
}
