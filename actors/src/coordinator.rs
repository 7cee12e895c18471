//! The PullCoordinator actor: single-flight for every upstream fetch.
//!
//! Manifests are keyed by (registry, repo, reference), blobs by (registry,
//! digest): a client never waits on, or fails with, a fetch from a
//! registry other than the one it asked. Blobs are cached by digest alone
//! (base layers are shared across images and registries): fetches of one
//! digest from two registries may run at once, and the first verified one
//! is committed (Storage makes the second commit a no-op). Handlers are
//! synchronous: they join an existing flight or register a new one and spawn
//! its future on the actor's context; no handler awaits network or disk I/O.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use futures::future::{FutureExt, LocalBoxFuture, Shared};
use futures::StreamExt;
use tokio::sync::watch;

use crate::download::{BlobDownload, Progress};
use crate::error::FetchError;
use crate::listing::{tags_body, Listed, Listing, ListingKey};
use crate::manifest::Manifest;
use crate::metrics::METRICS;
use crate::names::{Digest, Reference, RegistryName, RepoName};
use crate::ranged;
use crate::storage::{
    BeginBlob, BlobStart, BlobWriter, CommitBlob, CommitManifest, LookupBlob, OpenStoredBlob,
    Storage, StoreListing, Stored, TagConfirmed,
};
use crate::upstream::guard::HostRules;
use crate::upstream::{
    BlobBody, GetHealth, GetManifest, GetReferrers, HeadManifest, ListTags, OpenBlob,
    ParallelFetch, ProxyRules, Timeouts, TlsError, UpstreamHealth, UpstreamRegistry,
    UpstreamSettings,
};

/// A manifest flight's identity.
type ManifestKey = (RegistryName, RepoName, Reference);
/// A fetch every waiter polls a clone of.
type SharedFetch<T> = Shared<LocalBoxFuture<'static, Result<T, FetchError>>>;

/// Bounds on the upstream fetches the coordinator runs.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    /// Largest blob fetched; a longer body is cut and not stored.
    pub max_blob_size: u64,
    /// Most fetches (manifests and blobs) in flight at once.
    pub max_fetches: usize,
    /// Most fetches in flight at once from one registry.
    pub max_fetches_per_registry: usize,
}

/// The PullCoordinator actor. See the module documentation.
pub struct PullCoordinator {
    /// Where fetched content is persisted.
    storage: Addr<Storage>,
    /// Bounds on fetches.
    limits: FetchLimits,
    /// Upstream actors, started on first use.
    upstreams: Upstreams,
    /// Manifest fetches in flight.
    manifests: HashMap<ManifestKey, Flight<SharedFetch<Arc<Manifest>>>>,
    /// Blob fetches in flight, by registry and digest.
    blobs: HashMap<(RegistryName, Digest), Flight<BlobDownload>>,
    /// Listings being asked of upstreams; they count toward the fetch
    /// limits like fetches.
    lists: HashMap<ListingKey, Flight<SharedFetch<Listing>>>,
    /// Failed blob fetches are logged here (their clients may already
    /// have a 200 and only see the transfer cut).
    log: slog::Logger,
    /// The thread the coordinator runs on; kept for the actor's lifetime.
    _thread: Arbiter,
}

impl PullCoordinator {
    /// Starts the coordinator on a thread of its own, for the configured
    /// upstreams; other registries are reached with
    /// [`UpstreamSettings::unlisted`]. Fails on unusable TLS settings.
    pub fn start(
        storage: Addr<Storage>,
        configured: Vec<UpstreamSettings>,
        unlisted: Unlisted,
        limits: FetchLimits,
        log: slog::Logger,
    ) -> Result<Addr<Self>, TlsError> {
        let upstreams = Upstreams::new(configured, unlisted, log.clone())?;
        let arbiter = Arbiter::new();
        Ok(Self::start_in_arbiter(&arbiter.handle(), move |_| Self {
            storage,
            limits,
            upstreams,
            manifests: HashMap::new(),
            blobs: HashMap::new(),
            lists: HashMap::new(),
            log,
            _thread: arbiter,
        }))
    }
}

impl PullCoordinator {
    /// Whether a new fetch from `registry` may start now.
    fn admit(&self, registry: &RegistryName) -> Result<(), FetchError> {
        if self.manifests.len() + self.blobs.len() + self.lists.len() >= self.limits.max_fetches {
            return Err(FetchError::Busy("maxFetches"));
        }
        let manifests = self.manifests.keys().filter(|(r, ..)| r == registry);
        let blobs = self.blobs.keys().filter(|(r, _)| r == registry);
        let lists = self.lists.keys().filter(|k| &k.registry == registry);
        if manifests.count() + blobs.count() + lists.count() >= self.limits.max_fetches_per_registry
        {
            return Err(FetchError::Busy("maxFetchesPerRegistry"));
        }
        Ok(())
    }
}

impl PullCoordinator {
    /// Joins the flight of `key` in the map `flights` selects, or starts
    /// the future `fetch` makes as a new one (within the fetch limits),
    /// removed from the map when it ends.
    fn single_flight<K, T>(
        &mut self,
        ctx: &mut Context<Self>,
        flights: fn(&mut Self) -> &mut HashMap<K, Flight<SharedFetch<T>>>,
        key: K,
        registry: &RegistryName,
        fetch: impl FnOnce(&mut Self) -> LocalBoxFuture<'static, Result<T, FetchError>>,
    ) -> ResponseFuture<Result<Joined<T>, FetchError>>
    where
        K: Eq + std::hash::Hash + Clone + Unpin + 'static,
        T: Clone + 'static,
    {
        if let Some(flight) = flights(self).get_mut(&key) {
            let flight = flight.join();
            return Box::pin(async move {
                flight.await.map(|value| Joined {
                    value,
                    joined: true,
                })
            });
        }
        if let Err(e) = self.admit(registry) {
            return Box::pin(async { Err(e) });
        }
        let flight = fetch(self).shared();
        flights(self).insert(key.clone(), Flight::start(flight.clone()));
        ctx.spawn(flight.clone().into_actor(self).map(move |_, act, _| {
            flights(act).remove(&key).into_iter().for_each(Flight::end);
        }));
        Box::pin(async move {
            flight.await.map(|value| Joined {
                value,
                joined: false,
            })
        })
    }
}

impl Actor for PullCoordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
    }
}

/// One fetch in flight and how many requests it answers.
struct Flight<T> {
    /// What waiters follow.
    value: T,
    /// Requests answered by this fetch so far (the first included).
    waiters: u64,
}

impl<T: Clone> Flight<T> {
    /// A new fetch, counted in flight.
    fn start(value: T) -> Self {
        METRICS.fetches_in_flight.inc();
        Self { value, waiters: 1 }
    }

    /// Another request joins: a clone of what it follows.
    fn join(&mut self) -> T {
        self.waiters += 1;
        self.value.clone()
    }

    /// The fetch ended: records how many it served.
    fn end(self) {
        METRICS.fetches_in_flight.dec();
        METRICS.fetch_waiters.observe(self.waiters as f64);
    }
}

/// The answer to a fetch request: the value, and whether the request joined
/// a fetch another client had started.
#[derive(Debug)]
pub struct Joined<T> {
    /// The manifest or the blob download.
    pub value: T,
    /// True when coalesced with a fetch already in flight.
    pub joined: bool,
}

/// Fetch a manifest from upstream, verify it and store it.
#[derive(Message)]
#[rtype(result = "Result<Joined<Arc<Manifest>>, FetchError>")]
pub struct FetchManifest {
    /// Registry host.
    pub registry: RegistryName,
    /// Repository.
    pub repo: RepoName,
    /// Tag or digest.
    pub reference: Reference,
    /// For a cached tag being revalidated: what the cache holds. The
    /// upstream is then asked with a HEAD first, and the manifest is fetched
    /// only if the tag moved.
    pub cached: Option<Arc<Manifest>>,
}

impl Handler<FetchManifest> for PullCoordinator {
    type Result = ResponseFuture<Result<Joined<Arc<Manifest>>, FetchError>>;

    fn handle(&mut self, msg: FetchManifest, ctx: &mut Self::Context) -> Self::Result {
        let key = (
            msg.registry.clone(),
            msg.repo.clone(),
            msg.reference.clone(),
        );
        let registry = msg.registry.clone();
        self.single_flight(
            ctx,
            |c| &mut c.manifests,
            key,
            &registry,
            |c| {
                let upstream = c.upstreams.get(&msg.registry);
                fetch_manifest(c.storage.clone(), upstream, msg, c.log.clone()).boxed_local()
            },
        )
    }
}

/// Fetches, verifies and stores one manifest.
async fn fetch_manifest(
    storage: Addr<Storage>,
    upstream: Addr<UpstreamRegistry>,
    msg: FetchManifest,
    log: slog::Logger,
) -> Result<Arc<Manifest>, FetchError> {
    let FetchManifest {
        registry,
        repo,
        reference,
        cached,
    } = msg;
    if let (Some(cached), Reference::Tag(tag)) = (cached, &reference) {
        let head = HeadManifest {
            repo: repo.clone(),
            reference: reference.clone(),
        };
        if upstream.send(head).await?? == Some(cached.digest.clone()) {
            let confirmed = TagConfirmed {
                registry,
                repo,
                tag: tag.clone(),
                digest: cached.digest.clone(),
            };
            storage.send(confirmed).await?;
            return Ok(cached);
        }
    }
    let resp = upstream
        .send(GetManifest {
            repo: repo.clone(),
            reference: reference.clone(),
        })
        .await??;
    let manifest = Arc::new(Manifest::verify(
        &reference,
        resp.bytes,
        resp.digest.as_deref(),
    )?);
    let header = resp
        .content_type
        .as_deref()
        .map(|c| c.split(';').next().unwrap_or(c).trim());
    if let Some(header) = header.filter(|h| !h.eq_ignore_ascii_case(&manifest.media_type)) {
        slog::warn!(log, "ignoring an upstream Content-Type that disagrees with the manifest";
            "registry" => %registry, "digest" => %manifest.digest,
            "content_type" => header, "media_type" => &manifest.media_type);
    }
    let tag = match reference {
        Reference::Tag(t) => Some(t),
        Reference::Digest(_) => None,
    };
    let stored = storage
        .send(CommitManifest {
            registry,
            repo,
            tag,
            manifest: Arc::clone(&manifest),
        })
        .await?;
    // Verified bytes are served even when the disk cannot keep them; a
    // manifest Storage refuses (beyond the nesting bounds) is not served.
    match stored {
        Err(refused @ FetchError::BadResponse(_)) => return Err(refused),
        Err(e) => count_write_failure(&e),
        Ok(()) => {}
    }
    Ok(manifest)
}

/// The health of every upstream contacted so far.
#[derive(Message)]
#[rtype(result = "Vec<UpstreamHealth>")]
pub struct UpstreamsHealth;

impl Handler<UpstreamsHealth> for PullCoordinator {
    type Result = ResponseFuture<Vec<UpstreamHealth>>;

    fn handle(&mut self, _: UpstreamsHealth, _: &mut Self::Context) -> Self::Result {
        let asks: Vec<_> = self
            .upstreams
            .started
            .values()
            .map(|a| a.send(GetHealth))
            .collect();
        Box::pin(async move {
            let mut all: Vec<UpstreamHealth> = futures::future::join_all(asks)
                .await
                .into_iter()
                .flatten()
                .collect();
            all.sort_by(|a, b| a.registry.cmp(&b.registry));
            all
        })
    }
}

/// Ask the upstream for a listing (tags, referrers), keep it, and answer
/// it: one request upstream for every client asking the same listing at
/// once, counted in the fetch limits. A referrers listing of an upstream
/// without the referrers API is kept and answered with an empty body.
#[derive(Message)]
#[rtype(result = "Result<Joined<Listing>, FetchError>")]
pub struct FetchListing(pub ListingKey);

impl Handler<FetchListing> for PullCoordinator {
    type Result = ResponseFuture<Result<Joined<Listing>, FetchError>>;

    fn handle(&mut self, FetchListing(key): FetchListing, ctx: &mut Self::Context) -> Self::Result {
        let registry = key.registry.clone();
        self.single_flight(
            ctx,
            |c| &mut c.lists,
            key.clone(),
            &registry,
            |c| {
                let upstream = c.upstreams.get(&key.registry);
                fetch_listing(c.storage.clone(), upstream, key).boxed_local()
            },
        )
    }
}

/// Asks the upstream for one listing and keeps the answer.
async fn fetch_listing(
    storage: Addr<Storage>,
    upstream: Addr<UpstreamRegistry>,
    key: ListingKey,
) -> Result<Listing, FetchError> {
    let repo = key.repo.clone();
    let body = match &key.listed {
        Listed::Tags => tags_body(upstream.send(ListTags { repo }).await??),
        Listed::Referrers(subject) => {
            let subject = subject.clone();
            match upstream.send(GetReferrers { repo, subject }).await? {
                Err(FetchError::NotFound) => Bytes::new(),
                answer => answer?,
            }
        }
    };
    let listing = Listing {
        body,
        seen: std::time::SystemTime::now(),
    };
    storage.send(StoreListing(key, listing.clone())).await?;
    Ok(listing)
}

/// New upstream settings and limits (a configuration reload). Fetches in
/// flight finish with the actors they started with; new fetches start
/// actors with the new settings (and no cached tokens). Bad TLS settings
/// refuse the whole change.
#[derive(Message)]
#[rtype(result = "Result<(), TlsError>")]
pub struct Reconfigure {
    /// The configured registries.
    pub configured: Vec<UpstreamSettings>,
    /// How unlisted registries are reached.
    pub unlisted: Unlisted,
    /// Fetch limits.
    pub limits: FetchLimits,
}

impl Handler<Reconfigure> for PullCoordinator {
    type Result = Result<(), TlsError>;

    fn handle(&mut self, msg: Reconfigure, _: &mut Self::Context) -> Self::Result {
        self.upstreams.reconfigure(msg.configured, msg.unlisted)?;
        self.limits = msg.limits;
        Ok(())
    }
}

/// Resolves once every fetch in flight now has ended (graceful shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

impl Handler<Drain> for PullCoordinator {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _: &mut Self::Context) -> Self::Result {
        let manifests: Vec<_> = self.manifests.values().map(|f| f.value.clone()).collect();
        let blobs: Vec<_> = self.blobs.values().map(|f| f.value.clone()).collect();
        Box::pin(async move {
            futures::future::join_all(manifests).await;
            futures::future::join_all(blobs.into_iter().map(BlobDownload::finished)).await;
        })
    }
}

/// Fetch a blob into the cache, or join the fetch already running.
#[derive(Message)]
#[rtype(result = "Joined<BlobDownload>")]
pub struct FetchBlob {
    /// Registry the client asked through.
    pub registry: RegistryName,
    /// Repository the client asked through.
    pub repo: RepoName,
    /// The blob.
    pub digest: Digest,
    /// Whether the upstream may be asked; without it (air-gapped) only a
    /// shared store fills the local directory.
    pub upstream: bool,
}

impl Handler<FetchBlob> for PullCoordinator {
    type Result = MessageResult<FetchBlob>;

    fn handle(&mut self, msg: FetchBlob, ctx: &mut Self::Context) -> Self::Result {
        let key = (msg.registry.clone(), msg.digest.clone());
        if let Some(download) = self.blobs.get_mut(&key) {
            return MessageResult(Joined {
                value: download.join(),
                joined: true,
            });
        }
        if let Err(e) = self.admit(&msg.registry) {
            return MessageResult(Joined {
                value: BlobDownload::failed(e),
                joined: false,
            });
        }
        let (tx, download) = BlobDownload::new();
        self.blobs
            .insert(key.clone(), Flight::start(download.clone()));
        let upstream = msg.upstream.then(|| self.upstreams.get(&msg.registry));
        let log = self.log.new(slog::o!("digest" => msg.digest.to_string()));
        let fetch = BlobFetch {
            storage: self.storage.clone(),
            upstream,
            parallel: self.upstreams.parallel(&msg.registry),
            max_size: self.limits.max_blob_size,
            tx,
        }
        .run(msg.repo, msg.digest, log);
        ctx.spawn(fetch.into_actor(self).map(move |(), act, _| {
            act.blobs.remove(&key).into_iter().for_each(Flight::end);
        }));
        MessageResult(Joined {
            value: download,
            joined: false,
        })
    }
}

/// Counts a cache write that failed (disk full, I/O error); `e` is the
/// error of a write, so a storage error here is never a shutdown or a read.
fn count_write_failure(e: &FetchError) {
    if matches!(e, FetchError::Storage(_)) {
        METRICS.cache_write_failures.inc();
    }
}

/// One blob fetch: where it stores, where it fetches from, its size bound
/// and the progress it publishes.
struct BlobFetch {
    /// The cache.
    storage: Addr<Storage>,
    /// The registry's actor, when the upstream may be asked.
    upstream: Option<Addr<UpstreamRegistry>>,
    /// Whether large blobs of the registry are fetched in parallel ranges.
    parallel: Option<ParallelFetch>,
    /// Largest body accepted.
    max_size: u64,
    /// Progress for followers.
    tx: watch::Sender<Progress>,
}

impl BlobFetch {
    /// Runs the fetch, publishing its progress; a failure is published too
    /// (once the bytes are verified, as why they are not stored).
    async fn run(self, repo: RepoName, digest: Digest, log: slog::Logger) {
        if let Err(e) = self.stream(repo, digest, &log).await {
            slog::warn!(log, "blob fetch failed"; "error" => %e);
            self.tx.send_modify(|p| match p {
                Progress::Verified { unstored, .. } => *unstored = Some(e),
                _ => *p = Progress::Failed(e),
            });
        }
    }

    /// Streams the body (from a shared store that has the blob, else from
    /// upstream) into the local directory, hashing as it lands, and
    /// publishes how far followers may read. Nothing is created on disk
    /// before the source has answered.
    async fn stream(
        &self,
        repo: RepoName,
        digest: Digest,
        log: &slog::Logger,
    ) -> Result<(), FetchError> {
        if let Some(cached) = self.storage.send(LookupBlob(digest.clone())).await? {
            return self.complete(cached.path, cached.size);
        }
        // A shared store that fails is passed over for the upstream.
        let stored = self.storage.send(OpenStoredBlob(digest.clone())).await?;
        let stored = stored.unwrap_or_else(|e| {
            METRICS.store_errors.inc();
            slog::warn!(log, "reading a blob from the shared store failed"; "error" => %e);
            None
        });
        let mut body = match (stored, &self.upstream) {
            (Some(stored), _) => body_of(stored),
            (None, None) => return Err(FetchError::NotFound),
            (None, Some(upstream)) => {
                upstream
                    .send(OpenBlob {
                        repo: repo.clone(),
                        digest: digest.clone(),
                        range: self.parallel.map(|p| 0..p.min_size),
                    })
                    .await??
            }
        };
        if let Some(size) = body.total.filter(|&s| s > self.max_size) {
            return Err(too_large(size, self.max_size));
        }
        let mut writer = match self
            .storage
            .send(BeginBlob(digest.clone()))
            .await?
            .inspect_err(count_write_failure)?
        {
            BlobStart::Cached(c) => return self.complete(c.path, c.size),
            BlobStart::Writer(w) => w,
        };
        let file = writer.file();
        self.tx.send_replace(Progress::Receiving {
            size: body.total,
            written: 0,
            file: Arc::clone(&file),
        });
        // A larger blob than the first answer holds: the rest in parallel.
        let segments: Vec<ranged::Segment> =
            match (self.parallel, &self.upstream, body.total, body.size) {
                (Some(p), Some(upstream), Some(total), Some(first)) if first < total => {
                    writer.reserve(total);
                    ranged::plan(p, first, total)
                        .into_iter()
                        .map(|range| {
                            let last = range.end == total;
                            let (repo, digest) = (repo.clone(), digest.clone());
                            ranged::start(upstream.clone(), repo, digest, range, file.clone(), last)
                        })
                        .collect()
                }
                _ => Vec::new(),
            };
        while let Some(batch) = body.chunks.recv().await {
            writer
                .push(batch?)
                .await
                .map_err(FetchError::from)
                .inspect_err(count_write_failure)?;
            if let Some(size) = body.size.filter(|&s| writer.received() > s) {
                return Err(FetchError::BadResponse(format!(
                    "upstream sent more than the announced {size} bytes"
                )));
            }
            if writer.received() > self.max_size {
                return Err(too_large(writer.received(), self.max_size));
            }
            self.publish(writer.written());
        }
        if !segments.is_empty() {
            if Some(writer.received()) != body.size {
                return Err(FetchError::BadResponse(
                    "the first ranged answer ended early".into(),
                ));
            }
            writer
                .flush()
                .map_err(FetchError::from)
                .inspect_err(count_write_failure)?;
            for segment in segments {
                self.follow(segment, &mut writer).await?;
            }
        }
        let verified = writer
            .verify(body.total)
            .await
            .inspect_err(count_write_failure)?;
        // Followers may finish now; Storage fsyncs and renames after, and
        // its index claims the blob only once it is durable.
        self.tx.send_replace(Progress::Verified {
            size: verified.size(),
            file: Arc::clone(&file),
            unstored: None,
        });
        let size = self
            .storage
            .send(CommitBlob(verified))
            .await?
            .inspect_err(count_write_failure)?;
        self.tx.send_replace(Progress::Complete { size, file });
        Ok(())
    }

    /// Publishes how many bytes followers may read.
    fn publish(&self, now: u64) {
        self.tx.send_modify(|p| {
            if let Progress::Receiving { written, .. } = p {
                *written = now;
            }
        });
    }

    /// Hashes and publishes one parallel segment's bytes in order as they
    /// land; its held-back final batch (the blob's last) goes to the
    /// writer, which releases it after verification.
    async fn follow(
        &self,
        mut segment: ranged::Segment,
        writer: &mut BlobWriter,
    ) -> Result<(), FetchError> {
        let mut absorbed = 0;
        loop {
            let state = segment.state.borrow_and_update().clone();
            if state.landed > absorbed {
                writer
                    .absorb(state.landed - absorbed)
                    .await
                    .map_err(FetchError::from)
                    .inspect_err(count_write_failure)?;
                absorbed = state.landed;
                self.publish(writer.written());
            }
            match state.done {
                Some(Ok(held)) => {
                    if !held.is_empty() {
                        writer
                            .push(held)
                            .await
                            .map_err(FetchError::from)
                            .inspect_err(count_write_failure)?;
                    }
                    return Ok(());
                }
                Some(Err(e)) => return Err(e),
                _ => {
                    if segment.state.changed().await.is_err() {
                        return Err(FetchError::Stopping);
                    }
                }
            }
        }
    }

    /// Publishes a blob that is in the cache already.
    fn complete(&self, path: std::path::PathBuf, size: u64) -> Result<(), FetchError> {
        let file = Arc::new(File::open(path)?);
        self.tx.send_replace(Progress::Complete { size, file });
        Ok(())
    }
}

/// Chunks of a blob read from the store queued ahead of its writer.
const STORED_CHUNKS: usize = 16;

/// A blob read from the store as a body like an upstream's: its chunks
/// forwarded through a bounded channel.
fn body_of(stored: Stored) -> BlobBody {
    let (tx, chunks) = tokio::sync::mpsc::channel(STORED_CHUNKS);
    let mut bytes = stored.bytes;
    actix::spawn(async move {
        while let Some(chunk) = bytes.next().await {
            let chunk = chunk.map(|c| vec![c]).map_err(FetchError::from);
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
    });
    BlobBody {
        size: Some(stored.size),
        start: 0,
        total: Some(stored.size),
        chunks,
    }
}

/// The error for a blob over `maxBlobSize`.
fn too_large(size: u64, max: u64) -> FetchError {
    FetchError::BadResponse(format!(
        "blob of {size} bytes or more exceeds maxBlobSize ({max} bytes)"
    ))
}

/// Each configured registry's settings with its TLS configuration, built
/// up front so that bad TLS settings are refused at once.
type Configured = HashMap<RegistryName, (UpstreamSettings, Arc<rustls::ClientConfig>)>;

/// [`Configured`] from settings.
fn tls_configs(configured: Vec<UpstreamSettings>) -> Result<Configured, TlsError> {
    configured
        .into_iter()
        .map(|s| s.tls.client_config().map(|tls| (s.name.clone(), (s, tls))))
        .collect()
}

/// How registries that the configuration does not list are reached.
#[derive(Debug, Clone)]
pub struct Unlisted {
    /// Time limits.
    pub timeouts: Timeouts,
    /// Egress proxies (from the environment).
    pub proxy: ProxyRules,
    /// Another ociregistry that every registry is fetched through (`?ns=`),
    /// configured ones included.
    pub mirror: Option<String>,
    /// The upstream guard for registries reached directly.
    pub guard: Arc<HostRules>,
}

/// Most actors kept for registries the configuration does not list.
pub const MAX_UNLISTED_ACTORS: usize = 64;

/// The upstream actors, one per registry, spread over a few arbiters.
struct Upstreams {
    /// Settings and TLS configuration of the configured registries.
    configured: Configured,
    /// TLS configuration for unlisted registries (OS trust store).
    default_tls: Arc<rustls::ClientConfig>,
    /// How unlisted registries are reached.
    unlisted: Unlisted,
    /// Threads the upstream actors run on (awc clients are thread-bound).
    arbiters: Vec<Arbiter>,
    /// Actors started so far.
    started: HashMap<RegistryName, Addr<UpstreamRegistry>>,
    /// The started registries that are not configured, least recently
    /// used first; at most [`MAX_UNLISTED_ACTORS`] are kept.
    unlisted_lru: VecDeque<RegistryName>,
    /// Logger handed to each actor.
    log: slog::Logger,
}

impl Upstreams {
    /// Builds every configured registry's TLS configuration up front, so
    /// bad TLS settings fail start-up.
    fn new(
        configured: Vec<UpstreamSettings>,
        unlisted: Unlisted,
        log: slog::Logger,
    ) -> Result<Self, TlsError> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            configured: tls_configs(configured)?,
            default_tls: crate::upstream::TlsSettings::default().client_config()?,
            unlisted,
            arbiters: (0..threads).map(|_| Arbiter::new()).collect(),
            started: HashMap::new(),
            unlisted_lru: VecDeque::new(),
            log,
        })
    }

    /// Replaces the settings; the actors started so far are forgotten
    /// (each ends once its fetches in flight do).
    fn reconfigure(
        &mut self,
        configured: Vec<UpstreamSettings>,
        unlisted: Unlisted,
    ) -> Result<(), TlsError> {
        self.configured = tls_configs(configured)?;
        self.unlisted = unlisted;
        self.started.clear();
        self.unlisted_lru.clear();
        Ok(())
    }

    /// How large blobs of `registry` are fetched in parallel, if they are
    /// (configured registries reached directly only).
    fn parallel(&self, registry: &RegistryName) -> Option<ParallelFetch> {
        match self.unlisted.mirror {
            Some(_) => None,
            None => self.configured.get(registry).and_then(|(s, _)| s.parallel),
        }
    }

    /// The actor for `registry`, started on first use. Clients can name
    /// any number of unlisted registries: beyond [`MAX_UNLISTED_ACTORS`],
    /// the least recently used one is forgotten (its fetches in flight
    /// keep it alive until they end).
    fn get(&mut self, registry: &RegistryName) -> Addr<UpstreamRegistry> {
        if !self.configured.contains_key(registry) {
            self.unlisted_lru.retain(|r| r != registry);
            self.unlisted_lru.push_back(registry.clone());
            if self.unlisted_lru.len() > MAX_UNLISTED_ACTORS {
                let oldest = self.unlisted_lru.pop_front();
                oldest.and_then(|r| self.started.remove(&r));
            }
        }
        if let Some(addr) = self.started.get(registry).filter(|a| a.connected()) {
            return addr.clone();
        }
        let u = &self.unlisted;
        let (settings, tls) = match (&u.mirror, self.configured.get(registry)) {
            (None, Some(configured)) => configured.clone(),
            (mirror, _) => {
                let mut settings = UpstreamSettings::unlisted(
                    registry.clone(),
                    u.timeouts,
                    u.proxy.clone(),
                    Arc::clone(&u.guard),
                );
                if let Some(mirror) = mirror {
                    settings.endpoints = vec![mirror.clone()];
                    settings.ns = Some(registry.clone());
                    settings.unlisted = !self.configured.contains_key(registry);
                    settings.guard = None;
                }
                (settings, Arc::clone(&self.default_tls))
            }
        };
        let arbiter = &self.arbiters[self.started.len() % self.arbiters.len()];
        let addr = UpstreamRegistry::start_on(&arbiter.handle(), settings, tls, self.log.clone());
        self.started.insert(registry.clone(), addr.clone());
        addr
    }
}
