//! Streams one blob into `<digest>.partial`, hashing as bytes arrive, and
//! renames it into place only once the digest checked.
//!
//! Hashing runs on a thread of its own, beside the writes: SHA-256 is the
//! slowest step of a download on a fast link, and it need not delay the
//! bytes readers follow, only the last ones (which wait for the digest).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::layout::{commit, partial_of, Layout};
use crate::error::FetchError;
use crate::names::Digest;

/// Bytes gathered before one write: fewer, larger writes mean fewer wake-ups
/// of the readers following the file.
const WRITE_BATCH: usize = 256 * 1024;
/// Chunks queued for the hashing thread before `push` waits for it.
const HASH_QUEUE: usize = 16;

/// A blob being written. Dropping it before [`BlobWriter::finish`] succeeds
/// deletes the partial file.
///
/// The bytes received last are held back in memory and reach the file only
/// after the digest matched, so readers following the file can never read a
/// complete body whose digest is wrong.
#[derive(Debug)]
pub struct BlobWriter {
    /// The digest the bytes must hash to.
    digest: Digest,
    /// `<digest>.partial`, where bytes land.
    partial: PathBuf,
    /// The final, content-addressed path.
    path: PathBuf,
    /// The open partial file; shared with readers, who `pread` from it.
    file: Arc<File>,
    /// Every byte received goes to the hashing thread through here.
    to_hasher: Option<mpsc::Sender<Bytes>>,
    /// The hashing thread's digest once `to_hasher` is closed.
    hashed: Option<oneshot::Receiver<Digest>>,
    /// Bytes on disk, readable by followers.
    written: u64,
    /// The most recent bytes, not yet on disk (at most about [`WRITE_BATCH`]
    /// plus one chunk).
    pending: BytesMut,
    /// Set once the blob is renamed into place; keeps `Drop` from deleting it.
    committed: bool,
}

impl BlobWriter {
    /// Creates (or truncates) the partial file for `digest`.
    pub(crate) fn create(layout: &Layout, digest: Digest) -> std::io::Result<Self> {
        let path = layout.blob(&digest);
        let partial = partial_of(&path);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&partial)?;
        let (to_hasher, mut chunks) = mpsc::channel::<Bytes>(HASH_QUEUE);
        let (done, hashed) = oneshot::channel();
        std::thread::Builder::new()
            .name("blob-hash".into())
            .spawn(move || {
                let mut hasher = Sha256::new();
                while let Some(chunk) = chunks.blocking_recv() {
                    hasher.update(&chunk);
                }
                let _ = done.send(Digest::from_hasher(hasher));
            })?;
        Ok(Self {
            digest,
            partial,
            path,
            file: Arc::new(file),
            to_hasher: Some(to_hasher),
            hashed: Some(hashed),
            written: 0,
            pending: BytesMut::new(),
            committed: false,
        })
    }

    /// The file readers follow while the blob downloads.
    pub fn file(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    /// Bytes on disk so far; readers may read up to here.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Bytes received so far (on disk plus the held-back chunk).
    pub fn received(&self) -> u64 {
        self.written + self.pending.len() as u64
    }

    /// Hands `chunk` to the hashing thread (waiting while it is
    /// [`HASH_QUEUE`] chunks behind); once a batch of earlier bytes has
    /// gathered, writes that batch and keeps `chunk` back.
    ///
    /// Writes go to the page cache with `pwrite`; they are short and are not
    /// worth a thread hop each. Durability comes from the fsync in `finish`.
    pub async fn push(&mut self, chunk: Bytes) -> std::io::Result<()> {
        let hasher = self
            .to_hasher
            .as_ref()
            .ok_or_else(|| std::io::Error::other("blob already finished"))?;
        hasher
            .send(chunk.clone())
            .await
            .map_err(|_| std::io::Error::other("the hashing thread stopped"))?;
        if self.pending.len() >= WRITE_BATCH {
            self.file.write_all_at(&self.pending, self.written)?;
            self.written += self.pending.len() as u64;
            self.pending.clear();
        }
        self.pending.extend_from_slice(&chunk);
        Ok(())
    }

    /// Checks the length (when announced) and the digest, then writes the
    /// last chunk, fsyncs and renames the file into place. Returns the size.
    pub async fn finish(mut self, expected_len: Option<u64>) -> Result<u64, FetchError> {
        let received = self.received();
        if let Some(len) = expected_len.filter(|&l| l != received) {
            return Err(FetchError::BadResponse(format!(
                "upstream announced {len} bytes and sent {received}"
            )));
        }
        self.to_hasher = None;
        let hashed = self
            .hashed
            .take()
            .ok_or_else(|| FetchError::Storage("blob already finished".into()))?;
        let actual = hashed
            .await
            .map_err(|_| FetchError::Storage("the hashing thread stopped".into()))?;
        if actual != self.digest {
            return Err(FetchError::DigestMismatch {
                expected: self.digest.clone(),
                actual,
            });
        }
        let (file, partial, path) = (self.file(), self.partial.clone(), self.path.clone());
        let last = std::mem::take(&mut self.pending).freeze();
        let offset = self.written;
        tokio::task::spawn_blocking(move || {
            file.write_all_at(&last, offset)?;
            file.sync_all()?;
            commit(&partial, &path)
        })
        .await
        .map_err(|e| FetchError::Storage(e.to_string()))??;
        self.written = received;
        self.committed = true;
        Ok(received)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: a leftover partial file is also removed at start-up.
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> (Layout, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "blob-writer-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let layout = Layout::new(&dir);
        layout.create_dirs().unwrap();
        (layout, dir)
    }

    #[tokio::test]
    async fn verified_blob_is_renamed_into_place_and_last_bytes_held_back() {
        let (layout, dir) = layout();
        let batch = Bytes::from(vec![7u8; WRITE_BATCH]);
        let tail = Bytes::from_static(b"tail");
        let whole = [&batch[..], &tail[..]].concat();
        let digest = Digest::of(&whole);
        let mut w = BlobWriter::create(&layout, digest.clone()).unwrap();
        w.push(batch.clone()).await.unwrap();
        assert_eq!(w.written(), 0, "a partial batch waits in memory");
        w.push(tail).await.unwrap();
        assert_eq!(w.written(), WRITE_BATCH as u64, "a full batch is written");
        assert_eq!(w.received(), whole.len() as u64);
        assert_eq!(
            w.finish(Some(whole.len() as u64)).await.unwrap(),
            whole.len() as u64
        );
        assert_eq!(std::fs::read(layout.blob(&digest)).unwrap(), whole);
        assert!(!partial_of(&layout.blob(&digest)).exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn wrong_bytes_or_length_leave_nothing() {
        let (layout, dir) = layout();
        let digest = Digest::of(b"expected");
        let mut w = BlobWriter::create(&layout, digest.clone()).unwrap();
        w.push(Bytes::from_static(b"unexpected")).await.unwrap();
        assert!(matches!(
            w.finish(None).await,
            Err(FetchError::DigestMismatch { .. })
        ));
        let mut w = BlobWriter::create(&layout, digest.clone()).unwrap();
        w.push(Bytes::from_static(b"expected")).await.unwrap();
        assert!(matches!(
            w.finish(Some(9)).await,
            Err(FetchError::BadResponse(_))
        ));
        assert!(!layout.blob(&digest).exists());
        assert!(!partial_of(&layout.blob(&digest)).exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
