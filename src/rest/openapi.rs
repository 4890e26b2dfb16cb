//! The REST door's OpenAPI 3.1 document, `GET /openapi.json`. The paths come from
//! the handlers' `#[utoipa::path]` definitions as the router registers them
//! (utoipa-axum), so a route cannot be served without being described; this module
//! adds what no handler knows: the title and the ways a key may be sent.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ferry REST door",
        description = "The predecessor APIs' endpoints (seeds 000–004) served by ferry over the same domain, permissions and database as its gRPC API, plus ferry's import status routes and live events. Errors use seed 004's envelope (seed 002's on its own route); the README has the status table.",
    ),
    paths(crate::server::http::live, crate::server::http::ready),
    modifiers(&Credentials),
)]
pub struct ApiDoc;

/// The seeds' ways of sending a key: `x-api-key` (seed 001), `Authorization:
/// Bearer` and seed 002's `Authorization: Token`.
struct Credentials;

impl Modify for Credentials {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "A ferry API key (seed 001's header)",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`Authorization: Bearer <key>`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`Authorization: Token <key>` (seed 002)",
            ))),
        );
    }
}
