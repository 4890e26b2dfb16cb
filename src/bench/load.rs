//! `ferry bench load`: the server in process on a seeded organization, called over
//! loopback gRPC the way dashboards and scripts call it: a burst of concurrent unary
//! calls, sustained GetExport throughput, many watchers of one job, and job pickup
//! latency. Prints counts, latency percentiles and memory; figures go to
//! `docs/benchmarks.md`. Nothing here is a timed test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use super::per_second;
use crate::auth::{Permission, keys};
use crate::db::jobs::{self, JobRow};
use crate::db::now_ms;
use crate::jobs::{Job, JobContext, JobError, JobKind, Lane, NewJob, Outcome, Registry, RunJob, Worker};
use crate::orgs::{self, Feature, Plan};
use crate::proto::{
    CreateExportRequest, GetExportRequest, ListEntitiesRequest, ListExportsRequest, WatchExportRequest,
    entity_service_client::EntityServiceClient, export_service_client::ExportServiceClient,
};
use crate::server::{self, App};

pub struct Options {
    /// Entities seeded for the organization.
    pub entities: u64,
    /// Concurrent unary calls in each burst.
    pub burst: usize,
    /// Seconds of sustained GetExport calls.
    pub sustain_secs: u64,
    /// Watchers of one export.
    pub watchers: usize,
    /// Watchers multiplexed on one HTTP/2 connection.
    pub watchers_per_connection: usize,
    /// Jobs queued at once for the pickup gap.
    pub queued_jobs: usize,
    /// The CA of `server.tls_cert` when the server speaks TLS (the bench's client
    /// then dials it as `localhost`).
    pub ca_cert: Option<std::path::PathBuf>,
}

/// Where the bench's client dials: the server's address, over TLS when it has a
/// certificate.
struct Dial {
    url: String,
    tls: Option<ClientTlsConfig>,
}

impl Dial {
    fn of(app: &App, addr: std::net::SocketAddr, ca_cert: Option<&std::path::Path>) -> anyhow::Result<Dial> {
        if app.config.server.tls_cert.is_empty() {
            return Ok(Dial {
                url: format!("http://{addr}"),
                tls: None,
            });
        }
        let ca = ca_cert.ok_or_else(|| anyhow::anyhow!("the server has a certificate: pass --ca-cert"))?;
        let pem = std::fs::read(ca).map_err(|e| anyhow::anyhow!("--ca-cert {}: {e}", ca.display()))?;
        Ok(Dial {
            url: format!("https://{addr}"),
            tls: Some(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(pem))
                    .domain_name("localhost"),
            ),
        })
    }
}

/// Connections the unary calls are spread over.
const CALL_CONNECTIONS: usize = 8;
/// Callers in the sustained GetExport loop (each waits for its answer).
const SUSTAIN_CALLERS: usize = 64;
/// Pickups measured on an idle queue.
const IDLE_PICKUPS: usize = 50;
/// The bench's own job kind: does nothing, so pickup is all that is measured.
const NOOP_KIND: &str = "bench_noop";
/// A delivery that never ends until stopped (a hung relay), for the lanes scenario.
const STALL_KIND: &str = "bench_stalled_delivery";

/// What a caller sends with every call.
#[derive(Clone)]
struct Caller {
    key: String,
    org: String,
}

impl Caller {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Ok(bearer) = format!("Bearer {}", self.key).parse() {
            request.metadata_mut().insert("authorization", bearer);
        }
        if let Ok(org) = self.org.parse() {
            request.metadata_mut().insert("x-organization-id", org);
        }
        request
    }
}

pub async fn run(app: App, options: Options) -> anyhow::Result<()> {
    let org = orgs::create(&app.db, "bench-load", Plan::Enterprise, &Feature::ALL, None).await?;
    let (_, key) = keys::create(&app.db, &org.id, "bench", &Permission::ALL, &[]).await?;
    let caller = Caller {
        key,
        org: org.id.clone(),
    };
    println!(
        "backend {:?}, pool {} connections; seeding {} entities …",
        app.db.backend(),
        app.config.database.max_connections,
        options.entities
    );
    super::seed::load(&app.db, &org.id, options.entities).await?;

    // No worker in the server: the bench starts its own where it needs one.
    let running = server::start(app.clone(), crate::jobs::Registry::new()).await?;
    let dial = Dial::of(&app, running.grpc_addr, options.ca_cert.as_deref())?;
    println!("client: {}", if dial.tls.is_some() { "TLS" } else { "plaintext" });
    let channels = connect(&dial, CALL_CONNECTIONS).await?;
    let export_id = ExportServiceClient::new(channels[0].clone())
        .create_export(caller.request(CreateExportRequest::default()))
        .await?
        .into_inner()
        .id;

    println!(
        "\n== burst: {} concurrent calls of each kind over {CALL_CONNECTIONS} connections",
        options.burst
    );
    println!(
        "{:<14} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "call", "ok", "failed", "p50 ms", "p99 ms", "max ms"
    );
    for kind in [CallKind::GetExport, CallKind::ListExports, CallKind::ListEntities] {
        let (ok, failed, mut latencies) = burst(&channels, &caller, &export_id, kind, options.burst).await;
        let (p50, p99, max) = percentiles(&mut latencies);
        println!(
            "{:<14} {ok:>9} {failed:>9} {:>9.1} {:>9.1} {:>9.1}",
            kind.name(),
            ms(p50),
            ms(p99),
            ms(max)
        );
    }

    let (calls, failed, elapsed) = sustain(&channels, &caller, &export_id, options.sustain_secs).await;
    println!(
        "\n== sustained GetExport, {SUSTAIN_CALLERS} callers for {} s: {calls} calls ({failed} failed), {:.0} calls/s",
        options.sustain_secs,
        per_second(calls as f64, elapsed)
    );

    watchers(&app, &dial, &caller, &export_id, &options).await?;
    pickup(&app, &org.id, options.queued_jobs).await?;
    running.stop().await;
    Ok(())
}

async fn connect(dial: &Dial, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        let mut endpoint = Channel::from_shared(dial.url.clone())?;
        if let Some(tls) = &dial.tls {
            endpoint = endpoint.tls_config(tls.clone())?;
        }
        channels.push(endpoint.connect().await?);
    }
    Ok(channels)
}

#[derive(Debug, Clone, Copy)]
enum CallKind {
    GetExport,
    ListExports,
    ListEntities,
}

impl CallKind {
    fn name(self) -> &'static str {
        match self {
            CallKind::GetExport => "GetExport",
            CallKind::ListExports => "ListExports",
            CallKind::ListEntities => "ListEntities",
        }
    }

    async fn call(self, channel: Channel, caller: &Caller, export_id: &str) -> Result<(), tonic::Status> {
        match self {
            CallKind::GetExport => ExportServiceClient::new(channel)
                .get_export(caller.request(GetExportRequest {
                    id: export_id.to_string(),
                }))
                .await
                .map(drop),
            CallKind::ListExports => ExportServiceClient::new(channel)
                .list_exports(caller.request(ListExportsRequest::default()))
                .await
                .map(drop),
            CallKind::ListEntities => EntityServiceClient::new(channel)
                .list_entities(caller.request(ListEntitiesRequest {
                    page_size: 20,
                    ..Default::default()
                }))
                .await
                .map(drop),
        }
    }
}

/// `n` calls started at once; (succeeded, failed, each call's latency).
async fn burst(
    channels: &[Channel],
    caller: &Caller,
    export_id: &str,
    kind: CallKind,
    n: usize,
) -> (usize, usize, Vec<Duration>) {
    let start = Arc::new(tokio::sync::Barrier::new(n));
    let mut calls = JoinSet::new();
    for i in 0..n {
        let (channel, caller, id, start) = (
            channels[i % channels.len()].clone(),
            caller.clone(),
            export_id.to_string(),
            start.clone(),
        );
        calls.spawn(async move {
            start.wait().await;
            let began = Instant::now();
            let result = kind.call(channel, &caller, &id).await;
            (result, began.elapsed())
        });
    }
    let (mut ok, mut failed, mut latencies) = (0, 0, Vec::with_capacity(n));
    let mut first_error = None;
    while let Some(Ok((result, latency))) = calls.join_next().await {
        latencies.push(latency);
        match result {
            Ok(()) => ok += 1,
            Err(status) => {
                failed += 1;
                first_error.get_or_insert(status);
            }
        }
    }
    if let Some(status) = first_error {
        println!("  first failure: {:?} {}", status.code(), status.message());
    }
    (ok, failed, latencies)
}

/// GetExport in a loop by [`SUSTAIN_CALLERS`] callers for `secs`.
async fn sustain(channels: &[Channel], caller: &Caller, export_id: &str, secs: u64) -> (u64, u64, Duration) {
    let until = Instant::now() + Duration::from_secs(secs);
    let began = Instant::now();
    let mut loops = JoinSet::new();
    for i in 0..SUSTAIN_CALLERS {
        let (channel, caller, id) = (
            channels[i % channels.len()].clone(),
            caller.clone(),
            export_id.to_string(),
        );
        loops.spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            while Instant::now() < until {
                match CallKind::GetExport.call(channel.clone(), &caller, &id).await {
                    Ok(()) => ok += 1,
                    Err(_) => failed += 1,
                }
            }
            (ok, failed)
        });
    }
    let (mut ok, mut failed) = (0, 0);
    while let Some(Ok((o, f))) = loops.join_next().await {
        ok += o;
        failed += f;
    }
    (ok, failed, began.elapsed())
}

/// Opens the watchers on the queued export, measures memory, runs the export and
/// times each watcher's terminal message against the job's `end_time`.
async fn watchers(
    app: &App,
    dial: &Dial,
    caller: &Caller,
    export_id: &str,
    options: &Options,
) -> anyhow::Result<()> {
    let per_connection = options.watchers_per_connection.max(1);
    let connections = options.watchers.div_ceil(per_connection);
    println!(
        "\n== {} watchers of one export over {connections} connections ({per_connection} streams each)",
        options.watchers
    );
    let channels = connect(dial, connections).await?;
    let rss_before = rss_mib();
    let mut opening = JoinSet::new();
    for i in 0..options.watchers {
        let mut client = ExportServiceClient::new(channels[i / per_connection].clone());
        let request = caller.request(WatchExportRequest {
            id: export_id.to_string(),
        });
        opening.spawn(async move {
            let mut stream = client.watch_export(request).await?.into_inner();
            // The first message (the queued state) means the watcher is set up.
            stream.message().await?;
            Ok::<_, tonic::Status>(stream)
        });
    }
    let (mut streams, mut refused) = (Vec::with_capacity(options.watchers), 0);
    while let Some(opened) = opening.join_next().await {
        match opened {
            Ok(Ok(stream)) => streams.push(stream),
            _ => refused += 1,
        }
    }
    // Let the allocator settle before reading the idle memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = rss_mib();
    let per_thousand = (rss_idle - rss_before) / (streams.len().max(1) as f64 / 1000.0);
    println!(
        "open: {} (refused or failed: {refused}); RSS {rss_before:.1} -> {rss_idle:.1} MiB, {per_thousand:.2} MiB per 1,000 idle watchers ({:.1} KB each, client and server in this one process)",
        streams.len(),
        per_thousand * 1024.0 / 1000.0
    );

    let mut ends = JoinSet::new();
    for mut stream in streams {
        ends.spawn(async move {
            let mut terminal = None;
            while let Some(Ok(export)) = stream.next().await {
                if matches!(
                    export.state(),
                    crate::proto::JobState::Completed
                        | crate::proto::JobState::Failed
                        | crate::proto::JobState::Cancelled
                ) {
                    terminal = Some(now_ms());
                }
            }
            terminal
        });
    }
    let stop = CancellationToken::new();
    let worker = tokio::spawn(Worker::new(app.queue.clone(), app.job_kinds()).run(stop.clone()));
    let mut received = Vec::with_capacity(options.watchers);
    while let Some(end) = ends.join_next().await {
        if let Ok(Some(at)) = end {
            received.push(at);
        }
    }
    stop.cancel();
    let _ = worker.await;
    let job = jobs::find(&mut app.db.conn().await?, export_id)
        .await?
        .context("the export vanished")?;
    let ended = job.finished_at.unwrap_or(job.updated_at);
    let mut delays: Vec<Duration> = received
        .iter()
        .map(|at| Duration::from_millis(at.saturating_sub(ended).max(0) as u64))
        .collect();
    let (p50, p99, max) = percentiles(&mut delays);
    println!(
        "terminal state ({}) received by {} of {}; delay from end_time: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        job.state,
        received.len(),
        options.watchers,
        ms(p50),
        ms(p99),
        ms(max)
    );
    Ok(())
}

/// A job kind that ends at once.
struct Noop;

impl JobKind for Noop {
    const KIND: &'static str = NOOP_KIND;
    type Spec = serde_json::Value;
    type Output = serde_json::Value;
}

impl RunJob for Noop {
    type Kind = Noop;

    async fn run(&self, _job: Job<Noop>, _ctx: JobContext) -> Result<Outcome<serde_json::Value>, JobError> {
        Ok(Outcome::default())
    }
}

/// A delivery-lane job that waits until its worker stops, as one talking to a
/// relay that never answers would (without a bound).
struct Stalled;

impl JobKind for Stalled {
    const KIND: &'static str = STALL_KIND;
    const LANE: Lane = Lane::Delivery;
    type Spec = serde_json::Value;
    type Output = serde_json::Value;
}

impl RunJob for Stalled {
    type Kind = Stalled;

    async fn run(&self, _job: Job<Stalled>, ctx: JobContext) -> Result<Outcome<serde_json::Value>, JobError> {
        ctx.stopped().await;
        Err(JobError::Shutdown)
    }
}

fn noop_job(organization_id: &str) -> NewJob {
    bench_job(organization_id, NOOP_KIND)
}

fn bench_job(organization_id: &str, kind: &str) -> NewJob {
    NewJob {
        id: None,
        organization_id: organization_id.to_string(),
        kind: kind.into(),
        payload: serde_json::json!({"v": 1}),
        request_id: None,
        dedupe_key: None,
        search_text: String::new(),
        rows_total: None,
    }
}

/// Pickup on an idle queue (create → RUNNING, server timestamps), then the gap
/// between a job's end and the next one's start with `queued` jobs waiting.
async fn pickup(app: &App, organization_id: &str, queued: usize) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let worker =
        tokio::spawn(Worker::new(app.queue.clone(), Registry::new().with(Arc::new(Noop))).run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut pickups = pickups_one_at_a_time(app, organization_id).await?;
    stop.cancel();
    let _ = worker.await;
    let (p50, p99, max) = percentiles(&mut pickups);
    println!(
        "\n== pickup on an idle queue ({IDLE_PICKUPS} jobs, one at a time): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (millisecond timestamps)",
        ms(p50),
        ms(p99),
        ms(max)
    );

    let mut ids = Vec::with_capacity(queued);
    for _ in 0..queued {
        ids.push(app.queue.enqueue(noop_job(organization_id)).await?.into_row().id);
    }
    let stop = CancellationToken::new();
    let worker =
        tokio::spawn(Worker::new(app.queue.clone(), Registry::new().with(Arc::new(Noop))).run(stop.clone()));
    let mut rows = Vec::with_capacity(queued);
    for id in &ids {
        rows.push(wait_until_ended(app, id).await?);
    }
    stop.cancel();
    let _ = worker.await;
    report_gaps(app, &rows, queued);
    pickup_beside_stalled_deliveries(app, organization_id).await
}

fn report_gaps(app: &App, rows: &[JobRow], queued: usize) {
    let mut gaps = next_start_gaps(rows, app.config.jobs.workers as usize);
    let (p50, p99, max) = percentiles(&mut gaps);
    println!(
        "with {queued} jobs queued, {} workers: gap from a job's end to the next start p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        app.config.jobs.workers,
        ms(p50),
        ms(p99),
        ms(max)
    );
}

/// Pickup of work-lane jobs while every delivery slot is held by a delivery
/// that never ends (a hung relay) and more deliveries wait behind them: the
/// lanes keep the first unaffected.
async fn pickup_beside_stalled_deliveries(app: &App, organization_id: &str) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let kinds = Registry::new().with(Arc::new(Noop)).with(Arc::new(Stalled));
    let worker = tokio::spawn(Worker::new(app.queue.clone(), kinds).run(stop.clone()));
    let slots = app.config.jobs.delivery_workers as usize;
    let mut stalled = Vec::new();
    for _ in 0..slots * 4 {
        stalled.push(
            app.queue
                .enqueue(bench_job(organization_id, STALL_KIND))
                .await?
                .into_row()
                .id,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut conn = app.db.conn().await?;
        let mut running = 0;
        for id in &stalled {
            if jobs::find(&mut conn, id)
                .await?
                .is_some_and(|r| r.state == jobs::JobState::Running)
            {
                running += 1;
            }
        }
        if running >= slots {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the stalled deliveries never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut pickups = pickups_one_at_a_time(app, organization_id).await?;
    stop.cancel();
    let _ = worker.await;
    // The stalled deliveries went back to the queue; nothing runs them again.
    for id in &stalled {
        app.queue.cancel::<Stalled>(organization_id, id, None).await.ok();
    }
    let (p50, p99, max) = percentiles(&mut pickups);
    println!(
        "\n== pickup beside a saturated delivery lane ({slots} deliveries hung, {} waiting; {IDLE_PICKUPS} jobs, one at a time): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        slots * 3,
        ms(p50),
        ms(p99),
        ms(max)
    );
    Ok(())
}

/// [`IDLE_PICKUPS`] no-op jobs queued one at a time, each after the last ended:
/// the time from each one's creation to its start (server timestamps).
async fn pickups_one_at_a_time(app: &App, organization_id: &str) -> anyhow::Result<Vec<Duration>> {
    let mut pickups = Vec::with_capacity(IDLE_PICKUPS);
    for _ in 0..IDLE_PICKUPS {
        let job = app.queue.enqueue(noop_job(organization_id)).await?.into_row();
        let done = wait_until_ended(app, &job.id).await?;
        let started = done.started_at.unwrap_or(done.created_at);
        pickups.push(Duration::from_millis((started - done.created_at).max(0) as u64));
    }
    Ok(pickups)
}

/// For each job after the first `workers` (by start), the time from the latest end
/// before its start (the slot it took) to that start.
fn next_start_gaps(rows: &[JobRow], workers: usize) -> Vec<Duration> {
    let mut starts: Vec<i64> = rows.iter().filter_map(|r| r.started_at).collect();
    let mut ends: Vec<i64> = rows.iter().filter_map(|r| r.finished_at).collect();
    starts.sort_unstable();
    ends.sort_unstable();
    starts
        .iter()
        .skip(workers)
        .filter_map(|start| {
            let freed = ends.iter().rev().find(|end| *end <= start)?;
            Some(Duration::from_millis((start - freed) as u64))
        })
        .collect()
}

async fn wait_until_ended(app: &App, id: &str) -> anyhow::Result<JobRow> {
    for _ in 0..10_000 {
        let row = jobs::find(&mut app.db.conn().await?, id)
            .await?
            .context("a bench job vanished")?;
        if row.is_terminal() {
            return Ok(row);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    anyhow::bail!("job {id} did not end")
}

/// (p50, p99, max); zeros for no samples.
fn percentiles(samples: &mut [Duration]) -> (Duration, Duration, Duration) {
    if samples.is_empty() {
        return (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99), samples[samples.len() - 1])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Resident memory now, in MiB.
fn rss_mib() -> f64 {
    super::status_kib("VmRSS:") / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let (p50, p99, max) = percentiles(&mut samples);
        assert_eq!(
            (p50, p99, max),
            (
                Duration::from_millis(51),
                Duration::from_millis(99),
                Duration::from_millis(100)
            )
        );
    }
}
