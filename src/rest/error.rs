//! The REST door's errors: every domain error arrives as an [`ApiError`] (the same
//! mapping gRPC uses) and leaves as an HTTP status and the seeds' envelope,
//! `{"error": {"code", "message", "details"?}, "meta": {"request_id"}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::Code;

use crate::api::error::ApiError;

/// An error on its way to an HTTP client, with the request id it answers.
#[derive(Debug)]
pub struct RestError {
    pub error: ApiError,
    pub request_id: String,
}

impl RestError {
    pub fn new(error: impl Into<ApiError>, request_id: &str) -> RestError {
        RestError {
            error: error.into(),
            request_id: request_id.to_string(),
        }
    }
}

/// The HTTP status of a gRPC code and reason: one table for every REST route
/// (documented in the README).
pub fn status_of(error: &ApiError) -> StatusCode {
    match (error.code, error.reason.as_str()) {
        (_, "UPLOAD_TOO_LARGE" | "MESSAGE_TOO_LARGE") => StatusCode::PAYLOAD_TOO_LARGE,
        (_, "EXPORT_EXPIRED") => StatusCode::GONE,
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

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
    meta: Meta<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    details: Vec<Detail>,
}

#[derive(Serialize)]
struct Meta<'a> {
    request_id: &'a str,
}

/// One problem of a request: the field (or `line N`), its own code when the
/// violation names one (`MISSING_COUNTRY: …`), and the message.
#[derive(Serialize)]
struct Detail {
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

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let error = &self.error;
        let envelope = Envelope {
            error: Body {
                code: &error.reason,
                message: &error.message,
                details: error.violations.iter().map(|(f, d)| detail(f, d)).collect(),
            },
            meta: Meta {
                request_id: &self.request_id,
            },
        };
        let mut response = (status_of(error), Json(envelope)).into_response();
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
