//! The file end of the text writers (CSV, JSON, NDJSON): full buffers go to a
//! second thread that hashes (SHA-256) and writes them, so the thread that formats
//! rows only formats. On a 1M-row CSV export the formatting thread was the critical
//! path, and hashing plus the `write` calls were a tenth of its time; hashing after
//! the file was written cost another pass over it.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

const BUFFER_BYTES: usize = 256 * 1024;
/// Full buffers waiting for the file thread: bounds memory to a few MiB.
const QUEUED_BUFFERS: usize = 4;

pub struct PipedFile {
    buffer: Vec<u8>,
    full: Option<SyncSender<Vec<u8>>>,
    /// Buffers the file thread has written, for reuse.
    empty: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<io::Result<String>>>,
}

impl PipedFile {
    /// Creates `path`; `bytes` follows what reaches the file (for progress).
    pub fn create(path: &Path, bytes: Arc<AtomicU64>) -> io::Result<PipedFile> {
        let mut file = File::create(path)?;
        let (full_sender, full) = sync_channel::<Vec<u8>>(QUEUED_BUFFERS);
        let (empty_sender, empty) = channel::<Vec<u8>>();
        let thread = std::thread::Builder::new()
            .name("export-file".into())
            .spawn(move || {
                let mut hasher = Sha256::new();
                for mut buffer in full {
                    hasher.update(&buffer);
                    file.write_all(&buffer)?;
                    bytes.fetch_add(buffer.len() as u64, Ordering::Relaxed);
                    buffer.clear();
                    let _ = empty_sender.send(buffer);
                }
                Ok(hex::encode(hasher.finalize()))
            })?;
        Ok(PipedFile {
            buffer: Vec::with_capacity(BUFFER_BYTES),
            full: Some(full_sender),
            empty,
            thread: Some(thread),
        })
    }

    /// Writes what is left, waits for the file thread and returns the file's
    /// SHA-256 (hex).
    pub fn finish(mut self) -> io::Result<String> {
        if !self.buffer.is_empty() {
            self.hand_over()?;
        }
        self.full = None;
        self.join()
    }

    fn hand_over(&mut self) -> io::Result<()> {
        let next = self
            .empty
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BUFFER_BYTES));
        let full = std::mem::replace(&mut self.buffer, next);
        let sent = self.full.as_ref().map(|sender| sender.send(full).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        // The file thread stopped: its error says why.
        self.full = None;
        match self.join() {
            Err(err) => Err(err),
            Ok(_) => Err(io::Error::other("the export file was already closed")),
        }
    }

    fn join(&mut self) -> io::Result<String> {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the export file thread panicked")),
            None => Err(io::Error::other("the export file was already closed")),
        }
    }
}

impl Write for PipedFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= BUFFER_BYTES {
            self.hand_over()?;
        }
        Ok(data.len())
    }

    /// Buffers reach the file in [`PipedFile::finish`].
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for PipedFile {
    /// An abandoned file (an error while formatting) still has its thread ended and
    /// its handle closed before the caller removes it.
    fn drop(&mut self) {
        self.full = None;
        let _ = self.join();
    }
}

/// The size of a finished file.
pub async fn file_size(path: &Path) -> io::Result<u64> {
    tokio::fs::metadata(path).await.map(|m| m.len())
}

/// Size and SHA-256 of a file, read in a blocking thread (when the writer did not
/// hash it on the way).
pub async fn hash_file(path: std::path::PathBuf) -> io::Result<(u64, String)> {
    tokio::task::spawn_blocking(move || {
        let mut file = File::open(&path)?;
        let mut hasher = Sha256::new();
        let size = io::copy(&mut file, &mut hasher)?;
        Ok((size, hex::encode(hasher.finalize())))
    })
    .await
    .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_holds_every_byte_in_order_and_the_hash_is_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let bytes = Arc::new(AtomicU64::new(0));
        let mut file = PipedFile::create(&path, bytes.clone()).unwrap();
        let mut expected = Vec::new();
        for i in 0..200_000u32 {
            let line = format!("{i},row {i}\n");
            file.write_all(line.as_bytes()).unwrap();
            expected.extend_from_slice(line.as_bytes());
        }
        let sha = file.finish().unwrap();
        let written = std::fs::read(&path).unwrap();
        assert_eq!(written, expected);
        assert_eq!(sha, hex::encode(Sha256::digest(&expected)));
        assert_eq!(bytes.load(Ordering::Relaxed), expected.len() as u64);
    }
}
