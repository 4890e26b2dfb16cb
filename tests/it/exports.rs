//! ExportService end to end: every format read back by an independent reader, the
//! request options, the job life cycle, storage links, and organization isolation.

use std::time::Duration;

use ferry::db::entities::{self, EntityRow};
use ferry::proto::{
    AvroCodec, CancelExportRequest, Compression, CreateExportRequest, DeleteExportRequest, EntityFilter,
    Export, ExportDownload, ExportFormat, GetExportDownloadRequest, GetExportRequest, JobState,
    ListExportsRequest, WatchExportRequest, export_service_client::ExportServiceClient,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_stream::StreamExt;
use tonic::Code;

use crate::on_both_backends;
use crate::support::{Backend, TestApp, Workers, fetch, reason, violated_fields};

on_both_backends!(
    every_format_reads_back_cell_by_cell_with_an_independent_reader,
    filters_and_columns_choose_the_rows_and_cells,
    every_filter_field_selects_the_exported_rows,
    expand_array_gives_one_row_per_item,
    gzip_bom_and_formula_neutralisation_apply_to_csv,
    watchers_see_queued_running_completed_with_growing_progress,
    a_running_export_stops_when_cancelled_and_leaves_no_file,
    export_of_deleted_job_is_not_found,
    download_of_an_unfinished_export_is_not_ready,
    an_expired_export_has_no_file_and_no_download,
    identical_active_exports_conflict_and_the_quota_holds,
    the_same_request_id_returns_the_same_export,
    another_organizations_export_is_not_found,
    a_tampered_or_expired_local_link_is_forbidden,
    listing_pages_filters_and_searches_exports,
    bad_export_requests_name_the_field,
);

fn client(app: &TestApp) -> ExportServiceClient<tonic::transport::Channel> {
    ExportServiceClient::new(app.channel.clone())
}

fn entity(org: &str, n: i64, name: &str, attributes: Value, data: Value) -> EntityRow {
    EntityRow {
        id: format!("0190f000-0000-7000-8000-{n:012}"),
        organization_id: org.to_string(),
        entity_type: if n == 2 { "company" } else { "person" }.into(),
        tax_id: format!("TAX-{n}"),
        country: ["AR", "BR", "CL"][(n as usize - 1) % 3].into(),
        name: name.to_string(),
        gender: None,
        external_id: None,
        email: (n == 3).then(|| "c@example.com".to_string()),
        phone: None,
        registration_date: match n {
            1 => Some("2020-05-17".into()),
            2 => Some("2019-01-02T10:00:00Z".into()),
            _ => None,
        },
        status: "active".into(),
        is_client: n == 1,
        nationality: None,
        risk_matrix_id: None,
        attributes: attributes.to_string(),
        entity_data: data.to_string(),
        enrichment_plan: None,
        skip_rules_execution: false,
        created_at: 1_700_000_000_000 + n * 1_123,
        updated_at: 1_700_000_000_000 + n * 1_123,
    }
}

/// Three entities with the awkward cases: quotes, commas, newlines, unicode, a
/// formula, empty values, nested attributes, arrays (full, empty, absent).
async fn seed(app: &TestApp) -> Vec<EntityRow> {
    let rows = vec![
        entity(
            &app.org_id,
            1,
            "Zoë \"Zo\" Smith, Jr.\nsecond line",
            json!({"segment_tag": "retail", "tags": ["vip", "early"], "score": 42, "nested": {"k": "v"}}),
            json!({"person": {"birth_city": "Córdoba"}}),
        ),
        entity(
            &app.org_id,
            2,
            "=HYPERLINK(\"http://evil\")",
            json!({"tags": []}),
            json!({"company": {"legal": "ÄÖÜ 株式会社"}}),
        ),
        entity(&app.org_id, 3, "名前 テスト", json!({}), json!({})),
    ];
    entities::insert(&mut app.db().conn().await.unwrap(), &rows)
        .await
        .unwrap();
    rows
}

/// Creates an export and follows it to its end.
async fn run_export(app: &TestApp, request: CreateExportRequest) -> Export {
    let created = client(app)
        .create_export(app.request(request))
        .await
        .unwrap()
        .into_inner();
    wait_for_end(app, &created.id).await
}

async fn wait_for_end(app: &TestApp, id: &str) -> Export {
    let mut stream = client(app)
        .watch_export(app.request(WatchExportRequest { id: id.into() }))
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    let deadline = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(item) = stream.next().await {
            last = Some(item.unwrap());
        }
    });
    deadline.await.expect("export did not finish in 30 s");
    last.expect("watch sent nothing")
}

async fn download(app: &TestApp, id: &str) -> (ExportDownload, Vec<u8>) {
    let link = client(app)
        .get_export_download(app.request(GetExportDownloadRequest { id: id.into() }))
        .await
        .unwrap()
        .into_inner();
    let (status, bytes) = fetch(&link.url).await;
    assert_eq!(status, 200, "download of {}", link.url);
    assert_eq!(bytes.len() as i64, link.size_bytes);
    assert_eq!(hex::encode(Sha256::digest(&bytes)), link.sha256);
    (link, bytes)
}

/// What the independent reader found in a file.
#[derive(serde::Deserialize, Debug)]
struct ReadBack {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
    types: std::collections::HashMap<String, String>,
    sheets: Vec<String>,
}

fn read_back(format: &str, bytes: &[u8]) -> ReadBack {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("export.{format}"));
    std::fs::write(&path, bytes).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/readers/read_export.py");
    let output = std::process::Command::new("python3")
        .arg(script)
        .arg(format)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "reader failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A cell as the client meant it, before a format's representation.
#[derive(Clone, Debug)]
enum Logical {
    Null,
    Str(&'static str),
    Bool(bool),
    Stamp(&'static str),
    Day(&'static str),
    Data(Value),
}

/// How each format represents a logical value.
fn expected(format: &str, cell: &Logical) -> Value {
    match (format, cell) {
        ("csv", Logical::Null) => json!(""),
        (_, Logical::Null) => Value::Null,
        (_, Logical::Str(s) | Logical::Stamp(s) | Logical::Day(s)) => json!(s),
        ("csv", Logical::Bool(b)) => json!(b.to_string()),
        (_, Logical::Bool(b)) => json!(b),
        ("json" | "ndjson", Logical::Data(v)) => v.clone(),
        ("xlsx", Logical::Data(v @ (Value::Number(_) | Value::Bool(_)))) => v.clone(),
        (_, Logical::Data(v)) => json!(v.to_string()),
    }
}

const COLUMNS: [&str; 13] = [
    "id",
    "type",
    "tax_id",
    "country",
    "name",
    "email",
    "is_client",
    "registration_date",
    "created_at",
    "attributes",
    "attributes.tags",
    "attributes.score",
    "entity_data.person.birth_city",
];

fn expected_rows() -> Vec<Vec<Logical>> {
    use Logical::*;
    vec![
        vec![
            Str("0190f000-0000-7000-8000-000000000001"),
            Str("person"),
            Str("TAX-1"),
            Str("AR"),
            Str("Zoë \"Zo\" Smith, Jr.\nsecond line"),
            Null,
            Bool(true),
            Day("2020-05-17"),
            Stamp("2023-11-14T22:13:21.123Z"),
            Data(
                json!({"segment_tag": "retail", "tags": ["vip", "early"], "score": 42, "nested": {"k": "v"}}),
            ),
            Data(json!(["vip", "early"])),
            Data(json!(42)),
            Str("Córdoba"),
        ],
        vec![
            Str("0190f000-0000-7000-8000-000000000002"),
            Str("company"),
            Str("TAX-2"),
            Str("BR"),
            Str("=HYPERLINK(\"http://evil\")"),
            Null,
            Bool(false),
            Day("2019-01-02"),
            Stamp("2023-11-14T22:13:22.246Z"),
            Data(json!({"tags": []})),
            Data(json!([])),
            Null,
            Null,
        ],
        vec![
            Str("0190f000-0000-7000-8000-000000000003"),
            Str("person"),
            Str("TAX-3"),
            Str("CL"),
            Str("名前 テスト"),
            Str("c@example.com"),
            Bool(false),
            Null,
            Stamp("2023-11-14T22:13:23.369Z"),
            Data(json!({})),
            Null,
            Null,
            Null,
        ],
    ]
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

async fn every_format_reads_back_cell_by_cell_with_an_independent_reader(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    seed(&app).await;
    let formats = [
        (ExportFormat::Csv, "csv", AvroCodec::Unspecified),
        (ExportFormat::Json, "json", AvroCodec::Unspecified),
        (ExportFormat::Ndjson, "ndjson", AvroCodec::Unspecified),
        (ExportFormat::Xlsx, "xlsx", AvroCodec::Unspecified),
        (ExportFormat::Parquet, "parquet", AvroCodec::Unspecified),
        (ExportFormat::Avro, "avro", AvroCodec::Unspecified),
        (ExportFormat::Avro, "avro", AvroCodec::Snappy),
        (ExportFormat::Avro, "avro", AvroCodec::Zstd),
        (ExportFormat::Avro, "avro", AvroCodec::Null),
    ];
    for (format, name, codec) in formats {
        let request = CreateExportRequest {
            columns: COLUMNS.iter().map(|c| c.to_string()).collect(),
            format: format as i32,
            avro_codec: codec as i32,
            // Compared raw here; neutralisation has its own test.
            neutralize_formulas: Some(false),
            ..Default::default()
        };
        let export = run_export(&app, request).await;
        assert_eq!(
            export.state,
            JobState::Completed as i32,
            "{name} {codec:?}: {:?}",
            export.error
        );
        if name == "avro" {
            // The codec in effect is echoed: deflate when none was asked for.
            let in_effect = match codec {
                AvroCodec::Unspecified => AvroCodec::Deflate,
                other => other,
            };
            assert_eq!(export.avro_codec, in_effect as i32);
        }
        assert_eq!(export.row_count, 3);
        let (link, bytes) = download(&app, &export.id).await;
        assert!(
            link.file_name.ends_with(&format!(".{name}")),
            "{}",
            link.file_name
        );
        let file = read_back(name, &bytes);
        assert_eq!(file.columns, COLUMNS, "{name} header");
        assert_eq!(file.rows.len(), 3, "{name} rows");
        for (r, (got, want)) in file.rows.iter().zip(expected_rows()).enumerate() {
            for (c, (g, w)) in got.iter().zip(&want).enumerate() {
                let w = expected(name, w);
                assert!(
                    same(g, &w),
                    "{name} {codec:?} row {r} column {}: got {g}, want {w}",
                    COLUMNS[c]
                );
            }
        }
        if name == "parquet" {
            assert_eq!(file.types["created_at"], "timestamp[ms, tz=UTC]");
            assert_eq!(file.types["registration_date"], "date32[day]");
            assert_eq!(file.types["is_client"], "bool");
        }
        if name == "avro" {
            assert_eq!(file.types["id"], "uuid");
            assert_eq!(file.types["created_at"], "timestamp-millis");
            assert_eq!(file.types["registration_date"], "date");
        }
    }
    app.stop().await;
}

async fn csv_rows(app: &TestApp, request: CreateExportRequest) -> (Vec<String>, Vec<Vec<Value>>) {
    let export = run_export(app, request).await;
    assert_eq!(export.state, JobState::Completed as i32, "{:?}", export.error);
    let (_, bytes) = download(app, &export.id).await;
    let file = read_back("csv", &bytes);
    (file.columns, file.rows)
}

async fn filters_and_columns_choose_the_rows_and_cells(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    seed(&app).await;
    let request = CreateExportRequest {
        filter: Some(EntityFilter {
            countries: vec!["br".into(), "cl".into()],
            ..Default::default()
        }),
        columns: vec!["tax_id".into(), "country".into()],
        ..Default::default()
    };
    let (columns, rows) = csv_rows(&app, request).await;
    assert_eq!(columns, ["tax_id", "country"]);
    assert_eq!(
        rows,
        vec![
            vec![json!("TAX-2"), json!("BR")],
            vec![json!("TAX-3"), json!("CL")]
        ]
    );
    // No columns: every field, in the documented order.
    let (columns, rows) = csv_rows(
        &app,
        CreateExportRequest {
            request_id: "all".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(columns.len(), 20);
    assert_eq!(columns[0], "id");
    assert_eq!(rows.len(), 3);
    app.stop().await;
}

/// Each filter field on its own and combined. On PostgreSQL a CSV export reads
/// through its own connection with the filter rendered from diesel's query, so
/// this is what proves the rendered binds (arrays, bigints, the attribute path).
async fn every_filter_field_selects_the_exported_rows(backend: Backend) {
    use ferry::proto::{AttributeEquals, EntityStatus, EntityType, TimeRange};
    let app = TestApp::start_working(backend).await;
    let seeded = seed(&app).await;
    let ts = |ms: i64| prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    };
    let attribute = |path: &str, value: &str| AttributeEquals {
        path: path.into(),
        value: value.into(),
    };
    let cases: Vec<(EntityFilter, Vec<&str>)> = vec![
        (
            EntityFilter {
                types: vec![EntityType::Company as i32],
                ..Default::default()
            },
            vec!["TAX-2"],
        ),
        (
            EntityFilter {
                statuses: vec![EntityStatus::Active as i32, EntityStatus::Blocked as i32],
                ..Default::default()
            },
            vec!["TAX-1", "TAX-2", "TAX-3"],
        ),
        (
            EntityFilter {
                created: Some(TimeRange {
                    start: Some(ts(seeded[1].created_at)),
                    end: Some(ts(seeded[2].created_at)),
                }),
                ..Default::default()
            },
            vec!["TAX-2", "TAX-3"],
        ),
        (
            EntityFilter {
                updated: Some(TimeRange {
                    start: None,
                    end: Some(ts(seeded[0].updated_at)),
                }),
                ..Default::default()
            },
            vec!["TAX-1"],
        ),
        (
            EntityFilter {
                tax_ids: vec!["TAX-1".into(), "TAX-3".into(), "nope".into()],
                ..Default::default()
            },
            vec!["TAX-1", "TAX-3"],
        ),
        (
            EntityFilter {
                external_ids: vec!["x-1".into()],
                ..Default::default()
            },
            vec![],
        ),
        (
            EntityFilter {
                is_client: Some(true),
                ..Default::default()
            },
            vec!["TAX-1"],
        ),
        (
            EntityFilter {
                attributes: vec![attribute("segment_tag", "retail"), attribute("nested.k", "v")],
                ..Default::default()
            },
            vec!["TAX-1"],
        ),
        (
            EntityFilter {
                attributes: vec![attribute("score", "42")],
                ..Default::default()
            },
            vec!["TAX-1"],
        ),
        (
            EntityFilter {
                search: "ZO".into(),
                ..Default::default()
            },
            vec!["TAX-1"],
        ),
        (
            EntityFilter {
                search: "100%".into(),
                ..Default::default()
            },
            vec![],
        ),
        (
            EntityFilter {
                countries: vec!["ar".into(), "cl".into()],
                types: vec![EntityType::Person as i32],
                is_client: Some(false),
                ..Default::default()
            },
            vec!["TAX-3"],
        ),
    ];
    for (n, (filter, expected)) in cases.into_iter().enumerate() {
        let (_, rows) = csv_rows(
            &app,
            CreateExportRequest {
                filter: Some(filter.clone()),
                columns: vec!["tax_id".into()],
                request_id: format!("filter-{n}"),
                ..Default::default()
            },
        )
        .await;
        let got: Vec<Value> = rows.into_iter().map(|row| row[0].clone()).collect();
        let expected: Vec<Value> = expected.into_iter().map(Value::from).collect();
        assert_eq!(got, expected, "{filter:?}");
    }
    app.stop().await;
}

async fn expand_array_gives_one_row_per_item(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    seed(&app).await;
    let request = CreateExportRequest {
        columns: vec!["tax_id".into(), "attributes.tags".into()],
        expand_array: "attributes.tags".into(),
        ..Default::default()
    };
    let (columns, rows) = csv_rows(&app, request).await;
    // The expanded column's header says so; an import refuses such a file.
    assert_eq!(columns, ["tax_id", "attributes.tags[]"]);
    let want = vec![
        vec![json!("TAX-1"), json!("vip")],
        vec![json!("TAX-1"), json!("early")],
        vec![json!("TAX-2"), json!("")],
        vec![json!("TAX-3"), json!("")],
    ];
    assert_eq!(rows, want);
    app.stop().await;
}

async fn gzip_bom_and_formula_neutralisation_apply_to_csv(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    seed(&app).await;
    let request = CreateExportRequest {
        columns: vec!["name".into()],
        compression: Compression::Gzip as i32,
        csv_bom: true,
        ..Default::default()
    };
    let export = run_export(&app, request).await;
    let (link, bytes) = download(&app, &export.id).await;
    assert!(link.file_name.ends_with(".csv.gz"));
    assert_eq!(link.content_type, "application/gzip");
    assert_eq!(&bytes[..2], b"\x1f\x8b", "gzip magic");
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut plain).unwrap();
    assert_eq!(&plain[..3], b"\xEF\xBB\xBF", "byte order mark");
    let rows = read_back("csv", &bytes).rows;
    // Neutralised by default: a spreadsheet shows the text instead of running it.
    assert_eq!(rows[1], vec![json!("'=HYPERLINK(\"http://evil\")")]);
    app.stop().await;
}

async fn watchers_see_queued_running_completed_with_growing_progress(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        |c| {
            c.exports.batch_rows = 1;
            c.exports.batch_pause_millis = 150;
        },
        Workers::Ferry,
    )
    .await;
    seed(&app).await;
    let created = client(&app)
        .create_export(app.request(CreateExportRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let mut stream = client(&app)
        .watch_export(app.request(WatchExportRequest {
            id: created.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .unwrap()
    {
        let export = item.unwrap();
        seen.push((export.state, export.progress.unwrap().rows_done));
    }
    let states: Vec<i32> = seen.iter().map(|s| s.0).collect();
    assert!(states.contains(&(JobState::Running as i32)), "{seen:?}");
    assert_eq!(*states.last().unwrap(), JobState::Completed as i32);
    let progress: Vec<i64> = seen.iter().map(|s| s.1).collect();
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "progress went back: {progress:?}"
    );
    assert_eq!(*progress.last().unwrap(), 3);
    // A watcher that joins late gets the current (final) state first, then the end.
    let late: Vec<_> = client(&app)
        .watch_export(app.request(WatchExportRequest {
            id: created.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].as_ref().unwrap().state, JobState::Completed as i32);
    app.stop().await;
}

async fn a_running_export_stops_when_cancelled_and_leaves_no_file(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        |c| {
            c.exports.batch_rows = 1;
            c.exports.batch_pause_millis = 2_000;
        },
        Workers::Ferry,
    )
    .await;
    seed(&app).await;
    let created = client(&app)
        .create_export(app.request(CreateExportRequest::default()))
        .await
        .unwrap()
        .into_inner();
    // Wait until it runs.
    for _ in 0..200 {
        let state = client(&app)
            .get_export(app.request(GetExportRequest {
                id: created.id.clone(),
            }))
            .await
            .unwrap();
        if state.into_inner().state == JobState::Running as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let asked = std::time::Instant::now();
    client(&app)
        .cancel_export(app.request(CancelExportRequest {
            id: created.id.clone(),
        }))
        .await
        .unwrap();
    let end = wait_for_end(&app, &created.id).await;
    assert_eq!(end.state, JobState::Cancelled as i32);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "stopped after {:?}",
        asked.elapsed()
    );
    let leftovers: Vec<_> = walk(&app.db.data_dir())
        .into_iter()
        .filter(|p| p.contains("entities-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let temp: Vec<_> = walk(&app.app.temp_dir())
        .into_iter()
        .filter(|p| !p.ends_with(".lock"))
        .collect();
    assert!(temp.is_empty(), "{temp:?}");
    // Cancelling again: it already ended.
    let status = client(&app)
        .cancel_export(app.request(CancelExportRequest {
            id: created.id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    app.stop().await;
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path.display().to_string());
            }
        }
    }
    out
}

async fn export_of_deleted_job_is_not_found(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    seed(&app).await;
    let export = run_export(&app, CreateExportRequest::default()).await;
    let (link, _) = download(&app, &export.id).await;
    client(&app)
        .delete_export(app.request(DeleteExportRequest {
            id: export.id.clone(),
        }))
        .await
        .unwrap();
    for status in [
        client(&app)
            .get_export(app.request(GetExportRequest {
                id: export.id.clone(),
            }))
            .await
            .unwrap_err(),
        client(&app)
            .get_export_download(app.request(GetExportDownloadRequest {
                id: export.id.clone(),
            }))
            .await
            .unwrap_err(),
        client(&app)
            .delete_export(app.request(DeleteExportRequest {
                id: export.id.clone(),
            }))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::NotFound);
    }
    assert_ne!(fetch(&link.url).await.0, 200, "the file is gone from storage");
    app.stop().await;
}

async fn download_of_an_unfinished_export_is_not_ready(backend: Backend) {
    let app = TestApp::start(backend).await;
    let created = client(&app)
        .create_export(app.request(CreateExportRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.state, JobState::Queued as i32);
    let status = client(&app)
        .get_export_download(app.request(GetExportDownloadRequest {
            id: created.id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "EXPORT_NOT_READY");
    app.stop().await;
}

async fn an_expired_export_has_no_file_and_no_download(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    seed(&app).await;
    let export = run_export(&app, CreateExportRequest::default()).await;
    let (link, _) = download(&app, &export.id).await;
    // Retention runs out.
    {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        use ferry::db::schema::jobs;
        let mut conn = app.db().conn().await.unwrap();
        ferry::with_conn!(&mut conn, |c| diesel::update(jobs::table.find(&export.id))
            .set(jobs::expires_at.eq(Some(1_i64)))
            .execute(c)
            .await
            .unwrap());
    }
    let expired = ferry::export::janitor::expire_once(&app.app.queue, &app.app.storage)
        .await
        .unwrap();
    assert_eq!(expired, 1);
    let now = client(&app)
        .get_export(app.request(GetExportRequest {
            id: export.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.state, JobState::Expired as i32);
    let status = client(&app)
        .get_export_download(app.request(GetExportDownloadRequest {
            id: export.id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "EXPORT_EXPIRED");
    assert_ne!(fetch(&link.url).await.0, 200);
    app.stop().await;
}

async fn identical_active_exports_conflict_and_the_quota_holds(backend: Backend) {
    let app = TestApp::start(backend).await;
    let request = |format: ExportFormat| CreateExportRequest {
        format: format as i32,
        ..Default::default()
    };
    let first = client(&app)
        .create_export(app.request(request(ExportFormat::Csv)))
        .await
        .unwrap()
        .into_inner();
    let status = client(&app)
        .create_export(app.request(request(ExportFormat::Csv)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(reason(&status), "EXPORT_IN_PROGRESS");
    use tonic_types::StatusExt;
    assert_eq!(
        status.get_details_error_info().unwrap().metadata["job_id"],
        first.id
    );
    client(&app)
        .create_export(app.request(request(ExportFormat::Json)))
        .await
        .unwrap();
    client(&app)
        .create_export(app.request(request(ExportFormat::Ndjson)))
        .await
        .unwrap();
    let status = client(&app)
        .create_export(app.request(request(ExportFormat::Parquet)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    // Cancelling one frees a slot.
    client(&app)
        .cancel_export(app.request(CancelExportRequest { id: first.id }))
        .await
        .unwrap();
    client(&app)
        .create_export(app.request(request(ExportFormat::Parquet)))
        .await
        .unwrap();
    app.stop().await;
}

async fn the_same_request_id_returns_the_same_export(backend: Backend) {
    let app = TestApp::start(backend).await;
    let request = CreateExportRequest {
        request_id: "nightly-2026-11-23".into(),
        ..Default::default()
    };
    let first = client(&app)
        .create_export(app.request(request.clone()))
        .await
        .unwrap()
        .into_inner();
    let again = client(&app)
        .create_export(app.request(request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.id, again.id);
    assert_eq!(again.request_id, "nightly-2026-11-23");
    app.stop().await;
}

async fn another_organizations_export_is_not_found(backend: Backend) {
    let app = TestApp::start(backend).await;
    let created = client(&app)
        .create_export(app.request(CreateExportRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let (other_org, other_key) = app.other_org().await;
    let as_other =
        |id: &str| crate::support::with_auth(GetExportRequest { id: id.into() }, &other_key, &other_org);
    let status = client(&app).get_export(as_other(&created.id)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let cancel = crate::support::with_auth(
        CancelExportRequest {
            id: created.id.clone(),
        },
        &other_key,
        &other_org,
    );
    assert_eq!(
        client(&app).cancel_export(cancel).await.unwrap_err().code(),
        Code::NotFound
    );
    let list = crate::support::with_auth(ListExportsRequest::default(), &other_key, &other_org);
    assert_eq!(
        client(&app)
            .list_exports(list)
            .await
            .unwrap()
            .into_inner()
            .total_size,
        0
    );
    app.stop().await;
}

async fn a_tampered_or_expired_local_link_is_forbidden(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    seed(&app).await;
    let export = run_export(&app, CreateExportRequest::default()).await;
    let (link, _) = download(&app, &export.id).await;
    let tampered = link.url.replace("sig=", "sig=00");
    assert_eq!(fetch(&tampered).await.0, 403);
    let renamed = link.url.replace("name=entities", "name=other");
    assert_eq!(fetch(&renamed).await.0, 403);
    // A correctly signed link whose time is up.
    let ferry::storage::Storage::Local(store) = &app.app.storage else {
        panic!("local store expected")
    };
    let key = link
        .url
        .split("/files/")
        .nth(1)
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let store = store.clone();
    store.set_base_url(&format!("http://{}", app.http_addr()));
    let download = ferry::storage::Download {
        file_name: "x.csv",
        content_type: "text/csv",
        ttl: Duration::ZERO,
    };
    let url = store.download_url(&key, &download);
    let expires: i64 = url
        .split("expires=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(
        ((expires + 1) * 1000 - ferry::db::now_ms()).max(0) as u64 + 50,
    ))
    .await;
    assert_eq!(fetch(&url).await.0, 403);
    app.stop().await;
}

async fn listing_pages_filters_and_searches_exports(backend: Backend) {
    let app = TestApp::start_with(backend, |c| c.exports.max_active_per_org = 10, Workers::None).await;
    let mut ids = Vec::new();
    for format in [
        ExportFormat::Csv,
        ExportFormat::Json,
        ExportFormat::Ndjson,
        ExportFormat::Avro,
    ] {
        let request = CreateExportRequest {
            format: format as i32,
            ..Default::default()
        };
        ids.push(
            client(&app)
                .create_export(app.request(request))
                .await
                .unwrap()
                .into_inner()
                .id,
        );
    }
    client(&app)
        .cancel_export(app.request(CancelExportRequest { id: ids[0].clone() }))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let request = ListExportsRequest {
            page_size: 3,
            page_token: token.clone(),
            ..Default::default()
        };
        let page = client(&app)
            .list_exports(app.request(request))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.total_size, 4);
        seen.extend(page.exports.into_iter().map(|e| e.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    let request = ListExportsRequest {
        states: vec![JobState::Cancelled as i32],
        ..Default::default()
    };
    let cancelled = client(&app)
        .list_exports(app.request(request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        cancelled.exports.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        vec![ids[0].clone()]
    );
    let request = ListExportsRequest {
        search: ".avro".into(),
        ..Default::default()
    };
    let found = client(&app)
        .list_exports(app.request(request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.exports.len(), 1);
    assert_eq!(found.exports[0].id, ids[3]);
    let request = ListExportsRequest {
        search: ids[1][..30].to_string(),
        ..Default::default()
    };
    assert_eq!(
        client(&app)
            .list_exports(app.request(request))
            .await
            .unwrap()
            .into_inner()
            .exports[0]
            .id,
        ids[1]
    );
    app.stop().await;
}

async fn bad_export_requests_name_the_field(backend: Backend) {
    let app = TestApp::start(backend).await;
    let cases = [
        (
            CreateExportRequest {
                columns: vec!["tax_id".into(), "password".into()],
                ..Default::default()
            },
            "columns[1]",
        ),
        (
            CreateExportRequest {
                format: ExportFormat::Xlsx as i32,
                compression: Compression::Gzip as i32,
                ..Default::default()
            },
            "compression",
        ),
        (
            CreateExportRequest {
                expand_array: "attributes.tags".into(),
                ..Default::default()
            },
            "expand_array",
        ),
        (
            CreateExportRequest {
                format: 42,
                ..Default::default()
            },
            "format",
        ),
        (
            CreateExportRequest {
                filter: Some(EntityFilter {
                    countries: vec!["ARG".into()],
                    ..Default::default()
                }),
                ..Default::default()
            },
            "filter.countries[0]",
        ),
        (
            CreateExportRequest {
                format: ExportFormat::Csv as i32,
                avro_codec: AvroCodec::Snappy as i32,
                ..Default::default()
            },
            "avro_codec",
        ),
        (
            CreateExportRequest {
                format: ExportFormat::Avro as i32,
                avro_codec: 9,
                ..Default::default()
            },
            "avro_codec",
        ),
    ];
    for (request, field) in cases {
        let status = client(&app)
            .create_export(app.request(request))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert_eq!(violated_fields(&status), [field]);
    }
    let status = client(&app)
        .get_export(app.request(GetExportRequest { id: "nope".into() }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    app.stop().await;
}

/// Excel holds 1,048,576 rows a sheet: past the limit a new sheet starts, each with
/// its header (shown here with a limit of 2 rows).
#[test]
fn xlsx_rolls_over_to_a_new_sheet_at_the_row_limit() {
    use ferry::export::columns::{Cell, Column};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.xlsx");
    let columns = vec![Column::parse("tax_id").unwrap()];
    let batch: Vec<Vec<Cell>> = (1..=5).map(|n| vec![Cell::Text(format!("T{n}"))]).collect();
    let mut rows = vec![batch].into_iter();
    let headers = ferry::export::columns::headers(&columns, None);
    let written = ferry::export::writer::xlsx::write_with_sheet_limit(&headers, &mut rows, &path, 2).unwrap();
    assert_eq!(written, 5);
    let file = read_back("xlsx", &std::fs::read(&path).unwrap());
    assert_eq!(file.sheets, ["entities", "entities (2)", "entities (3)"]);
    assert_eq!(file.columns, ["tax_id"]);
    let values: Vec<Value> = file.rows.into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(values, ["T1", "T2", "T3", "T4", "T5"].map(|v| json!(v)));
}
