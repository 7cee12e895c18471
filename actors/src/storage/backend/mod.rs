//! Where a cache keeps its contents and records for good: the
//! [`Backend`] interface, and its implementations. Storage is its only
//! user, so every write still has one owner per process.
//!
//! A backend holds two kinds of content-addressed objects (blobs and
//! manifests, each under its digest), the append-only [`Record`]s of
//! manifests and tags, and the last-pulled times. Content reaches a
//! backend only verified, and a backend makes it visible under its digest
//! whole or not at all; every implementation passes the one backend test
//! suite (`actors/tests/backend.rs`).

mod bucket;
mod filesystem;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use futures::stream::BoxStream;

pub use bucket::Bucket;
pub use filesystem::Filesystem;

use super::index::unix;
use super::journal::Record;
use crate::names::Digest;

/// What a backend operation eventually gives.
pub type Io<'a, T> = BoxFuture<'a, std::io::Result<T>>;

/// The two kinds of content-addressed objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Layers and configs.
    Blob,
    /// Manifests and indexes, byte-exact.
    Manifest,
}

/// A stored object being read.
pub struct Stored {
    /// Its size.
    pub size: u64,
    /// Its bytes, in order; an `Err` ends the read.
    pub bytes: BoxStream<'static, std::io::Result<Bytes>>,
}

/// The store of record of a cache. See the module documentation.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Whether objects are files of the local directory itself, served in
    /// place (the filesystem); otherwise Storage keeps local copies of the
    /// blobs it serves.
    fn is_local(&self) -> bool;

    /// Every complete object of `kind`, with its size.
    fn list(&self, kind: Kind) -> Io<'_, HashMap<Digest, u64>>;

    /// Stores the verified bytes of the synced local file `from` as the
    /// object `digest`: visible whole or not at all, durable when this
    /// returns. Storing a digest that is stored already is a no-op. The
    /// backend may take `from` (the filesystem renames it into place).
    fn put_file<'a>(&'a self, kind: Kind, digest: &'a Digest, from: &'a Path) -> Io<'a, ()>;

    /// Stores verified `bytes` as the object `digest`, like [`Backend::put_file`].
    fn put(&self, kind: Kind, digest: &Digest, bytes: Bytes) -> Io<'_, ()>;

    /// Opens the object `digest` for reading as a stream, if stored.
    fn open(&self, kind: Kind, digest: &Digest) -> Io<'_, Option<Stored>>;

    /// Deletes the object `digest`; one that is not stored is no error.
    fn delete(&self, kind: Kind, digest: &Digest) -> Io<'_, ()>;

    /// Appends `records`, durable when this returns. Callers append a
    /// record only once the content it names is stored.
    fn append(&self, records: Vec<Record>) -> Io<'_, ()>;

    /// Every record, in the order appended; torn or unreadable ones are
    /// skipped.
    fn records(&self) -> Io<'_, Vec<Record>>;

    /// The records appended since this instance last read them
    /// ([`Backend::records`] or this), by any writer, in order.
    fn more_records(&self) -> Io<'_, Vec<Record>>;

    /// Replaces the records that the last [`Backend::records`] of this
    /// instance returned with `records` (compaction), atomically. Records
    /// appended since, by any writer, stay, after them.
    fn rewrite(&self, records: Vec<Record>) -> Io<'_, ()>;

    /// Takes or renews the lease `name` for this writer for `ttl`: true
    /// while this writer holds it, false while another writer's has not
    /// expired. Work that must run on one replica at a time (prune,
    /// eviction) runs only under it. A store with one writer always grants it.
    fn lease(&self, name: &str, ttl: Duration) -> Io<'_, bool>;

    /// The last-pulled times saved (none when absent or unreadable).
    fn pulled(&self) -> Io<'_, HashMap<Digest, SystemTime>>;

    /// Saves last-pulled times, replacing the previous ones.
    fn save_pulled(&self, pulled: HashMap<Digest, SystemTime>) -> Io<'_, ()>;

    /// Saves this writer's last-pulled times together with those of other
    /// writers that saved nothing for `older_than` (replicas gone since:
    /// pod names change with every rollout), then removes theirs; returns
    /// the times saved. Where one writer owns the store, only saves.
    fn fold_pulled(
        &self,
        pulled: HashMap<Digest, SystemTime>,
        older_than: Duration,
    ) -> Io<'_, HashMap<Digest, SystemTime>> {
        let _ = older_than;
        async move {
            self.save_pulled(pulled.clone()).await?;
            Ok(pulled)
        }
        .boxed()
    }
}

/// Last-pulled times as saved: a JSON map of digest to unix seconds.
fn encode_pulled(pulled: &HashMap<Digest, SystemTime>) -> Vec<u8> {
    let saved: HashMap<&str, u64> = pulled.iter().map(|(d, t)| (d.as_str(), unix(*t))).collect();
    // A map of strings to numbers always serialises.
    serde_json::to_vec(&saved).expect("last-pulled times serialise")
}

/// Adds `more` to `into`, keeping the later time of a manifest in both.
pub fn merge_pulled(
    into: &mut HashMap<Digest, SystemTime>,
    more: impl IntoIterator<Item = (Digest, SystemTime)>,
) {
    for (digest, t) in more {
        let latest = into.entry(digest).or_insert(t);
        *latest = (*latest).max(t);
    }
}

/// Last-pulled times from what [`encode_pulled`] wrote (none if unreadable).
fn decode_pulled(bytes: &[u8]) -> HashMap<Digest, SystemTime> {
    let saved: HashMap<String, u64> = serde_json::from_slice(bytes).unwrap_or_default();
    saved
        .into_iter()
        .filter_map(|(d, secs)| {
            Some((
                Digest::parse(&d).ok()?,
                UNIX_EPOCH + Duration::from_secs(secs),
            ))
        })
        .collect()
}
