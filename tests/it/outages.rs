//! What ferry stands on fails: a PostgreSQL cluster of the test's own (initdb and
//! pg_ctl, as the `postgres` user when the test runs as root) is stopped and
//! frozen (SIGSTOP) under a serving replica; the local file store disappears and
//! fills up (a tmpfs the test mounts). Health must tell the truth within 2 s both
//! ways, calls must answer within their bounds, and jobs must end exactly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferry::proto::export_service_client::ExportServiceClient;
use ferry::proto::import_service_client::ImportServiceClient;
use ferry::proto::upload_import_request::Payload;
use ferry::proto::{
    CreateExportRequest, Export, GetExportRequest, GetImportRequest, Import, ImportOptions, JobState,
    UploadImportRequest,
};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::{Backend, TestApp, Workers, curl, reason};

crate::on_both_backends!(health_names_a_missing_file_store_and_recovers);

/// A PostgreSQL cluster in a temp folder, on a port of its own.
struct Cluster {
    root: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
}

/// Debian's newest PostgreSQL server binaries.
fn postgres_bin() -> PathBuf {
    let base = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(base)
        .expect("PostgreSQL server binaries in /usr/lib/postgresql (apt install postgresql)")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .max()
        .expect("a PostgreSQL version folder");
    base.join(newest.to_string()).join("bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Cluster {
    fn start() -> Cluster {
        let root = tempfile::tempdir().expect("temp dir");
        if is_root() {
            let owned = Command::new("chown")
                .args(["postgres:postgres", &root.path().display().to_string()])
                .status()
                .expect("chown");
            assert!(owned.success(), "chown the cluster folder to postgres");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let cluster = Cluster {
            root,
            port,
            bin: postgres_bin(),
        };
        let data = cluster.data().display().to_string();
        cluster.run(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        cluster.up();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// Runs a server binary (as `postgres` when the test is root); panics with its
    /// output when it fails.
    fn run(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = command.args(args).output().expect(program);
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.root.path().display()
        );
        let log = self.root.path().join("log").display().to_string();
        let data = self.data().display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
        );
    }

    fn down(&self) {
        let data = self.data().display().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The postmaster and every backend it started.
    fn processes(&self) -> Vec<String> {
        let pid = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next().map(str::to_string))
            .unwrap_or_default();
        let children = Command::new("pgrep").args(["-P", &pid]).output().expect("pgrep");
        let mut all = vec![pid];
        all.extend(
            String::from_utf8_lossy(&children.stdout)
                .lines()
                .map(str::to_string),
        );
        all
    }

    fn signal(&self, signal: &str) {
        for pid in self.processes() {
            let _ = Command::new("kill").args([signal, &pid]).status();
        }
    }

    /// As in a network partition or a stalled fail-over: connections stay open and
    /// nothing answers.
    fn freeze(&self) {
        self.signal("-STOP");
    }

    fn thaw(&self) {
        self.signal("-CONT");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.thaw();
        let data = self.data().display().to_string();
        let path = self.bin.join("pg_ctl");
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let _ = command
            .args(["-D", &data, "-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A server (with its worker) on the cluster.
async fn serve_on(cluster: &Cluster, adjust: impl FnOnce(&mut ferry::config::Config)) -> TestApp {
    let url = cluster.url();
    TestApp::start_with(
        Backend::Sqlite,
        move |c| {
            c.database.url = url;
            c.server.probe_timeout_millis = ferry::config::Config::default().server.probe_timeout_millis;
            adjust(c);
        },
        Workers::Ferry,
    )
    .await
}

async fn overall_health(app: &TestApp) -> i32 {
    let mut client = HealthClient::new(app.channel.clone());
    match client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
    {
        Ok(answer) => answer.into_inner().status,
        Err(_) => -1,
    }
}

/// Seconds until overall health is `wanted` (polled every 50 ms); panics past 10 s.
async fn seconds_until_health(app: &TestApp, wanted: ServingStatus) -> f64 {
    let started = Instant::now();
    while overall_health(app).await != wanted as i32 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "health never became {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed().as_secs_f64()
}

async fn readyz(app: &TestApp) -> (u16, serde_json::Value) {
    let answer = curl(&[&format!("http://{}/readyz", app.http_addr())]).await;
    (
        answer.status,
        serde_json::from_str(&answer.body).unwrap_or_default(),
    )
}

/// A GetExport of an unknown id: how it ended and how long it took.
async fn timed_get_export(app: &TestApp, timeout: Option<Duration>) -> (Result<(), tonic::Status>, Duration) {
    let mut request = app.request(GetExportRequest {
        id: "0190f000-0000-7000-8000-000000000000".into(),
    });
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    let started = Instant::now();
    let result = ExportServiceClient::new(app.channel.clone())
        .get_export(request)
        .await
        .map(|_| ());
    (result, started.elapsed())
}

fn assert_database_unavailable(result: &Result<(), tonic::Status>) {
    use tonic_types::StatusExt;
    let status = result.as_ref().expect_err("refused during the outage");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(reason(status), "DATABASE_UNAVAILABLE", "{status:?}");
    assert!(status.get_details_retry_info().is_some(), "RetryInfo: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_calls_follow_a_stopped_and_a_frozen_database() {
    let cluster = Cluster::start();
    let app = serve_on(&cluster, |_| {}).await;
    assert_eq!(overall_health(&app).await, ServingStatus::Serving as i32);
    assert_eq!(readyz(&app).await.0, 200);

    // Stopped: connections are refused by the kernel.
    cluster.down();
    let to_not_serving = seconds_until_health(&app, ServingStatus::NotServing).await;
    assert!(to_not_serving <= 2.0, "NOT_SERVING after {to_not_serving:.2} s");
    eprintln!("stopped database: NOT_SERVING after {to_not_serving:.2} s");
    let (status, body) = readyz(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["failing"], serde_json::json!(["database"]), "{body}");
    assert_eq!(body["dependencies"]["database"]["up"], false, "{body}");
    assert_eq!(
        curl(&[&format!("http://{}/livez", app.http_addr())]).await.status,
        200
    );
    let metrics = curl(&[&format!("http://{}/metrics", app.http_addr())]).await;
    assert!(
        metrics
            .body
            .contains("ferry_dependency_up{dependency=\"database\"} 0"),
        "{}",
        metrics.body
    );
    let (refused, took) = timed_get_export(&app, None).await;
    assert_database_unavailable(&refused);
    assert!(took <= Duration::from_secs(1), "refused after {took:?}");
    eprintln!("stopped database: GetExport UNAVAILABLE in {took:?}");

    cluster.up();
    let to_serving = seconds_until_health(&app, ServingStatus::Serving).await;
    eprintln!("restarted database: SERVING after {to_serving:.2} s");
    assert!(to_serving <= 2.0, "SERVING again after {to_serving:.2} s");
    let (found, _) = timed_get_export(&app, None).await;
    assert_eq!(found.unwrap_err().code(), tonic::Code::NotFound);

    // Frozen: connections stay open and nothing answers.
    cluster.freeze();
    let frozen_at = Instant::now();
    // A call with a deadline shorter than the probe's answers by its deadline.
    let (cut, took) = timed_get_export(&app, Some(Duration::from_millis(300))).await;
    let code = cut.unwrap_err().code();
    assert!(
        matches!(
            code,
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Unavailable
        ),
        "{code:?}"
    );
    assert!(took <= Duration::from_millis(1_000), "answered after {took:?}");
    eprintln!("frozen database: a call with a 300 ms deadline answered {code:?} in {took:?}");
    // Without a deadline: UNAVAILABLE once the probe gives up (timeout 1 s, every
    // 0.5 s), never a hang.
    let (refused, took) = timed_get_export(&app, None).await;
    assert_database_unavailable(&refused);
    assert!(
        frozen_at.elapsed() <= Duration::from_secs(3),
        "refused {:?} after the freeze ({took:?} for the call)",
        frozen_at.elapsed()
    );
    eprintln!(
        "frozen database: GetExport UNAVAILABLE {:?} after the freeze ({took:?} for the call)",
        frozen_at.elapsed()
    );
    let to_not_serving = seconds_until_health(&app, ServingStatus::NotServing).await;
    assert!(
        frozen_at.elapsed().as_secs_f64() <= 2.5,
        "NOT_SERVING {:?} after the freeze ({to_not_serving:.2} s of polling)",
        frozen_at.elapsed()
    );
    eprintln!(
        "frozen database: NOT_SERVING {:?} after the freeze",
        frozen_at.elapsed()
    );
    cluster.thaw();
    let to_serving = seconds_until_health(&app, ServingStatus::Serving).await;
    eprintln!("thawed database: SERVING after {to_serving:.2} s");
    assert!(to_serving <= 2.0, "SERVING again after {to_serving:.2} s");
    let (found, _) = timed_get_export(&app, None).await;
    assert_eq!(found.unwrap_err().code(), tonic::Code::NotFound);
    app.stop().await;
}

/// Polls GetImport (riding out UNAVAILABLE) until the import ends.
pub(crate) async fn import_end(app: &TestApp, id: &str) -> Import {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "import {id} did not end in 120 s; last seen: {last:?}"
        );
        let got = ImportServiceClient::new(app.channel.clone())
            .get_import(app.request(GetImportRequest { id: id.into() }))
            .await;
        last = Some(got.as_ref().map(|r| r.get_ref().clone()).map_err(Clone::clone));
        if let Ok(import) = got.map(tonic::Response::into_inner)
            && [JobState::Completed, JobState::Failed, JobState::Cancelled]
                .iter()
                .any(|s| *s as i32 == import.state)
        {
            return import;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn export_end(app: &TestApp, id: &str) -> Export {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "export {id} did not end in 120 s");
        let got = ExportServiceClient::new(app.channel.clone())
            .get_export(app.request(GetExportRequest { id: id.into() }))
            .await;
        if let Ok(export) = got.map(tonic::Response::into_inner)
            && [JobState::Completed, JobState::Failed, JobState::Cancelled]
                .iter()
                .any(|s| *s as i32 == export.state)
        {
            return export;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the job has processed something, so the outage hits it mid-run.
async fn until_started(app: &TestApp, id: &str, import: bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "job {id} never started");
        let processed = if import {
            ImportServiceClient::new(app.channel.clone())
                .get_import(app.request(GetImportRequest { id: id.into() }))
                .await
                .map(|r| r.into_inner().processed_items)
                .unwrap_or(0)
        } else {
            ExportServiceClient::new(app.channel.clone())
                .get_export(app.request(GetExportRequest { id: id.into() }))
                .await
                .map(|r| r.into_inner().progress.map(|p| p.rows_done).unwrap_or(0))
                .unwrap_or(0)
        };
        if processed > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn upload_messages(rows: usize) -> Vec<UploadImportRequest> {
    let mut csv = String::from("tax_id,type,name\n");
    for i in 0..rows {
        csv.push_str(&format!("OUT{i},pf,Row {i}\n"));
    }
    let mut out = vec![UploadImportRequest {
        payload: Some(Payload::Options(ImportOptions {
            country: "MX".into(),
            ..Default::default()
        })),
    }];
    out.extend(csv.as_bytes().chunks(64 * 1024).map(|c| UploadImportRequest {
        payload: Some(Payload::Chunk(c.to_vec())),
    }));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_and_an_export_cut_by_a_database_outage_end_with_exact_counts() {
    const ROWS: usize = 20_000;
    let cluster = Cluster::start();
    let app = serve_on(&cluster, |c| {
        c.bulk_import.batch_rows = 200;
        c.exports.batch_rows = 200;
        c.exports.batch_pause_millis = 2;
    })
    .await;

    // The import: the database stops for 3 s in the middle.
    let queued = ImportServiceClient::new(app.channel.clone())
        .upload_import(app.request(tokio_stream::iter(upload_messages(ROWS))))
        .await
        .unwrap()
        .into_inner();
    until_started(&app, &queued.id, true).await;
    cluster.down();
    eprintln!("database stopped mid-import");
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.up();
    let done = import_end(&app, &queued.id).await;
    eprintln!("import after the outage: {done:?}");
    assert_eq!(done.state, JobState::Completed as i32, "{done:?}");
    assert_eq!(done.processed_items, ROWS as i64, "{done:?}");
    assert_eq!(done.failed_items, 0, "{done:?}");
    assert_eq!(done.created_items + done.updated_items, ROWS as i64, "{done:?}");
    let stored = count_entities(&cluster).await;
    assert_eq!(stored, ROWS as i64, "one entity per row, none twice");

    // The export: the database freezes for 3 s in the middle.
    let created = ExportServiceClient::new(app.channel.clone())
        .create_export(app.request(CreateExportRequest {
            columns: vec!["tax_id".into(), "name".into()],
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    until_started(&app, &created.id, false).await;
    cluster.freeze();
    eprintln!("database frozen mid-export");
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.thaw();
    let done = export_end(&app, &created.id).await;
    assert_eq!(done.state, JobState::Completed as i32, "{done:?}");
    assert_eq!(done.row_count, ROWS as i64, "{done:?}");
    app.stop().await;
}

async fn count_entities(cluster: &Cluster) -> i64 {
    use diesel_async::{AsyncConnection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = diesel_async::AsyncPgConnection::establish(&cluster.url())
        .await
        .unwrap();
    diesel::sql_query("SELECT count(*) AS n FROM entities")
        .get_result::<Count>(&mut conn)
        .await
        .unwrap()
        .n
}

async fn health_names_a_missing_file_store_and_recovers(backend: Backend) {
    let app = TestApp::start(backend).await;
    let files = app.db.data_dir().join("files");
    let aside = app.db.data_dir().join("files-aside");
    std::fs::rename(&files, &aside).unwrap();
    let to_not_serving = seconds_until_health(&app, ServingStatus::NotServing).await;
    assert!(to_not_serving <= 2.0, "NOT_SERVING after {to_not_serving:.2} s");
    let (status, body) = readyz(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["failing"], serde_json::json!(["storage"]), "{body}");
    // Entities need no store: that service keeps serving.
    let entity = HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest {
            service: "ferry.v1.EntityService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(entity, ServingStatus::Serving as i32);
    let export = HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest {
            service: "ferry.v1.ExportService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(export, ServingStatus::NotServing as i32);
    std::fs::rename(&aside, &files).unwrap();
    let to_serving = seconds_until_health(&app, ServingStatus::Serving).await;
    assert!(to_serving <= 2.0, "SERVING again after {to_serving:.2} s");
    assert_eq!(readyz(&app).await.0, 200);
    app.stop().await;
}

crate::on_both_backends!(a_full_store_fails_the_export_as_storage_full_and_keeps_no_partial_file);

/// A tmpfs of `size` mounted by the test (CI runs as root), unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().expect("temp dir");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(
            mounted.success(),
            "mounting a tmpfs needs root (CI runs as root): mount -t tmpfs at {}",
            dir.path().display()
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Regular files anywhere below the mount point.
    fn files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.path(), &mut out);
        out
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// The store fills up while an export is stored: the export fails at once with
/// STORAGE_FULL (not after retries), the part it wrote is removed so the store is
/// as it was, an upload onto a full store is RESOURCE_EXHAUSTED `STORAGE_FULL`,
/// and once there is room the next export completes.
async fn a_full_store_fails_the_export_as_storage_full_and_keeps_no_partial_file(backend: Backend) {
    let disk = SmallDisk::mount("1m");
    let store = disk.path().display().to_string();
    let app = TestApp::start_with(backend, move |c| c.storage.local_dir = store, Workers::Ferry).await;
    let rows: Vec<_> = (1..=30_000)
        .map(|n| crate::entities_fixture(&app.org_id, n))
        .collect();
    for chunk in rows.chunks(2_000) {
        ferry::db::entities::insert(&mut app.db().conn().await.unwrap(), chunk)
            .await
            .unwrap();
    }
    let mut exports = ExportServiceClient::new(app.channel.clone());
    let created = exports
        .create_export(app.request(CreateExportRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let done = export_end(&app, &created.id).await;
    assert_eq!(done.state, JobState::Failed as i32, "{done:?}");
    assert_eq!(done.attempt_count, 1, "a full store was retried: {done:?}");
    let row = ferry::db::jobs::find(&mut app.db().conn().await.unwrap(), &created.id)
        .await
        .unwrap()
        .unwrap();
    let failure: ferry::jobs::JobFailure = serde_json::from_str(row.error.as_deref().unwrap()).unwrap();
    assert_eq!(failure.reason, "STORAGE_FULL", "{failure:?}");
    assert_eq!(disk.files(), Vec::<PathBuf>::new(), "the partial file was left");

    // A store filled by something else: uploads are told so.
    let filler = disk.path().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 1024 * 1024]);
    let refused = ImportServiceClient::new(app.channel.clone())
        .upload_import(app.request(tokio_stream::iter(upload_messages(10))))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    assert_eq!(reason(&refused), "STORAGE_FULL", "{refused:?}");
    std::fs::remove_file(&filler).unwrap();

    let small = exports
        .create_export(app.request(CreateExportRequest {
            filter: Some(ferry::proto::EntityFilter {
                tax_ids: vec!["FX-1".into(), "FX-2".into()],
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let done = export_end(&app, &small.id).await;
    assert_eq!(done.state, JobState::Completed as i32, "{done:?}");
    assert_eq!(done.row_count, 2, "{done:?}");
    app.stop().await;
}

/// moto's S3 server (PyPI `moto[server]` 5.1.0, installed by `.ci/run`) in a
/// process of its own, so the test can freeze it.
struct MotoS3 {
    child: std::process::Child,
    endpoint: String,
}

impl MotoS3 {
    async fn start() -> MotoS3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto_server (pip install 'moto[server]==5.1.0')");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let moto = MotoS3 { child, endpoint };
        moto.client()
            .create_bucket()
            .bucket(MOTO_BUCKET)
            .send()
            .await
            .expect("create the bucket");
        moto
    }

    fn client(&self) -> aws_sdk_s3::Client {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let config = aws_sdk_s3::config::Builder::new()
            .http_client(http)
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status();
    }
}

impl Drop for MotoS3 {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const MOTO_BUCKET: &str = "ferry-outages";

/// The S3 server freezes: health turns NOT_SERVING within 2 s, an upload answers
/// UNAVAILABLE `STORAGE_UNAVAILABLE` within its read timeout instead of hanging,
/// and once it thaws health comes back, an export completes and no multipart
/// upload is left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_object_store_is_reported_and_bounded_and_exports_complete_after_it() {
    let moto = MotoS3::start().await;
    let endpoint = moto.endpoint.clone();
    let app = TestApp::start_with(
        Backend::Sqlite,
        move |c| {
            c.storage.backend = ferry::config::StorageBackend::S3;
            c.storage.s3_bucket = MOTO_BUCKET.into();
            c.storage.s3_region = "us-east-1".into();
            c.storage.s3_endpoint = endpoint;
            c.storage.s3_force_path_style = true;
            c.storage.s3_access_key_id = "test".into();
            c.storage.s3_secret_access_key = "test".into();
            c.storage.s3_read_timeout_secs = 3;
            c.storage.s3_operation_timeout_secs = 5;
            c.server.probe_timeout_millis = ferry::config::Config::default().server.probe_timeout_millis;
        },
        Workers::Ferry,
    )
    .await;
    let rows: Vec<_> = (1..=2_000)
        .map(|n| crate::entities_fixture(&app.org_id, n))
        .collect();
    ferry::db::entities::insert(&mut app.db().conn().await.unwrap(), &rows)
        .await
        .unwrap();

    moto.signal("-STOP");
    let frozen_at = Instant::now();
    let upload = ImportServiceClient::new(app.channel.clone())
        .upload_import(app.request(tokio_stream::iter(upload_messages(100))))
        .await;
    let took = frozen_at.elapsed();
    let refused = upload.expect_err("an upload to a frozen store");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert_eq!(reason(&refused), "STORAGE_UNAVAILABLE", "{refused:?}");
    assert!(took <= Duration::from_secs(8), "answered after {took:?}");
    eprintln!("frozen S3: UploadImport UNAVAILABLE after {took:?} (read timeout 3 s)");
    assert_eq!(overall_health(&app).await, ServingStatus::NotServing as i32);
    let (status, body) = readyz(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["failing"], serde_json::json!(["storage"]), "{body}");

    // An export queued during the stall waits it out and completes.
    let created = ExportServiceClient::new(app.channel.clone())
        .create_export(app.request(CreateExportRequest::default()))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_secs(2)).await;
    moto.signal("-CONT");
    let to_serving = seconds_until_health(&app, ServingStatus::Serving).await;
    assert!(to_serving <= 2.0, "SERVING again after {to_serving:.2} s");
    let done = export_end(&app, &created.id).await;
    assert_eq!(done.state, JobState::Completed as i32, "{done:?}");
    assert_eq!(done.row_count, 2_000, "{done:?}");
    // A multipart upload a killed writer never finished is aborted by the sweep.
    moto.client()
        .create_multipart_upload()
        .bucket(MOTO_BUCKET)
        .key("exports/killed/entities.csv")
        .send()
        .await
        .unwrap();
    let swept = app.app.storage.remove_abandoned(Duration::ZERO).await.unwrap();
    assert_eq!(swept, 1);
    let open = moto
        .client()
        .list_multipart_uploads()
        .bucket(MOTO_BUCKET)
        .send()
        .await
        .unwrap();
    assert!(open.uploads().is_empty(), "{:?}", open.uploads());
    // What the store holds, by organization and kind, read from S3's listing
    // (moto 5.1.0 keeps the SDK's aws-chunked framing in the object, so its size
    // is a little over the file's).
    let usage = app.app.storage.usage().await.unwrap();
    let exports = usage
        .get(&(app.org_id.clone(), "exports".to_string()))
        .expect("the export's file is counted");
    assert_eq!(exports.files, 1);
    assert!(exports.bytes >= done.file_size as u64, "{exports:?}");
    // The upload refused during the stall was taken by moto when it woke: the
    // retraction removes it (its first pass is 5 s after the refusal).
    let orphan = async {
        loop {
            let usage = app.app.storage.usage().await.unwrap();
            if !usage.contains_key(&(app.org_id.clone(), "imports".to_string())) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), orphan)
        .await
        .expect("the upload whose write timed out was not retracted");
    app.stop().await;
}

/// A process killed while it copied a file into the local store leaves a hidden
/// `.partial-` copy: the hourly sweep removes it once it is a day old, and
/// nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_copies_a_killed_writer_left_are_swept_after_a_day() {
    let app = TestApp::start(Backend::Sqlite).await;
    let folder = app
        .db
        .data_dir()
        .join("files")
        .join("exports")
        .join("org")
        .join("job");
    std::fs::create_dir_all(&folder).unwrap();
    let old = folder.join(".entities.csv.partial-0190f0");
    let fresh = folder.join(".entities.csv.partial-0190f1");
    let whole = folder.join("entities.csv");
    for file in [&old, &fresh, &whole] {
        std::fs::write(file, b"rows").unwrap();
    }
    let aged = Command::new("touch")
        .args(["-d", "2 days ago"])
        .arg(&old)
        .arg(&whole)
        .status()
        .unwrap();
    assert!(aged.success());
    let swept = app
        .app
        .storage
        .remove_abandoned(ferry::storage::ABANDONED_AFTER)
        .await
        .unwrap();
    assert_eq!(swept, 1);
    assert!(!old.exists(), "the day-old partial copy stays");
    assert!(
        fresh.exists() && whole.exists(),
        "a file that is not abandoned went"
    );
    app.stop().await;
}

/// The SQLite database's folder fills up during an import: the import fails with
/// a reason that says so (recorded in the room of the disk's reserve, which the
/// full write frees), the database stays intact (`PRAGMA integrity_check` is
/// `ok`), and once there is room the next import runs and the reserve is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sqlite_folder_fails_the_import_with_a_reason_and_keeps_the_database_intact() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .try_init();
    let disk = SmallDisk::mount("6m");
    let database = disk.path().join("ferry.db").display().to_string();
    let url = database.clone();
    let app = TestApp::start_with(
        Backend::Sqlite,
        move |c| {
            c.database.url = url;
            c.bulk_import.batch_rows = 500;
        },
        Workers::Ferry,
    )
    .await;
    let queued = ImportServiceClient::new(app.channel.clone())
        .upload_import(app.request(tokio_stream::iter(upload_messages(60_000))))
        .await
        .unwrap()
        .into_inner();
    let done = import_end(&app, &queued.id).await;
    assert_eq!(done.state, JobState::Failed as i32, "{done:?}");
    let row = ferry::db::jobs::find(&mut app.db().conn().await.unwrap(), &queued.id)
        .await
        .unwrap()
        .unwrap();
    let failure: ferry::jobs::JobFailure = serde_json::from_str(row.error.as_deref().unwrap()).unwrap();
    eprintln!(
        "full SQLite folder: {failure:?} after {} attempt(s)",
        row.attempts
    );
    assert_eq!(failure.reason, "STORAGE_FULL", "{failure:?}");
    let integrity: String = rusqlite::Connection::open(&database)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let remounted = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(disk.path())
        .status()
        .unwrap();
    assert!(remounted.success());
    let queued = ImportServiceClient::new(app.channel.clone())
        .upload_import(app.request(tokio_stream::iter(upload_messages(100))))
        .await
        .unwrap()
        .into_inner();
    let done = import_end(&app, &queued.id).await;
    assert_eq!(done.state, JobState::Completed as i32, "{done:?}");
    // The room set aside for the next failure's record is back.
    let reserve = std::fs::metadata(format!("{database}.reserve")).unwrap();
    assert_eq!(reserve.len() as usize, ferry::db::sqlite_reserve::RESERVE_BYTES);
    app.stop().await;
}
