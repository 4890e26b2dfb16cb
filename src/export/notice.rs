//! What an ended export tells its delivery recipients: a download link when it
//! completed, a short notice with the reason when it failed.

use super::spec::{Export, ExportResult};
use crate::db::jobs::{JobRow, JobState};
use crate::jobs::{Job, JobFailure, NewJob, Undecodable};
use crate::mail::Kind;
use crate::mail::templates::human_size;
use crate::notifications::{Link, Notice, NoticeSource};

/// The e-mail job for an export with delivery settings.
pub fn follow_up(job: &Job<Export>) -> Option<NewJob> {
    job.spec
        .delivery
        .is_some()
        .then(|| crate::notifications::follow_up(&job.row))
}

/// Notices of ended exports.
pub struct ExportNotices;

impl NoticeSource for ExportNotices {
    fn notice(&self, row: &JobRow) -> Result<Option<Notice>, Undecodable> {
        let job = Job::<Export>::decode(row.clone())?;
        let Some(delivery) = job.spec.delivery else {
            return Ok(None);
        };
        let mut notice = Notice {
            recipients: delivery.recipient_emails,
            locale: delivery.email_locale,
            from_mailbox: delivery.from_mailbox,
            template: Kind::ExportFailed,
            values: Default::default(),
            link: None,
        };
        match job.output {
            Some(result) if job.row.state == JobState::Completed => ready(&mut notice, result),
            _ => {
                let reason = job
                    .row
                    .error
                    .as_deref()
                    .and_then(|e| serde_json::from_str::<JobFailure>(e).ok())
                    .map(|f| f.message)
                    .unwrap_or_else(|| "the export did not complete".into());
                notice.values.insert("reason".into(), reason.into());
            }
        }
        Ok(Some(notice))
    }
}

/// The "export ready" message: rows, format, size and the file's link.
fn ready(notice: &mut Notice, result: ExportResult) {
    let format = result
        .file_name
        .rsplit('.')
        .find(|p| *p != "gz")
        .unwrap_or_default()
        .to_uppercase();
    notice.template = Kind::ExportReady;
    notice.values.insert("rows".into(), result.row_count.into());
    notice.values.insert("format".into(), format.into());
    notice
        .values
        .insert("size".into(), human_size(result.size).into());
    notice.link = Some(Link {
        object_key: result.object_key,
        file_name: result.file_name,
        content_type: result.content_type,
    });
}
