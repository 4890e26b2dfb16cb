//! The hub's mapping editor: the organization's saved header mappings listed, and
//! one page that makes or changes one. A person picks a file in their own layout;
//! its headers come back from the REST preview (the import's own code) with what
//! each does today, and each can be sent to a platform column, suggested by name,
//! alias or the organization's earlier mappings. Every change previews the first
//! rows again as they would be stored (the preview with the draft map), and saving
//! is a REST call (`POST` or `PATCH /batch-import/mappings`), so the checks and
//! errors are the REST door's and gRPC's own.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::HubState;
use super::pages::{LIST_MAPPINGS, for_people, html, refused, visitor};
use crate::db::mappings::MappingRow;
use crate::import::headers::PLATFORM;
use crate::import::mapping::KINDS;
use crate::import::mappings::columns_of;
use crate::import::preview::{Column, column};

const GET_MAPPING: &str = "/ferry.v1.MappingService/GetMapping";
const CREATE_MAPPING: &str = "/ferry.v1.MappingService/CreateMapping";
const UPDATE_MAPPING: &str = "/ferry.v1.MappingService/UpdateMapping";
const DELETE_MAPPING: &str = "/ferry.v1.MappingService/DeleteMapping";
const UPLOAD_IMPORT: &str = "/ferry.v1.ImportService/UploadImport";

/// Mappings listed on one page (the newest first).
const LISTED: i64 = 100;
/// Saved mappings whose headers are offered as suggestions.
const SUGGESTING: i64 = 100;

#[derive(Serialize)]
struct MappingItem {
    id: String,
    name: String,
    kind: String,
    columns: usize,
    updated: String,
}

fn item(row: &MappingRow) -> MappingItem {
    MappingItem {
        id: row.id.clone(),
        name: row.name.clone(),
        kind: row.kind.clone(),
        columns: columns_of(row).map(|c| c.len()).unwrap_or_default(),
        updated: for_people(&crate::api::convert::iso(row.updated_at)),
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    deleted: Option<String>,
}

/// `GET /hub/mappings`: the saved mappings, each opening its editor.
pub async fn list(
    State(state): State<HubState>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    let visitor = match visitor(&state, &headers, LIST_MAPPINGS).await {
        Ok(visitor) => visitor,
        Err(response) => return response,
    };
    let org = visitor.principal.organization_id().to_string();
    let (rows, total) = match state.rest.mappings.list(&org, None, LISTED).await {
        Ok(listed) => listed,
        Err(err) => return refused(&state, Some(visitor.frame()), err.into()),
    };
    let items: Vec<MappingItem> = rows.iter().map(item).collect();
    let body = state.templates.render(
        "mappings.html",
        &context! {
            title => "Column mappings",
            current => "mappings",
            frame => visitor.frame(),
            items,
            total,
            listed => LISTED,
            may_create => visitor.may(CREATE_MAPPING),
            deleted => query.deleted.is_some(),
        },
    );
    html(StatusCode::OK, body)
}

/// One header of the editor: the header as saved (or from a file) and its column.
#[derive(Serialize)]
struct EditorColumn {
    header: String,
    target: String,
    /// What the import does with it, as the page's script words it.
    result: String,
}

/// `tax_id (by this mapping): …`, as `hub.js` shows a previewed header.
fn result_of(column: &Column) -> String {
    if column.how == "not_imported" {
        return format!("Not imported: {}", column.note);
    }
    format!("{} (by this mapping)", column.goes_to)
}

/// The editor's page: empty for a new mapping, filled for a saved one.
fn editor(
    state: &HubState,
    visitor: &super::pages::Visitor,
    known: String,
    saved: Option<MappingRow>,
    notice: &str,
) -> Response {
    let (columns, mapping) = match &saved {
        Some(row) => {
            let map = columns_of(row).unwrap_or_default();
            let columns: Vec<EditorColumn> = map
                .iter()
                .map(|(header, target)| EditorColumn {
                    header: header.clone(),
                    target: target.clone(),
                    result: result_of(&column(header, &map)),
                })
                .collect();
            (columns, Some(item(row)))
        }
        None => (Vec::new(), None),
    };
    let title = match &mapping {
        Some(m) => format!("Mapping {}", m.name),
        None => "New column mapping".to_string(),
    };
    let may_save = match &mapping {
        Some(_) => visitor.may(UPDATE_MAPPING),
        None => visitor.may(CREATE_MAPPING),
    };
    let body = state.templates.render(
        "mapping.html",
        &context! {
            title,
            current => "mappings",
            frame => visitor.frame(),
            mapping,
            columns,
            kinds => KINDS,
            targets => PLATFORM,
            known,
            may_save,
            may_delete => mapping.is_some() && visitor.may(DELETE_MAPPING),
            may_import => visitor.may(UPLOAD_IMPORT),
            notice,
        },
    );
    html(StatusCode::OK, body)
}

/// The organization's earlier answers (normalised header -> column) as JSON for
/// the page's suggestions; none when they cannot be read.
async fn known(state: &HubState, org: &str) -> String {
    let known = state
        .rest
        .mappings
        .known_headers(org, SUGGESTING)
        .await
        .unwrap_or_default();
    serde_json::to_string(&known).unwrap_or_else(|_| "{}".into())
}

/// `GET /hub/mappings/new`: the editor for a new mapping.
pub async fn new(State(state): State<HubState>, headers: HeaderMap) -> Response {
    let visitor = match visitor(&state, &headers, CREATE_MAPPING).await {
        Ok(visitor) => visitor,
        Err(response) => return response,
    };
    let known = known(&state, visitor.principal.organization_id()).await;
    editor(&state, &visitor, known, None, "")
}

#[derive(Deserialize)]
pub struct EditQuery {
    saved: Option<String>,
}

/// `GET /hub/mappings/{id}`: a saved mapping in the editor, to rename, re-map or
/// delete.
pub async fn edit(
    State(state): State<HubState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<EditQuery>,
) -> Response {
    let visitor = match visitor(&state, &headers, GET_MAPPING).await {
        Ok(visitor) => visitor,
        Err(response) => return response,
    };
    let org = visitor.principal.organization_id().to_string();
    let row = match state.rest.mappings.get(&org, &id).await {
        Ok(row) => row,
        Err(err) => return refused(&state, Some(visitor.frame()), err.into()),
    };
    let known = known(&state, &org).await;
    let notice = if query.saved.is_some() { "Saved." } else { "" };
    editor(&state, &visitor, known, Some(row), notice)
}
