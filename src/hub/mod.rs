//! The bulk imports hub: web pages under `/hub` on the HTTP listener, for people
//! who are not programmers (seed 003's dashboard). Server-rendered HTML from
//! templates compiled into the binary, one small script of ferry's own for uploads
//! with progress and live updates, plain CSS; no Node.js at build or run time.
//!
//! The hub is a door like `rest/` and `api/`, and a thin one: a page reads through
//! the same domain services, and everything a page *does* (upload, cancel, events)
//! is a call to a REST route with the session cookie as its credential, so the
//! permission table, validation and errors are the REST door's own. Sign-in
//! exchanges the key for a session ([`crate::auth::sessions`]); the key never
//! reaches the page.

pub mod assets;
pub mod exports;
pub mod mappings;
pub mod pages;
pub mod security;
pub mod templates;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::rest::RestState;

#[derive(Clone)]
pub struct HubState {
    /// The REST door's state: authenticator, services, sessions.
    pub rest: RestState,
    /// The session cookie is `Secure` (the HTTP listener speaks TLS).
    pub secure: bool,
    pub templates: Arc<templates::Templates>,
    /// `hub.sign_ins_per_minute` per client address; `None`: no limit.
    pub sign_ins: Arc<Option<security::SignIns>>,
}

/// `/hub` and its pages, every answer with the hub's security headers.
pub fn router(state: HubState) -> Router {
    Router::new()
        .route("/hub", get(pages::home))
        .route("/hub/sign-in", post(pages::sign_in))
        .route("/hub/sign-out", post(pages::sign_out))
        .route("/hub/imports", get(pages::imports))
        .route("/hub/imports/{id}", get(pages::import))
        .route("/hub/imports/{id}/report", get(pages::report))
        .route("/hub/imports/{id}/fix", get(pages::fix))
        .route("/hub/mappings", get(mappings::list))
        .route("/hub/mappings/new", get(mappings::new))
        .route("/hub/mappings/{id}", get(mappings::edit))
        .route("/hub/exports", get(exports::exports).post(exports::create))
        .route("/hub/exports/{id}/download", get(exports::download))
        .route("/hub/static/{name}", get(assets::serve))
        .layer(axum::middleware::from_fn(security::headers))
        .with_state(state)
}
