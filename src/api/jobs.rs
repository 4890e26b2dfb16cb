//! Parts every job message shares: state, progress, failure, list requests.

use prost::Message;
use prost_types::Any;

use super::convert::millis;
use super::error::{ApiError, DOMAIN};
use super::page;
use crate::db::jobs::{self, JobListFilter, JobPage, JobRow};
use crate::jobs::JobFailure;
use crate::proto;

pub fn state(name: &str) -> proto::JobState {
    match name {
        jobs::QUEUED => proto::JobState::Queued,
        jobs::RUNNING => proto::JobState::Running,
        jobs::COMPLETED => proto::JobState::Completed,
        jobs::FAILED => proto::JobState::Failed,
        jobs::CANCELLED => proto::JobState::Cancelled,
        jobs::EXPIRED => proto::JobState::Expired,
        _ => proto::JobState::Unspecified,
    }
}

fn state_name(value: i32) -> Option<&'static str> {
    Some(match proto::JobState::try_from(value).ok()? {
        proto::JobState::Queued => jobs::QUEUED,
        proto::JobState::Running => jobs::RUNNING,
        proto::JobState::Completed => jobs::COMPLETED,
        proto::JobState::Failed => jobs::FAILED,
        proto::JobState::Cancelled => jobs::CANCELLED,
        proto::JobState::Expired => jobs::EXPIRED,
        proto::JobState::Unspecified => return None,
    })
}

pub fn progress(job: &JobRow) -> proto::Progress {
    let percent = if job.state == jobs::COMPLETED {
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
    if job.state != jobs::FAILED {
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
        match state_name(*s) {
            Some(name) => names.push(name.to_string()),
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
        },
        fingerprint,
    })
}

/// The token of the page after `rows` (fetched with one extra row), trimming it.
pub fn next_page(rows: &mut Vec<JobRow>, query: &ListQuery) -> String {
    let asked = query.page.limit - 1;
    if rows.len() as i64 <= asked {
        return String::new();
    }
    rows.truncate(asked as usize);
    rows.last()
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
