//! `ferry bench export`: exports N seeded entities in each format through the real
//! worker path and prints rows/s, MB/s and peak RSS; on PostgreSQL it also times
//! `COPY (SELECT …) TO STDOUT CSV` over the same rows and prints the ratio.

use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{peak_rss_mib, per_second, reset_peak_rss};
use crate::db::Backend;
use crate::export::Export;
use crate::export::format::Format;
use crate::export::spec::{ExportRequest, ExportSpec};
use crate::export::writer::avro::AvroCodec;
use crate::jobs::Worker;
use crate::orgs::{self, Feature, Plan};
use crate::server::App;

pub struct Options {
    pub rows: u64,
    /// Formats, each with the Avro codec to ask for (Avro only).
    pub formats: Vec<(Format, Option<AvroCodec>)>,
    pub rounds: usize,
}

pub async fn run(app: App, options: Options) -> anyhow::Result<()> {
    let org = orgs::create(&app.db, "bench", Plan::Enterprise, &Feature::ALL, None).await?;
    println!("seeding {} entities on {:?} …", options.rows, app.db.backend());
    let started = Instant::now();
    super::seed::load(&app.db, &org.id, options.rows).await?;
    println!("seeded in {:.1} s", started.elapsed().as_secs_f64());

    let stop = CancellationToken::new();
    let worker = tokio::spawn(Worker::new(app.queue.clone(), app.job_kinds()).run(stop.clone()));
    println!(
        "{:<12} {:>10} {:>9} {:>12} {:>9} {:>10} {:>13}",
        "format", "rows", "seconds", "rows/s", "MB/s", "file MB", "peak RSS MB"
    );
    for (format, codec) in &options.formats {
        reset_peak_rss();
        let (elapsed, rows, bytes) = export_once(&app, &org, *format, *codec).await?;
        let name = match codec {
            Some(codec) => format!(
                "{}:{}",
                format.extension(),
                serde_json::json!(codec).as_str().unwrap_or("?")
            ),
            None => format.extension().to_string(),
        };
        println!(
            "{:<12} {:>10} {:>9.2} {:>12.0} {:>9.1} {:>10.1} {:>13.1}",
            name,
            rows,
            elapsed.as_secs_f64(),
            per_second(rows as f64, elapsed),
            per_second(bytes as f64 / 1e6, elapsed),
            bytes as f64 / 1e6,
            peak_rss_mib()
        );
    }
    if app.db.backend() == Backend::Postgres && options.rounds > 0 {
        compare_with_copy(&app, &org, options.rounds).await?;
    }
    stop.cancel();
    let _ = worker.await;
    Ok(())
}

/// Rounds of one CSV export and one `COPY … TO STDOUT CSV` back to back; prints each
/// round and the median of the per-round ratios, so that the machine's drift
/// (the same COPY took 1.1 s and 2.3 s on the same day) hits both sides alike.
async fn compare_with_copy(app: &App, org: &orgs::Organization, rounds: usize) -> anyhow::Result<()> {
    println!("round  CSV export s  COPY TO s  COPY MB  ratio (COPY time / export time)");
    let mut ratios = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let (export, _, _) = export_once(app, org, Format::Csv, None).await?;
        let (copy, bytes) = copy_out(app.db.url(), &org.id).await?;
        let ratio = copy.as_secs_f64() / export.as_secs_f64();
        ratios.push(ratio);
        println!(
            "{round:>5} {:>13.2} {:>10.2} {:>8.1} {ratio:>6.2}",
            export.as_secs_f64(),
            copy.as_secs_f64(),
            bytes as f64 / 1e6
        );
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    println!(
        "CSV export speed / COPY TO speed = {median:.2} (median of {rounds}; min {:.2}, max {:.2})",
        ratios[0],
        ratios[ratios.len() - 1]
    );
    Ok(())
}

/// One export through the queue and the worker; returns time, rows and file size.
async fn export_once(
    app: &App,
    org: &orgs::Organization,
    format: Format,
    avro_codec: Option<AvroCodec>,
) -> anyhow::Result<(Duration, u64, u64)> {
    let spec = ExportSpec::from_request(ExportRequest {
        format: Some(format),
        avro_codec,
        ..Default::default()
    })
    .map_err(|v| anyhow::anyhow!("invalid bench export: {v:?}"))?;
    let started = crate::db::now_ms();
    let job = app.exports().create(org, spec, None, None).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let job = app.queue.get::<Export>(org.id.as_str(), job.id()).await?;
        let row = &job.row;
        if row.is_terminal() {
            // The job's own finishing time, not when the poll saw it (the 20 ms
            // between polls was a tenth of a 100k-row export).
            let finished = row.finished_at.unwrap_or_else(crate::db::now_ms);
            let elapsed = Duration::from_millis((finished - started).max(0) as u64);
            let result = job
                .output
                .ok_or_else(|| anyhow::anyhow!("export ended {}: {:?}", row.state, row.error))?;
            return Ok((elapsed, result.row_count, result.size));
        }
    }
}

/// PostgreSQL's own CSV unload of the same rows and columns, read and discarded.
async fn copy_out(url: &str, organization_id: &str) -> anyhow::Result<(Duration, u64)> {
    let client = crate::db::postgres::client(url, "bench export").await?;
    let started = Instant::now();
    let query = format!(
        "COPY (SELECT id, entity_type, tax_id, country, name, gender, external_id, email, phone, \
         registration_date, status, is_client, nationality, risk_matrix_id, attributes, entity_data, \
         enrichment_plan, skip_rules_execution, created_at, updated_at FROM entities \
         WHERE organization_id = '{organization_id}' ORDER BY created_at, id) TO STDOUT WITH (FORMAT csv, HEADER)"
    );
    let stream = client.copy_out(&query).await?;
    let mut stream = std::pin::pin!(stream);
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        bytes += chunk?.len() as u64;
    }
    Ok((started.elapsed(), bytes))
}
