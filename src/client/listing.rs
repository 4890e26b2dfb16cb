//! Lists that span pages: the client asks page after page until it has `--limit`
//! items (0: all) or the server has no more.

use std::future::Future;

use clap::Args;

use super::ClientError;
use crate::proto;

/// The server's largest page.
const MAX_PAGE: usize = 100;

/// The flags of `ferry import list` and `ferry export list`.
#[derive(Debug, Args)]
pub struct JobListArgs {
    /// Only jobs in this state (queued, running, completed, failed, cancelled, expired; repeat).
    #[arg(long)]
    pub state: Vec<String>,
    /// Substring of the id or file name.
    #[arg(long)]
    pub search: Option<String>,
    /// At most this many (0: all).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

/// Items of every page up to `limit`. `fetch(page_size, page_token)` returns one
/// page and the next token (empty at the end).
pub async fn collect<T, F, Fut>(limit: usize, mut fetch: F) -> Result<Vec<T>, ClientError>
where
    F: FnMut(i32, String) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, String), tonic::Status>>,
{
    let mut items = Vec::new();
    let mut token = String::new();
    loop {
        let wanted = match limit {
            0 => MAX_PAGE,
            limit => limit.saturating_sub(items.len()).clamp(1, MAX_PAGE),
        };
        let (page, next) = fetch(i32::try_from(wanted).unwrap_or(100), token).await?;
        items.extend(page);
        token = next;
        if token.is_empty() || (limit > 0 && items.len() >= limit) {
            break;
        }
    }
    if limit > 0 {
        items.truncate(limit);
    }
    Ok(items)
}

/// `completed` or `JOB_STATE_COMPLETED`, any case.
pub fn states(names: &[String]) -> Result<Vec<i32>, ClientError> {
    names
        .iter()
        .map(|text| {
            let name = text.trim().to_ascii_uppercase();
            let name = if name.starts_with("JOB_STATE_") {
                name
            } else {
                format!("JOB_STATE_{name}")
            };
            proto::JobState::from_str_name(&name)
                .map(|state| state as i32)
                .ok_or_else(|| ClientError::Input(format!("--state {text}: not a job state")))
        })
        .collect()
}
