//! `ferry bench import`: generates N CSV rows on the fly, streams them over gRPC to
//! a server started in this process (loopback), and waits for the import job to
//! finish; prints rows/s and peak RSS. On PostgreSQL it also times the psql path on
//! the same rows (`\copy` into a staging table, then one `INSERT … SELECT` into
//! `entities`) and prints the ratio.

use std::io::Write;
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use super::{peak_rss_mib, per_second, reset_peak_rss};
use crate::auth::permissions::Permission;
use crate::db::Backend;
use crate::orgs::{self, Feature, Plan};
use crate::proto::{self, import_service_client::ImportServiceClient, upload_import_request::Payload};
use crate::server::App;

const HEADER: &str = "tax_id,type,country_code,suggested_name,email,status,segment_tag,attributes.tier\n";
/// Bytes per upload message.
const CHUNK: usize = 1 << 20;

pub struct Options {
    pub rows: u64,
}

/// Row `i` of the synthetic file.
fn row(i: u64, out: &mut Vec<u8>) {
    let kind = if i.is_multiple_of(3) { "company" } else { "person" };
    let _ = writeln!(
        out,
        "BENCH{i:09},{kind},MX,Entity {i},e{i}@example.com,active,seg{},tier{}",
        i % 17,
        i % 5
    );
}

/// The upload as a lazy stream of messages: options, then 1 MiB chunks.
fn messages(rows: u64) -> impl futures::Stream<Item = proto::UploadImportRequest> + Send + 'static {
    let options = proto::ImportOptions {
        file_name: "bench.csv".into(),
        ..Default::default()
    };
    let first = proto::UploadImportRequest {
        payload: Some(Payload::Options(options)),
    };
    let chunks = futures::stream::unfold(0u64, move |next| async move {
        if next > rows {
            return None;
        }
        let mut buffer = Vec::with_capacity(CHUNK + 256);
        let mut i = next;
        if i == 0 {
            buffer.extend_from_slice(HEADER.as_bytes());
            i = 1;
        }
        while i <= rows && buffer.len() < CHUNK {
            row(i, &mut buffer);
            i += 1;
        }
        let message = proto::UploadImportRequest {
            payload: Some(Payload::Chunk(buffer)),
        };
        Some((message, i))
    });
    futures::StreamExt::chain(futures::stream::iter([first]), chunks)
}

pub async fn run(app: App, options: Options) -> anyhow::Result<()> {
    let mut config = app.config.clone();
    // The bench organization's plan allows the whole file; no server cap.
    config.plans.enterprise_import_rows = config.plans.enterprise_import_rows.max(options.rows);
    config.bulk_import.max_items = 0;
    config.server.grpc_addr = "127.0.0.1:0".into();
    config.server.http_addr = "127.0.0.1:0".into();
    let app = App { config, ..app };
    let org = orgs::create(&app.db, "bench-import", Plan::Enterprise, &Feature::ALL, None).await?;
    let (_, key) = crate::auth::keys::create(&app.db, &org.id, "bench", &Permission::ALL, &[]).await?;
    let handlers = app.job_kinds();
    let running = crate::server::start(app.clone(), handlers).await?;
    let channel = Channel::from_shared(format!("http://{}", running.grpc_addr))?
        .connect()
        .await?;
    let mut client = ImportServiceClient::new(channel);

    println!(
        "importing {} rows on {:?} over gRPC …",
        options.rows,
        app.db.backend()
    );
    reset_peak_rss();
    let (done, uploaded, elapsed) = upload_and_wait(&mut client, &key, options.rows).await?;
    running.stop().await;
    if done.state != proto::JobState::Completed as i32 {
        anyhow::bail!("the import ended {:?}: {:?}", done.state, done.error);
    }
    println!(
        "{:<14} {:>10} {:>10} {:>10} {:>9} {:>12} {:>13}",
        "path", "rows", "created", "upload s", "total s", "rows/s", "peak RSS MB"
    );
    println!(
        "{:<14} {:>10} {:>10} {:>10.2} {:>9.2} {:>12.0} {:>13.1}",
        "ferry (gRPC)",
        done.processed_items,
        done.created_items,
        uploaded.as_secs_f64(),
        elapsed.as_secs_f64(),
        per_second(done.processed_items as f64, elapsed),
        peak_rss_mib()
    );
    if app.db.backend() == Backend::Postgres {
        match psql_path(&app, options.rows).await {
            Ok(psql) => {
                println!(
                    "{:<14} {:>10} {:>10} {:>10} {:>9.2} {:>12.0}",
                    "psql \\copy",
                    options.rows,
                    options.rows,
                    "-",
                    psql.as_secs_f64(),
                    per_second(options.rows as f64, psql)
                );
                println!(
                    "ferry import speed / psql path speed = {:.2}",
                    psql.as_secs_f64() / elapsed.as_secs_f64()
                );
            }
            Err(err) => println!("psql path not timed: {err:#}"),
        }
    }
    Ok(())
}

/// Uploads `rows` synthetic rows as the key's organization and polls until the
/// import ends: the import, the upload's time and the time to its end.
pub async fn upload_and_wait(
    client: &mut ImportServiceClient<Channel>,
    key: &str,
    rows: u64,
) -> anyhow::Result<(proto::Import, Duration, Duration)> {
    let started = Instant::now();
    let mut request = tonic::Request::new(messages(rows));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse()?);
    let queued = client.upload_import(request).await?.into_inner();
    let uploaded = started.elapsed();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut get = tonic::Request::new(proto::GetImportRequest {
            id: queued.id.clone(),
        });
        get.metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse()?);
        let import = client.get_import(get).await?.into_inner();
        if import.end_time.is_some() {
            return Ok((import, uploaded, started.elapsed()));
        }
    }
}

/// The same rows for a second organization through `psql`: `\copy` into an unlogged
/// staging table, one `INSERT … SELECT` into `entities` (uuid ids, the same JSON
/// attributes), staging dropped. Timed from psql's start to its exit.
async fn psql_path(app: &App, rows: u64) -> anyhow::Result<Duration> {
    let org = orgs::create(&app.db, "bench-psql", Plan::Enterprise, &Feature::ALL, None).await?;
    let path = std::env::temp_dir().join(format!("ferry-bench-{}.csv", org.id));
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        file.write_all(HEADER.as_bytes())?;
        let mut buffer = Vec::with_capacity(256);
        for i in 1..=rows {
            buffer.clear();
            row(i, &mut buffer);
            file.write_all(&buffer)?;
        }
        file.flush()?;
    }
    let script = format!(
        "CREATE UNLOGGED TABLE bench_staging (tax_id text, type text, country_code text, \
         suggested_name text, email text, status text, segment_tag text, tier text);\n\
         \\copy bench_staging FROM '{file}' WITH (FORMAT csv, HEADER)\n\
         INSERT INTO entities (id, organization_id, entity_type, tax_id, country, name, email, status, \
         is_client, attributes, entity_data, skip_rules_execution, created_at, updated_at) \
         SELECT gen_random_uuid()::text, '{org}', type, tax_id, country_code, suggested_name, email, status, \
         false, json_build_object('segment_tag', segment_tag, 'tier', tier)::text, '{{}}', false, \
         (extract(epoch from now()) * 1000)::bigint, (extract(epoch from now()) * 1000)::bigint \
         FROM bench_staging ON CONFLICT (organization_id, country, tax_id) DO NOTHING;\n\
         DROP TABLE bench_staging;\n",
        file = path.display(),
        org = org.id
    );
    let output = tokio::process::Command::new("psql")
        .arg(app.db.url())
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-c",
            "DROP TABLE IF EXISTS bench_staging",
        ])
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let started_copy = Instant::now();
    let mut child = tokio::process::Command::new("psql")
        .arg(app.db.url())
        .args(["-v", "ON_ERROR_STOP=1", "-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        stdin.write_all(script.as_bytes()).await?;
    }
    let output = child.wait_with_output().await?;
    let elapsed = started_copy.elapsed();
    let _ = std::fs::remove_file(&path);
    anyhow::ensure!(
        output.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(elapsed)
}
