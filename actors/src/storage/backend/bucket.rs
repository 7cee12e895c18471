//! The object-storage backend: a bucket (S3 and S3-compatible stores, GCS,
//! Azure Blob, or memory in tests) through the `object_store` crate, shared
//! by every replica that names it.
//!
//! Keys under the configured prefix:
//! - `blobs/sha256/<hex>`, `manifests/sha256/<hex>`: content, each put in
//!   one request (multipart for large blobs) that makes it visible whole
//!   or not at all; a key is only ever written with bytes already
//!   verified against its name.
//! - `records/<time>-<writer>-<n>.jsonl`: each append is an object of its
//!   own that nothing overwrites, so writers never corrupt each other's
//!   records; they are read in key order (time first). A rewrite puts one
//!   object holding every record, then deletes the objects it replaces.
//! - `pulled/<writer>.json`: each writer's last-pulled times; reading
//!   takes the latest time of every digest over all writers.

use std::collections::HashMap;
use std::path::Path as LocalPath;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, UpdateVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{decode_pulled, encode_pulled, merge_pulled, Backend, Io, Kind, Stored};
use crate::names::Digest;
use crate::storage::index::unix;
use crate::storage::journal::{decode, encode, Record};

/// Bytes read from a local file per part of an upload (S3's smallest part).
const UPLOAD_CHUNK: usize = 5 << 20;
/// Parts of one upload in flight at once; with the part being read, one
/// upload holds this many plus one [`UPLOAD_CHUNK`]s in memory.
const UPLOAD_PARTS_IN_FLIGHT: usize = 2;

/// A bucket as a cache's store of record. See the module documentation.
#[derive(Debug)]
pub struct Bucket {
    /// The bucket.
    store: Arc<dyn ObjectStore>,
    /// Where under the bucket this cache lives (may be empty).
    prefix: Path,
    /// Names this writer's records and last-pulled times (a replica).
    writer: String,
    /// Records objects this writer created, for unique names.
    appended: AtomicU64,
    /// The records objects the last `records` read, which a rewrite replaces.
    read: Mutex<Vec<Path>>,
}

impl Bucket {
    /// The cache under `prefix` in `store`, written as `writer` (unique
    /// among the replicas sharing the bucket, e.g. the pod's name).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, writer: &str) -> Self {
        Self {
            store,
            prefix: Path::from(prefix),
            writer: writer.replace(['/', '-'], "_"),
            appended: AtomicU64::new(0),
            read: Mutex::new(Vec::new()),
        }
    }

    /// The key `<prefix>/<parts...>`.
    fn under(&self, parts: &[&str]) -> Path {
        parts
            .iter()
            .fold(self.prefix.clone(), |p, part| p.join(*part))
    }

    /// The key of object `digest` of `kind`.
    fn key(&self, kind: Kind, digest: &Digest) -> Path {
        self.dir(kind).join(digest.hex())
    }

    /// The folder of objects of `kind`.
    fn dir(&self, kind: Kind) -> Path {
        let name = match kind {
            Kind::Blob => "blobs",
            Kind::Manifest => "manifests",
        };
        self.under(&[name, "sha256"])
    }

    /// A records object name no other append uses, ordered by `time`
    /// (nanoseconds since the epoch).
    fn records_key(&self, time: u128) -> Path {
        let n = self.appended.fetch_add(1, Ordering::Relaxed);
        let name = format!("{time:020}-{}-{n:08}.jsonl", self.writer);
        self.under(&["records", &name])
    }

    /// Puts `records` as one new records object ordered at `time`.
    async fn put_records(&self, time: u128, records: &[Record]) -> std::io::Result<Path> {
        let bytes = Bytes::from(encode(records));
        let key = self.records_key(time);
        self.store.put(&key, bytes.into()).await.map_err(io)?;
        Ok(key)
    }

    /// The keys of the objects under `dir` (after `offset`), in order.
    /// This writer's last-pulled times object.
    fn own_pulled(&self) -> Path {
        self.under(&["pulled", &format!("{}.json", self.writer)])
    }

    async fn keys(&self, dir: &str, offset: Option<&Path>) -> std::io::Result<Vec<Path>> {
        let dir = self.under(&[dir]);
        let listing = match offset {
            Some(offset) => self.store.list_with_offset(Some(&dir), offset),
            None => self.store.list(Some(&dir)),
        };
        let mut keys: Vec<Path> = listing
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(io)?;
        keys.sort();
        Ok(keys)
    }

    /// The records of the records objects `keys`, in order; one deleted by
    /// a compaction since it was listed is skipped (its records are in the
    /// compaction's object).
    async fn read_records(&self, keys: &[Path]) -> std::io::Result<Vec<Record>> {
        let mut records = Vec::new();
        for key in keys {
            match self.store.get(key).await {
                Ok(got) => records.extend(decode(&got.bytes().await.map_err(io)?)),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(io(e)),
            }
        }
        Ok(records)
    }

    /// Is object `key` stored already?
    async fn exists(&self, key: &Path) -> std::io::Result<bool> {
        match self.store.head(key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(io(e)),
        }
    }

    /// Uploads the file `from` to `key`, in parts when it is large; an
    /// upload that fails is aborted, so nothing appears under `key`.
    async fn upload(&self, key: Path, from: &LocalPath) -> std::io::Result<()> {
        let mut file = tokio::fs::File::open(from).await?;
        let mut upload = BufWriter::with_capacity(Arc::clone(&self.store), key, UPLOAD_CHUNK)
            .with_max_concurrency(UPLOAD_PARTS_IN_FLIGHT);
        let sent = async {
            loop {
                let mut chunk = Vec::with_capacity(UPLOAD_CHUNK);
                let n = (&mut file)
                    .take(UPLOAD_CHUNK as u64)
                    .read_to_end(&mut chunk)
                    .await?;
                if n == 0 {
                    break;
                }
                upload.put(Bytes::from(chunk)).await.map_err(io)?;
            }
            upload.shutdown().await
        }
        .await;
        if sent.is_err() {
            let _ = upload.abort().await;
        }
        sent
    }
}

/// A lease as stored.
#[derive(serde::Serialize, serde::Deserialize)]
struct Lease {
    /// The writer holding it.
    holder: String,
    /// When it expires (unix milliseconds).
    expires: u64,
}

/// An `object_store` error as an I/O error (not found stays not found).
fn io(e: object_store::Error) -> std::io::Error {
    match e {
        object_store::Error::NotFound { .. } => {
            std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string())
        }
        e => std::io::Error::other(e.to_string()),
    }
}

impl Backend for Bucket {
    fn is_local(&self) -> bool {
        false
    }

    fn list(&self, kind: Kind) -> Io<'_, HashMap<Digest, u64>> {
        async move {
            let dir = self.dir(kind);
            let mut found = HashMap::new();
            let mut listing = self.store.list(Some(&dir));
            while let Some(meta) = listing.next().await {
                let meta = meta.map_err(io)?;
                let name = meta.location.filename().unwrap_or_default();
                if let Ok(d) = Digest::parse(&format!("sha256:{name}")) {
                    found.insert(d, meta.size);
                }
            }
            Ok(found)
        }
        .boxed()
    }

    fn put_file<'a>(&'a self, kind: Kind, digest: &'a Digest, from: &'a LocalPath) -> Io<'a, ()> {
        async move {
            let key = self.key(kind, digest);
            if self.exists(&key).await? {
                return Ok(());
            }
            self.upload(key, from).await
        }
        .boxed()
    }

    fn put(&self, kind: Kind, digest: &Digest, bytes: Bytes) -> Io<'_, ()> {
        let key = self.key(kind, digest);
        async move {
            self.store.put(&key, bytes.into()).await.map_err(io)?;
            Ok(())
        }
        .boxed()
    }

    fn open(&self, kind: Kind, digest: &Digest) -> Io<'_, Option<Stored>> {
        let key = self.key(kind, digest);
        async move {
            match self.store.get(&key).await {
                Ok(got) => Ok(Some(Stored {
                    size: got.meta.size,
                    bytes: got.into_stream().map_err(io).boxed(),
                })),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(io(e)),
            }
        }
        .boxed()
    }

    fn delete(&self, kind: Kind, digest: &Digest) -> Io<'_, ()> {
        let key = self.key(kind, digest);
        async move {
            match self.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(io(e)),
            }
        }
        .boxed()
    }

    fn append(&self, records: Vec<Record>) -> Io<'_, ()> {
        async move {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            self.put_records(now, &records).await?;
            Ok(())
        }
        .boxed()
    }

    fn records(&self) -> Io<'_, Vec<Record>> {
        async move {
            let keys = self.keys("records", None).await?;
            let records = self.read_records(&keys).await?;
            *self.read.lock().unwrap_or_else(|p| p.into_inner()) = keys;
            Ok(records)
        }
        .boxed()
    }

    fn more_records(&self) -> Io<'_, Vec<Record>> {
        async move {
            let last = self
                .read
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .last()
                .cloned();
            let keys = self.keys("records", last.as_ref()).await?;
            let records = self.read_records(&keys).await?;
            self.read
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(keys);
            Ok(records)
        }
        .boxed()
    }

    /// The new object takes the place in time of the newest one it
    /// replaces, so records appended since by other writers still come
    /// after it.
    fn rewrite(&self, records: Vec<Record>) -> Io<'_, ()> {
        async move {
            let replaced =
                std::mem::take(&mut *self.read.lock().unwrap_or_else(|p| p.into_inner()));
            let time = replaced
                .last()
                .and_then(|key| key.filename()?.split('-').next()?.parse().ok())
                .unwrap_or(0);
            let compacted = self.put_records(time, &records).await?;
            // Later reads go on after the compacted object.
            self.read
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(compacted);
            for key in replaced {
                match self.store.delete(&key).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(io(e)),
                }
            }
            Ok(())
        }
        .boxed()
    }

    /// `leases/<name>.json` names its holder and when it expires; it is
    /// created only if absent and replaced only if unchanged since it was
    /// read (conditional requests), so two writers never both take it.
    fn lease(&self, name: &str, ttl: Duration) -> Io<'_, bool> {
        let key = self.under(&["leases", &format!("{name}.json")]);
        async move {
            let now = SystemTime::now();
            let mode = match self.store.get(&key).await {
                Err(object_store::Error::NotFound { .. }) => PutMode::Create,
                Err(e) => return Err(io(e)),
                Ok(got) => {
                    let version = UpdateVersion {
                        e_tag: got.meta.e_tag.clone(),
                        version: got.meta.version.clone(),
                    };
                    let held: Option<Lease> =
                        serde_json::from_slice(&got.bytes().await.map_err(io)?).ok();
                    let others = held.filter(|l| l.holder != self.writer);
                    if others.is_some_and(|l| UNIX_EPOCH + Duration::from_millis(l.expires) > now) {
                        return Ok(false);
                    }
                    PutMode::Update(version)
                }
            };
            let expires = (now + ttl).duration_since(UNIX_EPOCH).unwrap_or_default();
            let lease = Lease {
                holder: self.writer.clone(),
                expires: expires.as_millis() as u64,
            };
            let body = Bytes::from(serde_json::to_vec(&lease).map_err(std::io::Error::other)?);
            match self.store.put_opts(&key, body.into(), mode.into()).await {
                Ok(_) => Ok(true),
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => Ok(false),
                Err(e) => Err(io(e)),
            }
        }
        .boxed()
    }

    fn pulled(&self) -> Io<'_, HashMap<Digest, SystemTime>> {
        async move {
            let mut pulled: HashMap<Digest, SystemTime> = HashMap::new();
            for key in self.keys("pulled", None).await? {
                let Ok(got) = self.store.get(&key).await else {
                    continue;
                };
                let Ok(bytes) = got.bytes().await else {
                    continue;
                };
                merge_pulled(&mut pulled, decode_pulled(&bytes));
            }
            Ok(pulled)
        }
        .boxed()
    }

    fn save_pulled(&self, pulled: HashMap<Digest, SystemTime>) -> Io<'_, ()> {
        async move {
            let key = self.own_pulled();
            let bytes = Bytes::from(encode_pulled(&pulled));
            self.store.put(&key, bytes.into()).await.map_err(io)?;
            Ok(())
        }
        .boxed()
    }

    fn fold_pulled(
        &self,
        mut pulled: HashMap<Digest, SystemTime>,
        older_than: Duration,
    ) -> Io<'_, HashMap<Digest, SystemTime>> {
        async move {
            let own = self.own_pulled();
            let before = SystemTime::now()
                .checked_sub(older_than)
                .map_or(i64::MIN, |t| unix(t) as i64);
            let dir = self.under(&["pulled"]);
            let gone: Vec<Path> = self
                .store
                .list(Some(&dir))
                .try_filter(|m| {
                    let stale = m.location != own && m.last_modified.timestamp() <= before;
                    futures::future::ready(stale)
                })
                .map_ok(|m| m.location)
                .try_collect()
                .await
                .map_err(io)?;
            for key in &gone {
                let Ok(got) = self.store.get(key).await else {
                    continue;
                };
                merge_pulled(&mut pulled, decode_pulled(&got.bytes().await.map_err(io)?));
            }
            self.save_pulled(pulled.clone()).await?;
            for key in &gone {
                match self.store.delete(key).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(io(e)),
                }
            }
            Ok(pulled)
        }
        .boxed()
    }
}
