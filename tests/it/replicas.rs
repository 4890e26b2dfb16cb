//! Several replicas on one PostgreSQL database: a watcher on one replica follows a
//! job that another replica's worker runs.

use std::time::Duration;

use ferry::proto::{
    CreateExportRequest, JobState, WatchExportRequest, export_service_client::ExportServiceClient,
};
use ferry::server::{self, App};
use tokio_stream::StreamExt;

use crate::support::{Backend, KillOnDrop, TestApp, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_one_replica_sees_a_job_run_by_another() {
    if crate::support::postgres_url().is_none() {
        return;
    }
    // Replica A serves the watcher and runs no jobs.
    let a = TestApp::start(Backend::Postgres).await;
    let rows: Vec<_> = (1..=20).map(|n| crate::entities_fixture(&a.org_id, n)).collect();
    ferry::db::entities::insert(&mut a.db().conn().await.unwrap(), &rows)
        .await
        .unwrap();
    let mut client = ExportServiceClient::new(a.channel.clone());
    let created = client
        .create_export(a.request(CreateExportRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let mut stream = client
        .watch_export(a.request(WatchExportRequest {
            id: created.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.state, JobState::Queued as i32);

    // Replica B, same database, runs the job.
    let b = App::open(test_config(&a.db)).await.unwrap();
    let handlers = b.job_kinds();
    let running_b = server::start(b, handlers).await.unwrap();

    let mut states = vec![first.state];
    while let Some(item) = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .unwrap()
    {
        states.push(item.unwrap().state);
    }
    assert_eq!(states.last(), Some(&(JobState::Completed as i32)), "{states:?}");
    assert!(states.contains(&(JobState::Running as i32)), "{states:?}");
    running_b.stop().await;
    a.stop().await;
}

/// Another ferry process serving on `database_url`, whose exports crawl (one row per
/// batch, 50 ms apart) and whose leases last a minute.
fn slow_replica(data_dir: &std::path::Path, database_url: &str) -> std::process::Child {
    slow_replica_with(data_dir, database_url, None, &[])
}

/// libfaketime, from Debian's `faketime` package (`.ci/run` installs it).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// [`slow_replica`] with its wall clock moved by `clock` (libfaketime's
/// `FAKETIME`, such as `+120s`; the monotonic clock is left alone, as NTP-less
/// virtual machines drift) and more settings.
fn slow_replica_with(
    data_dir: &std::path::Path,
    database_url: &str,
    clock: Option<&str>,
    settings: &[&str],
) -> std::process::Child {
    let slow = [
        "jobs.lease_secs=60",
        "jobs.poll_millis=100",
        "exports.batch_rows=1",
        "exports.batch_pause_millis=50",
    ];
    let all: Vec<&str> = slow.iter().chain(settings).copied().collect();
    let mut command = crate::support::ferry_serve(data_dir, database_url, &all);
    if let Some(offset) = clock {
        assert!(
            std::path::Path::new(LIBFAKETIME).exists(),
            "{LIBFAKETIME} is missing: apt-get install faketime"
        );
        command
            .env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME", offset)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
    command.spawn().unwrap()
}

/// Polls the job until `done` says so (at most `bound`); its last row.
async fn poll_job(
    app: &TestApp,
    id: &str,
    bound: Duration,
    done: impl Fn(&ferry::db::jobs::JobRow) -> bool,
) -> ferry::db::jobs::JobRow {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let row = ferry::db::jobs::find(&mut app.db().conn().await.unwrap(), id)
            .await
            .unwrap()
            .unwrap();
        if done(&row) {
            return row;
        }
        assert!(tokio::time::Instant::now() < deadline, "after {bound:?}: {row:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_a_killed_replica_resumes_on_another_long_before_its_lease_ends() {
    if crate::support::postgres_url().is_none() {
        return;
    }
    // Replica B (this process) takes the calls; its worker starts later.
    let b = TestApp::start_with(
        Backend::Postgres,
        |c| c.jobs.lease_secs = 60,
        crate::support::Workers::None,
    )
    .await;
    let rows: Vec<_> = (1..=400).map(|n| crate::entities_fixture(&b.org_id, n)).collect();
    ferry::db::entities::insert(&mut b.db().conn().await.unwrap(), &rows)
        .await
        .unwrap();
    // Replica A, another process, runs a slow export: 400 batches of one row, 50 ms apart.
    let mut a = slow_replica(&b.db.data_dir().join("replica-a"), &b.db.url);
    let created = ExportServiceClient::new(b.channel.clone())
        .create_export(b.request(CreateExportRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let running = poll_job(&b, &created.id, Duration::from_secs(30), |r| r.rows_done > 0).await;
    let owner_a = running.lease_owner.clone().unwrap();
    assert!(owner_a.starts_with("live:"), "{owner_a}");

    a.kill().unwrap(); // SIGKILL: no lease is returned
    a.wait().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = ferry::jobs::Worker::new(b.app.queue.clone(), b.app.job_kinds());
    let worker = tokio::spawn(worker.run(stop.clone()));
    // The lease has ~60 s left; only the dead owner's released lock explains a
    // second attempt within 10 s.
    let resumed = poll_job(&b, &created.id, Duration::from_secs(10), |r| r.attempts == 2).await;
    assert_ne!(resumed.lease_owner.as_deref(), Some(owner_a.as_str()));
    let done = poll_job(&b, &created.id, Duration::from_secs(60), |r| {
        r.state.as_str() == "completed"
    })
    .await;
    assert_eq!(done.attempts, 2);
    stop.cancel();
    worker.await.unwrap();
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_loses_its_liveness_lock_hands_its_job_back() {
    if crate::support::postgres_url().is_none() {
        return;
    }
    let slow = |c: &mut ferry::config::Config| {
        c.jobs.lease_secs = 60;
        c.exports.batch_rows = 1;
        c.exports.batch_pause_millis = 20;
    };
    let a = TestApp::start_with(Backend::Postgres, slow, crate::support::Workers::Ferry).await;
    let rows: Vec<_> = (1..=200).map(|n| crate::entities_fixture(&a.org_id, n)).collect();
    ferry::db::entities::insert(&mut a.db().conn().await.unwrap(), &rows)
        .await
        .unwrap();
    let created = ExportServiceClient::new(a.channel.clone())
        .create_export(a.request(CreateExportRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let running = poll_job(&a, &created.id, Duration::from_secs(30), |r| r.rows_done > 0).await;
    let owner = running.lease_owner.clone().unwrap();
    // The database drops the connection that holds the worker's lock.
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Ended {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        #[allow(dead_code, reason = "the row count is what matters")]
        ended: bool,
    }
    let terminated: Vec<Ended> = match &mut a.db().conn().await.unwrap() {
        ferry::db::Conn::Pg(c) => diesel::sql_query(
            "SELECT pg_terminate_backend(pid) AS ended FROM pg_locks WHERE locktype = 'advisory' \
             AND ((classid::bigint << 32) | objid::bigint) = hashtextextended($1, 1801)",
        )
        .bind::<diesel::sql_types::Text, _>(&owner)
        .load(&mut **c)
        .await
        .unwrap(),
        ferry::db::Conn::Sqlite(_) => unreachable!(),
    };
    assert_eq!(terminated.len(), 1, "the lock's connection was not found");
    // Handed back and claimed again (by this or another worker) long before the
    // 60 s lease ends, then finished once.
    let taken = poll_job(&a, &created.id, Duration::from_secs(10), |r| r.attempts >= 2).await;
    assert!(
        taken.state.as_str() == "running" || taken.state.as_str() == "completed",
        "{taken:?}"
    );
    let done = poll_job(&a, &created.id, Duration::from_secs(60), |r| {
        r.state.as_str() == "completed"
    })
    .await;
    assert!(done.error.is_none(), "{done:?}");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_restart_takes_back_the_jobs_of_a_killed_instance_at_once() {
    let b = TestApp::start_with(
        Backend::Sqlite,
        |c| c.jobs.lease_secs = 60,
        crate::support::Workers::None,
    )
    .await;
    let rows: Vec<_> = (1..=400).map(|n| crate::entities_fixture(&b.org_id, n)).collect();
    ferry::db::entities::insert(&mut b.db().conn().await.unwrap(), &rows)
        .await
        .unwrap();
    // Another process on the same data folder runs a slow export.
    let mut a = slow_replica(&b.db.data_dir(), &b.db.url);
    let created = ExportServiceClient::new(b.channel.clone())
        .create_export(b.request(CreateExportRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let running = poll_job(&b, &created.id, Duration::from_secs(30), |r| r.rows_done > 0).await;
    assert!(
        running.lease_owner.as_deref().is_some_and(|o| o.contains('@')),
        "{running:?}"
    );
    a.kill().unwrap();
    a.wait().unwrap();

    // A process starting on the folder finds the instance gone: its jobs are
    // taken back without waiting for the 60 s lease.
    let mut config = test_config(&b.db);
    config.jobs.lease_secs = 60;
    config.server.bootstrap = false;
    let restarted = App::open(config).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = ferry::jobs::Worker::new(restarted.queue.clone(), restarted.job_kinds())
        .in_instance(&restarted.scratch.name());
    let worker = tokio::spawn(worker.run(stop.clone()));
    let done = poll_job(&b, &created.id, Duration::from_secs(20), |r| {
        r.state.as_str() == "completed"
    })
    .await;
    assert_eq!(done.attempts, 2);
    stop.cancel();
    worker.await.unwrap();
    b.stop().await;
}

/// Replicas whose wall clocks are two minutes ahead and two minutes behind share
/// the database with one whose clock is right: leases are taken, renewed and
/// judged on the database's clock, so no running job changes owner and no
/// attempt is spent; a replica killed -9 is still rescued at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_wrong_clocks_take_no_running_job_and_a_killed_one_is_still_rescued() {
    if crate::support::postgres_url().is_none() {
        return;
    }
    let slow = |c: &mut ferry::config::Config| {
        c.jobs.lease_secs = 60;
        c.exports.batch_rows = 1;
        c.exports.batch_pause_millis = 50;
    };
    // This process: the right clock; its worker starts later.
    let b = TestApp::start_with(Backend::Postgres, slow, crate::support::Workers::None).await;
    let rows: Vec<_> = (1..=300).map(|n| crate::entities_fixture(&b.org_id, n)).collect();
    ferry::db::entities::insert(&mut b.db().conn().await.unwrap(), &rows)
        .await
        .unwrap();
    // Two different exports (an identical one would be refused as in progress).
    let app = &b;
    let export = |csv_bom: bool| async move {
        let request = CreateExportRequest {
            csv_bom,
            ..Default::default()
        };
        ExportServiceClient::new(app.channel.clone())
            .create_export(app.request(request))
            .await
            .unwrap()
            .into_inner()
            .id
    };
    // Replica D, two minutes behind, runs the first export (one slot).
    let mut behind = KillOnDrop(slow_replica_with(
        &b.db.data_dir().join("replica-behind"),
        &b.db.url,
        Some("-120s"),
        &["jobs.workers=1"],
    ));
    let first = export(false).await;
    let on_behind = poll_job(&b, &first, Duration::from_secs(30), |r| r.rows_done > 0).await;
    // This process runs the second.
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = ferry::jobs::Worker::new(b.app.queue.clone(), b.app.job_kinds());
    let worker = tokio::spawn(worker.run(stop.clone()));
    let second = export(true).await;
    let on_right = poll_job(&b, &second, Duration::from_secs(30), |r| r.rows_done > 0).await;
    assert_ne!(on_behind.lease_owner, on_right.lease_owner);
    // Replica C, two minutes ahead, joins: its reaper (every second) looks at both.
    let ahead = KillOnDrop(slow_replica_with(
        &b.db.data_dir().join("replica-ahead"),
        &b.db.url,
        Some("+120s"),
        &[],
    ));
    tokio::time::sleep(Duration::from_secs(6)).await;
    for (id, was) in [(&first, &on_behind), (&second, &on_right)] {
        let now = ferry::db::jobs::find(&mut b.db().conn().await.unwrap(), id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(now.state.as_str(), "running", "{now:?}");
        assert_eq!(now.attempts, 1, "an attempt was spent: {now:?}");
        assert_eq!(now.lease_owner, was.lease_owner, "the job changed owner");
    }
    // The replica behind is killed: its job is rescued long before its lease ends.
    behind.kill().unwrap();
    behind.wait().unwrap();
    let rescued = poll_job(&b, &first, Duration::from_secs(10), |r| r.attempts == 2).await;
    assert_ne!(rescued.lease_owner, on_behind.lease_owner);
    for id in [&first, &second] {
        poll_job(&b, id, Duration::from_secs(90), |r| {
            r.state.as_str() == "completed"
        })
        .await;
    }
    let second = ferry::db::jobs::find(&mut b.db().conn().await.unwrap(), &second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.attempts, 1, "{second:?}");
    drop(ahead);
    stop.cancel();
    worker.await.unwrap();
    b.stop().await;
}
