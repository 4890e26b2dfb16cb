//! Per-call metadata the layers attach to every request.

/// The call's request id: the client's `x-request-id`, or one generated for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
