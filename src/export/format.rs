//! Export formats and compression: names, file extensions, content types.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Xlsx,
    Json,
    Ndjson,
    Parquet,
    Avro,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Xlsx => "xlsx",
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            Format::Parquet => "parquet",
            Format::Avro => "avro",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Parquet => "application/vnd.apache.parquet",
            Format::Avro => "application/avro",
        }
    }

    /// Text formats may be gzipped; the binary ones compress internally.
    pub fn allows_gzip(self) -> bool {
        matches!(self, Format::Csv | Format::Json | Format::Ndjson)
    }
}

/// File name and content type of an export file.
pub fn file_name_and_type(format: Format, compression: Compression, stem: &str) -> (String, &'static str) {
    match compression {
        Compression::None => (format!("{stem}.{}", format.extension()), format.content_type()),
        Compression::Gzip => (format!("{stem}.{}.gz", format.extension()), "application/gzip"),
    }
}
