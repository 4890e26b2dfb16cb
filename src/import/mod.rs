//! Imports: CSV headers and the column contract (`../shared/IMPORT_CONTRACT.md`),
//! tax-ID rules per country. The upload pipeline builds on these.

pub mod headers;
pub mod mapping;
pub mod plan;
pub mod row;
pub mod tax_id;
