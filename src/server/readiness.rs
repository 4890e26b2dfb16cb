//! Readiness that tells the truth: a probe per dependency (the database, the file
//! store, the SMTP relay where mail goes to one) runs in the background, and what
//! they find drives gRPC health, `/readyz`, the `ferry_dependency_up` gauge and
//! the database breaker ([`crate::db::outage`]). One log line per transition.
//!
//! The database and the store are required: while either is out the replica is
//! not ready, so a load balancer stops sending it calls it cannot serve. The SMTP
//! relay is reported but not required: e-mails wait in the queue and are retried,
//! and every call still works without it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::db::now_ms;
use crate::db::outage::Prober;
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::storage::Storage;

/// How often the SMTP relay is probed: a connection each time, which relays
/// count, so far less often than the database and the store.
const MAIL_EVERY: Duration = Duration::from_secs(15);

/// One dependency as the last probe found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub up: bool,
    /// Out means not ready.
    pub required: bool,
    /// When it last changed (milliseconds since the epoch).
    pub since_ms: i64,
    /// Why it is out, in a word (`refused`, `no answer`, `error`): `/readyz` is
    /// public, so the full message (hosts, users) goes to the log only.
    pub cause: Option<&'static str>,
}

/// Every dependency by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot(pub BTreeMap<&'static str, Dependency>);

impl Snapshot {
    /// Every required dependency is up.
    pub fn ready(&self) -> bool {
        self.0.values().all(|d| d.up || !d.required)
    }

    /// The required dependencies that are out.
    pub fn failing(&self) -> Vec<&'static str> {
        self.0
            .iter()
            .filter(|(_, d)| d.required && !d.up)
            .map(|(name, _)| *name)
            .collect()
    }

    pub fn is_up(&self, name: &str) -> bool {
        self.0.get(name).is_none_or(|d| d.up)
    }
}

/// The probes' findings, shared by health, `/readyz` and metrics.
#[derive(Clone)]
pub struct Readiness {
    state: Arc<watch::Sender<Snapshot>>,
    metrics: Arc<Metrics>,
}

/// One check of a dependency.
pub trait Probe: Send + 'static {
    fn check(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

impl Probe for Prober {
    fn check(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        Prober::check(self)
    }
}

struct StoreProbe {
    storage: Storage,
    timeout: Duration,
}

impl Probe for StoreProbe {
    async fn check(&mut self) -> Result<(), String> {
        match tokio::time::timeout(self.timeout, self.storage.probe()).await {
            Ok(result) => result.map_err(|err| err.to_string()),
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }
}

struct MailProbe {
    mailer: Arc<Mailer>,
    timeout: Duration,
}

impl Probe for MailProbe {
    async fn check(&mut self) -> Result<(), String> {
        match tokio::time::timeout(self.timeout, self.mailer.probe()).await {
            Ok(result) => result.unwrap_or(Ok(())),
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }
}

/// The cause of an outage in a word, from the probe's message.
fn cause_word(message: &str) -> &'static str {
    let lower = message.to_ascii_lowercase();
    if lower.contains("no answer") || lower.contains("timed out") || lower.contains("timeout") {
        "no answer"
    } else if lower.contains("refused") {
        "refused"
    } else {
        "error"
    }
}

impl Readiness {
    /// All dependencies up until a probe says otherwise (the server checked them
    /// at start).
    pub fn new(metrics: Arc<Metrics>) -> Readiness {
        Readiness {
            state: Arc::new(watch::channel(Snapshot::default()).0),
            metrics,
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.state.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.state.subscribe()
    }

    /// Starts the probes: database and store every `interval`, the SMTP relay
    /// (when mail goes to one) every [`MAIL_EVERY`].
    pub fn start(&self, app: &super::App, stop: CancellationToken) {
        let interval = Duration::from_millis(app.config.server.probe_interval_millis);
        let timeout = Duration::from_millis(app.config.server.probe_timeout_millis);
        self.record("database", true, Ok(()));
        self.record("storage", true, Ok(()));
        tokio::spawn(self.clone().keep_probing(
            "database",
            true,
            interval,
            Prober::new(app.db.clone(), timeout),
            stop.clone(),
        ));
        let store = StoreProbe {
            storage: app.storage.clone(),
            timeout,
        };
        tokio::spawn(
            self.clone()
                .keep_probing("storage", true, interval, store, stop.clone()),
        );
        if app.mailer.uses_smtp() {
            self.record("mail", false, Ok(()));
            let mail = MailProbe {
                mailer: app.mailer.clone(),
                timeout: timeout.max(Duration::from_secs(5)),
            };
            tokio::spawn(self.clone().keep_probing("mail", false, MAIL_EVERY, mail, stop));
        }
    }

    async fn keep_probing(
        self,
        name: &'static str,
        required: bool,
        interval: Duration,
        mut probe: impl Probe,
        stop: CancellationToken,
    ) {
        loop {
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                result = probe.check() => result,
            };
            self.record(name, required, result);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Records a probe's finding: the gauge always, the state (and a log line) on a
    /// change.
    fn record(&self, name: &'static str, required: bool, result: Result<(), String>) {
        let up = result.is_ok();
        self.metrics.set_dependency_up(name, up);
        self.state.send_if_modified(|snapshot| {
            if snapshot.0.get(name).is_some_and(|d| d.up == up) {
                return false;
            }
            let was_known = snapshot.0.contains_key(name);
            match (&result, was_known) {
                (Ok(()), true) => tracing::info!(dependency = name, "dependency is back"),
                (Err(cause), _) => {
                    tracing::error!(dependency = name, cause = %cause, required, "dependency is out")
                }
                (Ok(()), false) => {}
            }
            snapshot.0.insert(
                name,
                Dependency {
                    up,
                    required,
                    since_ms: now_ms(),
                    cause: result.as_ref().err().map(|cause| cause_word(cause)),
                },
            );
            true
        });
    }
}
