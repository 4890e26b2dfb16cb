//! Exports: a filter becomes a row stream, a format writer turns it into a file in
//! object storage, and the client downloads it from a signed, expiring URL.

pub mod columns;
pub mod delivery;
pub mod email_job;
pub mod format;
pub mod janitor;
pub mod job;
pub mod service;
pub mod spec;
pub mod writer;

pub use service::{ExportError, Exports};
pub use spec::ExportSpec;

/// The `kind` of export jobs in the queue.
pub const KIND: &str = "export";
/// The `kind` of the job that e-mails a finished (or failed) export.
pub const EMAIL_KIND: &str = "export_email";
/// Usage event kind: one unit per recipient of an e-mailed export.
pub const USAGE_EMAIL_RECIPIENT: &str = "export_email_recipient";
