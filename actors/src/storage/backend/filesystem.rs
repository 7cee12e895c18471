//! The filesystem backend: a cache root on a local disk, the default.
//! Objects are files named by digest (`blobs/sha256/<hex>`,
//! `manifests/sha256/<hex>`), put in place by an fsynced rename; records
//! are the journal (`index.jsonl`); last-pulled times `pulled.json`.
//! One process writes a root at a time (the server's `.lock`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::io::AsyncReadExt;

use super::{decode_pulled, encode_pulled, Backend, Io, Kind, Stored};
use crate::names::Digest;
use crate::storage::journal::{Journal, Record};
use crate::storage::layout::{commit, scan, write_atomically, Layout};

/// Bytes read from a file per chunk of [`Backend::open`].
const READ_CHUNK: usize = 1 << 20;

/// A cache root on a local disk. See the module documentation.
#[derive(Debug)]
pub struct Filesystem {
    /// Paths under the root.
    layout: Layout,
    /// The records, appended under a lock (shared with blocking tasks).
    journal: Arc<Journal>,
}

impl Filesystem {
    /// The backend of the cache root `root` (its directories are created
    /// when missing).
    pub fn open(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let layout = Layout::new(root);
        layout.create_dirs()?;
        let journal = Arc::new(Journal::new(layout.journal()));
        Ok(Self { layout, journal })
    }

    /// The file of object `digest`.
    fn path(&self, kind: Kind, digest: &Digest) -> PathBuf {
        match kind {
            Kind::Blob => self.layout.blob(digest),
            Kind::Manifest => self.layout.manifest(digest),
        }
    }
}

/// Runs blocking file work on the blocking pool.
fn blocking<'a, T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Io<'a, T> {
    async move {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(std::io::Error::other)?
    }
    .boxed()
}

impl Backend for Filesystem {
    fn is_local(&self) -> bool {
        true
    }

    fn list(&self, kind: Kind) -> Io<'_, HashMap<Digest, u64>> {
        let dir = match kind {
            Kind::Blob => self.layout.blob_dir(),
            Kind::Manifest => self.layout.manifest_dir(),
        };
        blocking(move || scan(&dir))
    }

    fn put_file<'a>(&'a self, kind: Kind, digest: &'a Digest, from: &'a Path) -> Io<'a, ()> {
        let (from, to) = (from.to_owned(), self.path(kind, digest));
        blocking(move || commit(&from, &to))
    }

    fn put(&self, kind: Kind, digest: &Digest, bytes: Bytes) -> Io<'_, ()> {
        let path = self.path(kind, digest);
        blocking(move || write_atomically(&path, &bytes))
    }

    fn open(&self, kind: Kind, digest: &Digest) -> Io<'_, Option<Stored>> {
        let path = self.path(kind, digest);
        async move {
            let file = match tokio::fs::File::open(path).await {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let size = file.metadata().await?.len();
            let bytes = futures::stream::try_unfold(file, |mut file| async move {
                let mut chunk = Vec::with_capacity(READ_CHUNK);
                let n = (&mut file)
                    .take(READ_CHUNK as u64)
                    .read_to_end(&mut chunk)
                    .await?;
                Ok((n > 0).then(|| (Bytes::from(chunk), file)))
            });
            Ok(Some(Stored {
                size,
                bytes: bytes.boxed(),
            }))
        }
        .boxed()
    }

    fn delete(&self, kind: Kind, digest: &Digest) -> Io<'_, ()> {
        let path = self.path(kind, digest);
        blocking(move || match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
    }

    fn append(&self, records: Vec<Record>) -> Io<'_, ()> {
        let journal = Arc::clone(&self.journal);
        blocking(move || journal.append(&records))
    }

    fn records(&self) -> Io<'_, Vec<Record>> {
        let journal = Arc::clone(&self.journal);
        blocking(move || journal.load())
    }

    fn more_records(&self) -> Io<'_, Vec<Record>> {
        let journal = Arc::clone(&self.journal);
        blocking(move || journal.more())
    }

    fn rewrite(&self, records: Vec<Record>) -> Io<'_, ()> {
        let journal = Arc::clone(&self.journal);
        blocking(move || journal.replace(&records))
    }

    /// One process writes a root (the server's `.lock`): it holds every lease.
    fn lease(&self, _: &str, _: Duration) -> Io<'_, bool> {
        async { Ok(true) }.boxed()
    }

    fn pulled(&self) -> Io<'_, HashMap<Digest, SystemTime>> {
        let path = self.layout.pulled();
        blocking(move || {
            Ok(std::fs::read(path)
                .map(|b| decode_pulled(&b))
                .unwrap_or_default())
        })
    }

    fn save_pulled(&self, pulled: HashMap<Digest, SystemTime>) -> Io<'_, ()> {
        let path = self.layout.pulled();
        blocking(move || write_atomically(&path, &encode_pulled(&pulled)))
    }
}
