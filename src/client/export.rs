//! `ferry export …`: create an export, follow it, download and check its file.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::download::{self, Expected};
use super::filter::FilterArgs;
use super::listing::{self, JobListArgs, states};
use super::output::{self, Output, job_state, short, time};
use super::session::Session;
use super::watch::{JobMessage, follow, watch_to_end};
use super::{ClientError, Exit, progress};
use crate::proto;

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Start an export of the entities the filter flags select.
    Create(CreateArgs),
    /// One export.
    Get { id: String },
    /// The organization's exports, newest first.
    List(JobListArgs),
    /// Follow an export until it ends (exit code as for `create --wait`).
    Watch { id: String },
    /// Cancel a queued or running export.
    Cancel { id: String },
    /// Delete an export and its file.
    Delete { id: String },
    /// Download a completed export's file, checking its size and SHA-256.
    Download {
        id: String,
        /// Where to save it (default: the export's own file name).
        #[arg(long = "out", short = 'o', value_name = "PATH")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Xlsx,
    Json,
    Ndjson,
    Parquet,
    Avro,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    None,
    Gzip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AvroCodec {
    Deflate,
    Snappy,
    Zstd,
    Null,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// File format.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    pub format: Format,
    /// Compress the file (csv, json, ndjson).
    #[arg(long, value_enum)]
    pub compression: Option<Compression>,
    /// Avro block codec (default deflate).
    #[arg(long, value_enum)]
    pub avro_codec: Option<AvroCodec>,
    /// Columns to write, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', value_name = "COLUMNS")]
    pub columns: Vec<String>,
    /// One row per element of this array column.
    #[arg(long, value_name = "COLUMN")]
    pub expand_array: Option<String>,
    /// Write a byte-order mark first (CSV for Excel).
    #[arg(long)]
    pub csv_bom: bool,
    /// Prefix cells that a spreadsheet would run as formulas (default: on for csv/xlsx).
    #[arg(long, value_name = "BOOL")]
    pub neutralize_formulas: Option<bool>,
    /// E-mail the download link to this address (repeat for more).
    #[arg(long = "email", value_name = "EMAIL")]
    pub emails: Vec<String>,
    /// Language of the e-mail: en (default), es or pt.
    #[arg(long)]
    pub locale: Option<String>,
    /// Sender address of the e-mail (a verified sender of the organization).
    #[arg(long, value_name = "EMAIL")]
    pub from_email: Option<String>,
    /// Idempotency key: the same key within 24 h returns the same export.
    #[arg(long)]
    pub request_id: Option<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Follow the job to its end; the exit code then says how it ended.
    #[arg(long)]
    pub wait: bool,
    /// Once completed, download the file here (implies --wait).
    #[arg(long, value_name = "PATH")]
    pub download: Option<PathBuf>,
}

pub async fn run(session: &Session, command: ExportCommand) -> Result<Exit, ClientError> {
    let mut client = session.exports();
    match command {
        ExportCommand::Create(args) => create(session, args).await,
        ExportCommand::Get { id } => {
            let export = client
                .get_export(session.request(proto::GetExportRequest { id }))
                .await?;
            print(session, &export.into_inner());
            Ok(Exit::Ok)
        }
        ExportCommand::List(args) => list(session, args).await,
        ExportCommand::Watch { id } => {
            let stream = client
                .watch_export(session.request(proto::WatchExportRequest { id }))
                .await?;
            watch_to_end(session.output, "export", stream.into_inner(), |job| {
                print(session, job)
            })
            .await
        }
        ExportCommand::Cancel { id } => {
            let export = client
                .cancel_export(session.request(proto::CancelExportRequest { id }))
                .await?;
            print(session, &export.into_inner());
            Ok(Exit::Ok)
        }
        ExportCommand::Delete { id } => {
            client
                .delete_export(session.request(proto::DeleteExportRequest { id: id.clone() }))
                .await?;
            session.output.done("deleted", &id);
            Ok(Exit::Ok)
        }
        ExportCommand::Download { id, out } => download(session, id, out).await,
    }
}

fn print(session: &Session, export: &proto::Export) {
    let rows = output::rows(export.progress.as_ref());
    let format = proto::ExportFormat::try_from(export.format)
        .map(|format| short(format.as_str_name(), "EXPORT_FORMAT_"))
        .unwrap_or("");
    let recipients: Vec<String> = export
        .recipients
        .iter()
        .map(|r| {
            let state = proto::DeliveryState::try_from(r.state)
                .map(|state| short(state.as_str_name(), "DELIVERY_STATE_"))
                .unwrap_or("");
            format!("{} {state}", r.email)
        })
        .collect();
    session.output.one(
        export,
        vec![
            ("id", export.id.clone()),
            ("state", job_state(export.state).to_string()),
            ("format", format.to_string()),
            ("rows", rows),
            ("file", export.file_name.clone()),
            (
                "size",
                if export.file_size > 0 {
                    format!("{} bytes", export.file_size)
                } else {
                    String::new()
                },
            ),
            ("sha256", export.sha256.clone()),
            ("recipients", recipients.join(", ")),
            (
                "error",
                export
                    .error
                    .as_ref()
                    .map(|s| s.message.clone())
                    .unwrap_or_default(),
            ),
            ("created at", time(&export.create_time)),
            ("ended at", time(&export.end_time)),
            ("expires at", time(&export.expire_time)),
        ],
    );
}

fn request(args: &CreateArgs) -> Result<proto::CreateExportRequest, ClientError> {
    let delivery = (!args.emails.is_empty()).then(|| proto::EmailDelivery {
        recipient_emails: args.emails.clone(),
        email_locale: args.locale.clone().unwrap_or_default(),
        from_email: args.from_email.clone().unwrap_or_default(),
        from_sender_id: String::new(),
    });
    Ok(proto::CreateExportRequest {
        filter: Some(args.filter.to_proto()?),
        columns: args
            .columns
            .iter()
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect(),
        expand_array: args.expand_array.clone().unwrap_or_default(),
        format: match args.format {
            Format::Csv => proto::ExportFormat::Csv,
            Format::Xlsx => proto::ExportFormat::Xlsx,
            Format::Json => proto::ExportFormat::Json,
            Format::Ndjson => proto::ExportFormat::Ndjson,
            Format::Parquet => proto::ExportFormat::Parquet,
            Format::Avro => proto::ExportFormat::Avro,
        } as i32,
        compression: match args.compression {
            None => proto::Compression::Unspecified,
            Some(Compression::None) => proto::Compression::None,
            Some(Compression::Gzip) => proto::Compression::Gzip,
        } as i32,
        avro_codec: match args.avro_codec {
            None => proto::AvroCodec::Unspecified,
            Some(AvroCodec::Deflate) => proto::AvroCodec::Deflate,
            Some(AvroCodec::Snappy) => proto::AvroCodec::Snappy,
            Some(AvroCodec::Zstd) => proto::AvroCodec::Zstd,
            Some(AvroCodec::Null) => proto::AvroCodec::Null,
        } as i32,
        delivery,
        request_id: args.request_id.clone().unwrap_or_default(),
        csv_bom: args.csv_bom,
        neutralize_formulas: args.neutralize_formulas,
    })
}

async fn create(session: &Session, args: CreateArgs) -> Result<Exit, ClientError> {
    let export = session
        .exports()
        .create_export(session.request(request(&args)?))
        .await?
        .into_inner();
    if !args.wait && args.download.is_none() {
        print(session, &export);
        return Ok(Exit::Ok);
    }
    if progress::visible() {
        eprintln!(
            "export {} queued; following it (Ctrl-C stops following, not the job)",
            export.id
        );
    }
    let stream = session
        .exports()
        .watch_export(session.request(proto::WatchExportRequest { id: export.id }))
        .await?;
    let last = follow(session.output, "exporting", stream.into_inner(), false).await?;
    print(session, &last);
    match (last.exit(), args.download) {
        (Exit::Ok, Some(dest)) => download(session, last.id, Some(dest)).await,
        (exit, _) => Ok(exit),
    }
}

async fn download(session: &Session, id: String, out: Option<PathBuf>) -> Result<Exit, ClientError> {
    let link = session
        .exports()
        .get_export_download(session.request(proto::GetExportDownloadRequest { id }))
        .await?
        .into_inner();
    let dest = out.unwrap_or_else(|| PathBuf::from(&link.file_name));
    let expected = Expected {
        size: u64::try_from(link.size_bytes).ok(),
        sha256: link.sha256.clone(),
    };
    let saved = download::to_file(&session.tls, &link.url, &dest, &expected).await?;
    match session.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "path": saved.path.display().to_string(),
                "sizeBytes": saved.size,
                "sha256": saved.sha256,
                "rowCount": link.row_count,
            })
        ),
        Output::Table => println!(
            "saved {} ({} bytes, {} rows, sha256 {} verified)",
            saved.path.display(),
            saved.size,
            link.row_count,
            saved.sha256
        ),
    }
    Ok(Exit::Ok)
}

async fn list(session: &Session, args: JobListArgs) -> Result<Exit, ClientError> {
    let states = states(&args.state)?;
    let exports = listing::collect(args.limit, |page_size, page_token| {
        let request = session.request(proto::ListExportsRequest {
            page_size,
            page_token,
            states: states.clone(),
            search: args.search.clone().unwrap_or_default(),
            ..Default::default()
        });
        async move {
            let page = session.exports().list_exports(request).await?.into_inner();
            Ok((page.exports, page.next_page_token))
        }
    })
    .await?;
    session.output.list(
        &exports,
        &["ID", "STATE", "FORMAT", "ROWS", "SIZE", "CREATED AT"],
        |export| {
            vec![
                export.id.clone(),
                job_state(export.state).to_string(),
                proto::ExportFormat::try_from(export.format)
                    .map(|format| short(format.as_str_name(), "EXPORT_FORMAT_"))
                    .unwrap_or("")
                    .to_string(),
                export.row_count.to_string(),
                export.file_size.to_string(),
                time(&export.create_time),
            ]
        },
    );
    Ok(Exit::Ok)
}
