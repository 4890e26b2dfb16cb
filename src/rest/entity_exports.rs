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
use serde::Deserialize;
use serde_json::{Map, Value};

use super::RestState;
use super::auth::Caller;
use super::error::RestError;
use crate::api::error::ApiError;
use crate::db::jobs::JobState;
use crate::export::service::ExportError;
use crate::export::spec::Export;
use crate::proto;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateBody {
    #[serde(default)]
    recipient_emails: Value,
    #[serde(default)]
    format: Value,
    #[serde(default)]
    filters: Value,
    #[serde(default)]
    email_locale: Value,
    #[serde(default)]
    columns: Value,
    #[serde(default)]
    from_sender_id: Value,
    #[serde(default)]
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

/// `POST /entities/export/jobs` → 202 `{jobId, message}`.
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
    let body = serde_json::json!({
        "jobId": job.row.id,
        "message": "Export queued; the file will be e-mailed to the recipients when it is ready",
    });
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

/// `GET /entities/export/jobs/{jobId}`.
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
    let recipients: Vec<Value> = message
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
            serde_json::json!({ "email": r.email, "status": state })
        })
        .collect();
    let body = serde_json::json!({
        "jobId": job.row.id,
        "status": status(job.row.state),
        "format": job.spec.format,
        "rowCount": message.row_count,
        "recipients": recipients,
        "error": message.error.map(|e| e.message),
        "createdAt": crate::api::convert::timestamp(job.row.created_at).to_string(),
        "updatedAt": crate::api::convert::timestamp(job.row.updated_at).to_string(),
    });
    Ok(Json(body).into_response())
}

/// `GET /entities/export/jobs/{jobId}/download`: the metadata of the file and a
/// signed link to it.
pub async fn download(
    State(state): State<RestState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, RestError> {
    let link = state
        .exports
        .download(caller.principal.organization_id(), id.trim())
        .await
        .map_err(|e| RestError::new(e, &caller.request_id))?;
    let body = serde_json::json!({
        "url": link.url,
        "expiresAt": crate::api::convert::timestamp(link.expires_at).to_string(),
        "fileName": link.result.file_name,
        "contentType": link.result.content_type,
        "sizeBytes": link.result.size,
        "sha256": link.result.sha256,
        "rowCount": link.result.row_count,
    });
    Ok(Json(body).into_response())
}
