//! Exports: a filter becomes a row stream, a format writer turns it into a file in
//! object storage, and the client downloads it from a signed, expiring URL.

pub mod columns;
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
