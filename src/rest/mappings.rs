//! Saved header mappings over REST (ferry's addition to seed 003, whose mappings
//! are "defined in the dashboard"): `/batch-import/mappings`, the same objects
//! `mappingId` names on an upload and MappingService serves over gRPC, through the
//! same domain service ([`crate::import::mappings`]).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{ErrorEnvelope, RestError};
use super::{RestState, body_error, invalid};
use crate::api::error::ApiError;
use crate::db::mappings::MappingRow;
use crate::import::mappings::{Change, columns_of, kind_named};

/// A saved mapping: custom header (normalised) -> platform column.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MappingView {
    id: String,
    name: String,
    /// `entity_person`, `entity_company` or `entity_mixed`.
    kind: String,
    columns: BTreeMap<String, String>,
    /// RFC 3339.
    create_time: String,
    update_time: String,
}

fn view(row: MappingRow) -> Result<MappingView, ApiError> {
    let columns = columns_of(&row)?;
    Ok(MappingView {
        create_time: crate::api::convert::iso(row.created_at),
        update_time: crate::api::convert::iso(row.updated_at),
        id: row.id,
        name: row.name,
        kind: row.kind,
        columns,
    })
}

/// The kind as a client spelled it: stored names, or the gRPC enum's.
fn kind_of(text: &str) -> Result<&'static str, ApiError> {
    kind_named(text).ok_or_else(|| invalid("kind", "must be entity_person, entity_company or entity_mixed"))
}

/// A new mapping.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMapping {
    /// 1 to 200 characters.
    name: String,
    /// `entity_person`, `entity_company` or `entity_mixed`.
    kind: String,
    /// Custom header -> platform column (`{"Documento": "tax_id"}`), 1 to 500.
    columns: BTreeMap<String, String>,
}

/// What to change; a field left out keeps its value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MappingChange {
    name: Option<String>,
    kind: Option<String>,
    /// Replaces the whole map.
    columns: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Mappings per page, 1 to 100 (default 100).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// The `meta.next` of the previous page.
    after: Option<String>,
}

/// A page of mappings, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct MappingPage {
    data: Vec<MappingView>,
    meta: MappingPageMeta,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MappingPageMeta {
    limit: i64,
    total: i64,
    /// Pass back as `?after=` for the next page; `null` on the last.
    next: Option<String>,
}

/// `GET /batch-import/mappings`: the organization's mappings, newest first.
#[utoipa::path(
    get,
    path = "/batch-import/mappings",
    tag = "seed 003: mappings",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of the saved mappings (ferry's addition)", body = MappingPage),
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
    let limit = query.limit.unwrap_or(100);
    if !(1..=100).contains(&limit) {
        return Err(fail(invalid("limit", "must be between 1 and 100")));
    }
    let before = match query.after.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            text.split_once('.')
                .and_then(|(created, id)| Some((created.parse().ok()?, id.to_string())))
                .ok_or_else(|| fail(invalid("after", "the `meta.next` of the previous page")))?,
        ),
    };
    let (mut rows, total) = state
        .mappings
        .list(caller.principal.organization_id(), before, limit + 1)
        .await
        .map_err(|e| fail(e.into()))?;
    let next = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|row| format!("{}.{}", row.created_at, row.id))
    } else {
        None
    };
    let data = rows
        .into_iter()
        .map(view)
        .collect::<Result<_, _>>()
        .map_err(fail)?;
    let page = MappingPage {
        data,
        meta: MappingPageMeta { limit, total, next },
    };
    Ok(Json(page).into_response())
}

/// `POST /batch-import/mappings`: saves a mapping → 201 with it.
#[utoipa::path(
    post,
    path = "/batch-import/mappings",
    tag = "seed 003: mappings",
    request_body = NewMapping,
    responses(
        (status = 201, description = "Saved (ferry's addition)", body = MappingView),
        (status = 400, description = "A bad name, kind or column (each named)", body = ErrorEnvelope),
        (status = "default", description = "Any other error, by the README's status table", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn create(
    State(state): State<RestState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<NewMapping>, JsonRejection>,
) -> Result<Response, RestError> {
    let fail = |err: ApiError| RestError::new(err, &caller.request_id);
    let Json(body) = body.map_err(|rejection| fail(body_error(rejection)))?;
    let kind = kind_of(&body.kind).map_err(fail)?;
    let row = state
        .mappings
        .create(&caller.actor(), &body.name, Some(kind), &body.columns)
        .await
        .map_err(|e| fail(e.into()))?;
    Ok((StatusCode::CREATED, Json(view(row).map_err(fail)?)).into_response())
}

/// `GET /batch-import/mappings/{mappingId}`.
#[utoipa::path(
    get,
    path = "/batch-import/mappings/{mappingId}",
    tag = "seed 003: mappings",
    params(("mappingId" = String, Path, description = "The mapping's id")),
    responses(
        (status = 200, description = "The mapping (ferry's addition)", body = MappingView),
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
    let fail = |err: ApiError| RestError::new(err, &caller.request_id);
    let row = state
        .mappings
        .get(caller.principal.organization_id(), &id)
        .await
        .map_err(|e| fail(e.into()))?;
    Ok(Json(view(row).map_err(fail)?).into_response())
}

/// `PATCH /batch-import/mappings/{mappingId}`: renames, re-kinds or re-maps.
#[utoipa::path(
    patch,
    path = "/batch-import/mappings/{mappingId}",
    tag = "seed 003: mappings",
    params(("mappingId" = String, Path, description = "The mapping's id")),
    request_body = MappingChange,
    responses(
        (status = 200, description = "Changed (ferry's addition): the mapping as it is now", body = MappingView),
        (status = 400, description = "A bad name, kind or column (each named)", body = ErrorEnvelope),
        (status = 404, description = "Unknown, or another organization's", body = ErrorEnvelope),
        (status = "default", description = "Any other error, by the README's status table", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn update(
    State(state): State<RestState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<MappingChange>, JsonRejection>,
) -> Result<Response, RestError> {
    let fail = |err: ApiError| RestError::new(err, &caller.request_id);
    let Json(body) = body.map_err(|rejection| fail(body_error(rejection)))?;
    let kind = match body.kind.as_deref() {
        Some(text) => Some(Some(kind_of(text).map_err(fail)?)),
        None => None,
    };
    let change = Change {
        name: body.name,
        kind,
        columns: body.columns,
    };
    let row = state
        .mappings
        .update(&caller.actor(), &id, change)
        .await
        .map_err(|e| fail(e.into()))?;
    Ok(Json(view(row).map_err(fail)?).into_response())
}

/// `DELETE /batch-import/mappings/{mappingId}` → 204. Imports already queued
/// with it keep the map they were given.
#[utoipa::path(
    delete,
    path = "/batch-import/mappings/{mappingId}",
    tag = "seed 003: mappings",
    params(("mappingId" = String, Path, description = "The mapping's id")),
    responses(
        (status = 204, description = "Deleted (ferry's addition)"),
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
        .mappings
        .delete(&caller.actor(), &id)
        .await
        .map_err(|e| RestError::new(ApiError::from(e), &caller.request_id))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
