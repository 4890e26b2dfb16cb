//! ImportService end to end: uploads over a client stream, pre-flight, the import
//! job on both backends, error listings and reports, retries, mappings, e-mail.

use std::sync::Arc;
use std::time::Duration;

use ferry::db::enrichments::{self, EnrichmentRow};
use ferry::db::entities::EntityRow;
use ferry::import::job::ImportJob;
use ferry::import::spec::{self, ImportResult};
use ferry::jobs::{Job, JobContext, JobError, Outcome, Registry, RunJob};
use ferry::proto::{
    AttributeEquals, CancelImportRequest, CreateMappingRequest, EntityFilter, GetImportErrorReportRequest,
    GetImportRequest, Import, ImportFormat, ImportMode, ImportOptions, JobState, ListEntitiesRequest,
    ListImportErrorsRequest, ListImportsRequest, MappingKind, UploadImportRequest, WatchImportRequest,
    entity_service_client::EntityServiceClient, import_service_client::ImportServiceClient,
    mapping_service_client::MappingServiceClient, upload_import_request::Payload,
};
use serde_json::{Value, json};
use tonic::Code;

use crate::on_both_backends;
use crate::support::{Backend, TestApp, Workers, reason, violated_fields, with_auth};

on_both_backends!(
    a_csv_exports_formula_guard_is_not_part_of_the_imported_value,
    a_manual_import_creates_entities_and_importing_it_again_updates_only_what_changed,
    the_seed_examples_import_as_documented,
    an_automatic_import_stores_each_rows_enrichment_plan,
    preflight_failures_leave_no_job_no_entity_and_no_file,
    uploads_over_the_size_limit_or_without_the_feature_are_refused,
    failed_rows_are_listed_and_the_fixed_report_imports_cleanly,
    stop_on_first_error_writes_nothing_when_a_row_fails,
    a_queued_import_that_is_cancelled_never_runs,
    a_running_import_stops_between_batches_and_keeps_its_rows,
    an_import_retried_after_a_crash_writes_nothing_twice,
    rows_naming_one_entity_merge_in_file_order_within_and_across_batches,
    a_saved_mapping_renames_custom_headers,
    the_completion_report_is_mailed_in_the_recipients_language,
    a_nul_byte_in_a_cell_fails_that_row_and_the_others_import,
    a_nul_byte_in_a_header_fails_preflight,
    an_upload_chunk_over_the_message_limit_is_message_too_large,
    a_cancel_at_thirty_percent_is_answered_and_honoured_within_a_batch,
    an_xlsx_workbook_imports_its_first_sheet_with_every_digit,
    an_ndjson_file_imports_with_its_keys_as_columns_and_bad_lines_are_named,
    validate_only_counts_what_an_import_would_do_and_writes_no_entity,
);

fn messages(options: ImportOptions, csv: &[u8], chunk: usize) -> Vec<UploadImportRequest> {
    let mut out = vec![UploadImportRequest {
        payload: Some(Payload::Options(options)),
    }];
    out.extend(csv.chunks(chunk.max(1)).map(|c| UploadImportRequest {
        payload: Some(Payload::Chunk(c.to_vec())),
    }));
    out
}

async fn upload_as(
    app: &TestApp,
    key: &str,
    org: &str,
    options: ImportOptions,
    csv: &[u8],
) -> Result<Import, tonic::Status> {
    let stream = tokio_stream::iter(messages(options, csv, 7));
    ImportServiceClient::new(app.channel.clone())
        .upload_import(with_auth(stream, key, org))
        .await
        .map(tonic::Response::into_inner)
}

async fn upload(app: &TestApp, options: ImportOptions, csv: &str) -> Result<Import, tonic::Status> {
    upload_as(app, &app.key, &app.org_id, options, csv.as_bytes()).await
}

fn country(code: &str) -> ImportOptions {
    ImportOptions {
        country: code.into(),
        ..Default::default()
    }
}

/// Waits for a terminal state by watching the import.
async fn finished(app: &TestApp, id: &str) -> Import {
    let mut stream = ImportServiceClient::new(app.channel.clone())
        .watch_import(app.request(WatchImportRequest { id: id.into() }))
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    let deadline = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(message) = stream.message().await.unwrap() {
            last = Some(message);
        }
    });
    deadline.await.expect("the import finished within a minute");
    last.expect("at least one message")
}

async fn import_and_wait(app: &TestApp, options: ImportOptions, csv: &str) -> Import {
    let queued = upload(app, options, csv).await.unwrap();
    assert_eq!(queued.state, JobState::Queued as i32);
    finished(app, &queued.id).await
}

async fn stored(app: &TestApp) -> Vec<EntityRow> {
    let filter = ferry::db::entities::EntityFilter::default();
    let mut conn = app.db().conn().await.unwrap();
    let order = ferry::db::entities::EntityOrder {
        key: ferry::db::entities::SortKey::CreatedAt,
        descending: false,
    };
    ferry::db::entities::list(&mut conn, &app.org_id, &filter, order, None, 1000)
        .await
        .unwrap()
}

fn by_tax_id<'a>(rows: &'a [EntityRow], tax_id: &str) -> &'a EntityRow {
    rows.iter()
        .find(|r| r.tax_id == tax_id)
        .unwrap_or_else(|| panic!("no entity {tax_id}"))
}

/// The first page of an import's problems.
async fn errors_of(app: &TestApp, id: &str) -> ferry::proto::ListImportErrorsResponse {
    ImportServiceClient::new(app.channel.clone())
        .list_import_errors(app.request(ListImportErrorsRequest {
            import_id: id.to_string(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

const MANUAL: &str = "tax_id,type,country_code,suggested_name,email,status,segment_tag,attributes.tags.tier,entityData.birth_city\n\
20-12345678-6,persona,AR,Ana Pérez,ana@example.com,under_review,retail,gold,Córdoba\n\
XAXX010101000,empresa,mx,\"Empresa, México SA\",,active,latam,,\n";

async fn a_manual_import_creates_entities_and_importing_it_again_updates_only_what_changed(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let options = ImportOptions {
        size_bytes: MANUAL.len() as i64,
        ..Default::default()
    };
    let done = import_and_wait(&app, options, MANUAL).await;
    assert_eq!(done.state, JobState::Completed as i32, "{:?}", done.error);
    assert_eq!(
        (
            done.total_items,
            done.processed_items,
            done.created_items,
            done.updated_items,
            done.failed_items
        ),
        (2, 2, 2, 0, 0)
    );
    assert_eq!(done.import_mode, ImportMode::Manual as i32);
    assert!(!done.has_error_report);
    let rows = stored(&app).await;
    let ana = by_tax_id(&rows, "20-12345678-6");
    assert_eq!(
        (
            ana.entity_type.as_str(),
            ana.country.as_str(),
            ana.name.as_str(),
            ana.status.as_str()
        ),
        ("person", "AR", "Ana Pérez", "under_review")
    );
    assert_eq!(
        json_of(&ana.attributes),
        json!({"segment_tag": "retail", "tags": {"tier": "gold"}})
    );
    assert_eq!(
        json_of(&ana.entity_data),
        json!({"person": {"birth_city": "Córdoba"}})
    );
    let acme = by_tax_id(&rows, "XAXX010101000");
    assert_eq!(
        (acme.country.as_str(), acme.name.as_str()),
        ("MX", "Empresa, México SA")
    );

    // The same file again, with a new e-mail for Ana: nothing new, Ana updated,
    // the company unchanged (and not written: its update time stays).
    let again = MANUAL.replace("ana@example.com", "ana@new.example");
    let done = import_and_wait(&app, ImportOptions::default(), &again).await;
    assert_eq!(
        (
            done.created_items,
            done.updated_items,
            done.unchanged_items,
            done.failed_items
        ),
        (0, 1, 1, 0)
    );
    let rows = stored(&app).await;
    assert_eq!(rows.len(), 2);
    let ana_again = by_tax_id(&rows, "20-12345678-6");
    assert_eq!(ana_again.email.as_deref(), Some("ana@new.example"));
    assert_eq!(
        (ana_again.id.as_str(), ana_again.created_at),
        (ana.id.as_str(), ana.created_at)
    );
    assert_eq!(by_tax_id(&rows, "XAXX010101000").updated_at, acme.updated_at);

    // Listed, newest first, searchable by file name.
    let page = ImportServiceClient::new(app.channel.clone())
        .list_imports(app.request(ListImportsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.total_size, 2);
    assert_eq!(page.imports[0].id, done.id);
    app.stop().await;
}

async fn the_seed_examples_import_as_documented(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    // Simple CSV plus a batch country.
    let done = import_and_wait(
        &app,
        country("AR"),
        "tax_id,type,name\n20123456786,pf,Ana\n30-71234567-1,pj,Acme SA\n",
    )
    .await;
    assert_eq!((done.created_items, done.failed_items), (2, 0), "{done:?}");
    // Mixed countries, each row's own country winning over the batch's.
    let done = import_and_wait(
        &app,
        country("AR"),
        "tax_id,type,country_code,nombre\n52998224725,pf,BR,João\n12.345.678-5,pf,cl,Rosa\n20-33333333-4,pf,,Juan\n",
    )
    .await;
    assert_eq!((done.created_items, done.failed_items), (3, 0), "{done:?}");
    let rows = stored(&app).await;
    assert_eq!(by_tax_id(&rows, "52998224725").country, "BR");
    assert_eq!(by_tax_id(&rows, "12345678-5").country, "CL");
    assert_eq!(by_tax_id(&rows, "20-33333333-4").country, "AR");
    // Relationship columns are ignored in manual mode; batch defaults apply.
    let options = ImportOptions {
        country: "MX".into(),
        is_client: Some(true),
        status: "active".into(),
        attributes: r#"{"source": "crm", "segment_tag": "batch"}"#.into(),
        skip_rules_execution: true,
        ..Default::default()
    };
    let done = import_and_wait(
        &app,
        options,
        "tax_id,type,name,depth,relationship_omit_enrichments,segment_tag\nRFC1,pj,Uno,2,x,row\n",
    )
    .await;
    assert_eq!((done.created_items, done.failed_items), (1, 0), "{done:?}");
    let rows = stored(&app).await;
    let uno = by_tax_id(&rows, "RFC1");
    assert!(uno.is_client && uno.skip_rules_execution);
    assert_eq!(
        json_of(&uno.attributes),
        json!({"source": "crm", "segment_tag": "row"})
    );
    let plan = json_of(uno.enrichment_plan.as_deref().unwrap());
    assert_eq!(
        (plan["depth"].clone(), plan["children"].clone()),
        (json!(0), json!({}))
    );
    app.stop().await;
}

async fn catalogue(app: &TestApp) {
    let mut conn = app.db().conn().await.unwrap();
    for (code, entity_type) in [
        ("nosis_basic", "any"),
        ("global_gueno_sanctions_enrichment", "any"),
        ("cpf_lookup", "person"),
        ("cnpj_lookup", "company"),
    ] {
        let row = EnrichmentRow {
            organization_id: app.org_id.clone(),
            code: code.into(),
            entity_type: entity_type.into(),
            active: true,
            created_at: 1,
        };
        enrichments::upsert(&mut conn, &row).await.unwrap();
    }
}

async fn an_automatic_import_stores_each_rows_enrichment_plan(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    catalogue(&app).await;
    let options = ImportOptions {
        import_mode: ImportMode::Automatic as i32,
        depth: Some(1),
        monitoring: r#"{"main": {"global_gueno_sanctions_enrichment": {"watchlist": true}}}"#.into(),
        monitoring_apply_to_relationships: Some(false),
        child_enrichment_policy: ferry::proto::ChildEnrichmentPolicy::ByRootType as i32,
        ..Default::default()
    };
    // The automatic template (with valid check digits), plus an omit-only row and
    // a row naming an unknown enrichment.
    let csv = "tax_id,type,country_code,suggested_name,execute_all_active_enrichments,omit_enrichments,enrichments,depth,status,segment_tag\n\
20123456786,company,AR,Acme Argentina SA,true,,,0,under_review,retail\n\
11222333000181,company,BR,Loja Brasil Ltda,,global_gueno_sanctions_enrichment,,1,under_review,wholesale\n\
52998224725,person,BR,,,,bogus_code,,,\n";
    let done = import_and_wait(&app, options, csv).await;
    assert_eq!(done.import_mode, ImportMode::Automatic as i32);
    assert_eq!((done.created_items, done.failed_items), (2, 1), "{done:?}");
    let rows = stored(&app).await;
    let acme = json_of(
        by_tax_id(&rows, "20-12345678-6")
            .enrichment_plan
            .as_deref()
            .unwrap(),
    );
    assert_eq!(
        acme["enrichments"],
        json!(["cnpj_lookup", "global_gueno_sanctions_enrichment", "nosis_basic"])
    );
    assert_eq!(acme["depth"], json!(0));
    let loja = json_of(
        by_tax_id(&rows, "11222333000181")
            .enrichment_plan
            .as_deref()
            .unwrap(),
    );
    // Omit-only: all active (automatic default) minus the omission.
    assert_eq!(loja["enrichments"], json!(["cnpj_lookup", "nosis_basic"]));
    assert_eq!(loja["depth"], json!(1));
    // BY_ROOT_TYPE under a company root: children get all active but sanctions.
    assert_eq!(loja["children"]["company"], json!(["cnpj_lookup", "nosis_basic"]));
    assert_eq!(
        loja["monitoring"],
        json!({"main": {"global_gueno_sanctions_enrichment": {"watchlist": true}}})
    );
    let errors = errors_of(&app, &done.id).await;
    assert_eq!(
        (errors.errors[0].line, errors.errors[0].code.as_str()),
        (4, "UNKNOWN_ENRICHMENT")
    );

    // Automatic mode refuses other countries before anything is queued.
    let options = ImportOptions {
        import_mode: ImportMode::Automatic as i32,
        ..Default::default()
    };
    let err = upload(&app, options, "tax_id,type,country_code\nX1,pj,MX\n")
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::InvalidArgument, "COUNTRY_NOT_SUPPORTED")
    );
    assert_eq!(violated_fields(&err), ["line 2"]);
    app.stop().await;
}

/// No job, no entity, no stored object, no temp file.
async fn assert_nothing_left(app: &TestApp) {
    let page = ImportServiceClient::new(app.channel.clone())
        .list_imports(app.request(ListImportsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.total_size, 0);
    assert!(stored(app).await.is_empty());
    let data = app.db.data_dir();
    for dir in [data.join("files").join("imports"), app.app.temp_dir()] {
        // The temp folder's lock file is the server's own, not an upload's.
        let left: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| !p.ends_with(".lock"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(left.is_empty(), "{left:?} left in {}", dir.display());
    }
}

async fn preflight_failures_leave_no_job_no_entity_and_no_file(backend: Backend) {
    let app = TestApp::start_with(backend, |c| c.bulk_import.max_items = 3, Workers::Ferry).await;
    let cases: Vec<(ImportOptions, &str, &str, Vec<&str>)> = vec![
        (
            ImportOptions::default(),
            "tax_id,type,country_code\n1,pf,AR\n2,pf,\n3,pf,\n",
            "MISSING_COUNTRY",
            vec!["line 3", "line 4"],
        ),
        (
            country("MX"),
            "tax_id,type\n1,pf\n2,pf\n3,pf\n4,pf\n",
            "TOO_MANY_ITEMS",
            vec!["file"],
        ),
        (
            country("MX"),
            "tax_id,type,execute_all_active_checks\n1,pf,true\n",
            "REMOVED_COLUMN",
            vec!["line 1"],
        ),
        (country("MX"), "", "EMPTY_FILE", vec!["file"]),
        (country("MX"), "tax_id,type\n", "NO_ROWS", vec!["file"]),
        (
            country("MX"),
            "documento,tipo\n1,pf\n",
            "MISSING_HEADER",
            vec!["line 1"],
        ),
        (
            country("MX"),
            "tax_id,type\n1,pf\n2,pf,3\n",
            "RAGGED_ROW",
            vec!["line 3"],
        ),
        (
            ImportOptions {
                depth: Some(6),
                ..country("MX")
            },
            "tax_id,type\n1,pf\n",
            "INVALID_ARGUMENT",
            vec!["options.depth"],
        ),
        (
            ImportOptions {
                attributes: "{oops".into(),
                ..country("MX")
            },
            "tax_id,type\n1,pf\n",
            "INVALID_ARGUMENT",
            vec!["options.attributes"],
        ),
    ];
    for (options, csv, expected, fields) in cases {
        let err = upload(&app, options, csv).await.unwrap_err();
        assert_eq!(
            (err.code(), reason(&err).as_str()),
            (Code::InvalidArgument, expected),
            "{csv:?}: {err:?}"
        );
        assert_eq!(violated_fields(&err), fields, "{csv:?}");
    }
    let removed = upload(&app, country("MX"), "tax_id,type,checks\n1,pf,x\n")
        .await
        .unwrap_err();
    assert!(removed.message().contains("execute_all_active_enrichments"));
    // Invalid UTF-8 names its line.
    let err = upload_as(
        &app,
        &app.key,
        &app.org_id,
        country("MX"),
        b"tax_id,type\n1,pf\n2,\xff\n",
    )
    .await
    .unwrap_err();
    assert_eq!(
        (reason(&err).as_str(), violated_fields(&err)),
        ("INVALID_UTF8", vec!["line 3".to_string()])
    );
    assert_nothing_left(&app).await;
    app.stop().await;
}

async fn uploads_over_the_size_limit_or_without_the_feature_are_refused(backend: Backend) {
    let app = TestApp::start_with(backend, |c| c.bulk_import.max_upload_bytes = 1024, Workers::Ferry).await;
    let mut csv = String::from("tax_id,type\n");
    for i in 0..200 {
        csv.push_str(&format!("ID{i},pf\n"));
    }
    let err = upload(&app, country("MX"), &csv).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::ResourceExhausted, "UPLOAD_TOO_LARGE")
    );
    // An organization without the feature.
    let org = ferry::orgs::create(app.db(), "nofeature", ferry::orgs::Plan::Enterprise, &[], None)
        .await
        .unwrap();
    let (_, key) = ferry::auth::keys::create(
        app.db(),
        &org.id,
        "k",
        &ferry::auth::permissions::Permission::ALL,
        &[],
    )
    .await
    .unwrap();
    let err = upload_as(&app, &key, &org.id, country("MX"), b"tax_id,type\n1,pf\n")
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::PermissionDenied, "FEATURE_DISABLED")
    );
    // A client that goes away mid-upload (having declared the file's size).
    let options = ImportOptions {
        size_bytes: 1000,
        ..country("MX")
    };
    let first = messages(options.clone(), b"tax_id,type\n1,pf\n", 64);
    let stream = futures::StreamExt::chain(tokio_stream::iter(first), futures::stream::pending());
    let mut client = ImportServiceClient::new(app.channel.clone());
    let call = client.upload_import(app.request(stream));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), call)
            .await
            .is_err()
    );
    let tmp = app.db.data_dir().join("tmp");
    for _ in 0..100 {
        if std::fs::read_dir(&tmp).map(|d| d.count() == 0).unwrap_or(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A stream that ends cleanly but short of the declared size.
    let err = upload(&app, options, "tax_id,type\n1,pf\n").await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::Aborted, "UPLOAD_INTERRUPTED")
    );
    assert_nothing_left(&app).await;
    app.stop().await;
}

async fn download(url: &str) -> String {
    let (status, bytes) = crate::support::fetch(url).await;
    assert_eq!(status, 200);
    String::from_utf8(bytes).unwrap()
}

async fn failed_rows_are_listed_and_the_fixed_report_imports_cleanly(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let csv = "tax_id,type,name,risk_matrix_id,note\n\
20-12345678-6,pf,Ana,not-a-uuid,ok\n\
20-12345678-5,pf,Bad Digit,,\"a, quoted\nnote\"\n\
30-71234567-1,alien,Bad Type,,x\n";
    let done = import_and_wait(&app, country("AR"), csv).await;
    assert_eq!(done.state, JobState::Completed as i32);
    assert_eq!(
        (done.created_items, done.failed_items, done.has_error_report),
        (1, 2, true)
    );
    let mut client = ImportServiceClient::new(app.channel.clone());
    let first = client
        .list_import_errors(app.request(ListImportErrorsRequest {
            import_id: done.id.clone(),
            page_size: 2,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.total_size, 3);
    let summary: Vec<(i64, String, String)> = first
        .errors
        .iter()
        .map(|e| (e.line, e.column.clone(), e.code.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (2, "risk_matrix_id".into(), "INVALID_RISK_MATRIX_ID".into()),
            (3, "tax_id".into(), "INVALID_TAX_ID".into()),
        ]
    );
    assert!(first.errors[0].message.starts_with("warning:"));
    assert_eq!(first.errors[1].raw_value, "20-12345678-5");
    let rest = client
        .list_import_errors(app.request(ListImportErrorsRequest {
            import_id: done.id.clone(),
            page_size: 2,
            page_token: first.next_page_token.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (rest.errors[0].line, rest.errors[0].code.as_str()),
        (5, "INVALID_TYPE")
    );
    assert!(rest.next_page_token.is_empty());

    let report = client
        .get_import_error_report(app.request(GetImportErrorReportRequest {
            import_id: done.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.row_count, 2);
    let text = download(&report.url).await;
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "tax_id",
            "type",
            "name",
            "risk_matrix_id",
            "note",
            "error_line",
            "error_column",
            "error_code",
            "error_message"
        ]
    );
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(&records[0][4], "a, quoted\nnote");
    assert_eq!((&records[0][5], &records[0][7]), ("3", "INVALID_TAX_ID"));
    assert_eq!((&records[1][5], &records[1][7]), ("5", "INVALID_TYPE"));

    // Fix the two rows in the report and upload it as is.
    let fixed = text
        .replace("20-12345678-5", "20-22222222-3")
        .replace("alien", "pj");
    let done = import_and_wait(&app, country("AR"), &fixed).await;
    assert_eq!(
        (done.created_items, done.updated_items, done.failed_items),
        (2, 0, 0),
        "{done:?}"
    );
    assert!(!stored(&app).await.iter().any(|e| {
        let attributes = json_of(&e.attributes);
        attributes.get("error_code").is_some()
    }));
    // A clean import has no report.
    let err = client
        .get_import_error_report(app.request(GetImportErrorReportRequest {
            import_id: done.id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "IMPORT_NO_ERROR_REPORT");
    app.stop().await;
}

async fn stop_on_first_error_writes_nothing_when_a_row_fails(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let options = ImportOptions {
        stop_on_first_error: true,
        ..country("AR")
    };
    let csv = "tax_id,type,name\n20-12345678-6,pf,Ana\n20-12345678-5,pf,Bad\n";
    let done = import_and_wait(&app, options.clone(), csv).await;
    assert_eq!(done.state, JobState::Failed as i32);
    let error = done.error.clone().unwrap();
    assert!(error.message.contains("line 3"), "{}", error.message);
    assert_eq!(
        (done.created_items, done.failed_items, done.has_error_report),
        (0, 1, true)
    );
    assert!(stored(&app).await.is_empty());
    let report = ImportServiceClient::new(app.channel.clone())
        .get_import_error_report(app.request(GetImportErrorReportRequest {
            import_id: done.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(download(&report.url).await.contains("INVALID_TAX_ID"));
    // All valid: all written.
    let done = import_and_wait(&app, options, "tax_id,type,name\n20-12345678-6,pf,Ana\n").await;
    assert_eq!((done.state, done.created_items), (JobState::Completed as i32, 1));
    app.stop().await;
}

async fn a_queued_import_that_is_cancelled_never_runs(backend: Backend) {
    let app = TestApp::start(backend).await;
    let queued = upload(&app, country("MX"), "tax_id,type,name\nX1,pf,A\n")
        .await
        .unwrap();
    let mut client = ImportServiceClient::new(app.channel.clone());
    let cancelled = client
        .cancel_import(app.request(CancelImportRequest {
            id: queued.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state, JobState::Cancelled as i32);
    let err = client
        .cancel_import(app.request(CancelImportRequest {
            id: queued.id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    // Another organization cannot see it.
    let (other, key) = app.other_org().await;
    let err = client
        .get_import(with_auth(
            GetImportRequest {
                id: queued.id.clone(),
            },
            &key,
            &other,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(stored(&app).await.is_empty());
    app.stop().await;
}

/// Runs the real import job, but "crashes" its first attempt once a batch has been
/// committed: the run is dropped mid-flight and the queue retries it.
struct CrashOnce {
    inner: ImportJob,
}

impl RunJob for CrashOnce {
    type Kind = spec::Import;

    async fn run(&self, job: Job<spec::Import>, ctx: JobContext) -> Result<Outcome<ImportResult>, JobError> {
        let run = self.inner.run(job, ctx.clone());
        {
            if ctx.job().attempts > 1 {
                return run.await;
            }
            let db = ctx.db().clone();
            let id = ctx.job().id.clone();
            let committed = async move {
                loop {
                    let mut conn = db.conn().await.unwrap();
                    let job = ferry::db::jobs::find(&mut conn, &id).await.unwrap().unwrap();
                    if job.rows_done >= 2 {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            };
            tokio::select! {
                result = run => result,
                _ = committed => Err(JobError::Transient("simulated crash".into())),
            }
        }
    }
}

async fn an_import_retried_after_a_crash_writes_nothing_twice(backend: Backend) {
    let app = TestApp::start_with(backend, |_| {}, Workers::None).await;
    let mut csv = String::from("tax_id,type,name\n");
    for i in 0..40 {
        if i % 10 == 3 {
            csv.push_str(&format!("BAD{i},alien,Row {i}\n"));
        } else {
            csv.push_str(&format!("ID{i},pf,Row {i}\n"));
        }
    }
    let queued = upload(&app, country("MX"), &csv).await.unwrap();
    let mut app = app;
    // The first server (no worker) keeps serving the test's channel; the second
    // runs the crashing job.
    let _first = {
        let handler = Arc::new(CrashOnce {
            inner: ImportJob {
                storage: app.app.storage.clone(),
                temp_dir: app.app.temp_dir(),
                batch_rows: 2,
                report_retention: Duration::ZERO,
            },
        });
        let running = ferry::server::start(app.app.clone(), Registry::new().with(handler))
            .await
            .unwrap();
        app.running.replace(running)
    };
    let done = finished(&app, &queued.id).await;
    assert_eq!(done.state, JobState::Completed as i32, "{:?}", done.error);
    assert_eq!(done.attempt_count, 2);
    assert_eq!(
        (
            done.processed_items,
            done.created_items,
            done.updated_items,
            done.failed_items
        ),
        (40, 36, 0, 4)
    );
    assert_eq!(stored(&app).await.len(), 36);
    let errors = ImportServiceClient::new(app.channel.clone())
        .list_import_errors(app.request(ListImportErrorsRequest {
            import_id: done.id.clone(),
            page_size: 100,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let lines: Vec<i64> = errors.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [5, 15, 25, 35]);
    app.stop().await;
}

/// Entity A is named three times. With batches of two rows it is in batches 1, 2
/// and 3, which PostgreSQL writes on two connections at once: a batch must wait for
/// the one before when they share an entity. With one batch for the file, the
/// three rows are in one transaction (SQLite inserts the first and merges the
/// others over it; PostgreSQL splits the batch). Either way each later row sees the
/// earlier one's values, empty cells keep them, and counters stay exact.
async fn rows_naming_one_entity_merge_in_file_order_within_and_across_batches(backend: Backend) {
    for batch_rows in [2, 1_000] {
        let app =
            TestApp::start_with(backend, |c| c.bulk_import.batch_rows = batch_rows, Workers::Ferry).await;
        let mut csv = String::from("tax_id,type,name,email,phone\n");
        csv.push_str("A1,pf,First,a@example.com,\n");
        csv.push_str("B1,pf,Bee,,\n");
        csv.push_str("A1,pf,Second,,555-0101\n");
        csv.push_str("C1,pf,Cee,,\n");
        csv.push_str("A1,pf,Third,,\n");
        for i in 0..20 {
            csv.push_str(&format!("D{i},pf,Row {i},,\n"));
        }
        let done = import_and_wait(&app, country("MX"), &csv).await;
        assert_eq!(done.state, JobState::Completed as i32, "{:?}", done.error);
        assert_eq!(
            (
                done.processed_items,
                done.created_items,
                done.updated_items,
                done.failed_items
            ),
            (25, 23, 2, 0),
            "batches of {batch_rows}"
        );
        let rows = stored(&app).await;
        assert_eq!(rows.len(), 23);
        let a = by_tax_id(&rows, "A1");
        assert_eq!(a.name, "Third", "batches of {batch_rows}");
        assert_eq!(a.email.as_deref(), Some("a@example.com"));
        assert_eq!(a.phone.as_deref(), Some("555-0101"));
        app.stop().await;
    }
}

/// A CSV export prefixes `'` to cells a spreadsheet would run (and to cells that
/// start with `'`); importing such a file stores the values, not the guard.
async fn a_csv_exports_formula_guard_is_not_part_of_the_imported_value(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let csv = "tax_id,type,name,phone\n\
               A1,pf,''Quoted,'+55 134126396\n\
               B1,pf,'=Sum,'plain\n";
    let done = import_and_wait(&app, country("MX"), csv).await;
    assert_eq!(done.state, JobState::Completed as i32, "{:?}", done.error);
    let rows = stored(&app).await;
    let a = by_tax_id(&rows, "A1");
    assert_eq!(a.name, "'Quoted");
    assert_eq!(a.phone.as_deref(), Some("+55 134126396"));
    let b = by_tax_id(&rows, "B1");
    assert_eq!(b.name, "=Sum");
    // An apostrophe that guards nothing is part of the value.
    assert_eq!(b.phone.as_deref(), Some("'plain"));
    app.stop().await;
}

async fn a_saved_mapping_renames_custom_headers(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let mapping = MappingServiceClient::new(app.channel.clone())
        .create_mapping(
            app.request(CreateMappingRequest {
                name: "bank".into(),
                kind: MappingKind::EntityMixed as i32,
                columns: [
                    ("Documento", "tax_id"),
                    ("Clase", "type"),
                    ("Razón social", "name"),
                ]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            }),
        )
        .await
        .unwrap()
        .into_inner();
    let csv = "Documento,Clase,Razón Social,Sucursal\nRFC9,pj,Banco Uno,Centro\n";
    let err = upload(&app, country("MX"), csv).await.unwrap_err();
    assert_eq!(reason(&err), "MISSING_HEADER");
    let options = ImportOptions {
        mapping_id: mapping.id.clone(),
        ..country("MX")
    };
    let done = import_and_wait(&app, options, csv).await;
    assert_eq!((done.created_items, done.failed_items), (1, 0), "{done:?}");
    let rows = stored(&app).await;
    let bank = by_tax_id(&rows, "RFC9");
    assert_eq!(bank.name, "Banco Uno");
    assert_eq!(json_of(&bank.attributes), json!({"sucursal": "Centro"}));
    let options = ImportOptions {
        mapping_id: "0190f000-0000-7000-8000-000000000000".into(),
        ..country("MX")
    };
    let err = upload(&app, options, csv).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["options.mapping_id"]);
    app.stop().await;
}

async fn the_completion_report_is_mailed_in_the_recipients_language(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let options = ImportOptions {
        report_recipient_emails: vec!["ops@example.com".into()],
        email_locale: "es".into(),
        ..country("AR")
    };
    let done = import_and_wait(
        &app,
        options,
        "tax_id,type,name\n20-12345678-6,pf,Ana\n20-12345678-5,pf,Bad\n",
    )
    .await;
    assert_eq!((done.created_items, done.failed_items), (1, 1));
    let drop_dir = app.db.data_dir().join("mail");
    let mut files = Vec::new();
    for _ in 0..200 {
        files = std::fs::read_dir(&drop_dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if !files.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(files.len(), 1, "{files:?}");
    let raw = std::fs::read(&files[0]).unwrap();
    let mail = mailparse::parse_mail(&raw).unwrap();
    let subject = mail
        .headers
        .iter()
        .find(|h| h.get_key_ref() == "Subject")
        .map(|h| h.get_value())
        .unwrap_or_default();
    assert_eq!(subject, "Tu importación en acme terminó");
    let body = mail.subparts[0].get_body().unwrap();
    assert!(body.contains("1 creadas, 0 actualizadas, 1 con error"), "{body}");
    assert!(body.contains("/files/imports/"), "{body}");
    app.stop().await;
}

async fn a_running_import_stops_between_batches_and_keeps_its_rows(backend: Backend) {
    let app = TestApp::start_with(backend, |c| c.bulk_import.batch_rows = 1, Workers::Ferry).await;
    let mut csv = String::from("tax_id,type,name\n");
    for i in 0..3000 {
        csv.push_str(&format!("ID{i},pf,Row {i}\n"));
    }
    let queued = upload(&app, country("MX"), &csv).await.unwrap();
    let mut client = ImportServiceClient::new(app.channel.clone());
    let mut stream = client
        .watch_import(app.request(WatchImportRequest {
            id: queued.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    while let Some(update) = stream.message().await.unwrap() {
        if update.processed_items > 0 {
            break;
        }
    }
    client
        .cancel_import(app.request(CancelImportRequest {
            id: queued.id.clone(),
        }))
        .await
        .unwrap();
    let done = finished(&app, &queued.id).await;
    assert_eq!(done.state, JobState::Cancelled as i32);
    assert!(done.created_items > 0 && done.created_items < 3000, "{done:?}");
    assert_eq!(stored_count(&app).await, done.created_items);
    app.stop().await;
}

async fn stored_count(app: &TestApp) -> i64 {
    let filter = ferry::db::entities::EntityFilter::default();
    let mut conn = app.db().conn().await.unwrap();
    ferry::db::entities::count(&mut conn, &app.org_id, &filter)
        .await
        .unwrap()
}

async fn a_nul_byte_in_a_cell_fails_that_row_and_the_others_import(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    // More rows than one batch, so a batch-wide failure would show as a half write.
    let mut csv = String::from("tax_id,type,suggested_name,attributes.note\n");
    for i in 0..3_000 {
        csv.push_str(&format!("{},person,Person {i},ok\n", 100_000_000 + i));
    }
    csv.push_str("799999998,person,Fine,a\u{0}b\n");
    csv.push_str("799999999,person,bad\u{0}name,ok\n");
    let options = ImportOptions {
        size_bytes: csv.len() as i64,
        ..country("US")
    };
    let done = import_and_wait(&app, options, &csv).await;
    assert_eq!(done.state, JobState::Completed as i32, "{:?}", done.error);
    assert_eq!(
        (done.created_items, done.failed_items),
        (3_000, 2),
        "every other row is written"
    );
    let errors = ImportServiceClient::new(app.channel.clone())
        .list_import_errors(app.request(ListImportErrorsRequest {
            import_id: done.id.clone(),
            page_size: 10,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .errors;
    let found: Vec<(i64, &str, &str)> = errors
        .iter()
        .map(|e| (e.line, e.column.as_str(), e.code.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (3_002, "attributes.note", "INVALID_CHARACTER"),
            (3_003, "suggested_name", "INVALID_CHARACTER")
        ]
    );
    // The organization's attribute filters keep working.
    let listed = EntityServiceClient::new(app.channel.clone())
        .list_entities(app.request(ListEntitiesRequest {
            filter: Some(EntityFilter {
                attributes: vec![AttributeEquals {
                    path: "note".into(),
                    value: "ok".into(),
                }],
                ..Default::default()
            }),
            page_size: 1,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.entities.len(), 1);
    match backend {
        // Above 1,000 matches the total is PostgreSQL's estimate.
        Backend::Postgres => assert!(listed.total_size > 1_000, "{}", listed.total_size),
        Backend::Sqlite => assert_eq!(listed.total_size, 3_000),
    }
    app.stop().await;
}

async fn a_nul_byte_in_a_header_fails_preflight(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let csv = "tax_id,type,suggested_name,attributes.no\u{0}te\n100000001,person,Ann,x\n";
    let options = ImportOptions {
        size_bytes: csv.len() as i64,
        ..country("US")
    };
    let status = upload(&app, options, csv).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason(&status), "INVALID_HEADER", "{}", status.message());
    assert!(stored(&app).await.is_empty());
    app.stop().await;
}

async fn an_upload_chunk_over_the_message_limit_is_message_too_large(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let mut csv = String::from("tax_id,type,suggested_name\n");
    while csv.len() < 5 << 20 {
        csv.push_str("100000001,person,Someone with a long enough name to fill the file quickly\n");
    }
    let options = ImportOptions {
        size_bytes: csv.len() as i64,
        ..country("US")
    };
    // One chunk of 5 MiB: over the 4 MiB chunk limit.
    let stream = tokio_stream::iter(messages(options, csv.as_bytes(), csv.len()));
    let status = ImportServiceClient::new(app.channel.clone())
        .upload_import(app.request(stream))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{}", status.message());
    assert_eq!(reason(&status), "MESSAGE_TOO_LARGE");
    assert!(stored(&app).await.is_empty());
    app.stop().await;
}

async fn a_cancel_at_thirty_percent_is_answered_and_honoured_within_a_batch(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    // The plan's limit: as long a run as one upload can be.
    let rows = 100_000;
    let mut csv = String::from("tax_id,type,suggested_name\n");
    for i in 0..rows {
        csv.push_str(&format!("{},person,Person {i}\n", 100_000_000 + i));
    }
    let options = ImportOptions {
        size_bytes: csv.len() as i64,
        ..country("US")
    };
    let queued = upload(&app, options, &csv).await.unwrap();
    let mut client = ImportServiceClient::new(app.channel.clone());
    let mut stream = client
        .watch_import(app.request(WatchImportRequest {
            id: queued.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    let mut seen = 0;
    while let Some(update) = stream.message().await.unwrap() {
        seen = update.processed_items;
        if seen * 10 >= rows * 3 {
            break;
        }
    }
    // Answered while it runs: never "already ended" because it outran the cancel.
    let answer = client
        .cancel_import(app.request(CancelImportRequest {
            id: queued.id.clone(),
        }))
        .await;
    assert!(answer.is_ok(), "{answer:?}");
    let done = finished(&app, &queued.id).await;
    // Honoured at the next batch. Progress is published at most every 500 ms, so
    // on a loaded machine the watcher can see 30 % late; a job already past its
    // last batch when the cancel came finishes, as the worker documents, so only a
    // cancel seen well before the end must stop it.
    if seen * 10 < rows * 6 {
        assert_eq!(
            done.state,
            JobState::Cancelled as i32,
            "cancelled at {seen} rows: {done:?}"
        );
        assert!(done.created_items < rows, "{done:?}");
    }
    assert_eq!(stored_count(&app).await, done.created_items);
    app.stop().await;
}

/// A workbook as people make one: a blank row above the header, a tax ID typed as
/// a number, a date, a boolean, a second sheet.
fn workbook() -> Vec<u8> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("clients").unwrap();
    for (col, name) in [
        "Tax ID",
        "Type",
        "Name",
        "Registration Date",
        "is_client",
        "attributes.score",
    ]
    .iter()
    .enumerate()
    {
        sheet.write_string(1, col as u16, *name).unwrap();
    }
    let date = rust_xlsxwriter::ExcelDateTime::from_ymd(2021, 3, 4).unwrap();
    let date_format = rust_xlsxwriter::Format::new().set_num_format("dd/mm/yyyy");
    sheet.write_number(2, 0, 20123456786.0).unwrap();
    sheet.write_string(2, 1, "pf").unwrap();
    sheet.write_string(2, 2, "=Ana").unwrap();
    sheet
        .write_datetime_with_format(2, 3, &date, &date_format)
        .unwrap();
    sheet.write_boolean(2, 4, true).unwrap();
    sheet.write_number(2, 5, 12.5).unwrap();
    // A number too long for a spreadsheet to hold exactly fails its row.
    sheet.write_number(3, 0, 12345678901234567890.0).unwrap();
    sheet.write_string(3, 1, "pf").unwrap();
    sheet.write_string(3, 2, "Too Long").unwrap();
    book.add_worksheet().set_name("notes").unwrap();
    book.save_to_buffer().unwrap()
}

async fn an_xlsx_workbook_imports_its_first_sheet_with_every_digit(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let options = ImportOptions {
        file_name: "clients.xlsx".into(),
        ..country("US")
    };
    let queued = upload_as(&app, &app.key, &app.org_id, options, &workbook())
        .await
        .unwrap();
    let notices: Vec<&str> = queued.notices.iter().map(|n| n.code.as_str()).collect();
    assert_eq!(notices, ["OTHER_SHEETS_NOT_READ"]);
    let done = finished(&app, &queued.id).await;
    assert_eq!(done.state, JobState::Completed as i32, "{:?}", done.error);
    assert_eq!((done.created_items, done.failed_items), (1, 1));
    let rows = stored(&app).await;
    let ana = by_tax_id(&rows, "20123456786");
    // Text in a workbook is never a formula: nothing is unescaped.
    assert_eq!(ana.name, "=Ana");
    assert_eq!(ana.registration_date.as_deref(), Some("2021-03-04"));
    assert!(ana.is_client);
    assert_eq!(json_of(&ana.attributes), json!({"score": "12.5"}));
    let errors = errors_of(&app, &done.id).await;
    let listed: Vec<(i64, &str, &str)> = errors
        .errors
        .iter()
        .map(|e| (e.line, e.column.as_str(), e.code.as_str()))
        .collect();
    // Lines are the sheet's rows.
    assert_eq!(listed, [(4, "Tax ID", "INEXACT_NUMBER")]);
    assert!(
        errors.errors[0].message.contains("A4"),
        "{}",
        errors.errors[0].message
    );

    // A pre-flight problem names the sheet and row.
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    sheet.write_string(0, 0, "tax_id").unwrap();
    sheet.write_string(0, 1, "type").unwrap();
    sheet.write_string(1, 0, "1").unwrap();
    sheet.write_string(1, 1, "pf").unwrap();
    sheet.write_string(1, 3, "past the header").unwrap();
    let options = ImportOptions {
        file_name: "bad.xlsx".into(),
        ..country("US")
    };
    let status = upload_as(
        &app,
        &app.key,
        &app.org_id,
        options,
        &book.save_to_buffer().unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&status), "RAGGED_ROW");
    assert_eq!(violated_fields(&status), ["sheet \"Sheet1\" row 2"]);
    // A file that is not a workbook.
    let options = ImportOptions {
        file_name: "fake.xlsx".into(),
        ..country("US")
    };
    let status = upload(&app, options, "tax_id,type\n1,pf\n").await.unwrap_err();
    assert_eq!(reason(&status), "INVALID_XLSX");
    app.stop().await;
}

async fn an_ndjson_file_imports_with_its_keys_as_columns_and_bad_lines_are_named(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let ndjson = r#"{"tax_id": "A1", "type": "person", "name": "Ana", "attributes": {"n": 5, "tags": ["x"]}}
{"tax_id": "B2", "type": "company", "name": "Acme", "is_client": true, "country": "MX", "external_id": 77}
"#;
    let options = ImportOptions {
        file_name: "people.jsonl".into(),
        ..country("US")
    };
    let done = import_and_wait(&app, options, ndjson).await;
    assert_eq!(done.state, JobState::Completed as i32, "{:?}", done.error);
    assert_eq!((done.created_items, done.failed_items), (2, 0));
    let rows = stored(&app).await;
    let ana = by_tax_id(&rows, "A1");
    assert_eq!((ana.country.as_str(), ana.is_client), ("US", false));
    assert_eq!(json_of(&ana.attributes), json!({"n": 5, "tags": ["x"]}));
    let acme = by_tax_id(&rows, "B2");
    assert_eq!(
        (acme.country.as_str(), acme.is_client, acme.external_id.as_deref()),
        ("MX", true, Some("77"))
    );
    // Lines that are not objects are named by their line.
    let bad = "{\"tax_id\": \"C3\", \"type\": \"person\", \"name\": \"C\"}\n\n[1, 2]\n{\"tax_id\": \n";
    let options = ImportOptions {
        format: ImportFormat::Ndjson as i32,
        ..country("US")
    };
    let status = upload(&app, options, bad).await.unwrap_err();
    assert_eq!(reason(&status), "INVALID_JSON");
    assert_eq!(violated_fields(&status), ["line 3", "line 4"]);
    app.stop().await;
}

async fn validate_only_counts_what_an_import_would_do_and_writes_no_entity(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let first = "tax_id,type,name\nA1,pf,Ana\nB2,pf,Bea\n";
    let done = import_and_wait(&app, country("US"), first).await;
    assert_eq!(done.created_items, 2);
    let before = stored(&app).await;
    // A1 unchanged, B2 renamed, C3 new (twice: created, then updated), D4 fails.
    let check = "tax_id,type,name\nA1,pf,Ana\nB2,pf,Beatriz\nC3,pf,Cai\nC3,pf,Cai Li\nD4,alien,Dan\n";
    let options = ImportOptions {
        validate_only: true,
        ..country("US")
    };
    let done = import_and_wait(&app, options, check).await;
    assert_eq!(done.state, JobState::Completed as i32, "{:?}", done.error);
    assert_eq!(
        (
            done.created_items,
            done.updated_items,
            done.unchanged_items,
            done.failed_items,
            done.has_error_report
        ),
        (1, 2, 1, 1, true)
    );
    assert!(done.options.unwrap().validate_only);
    assert_eq!(
        stored(&app).await,
        before,
        "a validate-only import wrote entities"
    );
    let errors = errors_of(&app, &done.id).await;
    assert_eq!(
        errors
            .errors
            .iter()
            .map(|e| (e.line, e.code.as_str()))
            .collect::<Vec<_>>(),
        [(6, "INVALID_TYPE")]
    );
    app.stop().await;
}
