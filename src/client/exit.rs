//! How a client command ends: its exit code (documented in the README) and the
//! errors it can stop on.

use std::process::ExitCode;

/// The exit codes of client commands. Scripts branch on these, so they never change
/// meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done: the call succeeded, or the job waited for COMPLETED.
    Ok = 0,
    /// The call failed (the server refused it, or could not be reached), or a local
    /// file could not be read or written.
    Error = 1,
    /// The command line is wrong (clap's own code).
    Usage = 2,
    /// The job ended FAILED.
    JobFailed = 3,
    /// The job ended CANCELLED (or its file EXPIRED).
    JobCancelled = 4,
    /// The import COMPLETED, but some rows failed (see `ferry import errors`).
    RowsFailed = 5,
    /// A downloaded file did not match the size or SHA-256 the server recorded;
    /// nothing was left at the destination.
    Mismatch = 6,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error: printed with its reason and violations.
    #[error("{}", .0.message())]
    Call(#[from] tonic::Status),
    #[error("cannot reach ferry at {server}: {cause}")]
    Connect { server: String, cause: String },
    /// Something the user must fix before calling (no key, a bad flag value).
    #[error("{0}")]
    Input(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("download failed: {0}")]
    Download(String),
    #[error("{0}")]
    Mismatch(String),
}

impl ClientError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClientError {
        let what = what.into();
        move |source| ClientError::Io { what, source }
    }

    pub fn exit(&self) -> Exit {
        match self {
            ClientError::Mismatch(_) => Exit::Mismatch,
            _ => Exit::Error,
        }
    }
}
