//! MappingService. Not served yet: every method answers UNIMPLEMENTED after auth.

use tonic::{Request, Response, Status};

use super::pending::not_yet;
use crate::proto::{self, mapping_service_server::MappingService};

const SERVICE: &str = "MappingService";

#[derive(Default)]
pub struct MappingApi;

#[tonic::async_trait]
impl MappingService for MappingApi {
    async fn create_mapping(
        &self,
        r: Request<proto::CreateMappingRequest>,
    ) -> Result<Response<proto::Mapping>, Status> {
        Err(not_yet(&r, SERVICE))
    }
    async fn get_mapping(
        &self,
        r: Request<proto::GetMappingRequest>,
    ) -> Result<Response<proto::Mapping>, Status> {
        Err(not_yet(&r, SERVICE))
    }
    async fn list_mappings(
        &self,
        r: Request<proto::ListMappingsRequest>,
    ) -> Result<Response<proto::ListMappingsResponse>, Status> {
        Err(not_yet(&r, SERVICE))
    }
    async fn delete_mapping(&self, r: Request<proto::DeleteMappingRequest>) -> Result<Response<()>, Status> {
        Err(not_yet(&r, SERVICE))
    }
}
