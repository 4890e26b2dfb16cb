//! Progress bars on stderr, drawn only when stderr is a terminal: a pipe, a file or
//! a CI log gets none (the final result still goes to stdout).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::proto;

/// Whether bars are drawn at all.
pub fn visible() -> bool {
    std::io::stderr().is_terminal()
}

fn bar(len: Option<u64>, template: &str) -> ProgressBar {
    if !visible() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(len) => ProgressBar::new(len),
        None => ProgressBar::new_spinner(),
    };
    // The templates are constants: a bad one is a bug, shown as the default style.
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Bytes sent or received: size, rate, time left.
pub fn bytes(label: &str, total: Option<u64>) -> ProgressBar {
    let template = match total {
        Some(_) => "{spinner} {prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        None => "{spinner} {prefix} {bytes} {bytes_per_sec}",
    };
    let bar = bar(total, template);
    bar.set_prefix(label.to_string());
    bar
}

/// A job's rows: done / total, rate, time left, and the state and counters in the
/// message.
pub fn rows(label: &str) -> ProgressBar {
    let bar = bar(
        Some(0),
        "{spinner} {prefix} [{bar:24}] {human_pos}/{human_len} rows {per_sec} ETA {eta}  {msg}",
    );
    bar.set_prefix(label.to_string());
    bar
}

/// Moves a rows bar to a job's progress.
pub fn update(bar: &ProgressBar, progress: Option<&proto::Progress>, message: String) {
    if let Some(progress) = progress {
        let done = u64::try_from(progress.rows_done).unwrap_or(0);
        let total = progress
            .rows_total
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or(done);
        bar.set_length(total.max(done));
        bar.set_position(done);
    }
    bar.set_message(message);
}
