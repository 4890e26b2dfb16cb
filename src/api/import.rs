//! ImportService: thin handlers over [`crate::import::service::Imports`].

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use futures::stream::BoxStream;
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::Call;
use super::convert::{opt_timestamp, timestamp};
use super::error::ApiError;
use super::jobs::{self as job_fields, JobResource, Render};
use super::page;
use crate::import::plan::{ChildPolicy, Selection};
use crate::import::row::Mode;
use crate::import::service::{ImportError, Imports};
use crate::import::spec::{Import, ImportRequest};
use crate::import::table::Format;
use crate::jobs::Job;
use crate::proto::{self, import_service_server::ImportService};

pub struct ImportApi {
    imports: Imports,
    jobs: JobResource<ImportView>,
}

impl ImportApi {
    pub fn new(imports: Imports) -> ImportApi {
        let jobs = JobResource::new(imports.queue().clone(), ImportView);
        ImportApi { imports, jobs }
    }

    /// Where refused calls are recorded.
    fn db(&self) -> &crate::db::Db {
        self.imports.queue().db()
    }
}

/// Imports as messages.
pub struct ImportView;

impl Render for ImportView {
    type Kind = Import;
    type Message = proto::Import;

    async fn render(&self, job: &Job<Import>) -> Result<proto::Import, ApiError> {
        Ok(import_message(job))
    }
}

fn mode_of(value: i32) -> Result<Option<Mode>, ApiError> {
    match proto::ImportMode::try_from(value) {
        Ok(proto::ImportMode::Unspecified) => Ok(None),
        Ok(proto::ImportMode::Manual) => Ok(Some(Mode::Manual)),
        Ok(proto::ImportMode::Automatic) => Ok(Some(Mode::Automatic)),
        Err(_) => Err(ApiError::invalid(vec![(
            "options.import_mode".into(),
            format!("unknown import mode {value}"),
        )])),
    }
}

fn policy_of(value: i32) -> Result<Option<ChildPolicy>, ApiError> {
    match proto::ChildEnrichmentPolicy::try_from(value) {
        Ok(proto::ChildEnrichmentPolicy::Unspecified) => Ok(None),
        Ok(proto::ChildEnrichmentPolicy::AllActive) => Ok(Some(ChildPolicy::AllActive)),
        Ok(proto::ChildEnrichmentPolicy::ByRootType) => Ok(Some(ChildPolicy::ByRootType)),
        Ok(proto::ChildEnrichmentPolicy::BasicOnly) => Ok(Some(ChildPolicy::BasicOnly)),
        Err(_) => Err(ApiError::invalid(vec![(
            "options.child_enrichment_policy".into(),
            format!("unknown policy {value}"),
        )])),
    }
}

fn selection_of(selection: Option<&proto::EnrichmentSelection>) -> Option<Selection> {
    selection.map(|s| Selection {
        execute_all: s.execute_all_active_enrichments,
        enrichments: s.enrichments.clone(),
        group_refs: s.enrichment_group_refs.clone(),
        exclude: s.exclude_enrichments.clone(),
    })
}

/// The options message as the domain's request.
pub fn request_of(options: &proto::ImportOptions) -> Result<ImportRequest, ApiError> {
    Ok(ImportRequest {
        mode: mode_of(options.import_mode)?,
        mapping_id: options.mapping_id.clone(),
        country: options.country.clone(),
        risk_matrix_person_id: options.risk_matrix_person_id.clone(),
        risk_matrix_company_id: options.risk_matrix_company_id.clone(),
        skip_rules_execution: options.skip_rules_execution,
        stop_on_first_error: options.stop_on_first_error,
        selection: selection_of(options.auto_execute_integrations.as_ref()),
        shareholders: selection_of(options.auto_execute_integrations_shareholders.as_ref()),
        child_policy: policy_of(options.child_enrichment_policy)?,
        monitoring: options.monitoring.clone(),
        monitoring_apply_to_relationships: options.monitoring_apply_to_relationships,
        depth: options.depth,
        is_client: options.is_client,
        status: options.status.clone(),
        nationality: options.nationality.clone(),
        attributes: options.attributes.clone(),
        report_recipient_emails: options.report_recipient_emails.clone(),
        email_locale: options.email_locale.clone(),
        file_name: options.file_name.clone(),
        size_bytes: options.size_bytes,
        options_message: STANDARD.encode(options.encode_to_vec()),
        format: format_of(options.format)?,
        validate_only: options.validate_only,
        fixes_import_id: options.fixes_import_id.trim().to_string(),
    })
}

fn format_of(value: i32) -> Result<Option<Format>, ApiError> {
    match proto::ImportFormat::try_from(value) {
        Ok(proto::ImportFormat::Unspecified) => Ok(None),
        Ok(proto::ImportFormat::Csv) => Ok(Some(Format::Csv)),
        Ok(proto::ImportFormat::Xlsx) => Ok(Some(Format::Xlsx)),
        Ok(proto::ImportFormat::Ndjson) => Ok(Some(Format::Ndjson)),
        Err(_) => Err(ApiError::invalid(vec![(
            "options.format".into(),
            format!("unknown format {value}"),
        )])),
    }
}

/// The `Import` message of a job: canonical mode, counters, options as sent.
pub fn import_message(import: &Job<Import>) -> proto::Import {
    let (job, spec) = (&*import.row, Some(&import.spec));
    let counters = import.output.clone().unwrap_or_default();
    let mut options = spec
        .as_ref()
        .and_then(|s| STANDARD.decode(&s.options_message).ok())
        .and_then(|bytes| proto::ImportOptions::decode(bytes.as_slice()).ok());
    let mode = match spec.as_ref().map(|s| s.mode) {
        Some(Mode::Automatic) => proto::ImportMode::Automatic,
        _ => proto::ImportMode::Manual,
    };
    if let Some(options) = options.as_mut() {
        options.import_mode = mode as i32;
    }
    proto::Import {
        id: job.id.clone(),
        organization_id: job.organization_id.clone(),
        state: job_fields::state(job.state) as i32,
        progress: Some(job_fields::progress(job)),
        import_mode: mode as i32,
        file_name: spec.as_ref().map(|s| s.file_name.clone()).unwrap_or_default(),
        total_items: job.rows_total.unwrap_or_default(),
        processed_items: job.rows_done,
        created_items: counters.created,
        updated_items: counters.updated,
        failed_items: counters.failed,
        options,
        create_time: Some(timestamp(job.created_at)),
        start_time: opt_timestamp(job.started_at),
        end_time: opt_timestamp(job.finished_at),
        update_time: Some(timestamp(job.updated_at)),
        attempt_count: job.attempts,
        error: job_fields::failure(job),
        request_id: job.request_id.clone().unwrap_or_default(),
        creator: job.created_by.clone().unwrap_or_default(),
        has_error_report: counters.report_key.is_some(),
        unchanged_items: counters.unchanged,
        notices: import
            .spec
            .notices
            .iter()
            .map(|n| proto::ImportError {
                line: n.line as i64,
                column: n.column.clone(),
                code: n.code.clone(),
                message: n.message.clone(),
                raw_value: String::new(),
            })
            .collect(),
    }
}

/// The chunks after the options message; a second options message is refused.
fn chunks(stream: Streaming<proto::UploadImportRequest>) -> BoxStream<'static, Result<Vec<u8>, ImportError>> {
    Box::pin(stream.map(|message| match message {
        Ok(proto::UploadImportRequest {
            payload: Some(proto::upload_import_request::Payload::Chunk(bytes)),
        }) => Ok(bytes),
        Ok(proto::UploadImportRequest { payload: None }) => Ok(Vec::new()),
        Ok(_) => Err(ImportError::Invalid(vec![(
            "options".into(),
            "only the first message may carry options".into(),
        )])),
        Err(status) => Err(match super::error::oversized_limit(&status) {
            Some(limit_bytes) => ImportError::MessageTooLarge { limit_bytes },
            None => ImportError::Interrupted(status.message().to_string()),
        }),
    }))
}

#[tonic::async_trait]
impl ImportService for ImportApi {
    type WatchImportStream = BoxStream<'static, Result<proto::Import, Status>>;

    async fn upload_import(
        &self,
        request: Request<Streaming<proto::UploadImportRequest>>,
    ) -> Result<Response<proto::Import>, Status> {
        Call::serve_audited(
            request,
            self.db(),
            |_| String::new(),
            |call, mut stream| async move {
                let first = stream.message().await.map_err(|status| {
                    match super::error::oversized_limit(&status) {
                        Some(limit) => super::error::message_too_large(&limit),
                        None => ImportError::Interrupted(status.message().to_string()).into(),
                    }
                })?;
                let Some(proto::UploadImportRequest {
                    payload: Some(proto::upload_import_request::Payload::Options(options)),
                }) = first
                else {
                    return Err(ApiError::invalid(vec![(
                        "options".into(),
                        "the first message must carry the import options".into(),
                    )]));
                };
                let req = request_of(&options)?;
                let request_id = Some(options.request_id.trim().to_string()).filter(|r| !r.is_empty());
                let job = self
                    .imports
                    .upload(
                        &call.principal.organization,
                        req,
                        request_id,
                        chunks(stream),
                        Some(call.actor()),
                    )
                    .await?;
                Ok(import_message(&job))
            },
        )
        .await
    }

    async fn get_import(
        &self,
        request: Request<proto::GetImportRequest>,
    ) -> Result<Response<proto::Import>, Status> {
        self.jobs.get(request).await
    }

    async fn list_imports(
        &self,
        request: Request<proto::ListImportsRequest>,
    ) -> Result<Response<proto::ListImportsResponse>, Status> {
        Call::serve(request, |call, req| async move {
            let page = self.jobs.list(&call, (&req).into()).await?;
            Ok(proto::ListImportsResponse {
                imports: page.messages,
                next_page_token: page.next_page_token,
                total_size: page.total_size,
            })
        })
        .await
    }

    async fn watch_import(
        &self,
        request: Request<proto::WatchImportRequest>,
    ) -> Result<Response<Self::WatchImportStream>, Status> {
        self.jobs.watch(request).await
    }

    async fn cancel_import(
        &self,
        request: Request<proto::CancelImportRequest>,
    ) -> Result<Response<proto::Import>, Status> {
        self.jobs.cancel(request).await
    }

    async fn list_import_errors(
        &self,
        request: Request<proto::ListImportErrorsRequest>,
    ) -> Result<Response<proto::ListImportErrorsResponse>, Status> {
        Call::serve(request, |call, req| async move { self.errors(&call, req).await }).await
    }

    async fn delete_import(
        &self,
        request: Request<proto::DeleteImportRequest>,
    ) -> Result<Response<()>, Status> {
        Call::serve_audited(
            request,
            self.db(),
            |r| r.id.trim().to_string(),
            |call, req| async move {
                Ok(self
                    .imports
                    .delete(call.org(), req.id.trim(), &call.actor())
                    .await?)
            },
        )
        .await
    }

    async fn get_import_error_report(
        &self,
        request: Request<proto::GetImportErrorReportRequest>,
    ) -> Result<Response<proto::ImportErrorReport>, Status> {
        Call::serve_audited(
            request,
            self.db(),
            |r| r.import_id.trim().to_string(),
            |call, req| async move {
                let link = self
                    .imports
                    .report(call.org(), req.import_id.trim(), &call.actor())
                    .await?;
                Ok(proto::ImportErrorReport {
                    url: link.url,
                    expire_time: Some(timestamp(link.expires_at)),
                    file_name: link.file_name,
                    size_bytes: link.result.report_size as i64,
                    row_count: link.result.report_rows,
                })
            },
        )
        .await
    }
}

impl ImportApi {
    /// One page of an import's problems, in file order.
    async fn errors(
        &self,
        call: &Call,
        req: proto::ListImportErrorsRequest,
    ) -> Result<proto::ListImportErrorsResponse, ApiError> {
        let id = req.import_id.trim();
        let limit = page::page_size(req.page_size)?;
        let fingerprint = page::fingerprint(&[id.as_bytes()]);
        let after: Option<(i64, i32)> = page::decode(&req.page_token, &fingerprint)?;
        let (mut rows, total) = self.imports.errors(call.org(), id, after, limit + 1).await?;
        let mut next_page_token = String::new();
        if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            if let Some(last) = rows.last() {
                next_page_token = page::encode(&(last.line, last.seq), &fingerprint);
            }
        }
        let errors = rows
            .into_iter()
            .map(|row| proto::ImportError {
                line: row.line,
                column: row.column_name,
                code: row.code,
                message: if row.severity == crate::db::import_errors::WARNING {
                    format!("warning: {}", row.message)
                } else {
                    row.message
                },
                raw_value: row.raw_value,
            })
            .collect();
        Ok(proto::ListImportErrorsResponse {
            errors,
            next_page_token,
            total_size: i32::try_from(total).unwrap_or(i32::MAX),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// grpcurl reads the served descriptor, so its JSON accepts the legacy names.
    #[test]
    fn the_legacy_mode_names_are_aliases_of_the_canonical_modes() {
        let set = prost_types::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
        let mode = set
            .file
            .iter()
            .flat_map(|f| &f.enum_type)
            .find(|e| e.name() == "ImportMode")
            .unwrap();
        let number = |name: &str| mode.value.iter().find(|v| v.name() == name).map(|v| v.number());
        assert_eq!(number("manual_no_enrichment"), number("IMPORT_MODE_MANUAL"));
        assert_eq!(number("automatic_enriched"), number("IMPORT_MODE_AUTOMATIC"));
        assert_eq!(mode_of(2).unwrap(), Some(Mode::Automatic));
        assert_eq!(mode_of(0).unwrap(), None);
        // Responses always carry the canonical mode (never UNSPECIFIED).
        let spec = crate::import::spec::ImportSpec::from_request(ImportRequest::default()).unwrap();
        let new = crate::jobs::NewJob {
            id: None,
            organization_id: "o".into(),
            kind: crate::import::KIND.into(),
            payload: serde_json::to_value(&spec).unwrap(),
            request_id: None,
            dedupe_key: None,
            search_text: String::new(),
            rows_total: Some(1),
        };
        let job = Job::decode(crate::jobs::queue::new_row(new, 1, 0)).unwrap();
        assert_eq!(import_message(&job).import_mode, proto::ImportMode::Manual as i32);
    }
}
