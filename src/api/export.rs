//! ExportService: thin handlers over [`crate::export::Exports`] and the job
//! resource every kind shares ([`super::jobs::JobResource`]).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::stream::BoxStream;
use prost::Message;
use tonic::{Request, Response, Status};

use super::Call;
use super::convert::{self, opt_timestamp, timestamp};
use super::error::ApiError;
use super::jobs::{self as job_fields, JobResource, Render};
use crate::db::email_deliveries::{self, DeliveryRow};
use crate::export::format::{Compression, Format};
use crate::export::spec::{Delivery, ExportRequest, ExportSpec};
use crate::export::writer::avro::AvroCodec;
use crate::export::{Export, ExportError, Exports};
use crate::jobs::Job;
use crate::proto::{self, export_service_server::ExportService};

pub struct ExportApi {
    exports: Exports,
    jobs: JobResource<ExportView>,
}

impl ExportApi {
    pub fn new(exports: Exports) -> ExportApi {
        let jobs = JobResource::new(
            exports.queue().clone(),
            ExportView {
                exports: exports.clone(),
            },
        );
        ExportApi { exports, jobs }
    }

    /// Where refused calls are recorded.
    fn db(&self) -> &crate::db::Db {
        self.exports.queue().db()
    }
}

/// Exports as messages, with their recipients' delivery states read alongside.
pub struct ExportView {
    exports: Exports,
}

impl Render for ExportView {
    type Kind = Export;
    type Message = proto::Export;

    async fn render(&self, job: &Job<Export>) -> Result<proto::Export, ApiError> {
        let deliveries = match &job.spec.delivery {
            Some(_) => self.exports.deliveries(job.id()).await?,
            None => Vec::new(),
        };
        Ok(export_message(job, &deliveries))
    }
}

fn format_of(value: i32) -> Result<Option<Format>, ApiError> {
    Ok(match proto::ExportFormat::try_from(value) {
        Ok(proto::ExportFormat::Unspecified) => None,
        Ok(proto::ExportFormat::Csv) => Some(Format::Csv),
        Ok(proto::ExportFormat::Xlsx) => Some(Format::Xlsx),
        Ok(proto::ExportFormat::Json) => Some(Format::Json),
        Ok(proto::ExportFormat::Ndjson) => Some(Format::Ndjson),
        Ok(proto::ExportFormat::Parquet) => Some(Format::Parquet),
        Ok(proto::ExportFormat::Avro) => Some(Format::Avro),
        Err(_) => {
            return Err(ApiError::invalid(vec![(
                "format".into(),
                format!("unknown format {value}"),
            )]));
        }
    })
}

fn format_value(format: Format) -> proto::ExportFormat {
    match format {
        Format::Csv => proto::ExportFormat::Csv,
        Format::Xlsx => proto::ExportFormat::Xlsx,
        Format::Json => proto::ExportFormat::Json,
        Format::Ndjson => proto::ExportFormat::Ndjson,
        Format::Parquet => proto::ExportFormat::Parquet,
        Format::Avro => proto::ExportFormat::Avro,
    }
}

fn avro_codec_of(value: i32) -> Result<Option<AvroCodec>, ApiError> {
    Ok(match proto::AvroCodec::try_from(value) {
        Ok(proto::AvroCodec::Unspecified) => None,
        Ok(proto::AvroCodec::Deflate) => Some(AvroCodec::Deflate),
        Ok(proto::AvroCodec::Snappy) => Some(AvroCodec::Snappy),
        Ok(proto::AvroCodec::Zstd) => Some(AvroCodec::Zstd),
        Ok(proto::AvroCodec::Null) => Some(AvroCodec::Null),
        Err(_) => {
            return Err(ApiError::invalid(vec![(
                "avro_codec".into(),
                format!("unknown codec {value}"),
            )]));
        }
    })
}

fn avro_codec_value(spec: &ExportSpec) -> proto::AvroCodec {
    match (spec.format, spec.avro_codec.unwrap_or_default()) {
        (Format::Avro, AvroCodec::Deflate) => proto::AvroCodec::Deflate,
        (Format::Avro, AvroCodec::Snappy) => proto::AvroCodec::Snappy,
        (Format::Avro, AvroCodec::Zstd) => proto::AvroCodec::Zstd,
        (Format::Avro, AvroCodec::Null) => proto::AvroCodec::Null,
        _ => proto::AvroCodec::Unspecified,
    }
}

fn compression_of(value: i32) -> Result<Option<Compression>, ApiError> {
    Ok(match proto::Compression::try_from(value) {
        Ok(proto::Compression::Unspecified) => None,
        Ok(proto::Compression::None) => Some(Compression::None),
        Ok(proto::Compression::Gzip) => Some(Compression::Gzip),
        Err(_) => {
            return Err(ApiError::invalid(vec![(
                "compression".into(),
                format!("unknown compression {value}"),
            )]));
        }
    })
}

/// Checks a CreateExportRequest into a spec.
pub fn spec_of(req: &proto::CreateExportRequest) -> Result<ExportSpec, ApiError> {
    let filter = convert::entity_filter(req.filter.as_ref(), "filter")?;
    let delivery = req.delivery.as_ref().map(|d| Delivery {
        recipient_emails: d.recipient_emails.clone(),
        email_locale: d.email_locale.clone(),
        from_email: d.from_email.clone(),
        from_sender_id: d.from_sender_id.clone(),
        from_mailbox: String::new(),
    });
    let request = ExportRequest {
        filter,
        filter_message: STANDARD.encode(req.filter.clone().unwrap_or_default().encode_to_vec()),
        columns: req.columns.clone(),
        expand_array: req.expand_array.clone(),
        format: format_of(req.format)?,
        compression: compression_of(req.compression)?,
        csv_bom: req.csv_bom,
        neutralize_formulas: req.neutralize_formulas,
        delivery,
        avro_codec: avro_codec_of(req.avro_codec)?,
    };
    ExportSpec::from_request(request).map_err(|v| ExportError::Invalid(v).into())
}

fn delivery_state(state: &str) -> proto::DeliveryState {
    match state {
        email_deliveries::SENT => proto::DeliveryState::Sent,
        email_deliveries::FAILED => proto::DeliveryState::Failed,
        _ => proto::DeliveryState::Pending,
    }
}

/// The `Export` message of a job, with its recipients' delivery states.
pub fn export_message(export: &Job<Export>, deliveries: &[DeliveryRow]) -> proto::Export {
    let (job, spec, result) = (&*export.row, Some(&export.spec), &export.output);
    let filter = spec
        .as_ref()
        .and_then(|s| STANDARD.decode(&s.filter_message).ok())
        .and_then(|bytes| proto::EntityFilter::decode(bytes.as_slice()).ok());
    let (file_name, file_size, sha256, row_count) = match &result {
        Some(r) => (
            r.file_name.clone(),
            r.size as i64,
            r.sha256.clone(),
            r.row_count as i64,
        ),
        None => (job.search_text.clone(), 0, String::new(), 0),
    };
    proto::Export {
        id: job.id.clone(),
        organization_id: job.organization_id.clone(),
        state: job_fields::state(job.state) as i32,
        progress: Some(job_fields::progress(job)),
        filter,
        columns: spec
            .as_ref()
            .map(|s| s.columns.iter().map(|c| c.key()).collect())
            .unwrap_or_default(),
        expand_array: spec
            .as_ref()
            .and_then(|s| s.expand_array.and_then(|i| s.columns.get(i)).map(|c| c.key()))
            .unwrap_or_default(),
        format: spec
            .as_ref()
            .map(|s| format_value(s.format) as i32)
            .unwrap_or_default(),
        compression: spec
            .as_ref()
            .map(|s| match s.compression {
                Compression::None => proto::Compression::None as i32,
                Compression::Gzip => proto::Compression::Gzip as i32,
            })
            .unwrap_or_default(),
        delivery: spec
            .as_ref()
            .and_then(|s| s.delivery.as_ref())
            .map(|d| proto::EmailDelivery {
                recipient_emails: d.recipient_emails.clone(),
                email_locale: d.email_locale.clone(),
                from_email: d.from_email.clone(),
                from_sender_id: d.from_sender_id.clone(),
            }),
        recipients: spec
            .as_ref()
            .and_then(|s| s.delivery.as_ref())
            .map(|d| {
                d.recipient_emails
                    .iter()
                    .map(|email| {
                        let row = deliveries.iter().find(|r| r.recipient == *email);
                        proto::RecipientDelivery {
                            email: email.clone(),
                            state: row.map_or(proto::DeliveryState::Pending, |r| delivery_state(&r.state))
                                as i32,
                            message_id: row.and_then(|r| r.message_id.clone()).unwrap_or_default(),
                            error: row.and_then(|r| r.error.clone()).unwrap_or_default(),
                            send_time: row.and_then(|r| r.sent_at).map(timestamp),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default(),
        file_name,
        file_size,
        sha256,
        row_count,
        create_time: Some(timestamp(job.created_at)),
        start_time: opt_timestamp(job.started_at),
        end_time: opt_timestamp(job.finished_at),
        update_time: Some(timestamp(job.updated_at)),
        expire_time: opt_timestamp(job.expires_at),
        attempt_count: job.attempts,
        error: job_fields::failure(job),
        request_id: job.request_id.clone().unwrap_or_default(),
        csv_bom: spec.as_ref().is_some_and(|s| s.csv_bom),
        neutralize_formulas: spec.as_ref().is_some_and(|s| s.neutralize_formulas),
        avro_codec: spec.as_ref().map_or(0, |s| avro_codec_value(s) as i32),
        creator: job.created_by.clone().unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl ExportService for ExportApi {
    type WatchExportStream = BoxStream<'static, Result<proto::Export, Status>>;

    async fn create_export(
        &self,
        request: Request<proto::CreateExportRequest>,
    ) -> Result<Response<proto::Export>, Status> {
        Call::serve_audited(
            request,
            self.db(),
            |_| String::new(),
            |call, req| async move {
                let spec = spec_of(&req)?;
                let request_id = Some(req.request_id.trim().to_string()).filter(|r| !r.is_empty());
                let job = self
                    .exports
                    .create(&call.principal.organization, spec, request_id, Some(call.actor()))
                    .await?;
                self.jobs.render(&job).await
            },
        )
        .await
    }

    async fn get_export(
        &self,
        request: Request<proto::GetExportRequest>,
    ) -> Result<Response<proto::Export>, Status> {
        self.jobs.get(request).await
    }

    async fn list_exports(
        &self,
        request: Request<proto::ListExportsRequest>,
    ) -> Result<Response<proto::ListExportsResponse>, Status> {
        Call::serve(request, |call, req| async move {
            let page = self.jobs.list(&call, (&req).into()).await?;
            Ok(proto::ListExportsResponse {
                exports: page.messages,
                next_page_token: page.next_page_token,
                total_size: page.total_size,
            })
        })
        .await
    }

    async fn watch_export(
        &self,
        request: Request<proto::WatchExportRequest>,
    ) -> Result<Response<Self::WatchExportStream>, Status> {
        self.jobs.watch(request).await
    }

    async fn cancel_export(
        &self,
        request: Request<proto::CancelExportRequest>,
    ) -> Result<Response<proto::Export>, Status> {
        self.jobs.cancel(request).await
    }

    async fn delete_export(
        &self,
        request: Request<proto::DeleteExportRequest>,
    ) -> Result<Response<()>, Status> {
        Call::serve_audited(
            request,
            self.db(),
            |r| r.id.trim().to_string(),
            |call, req| async move {
                Ok(self
                    .exports
                    .delete(call.org(), req.id.trim(), &call.actor())
                    .await?)
            },
        )
        .await
    }

    async fn get_export_download(
        &self,
        request: Request<proto::GetExportDownloadRequest>,
    ) -> Result<Response<proto::ExportDownload>, Status> {
        Call::serve_audited(
            request,
            self.db(),
            |r| r.id.trim().to_string(),
            |call, req| async move {
                let link = self
                    .exports
                    .download(call.org(), req.id.trim(), &call.actor())
                    .await?;
                Ok(proto::ExportDownload {
                    url: link.url,
                    expire_time: Some(timestamp(link.expires_at)),
                    file_name: link.result.file_name,
                    content_type: link.result.content_type,
                    size_bytes: link.result.size as i64,
                    sha256: link.result.sha256,
                    row_count: link.result.row_count as i64,
                })
            },
        )
        .await
    }
}
