//! Prometheus metrics served at `/metrics`: gRPC calls (count and latency by
//! method), jobs (how many by kind and state, read from the database at scrape time
//! so every replica reports the shared queue; how long runs take and how many rows
//! and bytes they processed), bytes uploaded for imports, and the database pool
//! (connections in use, idle, callers waiting).
//!
//! A top-level module because every layer records into it: the gRPC layer, the job
//! worker, the import service. It depends on nothing but the database handle it
//! reads at scrape time.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::db::{Db, DbError, jobs};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabels {
    dependency: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// Call latency: 1 ms to ~33 s.
fn call_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Job run time: 10 ms to ~1.5 h.
fn job_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 20))
}

pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    jobs: Family<JobLabels, Gauge>,
    job_runs: Family<JobLabels, Histogram, fn() -> Histogram>,
    job_rows: Family<KindLabels, Counter>,
    job_bytes: Family<KindLabels, Counter>,
    uploaded: Counter,
    pool_in_use: Gauge,
    pool_idle: Gauge,
    pool_waiting: Gauge,
    dependencies: Family<DependencyLabels, Gauge>,
    /// 1 while the mail relay's breaker holds deliveries back ([`crate::mail`]).
    pub mail_relay_breaker_open: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ferry");
        let metrics = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(call_histogram),
            jobs: Family::default(),
            job_runs: Family::new_with_constructor(job_histogram),
            job_rows: Family::default(),
            job_bytes: Family::default(),
            uploaded: Counter::default(),
            pool_in_use: Gauge::default(),
            pool_idle: Gauge::default(),
            pool_waiting: Gauge::default(),
            dependencies: Family::default(),
            mail_relay_breaker_open: Gauge::default(),
            registry: Mutex::new(Registry::default()),
        };
        registry.register(
            "grpc_requests",
            "gRPC calls by method and status code",
            metrics.requests.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "Time to answer a gRPC call (until the first response of a stream), by method",
            metrics.latency.clone(),
        );
        registry.register(
            "jobs",
            "Jobs in the queue by kind and state",
            metrics.jobs.clone(),
        );
        registry.register(
            "job_run_duration_seconds",
            "Time one run of a job took, by kind and how it ended (completed, failed, retried, cancelled, handed back)",
            metrics.job_runs.clone(),
        );
        registry.register(
            "job_rows",
            "Rows processed by job runs, by kind",
            metrics.job_rows.clone(),
        );
        registry.register(
            "job_bytes",
            "Bytes written by job runs (export files), by kind",
            metrics.job_bytes.clone(),
        );
        registry.register(
            "import_uploaded_bytes",
            "Bytes of import files accepted by UploadImport",
            metrics.uploaded.clone(),
        );
        registry.register(
            "db_pool_connections_in_use",
            "Database connections checked out of the pool",
            metrics.pool_in_use.clone(),
        );
        registry.register(
            "db_pool_connections_idle",
            "Database connections open and idle in the pool",
            metrics.pool_idle.clone(),
        );
        registry.register(
            "db_pool_waiters",
            "Callers waiting for a pooled database connection",
            metrics.pool_waiting.clone(),
        );
        registry.register(
            "dependency_up",
            "1 while the last readiness probe of a dependency (database, storage, mail) succeeded, else 0",
            metrics.dependencies.clone(),
        );
        registry.register(
            "mail_relay_breaker_open",
            "1 while deliveries wait because the mail relay kept timing out (mail.smtp_breaker_timeouts), else 0",
            metrics.mail_relay_breaker_open.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            ..metrics
        }
    }
}

impl Metrics {
    pub fn set_dependency_up(&self, dependency: &str, up: bool) {
        self.dependencies
            .get_or_create(&DependencyLabels {
                dependency: dependency.to_string(),
            })
            .set(i64::from(up));
    }

    pub fn record_request(&self, method: &str, code: &str, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                code: code.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels {
                method: method.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// One run of a job ended (`outcome`: completed, failed, retry, cancelled,
    /// handed_back) after `elapsed`, having processed `rows` and written `bytes`.
    pub fn record_job_run(&self, kind: &str, outcome: &str, elapsed: Duration, rows: u64, bytes: u64) {
        self.job_runs
            .get_or_create(&JobLabels {
                kind: kind.to_string(),
                state: outcome.to_string(),
            })
            .observe(elapsed.as_secs_f64());
        let kind = KindLabels {
            kind: kind.to_string(),
        };
        self.job_rows.get_or_create(&kind).inc_by(rows);
        self.job_bytes.get_or_create(&kind).inc_by(bytes);
    }

    pub fn record_upload(&self, bytes: u64) {
        self.uploaded.inc_by(bytes);
    }

    /// The text exposition, with job counts and pool state read fresh. During a
    /// database outage the job counts are left out (the rest, the dependency
    /// gauges among it, is what an operator needs then).
    pub async fn render(&self, db: &Db) -> Result<String, DbError> {
        // Read before this scrape takes a connection of its own.
        let pool = db.pool_state();
        self.pool_in_use.set(i64::from(pool.in_use));
        self.pool_idle.set(i64::from(pool.idle));
        self.pool_waiting
            .set(i64::try_from(pool.waiting).unwrap_or(i64::MAX));
        self.jobs.clear();
        match db.conn().await {
            Ok(mut conn) => {
                for (kind, state, count) in jobs::count_by_kind_and_state(&mut conn).await? {
                    self.jobs
                        .get_or_create(&JobLabels {
                            kind,
                            state: state.to_string(),
                        })
                        .set(count);
                }
            }
            Err(DbError::Unavailable(_)) => {}
            Err(err) => return Err(err),
        }
        let mut out = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &registry);
        Ok(out)
    }
}
