//! The server as grpcurl and probes see it: reflection, health, request ids, metrics,
//! and migrations that can run again.

use ferry::proto::{GetEntityRequest, entity_service_client::EntityServiceClient};
use tokio_stream::StreamExt;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};
use tonic_types::StatusExt;

use crate::on_both_backends;
use crate::support::{Backend, TestApp, TestDb, test_config};

on_both_backends!(
    reflection_lists_the_four_ferry_services,
    a_client_knowing_only_reflection_decodes_error_details,
    health_reports_serving_without_credentials,
    request_id_is_echoed_and_appears_in_error_details,
    metrics_count_calls_by_method_and_code,
    metrics_time_calls_and_job_runs_and_count_rows_bytes_and_pool,
    migrations_run_twice_without_error,
    a_killed_servers_temp_files_are_gone_after_a_restart,
    a_malformed_message_is_an_invalid_argument_with_a_reason,
    an_oversized_message_is_message_too_large_and_the_server_keeps_serving,
    a_long_request_id_is_replaced_and_an_upper_case_organization_id_is_accepted,
    file_paths_that_climb_out_of_the_store_are_refused,
);

async fn file_paths_that_climb_out_of_the_store_are_refused(backend: Backend) {
    let app = TestApp::start(backend).await;
    // A file next to the store that a traversal would reach.
    std::fs::write(app.db.data_dir().join("secret.txt"), "secret").unwrap();
    for path in [
        "/files/../secret.txt",
        "/files/..%2Fsecret.txt",
        "/files/exports/..%2F..%2Fsecret.txt",
        "/files/%2e%2e/secret.txt",
        "/files//etc/passwd",
    ] {
        let output = std::process::Command::new("curl")
            .args(["-s", "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!(
                "http://{}{path}?expires=9999999999&sig=00",
                app.http_addr()
            ))
            .output()
            .unwrap();
        let code = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(code.starts_with('4'), "{path} answered {code} (expected a 4xx)");
    }
    app.stop().await;
}

async fn an_oversized_message_is_message_too_large_and_the_server_keeps_serving(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut client = EntityServiceClient::new(app.channel.clone());
    let huge = ferry::proto::ListEntitiesRequest {
        filter: Some(ferry::proto::EntityFilter {
            tax_ids: vec!["x".repeat(5 << 20)],
            ..Default::default()
        }),
        ..Default::default()
    };
    let status = client.list_entities(app.request(huge)).await.unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::ResourceExhausted,
        "{}",
        status.message()
    );
    assert_eq!(crate::support::reason(&status), "MESSAGE_TOO_LARGE");
    let info = status.get_details_error_info().unwrap();
    assert_eq!(
        info.metadata.get("limit_bytes").map(String::as_str),
        Some("4194304")
    );
    client
        .list_entities(app.request(ferry::proto::ListEntitiesRequest::default()))
        .await
        .unwrap();
    app.stop().await;
}

async fn a_long_request_id_is_replaced_and_an_upper_case_organization_id_is_accepted(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut client = EntityServiceClient::new(app.channel.clone());
    let mut request = crate::support::with_auth(
        ferry::proto::ListEntitiesRequest::default(),
        &app.key,
        &app.org_id.to_uppercase(),
    );
    let long = "r".repeat(129);
    request
        .metadata_mut()
        .insert("x-request-id", long.parse().unwrap());
    let response = client.list_entities(request).await.unwrap();
    let echoed = response.metadata().get("x-request-id").unwrap().to_str().unwrap();
    assert_ne!(echoed, long);
    assert!(uuid::Uuid::parse_str(echoed).is_ok(), "{echoed}");
    app.stop().await;
}

/// Sends bytes as they are, to play a broken client.
#[derive(Default, Clone)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        buf.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

async fn a_malformed_message_is_an_invalid_argument_with_a_reason(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    grpc.ready().await.unwrap();
    // Field 1, length-delimited, 255 bytes announced, none sent.
    let status = grpc
        .unary(
            app.request(vec![0x0a, 0xff, 0x01]),
            http::uri::PathAndQuery::from_static("/ferry.v1.ExportService/GetExport"),
            RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "{}",
        status.message()
    );
    assert_eq!(crate::support::reason(&status), "MALFORMED_MESSAGE");
    app.stop().await;
}

/// The instance folders below `<data_dir>/tmp`.
fn instance_folders(db: &TestDb) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(db.data_dir().join("tmp"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                // Hidden: a folder being claimed (see `ferry::scratch`).
                .filter(|p| {
                    p.is_dir()
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn a_killed_servers_temp_files_are_gone_after_a_restart(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--data-dir")
        .arg(db.data_dir())
        .arg("--database-url")
        .arg(&db.url)
        .args(["--set", "log.level=warn", "serve"])
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut folders = Vec::new();
    for _ in 0..500 {
        folders = instance_folders(&db);
        if !folders.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let [killed] = folders.as_slice() else {
        panic!("the server made {} temp folders", folders.len());
    };
    // What an upload or an export was writing when the process died.
    std::fs::write(killed.join("upload-1.csv"), "tax_id\n1\n").unwrap();
    std::fs::write(killed.join("job-1.part"), "partial").unwrap();
    child.kill().unwrap(); // SIGKILL: no clean-up runs
    child.wait().unwrap();
    assert!(killed.join("job-1.part").exists());

    let mut config = test_config(&db);
    config.server.bootstrap = false;
    let app = ferry::server::App::open(config).await.unwrap();
    let left = instance_folders(&db);
    assert_eq!(
        left,
        vec![app.temp_dir()],
        "only the new instance's folder is left"
    );
    assert!(!killed.exists(), "the killed server's temp files are still there");
}

async fn reflection_lists_the_four_ferry_services(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut client = ServerReflectionClient::new(app.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in [
        "ferry.v1.ExportService",
        "ferry.v1.ImportService",
        "ferry.v1.EntityService",
        "ferry.v1.MappingService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.contains(&service.to_string()),
            "{service} missing from {names:?}"
        );
    }
    app.stop().await;
}

async fn health_reports_serving_without_credentials(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut client = HealthClient::new(app.channel.clone());
    for service in ["", "ferry.v1.EntityService", "ferry.v1.ExportService"] {
        let status = client
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service `{service}`");
    }
    app.stop().await;
}

async fn request_id_is_echoed_and_appears_in_error_details(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut client = EntityServiceClient::new(app.channel.clone());
    let mut request = app.request(GetEntityRequest {
        id: "no-such-entity".into(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", "trace-abc-123".parse().unwrap());
    let status = client.get_entity(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(status.metadata().get("x-request-id").unwrap(), "trace-abc-123");
    assert_eq!(
        status.get_details_request_info().unwrap().request_id,
        "trace-abc-123"
    );
    assert_eq!(status.get_details_error_info().unwrap().domain, "ferry");

    // Without one, the server makes one up and still reports it both ways.
    let status = client
        .get_entity(app.request(GetEntityRequest { id: "nope".into() }))
        .await
        .unwrap_err();
    let generated = status
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(!generated.is_empty());
    assert_eq!(status.get_details_request_info().unwrap().request_id, generated);

    // Refusals by the auth layer carry it too.
    let mut request = tonic::Request::new(GetEntityRequest { id: "x".into() });
    request
        .metadata_mut()
        .insert("x-request-id", "trace-unauth".parse().unwrap());
    let status = client.get_entity(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        status.get_details_request_info().unwrap().request_id,
        "trace-unauth"
    );
    app.stop().await;
}

async fn metrics_count_calls_by_method_and_code(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut client = EntityServiceClient::new(app.channel.clone());
    let _ = client
        .get_entity(app.request(GetEntityRequest { id: "missing".into() }))
        .await;
    let http = app.running.as_ref().unwrap().http_addr;
    let body = http_get(http, "/metrics").await;
    assert!(
        body.contains(
            r#"ferry_grpc_requests_total{method="/ferry.v1.EntityService/GetEntity",code="NotFound"} 1"#
        ),
        "{body}"
    );
    app.stop().await;
}

async fn metrics_time_calls_and_job_runs_and_count_rows_bytes_and_pool(backend: Backend) {
    use ferry::proto::upload_import_request::Payload;
    use ferry::proto::{ImportOptions, UploadImportRequest, import_service_client::ImportServiceClient};
    let app = TestApp::start(backend).await;
    let csv = b"tax_id,name,type,country_code\n20123456786,Ana,person,AR\n30712345671,ACME SA,company,AR\n";
    let messages = vec![
        UploadImportRequest {
            payload: Some(Payload::Options(ImportOptions {
                file_name: "two.csv".into(),
                ..Default::default()
            })),
        },
        UploadImportRequest {
            payload: Some(Payload::Chunk(csv.to_vec())),
        },
    ];
    ImportServiceClient::new(app.channel.clone())
        .upload_import(app.request(futures::stream::iter(messages)))
        .await
        .unwrap();
    app.run_jobs_until_idle().await;

    let http = app.running.as_ref().unwrap().http_addr;
    let body = http_get(http, "/metrics").await;
    for expected in [
        r#"ferry_grpc_request_duration_seconds_count{method="/ferry.v1.ImportService/UploadImport"} 1"#
            .to_string(),
        r#"ferry_job_run_duration_seconds_count{kind="import",state="completed"} 1"#.to_string(),
        r#"ferry_job_rows_total{kind="import"} 2"#.to_string(),
        format!("ferry_import_uploaded_bytes_total {}", csv.len()),
        "ferry_db_pool_waiters 0".to_string(),
        "# TYPE ferry_db_pool_connections_in_use gauge".to_string(),
        "# TYPE ferry_db_pool_connections_idle gauge".to_string(),
    ] {
        assert!(body.contains(&expected), "no `{expected}` in:\n{body}");
    }
    app.stop().await;
}

async fn migrations_run_twice_without_error(backend: Backend) {
    let db = TestDb::new(backend).await;
    let first = ferry::server::App::open(test_config(&db)).await.unwrap();
    let again = ferry::db::migrate::run(&first.db).await.unwrap();
    assert!(again.is_empty(), "second run applied {again:?}");
    ferry::server::App::open(test_config(&db)).await.unwrap();
}

/// Bulk imports rely on 16 KiB pages (SQLite inserts entities 1.6–2× faster than
/// with its 4 KiB default); the size only sticks if it is set before the file gets WAL mode.
#[tokio::test]
async fn new_sqlite_database_has_16_kib_pages_in_wal_mode() {
    let db = TestDb::new(Backend::Sqlite).await;
    ferry::server::App::open(test_config(&db)).await.unwrap();
    let conn = rusqlite::Connection::open(&db.url).unwrap();
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!((page_size, mode.as_str()), (16384, "wal"));
}

/// A plain HTTP/1.1 GET, enough for `/metrics`.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// Asks reflection one question and returns the answer.
async fn reflect(app: &TestApp, request: MessageRequest) -> MessageResponse {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    ServerReflectionClient::new(app.channel.clone())
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
}

/// Every file reflection gives for `symbol`, with the files they import.
async fn files_for(app: &TestApp, symbol: &str) -> Vec<prost_types::FileDescriptorProto> {
    use prost::Message;
    let mut files: Vec<prost_types::FileDescriptorProto> = Vec::new();
    let mut wanted = vec![MessageRequest::FileContainingSymbol(symbol.to_string())];
    while let Some(request) = wanted.pop() {
        let MessageResponse::FileDescriptorResponse(answer) = reflect(app, request).await else {
            panic!("reflection does not describe {symbol}");
        };
        for bytes in answer.file_descriptor_proto {
            let file = prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap();
            if files.iter().any(|f| f.name == file.name) {
                continue;
            }
            for dependency in &file.dependency {
                if !files
                    .iter()
                    .any(|f| f.name.as_deref() == Some(dependency.as_str()))
                {
                    wanted.push(MessageRequest::FileByFilename(dependency.clone()));
                }
            }
            files.push(file);
        }
    }
    files
}

/// What grpcurl does with an error: the details of a failed call decoded with
/// nothing but the descriptors reflection serves.
async fn a_client_knowing_only_reflection_decodes_error_details(backend: Backend) {
    use prost_reflect::{DescriptorPool, DynamicMessage, Value};
    let app = TestApp::start(backend).await;
    let status = ferry::proto::export_service_client::ExportServiceClient::new(app.channel.clone())
        .create_export(app.request(ferry::proto::CreateExportRequest {
            columns: vec!["password".into()],
            ..Default::default()
        }))
        .await
        .unwrap_err();
    let mut files = files_for(&app, "google.rpc.Status").await;
    for symbol in [
        "google.rpc.ErrorInfo",
        "google.rpc.BadRequest",
        "google.rpc.RetryInfo",
    ] {
        for file in files_for(&app, symbol).await {
            if !files.iter().any(|f| f.name == file.name) {
                files.push(file);
            }
        }
    }
    let pool = DescriptorPool::from_file_descriptor_set(prost_types::FileDescriptorSet { file: files })
        .expect("reflection's files make a complete pool");
    assert!(pool.get_message_by_name("google.rpc.RequestInfo").is_some());
    let status_type = pool.get_message_by_name("google.rpc.Status").unwrap();
    let decoded = DynamicMessage::decode(status_type, status.details()).unwrap();
    let Some(Value::List(details)) = decoded.get_field_by_name("details").map(|v| v.into_owned()) else {
        panic!("no details in {decoded:?}");
    };
    let mut seen = std::collections::BTreeMap::new();
    for detail in details {
        let Value::Message(any) = detail else {
            panic!("{detail:?}")
        };
        let type_url = any
            .get_field_by_name("type_url")
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        let value = any
            .get_field_by_name("value")
            .unwrap()
            .as_bytes()
            .unwrap()
            .clone();
        let name = type_url.rsplit('/').next().unwrap().to_string();
        let message_type = pool
            .get_message_by_name(&name)
            .unwrap_or_else(|| panic!("reflection does not describe {name}"));
        seen.insert(name, DynamicMessage::decode(message_type, value).unwrap());
    }
    let info = &seen["google.rpc.ErrorInfo"];
    assert_eq!(
        info.get_field_by_name("reason").unwrap().as_str(),
        Some("INVALID_ARGUMENT")
    );
    let bad = format!("{:?}", seen["google.rpc.BadRequest"]);
    assert!(bad.contains("columns[0]"), "{bad}");
    assert!(seen.contains_key("google.rpc.RequestInfo"));
    app.stop().await;
}

/// The README's grpcurl upload, verbatim: its shell pipeline (taken from the README
/// at test time) turns a 50 MB file into grpcurl's JSON messages; each message is
/// read the way grpcurl reads it (proto3 JSON against the served descriptors) and
/// streamed. grpcurl itself cannot be installed here (no route to GitHub), so the
/// JSON-to-protobuf step is prost-reflect's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_grpcurl_upload_pipeline_carries_a_50_mb_file() {
    use ferry::proto::{UploadImportRequest, import_service_client::ImportServiceClient};
    use prost::Message;
    use prost_reflect::{DescriptorPool, DynamicMessage};

    let app = TestApp::start(Backend::Sqlite).await;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let lines: Vec<&str> = readme.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with(r#"( echo '{"options": {"country": "AR", "file_name": "clients.csv""#))
        .expect("the README's upload pipeline");
    let pipeline = format!(
        "{}\n{}",
        lines[start],
        lines[start + 1].trim_end().trim_end_matches('|')
    );

    // 50 MB in 10,000 rows (a long attribute each), under the plan's row limit.
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("tax_id,name,type,country_code,attributes\n");
    let blob = "x".repeat(5_000);
    let mut n = 0u64;
    while csv.len() < 50 * 1024 * 1024 {
        csv.push_str(&format!(
            "{},Person {n},person,AR,\"{{\"\"blob\"\":\"\"{blob}\"\"}}\"\n",
            20_000_000_000 + n
        ));
        n += 1;
    }
    std::fs::write(dir.path().join("clients.csv"), &csv).unwrap();
    let output = tokio::process::Command::new("bash")
        .args(["-c", &pipeline])
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let pool = DescriptorPool::decode(ferry::proto::FILE_DESCRIPTOR_SET).unwrap();
    let descriptor = pool.get_message_by_name("ferry.v1.UploadImportRequest").unwrap();
    let messages: Vec<UploadImportRequest> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let mut json = serde_json::Deserializer::from_str(line);
            let dynamic = DynamicMessage::deserialize(descriptor.clone(), &mut json).unwrap();
            UploadImportRequest::decode(dynamic.encode_to_vec().as_slice()).unwrap()
        })
        .collect();
    assert!(messages.len() >= 17, "50 MB in 3 MiB chunks: {}", messages.len());
    let import = ImportServiceClient::new(app.channel.clone())
        .upload_import(app.request(futures::stream::iter(messages)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(import.total_items, n as i64);
    assert_eq!(import.options.unwrap().size_bytes, csv.len() as i64);
    app.stop().await;
}
