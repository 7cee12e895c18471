//! Streams one blob into a partial file of its own, hashing as bytes
//! arrive; once the digest checked, releases the last bytes to readers.
//! Storage alone makes it durable and puts it in place
//! ([`VerifiedBlob::persist`], called by its `CommitBlob` handler).
//!
//! Hashing runs on a thread of the blocking pool (bounded, shared with
//! every other blocking task), beside the writes: SHA-256 is the slowest
//! step of a download on a fast link, and it need not delay the bytes
//! readers follow, only the last ones (which wait for the digest). Writers
//! exist only for fetches whose upstream has answered, and fetches are
//! bounded (`maxFetches`), so hashing threads are too.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::backend::{Backend, Kind};
use super::layout::{commit, unique_partial, Layout};
use crate::error::FetchError;
use crate::names::Digest;

/// Batches queued for the hashing thread before `push` waits for it.
const HASH_QUEUE: usize = 16;
/// Bytes read back at once from the file for the hashing thread
/// ([`BlobWriter::absorb`]).
const ABSORB_READ: usize = 256 * 1024;

/// A blob being written. Dropping it, or the [`VerifiedBlob`] it becomes,
/// before Storage committed it (`CommitBlob`) deletes the partial file.
///
/// The batch received last is held back in memory and reaches the file only
/// after the digest matched, so readers following the file can never read a
/// complete body whose digest is wrong.
#[derive(Debug)]
pub struct BlobWriter {
    /// The digest the bytes must hash to.
    digest: Digest,
    /// This writer's entry in Storage's table of writes in progress.
    ticket: Arc<WriteTicket>,
    /// `<digest>.<n>.partial`, where bytes land; no other writer uses it.
    partial: PathBuf,
    /// The final, content-addressed path.
    path: PathBuf,
    /// The open partial file; shared with readers, who `pread` from it.
    file: Arc<File>,
    /// Every byte received goes to the hashing thread through here.
    to_hasher: Option<mpsc::Sender<Vec<Bytes>>>,
    /// The hashing thread's digest once `to_hasher` is closed.
    hashed: Option<oneshot::Receiver<Digest>>,
    /// Bytes on disk, readable by followers.
    written: u64,
    /// The most recent batch of chunks, not yet on disk.
    pending: Vec<Bytes>,
    /// Set once the blob is renamed into place; keeps `Drop` from deleting it.
    committed: bool,
    /// Bytes the partial file will hold whoever writes them (parallel
    /// segments write ahead of `written`): what the ticket reports at least.
    reserved: u64,
}

/// What Storage knows of a write in progress; the writer holds it, Storage
/// keeps a weak reference, so a dropped writer leaves the table by itself.
#[derive(Debug, Default)]
pub(super) struct WriteTicket {
    /// Bytes received so far (they occupy the partial file or soon will).
    received: AtomicU64,
}

impl WriteTicket {
    /// Bytes received so far.
    pub(super) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl BlobWriter {
    /// Creates a new partial file of its own for `digest`; only Storage
    /// starts writers, and it keeps `ticket`'s weak twin.
    pub(super) fn create(
        layout: &Layout,
        digest: Digest,
        ticket: Arc<WriteTicket>,
    ) -> std::io::Result<Self> {
        let path = layout.blob(&digest);
        let partial = unique_partial(&path);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&partial)?;
        let (to_hasher, mut batches) = mpsc::channel::<Vec<Bytes>>(HASH_QUEUE);
        let (done, hashed) = oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let mut hasher = Sha256::new();
            while let Some(batch) = batches.blocking_recv() {
                batch.iter().for_each(|chunk| hasher.update(chunk));
            }
            let _ = done.send(Digest::from_hasher(hasher));
        });
        Ok(Self {
            digest,
            ticket,
            partial,
            path,
            file: Arc::new(file),
            to_hasher: Some(to_hasher),
            hashed: Some(hashed),
            written: 0,
            pending: Vec::new(),
            committed: false,
            reserved: 0,
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

    /// Bytes received so far (on disk plus the held-back batch).
    pub fn received(&self) -> u64 {
        self.written + self.pending.iter().map(|c| c.len() as u64).sum::<u64>()
    }

    /// Hands `batch` (chunks that arrived together) to the hashing thread,
    /// waiting while its queue is full, writes the batch
    /// held back before it and keeps `batch` back.
    ///
    /// Writes go to the page cache with `pwrite`; they are short and are not
    /// worth a thread hop each. Durability comes from the fsync when
    /// Storage commits the blob (`CommitBlob`).
    pub async fn push(&mut self, batch: Vec<Bytes>) -> std::io::Result<()> {
        let hasher = self
            .to_hasher
            .as_ref()
            .ok_or_else(|| std::io::Error::other("blob already finished"))?;
        hasher
            .send(batch.clone())
            .await
            .map_err(|_| std::io::Error::other("the hashing thread stopped"))?;
        let held = std::mem::replace(&mut self.pending, batch);
        self.write(&held)?;
        self.report_received();
        Ok(())
    }

    /// The partial file will hold `size` bytes (parallel segments write
    /// ahead of what is received in order): counted toward
    /// `maxCacheSize` from now on.
    pub fn reserve(&mut self, size: u64) {
        self.reserved = size;
        self.report_received();
    }

    /// Tells Storage how many bytes the partial file holds or will.
    fn report_received(&self) {
        let bytes = self.received().max(self.reserved);
        self.ticket.received.store(bytes, Ordering::Relaxed);
    }

    /// Writes the held-back batch now: the bytes after it come from
    /// elsewhere (a parallel segment, see [`crate::ranged`]), so it is not
    /// the blob's end.
    pub fn flush(&mut self) -> std::io::Result<()> {
        let held = std::mem::take(&mut self.pending);
        self.write(&held)
    }

    /// The next `len` bytes after what is readable are in the file already
    /// (a parallel segment wrote them): reads them back in order for the
    /// hashing thread and makes them readable. The held-back batch must
    /// have been flushed.
    pub async fn absorb(&mut self, len: u64) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            return Err(std::io::Error::other(
                "a held-back batch before absorbed bytes",
            ));
        }
        let hasher = self
            .to_hasher
            .as_ref()
            .ok_or_else(|| std::io::Error::other("blob already finished"))?;
        let end = self.written + len;
        while self.written < end {
            let n = (end - self.written).min(ABSORB_READ as u64) as usize;
            let mut buf = vec![0; n];
            self.file.read_exact_at(&mut buf, self.written)?;
            hasher
                .send(vec![Bytes::from(buf)])
                .await
                .map_err(|_| std::io::Error::other("the hashing thread stopped"))?;
            self.written += n as u64;
        }
        self.report_received();
        Ok(())
    }

    /// Writes `chunks` at the end of what is on disk.
    fn write(&mut self, chunks: &[Bytes]) -> std::io::Result<()> {
        for chunk in chunks {
            self.file.write_all_at(chunk, self.written)?;
            self.written += chunk.len() as u64;
        }
        Ok(())
    }

    /// Checks the length (when announced) and the digest, then writes the
    /// held-back bytes: from here every byte of the file is verified and
    /// readable. The blob is not durable or in place until Storage
    /// commits it (`CommitBlob`).
    pub async fn verify(mut self, expected_len: Option<u64>) -> Result<VerifiedBlob, FetchError> {
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
            .ok_or_else(|| FetchError::Internal("blob already finished".into()))?;
        let actual = hashed
            .await
            .map_err(|_| FetchError::Internal("the hashing thread stopped".into()))?;
        if actual != self.digest {
            return Err(FetchError::DigestMismatch {
                expected: self.digest.clone(),
                actual,
            });
        }
        let held = std::mem::take(&mut self.pending);
        self.write(&held)?;
        Ok(VerifiedBlob(self))
    }
}

/// A blob whose bytes are all verified and readable from its partial file,
/// not yet durable. Dropping it deletes the partial file.
#[derive(Debug)]
pub struct VerifiedBlob(BlobWriter);

impl VerifiedBlob {
    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.0.written
    }

    /// The digest it verified against.
    pub fn digest(&self) -> &Digest {
        &self.0.digest
    }

    /// Fsyncs the file and stores it in `backend`; where the backend
    /// copied it rather than took it, renames it into its local place.
    /// Returns the size. Only Storage calls it, so the index learns of
    /// every blob stored.
    pub(super) async fn persist(mut self, backend: Arc<dyn Backend>) -> Result<u64, FetchError> {
        let w = &mut self.0;
        let (file, partial, path) = (Arc::clone(&w.file), w.partial.clone(), w.path.clone());
        tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .map_err(|e| FetchError::Internal(e.to_string()))??;
        backend.put_file(Kind::Blob, &w.digest, &partial).await?;
        if partial.exists() {
            tokio::task::spawn_blocking(move || commit(&partial, &path))
                .await
                .map_err(|e| FetchError::Internal(e.to_string()))??;
        }
        w.committed = true;
        Ok(w.written)
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
        let batch = Bytes::from(vec![7u8; 1000]);
        let tail = Bytes::from_static(b"tail");
        let whole = [&batch[..], &tail[..]].concat();
        let digest = Digest::of(&whole);
        let mut w = BlobWriter::create(&layout, digest.clone(), Arc::default()).unwrap();
        w.push(vec![batch.clone()]).await.unwrap();
        assert_eq!(w.written(), 0, "the last batch waits in memory");
        w.push(vec![tail]).await.unwrap();
        assert_eq!(w.written(), 1000, "the batch before it is written");
        assert_eq!(w.received(), whole.len() as u64);
        let verified = w.verify(Some(whole.len() as u64)).await.unwrap();
        let partial = verified.0.partial.clone();
        assert_eq!(
            std::fs::read(&partial).unwrap(),
            whole,
            "verified bytes are readable"
        );
        assert!(
            !layout.blob(&digest).exists(),
            "not in place before persist"
        );
        let backend = Arc::new(super::super::Filesystem::open(&dir).unwrap());
        assert_eq!(verified.persist(backend).await.unwrap(), whole.len() as u64);
        assert_eq!(std::fs::read(layout.blob(&digest)).unwrap(), whole);
        assert!(!partial.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn wrong_bytes_or_length_leave_nothing() {
        let (layout, dir) = layout();
        let digest = Digest::of(b"expected");
        let mut w = BlobWriter::create(&layout, digest.clone(), Arc::default()).unwrap();
        w.push(vec![Bytes::from_static(b"unexpected")])
            .await
            .unwrap();
        assert!(matches!(
            w.verify(None).await,
            Err(FetchError::DigestMismatch { .. })
        ));
        let mut w = BlobWriter::create(&layout, digest.clone(), Arc::default()).unwrap();
        w.push(vec![Bytes::from_static(b"expected")]).await.unwrap();
        assert!(matches!(
            w.verify(Some(9)).await,
            Err(FetchError::BadResponse(_))
        ));
        assert!(!layout.blob(&digest).exists());
        assert_eq!(std::fs::read_dir(layout.blob_dir()).unwrap().count(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
