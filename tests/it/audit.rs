//! The audit trail: every change and every link handed out is recorded once, with
//! who, what, which object, the request id and how it ended; reads are not; a
//! change whose record cannot be written does not happen; old events go.

use std::time::Duration;

use ferry::db::audit::AuditRow;
use ferry::proto::export_service_client::ExportServiceClient;
use ferry::proto::import_service_client::ImportServiceClient;
use ferry::proto::mapping_service_client::MappingServiceClient;
use ferry::proto::upload_import_request::Payload;
use ferry::proto::{
    CancelExportRequest, CancelImportRequest, CreateExportRequest, CreateMappingRequest, DeleteExportRequest,
    DeleteMappingRequest, GetExportDownloadRequest, GetExportRequest, ImportOptions, JobState,
    ListExportsRequest, MappingKind, UploadImportRequest,
};
use tonic::Code;

use crate::on_both_backends;
use crate::support::{Backend, TestApp, Workers, curl};

on_both_backends!(
    every_change_and_link_over_grpc_is_recorded_once_with_who_what_and_how_it_ended,
    rest_changes_the_302_download_and_refusals_are_recorded_with_their_route,
    a_change_whose_audit_record_cannot_be_written_is_not_made,
    events_past_their_retention_are_removed,
);

const UNKNOWN: &str = "0190d7a4-5a1c-7cc0-9d3e-2f1b5c6a7e80";

fn traced<T>(app: &TestApp, message: T, request_id: &str) -> tonic::Request<T> {
    let mut request = app.request(message);
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().unwrap());
    request
}

fn key_id(app: &TestApp) -> String {
    app.key.split('_').nth(1).unwrap().to_string()
}

async fn trail(app: &TestApp) -> Vec<AuditRow> {
    ferry::audit::list(app.db(), &app.org_id, 0, 1000).await.unwrap()
}

async fn completed(app: &TestApp, id: &str) {
    for _ in 0..300 {
        let export = ExportServiceClient::new(app.channel.clone())
            .get_export(app.request(GetExportRequest { id: id.into() }))
            .await
            .unwrap()
            .into_inner();
        if export.state == JobState::Completed as i32 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("export {id} did not complete");
}

async fn every_change_and_link_over_grpc_is_recorded_once_with_who_what_and_how_it_ended(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let mut exports = ExportServiceClient::new(app.channel.clone());
    let export = exports
        .create_export(traced(&app, CreateExportRequest::default(), "trace-create"))
        .await
        .unwrap()
        .into_inner();
    completed(&app, &export.id).await;
    // Reads are not recorded.
    exports
        .list_exports(app.request(ListExportsRequest::default()))
        .await
        .unwrap();
    exports
        .get_export_download(traced(
            &app,
            GetExportDownloadRequest {
                id: export.id.clone(),
            },
            "trace-link",
        ))
        .await
        .unwrap();
    let refused = exports
        .cancel_export(traced(
            &app,
            CancelExportRequest {
                id: export.id.clone(),
            },
            "trace-cancel",
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    exports
        .delete_export(traced(
            &app,
            DeleteExportRequest {
                id: export.id.clone(),
            },
            "trace-delete",
        ))
        .await
        .unwrap();

    let mut mappings = MappingServiceClient::new(app.channel.clone());
    let mapping = mappings
        .create_mapping(traced(
            &app,
            CreateMappingRequest {
                name: "crm".into(),
                kind: MappingKind::EntityMixed as i32,
                columns: [("CUIT".to_string(), "tax_id".to_string())].into(),
            },
            "trace-map",
        ))
        .await
        .unwrap()
        .into_inner();
    mappings
        .delete_mapping(traced(
            &app,
            DeleteMappingRequest {
                id: mapping.id.clone(),
            },
            "trace-unmap",
        ))
        .await
        .unwrap();

    let upload = tokio_stream::iter(vec![
        UploadImportRequest {
            payload: Some(Payload::Options(ImportOptions {
                country: "AR".into(),
                ..Default::default()
            })),
        },
        UploadImportRequest {
            payload: Some(Payload::Chunk(
                b"tax_id,name,type\n20123456786,Ana,person\n".to_vec(),
            )),
        },
    ]);
    let mut imports = ImportServiceClient::new(app.channel.clone());
    let import = imports
        .upload_import(traced(&app, upload, "trace-upload"))
        .await
        .unwrap()
        .into_inner();
    let missing = imports
        .cancel_import(traced(
            &app,
            CancelImportRequest { id: UNKNOWN.into() },
            "trace-missing",
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let events = trail(&app).await;
    let seen: Vec<(&str, &str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e.method.rsplit('/').next().unwrap(),
                e.target_id.as_str(),
                e.request_id.as_str(),
                e.outcome.as_str(),
            )
        })
        .collect();
    let id = export.id.as_str();
    assert_eq!(
        seen,
        vec![
            ("CreateExport", id, "trace-create", "OK"),
            ("GetExportDownload", id, "trace-link", "OK"),
            ("CancelExport", id, "trace-cancel", "FAILED_PRECONDITION"),
            ("DeleteExport", id, "trace-delete", "OK"),
            ("CreateMapping", mapping.id.as_str(), "trace-map", "OK"),
            ("DeleteMapping", mapping.id.as_str(), "trace-unmap", "OK"),
            ("UploadImport", import.id.as_str(), "trace-upload", "OK"),
            ("CancelImport", UNKNOWN, "trace-missing", "NOT_FOUND"),
        ]
    );
    for event in &events {
        assert_eq!(event.principal, key_id(&app));
        assert_eq!(event.door, "grpc");
        assert_eq!(event.organization_id, app.org_id);
        assert!(event.method.starts_with("/ferry.v1."), "{event:?}");
    }
    assert!(
        events[2].detail.contains("already"),
        "a refusal keeps its message: {:?}",
        events[2]
    );
    app.stop().await;
}

async fn rest_changes_the_302_download_and_refusals_are_recorded_with_their_route(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let base = format!("http://{}", app.http_addr());
    let key = format!("x-api-key: {}", app.key);
    let created = curl(&[
        "-X",
        "POST",
        "-H",
        &key,
        "-H",
        "x-request-id: rest-create",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"schema_id": "person", "start_date": "2000-01-01T00:00:00.000Z", "end_date": "2100-01-31T23:59:59.999Z"}"#,
        &format!("{base}/v1/exports"),
    ])
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_string();
    completed(&app, &id).await;
    let redirect = curl(&[
        "-H",
        &key,
        "-H",
        "x-request-id: rest-link",
        &format!("{base}/v1/exports/{id}/download"),
    ])
    .await;
    assert_eq!(redirect.status, 302, "{}", redirect.body);
    let gone = curl(&[
        "-X",
        "DELETE",
        "-H",
        &key,
        "-H",
        "x-request-id: rest-gone",
        &format!("{base}/v1/exports/{UNKNOWN}"),
    ])
    .await;
    assert_eq!(gone.status, 404);
    // A read is not recorded.
    assert_eq!(
        curl(&["-H", &key, &format!("{base}/v1/exports")]).await.status,
        200
    );

    let events = trail(&app).await;
    let seen: Vec<(&str, &str, &str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e.door.as_str(),
                e.method.as_str(),
                e.target_id.as_str(),
                e.request_id.as_str(),
                e.outcome.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("rest", "POST /v1/exports", id.as_str(), "rest-create", "OK"),
            (
                "rest",
                "GET /v1/exports/{id}/download",
                id.as_str(),
                "rest-link",
                "OK"
            ),
            (
                "rest",
                "DELETE /v1/exports/{id}",
                UNKNOWN,
                "rest-gone",
                "HTTP 404"
            ),
        ]
    );
    assert!(events.iter().all(|e| e.principal == key_id(&app)));
    app.stop().await;
}

async fn a_change_whose_audit_record_cannot_be_written_is_not_made(backend: Backend) {
    let app = TestApp::start(backend).await;
    crate::support::execute(app.db(), "ALTER TABLE audit_events RENAME TO audit_events_away").await;
    let refused = ExportServiceClient::new(app.channel.clone())
        .create_export(app.request(CreateExportRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Internal, "{refused:?}");
    let refused = MappingServiceClient::new(app.channel.clone())
        .create_mapping(app.request(CreateMappingRequest {
            name: "crm".into(),
            kind: MappingKind::EntityMixed as i32,
            columns: [("CUIT".to_string(), "tax_id".to_string())].into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Internal, "{refused:?}");
    crate::support::execute(app.db(), "ALTER TABLE audit_events_away RENAME TO audit_events").await;
    // Neither change happened.
    let listed = ExportServiceClient::new(app.channel.clone())
        .list_exports(app.request(ListExportsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total_size, 0, "an export was queued without its record");
    let mut conn = app.db().conn().await.unwrap();
    assert_eq!(
        ferry::db::mappings::count(&mut conn, &app.org_id).await.unwrap(),
        0
    );
    drop(conn);
    app.stop().await;
}

async fn events_past_their_retention_are_removed(backend: Backend) {
    // The server's own hourly purge is off here, so the count below is this call's.
    let app = TestApp::start_with(backend, |c| c.audit.retention_days = 0, Workers::None).await;
    let day = 24 * 3600 * 1000;
    let event = |id: &str, age_days: i64| AuditRow {
        id: id.into(),
        at: ferry::db::now_ms() - age_days * day,
        organization_id: app.org_id.clone(),
        principal: "admin:test".into(),
        door: "admin".into(),
        method: "admin org set-plan".into(),
        target_id: app.org_id.clone(),
        request_id: id.into(),
        outcome: "OK".into(),
        detail: String::new(),
    };
    let mut conn = app.db().conn().await.unwrap();
    ferry::db::audit::insert(&mut conn, &event("old", 400))
        .await
        .unwrap();
    ferry::db::audit::insert(&mut conn, &event("recent", 10))
        .await
        .unwrap();
    drop(conn);
    let gone = ferry::audit::purge(app.db(), Duration::from_secs(365 * 24 * 3600))
        .await
        .unwrap();
    assert_eq!(gone, 1);
    let kept: Vec<String> = trail(&app).await.into_iter().map(|e| e.id).collect();
    assert_eq!(kept, vec!["recent".to_string()]);
    app.stop().await;
}
