//! The organization's saved header mappings as one service for every door: gRPC's
//! MappingService, the REST routes under `/batch-import/mappings` and the hub's
//! mapping editor create, read, change and delete them here, with the same checks
//! ([`super::mapping::check`]) and an audit record written in the same transaction
//! as the change.

use std::collections::BTreeMap;

use super::mapping;
use super::service::ImportError;
use crate::audit::{self, Actor};
use crate::db::mappings::{self, MappingRow};
use crate::db::{Db, DbError, new_id, now_ms};
use crate::jobs::QueueError;

/// What a change to a saved mapping replaces; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub name: Option<String>,
    pub kind: Option<Option<&'static str>>,
    pub columns: Option<BTreeMap<String, String>>,
}

#[derive(Clone)]
pub struct Mappings {
    db: Db,
}

fn not_found() -> ImportError {
    ImportError::Job(QueueError::NotFound { kind: "mapping" })
}

/// A mapping's kind as stored, from any door's spelling (`entity_person`,
/// `ENTITY_PERSON`, `MAPPING_KIND_ENTITY_PERSON`); `None` for anything else.
pub fn kind_named(text: &str) -> Option<&'static str> {
    let lower = text.trim().to_ascii_lowercase();
    let bare = lower.strip_prefix("mapping_kind_").unwrap_or(&lower);
    mapping::KINDS.iter().copied().find(|kind| *kind == bare)
}

/// A stored mapping's column map; a map this build cannot read is the server's fault.
pub fn columns_of(row: &MappingRow) -> Result<BTreeMap<String, String>, ImportError> {
    serde_json::from_str(&row.column_map)
        .map_err(|e| DbError::Query(diesel::result::Error::DeserializationError(Box::new(e))).into())
}

impl Mappings {
    pub fn new(db: Db) -> Mappings {
        Mappings { db }
    }

    /// Saves a new mapping (checked: name, kind, 1 to 500 headers, each to a real
    /// platform column).
    pub async fn create(
        &self,
        actor: &Actor,
        name: &str,
        kind: Option<&str>,
        columns: &BTreeMap<String, String>,
    ) -> Result<MappingRow, ImportError> {
        let map = mapping::check(name, kind, columns).map_err(ImportError::Invalid)?;
        let now = now_ms();
        let row = MappingRow {
            id: new_id(),
            organization_id: actor.organization_id.clone(),
            name: name.trim().to_string(),
            kind: kind.unwrap_or_default().to_string(),
            column_map: serde_json::to_string(&map).unwrap_or_default(),
            created_at: now,
            updated_at: now,
        };
        let (saved, actor) = (row.clone(), actor.clone());
        self.db
            .transaction(move |conn| {
                Box::pin(async move {
                    mappings::insert(conn, &saved).await.map_err(DbError::from)?;
                    actor.record(conn, &saved.id, audit::OK).await
                })
            })
            .await?;
        Ok(row)
    }

    pub async fn get(&self, organization_id: &str, id: &str) -> Result<MappingRow, ImportError> {
        let mut conn = self.db.conn().await?;
        mappings::find(&mut conn, organization_id, id.trim())
            .await
            .map_err(DbError::from)?
            .ok_or_else(not_found)
    }

    /// Newest first, after `before` (the (created_at, id) where the previous page
    /// ended), and how many the organization has.
    pub async fn list(
        &self,
        organization_id: &str,
        before: Option<(i64, String)>,
        limit: i64,
    ) -> Result<(Vec<MappingRow>, i64), ImportError> {
        let mut conn = self.db.conn().await?;
        let rows = mappings::list(&mut conn, organization_id, before, limit)
            .await
            .map_err(DbError::from)?;
        let total = mappings::count(&mut conn, organization_id)
            .await
            .map_err(DbError::from)?;
        Ok((rows, total))
    }

    /// Renames, re-kinds or re-maps a saved mapping: the result is checked whole,
    /// as a new one would be. Imports already queued keep the map they were given.
    pub async fn update(&self, actor: &Actor, id: &str, change: Change) -> Result<MappingRow, ImportError> {
        let current = self.get(&actor.organization_id, id).await?;
        let name = change.name.unwrap_or_else(|| current.name.clone());
        let kind = match change.kind {
            Some(kind) => kind,
            None => kind_named(&current.kind),
        };
        let columns = match change.columns {
            Some(columns) => columns,
            None => columns_of(&current)?,
        };
        let map = mapping::check(&name, kind, &columns).map_err(ImportError::Invalid)?;
        let row = MappingRow {
            name: name.trim().to_string(),
            kind: kind.unwrap_or_default().to_string(),
            column_map: serde_json::to_string(&map).unwrap_or_default(),
            updated_at: now_ms().max(current.updated_at),
            ..current
        };
        let (saved, actor) = (row.clone(), actor.clone());
        let updated = self
            .db
            .transaction(move |conn| {
                Box::pin(async move {
                    let updated = mappings::update(conn, &saved).await.map_err(DbError::from)?;
                    if updated {
                        actor.record(conn, &saved.id, audit::OK).await?;
                    }
                    Ok::<_, DbError>(updated)
                })
            })
            .await?;
        match updated {
            true => Ok(row),
            // Deleted between the read and the write.
            false => Err(not_found()),
        }
    }

    pub async fn delete(&self, actor: &Actor, id: &str) -> Result<(), ImportError> {
        let (organization, id, actor) = (
            actor.organization_id.clone(),
            id.trim().to_string(),
            actor.clone(),
        );
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
            false => Err(not_found()),
        }
    }

    /// What the organization's saved mappings say about each custom header
    /// (normalised): the column the newest mapping sends it to. The hub suggests
    /// these when a person maps a new file.
    pub async fn known_headers(
        &self,
        organization_id: &str,
        limit: i64,
    ) -> Result<BTreeMap<String, String>, ImportError> {
        let rows = {
            let mut conn = self.db.conn().await?;
            mappings::list(&mut conn, organization_id, None, limit)
                .await
                .map_err(DbError::from)?
        };
        let mut known = BTreeMap::new();
        // Oldest first, so the newest mapping's answer wins.
        for row in rows.iter().rev() {
            if let Ok(columns) = columns_of(row) {
                known.extend(columns);
            }
        }
        Ok(known)
    }
}
