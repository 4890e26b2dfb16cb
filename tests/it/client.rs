//! The `ferry` client commands, run as a person or a script would run them against
//! a test server: exit codes, tables, JSON, downloads, profiles and progress bars.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::on_both_backends;
use crate::support::{Backend, TestApp};

on_both_backends!(
    upload_with_wait_exits_by_how_the_import_ended_and_errors_are_listed,
    export_with_wait_downloads_a_file_whose_hash_is_verified,
    a_tampered_export_file_is_refused_and_not_saved,
    whoami_answers_any_valid_key_even_one_without_permissions,
    login_saves_a_private_profile_that_later_commands_use,
    json_output_is_one_object_per_line_for_lists_and_streams,
);

/// A client run: the `ferry` binary with a home of its own (no profile of the
/// person running the tests leaks in) and the given environment.
struct Client {
    server: String,
    key: String,
    home: tempfile::TempDir,
}

impl Client {
    fn of(app: &TestApp) -> Client {
        let addr = app.running.as_ref().expect("running").grpc_addr;
        Client {
            server: format!("http://{addr}"),
            key: app.key.clone(),
            home: tempfile::tempdir().expect("home"),
        }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
        command
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join(".config"))
            .env_remove("FERRY_URL")
            .env_remove("FERRY_API_KEY")
            .env_remove("FERRY_ORG")
            .env_remove("FERRY_PROFILE")
            .current_dir(self.home.path())
            .args(args);
        command
    }

    /// Runs with `--server` and `--api-key` given as flags.
    async fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["--server", &self.server, "--api-key", &self.key];
        all.extend_from_slice(args);
        self.command(&all).output().await.expect("run ferry")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exit code")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every stdout line as JSON (fails the test on a line that is not).
fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).expect("write file");
    path.display().to_string()
}

const GOOD: &str =
    "tax_id,name,type,country_code\n20123456786,Ana Gómez,person,AR\n30712345671,ACME SA,company,AR\n";
const ONE_BAD_ROW: &str = "tax_id,name,type,country_code\n20123456786,Ana,person,AR\n,Nobody,person,AR\n";

async fn upload_with_wait_exits_by_how_the_import_ended_and_errors_are_listed(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let client = Client::of(&app);

    let good = write(&client.path("good.csv"), GOOD);
    let done = client
        .run(&["--output", "json", "import", "upload", &good, "--wait"])
        .await;
    assert_eq!(code(&done), 0, "{}", stderr(&done));
    let import = &json_lines(&done)[0];
    assert_eq!(import["state"], "JOB_STATE_COMPLETED");
    assert_eq!(import["createdItems"], 2);

    // Rows failed: exit 5, and the problems are listed and downloadable.
    let bad = write(&client.path("bad.csv"), ONE_BAD_ROW);
    let partial = client
        .run(&["--output", "json", "import", "upload", &bad, "--wait"])
        .await;
    assert_eq!(code(&partial), 5, "{}", stderr(&partial));
    let import = &json_lines(&partial)[0];
    assert_eq!(import["failedItems"], 1);
    let id = import["id"].as_str().unwrap().to_string();

    let errors = client.run(&["import", "errors", &id]).await;
    assert_eq!(code(&errors), 0, "{}", stderr(&errors));
    let table = stdout(&errors);
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("LINE  COLUMN  CODE"), "{table}");
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..3], ["3", "tax_id", "MISSING_TAX_ID"], "{table}");

    let report = client.path("errors.csv");
    let saved = client
        .run(&["import", "report", &id, "-o", report.to_str().unwrap()])
        .await;
    assert_eq!(code(&saved), 0, "{}", stderr(&saved));
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(
        text.contains("Nobody") && text.contains("MISSING_TAX_ID"),
        "{text}"
    );

    // Refused at pre-flight: exit 1, the reason and each violation on a line.
    let headless = write(&client.path("headless.csv"), "tax_id,name\n1,x\n");
    let refused = client.run(&["import", "upload", &headless, "--wait"]).await;
    assert_eq!(code(&refused), 1);
    let err = stderr(&refused);
    assert!(
        err.starts_with("error: INVALID_ARGUMENT MISSING_HEADER: "),
        "{err}"
    );
    assert!(err.contains("\n  line 1: MISSING_HEADER: "), "{err}");
    assert!(err.contains("\n  request id: "), "{err}");

    // A cancelled import exits 4 when followed.
    let queued = client.run(&["--output", "json", "import", "upload", &good]).await;
    let id = json_lines(&queued)[0]["id"].as_str().unwrap().to_string();
    let cancelled = client.run(&["import", "cancel", &id]).await;
    if code(&cancelled) == 0 {
        // Cancelled (4) — or, when the cancel reached a running import that wrote its
        // last rows before its next check, completed (0): its rows are in, so it
        // says so rather than claim a cancel that did not happen.
        let watched = client.run(&["import", "watch", &id]).await;
        assert!([4, 0].contains(&code(&watched)), "{}", stdout(&watched));
    } else {
        // It finished before the cancel arrived: that is the only acceptable refusal.
        assert!(
            stderr(&cancelled).contains("FAILED_PRECONDITION"),
            "{}",
            stderr(&cancelled)
        );
    }
    app.stop().await;
}

async fn export_with_wait_downloads_a_file_whose_hash_is_verified(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let client = Client::of(&app);
    let good = write(&client.path("good.csv"), GOOD);
    assert_eq!(code(&client.run(&["import", "upload", &good, "--wait"]).await), 0);

    let file = client.path("people.csv");
    let exported = client
        .run(&[
            "--output",
            "json",
            "export",
            "create",
            "--format",
            "csv",
            "--filter-type",
            "person",
            "--columns",
            "tax_id,name",
            "--download",
            file.to_str().unwrap(),
        ])
        .await;
    assert_eq!(code(&exported), 0, "{}", stderr(&exported));
    let lines = json_lines(&exported);
    let export = &lines[0];
    assert_eq!(export["state"], "JOB_STATE_COMPLETED");
    assert_eq!(export["rowCount"], 1);
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(export["sha256"], hex::encode(Sha256::digest(&bytes)));
    assert_eq!(lines[1]["sha256"], export["sha256"]);
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains("Ana Gómez") && !text.contains("ACME"), "{text}");

    // `export download` of the same export to a default name in the working folder.
    let id = export["id"].as_str().unwrap();
    let again = client.run(&["export", "download", id]).await;
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    let name = export["fileName"].as_str().unwrap();
    assert_eq!(
        std::fs::read(client.path(name)).unwrap(),
        std::fs::read(&file).unwrap()
    );
    assert!(stdout(&again).contains("verified"), "{}", stdout(&again));
    app.stop().await;
}

async fn a_tampered_export_file_is_refused_and_not_saved(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let client = Client::of(&app);
    let good = write(&client.path("good.csv"), GOOD);
    assert_eq!(code(&client.run(&["import", "upload", &good, "--wait"]).await), 0);
    let created = client
        .run(&[
            "--output", "json", "export", "create", "--format", "ndjson", "--wait",
        ])
        .await;
    assert_eq!(code(&created), 0, "{}", stderr(&created));
    let export = &json_lines(&created)[0];
    let id = export["id"].as_str().unwrap();

    // Flip the stored file's first byte behind the server's back.
    let stored = find_file(
        &app.db.data_dir().join("files"),
        export["fileName"].as_str().unwrap(),
    )
    .expect("stored export file");
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(&stored, bytes).unwrap();

    let dest = client.path("out.ndjson");
    let refused = client
        .run(&["export", "download", id, "-o", dest.to_str().unwrap()])
        .await;
    assert_eq!(code(&refused), 6, "{}", stderr(&refused));
    assert!(stderr(&refused).contains("SHA-256"), "{}", stderr(&refused));
    assert!(!dest.exists(), "a file that failed its check was left behind");
    assert!(!client.path("out.ndjson.part").exists());
    app.stop().await;
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
    }
    None
}

async fn whoami_answers_any_valid_key_even_one_without_permissions(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, powerless) = ferry::auth::keys::create(app.db(), &app.org_id, "none", &[], &[])
        .await
        .unwrap();
    let client = Client::of(&app);
    let me = client.run(&["--output", "json", "whoami"]).await;
    assert_eq!(code(&me), 0, "{}", stderr(&me));
    let caller = &json_lines(&me)[0];
    assert_eq!(caller["organizationId"], app.org_id.as_str());
    assert_eq!(caller["organizationName"], "acme");
    assert_eq!(caller["plan"], "enterprise");
    assert_eq!(caller["permissions"].as_array().unwrap().len(), 3);

    let bare = client
        .command(&["--server", &client.server, "--api-key", &powerless, "whoami"])
        .output()
        .await
        .unwrap();
    assert_eq!(code(&bare), 0, "{}", stderr(&bare));
    assert!(stdout(&bare).contains(&app.org_id), "{}", stdout(&bare));
    // ... but nothing else.
    let refused = client
        .command(&[
            "--server",
            &client.server,
            "--api-key",
            &powerless,
            "entities",
            "list",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(code(&refused), 1);
    assert!(
        stderr(&refused).contains("PERMISSION_DENIED MISSING_PERMISSION"),
        "{}",
        stderr(&refused)
    );

    // No key anywhere: told where to put one, before any call.
    let keyless = client
        .command(&["--server", &client.server, "whoami"])
        .output()
        .await
        .unwrap();
    assert_eq!(code(&keyless), 1);
    assert!(stderr(&keyless).contains("ferry login"), "{}", stderr(&keyless));
    app.stop().await;
}

async fn login_saves_a_private_profile_that_later_commands_use(backend: Backend) {
    let app = TestApp::start(backend).await;
    let client = Client::of(&app);
    let bad = client
        .command(&[
            "login",
            "--server",
            &client.server,
            "--api-key",
            "ferry_nope_nope",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(code(&bad), 1);
    let file = client.home.path().join(".config/ferry/config.toml");
    assert!(!file.exists(), "a refused key was saved");

    let login = client
        .command(&["login", "--server", &client.server, "--api-key", &client.key])
        .output()
        .await
        .unwrap();
    assert_eq!(code(&login), 0, "{}", stderr(&login));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // No flags and no environment: the profile says where and as whom.
    let me = client.command(&["whoami"]).output().await.unwrap();
    assert_eq!(code(&me), 0, "{}", stderr(&me));
    assert!(stdout(&me).contains(&app.org_id));
    // A named profile that does not exist has no key.
    let other = client
        .command(&["--profile", "staging", "whoami"])
        .output()
        .await
        .unwrap();
    assert_eq!(code(&other), 1);
    app.stop().await;
}

async fn json_output_is_one_object_per_line_for_lists_and_streams(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    let client = Client::of(&app);
    let good = write(&client.path("good.csv"), GOOD);
    for _ in 0..3 {
        assert_eq!(code(&client.run(&["import", "upload", &good, "--wait"]).await), 0);
    }
    let listed = client
        .run(&["--output", "json", "import", "list", "--limit", "2"])
        .await;
    assert_eq!(code(&listed), 0, "{}", stderr(&listed));
    assert_eq!(json_lines(&listed).len(), 2);
    let all = client
        .run(&["--output", "json", "import", "list", "--limit", "0"])
        .await;
    assert_eq!(json_lines(&all).len(), 3);

    let entities = client
        .run(&["--output", "json", "entities", "list", "--filter-country", "ar"])
        .await;
    let entities = json_lines(&entities);
    assert_eq!(entities.len(), 2);
    let id = entities[0]["id"].as_str().unwrap();
    let one = client.run(&["--output", "json", "entities", "get", id]).await;
    assert_eq!(json_lines(&one)[0]["id"], id);

    // A watch prints every update; the last one is the end.
    let created = client.run(&["--output", "json", "export", "create"]).await;
    let id = json_lines(&created)[0]["id"].as_str().unwrap().to_string();
    let watched = client.run(&["--output", "json", "export", "watch", &id]).await;
    assert_eq!(code(&watched), 0, "{}", stderr(&watched));
    let updates = json_lines(&watched);
    assert_eq!(updates.last().unwrap()["state"], "JOB_STATE_COMPLETED");

    // Mappings round trip through the client.
    let mapping = client
        .run(&[
            "--output",
            "json",
            "mapping",
            "create",
            "--name",
            "crm",
            "--column",
            "Tax number=tax_id",
        ])
        .await;
    assert_eq!(code(&mapping), 0, "{}", stderr(&mapping));
    let mapping_id = json_lines(&mapping)[0]["id"].as_str().unwrap().to_string();
    let deleted = client.run(&["mapping", "delete", &mapping_id]).await;
    assert_eq!(code(&deleted), 0);
    let gone = client.run(&["mapping", "get", &mapping_id]).await;
    assert_eq!(code(&gone), 1);
    assert!(stderr(&gone).contains("NOT_FOUND"), "{}", stderr(&gone));
    app.stop().await;
}

/// Under a pseudo-terminal (`script`) the upload and the job draw bars on stderr;
/// the same command in a pipe draws nothing there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_bar_is_drawn_on_a_terminal_and_not_in_a_pipe() {
    let app = TestApp::start_working(Backend::Sqlite).await;
    let client = Client::of(&app);
    let mut text = String::from("tax_id,name,type,country_code\n");
    for i in 0..2_000 {
        text.push_str(&format!("{},Person {i},person,AR\n", 20_000_000_000u64 + i));
    }
    let file = write(&client.path("many.csv"), &text);

    let piped = client.run(&["import", "upload", &file, "--wait"]).await;
    assert!(stderr(&piped).is_empty(), "drawn into a pipe: {}", stderr(&piped));
    assert!(stdout(&piped).contains("state"), "{}", stdout(&piped));

    let line = format!(
        "{} --server {} --api-key {} import upload {file} --wait",
        env!("CARGO_BIN_EXE_ferry"),
        client.server,
        client.key
    );
    let typescript = client.path("typescript");
    let output = tokio::process::Command::new("script")
        .args(["-qfec", &line, typescript.to_str().unwrap()])
        .env("HOME", client.home.path())
        .env("XDG_CONFIG_HOME", client.home.path().join(".config"))
        .env("COLUMNS", "120")
        .output()
        .await
        .expect("script(1) from util-linux");
    let screen = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        screen.contains("uploading") || screen.contains("importing"),
        "no bar drawn: {screen}"
    );
    assert!(
        screen.contains("\u{1b}["),
        "no terminal control sequences: {screen}"
    );
    app.stop().await;
}

/// With JSON logs, a real server running an import while calls arrive: every line
/// the job logs carries its `job.id`, no call's line is marked as part of a job, and
/// a failed call is one line with its code and reason (INFO for a caller's mistake).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_log_lines_carry_the_job_id_and_call_lines_never_do() {
    use std::io::{BufRead, BufReader};
    use std::sync::{Arc, Mutex};

    use ferry::proto::{GetImportRequest, import_service_client::ImportServiceClient};

    let data = tempfile::tempdir().unwrap();
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--data-dir")
        .arg(data.path())
        .args(["--set", "log.format=json", "--set", "log.level=info"])
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let reader = {
        let (lines, stderr) = (lines.clone(), server.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let value: serde_json::Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                if let Some(addr) = value["fields"]["grpc_addr"].as_str() {
                    let _ = addr_tx.send(addr.to_string());
                }
                lines.lock().unwrap().push(value);
            }
        })
    };
    let addr = tokio::task::spawn_blocking(move || addr_rx.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the server started");
    let key = std::fs::read_to_string(data.path().join("bootstrap-key")).unwrap();
    let key = key.trim();
    let server_url = format!("http://{addr}");

    let mut text = String::from("tax_id,name,type,country_code\n");
    for i in 0..5_000u64 {
        text.push_str(&format!("{},Person {i},person,AR\n", 20_000_000_000u64 + i));
    }
    let file = data.path().join("many.csv");
    std::fs::write(&file, text).unwrap();
    let upload = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["--server", &server_url, "--api-key", key, "--output", "json"])
        .args(["import", "upload", file.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(
        upload.status.success(),
        "{}",
        String::from_utf8_lossy(&upload.stderr)
    );
    let import: serde_json::Value = serde_json::from_slice(&upload.stdout).unwrap();
    let id = import["id"].as_str().unwrap().to_string();

    // Calls interleave with the running job until it ends.
    let channel = tonic::transport::Channel::from_shared(server_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ImportServiceClient::new(channel);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut request = tonic::Request::new(GetImportRequest { id: id.clone() });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        let state = client.get_import(request).await.unwrap().into_inner().state;
        if state == ferry::proto::JobState::Completed as i32 || std::time::Instant::now() > deadline {
            break;
        }
    }
    let mut missing = tonic::Request::new(GetImportRequest {
        id: "no-such-import".into(),
    });
    missing
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    missing
        .metadata_mut()
        .insert("x-request-id", "trace-missing".parse().unwrap());
    assert!(client.get_import(missing).await.is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = server.kill();
    let _ = server.wait();
    reader.join().unwrap();

    let lines = lines.lock().unwrap();
    let in_job = |line: &serde_json::Value| {
        line["spans"]
            .as_array()
            .is_some_and(|spans| spans.iter().any(|span| span["name"] == "job"))
    };
    let job_lines: Vec<_> = lines
        .iter()
        .filter(|l| ["job started", "job completed"].contains(&l["fields"]["message"].as_str().unwrap_or("")))
        .collect();
    assert!(job_lines.len() >= 2, "no job lines: {lines:?}");
    for line in &job_lines {
        assert!(in_job(line), "a job line without the job span: {line}");
        assert!(
            line.to_string().contains(&id) || line["span"]["job.id"].is_string(),
            "{line}"
        );
    }
    let calls: Vec<_> = lines
        .iter()
        .filter(|l| {
            matches!(
                l["fields"]["message"].as_str(),
                Some("call answered" | "call failed")
            )
        })
        .collect();
    assert!(calls.len() > 2, "{lines:?}");
    for call in &calls {
        assert!(!in_job(call), "a call logged inside a job's span: {call}");
    }
    let failed: Vec<_> = lines
        .iter()
        .filter(|l| l.to_string().contains("trace-missing"))
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["fields"]["message"], "call failed");
    assert_eq!(failed[0]["level"], "INFO");
    assert_eq!(failed[0]["fields"]["code"], "NotFound");
    assert_eq!(failed[0]["fields"]["reason"], "NOT_FOUND");
}
