//! EntityService: read the organization's entities.

use prost::Message;
use tonic::{Request, Response, Status};

use super::error::ApiError;
use super::{Call, convert, page};
use crate::db::Db;
use crate::db::entities::{self, CursorValue};
use crate::proto::{self, entity_service_server::EntityService};

pub struct EntityApi {
    db: Db,
}

impl EntityApi {
    pub fn new(db: Db) -> EntityApi {
        EntityApi { db }
    }
}

#[tonic::async_trait]
impl EntityService for EntityApi {
    async fn get_entity(
        &self,
        request: Request<proto::GetEntityRequest>,
    ) -> Result<Response<proto::Entity>, Status> {
        Call::serve(request, |call, req| async move {
            let mut conn = self.db.conn().await?;
            match entities::find(&mut conn, call.org(), req.id.trim()).await? {
                Some(row) => Ok(convert::entity(row)),
                None => Err(ApiError::not_found("entity")),
            }
        })
        .await
    }

    async fn list_entities(
        &self,
        request: Request<proto::ListEntitiesRequest>,
    ) -> Result<Response<proto::ListEntitiesResponse>, Status> {
        Call::serve(request, |call, req| async move { self.list(&call, req).await }).await
    }
}

impl EntityApi {
    async fn list(
        &self,
        call: &Call,
        req: proto::ListEntitiesRequest,
    ) -> Result<proto::ListEntitiesResponse, ApiError> {
        let filter = convert::entity_filter(req.filter.as_ref(), "filter")?;
        let order = convert::entity_order(&req.order_by)?;
        let limit = page::page_size(req.page_size)?;
        let filter_bytes = req
            .filter
            .as_ref()
            .map(Message::encode_to_vec)
            .unwrap_or_default();
        let fingerprint = page::fingerprint(&[&filter_bytes, format!("{order:?}").as_bytes()]);
        let after: Option<(CursorValue, String)> = page::decode(&req.page_token, &fingerprint)?;

        let mut conn = self.db.conn().await?;
        let (mut rows, total) =
            entities::list_with_total(&mut conn, call.org(), &filter, order, after, limit + 1).await?;
        let next_page_token = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last()
                .map(|last| page::encode(&(order.cursor_value(last), last.id.clone()), &fingerprint))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(proto::ListEntitiesResponse {
            entities: rows.into_iter().map(convert::entity).collect(),
            next_page_token,
            total_size: i32::try_from(total).unwrap_or(i32::MAX),
        })
    }
}
