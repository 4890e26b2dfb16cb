//! Seed 003: `POST /batch-import/import/entities`, a multipart/form-data upload with
//! every form field of the seed, answered 202 `{success, jobId, importMode,
//! totalItems, message}`. The seed has no status route; ferry adds
//! `GET /batch-import/import/entities/{jobId}` and `…/{jobId}/errors`.
//!
//! The form's fields may come in any order (the seed's own examples send `file`
//! first), while the import needs its options before the file: the file part is
//! streamed to a temp file (bounded memory, `bulk_import.max_upload_bytes`), and the
//! import reads it back from there once every field is in.

use axum::Json;
use axum::extract::multipart::Field;
use axum::extract::multipart::MultipartRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{ErrorEnvelope, RestError};
use super::{RestState, invalid};
use crate::api::error::ApiError;
use crate::import::service::{ImportError, PreviewMapping, TempFile};
use crate::import::spec::Import;
use crate::proto;

fn boolean(field: &str, text: &str) -> Result<bool, ApiError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(invalid(field, format!("`{text}`: true or false"))),
    }
}

/// `autoExecuteIntegrations` as the seed writes it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Selection {
    #[serde(default)]
    execute_all_active_enrichments: bool,
    #[serde(default)]
    enrichments: Vec<String>,
    #[serde(default)]
    enrichment_group_refs: Vec<String>,
    #[serde(default)]
    exclude_enrichments: Vec<String>,
}

fn selection(field: &str, text: &str) -> Result<proto::EnrichmentSelection, ApiError> {
    let s: Selection =
        serde_json::from_str(text).map_err(|e| invalid(field, format!("not the seed's JSON object: {e}")))?;
    Ok(proto::EnrichmentSelection {
        execute_all_active_enrichments: s.execute_all_active_enrichments,
        enrichments: s.enrichments,
        enrichment_group_refs: s.enrichment_group_refs,
        exclude_enrichments: s.exclude_enrichments,
    })
}

/// One text field of the form into the options; unknown names are refused.
fn apply(options: &mut proto::ImportOptions, name: &str, value: &str) -> Result<(), ApiError> {
    let text = value.trim().to_string();
    match name {
        "mappingId" => options.mapping_id = text,
        "entityImportMode" => {
            options.import_mode = match text.as_str() {
                "" | "manual" | "manual_no_enrichment" => proto::ImportMode::Manual,
                "automatic" | "automatic_enriched" => proto::ImportMode::Automatic,
                other => return Err(invalid(name, format!("`{other}`: manual or automatic"))),
            } as i32
        }
        "country" => options.country = text,
        "riskMatrixPersonId" => options.risk_matrix_person_id = text,
        "riskMatrixCompanyId" => options.risk_matrix_company_id = text,
        "skipRulesExecution" => options.skip_rules_execution = boolean(name, &text)?,
        "stopOnFirstError" => options.stop_on_first_error = boolean(name, &text)?,
        "validateOnly" => options.validate_only = boolean(name, &text)?,
        "fixesImportId" => options.fixes_import_id = text,
        "autoExecuteIntegrations" => options.auto_execute_integrations = Some(selection(name, &text)?),
        "autoExecuteIntegrationsShareholders" => {
            options.auto_execute_integrations_shareholders = Some(selection(name, &text)?)
        }
        "childEnrichmentPolicy" => {
            options.child_enrichment_policy = match text.as_str() {
                "all_active" => proto::ChildEnrichmentPolicy::AllActive,
                "by_root_type" => proto::ChildEnrichmentPolicy::ByRootType,
                "basic_only" => proto::ChildEnrichmentPolicy::BasicOnly,
                other => {
                    return Err(invalid(
                        name,
                        format!("`{other}`: all_active, by_root_type or basic_only"),
                    ));
                }
            } as i32
        }
        "monitoringApplyToRelationships" => {
            options.monitoring_apply_to_relationships = Some(boolean(name, &text)?)
        }
        "depth" => {
            options.depth = Some(
                text.parse()
                    .map_err(|_| invalid(name, format!("`{text}`: an integer 0 to 5")))?,
            )
        }
        "isClient" => options.is_client = Some(boolean(name, &text)?),
        "status" => options.status = text,
        "attributes" => options.attributes = text,
        "nationality" => options.nationality = text,
        "monitoring" => options.monitoring = text,
        "reportRecipientEmails" => {
            options.report_recipient_emails = serde_json::from_str(&text)
                .map_err(|_| invalid(name, "a JSON array of e-mail addresses (`[\"ops@acme.test\"]`)"))?
        }
        "emailLocale" => options.email_locale = text,
        other => return Err(invalid(other, "not a field of this form")),
    }
    Ok(())
}

/// The form field a gRPC options path stands for (`options.depth` → `depth`,
/// `options.import_mode` → `entityImportMode`); other paths as they are.
fn form_field(path: &str) -> String {
    match path.strip_prefix("options.") {
        Some("import_mode") => "entityImportMode".into(),
        Some("file_name" | "size_bytes") => "file".into(),
        Some(snake) => {
            let mut camel = String::with_capacity(snake.len());
            let mut upper = false;
            for c in snake.chars() {
                match c {
                    '_' => upper = true,
                    c if upper => {
                        camel.extend(c.to_uppercase());
                        upper = false;
                    }
                    c => camel.push(c),
                }
            }
            camel
        }
        None => path.to_string(),
    }
}

/// The seed's form names the fields its clients sent (`depth`), not the paths of
/// the gRPC options that the shared checks report (`options.depth`).
fn in_form_terms(mut error: ApiError) -> ApiError {
    for (field, _) in error.violations.iter_mut() {
        let named = form_field(field);
        if named != *field {
            error.message = error.message.replace(field.as_str(), &named);
            *field = named;
        }
    }
    error
}

/// A fresh temp file of this process for a form's file part (removed when dropped).
async fn temp_file(imports: &crate::import::service::Imports, prefix: &str) -> Result<TempFile, ApiError> {
    tokio::fs::create_dir_all(imports.temp_dir())
        .await
        .map_err(|e| ApiError::from(ImportError::Storage(e.into())))?;
    Ok(TempFile(
        imports
            .temp_dir()
            .join(format!("{prefix}-{}", crate::db::new_id())),
    ))
}

/// Streams the file part to `path`, refusing more than `limit` bytes.
async fn save(mut field: Field<'_>, path: &std::path::Path, limit: u64) -> Result<u64, ApiError> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| ApiError::from(ImportError::Storage(e.into())))?;
    let mut size = 0u64;
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| ApiError::from(ImportError::Interrupted(e.body_text())))?
    {
        size += chunk.len() as u64;
        if size > limit {
            return Err(ImportError::TooLarge { limit }.into());
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::from(ImportError::Storage(e.into())))?;
    }
    file.flush()
        .await
        .map_err(|e| ApiError::from(ImportError::Storage(e.into())))?;
    Ok(size)
}

/// Seed 003's form (multipart/form-data, fields in any order), for the OpenAPI
/// document: the handler reads it part by part (see [`apply`]) and never builds it.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct ImportForm {
    /// The file (CSV, XLSX, JSON, NDJSON, Parquet or Avro; its name picks the
    /// format); required unless `stagedId` names one uploaded ahead.
    #[schema(value_type = Option<String>, format = Binary)]
    file: Option<Vec<u8>>,
    /// ferry's addition: a file uploaded ahead with
    /// `POST /batch-import/import/entities/staged`, in place of `file`.
    staged_id: Option<String>,
    mapping_id: Option<String>,
    /// `manual`, `automatic`, or the legacy `manual_no_enrichment` / `automatic_enriched`.
    #[schema(pattern = "^\\s*(manual|automatic|manual_no_enrichment|automatic_enriched)?\\s*$")]
    entity_import_mode: Option<String>,
    /// Required for persons without a nationality and companies (ISO 3166 alpha-2).
    country: Option<String>,
    risk_matrix_person_id: Option<String>,
    risk_matrix_company_id: Option<String>,
    #[schema(pattern = "^\\s*(true|false|TRUE|FALSE|True|False|1|0)\\s*$")]
    skip_rules_execution: Option<String>,
    #[schema(pattern = "^\\s*(true|false|TRUE|FALSE|True|False|1|0)\\s*$")]
    stop_on_first_error: Option<String>,
    /// A dry run (ferry's addition): every row is checked and counted as created,
    /// updated, unchanged or failed, and nothing is written.
    #[schema(pattern = "^\\s*(true|false|TRUE|FALSE|True|False|1|0)\\s*$")]
    validate_only: Option<String>,
    /// The import whose failed rows this file fixes (ferry's addition).
    fixes_import_id: Option<String>,
    /// `{"executeAllActiveEnrichments", "enrichments", "enrichmentGroupRefs", "excludeEnrichments"}` (JSON).
    auto_execute_integrations: Option<String>,
    /// The same for shareholders.
    auto_execute_integrations_shareholders: Option<String>,
    /// `all_active`, `by_root_type` or `basic_only`.
    #[schema(pattern = "^\\s*(all_active|by_root_type|basic_only)\\s*$")]
    child_enrichment_policy: Option<String>,
    #[schema(pattern = "^\\s*(true|false|TRUE|FALSE|True|False|1|0)\\s*$")]
    monitoring_apply_to_relationships: Option<String>,
    /// Levels of relationships to follow, 0 to 5.
    #[schema(pattern = "^\\s*[0-5]\\s*$")]
    depth: Option<String>,
    #[schema(pattern = "^\\s*(true|false|TRUE|FALSE|True|False|1|0)\\s*$")]
    is_client: Option<String>,
    status: Option<String>,
    /// A JSON object.
    attributes: Option<String>,
    nationality: Option<String>,
    /// A JSON object.
    monitoring: Option<String>,
    /// A JSON array of e-mail addresses.
    report_recipient_emails: Option<String>,
    email_locale: Option<String>,
}

/// 202: the import is queued.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    success: bool,
    job_id: String,
    #[schema(value_type = String)]
    import_mode: &'static str,
    total_items: i64,
    #[schema(value_type = String)]
    message: &'static str,
    /// ferry's addition, for a key that may watch imports: a signed URL of this
    /// import's live events (`GET /v1/events`), so a client follows it at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    events_url: Option<String>,
}

fn mode_name(value: i32) -> &'static str {
    match proto::ImportMode::try_from(value) {
        Ok(proto::ImportMode::Automatic) => "automatic",
        _ => "manual",
    }
}

/// `POST /batch-import/import/entities` → 202.
#[utoipa::path(
    post,
    path = "/batch-import/import/entities",
    tag = "seed 003: imports",
    request_body(content = ImportForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, description = "Queued", body = Accepted),
        (status = 400, description = "A bad field or pre-flight failures (`MISSING_COUNTRY`, `TOO_MANY_ITEMS`, …; one `details` entry per line)", body = ErrorEnvelope),
        (status = 413, description = "`UPLOAD_TOO_LARGE`: beyond `bulk_import.max_upload_bytes`", body = ErrorEnvelope),
        (status = "default", description = "Any other error, by the README's status table", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn upload(
    State(state): State<RestState>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, RestError> {
    let fail = |err: ApiError| RestError::new(in_form_terms(err), &caller.request_id);
    let mut form = form.map_err(|rejection| fail(invalid("form", rejection.body_text())))?;
    let imports = &state.imports;
    let temp = temp_file(imports, "rest-upload").await.map_err(fail)?;
    let mut options = proto::ImportOptions::default();
    let mut file: Option<u64> = None;
    let mut staged_id: Option<String> = None;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| fail(invalid("form", e.body_text())))?
    {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            if file.is_some() {
                return Err(fail(invalid("file", "one file per request")));
            }
            options.file_name = field.file_name().unwrap_or("upload.csv").to_string();
            file = Some(
                save(field, &temp.0, imports.max_upload_bytes())
                    .await
                    .map_err(fail)?,
            );
        } else {
            let value = field
                .text()
                .await
                .map_err(|e| fail(invalid(&name, e.body_text())))?;
            if name == "stagedId" {
                staged_id = Some(value.trim().to_string()).filter(|v| !v.is_empty());
            } else {
                apply(&mut options, &name, &value).map_err(fail)?;
            }
        }
    }
    match (&staged_id, file) {
        (Some(_), Some(_)) => return Err(fail(invalid("stagedId", "send the file or stagedId, not both"))),
        (None, None) => return Err(fail(invalid("file", "is required (the CSV file), or stagedId"))),
        _ => {}
    }
    // From here the upload runs to its end even if the client goes away, so a
    // claimed staged file is always either forgotten (accepted) or restored
    // (refused), never lost between the two.
    let work = {
        let imports = imports.clone();
        let organization = caller.principal.organization.clone();
        let actor = caller.actor();
        async move {
            let staged = match &staged_id {
                Some(id) => {
                    let row = imports
                        .claim_staged(&organization.id, id, "stagedId", &temp.0)
                        .await?;
                    options.file_name = row.file_name.clone();
                    file = Some(u64::try_from(row.size_bytes).unwrap_or_default());
                    Some(row)
                }
                None => None,
            };
            let result = queue_upload(
                &imports,
                &organization,
                &mut options,
                file.unwrap_or_default(),
                &temp.0,
                actor,
            )
            .await;
            if let Some(row) = staged {
                match &result {
                    // Off the answer's path; the claim already made it single-use.
                    Ok(_) => {
                        let imports = imports.clone();
                        tokio::spawn(async move { imports.forget_staged(&row).await });
                    }
                    Err(_) => imports.restore_staged(&row).await,
                }
            }
            drop(temp);
            result.map(|job| (job, options))
        }
    };
    let (job, options) = tokio::spawn(work)
        .await
        .map_err(|e| fail(ImportError::Interrupted(e.to_string()).into()))?
        .map_err(fail)?;
    let accepted = Accepted {
        success: true,
        job_id: job.row.id.clone(),
        import_mode: mode_name(options.import_mode),
        total_items: job.row.rows_total.unwrap_or_default(),
        message: "Bulk import queued",
        events_url: crate::auth::permissions::allows(
            &caller.principal,
            "/ferry.v1.ImportService/WatchImport",
        )
        .then(|| {
            let org = caller.principal.organization_id();
            let ids = [job.row.id.clone()];
            super::events::signed_url(&state, &headers, super::events::Kind::Import, org, &ids).url
        }),
    };
    Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
}

/// An import as ferry's status route shows it (ferry's addition to seed 003).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportView {
    job_id: String,
    /// queued, running, completed, failed or cancelled.
    #[schema(value_type = String, pattern = "^(queued|running|completed|failed|cancelled)$")]
    status: &'static str,
    /// manual or automatic.
    #[schema(value_type = String)]
    import_mode: &'static str,
    file_name: String,
    /// A dry run (`validateOnly`): the counters say what the import would do.
    validate_only: bool,
    total_items: i64,
    processed_items: i64,
    created_items: i64,
    updated_items: i64,
    unchanged_items: i64,
    failed_items: i64,
    has_error_report: bool,
    /// Why it failed; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    error: Option<String>,
    created_at: String,
    updated_at: String,
}

fn view(job: &crate::jobs::Job<Import>) -> ImportView {
    let message = crate::api::import::import_message(job);
    ImportView {
        status: job.row.state.as_str(),
        import_mode: mode_name(message.import_mode),
        job_id: message.id,
        file_name: message.file_name,
        validate_only: message.options.as_ref().is_some_and(|o| o.validate_only),
        total_items: message.total_items,
        processed_items: message.processed_items,
        created_items: message.created_items,
        updated_items: message.updated_items,
        unchanged_items: message.unchanged_items,
        failed_items: message.failed_items,
        has_error_report: message.has_error_report,
        error: message.error.map(|status| status.message),
        created_at: crate::api::convert::iso(job.row.created_at),
        updated_at: crate::api::convert::iso(job.row.updated_at),
    }
}

/// `GET /batch-import/import/entities/{jobId}`: state (queued, running, completed,
/// failed, cancelled) and counters.
#[utoipa::path(
    get,
    path = "/batch-import/import/entities/{jobId}",
    tag = "seed 003: imports",
    params(("jobId" = String, Path, description = "The import's id")),
    responses(
        (status = 200, description = "The import's state and counters (ferry's addition)", body = ImportView),
        (status = 404, description = "Unknown, or another organization's", body = ErrorEnvelope),
        (status = "default", description = "Any other error, by the README's status table", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn get(
    State(state): State<RestState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, RestError> {
    let job = state
        .imports
        .queue()
        .get::<Import>(caller.principal.organization_id(), id.trim())
        .await
        .map_err(|e| RestError::new(ImportError::from(e), &caller.request_id))?;
    Ok(Json(view(&job)).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TemplateQuery {
    /// `automatic` (default, as the hub's) or `manual`.
    #[param(pattern = "^(manual|automatic)$")]
    mode: Option<String>,
    /// `csv` (default) or `xlsx`.
    #[param(pattern = "^(csv|xlsx)$")]
    format: Option<String>,
}

/// `GET /batch-import/import/entities/template?mode=automatic&format=csv`: the
/// platform template of an import mode, with demo tax IDs drawn anew (valid for
/// their country) so it imports unchanged.
#[utoipa::path(
    get,
    path = "/batch-import/import/entities/template",
    tag = "seed 003: imports",
    params(TemplateQuery),
    responses(
        (status = 200, description = "The template file (ferry's addition to seed 003)", content(
            ("text/csv"),
            ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        )),
        (status = 400, description = "A bad mode or format", body = ErrorEnvelope),
        (status = "default", description = "Any other error, by the README's status table", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn template(
    Extension(caller): Extension<Caller>,
    query: Result<Query<TemplateQuery>, QueryRejection>,
) -> Result<Response, RestError> {
    use crate::import::row::Mode;
    use crate::import::template::{self, Format};
    let fail = |err: ApiError| RestError::new(err, &caller.request_id);
    let Query(query) = query.map_err(|r| fail(invalid("query", r.body_text())))?;
    let mode = match query.mode.as_deref().unwrap_or("automatic") {
        "automatic" => Mode::Automatic,
        "manual" => Mode::Manual,
        other => return Err(fail(invalid("mode", format!("`{other}`: manual or automatic")))),
    };
    let format = match query.format.as_deref().unwrap_or("csv") {
        "csv" => Format::Csv,
        "xlsx" => Format::Xlsx,
        other => return Err(fail(invalid("format", format!("`{other}`: csv or xlsx")))),
    };
    let bytes = template::render(mode, format)
        .map_err(|e| fail(ApiError::new(tonic::Code::Internal, "INTERNAL", e.to_string())))?;
    let disposition = format!("attachment; filename=\"{}\"", template::file_name(mode, format));
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                format.content_type().to_string(),
            ),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
            (axum::http::header::CACHE_CONTROL, "no-store".to_string()),
        ],
        bytes,
    )
        .into_response())
}

/// The received file at `path` (`size` bytes) imported with `options`.
async fn queue_upload(
    imports: &crate::import::service::Imports,
    organization: &crate::orgs::Organization,
    options: &mut proto::ImportOptions,
    size: u64,
    path: &std::path::Path,
    actor: crate::audit::Actor,
) -> Result<crate::jobs::Job<Import>, ApiError> {
    options.size_bytes = i64::try_from(size).unwrap_or(i64::MAX);
    let request = crate::api::import::request_of(options)?;
    let reader = tokio::fs::File::open(path)
        .await
        .map_err(|e| ApiError::from(ImportError::Storage(e.into())))?;
    let chunks = tokio_util::io::ReaderStream::with_capacity(reader, 1024 * 1024).map(|chunk| {
        chunk
            .map(|bytes| bytes.to_vec())
            .map_err(|e| ImportError::Storage(e.into()))
    });
    Ok(imports
        .upload(organization, request, None, Box::pin(chunks), Some(actor))
        .await?)
}

/// 201: a file uploaded ahead of its import.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StagedView {
    /// Send it as the upload's `stagedId` in place of `file`.
    staged_id: String,
    file_name: String,
    size_bytes: i64,
    /// After this (RFC 3339) it is gone (`bulk_import.staged_minutes`).
    expires_at: String,
}

/// The staged upload's form, for the OpenAPI document.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StageForm {
    /// The file, as the upload would send it (its name picks the format).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// `POST /batch-import/import/entities/staged`: a file uploaded ahead of its import
/// (the hub sends it as soon as a person picks it); the upload then names it as
/// `stagedId`. Same size limits as an upload; kept for `bulk_import.staged_minutes`
/// and used by the first import accepted with it.
#[utoipa::path(
    post,
    path = "/batch-import/import/entities/staged",
    tag = "seed 003: imports",
    request_body(content = StageForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Stored (ferry's addition)", body = StagedView),
        (status = 400, description = "No file, or a field that is not `file`", body = ErrorEnvelope),
        (status = 413, description = "`UPLOAD_TOO_LARGE`: beyond `bulk_import.max_upload_bytes` (XLSX: `max_xlsx_bytes`)", body = ErrorEnvelope),
        (status = 429, description = "`TOO_MANY_STAGED_UPLOADS`: `bulk_import.max_staged_per_org` files wait already", body = ErrorEnvelope),
        (status = "default", description = "Any other error, by the README's status table", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn stage(
    State(state): State<RestState>,
    Extension(caller): Extension<Caller>,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, RestError> {
    use crate::import::table::Format;
    let fail = |err: ApiError| RestError::new(err, &caller.request_id);
    let mut form = form.map_err(|rejection| fail(invalid("form", rejection.body_text())))?;
    let imports = &state.imports;
    let temp = temp_file(imports, "rest-staged").await.map_err(fail)?;
    let mut name = None;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| fail(invalid("form", e.body_text())))?
    {
        match field.name().unwrap_or_default() {
            "file" if name.is_none() => {
                let file_name = field.file_name().unwrap_or("upload.csv").to_string();
                let limit = imports.max_bytes_of(Format::of_file_name(&file_name));
                save(field, &temp.0, limit).await.map_err(fail)?;
                name = Some(file_name);
            }
            "file" => return Err(fail(invalid("file", "one file per request"))),
            other => return Err(fail(invalid(other, "not a field of this form (file)"))),
        }
    }
    let name = name.ok_or_else(|| fail(invalid("file", "is required")))?;
    let row = imports
        .stage(caller.principal.organization_id(), &name, &temp.0)
        .await
        .map_err(|e| fail(e.into()))?;
    let view = StagedView {
        staged_id: row.id,
        file_name: row.file_name,
        size_bytes: row.size_bytes,
        expires_at: crate::api::convert::iso(row.expires_at),
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// The most of a CSV or NDJSON file a preview reads (its first rows are enough).
pub const PREVIEW_BYTES: u64 = 1024 * 1024;

/// `POST /batch-import/import/entities/preview`: the form's `file` (the beginning
/// of a CSV or NDJSON file is enough; an XLSX file whole) and `mappingId` (or
/// `columns`, a mapping being edited); answers
/// where each header goes, the first rows as the import reads them, and the
/// header's problems. Nothing is stored.
#[utoipa::path(
    post,
    path = "/batch-import/import/entities/preview",
    tag = "seed 003: imports",
    request_body(content = PreviewForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "What an import would make of the file (ferry's addition)", body = crate::import::preview::Preview),
        (status = 400, description = "A bad field, or a file that is not of its format", body = ErrorEnvelope),
        (status = 413, description = "`UPLOAD_TOO_LARGE`: more than 1 MiB of CSV or NDJSON, or an XLSX file beyond `bulk_import.max_xlsx_bytes`", body = ErrorEnvelope),
        (status = "default", description = "Any other error, by the README's status table", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn preview(
    State(state): State<RestState>,
    Extension(caller): Extension<Caller>,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, RestError> {
    use crate::import::table::Format;
    let fail = |err: ApiError| RestError::new(in_form_terms(err), &caller.request_id);
    let mut form = form.map_err(|rejection| fail(invalid("form", rejection.body_text())))?;
    let imports = &state.imports;
    let temp = temp_file(imports, "rest-preview").await.map_err(fail)?;
    let (mut format, mut mapping) = (None, PreviewMapping::None);
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| fail(invalid("form", e.body_text())))?
    {
        match field.name().unwrap_or_default() {
            "file" if format.is_none() => {
                let name = field.file_name().unwrap_or("upload.csv").to_string();
                let kind = Format::of_file_name(&name);
                let limit = match kind {
                    Format::Xlsx => imports.max_xlsx_bytes(),
                    _ => PREVIEW_BYTES,
                };
                save(field, &temp.0, limit).await.map_err(fail)?;
                format = Some(kind);
            }
            "file" => return Err(fail(invalid("file", "one file per request"))),
            "mappingId" => {
                let text = field
                    .text()
                    .await
                    .map_err(|e| fail(invalid("mappingId", e.body_text())))?;
                if !text.trim().is_empty() {
                    mapping = PreviewMapping::Saved(text.trim().to_string());
                }
            }
            "columns" => {
                let text = field
                    .text()
                    .await
                    .map_err(|e| fail(invalid("columns", e.body_text())))?;
                let columns = serde_json::from_str(&text).map_err(|e| {
                    fail(invalid(
                        "columns",
                        format!("a JSON object of custom header to platform column: {e}"),
                    ))
                })?;
                mapping = PreviewMapping::Draft(columns);
            }
            other => {
                return Err(fail(invalid(
                    other,
                    "not a field of this form (file, mappingId, columns)",
                )));
            }
        }
    }
    let format = format.ok_or_else(|| fail(invalid("file", "is required (the file, or its beginning)")))?;
    let preview = imports
        .preview(
            caller.principal.organization_id(),
            mapping,
            format,
            temp.0.clone(),
        )
        .await
        .map_err(|e| fail(e.into()))?;
    Ok(Json(preview).into_response())
}

/// The preview's form, for the OpenAPI document.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct PreviewForm {
    /// The file or, for CSV and NDJSON, its first bytes (at most 1 MiB); its name
    /// picks the format.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// A saved mapping for custom headers.
    mapping_id: Option<String>,
    /// A mapping not saved yet, in place of `mappingId`: a JSON object of custom
    /// header to platform column (`{"Documento": "tax_id"}`), checked as a saved
    /// one would be.
    columns: Option<String>,
}

/// `DELETE /batch-import/import/entities/{jobId}` (ferry's addition): the import's
/// data goes (its files and error rows, then the import); the entities it wrote stay.
#[utoipa::path(
    delete,
    path = "/batch-import/import/entities/{jobId}",
    tag = "seed 003: imports",
    params(("jobId" = String, Path, description = "The import's id")),
    responses(
        (status = 200, description = "Deleted: its files and error rows too; a queued or running import was cancelled first", body = super::exports_v1::Message),
        (status = 404, description = "Unknown, or another organization's", body = ErrorEnvelope),
        (status = "default", description = "Any other error, by the README's status table", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn delete(
    State(state): State<RestState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, RestError> {
    state
        .imports
        .delete(caller.principal.organization_id(), id.trim(), &caller.actor())
        .await
        .map_err(|e| RestError::new(e, &caller.request_id))?;
    let message = super::exports_v1::Message {
        message: "Import deleted successfully".into(),
    };
    Ok(Json(message).into_response())
}

/// `POST /batch-import/import/entities/{jobId}/cancel`: a queued import never runs;
/// a running one stops at its next batch (rows already written stay).
#[utoipa::path(
    post,
    path = "/batch-import/import/entities/{jobId}/cancel",
    tag = "seed 003: imports",
    params(("jobId" = String, Path, description = "The import's id")),
    responses(
        (status = 200, description = "Cancelled (ferry's addition): the import as it is now", body = ImportView),
        (status = 404, description = "Unknown, or another organization's", body = ErrorEnvelope),
        (status = 409, description = "`ALREADY_FINISHED`: it had already ended", body = ErrorEnvelope),
        (status = "default", description = "Any other error, by the README's status table", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn cancel(
    State(state): State<RestState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, RestError> {
    let job = state
        .imports
        .queue()
        .cancel::<Import>(
            caller.principal.organization_id(),
            id.trim(),
            Some(&caller.actor()),
        )
        .await
        .map_err(|e| RestError::new(ImportError::from(e), &caller.request_id))?;
    Ok(Json(view(&job)).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ErrorsQuery {
    /// Rows per page, 1 to 100 (default 100).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// The `meta.next` of the previous page.
    after: Option<String>,
}

/// `GET /batch-import/import/entities/{jobId}/errors`: the failed rows in file
/// order, `{data: [{line, column, code, message, rawValue}], meta: {limit, total,
/// next}}`; `next` (absent on the last page) is passed back as `?after=`.
#[utoipa::path(
    get,
    path = "/batch-import/import/entities/{jobId}/errors",
    tag = "seed 003: imports",
    params(("jobId" = String, Path, description = "The import's id"), ErrorsQuery),
    responses(
        (status = 200, description = "A page of the failed rows, in file order (ferry's addition)", body = ErrorPage),
        (status = 400, description = "A bad query parameter", body = ErrorEnvelope),
        (status = 404, description = "Unknown, or another organization's", body = ErrorEnvelope),
        (status = "default", description = "Any other error, by the README's status table", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn errors(
    State(state): State<RestState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    query: Result<Query<ErrorsQuery>, QueryRejection>,
) -> Result<Response, RestError> {
    let fail = |err: ApiError| RestError::new(err, &caller.request_id);
    let Query(query) = query.map_err(|rejection| fail(invalid("query", rejection.body_text())))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=100).contains(&limit) {
        return Err(fail(invalid("limit", "must be between 1 and 100")));
    }
    let after = match query.after.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            text.split_once('.')
                .and_then(|(line, seq)| Some((line.parse().ok()?, seq.parse().ok()?)))
                .ok_or_else(|| fail(invalid("after", "the `meta.next` of the previous page")))?,
        ),
    };
    let (mut rows, total) = state
        .imports
        .errors(caller.principal.organization_id(), id.trim(), after, limit + 1)
        .await
        .map_err(|e| fail(e.into()))?;
    let next = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|row| format!("{}.{}", row.line, row.seq))
    } else {
        None
    };
    let data = rows
        .into_iter()
        .map(|row| RowError {
            line: row.line,
            column: row.column_name,
            code: row.code,
            message: row.message,
            raw_value: row.raw_value,
        })
        .collect();
    let page = ErrorPage {
        data,
        meta: ErrorPageMeta { limit, total, next },
    };
    Ok(Json(page).into_response())
}

/// A page of an import's failed rows.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorPage {
    data: Vec<RowError>,
    meta: ErrorPageMeta,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorPageMeta {
    limit: i64,
    total: i64,
    /// Pass back as `?after=` for the next page; `null` on the last.
    next: Option<String>,
}

/// One problem of one row of the file.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RowError {
    line: i64,
    column: String,
    code: String,
    message: String,
    raw_value: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_paths_are_named_as_the_seed_form_names_them() {
        assert_eq!(form_field("options.depth"), "depth");
        assert_eq!(form_field("options.risk_matrix_person_id"), "riskMatrixPersonId");
        assert_eq!(form_field("options.import_mode"), "entityImportMode");
        assert_eq!(form_field("options.size_bytes"), "file");
        assert_eq!(form_field("line 2"), "line 2");
        let error = in_form_terms(ApiError::invalid(vec![(
            "options.depth".into(),
            "must be from 0 to 5".into(),
        )]));
        assert_eq!(error.violations[0].0, "depth");
        assert_eq!(error.message, "invalid depth: must be from 0 to 5");
    }
}
