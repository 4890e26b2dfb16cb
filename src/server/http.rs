//! The HTTP/1.1 listener beside gRPC: `/metrics` (Prometheus text), `/livez` (the
//! process runs; `/healthz` is its older name), `/readyz` (every required
//! dependency answers), and `/files/<key>`, the local store's signed, expiring
//! downloads.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::db::{Db, now_ms};
use crate::metrics::Metrics;
use crate::storage::Storage;
use crate::storage::local::SignedQuery;

#[derive(Clone)]
pub struct HttpState {
    pub db: Db,
    pub metrics: Arc<Metrics>,
    pub storage: Storage,
    pub readiness: super::readiness::Readiness,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/files/{*key}", get(download))
        .route("/metrics", get(metrics))
        .route("/livez", get(live))
        .route("/healthz", get(live))
        .route("/readyz", get(ready))
        .with_state(state)
}

/// The process runs (a liveness probe: restarting it would not help while it
/// answers). `/healthz` is its older name.
#[utoipa::path(
    get,
    path = "/livez",
    tag = "health",
    responses((status = 200, description = "The process runs", body = String, content_type = "text/plain")),
)]
pub async fn live() -> &'static str {
    "ok\n"
}

/// What `/readyz` answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ReadyView {
    /// `ready` or `not ready`.
    status: String,
    /// The required dependencies that are out.
    failing: Vec<String>,
    /// Every dependency (`database`, `storage`, and `mail` when mail goes to a relay).
    dependencies: std::collections::BTreeMap<String, DependencyView>,
}

/// One dependency as its last probe found it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DependencyView {
    up: bool,
    /// Out means not ready.
    required: bool,
    /// When it last changed (milliseconds since the epoch).
    since_ms: i64,
    /// Why it is out, in a word: `refused`, `no answer` or `error` (the full
    /// message is in the log).
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<String>,
}

/// 200 when every required dependency answered its last probe, else 503 naming
/// the ones that did not; the body lists every dependency either way.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready: every required dependency answers", body = ReadyView),
        (status = 503, description = "Not ready: `failing` names the dependencies that are out", body = ReadyView),
    ),
)]
pub async fn ready(State(state): State<HttpState>) -> Response {
    let snapshot = state.readiness.snapshot();
    let ready = snapshot.ready();
    let body = ReadyView {
        status: if ready { "ready" } else { "not ready" }.to_string(),
        failing: snapshot.failing().into_iter().map(str::to_string).collect(),
        dependencies: snapshot
            .0
            .iter()
            .map(|(name, d)| {
                let view = DependencyView {
                    up: d.up,
                    required: d.required,
                    since_ms: d.since_ms,
                    cause: d.cause.map(str::to_string),
                };
                (name.to_string(), view)
            })
            .collect(),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(state): State<HttpState>) -> Response {
    match state.metrics.render(&state.db).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "metrics could not read the database");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}

/// Streams a stored file when the URL's signature and expiry check out; 403 otherwise
/// (the same answer for a wrong signature, an expired link and a key that never
/// existed, so links reveal nothing).
async fn download(
    State(state): State<HttpState>,
    Path(key): Path<String>,
    query: Result<Query<SignedQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let forbidden = || (StatusCode::FORBIDDEN, "invalid or expired link\n").into_response();
    let (Storage::Local(store), Ok(Query(query))) = (&state.storage, query) else {
        return forbidden();
    };
    let Some(path) = store.verify(&key, &query, now_ms() / 1000) else {
        return forbidden();
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(_) => return (StatusCode::NOT_FOUND, "the file no longer exists\n").into_response(),
    };
    let length = file.metadata().await.map(|m| m.len()).unwrap_or_default();
    let disposition = format!(
        "attachment; filename=\"{}\"",
        query.name.replace(['"', '\\', '\r', '\n'], "_")
    );
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    (
        [
            (header::CONTENT_TYPE, query.content_type.clone()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        body,
    )
        .into_response()
}
