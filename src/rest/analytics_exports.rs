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
use serde::Deserialize;
use serde_json::Value;

use super::RestState;
use super::auth::Caller;
use super::error::{RestError, Style};
use crate::api::error::ApiError;
use crate::proto;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    from: Option<String>,
    to: Option<String>,
    #[serde(default)]
    emails: Vec<String>,
    #[serde(default)]
    event_type: Value,
    #[serde(default)]
    user_id: Vec<String>,
    #[serde(default)]
    company_id: Vec<String>,
    segment_id: Option<String>,
    format: Option<String>,
    #[serde(default)]
    exclusions: Value,
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
    let body = serde_json::json!({
        "environment_app_token": organization.id,
        "environment_name": organization.name,
        "job_id": job.row.id,
        "links": format!("/v1/exports/{}/download", job.row.id),
        "start_time": crate::api::convert::timestamp(job.row.created_at).to_string(),
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}
