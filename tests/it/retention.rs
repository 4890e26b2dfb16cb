//! Data growth is bounded: ended jobs past `jobs.retention_days` go with their
//! import errors, e-mail ledger and stored files; a completed export waits for its
//! file to expire first.

use std::time::Duration;

use ferry::proto::{
    CreateExportRequest, GetExportRequest, GetImportRequest, ImportOptions, JobState, UploadImportRequest,
    export_service_client::ExportServiceClient, import_service_client::ImportServiceClient,
    upload_import_request::Payload,
};
use tonic::Code;

use crate::on_both_backends;
use crate::support::{Backend, TestApp, execute};

on_both_backends!(
    an_ended_job_past_its_retention_goes_with_its_errors_and_files,
    a_queued_import_cancelled_before_it_ran_leaves_no_upload,
    an_error_report_past_its_retention_is_deleted_and_its_download_is_gone,
    deleting_an_import_removes_its_files_and_error_rows_and_keeps_its_entities,
);

const DAY: i64 = 24 * 3600 * 1000;

/// Polls `get` every 50 ms until `ended` says so (at most 30 s).
async fn until_ended<T, F, Fut>(what: &str, mut get: F, ended: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    for _ in 0..600 {
        let now = get().await;
        if ended(&now) {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the {what} did not end within 30 s");
}

/// Imports `csv` (AR) and waits for the import's end.
async fn import(app: &TestApp, csv: &str) -> ferry::proto::Import {
    let messages = vec![
        UploadImportRequest {
            payload: Some(Payload::Options(ImportOptions {
                country: "AR".into(),
                ..Default::default()
            })),
        },
        UploadImportRequest {
            payload: Some(Payload::Chunk(csv.as_bytes().to_vec())),
        },
    ];
    let client = ImportServiceClient::new(app.channel.clone());
    let queued = client
        .clone()
        .upload_import(app.request(tokio_stream::iter(messages)))
        .await
        .unwrap()
        .into_inner();
    let get = || {
        let mut client = client.clone();
        let request = app.request(GetImportRequest {
            id: queued.id.clone(),
        });
        async move { client.get_import(request).await.unwrap().into_inner() }
    };
    until_ended("import", get, |i| i.end_time.is_some()).await
}

/// Exports every entity as CSV and waits for the export's end.
async fn export(app: &TestApp) -> ferry::proto::Export {
    let client = ExportServiceClient::new(app.channel.clone());
    let created = client
        .clone()
        .create_export(app.request(CreateExportRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let get = || {
        let mut client = client.clone();
        let request = app.request(GetExportRequest {
            id: created.id.clone(),
        });
        async move { client.get_export(request).await.unwrap().into_inner() }
    };
    until_ended("export", get, |e| e.end_time.is_some()).await
}

/// The files stored under `folder/<org>/<job id>/`.
fn files_of(app: &TestApp, folder: &str, id: &str) -> Vec<String> {
    let dir = app
        .db
        .data_dir()
        .join("files")
        .join(folder)
        .join(&app.org_id)
        .join(id);
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn an_ended_job_past_its_retention_goes_with_its_errors_and_files(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let done = import(
        &app,
        "tax_id,type,name\n20-12345678-6,pf,Ana\n20-12345678-5,pf,Bad Digit\n",
    )
    .await;
    assert_eq!(
        (done.state, done.failed_items, done.has_error_report),
        (JobState::Completed as i32, 1, true)
    );
    // The upload leaves the store as soon as the import has ended; the error
    // report stays for its retention.
    let left = until_ended(
        "upload's removal",
        || async { files_of(&app, "imports", &done.id) },
        |files| files.len() == 1,
    )
    .await;
    assert_eq!(left, ["errors.csv"]);
    let exported = export(&app).await;
    assert_eq!(exported.state, JobState::Completed as i32);
    assert_eq!(files_of(&app, "exports", &exported.id).len(), 1);
    let recent = import(&app, "tax_id,type,name\n20-12345678-6,pf,Ana María\n").await;

    // Both jobs of the first two ended 100 days ago; the retention is 90 days.
    // The import's error report expired long before (7 days).
    execute(
        app.db(),
        &format!(
            "UPDATE jobs SET finished_at = finished_at - {} WHERE id IN ('{}', '{}')",
            100 * DAY,
            done.id,
            exported.id
        ),
    )
    .await;
    execute(
        app.db(),
        &format!("UPDATE jobs SET expires_at = 1 WHERE id = '{}'", done.id),
    )
    .await;
    assert_eq!(
        ferry::import::expiry::expire_once(&app.app.queue, &app.app.storage)
            .await
            .unwrap(),
        1
    );
    let kinds = app.app.job_kinds();
    let before = ferry::db::now_ms() - 90 * DAY;
    let removed = ferry::jobs::retention::purge(app.db(), &app.app.storage, &kinds, before)
        .await
        .unwrap();
    assert_eq!(removed, 1, "only the old import goes");
    let gone = ImportServiceClient::new(app.channel.clone())
        .get_import(app.request(GetImportRequest { id: done.id.clone() }))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let mut conn = app.db().conn().await.unwrap();
    assert_eq!(
        ferry::db::import_errors::count(&mut conn, &done.id)
            .await
            .unwrap(),
        0
    );
    drop(conn);
    assert!(files_of(&app, "imports", &done.id).is_empty());
    // The recent import (its upload already gone: it had ended) and the export
    // whose file has not expired stay.
    ImportServiceClient::new(app.channel.clone())
        .get_import(app.request(GetImportRequest {
            id: recent.id.clone(),
        }))
        .await
        .unwrap();
    assert_eq!(files_of(&app, "exports", &exported.id).len(), 1);

    // Once the janitor expired the export's file, the next pass removes the job.
    execute(
        app.db(),
        &format!("UPDATE jobs SET expires_at = 1 WHERE id = '{}'", exported.id),
    )
    .await;
    ferry::export::janitor::expire_once(&app.app.queue, &app.app.storage)
        .await
        .unwrap();
    let removed = ferry::jobs::retention::purge(app.db(), &app.app.storage, &kinds, before)
        .await
        .unwrap();
    assert_eq!(removed, 1);
    let gone = ExportServiceClient::new(app.channel.clone())
        .get_export(app.request(GetExportRequest {
            id: exported.id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert!(files_of(&app, "exports", &exported.id).is_empty());
    app.stop().await;
}

/// More ended jobs than one batch: every one past the retention goes, in several
/// short transactions, and none younger.
async fn jobs_past_their_retention_go_in_batches(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let model = import(&app, "tax_id,type,name\n20-12345678-6,pf,Ana\n").await;
    let old = ferry::db::now_ms() - 100 * DAY;
    let batch = ferry::jobs::retention::BATCH;
    let copies = 2 * batch + 7;
    execute(
        app.db(),
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {copies}) \
             INSERT INTO jobs (id, organization_id, kind, state, payload, result, search_text, attempts, \
             max_attempts, run_after, rows_done, bytes_done, version, cancel_requested, created_at, \
             finished_at, updated_at) \
             SELECT 'old-' || n.i, organization_id, kind, 'failed', payload, result, '', 1, 3, 0, 0, 0, 0, \
             false, {old}, {old} + n.i, {old} + n.i FROM jobs, n WHERE jobs.id = '{}'",
            model.id
        ),
    )
    .await;
    let before = ferry::db::now_ms() - 90 * DAY;
    let kinds = app.app.job_kinds();
    let removed = ferry::jobs::retention::purge(app.db(), &app.app.storage, &kinds, before)
        .await
        .unwrap();
    assert_eq!(removed as i64, copies);
    // The model itself ended now: kept.
    ImportServiceClient::new(app.channel.clone())
        .get_import(app.request(GetImportRequest { id: model.id }))
        .await
        .unwrap();
    app.stop().await;
}

on_both_backends!(jobs_past_their_retention_go_in_batches);

/// No worker runs: the import stays queued with its upload stored until it is
/// cancelled, and then the upload leaves the store.
async fn a_queued_import_cancelled_before_it_ran_leaves_no_upload(backend: Backend) {
    let app = TestApp::start(backend).await;
    let messages = vec![
        UploadImportRequest {
            payload: Some(Payload::Options(ImportOptions {
                country: "AR".into(),
                ..Default::default()
            })),
        },
        UploadImportRequest {
            payload: Some(Payload::Chunk(
                b"tax_id,type,name\n20-12345678-6,pf,Ana\n".to_vec(),
            )),
        },
    ];
    let mut client = ImportServiceClient::new(app.channel.clone());
    let queued = client
        .upload_import(app.request(tokio_stream::iter(messages)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(files_of(&app, "imports", &queued.id), ["upload.csv"]);
    let cancelled = client
        .cancel_import(app.request(ferry::proto::CancelImportRequest {
            id: queued.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state, JobState::Cancelled as i32);
    until_ended(
        "upload's removal",
        || async { files_of(&app, "imports", &queued.id) },
        Vec::is_empty,
    )
    .await;
    app.stop().await;
}

/// DeleteImport (gRPC) and its REST route: the error report and error rows go with
/// the import, which is then NOT_FOUND; the entities it wrote stay.
async fn deleting_an_import_removes_its_files_and_error_rows_and_keeps_its_entities(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let done = import(
        &app,
        "tax_id,type,name\n20-12345678-6,pf,Ana\n20-12345678-5,pf,Bad Digit\n",
    )
    .await;
    assert_eq!((done.created_items, done.failed_items), (1, 1));
    until_ended(
        "upload's removal",
        || async { files_of(&app, "imports", &done.id) },
        |files| files.len() == 1,
    )
    .await;
    let mut client = ImportServiceClient::new(app.channel.clone());
    client
        .delete_import(app.request(ferry::proto::DeleteImportRequest { id: done.id.clone() }))
        .await
        .unwrap();
    assert!(
        files_of(&app, "imports", &done.id).is_empty(),
        "the error report stays"
    );
    let gone = client
        .get_import(app.request(GetImportRequest { id: done.id.clone() }))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let mut conn = app.db().conn().await.unwrap();
    assert_eq!(
        ferry::db::import_errors::count(&mut conn, &done.id)
            .await
            .unwrap(),
        0
    );
    let filter = ferry::db::entities::EntityFilter::default();
    assert_eq!(
        ferry::db::entities::count(&mut conn, &app.org_id, &filter)
            .await
            .unwrap(),
        1,
        "the entity the import wrote stays"
    );
    drop(conn);
    let again = client
        .delete_import(app.request(ferry::proto::DeleteImportRequest { id: done.id.clone() }))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);

    // The REST door: DELETE /batch-import/import/entities/{jobId}.
    let second = import(&app, "tax_id,type,name\n20-12345678-6,pf,Ana María\n").await;
    let url = format!(
        "http://{}/batch-import/import/entities/{}",
        app.http_addr(),
        second.id
    );
    let auth = format!("Authorization: Bearer {}", app.key);
    let answer = crate::support::curl(&["-X", "DELETE", "-H", &auth, &url]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.body.contains("Import deleted successfully"),
        "{}",
        answer.body
    );
    let answer = crate::support::curl(&["-H", &auth, &url]).await;
    assert_eq!(answer.status, 404, "{}", answer.body);
    app.stop().await;
}

/// A completed import's error report is kept `bulk_import.report_retention_days`
/// (7) and then deleted: the import stays COMPLETED with its counters and error
/// rows, and the report's download answers FAILED_PRECONDITION (REST: 410)
/// `IMPORT_REPORT_EXPIRED`.
async fn an_error_report_past_its_retention_is_deleted_and_its_download_is_gone(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let done = import(
        &app,
        "tax_id,type,name\n20-12345678-6,pf,Ana\n20-12345678-5,pf,Bad Digit\n",
    )
    .await;
    assert!(done.has_error_report);
    let mut client = ImportServiceClient::new(app.channel.clone());
    client
        .get_import_error_report(app.request(ferry::proto::GetImportErrorReportRequest {
            import_id: done.id.clone(),
        }))
        .await
        .unwrap();
    // Not yet due: nothing expires.
    assert_eq!(
        ferry::import::expiry::expire_once(&app.app.queue, &app.app.storage)
            .await
            .unwrap(),
        0
    );
    let row = ferry::db::jobs::find(&mut app.db().conn().await.unwrap(), &done.id)
        .await
        .unwrap()
        .unwrap();
    let in_seven_days = ferry::db::now_ms() + 7 * DAY;
    let expires_at = row.expires_at.expect("a report has an expiry");
    assert!((expires_at - in_seven_days).abs() < 60_000, "{expires_at}");

    execute(
        app.db(),
        &format!("UPDATE jobs SET expires_at = 1 WHERE id = '{}'", done.id),
    )
    .await;
    assert_eq!(
        ferry::import::expiry::expire_once(&app.app.queue, &app.app.storage)
            .await
            .unwrap(),
        1
    );
    assert!(files_of(&app, "imports", &done.id).is_empty(), "the report stays");
    let refused = client
        .get_import_error_report(app.request(ferry::proto::GetImportErrorReportRequest {
            import_id: done.id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(crate::support::reason(&refused), "IMPORT_REPORT_EXPIRED");
    let after = client
        .get_import(app.request(GetImportRequest { id: done.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.state, JobState::Completed as i32);
    assert_eq!((after.created_items, after.failed_items), (1, 1));
    assert!(!after.has_error_report);
    let errors = client
        .list_import_errors(app.request(ferry::proto::ListImportErrorsRequest {
            import_id: done.id.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!errors.errors.is_empty(), "the error rows stay with the import");
    app.stop().await;
}
