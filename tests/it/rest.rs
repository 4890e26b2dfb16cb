//! The REST door of the predecessor APIs, driven with the `curl` binary as their
//! clients drive it: seed 001/004's `/v1/exports` (201, numbered pages, 302 to the
//! file, delete), the seeds' error envelope and status table, and the auth matrix
//! over every route.

use std::net::SocketAddr;

use ferry::auth::{Permission, keys};
use ferry::proto::{GetExportDownloadRequest, export_service_client::ExportServiceClient};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::on_both_backends;
use crate::support::{Answer, Backend, TestApp, curl};

on_both_backends!(
    seed_001_exports_are_created_listed_downloaded_by_redirect_and_deleted,
    rest_errors_use_the_seed_envelope_and_the_status_table,
    every_rest_route_refuses_a_missing_key_a_bad_key_and_a_missing_permission,
);

fn base(app: &TestApp) -> String {
    let addr: SocketAddr = app.http_addr();
    format!("http://{addr}")
}

fn create_body(schema: &str, start: &str) -> String {
    format!(r#"{{"schema_id": "{schema}", "start_date": "{start}", "end_date": "2100-01-31T23:59:59.999Z"}}"#)
}

async fn post_export(app: &TestApp, body: &str) -> Answer {
    let key = format!("x-api-key: {}", app.key);
    let url = format!("{}/v1/exports", base(app));
    curl(&[
        "-X",
        "POST",
        "-H",
        &key,
        "-H",
        "Content-Type: application/json",
        "-d",
        body,
        &url,
    ])
    .await
}

async fn seed_001_exports_are_created_listed_downloaded_by_redirect_and_deleted(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let rows: Vec<_> = (1..=30)
        .map(|n| crate::entities_fixture(&app.org_id, n))
        .collect();
    ferry::db::entities::insert(&mut app.db().conn().await.unwrap(), &rows)
        .await
        .unwrap();
    let key = format!("x-api-key: {}", app.key);

    let created = post_export(&app, &create_body("person", "2000-01-01T00:00:00.000Z")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let export = created.json();
    assert_eq!(export["schema_id"], "person");
    assert_eq!(export["status"], "PENDING");
    assert_eq!(export["start_date"], "2000-01-01T00:00:00Z");
    assert_eq!(export["expand_array"], Value::Null);
    assert!(export["createdAt"].is_string() && export["updatedAt"].is_string());
    let id = export["id"].as_str().unwrap().to_string();

    // Listed (numbered pages) until it completes.
    let list_url = format!(
        "{}/v1/exports?page=1&limit=20&sort_by=createdAt&sort_order=desc",
        base(&app)
    );
    let mut listed = Value::Null;
    for _ in 0..200 {
        listed = curl(&["-H", &key, &list_url]).await.json();
        if listed["data"][0]["status"] == "COMPLETED" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(listed["data"][0]["status"], "COMPLETED", "{listed}");
    assert_eq!(
        listed["meta"],
        serde_json::json!({"page": 1, "limit": 20, "total": 1, "totalPages": 1})
    );

    // The download: 302 to the file with {url} in the body; -L fetches the exact file.
    let download_url = format!("{}/v1/exports/{id}/download", base(&app));
    let redirect = curl(&["-H", &key, &download_url]).await;
    assert_eq!(redirect.status, 302, "{}", redirect.body);
    let location = redirect.header("location").unwrap().to_string();
    assert_eq!(redirect.json()["url"], location.as_str());
    let followed = tokio::process::Command::new("curl")
        .args(["-s", "-f", "-L", "-H", &key, &download_url])
        .output()
        .await
        .unwrap();
    assert!(followed.status.success());
    let link = ExportServiceClient::new(app.channel.clone())
        .get_export_download(app.request(GetExportDownloadRequest { id: id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hex::encode(Sha256::digest(&followed.stdout)), link.sha256);
    assert_eq!(String::from_utf8_lossy(&followed.stdout).lines().count(), 31);
    // Seed 001's scripts that ask for JSON alone get 200 {url}.
    let json = curl(&["-H", &key, "-H", "Accept: application/json", &download_url]).await;
    assert_eq!(json.status, 200);
    assert!(json.json()["url"].as_str().unwrap().contains("/files/"));

    let url = format!("{}/v1/exports/{id}", base(&app));
    let deleted = curl(&["-X", "DELETE", "-H", &key, &url]).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(
        deleted.json(),
        serde_json::json!({"message": "Export deleted successfully"})
    );
    let gone = curl(&["-H", &key, "-H", "x-request-id: trace-gone", &download_url]).await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.header("x-request-id"), Some("trace-gone"));
    let envelope = gone.json();
    assert_eq!(envelope["error"]["code"], "NOT_FOUND");
    assert_eq!(envelope["meta"]["request_id"], "trace-gone");
    app.stop().await;
}

async fn rest_errors_use_the_seed_envelope_and_the_status_table(backend: Backend) {
    // No worker: exports stay PENDING.
    let app = TestApp::start(backend).await;
    let key = format!("x-api-key: {}", app.key);

    let missing = post_export(&app, r#"{"start_date": "yesterday"}"#).await;
    assert_eq!(missing.status, 400);
    let envelope = missing.json();
    assert_eq!(envelope["error"]["code"], "INVALID_ARGUMENT");
    let fields: Vec<&str> = envelope["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["schema_id", "start_date", "end_date"]);

    let unknown_field = post_export(&app, r#"{"schema_id": "person", "event_type": "x"}"#).await;
    assert_eq!(unknown_field.status, 400);
    assert!(
        unknown_field.body.contains("event_type"),
        "{}",
        unknown_field.body
    );

    let schema = post_export(
        &app,
        &create_body("019760a0-0001-7000-8000-000000000001", "2000-01-01T00:00:00Z"),
    )
    .await;
    assert_eq!(schema.status, 404);
    assert_eq!(schema.json()["error"]["code"], "SCHEMA_NOT_FOUND");

    // Three exports (different dates, so none is a duplicate in progress).
    let mut ids = Vec::new();
    for year in ["2001", "2002", "2003"] {
        let created = post_export(&app, &create_body("entities", &format!("{year}-01-01T00:00:00Z"))).await;
        assert_eq!(created.status, 201, "{}", created.body);
        ids.push(created.json()["id"].as_str().unwrap().to_string());
    }
    let again = post_export(&app, &create_body("entities", "2003-01-01T00:00:00Z")).await;
    assert_eq!(again.status, 409);
    assert_eq!(again.json()["error"]["code"], "EXPORT_IN_PROGRESS");

    let page2 = curl(&[
        "-H",
        &key,
        &format!(
            "{}/v1/exports?page=2&limit=2&sort_order=asc&fields=id",
            base(&app)
        ),
    ])
    .await;
    assert_eq!(page2.status, 200);
    let page2 = page2.json();
    assert_eq!(page2["data"], serde_json::json!([{"id": ids[2]}]));
    assert_eq!(page2["meta"]["totalPages"], 2);
    assert_eq!(page2["meta"]["total"], 3);
    for bad in [
        "limit=0",
        "limit=101",
        "page=0",
        "sort_by=name",
        "fields=secret",
        "colour=red",
    ] {
        let answer = curl(&["-H", &key, &format!("{}/v1/exports?{bad}", base(&app))]).await;
        assert_eq!(answer.status, 400, "{bad}: {}", answer.body);
    }

    let not_ready = curl(&[
        "-H",
        &key,
        &format!("{}/v1/exports/{}/download", base(&app), ids[0]),
    ])
    .await;
    assert_eq!(not_ready.status, 409);
    assert_eq!(not_ready.json()["error"]["code"], "EXPORT_NOT_READY");

    // Another organization's export is not found, never forbidden.
    let (other_org, other_key) = app.other_org().await;
    let _ = other_org;
    let hidden = curl(&[
        "-H",
        &format!("Authorization: Bearer {other_key}"),
        &format!("{}/v1/exports/{}", base(&app), ids[0]),
        "-X",
        "DELETE",
    ])
    .await;
    assert_eq!(hidden.status, 404);
    app.stop().await;
}

async fn every_rest_route_refuses_a_missing_key_a_bad_key_and_a_missing_permission(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, no_export) = keys::create(app.db(), &app.org_id, "read", &[Permission::EntitiesRead], &[])
        .await
        .unwrap();
    for (method, route, _) in ferry::rest::ROUTES {
        let url = format!(
            "{}{}",
            base(&app),
            route.replace("{id}", "01a23e30-0000-7000-8000-000000000000")
        );
        let cases = [
            (vec![], 401, "UNAUTHORIZED"),
            (
                vec!["x-api-key: ferry_nope_nope".to_string()],
                401,
                "UNAUTHORIZED",
            ),
            (
                vec![format!("Authorization: Token {no_export}")],
                403,
                "MISSING_PERMISSION",
            ),
            (vec![format!("x-api-key: {no_export}")], 403, "MISSING_PERMISSION"),
            // Two different keys: refused, never one of them silently preferred.
            (
                vec![
                    format!("Authorization: Bearer {}", app.key),
                    format!("x-api-key: {no_export}"),
                ],
                401,
                "UNAUTHORIZED",
            ),
        ];
        for (headers, status, code) in cases {
            let mut args = vec!["-X".to_string(), method.to_string()];
            for header in headers {
                args.push("-H".into());
                args.push(header);
            }
            args.push(url.clone());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let answer = curl(&args).await;
            let body = answer.json();
            if route.starts_with("/api/v1/analytics/") {
                // Seed 002: its own envelope, and 401 for a missing permission too.
                assert_eq!(answer.status, 401, "{method} {route}: {}", answer.body);
                assert_eq!(body["errors"][0]["error_code"], code, "{method} {route}");
            } else {
                assert_eq!(answer.status, status, "{method} {route}: {}", answer.body);
                assert_eq!(body["error"]["code"], code, "{method} {route}");
            }
            assert!(answer.header("x-request-id").is_some());
        }
    }
    app.stop().await;
}

on_both_backends!(
    seed_003_multipart_import_with_every_form_field_is_queued_and_followed,
    seed_003_refusals_name_the_problem_in_the_envelope,
);

async fn enrichment_catalogue(app: &TestApp) {
    use ferry::db::enrichments::{self, EnrichmentRow};
    let mut conn = app.db().conn().await.unwrap();
    for code in ["nosis_enrichment", "global_gueno_sanctions_enrichment"] {
        let row = EnrichmentRow {
            organization_id: app.org_id.clone(),
            code: code.into(),
            entity_type: "any".into(),
            active: true,
            created_at: 1,
        };
        enrichments::upsert(&mut conn, &row).await.unwrap();
    }
}

async fn seed_003_multipart_import_with_every_form_field_is_queued_and_followed(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    enrichment_catalogue(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bulk-entities.csv");
    std::fs::write(
        &csv,
        "tax_id,type,country_code,suggested_name,segment_tag\n20123456786,company,AR,Acme Argentina SA,retail\n20-11111111-2,person,,Ana Gómez,wholesale\n,person,AR,Nobody,x\n",
    )
    .unwrap();
    let auth = format!("Authorization: Bearer {}", app.key);
    let url = format!("{}/batch-import/import/entities", base(&app));
    let file = format!("file=@{}", csv.display());
    let fields = [
        file.as_str(),
        "entityImportMode=automatic_enriched",
        "country=AR",
        "riskMatrixPersonId=01a23e30-0000-7000-8000-00000000000a",
        "riskMatrixCompanyId=01a23e30-0000-7000-8000-00000000000b",
        "skipRulesExecution=true",
        "stopOnFirstError=false",
        r#"autoExecuteIntegrations={"executeAllActiveEnrichments":false,"enrichments":["nosis_enrichment"]}"#,
        r#"autoExecuteIntegrationsShareholders={"executeAllActiveEnrichments":true,"excludeEnrichments":["global_gueno_sanctions_enrichment"]}"#,
        "childEnrichmentPolicy=by_root_type",
        "monitoringApplyToRelationships=false",
        "depth=1",
        "isClient=true",
        "status=under_review",
        r#"attributes={"source":"crm"}"#,
        "nationality=AR",
        r#"monitoring={"main":{"global_gueno_sanctions_enrichment":{"watchlist":true}}}"#,
        r#"reportRecipientEmails=["ops@acme.test"]"#,
        "emailLocale=es",
    ];
    let mut args = vec!["-X", "POST", "-H", &auth];
    for field in &fields {
        args.push("-F");
        args.push(field);
    }
    args.push(&url);
    let accepted = curl(&args).await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let body = accepted.json();
    assert_eq!(body["success"], true);
    assert_eq!(body["importMode"], "automatic");
    assert_eq!(body["totalItems"], 3);
    assert_eq!(body["message"], "Bulk import queued");
    let job = body["jobId"].as_str().unwrap().to_string();

    // The options reached the job as the gRPC API shows them.
    let import = ferry::proto::import_service_client::ImportServiceClient::new(app.channel.clone())
        .get_import(app.request(ferry::proto::GetImportRequest { id: job.clone() }))
        .await
        .unwrap()
        .into_inner();
    let options = import.options.unwrap();
    assert_eq!(options.country, "AR");
    assert_eq!(options.depth, Some(1));
    assert_eq!(options.is_client, Some(true));
    assert_eq!(options.monitoring_apply_to_relationships, Some(false));
    assert_eq!(options.report_recipient_emails, ["ops@acme.test"]);
    assert_eq!(options.email_locale, "es");
    assert_eq!(options.file_name, "bulk-entities.csv");
    assert_eq!(
        options.auto_execute_integrations.unwrap().enrichments,
        ["nosis_enrichment"]
    );

    let key = format!("x-api-key: {}", app.key);
    let status_url = format!("{url}/{job}");
    let mut status = Value::Null;
    for _ in 0..200 {
        status = curl(&["-H", &key, &status_url]).await.json();
        if status["status"] == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status["status"], "completed", "{status}");
    assert_eq!(status["failedItems"], 1);
    assert_eq!(status["hasErrorReport"], true);

    let errors = curl(&["-H", &key, &format!("{status_url}/errors?limit=1")]).await;
    assert_eq!(errors.status, 200, "{}", errors.body);
    let errors = errors.json();
    assert_eq!(errors["data"][0]["line"], 4);
    assert_eq!(errors["data"][0]["code"], "MISSING_TAX_ID");
    assert_eq!(errors["meta"]["total"], 1);
    assert_eq!(errors["meta"]["next"], Value::Null);
    app.stop().await;
}

async fn seed_003_refusals_name_the_problem_in_the_envelope(backend: Backend) {
    let app = TestApp::start(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("simple.csv");
    std::fs::write(
        &csv,
        "tax_id,type,suggested_name\n20123456786,person,Ana\n20111111112,person,Eva\n",
    )
    .unwrap();
    let auth = format!("Authorization: Bearer {}", app.key);
    let url = format!("{}/batch-import/import/entities", base(&app));
    let file = format!("file=@{}", csv.display());
    let post = |extra: &'static [&'static str]| {
        let mut args: Vec<String> = vec![
            "-X".into(),
            "POST".into(),
            "-H".into(),
            auth.clone(),
            "-F".into(),
            file.clone(),
        ];
        for field in extra {
            args.push("-F".into());
            args.push(field.to_string());
        }
        args.push(url.clone());
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            curl(&args).await
        }
    };

    // A simple CSV without the batch country: each line named.
    let missing = post(&[]).await;
    assert_eq!(missing.status, 400);
    let envelope = missing.json();
    assert_eq!(envelope["error"]["code"], "MISSING_COUNTRY");
    let details = envelope["error"]["details"].as_array().unwrap();
    assert_eq!(details[0]["field"], "line 2");
    assert_eq!(details[0]["code"], "MISSING_COUNTRY");
    assert_eq!(details.len(), 2);

    for (field, bad) in [
        ("entityImportMode", &["entityImportMode=sometimes"][..]),
        ("depth", &["country=AR", "depth=deep"][..]),
        (
            "autoExecuteIntegrations",
            &["country=AR", r#"autoExecuteIntegrations={"checks":[]}"#][..],
        ),
        ("eventType", &["country=AR", "eventType=click"][..]),
        // The shared checks' violations, in the form's own names.
        ("depth", &["country=AR", "depth=9"][..]),
        ("attributes", &["country=AR", "attributes=nope"][..]),
        ("country", &["country=ZZZ"][..]),
        (
            "fixesImportId",
            &["country=AR", "fixesImportId=no-such-import"][..],
        ),
    ] {
        let refused = post(bad).await;
        assert_eq!(refused.status, 400, "{field}: {}", refused.body);
        assert_eq!(refused.json()["error"]["details"][0]["field"], field);
    }

    // No file part at all.
    let no_file = curl(&["-X", "POST", "-H", &auth, "-F", "country=AR", &url]).await;
    assert_eq!(no_file.status, 400);
    assert_eq!(no_file.json()["error"]["details"][0]["field"], "file");

    // Accepted once the country is there; the job waits (no worker).
    let accepted = post(&["country=AR"]).await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    assert_eq!(accepted.json()["importMode"], "manual");
    app.stop().await;
}

on_both_backends!(seed_000_email_export_takes_the_seed_body_and_flat_filters);

async fn seed_000_email_export_takes_the_seed_body_and_flat_filters(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let rows: Vec<_> = (1..=12)
        .map(|n| crate::entities_fixture(&app.org_id, n))
        .collect();
    ferry::db::entities::insert(&mut app.db().conn().await.unwrap(), &rows)
        .await
        .unwrap();
    let auth = format!("Authorization: Bearer {}", app.key);
    let url = format!("{}/entities/export/jobs", base(&app));
    let post = |body: String| {
        let (auth, url) = (auth.clone(), url.clone());
        async move {
            curl(&[
                "-X",
                "POST",
                "-H",
                &auth,
                "-H",
                "Content-Type: application/json",
                "-d",
                &body,
                &url,
            ])
            .await
        }
    };

    // The seed's own example shape, `"fromSenderId": {}` meaning absent.
    let accepted = post(
        r#"{"recipientEmails": ["analyst@example.com"], "format": "csv", "emailLocale": "en", "fromSenderId": {},
            "columns": ["tax_id", "name"], "filters": {"type": "person", "country": ["ar"], "attributes.segment_tag": "retail",
            "createdAfter": "2000-01-01T00:00:00Z"}}"#
            .to_string(),
    )
    .await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let job = accepted.json()["jobId"].as_str().unwrap().to_string();
    let mut status = Value::Null;
    for _ in 0..200 {
        status = curl(&["-H", &auth, &format!("{url}/{job}")]).await.json();
        if status["status"] == "completed" && status["recipients"][0]["status"] == "sent" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status["status"], "completed", "{status}");
    assert_eq!(status["rowCount"], 12);
    assert_eq!(status["recipients"][0]["email"], "analyst@example.com");

    let meta = curl(&["-H", &auth, &format!("{url}/{job}/download")]).await;
    assert_eq!(meta.status, 200, "{}", meta.body);
    let meta = meta.json();
    let file = tokio::process::Command::new("curl")
        .args(["-s", "-f", meta["url"].as_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(&file.stdout)),
        meta["sha256"].as_str().unwrap()
    );
    assert_eq!(
        String::from_utf8_lossy(&file.stdout).lines().next(),
        Some("tax_id,name")
    );

    // Refusals, each naming its field or reason.
    let refused = post(r#"{"format": "pdf", "filters": {"colour": "red"}}"#.to_string()).await;
    assert_eq!(refused.status, 400);
    let fields: Vec<String> = refused.json()["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(fields, ["recipientEmails", "format", "filters.colour"]);
    let conflict = post(
        r#"{"recipientEmails": ["a@example.com"], "format": "csv", "fromEmail": "x@acme.test", "fromSenderId": "01a23e30-0000-7000-8000-000000000001"}"#
            .to_string(),
    )
    .await;
    assert_eq!(conflict.status, 400);
    assert_eq!(conflict.json()["error"]["code"], "SENDER_CONFLICT");
    let many: Vec<String> = (0..27).map(|i| format!("\"r{i}@example.com\"")).collect();
    let too_many = post(format!(
        r#"{{"recipientEmails": [{}], "format": "json"}}"#,
        many.join(",")
    ))
    .await;
    assert_eq!(too_many.status, 400);
    assert_eq!(too_many.json()["error"]["code"], "TOO_MANY_RECIPIENTS");
    app.stop().await;
}

on_both_backends!(seed_002_analytics_export_maps_its_fields_and_answers_in_its_envelope);

async fn seed_002_analytics_export_maps_its_fields_and_answers_in_its_envelope(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let rows: Vec<_> = (1..=10)
        .map(|n| crate::entities_fixture(&app.org_id, n))
        .collect();
    ferry::db::entities::insert(&mut app.db().conn().await.unwrap(), &rows)
        .await
        .unwrap();
    let auth = format!("Authorization: Token {}", app.key);
    let url = format!("{}/api/v1/analytics/exports", base(&app));
    let post = |body: &'static str| {
        let (auth, url) = (auth.clone(), url.clone());
        async move {
            curl(&[
                "-X",
                "POST",
                "-H",
                &auth,
                "-H",
                "Content-Type: application/json",
                "-H",
                "Accept: application/json",
                "-d",
                body,
                &url,
            ])
            .await
        }
    };

    let created = post(r#"{"from": "2000-01-01", "to": "2100-12-31", "user_id": ["ext-3", "ext-4"], "segment_id": "retail", "format": "ndjson"}"#).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let body = created.json();
    assert_eq!(body["environment_app_token"], app.org_id.as_str());
    assert_eq!(body["environment_name"], "acme");
    let job = body["job_id"].as_str().unwrap().to_string();
    assert_eq!(body["links"], format!("/v1/exports/{job}/download"));
    assert!(body["start_time"].is_string());

    // The same export again while the first is still in progress: 409, or it
    // already finished and this one is simply queued.
    let again = post(r#"{"from": "2000-01-01", "to": "2100-12-31", "user_id": ["ext-3", "ext-4"], "segment_id": "retail", "format": "ndjson"}"#).await;
    if again.status == 409 {
        assert_eq!(again.json()["errors"][0]["error_code"], "EXPORT_IN_PROGRESS");
    } else {
        assert_eq!(again.status, 201, "{}", again.body);
    }

    // The export holds exactly the two persons named by external ID.
    let key = format!("x-api-key: {}", app.key);
    let download = format!("{}/v1/exports/{job}/download", base(&app));
    let mut file = Vec::new();
    for _ in 0..200 {
        let fetched = tokio::process::Command::new("curl")
            .args(["-s", "-f", "-L", "-H", &key, &download])
            .output()
            .await
            .unwrap();
        if fetched.status.success() {
            file = fetched.stdout;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let text = String::from_utf8(file).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("ext-3") && text.contains("ext-4"), "{text}");

    // Fields that mean nothing for entities are refused, one `errors` entry each.
    let refused = post(r#"{"event_type": ["click"], "exclusions": "bots", "format": "xml"}"#).await;
    assert_eq!(refused.status, 400);
    let errors = refused.json()["errors"].as_array().unwrap().clone();
    let details: Vec<&str> = errors.iter().map(|e| e["details"].as_str().unwrap()).collect();
    assert_eq!(details, ["event_type", "exclusions", "format"]);
    assert!(
        errors
            .iter()
            .all(|e| e["error"] == "Bad Request" && e["message"].is_string())
    );
    app.stop().await;
}

on_both_backends!(an_events_stream_follows_several_jobs_to_their_end_from_a_signed_url);

/// A dashboard's EventSource: a signed URL from an authenticated call, then one
/// stream for two exports, read with `curl -N` until the server closes it after
/// both ended.
async fn an_events_stream_follows_several_jobs_to_their_end_from_a_signed_url(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut ids = Vec::new();
    for year in ["2001", "2002"] {
        let created = post_export(&app, &create_body("entities", &format!("{year}-01-01T00:00:00Z"))).await;
        ids.push(created.json()["id"].as_str().unwrap().to_string());
    }
    let key = format!("x-api-key: {}", app.key);
    let answer = curl(&[
        "-H",
        &key,
        &format!("{}/v1/exports/events-url?ids={}", base(&app), ids.join(",")),
    ])
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let url = answer.json()["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&base(&app)), "{url}");

    // The link is its own credential: a changed id list or signature is refused.
    let other = url.replace(&ids[1], &ids[0]);
    assert_eq!(curl(&[&other]).await.status, 403);
    let (head, sig) = url.rsplit_once("sig=").unwrap();
    let flipped = format!(
        "{head}sig={}{}",
        if sig.starts_with('0') { '1' } else { '0' },
        &sig[1..]
    );
    assert_eq!(curl(&[&flipped]).await.status, 403);

    let reader = tokio::spawn({
        let url = url.clone();
        async move {
            tokio::process::Command::new("curl")
                .args(["-s", "-N", "--max-time", "60", &url])
                .output()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    app.run_jobs_until_idle().await;
    let output = reader.await.unwrap();
    assert!(
        output.status.success(),
        "the stream did not end by itself: {output:?}"
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let mut states: std::collections::HashMap<String, Vec<String>> = Default::default();
    for block in text.split("\n\n").filter(|b| b.contains("data:")) {
        let field = |name: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        assert_eq!(field("event:"), "export", "{block}");
        let data: Value = serde_json::from_str(&field("data:")).unwrap();
        assert_eq!(data["id"].as_str().unwrap(), field("id:"));
        states
            .entry(field("id:"))
            .or_default()
            .push(data["state"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let seen = &states[id];
        assert_eq!(
            seen.first().map(String::as_str),
            Some("JOB_STATE_QUEUED"),
            "{seen:?}"
        );
        assert_eq!(
            seen.last().map(String::as_str),
            Some("JOB_STATE_COMPLETED"),
            "{seen:?}"
        );
    }
    app.stop().await;
}

/// Browsers of the configured origins may call the REST routes (preflight answered
/// without credentials); other origins, and every origin by default, get no CORS
/// headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_admits_only_the_configured_origins() {
    let app = TestApp::start_with(
        Backend::Sqlite,
        |c| c.http.cors_origins = "https://dash.acme.test, https://ops.acme.test/".into(),
        crate::support::Workers::None,
    )
    .await;
    let url = format!("{}/v1/exports", base(&app));
    let preflight = curl(&[
        "-X",
        "OPTIONS",
        "-H",
        "Origin: https://dash.acme.test",
        "-H",
        "Access-Control-Request-Method: POST",
        "-H",
        "Access-Control-Request-Headers: x-api-key, content-type",
        &url,
    ])
    .await;
    assert_eq!(preflight.status, 200, "{}", preflight.body);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://dash.acme.test")
    );
    assert!(
        preflight
            .header("access-control-allow-headers")
            .unwrap()
            .contains("x-api-key")
    );

    let key = format!("x-api-key: {}", app.key);
    let allowed = curl(&["-H", "Origin: https://ops.acme.test", "-H", &key, &url]).await;
    assert_eq!(allowed.status, 200);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://ops.acme.test")
    );
    assert!(
        allowed
            .header("access-control-expose-headers")
            .unwrap()
            .contains("x-request-id")
    );
    let stranger = curl(&["-H", "Origin: https://evil.test", "-H", &key, &url]).await;
    assert_eq!(stranger.header("access-control-allow-origin"), None);
    app.stop().await;

    let closed = TestApp::start(Backend::Sqlite).await;
    let answer = curl(&[
        "-H",
        "Origin: https://dash.acme.test",
        "-H",
        &format!("x-api-key: {}", closed.key),
        &format!("{}/v1/exports", base(&closed)),
    ])
    .await;
    assert_eq!(answer.header("access-control-allow-origin"), None);
    closed.stop().await;

    let refused = ferry::config::Config::load(
        None,
        Vec::new(),
        &[("http.cors_origins".into(), "dash.acme.test".into())],
    );
    assert!(refused.unwrap_err().to_string().contains("http.cors_origins"));
}

/// The REST door shares the gRPC admission: an organization over its rate gets 429
/// `RATE_LIMITED` with `Retry-After`, whichever door its calls come through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_calls_share_the_organizations_rate_limit_with_grpc() {
    use ferry::proto::{ListEntitiesRequest, entity_service_client::EntityServiceClient};
    let app = TestApp::start_with(
        Backend::Sqlite,
        |c| {
            c.limits.calls_per_second_per_org = 1;
            c.limits.burst_per_org = 2;
        },
        crate::support::Workers::None,
    )
    .await;
    // Two calls over gRPC use the burst...
    let mut grpc = EntityServiceClient::new(app.channel.clone());
    for _ in 0..2 {
        grpc.list_entities(app.request(ListEntitiesRequest::default()))
            .await
            .unwrap();
    }
    // ... so the REST call right after is over the rate.
    let key = format!("x-api-key: {}", app.key);
    let refused = curl(&["-H", &key, &format!("{}/v1/exports", base(&app))]).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.json()["error"]["code"], "RATE_LIMITED");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    app.stop().await;
}

/// The OpenAPI document is served without a key, says 3.1, and describes exactly
/// the routes of the permission table (plus the events stream, whose signed URL is
/// its credential, and the public health probes `/livez` and `/readyz`), each
/// keyed route with its security and every answer described.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_rest_route_and_no_other() {
    let app = TestApp::start_with(Backend::Sqlite, |_| {}, crate::support::Workers::None).await;
    let answer = curl(&[&format!("{}/openapi.json", base(&app))]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let doc = answer.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let mut described = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let keyed = operation["security"].as_array().is_some_and(|s| !s.is_empty());
            let public = ["/v1/events", "/livez", "/readyz"].contains(&path.as_str());
            assert_eq!(keyed, !public, "security of {method} {path}");
            for (status, response) in operation["responses"].as_object().unwrap() {
                assert!(
                    response["description"].as_str().is_some_and(|d| !d.is_empty()),
                    "{method} {path} {status} has no description"
                );
            }
            described.push((method.to_ascii_uppercase(), path.clone()));
        }
    }
    let mut served: Vec<(String, String)> = ferry::rest::ROUTES
        .iter()
        .map(|(method, path, _)| (method.to_string(), path.to_string()))
        .chain(["/v1/events", "/livez", "/readyz"].map(|path| ("GET".to_string(), path.to_string())))
        .collect();
    described.sort();
    served.sort();
    assert_eq!(described, served);
    for scheme in ["api_key", "bearer", "token"] {
        assert!(
            doc["components"]["securitySchemes"][scheme].is_object(),
            "{scheme} is not described"
        );
    }
}
