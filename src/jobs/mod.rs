//! The job queue every job kind runs on: enqueue with idempotency, claim with a
//! lease, heartbeat, retry with backoff, cancellation, and events for watchers.

pub mod context;
pub mod events;
pub mod kind;
pub mod queue;
pub mod retention;
pub mod worker;

pub use crate::db::jobs::JobState;
pub use context::JobContext;
pub use events::JobEvents;
pub use kind::{Job, JobKind, Lane, Outcome, Registry, RunJob, Undecodable};
pub use queue::{Enqueued, NewJob, Queue, QueueError};
pub use worker::Worker;

/// What a successful run leaves on the job.
#[derive(Debug, Default, Clone)]
pub struct JobOutcome {
    /// Kind-specific JSON kept on the job (file key, checksum, counts, …).
    pub result: Option<serde_json::Value>,
    /// When the job's output expires (exports' retention).
    pub expires_at: Option<i64>,
    /// A job queued in the same transaction that completes this one (an e-mail), so
    /// it is never lost nor queued twice.
    pub follow_up: Option<NewJob>,
}

/// How a run failed, which decides what the queue does next.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt (storage or database hiccup): retried with backoff.
    #[error("{0}")]
    Transient(String),
    /// The job cannot succeed (bad data): FAILED now, with this reason.
    #[error("{message}")]
    Permanent { reason: String, message: String },
    /// The job saw its cancellation.
    #[error("the job was cancelled")]
    Cancelled,
    /// Another worker owns the job now; nothing more may be written.
    #[error("the job's lease was lost")]
    LeaseLost,
    /// This process is stopping; the job goes back to the queue.
    #[error("the worker is shutting down")]
    Shutdown,
    /// What the job needs is known to be down (a mail relay behind an open
    /// breaker): back to the queue for this long, the attempt not counted, so an
    /// outage of a third party never uses up a job's attempts.
    #[error("deferred: {why}")]
    Deferred { after: std::time::Duration, why: String },
}

impl From<crate::db::DbError> for JobError {
    fn from(err: crate::db::DbError) -> Self {
        JobError::Transient(err.to_string())
    }
}

impl From<diesel::result::Error> for JobError {
    fn from(err: diesel::result::Error) -> Self {
        JobError::Transient(err.to_string())
    }
}

/// The error a job carries when it ends FAILED: `code` is a gRPC code number.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobFailure {
    pub code: i32,
    pub reason: String,
    pub message: String,
}
