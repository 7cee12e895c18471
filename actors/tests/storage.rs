//! Storage in process, on a temporary directory: writers of one cache
//! entry at once (a blob written by a tarball import beside a client's
//! fetch, a manifest stored under two tags at once) neither corrupt nor
//! fail each other; what the cache refuses to keep; what size eviction
//! takes.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use ociregistry_actors::error::FetchError;
use ociregistry_actors::manifest::Manifest;
use ociregistry_actors::names::{Digest, Reference, RegistryName, RepoName, Tag};
use ociregistry_actors::storage::{
    BeginBlob, BlobStart, Bucket, CommitBlob, CommitManifest, Filesystem, GetStats, Layout,
    LookupBlob, LookupManifest, NotRetentionHolder, OpenStoredBlob, Prune, PruneBy, Retention,
    Storage, MAX_INDEX_DEPTH,
};

/// Storage on the filesystem backend in `dir`, with `retention`.
async fn open(dir: &tempfile::TempDir, retention: Retention) -> Addr<Storage> {
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let backend = Arc::new(Filesystem::open(dir.path()).unwrap());
    Storage::open(backend, Layout::new(dir.path()), retention, log)
        .await
        .unwrap()
        .start()
}

async fn storage(dir: &tempfile::TempDir) -> Addr<Storage> {
    open(dir, Retention::default()).await
}

fn writer(start: BlobStart) -> Box<ociregistry_actors::storage::BlobWriter> {
    match start {
        BlobStart::Writer(w) => w,
        BlobStart::Cached(_) => panic!("not cached yet"),
    }
}

#[actix::test]
async fn a_second_writer_of_a_blob_leaves_the_first_ones_bytes_alone() {
    let dir = tempfile::tempdir().unwrap();
    let storage = storage(&dir).await;
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i * 7 + i / 251) as u8).collect();
    let digest = Digest::of(&data);
    let (head, tail) = data.split_at(1 << 20);
    let mut first = writer(
        storage
            .send(BeginBlob(digest.clone()))
            .await
            .unwrap()
            .unwrap(),
    );
    first
        .push(vec![Bytes::copy_from_slice(head)])
        .await
        .unwrap();
    first
        .push(vec![Bytes::copy_from_slice(tail)])
        .await
        .unwrap();
    assert_eq!(first.written(), head.len() as u64);
    let followed = first.file();

    let mut second = writer(
        storage
            .send(BeginBlob(digest.clone()))
            .await
            .unwrap()
            .unwrap(),
    );
    let mut seen = vec![0; head.len()];
    followed.read_exact_at(&mut seen, 0).unwrap();
    assert!(seen == head, "the first writer's published bytes changed");

    second.push(vec![Bytes::from(data.clone())]).await.unwrap();
    for w in [first, second] {
        let verified = w.verify(Some(data.len() as u64)).await.unwrap();
        let committed = storage.send(CommitBlob(verified)).await.unwrap();
        assert_eq!(committed, Ok(data.len() as u64), "every commit succeeds");
    }
    let cached = storage
        .send(LookupBlob(digest.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(std::fs::read(cached.path).unwrap(), data);
}

#[actix::test]
async fn one_manifest_stored_under_two_tags_at_once_keeps_both() {
    let dir = tempfile::tempdir().unwrap();
    let storage = storage(&dir).await;
    let registry = RegistryName::parse("registry.test").unwrap();
    let repo = RepoName::parse("app").unwrap();
    for round in 0..50 {
        let bytes = Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"}},"layers":[],"annotations":{{"round":"{round}"}}}}"#
        ));
        let digest = Digest::of(&bytes);
        let manifest = Arc::new(Manifest::verify(&Reference::Digest(digest), bytes, None).unwrap());
        let tags = [format!("a{round}"), format!("b{round}")].map(|t| Tag::parse(&t).unwrap());
        let puts = tags.clone().map(|tag| {
            storage.send(CommitManifest {
                registry: registry.clone(),
                repo: repo.clone(),
                tag: Some(tag),
                manifest: Arc::clone(&manifest),
            })
        });
        for (result, tag) in futures::future::join_all(puts).await.into_iter().zip(&tags) {
            assert_eq!(result.unwrap(), Ok(()), "storing under {tag} failed");
        }
        for tag in tags {
            let found = storage
                .send(LookupManifest {
                    registry: registry.clone(),
                    repo: repo.clone(),
                    reference: Reference::Tag(tag.clone()),
                })
                .await
                .unwrap();
            assert_eq!(
                found.map(|f| f.manifest),
                Some(Arc::clone(&manifest)),
                "{tag}"
            );
        }
    }
}

#[actix::test]
async fn indexes_nested_beyond_the_bound_are_refused_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let storage = storage(&dir).await;
    let commit = |manifest: &Arc<Manifest>| {
        storage.send(CommitManifest {
            registry: RegistryName::parse("registry.test").unwrap(),
            repo: RepoName::parse("deep").unwrap(),
            tag: None,
            manifest: Arc::clone(manifest),
        })
    };
    let parse = |json: String| {
        let bytes = Bytes::from(json);
        let digest = Digest::of(&bytes);
        Arc::new(Manifest::verify(&Reference::Digest(digest), bytes, None).unwrap())
    };
    let mut below = parse(r#"{"schemaVersion":2,"config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"layers":[]}"#.to_string());
    for depth in 1..=MAX_INDEX_DEPTH + 1 {
        let result = commit(&below).await.unwrap();
        if depth <= MAX_INDEX_DEPTH {
            assert_eq!(result, Ok(()), "depth {depth}");
        } else {
            assert!(
                matches!(result, Err(FetchError::BadResponse(_))),
                "depth {depth}: {result:?}"
            );
        }
        below = parse(format!(
            r#"{{"schemaVersion":2,"manifests":[{{"digest":"{}"}}]}}"#,
            below.digest
        ));
    }
    let stats = storage.send(GetStats { images: true }).await.unwrap();
    assert_eq!(stats.manifests, MAX_INDEX_DEPTH);
    assert_eq!(
        std::fs::read_dir(dir.path().join("manifests/sha256"))
            .unwrap()
            .count(),
        MAX_INDEX_DEPTH
    );
}

/// A valid image manifest of about `pad` bytes, distinct per `n`.
fn padded(n: usize, pad: usize) -> Arc<Manifest> {
    let bytes = Bytes::from(format!(
        r#"{{"schemaVersion":2,"config":{{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"}},"layers":[],"annotations":{{"n":"{n}","pad":"{}"}}}}"#,
        "x".repeat(pad)
    ));
    let digest = Digest::of(&bytes);
    Arc::new(Manifest::verify(&Reference::Digest(digest), bytes, None).unwrap())
}

async fn commit(storage: &Addr<Storage>, manifest: &Arc<Manifest>) {
    let put = CommitManifest {
        registry: RegistryName::parse("registry.test").unwrap(),
        repo: RepoName::parse("app").unwrap(),
        tag: None,
        manifest: Arc::clone(manifest),
    };
    storage.send(put).await.unwrap().unwrap();
}

async fn lookup(storage: &Addr<Storage>, digest: &Digest) -> Option<Arc<Manifest>> {
    let found = storage
        .send(LookupManifest {
            registry: RegistryName::parse("registry.test").unwrap(),
            repo: RepoName::parse("app").unwrap(),
            reference: Reference::Digest(digest.clone()),
        })
        .await
        .unwrap();
    found.map(|f| f.manifest)
}

#[actix::test]
async fn manifests_beyond_the_memory_budget_are_served_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let storage = storage(&dir).await;
    // 100 MiB of manifests, more than Storage keeps in memory.
    let all: Vec<_> = (0..100).map(|n| padded(n, 1 << 20)).collect();
    for m in &all {
        commit(&storage, m).await;
    }
    for m in &all {
        assert_eq!(lookup(&storage, &m.digest).await.as_ref(), Some(m));
    }
}

#[actix::test]
async fn start_up_reads_no_manifest_body_and_a_corrupt_one_is_caught_when_served() {
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (padded(1, 10), padded(2, 10));
    {
        let storage = storage(&dir).await;
        commit(&storage, &good).await;
        commit(&storage, &bad).await;
    }
    // Same size, other bytes: only reading the body can tell.
    let path = dir.path().join("manifests/sha256").join(bad.digest.hex());
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 4;
    bytes[at] ^= 1;
    std::fs::write(&path, bytes).unwrap();

    let storage = storage(&dir).await;
    let stats = storage.send(GetStats { images: false }).await.unwrap();
    assert_eq!(
        stats.manifests, 2,
        "start-up trusts the journal and the file sizes"
    );
    assert_eq!(lookup(&storage, &good.digest).await, Some(good));
    assert_eq!(lookup(&storage, &bad.digest).await, None, "never served");
    assert!(!path.exists(), "the corrupt file is deleted");
    let stats = storage.send(GetStats { images: false }).await.unwrap();
    assert_eq!(stats.manifests, 1);
}

/// Stores `bytes` as a blob through a writer and a commit.
async fn store_blob(storage: &Addr<Storage>, bytes: &[u8]) -> Digest {
    let digest = Digest::of(bytes);
    let mut w = writer(
        storage
            .send(BeginBlob(digest.clone()))
            .await
            .unwrap()
            .unwrap(),
    );
    w.push(vec![Bytes::copy_from_slice(bytes)]).await.unwrap();
    let verified = w.verify(Some(bytes.len() as u64)).await.unwrap();
    storage.send(CommitBlob(verified)).await.unwrap().unwrap();
    digest
}

#[actix::test]
async fn blobs_being_written_count_toward_the_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Retention {
        max_size: Some(1 << 20),
        ..Retention::default()
    };
    let storage = open(&dir, retention).await;
    // An image of 600 KiB, then a download in progress of 600 KiB more.
    let config = store_blob(&storage, b"{}").await;
    let layer = store_blob(&storage, &vec![1u8; 600 << 10]).await;
    let image = Arc::new(
        Manifest::verify(
            &Reference::Tag(Tag::parse("1").unwrap()),
            Bytes::from(format!(
                r#"{{"schemaVersion":2,"config":{{"digest":"{config}"}},"layers":[{{"digest":"{layer}"}}]}}"#
            )),
            None,
        )
        .unwrap(),
    );
    commit(&storage, &image).await;
    let big = vec![2u8; 600 << 10];
    let mut downloading = writer(
        storage
            .send(BeginBlob(Digest::of(&big)))
            .await
            .unwrap()
            .unwrap(),
    );
    downloading.push(vec![Bytes::from(big)]).await.unwrap();
    assert!(storage
        .send(LookupBlob(layer.clone()))
        .await
        .unwrap()
        .is_some());
    // The next write goes over the limit only with the partial file counted.
    store_blob(&storage, b"small").await;
    assert!(
        storage.send(LookupBlob(layer)).await.unwrap().is_none(),
        "the least recently pulled image was evicted"
    );
    assert_eq!(lookup(&storage, &image.digest).await, None);
    drop(downloading);
}

/// Commits `manifest` under `registry.test/<repo>:1`.
async fn commit_tagged(storage: &Addr<Storage>, repo: &str, manifest: &Arc<Manifest>) {
    let put = CommitManifest {
        registry: RegistryName::parse("registry.test").unwrap(),
        repo: RepoName::parse(repo).unwrap(),
        tag: Some(Tag::parse("1").unwrap()),
        manifest: Arc::clone(manifest),
    };
    storage.send(put).await.unwrap().unwrap();
}

/// An image manifest of a config and `layers`.
fn image_of(config: &Digest, layers: &[&Digest]) -> Arc<Manifest> {
    let layers: Vec<String> = layers
        .iter()
        .map(|d| format!(r#"{{"digest":"{d}"}}"#))
        .collect();
    let body = format!(
        r#"{{"schemaVersion":2,"config":{{"digest":"{config}"}},"layers":[{}]}}"#,
        layers.join(",")
    );
    Arc::new(
        Manifest::verify(
            &Reference::Tag(Tag::parse("1").unwrap()),
            Bytes::from(body),
            None,
        )
        .unwrap(),
    )
}

#[actix::test]
async fn size_eviction_takes_the_least_recently_pulled_and_spares_pins_and_shared_layers() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Retention {
        pins: vec![regex::Regex::new("pinned").unwrap()],
        max_size: Some(1 << 20),
        ..Retention::default()
    };
    let storage = open(&dir, retention).await;
    let base = store_blob(&storage, &vec![0u8; 200 << 10]).await;
    let mut images = Vec::new();
    for (n, repo) in ["pinned", "pulled", "idle"].into_iter().enumerate() {
        let config = store_blob(&storage, format!("{{\"n\":{n}}}").as_bytes()).await;
        let own = store_blob(&storage, &vec![n as u8 + 1; 200 << 10]).await;
        let image = image_of(&config, &[&base, &own]);
        commit_tagged(&storage, repo, &image).await;
        images.push((image, own));
    }
    // "pulled" is pulled after "idle" was cached: "idle" is now the least
    // recently used, though "pulled" is older.
    let pull = LookupManifest {
        registry: RegistryName::parse("registry.test").unwrap(),
        repo: RepoName::parse("pulled").unwrap(),
        reference: Reference::Tag(Tag::parse("1").unwrap()),
    };
    assert!(storage.send(pull).await.unwrap().is_some());

    // 800 KiB cached; 300 KiB more go over 1 MiB.
    let newcomer = store_blob(&storage, &vec![9u8; 300 << 10]).await;

    let cached = |d: Digest| storage.send(LookupBlob(d));
    let [(pinned, pinned_own), (pulled, pulled_own), (idle, idle_own)] = &images[..] else {
        unreachable!()
    };
    assert!(cached(idle_own.clone()).await.unwrap().is_none(), "evicted");
    assert_eq!(lookup(&storage, &idle.digest).await, None);
    for kept in [&base, pinned_own, pulled_own, &newcomer] {
        assert!(cached(kept.clone()).await.unwrap().is_some(), "{kept}");
    }
    assert!(lookup(&storage, &pinned.digest).await.is_some());
    assert!(lookup(&storage, &pulled.digest).await.is_some());
}

/// Storage of a replica named `name` on the shared in-memory `store`.
async fn replica(
    store: &Arc<object_store::memory::InMemory>,
    name: &str,
) -> (Addr<Storage>, tempfile::TempDir) {
    let retention = Retention {
        max_size: Some(1 << 20),
        ..Retention::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let store = Arc::clone(store) as Arc<dyn object_store::ObjectStore>;
    let backend = Arc::new(Bucket::new(store, "cache", name));
    let storage = Storage::open(backend, Layout::new(dir.path()), retention, log)
        .await
        .unwrap()
        .start();
    (storage, dir)
}

/// Stores an image of one `size`-byte layer (`fill`) tagged `<repo>:1`;
/// returns the layer's digest.
async fn store_image(storage: &Addr<Storage>, repo: &str, fill: u8, size: usize) -> Digest {
    let config = store_blob(storage, format!("{{\"repo\":\"{repo}\"}}").as_bytes()).await;
    let layer = store_blob(storage, &vec![fill; size]).await;
    commit_tagged(storage, repo, &image_of(&config, &[&layer])).await;
    layer
}

/// Whether `storage` holds its store's retention lease.
async fn holds_lease(storage: &Addr<Storage>) -> bool {
    let stats = storage.send(GetStats { images: false }).await.unwrap();
    stats.store.expect("a shared store").retention_lease
}

#[actix::test]
async fn on_a_shared_store_only_the_lease_holder_prunes() {
    let store = Arc::new(object_store::memory::InMemory::new());
    let (first, _a) = replica(&store, "a").await;
    let (second, _b) = replica(&store, "b").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !holds_lease(&first).await && !holds_lease(&second).await {
        assert!(
            std::time::Instant::now() < deadline,
            "no replica took the lease"
        );
        actix::clock::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (holder, other) = match holds_lease(&first).await {
        true => (first, second),
        false => (second, first),
    };
    assert!(!holds_lease(&other).await, "one holder at a time");
    let prune = |dry_run| Prune {
        by: PruneBy::Pattern(regex::Regex::new(".").unwrap()),
        count: None,
        dry_run,
    };
    let refused = other.send(prune(false)).await.unwrap();
    assert!(matches!(refused, Err(NotRetentionHolder)), "{refused:?}");
    assert!(
        other.send(prune(true)).await.unwrap().is_ok(),
        "a dry run works anywhere"
    );
    assert!(holder.send(prune(false)).await.unwrap().is_ok());

    // Over maxCacheSize (1 MiB), only the holder evicts.
    let kept = store_image(&other, "first", 1, 600 << 10).await;
    store_image(&other, "second", 2, 600 << 10).await;
    assert!(other.send(LookupBlob(kept)).await.unwrap().is_some());
    let evicted = store_image(&holder, "third", 3, 600 << 10).await;
    store_image(&holder, "fourth", 4, 600 << 10).await;
    assert!(holder.send(LookupBlob(evicted)).await.unwrap().is_none());
}

#[actix::test]
async fn a_replica_serves_what_another_stored_after_it_started() {
    let store = Arc::new(object_store::memory::InMemory::new());
    let (late, _a) = replica(&store, "late").await;
    let (writer, _b) = replica(&store, "writer").await;
    let layer = store_image(&writer, "app", 7, 1000).await;
    let manifest = image_of(&Digest::of(b"{\"repo\":\"app\"}"), &[&layer]);

    // Not in the late replica's index: read from the bucket and verified.
    assert_eq!(lookup(&late, &manifest.digest).await, Some(manifest));
    // A blob it has no copy of comes from the bucket as a stream.
    assert!(late
        .send(LookupBlob(layer.clone()))
        .await
        .unwrap()
        .is_none());
    let stored = late
        .send(OpenStoredBlob(layer.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.expect("in the bucket").size, 1000);
}

#[actix::test]
async fn a_shared_store_object_larger_than_a_manifest_is_never_read_as_one() {
    let store = Arc::new(object_store::memory::InMemory::new());
    let (replica, _dir) = replica(&store, "reader").await;
    // A well-formed manifest of 5 MiB, under its own digest, written by
    // something other than a replica.
    let bytes = Bytes::from(format!(
        r#"{{"schemaVersion":2,"config":{{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"}},"layers":[],"annotations":{{"pad":"{}"}}}}"#,
        "x".repeat(5 << 20)
    ));
    let digest = Digest::of(&bytes);
    let other = Bucket::new(
        Arc::clone(&store) as Arc<dyn object_store::ObjectStore>,
        "cache",
        "other",
    );
    ociregistry_actors::storage::Backend::put(
        &other,
        ociregistry_actors::storage::Kind::Manifest,
        &digest,
        bytes,
    )
    .await
    .unwrap();
    assert_eq!(lookup(&replica, &digest).await, None);
}
