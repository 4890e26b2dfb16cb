//! The hub's pages: sign in and out, the imports list with its upload form, and one
//! import's page. Each page authorises its person for the gRPC method it stands for
//! (the one permission table), reads through the domain services and renders a
//! template; what a page does is a REST call made by `hub.js` with the session.

use axum::Form;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::HubState;
use super::security::same_origin;
use crate::api::error::ApiError;
use crate::audit::{Actor, Door};
use crate::auth::sessions::{self, Session};
use crate::auth::{AuthError, Principal};
use crate::db::jobs::{JobListFilter, JobPage};
use crate::import::service::ImportError;
use crate::import::spec::Import;
use crate::jobs::Job;

const WHO_AM_I: &str = "/ferry.v1.AccountService/WhoAmI";
const LIST_IMPORTS: &str = "/ferry.v1.ImportService/ListImports";
const WATCH_IMPORT: &str = "/ferry.v1.ImportService/WatchImport";
const GET_IMPORT: &str = "/ferry.v1.ImportService/GetImport";
const UPLOAD_IMPORT: &str = "/ferry.v1.ImportService/UploadImport";
const CANCEL_IMPORT: &str = "/ferry.v1.ImportService/CancelImport";
const LIST_ERRORS: &str = "/ferry.v1.ImportService/ListImportErrors";
pub(super) const LIST_MAPPINGS: &str = "/ferry.v1.MappingService/ListMappings";
/// Saved mappings offered in the upload form (the newest first).
const MAPPINGS_LISTED: i64 = 100;
const ERROR_REPORT: &str = "/ferry.v1.ImportService/GetImportErrorReport";
pub(super) const LIST_EXPORTS: &str = "/ferry.v1.ExportService/ListExports";

/// Jobs listed on the imports and exports pages (the most recent first).
pub(super) const LISTED: i64 = 50;

/// The page of jobs the imports and exports pages list: the latest [`LISTED`].
pub(super) fn latest() -> JobPage {
    JobPage {
        filter: JobListFilter::default(),
        by_update_time: false,
        descending: true,
        after: None,
        limit: LISTED,
        offset: 0,
    }
}
/// Failed rows shown per page of an import.
const ERRORS_PER_PAGE: i64 = 50;

/// A signed-in person on a page they may see.
pub(super) struct Visitor {
    pub(super) principal: Principal,
    session: Session,
    request_id: String,
}

impl Visitor {
    pub(super) fn actor(&self, route: &str) -> Actor {
        Actor::of(&self.principal, Door::Hub, route, &self.request_id)
    }

    /// Whether this person's key may call `method` (the gRPC permission table).
    /// Whether a form sent this session's CSRF token.
    pub(super) fn csrf_matches(&self, sent: &str) -> bool {
        self.session.csrf_matches(sent)
    }

    pub(super) fn may(&self, method: &str) -> bool {
        crate::auth::permissions::allows(&self.principal, method)
    }

    /// What every page's frame shows: the organization, the pages the key may use,
    /// and the CSRF token forms send back.
    pub(super) fn frame(&self) -> Frame {
        Frame {
            organization: self.principal.organization.name.clone(),
            imports: self.may(LIST_IMPORTS),
            mappings: self.may(LIST_MAPPINGS),
            exports: self.may(LIST_EXPORTS),
            csrf: self.session.csrf.clone(),
        }
    }
}

#[derive(Serialize)]
pub(super) struct Frame {
    organization: String,
    imports: bool,
    mappings: bool,
    exports: bool,
    csrf: String,
}

pub(super) fn html(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// Back to the sign-in page, the session cookie removed; `why` is said there.
fn to_sign_in(state: &HubState, why: Option<&str>) -> Response {
    let target = match why {
        Some(why) => format!("/hub?ended={why}"),
        None => "/hub".to_string(),
    };
    let mut response = Redirect::to(&target).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, sessions::clear_cookie(state.secure));
    response
}

/// The page for a refusal or a failure, inside the frame when the person is known.
pub(super) fn refused(state: &HubState, frame: Option<Frame>, error: ApiError) -> Response {
    let status = crate::rest::error::status_of(&error);
    if status.is_server_error() {
        tracing::error!(reason = %error.reason, message = %error.message, "hub page failed");
    }
    let body = state.templates.render(
        "refused.html",
        &context! { title => "Not available", frame, reason => error.reason, message => error.message },
    );
    html(status, body)
}

/// The person signed in with this request's cookie, allowed `method`; otherwise
/// the answer to give instead (the sign-in page, or a refusal naming the missing
/// permission). The key is checked anew on every page, so a revoked key's session
/// ends within the auth cache's bound.
pub(super) async fn visitor(
    state: &HubState,
    headers: &HeaderMap,
    method: &str,
) -> Result<Visitor, Response> {
    let Some(id) = sessions::cookie_of(headers) else {
        return Err(to_sign_in(state, None));
    };
    let Some(session) = state.rest.sessions.touch(&id) else {
        return Err(to_sign_in(state, Some("idle")));
    };
    let request_id = crate::server::observe::request_id_of(headers);
    let auth = &state.rest.auth;
    match auth.authorize(method, &session.credentials(), None).await {
        Ok(principal) => {
            let visitor = Visitor {
                principal,
                session,
                request_id,
            };
            match state.rest.admission.admit(method, &visitor.principal) {
                // Pages are short reads: the slot is held for the admission's check
                // (rate and overload), not for the render.
                Ok(_slot) => Ok(visitor),
                Err(refusal) => Err(refused(state, Some(visitor.frame()), refusal.into())),
            }
        }
        Err(err) if err.ends_sessions() => {
            state.rest.sessions.end(&id);
            Err(to_sign_in(state, Some("key")))
        }
        Err(err @ AuthError::MissingPermission(_)) => {
            let frame = match auth.authorize(WHO_AM_I, &session.credentials(), None).await {
                Ok(principal) => Some(
                    Visitor {
                        principal,
                        session,
                        request_id,
                    }
                    .frame(),
                ),
                Err(_) => None,
            };
            Err(refused(state, frame, err.into()))
        }
        Err(err) => Err(refused(state, None, err.into())),
    }
}

#[derive(Deserialize)]
pub struct HomeQuery {
    ended: Option<String>,
}

/// `GET /hub`: the sign-in page, or the imports page for a signed-in person.
pub async fn home(
    State(state): State<HubState>,
    headers: HeaderMap,
    Query(query): Query<HomeQuery>,
) -> Response {
    let signed_in = sessions::cookie_of(&headers).is_some_and(|id| state.rest.sessions.touch(&id).is_some());
    if signed_in {
        return Redirect::to("/hub/imports").into_response();
    }
    let notice = match query.ended.as_deref() {
        Some("idle") => "Your session ended after a time without use. Sign in again.",
        Some("key") => "Your key no longer works (revoked or expired). Sign in with a valid key.",
        Some("out") => "You are signed out.",
        _ => "",
    };
    sign_in_page(&state, StatusCode::OK, notice, "", "")
}

fn sign_in_page(
    state: &HubState,
    status: StatusCode,
    notice: &str,
    error: &str,
    organization: &str,
) -> Response {
    let body = state.templates.render(
        "sign_in.html",
        &context! { title => "Sign in", notice, error, organization },
    );
    html(status, body)
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    organization: String,
}

/// `POST /hub/sign-in`: checks the key (or token) as any call would, then opens a
/// session; the key stays on the server.
pub async fn sign_in(
    State(state): State<HubState>,
    ConnectInfo(peer): ConnectInfo<crate::request::Peer>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let organization = form.organization.trim().to_string();
    if let (Some(limit), Some(remote)) = (state.sign_ins.as_ref(), peer.remote)
        && let Err(wait) = limit.attempt(remote.ip())
    {
        let seconds = wait.as_secs().max(1);
        let mut response = sign_in_page(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            "",
            &format!("Too many sign-in attempts from your address: try again in {seconds} s."),
            &organization,
        );
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    if !same_origin(&headers) {
        return sign_in_page(
            &state,
            StatusCode::FORBIDDEN,
            "",
            "This sign-in did not come from this page.",
            "",
        );
    }
    let key = form.key.trim();
    if key.is_empty() {
        return sign_in_page(
            &state,
            StatusCode::BAD_REQUEST,
            "",
            "Enter your API key.",
            &organization,
        );
    }
    let credential = format!("Bearer {key}");
    let mut credentials = HeaderMap::new();
    match HeaderValue::from_str(&credential) {
        Ok(value) => credentials.insert(header::AUTHORIZATION, value),
        Err(_) => {
            return sign_in_page(
                &state,
                StatusCode::UNAUTHORIZED,
                "",
                "That is not an API key.",
                &organization,
            );
        }
    };
    if !organization.is_empty()
        && let Ok(value) = HeaderValue::from_str(&organization)
    {
        credentials.insert("x-organization-id", value);
    }
    match state.rest.auth.authorize(WHO_AM_I, &credentials, None).await {
        Ok(_) => {
            let id = state.rest.sessions.open(credential, organization);
            let mut response = Redirect::to("/hub/imports").into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, sessions::set_cookie(&id, state.secure));
            response
        }
        Err(err) => {
            let error = ApiError::from(err);
            let status = crate::rest::error::status_of(&error);
            sign_in_page(&state, status, "", &error.message, &organization)
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /hub/sign-out`: ends the session (with its token: another site cannot
/// sign a person out).
pub async fn sign_out(
    State(state): State<HubState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(id) = sessions::cookie_of(&headers)
        && let Some(session) = state.rest.sessions.touch(&id)
    {
        if !same_origin(&headers) || !session.csrf_matches(&form.csrf) {
            return refused(&state, None, AuthError::CsrfTokenInvalid.into());
        }
        state.rest.sessions.end(&id);
    }
    to_sign_in(&state, Some("out"))
}

/// An import as a page row shows it.
#[derive(Serialize)]
struct ImportRow {
    id: String,
    file_name: String,
    /// queued, running, completed, failed or cancelled.
    state: &'static str,
    active: bool,
    validate_only: bool,
    total: i64,
    processed: i64,
    percent: i64,
    created: i64,
    updated: i64,
    unchanged: i64,
    failed: i64,
    created_at: String,
    /// `2026-12-07 15:46 UTC`, for people.
    started: String,
    /// Who uploaded it: the key's name, or the token's or certificate's principal.
    started_by: String,
    /// The import whose failed rows this one fixes.
    fixes: String,
    error: String,
}

/// A moment as people read it, to the minute, in UTC.
pub(super) fn for_people(iso: &str) -> String {
    match (iso.get(..10), iso.get(11..16)) {
        (Some(day), Some(time)) => format!("{day} {time} UTC"),
        _ => iso.to_string(),
    }
}

/// The signed events path following `live` (the first [`MAX_IDS`] of them) when
/// the visitor may watch jobs of `kind` (`watch`, the Watch method): the page opens
/// the stream at once instead of asking for a URL first. Empty when nothing is
/// live or the key may not watch.
///
/// [`MAX_IDS`]: crate::rest::events::MAX_IDS
pub(super) fn events_path(
    state: &HubState,
    visitor: &Visitor,
    kind: crate::rest::events::Kind,
    watch: &str,
    live: &[&str],
) -> String {
    if live.is_empty() || !visitor.may(watch) {
        return String::new();
    }
    let ids: Vec<String> = live
        .iter()
        .take(crate::rest::events::MAX_IDS)
        .map(|id| id.to_string())
        .collect();
    crate::rest::events::signed_path(&state.rest, kind, visitor.principal.organization_id(), &ids).0
}

/// The names of the keys that queued `jobs` (key id -> name), for
/// [`started_by`]. The names are a courtesy: a failed lookup shows the principals
/// themselves.
pub(super) async fn starters<'a>(
    state: &HubState,
    jobs: impl IntoIterator<Item = &'a crate::db::jobs::JobRow>,
) -> Names {
    let principals: Vec<String> = jobs
        .into_iter()
        .filter_map(|row| row.created_by.clone())
        .collect();
    match crate::auth::keys::key_names(state.rest.imports.queue().db(), principals).await {
        Ok(names) => names,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the names of the keys that started jobs");
            Names::new()
        }
    }
}

/// Key id -> the key's name.
pub(super) type Names = std::collections::HashMap<String, String>;

/// Who started `row`: its key's name, else its principal (`jwt:…`, `cert:…`).
pub(super) fn started_by(row: &crate::db::jobs::JobRow, names: &Names) -> String {
    row.created_by
        .as_ref()
        .map(|p| names.get(p).cloned().unwrap_or_else(|| p.clone()))
        .unwrap_or_default()
}

fn import_row(job: &Job<Import>, names: &Names) -> ImportRow {
    let message = crate::api::import::import_message(job);
    let percent = message.progress.as_ref().map(|p| p.percent).unwrap_or_default();
    ImportRow {
        id: message.id,
        file_name: message.file_name,
        state: job.row.state.as_str(),
        active: !job.row.is_terminal(),
        validate_only: message.options.as_ref().is_some_and(|o| o.validate_only),
        total: message.total_items,
        processed: message.processed_items,
        percent: percent.round() as i64,
        created: message.created_items,
        updated: message.updated_items,
        unchanged: message.unchanged_items,
        failed: message.failed_items,
        created_at: crate::api::convert::iso(job.row.created_at),
        started: for_people(&crate::api::convert::iso(job.row.created_at)),
        started_by: started_by(&job.row, names),
        fixes: message
            .options
            .as_ref()
            .map(|o| o.fixes_import_id.clone())
            .unwrap_or_default(),
        error: message.error.map(|status| status.message).unwrap_or_default(),
    }
}

/// `GET /hub/imports`: the upload form (for a key that may import) and the
/// organization's latest imports, updated live.
pub async fn imports(State(state): State<HubState>, headers: HeaderMap) -> Response {
    let visitor = match visitor(&state, &headers, LIST_IMPORTS).await {
        Ok(visitor) => visitor,
        Err(response) => return response,
    };
    let org = visitor.principal.organization_id().to_string();
    let (jobs, total) = match state.rest.imports.queue().list::<Import>(&org, &latest()).await {
        Ok(listed) => listed,
        Err(err) => return refused(&state, Some(visitor.frame()), ImportError::from(err).into()),
    };
    let names = starters(&state, jobs.iter().map(|job| &*job.row)).await;
    let rows: Vec<ImportRow> = jobs.iter().map(|job| import_row(job, &names)).collect();
    let live: Vec<&str> = rows.iter().filter(|r| r.active).map(|r| r.id.as_str()).collect();
    let mappings: Vec<_> = if visitor.may(LIST_MAPPINGS) {
        match state.rest.mappings.list(&org, None, MAPPINGS_LISTED).await {
            Ok((rows, _)) => rows
                .into_iter()
                .map(|m| context! { id => m.id, name => m.name, kind => m.kind })
                .collect(),
            Err(err) => return refused(&state, Some(visitor.frame()), err.into()),
        }
    } else {
        Vec::new()
    };
    let body = state.templates.render(
        "imports.html",
        &context! {
            title => "Imports",
            frame => visitor.frame(),
            may_upload => visitor.may(UPLOAD_IMPORT),
            rows,
            total,
            listed => LISTED,
            events => events_path(&state, &visitor, crate::rest::events::Kind::Import, WATCH_IMPORT, &live),
            live => live.join(","),
            mappings,
            max_upload_mb => state.rest.imports.max_upload_bytes() / (1024 * 1024),
        },
    );
    html(StatusCode::OK, body)
}

#[derive(Deserialize)]
pub struct ErrorsQuery {
    after: Option<String>,
}

#[derive(Serialize)]
struct FailedRow {
    line: i64,
    column: String,
    code: String,
    message: String,
    value: String,
}

/// `GET /hub/imports/{id}`: one import's counters, notices and failed rows, page by
/// page (`?after=<line>.<seq>`), updated live while it runs.
pub async fn import(
    State(state): State<HubState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<ErrorsQuery>,
) -> Response {
    let visitor = match visitor(&state, &headers, GET_IMPORT).await {
        Ok(visitor) => visitor,
        Err(response) => return response,
    };
    let org = visitor.principal.organization_id().to_string();
    let id = id.trim();
    let job = match state.rest.imports.queue().get::<Import>(&org, id).await {
        Ok(job) => job,
        Err(err) => return refused(&state, Some(visitor.frame()), ImportError::from(err).into()),
    };
    let after = query
        .after
        .as_deref()
        .and_then(|text| text.split_once('.'))
        .and_then(|(line, seq)| Some((line.parse().ok()?, seq.parse().ok()?)));
    let (mut failed, failed_total) = if visitor.may(LIST_ERRORS) {
        match state
            .rest
            .imports
            .errors(&org, id, after, ERRORS_PER_PAGE + 1)
            .await
        {
            Ok(page) => page,
            Err(err) => return refused(&state, Some(visitor.frame()), err.into()),
        }
    } else {
        (Vec::new(), 0)
    };
    let next = if failed.len() as i64 > ERRORS_PER_PAGE {
        failed.truncate(ERRORS_PER_PAGE as usize);
        failed.last().map(|row| format!("{}.{}", row.line, row.seq))
    } else {
        None
    };
    let failed: Vec<FailedRow> = failed
        .into_iter()
        .map(|row| FailedRow {
            line: row.line,
            column: row.column_name,
            code: row.code,
            message: row.message,
            value: row.raw_value,
        })
        .collect();
    let message = crate::api::import::import_message(&job);
    let notices: Vec<FailedRow> = message
        .notices
        .iter()
        .map(|n| FailedRow {
            line: n.line,
            column: n.column.clone(),
            code: n.code.clone(),
            message: n.message.clone(),
            value: String::new(),
        })
        .collect();
    let names = starters(&state, [&*job.row]).await;
    let row = import_row(&job, &names);
    let live: Vec<&str> = if row.active {
        vec![row.id.as_str()]
    } else {
        Vec::new()
    };
    let events = events_path(
        &state,
        &visitor,
        crate::rest::events::Kind::Import,
        WATCH_IMPORT,
        &live,
    );
    let body = state.templates.render(
        "import.html",
        &context! {
            title => format!("Import {}", row.file_name),
            frame => visitor.frame(),
            events,
            job => row,
            notices,
            failed,
            failed_total,
            next,
            first_page => after.is_none(),
            may_cancel => visitor.may(CANCEL_IMPORT),
            may_report => visitor.may(ERROR_REPORT) && message.has_error_report,
            may_fix => visitor.may(ERROR_REPORT) && visitor.may(UPLOAD_IMPORT) && message.has_error_report,
        },
    );
    html(StatusCode::OK, body)
}

/// `GET /hub/imports/{id}/report`: the error report, through a fresh signed link
/// (recorded in the audit trail like GetImportErrorReport).
pub async fn report(State(state): State<HubState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let visitor = match visitor(&state, &headers, ERROR_REPORT).await {
        Ok(visitor) => visitor,
        Err(response) => return response,
    };
    let org = visitor.principal.organization_id().to_string();
    let actor = visitor.actor("GET /hub/imports/{id}/report");
    match state.rest.imports.report(&org, id.trim(), &actor).await {
        Ok(link) => Redirect::to(&link.url).into_response(),
        Err(err) => refused(&state, Some(visitor.frame()), err.into()),
    }
}

/// Failed rows offered for fixing on one page.
const FIXABLE: usize = 200;

/// `GET /hub/imports/{id}/fix`: the import's failed rows (from its error report)
/// as editable cells, each problem beside its row; `hub.js` uploads the rows the
/// person changed as a new import with the first one's options, linked to it
/// (`fixesImportId`).
pub async fn fix(State(state): State<HubState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let visitor = match visitor(&state, &headers, ERROR_REPORT).await {
        Ok(visitor) => visitor,
        Err(response) => return response,
    };
    if !visitor.may(UPLOAD_IMPORT) {
        let missing = AuthError::MissingPermission(crate::auth::Permission::EntitiesBulkImport);
        return refused(&state, Some(visitor.frame()), missing.into());
    }
    let org = visitor.principal.organization_id().to_string();
    let id = id.trim();
    let job = match state.rest.imports.queue().get::<Import>(&org, id).await {
        Ok(job) => job,
        Err(err) => return refused(&state, Some(visitor.frame()), ImportError::from(err).into()),
    };
    let (columns, rows) = match state.rest.imports.failed_rows(&org, id, FIXABLE).await {
        Ok(report) => report,
        Err(err) => return refused(&state, Some(visitor.frame()), err.into()),
    };
    let message = crate::api::import::import_message(&job);
    let options = message.options.unwrap_or_default();
    // The first import's options, as the REST form names them.
    let mode = match crate::proto::ImportMode::try_from(options.import_mode) {
        Ok(crate::proto::ImportMode::Automatic) => "automatic",
        _ => "manual",
    };
    let mut carried = vec![("entityImportMode", mode.to_string())];
    for (name, value) in [
        ("country", &options.country),
        ("mappingId", &options.mapping_id),
        ("riskMatrixPersonId", &options.risk_matrix_person_id),
        ("riskMatrixCompanyId", &options.risk_matrix_company_id),
        ("status", &options.status),
        ("nationality", &options.nationality),
        ("attributes", &options.attributes),
        ("monitoring", &options.monitoring),
    ] {
        if !value.is_empty() {
            carried.push((name, value.clone()));
        }
    }
    if options.skip_rules_execution {
        carried.push(("skipRulesExecution", "true".into()));
    }
    if let Some(depth) = options.depth {
        carried.push(("depth", depth.to_string()));
    }
    let carried: Vec<_> = carried
        .into_iter()
        .map(|(name, value)| context! { name, value })
        .collect();
    let names = starters(&state, [&*job.row]).await;
    let row = import_row(&job, &names);
    let body = state.templates.render(
        "fix.html",
        &context! {
            title => format!("Fix the failed rows of {}", row.file_name),
            current => "imports",
            frame => visitor.frame(),
            job => row,
            columns,
            rows,
            carried,
            fixable => FIXABLE,
            failed_total => message.failed_items,
        },
    );
    html(StatusCode::OK, body)
}
