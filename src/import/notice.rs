//! What an ended import tells its report recipients: the counters, and a link to
//! the failed rows when any failed. Sent from the system sender.

use super::spec::Import;
use crate::db::jobs::JobRow;
use crate::jobs::{Job, NewJob, Undecodable};
use crate::mail::Kind;
use crate::notifications::{Link, Notice, NoticeSource};

/// The e-mail job for an import with report recipients.
pub fn follow_up(job: &Job<Import>) -> Option<NewJob> {
    (!job.spec.report_recipient_emails.is_empty()).then(|| crate::notifications::follow_up(&job.row))
}

/// Notices of ended imports.
pub struct ImportNotices;

impl NoticeSource for ImportNotices {
    fn notice(&self, row: &JobRow) -> Result<Option<Notice>, Undecodable> {
        let job = Job::<Import>::decode(row.clone())?;
        if job.spec.report_recipient_emails.is_empty() {
            return Ok(None);
        }
        let counters = job.output.unwrap_or_default();
        let mut notice = Notice {
            recipients: job.spec.report_recipient_emails,
            locale: job.spec.email_locale,
            from_mailbox: String::new(),
            template: Kind::ImportReport,
            values: Default::default(),
            link: None,
        };
        notice.values.insert("created".into(), counters.created.into());
        notice.values.insert("updated".into(), counters.updated.into());
        notice.values.insert("failed".into(), counters.failed.into());
        notice.link = counters.report_key.map(|object_key| Link {
            object_key,
            file_name: super::report::file_name(&job.row.id),
            content_type: "text/csv".into(),
        });
        Ok(Some(notice))
    }
}
