//! A graceful stop (SIGTERM) of a real `ferry serve` in the middle of an import,
//! on both backends: the import stops at its next batch, keeps its checkpoint,
//! does not count the attempt, and the next run resumes without writing any row
//! twice.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;
use ferry::proto::import_service_client::ImportServiceClient;

use crate::on_both_backends;
use crate::support::{Backend, KillOnDrop, TestApp, Workers, execute};

on_both_backends!(a_graceful_stop_mid_import_loses_no_work_and_writes_no_row_twice,);

const ROWS: usize = 60_000;
const BATCH: i64 = 500;

/// Counts every row written into `entities` (inserted or updated), so a row
/// written twice shows even when the final rows look right.
async fn count_writes(app: &TestApp, backend: Backend) {
    // Appended, never updated in place: on PostgreSQL the import writes on two
    // connections at once, and a shared counter row would lock one behind the other.
    let sql = match backend {
        Backend::Sqlite => {
            "CREATE TABLE write_log (n INTEGER NOT NULL); \
             CREATE TRIGGER count_inserts AFTER INSERT ON entities BEGIN INSERT INTO write_log VALUES (1); END; \
             CREATE TRIGGER count_updates AFTER UPDATE ON entities BEGIN INSERT INTO write_log VALUES (1); END;"
        }
        Backend::Postgres => {
            "CREATE TABLE write_log (n BIGINT NOT NULL); \
             CREATE FUNCTION count_writes() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               INSERT INTO write_log SELECT count(*) FROM written; RETURN NULL; END $$; \
             CREATE TRIGGER count_inserts AFTER INSERT ON entities REFERENCING NEW TABLE AS written \
               FOR EACH STATEMENT EXECUTE FUNCTION count_writes(); \
             CREATE TRIGGER count_updates AFTER UPDATE ON entities REFERENCING NEW TABLE AS written \
               FOR EACH STATEMENT EXECUTE FUNCTION count_writes();"
        }
    };
    execute(app.db(), sql).await;
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn writes(app: &TestApp) -> i64 {
    let sql = "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) AS n FROM write_log";
    let counted: Count = match &mut app.db().conn().await.unwrap() {
        ferry::db::Conn::Pg(c) => diesel::sql_query(sql).get_result(&mut **c).await,
        ferry::db::Conn::Sqlite(c) => diesel::sql_query(sql).get_result(&mut **c).await,
    }
    .unwrap();
    counted.n
}

async fn job(app: &TestApp, id: &str) -> ferry::db::jobs::JobRow {
    ferry::db::jobs::find(&mut app.db().conn().await.unwrap(), id)
        .await
        .unwrap()
        .unwrap()
}

/// `ferry serve` on the test's database and data folder (so its store holds the
/// upload), writing batches of [`BATCH`] rows.
fn serve(app: &TestApp) -> KillOnDrop {
    let batch = format!("bulk_import.batch_rows={BATCH}");
    let settings = ["jobs.poll_millis=100", batch.as_str()];
    KillOnDrop(
        crate::support::ferry_serve(&app.db.data_dir(), &app.db.url, &settings)
            .spawn()
            .unwrap(),
    )
}

/// Two busy loops for as long as they live: both cores busy, the condition under
/// which the stop once reached the import seconds late.
struct BusyCores(Vec<Child>);

impl BusyCores {
    fn start() -> BusyCores {
        BusyCores(
            (0..2)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }
}

impl Drop for BusyCores {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn terminate(child: &Child) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

fn wait_exit(child: &mut Child, bound: Duration) {
    let deadline = Instant::now() + bound;
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "ferry did not exit within {bound:?} of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn a_graceful_stop_mid_import_loses_no_work_and_writes_no_row_twice(backend: Backend) {
    // This process takes the upload and runs no job; `ferry serve` children do.
    let app = TestApp::start_with(backend, |_| {}, Workers::None).await;
    count_writes(&app, backend).await;
    let queued = ImportServiceClient::new(app.channel.clone())
        .upload_import(app.request(tokio_stream::iter(crate::outages::upload_messages(ROWS))))
        .await
        .unwrap()
        .into_inner();
    let mut first = serve(&app);
    let deadline = Instant::now() + Duration::from_secs(120);
    while job(&app, &queued.id).await.rows_done < 10 * BATCH {
        assert!(Instant::now() < deadline, "the import never got going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let busy = BusyCores::start();
    let at_signal = job(&app, &queued.id).await;
    let writes_at_signal = writes(&app).await;
    terminate(&first);
    wait_exit(&mut first, Duration::from_secs(30));
    drop(busy);
    let stopped = job(&app, &queued.id).await;
    let written_after = writes(&app).await - writes_at_signal;
    eprintln!(
        "{backend:?}: SIGTERM at {} rows; stopped at {} rows, {written_after} rows written after the signal, state {:?}, attempts {}",
        at_signal.rows_done, stopped.rows_done, stopped.state, stopped.attempts
    );
    assert!(
        written_after <= 2 * BATCH,
        "{written_after} rows were written after the signal (at most two batches of {BATCH})"
    );
    assert_eq!(
        writes(&app).await,
        stopped.rows_done,
        "the checkpoint says what was written"
    );
    if stopped.rows_done < ROWS as i64 {
        assert_eq!(stopped.state.as_str(), "queued", "{stopped:?}");
        assert_eq!(stopped.attempts, 0, "the stop counted as an attempt: {stopped:?}");
    } else {
        assert_eq!(stopped.state.as_str(), "completed", "{stopped:?}");
    }
    // The next process resumes from the checkpoint.
    let mut second = serve(&app);
    let deadline = Instant::now() + Duration::from_secs(180);
    let done = loop {
        let row = job(&app, &queued.id).await;
        if row.is_terminal() {
            break row;
        }
        assert!(
            Instant::now() < deadline,
            "the resumed import did not end: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    terminate(&second);
    wait_exit(&mut second, Duration::from_secs(30));
    assert_eq!(done.state.as_str(), "completed", "{done:?}");
    assert_eq!(done.attempts, 1, "{done:?}");
    assert_eq!(done.rows_done, ROWS as i64);
    assert_eq!(writes(&app).await, ROWS as i64, "a row was written twice");
    let result: serde_json::Value = serde_json::from_str(done.result.as_deref().unwrap()).unwrap();
    assert_eq!(result["created"], ROWS as i64, "{result}");
    app.stop().await;
}
