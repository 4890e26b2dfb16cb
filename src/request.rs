//! Per-call metadata the layers attach to every request.

/// The call's request id: the client's `x-request-id`, or one generated for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id the observe layer gave `request` (empty before that layer ran).
    pub fn of<B>(request: &http::Request<B>) -> String {
        request
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default()
    }
}
