//! What an import will make of a file, shown before anything is written: where
//! each header goes (platform column, alias, saved mapping, attribute, entity data,
//! or not imported and why), the first rows as the import reads them, and the
//! header's problems. The answers come from the import's own code
//! ([`super::layout::place`], [`super::layout::Layout::from_header`], the same
//! table readers), so the preview and the import cannot disagree.
//!
//! A preview may read only the beginning of a file (the hub sends the first
//! 256 KiB of a CSV or NDJSON file): a row cut at the end is not shown.

use std::collections::BTreeMap;
use std::io::{Read, Seek};

use serde::Serialize;

use super::headers::{self, Target};
use super::layout::{Layout, place};
use super::table::{self, Format, TableError};

/// Data rows a preview shows.
pub const ROWS: usize = 10;

/// One column of the file and where its values go.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Column {
    /// The header as the file has it.
    pub header: String,
    /// The header as saved mappings name it (trimmed, lower case, spaces as `_`).
    pub key: String,
    /// Where its values are stored (`tax_id`, `attributes.segment_tag`,
    /// `entityData.person.income`); empty when not imported.
    pub goes_to: String,
    #[schema(value_type = String)]
    /// `platform`, `alias`, `mapping`, `attribute`, `entity_data`, `whole_object`
    /// or `not_imported`.
    pub how: &'static str,
    /// Why, in words (the alias, the legacy prefix, the reason it is not imported).
    pub note: String,
}

/// A header problem that would refuse the file.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    pub field: String,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Preview {
    pub columns: Vec<Column>,
    /// Up to [`ROWS`] data rows, one cell per column; a row that cannot be read is
    /// left out (its problem is listed).
    pub rows: Vec<Vec<String>>,
    pub problems: Vec<Problem>,
}

/// Where `header` goes with `column_map`: the import's own placement, in words.
pub fn column(header: &str, column_map: &BTreeMap<String, String>) -> Column {
    let (mapped, target) = place(header, column_map);
    let normalized = headers::normalize(header);
    let by_mapping = mapped != header;
    let (goes_to, how, note) = match target {
        Err(err) => (String::new(), "not_imported", err.to_string()),
        Ok(Target::Platform(name)) if by_mapping => {
            (name.to_string(), "mapping", "by the saved mapping".into())
        }
        Ok(Target::Platform(name)) if normalized == name => (name.to_string(), "platform", String::new()),
        Ok(Target::Platform(name)) => (
            name.to_string(),
            "alias",
            format!("`{normalized}` is an alias of `{name}`"),
        ),
        Ok(Target::Attribute(path)) => {
            let note = if normalized.starts_with("attributes.") {
                String::new()
            } else if normalized.starts_with("metadata.") {
                "legacy `metadata.` prefix: stored under attributes".into()
            } else {
                "not a platform column: stored as an attribute".into()
            };
            (format!("attributes.{}", path.join(".")), "attribute", note)
        }
        Ok(Target::EntityData { bucket, path }) => {
            let (bucket, note) = match bucket {
                Some(bucket) => (bucket, String::new()),
                None => (
                    "<type>".to_string(),
                    "person or company, by the row's type".to_string(),
                ),
            };
            (
                format!("entityData.{bucket}.{}", path.join(".")),
                "entity_data",
                note,
            )
        }
        Ok(Target::AttributesObject) => (
            "attributes".into(),
            "whole_object",
            "a JSON object per row".into(),
        ),
        Ok(Target::EntityDataObject) => (
            "entityData".into(),
            "whole_object",
            "a JSON object per row".into(),
        ),
        Ok(Target::Ignored) => {
            let note = if headers::REPORT_COLUMNS.contains(&normalized.as_str()) {
                "a column of ferry's error report"
            } else {
                "an export's column: ferry keeps its own"
            };
            (String::new(), "not_imported", note.into())
        }
    };
    // A header the mapping sends anywhere (a platform column, an attribute, KYC/KYB
    // data) goes there by the mapping.
    let (how, note) = if by_mapping && how != "not_imported" && how != "mapping" {
        ("mapping", "by the saved mapping".to_string())
    } else {
        (how, note)
    };
    Column {
        header: header.to_string(),
        key: normalized,
        goes_to,
        how,
        note,
    }
}

/// The preview of `input` read as `format`, with the saved mapping `column_map`.
pub fn preview<R: Read + Seek>(
    format: Format,
    input: R,
    column_map: &BTreeMap<String, String>,
) -> Result<Preview, TableError> {
    table::read(format, input, |table| {
        let Some(header) = table.header()? else {
            return Ok(Preview {
                columns: Vec::new(),
                rows: Vec::new(),
                problems: vec![Problem {
                    field: "file".into(),
                    code: "EMPTY_FILE".into(),
                    message: "the file is empty; it needs a header row and at least one row".into(),
                }],
            });
        };
        let columns = header
            .names
            .iter()
            .enumerate()
            .map(|(i, name)| match name {
                Some(name) if i == 0 => column(name.trim_start_matches('\u{feff}'), column_map),
                Some(name) => column(name, column_map),
                None => Column {
                    header: format!("(column {})", i + 1),
                    key: String::new(),
                    goes_to: String::new(),
                    how: "not_imported",
                    note: "the header is not valid UTF-8".into(),
                },
            })
            .collect();
        let mut problems: Vec<Problem> = match Layout::from_header(header.line, &header.names, column_map) {
            Ok(_) => Vec::new(),
            Err(violations) => violations
                .into_iter()
                .map(|v| Problem {
                    field: v.field(),
                    code: v.code.to_string(),
                    message: v.message,
                })
                .collect(),
        };
        let mut rows = Vec::new();
        while rows.len() < ROWS {
            // A read error past the first rows is the cut end of a partial file.
            let Ok(Some(row)) = table.next_row() else { break };
            match row.cells {
                Ok(cells) => rows.push(cells),
                Err(v) => problems.push(Problem {
                    field: v.field(),
                    code: v.code.to_string(),
                    message: v.message,
                }),
            }
        }
        Ok(Preview {
            columns,
            rows,
            problems,
        })
    })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn of(csv: &str, map: &[(&str, &str)]) -> Preview {
        let map = map.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        preview(Format::Csv, Cursor::new(csv.as_bytes().to_vec()), &map).expect("preview")
    }

    #[test]
    fn each_header_says_where_it_goes_as_the_import_would() {
        let p = of(
            "taxId,tipo,country,segment_tag,metadata.tier,entityData.income,id,execute_all_active_checks,Nome\n\
             1,person,MX,retail,gold,100,x,true,Ana\n",
            &[("nome", "suggested_name")],
        );
        let how: Vec<(&str, &str)> = p.columns.iter().map(|c| (c.goes_to.as_str(), c.how)).collect();
        assert_eq!(
            how,
            [
                ("tax_id", "alias"),
                ("type", "alias"),
                ("country_code", "alias"),
                ("attributes.segment_tag", "attribute"),
                ("attributes.tier", "attribute"),
                ("entityData.<type>.income", "entity_data"),
                ("", "not_imported"),
                ("", "not_imported"),
                ("suggested_name", "mapping"),
            ]
        );
        assert_eq!(p.rows.len(), 1);
        // The removed column refuses the file, as the import would.
        assert_eq!(p.problems[0].code, "REMOVED_COLUMN");
    }

    #[test]
    fn a_file_cut_mid_row_shows_its_whole_rows_only() {
        let mut csv = String::from("tax_id,type,country_code\n");
        for i in 0..20 {
            csv.push_str(&format!("T{i},person,MX\n"));
        }
        csv.push_str("T99,\"pers");
        let p = of(&csv, &[]);
        assert_eq!(p.rows.len(), ROWS);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(of("", &[]).problems[0].code, "EMPTY_FILE");
    }
}
