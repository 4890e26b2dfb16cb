//! Following a job to its end (`watch`, `--wait`), and the exit code its end means.

use futures::StreamExt;

use super::output::{Described, Output, job_state, to_json};
use super::{ClientError, Exit, progress};
use crate::proto::{self, JobState};

/// What the client reads from a job message, whatever its kind.
pub trait JobMessage: Described + Clone {
    fn state(&self) -> JobState;
    fn progress(&self) -> Option<&proto::Progress>;
    /// The counters shown next to the bar (`created 3 updated 1 failed 0`).
    fn counters(&self) -> String;
    /// How a finished job ends the process.
    fn exit(&self) -> Exit {
        match self.state() {
            JobState::Completed => Exit::Ok,
            JobState::Failed => Exit::JobFailed,
            JobState::Cancelled | JobState::Expired => Exit::JobCancelled,
            _ => Exit::Ok,
        }
    }
}

pub fn is_terminal(state: JobState) -> bool {
    matches!(
        state,
        JobState::Completed | JobState::Failed | JobState::Cancelled | JobState::Expired
    )
}

impl JobMessage for proto::Import {
    fn state(&self) -> JobState {
        JobState::try_from(self.state).unwrap_or_default()
    }
    fn progress(&self) -> Option<&proto::Progress> {
        self.progress.as_ref()
    }
    fn counters(&self) -> String {
        format!(
            "{}  created {} · updated {} · failed {}",
            job_state(self.state),
            self.created_items,
            self.updated_items,
            self.failed_items
        )
    }
    /// A completed import whose rows partly failed is not a clean success.
    fn exit(&self) -> Exit {
        match self.state() {
            JobState::Completed if self.failed_items > 0 => Exit::RowsFailed,
            JobState::Completed => Exit::Ok,
            JobState::Failed => Exit::JobFailed,
            JobState::Cancelled | JobState::Expired => Exit::JobCancelled,
            _ => Exit::Ok,
        }
    }
}

impl JobMessage for proto::Export {
    fn state(&self) -> JobState {
        JobState::try_from(self.state).unwrap_or_default()
    }
    fn progress(&self) -> Option<&proto::Progress> {
        self.progress.as_ref()
    }
    fn counters(&self) -> String {
        let bytes = self.progress.as_ref().map(|p| p.bytes).unwrap_or(0);
        format!("{}  {} bytes written", job_state(self.state), bytes)
    }
}

/// Reads a watch stream until the job ends; returns the last message. With
/// `each_update`, every message is printed as it comes (one JSON object per line, or
/// a status line); otherwise only the bar on a terminal shows them.
pub async fn follow<J: JobMessage>(
    output: Output,
    label: &str,
    mut stream: tonic::Streaming<J>,
    each_update: bool,
) -> Result<J, ClientError> {
    let bar = progress::rows(label);
    let mut last: Option<J> = None;
    while let Some(message) = stream.next().await {
        let message = message?;
        progress::update(&bar, message.progress(), message.counters());
        if each_update {
            match output {
                Output::Json => println!("{}", to_json(&message)),
                Output::Table if !progress::visible() => println!("{}", status_line(&message)),
                Output::Table => {}
            }
        }
        let done = is_terminal(message.state());
        last = Some(message);
        if done {
            break;
        }
    }
    bar.finish_and_clear();
    last.filter(|job| is_terminal(job.state())).ok_or_else(|| {
        ClientError::Call(tonic::Status::unavailable(
            "the watch stream ended before the job did; run the command again to keep following it",
        ))
    })
}

/// `ferry import watch` / `ferry export watch`: every update printed as it comes,
/// then (for people) the job as it ended; the exit code says how it ended.
pub async fn watch_to_end<J: JobMessage>(
    output: Output,
    label: &str,
    stream: tonic::Streaming<J>,
    print: impl Fn(&J),
) -> Result<Exit, ClientError> {
    let last = follow(output, label, stream, true).await?;
    if output == Output::Table {
        print(&last);
    }
    Ok(last.exit())
}

/// `RUNNING  500/1000 rows  created 400 …`: one update as a line of text.
fn status_line<J: JobMessage>(job: &J) -> String {
    format!("{} rows  {}", super::output::rows(job.progress()), job.counters())
}
