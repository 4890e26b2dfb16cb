//! The audit trail: who changed what, and which download and error-report links
//! were handed to whom, over gRPC, REST, e-mail and the admin commands.
//!
//! Successful changes are recorded by the domain inside the change's own
//! transaction (a change whose record cannot be written does not happen); a link
//! is recorded before it is handed out (no record, no link). Refused calls are
//! recorded by the door that refused them, in a write of their own, with the
//! refusal's code as the outcome.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::auth::Principal;
use crate::db::audit::{self as rows, AuditRow};
use crate::db::{Conn, Db, DbError, now_ms};

/// The gRPC methods whose calls are recorded: every mutating call and every call
/// that hands out a link. REST routes standing for them are recorded too.
pub const AUDITED_METHODS: &[&str] = &[
    "/ferry.v1.ExportService/CreateExport",
    "/ferry.v1.ExportService/CancelExport",
    "/ferry.v1.ExportService/DeleteExport",
    "/ferry.v1.ExportService/GetExportDownload",
    "/ferry.v1.ImportService/UploadImport",
    "/ferry.v1.ImportService/CancelImport",
    "/ferry.v1.ImportService/GetImportErrorReport",
    "/ferry.v1.ImportService/DeleteImport",
    "/ferry.v1.MappingService/CreateMapping",
    "/ferry.v1.MappingService/UpdateMapping",
    "/ferry.v1.MappingService/DeleteMapping",
];

pub fn is_audited(method: &str) -> bool {
    AUDITED_METHODS.contains(&method)
}

/// The outcome of a call that did what it was asked.
pub const OK: &str = "OK";

/// How the call reached ferry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Grpc,
    Rest,
    /// The bulk imports hub's pages (`/hub`).
    Hub,
    Email,
    Admin,
}

impl Door {
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Grpc => "grpc",
            Door::Rest => "rest",
            Door::Hub => "hub",
            Door::Email => "email",
            Door::Admin => "admin",
        }
    }
}

/// Who acts, for which organization, through which call: what every record of
/// the call repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// An API key id, `jwt:<subject>`, `cert:<identity>`, `admin:<user>`, `system:mail`.
    pub principal: String,
    pub organization_id: String,
    pub door: Door,
    /// The gRPC method, the REST route (`DELETE /v1/exports/{id}`), the e-mail
    /// (`email:export`) or the admin command (`admin key create`).
    pub method: String,
    pub request_id: String,
}

impl Actor {
    /// An authenticated caller of `method` through `door`.
    pub fn of(principal: &Principal, door: Door, method: &str, request_id: &str) -> Actor {
        Actor {
            principal: principal.key_id.clone(),
            organization_id: principal.organization_id().to_string(),
            door,
            method: method.to_string(),
            request_id: request_id.to_string(),
        }
    }

    /// The same caller acting for another organization (admin commands act on many).
    pub fn for_organization(&self, organization_id: &str) -> Actor {
        Actor {
            organization_id: organization_id.to_string(),
            ..self.clone()
        }
    }

    fn row(&self, target_id: &str, outcome: &str, detail: &str) -> AuditRow {
        AuditRow {
            id: crate::db::new_id(),
            at: now_ms(),
            organization_id: self.organization_id.clone(),
            principal: self.principal.clone(),
            door: self.door.as_str().to_string(),
            method: self.method.clone(),
            target_id: target_id.to_string(),
            request_id: self.request_id.clone(),
            outcome: outcome.to_string(),
            detail: detail.to_string(),
        }
    }

    /// Records on the caller's connection: inside the change's transaction.
    pub async fn record(&self, conn: &mut Conn, target_id: &str, outcome: &str) -> Result<(), DbError> {
        self.record_detailed(conn, target_id, outcome, "").await
    }

    pub async fn record_detailed(
        &self,
        conn: &mut Conn,
        target_id: &str,
        outcome: &str,
        detail: &str,
    ) -> Result<(), DbError> {
        Ok(rows::insert(conn, &self.row(target_id, outcome, detail)).await?)
    }

    /// Records in a write of its own (links handed out, refusals).
    pub async fn record_now(
        &self,
        db: &Db,
        target_id: &str,
        outcome: &str,
        detail: &str,
    ) -> Result<(), DbError> {
        let mut conn = db.conn().await?;
        self.record_detailed(&mut conn, target_id, outcome, detail).await
    }

    /// A refusal: recorded if possible, logged if not (the caller already has its
    /// answer; a lost refusal record is not worth a second error).
    pub async fn record_refusal(&self, db: &Db, target_id: &str, outcome: &str, detail: &str) {
        if let Err(err) = self.record_now(db, target_id, outcome, detail).await {
            tracing::error!(error = %err, method = %self.method, "cannot record a refused call in the audit trail");
        }
    }
}

/// The organization's events since `since` (ms), oldest first.
pub async fn list(db: &Db, organization_id: &str, since: i64, limit: i64) -> Result<Vec<AuditRow>, DbError> {
    let mut conn = db.conn().await?;
    Ok(rows::list(&mut conn, organization_id, since, limit).await?)
}

/// Events removed per statement by [`purge`].
pub const PURGE_BATCH: i64 = 5_000;

/// Drops events older than `retention`, [`PURGE_BATCH`] at a time, each batch its
/// own statement on a connection taken for it; how many went.
pub async fn purge(db: &Db, retention: Duration) -> Result<usize, DbError> {
    let before = now_ms().saturating_sub(crate::db::millis(retention));
    let mut removed = 0;
    loop {
        let gone = rows::delete_before(&mut db.conn().await?, before, PURGE_BATCH).await?;
        removed += gone;
        if (gone as i64) < PURGE_BATCH {
            return Ok(removed);
        }
    }
}

/// Purges once an hour (and at start) until `stop`; `retention` zero keeps
/// everything.
pub async fn keep_for(db: Db, retention: Duration, stop: CancellationToken) {
    if retention.is_zero() {
        return;
    }
    crate::hourly::until_stopped(stop, || async {
        match purge(&db, retention).await {
            Ok(0) => {}
            Ok(gone) => tracing::info!(events = gone, "audit events past their retention removed"),
            Err(err) => tracing::warn!(error = %err, "cannot purge old audit events"),
        }
    })
    .await;
}
