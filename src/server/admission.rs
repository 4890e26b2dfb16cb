//! Admission: the Tower layer behind authentication that decides whether a call
//! runs now or is refused at once. Refusing fast (RESOURCE_EXHAUSTED with RetryInfo)
//! beats queueing behind the database pool's timeout: the caller learns in
//! microseconds that it should back off, and the calls already admitted finish.
//!
//! In order: the database (while the readiness probe finds it out, every call
//! is refused at once, and calls in flight are cut when the outage is found, so
//! none hangs on a frozen database), the organization's rate (a token bucket per organization, off by
//! default), then saturation (callers already waiting for a pooled connection),
//! then a slot: unary calls and uploads each have their own count; watch streams
//! hold a slot of their own in the job queue for as long as they stream.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use crate::auth::Principal;
use crate::config::Config;
use crate::db::Db;
use crate::request::RequestId;

/// Streams that run as long as their job: capped by `server.max_watchers` in the
/// job queue, not here.
const WATCH_METHODS: [&str; 2] = [
    "/ferry.v1.ExportService/WatchExport",
    "/ferry.v1.ImportService/WatchImport",
];
/// Client streams that last as long as the upload.
const UPLOAD_METHODS: [&str; 1] = ["/ferry.v1.ImportService/UploadImport"];

/// Calls between two sweeps of the rate limiter's idle organizations.
const SWEEP_EVERY: u64 = 10_000;

/// Why a call was not admitted; mapped to a status by the API layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AdmissionError {
    #[error("the server is at its limit of {limit} {what}; retry shortly")]
    Overloaded {
        what: &'static str,
        setting: &'static str,
        limit: u64,
    },
    #[error("the database is unavailable: {0}")]
    DatabaseOut(String),
    #[error("organization {organization_id} is over its rate of {rate} calls per second")]
    RateLimited {
        organization_id: String,
        rate: u32,
        retry_after: Duration,
    },
}

/// Builds the refusal sent to the client, given the call's request id.
pub type RefuseFn = fn(AdmissionError, &str) -> tonic::Status;

struct Limits {
    db: Db,
    calls: Arc<Semaphore>,
    max_calls: u64,
    uploads: Arc<Semaphore>,
    max_uploads: u64,
    max_pool_waiters: usize,
    per_org: Option<(DefaultKeyedRateLimiter<String>, u32)>,
    admitted: AtomicU64,
    refuse: RefuseFn,
}

#[derive(Clone)]
pub struct AdmissionLayer {
    limits: Arc<Limits>,
}

impl AdmissionLayer {
    pub fn new(config: &Config, db: Db, refuse: RefuseFn) -> AdmissionLayer {
        let server = &config.server;
        let per_org = NonZeroU32::new(config.limits.calls_per_second_per_org).map(|rate| {
            let burst = NonZeroU32::new(config.limits.burst_per_org).unwrap_or(rate);
            (
                RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
                rate.get(),
            )
        });
        AdmissionLayer {
            limits: Arc::new(Limits {
                db,
                calls: Arc::new(Semaphore::new(server.max_concurrent_calls as usize)),
                max_calls: u64::from(server.max_concurrent_calls),
                uploads: Arc::new(Semaphore::new(server.max_concurrent_uploads as usize)),
                max_uploads: u64::from(server.max_concurrent_uploads),
                max_pool_waiters: server.max_pool_waiters as usize,
                per_org,
                admitted: AtomicU64::new(0),
                refuse,
            }),
        }
    }
}

impl AdmissionLayer {
    /// Admits a call for the gRPC method `path` (the REST door asks for the method
    /// its route stands for), sharing the gRPC calls' slots and rate limits: the
    /// limits are the server's, whichever door a call comes through. The slot is
    /// held until the answer is ready.
    pub fn admit(
        &self,
        path: &str,
        principal: &Principal,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, AdmissionError> {
        self.limits.admit(path, Some(principal))
    }

    /// Resolves when a database outage is found: an admitted call races it, so a
    /// call whose query hangs on a frozen database answers UNAVAILABLE instead.
    pub async fn database_out(&self) -> AdmissionError {
        AdmissionError::DatabaseOut(self.limits.db.outage_begins().await.to_string())
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Admission<S> {
        Admission {
            inner,
            limits: self.limits.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    limits: Arc<Limits>,
}

/// What an admitted call holds until its response is ready (watch streams and
/// public methods hold nothing here).
type Slot = Option<tokio::sync::OwnedSemaphorePermit>;

impl Limits {
    /// Admits a call to `path` by `principal` (absent: a public method, always
    /// admitted), or says why not.
    fn admit(&self, path: &str, principal: Option<&Principal>) -> Result<Slot, AdmissionError> {
        let Some(principal) = principal else {
            return Ok(None);
        };
        if let Some(cause) = self.db.outage() {
            return Err(AdmissionError::DatabaseOut(cause.to_string()));
        }
        self.check_rate(principal.organization_id())?;
        if WATCH_METHODS.contains(&path) {
            return Ok(None);
        }
        if self.db.waiting() >= self.max_pool_waiters {
            return Err(AdmissionError::Overloaded {
                what: "callers waiting for a database connection",
                setting: "server.max_pool_waiters",
                limit: self.max_pool_waiters as u64,
            });
        }
        let (slots, what, setting, limit) = if UPLOAD_METHODS.contains(&path) {
            (
                &self.uploads,
                "uploads at once",
                "server.max_concurrent_uploads",
                self.max_uploads,
            )
        } else {
            (
                &self.calls,
                "calls at once",
                "server.max_concurrent_calls",
                self.max_calls,
            )
        };
        slots
            .clone()
            .try_acquire_owned()
            .map(Some)
            .map_err(|_| AdmissionError::Overloaded { what, setting, limit })
    }

    fn check_rate(&self, organization_id: &str) -> Result<(), AdmissionError> {
        let Some((limiter, rate)) = &self.per_org else {
            return Ok(());
        };
        if self.admitted.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
        }
        let key = organization_id.to_string();
        limiter
            .check_key(&key)
            .map_err(|not_until| AdmissionError::RateLimited {
                organization_id: key,
                rate: *rate,
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            })
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Admission<S>
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

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let principal = request.extensions().get::<Principal>();
        let guarded = principal.is_some();
        let admitted = self.limits.admit(request.uri().path(), principal);
        match admitted {
            Ok(slot) => {
                let limits = self.limits.clone();
                let request_id = RequestId::of(&request);
                Box::pin(async move {
                    if !guarded {
                        return inner.call(request).await;
                    }
                    let response = tokio::select! {
                        response = inner.call(request) => response,
                        cause = limits.db.outage_begins() => {
                            let status = (limits.refuse)(AdmissionError::DatabaseOut(cause.to_string()), &request_id);
                            Ok(status.into_http())
                        }
                    };
                    drop(slot);
                    response
                })
            }
            Err(err) => {
                let request_id = RequestId::of(&request);
                tracing::warn!(error = %err, "call refused");
                let status = (self.limits.refuse)(err, &request_id);
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}
