//! Seed 000: `POST /entities/export/jobs` (an export delivered by e-mail) → 202
//! `{jobId, message}`, with `GET …/{jobId}` (status) and `GET …/{jobId}/download`
//! (download metadata).
//!
//! The seed says `filters` has "the same shape as GET /entities query filters"
//! without spelling it out; ferry defines it as a flat object (see [`filter_of`])
//! mapped onto the gRPC `EntityFilter`, and refuses unknown keys naming them.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::RestState;
use super::auth::Caller;
use super::error::{ErrorEnvelope, RestError};
use crate::api::error::ApiError;
use crate::db::jobs::JobState;
use crate::export::service::ExportError;
use crate::export::spec::Export;
use crate::proto;

/// Seed 000's body. Its clients send `{}`, `""` or `null` for a field they leave
/// out (`"fromSenderId": {}` in the seed's own example): each counts as absent, so
/// the fields that accept a string or a list are documented as any JSON value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateBody {
    /// Required: the recipients (a list of addresses, or one address), at most 26.
    #[serde(default)]
    #[schema(value_type = Value, example = json!(["ops@acme.test"]))]
    recipient_emails: Value,
    /// Required: `csv`, `xlsx` or `json`.
    #[serde(default)]
    #[schema(value_type = String, pattern = "^(csv|xlsx|json)$", example = "csv")]
    format: Value,
    /// A flat object of filters (README: Seed 000's `filters`); unknown keys are 400.
    #[serde(default)]
    #[schema(value_type = Value, example = json!({"type": "person", "country": "DE"}))]
    filters: Value,
    /// The e-mail's language (`en`, `de`, …).
    #[serde(default)]
    #[schema(value_type = Value)]
    email_locale: Value,
    /// The columns of the file, in order (a list of names).
    #[serde(default)]
    #[schema(value_type = Value)]
    columns: Value,
    /// A verified sender of the organization.
    #[serde(default)]
    #[schema(value_type = Value)]
    from_sender_id: Value,
    /// A sender address on a verified domain.
    #[serde(default)]
    #[schema(value_type = Value)]
    from_email: Value,
}

/// The seed's clients send `{}` or `null` for a field they leave out
/// (`"fromSenderId": {}` in its own example): both count as absent.
fn present(value: &Value) -> Option<&Value> {
    match value {
        Value::Null => None,
        Value::Object(map) if map.is_empty() => None,
        Value::String(text) if text.trim().is_empty() => None,
        Value::Array(items) if items.is_empty() => None,
        other => Some(other),
    }
}

fn invalid(field: &str, message: impl Into<String>) -> (String, String) {
    (field.to_string(), message.into())
}

fn text(field: &str, value: &Value, violations: &mut Vec<(String, String)>) -> String {
    match present(value) {
        None => String::new(),
        Some(Value::String(text)) => text.trim().to_string(),
        Some(_) => {
            violations.push(invalid(field, "must be a string"));
            String::new()
        }
    }
}

/// A string, or a list of strings, as a list.
fn texts(field: &str, value: &Value, violations: &mut Vec<(String, String)>) -> Vec<String> {
    match present(value) {
        None => Vec::new(),
        Some(Value::String(text)) => vec![text.trim().to_string()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| match item {
                Value::String(text) => Some(text.trim().to_string()),
                _ => {
                    violations.push(invalid(field, "must hold strings only"));
                    None
                }
            })
            .collect(),
        Some(_) => {
            violations.push(invalid(field, "must be a string or a list of strings"));
            Vec::new()
        }
    }
}

fn time(
    field: &str,
    value: &Value,
    violations: &mut Vec<(String, String)>,
) -> Option<prost_types::Timestamp> {
    let raw = text(field, value, violations);
    if raw.is_empty() {
        return None;
    }
    raw.parse()
        .map_err(|_| violations.push(invalid(field, format!("`{raw}` is not an ISO 8601 time"))))
        .ok()
}

/// `filters`: `type` (person / company), `country`, `status`, `taxId`, `externalId`
/// (each a string or a list: any of them), `isClient` (boolean), `riskMatrixId`,
/// `search`, `createdAfter` / `createdBefore` / `updatedAfter` / `updatedBefore`
/// (ISO 8601, inclusive), and `attributes.<path>` (equality, as text). Anything
/// else is refused, naming the key.
pub fn filter_of(
    filters: &Map<String, Value>,
    violations: &mut Vec<(String, String)>,
) -> proto::EntityFilter {
    let mut out = proto::EntityFilter::default();
    let (mut created, mut updated) = (proto::TimeRange::default(), proto::TimeRange::default());
    for (key, value) in filters {
        let field = format!("filters.{key}");
        match key.as_str() {
            "type" => {
                for name in texts(&field, value, violations) {
                    match crate::api::convert::entity_type_value(&name) {
                        proto::EntityType::Unspecified => {
                            violations.push(invalid(&field, format!("`{name}`: person or company")))
                        }
                        known => out.types.push(known as i32),
                    }
                }
            }
            "country" => out.countries = texts(&field, value, violations),
            "status" => {
                for name in texts(&field, value, violations) {
                    match crate::api::convert::status_value(&name) {
                        proto::EntityStatus::Unspecified => {
                            violations.push(invalid(&field, format!("`{name}` is not a status")))
                        }
                        known => out.statuses.push(known as i32),
                    }
                }
            }
            "taxId" => out.tax_ids = texts(&field, value, violations),
            "externalId" => out.external_ids = texts(&field, value, violations),
            "isClient" => match value {
                Value::Bool(flag) => out.is_client = Some(*flag),
                Value::Null => {}
                _ => violations.push(invalid(&field, "must be true or false")),
            },
            "riskMatrixId" => out.risk_matrix_id = text(&field, value, violations),
            "search" => out.search = text(&field, value, violations),
            "createdAfter" => created.start = time(&field, value, violations),
            "createdBefore" => created.end = time(&field, value, violations),
            "updatedAfter" => updated.start = time(&field, value, violations),
            "updatedBefore" => updated.end = time(&field, value, violations),
            path if path.starts_with("attributes.") => {
                let value = match value {
                    Value::String(text) => text.clone(),
                    Value::Number(_) | Value::Bool(_) => value.to_string(),
                    _ => {
                        violations.push(invalid(&field, "must be a string, number or boolean"));
                        continue;
                    }
                };
                out.attributes.push(proto::AttributeEquals {
                    path: path["attributes.".len()..].to_string(),
                    value,
                });
            }
            _ => violations.push(invalid(&field, "not a filter (see the README for the keys)")),
        }
    }
    out.created = (created.start.is_some() || created.end.is_some()).then_some(created);
    out.updated = (updated.start.is_some() || updated.end.is_some()).then_some(updated);
    out
}

fn request_of(body: &CreateBody) -> Result<proto::CreateExportRequest, ApiError> {
    let mut violations = Vec::new();
    let recipients = texts("recipientEmails", &body.recipient_emails, &mut violations);
    if recipients.is_empty() {
        violations.push(invalid(
            "recipientEmails",
            "is required: the export is delivered by e-mail",
        ));
    }
    let format = match text("format", &body.format, &mut violations).as_str() {
        "csv" => proto::ExportFormat::Csv,
        "xlsx" => proto::ExportFormat::Xlsx,
        "json" => proto::ExportFormat::Json,
        "" => {
            violations.push(invalid("format", "is required: csv, xlsx or json"));
            proto::ExportFormat::Unspecified
        }
        other => {
            violations.push(invalid("format", format!("`{other}`: csv, xlsx or json")));
            proto::ExportFormat::Unspecified
        }
    };
    let filter = match present(&body.filters) {
        None => proto::EntityFilter::default(),
        Some(Value::Object(map)) => filter_of(map, &mut violations),
        Some(_) => {
            violations.push(invalid("filters", "must be an object"));
            proto::EntityFilter::default()
        }
    };
    let delivery = proto::EmailDelivery {
        recipient_emails: recipients,
        email_locale: text("emailLocale", &body.email_locale, &mut violations),
        from_email: text("fromEmail", &body.from_email, &mut violations),
        from_sender_id: text("fromSenderId", &body.from_sender_id, &mut violations),
    };
    let columns = texts("columns", &body.columns, &mut violations);
    if !violations.is_empty() {
        return Err(ApiError::invalid(violations));
    }
    Ok(proto::CreateExportRequest {
        filter: Some(filter),
        columns,
        format: format as i32,
        delivery: Some(delivery),
        ..Default::default()
    })
}

/// 202: the export is queued.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Queued {
    job_id: String,
    message: String,
}

/// `POST /entities/export/jobs` → 202 `{jobId, message}`.
#[utoipa::path(
    post,
    path = "/entities/export/jobs",
    tag = "seed 000: e-mailed entity exports",
    request_body = CreateBody,
    responses(
        (status = 202, description = "Queued; the file is e-mailed when ready", body = Queued),
        (status = 400, description = "A bad field or a pre-flight failure (`TOO_MANY_RECIPIENTS`, `SENDER_CONFLICT`, `DOMAIN_NOT_VERIFIED`, …)", body = ErrorEnvelope),
        (status = 403, description = "A missing permission or feature (`FEATURE_DISABLED`)", body = ErrorEnvelope),
        (status = "default", description = "Any other error, by the README's status table", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn create(
    State(state): State<RestState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> Result<Response, RestError> {
    let fail = |err: ApiError| RestError::new(err, &caller.request_id);
    let Json(body) = body.map_err(|rejection| fail(super::body_error(rejection)))?;
    let request = request_of(&body).map_err(fail)?;
    let job = super::start_export(&state, &caller, &request)
        .await
        .map_err(fail)?;
    let body = Queued {
        job_id: job.row.id.clone(),
        message: "Export queued; the file will be e-mailed to the recipients when it is ready".into(),
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// The seed's four statuses (an expired export was completed; a cancelled one
/// failed).
fn status(state: JobState) -> &'static str {
    match state {
        JobState::Queued => "queued",
        JobState::Running => "running",
        JobState::Completed | JobState::Expired => "completed",
        JobState::Failed | JobState::Cancelled => "failed",
    }
}

/// An export as seed 000's status route shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    job_id: String,
    /// queued, running, completed (an expired export too) or failed (a cancelled one too).
    #[schema(value_type = String, pattern = "^(queued|running|completed|failed)$")]
    status: &'static str,
    #[schema(value_type = String, example = "csv")]
    format: crate::export::format::Format,
    row_count: i64,
    recipients: Vec<Recipient>,
    /// Why it failed.
    error: Option<String>,
    created_at: String,
    updated_at: String,
}

/// One recipient of the e-mail and how its delivery went.
#[derive(Debug, Serialize, ToSchema)]
pub struct Recipient {
    email: String,
    /// pending, sent or failed.
    status: String,
}

/// `GET /entities/export/jobs/{jobId}`.
#[utoipa::path(
    get,
    path = "/entities/export/jobs/{jobId}",
    tag = "seed 000: e-mailed entity exports",
    params(("jobId" = String, Path, description = "The export's id")),
    responses(
        (status = 200, description = "The export's status", body = JobView),
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
    let fail = |err: ExportError| RestError::new(err, &caller.request_id);
    let job = state
        .exports
        .queue()
        .get::<Export>(caller.principal.organization_id(), id.trim())
        .await
        .map_err(|e| fail(e.into()))?;
    let deliveries = state.exports.deliveries(&job.row.id).await.map_err(fail)?;
    let message = crate::api::export::export_message(&job, &deliveries);
    let recipients: Vec<Recipient> = message
        .recipients
        .iter()
        .map(|r| {
            let state = proto::DeliveryState::try_from(r.state)
                .map(|s| {
                    s.as_str_name()
                        .trim_start_matches("DELIVERY_STATE_")
                        .to_ascii_lowercase()
                })
                .unwrap_or_default();
            Recipient {
                email: r.email.clone(),
                status: state,
            }
        })
        .collect();
    let body = JobView {
        job_id: job.row.id.clone(),
        status: status(job.row.state),
        format: job.spec.format,
        row_count: message.row_count,
        recipients,
        error: message.error.map(|e| e.message),
        created_at: crate::api::convert::iso(job.row.created_at),
        updated_at: crate::api::convert::iso(job.row.updated_at),
    };
    Ok(Json(body).into_response())
}

/// `GET /entities/export/jobs/{jobId}/download`: the metadata of the file and a
/// signed link to it.
#[utoipa::path(
    get,
    path = "/entities/export/jobs/{jobId}/download",
    tag = "seed 000: e-mailed entity exports",
    params(("jobId" = String, Path, description = "The export's id")),
    responses(
        (status = 200, description = "The file's metadata and a signed link to it", body = DownloadInfo),
        (status = 404, description = "Unknown, or another organization's", body = ErrorEnvelope),
        (status = 409, description = "`EXPORT_NOT_READY`: not completed", body = ErrorEnvelope),
        (status = 410, description = "`EXPORT_EXPIRED`: past its retention", body = ErrorEnvelope),
        (status = "default", description = "Any other error, by the README's status table", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn download(
    State(state): State<RestState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, RestError> {
    let link = state
        .exports
        .download(caller.principal.organization_id(), id.trim(), &caller.actor())
        .await
        .map_err(|e| RestError::new(e, &caller.request_id))?;
    let body = DownloadInfo {
        expires_at: crate::api::convert::iso(link.expires_at),
        url: link.url,
        file_name: link.result.file_name,
        content_type: link.result.content_type,
        size_bytes: link.result.size,
        sha256: link.result.sha256,
        row_count: link.result.row_count,
    };
    Ok(Json(body).into_response())
}

/// A finished export's file.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DownloadInfo {
    /// A signed link to the file (valid until `expiresAt`).
    url: String,
    expires_at: String,
    file_name: String,
    content_type: String,
    size_bytes: u64,
    /// Hex SHA-256 of the file.
    sha256: String,
    row_count: u64,
}
