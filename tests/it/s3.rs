//! Exports stored in S3: a real S3 protocol server (s3s + s3s-fs, which verifies
//! SigV4) on loopback, presigned GET URLs fetched over plain HTTP.

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
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(BUCKET)).unwrap();
    let fs = s3s_fs::FileSystem::new(dir.path()).unwrap();
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service.clone();
            tokio::spawn(async move {
                let builder =
                    hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                let _ = builder
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), dir)
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
