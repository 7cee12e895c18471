//! The Storage actor: owns the cache root on disk and its in-memory index.
//!
//! Blobs are content-addressed files; manifests are kept byte-exact by
//! digest on disk and in memory; the tag index maps (registry, repo, tag) to
//! a digest and keeps every tag, also when several tags share one digest.

mod backend;
mod blob_writer;
mod bodies;
mod index;
mod journal;
mod layout;
mod listings;
mod load;
mod local;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use regex::Regex;

pub use backend::{Backend, Bucket, Filesystem, Io, Kind, Stored};
use blob_writer::WriteTicket;
pub use blob_writer::{BlobWriter, VerifiedBlob};
use bodies::Bodies;
pub use index::{unix, ImageInfo, PruneBy, PruneReport, MAX_INDEX_DEPTH, MAX_INDEX_ENTRIES};
use index::{Index, Origin, Plan, TagEntry, TagKey};
pub use journal::Record;
pub use layout::Layout;
use local::LocalBlobs;

use crate::error::FetchError;
use crate::listing::{Listing, ListingKey};
use crate::manifest::{Manifest, ManifestInfo};
use crate::metrics::METRICS;
use crate::names::{Digest, Reference, RegistryName, RepoName, Tag};

/// Messages queued before senders wait (actix's default of 16 is too small
/// for a server answering many clients).
const MAILBOX_CAPACITY: usize = 4096;
/// How often changed last-pulled times are saved.
const PULLED_FLUSH: Duration = Duration::from_secs(30);
/// How often a replica of a shared store reads the records others appended
/// and renews its retention lease.
const CATCH_UP: Duration = Duration::from_secs(10);
/// How often the retention-lease holder of a shared store folds the
/// last-pulled times of replicas gone into its own.
const PULLED_FOLD: Duration = Duration::from_secs(3600);
/// A replica whose last-pulled times have not changed for this long is
/// taken for gone (its times live on in the lease holder's).
const PULLED_STALE: Duration = Duration::from_secs(24 * 3600);
/// How long a retention lease lasts unless renewed (three renewals).
const RETENTION_LEASE: Duration = Duration::from_secs(30);
/// Most bytes of manifest bodies kept in memory (tens of thousands of
/// typical manifests); others are read from disk when served.
const MANIFEST_MEMORY: u64 = 64 * 1024 * 1024;
/// Size eviction frees space down to this share of `maxCacheSize`.
const LOW_WATER_PERCENT: u64 = 90;

/// Limits on what the cache keeps.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    /// Images whose name matches are never pruned or evicted.
    pub pins: Vec<Regex>,
    /// Evict least recently pulled images above this many bytes.
    pub max_size: Option<u64>,
    /// With a remote backend, most bytes of local blob copies
    /// (`localCache.maxSize`; unbounded when `None`).
    pub local_max_size: Option<u64>,
}

/// The Storage actor. See the module documentation.
pub struct Storage {
    /// The store of record: contents, records, last-pulled times.
    backend: Arc<dyn Backend>,
    /// The local directory: partial files of downloads, and the blob files
    /// served (with the filesystem backend, its own root).
    layout: Layout,
    /// With a remote backend, the blobs of the local directory (a bounded
    /// cache); with a local one, `None`: every stored blob is local.
    local: Option<LocalBlobs>,
    /// Everything cached, in memory (manifest bodies aside).
    index: Index,
    /// Manifest bodies kept in memory, within [`MANIFEST_MEMORY`].
    bodies: Bodies,
    /// Pins and size limit.
    retention: Retention,
    /// Blob writers handed out and not yet dropped: their partial files
    /// count toward `maxCacheSize`.
    writes: Vec<Weak<WriteTicket>>,
    /// Manifest files being written, so that a second commit of one digest
    /// waits for the first instead of writing it again.
    manifest_writes: HashMap<Digest, ManifestWrite>,
    /// Last-pulled times changed since they were saved.
    pulled_dirty: bool,
    /// With a shared store: since when, and why, its checks fail.
    store_failing: Option<(SystemTime, String)>,
    /// Whether this replica may prune and evict: always with a local
    /// store; with a shared one, while it holds the retention lease.
    retention_lease: bool,
    /// Where problems are reported.
    log: slog::Logger,
}

impl Storage {
    /// Opens the cache stored in `backend`, with `local` as its local
    /// directory: removes leftover partial files there, loads the index and
    /// rewrites the records compactly. Call at start-up.
    pub async fn open(
        backend: Arc<dyn Backend>,
        layout: Layout,
        retention: Retention,
        log: slog::Logger,
    ) -> std::io::Result<Self> {
        layout.create_dirs()?;
        load::clean(&layout)?;
        let index = load::load(&*backend, &log).await?;
        backend.rewrite(index.records()).await?;
        let backend_is_local = backend.is_local();
        let local = match backend_is_local {
            true => None,
            false => Some(LocalBlobs::scan(
                &layout,
                retention.local_max_size.unwrap_or(u64::MAX),
            )?),
        };
        slog::info!(log, "cache loaded"; "root" => %layout.root().display(),
            "blobs" => index.blobs.len(), "manifests" => index.manifests.len(), "tags" => index.tags.len());
        Ok(Self {
            backend,
            layout,
            local,
            index,
            bodies: Bodies::new(MANIFEST_MEMORY),
            retention,
            writes: Vec::new(),
            manifest_writes: HashMap::new(),
            pulled_dirty: false,
            store_failing: None,
            retention_lease: backend_is_local,
            log,
        })
    }

    /// Lists the images stored in `backend` without changing anything
    /// (safe while a server uses it).
    pub async fn list(
        backend: &dyn Backend,
        pins: &[Regex],
        log: &slog::Logger,
    ) -> std::io::Result<Vec<ImageInfo>> {
        Ok(load::load(backend, log).await?.images(pins))
    }

    /// The tag history stored in `backend`: every digest each tag pointed
    /// to, and when (records as stored).
    pub async fn history(backend: &dyn Backend) -> std::io::Result<Vec<serde_json::Value>> {
        let records = backend.records().await?;
        Ok(records
            .into_iter()
            .filter(|r| matches!(r, Record::Tag { .. } | Record::Untag { .. }))
            .filter_map(|r| serde_json::to_value(r).ok())
            .collect())
    }

    /// Prunes the cache stored in `backend` while no server runs on this
    /// cache directory (the caller checks): removes contents and rewrites
    /// the records before returning. On a shared store it needs the
    /// retention lease, like a replica.
    pub async fn prune_offline(
        backend: &dyn Backend,
        retention: &Retention,
        request: Prune,
        log: &slog::Logger,
    ) -> std::io::Result<PruneReport> {
        if !request.dry_run && !backend.lease("retention", RETENTION_LEASE).await? {
            return Err(std::io::Error::other(NotRetentionHolder));
        }
        let mut index = load::load(backend, log).await?;
        let now = SystemTime::now();
        let plan = index.plan(&request.by, request.count, &retention.pins, now);
        if !request.dry_run {
            index.forget(&plan, now);
            remove(backend, &plan).await?;
            backend.rewrite(index.records()).await?;
        }
        Ok(PruneReport {
            dry_run: request.dry_run,
            ..plan.report
        })
    }

    /// Records that a manifest was served now.
    fn touch(&mut self, digest: &Digest) {
        self.index.pulled.insert(digest.clone(), SystemTime::now());
        self.pulled_dirty = true;
    }

    /// Removes a plan's tags, manifests and blobs: from memory at once, from
    /// the backend in the background (readers holding a file keep reading it).
    fn apply(&mut self, plan: &Plan) {
        if plan.report.images.is_empty() && plan.manifests.is_empty() {
            return;
        }
        let untags = self.index.forget(plan, SystemTime::now());
        plan.manifests.iter().for_each(|d| self.bodies.remove(d));
        if let Some(local) = &mut self.local {
            plan.blobs.iter().for_each(|d| local.remove(d));
            self.delete_local_copies(&plan.blobs);
        }
        let (backend, plan, log) = (Arc::clone(&self.backend), plan.clone(), self.log.clone());
        // Records of removed manifests go when the records are next
        // compacted (at start-up): loading drops a record whose content is
        // gone.
        actix::spawn(async move {
            if let Err(e) = remove(&*backend, &plan).await {
                slog::warn!(log, "could not delete pruned content"; "error" => %e);
            }
            if let Err(e) = backend.append(untags).await {
                slog::error!(log, "could not record the removed tags"; "error" => %e);
            }
        });
    }

    /// Evicts least recently pulled images when the cache is over its size limit.
    fn evict_if_needed(&mut self) {
        let Some(max) = self.retention.max_size.filter(|_| self.retention_lease) else {
            return;
        };
        let writing = self.bytes_being_written();
        if self.index.total_bytes() + writing <= max {
            return;
        }
        let low_water = (max / 100 * LOW_WATER_PERCENT).saturating_sub(writing);
        let plan = self.index.plan(
            &PruneBy::Size(low_water),
            None,
            &self.retention.pins,
            SystemTime::now(),
        );
        slog::info!(self.log, "cache over maxCacheSize: evicting"; "images" => plan.report.images.len(),
            "bytes" => plan.report.bytes);
        METRICS.evictions.inc_by(plan.report.images.len() as u64);
        self.apply(&plan);
    }
}

impl Actor for Storage {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        ctx.run_interval(PULLED_FLUSH, |act, _| {
            actix::spawn(act.flush_pulled());
        });
        if self.local.is_some() {
            METRICS.store_up.set(1);
            ctx.spawn(self.renew_retention_lease());
            ctx.run_interval(CATCH_UP, |act, ctx| {
                ctx.spawn(act.catch_up());
                ctx.spawn(act.renew_retention_lease());
            });
            ctx.run_interval(PULLED_FOLD, |act, ctx| {
                if act.retention_lease {
                    ctx.spawn(act.fold_pulled());
                }
            });
        }
    }
}

impl Storage {
    /// Reads the records other writers of a shared store appended since
    /// the last read (tags and manifests other replicas stored) into the
    /// index.
    fn catch_up(&mut self) -> impl ActorFuture<Self, Output = ()> + 'static {
        let backend = Arc::clone(&self.backend);
        async move { backend.more_records().await }
            .into_actor(self)
            .map(|read, act, _| {
                act.store_checked(read.as_ref().err());
                for record in read.unwrap_or_default() {
                    load::replay(&mut act.index, None, &HashMap::new(), record, &act.log);
                }
            })
    }

    /// Takes or renews the retention lease of a shared store.
    fn renew_retention_lease(&mut self) -> impl ActorFuture<Self, Output = ()> + 'static {
        let backend = Arc::clone(&self.backend);
        async move { backend.lease("retention", RETENTION_LEASE).await }
            .into_actor(self)
            .map(|held, act, _| {
                let held = held.unwrap_or(false);
                if held != act.retention_lease {
                    slog::info!(act.log, "retention lease"; "held" => held);
                }
                act.retention_lease = held;
            })
    }

    /// Records how a check of a shared store went: the metric, a log line
    /// when it starts or stops failing, the status `/ready` shows.
    fn store_checked(&mut self, error: Option<&std::io::Error>) {
        METRICS.store_up.set(i64::from(error.is_none()));
        match (error, &self.store_failing) {
            (Some(e), None) => {
                METRICS.store_errors.inc();
                slog::error!(self.log, "the shared store fails; serving local copies"; "error" => %e);
                self.store_failing = Some((SystemTime::now(), e.to_string()));
            }
            (Some(_), Some(_)) => {
                METRICS.store_errors.inc();
            }
            (None, Some(_)) => {
                slog::info!(self.log, "the shared store answers again");
                self.store_failing = None;
            }
            (None, None) => {}
        }
    }
}

impl Storage {
    /// Saves last-pulled times if they changed since they were last saved.
    fn flush_pulled(&mut self) -> impl Future<Output = ()> + 'static {
        let changed = std::mem::take(&mut self.pulled_dirty);
        let (backend, pulled, log) = (
            Arc::clone(&self.backend),
            self.index.pulled.clone(),
            self.log.clone(),
        );
        async move {
            if !changed {
                return;
            }
            if let Err(e) = backend.save_pulled(pulled).await {
                slog::warn!(log, "could not save last-pulled times"; "error" => %e);
            }
        }
    }
}

impl Storage {
    /// Folds the last-pulled times of replicas gone into this one's (the
    /// retention-lease holder's) and keeps those of manifests still cached.
    fn fold_pulled(&mut self) -> impl ActorFuture<Self, Output = ()> + 'static {
        let (backend, pulled) = (Arc::clone(&self.backend), self.index.pulled.clone());
        async move { backend.fold_pulled(pulled, PULLED_STALE).await }
            .into_actor(self)
            .map(|folded, act, _| {
                // A flush meanwhile may have been overwritten by the fold's
                // older snapshot: save again at the next flush.
                act.pulled_dirty = true;
                let folded = match folded {
                    Ok(folded) => folded,
                    Err(e) => {
                        slog::warn!(act.log, "could not fold last-pulled times"; "error" => %e);
                        return;
                    }
                };
                let manifests = &act.index.manifests;
                let cached = folded
                    .into_iter()
                    .filter(|(d, _)| manifests.contains_key(d));
                backend::merge_pulled(&mut act.index.pulled, cached);
            })
    }
}

/// Saves last-pulled times now, before the process exits (records are
/// durable as they are written).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for Storage {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Flush, _: &mut Self::Context) -> Self::Result {
        Box::pin(self.flush_pulled())
    }
}

/// A complete blob in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedBlob {
    /// Its file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
}

/// Is this blob cached?
#[derive(Message)]
#[rtype(result = "Option<CachedBlob>")]
pub struct LookupBlob(pub Digest);

impl Handler<LookupBlob> for Storage {
    type Result = Option<CachedBlob>;

    fn handle(&mut self, msg: LookupBlob, _: &mut Self::Context) -> Self::Result {
        self.cached_blob(&msg.0)
    }
}

impl Storage {
    /// The local file of a blob, if there is one.
    fn cached_blob(&mut self, digest: &Digest) -> Option<CachedBlob> {
        let size = match &mut self.local {
            None => self.index.blobs.get(digest).copied(),
            Some(local) => local.get(digest),
        }?;
        Some(CachedBlob {
            path: self.layout.blob(digest),
            size,
        })
    }

    /// Records a blob stored and put in the local directory; with a
    /// remote backend, deletes the local copies that leave to make room.
    fn blob_stored(&mut self, digest: Digest, size: u64) {
        if let Some(local) = &mut self.local {
            let evicted = local.insert(digest.clone(), size);
            self.delete_local_copies(&evicted);
            if !self.index.blobs.contains_key(&digest) {
                // Other replicas learn of it (its size counts toward
                // maxCacheSize wherever eviction runs).
                let record = Record::Blob {
                    digest: digest.to_string(),
                    size,
                };
                let (backend, log) = (Arc::clone(&self.backend), self.log.clone());
                actix::spawn(async move {
                    if let Err(e) = backend.append(vec![record]).await {
                        slog::warn!(log, "could not record a stored blob"; "error" => %e);
                    }
                });
            }
        }
        self.index.blobs.insert(digest, size);
        self.evict_if_needed();
    }
}

impl Storage {
    /// Deletes the local files of blobs whose store is remote, in the
    /// background (readers holding a file keep reading it).
    fn delete_local_copies(&self, digests: &[Digest]) {
        let files: Vec<PathBuf> = digests.iter().map(|d| self.layout.blob(d)).collect();
        tokio::task::spawn_blocking(move || {
            for f in files {
                let _ = std::fs::remove_file(f);
            }
        });
    }
}

/// A blob stored in the backend but with no local file: its bytes, to be
/// verified and put in the local directory like a download. `None` when it
/// is not stored, or when every stored blob is local (the lookup said all).
#[derive(Message)]
#[rtype(result = "Result<Option<Stored>, FetchError>")]
pub struct OpenStoredBlob(pub Digest);

impl Handler<OpenStoredBlob> for Storage {
    type Result = ResponseFuture<Result<Option<Stored>, FetchError>>;

    fn handle(&mut self, msg: OpenStoredBlob, _: &mut Self::Context) -> Self::Result {
        if self.local.is_none() {
            return Box::pin(async { Ok(None) });
        }
        let backend = Arc::clone(&self.backend);
        Box::pin(async move { Ok(backend.open(Kind::Blob, &msg.0).await?) })
    }
}

/// The cached manifest a reference names in a repository, if any.
#[derive(Message)]
#[rtype(result = "Option<CachedManifest>")]
pub struct LookupManifest {
    /// Registry host.
    pub registry: RegistryName,
    /// Repository name.
    pub repo: RepoName,
    /// Tag or digest.
    pub reference: Reference,
}

/// A cached manifest, and for a tag when the upstream last confirmed it.
#[derive(Debug, Clone)]
pub struct CachedManifest {
    /// The manifest.
    pub manifest: Arc<Manifest>,
    /// For tag lookups: when the upstream last answered this digest.
    pub checked: Option<SystemTime>,
}

impl Handler<LookupManifest> for Storage {
    type Result = ResponseActFuture<Self, Option<CachedManifest>>;

    /// Answers from memory when the body is kept there; otherwise reads it
    /// from disk on the blocking pool and verifies it. A file that no
    /// longer verifies is deleted and forgotten (the next request fetches).
    fn handle(&mut self, msg: LookupManifest, _: &mut Self::Context) -> Self::Result {
        let Some((digest, checked)) = self.resolve(&msg) else {
            return self.stored_elsewhere(msg);
        };
        self.touch(&digest);
        if let Some(manifest) = self.bodies.get(&digest) {
            return Box::pin(fut::ready(Some(CachedManifest { manifest, checked })));
        }
        let backend = Arc::clone(&self.backend);
        let read = async move {
            let loaded = load::read_manifest(&*backend, &digest).await;
            if loaded.is_err() {
                let _ = backend.delete(Kind::Manifest, &digest).await;
            }
            (digest, loaded)
        };
        Box::pin(
            read.into_actor(self)
                .map(move |(digest, loaded), act, _| match loaded {
                    Ok(m) => {
                        let manifest = Arc::new(m);
                        act.bodies.put(Arc::clone(&manifest));
                        Some(CachedManifest { manifest, checked })
                    }
                    Err(e) => {
                        slog::error!(act.log, "a cached manifest no longer verifies: forgotten";
                        "digest" => %digest, "reason" => e);
                        act.index.remove_manifest(&digest);
                        None
                    }
                }),
        )
    }
}

impl Storage {
    /// The stored manifest a reference names, and for a tag when it was
    /// confirmed.
    fn resolve(&self, msg: &LookupManifest) -> Option<(Digest, Option<SystemTime>)> {
        let (digest, checked) = match &msg.reference {
            Reference::Digest(d) => (d.clone(), None),
            Reference::Tag(tag) => {
                let key = TagKey {
                    registry: msg.registry.clone(),
                    repo: msg.repo.clone(),
                    tag: tag.clone(),
                };
                let entry = self.index.tags.get(&key)?;
                (entry.digest.clone(), Some(entry.checked))
            }
        };
        self.index
            .manifests
            .contains_key(&digest)
            .then_some((digest, checked))
    }

    /// A manifest asked by digest that this index does not know, read from
    /// a shared store (another replica stored it), verified and indexed.
    fn stored_elsewhere(
        &mut self,
        msg: LookupManifest,
    ) -> ResponseActFuture<Self, Option<CachedManifest>> {
        let Reference::Digest(digest) = msg.reference else {
            return Box::pin(fut::ready(None));
        };
        if self.local.is_none() {
            return Box::pin(fut::ready(None));
        }
        let backend = Arc::clone(&self.backend);
        let read = async move { load::read_manifest(&*backend, &digest).await };
        Box::pin(read.into_actor(self).map(move |read, act, _| {
            let manifest = Arc::new(read.ok()?);
            let info = manifest.info();
            act.index.admit(&manifest.digest, &info).ok()?;
            let origin = Origin {
                registry: msg.registry.to_string(),
                repo: msg.repo.to_string(),
                stored: SystemTime::now(),
            };
            act.touch(&manifest.digest);
            act.index_manifest(Arc::clone(&manifest), info, origin);
            Some(CachedManifest {
                manifest,
                checked: None,
            })
        }))
    }
}

/// The upstream confirmed that a tag still points at `digest`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TagConfirmed {
    /// Registry host.
    pub registry: RegistryName,
    /// Repository name.
    pub repo: RepoName,
    /// The tag.
    pub tag: Tag,
    /// The digest the upstream answered.
    pub digest: Digest,
}

impl Handler<TagConfirmed> for Storage {
    type Result = ();

    /// Kept in memory only: after a restart a tag is revalidated once more,
    /// which is cheaper than a journal write per revalidation.
    fn handle(&mut self, msg: TagConfirmed, _: &mut Self::Context) {
        let key = TagKey {
            registry: msg.registry,
            repo: msg.repo,
            tag: msg.tag,
        };
        if let Some(entry) = self
            .index
            .tags
            .get_mut(&key)
            .filter(|e| e.digest == msg.digest)
        {
            entry.checked = SystemTime::now();
        }
    }
}

/// What starting a blob write found: already cached (another write
/// finished first), or a fresh writer.
#[derive(Debug)]
pub enum BlobStart {
    /// Complete already; serve it.
    Cached(CachedBlob),
    /// Stream the bytes into this writer, then send [`CommitBlob`].
    Writer(Box<BlobWriter>),
}

/// Begins storing a blob unless it is already complete. Every writer gets
/// a partial file of its own, so writers of one digest (an import beside a
/// download) never touch each other's bytes.
#[derive(Message)]
#[rtype(result = "Result<BlobStart, FetchError>")]
pub struct BeginBlob(pub Digest);

impl Handler<BeginBlob> for Storage {
    type Result = Result<BlobStart, FetchError>;

    fn handle(&mut self, msg: BeginBlob, _: &mut Self::Context) -> Self::Result {
        if let Some(cached) = self.cached_blob(&msg.0) {
            return Ok(BlobStart::Cached(cached));
        }
        Ok(BlobStart::Writer(Box::new(self.begin_write(msg.0)?)))
    }
}

impl Storage {
    /// A new writer for `digest`, tracked until it is dropped.
    fn begin_write(&mut self, digest: Digest) -> std::io::Result<BlobWriter> {
        let ticket = Arc::new(WriteTicket::default());
        self.writes.retain(|w| w.strong_count() > 0);
        self.writes.push(Arc::downgrade(&ticket));
        BlobWriter::create(&self.layout, digest, ticket)
    }

    /// Bytes held by writes in progress (forgetting finished ones).
    fn bytes_being_written(&mut self) -> u64 {
        self.writes.retain(|w| w.strong_count() > 0);
        self.writes
            .iter()
            .filter_map(Weak::upgrade)
            .map(|t| t.received())
            .sum()
    }
}

/// Makes a verified blob durable and puts it in place and in the index:
/// the one way a blob enters the cache. Idempotent: when the digest is
/// already cached (another writer committed first) it is a no-op and the
/// blob's partial file is deleted; two commits running at once rename
/// identical, verified bytes, and either result is the same blob.
#[derive(Message)]
#[rtype(result = "Result<u64, FetchError>")]
pub struct CommitBlob(pub VerifiedBlob);

impl Handler<CommitBlob> for Storage {
    type Result = ResponseActFuture<Self, Result<u64, FetchError>>;

    fn handle(&mut self, msg: CommitBlob, _: &mut Self::Context) -> Self::Result {
        let digest = msg.0.digest().clone();
        if let Some(cached) = self.cached_blob(&digest) {
            return Box::pin(fut::ready(Ok(cached.size)));
        }
        let persist = msg.0.persist(Arc::clone(&self.backend));
        Box::pin(persist.into_actor(self).map(move |res, act, _| {
            let size = res?;
            act.blob_stored(digest, size);
            Ok(size)
        }))
    }
}

/// Stores a whole blob held in memory (small embedded content), verified
/// and committed like any download.
#[derive(Message)]
#[rtype(result = "Result<(), FetchError>")]
pub struct PutBlob {
    /// The digest the bytes must hash to.
    pub digest: Digest,
    /// The content.
    pub bytes: Bytes,
}

impl Handler<PutBlob> for Storage {
    type Result = ResponseFuture<Result<(), FetchError>>;

    fn handle(&mut self, msg: PutBlob, ctx: &mut Self::Context) -> Self::Result {
        if self.cached_blob(&msg.digest).is_some() {
            return Box::pin(async { Ok(()) });
        }
        let (writer, storage) = (self.begin_write(msg.digest), ctx.address());
        Box::pin(async move {
            let mut writer = writer?;
            let len = msg.bytes.len() as u64;
            writer.push(vec![msg.bytes]).await?;
            let verified = writer.verify(Some(len)).await?;
            storage.send(CommitBlob(verified)).await??;
            Ok(())
        })
    }
}

/// A manifest file and its journal record being written; every commit of
/// that digest meanwhile waits for it.
type ManifestWrite = Shared<BoxFuture<'static, Result<(), FetchError>>>;

/// Stores a verified manifest and, when fetched by tag, points the tag at
/// it: the one way a manifest or tag enters the cache. Idempotent for the
/// content: a manifest already stored is not written again, and commits of
/// one digest at once (two tags, an import beside a fetch) write its file
/// once; each then records its own tag.
#[derive(Message)]
#[rtype(result = "Result<(), FetchError>")]
pub struct CommitManifest {
    /// Registry host.
    pub registry: RegistryName,
    /// Repository name.
    pub repo: RepoName,
    /// The tag it was fetched by, if any.
    pub tag: Option<Tag>,
    /// The verified manifest.
    pub manifest: Arc<Manifest>,
}

impl Handler<CommitManifest> for Storage {
    type Result = ResponseActFuture<Self, Result<(), FetchError>>;

    fn handle(&mut self, msg: CommitManifest, ctx: &mut Self::Context) -> Self::Result {
        let now = SystemTime::now();
        let digest = msg.manifest.digest.clone();
        let origin = Origin {
            registry: msg.registry.to_string(),
            repo: msg.repo.to_string(),
            stored: now,
        };
        // What the index keeps of a new manifest, parsed once for the
        // bound, the journal record and the index.
        let info = (!self.index.manifests.contains_key(&digest)).then(|| msg.manifest.info());
        let stored = match &info {
            None => None,
            Some(info) => match self.index.admit(&digest, info) {
                Ok(()) => Some(self.manifest_write(&msg.manifest, info, &origin, ctx)),
                Err(e) => return Box::pin(fut::ready(Err(e))),
            },
        };
        let key = msg.tag.map(|tag| TagKey {
            registry: msg.registry.clone(),
            repo: msg.repo.clone(),
            tag,
        });
        let new_tag = key
            .as_ref()
            .filter(|k| self.index.tags.get(*k).is_none_or(|e| e.digest != digest))
            .cloned();
        if let Some(entry) = key.as_ref().and_then(|k| self.index.tags.get_mut(k)) {
            entry.checked = now;
        }
        let tag_record = new_tag.as_ref().map(|k| Record::Tag {
            registry: k.registry.to_string(),
            repo: k.repo.to_string(),
            tag: k.tag.to_string(),
            digest: digest.to_string(),
            seen: unix(now),
        });
        let new_manifest = info
            .filter(|_| stored.is_some())
            .map(|info| (msg.manifest, info, origin));
        let backend = Arc::clone(&self.backend);
        let tag_records: Vec<Record> = tag_record.iter().cloned().collect();
        let persist = async move {
            if let Some(stored) = stored {
                stored.await?;
            }
            if tag_records.is_empty() {
                return Ok(());
            }
            Ok(backend.append(tag_records).await?)
        };
        Box::pin(persist.into_actor(self).map(move |res, act, _| {
            if let Err(e) = &res {
                slog::error!(act.log, "storing manifest failed"; "digest" => %digest, "error" => %e);
                return res;
            }
            if let Some((manifest, info, origin)) = new_manifest {
                act.index_manifest(manifest, info, origin);
            }
            act.touch(&digest);
            if let (Some(k), Some(record)) = (new_tag, tag_record) {
                act.index.history.push(record);
                let entry = TagEntry {
                    digest,
                    created: now,
                    checked: now,
                };
                act.index.tags.insert(k, entry);
            }
            act.evict_if_needed();
            res
        }))
    }
}

impl Storage {
    /// The write of `manifest`'s file and journal record: the one in
    /// progress, or a new one that enters the index when durable.
    fn manifest_write(
        &mut self,
        manifest: &Arc<Manifest>,
        info: &ManifestInfo,
        origin: &Origin,
        ctx: &mut Context<Self>,
    ) -> ManifestWrite {
        let digest = &manifest.digest;
        if let Some(write) = self.manifest_writes.get(digest) {
            return write.clone();
        }
        let record = Record::manifest(
            digest,
            info,
            origin.registry.clone(),
            origin.repo.clone(),
            unix(origin.stored),
        );
        let (backend, key, bytes) = (
            Arc::clone(&self.backend),
            digest.clone(),
            manifest.bytes.clone(),
        );
        let write = async move {
            backend.put(Kind::Manifest, &key, bytes).await?;
            Ok(backend.append(vec![record]).await?)
        }
        .boxed()
        .shared();
        self.manifest_writes.insert(digest.clone(), write.clone());
        let (manifest, info, origin) = (Arc::clone(manifest), info.clone(), origin.clone());
        ctx.spawn(write.clone().into_actor(self).map(move |res, act, _| {
            act.manifest_writes.remove(&manifest.digest);
            if res.is_ok() {
                act.index_manifest(manifest, info, origin);
            }
        }));
        write
    }
}

impl Storage {
    /// Indexes a durable manifest (when it is not yet) and keeps its body
    /// in memory as the most recently used.
    fn index_manifest(&mut self, manifest: Arc<Manifest>, info: ManifestInfo, origin: Origin) {
        self.index.insert_manifest(&manifest.digest, info, origin);
        self.bodies.put(manifest);
    }
}

/// Every cached image, optionally only those whose name matches.
#[derive(Message)]
#[rtype(result = "Vec<ImageInfo>")]
pub struct ListImages(pub Option<Regex>);

impl Handler<ListImages> for Storage {
    type Result = MessageResult<ListImages>;

    fn handle(&mut self, msg: ListImages, _: &mut Self::Context) -> Self::Result {
        let mut images = self.index.images(&self.retention.pins);
        if let Some(re) = msg.0 {
            images.retain(|i| re.is_match(&i.name));
        }
        MessageResult(images)
    }
}

/// The repositories with cached content (`registry/repo`), sorted: the
/// catalog.
#[derive(Message)]
#[rtype(result = "Vec<String>")]
pub struct Repositories;

impl Handler<Repositories> for Storage {
    type Result = MessageResult<Repositories>;

    fn handle(&mut self, _: Repositories, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.index.repositories())
    }
}

/// The tags the cache knows in one repository, sorted.
#[derive(Message)]
#[rtype(result = "Vec<Tag>")]
pub struct CachedTags {
    /// Registry host.
    pub registry: RegistryName,
    /// Repository name.
    pub repo: RepoName,
}

impl Handler<CachedTags> for Storage {
    type Result = MessageResult<CachedTags>;

    fn handle(&mut self, msg: CachedTags, _: &mut Self::Context) -> Self::Result {
        let mut tags: Vec<Tag> = self
            .index
            .tags
            .keys()
            .filter(|k| k.registry == msg.registry && k.repo == msg.repo)
            .map(|k| k.tag.clone())
            .collect();
        tags.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        MessageResult(tags)
    }
}

/// The listing the cache keeps for a key, if any.
#[derive(Message)]
#[rtype(result = "Option<Listing>")]
pub struct LookupListing(pub ListingKey);

impl Handler<LookupListing> for Storage {
    type Result = MessageResult<LookupListing>;

    fn handle(&mut self, msg: LookupListing, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.index.listings.get(&msg.0).cloned())
    }
}

/// An upstream answered a listing: kept once its record is appended when
/// its body changed (so that what clients saw survives a restart); an
/// unchanged body only moves `seen`, in memory, like a confirmed tag. Large
/// and empty listings are kept in memory only (`listings::journaled`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StoreListing(pub ListingKey, pub Listing);

impl Handler<StoreListing> for Storage {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(
        &mut self,
        StoreListing(key, listing): StoreListing,
        _: &mut Self::Context,
    ) -> Self::Result {
        let listings = &self.index.listings;
        let unchanged = listings.get(&key).is_some_and(|l| l.body == listing.body);
        if unchanged || !listings::journaled(&key, &listing) {
            self.index.listings.insert(key, listing);
            return Box::pin(fut::ready(()));
        }
        let record = listings::record(&key, &listing);
        let backend = Arc::clone(&self.backend);
        let append = async move { backend.append(vec![record]).await };
        Box::pin(append.into_actor(self).map(move |res, act, _| {
            if let Err(e) = res {
                // Still answered while this process runs.
                slog::warn!(act.log, "could not record a listing"; "error" => %e);
            }
            act.index.listings.insert(key, listing);
        }))
    }
}

/// New pins and size limits (a configuration reload).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetRetention(pub Retention);

impl Handler<SetRetention> for Storage {
    type Result = ();

    fn handle(&mut self, msg: SetRetention, _: &mut Self::Context) {
        if let (Some(local), Some(max)) = (&mut self.local, msg.0.local_max_size) {
            local.set_max(max);
        }
        self.retention = msg.0;
        self.evict_if_needed();
    }
}

/// The tag history (see [`Storage::history`]).
#[derive(Message)]
#[rtype(result = "std::io::Result<Vec<serde_json::Value>>")]
pub struct History;

impl Handler<History> for Storage {
    type Result = ResponseFuture<std::io::Result<Vec<serde_json::Value>>>;

    fn handle(&mut self, _: History, _: &mut Self::Context) -> Self::Result {
        let backend = Arc::clone(&self.backend);
        Box::pin(async move { Storage::history(&*backend).await })
    }
}

/// Removes images (never pinned ones) and what only they reach.
#[derive(Message)]
#[rtype(result = "Result<PruneReport, NotRetentionHolder>")]
pub struct Prune {
    /// Which images.
    pub by: PruneBy,
    /// At most this many images.
    pub count: Option<usize>,
    /// Only report what would be removed.
    pub dry_run: bool,
}

impl Handler<Prune> for Storage {
    type Result = Result<PruneReport, NotRetentionHolder>;

    /// With a shared store, only the replica holding the retention lease
    /// removes anything (a dry run works anywhere).
    fn handle(&mut self, msg: Prune, _: &mut Self::Context) -> Self::Result {
        if !msg.dry_run && !self.retention_lease {
            return Err(NotRetentionHolder);
        }
        let plan = self
            .index
            .plan(&msg.by, msg.count, &self.retention.pins, SystemTime::now());
        if !msg.dry_run {
            self.apply(&plan);
        }
        Ok(PruneReport {
            dry_run: msg.dry_run,
            ..plan.report
        })
    }
}

/// A prune asked of a replica that does not hold the retention lease of
/// its shared store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("another replica holds the retention lease of the shared store: prune there (GET /admin/stats says which holds it: store.retentionLease)")]
pub struct NotRetentionHolder;

/// The state of a shared store, as its last check found it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreStatus {
    /// Whether the last check succeeded.
    pub up: bool,
    /// While failing: since when (unix seconds) and the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<u64>,
    /// The error of the failing check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether this replica holds the retention lease (it alone prunes
    /// and evicts).
    pub retention_lease: bool,
}

/// Counts and sizes of the cache.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    /// Images (tags and untagged roots), when asked for: counting them
    /// walks the manifest graph.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<usize>,
    /// Manifests.
    pub manifests: usize,
    /// Blobs.
    pub blobs: usize,
    /// Bytes of blobs and manifests.
    pub bytes: u64,
    /// With a shared store, its state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreStatus>,
}

/// The cache's [`Stats`]; `images: false` keeps it cheap (probes, metrics).
#[derive(Message)]
#[rtype(result = "Stats")]
pub struct GetStats {
    /// Count images too.
    pub images: bool,
}

impl Handler<GetStats> for Storage {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, msg: GetStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(Stats {
            images: msg.images.then(|| self.index.image_count()),
            manifests: self.index.manifests.len(),
            blobs: self.index.blobs.len(),
            bytes: self.index.total_bytes(),
            store: self.local.as_ref().map(|_| StoreStatus {
                up: self.store_failing.is_none(),
                failing_since: self.store_failing.as_ref().map(|(t, _)| unix(*t)),
                error: self.store_failing.as_ref().map(|(_, e)| e.clone()),
                retention_lease: self.retention_lease,
            }),
        })
    }
}

/// Deletes a plan's manifests and blobs from `backend`.
async fn remove(backend: &dyn Backend, plan: &Plan) -> std::io::Result<()> {
    for d in &plan.manifests {
        backend.delete(Kind::Manifest, d).await?;
    }
    for d in &plan.blobs {
        backend.delete(Kind::Blob, d).await?;
    }
    Ok(())
}
