//! The one mapping from domain errors to gRPC statuses. Every status carries
//! `google.rpc.ErrorInfo` (UPPER_SNAKE reason, domain `ferry`) and `RequestInfo`
//! with the call's request id; invalid input adds `BadRequest` field violations.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::auth::AuthError;
use crate::db::DbError;
use crate::export::ExportError;
use crate::export::delivery::DeliveryError;
use crate::import::service::ImportError;
use crate::jobs::QueueError;
use crate::orgs::OrgError;
use crate::server::admission::AdmissionError;
use crate::storage::StorageError;

pub const DOMAIN: &str = "ferry";

/// A gRPC error before the request id is attached.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: Code,
    pub reason: String,
    pub message: String,
    pub violations: Vec<(String, String)>,
    /// ErrorInfo metadata (kept small: a Vec, not a map).
    pub metadata: Vec<(String, String)>,
    /// Sent as `google.rpc.RetryInfo`: when a retry may succeed.
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    pub fn new(code: Code, reason: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason: reason.to_string(),
            message: message.into(),
            violations: Vec::new(),
            metadata: Vec::new(),
            retry_after: None,
        }
    }

    /// INVALID_ARGUMENT naming the offending fields.
    pub fn invalid(violations: Vec<(String, String)>) -> ApiError {
        let message = match violations.as_slice() {
            [(field, description)] => format!("invalid {field}: {description}"),
            many => format!("{} invalid fields; see the field violations", many.len()),
        };
        ApiError {
            violations,
            ..ApiError::new(Code::InvalidArgument, "INVALID_ARGUMENT", message)
        }
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(Code::NotFound, "NOT_FOUND", format!("{what} not found"))
    }

    /// RESOURCE_EXHAUSTED with `reason` and RetryInfo: the caller should back off
    /// for `retry_after` and try again.
    pub fn exhausted(reason: &str, message: impl Into<String>, retry_after: std::time::Duration) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(Code::ResourceExhausted, reason, message)
        }
    }

    pub fn with_metadata(mut self, key: &str, value: impl Into<String>) -> ApiError {
        self.metadata.push((key.to_string(), value.into()));
        self
    }

    pub fn into_status(self, request_id: &str) -> Status {
        let mut details = ErrorDetails::new();
        details.set_error_info(
            self.reason,
            DOMAIN,
            self.metadata
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        );
        details.set_request_info(request_id, "");
        if let Some(delay) = self.retry_after {
            details.set_retry_info(Some(delay));
        }
        if !self.violations.is_empty() {
            for (field, description) in self.violations {
                details.add_bad_request_violation(field, description);
            }
        }
        Status::with_error_details(self.code, self.message, details)
    }
}

/// Internal errors are logged in full and reported without their details.
fn internal(err: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(error = %err, "internal error");
    ApiError::new(
        Code::Internal,
        "INTERNAL",
        "internal error; see the server log for the request id",
    )
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        match err {
            // The probe logged the outage once; each refused call is not news.
            DbError::Unavailable(_) => database_unavailable(),
            DbError::Pool(_) | DbError::Connect(_) => {
                tracing::error!(error = %err, "database unavailable");
                database_unavailable()
            }
            DbError::Query(_) | DbError::Migration(_) | DbError::NestedAcquisition => internal(&err),
        }
    }
}

/// How long a caller should wait before trying again during a database outage:
/// about one probe interval, after which a recovered database is serving.
const DATABASE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// UNAVAILABLE `DATABASE_UNAVAILABLE` with RetryInfo.
pub fn database_unavailable() -> ApiError {
    ApiError {
        retry_after: Some(DATABASE_RETRY),
        ..ApiError::new(
            Code::Unavailable,
            "DATABASE_UNAVAILABLE",
            "the database is unavailable; retry later",
        )
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(err: diesel::result::Error) -> Self {
        ApiError::from(DbError::Query(err))
    }
}

impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> Self {
        match err {
            QueueError::NotFound { kind } => ApiError::not_found(kind),
            QueueError::AlreadyFinished { state, .. } => {
                ApiError::new(Code::FailedPrecondition, "JOB_ALREADY_FINISHED", err.to_string())
                    .with_metadata("state", state.to_string())
            }
            QueueError::TooManyWatchers(full) => full.into(),
            QueueError::Undecodable(_) => internal(&err),
            QueueError::Db(err) => err.into(),
        }
    }
}

/// How long an overloaded caller should wait before trying again.
pub const OVERLOAD_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

impl From<crate::jobs::events::TooManyWatchers> for ApiError {
    fn from(err: crate::jobs::events::TooManyWatchers) -> Self {
        ApiError::exhausted("OVERLOADED", err.to_string(), OVERLOAD_RETRY)
            .with_metadata("limit", err.0.to_string())
            .with_metadata("setting", "server.max_watchers")
    }
}

impl From<StorageError> for ApiError {
    fn from(err: StorageError) -> Self {
        tracing::error!(error = %err, "file storage failed");
        if err.is_permanent() {
            // Retrying will not help; the cause is what the operator must fix.
            return ApiError::new(Code::FailedPrecondition, "STORAGE_MISCONFIGURED", err.to_string());
        }
        if matches!(err, StorageError::Full(_)) {
            return ApiError::exhausted(
                "STORAGE_FULL",
                "file storage is full; retry once an operator has freed space",
                STORAGE_RETRY,
            );
        }
        ApiError {
            retry_after: Some(STORAGE_RETRY),
            ..ApiError::new(
                Code::Unavailable,
                "STORAGE_UNAVAILABLE",
                "file storage is unavailable; retry later",
            )
        }
    }
}

/// How long a caller should wait after the store failed.
const STORAGE_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

impl From<ExportError> for ApiError {
    fn from(err: ExportError) -> Self {
        match err {
            ExportError::Invalid(violations) => ApiError::invalid(violations),
            ExportError::InProgress { ref job_id } => {
                ApiError::new(Code::AlreadyExists, "EXPORT_IN_PROGRESS", err.to_string())
                    .with_metadata("job_id", job_id.clone())
            }
            ExportError::TooManyActive { limit } => ApiError::new(
                Code::ResourceExhausted,
                "TOO_MANY_ACTIVE_EXPORTS",
                err.to_string(),
            )
            .with_metadata("limit", limit.to_string()),
            ExportError::NotReady { state } => {
                ApiError::new(Code::FailedPrecondition, "EXPORT_NOT_READY", err.to_string())
                    .with_metadata("state", state.to_string())
            }
            ExportError::Expired => {
                ApiError::new(Code::FailedPrecondition, "EXPORT_EXPIRED", err.to_string())
            }
            ExportError::Delivery(err) => err.into(),
            ExportError::Storage(err) => err.into(),
            ExportError::Job(err) => err.into(),
        }
    }
}

impl From<ImportError> for ApiError {
    fn from(err: ImportError) -> Self {
        match err {
            ImportError::Invalid(violations) => ApiError::invalid(violations),
            ImportError::Preflight(violations) => preflight(violations),
            ImportError::FeatureDisabled => {
                ApiError::new(Code::PermissionDenied, "FEATURE_DISABLED", err.to_string())
                    .with_metadata("feature", "bulk_automatic_entity_import")
            }
            ImportError::TooLarge { limit } => {
                ApiError::new(Code::ResourceExhausted, "UPLOAD_TOO_LARGE", err.to_string())
                    .with_metadata("limit_bytes", limit.to_string())
            }
            ImportError::TooManyActive { limit } => ApiError::new(
                Code::ResourceExhausted,
                "TOO_MANY_ACTIVE_IMPORTS",
                err.to_string(),
            )
            .with_metadata("limit", limit.to_string()),
            ImportError::MessageTooLarge { ref limit_bytes } => message_too_large(limit_bytes),
            ImportError::Interrupted(_) => {
                ApiError::new(Code::Aborted, "UPLOAD_INTERRUPTED", err.to_string())
            }
            ImportError::TooManyStaged { limit } => ApiError::new(
                Code::ResourceExhausted,
                "TOO_MANY_STAGED_UPLOADS",
                err.to_string(),
            )
            .with_metadata("limit", limit.to_string()),
            ImportError::ReportExpired => {
                ApiError::new(Code::FailedPrecondition, "IMPORT_REPORT_EXPIRED", err.to_string())
            }
            ImportError::NoReport(_) => ApiError::new(
                Code::FailedPrecondition,
                "IMPORT_NO_ERROR_REPORT",
                err.to_string(),
            ),
            ImportError::Storage(err) => err.into(),
            ImportError::Job(err) => err.into(),
        }
    }
}

/// A failed pre-flight: one field violation per problem (`line 7` or `file`). The
/// reason is the problem's code when all share one (`MISSING_COUNTRY`,
/// `TOO_MANY_ITEMS` whenever the file is over the limit), else `INVALID_IMPORT_FILE`.
fn preflight(violations: Vec<crate::import::layout::Violation>) -> ApiError {
    let too_many = violations.iter().any(|v| v.code == "TOO_MANY_ITEMS");
    let reason = match violations.first() {
        _ if too_many => "TOO_MANY_ITEMS",
        Some(first) if violations.iter().all(|v| v.code == first.code) => first.code,
        _ => "INVALID_IMPORT_FILE",
    };
    let message = match violations.first() {
        Some(first) => format!(
            "the file did not pass pre-flight ({} problem(s)); first: {}: {}: {}",
            violations.len(),
            first.field(),
            first.code,
            first.message
        ),
        None => "the file did not pass pre-flight".to_string(),
    };
    ApiError {
        violations: violations
            .iter()
            .map(|v| (v.field(), format!("{}: {}", v.code, v.message)))
            .collect(),
        ..ApiError::new(Code::InvalidArgument, reason, message)
    }
}

impl From<DeliveryError> for ApiError {
    fn from(err: DeliveryError) -> Self {
        let invalid = |reason: &str, field: &str, err: &DeliveryError| ApiError {
            violations: vec![(field.to_string(), err.to_string())],
            ..ApiError::new(Code::InvalidArgument, reason, err.to_string())
        };
        match err {
            DeliveryError::Invalid(violations) => ApiError::invalid(violations),
            DeliveryError::TooManyRecipients { count } => {
                invalid("TOO_MANY_RECIPIENTS", "delivery.recipient_emails", &err)
                    .with_metadata("count", count.to_string())
            }
            DeliveryError::SenderConflict => invalid("SENDER_CONFLICT", "delivery.from_sender_id", &err),
            DeliveryError::SenderNotFound(_) => invalid("SENDER_NOT_FOUND", "delivery.from_sender_id", &err),
            DeliveryError::DomainNotVerified(_) => {
                invalid("DOMAIN_NOT_VERIFIED", "delivery.from_email", &err)
            }
            DeliveryError::FeatureDisabled => {
                ApiError::new(Code::PermissionDenied, "FEATURE_DISABLED", err.to_string())
                    .with_metadata("feature", "global_sender_email")
            }
            DeliveryError::Db(err) => err.into(),
        }
    }
}

impl From<OrgError> for ApiError {
    fn from(err: OrgError) -> Self {
        match err {
            OrgError::NotFound(_) => ApiError::not_found("organization"),
            OrgError::Db(err) => err.into(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        let unauthenticated = |cause: &str, err: &AuthError| {
            ApiError::new(Code::Unauthenticated, "UNAUTHORIZED", err.to_string())
                .with_metadata("cause", cause)
        };
        match err {
            AuthError::MissingCredentials => unauthenticated("missing_credentials", &err),
            AuthError::MalformedKey => unauthenticated("malformed_key", &err),
            AuthError::ConflictingKeys => unauthenticated("conflicting_keys", &err),
            AuthError::UnknownKey => unauthenticated("unknown_key", &err),
            AuthError::RevokedKey => unauthenticated("revoked_key", &err),
            AuthError::ExpiredKey => unauthenticated("expired_key", &err),
            AuthError::UnmappedCertificate(_) => unauthenticated("unmapped_certificate", &err),
            AuthError::Token { cause, .. } => unauthenticated(cause, &err),
            AuthError::InvalidOrganizationHeader => ApiError::invalid(vec![(
                "x-organization-id".into(),
                "must be an organization id (UUID)".into(),
            )]),
            AuthError::OrganizationNotAllowed(ref org) => ApiError::new(
                Code::PermissionDenied,
                "ORGANIZATION_NOT_ALLOWED",
                err.to_string(),
            )
            .with_metadata("organization_id", org.clone()),
            AuthError::MethodNotAllowed(ref method) => {
                ApiError::new(Code::PermissionDenied, "METHOD_NOT_ALLOWED", err.to_string())
                    .with_metadata("method", method.clone())
            }
            AuthError::MissingPermission(permission) => {
                ApiError::new(Code::PermissionDenied, "MISSING_PERMISSION", err.to_string())
                    .with_metadata("permission", permission.as_str())
            }
            AuthError::SessionEnded => unauthenticated("session_ended", &err),
            AuthError::CsrfTokenInvalid => {
                ApiError::new(Code::PermissionDenied, "CSRF_TOKEN_INVALID", err.to_string())
            }
            AuthError::Db(db) => db.into(),
        }
    }
}

/// The admission layer's refusal (see [`crate::server::admission::RefuseFn`]).
pub fn refuse(err: AdmissionError, request_id: &str) -> Status {
    ApiError::from(err).into_status(request_id)
}

impl From<AdmissionError> for ApiError {
    fn from(err: AdmissionError) -> Self {
        let message = err.to_string();
        match err {
            AdmissionError::DatabaseOut(_) => database_unavailable(),
            AdmissionError::Overloaded { setting, limit, .. } => {
                ApiError::exhausted("OVERLOADED", message, OVERLOAD_RETRY)
                    .with_metadata("limit", limit.to_string())
                    .with_metadata("setting", setting)
            }
            AdmissionError::RateLimited {
                organization_id,
                rate,
                retry_after,
            } => ApiError::exhausted(
                "RATE_LIMITED",
                message,
                retry_after.max(std::time::Duration::from_millis(1)),
            )
            .with_metadata("organization_id", organization_id)
            .with_metadata("calls_per_second", rate.to_string()),
        }
    }
}

/// tonic refuses an oversized request itself, as OUT_OF_RANGE without details:
/// restated as RESOURCE_EXHAUSTED `MESSAGE_TOO_LARGE` with the limit (see
/// [`crate::server::observe::RestateFn`]).
pub fn restate(status: &Status, request_id: &str) -> Option<Status> {
    oversized_limit(status).map(|limit| message_too_large(&limit).into_status(request_id))
}

/// The limit named by tonic's "decoded message length too large" refusal (empty
/// when the text names none); `None` for any other status.
pub fn oversized_limit(status: &Status) -> Option<String> {
    if status.code() != Code::OutOfRange || !status.message().contains("message length too large") {
        return None;
    }
    Some(
        status
            .message()
            .rsplit("limit is: ")
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default()
            .to_string(),
    )
}

/// RESOURCE_EXHAUSTED `MESSAGE_TOO_LARGE`, with the limit when known.
pub fn message_too_large(limit: &str) -> ApiError {
    let error = ApiError::new(
        Code::ResourceExhausted,
        "MESSAGE_TOO_LARGE",
        format!(
            "the message is larger than the server accepts ({limit} bytes); send smaller messages (upload chunks of at most 4 MiB)"
        ),
    );
    if limit.is_empty() {
        error
    } else {
        error.with_metadata("limit_bytes", limit)
    }
}

/// The auth layer's refusal (see [`crate::auth::layer::DenyFn`]).
pub fn deny(err: AuthError, request_id: &str) -> Status {
    ApiError::from(err).into_status(request_id)
}
