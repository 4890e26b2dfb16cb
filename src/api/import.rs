//! ImportService. Not served yet: every method answers UNIMPLEMENTED after auth.

use futures::stream::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::pending::not_yet;
use crate::proto::{self, import_service_server::ImportService};

const SERVICE: &str = "ImportService";

#[derive(Default)]
pub struct ImportApi;

#[tonic::async_trait]
impl ImportService for ImportApi {
    type WatchImportStream = BoxStream<'static, Result<proto::Import, Status>>;

    async fn upload_import(
        &self,
        r: Request<Streaming<proto::UploadImportRequest>>,
    ) -> Result<Response<proto::Import>, Status> {
        Err(not_yet(&r, SERVICE))
    }
    async fn get_import(
        &self,
        r: Request<proto::GetImportRequest>,
    ) -> Result<Response<proto::Import>, Status> {
        Err(not_yet(&r, SERVICE))
    }
    async fn list_imports(
        &self,
        r: Request<proto::ListImportsRequest>,
    ) -> Result<Response<proto::ListImportsResponse>, Status> {
        Err(not_yet(&r, SERVICE))
    }
    async fn watch_import(
        &self,
        r: Request<proto::WatchImportRequest>,
    ) -> Result<Response<Self::WatchImportStream>, Status> {
        Err(not_yet(&r, SERVICE))
    }
    async fn cancel_import(
        &self,
        r: Request<proto::CancelImportRequest>,
    ) -> Result<Response<proto::Import>, Status> {
        Err(not_yet(&r, SERVICE))
    }
    async fn list_import_errors(
        &self,
        r: Request<proto::ListImportErrorsRequest>,
    ) -> Result<Response<proto::ListImportErrorsResponse>, Status> {
        Err(not_yet(&r, SERVICE))
    }
    async fn get_import_error_report(
        &self,
        r: Request<proto::GetImportErrorReportRequest>,
    ) -> Result<Response<proto::ImportErrorReport>, Status> {
        Err(not_yet(&r, SERVICE))
    }
}
