//! Downloads of signed links (export files, error reports), streamed to disk and
//! checked against the size and SHA-256 the server recorded.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::session::ClientTls;
use super::{ClientError, progress};

/// What the server says the file is.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    pub size: Option<u64>,
    /// Lower-case hex; empty when the server recorded none (error reports).
    pub sha256: String,
}

/// What arrived.
#[derive(Debug, Clone)]
pub struct Downloaded {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
}

/// Streams `url` into `dest` through `dest.part`, renamed only once size and hash
/// match: a failed or tampered download never leaves a file that looks complete.
pub async fn to_file(
    tls: &ClientTls,
    url: &str,
    dest: &Path,
    expected: &Expected,
) -> Result<Downloaded, ClientError> {
    let partial = partial_path(dest);
    let result = write(&tls.http_client()?, url, &partial, expected).await;
    let (size, sha256) = match result {
        Ok(done) => done,
        Err(err) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(err);
        }
    };
    tokio::fs::rename(&partial, dest)
        .await
        .map_err(ClientError::io(format!(
            "cannot move the download to {}",
            dest.display()
        )))?;
    Ok(Downloaded {
        path: dest.to_path_buf(),
        size,
        sha256,
    })
}

fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".part");
    dest.with_file_name(name)
}

async fn write(
    http: &reqwest::Client,
    url: &str,
    partial: &Path,
    expected: &Expected,
) -> Result<(u64, String), ClientError> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|err| ClientError::Download(err.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(ClientError::Download(format!(
            "the server answered {status}: {}",
            body.trim()
        )));
    }
    let mut file = tokio::fs::File::create(partial)
        .await
        .map_err(ClientError::io(format!("cannot create {}", partial.display())))?;
    let bar = progress::bytes("downloading", expected.size.or(response.content_length()));
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|err| ClientError::Download(err.to_string()))?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        bar.inc(chunk.len() as u64);
        file.write_all(&chunk)
            .await
            .map_err(ClientError::io(format!("cannot write {}", partial.display())))?;
    }
    file.flush()
        .await
        .map_err(ClientError::io(format!("cannot write {}", partial.display())))?;
    bar.finish_and_clear();
    let sha256 = hex::encode(hasher.finalize());
    if let Some(expected_size) = expected.size
        && expected_size != size
    {
        return Err(ClientError::Mismatch(format!(
            "the download holds {size} bytes; the server recorded {expected_size}: nothing was saved"
        )));
    }
    if !expected.sha256.is_empty() && !expected.sha256.eq_ignore_ascii_case(&sha256) {
        return Err(ClientError::Mismatch(format!(
            "the download's SHA-256 is {sha256}; the server recorded {}: nothing was saved",
            expected.sha256
        )));
    }
    Ok((size, sha256))
}
