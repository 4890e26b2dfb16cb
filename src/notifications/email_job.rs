//! The e-mail job: one message per recipient when a job ends. Each recipient's
//! state is recorded before and after sending, so a retried or rescued job never
//! sends twice: a recipient left `sending` by a dead worker is marked failed, not
//! resent.

use crate::audit::{self, Actor, Door};
use std::sync::Arc;
use std::time::Duration;

use lettre::message::Mailbox;

use super::{Link, Notice, Notices, Payload};
use crate::calendar::rfc3339_millis;
use crate::db::email_deliveries::{self, DeliveryRow};
use crate::db::{Db, now_ms};
use crate::jobs::{Job, JobContext, JobError, JobKind, Lane, Outcome, RunJob};
use crate::mail::{MailError, Mailer, Outgoing, Rendered};
use crate::orgs;
use crate::storage::{Download, Storage};

/// The e-mail job kind.
pub struct Email;

impl JobKind for Email {
    const KIND: &'static str = super::EMAIL_KIND;
    const LANE: Lane = Lane::Delivery;
    type Spec = Payload;
    type Output = serde_json::Value;
}

pub struct EmailJob {
    pub mailer: Arc<Mailer>,
    pub storage: Storage,
    pub link_ttl: Duration,
    /// Pause between two messages (a throttle for small relays).
    pub pause: Duration,
    /// What each job kind that notifies has to say.
    pub notices: Notices,
}

impl RunJob for EmailJob {
    type Kind = Email;

    async fn run(&self, job: Job<Email>, ctx: JobContext) -> Result<Outcome<serde_json::Value>, JobError> {
        self.deliver(&job.spec.job_id, ctx).await?;
        Ok(Outcome::default())
    }
}

impl EmailJob {
    async fn deliver(&self, job_id: &str, ctx: JobContext) -> Result<(), JobError> {
        // Each database step checks out its own connection and returns it before the
        // next (the organization, the ledger, the watchers' event): none is held
        // while another is awaited, nor while a message goes to the mail server.
        let Some(ended) = ctx.find_job(job_id).await? else {
            // A deleted job has nobody left to tell.
            return Ok(());
        };
        let known = email_deliveries::list(&mut ctx.db().conn().await?, &ended.id).await?;
        let notice = self.notices.notice(&ended).map_err(|e| JobError::Permanent {
            reason: "INVALID_PAYLOAD".into(),
            message: e.to_string(),
        })?;
        let Some(notice) = notice else {
            return Ok(());
        };
        let org = orgs::find(ctx.db(), &ended.organization_id)
            .await
            .map_err(|e| JobError::Transient(e.to_string()))?;
        let rendered = self.render(&notice, &org.name).await?;
        let from: Mailbox = if notice.from_mailbox.is_empty() {
            self.mailer.system_sender.clone()
        } else {
            notice.from_mailbox.parse().map_err(|e| JobError::Permanent {
                reason: "INVALID_SENDER".into(),
                message: format!("{e}"),
            })?
        };
        let ledger = Ledger {
            db: ctx.db(),
            job_id: &ended.id,
        };
        let mut retry = None;
        for (i, recipient) in notice.recipients.iter().enumerate() {
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
            // A link handed to a recipient is in the audit trail before it leaves
            // (and before the ledger says `sending`, so a failed record is retried).
            if notice.link.is_some() {
                let actor = Actor {
                    principal: "system:mail".into(),
                    organization_id: ended.organization_id.clone(),
                    door: Door::Email,
                    method: format!("email:{}", ended.kind),
                    request_id: message_id.clone(),
                };
                actor
                    .record_now(ctx.db(), &ended.id, audit::OK, &format!("link to {recipient}"))
                    .await
                    .map_err(|e| JobError::Transient(e.to_string()))?;
            }
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
                Err(MailError::RelayDown(after)) => {
                    // Nothing went out: the recipient waits with the job, which
                    // goes back to the queue without spending an attempt.
                    ledger
                        .set(recipient, email_deliveries::PENDING, None, None)
                        .await?;
                    ctx.publish(&ended.id).await;
                    return Err(JobError::Deferred {
                        after,
                        why: "the mail relay keeps timing out".into(),
                    });
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
            // Watchers of the job see each recipient's state.
            ctx.publish(&ended.id).await;
        }
        match retry {
            Some(e) => Err(JobError::Transient(e)),
            None => Ok(()),
        }
    }

    /// The message: the notice's values, the organization's name and, when the
    /// notice links a file, a link signed now with its expiry.
    async fn render(&self, notice: &Notice, org: &str) -> Result<Rendered, JobError> {
        let (link, expires) = match &notice.link {
            Some(link) => self.sign(link).await?,
            None => (String::new(), String::new()),
        };
        let mut values = notice.values.clone();
        values.insert("org".into(), org.into());
        values.insert("link".into(), link.into());
        values.insert("expires".into(), expires.into());
        self.mailer
            .templates
            .render(&notice.locale, notice.template, &values)
            .map_err(|e| JobError::Permanent {
                reason: "TEMPLATE_FAILED".into(),
                message: e.to_string(),
            })
    }

    /// A download URL valid for the link TTL, and its expiry as `YYYY-MM-DD hh:mm:ss`.
    async fn sign(&self, link: &Link) -> Result<(String, String), JobError> {
        let download = Download {
            file_name: &link.file_name,
            content_type: &link.content_type,
            ttl: self.link_ttl,
        };
        let url = self
            .storage
            .download_url(&link.object_key, &download)
            .await
            .map_err(|e| JobError::Transient(e.to_string()))?;
        let expires = rfc3339_millis(now_ms() + self.link_ttl.as_millis() as i64);
        Ok((url, expires.replace('T', " ").trim_end_matches('Z').to_string()))
    }
}

/// The per-recipient delivery states of one job.
struct Ledger<'a> {
    db: &'a Db,
    job_id: &'a str,
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
            job_id: self.job_id.to_string(),
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
