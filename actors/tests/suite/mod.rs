//! The backend test suite: what every store of record must do. Each
//! implementation runs it through `suite!` (`actors/tests/backend.rs`: the
//! filesystem and a bucket in memory; `tests/object_storage.rs`: a bucket
//! on a real S3 server), and a new backend passes the same checks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use ociregistry_actors::names::Digest;
use ociregistry_actors::storage::{Backend, Bucket, Filesystem, Kind, Record};

/// A backend under test, and how to open it again on the same store.
pub struct Fixture {
    /// Opens the store anew (a restart, or another replica).
    open: Box<dyn Fn() -> Arc<dyn Backend>>,
    /// Whether several instances may write one store at once (replicas);
    /// otherwise "another writer" is the same instance.
    shared: bool,
    /// Holds the store's and the spool files' directories.
    dir: tempfile::TempDir,
    /// Whatever must live as long as the store (a server).
    _keep: Option<Box<dyn std::any::Any>>,
}

impl Fixture {
    #[allow(dead_code)] // Not every test target runs every backend.
    pub fn filesystem() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        let open = move || Arc::new(Filesystem::open(&root).unwrap()) as Arc<dyn Backend>;
        Self {
            open: Box::new(open),
            shared: false,
            dir,
            _keep: None,
        }
    }

    #[allow(dead_code)]
    pub fn memory_bucket() -> Self {
        Self::bucket(Arc::new(object_store::memory::InMemory::new()), None)
    }

    /// Replicas on `store`, each its own writer; `keep` lives as long.
    pub fn bucket(
        store: Arc<dyn object_store::ObjectStore>,
        keep: Option<Box<dyn std::any::Any>>,
    ) -> Self {
        let writers = std::sync::atomic::AtomicU64::new(0);
        let open = move || {
            let n = writers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let store = Arc::clone(&store);
            Arc::new(Bucket::new(store, "cache/", &format!("replica-{n}"))) as Arc<dyn Backend>
        };
        Self {
            open: Box::new(open),
            shared: true,
            dir: tempfile::tempdir().unwrap(),
            _keep: keep,
        }
    }

    /// Another writer beside `backend`: another replica where the store is
    /// shared, else `backend` itself (one process writes a root).
    fn another_writer(&self, backend: &Arc<dyn Backend>) -> Arc<dyn Backend> {
        match self.shared {
            true => (self.open)(),
            false => Arc::clone(backend),
        }
    }

    /// A synced local file holding `bytes`, as a verified download leaves one.
    fn spool(&self, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

/// The whole object `digest` of `kind`, read through `open`, if stored.
async fn read(backend: &dyn Backend, kind: Kind, digest: &Digest) -> Option<Bytes> {
    use futures::TryStreamExt;
    let stored = backend.open(kind, digest).await.unwrap()?;
    let chunks: Vec<Bytes> = stored.bytes.try_collect().await.unwrap();
    Some(Bytes::from(chunks.concat()))
}

fn tag(tag: &str, digest: &Digest, seen: u64) -> Record {
    serde_json::from_value(serde_json::json!({
        "kind": "tag", "registry": "registry.test", "repo": "app",
        "tag": tag, "digest": digest.as_str(), "seen": seen,
    }))
    .unwrap()
}

/// Runs every check against one implementation, each as a test of its
/// own; `$fixture` gives an `Option<Fixture>` (`None`: the test skips).
#[macro_export]
macro_rules! suite {
    ($($backend:ident => $fixture:expr;)*) => {$(
        mod $backend {
            #[allow(unused_imports)]
            use super::*;

            #[actix::test]
            async fn objects_are_kept_by_kind_and_digest() {
                if let Some(f) = $fixture { super::suite::objects_are_kept_by_kind_and_digest(f).await }
            }

            #[actix::test]
            async fn files_are_stored_whole_and_again_is_a_no_op() {
                if let Some(f) = $fixture { super::suite::files_are_stored_whole_and_again_is_a_no_op(f).await }
            }

            #[actix::test]
            async fn objects_are_read_as_streams() {
                if let Some(f) = $fixture { super::suite::objects_are_read_as_streams(f).await }
            }

            #[actix::test]
            async fn more_records_are_those_appended_since_the_last_read() {
                if let Some(f) = $fixture { super::suite::more_records_are_those_appended_since_the_last_read(f).await }
            }

            #[actix::test]
            async fn deleting_is_idempotent() {
                if let Some(f) = $fixture { super::suite::deleting_is_idempotent(f).await }
            }

            #[actix::test]
            async fn records_come_back_in_order_and_a_rewrite_replaces_them() {
                if let Some(f) = $fixture { super::suite::records_come_back_in_order_and_a_rewrite_replaces_them(f).await }
            }

            #[actix::test]
            async fn a_rewrite_keeps_records_appended_after_the_read() {
                if let Some(f) = $fixture { super::suite::a_rewrite_keeps_records_appended_after_the_read(f).await }
            }

            #[actix::test]
            async fn a_lease_is_held_by_one_writer_at_a_time() {
                if let Some(f) = $fixture {
                    super::suite::a_lease_is_held_by_one_writer_at_a_time(f).await
                }
            }

            #[actix::test]
            async fn concurrent_appends_all_land() {
                if let Some(f) = $fixture { super::suite::concurrent_appends_all_land(f).await }
            }

            #[actix::test]
            async fn last_pulled_times_are_replaced_and_survive_a_reopen() {
                if let Some(f) = $fixture { super::suite::last_pulled_times_are_replaced_and_survive_a_reopen(f).await }
            }

            #[actix::test]
            async fn the_times_of_writers_gone_are_folded_into_one() {
                if let Some(f) = $fixture { super::suite::the_times_of_writers_gone_are_folded_into_one(f).await }
            }
        }
    )*};
}

pub async fn objects_are_kept_by_kind_and_digest(f: Fixture) {
    let backend = (f.open)();
    let (blob, manifest) = (Bytes::from_static(b"layer"), Bytes::from_static(b"{}"));
    let (b, m) = (Digest::of(&blob), Digest::of(&manifest));
    assert_eq!(read(&*backend, Kind::Blob, &b).await, None);
    assert!(backend.list(Kind::Blob).await.unwrap().is_empty());
    backend.put(Kind::Blob, &b, blob.clone()).await.unwrap();
    backend
        .put(Kind::Manifest, &m, manifest.clone())
        .await
        .unwrap();

    let reopened = (f.open)();
    assert_eq!(read(&*reopened, Kind::Blob, &b).await, Some(blob));
    assert_eq!(read(&*reopened, Kind::Manifest, &m).await, Some(manifest));
    assert_eq!(read(&*reopened, Kind::Manifest, &b).await, None);
    assert_eq!(
        reopened.list(Kind::Blob).await.unwrap(),
        HashMap::from([(b, 5)])
    );
    assert_eq!(
        reopened.list(Kind::Manifest).await.unwrap(),
        HashMap::from([(m, 2)])
    );
}

pub async fn files_are_stored_whole_and_again_is_a_no_op(f: Fixture) {
    let backend = (f.open)();
    // Larger than one upload part of the bucket backend.
    let bytes: Vec<u8> = (0..(9u32 << 20)).map(|i| (i % 253) as u8).collect();
    let digest = Digest::of(&bytes);
    let spool = f.spool("first", &bytes);
    backend.put_file(Kind::Blob, &digest, &spool).await.unwrap();
    let again = f.spool("second", &bytes);
    backend.put_file(Kind::Blob, &digest, &again).await.unwrap();

    let reopened = (f.open)();
    let listed = reopened.list(Kind::Blob).await.unwrap();
    assert_eq!(
        listed,
        HashMap::from([(digest.clone(), bytes.len() as u64)])
    );
    let stored = read(&*reopened, Kind::Blob, &digest).await.unwrap();
    assert!(stored == bytes, "the stored bytes differ");
}

pub async fn objects_are_read_as_streams(f: Fixture) {
    use futures::TryStreamExt;
    let backend = (f.open)();
    let bytes: Vec<u8> = (0..(3u32 << 20) + 17).map(|i| (i % 251) as u8).collect();
    let digest = Digest::of(&bytes);
    assert!(backend.open(Kind::Blob, &digest).await.unwrap().is_none());
    backend
        .put(Kind::Blob, &digest, Bytes::from(bytes.clone()))
        .await
        .unwrap();
    let stored = backend.open(Kind::Blob, &digest).await.unwrap().unwrap();
    assert_eq!(stored.size, bytes.len() as u64);
    let chunks: Vec<Bytes> = stored.bytes.try_collect().await.unwrap();
    assert!(chunks.concat() == bytes, "the streamed bytes differ");
}

pub async fn more_records_are_those_appended_since_the_last_read(f: Fixture) {
    let reader = (f.open)();
    let other = f.another_writer(&reader);
    let d = Digest::of(b"d");
    reader.append(vec![tag("a", &d, 1)]).await.unwrap();
    assert_eq!(reader.records().await.unwrap(), vec![tag("a", &d, 1)]);
    assert!(reader.more_records().await.unwrap().is_empty());
    other.append(vec![tag("b", &d, 2)]).await.unwrap();
    reader.append(vec![tag("c", &d, 3)]).await.unwrap();
    assert_eq!(
        reader.more_records().await.unwrap(),
        vec![tag("b", &d, 2), tag("c", &d, 3)]
    );
    assert!(reader.more_records().await.unwrap().is_empty());
    // After a compaction, reading goes on after it.
    reader.rewrite(vec![tag("c", &d, 3)]).await.unwrap();
    other.append(vec![tag("e", &d, 5)]).await.unwrap();
    assert_eq!(reader.more_records().await.unwrap(), vec![tag("e", &d, 5)]);
}

pub async fn deleting_is_idempotent(f: Fixture) {
    let backend = (f.open)();
    let bytes = Bytes::from_static(b"gone soon");
    let digest = Digest::of(&bytes);
    backend.put(Kind::Blob, &digest, bytes).await.unwrap();
    backend.delete(Kind::Blob, &digest).await.unwrap();
    backend.delete(Kind::Blob, &digest).await.unwrap();
    assert_eq!(read(&*backend, Kind::Blob, &digest).await, None);
    assert!(backend.list(Kind::Blob).await.unwrap().is_empty());
}

pub async fn records_come_back_in_order_and_a_rewrite_replaces_them(f: Fixture) {
    let backend = (f.open)();
    assert!(backend.records().await.unwrap().is_empty());
    let (one, two) = (Digest::of(b"one"), Digest::of(b"two"));
    let first = vec![tag("a", &one, 1), tag("b", &one, 2)];
    backend.append(first.clone()).await.unwrap();
    backend.append(vec![tag("a", &two, 3)]).await.unwrap();
    let all = [first.clone(), vec![tag("a", &two, 3)]].concat();
    assert_eq!((f.open)().records().await.unwrap(), all);
    assert_eq!(backend.records().await.unwrap(), all);

    let compact = vec![tag("a", &two, 3), tag("b", &one, 2)];
    backend.rewrite(compact.clone()).await.unwrap();
    backend.append(vec![tag("c", &one, 4)]).await.unwrap();
    let expected = [compact, vec![tag("c", &one, 4)]].concat();
    assert_eq!((f.open)().records().await.unwrap(), expected);
}

pub async fn a_rewrite_keeps_records_appended_after_the_read(f: Fixture) {
    let compacting = (f.open)();
    let other = f.another_writer(&compacting);
    let (old, new) = (Digest::of(b"old"), Digest::of(b"new"));
    compacting
        .append(vec![tag("a", &old, 1), tag("a", &old, 2)])
        .await
        .unwrap();
    let read = compacting.records().await.unwrap();
    assert_eq!(read.len(), 2);
    // Another writer (or this one) appends while the compaction runs.
    other.append(vec![tag("a", &new, 3)]).await.unwrap();
    compacting.rewrite(vec![tag("a", &old, 2)]).await.unwrap();
    assert_eq!(
        (f.open)().records().await.unwrap(),
        vec![tag("a", &old, 2), tag("a", &new, 3)],
        "the newer record survives, after the compacted ones"
    );
}

pub async fn a_lease_is_held_by_one_writer_at_a_time(f: Fixture) {
    let minute = Duration::from_secs(60);
    let first = (f.open)();
    let second = f.another_writer(&first);
    assert!(first.lease("prune", minute).await.unwrap());
    assert!(first.lease("prune", minute).await.unwrap(), "renewed");
    assert_eq!(second.lease("prune", minute).await.unwrap(), !f.shared);
    // An expired lease goes to whoever asks next.
    assert!(first.lease("evict", Duration::ZERO).await.unwrap());
    assert!(second.lease("evict", minute).await.unwrap());
    assert_eq!(first.lease("evict", minute).await.unwrap(), !f.shared);
    // Writers asking at once: exactly one gets it.
    if f.shared {
        let writers: Vec<_> = (0..8).map(|_| (f.open)()).collect();
        let asks = writers.iter().map(|w| w.lease("race", minute));
        let granted = futures::future::join_all(asks).await;
        let granted = granted.into_iter().filter(|g| *g.as_ref().unwrap()).count();
        assert_eq!(granted, 1);
    }
}

pub async fn concurrent_appends_all_land(f: Fixture) {
    let backend = (f.open)();
    let appends =
        (0..32u64).map(|n| backend.append(vec![tag(&format!("t{n}"), &Digest::of(b"x"), n)]));
    for done in futures::future::join_all(appends).await {
        done.unwrap();
    }
    let mut seen: Vec<u64> = (f.open)()
        .records()
        .await
        .unwrap()
        .iter()
        .map(|r| match r {
            Record::Tag { seen, .. } => *seen,
            other => panic!("{other:?}"),
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..32).collect::<Vec<_>>());
}

pub async fn last_pulled_times_are_replaced_and_survive_a_reopen(f: Fixture) {
    let backend = (f.open)();
    assert!(backend.pulled().await.unwrap().is_empty());
    let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
    let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
    backend
        .save_pulled(HashMap::from([(a.clone(), at(10)), (b.clone(), at(20))]))
        .await
        .unwrap();
    backend
        .save_pulled(HashMap::from([(a.clone(), at(30))]))
        .await
        .unwrap();
    let pulled = (f.open)().pulled().await.unwrap();
    assert_eq!(pulled, HashMap::from([(a, at(30))]));
}

pub async fn the_times_of_writers_gone_are_folded_into_one(f: Fixture) {
    let holder = (f.open)();
    let gone = f.another_writer(&holder);
    let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
    let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
    gone.save_pulled(HashMap::from([(b.clone(), at(20))]))
        .await
        .unwrap();
    let own = HashMap::from([(a.clone(), at(10))]);
    let folded = holder
        .fold_pulled(own.clone(), Duration::ZERO)
        .await
        .unwrap();
    let both = HashMap::from([(a.clone(), at(10)), (b.clone(), at(20))]);
    match f.shared {
        // The gone writer's times live on in the holder's, its object not.
        true => {
            assert_eq!(folded, both);
            assert_eq!((f.open)().pulled().await.unwrap(), both);
            holder.save_pulled(own.clone()).await.unwrap();
            assert_eq!((f.open)().pulled().await.unwrap(), own);
        }
        // One writer: its own times, saved.
        false => {
            assert_eq!(folded, own);
            assert_eq!((f.open)().pulled().await.unwrap(), own);
        }
    }
}
