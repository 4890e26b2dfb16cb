//! ExportService: thin handlers over [`crate::export::Exports`].

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use futures::stream::BoxStream;
use prost::Message;
use tonic::{Request, Response, Status};

use super::Call;
use super::convert::{self, opt_timestamp, timestamp};
use super::jobs::{self as job_fields, list_query, next_page};
use crate::db::email_deliveries::{self, DeliveryRow};
use crate::db::jobs::JobRow;
use crate::export::format::{Compression, Format};
use crate::export::service::result_of;
use crate::export::spec::{Delivery, ExportRequest, ExportSpec};
use crate::export::{ExportError, Exports};
use crate::proto::{self, export_service_server::ExportService};

pub struct ExportApi {
    exports: Exports,
    watched: super::jobs::WatchMessages<proto::Export>,
}

impl ExportApi {
    pub fn new(exports: Exports) -> ExportApi {
        ExportApi {
            exports,
            watched: Default::default(),
        }
    }
}

/// The message of a job with its delivery states read alongside.
async fn message_of(exports: &Exports, job: &JobRow) -> Result<proto::Export, ExportError> {
    let spec: Option<ExportSpec> = serde_json::from_str(&job.payload).ok();
    let deliveries = match spec.as_ref().and_then(|s| s.delivery.as_ref()) {
        Some(_) => exports.deliveries(&job.id).await?,
        None => Vec::new(),
    };
    Ok(export_message(job, spec.as_ref(), &deliveries))
}

fn format_of(value: i32) -> Result<Option<Format>, ExportError> {
    Ok(match proto::ExportFormat::try_from(value) {
        Ok(proto::ExportFormat::Unspecified) => None,
        Ok(proto::ExportFormat::Csv) => Some(Format::Csv),
        Ok(proto::ExportFormat::Xlsx) => Some(Format::Xlsx),
        Ok(proto::ExportFormat::Json) => Some(Format::Json),
        Ok(proto::ExportFormat::Ndjson) => Some(Format::Ndjson),
        Ok(proto::ExportFormat::Parquet) => Some(Format::Parquet),
        Ok(proto::ExportFormat::Avro) => Some(Format::Avro),
        Err(_) => {
            return Err(ExportError::Invalid(vec![(
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

fn compression_of(value: i32) -> Result<Option<Compression>, ExportError> {
    Ok(match proto::Compression::try_from(value) {
        Ok(proto::Compression::Unspecified) => None,
        Ok(proto::Compression::None) => Some(Compression::None),
        Ok(proto::Compression::Gzip) => Some(Compression::Gzip),
        Err(_) => {
            return Err(ExportError::Invalid(vec![(
                "compression".into(),
                format!("unknown compression {value}"),
            )]));
        }
    })
}

/// Checks a CreateExportRequest into a spec.
pub fn spec_of(req: &proto::CreateExportRequest) -> Result<ExportSpec, super::error::ApiError> {
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
pub fn export_message(job: &JobRow, spec: Option<&ExportSpec>, deliveries: &[DeliveryRow]) -> proto::Export {
    let result = result_of(job);
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
        state: job_fields::state(&job.state) as i32,
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
    }
}

#[tonic::async_trait]
impl ExportService for ExportApi {
    type WatchExportStream = BoxStream<'static, Result<proto::Export, Status>>;

    async fn create_export(
        &self,
        request: Request<proto::CreateExportRequest>,
    ) -> Result<Response<proto::Export>, Status> {
        let call = Call::of(&request)?;
        let req = request.into_inner();
        let spec = spec_of(&req).map_err(|e| call.fail(e))?;
        let request_id = Some(req.request_id.trim().to_string()).filter(|r| !r.is_empty());
        let job = self
            .exports
            .create(&call.principal.organization, spec, request_id)
            .await
            .map_err(|e| call.fail(e))?;
        let message = message_of(&self.exports, &job).await.map_err(|e| call.fail(e))?;
        Ok(Response::new(message))
    }

    async fn get_export(
        &self,
        request: Request<proto::GetExportRequest>,
    ) -> Result<Response<proto::Export>, Status> {
        let call = Call::of(&request)?;
        let job = self
            .exports
            .get(call.org(), request.get_ref().id.trim())
            .await
            .map_err(|e| call.fail(e))?;
        let message = message_of(&self.exports, &job).await.map_err(|e| call.fail(e))?;
        Ok(Response::new(message))
    }

    async fn list_exports(
        &self,
        request: Request<proto::ListExportsRequest>,
    ) -> Result<Response<proto::ListExportsResponse>, Status> {
        let call = Call::of(&request)?;
        let req = request.into_inner();
        let query = list_query(
            req.page_size,
            &req.page_token,
            &req.order_by,
            &req.states,
            req.created_after.as_ref(),
            req.created_before.as_ref(),
            &req.search,
        )
        .map_err(|e| call.fail(e))?;
        let (mut rows, total) = self
            .exports
            .list(call.org(), &query.page)
            .await
            .map_err(|e| call.fail(e))?;
        let next_page_token = next_page(&mut rows, &query);
        let mut exports = Vec::with_capacity(rows.len());
        for job in &rows {
            exports.push(message_of(&self.exports, job).await.map_err(|e| call.fail(e))?);
        }
        Ok(Response::new(proto::ListExportsResponse {
            exports,
            next_page_token,
            total_size: i32::try_from(total).unwrap_or(i32::MAX),
        }))
    }

    async fn watch_export(
        &self,
        request: Request<proto::WatchExportRequest>,
    ) -> Result<Response<Self::WatchExportStream>, Status> {
        let call = Call::of(&request)?;
        let stream = self
            .exports
            .watch(call.org(), request.get_ref().id.trim())
            .await
            .map_err(|e| call.fail(e))?;
        let request_id = call.request_id.clone();
        let (exports, watched) = (self.exports.clone(), self.watched.clone());
        let stream = stream.then(move |item| {
            let (exports, watched, request_id) = (exports.clone(), watched.clone(), request_id.clone());
            async move {
                let message = match item {
                    Ok(job) => watched.get(&job, || message_of(&exports, &job)).await,
                    Err(err) => Err(err),
                };
                message.map_err(|err| super::error::ApiError::from(err).into_status(&request_id))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel_export(
        &self,
        request: Request<proto::CancelExportRequest>,
    ) -> Result<Response<proto::Export>, Status> {
        let call = Call::of(&request)?;
        let job = self
            .exports
            .cancel(call.org(), request.get_ref().id.trim())
            .await
            .map_err(|e| call.fail(e))?;
        let message = message_of(&self.exports, &job).await.map_err(|e| call.fail(e))?;
        Ok(Response::new(message))
    }

    async fn delete_export(
        &self,
        request: Request<proto::DeleteExportRequest>,
    ) -> Result<Response<()>, Status> {
        let call = Call::of(&request)?;
        self.exports
            .delete(call.org(), request.get_ref().id.trim())
            .await
            .map_err(|e| call.fail(e))?;
        Ok(Response::new(()))
    }

    async fn get_export_download(
        &self,
        request: Request<proto::GetExportDownloadRequest>,
    ) -> Result<Response<proto::ExportDownload>, Status> {
        let call = Call::of(&request)?;
        let link = self
            .exports
            .download(call.org(), request.get_ref().id.trim())
            .await
            .map_err(|e| call.fail(e))?;
        Ok(Response::new(proto::ExportDownload {
            url: link.url,
            expire_time: Some(timestamp(link.expires_at)),
            file_name: link.result.file_name,
            content_type: link.result.content_type,
            size_bytes: link.result.size as i64,
            sha256: link.result.sha256,
            row_count: link.result.row_count as i64,
        }))
    }
}
