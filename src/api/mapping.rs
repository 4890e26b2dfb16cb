//! MappingService: saved header mappings of the organization.

use std::collections::{BTreeMap, HashMap};

use tonic::{Request, Response, Status};

use super::convert::timestamp;
use super::error::ApiError;
use super::{Call, page};
use crate::db::Db;
use crate::db::mappings::MappingRow;
use crate::import::mappings::{Change, Mappings};
use crate::proto::{self, mapping_service_server::MappingService};

/// Thin over [`Mappings`]: the audit of refused calls is the door's (`db`).
pub struct MappingApi {
    db: Db,
    mappings: Mappings,
}

impl MappingApi {
    pub fn new(db: Db) -> MappingApi {
        MappingApi {
            mappings: Mappings::new(db.clone()),
            db,
        }
    }
}

fn kind_name(value: i32) -> Option<&'static str> {
    match proto::MappingKind::try_from(value).ok()? {
        proto::MappingKind::EntityPerson => Some("entity_person"),
        proto::MappingKind::EntityCompany => Some("entity_company"),
        proto::MappingKind::EntityMixed => Some("entity_mixed"),
        proto::MappingKind::Unspecified => None,
    }
}

fn kind_value(name: &str) -> proto::MappingKind {
    match name {
        "entity_person" => proto::MappingKind::EntityPerson,
        "entity_company" => proto::MappingKind::EntityCompany,
        "entity_mixed" => proto::MappingKind::EntityMixed,
        _ => proto::MappingKind::Unspecified,
    }
}

fn message(row: MappingRow) -> proto::Mapping {
    let columns: HashMap<String, String> = serde_json::from_str(&row.column_map).unwrap_or_default();
    proto::Mapping {
        kind: kind_value(&row.kind) as i32,
        columns,
        create_time: Some(timestamp(row.created_at)),
        update_time: Some(timestamp(row.updated_at)),
        id: row.id,
        organization_id: row.organization_id,
        name: row.name,
    }
}

impl MappingApi {
    async fn list(
        &self,
        call: &Call,
        req: proto::ListMappingsRequest,
    ) -> Result<proto::ListMappingsResponse, ApiError> {
        let limit = page::page_size(req.page_size)?;
        let fingerprint = page::fingerprint(&[b"mappings"]);
        let before: Option<(i64, String)> = page::decode(&req.page_token, &fingerprint)?;
        let (mut rows, total) = self.mappings.list(call.org(), before, limit + 1).await?;
        let next_page_token = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last()
                .map(|r| page::encode(&(r.created_at, r.id.clone()), &fingerprint))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(proto::ListMappingsResponse {
            mappings: rows.into_iter().map(message).collect(),
            next_page_token,
            total_size: i32::try_from(total).unwrap_or(i32::MAX),
        })
    }
}

#[tonic::async_trait]
impl MappingService for MappingApi {
    async fn create_mapping(
        &self,
        request: Request<proto::CreateMappingRequest>,
    ) -> Result<Response<proto::Mapping>, Status> {
        Call::serve_audited(
            request,
            &self.db,
            |_| String::new(),
            |call, req| async move {
                let columns: BTreeMap<String, String> = req.columns.into_iter().collect();
                let row = self
                    .mappings
                    .create(&call.actor(), &req.name, kind_name(req.kind), &columns)
                    .await?;
                Ok(message(row))
            },
        )
        .await
    }

    async fn get_mapping(
        &self,
        request: Request<proto::GetMappingRequest>,
    ) -> Result<Response<proto::Mapping>, Status> {
        Call::serve(request, |call, req| async move {
            Ok(message(self.mappings.get(call.org(), &req.id).await?))
        })
        .await
    }

    async fn list_mappings(
        &self,
        request: Request<proto::ListMappingsRequest>,
    ) -> Result<Response<proto::ListMappingsResponse>, Status> {
        Call::serve(request, |call, req| async move { self.list(&call, req).await }).await
    }

    async fn update_mapping(
        &self,
        request: Request<proto::UpdateMappingRequest>,
    ) -> Result<Response<proto::Mapping>, Status> {
        Call::serve_audited(
            request,
            &self.db,
            |r| r.id.trim().to_string(),
            |call, req| async move {
                let change = Change {
                    name: Some(req.name).filter(|name| !name.is_empty()),
                    kind: (req.kind != proto::MappingKind::Unspecified as i32).then(|| kind_name(req.kind)),
                    columns: (!req.columns.is_empty()).then(|| req.columns.into_iter().collect()),
                };
                let row = self.mappings.update(&call.actor(), &req.id, change).await?;
                Ok(message(row))
            },
        )
        .await
    }

    async fn delete_mapping(
        &self,
        request: Request<proto::DeleteMappingRequest>,
    ) -> Result<Response<()>, Status> {
        Call::serve_audited(
            request,
            &self.db,
            |r| r.id.trim().to_string(),
            |call, req| async move {
                self.mappings.delete(&call.actor(), &req.id).await?;
                Ok(())
            },
        )
        .await
    }
}
