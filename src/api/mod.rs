//! The gRPC services: thin handlers that convert messages, call the domain and map
//! errors through [`error::ApiError`].

pub mod account;
pub mod codec;
pub mod convert;
pub mod entity;
pub mod error;
pub mod export;
pub mod import;
pub mod jobs;
pub mod mapping;
pub mod page;
pub mod page_token;

use tonic::{Request, Status};

use crate::audit::{Actor, Door};
use crate::auth::Principal;
use crate::db::Db;
use crate::request::{MethodPath, RequestId};
use error::ApiError;

/// What a handler knows about its call: who, which method, and the request id for
/// errors.
pub struct Call {
    pub principal: Principal,
    pub request_id: String,
    /// `/ferry.v1.ExportService/CreateExport`.
    pub method: String,
}

impl Call {
    /// Reads what the layers attached. A missing principal means the auth layer did
    /// not run: refuse rather than serve unauthenticated.
    pub fn of<T>(request: &Request<T>) -> Result<Call, Status> {
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let method = request
            .extensions()
            .get::<MethodPath>()
            .map(|m| m.0.clone())
            .unwrap_or_default();
        match request.extensions().get::<Principal>() {
            Some(principal) => Ok(Call {
                principal: principal.clone(),
                request_id,
                method,
            }),
            None => Err(ApiError::new(
                tonic::Code::Unauthenticated,
                "UNAUTHORIZED",
                "no credentials were checked",
            )
            .into_status(&request_id)),
        }
    }

    pub fn org(&self) -> &str {
        self.principal.organization_id()
    }

    /// The caller as the audit trail names it.
    pub fn actor(&self) -> Actor {
        Actor::of(&self.principal, Door::Grpc, &self.method, &self.request_id)
    }

    /// Like [`Call::serve`], for a method of the audit trail: a refusal is recorded
    /// with its code, naming `target` (the job or mapping the request named). The
    /// domain records success itself, in the change's transaction.
    pub async fn serve_audited<T, R, F, Fut>(
        request: Request<T>,
        db: &Db,
        target: fn(&T) -> String,
        handle: F,
    ) -> Result<tonic::Response<R>, Status>
    where
        F: FnOnce(Call, T) -> Fut,
        Fut: std::future::Future<Output = Result<R, ApiError>>,
    {
        let call = Call::of(&request)?;
        let actor = call.actor();
        let message = request.into_inner();
        let target = target(&message);
        match handle(call, message).await {
            Ok(response) => Ok(tonic::Response::new(response)),
            Err(err) => {
                let status = err.into_status(&actor.request_id);
                actor
                    .record_refusal(
                        db,
                        &target,
                        crate::proto::code_name(status.code()),
                        status.message(),
                    )
                    .await;
                Err(status)
            }
        }
    }

    /// Runs a unary handler: reads the call, hands it the message, and maps any
    /// error to its status with this call's request id (the one place handlers'
    /// errors become statuses).
    pub async fn serve<T, R, F, Fut>(request: Request<T>, handle: F) -> Result<tonic::Response<R>, Status>
    where
        F: FnOnce(Call, T) -> Fut,
        Fut: std::future::Future<Output = Result<R, ApiError>>,
    {
        let call = Call::of(&request)?;
        let request_id = call.request_id.clone();
        handle(call, request.into_inner())
            .await
            .map(tonic::Response::new)
            .map_err(|err| err.into_status(&request_id))
    }
}
