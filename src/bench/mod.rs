//! `ferry bench …`: seeds a synthetic organization and measures the real job paths,
//! printing throughput and peak memory. Figures go to `docs/benchmarks.md`; nothing
//! here is a timed test.

pub mod export;
pub mod import;
pub mod load;
pub mod seed;
pub mod shared;

use std::time::Duration;

/// Resets the process's peak RSS (`VmHWM`) so the next reading covers only what
/// follows. Linux only; elsewhere readings include everything before.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident memory since the last reset, in MiB.
pub fn peak_rss_mib() -> f64 {
    status_kib("VmHWM:") / 1024.0
}

/// A `kB` line of `/proc/self/status` (`VmRSS:`, `VmHWM:`); 0 where unreadable.
pub fn status_kib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

pub fn per_second(count: f64, elapsed: Duration) -> f64 {
    count / elapsed.as_secs_f64().max(1e-9)
}
