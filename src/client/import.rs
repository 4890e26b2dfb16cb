//! `ferry import …`: upload a file, follow the job, read its problems.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use clap::{Args, Subcommand};
use futures::StreamExt;

use super::download::{self, Expected};
use super::listing::{self, JobListArgs, states};
use super::output::{self, job_state, time};
use super::session::Session;
use super::watch::{JobMessage, follow, watch_to_end};
use super::{ClientError, Exit, progress};
use crate::proto;

/// Bytes per upload message: well under the server's 4 MiB chunk limit, large
/// enough that framing costs nothing.
const CHUNK_BYTES: usize = 1024 * 1024;

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Upload a CSV, XLSX or NDJSON file as an import job and print it.
    Upload(UploadArgs),
    /// One import.
    Get { id: String },
    /// The organization's imports, newest first.
    List(JobListArgs),
    /// Follow an import until it ends (exit code as for `upload --wait`).
    Watch { id: String },
    /// Cancel a queued or running import.
    Cancel { id: String },
    /// Delete an import's data: its files and error rows, then the import (the
    /// entities it wrote stay).
    Delete { id: String },
    /// The failed rows of an import: line, column, code, message.
    Errors {
        id: String,
        /// At most this many problems (0: all).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Download an import's error report (a CSV of the failed rows).
    Report {
        id: String,
        /// Where to save it (default: the report's own file name).
        #[arg(long = "out", short = 'o', value_name = "PATH")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Manual,
    Automatic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Xlsx,
    Ndjson,
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The file to import.
    pub file: PathBuf,
    /// Country (ISO 3166-1 alpha-2) for rows without `country_code`.
    #[arg(long, value_name = "CC")]
    pub country: Option<String>,
    /// manual (default) or automatic (runs enrichments).
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// A saved header mapping (`ferry mapping list`).
    #[arg(long, value_name = "ID")]
    pub mapping: Option<String>,
    /// The file's format (default: from its extension).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Status for rows without one.
    #[arg(long)]
    pub status: Option<String>,
    /// Nationality for rows without one.
    #[arg(long)]
    pub nationality: Option<String>,
    /// Mark the imported entities as clients (true) or not (false).
    #[arg(long, value_name = "BOOL")]
    pub is_client: Option<bool>,
    /// A JSON object merged under each row's attributes.
    #[arg(long, value_name = "JSON")]
    pub attributes: Option<String>,
    /// Risk matrix for persons.
    #[arg(long, value_name = "ID")]
    pub risk_matrix_person: Option<String>,
    /// Risk matrix for companies.
    #[arg(long, value_name = "ID")]
    pub risk_matrix_company: Option<String>,
    /// Do not run rules on the imported entities.
    #[arg(long)]
    pub skip_rules_execution: bool,
    /// All or nothing: the first failed row fails the import.
    #[arg(long)]
    pub stop_on_first_error: bool,
    /// Check the file and every row, write nothing.
    #[arg(long)]
    pub validate_only: bool,
    /// Enrichment depth 0 to 5 (automatic mode).
    #[arg(long)]
    pub depth: Option<i32>,
    /// E-mail the result to this address (repeat for more).
    #[arg(long = "report-email", value_name = "EMAIL")]
    pub report_emails: Vec<String>,
    /// Language of the e-mail: en (default), es or pt.
    #[arg(long)]
    pub locale: Option<String>,
    /// Idempotency key: the same key within 24 h returns the same import.
    #[arg(long)]
    pub request_id: Option<String>,
    /// Follow the job to its end; the exit code then says how it ended.
    #[arg(long)]
    pub wait: bool,
}

pub async fn run(session: &Session, command: ImportCommand) -> Result<Exit, ClientError> {
    let mut client = session.imports();
    match command {
        ImportCommand::Upload(args) => upload(session, args).await,
        ImportCommand::Get { id } => {
            let import = client
                .get_import(session.request(proto::GetImportRequest { id }))
                .await?;
            print(session, &import.into_inner());
            Ok(Exit::Ok)
        }
        ImportCommand::List(args) => list(session, args).await,
        ImportCommand::Watch { id } => {
            let stream = client
                .watch_import(session.request(proto::WatchImportRequest { id }))
                .await?;
            watch_to_end(session.output, "import", stream.into_inner(), |job| {
                print(session, job)
            })
            .await
        }
        ImportCommand::Cancel { id } => {
            let import = client
                .cancel_import(session.request(proto::CancelImportRequest { id }))
                .await?;
            print(session, &import.into_inner());
            Ok(Exit::Ok)
        }
        ImportCommand::Delete { id } => {
            client
                .delete_import(session.request(proto::DeleteImportRequest { id: id.clone() }))
                .await?;
            session.output.done("deleted", &id);
            Ok(Exit::Ok)
        }
        ImportCommand::Errors { id, limit } => errors(session, id, limit).await,
        ImportCommand::Report { id, out } => report(session, id, out).await,
    }
}

/// The import's fields a person reads, in order.
fn print(session: &Session, import: &proto::Import) {
    let rows = output::rows(import.progress.as_ref());
    let error = import
        .error
        .as_ref()
        .map(|status| status.message.clone())
        .unwrap_or_default();
    let notices: Vec<String> = import
        .notices
        .iter()
        .map(|n| format!("line {} {}: {} {}", n.line, n.column, n.code, n.message))
        .collect();
    session.output.one(
        import,
        vec![
            ("id", import.id.clone()),
            ("state", job_state(import.state).to_string()),
            ("file", import.file_name.clone()),
            ("rows", rows),
            ("created", import.created_items.to_string()),
            ("updated", import.updated_items.to_string()),
            ("unchanged", import.unchanged_items.to_string()),
            ("failed", import.failed_items.to_string()),
            (
                "error report",
                if import.has_error_report {
                    format!("ferry import report {}", import.id)
                } else {
                    String::new()
                },
            ),
            ("error", error),
            ("notices", notices.join("; ")),
            ("created at", time(&import.create_time)),
            ("ended at", time(&import.end_time)),
        ],
    );
}

fn options(args: &UploadArgs, file_name: String, size: u64) -> proto::ImportOptions {
    proto::ImportOptions {
        import_mode: match args.mode {
            None => proto::ImportMode::Unspecified,
            Some(Mode::Manual) => proto::ImportMode::Manual,
            Some(Mode::Automatic) => proto::ImportMode::Automatic,
        } as i32,
        format: match args.format {
            None => proto::ImportFormat::Unspecified,
            Some(Format::Csv) => proto::ImportFormat::Csv,
            Some(Format::Xlsx) => proto::ImportFormat::Xlsx,
            Some(Format::Ndjson) => proto::ImportFormat::Ndjson,
        } as i32,
        mapping_id: args.mapping.clone().unwrap_or_default(),
        country: args.country.clone().unwrap_or_default(),
        status: args.status.clone().unwrap_or_default(),
        nationality: args.nationality.clone().unwrap_or_default(),
        is_client: args.is_client,
        attributes: args.attributes.clone().unwrap_or_default(),
        risk_matrix_person_id: args.risk_matrix_person.clone().unwrap_or_default(),
        risk_matrix_company_id: args.risk_matrix_company.clone().unwrap_or_default(),
        skip_rules_execution: args.skip_rules_execution,
        stop_on_first_error: args.stop_on_first_error,
        validate_only: args.validate_only,
        depth: args.depth,
        report_recipient_emails: args.report_emails.clone(),
        email_locale: args.locale.clone().unwrap_or_default(),
        request_id: args.request_id.clone().unwrap_or_default(),
        file_name,
        // Declared so a stream that ends short is refused, not imported.
        size_bytes: i64::try_from(size).unwrap_or(i64::MAX),
        ..Default::default()
    }
}

async fn upload(session: &Session, args: UploadArgs) -> Result<Exit, ClientError> {
    let path = args.file.clone();
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(ClientError::io(format!("cannot open {}", path.display())))?;
    let size = file
        .metadata()
        .await
        .map_err(ClientError::io(format!("cannot read {}", path.display())))?
        .len();
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let first = proto::UploadImportRequest {
        payload: Some(proto::upload_import_request::Payload::Options(options(
            &args, file_name, size,
        ))),
    };
    let bar = progress::bytes("uploading", Some(size));
    // A read error ends the stream early; the server then refuses the short upload
    // (size declared) and the client reports the read error, the real cause.
    let read_error: Arc<Mutex<Option<std::io::Error>>> = Arc::default();
    let chunks = {
        let bar = bar.clone();
        let read_error = read_error.clone();
        tokio_util::io::ReaderStream::with_capacity(file, CHUNK_BYTES).scan((), move |_, chunk| {
            let item = match chunk {
                Ok(bytes) => {
                    bar.inc(bytes.len() as u64);
                    Some(proto::UploadImportRequest {
                        payload: Some(proto::upload_import_request::Payload::Chunk(bytes.to_vec())),
                    })
                }
                Err(err) => {
                    if let Ok(mut slot) = read_error.lock() {
                        *slot = Some(err);
                    }
                    None
                }
            };
            futures::future::ready(item)
        })
    };
    let stream = futures::stream::iter([first]).chain(chunks);
    let answer = session.imports().upload_import(session.request(stream)).await;
    bar.finish_and_clear();
    if let Some(err) = read_error.lock().ok().and_then(|mut slot| slot.take()) {
        return Err(ClientError::io(format!("cannot read {}", path.display()))(err));
    }
    let import = answer?.into_inner();
    if !args.wait {
        print(session, &import);
        return Ok(Exit::Ok);
    }
    if progress::visible() {
        eprintln!(
            "import {} queued; following it (Ctrl-C stops following, not the job)",
            import.id
        );
    }
    wait(session, import.id).await
}

/// Follows an import to its end, prints it and says how it ended.
async fn wait(session: &Session, id: String) -> Result<Exit, ClientError> {
    let stream = session
        .imports()
        .watch_import(session.request(proto::WatchImportRequest { id }))
        .await?;
    let last = follow(session.output, "importing", stream.into_inner(), false).await?;
    print(session, &last);
    Ok(last.exit())
}

async fn list(session: &Session, args: JobListArgs) -> Result<Exit, ClientError> {
    let states = states(&args.state)?;
    let imports = listing::collect(args.limit, |page_size, page_token| {
        let request = session.request(proto::ListImportsRequest {
            page_size,
            page_token,
            states: states.clone(),
            search: args.search.clone().unwrap_or_default(),
            ..Default::default()
        });
        async move {
            let page = session.imports().list_imports(request).await?.into_inner();
            Ok((page.imports, page.next_page_token))
        }
    })
    .await?;
    session.output.list(
        &imports,
        &[
            "ID",
            "STATE",
            "FILE",
            "ROWS",
            "CREATED",
            "UPDATED",
            "FAILED",
            "CREATED AT",
        ],
        |import| {
            vec![
                import.id.clone(),
                job_state(import.state).to_string(),
                import.file_name.clone(),
                import.total_items.to_string(),
                import.created_items.to_string(),
                import.updated_items.to_string(),
                import.failed_items.to_string(),
                time(&import.create_time),
            ]
        },
    );
    Ok(Exit::Ok)
}

async fn errors(session: &Session, import_id: String, limit: usize) -> Result<Exit, ClientError> {
    let problems = listing::collect(limit, |page_size, page_token| {
        let request = session.request(proto::ListImportErrorsRequest {
            import_id: import_id.clone(),
            page_size,
            page_token,
        });
        async move {
            let page = session.imports().list_import_errors(request).await?.into_inner();
            Ok((page.errors, page.next_page_token))
        }
    })
    .await?;
    session
        .output
        .list(&problems, &["LINE", "COLUMN", "CODE", "MESSAGE"], |problem| {
            vec![
                problem.line.to_string(),
                problem.column.clone(),
                problem.code.clone(),
                problem.message.clone(),
            ]
        });
    Ok(Exit::Ok)
}

async fn report(session: &Session, import_id: String, out: Option<PathBuf>) -> Result<Exit, ClientError> {
    let link = session
        .imports()
        .get_import_error_report(session.request(proto::GetImportErrorReportRequest { import_id }))
        .await?
        .into_inner();
    let dest = out.unwrap_or_else(|| PathBuf::from(&link.file_name));
    let expected = Expected {
        size: u64::try_from(link.size_bytes).ok().filter(|size| *size > 0),
        sha256: String::new(),
    };
    let saved = download::to_file(&session.tls, &link.url, &dest, &expected).await?;
    announce_saved(session, &saved.path, saved.size, link.row_count);
    Ok(Exit::Ok)
}

fn announce_saved(session: &Session, path: &Path, size: u64, rows: i64) {
    match session.output {
        super::output::Output::Json => println!(
            "{}",
            serde_json::json!({ "path": path.display().to_string(), "sizeBytes": size, "rowCount": rows })
        ),
        super::output::Output::Table => println!("saved {} ({size} bytes, {rows} rows)", path.display()),
    }
}
