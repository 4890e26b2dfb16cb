//! The outermost layer: gives every call a request id (the client's `x-request-id`
//! or a new one), echoes it in the response, runs the call in a tracing span that
//! carries it, and counts the call by method and status code.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::request::{MethodPath, RequestId};

const HEADER: &str = "x-request-id";

/// Restates an error status that tonic produced itself (no ErrorInfo) in ferry's
/// terms, given the call's request id; `None` keeps it.
pub type RestateFn = fn(&tonic::Status, &str) -> Option<tonic::Status>;

#[derive(Clone)]
pub struct ObserveLayer {
    metrics: Arc<Metrics>,
    restate: RestateFn,
}

impl ObserveLayer {
    pub fn new(metrics: Arc<Metrics>, restate: RestateFn) -> ObserveLayer {
        ObserveLayer { metrics, restate }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = ObserveService<S>;

    fn layer(&self, inner: S) -> ObserveService<S> {
        ObserveService {
            inner,
            metrics: self.metrics.clone(),
            restate: self.restate,
        }
    }
}

#[derive(Clone)]
pub struct ObserveService<S> {
    inner: S,
    metrics: Arc<Metrics>,
    restate: RestateFn,
}

/// A client's id is kept when it is at most 128 printable ASCII characters;
/// otherwise a new one is made, and the replacement is logged with the new id.
pub(crate) fn request_id_of(headers: &http::HeaderMap) -> String {
    let Some(sent) = headers.get(HEADER) else {
        return uuid::Uuid::now_v7().to_string();
    };
    let kept = sent
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()));
    match kept {
        Some(id) => id.to_string(),
        None => {
            let id = uuid::Uuid::now_v7().to_string();
            tracing::warn!(
                request_id = %id,
                sent_bytes = sent.len(),
                "x-request-id was not 1-128 printable ASCII characters; replaced"
            );
            id
        }
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for ObserveService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let metrics = self.metrics.clone();
        let restate = self.restate;
        let request_id = request_id_of(request.headers());
        let method = request.uri().path().to_string();
        request.extensions_mut().insert(RequestId(request_id.clone()));
        request.extensions_mut().insert(MethodPath(method.clone()));
        let span = tracing::info_span!("grpc", request_id = %request_id, method = %method);
        Box::pin(
            async move {
                let started = Instant::now();
                let mut response = inner.call(request).await?;
                if let Some(status) = tonic::Status::from_header_map(response.headers())
                    && let Some(restated) = restate(&status, &request_id)
                {
                    response = restated.into_http();
                }
                if let Ok(value) = http::HeaderValue::from_str(&request_id) {
                    response.headers_mut().insert(HEADER, value);
                }
                // Errors are sent trailers-only, so their code is in the headers; a
                // call whose status comes in trailers started successfully.
                let failed = tonic::Status::from_header_map(response.headers());
                let code = failed
                    .as_ref()
                    .map(tonic::Status::code)
                    .unwrap_or(tonic::Code::Ok);
                let code_name = format!("{code:?}");
                metrics.record_request(&method, &code_name, started.elapsed());
                log_answer(code, failed.as_ref(), started.elapsed());
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// One line per call. A failure says its code and reason, at WARN when the server
/// is at fault (or cannot tell) and at INFO when the caller is (bad input, missing
/// permission, not found: the caller learns it from the answer, an operator need
/// not act).
fn log_answer(code: tonic::Code, failed: Option<&tonic::Status>, elapsed: std::time::Duration) {
    use tonic_types::StatusExt;
    let elapsed_ms = elapsed.as_millis() as u64;
    let Some(status) = failed.filter(|_| code != tonic::Code::Ok) else {
        tracing::info!(code = ?code, elapsed_ms, "call answered");
        return;
    };
    let reason = status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default();
    if is_callers_fault(code) {
        tracing::info!(code = ?code, reason = %reason, elapsed_ms, "call failed");
    } else {
        tracing::warn!(code = ?code, reason = %reason, error = %status.message(), elapsed_ms, "call failed");
    }
}

/// Codes that describe the request or the caller, not the server's health.
fn is_callers_fault(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        InvalidArgument
            | NotFound
            | AlreadyExists
            | PermissionDenied
            | Unauthenticated
            | FailedPrecondition
            | OutOfRange
            | Cancelled
            | ResourceExhausted
            | Aborted
    )
}
