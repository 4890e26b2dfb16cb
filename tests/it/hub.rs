//! The bulk imports hub (`/hub`): driven end to end in a real headless Chromium by
//! `tests/hub/e2e.py` (Playwright) against a real `ferry serve` child on both
//! backends; what the pages showed is then checked over gRPC and in the database.
//! Its REST additions (cancel, `validateOnly`, sessions as credentials) are driven
//! with curl.

use std::process::Stdio;
use std::time::Duration;

use ferry::auth::{Permission, keys};
use ferry::orgs::{self, Feature, Plan};
use ferry::proto::{GetImportRequest, import_service_client::ImportServiceClient};
use ferry::server::App;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::on_both_backends;
use crate::support::{Backend, TestApp, TestDb, curl, test_config, with_auth};

on_both_backends!(
    a_person_imports_checks_and_follows_a_file_in_a_real_browser,
    an_import_is_cancelled_over_rest_and_a_second_cancel_is_a_conflict,
    a_session_cookie_is_a_credential_only_with_its_csrf_token_for_changes,
    a_preview_says_where_each_header_goes_and_shows_the_first_rows,
    sign_ins_from_one_address_are_limited_per_minute,
    a_file_uploaded_ahead_is_imported_by_its_id_once_and_expires,
);

/// `ferry serve` on free ports: the child and its (gRPC, HTTP) addresses.
async fn serve(db: &TestDb) -> (tokio::process::Child, String, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--data-dir")
        .arg(db.data_dir())
        .arg("--database-url")
        .arg(&db.url)
        .args(["--set", "log.level=warn", "--set", "server.bootstrap=false"])
        // Revocations reach the server within a second; jobs start at once, and
        // run long enough (batches of 100 rows, one job at a time) for the page to
        // follow them; 50 imports may be active at once.
        .args([
            "--set",
            "auth.cache_ttl_millis=1000",
            "--set",
            "jobs.poll_millis=100",
            "--set",
            "bulk_import.batch_rows=100",
            "--set",
            "bulk_import.max_active_per_org=60",
            "--set",
            "jobs.workers=1",
        ])
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // `ferry gRPC on 127.0.0.1:1234 , HTTP on 127.0.0.1:5678`
            if let Some(rest) = line.strip_prefix("ferry gRPC on ") {
                let (grpc, http) = rest.split_once(", HTTP on ").unwrap();
                return (grpc.trim().to_string(), http.trim().to_string());
            }
        }
        panic!("ferry serve exited before serving");
    })
    .await
    .expect("ferry serve started within 60 s");
    // The rest of its output is not needed, but must not fill the pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, started.0, started.1)
}

async fn a_person_imports_checks_and_follows_a_file_in_a_real_browser(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = App::open(test_config(&db)).await.unwrap();
    let org = orgs::create(&app.db, "acme", Plan::Enterprise, &Feature::ALL, None)
        .await
        .unwrap();
    let (hub_key, key) = keys::create(&app.db, &org.id, "hub", &Permission::ALL, &[])
        .await
        .unwrap();
    let (_, export_key) = keys::create(
        &app.db,
        &org.id,
        "exports only",
        &[Permission::EntitiesExport],
        &[],
    )
    .await
    .unwrap();
    let (revocable, revocable_key) = keys::create(&app.db, &org.id, "revocable", &Permission::ALL, &[])
        .await
        .unwrap();
    // A saved mapping for a custom layout, picked by name in the upload form.
    let column_map = serde_json::json!({
        "documento": "tax_id",
        "tipo_de_entidad": "type",
        "país": "country_code",
        "razón_social": "suggested_name",
    });
    ferry::db::mappings::insert(
        &mut app.db.conn().await.unwrap(),
        &ferry::db::mappings::MappingRow {
            id: ferry::db::new_id(),
            organization_id: org.id.clone(),
            name: "Planilla ventas".into(),
            kind: "entity_mixed".into(),
            column_map: column_map.to_string(),
            created_at: ferry::db::now_ms(),
            updated_at: ferry::db::now_ms(),
        },
    )
    .await
    .unwrap();
    let (_server, grpc, http) = serve(&db).await;

    let backend_name = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let mut browser = tokio::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hub/e2e.py"))
        .env("HUB_URL", format!("http://{http}"))
        .env("HUB_KEY", &key)
        .env("HUB_EXPORT_KEY", &export_key)
        .env("HUB_REVOCABLE_KEY", &revocable_key)
        .env("HUB_BACKEND", backend_name)
        .env(
            "HUB_SHOTS",
            concat!(env!("CARGO_MANIFEST_DIR"), "/target/hub-screenshots"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 with Playwright (.ci/run installs it)");
    let mut stdin = browser.stdin.take().unwrap();
    let mut out = BufReader::new(browser.stdout.take().unwrap()).lines();
    let mut result = None;
    let driven = tokio::time::timeout(Duration::from_secs(600), async {
        while let Some(line) = out.next_line().await.unwrap() {
            if line == "REVOKE" {
                assert!(keys::revoke(&app.db, &revocable.id, None).await.unwrap());
                stdin.write_all(b"revoked\n").await.unwrap();
            } else if let Some(json) = line.strip_prefix("RESULT ") {
                result = Some(serde_json::from_str::<serde_json::Value>(json).unwrap());
            }
        }
    })
    .await;
    let output = browser.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(driven.is_ok(), "the browser test ran over 10 minutes: {log}");
    assert!(output.status.success(), "the browser test failed:\n{log}");
    let result = result.expect("the browser test's RESULT line");
    // Seen with `--no-capture`: how many jobs the page followed, its long tasks and
    // layout shift (docs/benchmarks.md).
    eprintln!(
        "hub page with live jobs ({backend_name}): {}; first load {} bytes",
        result["live"], result["page_bytes"]
    );

    // What the pages showed is what gRPC says.
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut imports = ImportServiceClient::new(channel.clone());
    for (name, dry) in [
        ("import", false),
        ("dry_run", true),
        ("template_automatic", false),
        ("template_manual", false),
        ("mapped", false),
        ("fixed", false),
    ] {
        let shown = &result[name];
        let id = shown["id"].as_str().unwrap().to_string();
        let import = imports
            .get_import(with_auth(GetImportRequest { id }, &key, &org.id))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(shown["created"], import.created_items, "{name}");
        assert_eq!(shown["updated"], import.updated_items, "{name}");
        assert_eq!(shown["unchanged"], import.unchanged_items, "{name}");
        assert_eq!(shown["failed"], import.failed_items, "{name}");
        // Who uploaded it: the key the page's session stands for.
        assert_eq!(import.creator, hub_key.id, "{name}");
        let options = import.options.unwrap();
        assert_eq!(options.validate_only, dry, "{name}");
        if name == "fixed" {
            assert_eq!(options.fixes_import_id, result["import"]["id"].as_str().unwrap());
        }
    }
    // The mapping made in the editor is the object gRPC serves; the one deleted
    // in the editor is gone, and the mapped import named the new one.
    let mut mappings = ferry::proto::mapping_service_client::MappingServiceClient::new(channel.clone());
    let mapping_id = result["mapping"]["id"].as_str().unwrap().to_string();
    let saved = mappings
        .get_mapping(with_auth(
            ferry::proto::GetMappingRequest {
                id: mapping_id.clone(),
            },
            &key,
            &org.id,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(saved.name, "Ventas MX");
    assert_eq!(saved.columns["documento"], "tax_id");
    assert_eq!(saved.columns["razón_social"], "suggested_name");
    assert_eq!(saved.columns["segmento"], "attributes.segment_tag");
    let listed = mappings
        .list_mappings(with_auth(
            ferry::proto::ListMappingsRequest::default(),
            &key,
            &org.id,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total_size, 1, "{listed:?}");
    let mapped = imports
        .get_import(with_auth(
            GetImportRequest {
                id: result["mapped"]["id"].as_str().unwrap().to_string(),
            },
            &key,
            &org.id,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mapped.options.unwrap().mapping_id, mapping_id);

    // The dry run wrote nothing: the real import after it created every valid row,
    // and those, the row fixed in the page, the two templates' rows and the mapped
    // file's three are all the organization has.
    let stored = ferry::db::entities::count(
        &mut app.db.conn().await.unwrap(),
        &org.id,
        &ferry::db::entities::EntityFilter::default(),
    )
    .await
    .unwrap();
    assert_eq!(stored, 4_500 + 1 + 6 + 8 + 3);
    // The export downloaded from the hub holds every Mexican person: the file's
    // 4,500, the fixed one, the manual template's one and the mapped file's one.
    assert_eq!(result["export_rows"], 4_503);
}

async fn an_import_is_cancelled_over_rest_and_a_second_cancel_is_a_conflict(backend: Backend) {
    let app = TestApp::start(backend).await;
    let base = format!("http://{}", app.http_addr());
    let auth = format!("authorization: Bearer {}", app.key);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("people.csv");
    std::fs::write(
        &file,
        "tax_id,type,country_code,suggested_name\nP1,person,MX,Ana\n",
    )
    .unwrap();
    let url = format!("{base}/batch-import/import/entities");
    let accepted = curl(&[
        "-X",
        "POST",
        "-H",
        &auth,
        "-F",
        &format!("file=@{}", file.display()),
        "-F",
        "entityImportMode=manual",
        "-F",
        "validateOnly=true",
        &url,
    ])
    .await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let id = accepted.json()["jobId"].as_str().unwrap().to_string();
    let status = curl(&["-H", &auth, &format!("{url}/{id}")]).await.json();
    assert_eq!(status["validateOnly"], true);

    let cancel = format!("{url}/{id}/cancel");
    let cancelled = curl(&["-X", "POST", "-H", &auth, &cancel]).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.json()["status"], "cancelled");
    let again = curl(&["-X", "POST", "-H", &auth, &cancel]).await;
    assert_eq!(again.status, 409, "{}", again.body);
    // The 202 carried a signed link to the import's live events (what the hub
    // follows without loading another page): no key needed, the current state
    // first, closed once the import has ended.
    let events = accepted.json()["eventsUrl"].as_str().unwrap().to_string();
    assert!(
        events.starts_with(&format!("{base}/v1/events?kind=import&ids={id}&")),
        "{events}"
    );
    let stream = curl(&["--max-time", "20", &events]).await;
    assert_eq!(stream.status, 200, "{}", stream.body);
    assert!(stream.body.contains("event: import"), "{}", stream.body);
    assert!(stream.body.contains("JOB_STATE_CANCELLED"), "{}", stream.body);
    let (other_org, other_key) = app.other_org().await;
    let hidden = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("authorization: Bearer {other_key}"),
        "-H",
        &format!("x-organization-id: {other_org}"),
        &cancel,
    ])
    .await;
    assert_eq!(hidden.status, 404, "{}", hidden.body);
    app.stop().await;
}

/// Signs in over HTTP as a browser would; the session cookie's value.
async fn sign_in(base: &str, key: &str) -> String {
    let answer = curl(&[
        "-H",
        &format!("origin: {base}"),
        "--data-urlencode",
        &format!("key={key}"),
        &format!("{base}/hub/sign-in"),
    ])
    .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let cookie = answer.header("set-cookie").unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let value = cookie.split(';').next().unwrap();
    value.strip_prefix("ferry_hub=").unwrap().to_string()
}

async fn a_session_cookie_is_a_credential_only_with_its_csrf_token_for_changes(backend: Backend) {
    let app = TestApp::start(backend).await;
    let base = format!("http://{}", app.http_addr());
    // Another site's sign-in form is refused before the key is even looked at.
    let forged = curl(&[
        "-H",
        "origin: https://evil.test",
        "--data-urlencode",
        &format!("key={}", app.key),
        &format!("{base}/hub/sign-in"),
    ])
    .await;
    assert_eq!(forged.status, 403);
    assert!(forged.header("set-cookie").is_none());
    let wrong = curl(&[
        "--data-urlencode",
        "key=ferry_nope",
        &format!("{base}/hub/sign-in"),
    ])
    .await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);

    let session = sign_in(&base, &app.key).await;
    let cookie = format!("cookie: ferry_hub={session}");
    let page = curl(&["-H", &cookie, &format!("{base}/hub/imports")]).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains(&app.key), "the key reached the page");
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    let csrf = page
        .body
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();

    // Reads need only the cookie; a change needs the page's token too.
    let url = format!("{base}/batch-import/import/entities");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("people.csv");
    std::fs::write(
        &file,
        "tax_id,type,country_code,suggested_name\nP1,person,MX,Ana\n",
    )
    .unwrap();
    let form = format!("file=@{}", file.display());
    let post = |token: Option<String>| {
        let (cookie, form, url) = (cookie.clone(), form.clone(), url.clone());
        async move {
            let header = format!("x-csrf-token: {}", token.unwrap_or_default());
            curl(&[
                "-X",
                "POST",
                "-H",
                &cookie,
                "-H",
                &header,
                "-F",
                &form,
                "-F",
                "entityImportMode=manual",
                &url,
            ])
            .await
        }
    };
    let refused = post(None).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.json()["error"]["code"], "CSRF_TOKEN_INVALID");
    let refused = post(Some("forged".into())).await;
    assert_eq!(refused.json()["error"]["code"], "CSRF_TOKEN_INVALID");
    let accepted = post(Some(csrf.clone())).await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let id = accepted.json()["jobId"].as_str().unwrap().to_string();
    let read = curl(&["-H", &cookie, &format!("{url}/{id}")]).await;
    assert_eq!(read.status, 200, "{}", read.body);

    // Sign-out needs the token too, then the cookie opens nothing.
    let sign_out = format!("{base}/hub/sign-out");
    let forged = curl(&["-H", &cookie, "-d", "csrf=forged", &sign_out]).await;
    assert_eq!(forged.status, 403);
    let out = curl(&["-H", &cookie, "-d", &format!("csrf={csrf}"), &sign_out]).await;
    assert_eq!(out.status, 303);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let after = curl(&["-H", &cookie, &format!("{url}/{id}")]).await;
    assert_eq!(after.status, 401, "{}", after.body);
    assert_eq!(after.json()["error"]["code"], "UNAUTHORIZED");
    let page = curl(&["-H", &cookie, &format!("{base}/hub/imports")]).await;
    assert_eq!(page.status, 303);
    assert_eq!(page.header("location"), Some("/hub?ended=idle"));
    app.stop().await;
}

async fn a_preview_says_where_each_header_goes_and_shows_the_first_rows(backend: Backend) {
    let app = TestApp::start(backend).await;
    let url = format!("http://{}/batch-import/import/entities/preview", app.http_addr());
    let auth = format!("authorization: Bearer {}", app.key);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("people.csv");
    let mut text = String::from("Tax ID,tipo,country_code,segment_tag,id\n");
    for i in 0..30 {
        text.push_str(&format!("T{i},person,MX,retail,x{i}\n"));
    }
    std::fs::write(&file, text).unwrap();
    let form = format!("file=@{}", file.display());
    let answer = curl(&["-H", &auth, "-F", &form, &url]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let preview = answer.json();
    let how: Vec<(String, String)> = preview["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["goesTo"].as_str().unwrap().to_string(),
                c["how"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        // Case and spaces are normalised: `Tax ID` is the platform's `tax_id`.
        ("tax_id", "platform"),
        ("type", "alias"),
        ("country_code", "platform"),
        ("attributes.segment_tag", "attribute"),
        ("", "not_imported"),
    ];
    assert_eq!(
        how,
        expected.map(|(a, b)| (a.to_string(), b.to_string())).to_vec()
    );
    assert_eq!(preview["rows"].as_array().unwrap().len(), 10);
    assert_eq!(preview["rows"][0][0], "T0");
    assert_eq!(preview["problems"].as_array().unwrap().len(), 0);
    // Nothing was queued or stored.
    let listed = curl(&["-H", &auth, &format!("http://{}/v1/exports", app.http_addr())]).await;
    assert_eq!(listed.status, 200);

    let unknown = curl(&["-H", &auth, "-F", &form, "-F", "mappingId=nope", &url]).await;
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    assert_eq!(unknown.json()["error"]["details"][0]["field"], "mappingId");
    let stray = curl(&["-H", &auth, "-F", &form, "-F", "country=AR", &url]).await;
    assert_eq!(stray.status, 400, "{}", stray.body);
    app.stop().await;
}

async fn sign_ins_from_one_address_are_limited_per_minute(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        |c| c.hub.sign_ins_per_minute = 3,
        crate::support::Workers::None,
    )
    .await;
    let url = format!("http://{}/hub/sign-in", app.http_addr());
    for _ in 0..3 {
        let wrong = curl(&["--data-urlencode", "key=ferry_wrong", &url]).await;
        assert_eq!(wrong.status, 401, "{}", wrong.body);
    }
    // The fourth attempt in the minute is refused before the key is looked at,
    // even the right key; the page says how long to wait.
    let right = format!("key={}", app.key);
    let limited = curl(&["--data-urlencode", &right, &url]).await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert!(limited.header("retry-after").is_some());
    assert!(
        limited.body.contains("Too many sign-in attempts"),
        "{}",
        limited.body
    );
    assert!(limited.header("set-cookie").is_none());
    app.stop().await;
}

/// The hub uploads a file as soon as it is chosen (`…/entities/staged`) and the
/// import names it: it imports as the file itself would, once; the id is the
/// organization's alone; a form with both is refused; the organization may hold
/// `bulk_import.max_staged_per_org`; and the sweep removes an expired one's file.
async fn a_file_uploaded_ahead_is_imported_by_its_id_once_and_expires(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        |c| c.bulk_import.max_staged_per_org = 2,
        crate::support::Workers::None,
    )
    .await;
    let base = format!("http://{}/batch-import/import/entities", app.http_addr());
    let auth = format!("authorization: Bearer {}", app.key);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ahead.csv");
    std::fs::write(
        &file,
        "tax_id,type,country_code,suggested_name\nS1,person,MX,Ana\nS2,person,MX,Bo\n",
    )
    .unwrap();
    let form = format!("file=@{}", file.display());
    let staged = curl(&["-H", &auth, "-F", &form, &format!("{base}/staged")]).await;
    assert_eq!(staged.status, 201, "{}", staged.body);
    let staged = staged.json();
    let id = staged["stagedId"].as_str().unwrap().to_string();
    assert_eq!(staged["fileName"], "ahead.csv");
    assert_eq!(staged["sizeBytes"], 73);

    // Both a file and an id: refused, naming the field.
    let both = curl(&["-H", &auth, "-F", &form, "-F", &format!("stagedId={id}"), &base]).await;
    assert_eq!(both.status, 400, "{}", both.body);
    assert_eq!(both.json()["error"]["details"][0]["field"], "stagedId");
    // Another organization cannot use it.
    let (_, other_key) = app.other_org().await;
    let other = format!("authorization: Bearer {other_key}");
    let stolen = curl(&[
        "-H",
        &other,
        "-F",
        &format!("stagedId={id}"),
        "-F",
        "country=MX",
        &base,
    ])
    .await;
    assert_eq!(stolen.status, 400, "{}", stolen.body);
    assert_eq!(stolen.json()["error"]["details"][0]["field"], "stagedId");

    // A refused import (a bad field) leaves the file usable: the person corrects
    // step 2 and imports it.
    let refused = curl(&[
        "-H",
        &auth,
        "-F",
        &format!("stagedId={id}"),
        "-F",
        "depth=9",
        &base,
    ])
    .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.json()["error"]["details"][0]["field"], "depth");

    let accepted = curl(&[
        "-H",
        &auth,
        "-F",
        &format!("stagedId={id}"),
        "-F",
        "entityImportMode=manual",
        &base,
    ])
    .await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let job = accepted.json()["jobId"].as_str().unwrap().to_string();
    let shown = curl(&["-H", &auth, &format!("{base}/{job}")]).await.json();
    assert_eq!(shown["fileName"], "ahead.csv");
    assert_eq!(shown["totalItems"], 2);
    // Used once: the file is gone with its id.
    let again = curl(&["-H", &auth, "-F", &format!("stagedId={id}"), &base]).await;
    assert_eq!(again.status, 400, "{}", again.body);
    assert_eq!(again.json()["error"]["details"][0]["field"], "stagedId");
    // Its file goes just after the answer (off the answer's path).
    let object = ferry::import::staged::object_key(&app.org_id, &id);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app
        .app
        .storage
        .fetch_to_file(&object, &dir.path().join("gone"))
        .await
        .is_ok()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the used file is still stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Two may wait at once here; the third is refused until one goes.
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let held = curl(&["-H", &auth, "-F", &form, &format!("{base}/staged")]).await;
        assert_eq!(held.status, 201, "{}", held.body);
        waiting.push(held.json()["stagedId"].as_str().unwrap().to_string());
    }
    let over = curl(&["-H", &auth, "-F", &form, &format!("{base}/staged")]).await;
    assert_eq!(over.status, 429, "{}", over.body);
    assert_eq!(over.json()["error"]["code"], "TOO_MANY_STAGED_UPLOADS");

    // Once expired, the sweep removes them, file and row, and the limit frees up.
    let later = ferry::db::now_ms() + 2 * 3600 * 1000;
    let gone = ferry::import::staged::sweep(&app.app.db, &app.app.storage, later)
        .await
        .unwrap();
    assert_eq!(gone, 2);
    for held in &waiting {
        let object = ferry::import::staged::object_key(&app.org_id, held);
        let fetched = app
            .app
            .storage
            .fetch_to_file(&object, &dir.path().join("swept"))
            .await;
        assert!(fetched.is_err(), "an expired file is still stored");
    }
    let mut conn = app.app.db.conn().await.unwrap();
    let held = ferry::db::staged_uploads::held(&mut conn, &app.org_id, 0)
        .await
        .unwrap();
    assert_eq!(held, 0, "the expired rows are gone");
    drop(conn);
    app.stop().await;
}
