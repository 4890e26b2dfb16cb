//! The export column allow-list, and how an entity becomes cells: every entity field
//! by its snake_case key, plus `attributes.<path>` and `entity_data.<path>`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::db::entities::{EntityRow, EntityView};
use crate::exchange::EXPANDED_SUFFIX;

/// An entity field that can be exported as a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Field {
    Id,
    Type,
    TaxId,
    Country,
    Name,
    Gender,
    ExternalId,
    Email,
    Phone,
    RegistrationDate,
    Status,
    IsClient,
    Nationality,
    RiskMatrixId,
    Attributes,
    EntityData,
    EnrichmentPlan,
    SkipRulesExecution,
    CreatedAt,
    UpdatedAt,
}

/// Every field in default column order, with its key.
pub const FIELDS: [(&str, Field); 20] = [
    ("id", Field::Id),
    ("type", Field::Type),
    ("tax_id", Field::TaxId),
    ("country", Field::Country),
    ("name", Field::Name),
    ("gender", Field::Gender),
    ("external_id", Field::ExternalId),
    ("email", Field::Email),
    ("phone", Field::Phone),
    ("registration_date", Field::RegistrationDate),
    ("status", Field::Status),
    ("is_client", Field::IsClient),
    ("nationality", Field::Nationality),
    ("risk_matrix_id", Field::RiskMatrixId),
    ("attributes", Field::Attributes),
    ("entity_data", Field::EntityData),
    ("enrichment_plan", Field::EnrichmentPlan),
    ("skip_rules_execution", Field::SkipRulesExecution),
    ("created_at", Field::CreatedAt),
    ("updated_at", Field::UpdatedAt),
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Column {
    Field(Field),
    /// A dotted path below `attributes`.
    Attribute(Vec<String>),
    /// A dotted path below `entity_data`.
    EntityData(Vec<String>),
}

/// What a column holds, which typed formats (XLSX, Parquet, Avro) follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Uuid,
    Text,
    Bool,
    /// Milliseconds since the epoch, UTC.
    Timestamp,
    /// Days since the epoch.
    Date,
    /// A JSON object: nested in JSON formats, JSON text elsewhere.
    Json,
    /// Any JSON value under a path: strings stay strings, other values become JSON
    /// text in formats with fixed column types.
    Dynamic,
}

impl Column {
    /// Parses a column key; `None` when it is not on the allow-list.
    pub fn parse(key: &str) -> Option<Column> {
        let key = key.trim();
        if let Some((_, field)) = FIELDS.iter().find(|(k, _)| *k == key) {
            return Some(Column::Field(*field));
        }
        let (prefix, path) = key.split_once('.')?;
        let segments: Vec<String> = path.split('.').map(str::to_string).collect();
        let valid = segments.iter().all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        match prefix {
            "attributes" if valid => Some(Column::Attribute(segments)),
            "entity_data" | "entityData" if valid => Some(Column::EntityData(segments)),
            _ => None,
        }
    }

    /// The column's key, also its header.
    pub fn key(&self) -> String {
        match self {
            Column::Field(field) => FIELDS
                .iter()
                .find(|(_, f)| f == field)
                .map(|(k, _)| k.to_string())
                .unwrap_or_default(),
            Column::Attribute(path) => format!("attributes.{}", path.join(".")),
            Column::EntityData(path) => format!("entity_data.{}", path.join(".")),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Column::Field(Field::Id) => Kind::Uuid,
            Column::Field(Field::IsClient | Field::SkipRulesExecution) => Kind::Bool,
            Column::Field(Field::CreatedAt | Field::UpdatedAt) => Kind::Timestamp,
            Column::Field(Field::RegistrationDate) => Kind::Date,
            Column::Field(Field::Attributes | Field::EntityData | Field::EnrichmentPlan) => Kind::Json,
            Column::Field(_) => Kind::Text,
            Column::Attribute(_) | Column::EntityData(_) => Kind::Dynamic,
        }
    }

    /// Only path columns can hold arrays to expand.
    pub fn can_expand(&self) -> bool {
        matches!(self, Column::Attribute(_) | Column::EntityData(_))
    }
}

/// The header of each column: its key, and for the column `expand_array` expands,
/// the key with [`EXPANDED_SUFFIX`] (`attributes.tags[]`), by which an import tells
/// such a file and refuses it.
pub fn headers(columns: &[Column], expand_array: Option<usize>) -> Vec<String> {
    columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let key = column.key();
            if Some(i) == expand_array {
                format!("{key}{}", EXPANDED_SUFFIX)
            } else {
                key
            }
        })
        .collect()
}

/// Every field, the default when a request names no columns.
pub fn default_columns() -> Vec<Column> {
    FIELDS.iter().map(|(_, f)| Column::Field(*f)).collect()
}

/// One exported value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Text(String),
    Bool(bool),
    Timestamp(i64),
    Date(i32),
    Json(Value),
    /// A JSON object column as stored: always serde_json output, so it is written as
    /// is instead of being parsed and printed again.
    RawJson(String),
}

/// A cell borrowed from a row the writer has not copied (CSV and Parquet read
/// entities in place) or from a [`Cell`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CellRef<'a> {
    Null,
    Text(&'a str),
    Bool(bool),
    Timestamp(i64),
    Date(i32),
    Json(&'a Value),
    RawJson(&'a str),
}

impl<'a> CellRef<'a> {
    fn text(value: Option<&'a str>) -> CellRef<'a> {
        value.map(CellRef::Text).unwrap_or(CellRef::Null)
    }

    /// As [`Cell::from_json`].
    fn from_json(value: Option<&'a Value>) -> CellRef<'a> {
        match value {
            None | Some(Value::Null) => CellRef::Null,
            Some(Value::String(s)) => CellRef::Text(s),
            Some(other) => CellRef::Json(other),
        }
    }
}

impl CellRef<'_> {
    /// Appends the cell as text (the forms [`Cell::to_text`] documents); nothing for
    /// null.
    pub fn push_text(&self, out: &mut String) {
        match self {
            CellRef::Null => {}
            CellRef::Text(s) | CellRef::RawJson(s) => out.push_str(s),
            CellRef::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            CellRef::Timestamp(ms) => crate::calendar::push_rfc3339_millis(*ms, out),
            CellRef::Date(days) => crate::calendar::push_iso_date(*days, out),
            CellRef::Json(v) => out.push_str(&v.to_string()),
        }
    }
}

impl Cell {
    pub fn as_ref(&self) -> CellRef<'_> {
        match self {
            Cell::Null => CellRef::Null,
            Cell::Text(s) => CellRef::Text(s),
            Cell::Bool(b) => CellRef::Bool(*b),
            Cell::Timestamp(ms) => CellRef::Timestamp(*ms),
            Cell::Date(days) => CellRef::Date(*days),
            Cell::Json(v) => CellRef::Json(v),
            Cell::RawJson(s) => CellRef::RawJson(s),
        }
    }

    fn text(value: Option<String>) -> Cell {
        match value {
            Some(v) => Cell::Text(v),
            None => Cell::Null,
        }
    }

    /// A JSON value found under a path: strings as text, null as empty.
    fn from_json(value: Option<&Value>) -> Cell {
        match value {
            None | Some(Value::Null) => Cell::Null,
            Some(Value::String(s)) => Cell::Text(s.clone()),
            Some(other) => Cell::Json(other.clone()),
        }
    }

    /// The cell as text, for formats that have only text (CSV) or for text-typed
    /// columns: JSON compact, booleans `true`/`false`, timestamps RFC 3339 UTC with
    /// milliseconds, dates `YYYY-MM-DD`.
    pub fn to_text(&self) -> Option<String> {
        if matches!(self, Cell::Null) {
            return None;
        }
        let mut text = String::new();
        self.as_ref().push_text(&mut text);
        Some(text)
    }
}

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

fn at_path<'a>(mut value: &'a Value, path: &[String]) -> Option<&'a Value> {
    for segment in path {
        value = value.get(segment)?;
    }
    Some(value)
}

/// The cells of one entity in column order. Takes the row so its strings move into
/// the cells instead of being copied (columns never repeat).
pub fn cells(mut row: EntityRow, columns: &[Column]) -> Vec<Cell> {
    let attributes = if columns.iter().any(|c| matches!(c, Column::Attribute(_))) {
        parse_json(&row.attributes)
    } else {
        Value::Null
    };
    let entity_data = if columns.iter().any(|c| matches!(c, Column::EntityData(_))) {
        parse_json(&row.entity_data)
    } else {
        Value::Null
    };
    columns
        .iter()
        .map(|column| match column {
            Column::Attribute(path) => Cell::from_json(at_path(&attributes, path)),
            Column::EntityData(path) => Cell::from_json(at_path(&entity_data, path)),
            Column::Field(field) => field_cell(&mut row, *field),
        })
        .collect()
}

fn field_cell(row: &mut EntityRow, field: Field) -> Cell {
    use std::mem::take;
    match field {
        Field::Id => Cell::Text(take(&mut row.id)),
        Field::Type => Cell::Text(take(&mut row.entity_type)),
        Field::TaxId => Cell::Text(take(&mut row.tax_id)),
        Field::Country => Cell::Text(take(&mut row.country)),
        Field::Name => Cell::Text(take(&mut row.name)),
        Field::Gender => Cell::text(row.gender.take()),
        Field::ExternalId => Cell::text(row.external_id.take()),
        Field::Email => Cell::text(row.email.take()),
        Field::Phone => Cell::text(row.phone.take()),
        Field::RegistrationDate => row
            .registration_date
            .as_deref()
            .and_then(crate::calendar::parse_date_prefix)
            .map(Cell::Date)
            .unwrap_or(Cell::Null),
        Field::Status => Cell::Text(take(&mut row.status)),
        Field::IsClient => Cell::Bool(row.is_client),
        Field::Nationality => Cell::text(row.nationality.take()),
        Field::RiskMatrixId => Cell::text(row.risk_matrix_id.take()),
        Field::Attributes => Cell::RawJson(take(&mut row.attributes)),
        Field::EntityData => Cell::RawJson(take(&mut row.entity_data)),
        Field::EnrichmentPlan => row
            .enrichment_plan
            .take()
            .map(Cell::RawJson)
            .unwrap_or(Cell::Null),
        Field::SkipRulesExecution => Cell::Bool(row.skip_rules_execution),
        Field::CreatedAt => Cell::Timestamp(row.created_at),
        Field::UpdatedAt => Cell::Timestamp(row.updated_at),
    }
}

/// The cells of one borrowed entity in column order, handed to `each` one by one
/// (no row is built): the same values as [`cells`], without copying a string.
pub fn each_cell<E>(
    entity: &EntityView<'_>,
    columns: &[Column],
    each: &mut dyn FnMut(CellRef<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let attributes = if columns.iter().any(|c| matches!(c, Column::Attribute(_))) {
        parse_json(entity.attributes)
    } else {
        Value::Null
    };
    let entity_data = if columns.iter().any(|c| matches!(c, Column::EntityData(_))) {
        parse_json(entity.entity_data)
    } else {
        Value::Null
    };
    for column in columns {
        let cell = match column {
            Column::Attribute(path) => CellRef::from_json(at_path(&attributes, path)),
            Column::EntityData(path) => CellRef::from_json(at_path(&entity_data, path)),
            Column::Field(field) => field_ref(entity, *field),
        };
        each(cell)?;
    }
    Ok(())
}

fn field_ref<'a>(e: &EntityView<'a>, field: Field) -> CellRef<'a> {
    match field {
        Field::Id => CellRef::Text(e.id),
        Field::Type => CellRef::Text(e.entity_type),
        Field::TaxId => CellRef::Text(e.tax_id),
        Field::Country => CellRef::Text(e.country),
        Field::Name => CellRef::Text(e.name),
        Field::Gender => CellRef::text(e.gender),
        Field::ExternalId => CellRef::text(e.external_id),
        Field::Email => CellRef::text(e.email),
        Field::Phone => CellRef::text(e.phone),
        Field::RegistrationDate => e
            .registration_date
            .and_then(crate::calendar::parse_date_prefix)
            .map(CellRef::Date)
            .unwrap_or(CellRef::Null),
        Field::Status => CellRef::Text(e.status),
        Field::IsClient => CellRef::Bool(e.is_client),
        Field::Nationality => CellRef::text(e.nationality),
        Field::RiskMatrixId => CellRef::text(e.risk_matrix_id),
        Field::Attributes => CellRef::RawJson(e.attributes),
        Field::EntityData => CellRef::RawJson(e.entity_data),
        Field::EnrichmentPlan => e.enrichment_plan.map(CellRef::RawJson).unwrap_or(CellRef::Null),
        Field::SkipRulesExecution => CellRef::Bool(e.skip_rules_execution),
        Field::CreatedAt => CellRef::Timestamp(e.created_at),
        Field::UpdatedAt => CellRef::Timestamp(e.updated_at),
    }
}

/// One row per item of the array in column `expand` (other cells repeat); an empty
/// array gives one row with an empty cell; a value that is not an array stays as is.
pub fn expand(cells: Vec<Cell>, expand: Option<usize>, out: &mut Vec<Vec<Cell>>) {
    let Some(index) = expand else {
        out.push(cells);
        return;
    };
    let items = match cells.get(index) {
        Some(Cell::Json(Value::Array(items))) => items.clone(),
        _ => {
            out.push(cells);
            return;
        }
    };
    if items.is_empty() {
        let mut row = cells;
        row[index] = Cell::Null;
        out.push(row);
        return;
    }
    for item in items {
        let mut row = cells.clone();
        row[index] = Cell::from_json(Some(&item));
        out.push(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_to_columns_and_back() {
        for key in [
            "tax_id",
            "created_at",
            "attributes.tags.tier",
            "entity_data.person.birth_date",
        ] {
            assert_eq!(Column::parse(key).unwrap().key(), key);
        }
        assert_eq!(
            Column::parse("entityData.company.x").unwrap().key(),
            "entity_data.company.x"
        );
        for bad in [
            "password",
            "attributes.",
            "attributes..x",
            "attributes.a b",
            "other.x",
        ] {
            assert_eq!(Column::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn borrowed_cells_equal_owned_cells_for_every_column() {
        let row = EntityRow {
            id: "0193a0b4-0000-7000-8000-000000000001".into(),
            organization_id: "org".into(),
            entity_type: "person".into(),
            tax_id: "20123456786".into(),
            country: "AR".into(),
            name: "Ana, \"la\" Pérez".into(),
            gender: Some("female".into()),
            external_id: None,
            email: Some("ana@example.com".into()),
            phone: None,
            registration_date: Some("2024-02-29T10:00:00Z".into()),
            status: "active".into(),
            is_client: true,
            nationality: Some("AR".into()),
            risk_matrix_id: None,
            attributes: r#"{"tier":"gold","tags":["a","b"],"n":3}"#.into(),
            entity_data: r#"{"person":{"birth_date":"1990-01-02"}}"#.into(),
            enrichment_plan: Some(r#"{"execute_all":true}"#.into()),
            skip_rules_execution: false,
            created_at: 1_700_000_000_123,
            updated_at: 1_700_000_000_456,
        };
        let mut columns = default_columns();
        for key in [
            "attributes.tier",
            "attributes.tags",
            "attributes.n",
            "attributes.none",
            "entity_data.person.birth_date",
        ] {
            columns.push(Column::parse(key).unwrap());
        }
        let owned = cells(row.clone(), &columns);
        let mut borrowed = Vec::new();
        each_cell(&row.view(), &columns, &mut |cell| {
            borrowed.push(format!("{cell:?}"));
            Ok::<_, ()>(())
        })
        .unwrap();
        let expected: Vec<String> = owned.iter().map(|c| format!("{:?}", c.as_ref())).collect();
        assert_eq!(borrowed, expected);
    }

    #[test]
    fn an_array_becomes_one_row_per_item_and_an_empty_one_a_single_empty_row() {
        let base = vec![Cell::Text("a".into()), Cell::Json(serde_json::json!(["x", 2]))];
        let mut out = Vec::new();
        expand(base, Some(1), &mut out);
        assert_eq!(
            out,
            vec![
                vec![Cell::Text("a".into()), Cell::Text("x".into())],
                vec![Cell::Text("a".into()), Cell::Json(serde_json::json!(2))]
            ]
        );
        let mut out = Vec::new();
        expand(
            vec![Cell::Text("b".into()), Cell::Json(serde_json::json!([]))],
            Some(1),
            &mut out,
        );
        assert_eq!(out, vec![vec![Cell::Text("b".into()), Cell::Null]]);
        let mut out = Vec::new();
        expand(
            vec![Cell::Text("c".into()), Cell::Text("scalar".into())],
            Some(1),
            &mut out,
        );
        assert_eq!(out.len(), 1);
    }
}
