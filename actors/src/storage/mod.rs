//! The Storage actor: owns the cache root on disk and its in-memory index.
//!
//! Blobs are content-addressed files; manifests are kept byte-exact by
//! digest on disk and in memory; the tag index maps (registry, repo, tag) to
//! a digest and keeps every tag, also when several tags share one digest.

mod blob_writer;
mod index;
mod journal;
mod layout;
mod load;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use bytes::Bytes;
use regex::Regex;

pub use blob_writer::{BlobWriter, VerifiedBlob};
pub use index::{unix, ImageInfo, PruneBy, PruneReport};
use index::{Index, Origin, Plan, TagEntry, TagKey};
use journal::{Journal, Record};
use layout::write_atomically;
pub use layout::Layout;

use crate::error::FetchError;
use crate::manifest::Manifest;
use crate::metrics::METRICS;
use crate::names::{Digest, Reference, RegistryName, RepoName, Tag};

/// Messages queued before senders wait (actix's default of 16 is too small
/// for a server answering many clients).
const MAILBOX_CAPACITY: usize = 4096;
/// How often changed last-pulled times are saved.
const PULLED_FLUSH: Duration = Duration::from_secs(30);
/// Size eviction frees space down to this share of `maxCacheSize`.
const LOW_WATER_PERCENT: u64 = 90;

/// Limits on what the cache keeps.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    /// Images whose name matches are never pruned or evicted.
    pub pins: Vec<Regex>,
    /// Evict least recently pulled images above this many bytes.
    pub max_size: Option<u64>,
}

/// The Storage actor. See the module documentation.
pub struct Storage {
    /// Paths under the cache root.
    layout: Layout,
    /// Append-only record of manifests and tags; shared with blocking writers.
    journal: Arc<Journal>,
    /// Everything cached, in memory.
    index: Index,
    /// Pins and size limit.
    retention: Retention,
    /// Last-pulled times changed since they were saved.
    pulled_dirty: bool,
    /// Where problems are reported.
    log: slog::Logger,
}

impl Storage {
    /// Opens (creating if needed) the cache at `root`: removes leftover
    /// partial files, indexes blobs, loads and verifies manifests, and
    /// rewrites the journal compactly. Blocking; call at start-up.
    pub fn open(
        root: impl Into<PathBuf>,
        retention: Retention,
        log: slog::Logger,
    ) -> std::io::Result<Self> {
        let layout = Layout::new(root);
        layout.create_dirs()?;
        let index = load::load(&layout, true, &log)?;
        let journal = Arc::new(Journal::rewrite(&layout.journal(), &index.records())?);
        slog::info!(log, "cache loaded"; "root" => %layout.root().display(),
            "blobs" => index.blobs.len(), "manifests" => index.manifests.len(), "tags" => index.tags.len());
        Ok(Self {
            layout,
            journal,
            index,
            retention,
            pulled_dirty: false,
            log,
        })
    }

    /// Lists the images of the cache at `root` without changing anything
    /// (safe while a server uses it). With `history`, adds the tag journal.
    pub fn list(
        root: impl Into<PathBuf>,
        pins: &[Regex],
        log: &slog::Logger,
    ) -> std::io::Result<Vec<ImageInfo>> {
        let layout = Layout::new(root);
        Ok(load::load(&layout, false, log)?.images(pins))
    }

    /// The tag journal of the cache at `root`: every digest each tag
    /// pointed to, and when (JSON lines as stored).
    pub fn history(root: impl Into<PathBuf>) -> std::io::Result<Vec<serde_json::Value>> {
        let layout = Layout::new(root);
        let records = Journal::load(&layout.journal())?;
        Ok(records
            .into_iter()
            .filter(|r| !matches!(r, Record::Manifest { .. }))
            .filter_map(|r| serde_json::to_value(r).ok())
            .collect())
    }

    /// Prunes the cache at `root` while no server runs (the caller checks):
    /// removes files and rewrites the journal before returning.
    pub fn prune_offline(
        root: impl Into<PathBuf>,
        retention: &Retention,
        request: Prune,
        log: &slog::Logger,
    ) -> std::io::Result<PruneReport> {
        let layout = Layout::new(root);
        layout.create_dirs()?;
        let mut index = load::load(&layout, true, log)?;
        let now = SystemTime::now();
        let plan = index.plan(&request.by, request.count, &retention.pins, now);
        if !request.dry_run {
            index.forget(&plan, now);
            for f in plan_files(&layout, &plan) {
                std::fs::remove_file(f)?;
            }
            Journal::rewrite(&layout.journal(), &index.records())?;
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
    /// disk on the blocking pool (readers holding a file keep reading it).
    fn apply(&mut self, plan: &Plan) {
        if plan.report.images.is_empty() && plan.manifests.is_empty() {
            return;
        }
        self.index.forget(plan, SystemTime::now());
        let files = plan_files(&self.layout, plan);
        let (journal, path, records, log) = (
            Arc::clone(&self.journal),
            self.layout.journal(),
            self.index.records(),
            self.log.clone(),
        );
        tokio::task::spawn_blocking(move || {
            for f in files {
                if let Err(e) = std::fs::remove_file(&f) {
                    slog::warn!(log, "could not delete"; "file" => %f.display(), "error" => %e);
                }
            }
            if let Err(e) = journal.replace(&path, &records) {
                slog::error!(log, "could not rewrite the journal"; "error" => %e);
            }
        });
    }

    /// Evicts least recently pulled images when the cache is over its size limit.
    fn evict_if_needed(&mut self) {
        let Some(max) = self.retention.max_size else {
            return;
        };
        if self.index.total_bytes() <= max {
            return;
        }
        let low_water = max / 100 * LOW_WATER_PERCENT;
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
        ctx.run_interval(PULLED_FLUSH, |act, _| act.flush_pulled());
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        self.flush_pulled();
        Running::Stop
    }
}

impl Storage {
    /// Saves last-pulled times if they changed (one small file, in the background).
    fn flush_pulled(&mut self) {
        if !self.pulled_dirty {
            return;
        }
        self.pulled_dirty = false;
        let (layout, pulled, log) = (
            self.layout.clone(),
            self.index.pulled.clone(),
            self.log.clone(),
        );
        tokio::task::spawn_blocking(move || {
            if let Err(e) = load::write_pulled(&layout, &pulled) {
                slog::warn!(log, "could not save last-pulled times"; "error" => %e);
            }
        });
    }
}

/// Saves last-pulled times now, before the process exits (journal records
/// are synced as they are written).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for Storage {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Self::Context) {
        if std::mem::take(&mut self.pulled_dirty) {
            if let Err(e) = load::write_pulled(&self.layout, &self.index.pulled) {
                slog::warn!(self.log, "could not save last-pulled times"; "error" => %e);
            }
        }
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
    fn cached_blob(&self, digest: &Digest) -> Option<CachedBlob> {
        self.index.blobs.get(digest).map(|&size| CachedBlob {
            path: self.layout.blob(digest),
            size,
        })
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
    type Result = Option<CachedManifest>;

    fn handle(&mut self, msg: LookupManifest, _: &mut Self::Context) -> Self::Result {
        let found = self.lookup(msg)?;
        self.touch(&found.manifest.digest);
        Some(found)
    }
}

impl Storage {
    /// The manifest a reference names, and for a tag when it was confirmed.
    fn lookup(&self, msg: LookupManifest) -> Option<CachedManifest> {
        let (digest, checked) = match msg.reference {
            Reference::Digest(d) => (d, None),
            Reference::Tag(tag) => {
                let key = TagKey {
                    registry: msg.registry,
                    repo: msg.repo,
                    tag,
                };
                let entry = self.index.tags.get(&key)?;
                (entry.digest.clone(), Some(entry.checked))
            }
        };
        let manifest = self.index.manifests.get(&digest).cloned()?;
        Some(CachedManifest { manifest, checked })
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

/// What starting a blob fetch found: already cached (another fetch
/// finished first), or a fresh writer.
#[derive(Debug)]
pub enum BlobStart {
    /// Complete already; serve it.
    Cached(CachedBlob),
    /// Stream the upstream body into this writer.
    Writer(Box<BlobWriter>),
}

/// Begins storing a blob unless it is already complete.
#[derive(Message)]
#[rtype(result = "Result<BlobStart, FetchError>")]
pub struct BeginBlob(pub Digest);

impl Handler<BeginBlob> for Storage {
    type Result = Result<BlobStart, FetchError>;

    fn handle(&mut self, msg: BeginBlob, _: &mut Self::Context) -> Self::Result {
        if let Some(cached) = self.cached_blob(&msg.0) {
            return Ok(BlobStart::Cached(cached));
        }
        Ok(BlobStart::Writer(Box::new(BlobWriter::create(
            &self.layout,
            msg.0,
        )?)))
    }
}

/// A [`BlobWriter`] finished: the blob is complete at its final path.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BlobStored {
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
}

impl Handler<BlobStored> for Storage {
    type Result = ();

    fn handle(&mut self, msg: BlobStored, _: &mut Self::Context) {
        self.index.blobs.insert(msg.digest, msg.size);
        self.evict_if_needed();
    }
}

/// Stores a whole blob held in memory (small embedded content), verified
/// like any download.
#[derive(Message)]
#[rtype(result = "Result<(), FetchError>")]
pub struct PutBlob {
    /// The digest the bytes must hash to.
    pub digest: Digest,
    /// The content.
    pub bytes: Bytes,
}

impl Handler<PutBlob> for Storage {
    type Result = ResponseActFuture<Self, Result<(), FetchError>>;

    fn handle(&mut self, msg: PutBlob, _: &mut Self::Context) -> Self::Result {
        let writer = match self.cached_blob(&msg.digest) {
            Some(_) => None,
            None => Some(BlobWriter::create(&self.layout, msg.digest.clone())),
        };
        let store = async move {
            let Some(writer) = writer else {
                return Ok(None);
            };
            let mut writer = writer?;
            let len = msg.bytes.len() as u64;
            writer.push(vec![msg.bytes]).await?;
            writer.verify(Some(len)).await?.persist().await.map(Some)
        };
        Box::pin(store.into_actor(self).map(move |res, act, _| {
            if let Some(size) = res? {
                act.index.blobs.insert(msg.digest, size);
            }
            Ok(())
        }))
    }
}

/// Stores a verified manifest and, when fetched by tag, points the tag at it.
#[derive(Message)]
#[rtype(result = "Result<(), FetchError>")]
pub struct PutManifest {
    /// Registry host.
    pub registry: RegistryName,
    /// Repository name.
    pub repo: RepoName,
    /// The tag it was fetched by, if any.
    pub tag: Option<Tag>,
    /// The verified manifest.
    pub manifest: Arc<Manifest>,
}

impl Handler<PutManifest> for Storage {
    type Result = ResponseActFuture<Self, Result<(), FetchError>>;

    fn handle(&mut self, msg: PutManifest, _: &mut Self::Context) -> Self::Result {
        let now = SystemTime::now();
        let digest = msg.manifest.digest.clone();
        let origin = Origin {
            registry: msg.registry.to_string(),
            repo: msg.repo.to_string(),
            stored: now,
        };
        let key = msg.tag.map(|tag| TagKey {
            registry: msg.registry,
            repo: msg.repo,
            tag,
        });
        let new_manifest = !self.index.manifests.contains_key(&digest);
        let new_tag = key
            .as_ref()
            .filter(|k| self.index.tags.get(*k).is_none_or(|e| e.digest != digest))
            .cloned();
        if let Some(entry) = key.as_ref().and_then(|k| self.index.tags.get_mut(k)) {
            entry.checked = now;
        }
        let mut records = Vec::new();
        if new_manifest {
            records.push(Record::Manifest {
                digest: digest.to_string(),
                media_type: msg.manifest.media_type.clone(),
                registry: origin.registry.clone(),
                repo: origin.repo.clone(),
                stored: unix(now),
            });
        }
        let tag_record = new_tag.as_ref().map(|k| Record::Tag {
            registry: k.registry.to_string(),
            repo: k.repo.to_string(),
            tag: k.tag.to_string(),
            digest: digest.to_string(),
            seen: unix(now),
        });
        records.extend(tag_record.clone());
        let (journal, path, manifest) = (
            Arc::clone(&self.journal),
            self.layout.manifest(&digest),
            Arc::clone(&msg.manifest),
        );
        let persist = async move {
            if records.is_empty() {
                return Ok(());
            }
            tokio::task::spawn_blocking(move || {
                if new_manifest {
                    write_atomically(&path, &manifest.bytes)?;
                }
                journal.append(&records)
            })
            .await
            .map_err(|e| FetchError::Storage(e.to_string()))?
            .map_err(FetchError::from)
        };
        Box::pin(persist.into_actor(self).map(move |res, act, _| {
            if let Err(e) = &res {
                slog::error!(act.log, "storing manifest failed"; "digest" => %digest, "error" => %e);
                return res;
            }
            act.touch(&digest);
            if new_manifest {
                act.index.origins.insert(digest.clone(), origin);
                act.index.manifests.insert(digest.clone(), msg.manifest);
            }
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

/// Removes images (never pinned ones) and what only they reach.
#[derive(Message)]
#[rtype(result = "PruneReport")]
pub struct Prune {
    /// Which images.
    pub by: PruneBy,
    /// At most this many images.
    pub count: Option<usize>,
    /// Only report what would be removed.
    pub dry_run: bool,
}

impl Handler<Prune> for Storage {
    type Result = MessageResult<Prune>;

    fn handle(&mut self, msg: Prune, _: &mut Self::Context) -> Self::Result {
        let plan = self
            .index
            .plan(&msg.by, msg.count, &self.retention.pins, SystemTime::now());
        if !msg.dry_run {
            self.apply(&plan);
        }
        MessageResult(PruneReport {
            dry_run: msg.dry_run,
            ..plan.report
        })
    }
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
        })
    }
}

/// The files a plan deletes.
fn plan_files(layout: &Layout, plan: &Plan) -> Vec<PathBuf> {
    let manifests = plan.manifests.iter().map(|d| layout.manifest(d));
    manifests
        .chain(plan.blobs.iter().map(|d| layout.blob(d)))
        .collect()
}
