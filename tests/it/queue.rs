//! The job queue under real workers: exactly-once runs, lease fencing, crash
//! recovery, cancellation, retries, watching, idempotent creation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry::db::jobs::{self, JobRow};
use ferry::db::{new_id, now_ms};
use ferry::jobs::{
    Job, JobContext, JobError, JobKind, JobState, NewJob, Outcome, Queue, Registry, RunJob, Worker,
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::on_both_backends;
use crate::support::{Backend, TestApp};

on_both_backends!(
    two_hundred_jobs_on_four_workers_each_run_exactly_once,
    a_worker_whose_lease_expired_cannot_write,
    a_crashed_workers_job_is_picked_up_after_its_lease,
    a_running_job_sees_its_cancellation,
    a_queued_job_that_is_cancelled_never_runs,
    a_job_that_keeps_failing_ends_failed_after_max_attempts,
    watchers_see_every_state_and_late_watchers_start_from_the_current_one,
    the_same_request_id_returns_the_same_job,
    a_shutdown_returns_running_jobs_to_the_queue_without_counting_the_attempt,
    a_busy_organizations_backlog_does_not_starve_another_organizations_job,
);

const KIND: &str = "test_job";

/// A test job kind whose behaviour the payload picks: `ok`, `slow`, `fail`, or `wait`
/// (loops until stopped). Counts how often each job ran.
#[derive(Default)]
struct Probe {
    runs: Mutex<HashMap<String, u32>>,
}

impl Probe {
    fn runs_of(&self, id: &str) -> u32 {
        self.runs.lock().unwrap().get(id).copied().unwrap_or(0)
    }
}

impl JobKind for Probe {
    const KIND: &'static str = KIND;
    type Spec = serde_json::Value;
    type Output = serde_json::Value;
}

impl RunJob for Probe {
    type Kind = Probe;

    fn run(
        &self,
        job: Job<Probe>,
        ctx: JobContext,
    ) -> impl Future<Output = Result<Outcome<serde_json::Value>, JobError>> + Send {
        *self.runs.lock().unwrap().entry(ctx.job().id.clone()).or_default() += 1;
        async move {
            let payload = job.spec;
            match payload["do"].as_str() {
                Some("fail") => Err(JobError::Transient("storage hiccup".into())),
                Some("wait") => loop {
                    ctx.check()?;
                    ctx.progress(1, Some(10), 0, false).await?;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                },
                action => {
                    // `slow`: long enough RUNNING for a watcher on a busy machine to
                    // see it on its own (a watcher behind sees only the newest state).
                    let pause = if action == Some("slow") { 200 } else { 2 };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    ctx.progress(1, Some(1), 10, true).await?;
                    Ok(Outcome {
                        output: Some(serde_json::json!({"ok": true})),
                        ..Default::default()
                    })
                }
            }
        }
    }
}

fn job(org: &str, action: &str) -> NewJob {
    NewJob {
        id: None,
        organization_id: org.to_string(),
        kind: KIND.into(),
        payload: serde_json::json!({"v": 1, "do": action}),
        request_id: None,
        dedupe_key: None,
        search_text: String::new(),
        rows_total: None,
    }
}

async fn load(app: &TestApp, id: &str) -> JobRow {
    jobs::find(&mut app.db().conn().await.unwrap(), id)
        .await
        .unwrap()
        .unwrap()
}

/// Polls until the job reaches `state` (10 s at most).
async fn wait_for_state(app: &TestApp, id: &str, state: JobState) -> JobRow {
    for _ in 0..500 {
        let row = load(app, id).await;
        if row.state == state {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "job {id} never reached {state}; it is {:?}",
        load(app, id).await.state
    );
}

async fn stop_workers(stop: CancellationToken, handles: Vec<tokio::task::JoinHandle<()>>) {
    stop.cancel();
    for h in handles {
        tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .unwrap()
            .unwrap();
    }
}

fn start_workers(
    queue: &Queue,
    probe: &Arc<Probe>,
    count: usize,
) -> (CancellationToken, Vec<tokio::task::JoinHandle<()>>) {
    let stop = CancellationToken::new();
    let handles = (0..count)
        .map(|_| {
            tokio::spawn(Worker::new(queue.clone(), Registry::new().with(probe.clone())).run(stop.clone()))
        })
        .collect();
    (stop, handles)
}

async fn two_hundred_jobs_on_four_workers_each_run_exactly_once(backend: Backend) {
    let app = TestApp::start(backend).await;
    let queue = app.app.queue.clone();
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(queue.enqueue(job(&app.org_id, "ok")).await.unwrap().into_row().id);
    }
    let probe = Arc::new(Probe::default());
    let (stop, handles) = start_workers(&queue, &probe, 4);
    for id in &ids {
        let row = wait_for_state(&app, id, JobState::Completed).await;
        assert_eq!(row.attempts, 1);
        assert_eq!(row.result.as_deref(), Some(r#"{"ok":true}"#));
    }
    stop_workers(stop, handles).await;
    for id in &ids {
        assert_eq!(probe.runs_of(id), 1, "job {id}");
    }
    app.stop().await;
}

async fn a_worker_whose_lease_expired_cannot_write(backend: Backend) {
    let app = TestApp::start(backend).await;
    let queue = app.app.queue.clone();
    let id = queue.enqueue(job(&app.org_id, "ok")).await.unwrap().into_row().id;
    let kinds = vec![KIND.to_string()];
    let now = now_ms();
    // Worker A claims with a lease that has already run out.
    let lease_a = new_id();
    jobs::claim_next(app.db(), &kinds, "worker-a", &lease_a, -1, now)
        .await
        .unwrap()
        .unwrap();
    let reaped = ferry::jobs::worker::reap_once(&queue).await.unwrap();
    assert_eq!(reaped, vec![id.clone()]);
    // Worker B takes it over.
    let lease_b = new_id();
    let claimed = jobs::claim_next(app.db(), &kinds, "worker-b", &lease_b, 60_000, now_ms())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((claimed.id.as_str(), claimed.attempts), (id.as_str(), 2));

    let mut conn = app.db().conn().await.unwrap();
    let t = now_ms();
    assert_eq!(
        jobs::update_progress(&mut conn, &id, &lease_a, 5, None, 0, t)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        jobs::finish(&mut conn, &id, &lease_a, JobState::Completed, None, None, None, t)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        jobs::renew_lease(&mut conn, &id, &lease_a, 1000).await.unwrap(),
        None
    );
    drop(conn);
    assert_eq!(load(&app, &id).await.state, JobState::Running);
    // The owner can finish it, once.
    let mut conn = app.db().conn().await.unwrap();
    assert_eq!(
        jobs::finish(&mut conn, &id, &lease_b, JobState::Completed, None, None, None, t)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        jobs::finish(&mut conn, &id, &lease_b, JobState::Completed, None, None, None, t)
            .await
            .unwrap(),
        0
    );
    app.stop().await;
}

async fn a_crashed_workers_job_is_picked_up_after_its_lease(backend: Backend) {
    let app = TestApp::start(backend).await;
    let queue = app.app.queue.clone();
    let id = queue.enqueue(job(&app.org_id, "ok")).await.unwrap().into_row().id;
    // A worker claims it and dies: no heartbeat, the lease runs out in 300 ms.
    let now = now_ms();
    jobs::claim_next(app.db(), &[KIND.to_string()], "doomed", &new_id(), 300, now)
        .await
        .unwrap()
        .unwrap();
    let probe = Arc::new(Probe::default());
    let (stop, handles) = start_workers(&queue, &probe, 1);
    let row = wait_for_state(&app, &id, JobState::Completed).await;
    assert_eq!(row.attempts, 2);
    assert_eq!(probe.runs_of(&id), 1);
    stop_workers(stop, handles).await;
    app.stop().await;
}

async fn a_running_job_sees_its_cancellation(backend: Backend) {
    let app = TestApp::start(backend).await;
    let queue = app.app.queue.clone();
    let id = queue
        .enqueue(job(&app.org_id, "wait"))
        .await
        .unwrap()
        .into_row()
        .id;
    let probe = Arc::new(Probe::default());
    let (stop, handles) = start_workers(&queue, &probe, 1);
    wait_for_state(&app, &id, JobState::Running).await;
    let asked = std::time::Instant::now();
    let flagged = queue.cancel::<Probe>(&app.org_id, &id, None).await.unwrap();
    // Flagged for its worker, or (run here, stopped at once) already ended.
    assert!(
        flagged.row.cancel_requested || flagged.row.state == JobState::Cancelled,
        "{:?}",
        flagged.row
    );
    let row = wait_for_state(&app, &id, JobState::Cancelled).await;
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "took {:?}",
        asked.elapsed()
    );
    assert!(row.finished_at.is_some());
    // Cancelling a finished job is refused.
    assert!(matches!(
        queue.cancel::<Probe>(&app.org_id, &id, None).await,
        Err(ferry::jobs::QueueError::AlreadyFinished { .. })
    ));
    stop_workers(stop, handles).await;
    app.stop().await;
}

async fn a_queued_job_that_is_cancelled_never_runs(backend: Backend) {
    let app = TestApp::start(backend).await;
    let queue = app.app.queue.clone();
    let id = queue.enqueue(job(&app.org_id, "ok")).await.unwrap().into_row().id;
    let row = queue.cancel::<Probe>(&app.org_id, &id, None).await.unwrap();
    assert_eq!(row.row.state, JobState::Cancelled);
    let probe = Arc::new(Probe::default());
    let (stop, handles) = start_workers(&queue, &probe, 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(probe.runs_of(&id), 0);
    stop_workers(stop, handles).await;
    // Another organization cannot see or cancel it.
    let (other, _) = app.other_org().await;
    assert!(matches!(
        queue.cancel::<Probe>(&other, &id, None).await,
        Err(ferry::jobs::QueueError::NotFound { .. })
    ));
    app.stop().await;
}

async fn a_job_that_keeps_failing_ends_failed_after_max_attempts(backend: Backend) {
    let app = TestApp::start(backend).await;
    let queue = app.app.queue.clone();
    let id = queue
        .enqueue(job(&app.org_id, "fail"))
        .await
        .unwrap()
        .into_row()
        .id;
    let probe = Arc::new(Probe::default());
    let (stop, handles) = start_workers(&queue, &probe, 1);
    let row = wait_for_state(&app, &id, JobState::Failed).await;
    assert_eq!(row.attempts, 3);
    assert_eq!(probe.runs_of(&id), 3);
    let failure: ferry::jobs::JobFailure = serde_json::from_str(row.error.as_deref().unwrap()).unwrap();
    assert_eq!(failure.reason, "RETRIES_EXHAUSTED");
    assert!(failure.message.contains("storage hiccup"));
    stop_workers(stop, handles).await;
    app.stop().await;
}

async fn watchers_see_every_state_and_late_watchers_start_from_the_current_one(backend: Backend) {
    let app = TestApp::start(backend).await;
    let queue = app.app.queue.clone();
    let id = queue
        .enqueue(job(&app.org_id, "slow"))
        .await
        .unwrap()
        .into_row()
        .id;
    let watch = queue.watch::<Probe>(&app.org_id, &id).await.unwrap();
    let collector =
        tokio::spawn(async move { watch.map(|r| r.unwrap().state).collect::<Vec<JobState>>().await });
    let probe = Arc::new(Probe::default());
    let (stop, handles) = start_workers(&queue, &probe, 1);
    let states = tokio::time::timeout(Duration::from_secs(10), collector)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(states.first(), Some(&JobState::Queued));
    assert!(states.contains(&JobState::Running), "{states:?}");
    assert_eq!(states.last(), Some(&JobState::Completed));
    // A watcher joining after the end gets the final state and the stream ends.
    let late: Vec<_> = queue
        .watch::<Probe>(&app.org_id, &id)
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].as_ref().unwrap().state, JobState::Completed);
    stop_workers(stop, handles).await;
    app.stop().await;
}

async fn the_same_request_id_returns_the_same_job(backend: Backend) {
    let app = TestApp::start(backend).await;
    let queue = app.app.queue.clone();
    let mut first = job(&app.org_id, "ok");
    first.request_id = Some("req-1".into());
    let created = queue.enqueue(first.clone()).await.unwrap();
    assert!(matches!(created, ferry::jobs::Enqueued::Created(_)));
    let again = queue.enqueue(first.clone()).await.unwrap();
    assert!(
        matches!(&again, ferry::jobs::Enqueued::Existing(row) if row.id == created.clone().into_row().id)
    );
    // Keys are per organization.
    let (other, _) = app.other_org().await;
    first.organization_id = other;
    assert!(matches!(
        queue.enqueue(first).await.unwrap(),
        ferry::jobs::Enqueued::Created(_)
    ));
    app.stop().await;
}

async fn a_shutdown_returns_running_jobs_to_the_queue_without_counting_the_attempt(backend: Backend) {
    let app = TestApp::start(backend).await;
    let queue = app.app.queue.clone();
    let id = queue
        .enqueue(job(&app.org_id, "wait"))
        .await
        .unwrap()
        .into_row()
        .id;
    let probe = Arc::new(Probe::default());
    let (stop, handles) = start_workers(&queue, &probe, 1);
    wait_for_state(&app, &id, JobState::Running).await;
    stop.cancel();
    for h in handles {
        tokio::time::timeout(Duration::from_secs(5), h)
            .await
            .unwrap()
            .unwrap();
    }
    let row = load(&app, &id).await;
    assert_eq!(row.state, JobState::Queued);
    assert_eq!(row.attempts, 0, "a shutdown is not the job's failure");
    assert_eq!(row.lease_id, None);
    // Another worker takes it at once, without waiting for a lease to expire.
    let probe = Arc::new(Probe::default());
    let (stop, handles) = start_workers(&queue, &probe, 1);
    wait_for_state(&app, &id, JobState::Running).await;
    stop_workers(stop, handles).await;
    app.stop().await;
}

async fn a_busy_organizations_backlog_does_not_starve_another_organizations_job(backend: Backend) {
    let app = TestApp::start(backend).await;
    let queue = app.app.queue.clone();
    let (other_org, _) = app.other_org().await;
    let mut backlog = Vec::new();
    for _ in 0..30 {
        backlog.push(queue.enqueue(job(&app.org_id, "ok")).await.unwrap().into_row().id);
    }
    let single = queue.enqueue(job(&other_org, "ok")).await.unwrap().into_row().id;

    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(queue.clone(), Registry::new().with(Arc::new(Probe::default()))).run(stop.clone()),
    );
    wait_for_state(&app, &single, JobState::Completed).await;
    for id in &backlog {
        wait_for_state(&app, id, JobState::Completed).await;
    }
    stop.cancel();
    worker.await.unwrap();

    let single_started = load(&app, &single).await.started_at.unwrap();
    let mut before = 0;
    for id in &backlog {
        if load(&app, id).await.started_at.unwrap() < single_started {
            before += 1;
        }
    }
    // Claimed as soon as a worker is free: behind at most the first claims of the
    // backlog (one per worker), never behind most of it.
    assert!(
        before <= 2,
        "{before} of the other organization's 30 jobs started first"
    );
    app.stop().await;
}
