//! The REST door: the predecessor APIs' endpoints (`../shared/seeds/`) on the HTTP
//! listener, over the same domain services, permission table and database as gRPC.
//! Thin like `api/`: read the seed's request, authorise, call the domain, answer in
//! the seed's shape. gRPC stays the primary contract.
//!
//! Every route is listed in [`ROUTES`] with the gRPC method it stands for, so it
//! needs exactly that method's permission; a route missing there is refused (fail
//! closed), like a gRPC method missing from the permission table.

pub mod analytics_exports;
pub mod auth;
pub mod entity_exports;
pub mod error;
pub mod events;
pub mod exports_v1;
pub mod imports;
pub mod mappings;
pub mod openapi;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::Authenticator;
use crate::export::service::Exports;
use crate::import::service::Imports;
use crate::storage::signing::UrlSigner;

/// (HTTP method, route, the gRPC method whose permission it needs).
pub const ROUTES: &[(&str, &str, &str)] = &[
    ("POST", "/v1/exports", "/ferry.v1.ExportService/CreateExport"),
    ("GET", "/v1/exports", "/ferry.v1.ExportService/ListExports"),
    (
        "DELETE",
        "/v1/exports/{id}",
        "/ferry.v1.ExportService/DeleteExport",
    ),
    (
        "GET",
        "/v1/exports/{id}/download",
        "/ferry.v1.ExportService/GetExportDownload",
    ),
    (
        "GET",
        "/v1/exports/events-url",
        "/ferry.v1.ExportService/WatchExport",
    ),
    (
        "GET",
        "/batch-import/import/entities/events-url",
        "/ferry.v1.ImportService/WatchImport",
    ),
    (
        "POST",
        "/api/v1/analytics/exports",
        "/ferry.v1.ExportService/CreateExport",
    ),
    (
        "POST",
        "/entities/export/jobs",
        "/ferry.v1.ExportService/CreateExport",
    ),
    (
        "GET",
        "/entities/export/jobs/{jobId}",
        "/ferry.v1.ExportService/GetExport",
    ),
    (
        "GET",
        "/entities/export/jobs/{jobId}/download",
        "/ferry.v1.ExportService/GetExportDownload",
    ),
    (
        "POST",
        "/batch-import/import/entities",
        "/ferry.v1.ImportService/UploadImport",
    ),
    (
        "GET",
        "/batch-import/import/entities/{jobId}",
        "/ferry.v1.ImportService/GetImport",
    ),
    (
        "DELETE",
        "/batch-import/import/entities/{jobId}",
        "/ferry.v1.ImportService/DeleteImport",
    ),
    (
        "POST",
        "/batch-import/import/entities/preview",
        "/ferry.v1.ImportService/UploadImport",
    ),
    (
        "POST",
        "/batch-import/import/entities/staged",
        "/ferry.v1.ImportService/UploadImport",
    ),
    (
        "GET",
        "/batch-import/import/entities/template",
        "/ferry.v1.ImportService/UploadImport",
    ),
    (
        "POST",
        "/batch-import/import/entities/{jobId}/cancel",
        "/ferry.v1.ImportService/CancelImport",
    ),
    (
        "GET",
        "/batch-import/import/entities/{jobId}/errors",
        "/ferry.v1.ImportService/ListImportErrors",
    ),
    (
        "GET",
        "/batch-import/mappings",
        "/ferry.v1.MappingService/ListMappings",
    ),
    (
        "POST",
        "/batch-import/mappings",
        "/ferry.v1.MappingService/CreateMapping",
    ),
    (
        "GET",
        "/batch-import/mappings/{mappingId}",
        "/ferry.v1.MappingService/GetMapping",
    ),
    (
        "PATCH",
        "/batch-import/mappings/{mappingId}",
        "/ferry.v1.MappingService/UpdateMapping",
    ),
    (
        "DELETE",
        "/batch-import/mappings/{mappingId}",
        "/ferry.v1.MappingService/DeleteMapping",
    ),
];

/// The gRPC method a route stands for; `None` (refused) for a route not listed.
pub fn method_of(http_method: &str, route: &str) -> Option<&'static str> {
    ROUTES
        .iter()
        .find(|(method, path, _)| *method == http_method && *path == route)
        .map(|(_, _, grpc)| *grpc)
}

#[derive(Clone)]
pub struct RestState {
    pub auth: Arc<Authenticator>,
    pub exports: Exports,
    pub imports: Imports,
    /// Saved header mappings (the REST routes and the hub's editor).
    pub mappings: crate::import::mappings::Mappings,
    /// Signs and checks the events URLs (the storage signing key).
    pub signer: Arc<UrlSigner>,
    /// `server.public_url`: the base of the events URLs ("" → the request's Host).
    pub public_url: String,
    /// `https` when the HTTP listener speaks TLS, else `http`: the scheme of the
    /// events URLs built from the request's Host.
    pub scheme: &'static str,
    /// `http.cors_origins`.
    pub cors_origins: Vec<String>,
    /// The gRPC server's admission (slots, per-organization rate), shared.
    pub admission: crate::server::admission::AdmissionLayer,
    /// The hub's sign-in sessions: a session cookie is a credential here too, so
    /// the hub's pages call these routes under the same permission table.
    pub sessions: Arc<crate::auth::sessions::Sessions>,
}

/// Queues an export for a REST caller: the seed's body, already read into the gRPC
/// request, goes through the same checks and the same domain call as CreateExport.
pub async fn start_export(
    state: &RestState,
    caller: &auth::Caller,
    request: &crate::proto::CreateExportRequest,
) -> Result<crate::jobs::Job<crate::export::spec::Export>, crate::api::error::ApiError> {
    let spec = crate::api::export::spec_of(request)?;
    Ok(state
        .exports
        .create(&caller.principal.organization, spec, None, Some(caller.actor()))
        .await?)
}

/// One field's problem as a 400 naming it.
pub fn invalid(field: &str, message: impl Into<String>) -> crate::api::error::ApiError {
    crate::api::error::ApiError::invalid(vec![(field.to_string(), message.into())])
}

/// A JSON body that did not parse, as a 400 naming it.
pub fn body_error(rejection: axum::extract::rejection::JsonRejection) -> crate::api::error::ApiError {
    invalid("body", rejection.body_text())
}

/// CORS for the configured origins: browsers may call the REST routes (and read
/// `x-request-id` and `Location`); none when the setting is empty.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("x-organization-id"),
                HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([HeaderName::from_static("x-request-id"), header::LOCATION])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// The seeds' routes, each behind the authorising layer, the events stream (whose
/// signed URL is its credential), and `GET /openapi.json`, which describes them all
/// (generated from the same route definitions).
pub fn router(state: RestState) -> Router {
    let (router, api) = routes(state.clone()).split_for_parts();
    let api = Arc::new(api);
    let router = router.route(
        "/openapi.json",
        get(move || {
            let api = api.clone();
            async move { axum::Json(api.as_ref().clone()) }
        }),
    );
    // Outside the auth layer: a browser's preflight carries no credentials.
    match cors(&state.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// The routes with their OpenAPI descriptions.
fn routes(state: RestState) -> OpenApiRouter {
    use utoipa::OpenApi;
    use utoipa_axum::routes;
    // The upload enforces `bulk_import.max_upload_bytes` itself as the file streams
    // to disk (413 UPLOAD_TOO_LARGE); axum's 2 MiB default would refuse any real file.
    let upload = OpenApiRouter::new()
        .routes(routes!(imports::upload))
        .routes(routes!(imports::preview))
        .routes(routes!(imports::stage))
        .layer(axum::extract::DefaultBodyLimit::disable());
    let stream = OpenApiRouter::new()
        .routes(routes!(events::stream))
        .with_state(state.clone());
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(exports_v1::list, exports_v1::create))
        .routes(routes!(exports_v1::delete))
        .routes(routes!(exports_v1::download))
        .routes(routes!(events::export_events_url))
        .routes(routes!(events::import_events_url))
        .routes(routes!(entity_exports::create))
        .routes(routes!(entity_exports::get))
        .routes(routes!(entity_exports::download))
        .routes(routes!(analytics_exports::create))
        .merge(upload)
        .routes(routes!(imports::get, imports::delete))
        .routes(routes!(imports::errors))
        .routes(routes!(imports::cancel))
        .routes(routes!(imports::template))
        .routes(routes!(mappings::list, mappings::create))
        .routes(routes!(mappings::get, mappings::update, mappings::delete))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .with_state(state)
        .merge(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route stands for a real gRPC method, so it has that method's permission.
    #[test]
    fn every_route_needs_a_permission_of_the_grpc_table() {
        for (method, path, grpc) in ROUTES {
            assert!(
                crate::auth::permissions::required_access(grpc).is_some(),
                "{method} {path} -> {grpc} has no permission entry"
            );
        }
        assert_eq!(method_of("PUT", "/v1/exports"), None);
    }
}
