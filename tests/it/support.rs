//! `TestApp`: a fresh database (a temp SQLite file, or a fresh PostgreSQL schema), a
//! server on 127.0.0.1:0, an organization and a key with every permission.

#![allow(dead_code)]

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use ferry::auth::{Permission, keys};
use ferry::config::Config;
use ferry::db::Db;
use ferry::db::jobs;
use ferry::jobs::{Registry, Worker};
use ferry::orgs::{self, Feature, Plan};
use ferry::server::{self, App, Running};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an `async fn(Backend)` test once per backend, as `<name>::sqlite` and
/// `<name>::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::support::postgres_url().is_some() {
                    super::$name($crate::support::Backend::Postgres).await;
                }
            }
        }
    )*};
}

/// The PostgreSQL server of the tests. Outside CI an unset variable skips the
/// PostgreSQL half (with a notice); in CI it is an error, never a skip.
pub fn postgres_url() -> Option<String> {
    match std::env::var("FERRY_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok() => panic!("FERRY_TEST_DATABASE_URL must be set in CI"),
        _ => {
            eprintln!("FERRY_TEST_DATABASE_URL is not set: PostgreSQL half skipped");
            None
        }
    }
}

/// A fresh, empty database for one test.
pub struct TestDb {
    pub url: String,
    _dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = match backend {
            Backend::Sqlite => dir.path().join("test.db").display().to_string(),
            Backend::Postgres => fresh_schema().await,
        };
        TestDb { url, _dir: dir }
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().to_path_buf()
    }
}

/// Creates a schema of its own and returns a URL whose search_path is that schema.
async fn fresh_schema() -> String {
    let base = postgres_url().expect("PostgreSQL URL");
    let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
    let mut conn = AsyncPgConnection::establish(&base)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at FERRY_TEST_DATABASE_URL is unreachable: {e}"));
    conn.batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create schema");
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}options=-csearch_path%3D{schema}")
}

/// Runs SQL statements (DDL, or an update no query function makes) on either
/// backend.
pub async fn execute(db: &Db, sql: &str) {
    let mut conn = db.conn().await.expect("a connection");
    match &mut conn {
        ferry::db::Conn::Pg(c) => diesel_async::SimpleAsyncConnection::batch_execute(&mut **c, sql).await,
        ferry::db::Conn::Sqlite(c) => diesel_async::SimpleAsyncConnection::batch_execute(&mut **c, sql).await,
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Settings of a test server: ephemeral ports, quick job timings.
pub fn test_config(db: &TestDb) -> Config {
    let mut config = Config::default();
    config.server.grpc_addr = "127.0.0.1:0".into();
    config.server.http_addr = "127.0.0.1:0".into();
    config.server.data_dir = db.data_dir().display().to_string();
    config.server.shutdown_grace_secs = 2;
    config.database.url = db.url.clone();
    // CI runs the suite again with a pool of one (`FERRY_TEST_MAX_CONNECTIONS=1`):
    // any code path that waits for a second pooled connection while it holds one
    // then deadlocks in CI instead of under load in production.
    config.database.max_connections = std::env::var("FERRY_TEST_MAX_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    // Revocations and plan changes reach a SQLite server within this bound.
    config.auth.cache_ttl_millis = 1_000;
    // A suite running on two busy cores must not see a slow probe as an outage;
    // the outage tests (tests/it/outages.rs) put the default back.
    config.server.probe_timeout_millis = 3_000;
    config.jobs.heartbeat_millis = 200;
    config.jobs.lease_secs = 5;
    config.jobs.poll_millis = 100;
    config.jobs.retry_base_millis = 20;
    config.jobs.retry_max_secs = 1;
    config
}

/// Which job kinds the test server's worker runs.
pub enum Workers {
    None,
    Ferry,
    Custom(Registry),
}

pub struct TestApp {
    pub app: App,
    pub running: Option<Running>,
    pub channel: Channel,
    pub org_id: String,
    pub key: String,
    pub db: TestDb,
}

impl TestApp {
    /// A server with no worker: jobs stay queued.
    pub async fn start(backend: Backend) -> TestApp {
        TestApp::start_with(backend, |_| {}, Workers::None).await
    }

    /// A server whose worker runs ferry's own job kinds.
    pub async fn start_working(backend: Backend) -> TestApp {
        TestApp::start_with(backend, |_| {}, Workers::Ferry).await
    }

    /// Starts with adjusted settings and the chosen worker.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config), workers: Workers) -> TestApp {
        // The tests download over reqwest, which needs rustls' provider named.
        ferry::client::install_crypto_provider();
        let db = TestDb::new(backend).await;
        let mut config = test_config(&db);
        adjust(&mut config);
        let app = App::open(config).await.expect("open app");
        let org = orgs::create(&app.db, "acme", Plan::Enterprise, &Feature::ALL, None)
            .await
            .expect("org");
        let (_, key) = keys::create(&app.db, &org.id, "test", &Permission::ALL, &[])
            .await
            .expect("key");
        let handlers = match workers {
            Workers::None => Registry::new(),
            Workers::Ferry => app.job_kinds(),
            Workers::Custom(handlers) => handlers,
        };
        let running = server::start(app.clone(), handlers).await.expect("start server");
        // A TLS server's tests make their own channels (they hold the CA).
        let channel = if app.config.server.tls_cert.is_empty() {
            Channel::from_shared(format!("http://{}", running.grpc_addr))
                .expect("uri")
                .connect()
                .await
                .expect("connect")
        } else {
            Channel::from_shared(format!("http://{}", running.grpc_addr))
                .expect("uri")
                .connect_lazy()
        };
        TestApp {
            app,
            running: Some(running),
            channel,
            org_id: org.id,
            key,
            db,
        }
    }

    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.running.as_ref().expect("running").http_addr
    }

    pub fn db(&self) -> &Db {
        &self.app.db
    }

    /// A request carrying this app's key and organization.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        with_auth(message, &self.key, &self.org_id)
    }

    /// A second organization with its own all-permission key.
    pub async fn other_org(&self) -> (String, String) {
        self.org_with_key("globex", Plan::Starter).await
    }

    /// A new organization on `plan` with every feature: (its id, an all-permission key).
    pub async fn org_with_key(&self, name: &str, plan: Plan) -> (String, String) {
        let org = orgs::create(self.db(), name, plan, &Feature::ALL, None)
            .await
            .expect("org");
        let (_, key) = keys::create(self.db(), &org.id, "other", &Permission::ALL, &[])
            .await
            .expect("key");
        (org.id, key)
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }

    /// Runs ferry's job kinds on a worker of its own until no job is queued or
    /// running (30 s at most), then stops it: for tests whose server runs none.
    pub async fn run_jobs_until_idle(&self) {
        let stop = CancellationToken::new();
        let worker = Worker::new(self.app.queue.clone(), self.app.job_kinds());
        let worker = tokio::spawn(worker.run(stop.clone()));
        let idle = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            loop {
                let counts = jobs::count_by_kind_and_state(&mut self.db().conn().await.expect("conn"))
                    .await
                    .expect("count jobs");
                if !counts.iter().any(|(_, state, n)| !state.is_terminal() && *n > 0) {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await;
        stop.cancel();
        worker.await.expect("worker");
        assert!(idle.is_ok(), "jobs still queued or running after 30 s");
    }
}

/// A test that ends without `stop` (a failed assertion) still stops its server:
/// its listeners, worker and event listener do not linger into the next test.
impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown_token().cancel();
        }
    }
}

/// The file behind a download link: HTTP status and bytes.
pub async fn fetch(url: &str) -> (u16, Vec<u8>) {
    ferry::client::install_crypto_provider();
    let response = reqwest::get(url).await.expect("download");
    let status = response.status().as_u16();
    (status, response.bytes().await.expect("body").to_vec())
}

pub fn with_auth<T>(message: T, key: &str, org: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let bearer: MetadataValue<_> = format!("Bearer {key}").parse().expect("header");
    request.metadata_mut().insert("authorization", bearer);
    request
        .metadata_mut()
        .insert("x-organization-id", org.parse().expect("header"));
    request
}

/// The `ErrorInfo` reason of a status.
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

/// The fields named by a status's `BadRequest` violations.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// Repeats `call` every 50 ms until it fails, for at most `bound`; the status it
/// failed with. Panics when it still succeeds after `bound`.
pub async fn until_refused<T, F, Fut>(bound: std::time::Duration, mut call: F) -> tonic::Status
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if let Err(status) = call().await {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepted {bound:?} later"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// One curl call: status, headers (lower-case names), body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub async fn curl(args: &[&str]) -> Answer {
    let output = tokio::process::Command::new("curl")
        .args(["-s", "-i"])
        .args(args)
        .output()
        .await
        .expect("curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A child process killed (SIGKILL) when dropped, so a failing test leaves no
/// server behind holding database connections.
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ferry serve` as another process on `database_url` and `data_dir`, on
/// ephemeral ports, logging only warnings (to nowhere), without a bootstrap key,
/// with `settings` (`key=value`) on top. Returned unstarted, so a caller can add
/// to its environment.
pub fn ferry_serve(
    data_dir: &std::path::Path,
    database_url: &str,
    settings: &[&str],
) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--database-url")
        .arg(database_url)
        .args(["--set", "log.level=warn", "--set", "server.bootstrap=false"]);
    for setting in settings {
        command.args(["--set", setting]);
    }
    command
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command
}
