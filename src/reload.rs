//! A value read from files and read again when they change: the listeners'
//! certificate (`server.tls_cert`/`tls_key`) and the client-certificate identity
//! map (`server.tls_identities`). The files' modification times are looked at once
//! a second at most; a change that does not load (half-written, a key that does not
//! fit, a typo) is logged and the previous value kept.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// How often the files' modification times are looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Reads the value from its files (in the order given).
pub type Load<T> = fn(&[PathBuf]) -> anyhow::Result<T>;

pub struct Reloading<T> {
    /// What is reloaded, for the log (`TLS certificate`).
    what: &'static str,
    paths: Vec<PathBuf>,
    load: Load<T>,
    state: Mutex<Loaded<T>>,
}

struct Loaded<T> {
    stamp: Vec<Option<SystemTime>>,
    checked: Instant,
    value: Arc<T>,
}

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("what", &self.what)
            .field("paths", &self.paths)
            .finish()
    }
}

fn stamp(paths: &[PathBuf]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

impl<T> Reloading<T> {
    /// Loads now: a file that cannot be used fails the start.
    pub fn load(what: &'static str, paths: Vec<PathBuf>, load: Load<T>) -> anyhow::Result<Reloading<T>> {
        let stamp = stamp(&paths);
        let value = Arc::new(load(&paths)?);
        Ok(Reloading {
            what,
            paths,
            load,
            state: Mutex::new(Loaded {
                stamp,
                checked: Instant::now(),
                value,
            }),
        })
    }

    /// The value as the files say now.
    pub fn current(&self) -> Arc<T> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.checked.elapsed() >= CHECK_EVERY {
            state.checked = Instant::now();
            let now = stamp(&self.paths);
            if now != state.stamp {
                match (self.load)(&self.paths) {
                    Ok(value) => {
                        state.value = Arc::new(value);
                        state.stamp = now;
                        tracing::info!(what = self.what, "reloaded after its files changed");
                    }
                    Err(err) => tracing::warn!(
                        what = self.what,
                        error = format!("{err:#}"),
                        "changed files cannot be used; keeping the previous value"
                    ),
                }
            }
        }
        state.value.clone()
    }
}
