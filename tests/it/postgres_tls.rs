//! PostgreSQL over TLS on every connection ferry opens, against the local server
//! given a certificate this test makes (`ALTER SYSTEM` + reload, restored after).

use std::panic::AssertUnwindSafe;
use std::process::Command;
use std::time::Duration;

use ferry::db::postgres;
use futures::FutureExt;

use crate::pki::TestCa;
use crate::support::{Backend, TestApp, Workers, postgres_url};

/// The settings the test changes, as they were.
const SETTINGS: [&str; 3] = ["ssl", "ssl_cert_file", "ssl_key_file"];

async fn admin(base: &str) -> tokio_postgres::Client {
    postgres::client(&with(base, "sslmode=disable"), "test admin")
        .await
        .expect("admin connection")
}

fn with(url: &str, params: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{params}")
}

/// Writes `pem` where the server runs, as the server's user, mode 0600 (the
/// server refuses a key others can read), one PEM line per row.
async fn write_on_server(admin: &tokio_postgres::Client, path: &str, pem: &str) {
    let lines: Vec<String> = pem.lines().map(|l| format!("'{l}'")).collect();
    admin
        .batch_execute(&format!(
            "COPY (SELECT unnest(ARRAY[{}]::text[])) TO PROGRAM 'umask 077 && cat > {path}'",
            lines.join(",")
        ))
        .await
        .expect("write a file on the server");
}

async fn remove_on_server(admin: &tokio_postgres::Client, paths: &[&str]) {
    let _ = admin
        .batch_execute(&format!("COPY (SELECT 1) TO PROGRAM 'rm -f {}'", paths.join(" ")))
        .await;
}

async fn show(admin: &tokio_postgres::Client, name: &str) -> String {
    admin
        .query_one(&format!("SHOW {name}"), &[])
        .await
        .expect("show")
        .get(0)
}

async fn set(admin: &tokio_postgres::Client, name: &str, value: &str) {
    admin
        .batch_execute(&format!("ALTER SYSTEM SET {name} = '{value}'"))
        .await
        .expect("alter system");
}

/// Whether the connection `url` opens is encrypted (or why it did not open).
async fn encrypted(url: &str) -> Result<bool, String> {
    let client = postgres::client(url, "test")
        .await
        .map_err(|e| format!("{e:?}"))?;
    let row = client
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_postgres_connection_honours_sslmode_against_a_certificate_the_test_made() {
    let Some(base) = postgres_url() else { return };
    assert!(
        base.contains("127.0.0.1"),
        "the test names the server 127.0.0.1: {base}"
    );
    let admin = admin(&base).await;
    let before: Vec<String> = futures::future::join_all(SETTINGS.iter().map(|s| show(&admin, s))).await;

    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("database CA");
    let ca_file = ca.write_ca(dir.path(), "db-ca.pem");
    // Named for db.internal only: verify-full must reach it by that name.
    let server = ca.server_for(dir.path(), "db", &["db.internal"]);
    let id = uuid::Uuid::now_v7().simple().to_string();
    let (cert_path, key_path) = (
        format!("/tmp/ferry-test-{id}.crt"),
        format!("/tmp/ferry-test-{id}.key"),
    );
    write_on_server(
        &admin,
        &cert_path,
        &std::fs::read_to_string(&server.cert).unwrap(),
    )
    .await;
    write_on_server(&admin, &key_path, &std::fs::read_to_string(&server.key).unwrap()).await;
    set(&admin, "ssl_cert_file", &cert_path).await;
    set(&admin, "ssl_key_file", &key_path).await;
    set(&admin, "ssl", "on").await;
    admin.batch_execute("SELECT pg_reload_conf()").await.unwrap();

    let outcome = AssertUnwindSafe(checks(&base, ca_file.to_str().unwrap(), dir.path()))
        .catch_unwind()
        .await;

    // Back as it was, whatever happened: first the file's settings, then any
    // earlier ALTER SYSTEM value that differed.
    for name in SETTINGS {
        admin
            .batch_execute(&format!("ALTER SYSTEM RESET {name}"))
            .await
            .unwrap();
    }
    admin.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (name, was) in SETTINGS.iter().zip(&before) {
        if &show(&admin, name).await != was {
            set(&admin, name, was).await;
        }
    }
    admin.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    remove_on_server(&admin, &[&cert_path, &key_path]).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn checks(base: &str, ca_file: &str, dir: &std::path::Path) {
    let by_name = with(
        &base.replacen("127.0.0.1", "db.internal", 1),
        "hostaddr=127.0.0.1",
    );
    let verify_full = with(&by_name, &format!("sslmode=verify-full&sslrootcert={ca_file}"));
    // The reload is asynchronous: wait until the server shows the new certificate.
    let mut ready = Err(String::new());
    for _ in 0..50 {
        ready = encrypted(&verify_full).await;
        if ready.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ready, Ok(true), "verify-full by the certificate's name");

    let by_address = |mode: &str| with(base, &format!("sslmode={mode}&sslrootcert={ca_file}"));
    let wrong_name = encrypted(&by_address("verify-full")).await.unwrap_err();
    assert!(wrong_name.contains("NotValidForName"), "{wrong_name}");
    assert_eq!(
        encrypted(&by_address("verify-ca")).await,
        Ok(true),
        "verify-ca ignores the name"
    );
    let other_ca = TestCa::new("someone else's CA").write_ca(dir, "other.pem");
    let untrusted = encrypted(&with(
        base,
        &format!("sslmode=verify-ca&sslrootcert={}", other_ca.display()),
    ))
    .await
    .unwrap_err();
    assert!(untrusted.contains("UnknownIssuer"), "{untrusted}");
    assert_eq!(encrypted(&with(base, "sslmode=require")).await, Ok(true));
    assert_eq!(encrypted(&with(base, "sslmode=prefer")).await, Ok(true));
    assert_eq!(encrypted(&with(base, "sslmode=disable")).await, Ok(false));
    let typo = encrypted(&with(base, "sslmode=verify_full")).await.unwrap_err();
    assert!(typo.contains("verify_full"), "{typo}");

    // The whole server on verify-full: pool, dedicated, LISTEN, liveness, the
    // import's COPY writer and the export's reader all open TLS connections.
    let tag = format!("ferry-tls-{}", uuid::Uuid::now_v7().simple());
    let app = TestApp::start_with(
        Backend::Postgres,
        |c| {
            let url = c.database.url.replacen("127.0.0.1", "db.internal", 1);
            c.database.url = with(
                &url,
                &format!(
                    "hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca_file}&application_name={tag}"
                ),
            );
        },
        Workers::Ferry,
    )
    .await;
    let server = format!("http://{}", app.running.as_ref().unwrap().grpc_addr);
    let home = tempfile::tempdir().unwrap();
    let csv = home.path().join("people.csv");
    std::fs::write(
        &csv,
        "tax_id,name,type,country_code\n20123456786,Ana Gómez,person,AR\n30712345671,ACME SA,company,AR\n",
    )
    .unwrap();
    let ferry = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .env("HOME", home.path())
            .args(["--server", &server, "--api-key", &app.key])
            .args(args)
            .current_dir(home.path())
            .output()
            .unwrap()
    };
    let imported = ferry(&["import", "upload", csv.to_str().unwrap(), "--wait"]);
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let out = home.path().join("out.csv");
    let exported = ferry(&[
        "export",
        "create",
        "--format",
        "csv",
        "--download",
        out.to_str().unwrap(),
    ]);
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    assert!(std::fs::read_to_string(&out).unwrap().contains("Ana Gómez"));

    let admin = admin(base).await;
    let rows = admin
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
            &[&tag],
        )
        .await
        .unwrap();
    let flags: Vec<bool> = rows.iter().map(|r| r.get(0)).collect();
    assert!(flags.len() >= 2, "the server's connections: {flags:?}");
    assert!(flags.iter().all(|ssl| *ssl), "a plaintext connection: {flags:?}");
    app.stop().await;
}
