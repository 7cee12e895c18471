//! The Storage actor: owns the cache root on disk and its in-memory index.
//!
//! Blobs are content-addressed files; manifests are kept byte-exact by
//! digest on disk and in memory; the tag index maps (registry, repo, tag) to
//! a digest and keeps every tag, also when several tags share one digest.

mod blob_writer;
mod journal;
mod layout;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use bytes::Bytes;

pub use blob_writer::BlobWriter;
use journal::{Journal, Record};
pub use layout::Layout;
use layout::{write_atomically, PARTIAL_SUFFIX};

use crate::error::FetchError;
use crate::manifest::Manifest;
use crate::names::{Digest, Reference, RegistryName, RepoName, Tag};

/// Messages queued before senders wait (actix's default of 16 is too small
/// for a server answering many clients).
const MAILBOX_CAPACITY: usize = 4096;

/// A tag's identity in the index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TagKey {
    /// Registry host.
    registry: RegistryName,
    /// Repository name.
    repo: RepoName,
    /// Tag.
    tag: Tag,
}

/// What a tag points at.
#[derive(Debug, Clone)]
struct TagEntry {
    /// The manifest digest.
    digest: Digest,
    /// When the upstream last answered this digest for the tag.
    checked: SystemTime,
}

/// The Storage actor. See the module documentation.
pub struct Storage {
    /// Paths under the cache root.
    layout: Layout,
    /// Append-only record of manifests and tags; shared with blocking writers.
    journal: Arc<Journal>,
    /// Complete blobs and their sizes.
    blobs: HashMap<Digest, u64>,
    /// Every stored manifest, so manifests are answered from memory.
    manifests: HashMap<Digest, Arc<Manifest>>,
    /// Tag index: each tag's digest and when the upstream last confirmed it.
    tags: HashMap<TagKey, TagEntry>,
    /// Where problems found while loading are reported.
    log: slog::Logger,
}

impl Storage {
    /// Opens (creating if needed) the cache at `root`: removes leftover
    /// partial files, indexes blobs, loads and verifies manifests, and
    /// rewrites the journal compactly. Blocking; call at start-up.
    pub fn open(root: impl Into<PathBuf>, log: slog::Logger) -> std::io::Result<Self> {
        let layout = Layout::new(root);
        layout.create_dirs()?;
        remove_partials(&layout.blob_dir())?;
        remove_partials(&layout.manifest_dir())?;
        let blobs = scan_blobs(&layout, &log)?;
        let mut manifests = HashMap::new();
        let mut tags: HashMap<TagKey, TagEntry> = HashMap::new();
        // Tag records where a tag moved to another digest: the tag history.
        let mut history = Vec::new();
        for record in Journal::load(&layout.journal())? {
            match record {
                Record::Manifest { digest, media_type } => {
                    match load_manifest(&layout, &digest, media_type) {
                        Ok(m) => {
                            manifests.insert(m.digest.clone(), Arc::new(m));
                        }
                        Err(e) => {
                            slog::warn!(log, "dropping cached manifest"; "digest" => digest, "reason" => e)
                        }
                    }
                }
                Record::Tag {
                    ref registry,
                    ref repo,
                    ref tag,
                    ref digest,
                    seen,
                } => {
                    if let (Ok(registry), Ok(repo), Ok(tag), Ok(digest)) = (
                        RegistryName::parse(registry),
                        RepoName::parse(repo),
                        Tag::parse(tag),
                        Digest::parse(digest),
                    ) {
                        let key = TagKey {
                            registry,
                            repo,
                            tag,
                        };
                        let checked = UNIX_EPOCH + Duration::from_secs(seen);
                        if tags.get(&key).is_none_or(|e| e.digest != digest) {
                            history.push(record.clone());
                        }
                        tags.insert(key, TagEntry { digest, checked });
                    }
                }
            }
        }
        tags.retain(|_, e| manifests.contains_key(&e.digest));
        let records: Vec<Record> = manifests
            .values()
            .map(|m| manifest_record(m))
            .chain(history)
            .collect();
        let journal = Arc::new(Journal::rewrite(&layout.journal(), &records)?);
        slog::info!(log, "cache loaded"; "root" => %layout.root().display(),
            "blobs" => blobs.len(), "manifests" => manifests.len(), "tags" => tags.len());
        Ok(Self {
            layout,
            journal,
            blobs,
            manifests,
            tags,
            log,
        })
    }
}

impl Actor for Storage {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
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
        self.blobs.get(digest).map(|&size| CachedBlob {
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
        let (digest, checked) = match msg.reference {
            Reference::Digest(d) => (d, None),
            Reference::Tag(tag) => {
                let key = TagKey {
                    registry: msg.registry,
                    repo: msg.repo,
                    tag,
                };
                let entry = self.tags.get(&key)?;
                (entry.digest.clone(), Some(entry.checked))
            }
        };
        let manifest = self.manifests.get(&digest).cloned()?;
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
        if let Some(entry) = self.tags.get_mut(&key).filter(|e| e.digest == msg.digest) {
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
        self.blobs.insert(msg.digest, msg.size);
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
            writer.push(msg.bytes)?;
            writer.finish(Some(len)).await.map(Some)
        };
        Box::pin(store.into_actor(self).map(move |res, act, _| {
            if let Some(size) = res? {
                act.blobs.insert(msg.digest, size);
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
        let digest = msg.manifest.digest.clone();
        let key = msg.tag.map(|tag| TagKey {
            registry: msg.registry,
            repo: msg.repo,
            tag,
        });
        let new_manifest = !self.manifests.contains_key(&digest);
        let new_tag = key
            .as_ref()
            .filter(|k| self.tags.get(*k).is_none_or(|e| e.digest != digest))
            .cloned();
        if let Some(entry) = key.as_ref().and_then(|k| self.tags.get_mut(k)) {
            entry.checked = SystemTime::now();
        }
        let mut records = Vec::new();
        if new_manifest {
            records.push(manifest_record(&msg.manifest));
        }
        if let Some(k) = &new_tag {
            records.push(tag_record(k, &digest));
        }
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
            act.manifests.insert(digest.clone(), msg.manifest);
            if let Some(k) = new_tag {
                let checked = SystemTime::now();
                act.tags.insert(k, TagEntry { digest, checked });
            }
            res
        }))
    }
}

/// The journal line for a stored manifest.
fn manifest_record(m: &Manifest) -> Record {
    Record::Manifest {
        digest: m.digest.to_string(),
        media_type: m.media_type.clone(),
    }
}

/// The journal line for a tag.
fn tag_record(k: &TagKey, digest: &Digest) -> Record {
    let seen = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Record::Tag {
        registry: k.registry.to_string(),
        repo: k.repo.to_string(),
        tag: k.tag.to_string(),
        digest: digest.to_string(),
        seen,
    }
}

/// Reads a manifest file and checks that it still hashes to its name.
fn load_manifest(layout: &Layout, digest: &str, media_type: String) -> Result<Manifest, String> {
    let digest = Digest::parse(digest).map_err(|e| e.to_string())?;
    let bytes = Bytes::from(std::fs::read(layout.manifest(&digest)).map_err(|e| e.to_string())?);
    if Digest::of(&bytes) != digest {
        return Err("content does not match its digest".into());
    }
    Ok(Manifest {
        digest,
        media_type,
        bytes,
    })
}

/// Indexes the complete blobs.
fn scan_blobs(layout: &Layout, log: &slog::Logger) -> std::io::Result<HashMap<Digest, u64>> {
    let mut blobs = HashMap::new();
    for entry in std::fs::read_dir(layout.blob_dir())? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        match Digest::parse(&format!("sha256:{name}")) {
            Ok(d) if entry.file_type()?.is_file() => {
                blobs.insert(d, entry.metadata()?.len());
            }
            _ => slog::warn!(log, "ignoring unexpected file in the blob store"; "file" => %name),
        }
    }
    Ok(blobs)
}

/// Deletes the `*.partial` files a crash left in `dir`.
fn remove_partials(dir: &std::path::Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_string_lossy()
            .ends_with(PARTIAL_SUFFIX)
        {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}
