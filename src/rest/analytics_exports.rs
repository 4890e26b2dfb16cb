//! Seed 002: `POST /api/v1/analytics/exports` → 201 `{environment_app_token,
//! environment_name, job_id, links, start_time}`, with seed 002's error envelope.
//!
//! Seed 002 exported a product-analytics store; its fields map onto entities as
//! follows: `from` / `to` bound the creation time, `emails` are the recipients,
//! `user_id` / `company_id` are the external IDs of persons / companies,
//! `segment_id` is the `segment_tag` attribute, `format` is avro, csv, ndjson or
//! parquet. `event_type` and `exclusions` have no meaning for entities and are
//! refused (400) rather than ignored: a client that relied on them must learn that
//! its export would not be what it asked for.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::RestState;
use super::auth::Caller;
use super::error::{RestError, Seed002Errors, Style};
use crate::api::error::ApiError;
use crate::proto;

/// Seed 002's body, on ferry's entities.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// First creation time included: ISO 8601 time, or a date (its first instant).
    #[schema(example = "2024-01-01")]
    from: Option<String>,
    /// Last creation time included: ISO 8601 time, or a date (its last instant).
    #[schema(example = "2024-01-31")]
    to: Option<String>,
    /// Recipients of the file by e-mail.
    #[serde(default)]
    emails: Vec<String>,
    /// Refused unless empty: analytics events have no meaning for entities.
    #[serde(default)]
    #[schema(value_type = Value)]
    event_type: Value,
    /// External IDs of persons.
    #[serde(default)]
    user_id: Vec<String>,
    /// External IDs of companies.
    #[serde(default)]
    company_id: Vec<String>,
    /// The `segment_tag` attribute.
    segment_id: Option<String>,
    /// `avro`, `csv` (default), `ndjson` or `parquet`.
    #[schema(pattern = "^\\s*(avro|csv|ndjson|parquet)\\s*$")]
    format: Option<String>,
    /// Refused unless empty: analytics events have no meaning for entities.
    #[serde(default)]
    #[schema(value_type = Value)]
    exclusions: Value,
}

/// 201: the export is queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    /// The organization's id.
    environment_app_token: String,
    /// The organization's name.
    environment_name: String,
    job_id: String,
    /// The export's download route (`/v1/exports/{id}/download`).
    links: String,
    start_time: String,
}

fn meaningless(value: &Value) -> bool {
    !matches!(value, Value::Null)
        && value != &Value::Array(Vec::new())
        && value != &Value::String(String::new())
}

/// A time, or a bare date (`2024-01-31`): the day's first instant for `from`, its
/// last for `to`, so `to` includes the whole day it names.
fn time(
    field: &str,
    text: &Option<String>,
    violations: &mut Vec<(String, String)>,
) -> Option<prost_types::Timestamp> {
    let text = text.as_deref().map(str::trim).filter(|t| !t.is_empty())?;
    let full = match (text.len(), field) {
        (10, "to") => format!("{text}T23:59:59.999Z"),
        (10, _) => format!("{text}T00:00:00Z"),
        _ => text.to_string(),
    };
    full.parse()
        .map_err(|_| {
            violations.push((
                field.to_string(),
                format!("`{text}` is not an ISO 8601 date or time"),
            ))
        })
        .ok()
}

fn request_of(body: &CreateBody) -> Result<proto::CreateExportRequest, ApiError> {
    let mut violations = Vec::new();
    for (field, value) in [("event_type", &body.event_type), ("exclusions", &body.exclusions)] {
        if meaningless(value) {
            violations.push((
                field.to_string(),
                "has no meaning for ferry's entities (seed 002 exported analytics events); leave it out"
                    .to_string(),
            ));
        }
    }
    let format = match body.format.as_deref().map(str::trim).unwrap_or("csv") {
        "csv" => proto::ExportFormat::Csv,
        "ndjson" => proto::ExportFormat::Ndjson,
        "parquet" => proto::ExportFormat::Parquet,
        "avro" => proto::ExportFormat::Avro,
        other => {
            violations.push((
                "format".to_string(),
                format!("`{other}`: avro, csv, ndjson or parquet"),
            ));
            proto::ExportFormat::Unspecified
        }
    };
    let start = time("from", &body.from, &mut violations);
    let end = time("to", &body.to, &mut violations);
    if !violations.is_empty() {
        return Err(ApiError::invalid(violations));
    }
    let mut types = Vec::new();
    if !body.user_id.is_empty() {
        types.push(proto::EntityType::Person as i32);
    }
    if !body.company_id.is_empty() {
        types.push(proto::EntityType::Company as i32);
    }
    let external_ids = body
        .user_id
        .iter()
        .chain(&body.company_id)
        .map(|id| id.trim().to_string())
        .collect();
    let attributes = body
        .segment_id
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|segment| proto::AttributeEquals {
            path: "segment_tag".into(),
            value: segment.trim().to_string(),
        })
        .collect();
    let delivery = (!body.emails.is_empty()).then(|| proto::EmailDelivery {
        recipient_emails: body.emails.clone(),
        ..Default::default()
    });
    Ok(proto::CreateExportRequest {
        filter: Some(proto::EntityFilter {
            types,
            external_ids,
            attributes,
            created: (start.is_some() || end.is_some()).then_some(proto::TimeRange { start, end }),
            ..Default::default()
        }),
        format: format as i32,
        delivery,
        ..Default::default()
    })
}

/// `POST /api/v1/analytics/exports` → 201; an identical export in progress → 409.
#[utoipa::path(
    post,
    path = "/api/v1/analytics/exports",
    tag = "seed 002: analytics exports",
    request_body = CreateBody,
    responses(
        (status = 201, description = "Queued", body = Created),
        (status = 400, description = "A bad field, one `errors` entry each", body = Seed002Errors),
        (status = 401, description = "A bad key or a missing permission", body = Seed002Errors),
        (status = 409, description = "`EXPORT_IN_PROGRESS`: an identical export is running", body = Seed002Errors),
        (status = "default", description = "Any other error, by the README's status table", body = Seed002Errors),
    ),
    security(("token" = []), ("api_key" = []), ("bearer" = [])),
)]
pub async fn create(
    State(state): State<RestState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> Result<Response, RestError> {
    let fail = |err: ApiError| RestError::new(err, &caller.request_id).styled(Style::Seed002);
    let Json(body) = body.map_err(|rejection| fail(super::body_error(rejection)))?;
    let request = request_of(&body).map_err(fail)?;
    let job = super::start_export(&state, &caller, &request)
        .await
        .map_err(fail)?;
    let organization = &caller.principal.organization;
    let body = Created {
        environment_app_token: organization.id.clone(),
        environment_name: organization.name.clone(),
        links: format!("/v1/exports/{}/download", job.row.id),
        start_time: crate::api::convert::iso(job.row.created_at),
        job_id: job.row.id.clone(),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}
