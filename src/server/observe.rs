//! The outermost layer: gives every call a request id (the client's `x-request-id`
//! or a new one), echoes it in the response, runs the call in a tracing span that
//! carries it, and counts the call by method and status code.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use tower::{Layer, Service};
use tracing::Instrument;

use super::metrics::Metrics;
use crate::request::RequestId;

const HEADER: &str = "x-request-id";

#[derive(Clone)]
pub struct ObserveLayer {
    metrics: Arc<Metrics>,
}

impl ObserveLayer {
    pub fn new(metrics: Arc<Metrics>) -> ObserveLayer {
        ObserveLayer { metrics }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = ObserveService<S>;

    fn layer(&self, inner: S) -> ObserveService<S> {
        ObserveService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ObserveService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// A client's id is kept when it is short printable ASCII; otherwise a new one is made.
fn request_id_of(headers: &http::HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for ObserveService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
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
        let request_id = request_id_of(request.headers());
        let method = request.uri().path().to_string();
        request.extensions_mut().insert(RequestId(request_id.clone()));
        let span = tracing::info_span!("grpc", request_id = %request_id, method = %method);
        Box::pin(
            async move {
                let started = Instant::now();
                let mut response = inner.call(request).await?;
                if let Ok(value) = http::HeaderValue::from_str(&request_id) {
                    response.headers_mut().insert(HEADER, value);
                }
                // Errors are sent trailers-only, so their code is in the headers; a
                // call whose status comes in trailers started successfully.
                let code = response
                    .headers()
                    .get("grpc-status")
                    .map(|v| tonic::Code::from_bytes(v.as_bytes()))
                    .unwrap_or(tonic::Code::Ok);
                let code = format!("{code:?}");
                metrics.record_request(&method, &code);
                tracing::info!(code = %code, elapsed_ms = started.elapsed().as_millis() as u64, "call answered");
                Ok(response)
            }
            .instrument(span),
        )
    }
}
