//! The command line: `ferry serve | migrate | admin | bench …` for the server, and
//! the client commands of [`crate::client`]. Glue only: parses arguments, loads
//! settings, and calls the library.

pub mod admin;

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::server::{self, App, bootstrap};

#[derive(Debug, Parser)]
#[command(name = "ferry", version, about = "Bulk export and import jobs over gRPC")]
pub struct Cli {
    /// Settings file (default: ./ferry.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Any setting as key=value (`jobs.workers=4`); beats the environment and the file.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
    /// Shorthand for --set database.url=URL.
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Shorthand for --set server.data_dir=DIR.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Where client commands connect and how they print.
    #[command(flatten, next_help_heading = "Client options")]
    pub client: crate::client::ClientArgs,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server, the HTTP listener and the job worker.
    Serve {
        /// Shorthand for --set server.grpc_addr=ADDR.
        #[arg(long, value_name = "ADDR")]
        grpc_addr: Option<String>,
        /// Shorthand for --set server.http_addr=ADDR.
        #[arg(long, value_name = "ADDR")]
        http_addr: Option<String>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage organizations, keys, e-mail domains and senders, enrichments (talks to
    /// the database directly).
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Measure throughput and memory on synthetic data (see docs/benchmarks.md).
    #[command(subcommand)]
    Bench(BenchCommand),
    #[command(flatten)]
    Client(crate::client::ClientCommand),
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Seed N entities and export them in each format.
    Export {
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Formats to run, comma-separated (csv,json,ndjson,xlsx,parquet,avro); an
        /// Avro block codec follows a colon (avro:snappy, avro:zstd, avro:null;
        /// avro alone is deflate).
        #[arg(
            long,
            default_value = "csv,ndjson,json,parquet,avro,avro:snappy,avro:zstd,xlsx"
        )]
        formats: String,
        /// On PostgreSQL: rounds of (CSV export, COPY TO) run back to back for the
        /// ratio, whose median is reported (this machine's speed drifts by 2x).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Generate N CSV rows, import them over gRPC and wait for the job.
    Import {
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
    },
    /// PostgreSQL only: a new organization's import, export, listings, queue and
    /// janitor passes on an empty database and on a shared one filled with other
    /// organizations' analyzed rows, side by side (`<database>_empty` is recreated;
    /// a database already filled is reused).
    Shared(crate::bench::shared::Options),
    /// Serve in process and measure concurrent calls, watchers and job pickup.
    Load {
        /// Entities seeded for the organization.
        #[arg(long, default_value_t = 10_000)]
        entities: u64,
        /// Concurrent unary calls in each burst (GetExport, ListExports, ListEntities).
        #[arg(long, default_value_t = 1_000)]
        burst: usize,
        /// Seconds of sustained GetExport calls.
        #[arg(long, default_value_t = 10)]
        sustain_secs: u64,
        /// Watchers of one export.
        #[arg(long, default_value_t = 10_000)]
        watchers: usize,
        /// Watch streams per HTTP/2 connection.
        #[arg(long, default_value_t = 500)]
        watchers_per_connection: usize,
        /// Jobs queued at once to measure the gap between one job's end and the next start.
        #[arg(long, default_value_t = 100)]
        queued_jobs: usize,
    },
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))
}

impl Cli {
    /// Settings from every layer, flags last.
    pub fn load_config(&self) -> anyhow::Result<Config> {
        let mut overrides = self.set.clone();
        if let Some(url) = &self.database_url {
            overrides.push(("database.url".into(), url.clone()));
        }
        if let Some(dir) = &self.data_dir {
            overrides.push(("server.data_dir".into(), dir.clone()));
        }
        if let Command::Serve { grpc_addr, http_addr } = &self.command {
            if let Some(addr) = grpc_addr {
                overrides.push(("server.grpc_addr".into(), addr.clone()));
            }
            if let Some(addr) = http_addr {
                overrides.push(("server.http_addr".into(), addr.clone()));
            }
        }
        Ok(Config::load(
            self.config.as_deref(),
            std::env::vars(),
            &overrides,
        )?)
    }
}

/// Runs the parsed command line and says how the process exits: client commands
/// with their documented codes, server commands 0 or 1.
pub async fn main(cli: Cli) -> std::process::ExitCode {
    match cli {
        Cli {
            client,
            command: Command::Client(command),
            ..
        } => {
            let output = client.output;
            match crate::client::run(client, command).await {
                Ok(exit) => exit.into(),
                Err(err) => {
                    output.error(&err);
                    err.exit().into()
                }
            }
        }
        cli => match run(cli).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    crate::private_file::restrict_new_files();
    let config = cli.load_config()?;
    init_logging(&config);
    for (variable, closest) in crate::config::unknown_env(std::env::vars()) {
        match closest {
            Some(closest) => {
                tracing::warn!("{variable} is not a ferry setting and is ignored; did you mean {closest}?")
            }
            None => tracing::warn!("{variable} is not a ferry setting and is ignored"),
        }
    }
    match cli.command {
        Command::Serve { .. } => serve(config).await,
        Command::Migrate => {
            let app = App::open(config).await?;
            drop(app);
            println!("migrations applied");
            Ok(())
        }
        Command::Admin(command) => {
            existing_database(&config)?;
            let app = App::open(config).await?;
            admin::run(&app, command).await
        }
        Command::Bench(BenchCommand::Export {
            rows,
            formats,
            rounds,
        }) => {
            let formats = formats
                .split(',')
                .map(|f| {
                    let (format, codec) = f.trim().split_once(':').unwrap_or((f.trim(), ""));
                    let parse = |name: &str| serde_json::Value::String(name.to_string());
                    let format = serde_json::from_value(parse(format))
                        .with_context(|| format!("unknown format `{f}`"))?;
                    let codec = match codec {
                        "" => None,
                        codec => Some(
                            serde_json::from_value(parse(codec))
                                .with_context(|| format!("unknown Avro codec `{codec}`"))?,
                        ),
                    };
                    Ok((format, codec))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let app = App::open(config).await?;
            crate::bench::export::run(
                app,
                crate::bench::export::Options {
                    rows,
                    formats,
                    rounds,
                },
            )
            .await
        }
        Command::Bench(BenchCommand::Load {
            entities,
            burst,
            sustain_secs,
            watchers,
            watchers_per_connection,
            queued_jobs,
        }) => {
            let app = App::open(config).await?;
            let options = crate::bench::load::Options {
                entities,
                burst,
                sustain_secs,
                watchers,
                watchers_per_connection,
                queued_jobs,
                // With `server.tls_cert` set, the client's global `--ca-cert`.
                ca_cert: cli.client.ca_cert.clone(),
            };
            crate::bench::load::run(app, options).await
        }
        Command::Client(command) => {
            let exit = crate::client::run(cli.client, command).await?;
            anyhow::ensure!(
                exit == crate::client::Exit::Ok,
                "the command ended with exit code {}",
                exit as u8
            );
            Ok(())
        }
        Command::Bench(BenchCommand::Shared(options)) => crate::bench::shared::run(config, options).await,
        Command::Bench(BenchCommand::Import { rows }) => {
            let app = App::open(config).await?;
            crate::bench::import::run(app, crate::bench::import::Options { rows }).await
        }
    }
}

/// Both listen addresses can be bound: checked before anything is migrated,
/// bootstrapped or printed, so a second `ferry serve` on the same ports (or a port
/// another program holds) stops at once with the setting to change. (The server
/// binds them for real once the database is ready.)
fn addresses_free(config: &Config) -> anyhow::Result<()> {
    for (key, addr) in [
        ("server.grpc_addr", config.grpc_addr()),
        ("server.http_addr", config.http_addr()),
    ] {
        std::net::TcpListener::bind(addr).with_context(|| {
            format!("cannot listen on {key} {addr} (another ferry or another program holds it?)")
        })?;
    }
    Ok(())
}

/// `ferry admin` works on a database that exists: a SQLite file that is not there
/// (a wrong folder, a typo) would otherwise be created empty, and the command would
/// act on it as if nothing were wrong.
fn existing_database(config: &Config) -> anyhow::Result<()> {
    let url = config.database_url();
    if crate::db::is_postgres_url(&url) {
        return Ok(());
    }
    let path = std::path::Path::new(crate::db::sqlite_path(&url));
    anyhow::ensure!(
        path.exists(),
        "there is no ferry database at {} (database.url / --database-url, or --data-dir); \
         `ferry migrate` or `ferry serve` creates one",
        path.display()
    );
    Ok(())
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    // Colours only for a person: none in a file, a pipe or a log collector.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless.
    let _ = if config.log.format == crate::config::LogFormat::Json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

async fn serve(config: Config) -> anyhow::Result<()> {
    addresses_free(&config)?;
    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let bootstrap_enabled = config.server.bootstrap;
    let app = App::open(config).await?;
    app.storage
        .check_writable()
        .await
        .context("file storage is not usable; ferry does not start without it")?;
    let json = app.config.log.format == crate::config::LogFormat::Json;
    if bootstrap_enabled && let Some(created) = bootstrap::run_if_empty(&app.db, &data_dir).await? {
        announce_bootstrap(&created, json);
    }
    let handlers = app.job_kinds();
    let running = server::start(app, handlers).await?;
    // With JSON logs everything ferry writes is a JSON log line, the banner included.
    tracing::info!(grpc_addr = %running.grpc_addr, http_addr = %running.http_addr, "ferry is serving");
    if !json {
        println!(
            "ferry gRPC on {} , HTTP on {}",
            running.grpc_addr, running.http_addr
        );
    }
    shutdown_signal().await;
    tracing::info!("shutting down: finishing calls and returning job leases");
    running.stop().await;
    Ok(())
}

/// The first start's organization and key. The key's secret goes to the 0600 file
/// and, only when stdout is a terminal, to the screen: never into a log a machine
/// collects.
fn announce_bootstrap(created: &bootstrap::Bootstrap, json: bool) {
    let on_terminal = std::io::stdout().is_terminal();
    tracing::info!(
        organization_id = %created.organization_id,
        key_file = %created.key_file.display(),
        "first start: created an organization and an API key with every permission"
    );
    if !json {
        println!(
            "First start: created organization {} and an API key with every permission.",
            created.organization_id
        );
    }
    if on_terminal {
        println!(
            "  API key (shown once, also saved to {}):",
            created.key_file.display()
        );
        println!("  {}", created.token);
    } else if !json {
        println!(
            "  API key saved to {} (not printed: stdout is not a terminal)",
            created.key_file.display()
        );
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
