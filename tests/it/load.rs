//! Under load: bursts of concurrent calls and many watchers on a small pool, fast
//! refusals (OVERLOADED, RATE_LIMITED, both with RetryInfo) instead of timeouts,
//! and the auth cache's bound on how late a revocation is seen, across replicas.
//! Every test counts outcomes; none times anything.

use std::time::Duration;

use ferry::auth::{Permission, keys};
use ferry::db::Db;
use ferry::proto::{
    CreateExportRequest, GetExportRequest, JobState, ListEntitiesRequest, ListExportsRequest,
    WatchExportRequest, entity_service_client::EntityServiceClient,
    export_service_client::ExportServiceClient,
};
use ferry::server::{self, App};
use futures::StreamExt;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::on_both_backends;
use crate::support::{Backend, TestApp, Workers, reason, test_config, until_refused, with_auth};

on_both_backends!(
    two_hundred_concurrent_calls_with_one_key_all_succeed,
    a_thousand_watchers_of_one_export_all_see_it_complete,
    calls_past_the_concurrency_limit_are_refused_at_once_and_the_server_recovers,
    watch_streams_past_their_limit_are_refused_and_a_freed_slot_is_reused,
    an_organization_over_its_rate_is_refused_while_another_is_not,
    a_revoked_key_is_refused_by_every_replica_within_the_bound,
);

/// `n` HTTP/2 connections to the app's gRPC port.
async fn channels(app: &TestApp, n: usize) -> Vec<Channel> {
    let url = format!("http://{}", app.running.as_ref().expect("running").grpc_addr);
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        channels.push(
            Channel::from_shared(url.clone())
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    }
    channels
}

async fn create_export(app: &TestApp) -> String {
    ExportServiceClient::new(app.channel.clone())
        .create_export(app.request(CreateExportRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .id
}

/// The RetryInfo delay of a status, if it has one.
fn retry_delay(status: &tonic::Status) -> Option<Duration> {
    status.get_details_retry_info().and_then(|r| r.retry_delay)
}

async fn two_hundred_concurrent_calls_with_one_key_all_succeed(backend: Backend) {
    let app = TestApp::start(backend).await;
    let export_id = create_export(&app).await;
    let channels = channels(&app, 4).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..200 {
        let channel = channels[i % channels.len()].clone();
        let (key, org, id) = (app.key.clone(), app.org_id.clone(), export_id.clone());
        calls.spawn(async move {
            match i % 3 {
                0 => ExportServiceClient::new(channel)
                    .get_export(with_auth(GetExportRequest { id }, &key, &org))
                    .await
                    .map(|_| ()),
                1 => ExportServiceClient::new(channel)
                    .list_exports(with_auth(ListExportsRequest::default(), &key, &org))
                    .await
                    .map(|_| ()),
                _ => EntityServiceClient::new(channel)
                    .list_entities(with_auth(
                        ListEntitiesRequest {
                            page_size: 20,
                            ..Default::default()
                        },
                        &key,
                        &org,
                    ))
                    .await
                    .map(|_| ()),
            }
        });
    }
    let mut failures = Vec::new();
    while let Some(result) = calls.join_next().await {
        if let Err(status) = result.unwrap() {
            failures.push(format!("{:?} {}", status.code(), status.message()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 200 calls failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    app.stop().await;
}

async fn a_thousand_watchers_of_one_export_all_see_it_complete(backend: Backend) {
    let app = TestApp::start(backend).await;
    let export_id = create_export(&app).await;
    let channels = channels(&app, 5).await;
    let mut streams = Vec::with_capacity(1000);
    for i in 0..1000 {
        let mut client = ExportServiceClient::new(channels[i % channels.len()].clone());
        let request = app.request(WatchExportRequest {
            id: export_id.clone(),
        });
        streams.push(tokio::spawn(async move { client.watch_export(request).await }));
    }
    let mut watchers = Vec::with_capacity(1000);
    for stream in streams {
        let mut stream = stream.await.unwrap().unwrap().into_inner();
        // Every watcher starts from the current state before the job runs.
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.state(), JobState::Queued);
        watchers.push(stream);
    }
    let mut ends = tokio::task::JoinSet::new();
    for mut stream in watchers {
        ends.spawn(async move {
            let mut last = None;
            while let Some(item) = stream.next().await {
                last = Some(item.map(|e| e.state()));
            }
            last
        });
    }
    app.run_jobs_until_idle().await;
    let mut completed = 0;
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(end) = ends.join_next().await {
            if matches!(end.unwrap(), Some(Ok(JobState::Completed))) {
                completed += 1;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "watch streams still open after 60 s");
    assert_eq!(completed, 1000, "watchers that saw COMPLETED");
    app.stop().await;
}

/// Waits until `n` callers wait for a pooled connection.
async fn until_pool_waiters(db: &Db, n: usize) {
    for _ in 0..500 {
        if db.waiting() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{n} callers never waited for the pool");
}

async fn calls_past_the_concurrency_limit_are_refused_at_once_and_the_server_recovers(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        |config| {
            config.database.max_connections = 1;
            config.server.max_concurrent_calls = 1;
            config.server.max_pool_waiters = 2;
        },
        Workers::None,
    )
    .await;
    let list = |app: &TestApp| {
        let mut client = EntityServiceClient::new(app.channel.clone());
        let request = app.request(ListEntitiesRequest::default());
        async move { client.list_entities(request).await }
    };
    // One call to warm the auth cache; then the pool's only connection is taken.
    list(&app).await.unwrap();
    let held = app.db().conn().await.unwrap();
    let admitted = tokio::spawn(list(&app));
    until_pool_waiters(app.db(), 1).await;

    // The one call slot is taken by the call waiting for the pool.
    let refused = list(&app).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(reason(&refused), "OVERLOADED");
    assert!(retry_delay(&refused).is_some(), "RetryInfo missing");
    assert!(
        refused.message().contains("calls at once"),
        "{}",
        refused.message()
    );

    drop(held);
    admitted.await.unwrap().unwrap();
    for _ in 0..5 {
        list(&app).await.unwrap();
    }
    app.stop().await;
}

async fn watch_streams_past_their_limit_are_refused_and_a_freed_slot_is_reused(backend: Backend) {
    let app = TestApp::start_with(backend, |config| config.server.max_watchers = 2, Workers::None).await;
    let export_id = create_export(&app).await;
    let watch = |app: &TestApp| {
        let mut client = ExportServiceClient::new(app.channel.clone());
        let request = app.request(WatchExportRequest {
            id: export_id.clone(),
        });
        async move { client.watch_export(request).await }
    };
    let first = watch(&app).await.unwrap();
    let _second = watch(&app).await.unwrap();
    let refused = watch(&app).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(reason(&refused), "OVERLOADED");
    assert!(retry_delay(&refused).is_some(), "RetryInfo missing");
    // Unary calls have slots of their own.
    ExportServiceClient::new(app.channel.clone())
        .get_export(app.request(GetExportRequest {
            id: export_id.clone(),
        }))
        .await
        .unwrap();
    // A closed stream gives its slot back.
    drop(first);
    let reopened = until_accepted(|| watch(&app)).await;
    drop(reopened);
    app.stop().await;
}

/// Repeats `call` every 20 ms until it succeeds (at most 5 s).
async fn until_accepted<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    for _ in 0..250 {
        if let Ok(value) = call().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("still refused after 5 s");
}

async fn an_organization_over_its_rate_is_refused_while_another_is_not(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        |config| {
            config.limits.calls_per_second_per_org = 1;
            config.limits.burst_per_org = 3;
        },
        Workers::None,
    )
    .await;
    let (other_org, other_key) = app.other_org().await;
    let mut client = EntityServiceClient::new(app.channel.clone());
    let mut refused = None;
    for _ in 0..10 {
        if let Err(status) = client
            .list_entities(app.request(ListEntitiesRequest::default()))
            .await
        {
            refused = Some(status);
            break;
        }
    }
    let refused = refused.expect("ten calls at once within a rate of one a second (burst 3) all passed");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(reason(&refused), "RATE_LIMITED");
    let delay = retry_delay(&refused).expect("RetryInfo missing");
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(1),
        "{delay:?}"
    );
    // Another organization has a bucket of its own.
    client
        .list_entities(with_auth(ListEntitiesRequest::default(), &other_key, &other_org))
        .await
        .unwrap();
    app.stop().await;
}

/// A second server (replica) on the app's database.
async fn replica(
    app: &TestApp,
    adjust: impl FnOnce(&mut ferry::config::Config),
) -> (App, server::Running, Channel) {
    let mut config = test_config(&app.db);
    adjust(&mut config);
    let replica = App::open(config).await.unwrap();
    let running = server::start(replica.clone(), ferry::jobs::Registry::new())
        .await
        .unwrap();
    let channel = Channel::from_shared(format!("http://{}", running.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (replica, running, channel)
}

async fn a_revoked_key_is_refused_by_every_replica_within_the_bound(backend: Backend) {
    // On PostgreSQL the cache would keep the key for a minute: only the NOTIFY to
    // every replica can explain a refusal within the bound. On SQLite another
    // process's change is seen when the cache entry expires (1 s here).
    let ttl_millis = match backend {
        Backend::Postgres => 60_000,
        Backend::Sqlite => 1_000,
    };
    let app = TestApp::start_with(backend, |c| c.auth.cache_ttl_millis = ttl_millis, Workers::None).await;
    let (row, key) = keys::create(app.db(), &app.org_id, "replicated", &Permission::ALL, &[])
        .await
        .unwrap();
    let (replica_app, replica_running, replica_channel) =
        replica(&app, |c| c.auth.cache_ttl_millis = ttl_millis).await;
    let call = |channel: Channel| {
        let request = with_auth(ListEntitiesRequest::default(), &key, &app.org_id);
        async move { EntityServiceClient::new(channel).list_entities(request).await }
    };
    // Both replicas have the key cached.
    call(app.channel.clone()).await.unwrap();
    call(replica_channel.clone()).await.unwrap();

    // Revoked by another process (its own connection pool, as `ferry admin` is).
    let admin = Db::connect(&app.db.url, 1).await.unwrap();
    assert!(keys::revoke(&admin, &row.id, None).await.unwrap());

    let bound = Duration::from_millis(ttl_millis.min(1_000)) + Duration::from_secs(4);
    for channel in [app.channel.clone(), replica_channel.clone()] {
        let status = until_refused(bound, || call(channel.clone())).await;
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.message().contains("revoked"), "{}", status.message());
    }
    replica_running.stop().await;
    drop(replica_app);
    app.stop().await;
}
