//! Seeds 001 and 004: `/v1/exports` — create (201), list (numbered pages), delete,
//! and the download that answers 302 to the file.
//!
//! Seed 001 exports "the results of a schema" between two dates. In ferry a schema
//! is an entity type: `schema_id` is `person`, `company` or `entities` (both); any
//! other value is 404 `SCHEMA_NOT_FOUND`, as the seed answers for an unknown
//! schema. `start_date` / `end_date` bound the entities' creation time (inclusive).

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost_types::Timestamp;
use serde::{Deserialize, Serialize};
use tonic::Code;
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{ErrorEnvelope, RestError};
use super::{RestState, invalid};
use crate::api::error::ApiError;
use crate::db::jobs::{JobListFilter, JobPage, JobState};
use crate::export::spec::Export;
use crate::jobs::Job;
use crate::proto;

/// The schemas of seed 001 as ferry knows them, with the entity types they select.
const SCHEMAS: &[(&str, &[proto::EntityType])] = &[
    ("person", &[proto::EntityType::Person]),
    ("company", &[proto::EntityType::Company]),
    ("entities", &[]),
];

/// Seed 001's body: the entities of a schema created between two dates.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// `person`, `company` or `entities` (both types); anything else is 404.
    #[schema(required = true, nullable = false, example = "person")]
    schema_id: Option<String>,
    /// First creation time included (ISO 8601).
    #[schema(required = true, nullable = false, format = DateTime, example = "2024-01-01T00:00:00.000Z")]
    start_date: Option<String>,
    /// Last creation time included (ISO 8601).
    #[schema(required = true, nullable = false, format = DateTime, example = "2024-01-31T23:59:59.999Z")]
    end_date: Option<String>,
    /// A column holding a list: one row per element.
    #[schema(nullable = false)]
    expand_array: Option<String>,
}

/// An export as seed 001 shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportView {
    id: String,
    schema_id: String,
    #[schema(value_type = String, pattern = "^(PENDING|PROCESSING|COMPLETED|FAILED)$")]
    status: &'static str,
    start_date: Option<String>,
    end_date: Option<String>,
    expand_array: Option<String>,
    #[serde(rename = "createdAt")]
    created_at: String,
    #[serde(rename = "updatedAt")]
    updated_at: String,
}

/// Seed 001's four statuses. An expired export was completed (its download then
/// answers 410 `EXPORT_EXPIRED`, as seed 004 does); a cancelled one failed.
fn status(state: JobState) -> &'static str {
    match state {
        JobState::Queued => "PENDING",
        JobState::Running => "PROCESSING",
        JobState::Completed | JobState::Expired => "COMPLETED",
        JobState::Failed | JobState::Cancelled => "FAILED",
    }
}

fn view(job: &Job<Export>) -> ExportView {
    let filter = &job.spec.filter;
    let schema_id = match filter.types.as_slice() {
        [only] => only.clone(),
        _ => "entities".to_string(),
    };
    let expand_array = job.spec.expand_array.and_then(|i| {
        crate::export::columns::headers(&job.spec.columns, None)
            .get(i)
            .cloned()
    });
    ExportView {
        id: job.row.id.clone(),
        schema_id,
        status: status(job.row.state),
        start_date: filter.created_from.map(crate::api::convert::iso),
        end_date: filter.created_to.map(crate::api::convert::iso),
        expand_array,
        created_at: crate::api::convert::iso(job.row.created_at),
        updated_at: crate::api::convert::iso(job.row.updated_at),
    }
}

fn date(field: &str, text: Option<&str>, violations: &mut Vec<(String, String)>) -> Option<Timestamp> {
    match text.map(str::trim) {
        None | Some("") => {
            violations.push((
                field.into(),
                "is required (ISO 8601, e.g. 2024-01-31T23:59:59.999Z)".into(),
            ));
            None
        }
        Some(text) => match text.parse::<Timestamp>() {
            Ok(ts) => Some(ts),
            Err(_) => {
                violations.push((field.into(), format!("`{text}` is not an ISO 8601 time")));
                None
            }
        },
    }
}

/// The seed's body as ferry's CreateExportRequest (CSV, as the seed produces).
fn request_of(body: CreateBody) -> Result<proto::CreateExportRequest, ApiError> {
    let mut violations = Vec::new();
    let schema = body.schema_id.as_deref().map(str::trim).unwrap_or_default();
    if schema.is_empty() {
        violations.push(("schema_id".to_string(), "is required".to_string()));
    }
    let start = date("start_date", body.start_date.as_deref(), &mut violations);
    let end = date("end_date", body.end_date.as_deref(), &mut violations);
    if !violations.is_empty() {
        return Err(ApiError::invalid(violations));
    }
    let types = SCHEMAS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(schema))
        .map(|(_, types)| types.iter().map(|t| *t as i32).collect())
        .ok_or_else(|| {
            ApiError::new(
                Code::NotFound,
                "SCHEMA_NOT_FOUND",
                format!("Schema not found: `{schema}` (ferry's schemas: person, company, entities)"),
            )
        })?;
    Ok(proto::CreateExportRequest {
        filter: Some(proto::EntityFilter {
            types,
            created: Some(proto::TimeRange { start, end }),
            ..Default::default()
        }),
        expand_array: body.expand_array.unwrap_or_default(),
        format: proto::ExportFormat::Csv as i32,
        ..Default::default()
    })
}

/// `POST /v1/exports` → 201 with the export.
#[utoipa::path(
    post,
    path = "/v1/exports",
    tag = "seed 001/004: /v1/exports",
    request_body = CreateBody,
    responses(
        (status = 201, description = "The export, queued (CSV)", body = ExportView),
        (status = 400, description = "A missing or malformed field (one `details` entry each)", body = ErrorEnvelope),
        (status = 404, description = "`SCHEMA_NOT_FOUND`", body = ErrorEnvelope),
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
    let request = request_of(body).map_err(fail)?;
    let job = super::start_export(&state, &caller, &request)
        .await
        .map_err(fail)?;
    Ok((StatusCode::CREATED, Json(view(&job))).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page number, 1 to 100000.
    #[param(minimum = 1, maximum = 100_000)]
    page: Option<i64>,
    /// Exports per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `createdAt` (default) or `updatedAt`.
    #[param(pattern = "^(createdAt|created_at|updatedAt|updated_at)?$")]
    sort_by: Option<String>,
    /// `desc` (default) or `asc`.
    #[param(pattern = "^(asc|desc)?$")]
    sort_order: Option<String>,
    /// A substring of the export's id or file name.
    search: Option<String>,
    /// Only exports created at or after this time (ISO 8601).
    #[param(format = DateTime)]
    created_after: Option<String>,
    /// Only exports created at or before this time (ISO 8601).
    #[param(format = DateTime)]
    created_before: Option<String>,
    /// Comma-separated names of the export's fields to return (an unknown one is 400).
    fields: Option<String>,
    /// Accepted for the seed's clients; an export has no related resources.
    #[serde(rename = "include")]
    #[param(rename = "include")]
    _include: Option<String>,
}

/// A page of exports.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportPage {
    /// The exports (every field, or those named by `fields`).
    #[schema(value_type = Vec<Object>)]
    data: Vec<serde_json::Value>,
    meta: ListMeta,
}

#[derive(Debug, Serialize, ToSchema)]
struct ListMeta {
    page: i64,
    limit: i64,
    total: i64,
    #[serde(rename = "totalPages")]
    total_pages: i64,
}

/// The last page number a list serves: deeper pages are an OFFSET scan of millions
/// of rows (narrow the list with `created_after` / `created_before` instead).
const MAX_PAGE: i64 = 100_000;

fn page_of(query: &ListQuery) -> Result<(i64, JobPage), ApiError> {
    let mut violations = Vec::new();
    let page = query.page.unwrap_or(1);
    if !(1..=MAX_PAGE).contains(&page) {
        violations.push(("page".to_string(), format!("must be between 1 and {MAX_PAGE}")));
    }
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        violations.push(("limit".to_string(), "must be between 1 and 100".to_string()));
    }
    let by_update_time = match query.sort_by.as_deref().map(str::trim) {
        None | Some("" | "createdAt" | "created_at") => false,
        Some("updatedAt" | "updated_at") => true,
        Some(other) => {
            violations.push((
                "sort_by".to_string(),
                format!("`{other}`: createdAt or updatedAt"),
            ));
            false
        }
    };
    let descending = match query.sort_order.as_deref().map(str::trim) {
        None | Some("" | "desc") => true,
        Some("asc") => false,
        Some(other) => {
            violations.push(("sort_order".to_string(), format!("`{other}`: asc or desc")));
            true
        }
    };
    let mut bound = |field: &str, text: &Option<String>| {
        text.as_deref().and_then(|t| match t.trim().parse::<Timestamp>() {
            Ok(ts) => Some(crate::api::convert::millis(&ts)),
            Err(_) => {
                violations.push((field.to_string(), format!("`{t}` is not an ISO 8601 time")));
                None
            }
        })
    };
    let created_after = bound("created_after", &query.created_after);
    let created_before = bound("created_before", &query.created_before);
    if !violations.is_empty() {
        return Err(ApiError::invalid(violations));
    }
    let filter = JobListFilter {
        states: Vec::new(),
        created_after,
        created_before,
        search: query.search.clone().filter(|s| !s.trim().is_empty()),
    };
    Ok((
        page,
        JobPage {
            filter,
            by_update_time,
            descending,
            after: None,
            limit,
            offset: (page - 1).saturating_mul(limit),
        },
    ))
}

/// Only the listed fields of an export (`?fields=id,status`); unknown names are
/// refused so a typo is not an empty object.
fn pick(view: &ExportView, fields: &[&str]) -> serde_json::Value {
    let value = serde_json::to_value(view).unwrap_or_default();
    match (fields, value) {
        ([], value) => value,
        (fields, serde_json::Value::Object(map)) => serde_json::Value::Object(
            map.into_iter()
                .filter(|(k, _)| fields.contains(&k.as_str()))
                .collect(),
        ),
        (_, value) => value,
    }
}

const FIELDS: [&str; 8] = [
    "id",
    "schema_id",
    "status",
    "start_date",
    "end_date",
    "expand_array",
    "createdAt",
    "updatedAt",
];

/// `GET /v1/exports` → `{data, meta}`.
#[utoipa::path(
    get,
    path = "/v1/exports",
    tag = "seed 001/004: /v1/exports",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of the organization's exports", body = ExportPage),
        (status = 400, description = "A bad query parameter", body = ErrorEnvelope),
        (status = "default", description = "Any other error, by the README's status table", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn list(
    State(state): State<RestState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, RestError> {
    let fail = |err: ApiError| RestError::new(err, &caller.request_id);
    let Query(query) = query.map_err(|rejection| fail(invalid("query", rejection.body_text())))?;
    let fields: Vec<&str> = query
        .fields
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .collect();
    if let Some(unknown) = fields.iter().find(|f| !FIELDS.contains(f)) {
        return Err(fail(invalid("fields", format!("unknown field `{unknown}`"))));
    }
    let (page, job_page) = page_of(&query).map_err(fail)?;
    let (jobs, total) = state
        .exports
        .queue()
        .list::<Export>(caller.principal.organization_id(), &job_page)
        .await
        .map_err(|e| fail(crate::export::service::ExportError::from(e).into()))?;
    let limit = job_page.limit;
    let body = ExportPage {
        data: jobs.iter().map(|job| pick(&view(job), &fields)).collect(),
        meta: ListMeta {
            page,
            limit,
            total,
            total_pages: (total + limit - 1) / limit,
        },
    };
    Ok(Json(body).into_response())
}

/// `{message}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    pub message: String,
}

/// `{url}`: the signed link to the file.
#[derive(Debug, Serialize, ToSchema)]
pub struct DownloadUrl {
    url: String,
}

/// `DELETE /v1/exports/{id}` → `{message}`.
#[utoipa::path(
    delete,
    path = "/v1/exports/{id}",
    tag = "seed 001/004: /v1/exports",
    params(("id" = String, Path, description = "The export's id")),
    responses(
        (status = 200, description = "Deleted (the file too)", body = Message),
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
        .exports
        .delete(caller.principal.organization_id(), id.trim(), &caller.actor())
        .await
        .map_err(|e| RestError::new(e, &caller.request_id))?;
    let message = Message {
        message: "Export deleted successfully".into(),
    };
    Ok(Json(message).into_response())
}

/// Whether the client asked for JSON and not for whatever comes (`*/*`, a browser):
/// seed 001's scripts that read `{url}` get 200, everyone else the redirect.
fn wants_json_only(headers: &HeaderMap) -> bool {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    accept.contains("application/json") && !accept.contains("*/*")
}

/// `GET /v1/exports/{id}/download` → 302 to the file with `{url}` in the body, or
/// 200 `{url}` for `Accept: application/json` alone.
#[utoipa::path(
    get,
    path = "/v1/exports/{id}/download",
    tag = "seed 001/004: /v1/exports",
    params(("id" = String, Path, description = "The export's id")),
    responses(
        (status = 302, description = "To the file (`Location`), with `{url}` in the body", body = DownloadUrl,
            headers(("Location" = String, description = "The signed link to the file"))),
        (status = 200, description = "`{url}`, for `Accept: application/json` without `*/*`", body = DownloadUrl),
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
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let link = state
        .exports
        .download(caller.principal.organization_id(), id.trim(), &caller.actor())
        .await
        .map_err(|e| RestError::new(e, &caller.request_id))?;
    let body = Json(DownloadUrl {
        url: link.url.clone(),
    });
    if wants_json_only(&headers) {
        return Ok(body.into_response());
    }
    Ok((StatusCode::FOUND, [(header::LOCATION, link.url.clone())], body).into_response())
}
