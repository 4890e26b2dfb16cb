//! What an export job does, checked before it is queued and stored as its versioned
//! payload, so old jobs still run after a deploy.

use super::writer::avro::AvroCodec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::columns::{self, Column};
use super::format::{Compression, Format};
use crate::db::entities::EntityFilter;

/// E-mail delivery settings, stored with the job (sent by the e-mail module).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub recipient_emails: Vec<String>,
    pub email_locale: String,
    pub from_email: String,
    pub from_sender_id: String,
    /// The checked From (`Name <address>`); empty: the system sender.
    #[serde(default)]
    pub from_mailbox: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportSpec {
    /// Payload version.
    pub v: u32,
    pub filter: EntityFilter,
    /// The request's filter message, base64 of its protobuf encoding, echoed back.
    pub filter_message: String,
    pub columns: Vec<Column>,
    /// Index into `columns` of the column to expand.
    pub expand_array: Option<usize>,
    pub format: Format,
    pub compression: Compression,
    pub csv_bom: bool,
    pub neutralize_formulas: bool,
    pub delivery: Option<Delivery>,
    /// The codec an Avro export asked for (`None`: the default, deflate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avro_codec: Option<AvroCodec>,
}

/// The export job kind.
pub struct Export;

impl crate::jobs::JobKind for Export {
    const KIND: &'static str = super::KIND;
    type Spec = ExportSpec;
    type Output = ExportResult;

    fn stored_files(job: &crate::jobs::Job<Export>) -> Vec<String> {
        job.output.iter().map(|o| o.object_key.clone()).collect()
    }
}

/// What a completed export leaves on its job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportResult {
    pub object_key: String,
    pub file_name: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
    pub row_count: u64,
}

/// What a client asked for, before checks.
#[derive(Debug, Clone, Default)]
pub struct ExportRequest {
    pub filter: EntityFilter,
    pub filter_message: String,
    pub columns: Vec<String>,
    pub expand_array: String,
    pub format: Option<Format>,
    pub compression: Option<Compression>,
    pub csv_bom: bool,
    pub neutralize_formulas: Option<bool>,
    pub delivery: Option<Delivery>,
    pub avro_codec: Option<AvroCodec>,
}

pub const MAX_COLUMNS: usize = 1_000;

impl ExportSpec {
    /// Checks a request; every problem is reported as (field, description).
    pub fn from_request(request: ExportRequest) -> Result<ExportSpec, Vec<(String, String)>> {
        let mut violations = Vec::new();
        let mut columns = Vec::new();
        if request.columns.len() > MAX_COLUMNS {
            violations.push(("columns".to_string(), format!("at most {MAX_COLUMNS} columns")));
        }
        for (i, key) in request.columns.iter().enumerate() {
            match Column::parse(key) {
                Some(column) if columns.contains(&column) => {
                    violations.push((format!("columns[{i}]"), format!("`{key}` is listed twice")));
                }
                Some(column) => columns.push(column),
                None => violations.push((
                    format!("columns[{i}]"),
                    format!("unknown column `{key}`; use an entity field, `attributes.<path>` or `entity_data.<path>`"),
                )),
            }
        }
        if request.columns.is_empty() {
            columns = columns::default_columns();
        }
        let expand_array = match request.expand_array.trim() {
            "" => None,
            key => match Column::parse(key) {
                Some(column) if column.can_expand() => match columns.iter().position(|c| *c == column) {
                    Some(index) => Some(index),
                    None => {
                        violations.push((
                            "expand_array".into(),
                            format!("`{key}` must also be one of the columns"),
                        ));
                        None
                    }
                },
                _ => {
                    violations.push((
                        "expand_array".into(),
                        format!("`{key}` is not an `attributes.<path>` or `entity_data.<path>` column"),
                    ));
                    None
                }
            },
        };
        let format = request.format.unwrap_or(Format::Csv);
        let compression = request.compression.unwrap_or(Compression::None);
        if compression == Compression::Gzip && !format.allows_gzip() {
            violations.push((
                "compression".into(),
                "GZIP applies to CSV, JSON and NDJSON; XLSX, Parquet and Avro compress internally".into(),
            ));
        }
        if request.avro_codec.is_some() && format != Format::Avro {
            violations.push(("avro_codec".into(), "a block codec applies to Avro only".into()));
        }
        if request.csv_bom && format != Format::Csv {
            violations.push(("csv_bom".into(), "a byte order mark applies to CSV only".into()));
        }
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(ExportSpec {
            v: 1,
            filter: request.filter,
            filter_message: request.filter_message,
            columns,
            expand_array,
            format,
            compression,
            csv_bom: request.csv_bom,
            neutralize_formulas: request.neutralize_formulas.unwrap_or(true),
            delivery: request.delivery,
            avro_codec: request.avro_codec,
        })
    }

    /// Identifies "the same export": two requests with equal keys conflict while one
    /// of them is queued or running.
    pub fn dedupe_key(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        hex::encode(&Sha256::digest(text.as_bytes())[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(columns: &[&str], expand: &str) -> ExportRequest {
        ExportRequest {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            expand_array: expand.into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_unknown_column_is_named_in_the_violation() {
        let violations = ExportSpec::from_request(request(&["tax_id", "password"], "")).unwrap_err();
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].0, "columns[1]");
        assert!(violations[0].1.contains("password"));
    }

    #[test]
    fn no_columns_means_every_field_and_csv() {
        let spec = ExportSpec::from_request(request(&[], "")).unwrap();
        assert_eq!(spec.columns.len(), 20);
        assert_eq!(spec.format, Format::Csv);
        assert!(spec.neutralize_formulas);
    }

    #[test]
    fn expand_array_must_be_a_chosen_path_column() {
        let spec =
            ExportSpec::from_request(request(&["tax_id", "attributes.tags"], "attributes.tags")).unwrap();
        assert_eq!(spec.expand_array, Some(1));
        assert!(ExportSpec::from_request(request(&["tax_id"], "attributes.tags")).is_err());
        assert!(ExportSpec::from_request(request(&["tax_id"], "tax_id")).is_err());
    }

    #[test]
    fn gzip_is_refused_for_binary_formats() {
        let mut r = request(&[], "");
        r.format = Some(Format::Parquet);
        r.compression = Some(Compression::Gzip);
        let violations = ExportSpec::from_request(r).unwrap_err();
        assert_eq!(violations[0].0, "compression");
    }
}
