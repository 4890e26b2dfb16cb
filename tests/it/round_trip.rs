//! Round trips are contracts: entities exported with the default columns and
//! uploaded again as an import into a fresh organization come back equal in every
//! field but the id, the timestamps and the enrichment plan, and a second upload of
//! the same file changes nothing. Checked with random entities (proptest) on both
//! backends, in every format an import reads.

use std::time::Duration;

use ferry::db::entities::{EntityFilter, EntityOrder, EntityRow, SortKey};
use ferry::orgs::Plan;
use ferry::proto::{
    CreateExportRequest, ExportFormat, GetExportDownloadRequest, Import, ImportOptions, JobState,
    UploadImportRequest, WatchExportRequest, WatchImportRequest, export_service_client::ExportServiceClient,
    import_service_client::ImportServiceClient, upload_import_request::Payload,
};
use futures::StreamExt;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::{Map, Value};

use crate::on_both_backends;
use crate::support::{Backend, TestApp, fetch, with_auth};

on_both_backends!(an_export_imports_back_unchanged_and_a_second_import_changes_nothing);

/// Random entity sets per backend (each runs an export and two imports a format).
const CASES: u32 = 24;

/// The formats an import reads, with the file name that tells the import which.
const FORMATS: [(ExportFormat, &str); 3] = [
    (ExportFormat::Csv, "round-trip.csv"),
    (ExportFormat::Xlsx, "round-trip.xlsx"),
    (ExportFormat::Ndjson, "round-trip.ndjson"),
];

async fn an_export_imports_back_unchanged_and_a_second_import_changes_nothing(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let mut runner = TestRunner::new(ProptestConfig {
        cases: CASES,
        max_shrink_iters: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let handle = tokio::runtime::Handle::current();
    let outcome = tokio::task::block_in_place(|| {
        runner.run(&entity_sets(), |originals| {
            handle
                .block_on(round_trip(&app, &originals))
                .map_err(TestCaseError::fail)
        })
    });
    app.stop().await;
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

/// One case: the entities stored in a fresh organization, exported in each format,
/// imported twice into another fresh organization.
async fn round_trip(app: &TestApp, originals: &[EntityRow]) -> Result<(), String> {
    let (source, source_key) = app.org_with_key("source", Plan::Enterprise).await;
    let rows: Vec<EntityRow> = originals
        .iter()
        .map(|e| EntityRow {
            organization_id: source.clone(),
            ..e.clone()
        })
        .collect();
    ferry::db::entities::insert(&mut app.db().conn().await.unwrap(), &rows)
        .await
        .unwrap();
    for (format, file_name) in FORMATS {
        let file = export(app, &source, &source_key, format).await;
        let (target, target_key) = app.org_with_key("target", Plan::Enterprise).await;
        let first = import(app, &target, &target_key, file_name, &file).await;
        let n = originals.len() as i64;
        let counts = |i: &Import| {
            (
                i.created_items,
                i.updated_items,
                i.unchanged_items,
                i.failed_items,
            )
        };
        if first.state != JobState::Completed as i32 || counts(&first) != (n, 0, 0, 0) {
            return Err(format!(
                "{format:?}: first import {:?} counts {:?}, error {:?}",
                first.state,
                counts(&first),
                first.error
            ));
        }
        let imported = entities(app, &target).await;
        for original in originals {
            let Some(copy) = imported
                .iter()
                .find(|e| (&e.country, &e.tax_id) == (&original.country, &original.tax_id))
            else {
                return Err(format!(
                    "{format:?}: {} {} is missing",
                    original.country, original.tax_id
                ));
            };
            let (want, got) = (comparable(original), comparable(copy));
            if want != got {
                return Err(format!("{format:?}: imported\n{got:#?}\nexpected\n{want:#?}"));
            }
        }
        let second = import(app, &target, &target_key, file_name, &file).await;
        if counts(&second) != (0, 0, n, 0) {
            return Err(format!(
                "{format:?}: a second import of the same file counted {:?}",
                counts(&second)
            ));
        }
    }
    Ok(())
}

/// Every field but the id, the organization, the timestamps and the plan; JSON
/// compared as values.
fn comparable(e: &EntityRow) -> (Vec<Option<String>>, bool, bool, Value, Value) {
    let text = |s: &str| Some(s.to_string());
    (
        vec![
            text(&e.entity_type),
            text(&e.tax_id),
            text(&e.country),
            text(&e.name),
            e.gender.clone(),
            e.external_id.clone(),
            e.email.clone(),
            e.phone.clone(),
            e.registration_date.clone(),
            text(&e.status),
            e.nationality.clone(),
            e.risk_matrix_id.clone(),
        ],
        e.is_client,
        e.skip_rules_execution,
        serde_json::from_str(&e.attributes).unwrap_or(Value::Null),
        serde_json::from_str(&e.entity_data).unwrap_or(Value::Null),
    )
}

async fn export(app: &TestApp, org: &str, key: &str, format: ExportFormat) -> Vec<u8> {
    let mut client = ExportServiceClient::new(app.channel.clone());
    let created = client
        .create_export(with_auth(
            CreateExportRequest {
                format: format as i32,
                ..Default::default()
            },
            key,
            org,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut watch = client
        .watch_export(with_auth(
            WatchExportRequest {
                id: created.id.clone(),
            },
            key,
            org,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(item) = watch.next().await {
            last = Some(item.unwrap());
        }
    })
    .await
    .expect("the export did not end in 60 s");
    let last = last.expect("the watch sent nothing");
    assert_eq!(last.state, JobState::Completed as i32, "{:?}", last.error);
    let link = client
        .get_export_download(with_auth(GetExportDownloadRequest { id: created.id }, key, org))
        .await
        .unwrap()
        .into_inner();
    let (status, bytes) = fetch(&link.url).await;
    assert_eq!(status, 200);
    bytes
}

async fn import(app: &TestApp, org: &str, key: &str, file_name: &str, file: &[u8]) -> Import {
    let mut messages = vec![UploadImportRequest {
        payload: Some(Payload::Options(ImportOptions {
            file_name: file_name.into(),
            ..Default::default()
        })),
    }];
    messages.extend(file.chunks(64 * 1024).map(|chunk| UploadImportRequest {
        payload: Some(Payload::Chunk(chunk.to_vec())),
    }));
    let mut client = ImportServiceClient::new(app.channel.clone());
    let queued = client
        .upload_import(with_auth(tokio_stream::iter(messages), key, org))
        .await
        .unwrap_or_else(|status| panic!("upload of {file_name} refused: {status:?}"))
        .into_inner();
    let mut watch = client
        .watch_import(with_auth(WatchImportRequest { id: queued.id }, key, org))
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(item) = watch.next().await {
            last = Some(item.unwrap());
        }
    })
    .await
    .expect("the import did not end in 60 s");
    last.expect("the watch sent nothing")
}

async fn entities(app: &TestApp, org: &str) -> Vec<EntityRow> {
    let order = EntityOrder {
        key: SortKey::CreatedAt,
        descending: false,
    };
    ferry::db::entities::list(
        &mut app.db().conn().await.unwrap(),
        org,
        &EntityFilter::default(),
        order,
        None,
        1000,
    )
    .await
    .unwrap()
}

// The generators: entities in the import contract's normal form.

/// Text as people type it: trimmed, possibly starting with a character a
/// spreadsheet reads as a formula (or with the quote that guards one), with quotes,
/// separators, line breaks and non-ASCII inside.
fn cell_text() -> impl Strategy<Value = String> {
    let first = prop_oneof![
        Just("=".to_string()),
        Just("+".to_string()),
        Just("-".to_string()),
        Just("@".to_string()),
        Just("'".to_string()),
        Just("''=".to_string()),
        "[a-zA-Z0-9\"é中]",
    ];
    let middle = "[a-zA-Z0-9 ,;:\"'\n=+@éñ中😀-]{0,12}";
    let last = "[a-zA-Z0-9é😀\"]";
    (first, middle, last).prop_map(|(a, b, c)| format!("{a}{b}{c}"))
}

/// Any JSON value an attribute may hold, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop_oneof![Just(1.5), Just(-0.25), Just(1e-7), Just(12345.678)].prop_map(Value::from),
        "(|[ =+@'\"\n\ta-zé中😀-]{0,10})".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_.]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_ .é]{0,7}", json_value(), 0..4)
        .prop_map(|m| m.into_iter().collect())
}

fn entity() -> impl Strategy<Value = EntityRow> {
    let who = (
        prop_oneof![Just("person"), Just("company")],
        "[=+-]?[A-Z0-9][A-Z0-9./-]{0,10}",
        prop_oneof![Just("US"), Just("MX"), Just("DE"), Just("JP")],
        cell_text(),
        prop::option::of(prop_oneof![
            Just("male"),
            Just("female"),
            Just("other"),
            Just("unknown")
        ]),
    );
    let contact = (
        prop::option::of(cell_text()),
        prop::option::of(cell_text()),
        prop::option::of(cell_text()),
        prop::option::of((1950..2030i32, 1..=12u32, 1..=28u32)),
    );
    let state = (
        prop::sample::select(ferry::import::row::STATUSES.to_vec()),
        any::<bool>(),
        prop::option::of(prop_oneof![Just("AR"), Just("US"), Just("ES")]),
        prop::option::of(any::<u128>()),
        any::<bool>(),
    );
    let data = (json_object(), json_object());
    (who, contact, state, data).prop_map(
        |(
            (entity_type, tax_id, country, name, gender),
            (external_id, email, phone, registration),
            (status, is_client, nationality, risk_matrix, skip_rules),
            (attributes, bucket),
        )| {
            let entity_data = if bucket.is_empty() {
                Map::new()
            } else {
                Map::from_iter([(entity_type.to_string(), Value::Object(bucket))])
            };
            EntityRow {
                id: ferry::db::new_id(),
                organization_id: String::new(),
                entity_type: entity_type.into(),
                tax_id,
                country: country.into(),
                name,
                gender: gender.map(str::to_string),
                external_id,
                email,
                phone,
                registration_date: registration.map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
                status: status.into(),
                is_client,
                nationality: nationality.map(str::to_string),
                risk_matrix_id: risk_matrix.map(|n| uuid::Uuid::from_u128(n).to_string()),
                attributes: Value::Object(attributes).to_string(),
                entity_data: Value::Object(entity_data).to_string(),
                enrichment_plan: None,
                skip_rules_execution: skip_rules,
                created_at: 1_700_000_000_000,
                updated_at: 1_700_000_000_000,
            }
        },
    )
}

/// 1 to 12 entities, each under its own (country, tax ID).
fn entity_sets() -> impl Strategy<Value = Vec<EntityRow>> {
    prop::collection::vec(entity(), 1..12).prop_map(|mut set| {
        for (i, e) in set.iter_mut().enumerate() {
            e.tax_id = format!("{}~{i}", e.tax_id);
        }
        set
    })
}
