//! Parts every job message shares: state, progress, failure, list requests.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use prost::Message;
use prost_types::Any;
use tonic::{Request, Response, Status};

use super::Call;
use super::convert::millis;
use super::error::{ApiError, DOMAIN};
use super::page;
use crate::db::jobs::{JobListFilter, JobPage, JobRow, JobState};
use crate::jobs::{Job, JobFailure, JobKind, Queue, QueueError};
use crate::proto;

pub fn state(state: JobState) -> proto::JobState {
    match state {
        JobState::Queued => proto::JobState::Queued,
        JobState::Running => proto::JobState::Running,
        JobState::Completed => proto::JobState::Completed,
        JobState::Failed => proto::JobState::Failed,
        JobState::Cancelled => proto::JobState::Cancelled,
        JobState::Expired => proto::JobState::Expired,
    }
}

fn state_of(value: i32) -> Option<JobState> {
    Some(match proto::JobState::try_from(value).ok()? {
        proto::JobState::Queued => JobState::Queued,
        proto::JobState::Running => JobState::Running,
        proto::JobState::Completed => JobState::Completed,
        proto::JobState::Failed => JobState::Failed,
        proto::JobState::Cancelled => JobState::Cancelled,
        proto::JobState::Expired => JobState::Expired,
        proto::JobState::Unspecified => return None,
    })
}

pub fn progress(job: &JobRow) -> proto::Progress {
    let percent = if job.state == JobState::Completed {
        100.0
    } else {
        match job.rows_total {
            Some(total) if total > 0 => (job.rows_done as f64 * 100.0 / total as f64).min(100.0),
            _ => 0.0,
        }
    };
    proto::Progress {
        rows_done: job.rows_done,
        rows_total: job.rows_total,
        bytes: job.bytes_done,
        percent,
    }
}

/// The failure of a FAILED job as a `google.rpc.Status` with its `ErrorInfo`.
pub fn failure(job: &JobRow) -> Option<tonic_types::pb::Status> {
    if job.state != JobState::Failed {
        return None;
    }
    let failure: JobFailure = serde_json::from_str(job.error.as_deref()?).ok()?;
    let info = tonic_types::pb::ErrorInfo {
        reason: failure.reason,
        domain: DOMAIN.into(),
        metadata: Default::default(),
    };
    Some(tonic_types::pb::Status {
        code: failure.code,
        message: failure.message,
        details: vec![Any {
            type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
            value: info.encode_to_vec(),
        }],
    })
}

/// A job listing request, checked: the page to read (one row more than asked, to
/// know whether another page follows) and the fingerprint its tokens carry.
pub struct ListQuery {
    pub page: JobPage,
    pub fingerprint: String,
}

pub fn list_query(
    page_size: i32,
    page_token: &str,
    order_by: &str,
    states: &[i32],
    created_after: Option<&prost_types::Timestamp>,
    created_before: Option<&prost_types::Timestamp>,
    search: &str,
) -> Result<ListQuery, ApiError> {
    let limit = page::page_size(page_size)?;
    let (field, descending) = super::convert::sort_spec(order_by, "create_time desc")?;
    let by_update_time = match field.as_str() {
        "create_time" => false,
        "update_time" => true,
        other => {
            return Err(ApiError::invalid(vec![(
                "order_by".into(),
                format!("cannot sort by `{other}`; use create_time or update_time"),
            )]));
        }
    };
    let mut violations = Vec::new();
    let mut names = Vec::new();
    for (i, s) in states.iter().enumerate() {
        match state_of(*s) {
            Some(state) => names.push(state),
            None => violations.push((
                format!("states[{i}]"),
                "must be a specified JOB_STATE_* value".to_string(),
            )),
        }
    }
    if search.chars().count() > 200 {
        violations.push(("search".into(), "must be at most 200 characters".into()));
    }
    if !violations.is_empty() {
        return Err(ApiError::invalid(violations));
    }
    let filter = JobListFilter {
        states: names,
        created_after: created_after.map(millis),
        created_before: created_before.map(millis),
        search: Some(search.trim().to_string()).filter(|s| !s.is_empty()),
    };
    let fingerprint = page::fingerprint(&[format!("{filter:?}|{by_update_time}|{descending}").as_bytes()]);
    let after = page::decode(page_token, &fingerprint)?;
    Ok(ListQuery {
        page: JobPage {
            filter,
            by_update_time,
            descending,
            after,
            limit: limit + 1,
            offset: 0,
        },
        fingerprint,
    })
}

/// The token of the page after `rows` (fetched with one extra row), trimming it.
fn next_page<K: JobKind>(rows: &mut Vec<Job<K>>, query: &ListQuery) -> String {
    let asked = query.page.limit - 1;
    if rows.len() as i64 <= asked {
        return String::new();
    }
    rows.truncate(asked as usize);
    rows.last()
        .map(|last| &last.row)
        .map(|last| {
            let value = if query.page.by_update_time {
                last.updated_at
            } else {
                last.created_at
            };
            page::encode(&(value, last.id.clone()), &query.fingerprint)
        })
        .unwrap_or_default()
}

/// Messages of watched jobs by (job id, version): the watchers of one job share one
/// conversion of each state (and, for exports, one read of its delivery states)
/// instead of doing it once per watcher. Entries live a second, which bounds how
/// stale a delivery state can be beside a job state.
#[derive(Clone)]
pub struct WatchMessages<M: Clone + Send + Sync + 'static> {
    rendered: moka::future::Cache<(String, i64), M>,
}

impl<M: Clone + Send + Sync + 'static> WatchMessages<M> {
    pub fn new() -> WatchMessages<M> {
        WatchMessages {
            rendered: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(std::time::Duration::from_secs(1))
                .build(),
        }
    }

    /// The message of `job`, rendered by the first watcher that asks for it. A
    /// failed rendering is not shared: each watcher renders again for its own error.
    pub async fn get<E, F, Fut>(&self, job: &JobRow, render: F) -> Result<M, E>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<M, E>>,
        E: Send + Sync + 'static,
    {
        let key = (job.id.clone(), job.version);
        match self.rendered.try_get_with(key, render()).await {
            Ok(message) => Ok(message),
            Err(_) => render().await,
        }
    }
}

impl<M: Clone + Send + Sync + 'static> Default for WatchMessages<M> {
    fn default() -> Self {
        WatchMessages::new()
    }
}

/// A listing request as every job service receives it.
pub struct ListRequest<'a> {
    pub page_size: i32,
    pub page_token: &'a str,
    pub order_by: &'a str,
    pub states: &'a [i32],
    pub created_after: Option<&'a prost_types::Timestamp>,
    pub created_before: Option<&'a prost_types::Timestamp>,
    pub search: &'a str,
}

/// The listing fields every job service's List request carries.
macro_rules! list_request_of {
    ($($message:ty),*) => {$(
        impl<'a> From<&'a $message> for ListRequest<'a> {
            fn from(req: &'a $message) -> ListRequest<'a> {
                ListRequest {
                    page_size: req.page_size,
                    page_token: &req.page_token,
                    order_by: &req.order_by,
                    states: &req.states,
                    created_after: req.created_after.as_ref(),
                    created_before: req.created_before.as_ref(),
                    search: &req.search,
                }
            }
        }
    )*};
}

list_request_of!(proto::ListExportsRequest, proto::ListImportsRequest);

/// Requests that name one job by its `id`.
pub trait NamesJob: Send + 'static {
    fn job_id(&self) -> &str;
}

macro_rules! names_job {
    ($($message:ty),*) => {$(
        impl NamesJob for $message {
            fn job_id(&self) -> &str {
                &self.id
            }
        }
    )*};
}

names_job!(
    proto::GetExportRequest,
    proto::WatchExportRequest,
    proto::CancelExportRequest,
    proto::GetImportRequest,
    proto::WatchImportRequest,
    proto::CancelImportRequest
);

/// One page of a job listing as messages.
pub struct ListPage<M> {
    pub messages: Vec<M>,
    pub next_page_token: String,
    pub total_size: i32,
}

/// How a job kind is shown to clients: its message, built from the decoded job.
pub trait Render: Send + Sync + 'static {
    type Kind: JobKind;
    type Message: Clone + Send + Sync + 'static;

    fn render(&self, job: &Job<Self::Kind>) -> impl Future<Output = Result<Self::Message, ApiError>> + Send;
}

/// Get, list, watch and cancel, served the same way for every job kind.
pub struct JobResource<R: Render> {
    queue: Queue,
    render: Arc<R>,
    watched: WatchMessages<R::Message>,
}

impl<R: Render> JobResource<R> {
    pub fn new(queue: Queue, render: R) -> JobResource<R> {
        JobResource {
            queue,
            render: Arc::new(render),
            watched: WatchMessages::new(),
        }
    }

    pub async fn render(&self, job: &Job<R::Kind>) -> Result<R::Message, ApiError> {
        self.render.render(job).await
    }

    /// The Get call of a job service.
    pub async fn get(&self, request: Request<impl NamesJob>) -> Result<Response<R::Message>, Status> {
        Call::serve(request, |call, req| async move {
            let job = self.queue.get::<R::Kind>(call.org(), req.job_id().trim()).await?;
            self.render(&job).await
        })
        .await
    }

    /// The Cancel call: a queued job never runs; a running one stops at its next
    /// check.
    pub async fn cancel(&self, request: Request<impl NamesJob>) -> Result<Response<R::Message>, Status> {
        Call::serve_audited(
            request,
            self.queue.db(),
            |r| r.job_id().trim().to_string(),
            |call, req| async move {
                let job = self
                    .queue
                    .cancel::<R::Kind>(call.org(), req.job_id().trim(), Some(&call.actor()))
                    .await?;
                self.render(&job).await
            },
        )
        .await
    }

    /// The Watch call.
    pub async fn watch(
        &self,
        request: Request<impl NamesJob>,
    ) -> Result<Response<BoxStream<'static, Result<R::Message, Status>>>, Status> {
        Call::serve(request, |call, req| async move {
            self.stream(&call, req.job_id()).await
        })
        .await
    }

    pub async fn list(
        &self,
        call: &Call,
        request: ListRequest<'_>,
    ) -> Result<ListPage<R::Message>, ApiError> {
        let query = list_query(
            request.page_size,
            request.page_token,
            request.order_by,
            request.states,
            request.created_after,
            request.created_before,
            request.search,
        )?;
        let (mut jobs, total) = self.queue.list::<R::Kind>(call.org(), &query.page).await?;
        let next_page_token = next_page(&mut jobs, &query);
        let mut messages = Vec::with_capacity(jobs.len());
        for job in &jobs {
            messages.push(self.render(job).await?);
        }
        Ok(ListPage {
            messages,
            next_page_token,
            total_size: i32::try_from(total).unwrap_or(i32::MAX),
        })
    }

    /// The job's message now and after every change, until it ends. The watchers of
    /// one job share each state's decoding and rendering.
    async fn stream(
        &self,
        call: &Call,
        id: &str,
    ) -> Result<BoxStream<'static, Result<R::Message, Status>>, ApiError> {
        let stream = self.queue.watch::<R::Kind>(call.org(), id.trim()).await?;
        let request_id = call.request_id.clone();
        let (render, watched) = (self.render.clone(), self.watched.clone());
        let stream = stream.then(move |item| {
            let (render, watched, request_id) = (render.clone(), watched.clone(), request_id.clone());
            async move {
                let message = match item {
                    Ok(row) => {
                        watched
                            .get(&row, || async {
                                let job = Job::<R::Kind>::decode(row.clone()).map_err(QueueError::from)?;
                                render.render(&job).await
                            })
                            .await
                    }
                    Err(err) => Err(ApiError::from(err)),
                };
                message.map_err(|err| err.into_status(&request_id))
            }
        });
        Ok(Box::pin(stream))
    }
}
