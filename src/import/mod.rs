//! Imports: the column contract (`../shared/IMPORT_CONTRACT.md`) as pure functions
//! (headers, rows, tax IDs, enrichment plans), the upload's pre-flight, the import
//! job that upserts entities batch by batch, and its error report.

pub mod entity;
pub mod expiry;
pub mod headers;
pub mod job;
pub mod json_object;
pub mod layout;
pub mod mapping;
pub mod mappings;
pub mod notice;
pub mod plan;
pub mod preflight;
pub mod preview;
pub mod reader;
pub mod report;
pub mod row;
pub mod rules;
pub mod service;
pub mod spec;
pub mod staged;
pub mod table;
pub mod tax_id;
pub mod template;

/// The `kind` of import jobs.
pub const KIND: &str = "import";
