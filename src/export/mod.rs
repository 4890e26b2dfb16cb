//! Exports: a filter becomes a row stream, a format writer turns it into a file in
//! object storage, and the client downloads it from a signed, expiring URL.

pub mod columns;
pub mod delivery;
pub mod format;
pub mod janitor;
pub mod job;
pub mod notice;
pub mod service;
pub mod spec;
pub mod writer;

pub use service::{ExportError, Exports};
pub use spec::{Export, ExportResult, ExportSpec};

/// The `kind` of export jobs in the queue.
pub const KIND: &str = "export";
/// Usage event kind: one unit per recipient of an e-mailed export.
pub const USAGE_EMAIL_RECIPIENT: &str = "export_email_recipient";
