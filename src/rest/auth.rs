//! Credentials as the seeds' clients send them — `Authorization: Bearer <key>`,
//! `Authorization: Token <key>` (seed 002), `x-api-key: <key>` (seed 001), and
//! `X-Organization-ID` — checked by the same [`Authenticator`] as gRPC calls, for
//! the gRPC method the route stands for.

use axum::RequestExt;
use axum::extract::{ConnectInfo, MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::RestState;
use super::error::RestError;
use crate::api::error::ApiError;
use crate::audit::{Actor, Door};
use crate::auth::certificates::ClientCertificate;
use crate::auth::sessions;
use crate::auth::{AuthError, Principal};
use crate::request::Peer;

/// Who is calling, and the request id their answer carries.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub request_id: String,
    /// The route called (`DELETE /v1/exports/{id}`), as the audit trail names it.
    pub route: String,
}

impl Caller {
    /// The caller as the audit trail names it.
    pub fn actor(&self) -> Actor {
        Actor::of(&self.principal, Door::Rest, &self.route, &self.request_id)
    }
}

/// The credentials rewritten as the authenticator reads them (`authorization:
/// Bearer …`, `x-organization-id`). A request may carry its key in `authorization`
/// and in `x-api-key` only if both hold the same key: two different keys are
/// refused rather than one silently preferred, so a client that sends a stale key
/// in one header learns it at once.
fn credentials(headers: &HeaderMap) -> Result<HeaderMap, AuthError> {
    let mut out = HeaderMap::new();
    if let Some(org) = headers.get("x-organization-id") {
        out.insert("x-organization-id", org.clone());
    }
    let api_key = headers
        .get("x-api-key")
        .map(|v| v.to_str().map(|key| format!("Bearer {}", key.trim())));
    let authorization = headers.get(header::AUTHORIZATION).map(|value| {
        match value.to_str().ok().and_then(|v| v.trim().split_once(' ')) {
            Some((scheme, key))
                if scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer") =>
            {
                Ok(format!("Bearer {}", key.trim()))
            }
            _ => Err(value.clone()),
        }
    });
    let value = match (authorization, api_key) {
        (Some(Ok(a)), Some(Ok(b))) if a != b => return Err(AuthError::ConflictingKeys),
        (Some(Err(_)), Some(_)) | (Some(_), Some(Err(_))) => return Err(AuthError::ConflictingKeys),
        // Not a scheme ferry reads: the authenticator names the problem.
        (Some(Err(raw)), None) => Some(raw),
        (Some(Ok(token)), _) | (None, Some(Ok(token))) => HeaderValue::from_str(&token).ok(),
        (None, Some(Err(_))) => return Err(AuthError::MalformedKey),
        (None, None) => None,
    };
    if let Some(value) = value {
        out.insert(header::AUTHORIZATION, value);
    }
    Ok(out)
}

/// A request's credentials: its own headers, or, when it carries neither
/// `authorization` nor `x-api-key`, those of the hub session its cookie names (see
/// [`crate::auth::sessions`]). A session's state-changing request must carry the
/// session's CSRF token, so another site cannot make a signed-in browser act.
fn credentials_of(
    state: &RestState,
    method: &Method,
    headers: &HeaderMap,
) -> (Result<HeaderMap, AuthError>, Option<String>) {
    let session = if headers.contains_key(header::AUTHORIZATION) || headers.contains_key("x-api-key") {
        None
    } else {
        sessions::cookie_of(headers)
    };
    let Some(id) = session else {
        return (credentials(headers), None);
    };
    let Some(session) = state.sessions.touch(&id) else {
        return (Err(AuthError::SessionEnded), None);
    };
    if !matches!(*method, Method::GET | Method::HEAD) {
        let sent = headers
            .get(sessions::CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !session.csrf_matches(sent) {
            return (Err(AuthError::CsrfTokenInvalid), Some(id));
        }
    }
    (Ok(session.credentials()), Some(id))
}

/// Checks `method`'s credentials; a hub session whose key no longer works (revoked,
/// expired, unknown) is ended, so the page asks to sign in again.
async fn authenticate(
    state: &RestState,
    method: &str,
    (credentials, session): (Result<HeaderMap, AuthError>, Option<String>),
    certificate: Option<&ClientCertificate>,
) -> Result<crate::auth::Principal, AuthError> {
    let result = state.auth.authorize(method, &credentials?, certificate).await;
    if let (Err(err), Some(id)) = (&result, session)
        && err.ends_sessions()
    {
        state.sessions.end(&id);
    }
    result
}

/// The route layer: finds the route's gRPC method (none: refused), authenticates,
/// admits the call as the gRPC admission layer would (the same slots and rate
/// limits), and hands the handler a [`Caller`]; every answer carries
/// `x-request-id`.
pub async fn authorize(State(state): State<RestState>, mut request: Request, next: Next) -> Response {
    let request_id = crate::server::observe::request_id_of(request.headers());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let style = super::error::style_of(&route);
    let certificate = request
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .and_then(|ConnectInfo(peer)| peer.certificate.clone());
    let mut response = match super::method_of(request.method().as_str(), &route) {
        None => RestError::new(AuthError::MethodNotAllowed(route), &request_id)
            .styled(style)
            .into_response(),
        Some(method) => match authenticate(
            &state,
            method,
            credentials_of(&state, request.method(), request.headers()),
            certificate.as_deref(),
        )
        .await
        {
            Ok(principal) => match state.admission.admit(method, &principal) {
                Ok(slot) => {
                    let caller = Caller {
                        principal,
                        request_id: request_id.clone(),
                        route: format!("{} {route}", request.method()),
                    };
                    // The object the path names, for a refusal's record (audited
                    // routes only: the rest never need it).
                    let audited = crate::audit::is_audited(method);
                    let mut target = String::new();
                    if audited
                        && let Ok(params) = request.extract_parts::<RawPathParams>().await
                        && let Some((_, value)) = params.iter().next()
                    {
                        target = value.trim().to_string();
                    }
                    request.extensions_mut().insert(caller.clone());
                    // A call whose query hangs on a frozen database is cut when
                    // the probe finds the outage.
                    let response = tokio::select! {
                        response = next.run(request) => response,
                        out = state.admission.database_out() => RestError::new(ApiError::from(out), &request_id)
                            .styled(style)
                            .into_response(),
                    };
                    drop(slot);
                    // Successes are recorded by the domain, in the change's transaction.
                    let status = response.status();
                    if audited && (status.is_client_error() || status.is_server_error()) {
                        caller
                            .actor()
                            .record_refusal(
                                state.exports.queue().db(),
                                &target,
                                &format!("HTTP {}", status.as_u16()),
                                status.canonical_reason().unwrap_or_default(),
                            )
                            .await;
                    }
                    response
                }
                Err(refused) => {
                    tracing::warn!(error = %refused, "call refused");
                    RestError::new(ApiError::from(refused), &request_id)
                        .styled(style)
                        .into_response()
                }
            },
            Err(err) => {
                if let AuthError::Db(db) = &err {
                    tracing::error!(error = %db, "authentication could not reach the database");
                }
                RestError::new(ApiError::from(err), &request_id)
                    .styled(style)
                    .into_response()
            }
        },
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_way_of_sending_a_key_becomes_a_bearer_credential() {
        let bearer = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(*name, HeaderValue::from_static(value));
            }
            credentials(&headers)
                .ok()
                .and_then(|c| c.get(header::AUTHORIZATION).cloned())
                .map(|v| v.to_str().unwrap_or_default().to_string())
        };
        assert_eq!(
            bearer(&[("authorization", "Bearer k")]).as_deref(),
            Some("Bearer k")
        );
        assert_eq!(
            bearer(&[("authorization", "Token k")]).as_deref(),
            Some("Bearer k")
        );
        assert_eq!(bearer(&[("x-api-key", "k")]).as_deref(), Some("Bearer k"));
        assert_eq!(bearer(&[]), None);
        assert_eq!(
            bearer(&[("authorization", "Bearer k"), ("x-api-key", "k")]).as_deref(),
            Some("Bearer k")
        );
    }

    #[test]
    fn two_different_keys_in_one_request_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer k1"));
        headers.insert("x-api-key", HeaderValue::from_static("k2"));
        assert!(matches!(credentials(&headers), Err(AuthError::ConflictingKeys)));
        headers.insert("authorization", HeaderValue::from_static("Basic a2V5"));
        assert!(matches!(credentials(&headers), Err(AuthError::ConflictingKeys)));
    }
}
