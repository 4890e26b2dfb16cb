//! Exports stored in S3: a real S3 protocol server (s3s + s3s-fs, which verifies
//! SigV4) on loopback, presigned GET URLs fetched over plain HTTP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry::proto::{
    CreateExportRequest, DeleteExportRequest, GetExportDownloadRequest, ImportOptions, JobState,
    UploadImportRequest, WatchExportRequest, export_service_client::ExportServiceClient,
    import_service_client::ImportServiceClient, upload_import_request,
};
use ferry::storage::{Download, Storage};
use sha2::{Digest, Sha256};
use tokio_stream::StreamExt;

use crate::on_both_backends;
use crate::support::{Backend, TestApp, Workers};

on_both_backends!(an_export_stored_in_s3_downloads_from_a_presigned_url);

const ACCESS_KEY: &str = "AKIAFERRYTEST";
const SECRET_KEY: &str = "ferry-test-secret-key";
const BUCKET: &str = "ferry-exports";

/// An S3 server on 127.0.0.1:0 with one bucket; stops with the returned dir.
pub async fn start_s3() -> (String, tempfile::TempDir) {
    let (endpoint, dir, _) = start_recording_s3().await;
    (endpoint, dir)
}

/// Every request an S3 server received: method, path and query, headers.
type Received = Arc<Mutex<Vec<(http::Method, String, http::HeaderMap)>>>;

/// [`start_s3`] that also keeps every request it receives.
async fn start_recording_s3() -> (String, tempfile::TempDir, Received) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(BUCKET)).unwrap();
    let fs = s3s_fs::FileSystem::new(dir.path()).unwrap();
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let s3 = builder.build();
    let received = Received::default();
    let log = received.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (s3, log) = (s3.clone(), log.clone());
            let service =
                hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    log.lock().unwrap().push((
                        request.method().clone(),
                        request.uri().to_string(),
                        request.headers().clone(),
                    ));
                    let s3 = s3.clone();
                    async move { hyper::service::Service::call(&s3, request).await }
                });
            tokio::spawn(async move {
                let builder =
                    hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                let _ = builder
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), dir, received)
}

fn use_s3(config: &mut ferry::config::Config, endpoint: &str) {
    config.storage.backend = ferry::config::StorageBackend::S3;
    config.storage.s3_bucket = BUCKET.into();
    config.storage.s3_prefix = "tenant-a".into();
    config.storage.s3_region = "us-east-1".into();
    config.storage.s3_endpoint = endpoint.into();
    config.storage.s3_force_path_style = true;
    config.storage.s3_access_key_id = ACCESS_KEY.into();
    config.storage.s3_secret_access_key = SECRET_KEY.into();
}

async fn an_export_stored_in_s3_downloads_from_a_presigned_url(backend: Backend) {
    let (endpoint, s3_dir) = start_s3().await;
    let app = TestApp::start_with(backend, |c| use_s3(c, &endpoint), Workers::Ferry).await;
    let rows: Vec<_> = (1..=50)
        .map(|n| crate::entities_fixture(&app.org_id, n))
        .collect();
    ferry::db::entities::insert(&mut app.db().conn().await.unwrap(), &rows)
        .await
        .unwrap();

    let mut client = ExportServiceClient::new(app.channel.clone());
    let created = client
        .create_export(app.request(CreateExportRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let mut stream = client
        .watch_export(app.request(WatchExportRequest {
            id: created.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(item) = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .unwrap()
    {
        last = Some(item.unwrap());
    }
    let done = last.unwrap();
    assert_eq!(done.state, JobState::Completed as i32, "{:?}", done.error);

    let link = client
        .get_export_download(app.request(GetExportDownloadRequest {
            id: created.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(link.url.starts_with(&endpoint), "{}", link.url);
    assert!(link.url.contains("X-Amz-Signature="));
    let response = reqwest::get(&link.url).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let bytes = response.bytes().await.unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bytes)), link.sha256);
    assert_eq!(bytes.len() as i64, link.size_bytes);
    assert!(std::str::from_utf8(&bytes).unwrap().lines().count() == 51);
    // The object sits under the configured prefix.
    assert!(s3_dir.path().join(BUCKET).join("tenant-a/exports").exists());

    // A tampered signature is refused by the store itself.
    let (head, signature) = link.url.split_once("X-Amz-Signature=").unwrap();
    let flipped = if signature.starts_with('0') { "1" } else { "0" };
    let tampered = format!("{head}X-Amz-Signature={flipped}{}", &signature[1..]);
    assert_eq!(reqwest::get(&tampered).await.unwrap().status().as_u16(), 403);

    client
        .delete_export(app.request(DeleteExportRequest {
            id: created.id.clone(),
        }))
        .await
        .unwrap();
    assert_ne!(reqwest::get(&link.url).await.unwrap().status().as_u16(), 200);
    app.stop().await;
}

/// Files over one part go up as a multipart upload and come back byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_is_uploaded_in_parts_and_downloads_intact() {
    ferry::client::install_crypto_provider();
    let (endpoint, _s3_dir) = start_s3().await;
    let mut config = ferry::config::Config::default();
    use_s3(&mut config, &endpoint);
    let storage = Storage::from_config(&config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    let data: Vec<u8> = (0..(20 * 1024 * 1024 + 123))
        .map(|i: usize| (i * 31 % 251) as u8)
        .collect();
    std::fs::write(&path, &data).unwrap();
    let size = storage
        .put_file("exports/o/j/big.bin", &path, "application/octet-stream")
        .await
        .unwrap();
    assert_eq!(size as usize, data.len());
    let download = Download {
        file_name: "big.bin",
        content_type: "application/octet-stream",
        ttl: Duration::from_secs(60),
    };
    let url = storage
        .download_url("exports/o/j/big.bin", &download)
        .await
        .unwrap();
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-disposition"].to_str().unwrap(),
        "attachment; filename=\"big.bin\""
    );
    let body = response.bytes().await.unwrap();
    assert_eq!(Sha256::digest(&body), Sha256::digest(&data));
    storage.delete("exports/o/j/big.bin").await.unwrap();
    assert_eq!(reqwest::get(&url).await.unwrap().status().as_u16(), 404);
}

on_both_backends!(refused_credentials_fail_jobs_at_once_and_refuse_uploads_as_misconfigured);

/// The store refuses the server's credentials (a rotated secret; the start-up check
/// is `ferry serve`'s, not the test server's): an export fails on its first attempt
/// with STORAGE_MISCONFIGURED (no retries against a store that cannot work), and an
/// upload is FAILED_PRECONDITION with the cause, not "retry later".
async fn refused_credentials_fail_jobs_at_once_and_refuse_uploads_as_misconfigured(backend: Backend) {
    let (endpoint, _s3_dir) = start_s3().await;
    let wrong_secret = |c: &mut ferry::config::Config| {
        use_s3(c, &endpoint);
        c.storage.s3_secret_access_key = "not-the-secret".into();
    };
    let app = TestApp::start_with(backend, wrong_secret, Workers::Ferry).await;

    let mut client = ExportServiceClient::new(app.channel.clone());
    let created = client
        .create_export(app.request(CreateExportRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let mut stream = client
        .watch_export(app.request(WatchExportRequest {
            id: created.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(item) = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .unwrap()
    {
        last = Some(item.unwrap());
    }
    let done = last.unwrap();
    assert_eq!(done.state, JobState::Failed as i32);
    assert_eq!(done.attempt_count, 1, "a misconfigured store was retried");
    let error = done.error.unwrap();
    assert!(
        error.message.contains("storage.s3_secret_access_key"),
        "{}",
        error.message
    );

    let upload = futures::stream::iter([
        UploadImportRequest {
            payload: Some(upload_import_request::Payload::Options(ImportOptions {
                file_name: "a.csv".into(),
                ..Default::default()
            })),
        },
        UploadImportRequest {
            payload: Some(upload_import_request::Payload::Chunk(
                b"tax_id,name,type,country_code\n20123456786,Ana,person,AR\n".to_vec(),
            )),
        },
    ]);
    let status = ImportServiceClient::new(app.channel.clone())
        .upload_import(app.request(upload))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert_eq!(crate::support::reason(&status), "STORAGE_MISCONFIGURED");
    assert!(
        status.message().contains("storage.s3_secret_access_key"),
        "{}",
        status.message()
    );
    app.stop().await;
}

/// `ferry serve` checks the bucket before serving: a missing one stops it with
/// the setting to fix, and nothing listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_a_missing_bucket_stops_at_start_naming_the_setting() {
    let (endpoint, _s3_dir) = start_s3().await;
    let data = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "--set",
            "server.grpc_addr=127.0.0.1:0",
            "--set",
            "server.http_addr=127.0.0.1:0",
        ])
        .args([
            "--set",
            "storage.backend=s3",
            "--set",
            "storage.s3_bucket=no-such-bucket",
        ])
        .args([
            "--set",
            "storage.s3_region=us-east-1",
            "--set",
            "storage.s3_force_path_style=true",
        ])
        .args(["--set", &format!("storage.s3_endpoint={endpoint}")])
        .args(["--set", &format!("storage.s3_access_key_id={ACCESS_KEY}")])
        .args(["--set", &format!("storage.s3_secret_access_key={SECRET_KEY}")])
        .arg("serve")
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("serve stopped by itself")
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("no-such-bucket") && err.contains("storage.s3_bucket"),
        "{err}"
    );
    assert!(
        !data.path().join("bootstrap-key").exists(),
        "bootstrapped before the check"
    );
}

/// With `storage.s3_sse` every object ferry writes asks S3 to encrypt it — the
/// start-up probe, a small file (PutObject) and a large one (CreateMultipartUpload)
/// — naming the KMS key with `aws:kms`; without the setting no request asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_are_written_with_the_configured_server_side_encryption() {
    ferry::client::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.csv");
    std::fs::write(&small, "a,b\n1,2\n").unwrap();
    let large = dir.path().join("large.bin");
    std::fs::write(&large, vec![7u8; 8 * 1024 * 1024 + 1]).unwrap();
    for (sse, kms_key) in [
        ("aws:kms", "arn:aws:kms:us-east-1:111122223333:key/ferry-test"),
        ("AES256", ""),
        ("", ""),
    ] {
        let (endpoint, _s3_dir, received) = start_recording_s3().await;
        let mut config = ferry::config::Config::default();
        use_s3(&mut config, &endpoint);
        config.storage.s3_sse = sse.into();
        config.storage.s3_kms_key_id = kms_key.into();
        config.validate().unwrap();
        let storage = Storage::from_config(&config).await.unwrap();
        storage.check_writable().await.unwrap();
        for (key, path) in [
            ("exports/o/j/small.csv", &small),
            ("exports/o/j/large.bin", &large),
        ] {
            storage.put_file(key, path, "text/csv").await.unwrap();
        }
        let received = received.lock().unwrap().clone();
        // PutObject is a PUT without `partNumber`; CreateMultipartUpload a POST `?uploads`.
        let creations: Vec<_> = received
            .iter()
            .filter(|(method, uri, _)| {
                (method == http::Method::PUT && !uri.contains("partNumber="))
                    || (method == http::Method::POST && uri.contains("uploads"))
            })
            .collect();
        assert_eq!(creations.len(), 3, "{sse}: {received:?}");
        for (method, uri, headers) in creations {
            let asked = headers
                .get("x-amz-server-side-encryption")
                .map(|v| v.to_str().unwrap().to_string());
            let key = headers
                .get("x-amz-server-side-encryption-aws-kms-key-id")
                .map(|v| v.to_str().unwrap().to_string());
            let expected_sse = (!sse.is_empty()).then(|| sse.to_string());
            let expected_key = (!kms_key.is_empty()).then(|| kms_key.to_string());
            assert_eq!(asked, expected_sse, "{method} {uri}");
            assert_eq!(key, expected_key, "{method} {uri}");
        }
    }
}

/// A KMS key without `aws:kms`, or an encryption S3 does not know, stops the server
/// at start naming the setting.
#[test]
fn an_unknown_encryption_or_a_kms_key_without_kms_is_refused_at_start() {
    for (sse, kms_key, setting) in [
        ("aes256", "", "storage.s3_sse"),
        ("AES256", "alias/ferry", "storage.s3_kms_key_id"),
    ] {
        let mut config = ferry::config::Config::default();
        config.storage.s3_sse = sse.into();
        config.storage.s3_kms_key_id = kms_key.into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains(setting), "{sse} {kms_key}: {err}");
    }
}
