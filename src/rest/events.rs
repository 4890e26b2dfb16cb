//! Live job status for browsers and dashboards without a gRPC client: Server-Sent
//! Events from the same watcher machinery as WatchExport / WatchImport — each job's
//! current state first, then every change, the stream closing once every job it
//! follows has ended.
//!
//! A browser's `EventSource` cannot send headers, so an authenticated call hands
//! out a short-lived signed URL (`…/events-url?ids=a,b`) and the stream checks the
//! signature instead of a key. One stream follows several jobs (`ids=a,b,c`),
//! because a browser opens at most six HTTP/1.1 connections per host.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::RestState;
use super::auth::Caller;
use super::error::{ErrorEnvelope, RestError};
use crate::api::error::ApiError;
use crate::db::now_ms;
use crate::export::spec::Export;
use crate::import::spec::Import;
use crate::jobs::Job;

/// How long a signed events URL may be opened after it was handed out.
pub const URL_TTL: Duration = Duration::from_secs(600);
/// Jobs one stream may follow (each holds a watcher slot, `server.max_watchers`).
pub const MAX_IDS: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Export,
    Import,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Export => "export",
            Kind::Import => "import",
        }
    }
}

/// What the signature covers: kind, organization and the exact id list.
fn signed_key(kind: Kind, org: &str, ids: &str) -> String {
    format!("events/{}/{org}/{ids}", kind.as_str())
}

fn ids_of(text: &str) -> Result<Vec<String>, ApiError> {
    let ids: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .collect();
    if ids.is_empty() || ids.len() > MAX_IDS {
        return Err(ApiError::invalid(vec![(
            "ids".into(),
            format!("1 to {MAX_IDS} job ids, comma-separated"),
        )]));
    }
    Ok(ids)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UrlQuery {
    /// 1 to 50 job ids, comma-separated.
    ids: String,
}

/// A signed URL of one event stream.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventsUrl {
    /// Open it with `EventSource` or `curl -N`; no key needed.
    pub url: String,
    /// The last moment the URL may be opened (a stream already open goes on).
    pub expires_at: String,
}

/// The signed path of the stream of `ids` (1 to [`MAX_IDS`], already checked) of
/// `org`'s jobs of `kind`, `/v1/events?…`, and when it stops opening (Unix
/// seconds). The hub renders it into its pages, so a page follows its jobs
/// without first asking for a URL; the caller must have checked the Watch method's
/// permission.
pub fn signed_path(state: &RestState, kind: Kind, org: &str, ids: &[String]) -> (String, i64) {
    let ids = ids.join(",");
    let expires = now_ms() / 1000 + URL_TTL.as_secs() as i64;
    let sig = state.signer.sign(&signed_key(kind, org, &ids), expires, "", "");
    let path = format!(
        "/v1/events?kind={}&ids={ids}&org={org}&expires={expires}&sig={sig}",
        kind.as_str()
    );
    (path, expires)
}

/// `GET /v1/exports/events-url?ids=…` (WatchExport) and
/// `GET /batch-import/import/entities/events-url?ids=…` (WatchImport): a signed
/// URL of the stream of those jobs, `{url, expiresAt}`.
async fn events_url(
    state: &RestState,
    caller: &Caller,
    headers: &HeaderMap,
    kind: Kind,
    query: Result<Query<UrlQuery>, QueryRejection>,
) -> Result<Response, RestError> {
    let fail = |err: ApiError| RestError::new(err, &caller.request_id);
    let Query(query) = query.map_err(|r| fail(super::invalid("query", r.body_text())))?;
    let ids = ids_of(&query.ids).map_err(fail)?;
    let org = caller.principal.organization_id();
    Ok(Json(signed_url(state, headers, kind, org, &ids)).into_response())
}

/// The signed URL of the stream of `ids` (checked), on `server.public_url` or the
/// request's own host.
pub fn signed_url(
    state: &RestState,
    headers: &HeaderMap,
    kind: Kind,
    org: &str,
    ids: &[String],
) -> EventsUrl {
    let (path, expires) = signed_path(state, kind, org, ids);
    let base = if state.public_url.is_empty() {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!("{}://{host}", state.scheme)
    } else {
        state.public_url.clone()
    };
    EventsUrl {
        url: format!("{base}{path}"),
        expires_at: crate::api::convert::iso(expires * 1000),
    }
}

/// `GET /v1/exports/events-url?ids=a,b`: a signed URL following those exports.
#[utoipa::path(
    get,
    path = "/v1/exports/events-url",
    tag = "live events",
    params(UrlQuery),
    responses(
        (status = 200, description = "A signed events URL, valid to open for 10 minutes", body = EventsUrl),
        (status = 400, description = "No ids, or more than 50", body = ErrorEnvelope),
        (status = "default", description = "Any other error, by the README's status table", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn export_events_url(
    State(state): State<RestState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    query: Result<Query<UrlQuery>, QueryRejection>,
) -> Result<Response, RestError> {
    events_url(&state, &caller, &headers, Kind::Export, query).await
}

/// `GET /batch-import/import/entities/events-url?ids=a,b`: the same for imports.
#[utoipa::path(
    get,
    path = "/batch-import/import/entities/events-url",
    tag = "live events",
    params(UrlQuery),
    responses(
        (status = 200, description = "A signed events URL, valid to open for 10 minutes", body = EventsUrl),
        (status = 400, description = "No ids, or more than 50", body = ErrorEnvelope),
        (status = "default", description = "Any other error, by the README's status table", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn import_events_url(
    State(state): State<RestState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    query: Result<Query<UrlQuery>, QueryRejection>,
) -> Result<Response, RestError> {
    events_url(&state, &caller, &headers, Kind::Import, query).await
}

/// The signed URL's parameters: take them as they are handed out.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    #[param(inline)]
    kind: Kind,
    ids: String,
    org: String,
    /// Unix seconds.
    expires: i64,
    sig: String,
}

/// One job's states as events (`event: export`, `id: <job id>`, the gRPC message
/// as proto3 JSON in `data`), ending after its terminal state.
async fn job_events(
    state: &RestState,
    kind: Kind,
    org: &str,
    id: &str,
) -> Result<BoxStream<'static, Event>, ApiError> {
    let queue = state.exports.queue();
    let rows = match kind {
        Kind::Export => queue.watch::<Export>(org, id).await.map(|s| s.boxed()),
        Kind::Import => queue.watch::<Import>(org, id).await.map(|s| s.boxed()),
    }
    .map_err(|e| ApiError::from(crate::export::service::ExportError::from(e)))?;
    Ok(rows
        .filter_map(move |row| async move {
            let row = row.ok()?;
            let data = match kind {
                Kind::Export => {
                    let job = Job::<Export>::decode(row).ok()?;
                    crate::proto::to_json(&crate::api::export::export_message(&job, &[]))
                }
                Kind::Import => {
                    let job = Job::<Import>::decode(row).ok()?;
                    crate::proto::to_json(&crate::api::import::import_message(&job))
                }
            };
            let id = data["id"].as_str().unwrap_or_default().to_string();
            Some(
                Event::default()
                    .event(kind.as_str())
                    .id(id)
                    .data(data.to_string()),
            )
        })
        .boxed())
}

/// `GET /v1/events?kind=…&ids=…&org=…&expires=…&sig=…`: the stream. A wrong or
/// expired signature is 403 (the same answer for both, so links reveal nothing).
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "live events",
    params(StreamQuery),
    responses(
        (status = 200, description = "`text/event-stream`: per job its current state, then every change (`event: export` or `import`, `id:` the job id, `data:` the job in proto3 JSON); closes after every job ended", content_type = "text/event-stream"),
        (status = 403, description = "`INVALID_EVENTS_LINK`: a changed or expired link", body = ErrorEnvelope),
        (status = "default", description = "Any other error, by the README's status table", body = ErrorEnvelope),
    ),
)]
pub async fn stream(
    State(state): State<RestState>,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Response {
    let forbidden = || {
        let refused = ApiError::new(
            tonic::Code::PermissionDenied,
            "INVALID_EVENTS_LINK",
            "invalid or expired events link: ask for a new one",
        );
        RestError::new(refused, &crate::db::new_id()).into_response()
    };
    let Ok(Query(query)) = query else {
        return forbidden();
    };
    let key = signed_key(query.kind, &query.org, &query.ids);
    if query.expires < now_ms() / 1000 || !state.signer.verify(&key, query.expires, "", "", &query.sig) {
        return forbidden();
    }
    let Ok(ids) = ids_of(&query.ids) else {
        return forbidden();
    };
    let mut streams = Vec::with_capacity(ids.len());
    for id in &ids {
        match job_events(&state, query.kind, &query.org, id).await {
            Ok(events) => streams.push(events),
            Err(err) => return RestError::new(err, &crate::db::new_id()).into_response(),
        }
    }
    let events = futures::stream::select_all(streams).map(Ok::<_, Infallible>);
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
