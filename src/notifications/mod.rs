//! Telling people a job ended: by e-mail, one message per recipient, with a signed
//! link to the job's file when it has one. A job kind that notifies supplies a
//! [`Notice`] for its ended jobs (recipients, locale, sender, template and its
//! values) through a [`NoticeSource`] registered in [`Notices`]; the e-mail job
//! knows no job kind, so a new kind notifies without touching it.

pub mod email_job;

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::db::jobs::JobRow;
use crate::jobs::NewJob;
use crate::mail::Kind;

pub use email_job::EmailJob;

/// The `kind` of the job that e-mails an ended job's recipients (named when exports
/// were its only users; stored in queued rows, so it stays).
pub const EMAIL_KIND: &str = "export_email";

/// What to tell whom about one ended job.
#[derive(Debug, Clone)]
pub struct Notice {
    pub recipients: Vec<String>,
    pub locale: String,
    /// `Name <address>`; empty: the system sender.
    pub from_mailbox: String,
    pub template: Kind,
    /// The template's values, besides `org`, `link` and `expires`, which the e-mail
    /// job adds (the link is signed when the message goes out).
    pub values: serde_json::Map<String, serde_json::Value>,
    pub link: Option<Link>,
}

/// A stored file the message links to.
#[derive(Debug, Clone)]
pub struct Link {
    pub object_key: String,
    pub file_name: String,
    pub content_type: String,
}

/// Builds the notice of an ended job of one kind; `Ok(None)`: nobody to tell.
pub trait NoticeSource: Send + Sync + 'static {
    fn notice(&self, job: &JobRow) -> Result<Option<Notice>, crate::jobs::Undecodable>;
}

/// The kinds that notify, by name.
#[derive(Clone, Default)]
pub struct Notices {
    sources: HashMap<&'static str, Arc<dyn NoticeSource>>,
}

impl Notices {
    pub fn with(mut self, kind: &'static str, source: impl NoticeSource) -> Notices {
        self.sources.insert(kind, Arc::new(source));
        self
    }

    fn notice(&self, job: &JobRow) -> Result<Option<Notice>, crate::jobs::Undecodable> {
        match self.sources.get(job.kind.as_str()) {
            Some(source) => source.notice(job),
            None => Ok(None),
        }
    }
}

/// The e-mail job's payload: which job to tell about. (`export_id` is the name
/// queued rows of earlier builds carry.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payload {
    pub v: u32,
    #[serde(rename = "export_id")]
    pub job_id: String,
}

/// The e-mail job telling `job`'s recipients that it ended.
pub fn follow_up(job: &JobRow) -> NewJob {
    NewJob {
        id: None,
        organization_id: job.organization_id.clone(),
        kind: EMAIL_KIND.into(),
        payload: serde_json::json!(Payload {
            v: 1,
            job_id: job.id.clone(),
        }),
        request_id: None,
        dedupe_key: None,
        search_text: String::new(),
        rows_total: None,
    }
}
