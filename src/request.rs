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

/// The gRPC method a call names (`/ferry.v1.ExportService/CreateExport`), put in
/// its extensions by the observe layer (tonic's own handlers do not see the path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodPath(pub String);

/// The connection a request came over, as the listener accepted it: tonic puts it
/// in every gRPC request's extensions, axum in `ConnectInfo` for REST.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub remote: Option<std::net::SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The client certificate, verified against `server.tls_client_ca`; `None` when
    /// the client sent none.
    pub certificate: Option<std::sync::Arc<crate::auth::certificates::ClientCertificate>>,
}
