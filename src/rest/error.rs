//! The REST door's errors: every domain error arrives as an [`ApiError`] (the same
//! mapping gRPC uses) and leaves as an HTTP status and the seeds' envelope,
//! `{"error": {"code", "message", "details"?}, "meta": {"request_id"}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::Code;
use utoipa::ToSchema;

use crate::api::error::ApiError;

/// Which seed's error envelope a route answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Seed 004's `{"error": {code, message, details}, "meta": {request_id}}`: the
    /// default, on seeds 000, 001, 003 and 004.
    Seed004,
    /// Seed 002's `{"errors": [{error, error_code, message, details}]}`, with 401
    /// for a bad key *and* for a missing permission.
    Seed002,
}

/// The envelope of a route (by its path).
pub fn style_of(route: &str) -> Style {
    if route.starts_with("/api/v1/analytics/") {
        Style::Seed002
    } else {
        Style::Seed004
    }
}

/// An error on its way to an HTTP client, with the request id it answers.
#[derive(Debug)]
pub struct RestError {
    pub error: ApiError,
    pub request_id: String,
    pub style: Style,
}

impl RestError {
    pub fn new(error: impl Into<ApiError>, request_id: &str) -> RestError {
        RestError {
            error: error.into(),
            request_id: request_id.to_string(),
            style: Style::Seed004,
        }
    }

    pub fn styled(mut self, style: Style) -> RestError {
        self.style = style;
        self
    }
}

/// The HTTP status of a gRPC code and reason: one table for every REST route
/// (documented in the README).
pub fn status_of(error: &ApiError) -> StatusCode {
    match (error.code, error.reason.as_str()) {
        (_, "UPLOAD_TOO_LARGE" | "MESSAGE_TOO_LARGE") => StatusCode::PAYLOAD_TOO_LARGE,
        (_, "EXPORT_EXPIRED" | "IMPORT_REPORT_EXPIRED") => StatusCode::GONE,
        (_, "STORAGE_MISCONFIGURED") => StatusCode::SERVICE_UNAVAILABLE,
        (Code::InvalidArgument | Code::OutOfRange, _) => StatusCode::BAD_REQUEST,
        (Code::Unauthenticated, _) => StatusCode::UNAUTHORIZED,
        (Code::PermissionDenied, _) => StatusCode::FORBIDDEN,
        (Code::NotFound, _) => StatusCode::NOT_FOUND,
        (Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition, _) => StatusCode::CONFLICT,
        (Code::ResourceExhausted, _) => StatusCode::TOO_MANY_REQUESTS,
        (Code::Unavailable, _) => StatusCode::SERVICE_UNAVAILABLE,
        (Code::DeadlineExceeded, _) => StatusCode::GATEWAY_TIMEOUT,
        (Code::Unimplemented, _) => StatusCode::NOT_IMPLEMENTED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Seed 004's error envelope (the default on every route but seed 002's).
#[derive(Serialize, ToSchema)]
pub struct ErrorEnvelope {
    error: ErrorBody,
    meta: ErrorMeta,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// The gRPC API's ErrorInfo reason (`NOT_FOUND`, `EXPORT_NOT_READY`, …).
    code: String,
    message: String,
    /// One entry per field violation or pre-flight line; absent when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    details: Vec<Detail>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorMeta {
    /// Also the `x-request-id` response header.
    request_id: String,
}

/// One problem of a request: the field (or `line N`), its own code when the
/// violation names one (`MISSING_COUNTRY: …`), and the message.
#[derive(Serialize, ToSchema)]
pub struct Detail {
    field: String,
    code: String,
    message: String,
}

fn detail(field: &str, description: &str) -> Detail {
    let named = description
        .split_once(": ")
        .filter(|(code, _)| !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
    let (code, message) = named.unwrap_or(("INVALID_ARGUMENT", description));
    Detail {
        field: field.to_string(),
        code: code.to_string(),
        message: message.to_string(),
    }
}

/// Seed 002's error envelope: one entry per problem.
#[derive(Serialize, ToSchema)]
pub struct Seed002Errors {
    errors: Vec<Seed002Entry>,
}

/// One entry of seed 002's `errors`.
#[derive(Serialize, ToSchema)]
pub struct Seed002Entry {
    /// The HTTP reason phrase (`Bad Request`, `Unauthorized`, …).
    error: String,
    error_code: String,
    message: String,
    details: String,
}

/// Seed 002's body: one entry for the error, or one per problem when it has them.
fn seed_002(error: &ApiError, status: StatusCode) -> Seed002Errors {
    let title = status.canonical_reason().unwrap_or("Error").to_string();
    let entries: Vec<Seed002Entry> = if error.violations.is_empty() {
        vec![Seed002Entry {
            error: title.clone(),
            error_code: error.reason.clone(),
            message: error.message.clone(),
            details: String::new(),
        }]
    } else {
        error
            .violations
            .iter()
            .map(|(field, description)| {
                let d = detail(field, description);
                Seed002Entry {
                    error: title.clone(),
                    error_code: d.code,
                    message: d.message,
                    details: d.field,
                }
            })
            .collect()
    };
    Seed002Errors { errors: entries }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let error = &self.error;
        let status = match (self.style, error.code) {
            // Seed 002 answers 401 for a missing permission too.
            (Style::Seed002, Code::PermissionDenied) => StatusCode::UNAUTHORIZED,
            _ => status_of(error),
        };
        let mut response = match self.style {
            Style::Seed002 => (status, Json(seed_002(error, status))).into_response(),
            Style::Seed004 => {
                let envelope = ErrorEnvelope {
                    error: ErrorBody {
                        code: error.reason.clone(),
                        message: error.message.clone(),
                        details: error.violations.iter().map(|(f, d)| detail(f, d)).collect(),
                    },
                    meta: ErrorMeta {
                        request_id: self.request_id.clone(),
                    },
                };
                (status, Json(envelope)).into_response()
            }
        };
        if let Some(delay) = error.retry_after {
            // Whole seconds, rounded up: "0" would invite an immediate retry.
            let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
            if let Ok(value) = HeaderValue::from_str(&secs.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_that_the_seeds_give_their_own_status_keep_it() {
        let status = |code, reason| status_of(&ApiError::new(code, reason, ""));
        assert_eq!(
            status(Code::FailedPrecondition, "EXPORT_NOT_READY"),
            StatusCode::CONFLICT
        );
        assert_eq!(
            status(Code::FailedPrecondition, "EXPORT_EXPIRED"),
            StatusCode::GONE
        );
        assert_eq!(
            status(Code::ResourceExhausted, "UPLOAD_TOO_LARGE"),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            status(Code::ResourceExhausted, "RATE_LIMITED"),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            status(Code::Unauthenticated, "UNAUTHORIZED"),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(Code::Internal, "INTERNAL"),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn a_violation_that_names_its_code_keeps_it_apart_from_the_message() {
        let d = detail("line 4", "MISSING_COUNTRY: no country");
        assert_eq!(
            (d.code.as_str(), d.message.as_str()),
            ("MISSING_COUNTRY", "no country")
        );
        let d = detail("start_date", "not an ISO 8601 time: x");
        assert_eq!(d.code, "INVALID_ARGUMENT");
    }
}
