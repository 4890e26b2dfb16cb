//! ExportService. Not served yet: every method answers UNIMPLEMENTED after auth.

use futures::stream::BoxStream;
use tonic::{Request, Response, Status};

use super::pending::not_yet;
use crate::proto::{self, export_service_server::ExportService};

const SERVICE: &str = "ExportService";

#[derive(Default)]
pub struct ExportApi;

#[tonic::async_trait]
impl ExportService for ExportApi {
    type WatchExportStream = BoxStream<'static, Result<proto::Export, Status>>;

    async fn create_export(
        &self,
        r: Request<proto::CreateExportRequest>,
    ) -> Result<Response<proto::Export>, Status> {
        Err(not_yet(&r, SERVICE))
    }
    async fn get_export(
        &self,
        r: Request<proto::GetExportRequest>,
    ) -> Result<Response<proto::Export>, Status> {
        Err(not_yet(&r, SERVICE))
    }
    async fn list_exports(
        &self,
        r: Request<proto::ListExportsRequest>,
    ) -> Result<Response<proto::ListExportsResponse>, Status> {
        Err(not_yet(&r, SERVICE))
    }
    async fn watch_export(
        &self,
        r: Request<proto::WatchExportRequest>,
    ) -> Result<Response<Self::WatchExportStream>, Status> {
        Err(not_yet(&r, SERVICE))
    }
    async fn cancel_export(
        &self,
        r: Request<proto::CancelExportRequest>,
    ) -> Result<Response<proto::Export>, Status> {
        Err(not_yet(&r, SERVICE))
    }
    async fn delete_export(&self, r: Request<proto::DeleteExportRequest>) -> Result<Response<()>, Status> {
        Err(not_yet(&r, SERVICE))
    }
    async fn get_export_download(
        &self,
        r: Request<proto::GetExportDownloadRequest>,
    ) -> Result<Response<proto::ExportDownload>, Status> {
        Err(not_yet(&r, SERVICE))
    }
}
