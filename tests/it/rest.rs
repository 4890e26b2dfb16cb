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
use crate::support::{Backend, TestApp};

on_both_backends!(
    seed_001_exports_are_created_listed_downloaded_by_redirect_and_deleted,
    rest_errors_use_the_seed_envelope_and_the_status_table,
    every_rest_route_refuses_a_missing_key_a_bad_key_and_a_missing_permission,
);

/// One curl call: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

async fn curl(args: &[&str]) -> Answer {
    let output = tokio::process::Command::new("curl")
        .args(["-s", "-i"])
        .args(args)
        .output()
        .await
        .expect("curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

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
            assert_eq!(answer.status, status, "{method} {route}: {}", answer.body);
            assert_eq!(answer.json()["error"]["code"], code, "{method} {route}");
            assert!(answer.header("x-request-id").is_some());
        }
    }
    app.stop().await;
}
