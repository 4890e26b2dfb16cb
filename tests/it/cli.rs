//! The `ferry` binary's admin commands, run as a person would, then the key they
//! print used over gRPC.

use std::process::Command;
use std::time::Duration;

use ferry::proto::{ListEntitiesRequest, entity_service_client::EntityServiceClient};

use crate::on_both_backends;
use crate::support::{Backend, TestDb, test_config, until_refused, with_auth};

on_both_backends!(
    admin_commands_create_an_organization_and_a_key_that_works_until_revoked,
    a_misspelt_setting_variable_is_reported_with_the_closest_name,
    with_json_logs_every_line_is_json_and_the_bootstrap_key_stays_in_its_file,
    a_rotated_key_works_beside_its_successor_until_the_grace_period_ends,
    admin_changes_are_in_the_audit_trail_that_admin_audit_lists,
    admin_storage_usage_counts_files_and_bytes_per_organization_and_kind,
);

fn ferry(db: &TestDb, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--data-dir")
        .arg(db.data_dir())
        .arg("--database-url")
        .arg(&db.url)
        .args(["--set", "log.level=warn"])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn admin_commands_create_an_organization_and_a_key_that_works_until_revoked(backend: Backend) {
    let db = TestDb::new(backend).await;
    // Admin commands work on a database that exists.
    let (ok, _, err) = ferry(&db, &["migrate"]);
    assert!(ok, "{err}");
    let (ok, out, err) = ferry(
        &db,
        &["admin", "org", "create", "--name", "acme", "--plan", "growth"],
    );
    assert!(ok, "{err}");
    let org = out.split_whitespace().next().unwrap().to_string();
    assert!(out.contains("plan=growth"), "{out}");

    let (ok, out, _) = ferry(
        &db,
        &[
            "admin",
            "org",
            "enable-feature",
            "--org",
            &org,
            "--feature",
            "global_sender_email",
        ],
    );
    assert!(ok && out.contains("global_sender_email"), "{out}");
    let (ok, _, err) = ferry(
        &db,
        &["admin", "org", "set-plan", "--org", &org, "--plan", "platinum"],
    );
    assert!(
        !ok && err.contains("unknown plan `platinum`") && err.contains("usage_based"),
        "{err}"
    );

    let (ok, out, err) = ferry(
        &db,
        &[
            "admin",
            "key",
            "create",
            "--org",
            &org,
            "--permission",
            "entities:read",
        ],
    );
    assert!(ok, "{err}");
    let key = out.lines().nth(1).unwrap().trim().to_string();
    assert!(key.starts_with("ferry_"), "{out}");
    let key_id = key.split('_').nth(1).unwrap().to_string();

    for args in [
        vec!["admin", "domain", "add", "--org", &org, "--domain", "Example.COM"],
        vec![
            "admin",
            "domain",
            "verify",
            "--org",
            &org,
            "--domain",
            "example.com",
        ],
        vec![
            "admin",
            "sender",
            "add",
            "--org",
            &org,
            "--email",
            "exports@example.com",
        ],
        vec![
            "admin",
            "enrichment",
            "set",
            "--org",
            &org,
            "--code",
            "basic_data",
        ],
        vec![
            "admin",
            "enrichment",
            "group",
            "--org",
            &org,
            "--slug",
            "kyc",
            "--codes",
            "basic_data",
        ],
    ] {
        let (ok, _, err) = ferry(&db, &args);
        assert!(ok, "{args:?}: {err}");
    }
    let (_, out, _) = ferry(&db, &["admin", "domain", "list", "--org", &org]);
    assert!(out.contains("example.com") && out.contains("verified"), "{out}");

    // Usage totals by kind and month.
    let app = ferry::server::App::open(test_config(&db)).await.unwrap();
    for (job, quantity) in [("job-1", 3), ("job-2", 4)] {
        let event = ferry::db::usage::UsageEventRow {
            id: ferry::db::new_id(),
            organization_id: org.clone(),
            kind: "export_email_recipient".into(),
            quantity,
            job_id: job.into(),
            created_at: 1_795_000_000_000,
        };
        ferry::db::usage::record_once(&mut app.db.conn().await.unwrap(), &event)
            .await
            .unwrap();
    }
    let (ok, out, err) = ferry(&db, &["admin", "usage", "--org", &org]);
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.contains("export_email_recipient"))
        .unwrap_or_default();
    assert!(
        line.starts_with("2026-11") && line.trim_end().ends_with(" 7"),
        "{out}"
    );

    // The printed key works over gRPC…
    let app = ferry::server::App::open(test_config(&db)).await.unwrap();
    let running = ferry::server::start(app, ferry::jobs::Registry::new())
        .await
        .unwrap();
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", running.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = EntityServiceClient::new(channel);
    client
        .list_entities(with_auth(ListEntitiesRequest::default(), &key, &org))
        .await
        .unwrap();
    // …until it is revoked.
    let (ok, _, err) = ferry(&db, &["admin", "key", "revoke", "--key", &key_id]);
    assert!(ok, "{err}");
    // Refused within the auth cache's bound (at once on PostgreSQL, whose
    // replicas hear the revocation; the cache lifetime on SQLite).
    let status = until_refused(Duration::from_secs(3), || {
        let mut client = client.clone();
        let request = with_auth(ListEntitiesRequest::default(), &key, &org);
        async move { client.list_entities(request).await }
    })
    .await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    running.stop().await;
}

async fn a_misspelt_setting_variable_is_reported_with_the_closest_name(backend: Backend) {
    let db = TestDb::new(backend).await;
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--data-dir")
        .arg(db.data_dir())
        .arg("--database-url")
        .arg(&db.url)
        .arg("migrate")
        .env("FERRY_JOBS_WORKER", "3")
        .env("FERRY_URL", "http://127.0.0.1:50051")
        .output()
        .unwrap();
    assert!(output.status.success());
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        log.contains(
            "FERRY_JOBS_WORKER is not a ferry setting and is ignored; did you mean FERRY_JOBS_WORKERS?"
        ),
        "{log}"
    );
    // The client's own variables are known.
    assert!(!log.contains("FERRY_URL is not"), "{log}");
}

async fn with_json_logs_every_line_is_json_and_the_bootstrap_key_stays_in_its_file(backend: Backend) {
    use std::io::{BufRead, BufReader, Read};
    let db = TestDb::new(backend).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--data-dir")
        .arg(db.data_dir())
        .arg("--database-url")
        .arg(&db.url)
        .args(["--set", "log.format=json"])
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            let serving = line.contains("ferry is serving");
            lines.push(line);
            if serving {
                break;
            }
        }
        lines
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !reader.is_finished() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let mut lines = reader.join().unwrap();
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let _ = child.wait();
    lines.extend(stdout.lines().map(str::to_string));
    assert!(lines.iter().any(|l| l.contains("ferry is serving")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("first start")), "{lines:?}");
    let token = std::fs::read_to_string(db.data_dir().join("bootstrap-key")).unwrap();
    for line in lines.iter().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON: {line}"
        );
        assert!(
            !line.contains(token.trim()),
            "the key's secret was printed: {line}"
        );
        assert!(!line.contains('\u{1b}'), "colour codes in a log: {line}");
    }
}

/// A wrong folder must not become a new, empty database for an admin command.
#[test]
fn an_admin_command_on_a_missing_sqlite_database_refuses_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("typo");
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--set", "log.level=warn", "admin", "usage", "--org", "x"])
        .env_remove("FERRY_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("there is no ferry database at"), "{err}");
    assert!(
        !data_dir.join("ferry.db").exists(),
        "an empty database was created"
    );
}

/// A port already taken stops `serve` before it touches the database.
#[test]
fn serve_on_a_taken_port_stops_before_creating_anything() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["serve", "--grpc-addr", &addr, "--http-addr", "127.0.0.1:0"])
        .env_remove("FERRY_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains(&format!("cannot listen on server.grpc_addr {addr}")),
        "{err}"
    );
    assert!(!data_dir.exists(), "serve created its data folder before failing");
}

async fn a_rotated_key_works_beside_its_successor_until_the_grace_period_ends(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (ok, _, err) = ferry(&db, &["migrate"]);
    assert!(ok, "{err}");
    let (_, out, _) = ferry(&db, &["admin", "org", "create", "--name", "acme"]);
    let org = out.split_whitespace().next().unwrap().to_string();
    let create = |expires: &str| {
        let (ok, out, err) = ferry(
            &db,
            &[
                "admin",
                "key",
                "create",
                "--org",
                &org,
                "--name",
                "svc",
                "--expires-in",
                expires,
            ],
        );
        (ok, out, err)
    };
    let (ok, _, err) = create("soon");
    assert!(!ok && err.contains("--expires-in"), "{err}");
    let (ok, out, err) = create("90d");
    assert!(ok, "{err}");
    assert!(out.lines().next().unwrap().contains(", expires 20"), "{out}");
    let old = out.lines().nth(1).unwrap().trim().to_string();
    let old_id = old.split('_').nth(1).unwrap().to_string();

    let (ok, out, err) = ferry(
        &db,
        &["admin", "key", "rotate", "--key", &old_id, "--grace", "6s"],
    );
    assert!(ok, "{err}");
    assert!(out.contains(&format!("replaces key {old_id}")), "{out}");
    let new = out.lines().nth(1).unwrap().trim().to_string();
    assert!(new.starts_with("ferry_") && new != old, "{out}");
    let new_id = new.split('_').nth(1).unwrap().to_string();

    // The list shows both: the old one in its grace period, the new one with the
    // same 90-day lifetime, neither used yet.
    let (ok, out, err) = ferry(&db, &["admin", "key", "list", "--org", &org]);
    assert!(ok, "{err}");
    let line = |id: &str| out.lines().find(|l| l.starts_with(id)).unwrap().to_string();
    assert!(line(&old_id).contains(" grace "), "{out}");
    assert!(line(&new_id).contains(" active "), "{out}");
    for id in [&old_id, &new_id] {
        assert!(
            line(id).contains("last_used=never") && line(id).contains("allow_org=[]"),
            "{out}"
        );
        assert!(!line(id).contains("expires=never"), "{out}");
    }

    let app = ferry::server::App::open(test_config(&db)).await.unwrap();
    let running = ferry::server::start(app, ferry::jobs::Registry::new())
        .await
        .unwrap();
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", running.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = EntityServiceClient::new(channel);
    for key in [&old, &new] {
        client
            .list_entities(with_auth(ListEntitiesRequest::default(), key, &org))
            .await
            .unwrap();
    }
    // After the grace period (plus the auth cache's bound) only the successor works.
    let status = until_refused(Duration::from_secs(12), || {
        let mut client = client.clone();
        let request = with_auth(ListEntitiesRequest::default(), &old, &org);
        async move { client.list_entities(request).await }
    })
    .await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    client
        .list_entities(with_auth(ListEntitiesRequest::default(), &new, &org))
        .await
        .unwrap();
    // A key past its grace period cannot be rotated again.
    let (ok, _, err) = ferry(&db, &["admin", "key", "rotate", "--key", &old_id]);
    assert!(!ok && err.contains("no active key"), "{err}");
    running.stop().await;
}

/// `ferry serve` writes every file of its data folder for its owner only — the
/// SQLite database, the stored export, the e-mail in the mail drop, the uploaded
/// import — whatever the umask it was started with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_the_server_writes_is_its_owners_only() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 022 && exec {} --data-dir {} --set log.format=json serve --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0",
            env!("CARGO_BIN_EXE_ferry"),
            data.path().display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("ferry is serving") {
                let _ = tx.send(line);
            }
        }
    });
    let banner = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    let banner: serde_json::Value = serde_json::from_str(&banner).unwrap();
    let http = banner["fields"]["http"]
        .as_str()
        .or(banner["fields"]["http_addr"].as_str())
        .unwrap_or_else(|| panic!("no http_addr in {banner}"))
        .to_string();
    let key = std::fs::read_to_string(data.path().join("bootstrap-key")).unwrap();
    let auth = format!("x-api-key: {}", key.trim());
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "-f"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let export = curl(&[
        "-X",
        "POST",
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"recipientEmails": ["ops@acme.test"], "format": "csv"}"#,
        &format!("http://{http}/entities/export/jobs"),
    ]);
    let job = export["jobId"].as_str().unwrap().to_string();
    let csv = data.path().join("upload.csv");
    std::fs::write(
        &csv,
        "tax_id,type,country_code,suggested_name\n20123456786,company,AR,Acme Argentina SA\n",
    )
    .unwrap();
    curl(&[
        "-X",
        "POST",
        "-H",
        &auth,
        "-F",
        &format!("file=@{}", csv.display()),
        "-F",
        "country=AR",
        &format!("http://{http}/batch-import/import/entities"),
    ]);
    std::fs::remove_file(&csv).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = curl(&["-H", &auth, &format!("http://{http}/entities/export/jobs/{job}")]);
        let sent = status["recipients"][0]["status"] == "sent";
        if status["status"] == "completed" && sent {
            break;
        }
        assert_ne!(status["status"], "failed", "{status}");
        assert!(std::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = child.kill();
    let _ = child.wait();

    let mut seen = Vec::new();
    let mut folders = vec![data.path().to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let entry = entry.unwrap();
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                assert_eq!(mode, 0o700, "{}", path.display());
                folders.push(path);
            } else {
                assert_eq!(mode, 0o600, "{}", path.display());
                seen.push(path.display().to_string());
            }
        }
    }
    for expected in ["ferry.db", ".eml", ".csv", "bootstrap-key", "signing-key"] {
        assert!(
            seen.iter().any(|p| p.contains(expected)),
            "no {expected} among {seen:?}"
        );
    }
}

async fn admin_changes_are_in_the_audit_trail_that_admin_audit_lists(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (ok, _, err) = ferry(&db, &["migrate"]);
    assert!(ok, "{err}");
    let (_, out, _) = ferry(&db, &["admin", "org", "create", "--name", "acme"]);
    let org = out.split_whitespace().next().unwrap().to_string();
    let (ok, out, err) = ferry(&db, &["admin", "key", "create", "--org", &org, "--name", "svc"]);
    assert!(ok, "{err}");
    let key_id = out.split_whitespace().nth(1).unwrap().to_string();
    let (ok, _, err) = ferry(&db, &["admin", "key", "revoke", "--key", &key_id]);
    assert!(ok, "{err}");

    let (ok, out, err) = ferry(&db, &["admin", "audit", "--org", &org, "--since", "1h", "--json"]);
    assert!(ok, "{err}");
    let events: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["method"].as_str().unwrap(), e["targetId"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("admin org create", org.as_str()),
            ("admin key create", key_id.as_str()),
            ("admin key revoke", key_id.as_str()),
        ]
    );
    for event in &events {
        assert_eq!(event["door"], "admin");
        assert!(
            event["principal"].as_str().unwrap().starts_with("admin:"),
            "{event}"
        );
        assert_eq!(event["outcome"], "OK");
    }
    assert!(
        events[1]["detail"].as_str().unwrap().contains("name=svc"),
        "{}",
        events[1]
    );
    // Columns for people; a time in the future lists nothing; a bad --since is named.
    let (ok, out, _) = ferry(&db, &["admin", "audit", "--org", &org]);
    assert!(
        ok && out.lines().count() == 3 && out.contains("admin key revoke"),
        "{out}"
    );
    let (ok, out, _) = ferry(
        &db,
        &["admin", "audit", "--org", &org, "--since", "2999-01-01T00:00:00Z"],
    );
    assert!(ok && out.is_empty(), "{out}");
    let (ok, _, err) = ferry(&db, &["admin", "audit", "--org", &org, "--since", "yesterday"]);
    assert!(!ok && err.contains("--since"), "{err}");

    // No record, no change: with the trail's table gone, creating a key fails and
    // leaves no key behind.
    let rename = |sql: &'static str| async {
        let pool = ferry::db::Db::connect(&db.url, 1).await.unwrap();
        crate::support::execute(&pool, sql).await;
    };
    rename("ALTER TABLE audit_events RENAME TO audit_events_away").await;
    let (ok, _, err) = ferry(&db, &["admin", "key", "create", "--org", &org, "--name", "ghost"]);
    rename("ALTER TABLE audit_events_away RENAME TO audit_events").await;
    assert!(!ok, "a key was created without its audit record: {err}");
    let (_, keys, _) = ferry(&db, &["admin", "key", "list", "--org", &org]);
    assert!(!keys.contains("ghost"), "{keys}");
}

/// `ferry admin storage usage` lists the store itself: files and bytes per
/// organization and kind, hidden partial copies left out; `--org` narrows it.
async fn admin_storage_usage_counts_files_and_bytes_per_organization_and_kind(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (ok, _, err) = ferry(&db, &["migrate"]);
    assert!(ok, "{err}");
    let files = db.data_dir().join("files");
    for (path, bytes) in [
        ("exports/org-a/job-1/entities.csv", 100),
        ("exports/org-a/job-2/entities.csv", 50),
        ("imports/org-a/job-3/errors.csv", 7),
        ("imports/org-b/job-4/upload.csv", 1000),
        ("exports/org-a/job-5/.entities.csv.partial-01", 999),
    ] {
        let path = files.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, vec![b'x'; bytes]).unwrap();
    }
    let (ok, out, err) = ferry(&db, &["admin", "storage", "usage"]);
    assert!(ok, "{err}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["org-a", "exports", "2", "150"],
            vec!["org-a", "imports", "1", "7"],
            vec!["org-b", "imports", "1", "1000"],
        ],
        "{out}"
    );
    let (ok, out, err) = ferry(&db, &["admin", "storage", "usage", "--org", "org-b"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("org-b"), "{out}");
}
