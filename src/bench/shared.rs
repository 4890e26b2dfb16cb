//! `ferry bench shared`: the same work for a new organization on an empty
//! PostgreSQL database and on a shared one that other organizations filled and
//! ANALYZE described before the new organization existed (plans are made from
//! statistics, and statistics never know the newest customer). Each operation runs
//! on both databases in alternation, so the machine's drift hits both sides alike;
//! the table prints the median of each side and their ratio.

use std::time::{Duration, Instant};

use tonic::transport::Channel;

use crate::auth::permissions::Permission;
use crate::config::Config;
use crate::db::Db;
use crate::orgs::{self, Feature, Plan};
use crate::proto::{
    self, account_service_client::AccountServiceClient, entity_service_client::EntityServiceClient,
    export_service_client::ExportServiceClient, import_service_client::ImportServiceClient,
};
use crate::server::{App, Running};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Entities of the other organizations.
    #[arg(long, default_value_t = 5_000_000)]
    pub entities: u64,
    #[arg(long, default_value_t = 500)]
    pub organizations: u64,
    /// Of those entities, how many the biggest organization holds.
    #[arg(long, default_value_t = 2_000_000)]
    pub big: u64,
    /// Finished jobs of the other organizations (and as many audit events).
    #[arg(long, default_value_t = 1_000_000)]
    pub jobs: u64,
    /// Import error rows of those jobs.
    #[arg(long, default_value_t = 1_000_000)]
    pub errors: u64,
    /// Rows of the new organization's first import.
    #[arg(long, default_value_t = 100_000)]
    pub import_rows: u64,
    /// Timed repetitions of each call; the median is printed.
    #[arg(long, default_value_t = 7)]
    pub repeat: usize,
    /// Concurrent callers of the biggest organization's listings.
    #[arg(long, default_value_t = 20)]
    pub callers: usize,
}

/// Name prefix of the filled organizations; a database holding them is reused.
const FILLED: &str = "bench-shared-";

/// One side of the comparison: a database, a server on it, the new organization.
struct Side {
    name: &'static str,
    app: App,
    running: Running,
    channel: Channel,
    key: String,
    organization_id: String,
    import_id: String,
    export_id: String,
}

pub async fn run(config: Config, options: Options) -> anyhow::Result<()> {
    let shared_url = config.database_url();
    anyhow::ensure!(
        crate::db::is_postgres_url(&shared_url),
        "ferry bench shared runs on PostgreSQL: pass --database-url postgres://…"
    );
    // The REST calls' HTTP client needs the process's TLS provider, plain or not.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let empty_url = recreate_sibling(&shared_url, "_empty").await?;
    let shared = open(&config, &shared_url, options.import_rows).await?;
    let empty = open(&config, &empty_url, options.import_rows).await?;
    if filled(&shared.db).await? {
        println!("reusing the filled database (organizations named {FILLED}*)");
    } else {
        fill(&shared.db, &options).await?;
    }
    let mut sides = Vec::new();
    for (name, app) in [("empty", empty), ("shared", shared)] {
        sides.push(Side::start(name, app).await?);
    }

    let mut table = Vec::new();
    // The first import of the new organization: once per side, in turn.
    let mut import = Vec::new();
    for side in &mut sides {
        let mut client = ImportServiceClient::new(side.channel.clone());
        println!("{}: importing {} rows …", side.name, options.import_rows);
        let (done, _, elapsed) =
            super::import::upload_and_wait(&mut client, &side.key, options.import_rows).await?;
        anyhow::ensure!(
            done.state == proto::JobState::Completed as i32,
            "{}: the import ended {:?}: {:?}",
            side.name,
            done.state,
            done.error
        );
        println!(
            "{}: {:.0} rows/s ({:.2} s)",
            side.name,
            super::per_second(options.import_rows as f64, elapsed),
            elapsed.as_secs_f64()
        );
        side.import_id = done.id;
        import.push(elapsed);
    }
    table.push((
        format!("import {} rows", options.import_rows),
        import[0],
        import[1],
    ));
    for side in &sides {
        println!("{}: the import's key lookup plan:", side.name);
        println!("{}", explain_import_lookup(side).await?);
    }
    let mut export = Vec::new();
    for side in &mut sides {
        let started = Instant::now();
        side.export_id = export_and_wait(side).await?;
        export.push(started.elapsed());
    }
    table.push((
        format!("export {} rows (CSV)", options.import_rows),
        export[0],
        export[1],
    ));

    for (name, call) in calls() {
        let mut times = [Vec::new(), Vec::new()];
        for _ in 0..options.repeat {
            for (i, side) in sides.iter().enumerate() {
                let started = Instant::now();
                call(side)
                    .await
                    .map_err(|err| anyhow::anyhow!("{name} on {}: {err:#}", side.name))?;
                times[i].push(started.elapsed());
            }
        }
        table.push((name.to_string(), median(&mut times[0]), median(&mut times[1])));
    }

    println!();
    println!(
        "{:<44} {:>10} {:>10} {:>7}",
        "operation (new organization)", "empty ms", "shared ms", "ratio"
    );
    for (name, empty, shared) in &table {
        println!(
            "{:<44} {:>10.2} {:>10.2} {:>7.2}",
            name,
            empty.as_secs_f64() * 1e3,
            shared.as_secs_f64() * 1e3,
            shared.as_secs_f64() / empty.as_secs_f64().max(1e-9)
        );
    }
    if let Some(shared) = sides.get(1) {
        big_organization(shared, options.callers, options.repeat).await?;
        purge_beside_an_import(shared, options.import_rows).await?;
    }
    for side in sides {
        side.running.stop().await;
    }
    Ok(())
}

/// The filters of the big organization's table: (name, filter).
fn big_filters() -> Vec<(&'static str, proto::EntityFilter)> {
    use proto::EntityFilter;
    let attribute = |path: &str, value: &str| EntityFilter {
        attributes: vec![proto::AttributeEquals {
            path: path.into(),
            value: value.into(),
        }],
        ..Default::default()
    };
    let search = |term: &str| EntityFilter {
        search: term.into(),
        ..Default::default()
    };
    vec![
        ("no filter", EntityFilter::default()),
        (
            "country MX",
            EntityFilter {
                countries: vec!["MX".into()],
                ..Default::default()
            },
        ),
        (
            "type company",
            EntityFilter {
                types: vec![proto::EntityType::Company as i32],
                ..Default::default()
            },
        ),
        (
            "status inactive",
            EntityFilter {
                statuses: vec![proto::EntityStatus::Inactive as i32],
                ..Default::default()
            },
        ),
        (
            "is_client",
            EntityFilter {
                is_client: Some(true),
                ..Default::default()
            },
        ),
        (
            "one tax ID",
            EntityFilter {
                tax_ids: vec!["00000424242".into()],
                ..Default::default()
            },
        ),
        (
            "one external ID",
            EntityFilter {
                external_ids: vec!["ext-424242".into()],
                ..Default::default()
            },
        ),
        ("attribute tier=tier3 (20%)", attribute("tier", "tier3")),
        ("attribute score=42 (1%)", attribute("score", "42")),
        ("search \"424242\" (2 rows)", search("424242")),
        ("search \"hooli\" (12.5%)", search("hooli")),
        (
            "created in 10 minutes (60,000)",
            EntityFilter {
                created: Some(proto::TimeRange {
                    start: Some(prost_types::Timestamp {
                        seconds: 1_700_010_000,
                        nanos: 0,
                    }),
                    end: Some(prost_types::Timestamp {
                        seconds: 1_700_010_600,
                        nanos: 0,
                    }),
                }),
                ..Default::default()
            },
        ),
    ]
}

/// The biggest filled organization's first page (with its total) under each
/// filter, from `callers` concurrent callers, `rounds` calls each: p50 and p95;
/// then how soon an export with the filter streams its first rows.
async fn big_organization(shared: &Side, callers: usize, rounds: usize) -> anyhow::Result<()> {
    let client = crate::db::postgres::client(shared.app.db.url(), "bench shared").await?;
    let row = client
        .query_one(
            "SELECT id, (SELECT count(*) FROM entities e WHERE e.organization_id = o.id) \
             FROM organizations o WHERE name = $1",
            &[&format!("{FILLED}0")],
        )
        .await?;
    let (organization_id, size): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
    let (_, key) =
        crate::auth::keys::create(&shared.app.db, &organization_id, "bench", &Permission::ALL, &[]).await?;
    let big = Caller {
        channel: shared.channel.clone(),
        key,
    };
    println!();
    println!(
        "the biggest organization ({size} entities): first page of 100 and its total, {callers} concurrent callers × {rounds}"
    );
    println!(
        "{:<30} {:>10} {:>9} {:>9} {:>9}  {:>14}",
        "ListEntities filter", "total", "p50 ms", "p95 ms", "max ms", "export starts"
    );
    for (name, filter) in big_filters() {
        let calls = (0..callers).map(|_| {
            let (big, filter) = (&big, filter.clone());
            async move {
                let mut times = Vec::with_capacity(rounds);
                let mut total = 0;
                for _ in 0..rounds {
                    let started = Instant::now();
                    let page = EntityServiceClient::new(big.channel.clone())
                        .list_entities(big.request(proto::ListEntitiesRequest {
                            filter: Some(filter.clone()),
                            page_size: 100,
                            ..Default::default()
                        })?)
                        .await?
                        .into_inner();
                    times.push(started.elapsed());
                    total = page.total_size;
                }
                Ok::<_, anyhow::Error>((times, total))
            }
        });
        let results = futures::future::try_join_all(calls).await?;
        let total = results.first().map(|(_, t)| *t).unwrap_or_default();
        let mut times: Vec<Duration> = results.into_iter().flat_map(|(t, _)| t).collect();
        times.sort();
        let at = |q: f64| {
            times
                .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        let streams = export_start(&big, filter).await?;
        println!(
            "{:<30} {:>10} {:>9.1} {:>9.1} {:>9.1}  {:>11.0} ms",
            name,
            total,
            at(0.5).as_secs_f64() * 1e3,
            at(0.95).as_secs_f64() * 1e3,
            times.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            streams.as_secs_f64() * 1e3
        );
    }
    Ok(())
}

/// The audit trail's purge of every filled event (about one per filled job) while
/// the new organization imports again: the import's speed beside the purge, and
/// the purge's own time. Last, as it empties the filled trail.
async fn purge_beside_an_import(shared: &Side, rows: u64) -> anyhow::Result<()> {
    let mut client = ImportServiceClient::new(shared.channel.clone());
    let started = Instant::now();
    let import = super::import::upload_and_wait(&mut client, &shared.key, rows);
    let db = shared.app.db.clone();
    let purge = async move {
        // Let the import start writing first.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let gone = crate::audit::purge(&db, Duration::from_secs(24 * 3600)).await?;
        Ok::<_, anyhow::Error>((gone, started.elapsed()))
    };
    let (imported, purged) = tokio::join!(import, purge);
    let (done, _, elapsed) = imported?;
    let (gone, purge_time) = purged?;
    println!();
    println!(
        "purge of {gone} audit events in {:.1} s ({:.0}/s) beside a {}-row import: {:.0} rows/s ({:.2} s, {:?})",
        purge_time.as_secs_f64(),
        super::per_second(gone as f64, purge_time),
        rows,
        super::per_second(done.processed_items as f64, elapsed),
        started.elapsed().as_secs_f64(),
        proto::JobState::try_from(done.state).unwrap_or_default()
    );
    Ok(())
}

/// How long after CreateExport the export reports its first rows written (or its
/// end); the export is cancelled then.
async fn export_start(side: &Caller, filter: proto::EntityFilter) -> anyhow::Result<Duration> {
    let mut client = ExportServiceClient::new(side.channel.clone());
    let started = Instant::now();
    let export = client
        .create_export(side.request(proto::CreateExportRequest {
            filter: Some(filter),
            format: proto::ExportFormat::Csv as i32,
            ..Default::default()
        })?)
        .await?
        .into_inner();
    loop {
        let now = client
            .get_export(side.request(proto::GetExportRequest {
                id: export.id.clone(),
            })?)
            .await?
            .into_inner();
        let rows = now.progress.map(|p| p.rows_done).unwrap_or_default();
        if rows > 0 || now.end_time.is_some() || started.elapsed() > Duration::from_secs(60) {
            let elapsed = started.elapsed();
            let _ = client
                .cancel_export(side.request(proto::CancelExportRequest { id: export.id })?)
                .await;
            return Ok(elapsed);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The median of `times` (the upper one of an even count).
fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

/// Drops and creates the database named like `url`'s plus `suffix`; its URL.
async fn recreate_sibling(url: &str, suffix: &str) -> anyhow::Result<String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (server, name) = base
        .rsplit_once('/')
        .filter(|(server, name)| !name.is_empty() && server.contains("//"))
        .ok_or_else(|| anyhow::anyhow!("the database URL names no database"))?;
    let sibling = format!("{name}{suffix}");
    let client = crate::db::postgres::client(url, "bench shared").await?;
    // Two statements: one query string would make them one transaction, which
    // neither may run in.
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{sibling}\" WITH (FORCE)"))
        .await?;
    client
        .batch_execute(&format!("CREATE DATABASE \"{sibling}\""))
        .await?;
    Ok(match query {
        "" => format!("{server}/{sibling}"),
        query => format!("{server}/{sibling}?{query}"),
    })
}

/// An app on `url` whose plan and caps let the bench's import through.
async fn open(config: &Config, url: &str, import_rows: u64) -> anyhow::Result<App> {
    let mut config = config.clone();
    config.database.url = url.to_string();
    config.plans.enterprise_import_rows = config.plans.enterprise_import_rows.max(import_rows);
    config.bulk_import.max_items = 0;
    config.server.grpc_addr = "127.0.0.1:0".into();
    config.server.http_addr = "127.0.0.1:0".into();
    // The filled jobs and audit events ended in 2023: the servers' own hourly
    // purges would remove them at start. The purge is measured on its own.
    config.jobs.retention_days = 0;
    config.audit.retention_days = 0;
    App::open(config).await
}

/// Whether an earlier run filled the database to its last step.
async fn filled(db: &Db) -> anyhow::Result<bool> {
    let client = crate::db::postgres::client(db.url(), "bench shared").await?;
    let done = client
        .query("SELECT 1 FROM audit_events WHERE id = md5('a1')::uuid::text", &[])
        .await?;
    Ok(!done.is_empty())
}

/// Fills the shared database server-side (`generate_series`): organizations, their
/// entities (one organization holding `big` of them), finished jobs, import errors
/// and audit events, then VACUUM ANALYZE, as autovacuum leaves a database at rest.
async fn fill(db: &Db, o: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(o.organizations >= 2, "--organizations must be at least 2");
    let client = crate::db::postgres::client(db.url(), "bench shared").await?;
    let org = |g: &str| format!("md5('org' || ({g}))::uuid::text");
    let others = o.organizations - 1;
    // (what, a row that exists once the step ran, the step): a run that stopped
    // half-way resumes with the first step not done.
    let steps = [
        (
            "organizations",
            format!("SELECT 1 FROM organizations WHERE name = '{FILLED}0'"),
            format!(
                "INSERT INTO organizations (id, name, plan, features, created_at, updated_at) \
                 SELECT {}, '{FILLED}' || g, 'enterprise', '[]', 0, 0 FROM generate_series(0, {}) g",
                org("g"),
                o.organizations - 1
            ),
        ),
        (
            "entities",
            "SELECT 1 FROM entities WHERE id = md5('e1')::uuid::text".to_string(),
            format!(
                "INSERT INTO entities (id, organization_id, entity_type, tax_id, country, name, external_id, \
                 email, status, is_client, attributes, entity_data, created_at, updated_at) \
                 SELECT md5('e' || g)::uuid::text, {org}, \
                 CASE WHEN g % 3 = 0 THEN 'company' ELSE 'person' END, lpad(g::text, 11, '0'), \
                 (ARRAY['AR','BR','CL','MX','UY'])[g % 5 + 1], \
                 (ARRAY['Acme','Globex','Initech','Umbrella','Hooli','Vandelay','Stark','Wayne'])[g % 8 + 1] \
                 || ' ' || (ARRAY['Holdings','Trading','Partners','Services'])[g % 4 + 1] || ' ' || g, \
                 'ext-' || g, 'e' || g || '@example.com', \
                 CASE WHEN g % 10 = 0 THEN 'inactive' WHEN g % 97 = 0 THEN 'blocked' ELSE 'active' END, \
                 g % 2 = 0, \
                 '{{\"segment_tag\":\"' || (ARRAY['retail','corporate','sme','private'])[g % 4 + 1] \
                 || '\",\"tier\":\"tier' || (g % 5) || '\",\"score\":' || (g % 100) || '}}', \
                 '{{}}', 1700000000000 + g * 10, 1700000000000 + g * 10 \
                 FROM generate_series(1, {entities}) g",
                org = org(&format!(
                    "CASE WHEN g <= {} THEN 0 ELSE 1 + g % {others} END",
                    o.big
                )),
                entities = o.entities
            ),
        ),
        (
            "jobs",
            "SELECT 1 FROM jobs WHERE id = md5('j1')::uuid::text".to_string(),
            // Finished long ago; completed exports' files expire far in the
            // future, so the janitor has nothing to do but look.
            format!(
                "INSERT INTO jobs (id, organization_id, kind, state, payload, search_text, attempts, \
                 max_attempts, run_after, rows_done, rows_total, created_at, started_at, finished_at, \
                 updated_at, expires_at) \
                 SELECT md5('j' || g)::uuid::text, {}, \
                 CASE WHEN g % 2 = 0 THEN 'export' ELSE 'import' END, \
                 CASE WHEN g % 20 = 0 THEN 'failed' WHEN g % 6 = 0 THEN 'expired' ELSE 'completed' END, \
                 '{{}}', 'file-' || g || '.csv', 1, 3, t, 100, 100, t, t, t + 1000, t + 1000, \
                 CASE WHEN g % 2 = 0 THEN t + 3153600000000 END \
                 FROM (SELECT g, 1700000000000 + g::bigint * 30000 AS t FROM generate_series(1, {}) g) s",
                org(&format!("g % {}", o.organizations)),
                o.jobs
            ),
        ),
        (
            "import errors",
            "SELECT 1 FROM import_errors WHERE job_id = md5('j1')::uuid::text".to_string(),
            format!(
                "INSERT INTO import_errors (job_id, line, seq, severity, column_name, code, message, \
                 raw_value, raw_record) \
                 SELECT md5('j' || (2 * (g / 100) + 1))::uuid::text, g % 100 + 2, 0, 'error', 'tax_id', \
                 'INVALID_TAX_ID', 'not a valid tax ID', 'x' || g, '[\"x' || g || '\"]' \
                 FROM generate_series(0, {}) g WHERE 2 * (g / 100) + 1 <= {}",
                o.errors.saturating_sub(1),
                o.jobs
            ),
        ),
        (
            "audit events",
            "SELECT 1 FROM audit_events WHERE id = md5('a1')::uuid::text".to_string(),
            format!(
                "INSERT INTO audit_events (id, at, organization_id, principal, door, method, target_id, \
                 request_id, outcome) \
                 SELECT md5('a' || g)::uuid::text, 1700000000000 + g::bigint * 30000, {}, 'key:bench', 'grpc', \
                 '/ferry.v1.ExportService/CreateExport', md5('j' || g)::uuid::text, md5('r' || g), 'OK' \
                 FROM generate_series(1, {}) g",
                org(&format!("g % {}", o.organizations)),
                o.jobs
            ),
        ),
    ];
    for (what, done, sql) in steps {
        if !client.query(&done, &[]).await?.is_empty() {
            continue;
        }
        let started = Instant::now();
        client.batch_execute(&sql).await?;
        println!("filled {what} in {:.1} s", started.elapsed().as_secs_f64());
    }
    let started = Instant::now();
    client.batch_execute("VACUUM ANALYZE").await?;
    println!(
        "vacuumed and analyzed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

impl Side {
    async fn start(name: &'static str, app: App) -> anyhow::Result<Side> {
        let org = orgs::create(
            &app.db,
            "bench-new-customer",
            Plan::Enterprise,
            &Feature::ALL,
            None,
        )
        .await?;
        let (_, key) = crate::auth::keys::create(&app.db, &org.id, "bench", &Permission::ALL, &[]).await?;
        let running = crate::server::start(app.clone(), app.job_kinds()).await?;
        let channel = Channel::from_shared(format!("http://{}", running.grpc_addr))?
            .connect()
            .await?;
        Ok(Side {
            name,
            app,
            running,
            channel,
            key,
            organization_id: org.id,
            import_id: String::new(),
            export_id: String::new(),
        })
    }

    fn request<T>(&self, message: T) -> anyhow::Result<tonic::Request<T>> {
        Caller::request_as(&self.key, message)
    }
}

/// A key of another organization on a side's server.
struct Caller {
    channel: Channel,
    key: String,
}

impl Caller {
    fn request<T>(&self, message: T) -> anyhow::Result<tonic::Request<T>> {
        Caller::request_as(&self.key, message)
    }

    fn request_as<T>(key: &str, message: T) -> anyhow::Result<tonic::Request<T>> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse()?);
        Ok(request)
    }
}

/// The plan of the import's key lookup for the new organization's next batch.
async fn explain_import_lookup(side: &Side) -> anyhow::Result<String> {
    let writer = crate::db::import_sink::pg_writer::CopyWriter::connect(side.app.db.url()).await?;
    let keys: Vec<String> = (1..=2000).map(|i| format!("BENCH{i:09}")).collect();
    Ok(writer.explain_lookup(&side.organization_id, "MX", &keys).await?)
}

/// Exports the new organization's entities as CSV and waits for the end.
async fn export_and_wait(side: &Side) -> anyhow::Result<String> {
    let mut client = ExportServiceClient::new(side.channel.clone());
    let export = client
        .create_export(side.request(proto::CreateExportRequest {
            format: proto::ExportFormat::Csv as i32,
            ..Default::default()
        })?)
        .await?
        .into_inner();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = client
            .get_export(side.request(proto::GetExportRequest {
                id: export.id.clone(),
            })?)
            .await?
            .into_inner();
        if now.end_time.is_some() {
            anyhow::ensure!(
                now.state == proto::JobState::Completed as i32,
                "the export ended {:?}",
                now.state
            );
            return Ok(now.id);
        }
    }
}

type Call = for<'a> fn(&'a Side) -> futures::future::BoxFuture<'a, anyhow::Result<()>>;

/// A first page of ListEntities (with its total) under `filter`.
async fn list_entities(side: &Side, filter: proto::EntityFilter) -> anyhow::Result<()> {
    let mut client = EntityServiceClient::new(side.channel.clone());
    client
        .list_entities(side.request(proto::ListEntitiesRequest {
            filter: Some(filter),
            page_size: 100,
            ..Default::default()
        })?)
        .await?;
    Ok(())
}

/// Every timed call, by name.
fn calls() -> Vec<(&'static str, Call)> {
    use futures::FutureExt;
    use proto::EntityFilter;
    vec![
        ("WhoAmI (key lookup)", |s| {
            async move {
                AccountServiceClient::new(s.channel.clone())
                    .who_am_i(s.request(proto::WhoAmIRequest {})?)
                    .await?;
                Ok(())
            }
            .boxed()
        }),
        ("ListEntities, no filter", |s| {
            list_entities(s, EntityFilter::default()).boxed()
        }),
        ("ListEntities, country", |s| {
            list_entities(
                s,
                EntityFilter {
                    countries: vec!["MX".into()],
                    ..Default::default()
                },
            )
            .boxed()
        }),
        ("ListEntities, type", |s| {
            list_entities(
                s,
                EntityFilter {
                    types: vec![proto::EntityType::Company as i32],
                    ..Default::default()
                },
            )
            .boxed()
        }),
        ("ListEntities, one tax ID", |s| {
            list_entities(
                s,
                EntityFilter {
                    tax_ids: vec!["BENCH000004242".into()],
                    ..Default::default()
                },
            )
            .boxed()
        }),
        ("ListEntities, search", |s| {
            list_entities(
                s,
                EntityFilter {
                    search: "entity 4242".into(),
                    ..Default::default()
                },
            )
            .boxed()
        }),
        ("ListEntities, attribute", |s| {
            list_entities(
                s,
                EntityFilter {
                    attributes: vec![proto::AttributeEquals {
                        path: "tier".into(),
                        value: "tier3".into(),
                    }],
                    ..Default::default()
                },
            )
            .boxed()
        }),
        ("GetImport", |s| {
            async move {
                ImportServiceClient::new(s.channel.clone())
                    .get_import(s.request(proto::GetImportRequest {
                        id: s.import_id.clone(),
                    })?)
                    .await?;
                Ok(())
            }
            .boxed()
        }),
        ("ListImports", |s| {
            async move {
                ImportServiceClient::new(s.channel.clone())
                    .list_imports(s.request(proto::ListImportsRequest {
                        page_size: 100,
                        states: vec![proto::JobState::Completed as i32],
                        ..Default::default()
                    })?)
                    .await?;
                Ok(())
            }
            .boxed()
        }),
        ("ListImportErrors", |s| {
            async move {
                ImportServiceClient::new(s.channel.clone())
                    .list_import_errors(s.request(proto::ListImportErrorsRequest {
                        import_id: s.import_id.clone(),
                        page_size: 100,
                        ..Default::default()
                    })?)
                    .await?;
                Ok(())
            }
            .boxed()
        }),
        ("ListExports", |s| {
            async move {
                ExportServiceClient::new(s.channel.clone())
                    .list_exports(s.request(proto::ListExportsRequest {
                        page_size: 100,
                        ..Default::default()
                    })?)
                    .await?;
                Ok(())
            }
            .boxed()
        }),
        ("GetExport", |s| {
            async move {
                ExportServiceClient::new(s.channel.clone())
                    .get_export(s.request(proto::GetExportRequest {
                        id: s.export_id.clone(),
                    })?)
                    .await?;
                Ok(())
            }
            .boxed()
        }),
        ("REST GET /v1/exports?limit=100", |s| {
            rest_get(s, "/v1/exports?limit=100".into()).boxed()
        }),
        ("REST GET …/entities/{jobId}/errors", |s| {
            rest_get(s, format!("/batch-import/import/entities/{}/errors", s.import_id)).boxed()
        }),
        ("queue: claim (nothing runnable)", |s| {
            async move {
                let now = crate::db::now_ms();
                let kinds = vec![crate::export::KIND.to_string(), crate::import::KIND.to_string()];
                crate::db::jobs::claim_next(&s.app.db, &kinds, "bench", "bench", 30_000, now).await?;
                Ok(())
            }
            .boxed()
        }),
        ("queue: heartbeat (lease renewal)", |s| {
            async move {
                let mut conn = s.app.db.conn().await?;
                crate::db::jobs::renew_lease(&mut conn, &s.export_id, "bench", 30_000).await?;
                Ok(())
            }
            .boxed()
        }),
        ("queue: active jobs of the organization", |s| {
            async move {
                let mut conn = s.app.db.conn().await?;
                crate::db::jobs::count_active(&mut conn, &s.organization_id, crate::export::KIND).await?;
                Ok(())
            }
            .boxed()
        }),
        ("janitor: exports due for expiry", |s| {
            async move {
                let mut conn = s.app.db.conn().await?;
                crate::db::jobs::due_for_expiry(&mut conn, crate::export::KIND, crate::db::now_ms(), 100)
                    .await?;
                Ok(())
            }
            .boxed()
        }),
        ("janitor: idempotency keys released", |s| {
            async move {
                let mut conn = s.app.db.conn().await?;
                crate::db::jobs::release_request_ids(&mut conn, crate::db::now_ms() - 86_400_000).await?;
                Ok(())
            }
            .boxed()
        }),
        ("reaper: expired leases", |s| {
            async move {
                let mut conn = s.app.db.conn().await?;
                crate::db::jobs::reap_expired_leases(&mut conn, crate::db::now_ms(), "bench").await?;
                Ok(())
            }
            .boxed()
        }),
        ("audit: purge pass (nothing due)", |s| {
            async move {
                crate::audit::purge(&s.app.db, Duration::from_secs(3650 * 86_400)).await?;
                Ok(())
            }
            .boxed()
        }),
    ]
}

/// A GET on the REST door with the new organization's key.
async fn rest_get(side: &Side, path: String) -> anyhow::Result<()> {
    let url = format!("http://{}{path}", side.running.http_addr);
    let response = reqwest::Client::new()
        .get(url)
        .header("x-api-key", &side.key)
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{path}: HTTP {}",
        response.status()
    );
    response.bytes().await?;
    Ok(())
}
