//! MappingService: saved header mappings of the organization.

use std::collections::{BTreeMap, HashMap};

use tonic::{Request, Response, Status};

use super::convert::timestamp;
use super::error::ApiError;
use super::{Call, page};
use crate::audit;
use crate::db::mappings::{self, MappingRow};
use crate::db::{Db, DbError, new_id, now_ms};
use crate::import::mapping;
use crate::proto::{self, mapping_service_server::MappingService};

pub struct MappingApi {
    db: Db,
}

impl MappingApi {
    pub fn new(db: Db) -> MappingApi {
        MappingApi { db }
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
    async fn create(
        &self,
        call: &Call,
        req: proto::CreateMappingRequest,
    ) -> Result<proto::Mapping, ApiError> {
        let columns: BTreeMap<String, String> = req.columns.into_iter().collect();
        let kind = kind_name(req.kind);
        let map = mapping::check(&req.name, kind, &columns).map_err(ApiError::invalid)?;
        let now = now_ms();
        let row = MappingRow {
            id: new_id(),
            organization_id: call.org().to_string(),
            name: req.name.trim().to_string(),
            kind: kind.unwrap_or_default().to_string(),
            column_map: serde_json::to_string(&map).unwrap_or_default(),
            created_at: now,
            updated_at: now,
        };
        // The mapping and its audit record, together or not at all.
        let (saved, actor) = (row.clone(), call.actor());
        self.db
            .transaction(move |conn| {
                Box::pin(async move {
                    mappings::insert(conn, &saved).await.map_err(DbError::from)?;
                    actor.record(conn, &saved.id, audit::OK).await
                })
            })
            .await?;
        Ok(message(row))
    }

    async fn list(
        &self,
        call: &Call,
        req: proto::ListMappingsRequest,
    ) -> Result<proto::ListMappingsResponse, ApiError> {
        let limit = page::page_size(req.page_size)?;
        let fingerprint = page::fingerprint(&[b"mappings"]);
        let before: Option<(i64, String)> = page::decode(&req.page_token, &fingerprint)?;
        let mut conn = self.db.conn().await?;
        let mut rows = mappings::list(&mut conn, call.org(), before, limit + 1).await?;
        let total = mappings::count(&mut conn, call.org()).await?;
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
            |call, req| async move { self.create(&call, req).await },
        )
        .await
    }

    async fn get_mapping(
        &self,
        request: Request<proto::GetMappingRequest>,
    ) -> Result<Response<proto::Mapping>, Status> {
        Call::serve(request, |call, req| async move {
            let mut conn = self.db.conn().await?;
            match mappings::find(&mut conn, call.org(), req.id.trim()).await? {
                Some(row) => Ok(message(row)),
                None => Err(ApiError::not_found("mapping")),
            }
        })
        .await
    }

    async fn list_mappings(
        &self,
        request: Request<proto::ListMappingsRequest>,
    ) -> Result<Response<proto::ListMappingsResponse>, Status> {
        Call::serve(request, |call, req| async move { self.list(&call, req).await }).await
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
                let (organization, id, actor) =
                    (call.org().to_string(), req.id.trim().to_string(), call.actor());
                let deleted = self
                    .db
                    .transaction(move |conn| {
                        Box::pin(async move {
                            let deleted = mappings::delete(conn, &organization, &id)
                                .await
                                .map_err(DbError::from)?;
                            if deleted {
                                actor.record(conn, &id, audit::OK).await?;
                            }
                            Ok::<_, DbError>(deleted)
                        })
                    })
                    .await?;
                match deleted {
                    true => Ok(()),
                    false => Err(ApiError::not_found("mapping")),
                }
            },
        )
        .await
    }
}
