//! A job kind as a type: the name stored in the `kind` column, the payload it is
//! queued with and the output a completed run leaves. Rows are decoded into a
//! typed [`Job`] once (by the registry before a run, by the services before an
//! answer), so no other code reads the stored JSON. Modelled on the Rust package
//! registry's worker crate: a `BackgroundJob` type per kind and a registry of
//! runnables keyed by name.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{JobContext, JobError, JobOutcome, NewJob};
use crate::db::jobs::JobRow;

/// Which of the worker's lanes runs a kind. Each lane has its own concurrency
/// (`jobs.workers`, `jobs.delivery_workers`) and claims only its kinds, so a job
/// that waits on a third party (a mail relay, a webhook endpoint) never holds a
/// slot an import or export needs, and a long export never delays a delivery.
/// The queue stays one table with one claim path; the lane only filters kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// Work on ferry's own data: imports, exports.
    Work,
    /// Conversations with the outside: e-mail deliveries (and webhooks).
    Delivery,
}

impl Lane {
    pub fn name(self) -> &'static str {
        match self {
            Lane::Work => "work",
            Lane::Delivery => "delivery",
        }
    }

    /// How many jobs of the lane one process runs at once.
    pub fn workers(self, config: &crate::config::JobsConfig) -> u32 {
        match self {
            Lane::Work => config.workers,
            Lane::Delivery => config.delivery_workers,
        }
    }
}

/// What a kind of job is, as data.
pub trait JobKind: Send + Sync + 'static {
    /// The `kind` column value.
    const KIND: &'static str;
    /// The lane whose workers run it.
    const LANE: Lane = Lane::Work;
    /// The payload, versioned (`{"v":1,...}`).
    type Spec: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    /// What the job keeps in its `result` column (while running, for kinds that
    /// checkpoint counters, and once completed).
    type Output: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;

    /// The row of a new job of this kind.
    fn new_job(organization_id: &str, spec: &Self::Spec) -> Result<NewJob, serde_json::Error> {
        Ok(NewJob {
            id: None,
            organization_id: organization_id.to_string(),
            kind: Self::KIND.to_string(),
            payload: serde_json::to_value(spec)?,
            request_id: None,
            dedupe_key: None,
            search_text: String::new(),
            rows_total: None,
        })
    }

    /// The stored files a job of this kind owns (its upload, its output): removed
    /// with the job when it passes `jobs.retention_days`.
    fn stored_files(_job: &Job<Self>) -> Vec<String>
    where
        Self: Sized,
    {
        Vec::new()
    }
}

/// A stored job whose payload or result this build cannot read.
#[derive(Debug, thiserror::Error)]
#[error("the stored {what} of job {id} cannot be read: {error}")]
pub struct Undecodable {
    pub id: String,
    pub what: &'static str,
    pub error: serde_json::Error,
}

/// A job row with its payload and result decoded.
#[derive(Debug, Clone)]
pub struct Job<K: JobKind> {
    pub row: Arc<JobRow>,
    pub spec: K::Spec,
    pub output: Option<K::Output>,
}

impl<K: JobKind> Job<K> {
    pub fn decode(row: impl Into<Arc<JobRow>>) -> Result<Job<K>, Undecodable> {
        let row = row.into();
        let spec = serde_json::from_str(&row.payload).map_err(|error| Undecodable {
            id: row.id.clone(),
            what: "payload",
            error,
        })?;
        let output = match row.result.as_deref() {
            Some(json) => Some(serde_json::from_str(json).map_err(|error| Undecodable {
                id: row.id.clone(),
                what: "result",
                error,
            })?),
            None => None,
        };
        Ok(Job { row, spec, output })
    }

    pub fn id(&self) -> &str {
        &self.row.id
    }
}

/// What a successful run of a kind leaves on its job.
pub struct Outcome<O> {
    pub output: Option<O>,
    /// When the job's output expires (exports' retention).
    pub expires_at: Option<i64>,
    /// A job queued in the same transaction that completes this one (an e-mail).
    pub follow_up: Option<NewJob>,
}

impl<O> Default for Outcome<O> {
    fn default() -> Self {
        Outcome {
            output: None,
            expires_at: None,
            follow_up: None,
        }
    }
}

/// Runs the jobs of one kind.
pub trait RunJob: Send + Sync + 'static {
    type Kind: JobKind;

    fn run(
        &self,
        job: Job<Self::Kind>,
        ctx: JobContext,
    ) -> impl Future<Output = Result<Outcome<<Self::Kind as JobKind>::Output>, JobError>> + Send;

    /// A job to queue in the same transaction that ends this one FAILED.
    fn on_failure(&self, _job: &Job<Self::Kind>) -> Option<NewJob> {
        None
    }
}

/// A runner with its kind erased, as the worker holds it.
trait Runnable: Send + Sync {
    fn lane(&self) -> Lane;
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Result<JobOutcome, JobError>>;
    fn on_failure(&self, row: &JobRow) -> Option<NewJob>;
    fn stored_files(&self, row: &JobRow) -> Result<Vec<String>, Undecodable>;
}

struct Typed<R>(Arc<R>);

impl<R: RunJob> Runnable for Typed<R> {
    fn lane(&self) -> Lane {
        R::Kind::LANE
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Result<JobOutcome, JobError>> {
        let runner = self.0.clone();
        Box::pin(async move {
            let job = Job::<R::Kind>::decode(ctx.job().clone()).map_err(|e| JobError::Permanent {
                reason: "INVALID_PAYLOAD".into(),
                message: e.to_string(),
            })?;
            let outcome = runner.run(job, ctx).await?;
            let result = match outcome.output {
                Some(output) => Some(serde_json::to_value(output).map_err(|e| JobError::Permanent {
                    reason: "INVALID_RESULT".into(),
                    message: e.to_string(),
                })?),
                None => None,
            };
            Ok(JobOutcome {
                result,
                expires_at: outcome.expires_at,
                follow_up: outcome.follow_up,
            })
        })
    }

    fn on_failure(&self, row: &JobRow) -> Option<NewJob> {
        let job = Job::<R::Kind>::decode(row.clone()).ok()?;
        self.0.on_failure(&job)
    }

    fn stored_files(&self, row: &JobRow) -> Result<Vec<String>, Undecodable> {
        let job = Job::<R::Kind>::decode(row.clone())?;
        Ok(R::Kind::stored_files(&job))
    }
}

/// The job kinds a worker runs, by name.
#[derive(Clone, Default)]
pub struct Registry {
    runners: HashMap<&'static str, Arc<dyn Runnable>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a kind; a second runner of the same kind replaces the first.
    pub fn with<R: RunJob>(mut self, runner: Arc<R>) -> Registry {
        self.runners
            .insert(<R::Kind as JobKind>::KIND, Arc::new(Typed(runner)));
        self
    }

    pub fn kinds(&self) -> Vec<String> {
        self.runners.keys().map(|k| k.to_string()).collect()
    }

    /// The kinds of each lane that has any, lanes in order, kinds sorted.
    pub fn lanes(&self) -> std::collections::BTreeMap<Lane, Vec<String>> {
        let mut lanes = std::collections::BTreeMap::<Lane, Vec<String>>::new();
        for (kind, runner) in &self.runners {
            lanes.entry(runner.lane()).or_default().push(kind.to_string());
        }
        for kinds in lanes.values_mut() {
            kinds.sort();
        }
        lanes
    }

    pub(crate) fn run(&self, ctx: JobContext) -> Option<BoxFuture<'static, Result<JobOutcome, JobError>>> {
        Some(self.runners.get(ctx.job().kind.as_str())?.run(ctx))
    }

    pub(crate) fn on_failure(&self, row: &JobRow) -> Option<NewJob> {
        self.runners.get(row.kind.as_str())?.on_failure(row)
    }

    /// The stored files of a job; `None` for a kind this build does not run.
    pub(crate) fn stored_files(&self, row: &JobRow) -> Option<Result<Vec<String>, Undecodable>> {
        Some(self.runners.get(row.kind.as_str())?.stored_files(row))
    }
}
