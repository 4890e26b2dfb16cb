//! Several replicas on one PostgreSQL database: a watcher on one replica follows a
//! job that another replica's worker runs.

use std::time::Duration;

use ferry::proto::{
    CreateExportRequest, JobState, WatchExportRequest, export_service_client::ExportServiceClient,
};
use ferry::server::{self, App};
use tokio_stream::StreamExt;

use crate::support::{Backend, TestApp, test_config};

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
    let handlers = b.job_handlers();
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
