//! The hub's exports page: the organization's latest exports, followed live, each
//! downloadable once completed, and a form that creates one (format and filters).
//! The form becomes the gRPC `CreateExportRequest` and goes through the same
//! checks (`api::export::spec_of`) and domain call as CreateExport.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::HubState;
use super::pages::{
    LIST_EXPORTS, LISTED, Names, Visitor, events_path, for_people, html, latest, refused, started_by,
    starters, visitor,
};
use super::security::same_origin;
use crate::api::error::ApiError;
use crate::auth::AuthError;
use crate::export::ExportError;
use crate::export::spec::Export;
use crate::jobs::Job;
use crate::proto;

const CREATE_EXPORT: &str = "/ferry.v1.ExportService/CreateExport";
const DOWNLOAD: &str = "/ferry.v1.ExportService/GetExportDownload";
const WATCH_EXPORT: &str = "/ferry.v1.ExportService/WatchExport";

/// An export as a row of the page shows it.
#[derive(Serialize)]
struct ExportRow {
    id: String,
    name: String,
    format: String,
    state: &'static str,
    active: bool,
    percent: i64,
    done: i64,
    total: String,
    created_at: String,
    started: String,
    /// Who created it: the key's name, or the token's or certificate's principal.
    started_by: String,
    downloadable: bool,
    error: String,
}

fn export_row(job: &Job<Export>, names: &Names) -> ExportRow {
    let message = crate::api::export::export_message(job, &[]);
    let progress = message.progress.unwrap_or_default();
    let format = proto::ExportFormat::try_from(message.format)
        .map(|f| {
            f.as_str_name()
                .trim_start_matches("EXPORT_FORMAT_")
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    ExportRow {
        id: message.id,
        name: message.file_name,
        format,
        state: job.row.state.as_str(),
        active: !job.row.is_terminal(),
        percent: progress.percent.round() as i64,
        done: progress.rows_done,
        total: progress
            .rows_total
            .map(|t| t.to_string())
            .unwrap_or_else(|| "…".into()),
        created_at: crate::api::convert::iso(job.row.created_at),
        started: for_people(&crate::api::convert::iso(job.row.created_at)),
        started_by: started_by(&job.row, names),
        downloadable: job.row.state == crate::jobs::JobState::Completed,
        error: message.error.map(|status| status.message).unwrap_or_default(),
    }
}

/// The create form as it was sent (shown again with its problems).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct ExportForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    format: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    countries: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    search: String,
    #[serde(default)]
    columns: String,
}

fn list(text: &str) -> Vec<String> {
    text.split([',', ';', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The form as the gRPC request it stands for; a value no request could hold is
/// named here, the rest by CreateExport's own checks.
fn request_of(form: &ExportForm) -> Result<proto::CreateExportRequest, ApiError> {
    let format = match form.format.as_str() {
        "" | "csv" => proto::ExportFormat::Csv,
        "xlsx" => proto::ExportFormat::Xlsx,
        "json" => proto::ExportFormat::Json,
        "ndjson" => proto::ExportFormat::Ndjson,
        "parquet" => proto::ExportFormat::Parquet,
        "avro" => proto::ExportFormat::Avro,
        other => {
            return Err(ApiError::invalid(vec![(
                "format".into(),
                format!("`{other}` is not a format"),
            )]));
        }
    };
    let mut filter = proto::EntityFilter {
        countries: list(&form.countries),
        search: form.search.trim().to_string(),
        ..Default::default()
    };
    match form.kind.as_str() {
        "" => {}
        "person" => filter.types = vec![proto::EntityType::Person as i32],
        "company" => filter.types = vec![proto::EntityType::Company as i32],
        other => {
            return Err(ApiError::invalid(vec![(
                "type".into(),
                format!("`{other}`: person or company"),
            )]));
        }
    }
    if !form.status.is_empty() {
        let name = format!("ENTITY_STATUS_{}", form.status.to_ascii_uppercase());
        let status = proto::EntityStatus::from_str_name(&name).ok_or_else(|| {
            ApiError::invalid(vec![(
                "status".into(),
                format!("`{}` is not a status", form.status),
            )])
        })?;
        filter.statuses = vec![status as i32];
    }
    Ok(proto::CreateExportRequest {
        filter: Some(filter),
        columns: list(&form.columns),
        format: format as i32,
        ..Default::default()
    })
}

async fn page(
    state: &HubState,
    visitor: &Visitor,
    form: &ExportForm,
    errors: &[(String, String)],
) -> Response {
    let org = visitor.principal.organization_id().to_string();
    let (jobs, total) = match state.rest.exports.queue().list::<Export>(&org, &latest()).await {
        Ok(listed) => listed,
        Err(err) => return refused(state, Some(visitor.frame()), ExportError::from(err).into()),
    };
    let names = starters(state, jobs.iter().map(|job| &*job.row)).await;
    let rows: Vec<ExportRow> = jobs.iter().map(|job| export_row(job, &names)).collect();
    let live: Vec<&str> = rows.iter().filter(|r| r.active).map(|r| r.id.as_str()).collect();
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let body = state.templates.render(
        "exports.html",
        &context! {
            title => "Exports",
            current => "exports",
            frame => visitor.frame(),
            may_create => visitor.may(CREATE_EXPORT),
            may_download => visitor.may(DOWNLOAD),
            rows,
            total,
            listed => LISTED,
            events => events_path(state, visitor, crate::rest::events::Kind::Export, WATCH_EXPORT, &live),
            live => live.join(","),
            form,
            errors => errors.iter().map(|(field, message)| context! { field, message }).collect::<Vec<_>>(),
        },
    );
    html(status, body)
}

/// `GET /hub/exports`.
pub async fn exports(State(state): State<HubState>, headers: HeaderMap) -> Response {
    match visitor(&state, &headers, LIST_EXPORTS).await {
        Ok(visitor) => page(&state, &visitor, &ExportForm::default(), &[]).await,
        Err(response) => response,
    }
}

/// `POST /hub/exports`: queues an export as CreateExport does, then back to the
/// list (where it is followed live); a refused form is shown again with why.
pub async fn create(
    State(state): State<HubState>,
    headers: HeaderMap,
    Form(form): Form<ExportForm>,
) -> Response {
    let visitor = match visitor(&state, &headers, CREATE_EXPORT).await {
        Ok(visitor) => visitor,
        Err(response) => return response,
    };
    if !same_origin(&headers) || !visitor.csrf_matches(&form.csrf) {
        return refused(&state, Some(visitor.frame()), AuthError::CsrfTokenInvalid.into());
    }
    let created = match request_of(&form).and_then(|request| crate::api::export::spec_of(&request)) {
        Ok(spec) => state
            .rest
            .exports
            .create(
                &visitor.principal.organization,
                spec,
                None,
                Some(visitor.actor("POST /hub/exports")),
            )
            .await
            .map_err(ApiError::from),
        Err(err) => Err(err),
    };
    match created {
        Ok(_) => Redirect::to("/hub/exports").into_response(),
        Err(err) if !err.violations.is_empty() => page(&state, &visitor, &form, &err.violations).await,
        Err(err) => page(&state, &visitor, &form, &[(String::new(), err.message)]).await,
    }
}

/// `GET /hub/exports/{id}/download`: the file, through a fresh signed link
/// (recorded in the audit trail like GetExportDownload).
pub async fn download(State(state): State<HubState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let visitor = match visitor(&state, &headers, DOWNLOAD).await {
        Ok(visitor) => visitor,
        Err(response) => return response,
    };
    let org = visitor.principal.organization_id().to_string();
    let actor = visitor.actor("GET /hub/exports/{id}/download");
    match state.rest.exports.download(&org, id.trim(), &actor).await {
        Ok(link) => Redirect::to(&link.url).into_response(),
        Err(err) => refused(&state, Some(visitor.frame()), err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_becomes_the_create_export_request() {
        let form = ExportForm {
            format: "parquet".into(),
            kind: "company".into(),
            countries: "AR, br".into(),
            status: "under_review".into(),
            columns: "tax_id,name".into(),
            ..Default::default()
        };
        let request = request_of(&form).expect("request");
        assert_eq!(request.format, proto::ExportFormat::Parquet as i32);
        let filter = request.filter.expect("filter");
        assert_eq!(filter.countries, ["AR", "br"]);
        assert_eq!(filter.types, [proto::EntityType::Company as i32]);
        assert_eq!(filter.statuses, [proto::EntityStatus::UnderReview as i32]);
        assert_eq!(request.columns, ["tax_id", "name"]);
        let bad = ExportForm {
            status: "sleepy".into(),
            ..Default::default()
        };
        assert_eq!(request_of(&bad).expect_err("refused").violations[0].0, "status");
    }
}
