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
        .route("/livez", get(|| async { "ok\n" }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state)
}

/// 200 when every required dependency answered its last probe, else 503 naming
/// the ones that did not; the body lists every dependency either way.
async fn ready(State(state): State<HttpState>) -> Response {
    let snapshot = state.readiness.snapshot();
    let ready = snapshot.ready();
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not ready" },
        "failing": snapshot.failing(),
        "dependencies": snapshot.0,
    });
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
