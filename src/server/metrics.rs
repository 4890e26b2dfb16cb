//! Prometheus metrics served at `/metrics`: gRPC requests by method and code, and
//! jobs by kind and state (read from the database at scrape time, so every replica
//! reports the shared queue).

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::db::{Db, DbError, jobs};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: String,
    state: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    jobs: Family<JobLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ferry");
        let requests = Family::<RequestLabels, Counter>::default();
        let jobs = Family::<JobLabels, Gauge>::default();
        registry.register(
            "grpc_requests",
            "gRPC calls by method and status code",
            requests.clone(),
        );
        registry.register("jobs", "Jobs in the queue by kind and state", jobs.clone());
        Metrics {
            registry: Mutex::new(registry),
            requests,
            jobs,
        }
    }
}

impl Metrics {
    pub fn record_request(&self, method: &str, code: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                code: code.to_string(),
            })
            .inc();
    }

    /// The text exposition, with job counts read fresh from the database.
    pub async fn render(&self, db: &Db) -> Result<String, DbError> {
        let counts = jobs::count_by_kind_and_state(&mut db.conn().await?).await?;
        self.jobs.clear();
        for (kind, state, count) in counts {
            self.jobs
                .get_or_create(&JobLabels {
                    kind,
                    state: state.to_string(),
                })
                .set(count);
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
