//! The PullCoordinator in process, with Storage on a temporary directory
//! and no upstream that answers: what clients can make it keep.

use std::time::Duration;

use actix::prelude::*;
use ociregistry_actors::coordinator::{
    FetchLimits, FetchManifest, PullCoordinator, Unlisted, UpstreamsHealth, MAX_UNLISTED_ACTORS,
};
use ociregistry_actors::error::FetchError;
use ociregistry_actors::names::{Reference, RegistryName, RepoName, Tag};
use ociregistry_actors::storage::{Filesystem, Layout, Retention, Storage};
use ociregistry_actors::upstream::{ProxyRules, Timeouts};

async fn coordinator(dir: &tempfile::TempDir) -> Addr<PullCoordinator> {
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let backend = std::sync::Arc::new(Filesystem::open(dir.path()).unwrap());
    let storage = Storage::open(
        backend,
        Layout::new(dir.path()),
        Retention::default(),
        log.clone(),
    )
    .await
    .unwrap()
    .start();
    let second = Duration::from_secs(1);
    let unlisted = Unlisted {
        timeouts: Timeouts {
            connect: second,
            response: second,
            idle: second,
        },
        proxy: ProxyRules::default(),
        mirror: None,
        guard: Default::default(),
    };
    let limits = FetchLimits {
        max_blob_size: 1 << 20,
        max_fetches: 16,
        max_fetches_per_registry: 4,
    };
    PullCoordinator::start(storage, Vec::new(), unlisted, limits, log).unwrap()
}

#[actix::test]
async fn upstream_actors_for_unlisted_registries_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = coordinator(&dir).await;
    for port in 1..=3 * MAX_UNLISTED_ACTORS as u16 {
        // Loopback is never dialled for a registry clients chose: each
        // fetch fails at once, after its actor started.
        let fetch = FetchManifest {
            registry: RegistryName::parse(&format!("127.0.0.1:{port}")).unwrap(),
            repo: RepoName::parse("app").unwrap(),
            reference: Reference::Tag(Tag::parse("1").unwrap()),
            cached: None,
        };
        let answer = coordinator.send(fetch).await.unwrap();
        assert!(matches!(answer, Err(FetchError::Guarded)), "{answer:?}");
    }
    let kept = coordinator.send(UpstreamsHealth).await.unwrap();
    assert_eq!(kept.len(), MAX_UNLISTED_ACTORS);
}
