//! The `export_email` job: one message per recipient when an export ends (a download
//! link when it completed, a short notice when it failed). Each recipient's state is
//! recorded before and after sending, so a retried or rescued job never sends twice:
//! a recipient left `sending` by a dead worker is marked failed, not resent.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use lettre::message::Mailbox;
use serde::{Deserialize, Serialize};

use super::job::ExportResult;
use super::service::result_of;
use super::spec::{Delivery, ExportSpec};
use crate::calendar::rfc3339_millis;
use crate::db::email_deliveries::{self, DeliveryRow};
use crate::db::jobs::{self, JobRow};
use crate::db::{Db, now_ms};
use crate::jobs::{JobContext, JobError, JobHandler, JobOutcome, NewJob};
use crate::mail::{Kind, MailError, Mailer, Outgoing, templates::human_size};
use crate::orgs;
use crate::storage::{Download, Storage};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Payload {
    v: u32,
    export_id: String,
}

/// Who hears about a finished job: an export's delivery settings, or an import's
/// report recipients (sent from the system sender).
pub fn delivery_of(job: &JobRow) -> Option<Delivery> {
    if job.kind == crate::import::KIND {
        let spec: crate::import::spec::ImportSpec = serde_json::from_str(&job.payload).ok()?;
        if spec.report_recipient_emails.is_empty() {
            return None;
        }
        return Some(Delivery {
            recipient_emails: spec.report_recipient_emails,
            email_locale: spec.email_locale,
            from_email: String::new(),
            from_sender_id: String::new(),
            from_mailbox: String::new(),
        });
    }
    serde_json::from_str::<ExportSpec>(&job.payload).ok()?.delivery
}

/// The e-mail job for an export with delivery settings or an import with report
/// recipients, else `None`.
pub fn follow_up(export: &JobRow) -> Option<NewJob> {
    delivery_of(export)?;
    Some(NewJob {
        id: None,
        organization_id: export.organization_id.clone(),
        kind: super::EMAIL_KIND.into(),
        payload: serde_json::to_value(Payload {
            v: 1,
            export_id: export.id.clone(),
        })
        .ok()?,
        request_id: None,
        dedupe_key: None,
        search_text: String::new(),
        rows_total: None,
    })
}

#[derive(Clone)]
pub struct EmailJob {
    pub mailer: Arc<Mailer>,
    pub storage: Storage,
    pub link_ttl: Duration,
    /// Pause between two messages (a throttle for small relays).
    pub pause: Duration,
}

impl JobHandler for EmailJob {
    fn kind(&self) -> &'static str {
        super::EMAIL_KIND
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Result<JobOutcome, JobError>> {
        let job = self.clone();
        Box::pin(async move { job.deliver(ctx).await })
    }
}

impl EmailJob {
    async fn deliver(&self, ctx: JobContext) -> Result<JobOutcome, JobError> {
        let payload: Payload = serde_json::from_str(&ctx.job().payload).map_err(|e| JobError::Permanent {
            reason: "INVALID_PAYLOAD".into(),
            message: e.to_string(),
        })?;
        // Each database step checks out its own connection and returns it before the
        // next (the organization, the ledger, the watchers' event): none is held
        // while another is awaited, nor while a message goes to the mail server.
        let (export, known) = {
            let mut conn = ctx.db().conn().await?;
            // A deleted export has nobody left to tell.
            let Some(export) = jobs::find(&mut conn, &payload.export_id).await? else {
                return Ok(JobOutcome::default());
            };
            let known = email_deliveries::list(&mut conn, &export.id).await?;
            (export, known)
        };
        let Some(delivery) = delivery_of(&export) else {
            return Ok(JobOutcome::default());
        };
        let org = orgs::find(ctx.db(), &export.organization_id)
            .await
            .map_err(|e| JobError::Transient(e.to_string()))?;
        let rendered = if export.kind == crate::import::KIND {
            self.render_import(&export, &delivery, &org.name).await?
        } else {
            self.render(&export, &delivery, &org.name).await?
        };
        let from: Mailbox = if delivery.from_mailbox.is_empty() {
            self.mailer.system_sender.clone()
        } else {
            delivery.from_mailbox.parse().map_err(|e| JobError::Permanent {
                reason: "INVALID_SENDER".into(),
                message: format!("{e}"),
            })?
        };
        let ledger = Ledger {
            db: ctx.db(),
            export_id: &export.id,
        };
        let mut retry = None;
        for (i, recipient) in delivery.recipient_emails.iter().enumerate() {
            ctx.check()?;
            match known
                .iter()
                .find(|d| d.recipient == *recipient)
                .map(|d| d.state.as_str())
            {
                Some(email_deliveries::SENT | email_deliveries::FAILED) => continue,
                Some(email_deliveries::SENDING) => {
                    let error = "the worker stopped while handing this message to the mail server; not resent, to avoid a duplicate";
                    ledger
                        .set(recipient, email_deliveries::FAILED, None, Some(error))
                        .await?;
                    continue;
                }
                _ => {}
            }
            if i > 0 && !self.pause.is_zero() {
                tokio::select! {
                    _ = ctx.stopped() => {}
                    _ = tokio::time::sleep(self.pause) => {}
                }
                ctx.check()?;
            }
            let message_id = Mailer::new_message_id();
            ledger
                .set(recipient, email_deliveries::SENDING, Some(&message_id), None)
                .await?;
            let to: Mailbox = match recipient.parse() {
                Ok(to) => to,
                Err(e) => {
                    ledger
                        .set(recipient, email_deliveries::FAILED, None, Some(&e.to_string()))
                        .await?;
                    continue;
                }
            };
            let outgoing = Outgoing {
                from: from.clone(),
                to,
                message_id: message_id.clone(),
                rendered: rendered.clone(),
            };
            match self.mailer.send(&outgoing).await {
                Ok(()) => {
                    ledger
                        .set(recipient, email_deliveries::SENT, Some(&message_id), None)
                        .await?
                }
                Err(MailError::Transient(e)) => {
                    ledger
                        .set(recipient, email_deliveries::PENDING, None, Some(&e))
                        .await?;
                    retry = Some(e);
                }
                Err(e) => {
                    ledger
                        .set(recipient, email_deliveries::FAILED, None, Some(&e.to_string()))
                        .await?
                }
            }
            // Watchers of the export see each recipient's state.
            publish(&ctx, &export.id).await;
        }
        match retry {
            Some(e) => Err(JobError::Transient(e)),
            None => Ok(JobOutcome::default()),
        }
    }

    /// The import report: counters, and a link to the failed rows if any.
    async fn render_import(
        &self,
        import: &JobRow,
        delivery: &Delivery,
        org: &str,
    ) -> Result<crate::mail::Rendered, JobError> {
        let counters = crate::import::job::result_of(import);
        let (link, expires) = match &counters.report_key {
            Some(key) => {
                let file_name = crate::import::report::file_name(&import.id);
                let download = Download {
                    file_name: &file_name,
                    content_type: "text/csv",
                    ttl: self.link_ttl,
                };
                let link = self
                    .storage
                    .download_url(key, &download)
                    .await
                    .map_err(|e| JobError::Transient(e.to_string()))?;
                let expires = rfc3339_millis(now_ms() + self.link_ttl.as_millis() as i64);
                (link, expires.replace('T', " ").trim_end_matches('Z').to_string())
            }
            None => (String::new(), String::new()),
        };
        let context = minijinja::context! {
            org => org, created => counters.created, updated => counters.updated,
            failed => counters.failed, link => link, expires => expires,
        };
        self.mailer
            .templates
            .render(&delivery.email_locale, Kind::ImportReport, &context)
            .map_err(|e| JobError::Permanent {
                reason: "TEMPLATE_FAILED".into(),
                message: e.to_string(),
            })
    }

    async fn render(
        &self,
        export: &JobRow,
        delivery: &Delivery,
        org: &str,
    ) -> Result<crate::mail::Rendered, JobError> {
        let templates = &self.mailer.templates;
        let failed = |e: minijinja::Error| JobError::Permanent {
            reason: "TEMPLATE_FAILED".into(),
            message: e.to_string(),
        };
        match result_of(export) {
            Some(result) if export.state == jobs::COMPLETED => {
                let ExportResult {
                    object_key,
                    file_name,
                    content_type,
                    size,
                    row_count,
                    ..
                } = result;
                let download = Download {
                    file_name: &file_name,
                    content_type: &content_type,
                    ttl: self.link_ttl,
                };
                let link = self
                    .storage
                    .download_url(&object_key, &download)
                    .await
                    .map_err(|e| JobError::Transient(e.to_string()))?;
                let expires = rfc3339_millis(now_ms() + self.link_ttl.as_millis() as i64);
                let format = file_name
                    .rsplit('.')
                    .find(|p| *p != "gz")
                    .unwrap_or_default()
                    .to_uppercase();
                let context = minijinja::context! {
                    org => org, rows => row_count, format => format, size => human_size(size),
                    link => link, expires => expires.replace('T', " ").trim_end_matches('Z').to_string(),
                };
                templates
                    .render(&delivery.email_locale, Kind::ExportReady, &context)
                    .map_err(failed)
            }
            _ => {
                let reason = export
                    .error
                    .as_deref()
                    .and_then(|e| serde_json::from_str::<crate::jobs::JobFailure>(e).ok())
                    .map(|f| f.message)
                    .unwrap_or_else(|| "the export did not complete".into());
                let context = minijinja::context! { org => org, reason => reason };
                templates
                    .render(&delivery.email_locale, Kind::ExportFailed, &context)
                    .map_err(failed)
            }
        }
    }
}

async fn publish(ctx: &JobContext, export_id: &str) {
    if let Ok(mut conn) = ctx.db().conn().await {
        ctx.events().publish(&mut conn, export_id).await;
    }
}

/// The per-recipient delivery states of one export.
struct Ledger<'a> {
    db: &'a Db,
    export_id: &'a str,
}

impl Ledger<'_> {
    async fn set(
        &self,
        recipient: &str,
        state: &str,
        message_id: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), JobError> {
        let now = now_ms();
        let row = DeliveryRow {
            job_id: self.export_id.to_string(),
            recipient: recipient.to_string(),
            state: state.to_string(),
            message_id: message_id.map(str::to_string),
            error: error.map(str::to_string),
            updated_at: now,
            sent_at: (state == email_deliveries::SENT).then_some(now),
        };
        email_deliveries::put(&mut self.db.conn().await?, &row).await?;
        Ok(())
    }
}
